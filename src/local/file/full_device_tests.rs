//! A full device, through the simulated disk (`crate::disk::sim`): a write, a clear or a new
//! segment that finds no room is `DiskFull` (or makes room by evicting first), latches nothing,
//! and loses nothing; an open needs no free space.

use std::io::ErrorKind;
use std::sync::Arc;

use super::power_loss_tests::{sim_store, small, START_MS};
use crate::disk::sim::Sim;
use crate::disk::{Disk, Op};
use crate::{Durability, Error, FileStore, ManualClock};

/// Opening needs no free space, a new bound included: one the full disk keeps from being
/// recorded holds for the run, and the recorded one stays. The open failed, and the store could
/// not even serve what it held.
#[test]
fn an_open_with_a_new_bound_on_a_full_disk_opens_and_keeps_the_recorded_bound() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    store.set("a", b"1", None).unwrap();
    store.close().unwrap();
    sim.fail_next(Op::Write, ErrorKind::StorageFull);
    let store = FileStore::open(
        dir.path(),
        small(&clock)
            .max_size_mb(2)
            .disk(Disk::simulated(Arc::clone(&sim))),
    )
    .expect("an open on a full disk");
    assert_eq!(store.get("a").unwrap(), Some(b"1".to_vec()));
    store.close().unwrap();
    let meta = std::fs::read(dir.path().join(super::format::META_FILE)).unwrap();
    let meta = super::format::decode_meta(&meta).unwrap();
    assert_eq!(
        meta.max_size,
        1 << 20,
        "the recorded bound is the one that was recorded"
    );
}

#[test]
fn a_segment_write_without_space_is_disk_full_latches_nothing_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    store.set("a", b"1", None).unwrap();
    sim.fail_next(Op::Write, ErrorKind::StorageFull);
    let err = store.set("b", b"2", None).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Ended where the failed write began (see `a_batch_that_landed_in_part_...`), the segment
    // gives way to a new one for each retry; one that a failed write left empty is removed, so
    // retries on a full device do not pile up segment files.
    let segments = store.stats().segments;
    for _ in 0..10 {
        // The new segment's header lands; its first record does not.
        sim.fail_after(Op::Write, 1, ErrorKind::StorageFull);
        let err = store.set("b", b"2", None).unwrap_err();
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    }
    assert_eq!(store.stats().segments, segments, "{:?}", store.stats());
    // Not latched: the next write lands.
    store.set("b", b"3", None).unwrap();
    store.close().unwrap();
    let store = FileStore::open(dir.path(), small(&clock)).unwrap();
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(store.get("b").unwrap().as_deref(), Some(&b"3"[..]));
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn clearing_on_a_device_too_full_for_the_metadata_makes_room_and_clears() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    for i in 0..100 {
        store.set(&format!("k{i}"), &[7u8; 2000], None).unwrap();
    }
    assert!(store.stats().segments > 2, "{:?}", store.stats());
    // The metadata's temporary file cannot be created twice: segments go until it can.
    sim.fail_next(Op::Create, ErrorKind::StorageFull);
    sim.fail_next(Op::Create, ErrorKind::StorageFull);
    store.clear().unwrap();
    assert_eq!(sim.pending_faults(), 0);
    assert_eq!(store.stats().live_items, 0, "{:?}", store.stats());
    assert!(store.get("k99").unwrap().is_none());
    // Not latched, and the clear is what a reopen sees.
    store.set("after", b"v", None).unwrap();
    store.close().unwrap();
    let store = FileStore::open(dir.path(), small(&clock)).unwrap();
    assert!(store.get("k99").unwrap().is_none());
    assert!(store.get("k0").unwrap().is_none());
    assert_eq!(store.get("after").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn clearing_on_a_full_device_with_nothing_left_to_remove_is_disk_full_and_latches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    store.set("k", b"v", None).unwrap();
    for _ in 0..8 {
        sim.fail_next(Op::Create, ErrorKind::StorageFull);
    }
    let err = store.clear().unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // Space returns (the armed failures run out): the same store clears and writes again.
    let mut tries = 0;
    while let Err(e) = store.clear() {
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        tries += 1;
        assert!(tries < 8, "clear never recovered: {e}");
    }
    assert_eq!(sim.pending_faults(), 0);
    store.set("k", b"again", None).unwrap();
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn a_segment_that_cannot_be_created_for_lack_of_space_is_retried_after_evicting() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    for i in 0..100 {
        store.set(&format!("k{i}"), &[7u8; 2000], None).unwrap();
    }
    let evictions = store.stats().evictions;
    // The next roll finds the device full once: the oldest segment goes, then it succeeds.
    sim.fail_next(Op::Allocate, ErrorKind::StorageFull);
    let mut i = 100;
    while sim_has_fault(&sim, &store) {
        store.set(&format!("k{i}"), &[7u8; 2000], None).unwrap();
        i += 1;
    }
    assert!(store.stats().evictions > evictions, "{:?}", store.stats());
    assert_eq!(
        store.get(&format!("k{}", i - 1)).unwrap().as_deref(),
        Some(&[7u8; 2000][..])
    );
}

/// True while the armed allocation failure has not been hit (probes with a bounded number of
/// writes, each less than a segment).
fn sim_has_fault(sim: &Sim, store: &FileStore) -> bool {
    store.stats().segments < 200 && sim.pending_faults() > 0
}

/// An eviction copies the first kept record of the oldest segment into the active one, and the
/// copy of the next kept record fails (a full device: nothing latches). The first copy is in a
/// segment sealed unsynced after the failed write, and the index points at it. The next
/// eviction of the same segment meets no record of it and removed the segment (with its
/// directory fsync) without syncing that copy: a power cut then lost a key that a `flush()` had
/// acknowledged as durable. The segment now records where its copies went, as a compaction's
/// does, and its removal syncs them first.
#[test]
fn an_eviction_cut_short_after_a_copy_never_loses_the_copied_flushed_key() {
    for seed in 0..64u64 {
        let root = tempfile::tempdir().unwrap();
        let live = root.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let clock = ManualClock::new(START_MS);
        let options = || small(&clock).durability(Durability::None);
        let (store, sim) = sim_store(&live, options());
        let max_bytes: u64 = 1024 * 1024;
        store.set("a", b"kept-a", None).unwrap();
        store.set("b", b"kept-b", None).unwrap();
        let mut i = 0;
        loop {
            let segments = store.stats().segments;
            store.set(&format!("f{i}"), &[2u8; 2000], None).unwrap();
            i += 1;
            let st = store.stats();
            assert!(i < 1000, "never reached the bound just after a roll: {st:?}");
            if st.segments > segments && st.disk_bytes + 60 * 1024 > max_bytes {
                break;
            }
        }
        for _ in 0..2 {
            assert!(store.get("a").unwrap().is_some());
            assert!(store.get("b").unwrap().is_some());
        }
        // Everything so far is acknowledged durable.
        store.flush().unwrap();
        let st = store.stats();
        assert_eq!(st.evictions, 0, "{st:?}");
        let len = usize::try_from(max_bytes - st.disk_bytes).unwrap() + 100;
        // The copy of `a` lands, the copy of `b` fails.
        sim.fail_after(Op::Write, 1, ErrorKind::StorageFull);
        let err = store.set("x", &vec![3u8; len], None).unwrap_err();
        assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
        assert_eq!(sim.pending_faults(), 0);
        // The next eviction of the segment then has nothing to copy.
        store.delete("b").unwrap();
        // Now the eviction goes through: the oldest segment is removed.
        store.set("y", &vec![4u8; len], None).unwrap();
        assert!(store.stats().evictions > 0);
        store.abandon();
        let after = root.path().join("after");
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        assert_eq!(
            store.get("a").unwrap().as_deref(),
            Some(&b"kept-a"[..]),
            "seed {seed} ({kept}): a flushed key was lost"
        );
    }
}

/// A read that finds a damaged record on a full device, where the tombstone it writes needs a
/// new segment and the device has no room for one: the oldest segment is evicted to make it, as
/// for any write, and the read is a miss, not an error. The tombstone is what keeps the key gone
/// after a reopen that scans the damaged record's segment (its hint lost too): the scan skips
/// the damaged record, and the older value before it would be back.
#[test]
fn a_damaged_read_whose_tombstone_finds_the_device_full_evicts_for_it_and_misses() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    let key = "k".repeat(1000);
    let mut i = 0;
    let mut filler_until = |store: &FileStore, segments: usize| {
        while store.inner.segments.read().len() < segments {
            store.set(&format!("f{i}"), &[1u8; 2000], None).unwrap();
            i += 1;
        }
    };
    filler_until(&store, 2);
    store.set(&key, b"the older value", None).unwrap();
    store.set(&key, b"the newer value", None).unwrap();
    filler_until(&store, 3);
    // The active segment keeps less room than the tombstone takes: it needs a new segment.
    let tombstone = super::format::record_len(key.len(), 0) as u64;
    let mut s = 0;
    while store.inner.segment_size - store.inner.writer.lock().offset >= tombstone {
        store.set(&format!("s{s}"), b"x", None).unwrap();
        s += 1;
    }
    let seg = Arc::clone(store.inner.segments.read().values().nth(1).unwrap());
    let newer = seg.records().filter(|r| r.record.key == key).last().unwrap();
    let at = newer.offset + u64::from(newer.len) - 1;
    let byte = seg.read(at, 1).unwrap()[0];
    seg.write_at(at, &[byte ^ 1]).unwrap();
    let ids = |store: &FileStore| {
        let segments = store.inner.segments.read();
        (
            segments.keys().next().copied(),
            segments.keys().next_back().copied(),
        )
    };
    let (oldest, newest) = ids(&store);
    sim.fail_next(Op::Allocate, ErrorKind::StorageFull);
    assert_eq!(store.get(&key).unwrap(), None, "the damaged record was served");
    assert_eq!(sim.pending_faults(), 0, "the tombstone took no new segment");
    let stats = store.stats();
    assert_eq!(stats.corrupt_reads, 1, "{stats:?}");
    let (oldest_after, newest_after) = ids(&store);
    assert!(oldest_after > oldest, "no segment was evicted: {stats:?}");
    assert!(
        newest_after > newest,
        "no segment was made for the tombstone: {stats:?}"
    );
    store.close().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == super::format::HINT_EXT) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let store = FileStore::open(dir.path(), small(&clock)).unwrap();
    assert_eq!(store.get(&key).unwrap(), None, "the older value came back");
    assert!(!store.verify(|_, _| {}).unwrap().is_clean());
}

/// A delete of a key whose record is damaged, on a device with no room for its tombstone: the
/// delete fails (`DiskFull`), but the damage it met is counted once and the entry goes, as after
/// a read that met it. The entry stayed, so the next read met the damage again and counted it a
/// second time; the key's next delete writes the tombstone, and the older value stays gone.
#[test]
fn a_delete_of_a_damaged_record_without_room_for_its_tombstone_counts_the_damage_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, _) = sim_store(dir.path(), small(&clock));
    store.set("k", b"older-value-of-k", None).unwrap();
    store.set("k", b"newer-value-of-k", None).unwrap();
    store.close().unwrap();
    assert_eq!(damage_record_of(dir.path(), b"newer-value-of-k"), 1);

    let (store, sim) = sim_store(dir.path(), small(&clock));
    // The reopened store's first record takes a new segment: its header lands, the tombstone
    // does not.
    sim.fail_after(Op::Write, 1, ErrorKind::StorageFull);
    let err = store.delete("k").unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert_eq!(store.stats().corrupt_reads, 1, "{:?}", store.stats());
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(
        store.stats().corrupt_reads,
        1,
        "the damage was met again: {:?}",
        store.stats()
    );
    assert!(!store.delete("k").unwrap(), "the damaged record was no value");
    store.close().unwrap();
    let store = FileStore::open(dir.path(), small(&clock)).unwrap();
    assert_eq!(store.get("k").unwrap(), None, "the older value came back");
    store.close().unwrap();
}

/// Flips a bit of the record holding `value` in the segment files of the closed store in `dir`;
/// returns how many records it damaged.
pub(super) fn damage_record_of(dir: &std::path::Path, value: &[u8]) -> usize {
    let mut damaged = 0;
    for seg in std::fs::read_dir(dir).unwrap() {
        let path = seg.unwrap().path();
        if path.extension().is_some_and(|e| e == "seg") {
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes.windows(value.len()).position(|w| w == value) {
                bytes[at] ^= 0x20;
                std::fs::write(&path, bytes).unwrap();
                damaged += 1;
            }
        }
    }
    damaged
}
