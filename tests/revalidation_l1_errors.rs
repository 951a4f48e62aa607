//! A suspect L1 entry checked against L2 whose confirm or drop then fails in L1: the read
//! answers L2's answer, and the failure is counted (a failed backfill never fails a read). A
//! batch read settles each of its keys so: one key's L1 error fails neither the batch nor the
//! backfill of its other keys' L2 hits. With `fallback_on_error = false`, so that an error that
//! reached the caller would show. Real `redis-server` L2, file-store L1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

#[path = "support/delegate.rs"]
mod delegate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use delegate::{Delegate, Wrap, WrapLocal};
use support::RedisServer;
use uno_cache::{
    CacheConfig, CacheManager, Confirmation, Error, FileStore, FileStoreOptions, Freshness, LocalStorage,
    RedisOptions, RedisStore, Result, Storage, SuspectEpoch,
};

/// The file store, whose confirms and deletes fail while `failing` (its disk gone read-only).
struct FailingSettles {
    l1: Arc<FileStore>,
    failing: AtomicBool,
}

fn read_only(op: &'static str) -> Error {
    Error::Backend {
        level: "file",
        op,
        reason: "the disk went read-only".into(),
    }
}

impl Wrap for FailingSettles {
    type Inner = FileStore;
    fn inner(&self) -> &FileStore {
        &self.l1
    }
    fn delete(&self, key: &str) -> Result<bool> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(read_only("delete"));
        }
        self.l1.delete(key)
    }
}

impl WrapLocal for FailingSettles {
    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(read_only("confirm"));
        }
        LocalStorage::confirm(&*self.l1, key, checked_at)
    }
}

/// `same` is suspect in L1 and L2 holds its bytes; `gone` is suspect in L1 and L2 holds none;
/// `x` and `y` are in L2 only. Confirming `same` and dropping `gone` fail in L1. Single reads
/// answer L2's answers; a batch of the four answers the same, and backfills `x` and `y`.
#[test]
fn a_batch_read_settles_each_suspect_key_as_a_single_read_does_when_l1_fails_the_settling() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(64)).unwrap());
    let l1 = Arc::new(Delegate(FailingSettles {
        l1: file.clone(),
        failing: AtomicBool::new(false),
    }));
    let redis = Arc::new(RedisStore::connect(RedisOptions::new(server.addr()).prefix("rl:")).unwrap());
    let config = CacheConfig {
        fallback_on_error: false,
        ..CacheConfig::default()
    };
    let cache = CacheManager::builder()
        .config(config)
        .local(l1.clone())
        .distributed(redis.clone())
        .build()
        .unwrap();
    cache.set_raw("same", b"1", None).unwrap();
    cache.set_raw("gone", b"2", None).unwrap();
    redis.delete("gone").unwrap();
    redis.set("x", b"3", None).unwrap();
    redis.set("y", b"4", None).unwrap();
    file.mark_all_suspect();
    l1.failing.store(true, Ordering::SeqCst);

    assert_eq!(cache.get_raw("same").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(cache.get_raw("gone").unwrap(), None);
    assert_eq!(
        cache.stats().local.errors,
        2,
        "the single reads' confirm and drop"
    );

    let found = cache.multi_get_raw(&["same", "gone", "x", "y"]).unwrap();
    let expected: HashMap<String, Vec<u8>> = [("same", b"1"), ("x", b"3"), ("y", b"4")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_vec()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(cache.stats().local.errors, 4, "the batch's confirm and drop");
    cache.flush().unwrap();
    for (key, value) in [("x", b"3"), ("y", b"4")] {
        let held = file.get_checked(key).unwrap().map(|(e, f)| (e.value, f));
        assert_eq!(
            held,
            Some((value.to_vec(), Freshness::Trusted)),
            "{key}: an L2 hit of the batch was not backfilled"
        );
    }
    // Left suspect (not confirmed, not dropped): asked about again.
    for key in ["same", "gone"] {
        assert_eq!(
            file.get_checked(key).unwrap().map(|(_, f)| f),
            Some(Freshness::Suspect),
            "{key}"
        );
    }
}
