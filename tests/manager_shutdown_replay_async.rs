//! Shutdown during a replay that `replay_now_async` began and its caller gave up on (a shutdown
//! hook's timeout): the drop's stop signal stops it at the next op, as it stops the replay
//! thread, and the rest stays queued for the next start. It went on with the whole queue, one L2
//! round trip per op, on its own thread, holding the queue and the level after the drop. One
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
use uno_cache::{CacheConfig, CacheManager, Error, MemoryStore, Storage};

/// Waits until `ready()` holds, failing with `what` after 10 s.
fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

#[test]
fn dropping_the_manager_stops_a_replay_that_an_abandoned_replay_now_async_began() {
    let mut server = MemcachedServer::start();
    let store =
        uno_cache::MemcachedStore::connect(uno_cache::MemcachedOptions::new(server.addr()).prefix("sra:"))
            .unwrap();
    let gated = GatedStore::new(Arc::new(store));
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    // No tick of the replay thread: only the call below replays.
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
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let given_up = tokio::time::timeout(Duration::from_millis(50), cache.replay_now_async()).await;
        assert!(given_up.is_err(), "the replay ended while its first op was held");
    });
    first.wait_entered();
    let dropper = std::thread::spawn(move || drop(cache));
    until("the drop never fired the stop signal", || {
        !cache_threads().iter().any(|t| t == "uno-cache-backf")
    });
    first.release();
    dropper.join().unwrap();
    // The abandoned replay's thread holds the queue until it ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let queue = loop {
        match ReplayQueue::open(dir.path(), ReplayOptions::default()) {
            Ok(queue) => break queue,
            Err(Error::Locked { .. }) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("the queue did not come free: {e}"),
        }
    };
    assert_eq!(
        queue.len(),
        9,
        "the abandoned replay went on with the queue after the drop"
    );
    assert!(!queue.is_pending("k0"), "the op in progress was not acked");
}
