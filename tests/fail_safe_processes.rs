//! Fail-safe across a restart, with real processes: a value is loaded through Redis and the
//! file store; then the source stops answering, Redis is killed, and the process is restarted
//! offline. The new process serves the stale copy from disk within the soft timeout (its
//! loader hangs), a plain `get` still says "none", and once the source is back a fresh value
//! replaces the stale one.
//!
//! Each step is a new OS process (this test binary run again, see
//! `tests/support/cache_process.rs`) on the same L1 directory. Time moves by giving each process
//! a clock set later than the last, so the value expires without the test waiting for it.

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

use cache_process::{CacheProcess, ENV_NOW_MS, ENV_SOURCE, LOAD_TTL};
use support::RedisServer;

const CHILD: &str = "fail_safe_child_process_entry_point";
const T0_MS: u64 = 1_700_000_000_000;
const SOFT_MS: u64 = 300;
const HARD_MS: u64 = 5_000;

fn config_toml(dir: &Path, redis: &str) -> String {
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
        [loader]
        fail_safe_max_duration = 3600
        soft_timeout_ms = {SOFT_MS}
        hard_timeout_ms = {HARD_MS}
        "#,
        dir.display()
    )
}

#[test]
#[ignore = "child process of the fail-safe process tests; does nothing alone"]
fn fail_safe_child_process_entry_point() {
    cache_process::serve();
}

fn process_at(dir: &Path, redis: &str, source: &Path, now_ms: u64) -> CacheProcess {
    CacheProcess::start_with_env(
        CHILD,
        &config_toml(dir, redis),
        &[
            (ENV_SOURCE, source.display().to_string()),
            (ENV_NOW_MS, now_ms.to_string()),
        ],
    )
}

#[test]
fn a_restarted_process_offline_serves_the_stale_copy_from_disk_until_the_source_is_back() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let source = work.path().join("source.txt");
    let hang = source.with_extension("hang");
    let l1 = dir.path().join("l1");

    // 1. The source answers: the value is loaded, stored in L1 and Redis.
    std::fs::write(&source, "v1").unwrap();
    let mut first = process_at(&l1, &redis.addr(), &source, T0_MS);
    assert_eq!(first.load("k"), "fresh v1");
    first.flush();
    first.stop();
    assert_eq!(redis.command_calls("set"), 1, "the load wrote through to Redis");

    // 2. The source hangs, Redis dies, and the value's TTL has passed.
    std::fs::remove_file(&source).unwrap();
    std::fs::write(&hang, "").unwrap();
    let redis_addr = redis.addr();
    redis.kill();
    let later = T0_MS + u64::try_from(LOAD_TTL.as_millis()).unwrap() + 20_000;
    let mut offline = process_at(&l1, &redis_addr, &source, later);
    assert_eq!(offline.get("k"), None, "a plain get never serves a stale copy");
    let asked = Instant::now();
    assert_eq!(offline.load("k"), "stale v1");
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(SOFT_MS) && took < Duration::from_millis(HARD_MS),
        "served after {took:?}; the soft timeout is {SOFT_MS} ms"
    );
    let stats = offline.stats();
    assert_eq!(stats.loader.soft_timeouts, 1, "{:?}", stats.loader);
    assert!(stats.loader.stale_served >= 1, "{:?}", stats.loader);
    offline.stop();

    // 3. The source is back (Redis still down): a fresh value replaces the stale one.
    std::fs::write(&source, "v2").unwrap();
    std::fs::remove_file(&hang).unwrap();
    let mut back = process_at(&l1, &redis_addr, &source, later + 1_000);
    assert_eq!(back.load("k"), "fresh v2");
    assert_eq!(back.get("k").as_deref(), Some("v2"));
    back.stop();
}
