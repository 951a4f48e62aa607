//! Stale copies for fail-safe reads: a local level given a keep-expired window never returns an
//! expired entry from `get`, returns it from `get_stale` until the window ends, keeps it through
//! compaction and restarts, and forgets it on delete. A delete of an expired value holds at the
//! next open under a longer window (a fail-safe raised) or behind a clock set back, also when the
//! value's entry left the index before the delete (skipped by the open, swept by compaction,
//! dropped by a read): such a delete found no entry and wrote no tombstone, and the value came
//! back, a stale copy or live.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use uno_cache::{FileStore, FileStoreOptions, LocalStorage, ManualClock, MemoryStore, Storage};

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(60);

fn options(clock: &ManualClock, window: Duration) -> FileStoreOptions {
    FileStoreOptions::default()
        .max_size_mb(8)
        .segment_size(256 * 1024)
        .background_threads(false)
        .clock(Arc::new(clock.clone()))
        .keep_expired(window)
}

fn now(clock: &ManualClock) -> SystemTime {
    use uno_cache::Clock;
    SystemTime::UNIX_EPOCH + Duration::from_millis(clock.now_ms())
}

#[test]
fn an_expired_entry_is_a_miss_for_get_and_a_stale_copy_until_the_window_ends() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
    store.set("k", b"v1", Some(TTL)).unwrap();
    // Fresh: both reads agree.
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(store.get_stale("k").unwrap().unwrap().value, b"v1");

    clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(
        store.get("k").unwrap(),
        None,
        "get never returns an expired entry"
    );
    let stale = store.get_stale("k").unwrap().expect("kept in the window");
    assert_eq!(stale.value, b"v1");
    assert!(
        stale.expires_at.unwrap() <= now(&clock),
        "the copy says it expired"
    );
    // A get of the expired entry did not drop the stale copy.
    assert!(store.get_stale("k").unwrap().is_some());

    clock.advance(WINDOW);
    assert_eq!(store.get_stale("k").unwrap(), None, "past the window it is gone");
    assert_eq!(store.get("k").unwrap(), None);
}

#[test]
fn stale_copies_survive_compaction_and_a_restart_within_the_window_and_not_after() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    {
        let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
        for i in 0..200 {
            store.set(&format!("k{i}"), &[i as u8; 2000], Some(TTL)).unwrap();
        }
        store.set("forever", b"f", None).unwrap();
        clock.advance(TTL + Duration::from_secs(1));
        let report = store.compact().unwrap();
        assert_eq!(report.expired, 0, "nothing is past the window: {report:?}");
        assert_eq!(store.get_stale("k7").unwrap().unwrap().value, vec![7u8; 2000]);
        store.close().unwrap();
    }
    {
        let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
        assert_eq!(store.get("k7").unwrap(), None);
        assert_eq!(store.get_stale("k7").unwrap().unwrap().value, vec![7u8; 2000]);
        assert_eq!(store.get("forever").unwrap().as_deref(), Some(&b"f"[..]));
        store.close().unwrap();
    }
    clock.advance(WINDOW);
    let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
    assert_eq!(
        store.get_stale("k7").unwrap(),
        None,
        "recovery drops copies past the window"
    );
    assert_eq!(store.get("forever").unwrap().as_deref(), Some(&b"f"[..]));
    let report = store.compact().unwrap();
    assert!(store.verify(|_, _| {}).unwrap().is_clean(), "{report:?}");
}

#[test]
fn deleting_a_stale_copy_removes_it_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    {
        let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
        store.set("k", b"v", Some(TTL)).unwrap();
        clock.advance(TTL + Duration::from_secs(1));
        assert!(store.get_stale("k").unwrap().is_some());
        store.delete("k").unwrap();
        assert_eq!(store.get_stale("k").unwrap(), None);
        store.close().unwrap();
    }
    // The delete left a tombstone: the stale record is not recovered either.
    let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
    assert_eq!(store.get_stale("k").unwrap(), None);
}

#[test]
fn a_delete_in_the_last_second_of_the_window_counts_only_a_value_still_kept() {
    // The index keeps expiries in whole seconds, rounded up: in the second after a window
    // ends, it still reads as kept. A delete then must ask the record, as `get_stale` and the
    // prefix listing do, and remove nothing that they no longer see. Found by the local tiers'
    // model test (an `invalidate_prefix` that rightly skipped the key, then a `delete` of it
    // that said it removed a value).
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS + 266);
    let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
    let ttl = Duration::from_millis(1330);
    store.set("gone", b"v", Some(ttl)).unwrap();
    // 79 ms past the window's end: its second is not over yet. (Asked first, a read or the
    // listing would drop the entry and hide the delete's answer.)
    clock.advance(ttl + WINDOW + Duration::from_millis(79));
    assert!(!store.delete("gone").unwrap(), "the copy was no longer kept");
    assert_eq!(store.get_stale("gone").unwrap(), None);
    // In the window's last millisecond, the same delete removes the kept copy.
    store.set("kept", b"v", Some(ttl)).unwrap();
    clock.advance(ttl + WINDOW - Duration::from_millis(1));
    assert!(store.delete("kept").unwrap());
}

#[test]
fn prefix_listing_reaches_stale_copies_so_invalidation_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
    store.set("user:1", b"a", Some(TTL)).unwrap();
    store.set("user:2", b"b", None).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    let mut keys = LocalStorage::keys_with_prefix(&store, "user:").unwrap().unwrap();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    // `keys` lists the stale copy too, as its doc says, but not once the window is over.
    let mut listed = store.keys();
    listed.sort();
    assert_eq!(listed, ["user:1", "user:2"]);
    clock.advance(WINDOW);
    assert_eq!(store.keys(), ["user:2"]);
}

#[test]
fn without_a_window_an_expired_entry_is_gone_for_stale_reads_too() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.set("k", b"v", Some(TTL)).unwrap();
    clock.advance(TTL);
    assert_eq!(store.get_stale("k").unwrap(), None);
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.stats().live_items, 0, "{:?}", store.stats());
}

#[test]
fn the_memory_store_keeps_stale_copies_for_its_window() {
    let clock = ManualClock::new(START_MS);
    let store = MemoryStore::with_clock(100, Arc::new(clock.clone()))
        .unwrap()
        .keep_expired(WINDOW);
    store.set("k", b"v", Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.get_stale("k").unwrap().unwrap().value, b"v");
    assert_eq!(store.purge_expired(), 0, "the window keeps it");
    clock.advance(WINDOW);
    assert_eq!(store.get_stale("k").unwrap(), None);
    assert_eq!(store.purge_expired(), 1);
}

/// A delete of a value that has already expired (and left the keep window) removes nothing for
/// the caller, but must still hold at the next open: reopened with a longer window (fail-safe
/// raised), the record would be a stale copy a fail-safe read serves, and behind a clock set
/// back, a live value. It wrote no tombstone, so the deleted value came back.
#[test]
fn a_delete_of_an_expired_value_holds_under_a_longer_window_and_a_clock_set_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.set("k", b"v", Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    assert!(!store.delete("k").unwrap(), "nothing live was removed");
    store.close().unwrap();

    let store = FileStore::open(dir.path(), options(&clock, WINDOW)).unwrap();
    assert_eq!(
        store.get_stale("k").unwrap(),
        None,
        "a longer window brought it back"
    );
    store.close().unwrap();
    let behind = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&behind, Duration::ZERO)).unwrap();
    assert_eq!(store.get("k").unwrap(), None, "a clock set back brought it back");
}

/// A deleted key stays deleted reopened with a longer window, and behind a clock set back.
fn check_reopen(dir: &std::path::Path, clock: &ManualClock) {
    let store = FileStore::open(dir, options(clock, WINDOW)).unwrap();
    assert_eq!(
        store.get_stale("k").unwrap().map(|s| s.value),
        None,
        "a longer window brought the deleted value back"
    );
    store.close().unwrap();
    let behind = ManualClock::new(START_MS);
    let store = FileStore::open(dir, options(&behind, Duration::ZERO)).unwrap();
    assert_eq!(
        store.get("k").unwrap(),
        None,
        "a clock set back brought the deleted value back"
    );
}

#[test]
fn a_delete_after_purge_expired_holds_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.set("k", b"v", Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    store.compact().unwrap();
    store.delete("k").unwrap();
    store.close().unwrap();
    check_reopen(dir.path(), &clock);
}

#[test]
fn a_delete_after_a_get_of_the_expired_value_holds_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.set("k", b"v", Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(store.get("k").unwrap(), None);
    store.delete("k").unwrap();
    store.close().unwrap();
    check_reopen(dir.path(), &clock);
}

#[test]
fn a_delete_after_a_reopen_that_skipped_the_expired_value_holds_at_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.set("k", b"v", Some(TTL)).unwrap();
    store.close().unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.delete("k").unwrap();
    store.close().unwrap();
    check_reopen(dir.path(), &clock);
}

/// Deletes of keys the store never held (what a backplane brings for another instance's keys)
/// write nothing, while the keys that expired lately still take their tombstones.
#[test]
fn deletes_of_keys_never_held_write_no_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let store = FileStore::open(dir.path(), options(&clock, Duration::ZERO)).unwrap();
    store.set("k", b"v", Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    assert_eq!(store.get("k").unwrap(), None);
    let before = store.stats().disk_bytes;
    for i in 0..1000 {
        assert!(!store.delete(&format!("absent{i}")).unwrap());
    }
    // A false positive of the filter writes one tombstone (about 3% of the keys at most).
    let written = store.stats().disk_bytes - before;
    assert!(
        written < 60 * 40,
        "1,000 deletes of absent keys wrote {written} bytes"
    );
    assert!(
        !store.delete("k").unwrap(),
        "an expired value is no value removed"
    );
    assert!(
        store.stats().disk_bytes > before + written,
        "the expired key's delete wrote nothing"
    );
}
