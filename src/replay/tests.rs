//! Fault injection that needs the crate's internals: a failed fsync latches the queue (its ops
//! stay pending, the queue overflowed), and pushes made at once share an fsync (and its failure).

use super::*;
use crate::disk::sim::{Hold, Sim};
use crate::disk::{Disk, Op};

fn assert_fsync_failure(err: &Error) {
    assert!(
        matches!(
            err,
            Error::Io {
                op: "fsync replay log",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_failed_fsync_latches_pushes_and_acks_until_reopen_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_delete("kept").unwrap();
    queue.fail_next_sync();
    let err = queue.push_set("lost", b"v", 0).unwrap_err();
    assert_fsync_failure(&err);
    // Pending all the same: its record may be on disk and come back at a reopen, so a write of
    // the key must not go to L2 directly meanwhile (it would be overwritten by that replay).
    // And it may be lost: L2 may be stale.
    assert!(queue.is_pending("lost"));
    assert!(queue.is_overflowed());
    // Latched: no retry of the fsync, a distinct error for every later write.
    assert!(matches!(
        queue.push_delete("other"),
        Err(Error::WritesDisabled { .. })
    ));
    assert!(!queue.is_pending("other"));
    let ops = queue.pending();
    assert_eq!(ops.len(), 2);
    // An ack is held in memory: the replay goes on to the next op, but the key stays pending, as
    // the log still holds the op and a reopen replays it again.
    assert!(queue.ack(&ops[0]).unwrap());
    assert_eq!(queue.pending(), ops[1..].to_vec());
    assert!(queue.is_pending(&ops[0].key));
    assert_eq!(queue.stats().acks_held, 1);
    assert!(matches!(queue.compact(), Err(Error::WritesDisabled { .. })));
    assert!(queue.stats().write_failure.is_some());
    drop(queue);

    // Reopen: writable again. The failed push reached the page cache before its fsync failed, so
    // it may be replayed (hence pending until now); replaying an op whose L1 write happened is
    // harmless. The held ack was never written: its op is replayed again.
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(queue.is_pending("kept"));
    assert_eq!(queue.stats().acks_held, 0);
    queue.push_delete("other").unwrap();
    assert!(queue.is_pending("other"));
}

/// A directory (`live`, in a scratch directory kept as long as the first) whose files go
/// through a simulated disk.
fn on_sim() -> (tempfile::TempDir, std::path::PathBuf, Arc<Sim>) {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    fs::create_dir(&live).unwrap();
    let sim = Sim::new(&live);
    (root, live, sim)
}

fn sim_options(sim: &Arc<Sim>) -> ReplayOptions {
    ReplayOptions::default().disk(Disk::simulated(Arc::clone(sim)))
}

/// A queue on a simulated disk whose first `fdatasync` is held, with one push waiting in it.
struct HeldPush {
    _root: tempfile::TempDir,
    live: std::path::PathBuf,
    sim: Arc<Sim>,
    queue: Arc<ReplayQueue>,
    first_sync: Arc<Hold>,
    first: std::thread::JoinHandle<Result<PushOutcome>>,
}

fn held_push() -> HeldPush {
    let (root, live, sim) = on_sim();
    let queue = Arc::new(ReplayQueue::open(&live, sim_options(&sim)).unwrap());
    let first_sync = sim.hold_next(Op::Sync);
    let first = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || queue.push_set("a", b"1", 0))
    };
    first_sync.wait_held();
    HeldPush {
        _root: root,
        live,
        sim,
        queue,
        first_sync,
        first,
    }
}

/// Pushes `keys`, one thread each, and returns once all of them wait for a turn.
fn pushes_waiting(
    queue: &Arc<ReplayQueue>,
    keys: &[&'static str],
) -> Vec<std::thread::JoinHandle<Result<PushOutcome>>> {
    let mut handles = Vec::new();
    for (i, &key) in keys.iter().enumerate() {
        let q = Arc::clone(queue);
        handles.push(std::thread::spawn(move || q.push_set(key, b"2", 0)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while queue.pushes.waiting() < i + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "push of {key} never waited for its turn"
            );
            std::thread::yield_now();
        }
    }
    handles
}

#[test]
fn pushes_made_while_another_is_at_the_disk_share_the_next_fdatasync() {
    let held = held_push();
    let waiting = pushes_waiting(&held.queue, &["b", "c", "d"]);
    let second_sync = held.sim.hold_next(Op::Sync);
    held.first_sync.release(None);
    assert!(matches!(
        held.first.join().unwrap(),
        Ok(PushOutcome::Queued { .. })
    ));
    second_sync.wait_held();
    // One turn at a time, and the one at the disk now took every push that waited.
    assert_eq!(
        held.queue.pushes.waiting(),
        0,
        "the three waiting pushes need more than one fdatasync"
    );
    second_sync.release(None);
    for handle in waiting {
        assert!(matches!(handle.join().unwrap(), Ok(PushOutcome::Queued { .. })));
    }
    for key in ["a", "b", "c", "d"] {
        assert!(held.queue.is_pending(key), "{key}");
    }

    // Each push returned after the fdatasync that covered it: a power loss keeps them all.
    drop(held.queue);
    let after = held._root.path().join("after");
    for seed in 0..20 {
        let _ = fs::remove_dir_all(&after);
        let kept = held.sim.crash(seed, &after);
        let queue = ReplayQueue::open(&after, ReplayOptions::default()).unwrap();
        let keys: Vec<String> = queue.pending().into_iter().map(|op| op.key).collect();
        assert_eq!(
            keys,
            ["a", "b", "c", "d"],
            "seed {seed}; {kept}; {}",
            held.live.display()
        );
    }
}

#[test]
fn a_failed_group_fdatasync_fails_every_push_of_the_group_and_keeps_them_pending() {
    let held = held_push();
    let waiting = pushes_waiting(&held.queue, &["b", "c"]);
    let second_sync = held.sim.hold_next(Op::Sync);
    held.first_sync.release(None);
    assert!(held.first.join().unwrap().is_ok());
    second_sync.wait_held();
    second_sync.release(Some(std::io::ErrorKind::Other));
    for handle in waiting {
        let err = handle.join().unwrap().unwrap_err();
        assert_fsync_failure(&err);
    }
    assert!(held.queue.is_pending("a"));
    // See `a_failed_fsync_latches_pushes_and_acks_until_reopen_while_reads_go_on`.
    assert!(held.queue.is_pending("b") && held.queue.is_pending("c"));
    assert!(held.queue.is_overflowed());
    assert!(matches!(
        held.queue.push_delete("e"),
        Err(Error::WritesDisabled { .. })
    ));
}

/// A latched queue is written anew from memory and takes writes again, without a reopen: the
/// op whose fsync failed is still pending (and durable now), the flag that an op may have been
/// lost survives a reopen, and acks work.
#[test]
fn a_latched_queue_recovers_without_a_reopen_and_keeps_every_op_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(!queue.recover().unwrap(), "nothing to recover");
    queue.push_delete("kept").unwrap();
    queue.fail_next_sync();
    assert_fsync_failure(&queue.push_set("failed", b"v", 0).unwrap_err());
    assert!(matches!(
        queue.push_delete("lost"),
        Err(Error::WritesDisabled { .. })
    ));
    assert!(queue.recover().unwrap());
    assert!(queue.stats().write_failure.is_none());
    queue.push_delete("after").unwrap();
    let ops = queue.pending();
    assert_eq!(ops.len(), 3, "{ops:?}");
    let kept = ops.iter().find(|op| op.key == "kept").unwrap();
    assert!(queue.ack(kept).unwrap());
    drop(queue);
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    let mut keys: Vec<String> = queue.pending().into_iter().map(|op| op.key).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["after", "failed"],
        "the ack and both ops were kept, the refused push was not"
    );
    assert!(queue.is_overflowed(), "the lost push's flag was kept");
}

/// A log that used the last sequence number (only a crafted one can) loses the next op as a
/// full queue would, rather than overflow the counter.
#[test]
fn a_queue_out_of_sequence_numbers_loses_the_op_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.inner.lock().next_seq = u64::MAX;
    assert!(matches!(queue.push_delete("k").unwrap(), PushOutcome::Overflowed));
    assert!(!queue.is_pending("k"));
    assert!(queue.is_overflowed());
}

/// A queue directory whose log held a delete and then had a bit of its header flipped, inside
/// the log id (under the header's CRC); and the damaged log's bytes.
fn a_log_with_a_damaged_header() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_delete("k").unwrap();
    drop(queue);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x01;
    fs::write(&path, &bytes).unwrap();
    (dir, bytes)
}

#[test]
fn a_damaged_log_whose_replacement_could_not_be_written_is_still_reported_at_the_next_open() {
    // The open that finds the header damaged keeps a copy aside and writes a new, overflowed
    // log over it; here the new log cannot be created (a full disk). When the damaged log was
    // renamed away first, the next open found no log at all and started an empty queue that
    // said nothing was lost, though the damaged log may have held deletes.
    let (dir, bytes) = a_log_with_a_damaged_header();
    let sim = Sim::new(dir.path());
    sim.fail_next(Op::Create, std::io::ErrorKind::StorageFull);
    let options = ReplayOptions::default().disk(Disk::simulated(Arc::clone(&sim)));
    let queue = ReplayQueue::open(dir.path(), options).unwrap();
    assert_eq!(sim.pending_faults(), 0, "the new log was not tried");
    assert!(queue.is_overflowed());
    assert!(queue.recovery_report().rewrite_failed.is_some());
    assert!(!queue.recovery_report().rewritten);
    assert!(queue.push_delete("x").is_err(), "the damaged log took a write");
    drop(queue);
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(queue.is_overflowed(), "the lost ops went unreported");
    assert!(queue.recovery_report().header_damage.is_some());
    assert_eq!(fs::read(dir.path().join("replay.log.damaged")).unwrap(), bytes);
}

/// Damage mid-way through the log needs a rewrite at open, which a full device refuses: the
/// queue (and the manager) did not open. Now it opens with what it read, latched, and the log is
/// rewritten once there is room.
#[test]
fn a_log_damaged_mid_way_opens_latched_on_a_full_device_and_is_rewritten_once_there_is_room() {
    let (_root, live, sim) = on_sim();
    let path = live.join(LOG_FILE);
    let mid;
    {
        let queue = ReplayQueue::open(&live, ReplayOptions::default()).unwrap();
        queue.push_set("a", b"v", 0).unwrap();
        mid = fs::metadata(&path).unwrap().len() as usize;
        queue.push_delete("b").unwrap();
        queue.push_delete("c").unwrap();
    }
    let mut bytes = fs::read(&path).unwrap();
    bytes[mid + 5] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let want = |queue: &ReplayQueue| {
        let ops: Vec<(String, ReplayAction)> = queue
            .pending()
            .into_iter()
            .map(|op| (op.key, op.action))
            .collect();
        assert_eq!(
            ops,
            [
                ("a".to_owned(), ReplayAction::Delete),
                ("c".to_owned(), ReplayAction::Delete)
            ],
            "the set before the damage replays as a delete, the delete after it stays"
        );
        assert!(
            queue.is_overflowed(),
            "the damaged record may have been any key's op"
        );
    };

    sim.fail_next(Op::Create, std::io::ErrorKind::StorageFull);
    let queue = ReplayQueue::open(&live, sim_options(&sim)).unwrap();
    let report = queue.recovery_report().clone();
    assert_eq!(report.damaged_ranges, 1);
    assert!(!report.rewritten);
    assert!(
        report
            .rewrite_failed
            .as_deref()
            .is_some_and(|why| why.contains("no space")),
        "{report:?}"
    );
    want(&queue);
    assert!(
        queue.push_set("d", b"v", 0).is_err(),
        "the damaged log took a write"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "the damaged log changed");
    assert!(queue.recover().unwrap(), "room is back: the log is written anew");
    want(&queue);
    drop(queue);
    let queue = ReplayQueue::open(&live, ReplayOptions::default()).unwrap();
    assert_eq!(queue.recovery_report().damaged_ranges, 0);
    want(&queue);
}

/// A push refused by a latched queue leaves no older value of its key to replay: the delete
/// that took the key out of L1 was refused, and the set queued before it would have put the
/// old value back in L2 once the queue recovered.
#[test]
fn a_latched_queue_refusing_an_op_of_a_key_with_a_pending_set_replays_a_delete_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_set("k", b"old", 0).unwrap();
    queue.push_set("other", b"v", 0).unwrap();
    queue.fail_next_sync();
    assert_fsync_failure(&queue.push_delete("unrelated").unwrap_err());
    assert!(matches!(
        queue.push_delete("k"),
        Err(Error::WritesDisabled { .. })
    ));
    assert!(queue.recover().unwrap());
    let action = |key: &str| {
        queue
            .pending()
            .into_iter()
            .find(|op| op.key == key)
            .map(|op| op.action)
    };
    assert_eq!(
        action("k"),
        Some(ReplayAction::Delete),
        "the old value would replay"
    );
    assert!(
        matches!(action("other"), Some(ReplayAction::Set { .. })),
        "a key with no refused op keeps its set"
    );
    assert!(queue.is_overflowed());
}

/// A replay takes `k`'s set and sends it; meanwhile the queue latches and refuses a newer op of
/// `k`, which turns the set into a delete (same seq). The set's ack matched on seq alone and
/// removed the delete that was never sent: L2 kept the value.
#[test]
fn the_ack_of_a_set_turned_into_a_delete_since_leaves_the_delete_pending() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_set("k", b"old", 0).unwrap();
    let taken = queue.pending();
    queue.fail_next_sync();
    assert_fsync_failure(&queue.push_delete("unrelated").unwrap_err());
    assert!(matches!(
        queue.push_delete("k"),
        Err(Error::WritesDisabled { .. })
    ));
    assert!(queue.recover().unwrap());
    assert!(!queue.ack(&taken[0]).unwrap(), "the set's ack took the delete");
    let pending = queue.pending();
    assert!(
        pending
            .iter()
            .any(|op| op.key == "k" && op.action == ReplayAction::Delete),
        "{pending:?}"
    );
}

/// A full device is told as [`Error::DiskFull`], as the stores tell it, not as a generic I/O
/// error a caller cannot tell from a failing disk.
#[test]
fn a_push_on_a_full_device_is_a_disk_full_error_naming_the_log() {
    let (_root, live, sim) = on_sim();
    let queue = ReplayQueue::open(&live, sim_options(&sim)).unwrap();
    sim.fail_next(Op::Write, std::io::ErrorKind::StorageFull);
    let pushed = queue.push_set("k", b"v", 0);
    match &pushed {
        Err(Error::DiskFull { path, op, needed }) => {
            assert_eq!(*path, live.join(format::LOG_FILE));
            assert_eq!(*op, "append to replay log");
            assert!(*needed > 0);
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
    // What to do names the queue's own bound, not only the store's.
    let message = pushed.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("offline.replay_max_bytes"), "{message}");
}

/// A full device may say so at the `fdatasync` (writeback) or when a file is created: that is
/// a full disk too, not a bare I/O error.
#[test]
fn a_full_device_reported_at_fsync_or_at_create_is_a_disk_full_error() {
    let (_root, live, sim) = on_sim();
    let queue = ReplayQueue::open(&live, sim_options(&sim)).unwrap();
    sim.fail_next(Op::Sync, std::io::ErrorKind::StorageFull);
    let e = queue.push_set("k", b"v", 0).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::DiskFull {
                op: "fsync replay log",
                ..
            }
        ),
        "{e:?}"
    );
    sim.fail_next(Op::Create, std::io::ErrorKind::StorageFull);
    let e = queue.recover().unwrap_err();
    assert!(matches!(&e, Error::DiskFull { op: "create", .. }), "{e:?}");
}

/// A failed ack latches the log and leaves the overflow mark (a push refused later would be
/// lost), but loses nothing itself: once `recover` has written the log anew with no op lost,
/// the mark goes. It stayed, `clear_overflow` (the flag being clear) did not remove it, and the
/// queue opened overflowed at the next start.
#[test]
fn a_failed_ack_leaves_no_overflow_once_the_queue_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join(format::OVERFLOWED_FILE);
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_set("k", b"v", 0).unwrap();
    let ops = queue.pending();
    queue.fail_next_sync();
    // The failed write holds the ack in memory; the stats say why.
    assert!(queue.ack(&ops[0]).unwrap());
    assert!(queue
        .stats()
        .write_failure
        .is_some_and(|e| e.contains("injected fsync failure")));
    assert_eq!(queue.stats().acks_held, 1);
    assert!(
        queue.is_pending("k"),
        "a held ack's key must stay pending until the recovery"
    );
    assert!(!queue.is_overflowed(), "nothing was lost");
    assert!(mark.exists(), "the mark is left while the log is latched");
    assert!(queue.recover().unwrap());
    assert!(!mark.exists(), "recovered with nothing lost, the mark stayed");
    // The new log leaves the held op out, and the key is free.
    assert_eq!(queue.stats().acks_held, 0);
    assert!(!queue.is_pending("k"));
    assert!(!queue.ack(&ops[0]).unwrap());
    drop(queue);
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(!queue.is_overflowed());
    assert!(!queue.recovery_report().marked_overflowed);
    assert_eq!(queue.len(), 0);

    // A mark left by a process that ended before it recovered: `clear_overflow` removes it.
    let queue2_dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(queue2_dir.path(), ReplayOptions::default()).unwrap();
    queue.push_set("k", b"v", 0).unwrap();
    let ops = queue.pending();
    queue.fail_next_sync();
    assert!(queue.ack(&ops[0]).unwrap());
    assert!(queue.stats().write_failure.is_some());
    drop(queue);
    let queue = ReplayQueue::open(queue2_dir.path(), ReplayOptions::default()).unwrap();
    assert!(
        queue.is_overflowed(),
        "an op may have been lost before the end: told"
    );
    assert!(queue.clear_overflow().unwrap());
    assert!(!queue2_dir.path().join(format::OVERFLOWED_FILE).exists());
}

/// A push fails on a full device: the queue is overflowed (ops may be lost), but only in
/// memory until a rewrite of the log succeeds, which a device still full keeps failing. A
/// process that ended then reopened the log as it was, flag clear: the loss was never told.
#[test]
fn the_overflow_of_a_queue_whose_log_could_not_be_written_survives_a_reopen_until_cleared() {
    let (_root, live, sim) = on_sim();
    let options = || sim_options(&sim);
    let queue = ReplayQueue::open(&live, options()).unwrap();
    queue.push_set("k", b"v1", 0).unwrap();
    sim.fail_next(Op::Write, std::io::ErrorKind::StorageFull);
    assert!(queue.push_delete("k").is_err());
    assert!(queue.is_overflowed());
    drop(queue);
    let queue = ReplayQueue::open(&live, options()).unwrap();
    assert!(queue.is_overflowed(), "the overflow was forgotten");
    assert!(queue.recovery_report().marked_overflowed);
    assert!(queue.clear_overflow().unwrap());
    drop(queue);
    let queue = ReplayQueue::open(&live, options()).unwrap();
    assert!(!queue.is_overflowed(), "cleared, it came back");
    assert!(!live.join(format::OVERFLOWED_FILE).exists());
}

/// A torn tail (a push cut short by a crash) was cut by rewriting the whole log, which needs room
/// for every pending op: on a device still full, the queue (and the manager) did not open.
#[test]
fn a_torn_tail_is_cut_in_place_so_the_queue_opens_on_a_full_device() {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    fs::create_dir(&live).unwrap();
    {
        let queue = ReplayQueue::open(&live, ReplayOptions::default()).unwrap();
        queue.push_set("k", b"v", 0).unwrap();
        queue.push_delete("gone").unwrap();
    }
    let path = live.join(format::LOG_FILE);
    let end = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0x5a; 19]);
    fs::write(&path, &bytes).unwrap();
    let sim = Sim::new(&live);
    sim.fail_next(Op::Create, std::io::ErrorKind::StorageFull);
    let options = ReplayOptions::default().disk(Disk::simulated(Arc::clone(&sim)));
    let queue = ReplayQueue::open(&live, options).expect("the queue opens on a full device");
    assert_eq!(queue.recovery_report().torn_tail_bytes, 19);
    assert!(!queue.recovery_report().rewritten);
    assert_eq!(fs::metadata(&path).unwrap().len(), end, "the tail was cut");
    assert!(queue.is_pending("k") && queue.is_pending("gone"));
    assert!(!queue.is_overflowed(), "a torn tail is no loss");
}

/// A compaction that fails (a device too full for the rewrite) was tried again at the next push
/// or ack, each try writing every pending op under the queue's lock; now once the log has grown
/// by as much again.
#[test]
fn a_failed_compaction_is_tried_again_only_once_the_log_has_grown_again() {
    let (_root, live, sim) = on_sim();
    let queue = ReplayQueue::open(&live, sim_options(&sim)).unwrap();
    sim.fail_next(Op::Create, std::io::ErrorKind::StorageFull);
    let replayed = |i: usize| {
        queue.push_set(&format!("k{i}"), &[7u8; 1024], 0).unwrap();
        for op in queue.pending() {
            queue.ack(&op).unwrap();
        }
    };
    let mut i = 0;
    while queue.stats().compaction_failures == 0 {
        replayed(i);
        i += 1;
        assert!(i < 1_000, "no compaction was tried");
    }
    let failed_at = queue.stats().log_bytes;
    for _ in 0..8 {
        replayed(i);
        i += 1;
    }
    let stats = queue.stats();
    assert_eq!(stats.compaction_failures, 1);
    assert!(stats.log_bytes > failed_at, "compacted at once: {stats:?}");
    while queue.stats().log_bytes > failed_at {
        replayed(i);
        i += 1;
        assert!(i < 1_000, "never compacted again");
    }
    assert_eq!(queue.stats().compaction_failures, 1);
}

#[test]
fn a_damaged_log_on_a_file_system_without_hard_links_still_opens_overflowed() {
    let (dir, _) = a_log_with_a_damaged_header();
    let sim = Sim::new(dir.path());
    // The hard link is the first name change of the open (vfat says "operation not permitted").
    sim.fail_next(Op::Rename, std::io::ErrorKind::PermissionDenied);
    let options = ReplayOptions::default().disk(Disk::simulated(Arc::clone(&sim)));
    let queue = ReplayQueue::open(dir.path(), options).unwrap();
    assert_eq!(sim.pending_faults(), 0);
    assert!(queue.is_overflowed());
    assert!(queue.recovery_report().header_damage.is_some());
    assert!(!dir.path().join("replay.log.damaged").exists());
}

/// A log's CRCs do not make its seqs unique (a crafted or carried-over record can repeat one),
/// and the queue keeps both keys' ops (see `Pending`). `ack_many` told acks apart by seq alone:
/// the second key's ack was dropped, so its op, already in L2, was sent again and counted short.
#[test]
fn acking_two_keys_that_share_a_seq_acks_both_and_an_op_listed_twice_once() {
    let dir = tempfile::tempdir().unwrap();
    let header = Header {
        log_id: 7,
        next_seq: 1,
    };
    let mut bytes = format::encode_header(&header).to_vec();
    for key in ["a", "b"] {
        format::encode_record(
            &mut bytes,
            header.log_id,
            &record_of(key, 3, &ReplayAction::Delete),
        );
    }
    fs::write(dir.path().join(LOG_FILE), &bytes).unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    let ops = queue.pending();
    assert_eq!(ops.len(), 2, "{ops:?}");
    let twice = [ops.clone(), ops.clone()].concat();
    assert_eq!(queue.ack_many(&twice).unwrap(), 2);
    assert!(queue.is_empty(), "{:?}", queue.pending());
    assert_eq!(queue.stats().acked, 2);
    drop(queue);
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(queue.is_empty(), "an ack was not written: {:?}", queue.pending());
}

/// A push refused by a latched log is lost (the queue says overflowed), and `rewrite_failed`
/// tells the operator such pushes are counted as lost; `stats().lost` left them out, so it
/// read 0 through a whole outage of the disk. The push whose fsync failed is not lost: it stays
/// pending and the rewrite keeps it.
#[test]
fn pushes_refused_by_a_latched_queue_are_counted_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.fail_next_sync();
    assert_fsync_failure(&queue.push_set("failed", b"v", 0).unwrap_err());
    assert_eq!(queue.stats().lost, 0, "the failed push is still pending");
    let refused = queue.push_many(&[Push::Delete { key: "x" }, Push::Delete { key: "y" }]);
    assert!(
        matches!(refused, Err(Error::WritesDisabled { .. })),
        "{refused:?}"
    );
    let stats = queue.stats();
    assert_eq!(stats.lost, 2, "{stats:?}");
    assert_eq!(stats.pending, 1, "{stats:?}");
    assert!(stats.overflowed);
}

/// A push refused by the latched log for a key whose ack is held: L2 has the held op, older than
/// the refused one, so a delete of the key is pending again (in memory, as a pending set is
/// made a delete), and the recovery writes it. Without it L2 kept the older value for good.
#[test]
fn a_refused_push_of_a_key_whose_ack_is_held_makes_a_delete_of_it_pending_again() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_set("k", b"v1", 0).unwrap();
    queue.latch_for_test();
    let ops = queue.pending();
    assert!(queue.ack(&ops[0]).unwrap());
    assert!(queue.pending().is_empty() && queue.is_pending("k"));
    assert!(queue.push_set("k", b"v2", 0).is_err());
    let again = queue.pending();
    assert_eq!(
        again
            .iter()
            .map(|o| (o.key.as_str(), &o.action))
            .collect::<Vec<_>>(),
        [("k", &ReplayAction::Delete)]
    );
    assert_eq!(queue.stats().acks_held, 0);
    assert!(queue.recover().unwrap());
    drop(queue);
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    let ops = queue.pending();
    assert_eq!(
        ops.iter()
            .map(|o| (o.key.as_str(), &o.action))
            .collect::<Vec<_>>(),
        [("k", &ReplayAction::Delete)]
    );
}
