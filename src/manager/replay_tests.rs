//! Tests of the manager with its replay queue latched by a failed write (a full disk, a failed
//! fsync): the queue is written anew and takes writes again, and what it holds only in memory
//! is not lost when the manager goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::{memory_l1_with, HeldL2};
use crate::error::Error;
use crate::replay::{ReplayAction, ReplayOptions, ReplayQueue};
use crate::storage::Storage;

/// A manager's configuration with its replay queue in `dir`, replayed only by `replay_now` (or
/// the manager's drop): no tick for an hour, and no nudge, as the queue is empty at build.
fn replaying_on_demand(dir: &std::path::Path) -> crate::CacheConfig {
    let mut config = crate::CacheConfig::default();
    config.offline.replay_dir = Some(dir.to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    config
}

/// A replay queue latched by a failed write (a full disk, a failed fsync) is written anew by
/// the next replay, which then acks what it sent: the acks failed, and every pass sent the same
/// ops again until a restart.
#[test]
fn a_replay_after_the_queue_latched_rewrites_it_and_acks_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = HeldL2::new();
    let config = replaying_on_demand(dir.path());
    let cache = memory_l1_with(l2.clone(), config);
    let queue = cache.shared.replay.as_ref().unwrap();
    queue.push_set("a", b"1", 0).unwrap();
    queue.fail_next_sync();
    assert!(queue.push_set("b", b"2", 0).is_err());
    assert_eq!(cache.replay_now().unwrap(), 2);
    assert_eq!(cache.stats().consistency.replay_pending, 0);
    assert_eq!(l2.inner.get("b").unwrap().map(|e| e.value), Some(b"2".to_vec()));
    assert!(
        cache.stats().consistency.replay_overflowed,
        "a push may have been lost meanwhile"
    );
}

/// A replay queue latched by a write failure while it held nothing (a compaction's directory
/// fsync after the last ack, say) is written anew by the replay thread's next tick: the replay
/// ran only for a queue with ops in it, so every later failed L2 write was refused and lost.
#[test]
fn an_empty_replay_queue_latched_by_a_write_failure_takes_writes_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::CacheConfig::default();
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = 10;
    let cache = memory_l1_with(HeldL2::new(), config);
    let queue = cache.shared.replay.as_ref().unwrap();
    queue.latch_for_test();
    assert!(queue.is_empty());
    assert!(
        cache.stats().consistency.replay_write_failure.is_some(),
        "the manager's stats did not say its replay queue takes no writes"
    );
    assert!(matches!(
        queue.push_delete("k"),
        Err(Error::WritesDisabled { .. })
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.push_delete("k").is_err() {
        assert!(Instant::now() < deadline, "the queue stayed latched");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(queue.is_overflowed(), "the refused push may have been a lost op");
    assert_eq!(cache.stats().consistency.replay_write_failure, None);
}

/// A latched queue holds in memory only what its log lacks: the overflow flag, and a delete
/// where the log still holds an older set of the key (the delete's push was refused). Dropping
/// the manager writes it, so the next run replays the delete rather than the old value.
#[test]
fn a_manager_dropped_with_its_replay_queue_latched_writes_the_queue_anew() {
    let dir = tempfile::tempdir().unwrap();
    let config = replaying_on_demand(dir.path());
    let cache = memory_l1_with(HeldL2::new(), config);
    let queue = Arc::clone(cache.shared.replay.as_ref().unwrap());
    queue.push_set("k", b"old", 0).unwrap();
    queue.latch_for_test();
    assert!(queue.push_delete("k").is_err());
    drop(queue);
    drop(cache);
    let reopened = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(reopened.is_overflowed(), "the refused push's flag was lost");
    let action = reopened
        .pending()
        .into_iter()
        .find(|op| op.key == "k")
        .map(|op| op.action);
    assert_eq!(action, Some(ReplayAction::Delete), "the old value would replay");
}

/// L2 refuses a replayed set as bad input while a newer write of the key is made: the key
/// leaves L1 only if its pending op is still the refused one. Before, the newer value, written
/// and acknowledged meanwhile, was taken out of L1 (a miss until its own replay). The write
/// waits for the replay's L2 call of its key, then is queued behind the op or, acked by then,
/// sent; either way L1 and, after the next replay, L2 hold it.
#[test]
fn a_replayed_set_l2_refuses_does_not_take_a_newer_write_out_of_l1() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = HeldL2::new();
    l2.max_value.store(4, std::sync::atomic::Ordering::Relaxed);
    let config = replaying_on_demand(dir.path());
    let cache = memory_l1_with(l2.clone(), config);
    // What an outage left: a set L2 will refuse as too large.
    let queue = cache.shared.replay.as_ref().unwrap();
    queue.push_set("k", b"too long for L2", 0).unwrap();
    let gate = l2.hold("set");
    std::thread::scope(|s| {
        let replay = s.spawn(|| cache.replay_now());
        gate.wait_entered();
        // The key is pending: the write is queued behind the replay's op, not sent past it.
        let write = s.spawn(|| cache.set_raw("k", b"new", None));
        gate.release.send(()).unwrap();
        replay.join().unwrap().unwrap();
        write.join().unwrap().unwrap();
    });
    cache.replay_now().unwrap();
    let in_l1 = cache.shared.l1.get("k").unwrap().map(|e| e.value);
    assert_eq!(in_l1.as_deref(), Some(&b"new"[..]), "the newer write left L1");
    let in_l2 = l2.inner.get("k").unwrap().map(|e| e.value);
    assert_eq!(in_l2.as_deref(), Some(&b"new"[..]), "its own replay reached L2");
}

/// A delete of a pending key acknowledged while the replay is on its way through a batch that
/// holds the key's older set: the set is not sent. Sent, it put the deleted value back in L2,
/// published it to the other instances as fresh, and left it there until the delete's own
/// replay (for the whole outage, if L2 failed again in between).
#[test]
fn a_replay_does_not_send_a_queued_set_a_delete_superseded_during_the_replay() {
    let (l2, queue_emptied) = replay_with_b_deleted_while_a_is_sent(|cache| {
        // `b` is still pending, so its delete is queued behind the replay's op.
        assert!(cache.delete("b").is_ok());
    });
    assert_eq!(l2.inner.get("b").unwrap(), None);
    assert_eq!(l2.inner.get("a").unwrap().map(|e| e.value), Some(b"1".to_vec()));
    assert!(queue_emptied);
}

/// What an outage left, two sets (`a`, then `b` = "old") replayed in one batch: `delete_b`
/// runs while the replay sends `a`, and the replay goes on. The value L2 holds for `b` when the
/// replay comes to delete it must be none: sent, the superseded set would have put it there.
/// Returns L2 and whether the queue was left empty.
fn replay_with_b_deleted_while_a_is_sent(delete_b: impl FnOnce(&crate::CacheManager)) -> (Arc<HeldL2>, bool) {
    let dir = tempfile::tempdir().unwrap();
    let l2 = HeldL2::new();
    let config = replaying_on_demand(dir.path());
    let cache = memory_l1_with(l2.clone(), config);
    let queue = cache.shared.replay.as_ref().unwrap();
    queue.push_set("a", b"1", 0).unwrap();
    queue.push_set("b", b"old", 0).unwrap();
    let first_set = l2.hold("set");
    let first_delete = l2.hold("delete");
    std::thread::scope(|s| {
        let replay = s.spawn(|| cache.replay_now());
        // The replay has read its batch and is sending `a`.
        first_set.wait_entered();
        delete_b(&cache);
        first_set.release.send(()).unwrap();
        // The delete's own replay, about to run: L2 must not hold the value it deletes.
        first_delete.wait_entered();
        let in_l2 = l2.inner.get("b").unwrap().map(|e| e.value);
        first_delete.release.send(()).unwrap();
        replay.join().unwrap().unwrap();
        assert_eq!(in_l2, None, "the replay sent the set a delete superseded");
    });
    let emptied = queue.is_empty();
    (l2, emptied)
}

/// A delete of a key whose queued set the replay is sending waits for L2's answer before it
/// is queued: returned first, it was acknowledged while the value it deletes was still on its
/// way into L2 (and published as fresh once there). The wait is what a write-through of the
/// key pays for its own L2 call.
#[test]
fn a_delete_of_a_key_the_replay_is_sending_returns_only_after_l2_answered() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = HeldL2::new();
    let config = replaying_on_demand(dir.path());
    let cache = memory_l1_with(l2.clone(), config);
    let queue = cache.shared.replay.as_ref().unwrap();
    queue.push_set("b", b"old", 0).unwrap();
    let gate = l2.hold("set");
    std::thread::scope(|s| {
        let replay = s.spawn(|| cache.replay_now());
        gate.wait_entered();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let cache = &cache;
        let delete = s.spawn(move || {
            let deleted = cache.delete("b");
            let _ = done_tx.send(());
            deleted
        });
        // A wait that can only end early in the failing case: a slow disk makes it pass wrongly,
        // never fail wrongly.
        let early = done_rx.recv_timeout(Duration::from_millis(200));
        gate.release.send(()).unwrap();
        replay.join().unwrap().unwrap();
        assert!(delete.join().unwrap().is_ok());
        assert!(
            early.is_err(),
            "the delete returned while the replay's older set was on its way to L2"
        );
    });
    cache.replay_now().unwrap();
    assert_eq!(l2.inner.get("b").unwrap(), None);
    assert!(queue.is_empty());
}

/// The same with the newer op refused by a latched log: the key's pending set becomes a delete
/// in memory under the same seq, and the replay that took the set before must not send it.
#[test]
fn a_replay_does_not_send_a_queued_set_turned_into_a_delete_during_the_replay() {
    let (l2, _) = replay_with_b_deleted_while_a_is_sent(|cache| {
        cache.shared.replay.as_ref().unwrap().latch_for_test();
        // Refused by the latched log (the caller is told), the delete leaves `b` pending as one.
        assert!(cache.delete("b").is_err());
    });
    assert_eq!(l2.inner.get("b").unwrap(), None);
}
