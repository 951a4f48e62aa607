//! The cross-manager guarantee (README, "Several processes"): two real processes, each with its
//! own `CacheManager` (file L1), sharing one `redis-server` as L2 and as the invalidation
//! backplane, set, delete and read the same few keys at the same time. Their races are not
//! ordered (nothing orders two processes' writes of a key), but they converge: once both have
//! returned from their last call (and flushed their write-behind queues), each process answers
//! what L2 holds within the staleness bound, because every set or delete publishes its keys
//! after its L2 step and the message drops the other process's L1 copy. Both write modes.
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
use uno_cache::{RedisOptions, RedisStore, Storage};

const CHILD: &str = "convergence_child_process_entry_point";
const KEYS: [&str; 2] = ["c:a", "c:b"];
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
        let key = KEYS[rng.random_range(0..KEYS.len())];
        match rng.random_range(0..10) {
            0..=3 => process.set_raw(key, &format!("{name}-{n}")),
            4..=5 => {
                process.delete(key);
            }
            _ => {
                process.get_raw(key);
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
        for key in KEYS {
            let truth = Storage::get(&l2, key)
                .unwrap()
                .map(|e| String::from_utf8(e.value).unwrap());
            for (p, name) in processes.iter_mut().zip(["a", "b"]) {
                let answer = p.get_raw(key);
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
