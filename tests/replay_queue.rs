//! The replay queue keeps writes and deletes that could not reach L2 so that L2 never keeps a
//! value that was overwritten or deleted while it was unreachable (the peers' "deleted key comes
//! back from Redis" bug). These tests pin its promises: coalescing per key, deletes replayed
//! first, durable acks that never remove a newer op, expired sets replayed as deletes, the bound
//! policy (set → delete downgrade, a persistent overflow flag), and recovery from torn tails and
//! flipped bytes without ever producing a wrong op.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use uno_cache::replay::{Push, PushOutcome, ReplayAction, ReplayOp, ReplayOptions, ReplayQueue, LOG_FILE};
use uno_cache::{Error, FileStore, FileStoreOptions, ManualClock};

fn open(dir: &Path) -> ReplayQueue {
    ReplayQueue::open(dir, ReplayOptions::default()).unwrap()
}

fn set(value: &[u8], expires_at_ms: u64) -> ReplayAction {
    ReplayAction::Set {
        value: value.to_vec(),
        expires_at_ms,
    }
}

/// (key, action) in replay order.
fn summary(ops: &[ReplayOp]) -> Vec<(&str, ReplayAction)> {
    ops.iter().map(|o| (o.key.as_str(), o.action.clone())).collect()
}

#[test]
fn set_set_delete_of_one_key_coalesces_to_one_delete() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_set("k", b"one", 0).unwrap();
    q.push_set("k", b"two", 0).unwrap();
    let del = q.push_delete("k").unwrap();
    let ops = q.pending();
    assert_eq!(summary(&ops), vec![("k", ReplayAction::Delete)]);
    assert_eq!(Some(ops[0].seq), del.seq());
    assert_eq!(q.len(), 1);
    drop(q);
    assert_eq!(
        summary(&open(dir.path()).pending()),
        vec![("k", ReplayAction::Delete)]
    );
}

#[test]
fn delete_then_set_of_one_key_coalesces_to_one_set() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_delete("k").unwrap();
    q.push_set("k", b"new", 0).unwrap();
    assert_eq!(summary(&q.pending()), vec![("k", set(b"new", 0))]);
    drop(q);
    assert_eq!(summary(&open(dir.path()).pending()), vec![("k", set(b"new", 0))]);
}

#[test]
fn replay_order_is_every_delete_first_then_every_set_each_in_queue_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_set("s1", b"1", 0).unwrap();
    q.push_delete("d1").unwrap();
    q.push_set("s2", b"2", 0).unwrap();
    q.push_delete("d2").unwrap();
    q.push_set("s3", b"3", 0).unwrap();
    // Re-pushing s1 moves it to the end of the set group: it is now the newest op.
    q.push_set("s1", b"1b", 0).unwrap();
    let expected = vec![
        ("d1", ReplayAction::Delete),
        ("d2", ReplayAction::Delete),
        ("s2", set(b"2", 0)),
        ("s3", set(b"3", 0)),
        ("s1", set(b"1b", 0)),
    ];
    let ops = q.pending();
    assert_eq!(summary(&ops), expected);
    assert!(ops.windows(2).skip(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(summary(&q.pending_up_to(3)), expected[..3].to_vec());
    drop(q);
    assert_eq!(summary(&open(dir.path()).pending()), expected);
}

#[test]
fn acks_are_durable_so_only_unacked_ops_replay_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_delete("a").unwrap();
    q.push_set("b", b"vb", 0).unwrap();
    q.push_set("c", b"vc", 0).unwrap();
    let ops = q.pending();
    assert!(q.ack(&ops[0]).unwrap());
    assert_eq!(q.ack_many(&ops[2..]).unwrap(), 1);
    // Acking twice is a no-op.
    assert!(!q.ack(&ops[0]).unwrap());
    assert_eq!(q.stats().acked, 2);
    drop(q); // no close, no flush: acks were durable when they returned

    let q = open(dir.path());
    assert_eq!(summary(&q.pending()), vec![("b", set(b"vb", 0))]);
    // An op read before the restart can still be acked after it.
    assert!(q.ack(&ops[1]).unwrap());
    drop(q);
    assert!(open(dir.path()).is_empty());
}

#[test]
fn an_ack_of_a_superseded_op_keeps_the_newer_op() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_set("k", b"old", 0).unwrap();
    let replaying = q.pending();
    // While the replayer sends the old value, the key is deleted (L2 still down).
    q.push_delete("k").unwrap();
    assert!(!q.ack(&replaying[0]).unwrap());
    assert_eq!(q.ack_many(&replaying).unwrap(), 0);
    assert_eq!(summary(&q.pending()), vec![("k", ReplayAction::Delete)]);
    assert!(q.is_pending("k"));
    drop(q);
    let q = open(dir.path());
    assert_eq!(summary(&q.pending()), vec![("k", ReplayAction::Delete)]);
    assert!(!q.ack(&replaying[0]).unwrap());
}

#[test]
fn an_expired_set_replays_as_a_delete_of_its_key_and_can_be_acked() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000);
    let options = ReplayOptions::default().clock(Arc::new(clock.clone()));
    let q = ReplayQueue::open(dir.path(), options.clone()).unwrap();
    // A delete, then a set that supersedes it: L2 may still hold the value from before both.
    q.push_delete("k").unwrap();
    q.push_set("k", b"short-lived", 1_000_500).unwrap();
    q.push_set("forever", b"v", 0).unwrap();
    assert_eq!(
        summary(&q.pending()),
        vec![("k", set(b"short-lived", 1_000_500)), ("forever", set(b"v", 0))]
    );
    clock.advance(std::time::Duration::from_millis(500));
    let ops = q.pending();
    assert_eq!(
        summary(&ops),
        vec![("k", ReplayAction::Delete), ("forever", set(b"v", 0))]
    );
    assert_eq!(q.stats().pending_deletes, 1);
    assert!(q.ack(&ops[0]).unwrap());
    drop(q);
    let q = ReplayQueue::open(dir.path(), options).unwrap();
    assert_eq!(summary(&q.pending()), vec![("forever", set(b"v", 0))]);

    // A set pushed after its expiry is queued as a delete right away.
    let outcome = q.push_set("late", b"v", 999).unwrap();
    assert!(matches!(outcome, PushOutcome::Downgraded { .. }), "{outcome:?}");
    assert!(q
        .pending()
        .iter()
        .any(|o| o.key == "late" && o.action == ReplayAction::Delete));
}

#[test]
fn a_set_that_does_not_fit_max_bytes_is_queued_as_a_delete() {
    let dir = tempfile::tempdir().unwrap();
    let q = ReplayQueue::open(dir.path(), ReplayOptions::default().max_bytes(5_000)).unwrap();
    assert!(matches!(
        q.push_set("big", &[7u8; 4_000], 0).unwrap(),
        PushOutcome::Queued { .. }
    ));
    let outcome = q.push_set("big2", &[7u8; 1_000], 0).unwrap();
    assert!(matches!(outcome, PushOutcome::Downgraded { .. }), "{outcome:?}");
    assert!(q.bytes() <= 5_000);
    assert!(!q.is_overflowed());
    assert_eq!(
        summary(&q.pending()),
        vec![("big2", ReplayAction::Delete), ("big", set(&[7u8; 4_000], 0))]
    );
    // A value bigger than the whole bound is downgraded too.
    let outcome = q.push_set("huge", &[1u8; 10_000], 0).unwrap();
    assert!(matches!(outcome, PushOutcome::Downgraded { .. }), "{outcome:?}");
    assert_eq!(q.stats().downgraded, 2);
}

#[test]
fn a_delete_short_of_bytes_makes_room_by_turning_the_oldest_pending_sets_into_deletes() {
    // A set of 3,000 bytes, then deletes of new keys until the bytes run out: the next delete
    // was lost, and the queue overflowed (L2 may then keep a value it should not). The oldest
    // set's value now makes room: it replays as a delete of its key, so L2 only loses keys.
    let dir = tempfile::tempdir().unwrap();
    let options = ReplayOptions::default().max_bytes(4_124);
    let q = ReplayQueue::open(dir.path(), options.clone()).unwrap();
    q.push_set("old", &[7u8; 3_000], 0).unwrap();
    q.push_set("small", b"v", 0).unwrap();
    let mut n = 0;
    while q.bytes() + 64 <= 4_124 {
        assert!(matches!(
            q.push_delete(&format!("d{n}")).unwrap(),
            PushOutcome::Queued { .. }
        ));
        n += 1;
    }
    for extra in 0..3 {
        let outcome = q.push_delete(&format!("more{extra}")).unwrap();
        assert!(matches!(outcome, PushOutcome::Queued { .. }), "{outcome:?}");
    }
    assert!(!q.is_overflowed(), "a delete was lost");
    assert!(q.bytes() <= 4_124, "{}", q.bytes());
    assert_eq!(q.stats().downgraded, 1);
    assert_eq!(q.stats().pushed, 2 + n + 3, "the room made is no push");
    let pending = q.pending();
    let expected = summary(&pending);
    let action = |key: &str| expected.iter().find(|(k, _)| *k == key).map(|(_, a)| a.clone());
    assert_eq!(action("old"), Some(ReplayAction::Delete));
    assert_eq!(action("small"), Some(set(b"v", 0)), "only as many sets as needed");
    drop(q);
    let q = ReplayQueue::open(dir.path(), options).unwrap();
    assert_eq!(
        summary(&q.pending()),
        expected,
        "the downgrade was written to the log"
    );
    assert!(!q.is_overflowed());
    // A delete that all the sets left could not make room for is lost, and costs no set.
    let mut n = 0;
    while !q.is_overflowed() {
        q.push_delete(&format!("e{n}")).unwrap();
        n += 1;
    }
    assert!(q
        .pending()
        .iter()
        .any(|op| op.key == "small" && op.action == set(b"v", 0)));
}

#[test]
fn when_not_even_a_delete_fits_the_overflow_flag_is_set_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = ReplayOptions::default().max_entries(2);
    let q = ReplayQueue::open(dir.path(), options.clone()).unwrap();
    q.push_set("a", b"1", 0).unwrap();
    q.push_set("b", b"2", 0).unwrap();
    assert_eq!(q.push_set("c", b"3", 0).unwrap(), PushOutcome::Overflowed);
    assert_eq!(q.push_delete("d").unwrap(), PushOutcome::Overflowed);
    assert!(q.is_overflowed());
    assert_eq!(q.stats().lost, 2);
    // Ops of keys already pending still replace theirs: the queue never forgets a newer op.
    assert!(matches!(q.push_delete("a").unwrap(), PushOutcome::Queued { .. }));
    assert!(matches!(
        q.push_set("b", b"2b", 0).unwrap(),
        PushOutcome::Queued { .. }
    ));
    let expected = vec![("a", ReplayAction::Delete), ("b", set(b"2b", 0))];
    assert_eq!(summary(&q.pending()), expected);
    drop(q);

    let q = ReplayQueue::open(dir.path(), options.clone()).unwrap();
    assert!(q.is_overflowed());
    assert_eq!(summary(&q.pending()), expected);
    // Compaction keeps the flag too.
    q.compact().unwrap();
    drop(q);
    let q = ReplayQueue::open(dir.path(), options.clone()).unwrap();
    assert!(q.is_overflowed());
    assert!(q.stats().overflowed);
    assert!(q.clear_overflow().unwrap());
    assert!(!q.clear_overflow().unwrap());
    drop(q);
    let q = ReplayQueue::open(dir.path(), options).unwrap();
    assert!(!q.is_overflowed());
    assert_eq!(summary(&q.pending()), expected);
}

#[test]
fn a_delete_of_a_pending_key_replaces_it_even_above_a_lowered_bound() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    for key in ["a", "b", "c"] {
        q.push_set(key, b"value", 0).unwrap();
    }
    drop(q);
    let q = ReplayQueue::open(dir.path(), ReplayOptions::default().max_entries(1)).unwrap();
    assert!(matches!(q.push_delete("a").unwrap(), PushOutcome::Queued { .. }));
    assert!(matches!(
        q.push_set("b", b"newer", 0).unwrap(),
        PushOutcome::Downgraded { .. }
    ));
    assert_eq!(q.push_delete("z").unwrap(), PushOutcome::Overflowed);
    assert_eq!(
        summary(&q.pending()),
        vec![
            ("a", ReplayAction::Delete),
            ("b", ReplayAction::Delete),
            ("c", set(b"value", 0))
        ]
    );
}

#[test]
fn push_many_coalesces_within_the_batch_and_numbers_ops_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let outcomes = q
        .push_many(&[
            Push::Set {
                key: "x",
                value: b"1",
                expires_at_ms: 0,
            },
            Push::Delete { key: "y" },
            Push::Delete { key: "x" },
        ])
        .unwrap();
    let seqs: Vec<u64> = outcomes.iter().map(|o| o.seq().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let ops = q.pending();
    assert_eq!(
        summary(&ops),
        vec![("y", ReplayAction::Delete), ("x", ReplayAction::Delete)]
    );
    assert_eq!(ops[1].seq, seqs[2]);
    // An invalid key refuses the whole batch.
    let err = q
        .push_many(&[Push::Delete { key: "ok" }, Push::Delete { key: "" }])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
    assert!(!q.is_pending("ok"));
    assert!(matches!(
        q.push_delete(&"k".repeat(5_000)),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn compaction_shrinks_the_log_and_keeps_seqs_so_earlier_ops_can_still_be_acked() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let value = [3u8; 100];
    let batch: Vec<Push<'_>> = (0..1_000)
        .map(|_| Push::Set {
            key: "hot",
            value: &value,
            expires_at_ms: 0,
        })
        .collect();
    q.push_delete("cold").unwrap();
    let before = q.pending();
    q.push_many(&batch).unwrap();
    // 1,000 superseded records (>64 KiB dead, more than live) triggered a rewrite by itself.
    let stats = q.stats();
    assert!(stats.compactions >= 1, "{stats:?}");
    assert!(stats.log_bytes < 1_000, "{stats:?}");
    assert_eq!(stats.bytes, q.bytes());
    assert_eq!(q.len(), 2);
    assert!(
        q.ack(&before[0]).unwrap(),
        "the op read before compaction still acks"
    );
    let hot = q.pending();
    q.compact().unwrap();
    assert!(q.ack(&hot[0]).unwrap());
    let last_seq = hot[0].seq;
    drop(q);

    let q = open(dir.path());
    assert!(q.is_empty());
    // Sequence numbers are never reused, even after the log was rewritten empty.
    assert!(q.push_delete("next").unwrap().seq().unwrap() > last_seq);
}

#[test]
fn a_second_queue_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let err = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    drop(q);
    ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
}

#[test]
fn invalid_bounds_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    for (options, field) in [
        (ReplayOptions::default().max_entries(0), "replay.max_entries"),
        (ReplayOptions::default().max_bytes(100), "replay.max_bytes"),
        (ReplayOptions::default().max_bytes(1 << 33), "replay.max_bytes"),
    ] {
        match ReplayQueue::open(dir.path(), options) {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected a config error for {field}, got {other:?}"),
        }
    }
}

#[test]
fn the_queue_shares_the_file_store_directory_without_disturbing_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let q = open(dir.path());
    store.set("k", b"v", None).unwrap();
    q.push_delete("gone").unwrap();
    store.close().unwrap();
    drop(q);
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let q = open(dir.path());
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(summary(&q.pending()), vec![("gone", ReplayAction::Delete)]);
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn a_new_file_store_accepts_a_directory_that_holds_only_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_delete("gone").unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    store.set("k", b"v", None).unwrap();
    assert_eq!(summary(&q.pending()), vec![("gone", ReplayAction::Delete)]);
}

#[test]
fn a_leftover_compaction_file_is_removed_and_the_old_log_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_delete("k").unwrap();
    drop(q);
    fs::write(dir.path().join("replay.log.new"), b"half-written compaction").unwrap();
    let q = open(dir.path());
    assert_eq!(summary(&q.pending()), vec![("k", ReplayAction::Delete)]);
    assert!(!dir.path().join("replay.log.new").exists());
}

#[test]
fn a_damaged_header_moves_the_log_aside_and_marks_the_queue_overflowed() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_delete("k").unwrap();
    drop(q);
    let path = dir.path().join(LOG_FILE);
    let mut bytes = fs::read(&path).unwrap();
    bytes[20] ^= 0x01; // inside the log id
    fs::write(&path, &bytes).unwrap();
    let q = open(dir.path());
    assert!(q.is_empty());
    assert!(q.is_overflowed(), "a lost delete must be reported");
    assert!(q.recovery_report().header_damage.is_some());
    assert_eq!(fs::read(dir.path().join("replay.log.damaged")).unwrap(), bytes);
    q.push_delete("after").unwrap();
    drop(q);
    let q = open(dir.path());
    assert!(q.is_overflowed());
    assert!(q.is_pending("after"));
}

// ---- crash recovery ------------------------------------------------------------------------

/// The model's view of what must be pending, key → (seq, action).
type Model = BTreeMap<String, (u64, ReplayAction)>;

/// Builds a log with ops of several kinds; returns the log bytes, the model, and where the last
/// record starts.
fn sample_log() -> (Vec<u8>, Model, usize) {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    let mut model = Model::new();
    let push = |q: &ReplayQueue, model: &mut Model, key: &str, action: ReplayAction| {
        let outcome = match &action {
            ReplayAction::Set { value, .. } => q.push_set(key, value, 0).unwrap(),
            ReplayAction::Delete => q.push_delete(key).unwrap(),
        };
        model.insert(key.to_owned(), (outcome.seq().unwrap(), action));
    };
    push(&q, &mut model, "a", set(b"value-a", 0));
    push(&q, &mut model, "b", set(b"value-b", 0));
    push(&q, &mut model, "c", ReplayAction::Delete);
    push(&q, &mut model, "d", set(b"value-d", 0));
    let b = q.pending().into_iter().find(|o| o.key == "b").unwrap();
    assert!(q.ack(&b).unwrap());
    model.remove("b");
    push(&q, &mut model, "a", ReplayAction::Delete);
    let last_start = fs::metadata(dir.path().join(LOG_FILE)).unwrap().len() as usize;
    push(&q, &mut model, "e", set(b"value-e", 0));
    drop(q);
    (fs::read(dir.path().join(LOG_FILE)).unwrap(), model, last_start)
}

fn open_bytes(bytes: &[u8]) -> (tempfile::TempDir, ReplayQueue) {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(LOG_FILE), bytes).unwrap();
    let q = open(dir.path());
    (dir, q)
}

fn pending_model(q: &ReplayQueue) -> Model {
    q.pending()
        .into_iter()
        .map(|o| (o.key.clone(), (o.seq, o.action)))
        .collect()
}

#[test]
fn a_torn_tail_at_any_offset_loses_only_the_last_record() {
    let (log, model, last_start) = sample_log();
    let mut without_last = model.clone();
    without_last.remove("e");
    for cut in last_start..log.len() {
        let (dir, q) = open_bytes(&log[..cut]);
        assert_eq!(pending_model(&q), without_last, "cut at {cut}");
        assert!(!q.is_overflowed(), "cut at {cut}");
        let report = q.recovery_report();
        assert_eq!(report.torn_tail_bytes, (cut - last_start) as u64, "cut at {cut}");
        assert_eq!(report.damaged_ranges, 0);
        // The tail was cut: a new push lands after the last good record and survives reopen.
        q.push_delete("after").unwrap();
        drop(q);
        let q = open(dir.path());
        assert!(q.is_pending("after"), "cut at {cut}");
        assert_eq!(q.recovery_report().torn_tail_bytes, 0);
    }
    // A crash can also leave the last record's blocks zeroed.
    let mut zeroed = log.clone();
    zeroed[last_start..].fill(0);
    let (_dir, q) = open_bytes(&zeroed);
    assert_eq!(pending_model(&q), without_last);
    assert!(!q.is_overflowed());
    // The untouched log has everything.
    let (_dir, q) = open_bytes(&log);
    assert_eq!(pending_model(&q), model);
}

#[test]
fn flipped_bytes_never_produce_a_wrong_op() {
    let (log, model, _) = sample_log();
    let (mut damaged_runs, mut torn_runs) = (0, 0);
    for at in 0..log.len() {
        for mask in [0x01u8, 0xff] {
            let mut bad = log.clone();
            bad[at] ^= mask;
            let (_dir, q) = open_bytes(&bad);
            let overflowed = q.is_overflowed();
            let report = q.recovery_report().clone();
            if report.damaged_ranges > 0 || report.header_damage.is_some() {
                damaged_runs += 1;
            }
            if report.torn_tail_bytes > 0 {
                torn_runs += 1;
            }
            let found = pending_model(&q);
            for (key, (seq, action)) in &found {
                let right = model.get(key) == Some(&(*seq, action.clone()));
                // The only other acceptable op is a delete, and then the loss is reported.
                let safe = *action == ReplayAction::Delete && overflowed;
                assert!(
                    right || safe,
                    "byte {at} ^ {mask:#x}: wrong op {key} {action:?} (overflowed {overflowed})"
                );
            }
            for key in model.keys() {
                if !found.contains_key(key) {
                    assert!(overflowed, "byte {at} ^ {mask:#x}: {key} lost silently");
                }
            }
        }
    }
    // The loop really exercised the damage path, and no flip was read as a torn tail: not even
    // one in a length of the last record, which makes it run past the end of the file.
    assert!(damaged_runs > 100 && torn_runs == 0, "{damaged_runs} {torn_runs}");
}

/// Opens `bad` (the sample log with its last record, `e`'s, damaged) and checks the loss is
/// reported: one damaged range, no torn tail, the queue overflowed, `e`'s op gone and the
/// others there. Returns what the queue holds.
fn last_op_lost_as_reported_damage(bad: &[u8], model: &Model) -> Model {
    let (_dir, q) = open_bytes(bad);
    let report = q.recovery_report().clone();
    assert!(q.is_overflowed(), "{report:?}");
    assert_eq!(
        (report.damaged_ranges, report.torn_tail_bytes),
        (1, 0),
        "{report:?}"
    );
    let found = pending_model(&q);
    assert!(!found.contains_key("e"));
    assert_eq!(found.len(), model.len() - 1);
    found
}

/// A byte of the last record damaged after its push returned (an acknowledged delete) is damage,
/// reported by the overflow flag: cut as a torn tail, the op was lost silently and L2 kept the
/// deleted value. A torn tail is what a crash leaves of an append not yet returned: a record cut
/// short, or ending in zeros.
#[test]
fn a_damaged_last_record_of_a_returned_push_is_a_reported_loss() {
    let (log, model, last_start) = sample_log();
    let mut bad = log.clone();
    let middle = last_start + (log.len() - last_start) / 2;
    bad[middle] ^= 0x01;
    last_op_lost_as_reported_damage(&bad, &model);
}

/// A length field of the last record damaged after its push returned, so that the record claims
/// to run past the end of the file: with that field made to end the record at the end of the
/// file, its CRC checks out, so the record was written whole, and the loss is reported. Read as
/// a torn tail (a write cut short), the newer value of `k` went silently and its older set,
/// still a set, replayed over it into L2.
#[test]
fn a_last_record_whose_length_field_was_damaged_is_a_reported_loss_not_a_torn_tail() {
    // (offset of the field in the record header, byte of it flipped, mask)
    for (field, byte, mask) in [(8, 2, 0x01u8), (8, 3, 0x80), (6, 0, 0x10), (6, 1, 0x08)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let q = open(dir.path());
        q.push_set("k", b"older", 0).unwrap();
        q.push_delete("other").unwrap();
        let last_start = fs::metadata(&path).unwrap().len() as usize;
        q.push_set("k", b"newer value", 0).unwrap();
        drop(q);
        let mut bytes = fs::read(&path).unwrap();
        bytes[last_start + field + byte] ^= mask;
        let (_dir, q) = open_bytes(&bytes);
        let report = q.recovery_report().clone();
        let ops = pending_model(&q);
        assert_ne!(
            ops.get("k").map(|(_, a)| a.clone()),
            Some(set(b"older", 0)),
            "field {field} byte {byte}: the older set of k replays over its newer value: {report:?}"
        );
        assert!(q.is_overflowed(), "field {field} byte {byte}: {report:?}");
        assert_eq!(
            (report.damaged_ranges, report.torn_tail_bytes),
            (1, 0),
            "field {field} byte {byte}: {report:?}"
        );
        assert_eq!(
            ops.into_iter().map(|(k, (_, a))| (k, a)).collect::<Vec<_>>(),
            [
                ("k".to_owned(), ReplayAction::Delete),
                ("other".to_owned(), ReplayAction::Delete)
            ]
        );
    }
}

/// The last record's 28-byte header reads back as zeros (a block the medium lost) while its
/// value's end survived: nothing says the record was cut short (a header of zeros gives no
/// length), so, as the format says, it is damage and the loss is reported. Read as a torn tail,
/// the acknowledged push of `e` went silently.
#[test]
fn a_last_record_whose_header_reads_as_zeros_while_its_end_survived_is_a_reported_loss() {
    let (log, model, last_start) = sample_log();
    let mut bad = log.clone();
    bad[last_start..last_start + 28].fill(0);
    assert_ne!(bad.last(), Some(&0));
    let found = last_op_lost_as_reported_damage(&bad, &model);
    assert!(
        found.values().all(|(_, action)| *action == ReplayAction::Delete),
        "{found:?}"
    );
}

/// A value of small little-endian integers reads, every 8 bytes, as a set's header claiming a
/// megabyte; the search past damage before it passes such candidates over once its checksum
/// budget is spent, and so cannot check the acknowledged record after the value, larger than
/// what is left. Those bytes were then a torn tail (the damaged record ran past the end of the
/// file): the set of `c` went silently, and L2 kept the value it replaced.
#[test]
fn acknowledged_ops_a_search_past_damage_could_not_reach_are_a_reported_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(LOG_FILE);
    let q = open(dir.path());
    q.push_set("a", b"value-a", 0).unwrap();
    let b_at = fs::metadata(&path).unwrap().len() as usize;
    let lookalikes: Vec<u8> = [0x01u8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00]
        .iter()
        .copied()
        .cycle()
        .take(2 << 20)
        .collect();
    q.push_set("b", &lookalikes, 0).unwrap();
    q.push_set("c", &vec![0x5a; 3 << 19], 0).unwrap();
    drop(q);
    let mut bytes = fs::read(&path).unwrap();
    // b's value length (at 8 in its record header) now runs past the end of the file.
    bytes[b_at + 8..b_at + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    let (_dir, q) = open_bytes(&bytes);
    let report = q.recovery_report().clone();
    assert!(q.is_overflowed(), "the set of c went silently: {report:?}");
    assert_eq!(
        (report.damaged_ranges, report.torn_tail_bytes),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(
        pending_model(&q)
            .into_iter()
            .map(|(k, (_, a))| (k, a))
            .collect::<Vec<_>>(),
        [("a".to_owned(), ReplayAction::Delete)],
        "the set before the damage replays as a delete"
    );
}

#[test]
fn concurrent_pushes_and_acks_keep_every_unacked_op_with_unique_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let q = Arc::new(open(dir.path()));
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let q = Arc::clone(&q);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let key = format!("t{t}-k{}", i % 10);
                    if i % 3 == 0 {
                        q.push_delete(&key).unwrap();
                    } else {
                        q.push_set(&key, format!("{t}-{i}").as_bytes(), 0).unwrap();
                    }
                }
            })
        })
        .collect();
    // A replayer acks whatever it sees while the writers run.
    let mut acked = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        acked += q.ack_many(&q.pending_up_to(7)).unwrap();
    }
    for w in writers {
        w.join().unwrap();
    }
    // Every key's last push (i = 40..49 for k0..k9) is pending unless it was acked.
    let ops = q.pending();
    let seqs: std::collections::HashSet<u64> = ops.iter().map(|o| o.seq).collect();
    assert_eq!(seqs.len(), ops.len());
    for op in &ops {
        let (t, k) = op.key.split_once('-').unwrap();
        let i: usize = 40 + k[1..].parse::<usize>().unwrap();
        let want = if i.is_multiple_of(3) {
            ReplayAction::Delete
        } else {
            set(format!("{}-{i}", &t[1..]).as_bytes(), 0)
        };
        assert_eq!(op.action, want, "{}", op.key);
    }
    assert!(acked + ops.len() >= 40, "acked {acked}, pending {}", ops.len());
    let snapshot = pending_model(&q);
    drop(q);
    assert_eq!(pending_model(&open(dir.path())), snapshot);
}

/// A cache read asks `is_pending` for every L1 miss during an outage; it must not wait behind a
/// push that holds the queue across its fdatasync.
#[test]
fn is_pending_and_len_agree_with_pending_through_pushes_acks_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let q = open(dir.path());
    q.push_set("a", b"1", 0).unwrap();
    q.push_delete("b").unwrap();
    q.push_set("a", b"2", 0).unwrap();
    assert!(q.is_pending("a") && q.is_pending("b") && !q.is_pending("c"));
    assert_eq!((q.len(), q.is_empty()), (2, false));
    let ops = q.pending();
    q.ack_many(&ops).unwrap();
    assert!(!q.is_pending("a") && !q.is_pending("b"));
    assert_eq!((q.len(), q.is_empty()), (0, true));
    q.push_delete("c").unwrap();
    drop(q);
    let q = open(dir.path());
    assert!(q.is_pending("c") && !q.is_pending("a"));
    assert_eq!(q.len(), 1);
}

#[test]
fn the_pending_keys_under_a_prefix_are_listed_and_acked_ones_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let queue = open(dir.path());
    queue.push_set("sess:1", b"v", u64::MAX).unwrap();
    queue.push_delete("sess:2").unwrap();
    queue.push_set("session", b"v", u64::MAX).unwrap();
    queue.push_set("other", b"v", u64::MAX).unwrap();
    let mut listed = queue.pending_with_prefix("sess:");
    listed.sort();
    assert_eq!(listed, ["sess:1", "sess:2"]);
    let acked: Vec<_> = queue
        .pending()
        .into_iter()
        .filter(|op| op.key == "sess:1")
        .collect();
    assert_eq!(queue.ack_many(&acked).unwrap(), 1);
    assert_eq!(queue.pending_with_prefix("sess:"), ["sess:2"]);
    assert_eq!(queue.pending_with_prefix("").len(), 3);
}
