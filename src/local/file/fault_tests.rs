//! Injected faults, through the simulated disk (`crate::disk::sim`): an fsync, unlink, write or
//! truncation that fails at the worst moment, alone or followed by a power cut. Each test pins one
//! order of events that once lost an acknowledged write, brought a deleted key back, or
//! acknowledged what a failed fsync had dropped.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::power_loss_tests::{sim_store, small, START_MS};
use crate::disk::sim::Sim;
use crate::disk::{Disk, Op};
use crate::{Durability, Error, FileStore, FileStoreOptions, ManualClock};

#[test]
fn a_flush_waiting_behind_a_failing_one_fails_too() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    let store = Arc::new(store);
    store.set("k", b"v", None).unwrap();
    // The second flush's only blocking point is the lock the first one holds.
    let second = behind_a_failing_flush(&store, &sim, |store| store.flush());
    assert!(matches!(second, Err(Error::WritesDisabled { .. })), "{second:?}");
}

/// A monitoring poll (`Monitor::local_file_stats`) must not wait behind a write: a write holds
/// the writer lock across its fsync, which a failing disk can make last. The reservation of the
/// segment writes go to is still counted.
#[test]
fn stats_answer_while_a_write_holds_the_writer_lock_in_its_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock).durability(Durability::EveryWrite));
    let store = Arc::new(store);
    store.set("first", b"v", None).unwrap();
    let hold = sim.hold_next(Op::Sync);
    let write = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.set("k", &[1u8; 1000], None))
    };
    hold.wait_held();
    assert!(
        store.inner.writer.try_lock().is_none(),
        "the write holds no writer lock"
    );
    let (sent, got) = std::sync::mpsc::channel();
    let poll = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || sent.send(store.stats()).unwrap())
    };
    // A bound on the failure only: the poll has nothing to wait for.
    let stats = got.recv_timeout(Duration::from_secs(20));
    let active = store
        .inner
        .segments
        .read()
        .values()
        .next_back()
        .unwrap()
        .data_end();
    hold.release(None);
    write.join().unwrap().unwrap();
    poll.join().unwrap();
    let stats = stats.expect("stats waited for the write holding the writer lock");
    let reserved = store.inner.segment_size - active;
    assert_eq!(stats.allocated_bytes, stats.disk_bytes + reserved, "{stats:?}");
    assert_eq!(stats.segments, 1, "{stats:?}");
    // Sealed, as a close leaves it: nothing is reserved any more, and no segment takes writes.
    store.inner.seal_on_close().unwrap();
    let stats = store.stats();
    assert_eq!(stats.allocated_bytes, stats.disk_bytes, "{stats:?}");
}

/// Runs `op` on a thread of its own while a flush holds the store's sync lock in an fsync that
/// will fail; once `op`'s thread is asleep (on that lock), fails the fsync. Returns what `op`
/// answered, after checking that the flush failed.
fn behind_a_failing_flush<T: Send + 'static>(
    store: &Arc<FileStore>,
    sim: &Sim,
    op: impl FnOnce(&FileStore) -> T + Send + 'static,
) -> T {
    let hold = sim.hold_next(Op::Sync);
    let flush = {
        let store = Arc::clone(store);
        std::thread::spawn(move || store.flush())
    };
    hold.wait_held();
    let (op, tid) = {
        let store = Arc::clone(store);
        spawn_telling_tid(move || op(&store))
    };
    wait_until_asleep(tid);
    hold.release(Some(ErrorKind::Other));
    assert!(flush.join().unwrap().is_err());
    op.join().unwrap()
}

/// Runs `f` on a new thread and returns its handle and its kernel thread id (for
/// [`wait_until_asleep`]).
fn spawn_telling_tid<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> (std::thread::JoinHandle<T>, i32) {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // `/proc/thread-self` links to `PID/task/TID`.
        let link = std::fs::read_link("/proc/thread-self").unwrap();
        let tid: i32 = link.file_name().unwrap().to_str().unwrap().parse().unwrap();
        tid_tx.send(tid).unwrap();
        f()
    });
    (handle, tid_rx.recv().unwrap())
}

fn wait_until_asleep(tid: i32) {
    let path = format!("/proc/self/task/{tid}/stat");
    for _ in 0..100_000 {
        let stat = std::fs::read_to_string(&path).unwrap_or_default();
        // The state follows the parenthesised thread name.
        if stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('S'))
        {
            return;
        }
        std::thread::yield_now();
    }
    panic!("thread {tid} never blocked");
}

#[test]
fn a_failed_directory_fsync_during_compaction_latches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock).min_live_ratio(0.9));
    for round in 0..3 {
        for i in 0..40 {
            store.set(&format!("k{i}"), &[round as u8; 2000], None).unwrap();
        }
    }
    sim.fail_next(Op::SyncDir, ErrorKind::Other);
    assert!(store.compact().is_err());
    let err = store.set("k0", b"x", None).unwrap_err();
    assert!(matches!(err, Error::WritesDisabled { .. }), "{err:?}");
    assert!(store.close().is_err(), "close must report the latch");
}

/// The directory fsync after a compaction removed the oldest segment, damage and all, fails:
/// the error still reaches the caller (and latches), but the store has forgotten the segment,
/// so its damage is counted as dropped all the same.
#[test]
fn damage_a_compaction_removed_is_counted_when_the_directory_fsync_after_it_fails() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock).min_live_ratio(0.5));
    store.set("victim", b"a value that rots", None).unwrap();
    let first = *store.inner.segments.read().keys().next().unwrap();
    let mut i = 0;
    while store.inner.segments.read().len() < 2 {
        store.set(&format!("f{i}"), &[1u8; 2000], None).unwrap();
        i += 1;
    }
    // The first segment is left sparse, a candidate, with a damaged record in it.
    for j in 0..i - 1 {
        assert!(store.delete(&format!("f{j}")).unwrap());
    }
    let seg = Arc::clone(&store.inner.segments.read()[&first]);
    seg.damage_record_of("victim");
    sim.fail_next(Op::SyncDir, ErrorKind::Other);
    assert!(store.compact().is_err());
    assert_eq!(
        sim.pending_faults(),
        0,
        "the compaction never synced the directory"
    );
    assert!(!seg.path.exists(), "the compaction did not remove the segment");
    assert_eq!(store.stats().damaged_ranges_dropped, 1, "{:?}", store.stats());
}

#[test]
fn a_failed_unlink_during_eviction_latches_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    for i in 0..800 {
        store.set(&format!("k{i}"), &[1u8; 2000], None).unwrap();
    }
    assert!(store.stats().evictions > 0);
    sim.fail_next(Op::Remove, ErrorKind::PermissionDenied);
    let mut failed = None;
    for i in 800..1200 {
        if let Err(e) = store.set(&format!("k{i}"), &[1u8; 2000], None) {
            failed = Some(e);
            break;
        }
    }
    assert!(failed.is_some(), "an eviction should have hit the failing unlink");
    let err = store.set("k0", b"x", None).unwrap_err();
    assert!(matches!(err, Error::WritesDisabled { .. }), "{err:?}");
}

#[test]
fn the_simulator_drops_what_was_not_fsynced() {
    // A control for the power-loss test: without a flush, a crash may lose writes, and with
    // Durability::None some seed does; with a flush, none does.
    let mut lost_some = false;
    for seed in 0..40 {
        let root = tempfile::tempdir().unwrap();
        let live = root.path().join("live");
        std::fs::create_dir(&live).unwrap();
        let clock = ManualClock::new(START_MS);
        let (store, sim) = sim_store(&live, small(&clock).durability(Durability::None));
        store.set("flushed", b"1", None).unwrap();
        store.flush().unwrap();
        for i in 0..50 {
            store.set(&format!("k{i}"), &[3u8; 500], None).unwrap();
        }
        store.abandon();
        sim.crash(seed, &root.path().join("after"));
        let after = FileStore::open(root.path().join("after"), small(&clock)).unwrap();
        assert_eq!(
            after.get("flushed").unwrap().as_deref(),
            Some(&b"1"[..]),
            "seed {seed}"
        );
        lost_some |= (0..50).any(|i| after.get(&format!("k{i}")).unwrap().is_none());
    }
    assert!(lost_some, "the simulator never dropped an unsynced write");
}

/// Writes 2,000-byte values to `prefix0..` until the active segment has no room left for one
/// more record of that size (so the next copy of one rolls).
fn fill_active(store: &FileStore, prefix: &str) {
    let len = super::format::record_len(4, 2000) as u64;
    for i in 0.. {
        let w = store.inner.writer.lock();
        if w.active.is_some() && w.offset + len > store.inner.segment_size {
            return;
        }
        drop(w);
        store.set(&format!("{prefix}{i}"), &[3u8; 2000], None).unwrap();
    }
}

#[test]
fn a_compaction_whose_copy_finds_the_device_full_stops_evicts_nothing_and_a_delete_sticks() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).min_live_ratio(0.5);
    let (store, sim) = sim_store(dir.path(), options());
    store.set("keep", &[1u8; 2000], None).unwrap();
    // Fill the first segment, then write every key but `keep` again: the first segment (the
    // oldest) is a compaction candidate holding one live record.
    for round in 0..2u8 {
        for i in 0..40 {
            store.set(&format!("f{i}"), &[round; 2000], None).unwrap();
        }
    }
    fill_active(&store, "g");
    // The copy of `keep` needs a new segment, and the device is full: the compaction stops
    // there. Its roll evicted the oldest segment (the one being rewritten) as a write's does,
    // and a compaction on a full device emptied a store of mostly live segments.
    sim.fail_next(Op::Allocate, ErrorKind::StorageFull);
    let compacted = store.compact();
    assert!(
        matches!(compacted, Err(crate::Error::DiskFull { .. })),
        "{compacted:?}"
    );
    assert_eq!(sim.pending_faults(), 0, "the compaction never rolled");
    assert_eq!(store.stats().evictions, 0);
    assert_eq!(store.get("keep").unwrap(), Some(vec![1u8; 2000]));
    // The segment stays, and a delete of the key still sticks.
    assert!(store.delete("keep").unwrap());
    store.close().unwrap();
    let store = FileStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.get("keep").unwrap(), None, "a deleted key came back");
    for i in 0..40 {
        assert_eq!(
            store.get(&format!("f{i}")).unwrap(),
            Some(vec![1u8; 2000]),
            "f{i}"
        );
    }
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

/// A compaction copies the first live records of the oldest segment into the active one, and
/// the roll the next copy needs finds the device full: the compaction stops there, before the
/// fsync that makes its copies durable. (When that roll evicted the segment, the removal of the
/// originals was made durable, not the copies: a power cut then lost keys flushed long before.)
#[test]
fn a_compaction_cut_short_by_a_full_device_loses_none_of_the_records_it_moved() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).min_live_ratio(0.5);
    let (store, sim) = sim_store(dir.path(), options());
    let value = [1u8; 2000];
    for i in 0..8 {
        store.set(&format!("keep{i}"), &value, None).unwrap();
    }
    // The rest of the first segment, written again into the second: only the first is sealed,
    // and a quarter of it is live.
    for round in 0..2u8 {
        for i in 0..24 {
            store.set(&format!("f{i}"), &[round; 2000], None).unwrap();
        }
    }
    assert_eq!(store.inner.segments.read().len(), 2);
    // Room for three copies left in the active segment.
    let len = super::format::record_len(5, 2000) as u64;
    for i in 0.. {
        let w = store.inner.writer.lock();
        if w.offset + 4 * len > store.inner.segment_size {
            break;
        }
        drop(w);
        store.set(&format!("g{i}"), &[3u8; 2000], None).unwrap();
    }
    store.flush().unwrap();
    sim.fail_next(Op::Allocate, ErrorKind::StorageFull);
    let compacted = store.compact();
    assert!(
        matches!(compacted, Err(crate::Error::DiskFull { .. })),
        "{compacted:?}"
    );
    assert_eq!(sim.pending_faults(), 0, "the compaction never rolled");
    let moved: Vec<String> = (0..8).map(|i| format!("keep{i}")).collect();
    for key in &moved {
        assert_eq!(store.get(key).unwrap().as_deref(), Some(&value[..]), "{key}");
    }
    for seed in 0..32 {
        let after = dir.path().join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        for key in &moved {
            assert!(
                store.get(key).unwrap().as_deref() == Some(&value[..]),
                "seed {seed} ({kept}): {key}, flushed before the compaction moved it, was lost"
            );
        }
    }
}

#[test]
fn a_hint_written_while_its_segment_is_evicted_does_not_stay_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    let store = Arc::new(store);
    store.set("k", &[5u8; 2000], None).unwrap();
    let first = *store.inner.segments.read().keys().next().unwrap();
    let mut i = 0;
    while store.inner.segments.read().len() < 2 {
        store.set(&format!("k{i}"), &[5u8; 2000], None).unwrap();
        i += 1;
    }
    // The flush fsyncs the sealed first segment, then is held renaming its hint into place.
    let hold = sim.hold_next(Op::Rename);
    let flush = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.flush())
    };
    hold.wait_held();
    while store.inner.segments.read().contains_key(&first) {
        store.set(&format!("k{i}"), &[5u8; 2000], None).unwrap();
        i += 1;
    }
    hold.release(None);
    flush.join().unwrap().unwrap();
    let hint = super::segment::hint_path(dir.path(), first);
    assert!(!hint.exists(), "{} outlived its segment", hint.display());
}

#[test]
fn a_compaction_whose_copies_a_failed_flush_may_have_lost_keeps_the_originals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock).min_live_ratio(0.9));
    let store = Arc::new(store);
    for round in 0..2u8 {
        for i in 0..40 {
            store.set(&format!("k{i}"), &[round; 2000], None).unwrap();
        }
    }
    let candidate = *store.inner.segments.read().keys().next().unwrap();
    // The compaction copies its records, then waits for the sync lock before removing them.
    let compacted = behind_a_failing_flush(&store, &sim, |store| store.compact());
    assert!(
        matches!(compacted, Err(Error::WritesDisabled { .. })),
        "{compacted:?}"
    );
    assert!(store.inner.segments.read().contains_key(&candidate));
}

#[test]
fn an_eviction_cut_short_by_a_full_device_drops_nothing_so_a_delete_still_sticks() {
    // The oldest segment holds a value too large ever to be copied, then a small one that is
    // kept. The eviction's copy of the small one fails (a full device, which latches nothing):
    // the segment stays on disk, so the large one must stay in the index too, or a delete of
    // its key would write no tombstone and the value would come back at the next open.
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    let max_bytes: u64 = 1024 * 1024;
    store.set("big", &[1u8; 50 * 1024], None).unwrap();
    store.set("small", b"kept", None).unwrap();
    // Fill up to the bound, stopping just after a roll: the active segment then has room for
    // the eviction's copy, so the eviction's first write is that copy, not a roll.
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
    let st = store.stats();
    assert_eq!(st.evictions, 0, "{st:?}");
    // Read twice, now that it is old: a read entry is kept.
    assert!(store.get("small").unwrap().is_some());
    assert!(store.get("small").unwrap().is_some());
    // A write that needs more than the bound leaves: the oldest segment is evicted first.
    let len = usize::try_from(max_bytes - st.disk_bytes).unwrap() + 100;
    sim.fail_next(Op::Write, ErrorKind::StorageFull);
    let err = store.set("x", &vec![3u8; len], None).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert_eq!(sim.pending_faults(), 0);
    assert_eq!(
        store.get("big").unwrap().map(|v| v.len()),
        Some(50 * 1024),
        "the failed eviction dropped an entry whose record is still on disk"
    );
    assert!(store.delete("big").unwrap());
    store.close().unwrap();
    let store = FileStore::open(dir.path(), small(&clock)).unwrap();
    assert_eq!(store.get("big").unwrap(), None, "the deleted value came back");
    assert_eq!(store.get("small").unwrap().as_deref(), Some(&b"kept"[..]));
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn a_close_after_a_kill_makes_the_killed_runs_delete_durable() {
    // A killed run leaves its last writes in the page cache only. The next run scans that
    // segment and writes its hint; its close (or flush) promises that everything written before
    // it is durable, so a power cut afterwards must not lose the tombstone and bring k back.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::None);
    let (store, sim) = sim_store(&live, options());
    store.set("k", b"v1", None).unwrap();
    store.flush().unwrap();
    assert!(store.delete("k").unwrap());
    store.abandon();
    let store = FileStore::open(&live, options().disk(Disk::simulated(Arc::clone(&sim)))).unwrap();
    assert_eq!(
        store.recovery_report().scanned,
        1,
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.get("k").unwrap(), None);
    store.close().unwrap();
    for seed in 0..64 {
        let after = root.path().join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        assert_eq!(
            store.get("k").unwrap(),
            None,
            "seed {seed} ({kept}): the delete was lost after a close had made it durable"
        );
        store.close().unwrap();
    }
}

/// `k` = `v`, written with `Durability::EveryWrite` under `sim`, is read back after a power
/// cut on each of 64 seeds (each state kept under `root`).
fn assert_k_survives_every_power_cut(sim: &Sim, root: &Path, options: impl Fn() -> FileStoreOptions) {
    for seed in 0..64 {
        let after = root.join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        assert_eq!(
            store.get("k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "seed {seed} ({kept}): a write acknowledged as durable was lost"
        );
        store.close().unwrap();
    }
}

#[test]
fn a_store_whose_open_created_its_directory_keeps_an_acknowledged_write_after_a_power_cut() {
    // The directory's name lives in its parent: unless the parent is fsynced, a power cut can
    // take the new directory, and every write it acknowledged as durable, away.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::EveryWrite);
    let (store, sim) = sim_store(&live, options());
    store.set("k", b"v", None).unwrap();
    assert_k_survives_every_power_cut(&sim, root.path(), options);
}

#[test]
fn an_open_retried_after_its_parent_fsync_failed_still_makes_the_directory_durable() {
    // The first open made the directory but could not fsync its parent, and failed. The retry
    // finds the directory there: it must still fsync the parent, or a power cut can take the
    // directory and what the store acknowledged as durable in it.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::EveryWrite);
    let sim = Sim::new(&live);
    sim.fail_next(Op::SyncDir, ErrorKind::Other);
    let first = FileStore::open(&live, options().disk(Disk::simulated(Arc::clone(&sim))));
    assert!(
        first.is_err() && live.is_dir(),
        "the parent's fsync failed after the mkdir"
    );
    assert_eq!(sim.pending_faults(), 0);
    let store = FileStore::open(&live, options().disk(Disk::simulated(Arc::clone(&sim)))).unwrap();
    store.set("k", b"v", None).unwrap();
    assert_k_survives_every_power_cut(&sim, root.path(), options);
}

#[test]
fn a_batch_that_landed_in_part_before_the_disk_filled_never_shadows_a_later_write() {
    // The device fills up in the middle of a batch's one write: its first two records land
    // whole, then the write fails. They were valid records with the sequence numbers the next
    // writes took again, at the offset the next write reused: a power cut (or a kill) then
    // brought the failed batch's "k" back over the acknowledged one behind it.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::EveryWrite);
    let (store, sim) = sim_store(&live, options());
    store.set("a", b"1", None).unwrap();
    let landed = super::format::record_len(1, 100) + super::format::record_len(1, 1);
    sim.short_next_write(landed, ErrorKind::StorageFull);
    let err = store
        .set_many(&[("x", &[1u8; 100]), ("k", b"X"), ("c", &[2u8; 3000])], None)
        .unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert_eq!(sim.pending_faults(), 0);
    store.set("k", b"v", None).unwrap();
    assert_eq!(store.get("x").unwrap(), None, "a refused write published a value");
    assert_k_survives_every_power_cut(&sim, root.path(), options);
    for seed in 0..8 {
        let after = root.path().join(format!("x-{seed}"));
        sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        assert_eq!(
            store.get("x").unwrap(),
            None,
            "seed {seed}: the failed batch came back"
        );
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"1"[..]), "seed {seed}");
    }
}

/// As above, and the truncation that cuts the failed batch off fails too (a copy-on-write file
/// system can need space for it): the batch's records stayed past the data end of a segment
/// with no hint yet, and a power cut before the hint let the scan apply a write its caller was
/// told failed.
#[test]
fn a_batch_that_failed_on_a_full_disk_never_comes_back_when_its_cut_fails_too() {
    failed_batch_stays_gone_after_power_cuts(true);
}

/// As above, and the truncation that cuts the failed batch off succeeds, but nothing fsyncs it
/// before the power cut (the store is not `EveryWrite`, and the sealed segment waits for the
/// flusher): the cut is as unsynced as the batch's landed records, and a power cut that keeps
/// the records and not the cut let the scan apply a write its caller was told failed.
#[test]
fn a_batch_that_failed_on_a_full_disk_never_comes_back_when_its_cut_is_not_yet_durable() {
    failed_batch_stays_gone_after_power_cuts(false);
}

/// A batch whose write the device cuts short after two whole records, failing with `DiskFull`
/// (and its truncation too if `cut_fails`), then power cuts that keep any subset of what was not
/// fsynced: none of the batch's keys comes back, and what was flushed before stays.
fn failed_batch_stays_gone_after_power_cuts(cut_fails: bool) {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::Periodic(Duration::from_secs(3600)));
    let (store, sim) = sim_store(&live, options());
    store.set("a", b"1", None).unwrap();
    store.flush().unwrap();
    let landed = super::format::record_len(1, 100) + super::format::record_len(1, 1);
    sim.short_next_write(landed, ErrorKind::StorageFull);
    if cut_fails {
        sim.fail_next(Op::SetLen, ErrorKind::StorageFull);
    }
    let err = store
        .set_many(&[("x", &[1u8; 100]), ("k", b"X"), ("c", &[2u8; 3000])], None)
        .unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert_eq!(sim.pending_faults(), 0, "every fault was met");
    for seed in 0..32 {
        let after = root.path().join(format!("x-{seed}"));
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        for key in ["x", "k"] {
            assert_eq!(
                store.get(key).unwrap(),
                None,
                "seed {seed} ({kept}): {key} of the failed batch came back"
            );
        }
        assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"1"[..]), "seed {seed}");
    }
}

#[test]
fn an_evicted_segment_whose_hint_could_not_be_removed_stays_gone_after_a_power_cut() {
    // The eviction unlinks the segment, then its hint; the hint's unlink fails. The directory
    // must still be fsynced, or a power cut brings the segment, and a key deleted since, back.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::EveryWrite);
    // How many writes the first eviction takes, counted on a store of its own: the write that
    // evicts removes the oldest segment, then its hint, before anything else.
    let probe = tempfile::tempdir().unwrap();
    let (store, _) = sim_store(probe.path(), options());
    let fill = |store: &FileStore, i: usize| store.set(&format!("k{i}"), &[7u8; 2000], None);
    let writes = (0..10_000)
        .position(|i| {
            fill(&store, i).unwrap();
            store.stats().evictions > 0
        })
        .expect("no eviction");
    store.close().unwrap();
    let (store, sim) = sim_store(&live, options());
    for i in 0..writes {
        fill(&store, i).unwrap();
    }
    assert_eq!(store.stats().evictions, 0);
    sim.fail_after(Op::Remove, 1, ErrorKind::Other);
    // The segment went: the write is not refused for a hint left behind.
    fill(&store, writes).unwrap();
    assert!(store.stats().evictions > 0);
    assert_eq!(sim.pending_faults(), 0, "the hint's unlink was not tried");
    assert_eq!(
        store.get("k0").unwrap(),
        None,
        "the oldest key outlived its segment"
    );
    assert!(!store.delete("k0").unwrap());
    for seed in 0..64 {
        let after = root.path().join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let reopened = FileStore::open(&after, options()).unwrap();
        assert_eq!(
            reopened.get("k0").unwrap(),
            None,
            "seed {seed} ({kept}): an evicted segment came back"
        );
        reopened.close().unwrap();
    }
}

/// A compaction drops a record whose key the index holds elsewhere, newer: here a durable
/// delete's tombstone, while the newer value sits in a segment a roll sealed and no flush has
/// fsynced yet. The tombstone's segment must not go before that value is durable: a power cut
/// then takes the value, and the deleted value before the tombstone comes back. Only the
/// segments sealed since the compaction began were fsynced.
#[test]
fn a_compaction_removes_a_durable_tombstone_only_once_the_newer_value_is_durable() {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let clock = ManualClock::new(START_MS);
    let sim = Sim::new(&live);
    let options = || {
        small(&clock)
            .durability(Durability::None)
            .disk(Disk::simulated(Arc::clone(&sim)))
    };
    // Segment 1: the value to delete, among live values enough to be no candidate.
    let store = FileStore::open(&live, options()).unwrap();
    store.set("k", b"v0", None).unwrap();
    for i in 0..20 {
        store.set(&format!("a{i}"), &[1u8; 2000], None).unwrap();
    }
    store.close().unwrap();
    // Segment 2: the delete alone, durable, sealed small by the close (a candidate).
    let store = FileStore::open(&live, options()).unwrap();
    assert!(store.delete("k").unwrap());
    store.close().unwrap();
    // Segment 3: k set again, sealed by a roll, not fsynced (no flush, no background thread).
    let store = FileStore::open(&live, options()).unwrap();
    store.set("k", b"v3", None).unwrap();
    fill_active(&store, "b");
    store.set("c", &[2u8; 2000], None).unwrap();
    assert_eq!(
        store.inner.writer.lock().unsynced.len(),
        1,
        "no sealed segment waits for a sync"
    );
    let report = store.compact().unwrap();
    assert!(report.segments_rewritten >= 1, "{report:?}");
    store.abandon();
    for seed in 0..40 {
        let after = root.path().join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, small(&clock)).unwrap();
        let got = store.get("k").unwrap();
        assert!(
            got.is_none() || got.as_deref() == Some(&b"v3"[..]),
            "seed {seed} ({kept}): the deleted value came back: {got:?}"
        );
    }
}

#[test]
fn a_write_whose_fsync_follows_a_failed_one_of_its_segment_is_not_acknowledged() {
    // Linux reports a writeback error to one fsync of an open file, and marks the pages clean:
    // a second fsync, here an `EveryWrite` set's right after a concurrent flush's failed, returns
    // success for a write the kernel dropped. That set must fail, not acknowledge it.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::EveryWrite);
    let (store, sim) = sim_store(&live, options());
    let store = Arc::new(store);
    store.set("k", b"v1", None).unwrap();
    let flush_sync = sim.hold_next(Op::Sync);
    let flush = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || store.flush())
    };
    flush_sync.wait_held();
    // The set's record lands while the flush's fsync is under way; its own fsync comes after.
    let write_sync = sim.hold_next(Op::Sync);
    let (write, tid) = {
        let store = Arc::clone(&store);
        spawn_telling_tid(move || store.set("k", b"v2", None))
    };
    wait_until_asleep(tid);
    flush_sync.release(Some(ErrorKind::Other));
    assert!(flush.join().unwrap().is_err());
    write_sync.release(None);
    let written = write.join().unwrap();
    Arc::try_unwrap(store).unwrap().abandon();
    let after = root.path().join("after");
    let kept = sim.crash(0, &after);
    let store = FileStore::open(&after, options()).unwrap();
    let got = store.get("k").unwrap();
    assert!(
        written.is_err() || got.as_deref() == Some(&b"v2"[..]),
        "({kept}) the set was acknowledged ({written:?}) but a power cut lost it: {got:?}"
    );
    store.close().unwrap();
}

/// Writes "k" twice, with filler writes between that roll the log, and damages the newer
/// record in place: a read of "k" must miss, and nothing may bring "the older value" back.
fn damage_k_over_an_older_value(store: &FileStore) {
    store.set("k", b"the older value", None).unwrap();
    let mut i = 0;
    while store.inner.segments.read().len() < 2 {
        store.set(&format!("f{i}"), &[1u8; 2000], None).unwrap();
        i += 1;
    }
    store.set("k", b"the newer value", None).unwrap();
    let seg = Arc::clone(store.inner.segments.read().values().next_back().unwrap());
    seg.damage_record_of("k");
}

/// A read finds the newest record of a key damaged while the device is full: the tombstone it
/// writes for it fails, and the key leaves the index. A later delete of the key must still write
/// one. It found no entry and wrote nothing, and reopened without the hint that shadows it (a
/// hint lost too), the scan skipped the damaged record and brought the older value back.
#[test]
fn a_key_whose_damaged_record_could_not_be_tombstoned_is_tombstoned_by_its_next_delete() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let (store, sim) = sim_store(dir.path(), small(&clock));
    damage_k_over_an_older_value(&store);
    sim.fail_next(Op::Write, ErrorKind::StorageFull);
    assert_eq!(store.get("k").unwrap(), None, "the damaged record was served");
    assert_eq!(sim.pending_faults(), 0, "no tombstone was tried");
    store.delete("k").unwrap();
    store.close().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == super::format::HINT_EXT) {
            std::fs::remove_file(path).unwrap();
        }
    }
    let store = FileStore::open(dir.path(), small(&clock)).unwrap();
    assert_eq!(store.get("k").unwrap(), None, "the older value came back");
}

/// Under [`Durability::EveryWrite`] the tombstone a read writes for a damaged record is fsynced
/// before the read returns its miss, as a delete's is. Left for the next flush, a power cut
/// could take it: the reopen scanned the active segment, cut the damaged record off with the
/// torn tail, and served the older value the damaged one had overwritten.
#[test]
fn under_every_write_the_tombstone_of_a_damaged_read_outlives_a_power_cut() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    let clock = ManualClock::new(START_MS);
    let options = || small(&clock).durability(Durability::EveryWrite);
    let (store, sim) = sim_store(&dir, options());
    damage_k_over_an_older_value(&store);
    // The damage is on the medium: only what the read writes can be lost.
    store.flush().unwrap();
    assert_eq!(store.get("k").unwrap(), None, "the damaged record was served");
    assert_eq!(store.stats().corrupt_reads, 1);
    store.abandon();
    // Each seed keeps, tears or drops each write not yet fsynced its own way.
    for seed in 0..16 {
        let after = root.path().join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let store = FileStore::open(&after, options()).unwrap();
        let got = store.get("k").unwrap();
        assert_eq!(
            got, None,
            "seed {seed} ({kept}): a value of the damaged key came back"
        );
        store.close().unwrap();
    }
}

/// Under `EveryWrite` the tombstone of a delete that met the key's damaged record is durable when
/// the delete returns, as any delete's: a power cut right after it, whatever of the unsynced
/// state it keeps, never brings back the key's older value, which a reopen that scans past the
/// damaged record (its segment's hints gone) would otherwise find.
#[test]
fn a_delete_of_a_damaged_record_under_every_write_survives_a_power_cut() {
    for seed in 0..16 {
        let root = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let options = || small(&clock).durability(Durability::EveryWrite);
        let store = FileStore::open(root.path(), options()).unwrap();
        store.set("k", b"older-value-of-k", None).unwrap();
        store.set("k", b"newer-value-of-k", None).unwrap();
        store.close().unwrap();
        assert_eq!(
            super::full_device_tests::damage_record_of(root.path(), b"newer-value-of-k"),
            1
        );
        let (store, sim) = sim_store(root.path(), options());
        assert!(!store.delete("k").unwrap());
        let after = tempfile::tempdir().unwrap();
        let kept = sim.crash(seed, after.path());
        drop(store);
        // Without hints the reopen scans the segments, past the damaged record to the older one.
        for file in std::fs::read_dir(after.path()).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|e| e == "hint") {
                std::fs::remove_file(path).unwrap();
            }
        }
        let store = FileStore::open(after.path(), options()).unwrap();
        assert_eq!(
            store.get("k").unwrap(),
            None,
            "seed {seed}: the older value came back ({kept})"
        );
    }
}
