//! Shutdown during a replay: the replay thread stops at the next op once the manager's drop has
//! fired the stop signal, and what it has not replayed stays in the durable queue for the next
//! start. It replayed the whole queue first (up to a million ops, one L2 round trip each), and
//! the drop, with the write-behind drain that comes after the join, waited for all of it. One
//! test in this binary, so no other test's threads are counted. A real memcached, down while the
//! queue fills.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;
#[path = "support/mod.rs"]
mod support;
#[path = "manager_support/threads.rs"]
mod threads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use manager_support::gated::{GatedStore, Point};
use support::MemcachedServer;
use threads::cache_threads;
use uno_cache::replay::{ReplayOptions, ReplayQueue};
use uno_cache::{CacheConfig, CacheManager, MemoryStore, Storage};

/// Waits until `ready()` holds, failing with `what` after 10 s.
fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

#[test]
fn dropping_the_manager_during_a_replay_leaves_the_rest_queued_instead_of_replaying_it() {
    let mut server = MemcachedServer::start();
    let store =
        uno_cache::MemcachedStore::connect(uno_cache::MemcachedOptions::new(server.addr()).prefix("sr:"))
            .unwrap();
    let gated = GatedStore::new(Arc::new(store));
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    // Only a nudge (an L2 call that succeeded while something is queued) starts a replay.
    config.offline.replay_interval_ms = 3_600_000;
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(1000).unwrap()))
        .distributed(gated.clone())
        .build()
        .unwrap();
    until("the backfill thread never started", || {
        cache_threads().iter().any(|t| t == "uno-cache-backf")
    });
    server.kill();
    for i in 0..10u32 {
        cache.set(&format!("k{i}"), &i, None).unwrap();
    }
    assert_eq!(cache.stats().consistency.replay_pending, 10);
    server.restart();
    until("memcached never answered again", || {
        gated.set("probe", b"x", None).is_ok()
    });
    // The replay goes in queue order: "k0" first.
    let first = gated.gate("set", "k0", Point::Before);
    cache.set("go", &1u32, None).unwrap();
    first.wait_entered();
    let dropper = std::thread::spawn(move || drop(cache));
    // The backfill thread ends once the drop fired the stop signal.
    until("the drop never fired the stop signal", || {
        !cache_threads().iter().any(|t| t == "uno-cache-backf")
    });
    first.release();
    dropper.join().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert_eq!(
        queue.len(),
        9,
        "the drop replayed the rest of the queue before it returned"
    );
    assert!(!queue.is_pending("k0"), "the op in progress was not acked");
}
