//! An invalidation of a prefix or of everything received from another instance, while this L1
//! (a level a user plugged in) panics when asked to list a prefix's keys or to clear: L1 cannot
//! drop what the message names, so it must stop vouching for what it holds, as after any failed
//! drop. Two managers in one process share an in-process L2, and a backplane on a real
//! `redis-server`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/delegate.rs"]
mod delegate;

use std::sync::Arc;

use delegate::{Delegate, Wrap, WrapLocal};
use support::{wait_until, RedisServer};
use uno_cache::invalidation::Invalidation;
use uno_cache::{CacheConfig, CacheManager, InProcess, MemoryStore, Result, Storage};

/// A memory L1 that panics when asked to clear or to list the keys under a prefix, as a faulty
/// level a user plugged in might.
struct ClearPanics(MemoryStore);

impl Wrap for ClearPanics {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.0
    }
    fn name(&self) -> &str {
        "custom"
    }
    fn clear(&self) -> Result<()> {
        panic!("clear panicked (test)");
    }
}

impl WrapLocal for ClearPanics {
    fn keys_with_prefix(&self, _prefix: &str) -> Result<Option<Vec<String>>> {
        panic!("keys_with_prefix panicked (test)");
    }
}

fn manager(redis: &RedisServer, l2: &Arc<MemoryStore>, l1: Arc<dyn uno_cache::LocalStorage>) -> CacheManager {
    let mut config = CacheConfig::default();
    config.invalidation.enabled = true;
    config.invalidation.hosts = vec![redis.addr()];
    CacheManager::builder()
        .config(config)
        .local(l1)
        .distributed(Arc::new(InProcess::shared(Arc::clone(l2))))
        .build()
        .unwrap()
}

/// B holds `user:1` = old in L1; L2 gets `new` behind B's back, and A publishes `message`
/// (which names `user:1`). Once B has handled it (applied, or its handler panicked), B must not
/// answer the old value from L1.
fn b_must_not_serve_the_old_value_after(message: &Invalidation) {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let a = manager(&redis, &l2, Arc::new(MemoryStore::new(1000).unwrap()));
    let b = manager(
        &redis,
        &l2,
        Arc::new(Delegate(ClearPanics(MemoryStore::new(1000).unwrap()))),
    );
    // B is subscribed once it has heard of A's set.
    a.set_raw("user:1", b"old", None).unwrap();
    wait_until("B to hear of A's set", || {
        b.stats().consistency.invalidations_received >= 1
    });
    assert_eq!(b.get_raw("user:1").unwrap().as_deref(), Some(&b"old"[..]));
    assert!(b.local().get("user:1").unwrap().is_some(), "B holds user:1 in L1");

    l2.set("user:1", b"new", None).unwrap();
    let received = b.stats().consistency.invalidations_received;
    a.backplane().unwrap().publish(message).unwrap();
    wait_until("B to handle A's message", || {
        b.stats().consistency.invalidations_received > received
            || b.backplane().unwrap().stats().handler_panics > 0
    });
    assert_eq!(
        b.get_raw("user:1").unwrap().as_deref(),
        Some(&b"new"[..]),
        "B served from L1 the value {message:?} invalidated"
    );
    assert!(
        b.stats().local.errors > 0,
        "the failed drop is counted as an L1 error"
    );
    assert_eq!(
        b.backplane().unwrap().stats().handler_panics,
        0,
        "the L1's panic reached the backplane's handler thread"
    );
}

#[test]
fn a_prefix_invalidation_an_l1_panics_on_leaves_its_entries_suspect() {
    b_must_not_serve_the_old_value_after(&Invalidation::Prefix("user:".to_owned()));
}

#[test]
fn an_invalidation_of_everything_an_l1_panics_on_leaves_its_entries_suspect() {
    b_must_not_serve_the_old_value_after(&Invalidation::All);
}
