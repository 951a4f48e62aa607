//! Two instances whose shared L2 is Memcached and whose backplane is a separate Redis: after one
//! instance overwrites or deletes a key (L1, then L2, then a published invalidation), the other
//! instance's persistent L1 (a `FileStore`) no longer serves the old value, and its next read
//! goes to L2 and finds the new one. Memcached has no pub/sub; without a backplane on another
//! server, the second instance would serve its stale L1 copy until the TTL ran out. The handler
//! only touches L1: L2 sees one write per change, not one per instance.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use support::{MemcachedServer, RedisServer};
use uno_cache::invalidation::{
    Backplane, BackplaneOptions, Invalidation, InvalidationHandler, InvalidationMessage,
};
use uno_cache::{FileStore, FileStoreOptions, MemcachedOptions, MemcachedStore, Storage};

/// Drops invalidated keys from this instance's L1 and reports each message once applied.
struct DropFromL1 {
    l1: Arc<FileStore>,
    applied: Mutex<mpsc::Sender<Invalidation>>,
}

impl InvalidationHandler for DropFromL1 {
    fn invalidate(&self, msg: &InvalidationMessage) {
        if let Invalidation::Keys(keys) = &msg.invalidation {
            for key in keys {
                self.l1.delete(key).unwrap();
            }
        }
        let _ = self.applied.lock().send(msg.invalidation.clone());
    }

    fn subscription_lost(&self, _since: SystemTime) {}
}

/// One cache instance: a persistent L1, the shared Memcached L2 and the Redis backplane.
struct Instance {
    l1: Arc<FileStore>,
    l2: MemcachedStore,
    backplane: Backplane,
    applied: mpsc::Receiver<Invalidation>,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn start(memcached: &MemcachedServer, redis: &RedisServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let l1 = Arc::new(FileStore::open(dir.path(), FileStoreOptions::default()).unwrap());
        let l2 = MemcachedStore::connect(MemcachedOptions::new(memcached.addr())).unwrap();
        let (tx, applied) = mpsc::channel();
        let handler = Arc::new(DropFromL1 {
            l1: l1.clone(),
            applied: Mutex::new(tx),
        });
        let backplane = Backplane::connect(BackplaneOptions::url(redis.addr()), handler).unwrap();
        Instance {
            l1,
            l2,
            backplane,
            applied,
            _dir: dir,
        }
    }

    /// Read-through: L1, else L2 with backfill into L1.
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        if let Some(v) = self.l1.get(key).unwrap() {
            return Some(v);
        }
        let entry = self.l2.get(key).unwrap()?;
        self.l1.set(key, &entry.value, None).unwrap();
        Some(entry.value)
    }

    fn set(&self, key: &str, value: &[u8]) {
        self.l1.set(key, value, None).unwrap();
        self.l2.set(key, value, None).unwrap();
        self.backplane
            .publish(&Invalidation::Keys(vec![key.to_owned()]))
            .unwrap();
    }

    fn delete(&self, key: &str) {
        self.l1.delete(key).unwrap();
        self.l2.delete(key).unwrap();
        self.backplane
            .publish(&Invalidation::Keys(vec![key.to_owned()]))
            .unwrap();
    }

    fn wait_applied(&self) -> Invalidation {
        self.applied.recv_timeout(Duration::from_secs(10)).unwrap()
    }
}

#[test]
fn a_change_through_memcached_drops_the_stale_copy_from_the_other_instances_l1() {
    let memcached = MemcachedServer::start();
    let redis = RedisServer::start();
    let x = Instance::start(&memcached, &redis);
    let y = Instance::start(&memcached, &redis);

    x.set("user:1", b"v1");
    assert_eq!(y.wait_applied(), Invalidation::Keys(vec!["user:1".into()]));
    assert_eq!(y.get("user:1").as_deref(), Some(&b"v1"[..]), "read through");
    assert!(
        y.l1.get("user:1").unwrap().is_some(),
        "and backfilled into Y's L1"
    );

    // X overwrites: Y's L1 copy is dropped and the next read finds v2 in Memcached.
    x.set("user:1", b"v2");
    y.wait_applied();
    assert_eq!(y.l1.get("user:1").unwrap(), None, "stale copy dropped");
    assert_eq!(y.get("user:1").as_deref(), Some(&b"v2"[..]));

    // X deletes: Y's L1 copy is dropped and the key is gone everywhere.
    x.delete("user:1");
    y.wait_applied();
    assert_eq!(y.get("user:1"), None);

    // Y's handler never touched L2: one set per change from X, nothing from Y.
    assert_eq!(memcached.stat("cmd_set"), 2);
    assert_eq!(y.backplane.stats().published, 0);
    assert_eq!(x.backplane.stats().received, 0, "X ignores its own messages");
}
