//! The redb L1 keeps the persistent promise as the file store does: entries restored at open and
//! entries written before a lost backplane subscription are kept, but suspect until checked
//! (`mark_all_suspect`, `get_checked`, `confirm`), so that `restart_policy = "revalidate"`
//! works for redb and a pub/sub reconnect no longer empties it. The manager tests run against a
//! real Redis (`redis-server` from the redis-server package).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use support::RedisServer;
use uno_cache::{
    CacheConfig, CacheManager, Durability, Error, Freshness, LocalStorage, ManualClock, RedbOptions,
    RedbStore, Storage, REDB_FILE_NAME,
};

fn open(dir: &Path) -> RedbStore {
    RedbStore::open(dir.join(REDB_FILE_NAME), RedbOptions::default()).unwrap()
}

fn freshness(store: &RedbStore, key: &str) -> Option<(Vec<u8>, Freshness)> {
    store
        .get_checked(key)
        .unwrap()
        .map(|(entry, freshness)| (entry.value, freshness))
}

#[test]
fn a_lost_subscription_makes_redb_entries_suspect_instead_of_clearing_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set("a", b"1", None).unwrap();
    store.set("b", b"2", None).unwrap();
    store.confirm("a", store.suspect_epoch()).unwrap();
    assert_eq!(freshness(&store, "a"), Some((b"1".to_vec(), Freshness::Trusted)));

    store.mark_all_suspect().unwrap();
    assert_eq!(store.size().unwrap().items, 2, "nothing was dropped");
    assert_eq!(freshness(&store, "a"), Some((b"1".to_vec(), Freshness::Suspect)));
    assert_eq!(freshness(&store, "b"), Some((b"2".to_vec(), Freshness::Suspect)));

    // Confirmed, rewritten and new entries are trusted; the others stay suspect.
    store.confirm("a", store.suspect_epoch()).unwrap();
    store.set("c", b"3", None).unwrap();
    assert_eq!(freshness(&store, "a"), Some((b"1".to_vec(), Freshness::Trusted)));
    assert_eq!(freshness(&store, "b"), Some((b"2".to_vec(), Freshness::Suspect)));
    assert_eq!(freshness(&store, "c"), Some((b"3".to_vec(), Freshness::Trusted)));
    store.set("b", b"22", None).unwrap();
    assert_eq!(freshness(&store, "b"), Some((b"22".to_vec(), Freshness::Trusted)));

    // A confirmation from before a later loss no longer counts.
    store.mark_all_suspect().unwrap();
    assert_eq!(freshness(&store, "a"), Some((b"1".to_vec(), Freshness::Suspect)));
    assert_eq!(freshness(&store, "nope"), None);
}

#[test]
fn redb_entries_restored_at_open_are_suspect_until_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        store.set("old", b"v", None).unwrap();
        assert_eq!(
            freshness(&store, "old"),
            Some((b"v".to_vec(), Freshness::Trusted))
        );
    }
    let store = open(dir.path());
    assert_eq!(
        freshness(&store, "old"),
        Some((b"v".to_vec(), Freshness::Suspect))
    );
    store.confirm("old", store.suspect_epoch()).unwrap();
    assert_eq!(
        freshness(&store, "old"),
        Some((b"v".to_vec(), Freshness::Trusted))
    );
    store.set("new", b"w", None).unwrap();
    assert_eq!(
        freshness(&store, "new"),
        Some((b"w".to_vec(), Freshness::Trusted))
    );
}

/// `purge_expired` lists the expired keys in one transaction and removes them in another; a
/// key rewritten in between keeps its new value. Many expired entries make the listing long
/// enough for the write to land during it.
#[test]
fn a_purge_never_removes_a_value_written_after_it_found_the_key_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000);
    let store = RedbStore::open(
        dir.path().join(REDB_FILE_NAME),
        RedbOptions::default()
            .durability(Durability::None)
            .clock(Arc::new(clock.clone())),
    )
    .unwrap();
    let keys: Vec<String> = (0..5_000).map(|i| format!("filler-{i}")).collect();
    let short = Some(Duration::from_secs(1));
    for round in 0..20 {
        let filler: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"x"[..])).collect();
        store.set_many(&filler, short).unwrap();
        store.set("k", b"old", short).unwrap();
        clock.advance(Duration::from_secs(2));
        let start = Barrier::new(2);
        std::thread::scope(|s| {
            s.spawn(|| {
                start.wait();
                store.purge_expired().unwrap();
            });
            start.wait();
            store.set("k", b"new", None).unwrap();
        });
        assert_eq!(
            store.get("k").unwrap().map(|e| e.value),
            Some(b"new".to_vec()),
            "round {round}"
        );
        assert!(store.delete("k").unwrap());
    }
}

/// A file whose table pages are damaged (redb panics on such a page) is refused at open with an
/// error naming it.
#[test]
fn a_redb_file_with_damaged_pages_is_refused_at_open_with_an_error_naming_it() {
    for damaged in [4096..8192, 8192..16384] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REDB_FILE_NAME);
        {
            // No commit in between is made durable by the clock, so the pages are laid out the
            // same in every run (with `Periodic`, a flush mid-loop moved them).
            let options = RedbOptions::default().durability(Durability::None);
            let store = RedbStore::open(&path, options).unwrap();
            for i in 0..500 {
                store.set(&format!("key-{i}"), &[7u8; 300], None).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[damaged.clone()].fill(0xA5);
        std::fs::write(&path, &bytes).unwrap();
        match RedbStore::open(&path, RedbOptions::default()) {
            Err(Error::Redb { path: named, .. }) => assert_eq!(named, path, "{damaged:?}"),
            other => panic!("{damaged:?}: {other:?}"),
        }
    }
}

/// A file of `entries` entries of 300 bytes, written without a durable commit in between (so
/// the pages are laid out the same in every run) and closed cleanly; its bytes.
fn pristine_file(entries: usize, ttl: Option<Duration>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    {
        let options = RedbOptions::default().durability(Durability::None);
        let store = RedbStore::open(&path, options).unwrap();
        for i in 0..entries {
            store.set(&format!("key-{i}"), &[7u8; 300], ttl).unwrap();
        }
    }
    std::fs::read(&path).unwrap()
}

/// A page of zeros and ones anywhere in the file (redb panics on many such pages, at open or at
/// their first use): open refuses the file, or every later call returns, an error or not; none
/// panics, aborts or hangs.
#[test]
fn damage_to_any_page_of_a_redb_file_is_an_error_never_a_panic() {
    const PAGE: usize = 4096;
    let bytes = pristine_file(400, Some(Duration::from_secs(3600)));
    for page in 0..bytes.len() / PAGE {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REDB_FILE_NAME);
        let mut damaged = bytes.clone();
        damaged[page * PAGE..(page + 1) * PAGE].fill(0xA5);
        std::fs::write(&path, &damaged).unwrap();
        let Ok(store) = RedbStore::open(&path, RedbOptions::default()) else {
            continue;
        };
        for i in (0..400).step_by(7) {
            let _ = store.get(&format!("key-{i}"));
            let _ = store.get_checked(&format!("key-{i}"));
        }
        let _ = store.keys_with_prefix("key-1");
        for i in (0..400).step_by(13) {
            let _ = store.set(&format!("key-{i}"), b"new", None);
            let _ = store.delete(&format!("key-{}", i + 1));
        }
        let _ = store.purge_expired();
        let _ = store.size();
        let _ = store.flush();
    }
}

/// A flipped bit in the allocator state of a cleanly closed file (found by flipping bits at
/// random): redb panics on it in a write once the write allocates where the bit lies, which the
/// store catches and returns as an error; but the panic poisons redb's locks, and redb's close,
/// run when the store was dropped, panicked on them in the caller's thread (an abort had that
/// thread been unwinding already).
#[test]
fn a_store_whose_redb_panicked_on_a_damaged_page_is_dropped_without_a_panic() {
    let mut bytes = pristine_file(400, Some(Duration::from_secs(3600)));
    bytes[69_790] ^= 0x80;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    std::fs::write(&path, &bytes).unwrap();
    let dropped = std::panic::catch_unwind(|| {
        let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
        let failed = (0..400).find_map(|i| store.set(&format!("key-{i}"), b"new", None).err());
        match failed {
            Some(Error::Redb {
                path: named, reason, ..
            }) => {
                assert_eq!(named, path);
                assert!(reason.contains("delete it to start empty"), "{reason}");
            }
            other => panic!("the damage no longer fails a write, pick another bit: {other:?}"),
        }
        drop(store);
    });
    assert!(dropped.is_ok(), "dropping the store panicked");
    // The failed close let go of the file: the next open is no `Locked`.
    match RedbStore::open(&path, RedbOptions::default()) {
        Ok(_) | Err(Error::Redb { .. }) => {}
        Err(other) => panic!("{other:?}"),
    }
}

/// The error of a write that redb panicked on says to move the file away or delete it; the
/// store went on failing every call with the panic's poisoned locks until a restart, whatever
/// the user did. Now it reopens (at most once a second), and a deleted file is created anew,
/// with the store's mode.
#[test]
fn a_damaged_database_file_deleted_as_advised_is_replaced_without_a_restart() {
    use std::os::unix::fs::PermissionsExt;
    let mut bytes = pristine_file(400, Some(Duration::from_secs(3600)));
    bytes[69_790] ^= 0x80;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    std::fs::write(&path, &bytes).unwrap();
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    let failed = (0..400).find_map(|i| store.set(&format!("key-{i}"), b"new", None).err());
    match failed {
        Some(Error::Redb { reason, .. }) => assert!(reason.contains("delete it"), "{reason}"),
        other => panic!("the damage no longer fails a write, pick another bit: {other:?}"),
    }
    std::fs::remove_file(&path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while let Err(e) = store.set("after", b"a new file", None) {
        match &e {
            Error::Redb { path: named, .. } => assert_eq!(named, &path, "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "still failing: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(store.get("after").unwrap().unwrap().value, b"a new file");
    assert_eq!(store.get("key-399").unwrap(), None, "the damaged file is gone");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new file has the store's mode");
    drop(store);
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    assert_eq!(store.get("after").unwrap().unwrap().value, b"a new file");
}

/// A file cut short anywhere (a copy interrupted, a crash while redb grew it): open refuses it,
/// or the calls after it return; none panics.
#[test]
fn a_truncated_redb_file_is_an_error_never_a_panic() {
    let bytes = pristine_file(1000, None);
    let mut cut = 1;
    while cut < bytes.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REDB_FILE_NAME);
        std::fs::write(&path, &bytes[..cut]).unwrap();
        if let Ok(store) = RedbStore::open(&path, RedbOptions::default()) {
            for i in (0..1000).step_by(11) {
                let _ = store.get(&format!("key-{i}"));
            }
            let _ = store.set("new", b"v", None);
            let _ = store.purge_expired();
            let _ = store.flush();
        }
        // Every small length, then a step that is no multiple of the page size.
        cut = if cut < 8192 { cut * 2 } else { cut + 4096 * 17 };
    }
}

fn config(dir: &Path, redis: &str, policy: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "redb"
        path = "{}"
        ttl = 600
        [distributed]
        enabled = true
        hosts = ["{redis}"]
        ttl = 600
        timeout_ms = 500
        [consistency]
        restart_policy = "{policy}"
        "#,
        dir.display()
    ))
    .unwrap()
}

/// Instance A (redb L1) caches `k` and `gone` and stops; instance B updates `k` and deletes
/// `gone` in the shared L2. Returns A's directory.
fn a_cached_then_b_updated(redis: &RedisServer, policy: &str) -> tempfile::TempDir {
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    {
        let a = CacheManager::new(config(a_dir.path(), &redis.addr(), policy)).unwrap();
        a.set("k", "a-old", None).unwrap();
        a.set("gone", "a-old", None).unwrap();
        a.flush().unwrap();
    }
    let b = CacheManager::new(config(b_dir.path(), &redis.addr(), policy)).unwrap();
    b.set("k", "b-new", None).unwrap();
    b.delete("gone").unwrap();
    a_dir
}

#[test]
fn a_restarted_manager_with_a_redb_l1_revalidates_restored_entries_against_l2() {
    let redis = RedisServer::start();
    let a_dir = a_cached_then_b_updated(&redis, "revalidate");
    let a = CacheManager::new(config(a_dir.path(), &redis.addr(), "revalidate")).unwrap();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("b-new"));
    assert_eq!(a.get::<String>("gone").unwrap(), None, "deleted meanwhile");
    let before = a.stats();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("b-new"));
    let after = a.stats();
    assert_eq!(after.local.hits, before.local.hits + 1, "then an L1 hit");
    assert_eq!(after.consistency.revalidated_replaced, 1);
    assert_eq!(after.consistency.revalidated_dropped, 1);
}

#[test]
fn with_trust_a_restarted_redb_manager_serves_its_restored_copy() {
    let redis = RedisServer::start();
    let a_dir = a_cached_then_b_updated(&redis, "trust");
    let a = CacheManager::new(config(a_dir.path(), &redis.addr(), "trust")).unwrap();
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("a-old"));
    let stats = a.stats();
    assert_eq!(
        stats.distributed.hits + stats.distributed.misses,
        0,
        "L2 not asked"
    );
}

#[test]
fn a_prefix_invalidation_drops_only_the_matching_redb_entries() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis.addr(), "revalidate")).unwrap();
    for key in ["user:1", "user:2", "users", "other"] {
        cache.set(key, "v", None).unwrap();
    }
    assert_eq!(
        cache.invalidate_prefix("user:").unwrap(),
        2,
        "user:1 and user:2, each in both levels, counted once"
    );
    assert_eq!(cache.stats().size.local.items, 2, "users and other stay in L1");
    let before = cache.stats().local.hits;
    assert_eq!(cache.get::<String>("other").unwrap().as_deref(), Some("v"));
    assert_eq!(cache.stats().local.hits, before + 1, "served from L1");
}

#[test]
fn a_lost_backplane_subscription_keeps_the_redb_l1_and_revalidates_it() {
    let redis = RedisServer::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_backplane = |dir: &Path| {
        let mut config = config(dir, &redis.addr(), "revalidate");
        config.invalidation.enabled = true;
        config
    };
    let a = CacheManager::new(with_backplane(a_dir.path())).unwrap();
    a.set("k", "v", None).unwrap();
    a.set("j", "w", None).unwrap();
    wait_for("A subscribed", || a.stats().consistency.backplane_connected);
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut redis.raw())
        .unwrap();
    assert!(killed >= 1, "no subscription to kill");
    wait_for("A saw the loss", || {
        a.stats().consistency.subscription_losses >= 1
    });
    // A message from B that A receives comes after A handled the loss and the restore (one
    // subscriber thread handles them in order).
    let b = CacheManager::new(with_backplane(b_dir.path())).unwrap();
    wait_for("A received a message after the restore", || {
        b.set("marker", "m", None).unwrap();
        a.stats().consistency.invalidations_received >= 1
    });
    assert_eq!(a.stats().size.local.items, 2, "the redb L1 was not emptied");
    // Suspect now: the first read checks L2 (same value: confirmed), the next is an L1 hit.
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(a.stats().consistency.revalidated_confirmed, 1);
    let hits = a.stats().local.hits;
    assert_eq!(a.get::<String>("k").unwrap().as_deref(), Some("v"));
    assert_eq!(a.stats().local.hits, hits + 1);
}

/// Polls `done` (an observable event) for up to 10 s.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}
