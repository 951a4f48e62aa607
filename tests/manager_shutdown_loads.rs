//! Shutdown with a load still storing: a load that goes on after its caller gave up (the hard
//! timeout) stores its value on its own thread. It held a full handle while it did, so when the
//! application dropped its last handle meanwhile, that drop returned at once and the whole
//! shutdown (threads joined, write-behind queue sent) ran later on the load's thread, or never if
//! the process exited first. Now the drop waits for the store in progress and shuts down on the
//! dropping thread. One test in this binary, so no other test's threads are counted.
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

use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::{Duration, Instant};

use manager_support::gated::{GatedStore, Point};
use threads::{cache_threads, cache_threads_once_gone, until_thread};
use uno_cache::{CacheConfig, CacheManager, Error, InProcess, MemoryStore, Storage};

#[test]
fn dropping_the_last_handle_waits_for_a_load_storing_apart_from_its_caller_and_shuts_down_on_the_dropping_thread(
) {
    assert_eq!(
        cache_threads(),
        Vec::<String>::new(),
        "no cache thread before the test"
    );
    let l2 = GatedStore::new(Arc::new(InProcess::shared(Arc::new(
        MemoryStore::new(1000).unwrap(),
    ))));
    let mut config = CacheConfig::default();
    config.loader.hard_timeout_ms = 100;
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(1000).unwrap()))
        .distributed(l2.clone())
        .build()
        .unwrap();
    until_thread("uno-cache-backf", true);
    let (release_loader, loader_waits) = channel::<()>();
    let got = cache.get_or_load::<String, Error, _>("k", None, move || {
        let _ = loader_waits.recv();
        Ok("loaded".to_owned())
    });
    assert!(matches!(got, Err(Error::LoaderTimeout { .. })), "{got:?}");
    // The load goes on; its store is held at L2.
    let store = l2.gate("set", "k", Point::Before);
    release_loader.send(()).unwrap();
    store.wait_entered();
    let (dropped, drop_returned) = channel();
    let dropper = std::thread::spawn(move || {
        drop(cache);
        let _ = dropped.send(());
    });
    assert!(
        drop_returned.recv_timeout(Duration::from_millis(300)).is_err(),
        "the drop returned while a load was storing: its shutdown was left to the load's thread"
    );
    store.release();
    dropper.join().unwrap();
    assert_eq!(
        cache_threads_once_gone(Instant::now() + Duration::from_secs(5)),
        Vec::<String>::new(),
        "threads left after the last drop returned"
    );
    assert!(
        l2.get("k").unwrap().is_some(),
        "the load's store reached L2 before the shutdown"
    );
}
