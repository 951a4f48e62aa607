//! The offline mode across an L2 outage and a restart: Redis is killed; the service keeps
//! setting and deleting (L1 answers, the L2 ops go to the durable replay queue in the L1
//! directory); the process restarts while Redis is still down; Redis comes back *with its old
//! data* (append-only file), so every key it held is stale. The bug this guards against: a
//! delete made during the outage is forgotten and the deleted value comes back from L2 — in this
//! instance (backfill) or in a fresh one — or a later set is overwritten by an earlier one.
//! After the replay, L2 holds exactly what the instance holds, and no deleted value is served
//! anywhere, not even between L2's return and the replay.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, RedisOptions, RedisStore, Storage};

fn config(dir: &Path, redis: &str, replay_interval_ms: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        ttl = 600
        durability = "every_write"
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{redis}"]
        ttl = 600
        key_prefix = "app:"
        timeout_ms = 200
        breaker_failures = 1
        breaker_cooldown_ms = 100
        [offline]
        replay_interval_ms = {replay_interval_ms}
        "#,
        dir.display()
    ))
    .unwrap()
}

/// Redis that keeps its data across a kill (append-only file, fsync always).
fn persistent_redis() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"], None)
}

fn l2_view(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(RedisOptions::new(redis.addr()).prefix("app:")).unwrap()
}

fn l2_value(l2: &RedisStore, key: &str) -> Option<Vec<u8>> {
    l2.get(key).unwrap().map(|e| e.value)
}

fn get(cache: &CacheManager, key: &str) -> Option<Vec<u8>> {
    cache.get_raw(key).unwrap()
}

/// Retries `replay_now` until L2 (connected in the background after the restart) takes the
/// whole queue.
fn replay_until_empty(cache: &CacheManager) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut replayed = 0;
    loop {
        match cache.replay_now() {
            Ok(n) => {
                replayed += n;
                if cache.stats().consistency.replay_pending == 0 {
                    return replayed;
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "L2 never took the replay: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn deletes_and_sets_made_while_l2_was_dead_reach_it_in_order_after_a_restart_and_no_deleted_value_returns() {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    // A long replay interval: this test drives the replay itself, to look at the gap before it.
    let cfg = config(dir.path(), &redis.addr(), 60_000);

    // 1. Before the outage: every key is in both levels.
    {
        let cache = CacheManager::new(cfg.clone()).unwrap();
        for key in ["a", "b", "c", "e"] {
            cache.set_raw(key, b"old", None).unwrap();
        }
        let l2 = l2_view(&redis);
        assert_eq!(l2_value(&l2, "b").as_deref(), Some(&b"old"[..]));

        // 2. L2 dies; the service goes on.
        redis.kill();
        cache.set_raw("a", b"new", None).unwrap(); // set over an old value
        assert!(cache.delete("b").unwrap()); // delete of an old value
        cache.delete("c").unwrap();
        cache.set_raw("c", b"again", None).unwrap(); // delete, then set: the set wins
        cache.set_raw("d", b"fresh", None).unwrap(); // a new key
        cache.set_raw("e", b"mid", None).unwrap();
        cache.delete("e").unwrap(); // set, then delete: the delete wins
        let stats = cache.stats().consistency;
        assert!(stats.replay_enabled);
        assert_eq!(stats.replay_pending, 5, "{stats:?}");
        assert_eq!(get(&cache, "b"), None);
        assert_eq!(get(&cache, "e"), None);
        assert_eq!(get(&cache, "a").as_deref(), Some(&b"new"[..]));
    } // 3. The process stops (L1 and the queue are closed).

    // 4. It restarts while L2 is still down: it starts from L1 and the queue on disk.
    let cache = CacheManager::new(cfg.clone()).unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 5);
    assert_eq!(
        get(&cache, "a").as_deref(),
        Some(&b"new"[..]),
        "offline: L1 served"
    );
    assert_eq!(get(&cache, "c").as_deref(), Some(&b"again"[..]));
    assert_eq!(get(&cache, "b"), None);

    // 5. L2 returns with its old data: b, c and e are stale there.
    redis.restart();
    let l2 = l2_view(&redis);
    assert_eq!(
        l2_value(&l2, "b").as_deref(),
        Some(&b"old"[..]),
        "L2 came back stale"
    );
    // Before the replay, a read of a key with a queued delete must not take L2's old value.
    assert_eq!(
        get(&cache, "b"),
        None,
        "deleted value came back from L2 before the replay"
    );
    assert_eq!(get(&cache, "e"), None);
    assert_eq!(cache.stats().overall.backfills, 0, "no stale backfill");

    // 6. Replay: L2 ends in the instance's state.
    assert_eq!(replay_until_empty(&cache), 5);
    assert_eq!(l2_value(&l2, "a").as_deref(), Some(&b"new"[..]));
    assert_eq!(l2_value(&l2, "b"), None);
    assert_eq!(l2_value(&l2, "c").as_deref(), Some(&b"again"[..]));
    assert_eq!(l2_value(&l2, "d").as_deref(), Some(&b"fresh"[..]));
    assert_eq!(l2_value(&l2, "e"), None);
    assert!(!cache.stats().consistency.replay_overflowed);

    // 7. Nowhere does a deleted value come back: here, nor in a fresh instance with an empty L1.
    assert_eq!(get(&cache, "b"), None);
    assert_eq!(get(&cache, "a").as_deref(), Some(&b"new"[..]));
    let other_dir = tempfile::tempdir().unwrap();
    let other = CacheManager::new(config(other_dir.path(), &redis.addr(), 60_000)).unwrap();
    for (key, want) in [
        ("a", Some(&b"new"[..])),
        ("b", None),
        ("c", Some(&b"again"[..])),
        ("d", Some(&b"fresh"[..])),
        ("e", None),
    ] {
        assert_eq!(get(&other, key).as_deref(), want, "fresh instance, key {key}");
    }
}

#[test]
fn the_background_thread_replays_a_delete_once_l2_is_back() {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis.addr(), 50)).unwrap();
    cache.set_raw("k", b"v", None).unwrap();
    redis.kill();
    cache.delete("k").unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 1);
    redis.restart();
    let l2 = l2_view(&redis);
    // Nobody calls replay_now: the replay thread's tick (50 ms, after the breaker's cool-down)
    // must do it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cache.stats().consistency.replay_pending > 0 {
        assert!(Instant::now() < deadline, "the queue was never replayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(l2_value(&l2, "k"), None);
    assert_eq!(cache.stats().consistency.replayed, 1);
}
