//! The cross-manager guarantee (README, "Several processes"): two real processes, each with its
//! own `CacheManager` (file L1), sharing one `redis-server` as L2 and as the invalidation
//! backplane, set, delete and read the same few keys at the same time. Their races are not
//! ordered (nothing orders two processes' writes of a key), but they converge: once both have
//! returned from their last call (and flushed their write-behind queues), each process answers
//! what L2 holds within the staleness bound, because every set or delete publishes its keys
//! after its L2 step and the message drops the other process's L1 copy. Both write modes.
//! Half the keys are written and read as typed `String`s, so that the memory tier of decoded
//! values in front of each file L1 answers their reads and takes their writes' values: it must
//! converge too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/cache_process.rs"]
mod cache_process;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use cache_process::CacheProcess;
use rand::{Rng, SeedableRng};
use support::RedisServer;
use uno_cache::{Codec, RedisOptions, RedisStore, Storage};

const CHILD: &str = "convergence_child_process_entry_point";
/// Keys written and read as bytes (`set_raw`, `get_raw`).
const KEYS: [&str; 2] = ["c:a", "c:b"];
/// Keys written and read as typed `String`s (`set`, `get`: through the memory tier).
const TYPED_KEYS: [&str; 2] = ["t:a", "t:b"];
const STALENESS_BOUND_MS: u64 = 1000;
const CALLS_PER_PROCESS: usize = 400;

fn config_toml(dir: &Path, redis: &str, write_mode: &str) -> String {
    format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        ttl = 600
        [distributed]
        enabled = true
        hosts = ["{redis}"]
        ttl = 600
        timeout_ms = 2000
        key_prefix = "conv:"
        write_mode = "{write_mode}"
        [invalidation]
        enabled = true
        staleness_bound_ms = {STALENESS_BOUND_MS}
        "#,
        dir.display()
    )
}

#[test]
#[ignore = "child process of the convergence test; does nothing alone"]
fn convergence_child_process_entry_point() {
    cache_process::serve();
}

/// Random calls on [`KEYS`] from one process; values are unique per process and call.
fn drive(mut process: CacheProcess, name: &'static str, seed: u64) -> CacheProcess {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for n in 0..CALLS_PER_PROCESS {
        let typed = rng.random_bool(0.5);
        let keys = if typed { TYPED_KEYS } else { KEYS };
        let key = keys[rng.random_range(0..keys.len())];
        let value = format!("{name}-{n}");
        match (rng.random_range(0..10), typed) {
            (0..=3, false) => process.set_raw(key, &value),
            (0..=3, true) => process.set(key, &value),
            (4..=5, _) => {
                process.delete(key);
            }
            (_, false) => {
                process.get_raw(key);
            }
            (_, true) => {
                process.get(key);
            }
        }
    }
    process
}

fn converge(write_mode: &str) {
    let server = RedisServer::start();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = CacheProcess::start(CHILD, &config_toml(dir_a.path(), &server.addr(), write_mode));
    let b = CacheProcess::start(CHILD, &config_toml(dir_b.path(), &server.addr(), write_mode));
    let seed = u64::from(std::process::id());
    let a = std::thread::spawn(move || drive(a, "a", seed));
    let b = std::thread::spawn(move || drive(b, "b", seed.wrapping_add(1)));
    let mut processes = [a.join().unwrap(), b.join().unwrap()];
    for p in &mut processes {
        assert_eq!(p.request("flush"), "ok");
    }
    let l2 = RedisStore::connect(RedisOptions::new(server.addr()).prefix("conv:")).unwrap();
    let returned = Instant::now();
    let deadline = returned + Duration::from_millis(STALENESS_BOUND_MS);
    loop {
        let mut disagreements = Vec::new();
        for (key, typed) in KEYS
            .iter()
            .map(|k| (k, false))
            .chain(TYPED_KEYS.iter().map(|k| (k, true)))
        {
            let truth = Storage::get(&l2, key).unwrap().map(|e| {
                if typed {
                    Codec::default().decode::<String>(key, &e.value).unwrap()
                } else {
                    String::from_utf8(e.value).unwrap()
                }
            });
            for (p, name) in processes.iter_mut().zip(["a", "b"]) {
                let answer = if typed { p.get(key) } else { p.get_raw(key) };
                if answer != truth {
                    disagreements.push(format!(
                        "{key}: process {name} answers {answer:?}, L2 holds {truth:?}"
                    ));
                }
            }
        }
        if disagreements.is_empty() {
            println!(
                "{write_mode}: both processes agree with L2 {:?} after their last call returned",
                returned.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{write_mode}: not converged {STALENESS_BOUND_MS} ms after the last call returned (seed {seed}):\n{}",
            disagreements.join("\n")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in processes {
        p.stop();
    }
}

#[test]
fn write_through_two_processes_racing_on_keys_converge_on_l2_within_the_staleness_bound() {
    converge("through");
}

#[test]
fn write_behind_two_processes_racing_on_keys_converge_on_l2_within_the_staleness_bound() {
    converge("behind");
}
