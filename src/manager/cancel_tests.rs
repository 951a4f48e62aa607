//! Tests of async writes dropped while they wait for L2 (a caller's timeout): what they owe L2
//! is not lost with them.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::Result;
use crate::local::memory::MemoryStore;
use crate::storage::delegate::{Delegate, Wrap, WrapDistributed};
use crate::storage::{BoxFuture, InProcess, Storage};

/// An L2 whose reads answer at once and whose writes never do, as one whose connection is
/// being re-established or whose breaker holds the call: a write sent there has not reached it.
struct WritesStall {
    inner: InProcess<MemoryStore>,
}

impl Wrap for WritesStall {
    type Inner = InProcess<MemoryStore>;
    fn inner(&self) -> &InProcess<MemoryStore> {
        &self.inner
    }
    fn name(&self) -> &str {
        "writes-stall"
    }
}

impl WrapDistributed for WritesStall {
    fn set_async<'a>(&'a self, _: &'a str, _: &'a [u8], _: Option<Duration>) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::pending())
    }
    fn delete_async<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(std::future::pending())
    }
    fn set_many_async<'a>(
        &'a self,
        _: &'a [(&'a str, &'a [u8])],
        _: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::pending())
    }
    fn set_each_async<'a>(
        &'a self,
        _: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::pending())
    }
    fn delete_many_async<'a>(&'a self, _: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(std::future::pending())
    }
}

/// Polls `fut` once (it waits on L2), then drops it, as a caller's timeout does.
fn drop_after_first_poll<F: Future>(fut: F) {
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        matches!(fut.as_mut().poll(&mut cx), Poll::Pending),
        "the write did not wait for L2"
    );
}

/// Drops an async `what` ("delete", or a set of "new") of "k", a batch of one if `batch`, at
/// its L2 call.
fn drop_write(cache: &crate::CacheManager, what: &str, batch: bool) {
    match (what, batch) {
        ("delete", false) => drop_after_first_poll(cache.delete_async("k")),
        ("delete", true) => drop_after_first_poll(cache.multi_delete_async(&["k"])),
        (_, false) => drop_after_first_poll(cache.set_raw_async("k", b"new", None)),
        _ => drop_after_first_poll(cache.multi_set_raw_async(&[("k", &b"new"[..])], None)),
    }
}

/// Without write-behind, an async delete or write-through dropped at its L2 call changed L1 and
/// announced itself, but its op was lost if it never reached L2: this instance (and every other,
/// on the announcement) read L2's old value back, until its TTL. Handed to the replay queue, it
/// is sent again: the drop wakes the replay, and the op reaches L2 (here by a blocking write,
/// which this L2 takes). The key reads as pending until then; that the replay may already have
/// run by the time the test looks made an assertion on "pending" fail about once in many runs.
#[test]
fn an_async_write_dropped_before_l2_answered_is_queued_for_replay() {
    for (what, batch) in [("delete", false), ("delete", true), ("set", false), ("set", true)] {
        let dir = tempfile::tempdir().unwrap();
        let l2 = Arc::new(Delegate(WritesStall {
            inner: InProcess::shared(Arc::new(MemoryStore::new(100).unwrap())),
        }));
        l2.set("k", b"old", None).unwrap();
        let l2_view = Arc::clone(&l2);
        let mut config = crate::CacheConfig::default();
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        config.offline.replay_interval_ms = 3_600_000;
        let cache = crate::CacheManager::builder()
            .config(config)
            .local(Arc::new(MemoryStore::new(100).unwrap()))
            .distributed(l2)
            .build()
            .unwrap();
        drop_write(&cache, what, batch);
        let read = cache.get_raw("k").unwrap();
        assert_ne!(
            read.as_deref(),
            Some(&b"old"[..]),
            "L2's old value was read back after the dropped {what} (batch: {batch})"
        );
        // Sent by now, or by this replay.
        cache.replay_now().unwrap();
        assert!(!cache.shared.is_pending("k"));
        let in_l2 = l2_view.get("k").unwrap().map(|entry| entry.value);
        let want = (what == "set").then(|| b"new".to_vec());
        assert_eq!(
            in_l2, want,
            "the dropped {what} (batch: {batch}) never reached L2"
        );
    }
}

/// Without a replay queue nothing can send a dropped write-through later: L2 keeps the old
/// value, which the other instances read on the announcement. This instance's L1 kept the new
/// one, and so disagreed with them until its TTL; it now gives it up too.
#[test]
fn an_async_write_through_dropped_without_a_replay_queue_leaves_l1_agreeing_with_l2() {
    for batch in [false, true] {
        let l2 = Arc::new(Delegate(WritesStall {
            inner: InProcess::shared(Arc::new(MemoryStore::new(100).unwrap())),
        }));
        l2.set("k", b"old", None).unwrap();
        let l1 = Arc::new(MemoryStore::new(100).unwrap());
        let cache = crate::CacheManager::builder()
            .config(crate::CacheConfig::default())
            .local(l1.clone())
            .distributed(l2)
            .build()
            .unwrap();
        assert!(cache.shared.replay.is_none(), "the rig has no replay queue");
        if batch {
            drop_after_first_poll(cache.multi_set_raw_async(&[("k", &b"new"[..])], None));
        } else {
            drop_after_first_poll(cache.set_raw_async("k", b"new", None));
        }
        assert_eq!(l1.get("k").unwrap(), None, "batch: {batch}");
        assert_eq!(
            cache.get_raw("k").unwrap().as_deref(),
            Some(&b"old"[..]),
            "batch: {batch}"
        );
    }
}

/// A manager with a memory L1 over a [`WritesStall`] L2, on a manual clock, with neither a
/// write-behind nor a replay queue: its L1, a view of its L2 and its clock.
fn stalled_writes_manager() -> (
    crate::CacheManager,
    Arc<MemoryStore>,
    Arc<Delegate<WritesStall>>,
    crate::ManualClock,
) {
    let clock = crate::ManualClock::new(1_700_000_000_000);
    let l2 = Arc::new(Delegate(WritesStall {
        inner: InProcess::shared(Arc::new(MemoryStore::new(100).unwrap())),
    }));
    let l1 = Arc::new(MemoryStore::new(100).unwrap());
    let cache = crate::CacheManager::builder()
        .config(crate::CacheConfig::default())
        .local(l1.clone())
        .distributed(Arc::clone(&l2) as Arc<dyn crate::storage::DistributedStorage>)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (cache, l1, l2, clock)
}

/// Lands in `l2` the op a dropped `what` ("set" of `new`, or a delete) had sent to `k`; what a
/// read then finds.
fn land(l2: &dyn Storage, what: &str) -> Option<Vec<u8>> {
    if what == "set" {
        l2.set("k", b"new", None).unwrap();
        Some(b"new".to_vec())
    } else {
        l2.delete("k").unwrap();
        None
    }
}

/// After a dropped `what` of "k" (whose L2 held "old"): L2 has not taken the op yet, so its
/// answer is the older value, given but not kept in `l1`; once the op lands in `l2`, the next
/// read finds what L2 holds.
fn older_value_given_not_kept_until_the_op_lands(
    cache: &crate::CacheManager,
    l1: &MemoryStore,
    l2: &dyn Storage,
    what: &str,
    batch: bool,
) {
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"old"[..]));
    assert_eq!(l1.get("k").unwrap(), None, "{what} (batch: {batch}): kept in L1");
    let landed = land(l2, what);
    assert_eq!(
        cache.get_raw("k").unwrap(),
        landed,
        "{what} (batch: {batch}): L1 kept L2's value from before the op"
    );
}

/// Without a write-behind or a replay queue, a dropped async write or delete may still reach L2
/// a moment later (its command was sent). A read meanwhile gets L2's older value; backfilled, it
/// stayed in L1 for its TTL after L2 took the op. Now a read in the window is answered but not
/// kept, and once the window (four L2 timeouts) is over, reads backfill again.
#[test]
fn a_write_dropped_with_nowhere_to_go_keeps_l2s_older_value_out_of_l1_while_it_may_land() {
    for (what, batch) in [("delete", false), ("delete", true), ("set", false), ("set", true)] {
        let (cache, l1, l2_view, _) = stalled_writes_manager();
        assert!(cache.shared.replay.is_none() && cache.shared.behind.is_none());
        cache.set_raw("k", b"old", None).unwrap();
        drop_write(&cache, what, batch);
        older_value_given_not_kept_until_the_op_lands(&cache, &l1, &*l2_view, what, batch);
        // After the window, a read backfills again. The window is timed by a monotonic clock
        // (a step of the manager's wall clock must not end it): waited out, not advanced.
        std::thread::sleep(cache.shared.cancel_quiet + Duration::from_millis(1));
        l2_view.set("k", b"later", None).unwrap();
        l1.delete("k").unwrap();
        assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"later"[..]));
        assert_eq!(
            l1.get("k").unwrap().map(|e| e.value).as_deref(),
            Some(&b"later"[..]),
            "{what} (batch: {batch}): no backfill after the window"
        );
    }
}

/// The window in which a dropped write's L2 command may still land is a length of time: a step
/// of the wall clock must not end it. It ended at its instant on the manager's (wall) clock, so
/// a clock stepped forward (an NTP correction, a VM resumed) let a read backfill L2's older value
/// while the command was still on its way, and L1 served that value for its TTL after L2 took
/// the op.
#[test]
fn a_wall_clock_stepped_forward_does_not_end_the_window_of_a_dropped_write() {
    for (what, batch) in [("delete", false), ("set", false), ("set", true)] {
        let (cache, l1, l2_view, clock) = stalled_writes_manager();
        cache.set_raw("k", b"old", None).unwrap();
        drop_write(&cache, what, batch);
        clock.advance(Duration::from_secs(3600));
        assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"old"[..]));
        assert_eq!(
            l1.get("k").unwrap(),
            None,
            "{what} (batch: {batch}): L2's older value kept in L1 after a step of the clock"
        );
        let landed = land(&*l2_view, what);
        assert_eq!(cache.get_raw("k").unwrap(), landed, "{what} (batch: {batch})");
    }
}

/// A dropped async write or delete whose op the replay queue could not take back (full, even for
/// a delete: overflowed) may still reach L2 a moment later, as one with no queue at all. It was
/// not treated as one: a dropped write's value stayed in L1 (served here while L2 and the other
/// instances held the older one), and the keys were not kept quiet, so a read meanwhile
/// backfilled L2's older value, which L1 served for its TTL after L2 took the op.
#[test]
fn a_write_dropped_that_the_replay_queue_could_not_take_keeps_l2s_older_value_out_of_l1() {
    for (what, batch) in [("delete", false), ("delete", true), ("set", false), ("set", true)] {
        let dir = tempfile::tempdir().unwrap();
        let l2 = Arc::new(Delegate(WritesStall {
            inner: InProcess::shared(Arc::new(MemoryStore::new(100).unwrap())),
        }));
        let l2_view = Arc::clone(&l2);
        let l1 = Arc::new(MemoryStore::new(100).unwrap());
        let mut config = crate::CacheConfig::default();
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        config.offline.replay_interval_ms = 3_600_000;
        config.offline.replay_max_entries = 1;
        let cache = crate::CacheManager::builder()
            .config(config)
            .local(l1.clone())
            .distributed(l2)
            .build()
            .unwrap();
        cache.set_raw("k", b"old", None).unwrap();
        // The queue's one place, taken by another key's op that cannot be replayed (L2 stalls
        // async writes, and the replay's are never run here).
        cache.shared.queue_deletes(&["other"]).unwrap();
        drop_write(&cache, what, batch);
        assert!(
            !cache.shared.is_pending("k"),
            "{what} (batch: {batch}): the full queue took the op"
        );
        older_value_given_not_kept_until_the_op_lands(&cache, &l1, &*l2_view, what, batch);
    }
}
