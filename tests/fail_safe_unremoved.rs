//! Fail-safe after a delete or an invalidation that L1 could not apply (its disk full, or the
//! store latched read-only): the file store keeps the entry, marked suspect, and a read checks it
//! against L2; but its stale copy is the very value that was removed, and must not be served
//! when the loader then fails (nor by `get_with_state`). A file-store L1 whose deletes fail, an
//! in-process L2, a manual clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/delegate.rs"]
mod delegate;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use delegate::{Delegate, Wrap, WrapLocal};
use uno_cache::{
    CacheConfig, CacheManager, Error, Fetched, FileStore, FileStoreOptions, InProcess, ManualClock,
    MemoryStore, RestartPolicy, Result, Storage,
};

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(10);

/// The file store, whose deletes fail while `full` (a delete appends a record: a full disk, or
/// a store latched read-only after a failed fsync, refuses it); reads and suspect marks work.
struct DeletesFail {
    file: FileStore,
    full: AtomicBool,
}

fn disk_full(op: &'static str) -> Error {
    Error::Backend {
        level: "file",
        op,
        reason: "no space left on device (test)".into(),
    }
}

impl Wrap for DeletesFail {
    type Inner = FileStore;
    fn inner(&self) -> &FileStore {
        &self.file
    }
    fn delete(&self, key: &str) -> Result<bool> {
        if self.full.load(Ordering::SeqCst) {
            return Err(disk_full("delete"));
        }
        self.file.delete(key)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if self.full.load(Ordering::SeqCst) {
            return Err(disk_full("delete_many"));
        }
        Storage::delete_many(&self.file, keys)
    }
    fn clear(&self) -> Result<()> {
        if self.full.load(Ordering::SeqCst) {
            return Err(disk_full("clear"));
        }
        Storage::clear(&self.file)
    }
}

impl WrapLocal for DeletesFail {}

struct Rig {
    cache: CacheManager,
    l1: Arc<Delegate<DeletesFail>>,
    l2: Arc<InProcess<MemoryStore>>,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    rig_under(RestartPolicy::Revalidate)
}

fn rig_under(policy: RestartPolicy) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let window = Duration::from_secs(600);
    let file = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .clock(Arc::new(clock.clone()))
            .keep_expired(window),
    )
    .unwrap();
    let l1 = Arc::new(Delegate(DeletesFail {
        file,
        full: AtomicBool::new(false),
    }));
    let l2 = Arc::new(InProcess::new(
        MemoryStore::with_clock(1000, Arc::new(clock.clone())).unwrap(),
    ));
    let mut config = CacheConfig::default();
    config.loader.fail_safe_max_duration = window;
    config.loader.fail_safe_throttle = Duration::ZERO;
    config.consistency.restart_policy = policy;
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .local(l1.clone())
        .distributed(l2.clone())
        .build()
        .unwrap();
    Rig {
        cache,
        l1,
        l2,
        clock,
        _dir: dir,
    }
}

fn failing() -> std::result::Result<String, Error> {
    Err(Error::Backend {
        level: "source",
        op: "load",
        reason: "the source is down (test)".into(),
    })
}

/// Neither loading call nor `get_with_state` serves `key`'s removed value, before or after its
/// TTL, and the loader's error reaches the caller.
fn removed_value_not_served(rig: &Rig, key: &str, what: &str) {
    for expired in [false, true] {
        if expired {
            rig.clock.advance(TTL + Duration::from_secs(1));
        }
        assert_eq!(
            rig.cache.get::<String>(key).unwrap(),
            None,
            "{what}: get served it"
        );
        let state = rig.cache.get_with_state::<String>(key).unwrap();
        assert_eq!(
            state, None,
            "{what} (expired: {expired}): get_with_state served {state:?}"
        );
        let loaded = rig.cache.get_or_load(key, Some(TTL), failing);
        assert!(
            matches!(loaded, Err(Error::Backend { level: "source", .. })),
            "{what} (expired: {expired}): get_or_load answered {loaded:?}"
        );
        let set_with = rig.cache.get_or_set_with(key, Some(TTL), failing);
        assert!(
            set_with.is_err(),
            "{what} (expired: {expired}): get_or_set_with answered {set_with:?}"
        );
    }
}

#[test]
fn a_delete_l1_could_not_apply_leaves_no_stale_copy_to_serve() {
    let rig = rig();
    rig.cache.set("k", &"v1".to_owned(), Some(TTL)).unwrap();
    rig.l1.full.store(true, Ordering::SeqCst);
    assert!(rig.cache.delete("k").is_err(), "L1's error reaches the caller");
    assert_eq!(rig.l2.get("k").unwrap(), None, "L2 took the delete");
    removed_value_not_served(&rig, "k", "a delete");
}

#[test]
fn an_invalidation_l1_could_not_apply_leaves_no_stale_copy_to_serve() {
    let rig = rig();
    rig.cache.set("k", &"v1".to_owned(), Some(TTL)).unwrap();
    rig.l1.full.store(true, Ordering::SeqCst);
    // Another process deleted it from L2, and told this one.
    rig.l2.delete("k").unwrap();
    assert!(
        rig.cache.invalidate_local("k").is_err(),
        "L1's error reaches the caller"
    );
    removed_value_not_served(&rig, "k", "an invalidation");
}

/// An entry L1 holds suspect (restored at a restart, or marked when the backplane's subscription
/// was lost) of a key another instance deleted meanwhile: its revalidation finds nothing in L2
/// and drops it from L1. If L1 refuses that drop, the entry stays, and its stale copy is the
/// value the other instance deleted: a failed load must not serve it, whether a single read or
/// a batch read did the revalidation.
#[test]
fn a_suspect_entry_l2_no_longer_holds_whose_drop_l1_refused_leaves_no_stale_copy_to_serve() {
    suspect_entries_deleted_elsewhere(RestartPolicy::Revalidate);
}

/// Under `restart_policy = "drop"` a suspect entry is dropped before L2 is asked: nothing
/// possibly stale is served, and one whose drop L1 refused is no stale copy either.
#[test]
fn under_the_drop_policy_a_suspect_entry_whose_drop_l1_refused_leaves_no_stale_copy_to_serve() {
    suspect_entries_deleted_elsewhere(RestartPolicy::Drop);
}

fn suspect_entries_deleted_elsewhere(policy: RestartPolicy) {
    let rig = rig_under(policy);
    rig.cache.set("k", &"v1".to_owned(), Some(TTL)).unwrap();
    rig.cache.set("b", &"b1".to_owned(), Some(TTL)).unwrap();
    // What a restart (or a lost subscription) leaves: every entry suspect. Then another
    // instance deletes both keys, and this one hears nothing of it.
    uno_cache::LocalStorage::mark_all_suspect(&rig.l1.file).unwrap();
    rig.l2.delete("k").unwrap();
    rig.l2.delete("b").unwrap();
    rig.l1.full.store(true, Ordering::SeqCst);
    assert!(
        rig.cache.multi_get::<String>(&["b"]).unwrap().is_empty(),
        "the batch read checked the entry against L2"
    );
    removed_value_not_served(&rig, "k", "a single read's revalidation");
    removed_value_not_served(&rig, "b", "a batch read's revalidation");
}

#[test]
fn other_keys_keep_their_stale_copies_and_a_key_written_again_gets_one() {
    let rig = rig();
    rig.cache.set("k", &"v1".to_owned(), Some(TTL)).unwrap();
    rig.cache.set("other", &"o1".to_owned(), Some(TTL)).unwrap();
    rig.l1.full.store(true, Ordering::SeqCst);
    assert!(rig.cache.delete("k").is_err());
    rig.l1.full.store(false, Ordering::SeqCst);
    rig.clock.advance(TTL + Duration::from_secs(1));
    let other = rig.cache.get_or_load("other", Some(TTL), failing).unwrap();
    assert_eq!(
        other,
        Fetched::Stale("o1".to_owned()),
        "fail-safe is off for every key"
    );
    // Written again once the disk has room: its copy is the new value, which may be served.
    rig.cache.set("k", &"v2".to_owned(), Some(TTL)).unwrap();
    rig.clock.advance(TTL + Duration::from_secs(1));
    let again = rig.cache.get_or_load("k", Some(TTL), failing).unwrap();
    assert_eq!(again, Fetched::Stale("v2".to_owned()));
}

/// A delete the replay queue holds (L2 was down) whose L1 delete did not last (L1 refused it, or
/// a power cut took the file store's unsynced record while the queue's op was fsynced): after a
/// restart the entry is back in L1. A read settles it by the op, or checks it against L2 once
/// the op is replayed; but an expired entry is read by nothing but fail-safe, which served the
/// deleted value whenever the loader failed, for the whole fail-safe window.
#[test]
fn a_delete_queued_for_replay_leaves_no_stale_copy_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let build = |l2: Option<Arc<InProcess<MemoryStore>>>| {
        let mut config = CacheConfig::default();
        config.local.kind = uno_cache::LocalKind::File;
        config.local.path = Some(dir.path().to_owned());
        config.loader.fail_safe_max_duration = Duration::from_secs(600);
        config.loader.fail_safe_throttle = Duration::ZERO;
        let builder = CacheManager::builder()
            .config(config)
            .clock(Arc::new(clock.clone()));
        match l2 {
            Some(l2) => builder.distributed(l2),
            None => builder,
        }
        .build()
        .unwrap()
    };
    let first = build(None);
    first.set("k", &"v1".to_owned(), Some(TTL)).unwrap();
    first.set("other", &"o1".to_owned(), Some(TTL)).unwrap();
    drop(first);
    // What the run that deleted it left: the op, fsynced; L1's record of the delete, lost.
    let queue = uno_cache::replay::ReplayQueue::open(dir.path(), uno_cache::replay::ReplayOptions::default())
        .unwrap();
    queue.push_delete("k").unwrap();
    drop(queue);
    let l2 = Arc::new(InProcess::new(
        MemoryStore::with_clock(1000, Arc::new(clock.clone())).unwrap(),
    ));
    let cache = build(Some(l2));
    clock.advance(TTL + Duration::from_secs(1));
    let state = cache.get_with_state::<String>("k").unwrap();
    assert_eq!(state, None, "get_with_state served the deleted value: {state:?}");
    let loaded = cache.get_or_load("k", Some(TTL), failing);
    assert!(
        matches!(loaded, Err(Error::Backend { level: "source", .. })),
        "get_or_load answered {loaded:?}"
    );
    cache.replay_now().unwrap();
    assert_eq!(
        cache.get_with_state::<String>("k").unwrap(),
        None,
        "once replayed"
    );
    assert_eq!(
        cache.get_or_load("other", Some(TTL), failing).unwrap(),
        Fetched::Stale("o1".to_owned()),
        "a key without a queued op keeps its stale copy"
    );
}
