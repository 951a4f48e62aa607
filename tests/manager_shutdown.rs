//! Shutdown: dropping the last handle of a manager stops and joins every background thread it
//! started (write-behind writer, backfill, replay), on the dropping thread, after which the
//! writes still queued for write-behind are in L2. One test in this binary, so no other test's
//! threads are counted.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "manager_support/threads.rs"]
mod threads;

use std::sync::Arc;

use threads::{cache_threads, cache_threads_once_gone};
use uno_cache::{CacheConfig, CacheManager, InProcess, MemoryStore, Storage, WriteMode};

#[test]
fn dropping_the_last_handle_joins_every_background_thread_and_sends_queued_writes() {
    assert_eq!(
        cache_threads(),
        Vec::<String>::new(),
        "no cache thread before the test"
    );
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let mut config = CacheConfig::default();
    config.distributed.write_mode = WriteMode::Behind;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(1000).unwrap()))
        .distributed(Arc::new(InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    // A thread names itself once it runs: wait for the three names.
    let expected = ["uno-cache-backf", "uno-cache-l2-wr", "uno-cache-repla"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let threads = cache_threads();
        if expected.iter().all(|e| threads.iter().any(|t| t == e)) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "threads {threads:?}, expected {expected:?}"
        );
        std::thread::yield_now();
    }
    let clone = cache.clone();
    for i in 0..100 {
        cache.set_raw(&format!("k{i}"), b"v", None).unwrap();
    }
    drop(cache);
    assert!(!cache_threads().is_empty(), "a clone still holds the manager");
    drop(clone);
    // Joined by the drop; listed at most a moment longer (see `cache_threads_once_gone`).
    let listed_until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    assert_eq!(
        cache_threads_once_gone(listed_until),
        Vec::<String>::new(),
        "threads left after the last drop"
    );
    for i in 0..100 {
        assert_eq!(
            l2.get(&format!("k{i}")).unwrap().map(|e| e.value).as_deref(),
            Some(&b"v"[..]),
            "k{i} queued for write-behind never reached L2"
        );
    }
}
