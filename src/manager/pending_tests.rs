//! Tests of reads that missed L1 before a write of their key failed at L2 and was queued for
//! replay: L2 holds an older value than the pending write, and the read must not answer it nor
//! backfill it, whatever its ticket says.

use std::collections::HashMap;
use std::time::Instant;

use super::tests::{memory_l1_with, HeldL2};
use super::Plan;
use crate::storage::Storage;

/// A read that missed L1 before a failed write-behind batch of its key was queued for replay,
/// and looks into the queue after the batch landed: the key is pending now, and L2 holds the
/// value the failed write replaced. The read found the queue empty and nothing pending in
/// between, asked L2, and answered (and backfilled) that older value.
#[test]
fn a_read_that_missed_l1_before_a_failed_batch_of_its_key_landed_does_not_answer_l2s_older_value() {
    for batch in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let l2 = HeldL2::new();
        l2.inner.set("k", b"old", None).unwrap();
        let mut config = crate::CacheConfig::default();
        config.distributed.write_mode = crate::WriteMode::Behind;
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        let cache = memory_l1_with(l2.clone(), config);
        l2.batches_fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let sending = l2.hold("set_each");
        cache.set_raw("k", b"new", None).unwrap();
        sending.wait_entered();
        cache.shared.l1.delete("k").unwrap();
        let s = &cache.shared;
        assert!(matches!(s.plan_read("k").unwrap(), Plan::AskL2(None)));
        let _ = sending.release.send(());
        // The batch failed, was queued for replay and landed.
        cache.flush().unwrap();
        assert!(s.is_pending("k"));
        let l2 = s.l2.as_ref().unwrap();
        let answer = if batch {
            let mut out = HashMap::new();
            let mut suspects = HashMap::new();
            let (left, tickets) = s.read_many_behind(vec!["k"], &mut out, &mut suspects);
            if !left.is_empty() {
                let result = (Instant::now(), l2.get_many(&left));
                s.finish_read_many(&left, &tickets, result, &mut out, &mut suspects)
                    .unwrap();
            }
            out.remove("k")
        } else {
            match s.before_l2("k") {
                Ok(ticket) => s.finish_read("k", ticket, (Instant::now(), l2.get("k"))).unwrap(),
                Err(answer) => answer,
            }
        };
        assert_eq!(
            answer, None,
            "answered L2's value older than the pending write (batch: {batch})"
        );
        assert_eq!(
            cache.get_raw("k").unwrap(),
            None,
            "L1 was backfilled with L2's older value (batch: {batch})"
        );
    }
}

/// A read that missed L1 before a write-through of its key whose L2 step failed, and takes its
/// ticket after the write returned: the ticket is current, but the key is pending, and L2 holds
/// the value the write replaced (or deleted). The read asked L2 and answered, and backfilled,
/// that older value: after a delete, the deleted value; after a set, over the new one in L1.
#[test]
fn a_read_that_missed_l1_before_a_failed_write_through_of_its_key_does_not_answer_l2s_older_value() {
    for (delete, batch) in [(true, false), (true, true), (false, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let l2 = HeldL2::new();
        l2.inner.set("k", b"old", None).unwrap();
        let mut config = crate::CacheConfig::default();
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        config.offline.replay_interval_ms = 3_600_000;
        let cache = memory_l1_with(l2.clone(), config);
        let s = &cache.shared;
        assert!(matches!(s.plan_read("k").unwrap(), Plan::AskL2(None)));
        l2.writes_fail.store(true, std::sync::atomic::Ordering::Relaxed);
        if delete {
            let _ = cache.delete("k");
        } else {
            let _ = cache.set_raw("k", b"new", None);
        }
        assert!(s.is_pending("k"), "the failed write was queued for replay");
        let l2 = s.l2.as_ref().unwrap();
        let answer = if batch {
            let mut out = HashMap::new();
            let mut suspects = HashMap::new();
            let (left, tickets) = s.read_many_behind(vec!["k"], &mut out, &mut suspects);
            if !left.is_empty() {
                let result = (Instant::now(), l2.get_many(&left));
                s.finish_read_many(&left, &tickets, result, &mut out, &mut suspects)
                    .unwrap();
            }
            out.remove("k")
        } else {
            match s.before_l2("k") {
                Ok(ticket) => s.finish_read("k", ticket, (Instant::now(), l2.get("k"))).unwrap(),
                Err(answer) => answer,
            }
        };
        assert_ne!(
            answer.as_deref(),
            Some(&b"old"[..]),
            "answered L2's value older than the pending write (delete: {delete}, batch: {batch})"
        );
        let want: Option<&[u8]> = if delete { None } else { Some(b"new") };
        assert_eq!(
            cache.get_raw("k").unwrap().as_deref(),
            want,
            "L1 was backfilled with L2's older value (delete: {delete}, batch: {batch})"
        );
    }
}
