//! A read that meets a damaged record in a segment file: a miss, counted, never the bytes and
//! never an error; the tombstone it writes for the key keeps to the size bound as any write does,
//! and after a reopen the key stays gone, with no older value of it back. The damage is made in
//! the files of a closed store, as in `tests/damaged_directories.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::Path;

use common::{files_with_ext, small_segments};
use uno_cache::FileStore;

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
        assert_eq!(store.get(&key(i)).unwrap(), None, "key {i}: damage served");
        let stats = store.stats();
        assert!(
            stats.disk_bytes <= MAX_BYTES,
            "after the damaged read of key {i}, the store holds {} bytes, over its bound of {MAX_BYTES}: {stats:?}",
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
