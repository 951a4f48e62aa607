//! A confirm vouches for an entry only in the suspect epoch its check began in: a caller of the
//! public store API that compared an entry with L2, then saw every entry made suspect, then
//! confirmed, would otherwise make the old value trusted in the new epoch. One test per local
//! level that keeps suspect entries, each with the check and the confirm on another thread.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, Barrier};
use std::thread;

use uno_cache::local::hot::HotTier;
use uno_cache::local::tiered::Tiered;
use uno_cache::{
    Confirmation, FileStore, FileStoreOptions, Freshness, LocalStorage, MemoryStore, Storage, SystemClock,
};

fn freshness(store: &dyn LocalStorage, key: &str) -> Option<Freshness> {
    store.get_checked(key).unwrap().map(|(_, f)| f)
}

/// `k` is suspect; a thread reads the epoch and checks `k` (L2 would say the same bytes), then
/// every entry is made suspect, then the thread confirms: refused, and `k` stays suspect. A
/// check begun after the loss of certainty confirms it.
fn a_check_from_before_a_loss_of_certainty_confirms_nothing(store: Arc<dyn LocalStorage>) {
    store.set("k", b"v", None).unwrap();
    store.mark_all_suspect().unwrap();
    assert_eq!(freshness(&*store, "k"), Some(Freshness::Suspect));

    let checked = Arc::new(Barrier::new(2));
    let marked = Arc::new(Barrier::new(2));
    let checker = thread::spawn({
        let (store, checked, marked) = (store.clone(), checked.clone(), marked.clone());
        move || {
            let epoch = store.suspect_epoch();
            let (entry, f) = store.get_checked("k").unwrap().unwrap();
            assert_eq!((entry.value.as_slice(), f), (&b"v"[..], Freshness::Suspect));
            checked.wait();
            marked.wait();
            store.confirm("k", epoch).unwrap()
        }
    });
    checked.wait();
    store.mark_all_suspect().unwrap();
    marked.wait();
    assert_eq!(checker.join().unwrap(), Confirmation::EpochMoved);
    assert_eq!(
        freshness(&*store, "k"),
        Some(Freshness::Suspect),
        "a check from before mark_all_suspect vouched for the entry after it"
    );

    let epoch = store.suspect_epoch();
    assert_eq!(store.confirm("k", epoch).unwrap(), Confirmation::Confirmed);
    assert_eq!(freshness(&*store, "k"), Some(Freshness::Trusted));
    assert_eq!(store.confirm("gone", epoch).unwrap(), Confirmation::Missing);
}

#[test]
fn a_file_store_refuses_a_confirm_whose_check_began_before_mark_all_suspect() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(64)).unwrap();
    a_check_from_before_a_loss_of_certainty_confirms_nothing(Arc::new(store));
}

#[cfg(feature = "redb")]
#[test]
fn a_redb_store_refuses_a_confirm_whose_check_began_before_mark_all_suspect() {
    use uno_cache::{RedbOptions, RedbStore, REDB_FILE_NAME};
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(dir.path().join(REDB_FILE_NAME), RedbOptions::default()).unwrap();
    a_check_from_before_a_loss_of_certainty_confirms_nothing(Arc::new(store));
}

/// The two-tier level hands the epoch and the confirm to the level below; its hot tier, which
/// cannot mark entries, is emptied by the loss of certainty.
#[test]
fn the_two_tier_level_refuses_a_confirm_whose_check_began_before_mark_all_suspect() {
    let dir = tempfile::tempdir().unwrap();
    let base = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(64)).unwrap();
    let hot = Arc::new(HotTier::new(100, 1 << 20, Arc::new(SystemClock)));
    a_check_from_before_a_loss_of_certainty_confirms_nothing(Arc::new(Tiered::new(hot, Arc::new(base))));
}

/// The memory store has no suspect entries: a loss of certainty forgets them, so a confirm
/// whose check came before it finds nothing to vouch for.
#[test]
fn a_memory_store_forgets_what_a_check_from_before_mark_all_suspect_would_confirm() {
    let store = MemoryStore::new(100).unwrap();
    store.set("k", b"v", None).unwrap();
    let epoch = store.suspect_epoch();
    store.mark_all_suspect().unwrap();
    assert_eq!(store.confirm("k", epoch).unwrap(), Confirmation::Missing);
    assert_eq!(store.get("k").unwrap(), None);
}

/// `k` is suspect in the store `reopen` opens after `before` is dropped (a restart makes every
/// restored entry suspect); an epoch read from `before`, where a check of `k` began, must not
/// vouch for `k` in the reopened store, whose check it never was.
fn an_epoch_from_before_a_restart_confirms_nothing(
    before: Arc<dyn LocalStorage>,
    reopen: impl FnOnce() -> Arc<dyn LocalStorage>,
) {
    before.set("k", b"v", None).unwrap();
    before.flush().unwrap();
    let epoch = before.suspect_epoch();
    drop(before);
    let after = reopen();
    assert_eq!(freshness(&*after, "k"), Some(Freshness::Suspect));
    assert_eq!(after.confirm("k", epoch).unwrap(), Confirmation::EpochMoved);
    assert_eq!(
        freshness(&*after, "k"),
        Some(Freshness::Suspect),
        "an epoch of the store before its restart vouched for a restored entry"
    );
    let now = after.suspect_epoch();
    assert_eq!(after.confirm("k", now).unwrap(), Confirmation::Confirmed);
    assert_eq!(freshness(&*after, "k"), Some(Freshness::Trusted));
}

#[test]
fn a_file_store_refuses_a_confirm_whose_epoch_was_read_before_it_was_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn LocalStorage> {
        Arc::new(FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(64)).unwrap())
    };
    an_epoch_from_before_a_restart_confirms_nothing(open(), open);
}

#[cfg(feature = "redb")]
#[test]
fn a_redb_store_refuses_a_confirm_whose_epoch_was_read_before_it_was_reopened() {
    use uno_cache::{RedbOptions, RedbStore, REDB_FILE_NAME};
    let dir = tempfile::tempdir().unwrap();
    let open = || -> Arc<dyn LocalStorage> {
        Arc::new(RedbStore::open(dir.path().join(REDB_FILE_NAME), RedbOptions::default()).unwrap())
    };
    an_epoch_from_before_a_restart_confirms_nothing(open(), open);
}
