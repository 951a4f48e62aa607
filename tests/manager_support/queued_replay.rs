//! The set-up of the shutdown-during-replay tests: a manager on a memory L1 and a real
//! memcached behind a [`GatedStore`], ten writes queued for replay while memcached was down, and
//! memcached back and answering, the replay not begun yet (the replay thread ticks once an hour;
//! only a nudge or a call starts it). Its queue lives in the returned directory. Included with
//! `#[path]` next to the `manager_support`, `support` and `threads` modules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manager_support::gated::GatedStore;
use super::support::MemcachedServer;
use super::threads::until_thread;
use uno_cache::{CacheConfig, CacheManager, MemcachedOptions, MemcachedStore, MemoryStore, Storage};

/// Waits until `ready()` holds, failing with `what` after 10 s.
pub fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

/// What [`ten_writes_queued`] made; keep the server and the directory alive with the manager.
pub struct Queued {
    pub server: MemcachedServer,
    pub l2: Arc<GatedStore<MemcachedStore>>,
    pub dir: tempfile::TempDir,
    pub cache: CacheManager,
}

/// See the module docs; the keys are "k0" to "k9", under memcached prefix `prefix`.
pub fn ten_writes_queued(prefix: &str) -> Queued {
    let mut server = MemcachedServer::start();
    let store = MemcachedStore::connect(MemcachedOptions::new(server.addr()).prefix(prefix)).unwrap();
    let l2 = GatedStore::new(Arc::new(store));
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(1000).unwrap()))
        .distributed(l2.clone())
        .build()
        .unwrap();
    until_thread("uno-cache-backf", true);
    server.kill();
    for i in 0..10u32 {
        cache.set(&format!("k{i}"), &i, None).unwrap();
    }
    assert_eq!(cache.stats().consistency.replay_pending, 10);
    server.restart();
    until("memcached never answered again", || {
        l2.set("probe", b"x", None).is_ok()
    });
    Queued {
        server,
        l2,
        dir,
        cache,
    }
}
