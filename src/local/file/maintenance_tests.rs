//! Tests of the size bound's eviction and of compaction (`maintenance.rs`).

use crate::shutdown::Shutdown;
use crate::{FileStore, FileStoreOptions};

/// `disk_bytes` is what the bound promises to keep within `max_size`: it must hold after
/// every write, also for the roll a write makes (a segment header and a hint frame) and for
/// a batch whose hint entries outweigh its records (long keys, empty values).
#[test]
fn disk_bytes_stay_within_the_bound_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .segment_size(64 * 1024)
            .max_size_mb(1)
            .background_threads(false),
    )
    .unwrap();
    let max = store.max_size();
    let check = |what: &str| {
        let st = store.stats();
        assert!(
            st.disk_bytes <= max,
            "after {what}: {} bytes counted, bound {max}: {st:?}",
            st.disk_bytes
        );
    };
    // Past the bound, with record sizes that land a roll on every offset modulo 8 bytes.
    for i in 0..1200usize {
        store
            .set(&format!("fill-{i}"), &vec![1u8; 1500 + i % 97], None)
            .unwrap();
        check(&format!("set fill-{i}"));
        if i % 7 == 0 {
            store.delete(&format!("fill-{}", i / 2)).unwrap();
            check(&format!("delete fill-{}", i / 2));
        }
    }
    assert!(store.stats().evictions > 0);
    // Values of varied sizes in between, so the batches meet every slack an eviction leaves.
    for round in 0..100usize {
        let keys: Vec<String> = (0..15)
            .map(|i| format!("{round}-{i}-").repeat(1024)[..4096].to_owned())
            .collect();
        let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b""[..])).collect();
        store.set_many(&items, None).unwrap();
        check(&format!("set_many round {round}"));
        let len = (round * 7919) % 60_000;
        store
            .set(&format!("between-{round}"), &vec![2u8; len], None)
            .unwrap();
        check(&format!("set between-{round}"));
    }
}

/// The segment writes go to is never rewritten: removing it would take the records written
/// to it since with it. (A roll between two reads of `compact` once made it a candidate.)
#[test]
fn compaction_never_rewrites_the_segment_writes_go_to() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .segment_size(1024 * 1024)
            .min_live_ratio(1.0)
            .background_threads(false)
    };
    let store = FileStore::open(dir.path(), options()).unwrap();
    for i in 0..100 {
        store.set(&format!("k{i}"), &[7; 100], None).unwrap();
    }
    let active = store.inner.writer.lock().active.clone().unwrap();
    assert_eq!(
        store.inner.rewrite(&active, &Shutdown::default()).unwrap().moved,
        0
    );
    assert!(store.inner.segments.read().contains_key(&active.id));
    store.set("after", b"v", None).unwrap();
    // Nor does a compaction pass pick it, small as it is.
    assert_eq!(store.compact().unwrap().segments_rewritten, 0);
    store.close().unwrap();
    let reopened = FileStore::open(dir.path(), options()).unwrap();
    for i in 0..100 {
        assert_eq!(
            reopened.get(&format!("k{i}")).unwrap(),
            Some(vec![7; 100]),
            "k{i}"
        );
    }
    assert_eq!(reopened.get("after").unwrap(), Some(b"v".to_vec()));
}

/// What a compaction appends before it removes the segment it rewrites passes the size bound
/// for that moment (see the module docs): the copies of one segment's live records. On a store
/// at its bound they fill the active segment and roll, which reserves a whole new one, so the
/// files take more than the bound plus one segment until the rewritten segment goes, and no more
/// than another segment. README and `FileStoreStats::allocated_bytes` promised the bound plus one
/// segment at every moment (found by review: they now say so).
#[test]
fn a_compaction_may_pass_the_bound_plus_a_segment_by_the_copies_of_one_segment() {
    use crate::disk::Op;
    use crate::local::file::power_loss_tests::{sim_store, START_MS};
    use crate::{Durability, ManualClock};
    use std::sync::Arc;

    let segment = 64 * 1024;
    let open = |dir: &std::path::Path| {
        sim_store(
            dir,
            FileStoreOptions::default()
                .max_size_mb(1)
                .segment_size(segment)
                .durability(Durability::None)
                .min_live_ratio(1.0)
                .background_threads(false)
                .clock(Arc::new(ManualClock::new(START_MS))),
        )
    };
    let small = vec![5u8; 200];
    // A store just below its bound whose active segment was just started, by a value that
    // would not fit the one before: its records fill the log up to the bound, and most of the
    // new segment is reserved. Where that moment falls depends on the first value's length.
    let setup = (0..64u64).find_map(|first| {
        let dir = tempfile::tempdir().unwrap();
        let (store, sim) = open(dir.path());
        let max = store.max_size();
        store
            .set("first", &vec![1u8; first as usize * 500], None)
            .unwrap();
        // A dead record in the oldest segment: compaction rewrites it first.
        store.set("k0", &small, None).unwrap();
        store.delete("k0").unwrap();
        for i in 1.. {
            let st = store.stats();
            let room = max - st.disk_bytes;
            let leftover = st.allocated_bytes - st.disk_bytes;
            let last = format!("last{i}");
            // What the last value's roll and hint entry add besides its record.
            let extra = crate::local::file::write::ROLL_BYTES
                + (crate::local::file::format::HINT_ENTRY_LEN + last.len()) as u64;
            let record = room.saturating_sub(extra + 300);
            let header = crate::local::file::format::record_len(last.len(), 0) as u64;
            if record > leftover && record < segment / 3 && record > header {
                store
                    .set(&last, &vec![2u8; (record - header) as usize], None)
                    .unwrap();
                let st = store.stats();
                assert_eq!(st.evictions, 0, "{st:?}");
                return Some((dir, store, sim, max));
            }
            if room < 2 * segment && record <= leftover && room < leftover {
                return None;
            }
            store.set(&format!("k{i}"), &small, None).unwrap();
            if store.stats().evictions > 0 {
                return None;
            }
        }
        None
    });
    let (_dir, store, sim, max) = setup.expect("a store at its bound with a new active segment");
    let before = store.stats();
    assert!(before.allocated_bytes <= max + segment, "{before:?}");
    // Held at the fsyncs before the rewritten segment is removed: the first is the new
    // segment's header (its roll), the second the copies'.
    let roll = sim.hold_next(Op::Sync);
    let hold = sim.hold_next(Op::Sync);
    std::thread::scope(|s| {
        let compaction = s.spawn(|| store.compact().unwrap());
        roll.wait_held();
        roll.release(None);
        hold.wait_held();
        let during = store.stats();
        hold.release(None);
        let report = compaction.join().unwrap();
        assert!(report.segments_rewritten > 0, "{report:?}");
        assert!(
            during.allocated_bytes > max + segment,
            "during the compaction: {during:?}, before: {before:?}"
        );
        // The copies of one segment's live records, and a roll, at most.
        assert!(
            during.allocated_bytes <= max + 2 * segment,
            "during the compaction: {during:?}"
        );
    });
    let after = store.stats();
    assert!(after.allocated_bytes <= max + segment, "{after:?}");
}

/// The writer encodes each record (or batch of records) in one scratch buffer, which kept the
/// capacity of the largest write for the store's life: one 8 MiB value left 8 MiB of RAM held
/// by an idle store (up to a segment, 64 MiB, with the default bound).
#[test]
fn a_large_write_leaves_no_large_scratch_buffer_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .segment_size(32 << 20)
            .max_size_mb(256)
            .background_threads(false),
    )
    .unwrap();
    let large = vec![3u8; 8 << 20];
    store.set("large", &large, None).unwrap();
    let held = store.inner.writer.lock().buf.capacity();
    assert!(held <= 1 << 20, "{held} bytes of scratch held after one write");
    store
        .set_many(&[("a", &large[..]), ("b", &b"small"[..])], None)
        .unwrap();
    let held = store.inner.writer.lock().buf.capacity();
    assert!(held <= 1 << 20, "{held} bytes of scratch held after a batch");
    assert_eq!(store.get("large").unwrap().unwrap(), large);
    assert_eq!(store.get("a").unwrap().unwrap(), large);
}

/// Each open starts a segment of its own, and a run that writes a little and exits before the
/// compactor's interval leaves it small. Those piled up, one file a run: past the process's
/// limit on open files the store could not be opened any more. An open now merges them once
/// there are more than `SMALL_SEGMENTS_AT_OPEN`, and leaves fewer alone.
#[test]
fn restarts_that_write_a_little_leave_at_most_a_few_small_segments() {
    use super::SMALL_SEGMENTS_AT_OPEN;
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .background_threads(false)
            .compaction_interval(std::time::Duration::from_secs(3600))
    };
    let runs = 3 * SMALL_SEGMENTS_AT_OPEN;
    let mut merged = 0;
    for run in 0..runs {
        let store = FileStore::open(dir.path(), options()).unwrap();
        merged += store.stats().compactions;
        let segments = store.stats().segments;
        assert!(
            segments <= SMALL_SEGMENTS_AT_OPEN as u64 + 1,
            "run {run}: {segments} segments after the open"
        );
        if run == SMALL_SEGMENTS_AT_OPEN {
            assert_eq!(
                store.stats().compactions,
                0,
                "run {run}: merged no more than the limit"
            );
        }
        store
            .set(&format!("k{run}"), format!("v{run}").as_bytes(), None)
            .unwrap();
        store.delete(&format!("k{}", run / 2)).unwrap();
        store.close().unwrap();
    }
    assert!(merged > 0, "no open merged");
    let store = FileStore::open(dir.path(), options()).unwrap();
    for run in 0..runs {
        let got = store.get(&format!("k{run}")).unwrap();
        // Deleted by run `2 * run` and `2 * run + 1` if they ran: the merges keep tombstones.
        let want = (2 * run >= runs).then(|| format!("v{run}").into_bytes());
        assert_eq!(got, want, "k{run}");
    }
}
