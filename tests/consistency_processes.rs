//! Two real processes, each with its own `CacheManager` (persistent file L1), sharing one
//! `redis-server` as L2 and as the invalidation backplane. The bug this guards against: an
//! instance keeps serving its L1 copy of a key another process changed — after a set, a delete,
//! or while its subscription is down (killed with `CLIENT KILL TYPE pubsub` while the other
//! process writes). The child caches a key (backfilling its L1) and then watches its L1 until
//! the parent's change drops it; the parent prints
//! `bench: manager_invalidation_delay p50=… ms p99=… ms` over 1000 changes and asserts only a
//! generous bound. In the kill phase, the child must see each of the parent's writes within a
//! staleness bound of its return (plus a loaded machine's stalls).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager};

const CHILD_TEST: &str = "manager_child_process_entry_point";
const ENV_ADDR: &str = "UNO_MANAGER_CHILD_REDIS";
const STALENESS_BOUND_MS: u64 = 300;
/// What a loaded 2-core machine may add to the staleness bound (stalls of either process).
const STALLS_MS: f64 = 2_000.0;
const SAMPLES: usize = 1_000;
const KILL_ROUNDS: usize = 20;
const WAIT: Duration = Duration::from_secs(20);

fn now_us() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros()).unwrap()
}

fn config(dir: &Path, redis: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        ttl = 600
        [distributed]
        enabled = true
        hosts = ["{redis}"]
        ttl = 600
        timeout_ms = 500
        [invalidation]
        enabled = true
        staleness_bound_ms = {STALENESS_BOUND_MS}
        # Not the default 100 ms: the test asserts that none of its 2,000 publishes failed, and
        # on a loaded 2-core machine one of them once waited longer than that for the I/O
        # thread or Redis (a late publish shows in the measured delays anyway).
        publish_timeout_ms = 2000
        "#,
        dir.display()
    ))
    .unwrap()
}

/// The child: a manager driven by commands on stdin, one answer line per command.
/// - `watch KEY`: read KEY through the manager (backfilling L1), print `@cached VALUE`, then
///   poll L1 alone until the key is gone and print `@gone TIME_US`.
/// - `read KEY`: print `@value VALUE` (`-` for a miss).
/// - `fresh KEY VALUE`: read KEY through the manager until it answers VALUE, then print
///   `@fresh TIME_US`; `@stale VALUE` if it still answers another after half of `WAIT`.
/// - `losses -`: print `@losses N`, the subscription losses the manager was told of.
#[test]
#[ignore = "child process of the manager two-process test; does nothing alone"]
fn manager_child_process_entry_point() {
    let Ok(addr) = std::env::var(ENV_ADDR) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &addr)).unwrap();
    let mut out = std::io::stdout();
    let shown = |v: Option<Vec<u8>>| v.map_or("-".to_owned(), |v| String::from_utf8(v).unwrap());
    writeln!(out, "@ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let (cmd, key) = line.split_once(' ').unwrap();
        match cmd {
            "watch" => {
                let value = cache.get_raw(key).unwrap();
                writeln!(out, "@cached {}", shown(value)).unwrap();
                out.flush().unwrap();
                while cache.local().get(key).unwrap().is_some() {
                    std::thread::sleep(Duration::from_micros(50));
                }
                writeln!(out, "@gone {}", now_us()).unwrap();
            }
            "read" => writeln!(out, "@value {}", shown(cache.get_raw(key).unwrap())).unwrap(),
            "fresh" => {
                let (key, want) = key.split_once(' ').unwrap();
                // Within the parent's wait for the answer, so that it hears which value it is.
                let deadline = Instant::now() + WAIT / 2;
                loop {
                    let seen = shown(cache.get_raw(key).unwrap());
                    if seen == want {
                        writeln!(out, "@fresh {}", now_us()).unwrap();
                        break;
                    }
                    if Instant::now() > deadline {
                        writeln!(out, "@stale {seen}").unwrap();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            "losses" => writeln!(out, "@losses {}", cache.stats().consistency.subscription_losses).unwrap(),
            other => panic!("unknown command {other}"),
        }
        out.flush().unwrap();
    }
}

struct ChildProcess {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl ChildProcess {
    fn start(server: &RedisServer) -> Self {
        let mut child = support::dies_with_us(std::env::current_exe().unwrap().to_str().unwrap())
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ENV_ADDR, server.addr())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines() {
                let Ok(text) = text else { break };
                // The harness's own "test … " output may precede an answer on its line.
                if let Some((_, answer)) = text.split_once('@') {
                    if tx.send(answer.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        let process = ChildProcess { child, stdin, lines };
        assert_eq!(process.next(), "ready");
        process
    }

    fn next(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("the child went silent (or exited)")
    }

    fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The value after `prefix ` in the next line.
    fn expect(&self, prefix: &str) -> String {
        let line = self.next();
        line.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix(' '))
            .unwrap_or_else(|| panic!("expected {prefix}, got {line:?}"))
            .to_owned()
    }

    fn read(&mut self, key: &str) -> String {
        self.send(&format!("read {key}"));
        self.expect("value")
    }

    fn stop(self) {
        let ChildProcess { mut child, stdin, .. } = self;
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

/// How many subscribers the backplane's channel has on `server`.
fn subscribers(server: &RedisServer) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(uno_cache::invalidation::DEFAULT_CHANNEL)
        .query(&mut server.raw())
        .unwrap();
    counts.first().map_or(0, |(_, n)| *n)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn a_set_or_delete_in_one_process_drops_the_other_processes_l1_copy_within_the_delay_and_bound() {
    let server = RedisServer::start();
    let mut child = ChildProcess::start(&server);
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &server.addr())).unwrap();

    // 1. A set and a delete here are seen there.
    cache.set_raw("user:1", b"v1", None).unwrap();
    assert_eq!(child.read("user:1"), "v1");
    cache.set_raw("user:1", b"v2", None).unwrap();
    child.send("watch user:1");
    // The child may have cached v2 already if the invalidation raced its read; either way its
    // L1 copy must go on the next change.
    let cached = child.expect("cached");
    assert!(cached == "v1" || cached == "v2", "{cached}");
    cache.delete("user:1").unwrap();
    child.expect("gone");
    assert_eq!(child.read("user:1"), "-", "deleted here, gone there");

    // 2. Delay: the child caches a key, this process changes it (alternating set and delete),
    //    and the child reports when its L1 copy is dropped.
    let mut delays_ms = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        let key = format!("bench:{i}");
        cache.set_raw(&key, b"old", None).unwrap();
        child.send(&format!("watch {key}"));
        assert_eq!(child.expect("cached"), "old");
        let sent = now_us();
        if i % 2 == 0 {
            cache.set_raw(&key, b"new", None).unwrap();
        } else {
            cache.delete(&key).unwrap();
        }
        let gone: u64 = child.expect("gone").parse().unwrap();
        delays_ms.push(gone.saturating_sub(sent) as f64 / 1000.0);
    }
    delays_ms.sort_by(f64::total_cmp);
    let (p50, p99, max) = (
        percentile(&delays_ms, 50.0),
        percentile(&delays_ms, 99.0),
        delays_ms[delays_ms.len() - 1],
    );
    println!(
        "bench: manager_invalidation_delay p50={p50:.3} ms p99={p99:.3} ms max={max:.3} ms (n={SAMPLES}, two processes, set+L2+publish to L1 drop, loopback)"
    );
    assert!(p99 < 200.0, "p99 {p99} ms");
    let stats = cache.stats().consistency;
    assert!(stats.published >= SAMPLES as u64 * 2, "{stats:?}");
    assert_eq!(stats.publish_failures, 0);

    // 3. Kill the subscriptions while this process writes: within a staleness bound after each
    //    write returned, the child reads the new value (it either got the message, or knows it
    //    lost the stream and checks its L1 against L2). The child reads until it sees the value
    //    and says when: a child that neither got the message nor was told of the loss serves
    //    its L1 copy for the L1 TTL (600 s), never the value, so the margin the bound gets here
    //    for a loaded machine's stalls keeps that apart.
    cache.set_raw("hot", b"0", None).unwrap();
    assert_eq!(child.read("hot"), "0");
    let bound_ms = STALENESS_BOUND_MS as f64;
    let mut stale_ms = Vec::with_capacity(KILL_ROUNDS);
    for round in 1..=KILL_ROUNDS {
        // Both processes subscribed again after the last round's kill (each is one subscriber
        // of the channel), so that this kill cuts them both.
        let subscribed = Instant::now();
        while subscribers(&server) < 2 {
            assert!(subscribed.elapsed() < WAIT, "round {round}: not subscribed again");
            std::thread::sleep(Duration::from_millis(1));
        }
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut server.raw())
            .unwrap();
        assert!(killed >= 1, "round {round}: no subscription to kill");
        let value = round.to_string();
        cache.set_raw("hot", value.as_bytes(), None).unwrap();
        let written = now_us();
        child.send(&format!("fresh hot {value}"));
        let line = child.next();
        let fresh: u64 = line
            .strip_prefix("fresh ")
            .unwrap_or_else(|| panic!("round {round}: never saw the write: {line:?}"))
            .parse()
            .unwrap();
        let took_ms = fresh.saturating_sub(written) as f64 / 1000.0;
        assert!(
            took_ms < bound_ms + STALLS_MS,
            "round {round}: stale for {took_ms:.1} ms after the write; bound {bound_ms} ms, {STALLS_MS} ms allowed for stalls"
        );
        stale_ms.push(took_ms);
    }
    child.send("losses -");
    let losses: u64 = child.expect("losses").parse().unwrap();
    assert!(
        losses >= KILL_ROUNDS as u64 / 2,
        "the kills were seen as losses: {losses}"
    );
    let worst = stale_ms.iter().copied().fold(0.0, f64::max);
    println!("kill phase: {KILL_ROUNDS} rounds, {losses} subscription losses in the child, stale at most {worst:.1} ms after a write (bound {STALENESS_BOUND_MS} ms)");
    child.stop();
}
