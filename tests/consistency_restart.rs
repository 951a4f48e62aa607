//! Restart staleness: instance A caches `k` in its persistent L1 and stops; while it is down,
//! instance B (same L2) updates `k`, so A never hears of it; A restarts. The bug this guards
//! against: A's L1 restored from disk serves its old copy for up to `local.ttl`. With the
//! default `restart_policy = "revalidate"`, A's first read checks the restored entry against L2
//! and returns B's value; while L2 is down it serves its copy (offline mode). `"trust"` serves
//! the restored copy; `"drop"` never serves it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager};

fn config(dir: &Path, redis: &str, policy: &str) -> CacheConfig {
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
        timeout_ms = 200
        breaker_failures = 1
        breaker_cooldown_ms = 100
        [consistency]
        restart_policy = "{policy}"
        "#,
        dir.display()
    ))
    .unwrap()
}

/// A caches `k` = "a-old" and stops; B sets `k` = "b-new". Returns A's directory.
fn a_cached_then_b_updated(redis: &RedisServer, policy: &str) -> tempfile::TempDir {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    {
        let a = CacheManager::new(config(a_dir.path(), &redis.addr(), policy)).unwrap();
        a.set("k", "a-old", None).unwrap();
        a.set("gone", "a-old", None).unwrap();
        a.flush().unwrap();
    }
    let b = CacheManager::new(config(b_dir.path(), &redis.addr(), policy)).unwrap();
    b.set("k", "b-new", None).unwrap();
    b.delete("gone").unwrap();
    a_dir
}

#[test]
fn after_a_restart_the_first_read_returns_the_value_another_instance_wrote_meanwhile() {
    let redis = RedisServer::start();
    let a_dir = a_cached_then_b_updated(&redis, "revalidate");
    let a = CacheManager::new(config(a_dir.path(), &redis.addr(), "revalidate")).unwrap();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("b-new"));
    assert_eq!(a.get::<String>("gone").unwrap(), None, "deleted meanwhile");
    // The replaced entry is now trusted: the next read is an L1 hit.
    let before = a.stats();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("b-new"));
    let after = a.stats();
    assert_eq!(after.local.hits, before.local.hits + 1);
    assert_eq!(after.consistency.revalidated_replaced, 1);
    assert_eq!(after.consistency.revalidated_dropped, 1);
}

#[test]
fn a_restored_entry_that_l2_still_holds_is_confirmed_once_and_then_served_from_l1() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    {
        let a = CacheManager::new(config(dir.path(), &redis.addr(), "revalidate")).unwrap();
        a.set("same", &7u32, None).unwrap();
    }
    let a = CacheManager::new(config(dir.path(), &redis.addr(), "revalidate")).unwrap();
    assert_eq!(a.get::<u32>("same").unwrap(), Some(7));
    assert_eq!(a.get::<u32>("same").unwrap(), Some(7));
    let stats = a.stats();
    assert_eq!(stats.consistency.revalidated_confirmed, 1);
    assert_eq!(stats.distributed.hits, 1, "L2 asked once");
    assert_eq!(stats.local.hits, 1);
}

#[test]
fn while_l2_is_down_a_restored_entry_is_served_as_is_and_checked_once_l2_returns() {
    let mut redis = RedisServer::start();
    let a_dir = a_cached_then_b_updated(&redis, "revalidate");
    redis.kill();
    let a = CacheManager::new(config(a_dir.path(), &redis.addr(), "revalidate")).unwrap();
    assert_eq!(
        a.get::<String>("k").unwrap().as_deref(),
        Some("a-old"),
        "offline mode"
    );
    assert!(a.stats().consistency.served_unverified >= 1);
    // L2 returns empty (no persistence) and someone writes k there: the restored copy is
    // still suspect, so the first read after the breaker lets L2 through returns L2's value.
    redis.restart();
    let b_dir = tempfile::tempdir().unwrap();
    let b = CacheManager::new(config(b_dir.path(), &redis.addr(), "revalidate")).unwrap();
    b.set("k", "b-after", None).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        match a.get::<String>("k").unwrap().as_deref() {
            Some("b-after") => break,
            Some("a-old") => assert!(std::time::Instant::now() < deadline, "never revalidated"),
            other => panic!("unexpected {other:?}"),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn trust_serves_the_restored_copy_and_drop_never_serves_it() {
    let mut redis = RedisServer::start();
    let trust_dir = a_cached_then_b_updated(&redis, "trust");
    let a = CacheManager::new(config(trust_dir.path(), &redis.addr(), "trust")).unwrap();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("a-old"));
    assert_eq!(
        a.stats().distributed.hits + a.stats().distributed.misses,
        0,
        "L2 not asked"
    );
    drop(a);

    let drop_dir = a_cached_then_b_updated(&redis, "drop");
    let a = CacheManager::new(config(drop_dir.path(), &redis.addr(), "drop")).unwrap();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("b-new"));
    drop(a);
    // With L2 down, "drop" gives a miss rather than a possibly stale value.
    let drop_dir = a_cached_then_b_updated(&redis, "drop");
    redis.kill();
    let a = CacheManager::new(config(drop_dir.path(), &redis.addr(), "drop")).unwrap();
    assert_eq!(a.get::<String>("k").unwrap(), None);
    assert_eq!(a.stats().consistency.revalidated_dropped, 1);
}
