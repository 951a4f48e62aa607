//! Restart staleness: process A caches `k` in its persistent L1 and exits; while it is down,
//! instance B (same L2) updates `k`, so A never hears of it; A is started again as a new OS
//! process on the same L1 directory. The bug this guards against: A's L1 restored from disk
//! serves its old copy for up to `local.ttl`. With the default `restart_policy = "revalidate"`,
//! A's first read checks the restored entry against L2 and returns B's value; while L2 is down
//! it serves its copy (offline mode). `"trust"` serves the restored copy; `"drop"` never serves
//! it.
//!
//! A is a real child process (this test binary run again with the ignored entry point below,
//! driven over stdin/stdout, see `tests/support/cache_process.rs`): it exits cleanly before B
//! writes (or, in one test, is killed with SIGKILL), and its restart is a new process that opens
//! the directory A left behind. B is this (parent) process.

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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_process::CacheProcess;
use support::RedisServer;
use uno_cache::replay::{ReplayOptions, ReplayQueue};
use uno_cache::{CacheConfig, CacheManager};

const CHILD: &str = "restart_child_process_entry_point";

fn config_toml(dir: &Path, redis: &str, policy: &str) -> String {
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
        timeout_ms = 200
        breaker_failures = 1
        breaker_cooldown_ms = 100
        [consistency]
        restart_policy = "{policy}"
        "#,
        dir.display()
    )
}

fn config(dir: &Path, redis: &str, policy: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&config_toml(dir, redis, policy)).unwrap()
}

/// Process A: a manager on the L1 directory in its config, driven by the parent.
#[test]
#[ignore = "child process of the restart tests; does nothing alone"]
fn restart_child_process_entry_point() {
    cache_process::serve();
}

/// Process A on `dir`.
fn process_a(dir: &Path, redis: &RedisServer, policy: &str) -> CacheProcess {
    CacheProcess::start(CHILD, &config_toml(dir, &redis.addr(), policy))
}

/// Process A caches `k` = "a-old" and `gone` = "a-old" and exits cleanly; then B (this process)
/// sets `k` = "b-new" and deletes `gone`. Returns A's directory.
fn a_cached_then_b_updated(redis: &RedisServer, policy: &str) -> tempfile::TempDir {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = process_a(a_dir.path(), redis, policy);
    a.set("k", "a-old");
    a.set("gone", "a-old");
    a.flush();
    a.stop();
    let b = CacheManager::new(config(b_dir.path(), &redis.addr(), policy)).unwrap();
    b.set("k", "b-new", None).unwrap();
    b.delete("gone").unwrap();
    a_dir
}

#[test]
fn after_a_restart_the_first_read_returns_the_value_another_instance_wrote_meanwhile() {
    let redis = RedisServer::start();
    let a_dir = a_cached_then_b_updated(&redis, "revalidate");
    let mut a = process_a(a_dir.path(), &redis, "revalidate");
    assert_eq!(a.get("k").as_deref(), Some("b-new"));
    assert_eq!(a.get("gone"), None, "deleted meanwhile");
    // The replaced entry is now trusted: the next read is an L1 hit.
    let before = a.stats();
    assert_eq!(a.get("k").as_deref(), Some("b-new"));
    let after = a.stats();
    assert_eq!(after.local.hits, before.local.hits + 1);
    assert_eq!(after.consistency.revalidated_replaced, 1);
    assert_eq!(after.consistency.revalidated_dropped, 1);
    a.stop();
}

#[test]
fn a_restored_entry_that_l2_still_holds_is_confirmed_once_and_then_served_from_l1() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut a = process_a(dir.path(), &redis, "revalidate");
    a.set("same", "seven");
    a.stop();
    let mut a = process_a(dir.path(), &redis, "revalidate");
    assert_eq!(a.get("same").as_deref(), Some("seven"));
    assert_eq!(a.get("same").as_deref(), Some("seven"));
    let stats = a.stats();
    assert_eq!(stats.consistency.revalidated_confirmed, 1);
    assert_eq!(stats.distributed.hits, 1, "L2 asked once");
    assert_eq!(stats.local.hits, 1);
    a.stop();
}

#[test]
fn while_l2_is_down_a_restored_entry_is_served_as_is_and_checked_once_l2_returns() {
    let mut redis = RedisServer::start();
    let a_dir = a_cached_then_b_updated(&redis, "revalidate");
    redis.kill();
    let mut a = process_a(a_dir.path(), &redis, "revalidate");
    assert_eq!(a.get("k").as_deref(), Some("a-old"), "offline mode");
    assert!(a.stats().consistency.served_unverified >= 1);
    // L2 returns empty (no persistence) and someone writes k there: the restored copy is
    // still suspect, so the first read after the breaker lets L2 through returns L2's value.
    redis.restart();
    let b_dir = tempfile::tempdir().unwrap();
    let b = CacheManager::new(config(b_dir.path(), &redis.addr(), "revalidate")).unwrap();
    b.set("k", "b-after", None).unwrap();
    // Polling A's answer is the event: the breaker's cool-down lets a read through to L2.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match a.get("k").as_deref() {
            Some("b-after") => break,
            Some("a-old") => assert!(Instant::now() < deadline, "never revalidated"),
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    a.stop();
}

#[test]
fn trust_serves_the_restored_copy_and_drop_never_serves_it() {
    let mut redis = RedisServer::start();
    let trust_dir = a_cached_then_b_updated(&redis, "trust");
    let mut a = process_a(trust_dir.path(), &redis, "trust");
    assert_eq!(a.get("k").as_deref(), Some("a-old"));
    let stats = a.stats();
    assert_eq!(
        stats.distributed.hits + stats.distributed.misses,
        0,
        "L2 not asked"
    );
    a.stop();

    let drop_dir = a_cached_then_b_updated(&redis, "drop");
    let mut a = process_a(drop_dir.path(), &redis, "drop");
    assert_eq!(a.get("k").as_deref(), Some("b-new"));
    a.stop();
    // With L2 down, "drop" gives a miss rather than a possibly stale value.
    let drop_dir = a_cached_then_b_updated(&redis, "drop");
    redis.kill();
    let mut a = process_a(drop_dir.path(), &redis, "drop");
    assert_eq!(a.get("k"), None);
    assert_eq!(a.stats().consistency.revalidated_dropped, 1);
    a.stop();
}

#[test]
fn a_restart_after_a_sigkill_also_revalidates_what_the_killed_process_had_cached() {
    let redis = RedisServer::start();
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = process_a(a_dir.path(), &redis, "revalidate");
    a.set("k", "a-old");
    a.set("gone", "a-old");
    // No flush, no clean close: A dies right after its acknowledged writes.
    a.kill();
    let b = CacheManager::new(config(b_dir.path(), &redis.addr(), "revalidate")).unwrap();
    b.set("k", "b-new", None).unwrap();
    b.delete("gone").unwrap();
    let mut a = process_a(a_dir.path(), &redis, "revalidate");
    assert_eq!(a.get("k").as_deref(), Some("b-new"));
    assert_eq!(a.get("gone"), None, "deleted meanwhile");
    // Both entries survived the kill in L1 and were checked, not merely missing.
    let stats = a.stats().consistency;
    assert_eq!(stats.revalidated_replaced, 1, "{stats:?}");
    assert_eq!(stats.revalidated_dropped, 1, "{stats:?}");
    a.stop();
}

/// An op queued for replay (raw bytes: the queue holds encoded values), written straight to a
/// closed manager's queue: the case where it was fsynced but the L1 write it records was lost
/// (a power cut with periodic fsync, a kill with redb) or could not be applied (a delete L1
/// refused is queued all the same).
#[derive(Clone, Copy, Debug)]
enum Queued {
    Delete,
    Set(&'static str),
}

#[test]
fn under_every_restart_policy_a_restored_entry_is_decided_by_its_queued_op() {
    let mut redis = RedisServer::start();
    let mut cases = Vec::new();
    for policy in ["revalidate", "trust", "drop"] {
        for op in [Queued::Delete, Queued::Set("new")] {
            let dir = tempfile::tempdir().unwrap();
            {
                let m = CacheManager::new(config(dir.path(), &redis.addr(), policy)).unwrap();
                m.set_raw("k", b"old", None).unwrap();
                m.flush().unwrap();
            }
            let q = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
            match op {
                Queued::Delete => q.push_delete("k").unwrap(),
                Queued::Set(value) => {
                    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                    let expires = u64::try_from((now + Duration::from_secs(600)).as_millis()).unwrap();
                    q.push_set("k", value.as_bytes(), expires).unwrap()
                }
            };
            drop(q);
            cases.push((policy, op, dir));
        }
    }
    // L2 (older than the op in any case) cannot answer: only the op can decide.
    redis.kill();
    for (policy, op, dir) in &cases {
        let m = CacheManager::new(config(dir.path(), &redis.addr(), policy)).unwrap();
        let want = match op {
            Queued::Delete => None,
            Queued::Set(value) => Some(value.as_bytes().to_vec()),
        };
        // Twice: the first read may settle the entry, the second is served from L1 as settled.
        for read in 0..2 {
            assert_eq!(
                m.get_raw("k").unwrap(),
                want,
                "{policy} with a queued {op:?}, read {read}: the restored entry was served over the op"
            );
        }
    }
}
