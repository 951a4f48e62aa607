//! Keys whose 64-bit hashes collide share one index entry (see `index`). The test hasher gives
//! every `collide/{group}/…` key of a group the same hash, so these tests can force what a real
//! run meets once in ~10^8 stores of a million keys: the later key evicts the earlier, no read
//! ever returns another key's value, and no deleted key comes back, across compaction and
//! reopen.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::segment::Segment;
use super::slots::Slots;
use super::{FileStore, FileStoreOptions};
use crate::storage::{Confirmation, Freshness};

const A: &str = "collide/g/a";
const B: &str = "collide/g/b";

fn open(dir: &Path) -> FileStore {
    FileStore::open(
        dir,
        FileStoreOptions::default()
            .segment_size(64 * 1024)
            .background_threads(false),
    )
    .unwrap()
}

fn get(store: &FileStore, key: &str) -> Option<Vec<u8>> {
    store.get(key).unwrap()
}

#[test]
fn a_colliding_write_evicts_the_earlier_key_and_its_reads_are_plain_misses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(A, b"value of a", None).unwrap();
    store.set(B, b"value of b", None).unwrap();
    assert_eq!(
        get(&store, A),
        None,
        "a read must never return another key's value"
    );
    assert_eq!(get(&store, B).as_deref(), Some(&b"value of b"[..]));
    assert!(!store.contains(A));
    assert_eq!(store.keys(), vec![B.to_owned()]);
    // Deleting the evicted key removes nothing and leaves the other key alone.
    assert!(!store.delete(A).unwrap());
    assert_eq!(get(&store, B).as_deref(), Some(&b"value of b"[..]));
    let stats = store.stats();
    assert_eq!((stats.live_items, stats.corrupt_reads), (1, 0), "{stats:?}");
    store.close().unwrap();

    let store = open(dir.path());
    assert_eq!(get(&store, A), None);
    assert_eq!(get(&store, B).as_deref(), Some(&b"value of b"[..]));
    // Writing the earlier key again takes the entry back.
    store.set(A, b"a again", None).unwrap();
    assert_eq!(get(&store, A).as_deref(), Some(&b"a again"[..]));
    assert_eq!(get(&store, B), None);
    assert_eq!(store.stats().corrupt_reads, 0);
}

#[test]
fn confirming_an_evicted_key_does_not_vouch_for_the_key_holding_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(B, b"b", None).unwrap();
    store.mark_all_suspect();
    let epoch = store.suspect_epoch();
    assert_eq!(store.confirm(A, epoch), Confirmation::Missing);
    let (_, freshness) = store.get_checked(B).unwrap().unwrap();
    assert_eq!(freshness, Freshness::Suspect);
    assert_eq!(store.confirm(B, epoch), Confirmation::Confirmed);
    let (_, freshness) = store.get_checked(B).unwrap().unwrap();
    assert_eq!(freshness, Freshness::Trusted);
}

/// By key, compacting away the tombstone of `a` (its hash lives on in `b`) would let `a`'s old
/// value come back at the next open; applying records by hash keeps it out.
#[test]
fn a_deleted_key_stays_deleted_after_compaction_drops_its_tombstone_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(A, b"old a", None).unwrap();
    // Live values keep the first segment from being compacted; a reopen seals it.
    for i in 0..3 {
        store.set(&format!("filler{i}"), &[7u8; 20_000], None).unwrap();
    }
    store.close().unwrap();
    let store = open(dir.path());
    assert!(store.delete(A).unwrap());
    store.set(B, b"b", None).unwrap();
    store.close().unwrap();

    // The segment with a's tombstone and b is small: compaction rewrites it, moving b forward and
    // dropping the tombstone (the hash is live in b).
    let store = open(dir.path());
    let report = store.compact().unwrap();
    assert!(report.segments_rewritten >= 1, "{report:?}");
    assert_eq!(get(&store, A), None);
    store.close().unwrap();

    let store = open(dir.path());
    assert_eq!(get(&store, A), None, "a deleted key came back");
    assert_eq!(get(&store, B).as_deref(), Some(&b"b"[..]));
    assert!(store.delete(B).unwrap());
    store.close().unwrap();

    let store = open(dir.path());
    assert_eq!(get(&store, A), None, "a deleted key came back");
    assert_eq!(get(&store, B), None, "a deleted key came back");
    for i in 0..3 {
        assert!(get(&store, &format!("filler{i}")).is_some());
    }
    assert_eq!(store.stats().corrupt_reads, 0);
}

#[test]
fn recovery_keeps_the_newest_record_of_a_hash_whichever_key_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(B, b"b1", None).unwrap();
    store.set(A, b"a1", None).unwrap();
    store.set(B, b"b2", None).unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(get(&store, B).as_deref(), Some(&b"b2"[..]));
    assert_eq!(get(&store, A), None);
    assert_eq!(store.stats().live_items, 1);
}

#[test]
fn a_released_slot_never_resolves_an_old_location_into_the_segment_that_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let slots = Slots::default();
    let first =
        Arc::new(Segment::create_in(&crate::disk::Disk::default(), dir.path(), 0o600, 1, 64 * 1024).unwrap());
    let old = slots.loc(&first, 100).unwrap();
    assert_eq!(slots.get(old).map(|s| s.id), Some(1));
    slots.release(1);
    assert!(slots.get(old).is_none());
    let second =
        Arc::new(Segment::create_in(&crate::disk::Disk::default(), dir.path(), 0o600, 2, 64 * 1024).unwrap());
    let new = slots.loc(&second, 100).unwrap();
    assert_eq!(new.slot(), old.slot(), "a freed slot is reused");
    assert!(slots.get(old).is_none(), "an old location followed a reused slot");
    assert_eq!(slots.get(new).map(|s| s.id), Some(2));
    assert_eq!(slots.len(), 1);
}

/// An entry stamps the epoch it was confirmed in mod 2^27 only: once the count of losses of
/// certainty comes round to the same stamp, a confirmation 2^27 losses old must not vouch for
/// the entry again. (The count is set just short of the wrap, as that many marks would have.)
#[test]
fn a_confirmation_from_a_lap_of_the_epoch_stamp_ago_vouches_for_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(A, b"a", None).unwrap();
    store.mark_all_suspect();
    let confirmed_in = store.inner.epoch.load(Ordering::Acquire);
    assert_eq!(store.confirm(A, store.suspect_epoch()), Confirmation::Confirmed);
    assert_eq!(store.get_checked(A).unwrap().unwrap().1, Freshness::Trusted);
    // The marks in between, all but the last of a lap of the 27-bit stamp.
    store.inner.epoch.store((1 << 27) - 1, Ordering::Release);
    let mut marked = 0;
    while store.inner.epoch.load(Ordering::Acquire) & ((1 << 27) - 1) != confirmed_in {
        store.mark_all_suspect();
        marked += 1;
        assert!(marked < 4, "the epoch never came round to the stamp");
    }
    assert_eq!(
        store.get_checked(A).unwrap().unwrap().1,
        Freshness::Suspect,
        "a confirmation from before 2^27 losses of certainty vouched for the entry"
    );
}

/// Brings the epoch, a lap of the stamp on from the last epoch of the first lap, round to the
/// same stamp (as the marks in between would, less the forgetting at the next lap's start),
/// and checks that `A` reads as suspect there.
fn a_lap_later_a_is_still_suspect(store: &FileStore, why: &str) {
    let last_of_lap = (1 << 27) - 1;
    store.inner.epoch.store((2 << 27) - 2, Ordering::Release);
    store.mark_all_suspect();
    assert_eq!(
        store.inner.epoch.load(Ordering::Acquire) & last_of_lap,
        last_of_lap
    );
    assert_eq!(
        store.get_checked(A).unwrap().unwrap().1,
        Freshness::Suspect,
        "{why}"
    );
}

/// A mark that starts a new lap of the stamp between a confirm's look at the epoch and its stamp
/// forgets every stamp before that one is made: the confirm must take its stamp back, or the
/// entry is trusted again once the count comes round to it, 2^27 losses of certainty later.
#[test]
fn a_confirm_raced_by_the_mark_that_starts_a_lap_leaves_no_stamp_for_the_next_lap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(A, b"a", None).unwrap();
    // The last epoch of a lap: the next mark forgets every stamp.
    let last_of_lap = (1 << 27) - 1;
    store.inner.epoch.store(last_of_lap, Ordering::Release);
    let checked_at = store.suspect_epoch();
    store.inner.test_mark_before_stamp.store(true, Ordering::Relaxed);
    assert_eq!(store.confirm(A, checked_at), Confirmation::EpochMoved);
    assert_eq!(store.get_checked(A).unwrap().unwrap().1, Freshness::Suspect);
    a_lap_later_a_is_still_suspect(
        &store,
        "a confirm refused in the last lap vouched for the entry in this one",
    );
}

/// The mark that starts a lap moves the epoch before it forgets the stamps: a confirm that reads
/// the epoch once the forgetting is done, while the mark still runs, finds it moved. Moved only
/// after the forgetting, the epoch was still the old lap's last one then: the confirm stamped it,
/// nothing forgot that stamp, and it vouched for the entry again a lap later.
#[test]
fn a_confirm_that_reads_the_epoch_after_the_lap_forgetting_finds_it_moved() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.set(A, b"a", None).unwrap();
    let last_of_lap = (1 << 27) - 1;
    store.inner.epoch.store(last_of_lap, Ordering::Release);
    let checked_at = store.suspect_epoch();
    *store.inner.test_confirm_after_forget.lock() = Some((A.to_owned(), checked_at));
    store.mark_all_suspect();
    assert_eq!(
        store.inner.test_confirmed_after_forget.lock().take(),
        Some(Confirmation::EpochMoved),
        "a confirm that read the old lap's last epoch after the forgetting was taken"
    );
    a_lap_later_a_is_still_suspect(
        &store,
        "a confirm made during the last lap's forgetting vouched for the entry in this one",
    );
}
