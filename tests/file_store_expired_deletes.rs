//! A delete of an expired value holds at the next open under a longer keep-expired window (a
//! fail-safe raised) or behind a clock set back, also when the value's entry left the index
//! before the delete: skipped by the open, swept by compaction, or dropped by a read. The delete
//! found no entry and wrote no tombstone, and the value came back (a stale copy, or live).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use uno_cache::{FileStore, FileStoreOptions, ManualClock};

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
