//! A batch read meets an L1 error for one of its keys as a single read of that key does, and
//! goes on with the others (their values, the backfill of their L2 hits). A suspect entry whose
//! confirm or drop fails after L2 answered: the read answers L2's answer, the failure counted
//! (a failed backfill never fails a read). A key whose L1 read itself fails: a single read
//! answers the error, so the batch names the key as not served (a partial batch carrying what it
//! found). With `fallback_on_error = false`, so that an error that reached the caller would
//! show. Real `redis-server` L2, file-store L1.
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
    RedisOptions, RedisStore, Result, Served, Storage, SuspectEpoch,
};

/// The file store, whose confirms and deletes fail while `failing` (its disk gone read-only),
/// and whose reads of keys starting with `bad` fail then too (a damaged page, say).
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
    fn get_checked(&self, key: &str) -> Result<Option<(uno_cache::Entry, Freshness)>> {
        if self.failing.load(Ordering::SeqCst) && key.starts_with("bad") {
            return Err(read_only("get"));
        }
        self.l1.get_checked(key)
    }
    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(read_only("confirm"));
        }
        LocalStorage::confirm(&*self.l1, key, checked_at)
    }
}

/// A manager over [`FailingSettles`] (not failing yet) and Redis under `prefix`, with
/// `fallback_on_error = false`.
struct Setup {
    file: Arc<FileStore>,
    l1: Arc<Delegate<FailingSettles>>,
    redis: Arc<RedisStore>,
    cache: CacheManager,
}

fn setup(server: &RedisServer, dir: &std::path::Path, prefix: &str) -> Setup {
    let file = Arc::new(FileStore::open(dir, FileStoreOptions::default().max_size_mb(64)).unwrap());
    let l1 = Arc::new(Delegate(FailingSettles {
        l1: file.clone(),
        failing: AtomicBool::new(false),
    }));
    let redis = Arc::new(RedisStore::connect(RedisOptions::new(server.addr()).prefix(prefix)).unwrap());
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
    Setup {
        file,
        l1,
        redis,
        cache,
    }
}

/// `same` is suspect in L1 and L2 holds its bytes; `gone` is suspect in L1 and L2 holds none;
/// `x` and `y` are in L2 only. Confirming `same` and dropping `gone` fail in L1. Single reads
/// answer L2's answers; a batch of the four answers the same, and backfills `x` and `y`.
#[test]
fn a_batch_read_settles_each_suspect_key_as_a_single_read_does_when_l1_fails_the_settling() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        file,
        l1,
        redis,
        cache,
    } = setup(&server, dir.path(), "rl:");
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

/// A raw batch read, named.
type BatchRead = (
    &'static str,
    fn(&CacheManager, &[&str]) -> Result<HashMap<String, Vec<u8>>>,
);

/// `ok` is in L1, `x` in L2 only, and L1's read of `bad` fails. A single read of `bad` answers
/// that error. A batch of the three answers `ok` and `x` and names `bad` as not served, by its
/// place in the caller's batch, with the L1 error as the cause; `x` is backfilled. Before, the
/// batch answered the L1 error alone and dropped the values it had.
#[test]
fn a_batch_read_names_a_key_whose_l1_read_failed_and_answers_the_others() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let Setup {
        file,
        l1,
        redis,
        cache,
    } = setup(&server, dir.path(), "rb:");
    cache.set_raw("ok", b"1", None).unwrap();
    cache.set_raw("bad", b"2", None).unwrap();
    redis.set("x", b"3", None).unwrap();
    l1.failing.store(true, Ordering::SeqCst);

    let single = cache.get_raw("bad").unwrap_err();
    assert!(matches!(single, Error::Backend { op: "get", .. }), "{single}");

    let reads: [BatchRead; 2] = [
        ("multi_get_raw", |c, keys| c.multi_get_raw(keys)),
        ("multi_get_raw_async", |c, keys| {
            support::block_on(c.multi_get_raw_async(keys))
        }),
    ];
    for (name, read) in reads {
        file.delete("x").unwrap();
        let err = read(&cache, &["ok", "bad", "x"]).unwrap_err();
        let Error::PartialBatch(partial) = &err else {
            panic!("{name}: {err}");
        };
        assert_eq!(
            (partial.total, &partial.failed[..]),
            (3, &[1][..]),
            "{name}: {err}"
        );
        assert!(
            matches!(partial.cause, Error::Backend { op: "get", .. }),
            "{name}: {err}"
        );
        let Served::Found(found) = &partial.served else {
            panic!("{name}: {:?}", partial.served);
        };
        let expected: HashMap<String, Vec<u8>> = [("ok", b"1"), ("x", b"3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_vec()))
            .collect();
        assert_eq!(found, &expected, "{name}");
        cache.flush().unwrap();
        assert_eq!(
            file.get("x").unwrap(),
            Some(b"3".to_vec()),
            "{name}: the batch's L2 hit was not backfilled"
        );
    }
}
