//! A read that meets a damaged record in a segment file: a miss, counted, never the bytes and
//! never an error; the tombstone it writes for the key keeps to the size bound as any write does,
//! and after a reopen the key stays gone, with no older value of it back. A delete that meets
//! one does the same, and removed no value: as a read, it counts and logs the damage. The damage
//! is made in the files of a closed store, as in `tests/damaged_directories.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{files_with_ext, small_segments};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use uno_cache::{Durability, FileStore, Storage};

const MAX_BYTES: u64 = 1 << 20;

fn options() -> uno_cache::FileStoreOptions {
    small_segments().max_size_mb(1)
}

/// Long keys, so that each tombstone (record and hint entry, both holding the key) is worth
/// about 4 KiB of the bound.
fn key(i: usize) -> String {
    format!("key-{i:04}-{}", "k".repeat(2000))
}

/// A value that names its key and version, so that a read can tell the newer from the older.
fn value(i: usize, version: u8) -> Vec<u8> {
    format!("version-{version}-of-{i:04}|").repeat(4).into_bytes()
}

/// Flips a byte of the record holding `value(i, 2)` for every even `i`, in the segment files of
/// a closed store; returns how many records it damaged.
fn damage_even_newer_values(dir: &Path, keys: usize) -> usize {
    let mut damaged = 0;
    for seg in files_with_ext(dir, "seg") {
        let mut bytes = fs::read(&seg).unwrap();
        let mut changed = false;
        for i in (0..keys).step_by(2) {
            let needle = value(i, 2);
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                bytes[at + 3] ^= 0x20;
                changed = true;
                damaged += 1;
            }
        }
        if changed {
            fs::write(&seg, bytes).unwrap();
        }
    }
    damaged
}

/// A store near its size bound reads many damaged records, each of which appends a tombstone of
/// its key: those tombstones make room under the bound as any write does (by evicting). They
/// were appended with no check of the bound, so the store's bytes grew past it by every
/// tombstone (here by hundreds of KiB), and a store sized to a small disk ran that disk full.
#[test]
fn tombstones_of_damaged_reads_keep_to_the_size_bound_and_the_keys_stay_gone() {
    damaged_records_met_keep_to_the_size_bound(|store, key| {
        assert_eq!(store.get(key).unwrap(), None, "damage served");
    });
}

/// The same for deletes of the damaged keys, whose tombstones make room as a read's do; and
/// each delete counts the damaged record it met, as a read does (it was counted nowhere), and
/// says it removed no value: a read of the key would have missed.
#[test]
fn tombstones_of_deletes_of_damaged_records_keep_to_the_size_bound_and_the_damage_is_counted() {
    damaged_records_met_keep_to_the_size_bound(|store, key| {
        assert!(
            !store.delete(key).unwrap(),
            "a delete said it removed a value no read could get"
        );
    });
}

/// Keys written twice near the size bound, the newer record of every other one damaged in the
/// closed store; `meet` then meets each damaged record (a read, a delete): every tombstone keeps
/// to the bound, each damaged record is counted once, and after a reopen the keys stay gone.
fn damaged_records_met_keep_to_the_size_bound(meet: impl Fn(&FileStore, &str)) {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let store = FileStore::open(&dir, options()).unwrap();
    // Older values, then newer ones of the same keys in later segments: together just under
    // the bound, with room for fewer tombstones than there will be damaged reads.
    let mut keys = 0;
    while store.stats().disk_bytes < MAX_BYTES * 45 / 100 {
        store.set(&key(keys), &value(keys, 1), None).unwrap();
        keys += 1;
    }
    for i in 0..keys {
        store.set(&key(i), &value(i, 2), None).unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.evictions, 0, "{stats:?}");
    assert!(stats.disk_bytes <= MAX_BYTES, "{stats:?}");
    store.close().unwrap();
    let damaged = damage_even_newer_values(&dir, keys);
    assert_eq!(damaged, keys.div_ceil(2));

    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(store.recovery_report().scanned, 0, "the hints were used");
    // The damage poisons nothing else in its segments.
    for i in (1..keys).step_by(2) {
        assert_eq!(store.get(&key(i)).unwrap(), Some(value(i, 2)), "key {i}");
    }
    for i in (0..keys).step_by(2) {
        meet(&store, &key(i));
        let stats = store.stats();
        assert!(
            stats.disk_bytes <= MAX_BYTES,
            "after meeting the damaged record of key {i}, the store holds {} bytes, over its bound of {MAX_BYTES}: {stats:?}",
            stats.disk_bytes
        );
    }
    // Room was made by removing the oldest segments, which held the older values only (no
    // entry of the index: `evictions`, which counts entries, stays 0), so every damaged record
    // was still there to be read.
    assert_eq!(store.stats().corrupt_reads, damaged as u64);
    store.close().unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    for i in 0..keys {
        let got = store.get(&key(i)).unwrap();
        if i % 2 == 0 {
            assert_eq!(got, None, "key {i}: an older value or the damage came back");
        } else {
            assert!(
                got.is_none() || got == Some(value(i, 2)),
                "key {i}: {:?}",
                got.map(String::from_utf8)
            );
        }
    }
    assert!(store.stats().disk_bytes <= MAX_BYTES, "{:?}", store.stats());
    store.close().unwrap();
}

/// The messages of the events at WARN and above logged on the calling thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Warnings {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = String::new();
        event.record(&mut Message(&mut message));
        self.0.lock().unwrap().push(message);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

/// A delete whose key's record is damaged (`Durability::EveryWrite`, single and batched): the
/// damage is counted in `corrupt_reads` and logged, as a read's is (at most a line a second),
/// where it was counted and logged nowhere; the delete reports no value removed (it said it
/// removed one, while a `get` and `contains` of the key said it was absent, and a delete after
/// such a read said nothing was removed); and its tombstone holds across a reopen, with no
/// older value back.
#[test]
fn a_delete_of_a_damaged_record_counts_and_logs_it_and_removes_no_value() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let options = || small_segments().durability(Durability::EveryWrite);
    let store = FileStore::open(&dir, options()).unwrap();
    // Two records of each key: the older one is what a reopen that scanned past the damage
    // would bring back if the tombstone did not hold.
    for version in [1, 2] {
        for i in 0..4 {
            store.set(&key(i), &value(i, version), None).unwrap();
        }
    }
    store.close().unwrap();
    assert_eq!(damage_even_newer_values(&dir, 4), 2);

    let store = FileStore::open(&dir, options()).unwrap();
    let warnings = Warnings::default();
    let damage_lines = || {
        let lines = warnings.0.lock().unwrap();
        lines.iter().filter(|m| m.contains("damaged record")).count()
    };
    tracing::subscriber::with_default(warnings.clone(), || {
        assert!(
            !store.delete(&key(0)).unwrap(),
            "delete said it removed the damaged record's value"
        );
        assert_eq!(damage_lines(), 1, "{:?}", warnings.0.lock().unwrap());
        assert_eq!(
            Storage::delete_many(&store, &[key(2).as_str()]).unwrap(),
            0,
            "delete_many counted the damaged record as removed"
        );
        assert_eq!(store.stats().corrupt_reads, 2, "{:?}", store.stats());
        // The damage went with the keys: met again, nothing is counted or logged again.
        let lines = damage_lines();
        assert_eq!(store.get(&key(0)).unwrap(), None);
        assert!(!store.delete(&key(2)).unwrap());
        assert_eq!(store.stats().corrupt_reads, 2, "{:?}", store.stats());
        assert_eq!(damage_lines(), lines, "{:?}", warnings.0.lock().unwrap());
    });
    // A key whose record is whole is removed as before.
    assert!(store.delete(&key(1)).unwrap());
    store.close().unwrap();

    // The tombstones hold: the deleted keys stay gone, the older values with them.
    let store = FileStore::open(&dir, options()).unwrap();
    for i in [0, 1, 2] {
        assert_eq!(store.get(&key(i)).unwrap(), None, "key {i} came back");
    }
    assert_eq!(store.get(&key(3)).unwrap(), Some(value(3, 2)));
    store.close().unwrap();
}

/// `delete_many` over damaged, whole and absent keys (and one named twice) counts the values it
/// removed, the whole keys' once each, and the damage each damaged key's delete met, once; all
/// of them stay gone across a reopen, older values too, and the keys it did not name stay.
#[test]
fn delete_many_over_damaged_whole_and_absent_keys_counts_only_the_whole_ones() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let options = || small_segments().durability(Durability::EveryWrite);
    let store = FileStore::open(&dir, options()).unwrap();
    for version in [1, 2] {
        for i in 0..6 {
            store.set(&key(i), &value(i, version), None).unwrap();
        }
    }
    store.close().unwrap();
    assert_eq!(damage_even_newer_values(&dir, 6), 3);

    let store = FileStore::open(&dir, options()).unwrap();
    let (k0, k1, k2, k3, k4) = (key(0), key(1), key(2), key(3), key(4));
    let named = [
        k0.as_str(),
        k1.as_str(),
        "absent",
        k2.as_str(),
        k3.as_str(),
        k1.as_str(),
        k2.as_str(),
    ];
    assert_eq!(Storage::delete_many(&store, &named).unwrap(), 2);
    assert_eq!(store.stats().corrupt_reads, 2, "{:?}", store.stats());
    // Not named: its damage is met by the read, once.
    assert_eq!(store.get(&k4).unwrap(), None);
    assert_eq!(store.stats().corrupt_reads, 3, "{:?}", store.stats());
    store.close().unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    for i in 0..5 {
        assert_eq!(store.get(&key(i)).unwrap(), None, "key {i} came back");
    }
    assert_eq!(store.get(&key(5)).unwrap(), Some(value(5, 2)));
    assert_eq!(store.stats().corrupt_reads, 0, "{:?}", store.stats());
    store.close().unwrap();
}
