//! Tests of the retries of marking L1's entries suspect after a marking failed (a full disk),
//! which leave every L1 hit checked against L2 until one succeeds.

use std::sync::Arc;
use std::time::Duration;

use super::{DeletesFail, HeldL2};
use crate::clock::{Clock, ManualClock};
use crate::local::memory::MemoryStore;
use crate::manager::consistency::{TRUST_RETRY_MAX_MS, TRUST_RETRY_MS};
use crate::storage::delegate::Delegate;

/// A manager on `clock` over an L1 whose deletes and clears fail, and whose marking fails
/// until told otherwise; a failed delete has left every L1 hit checked against L2.
fn distrusted(clock: &ManualClock) -> (crate::CacheManager, Arc<Delegate<DeletesFail>>) {
    let l1 = Arc::new(Delegate(DeletesFail {
        inner: MemoryStore::new(100).unwrap(),
        marks_fail: true.into(),
        sets_fail: false,
        clears_fail: true.into(),
        restored: false,
    }));
    let cache = crate::CacheManager::builder()
        .config(crate::CacheConfig::default())
        .clock(Arc::new(clock.clone()))
        .local(l1.clone())
        .distributed(Arc::new(crate::InProcess::shared(HeldL2::new())))
        .build()
        .unwrap();
    cache.set_raw("a", b"1", None).unwrap();
    assert!(cache.delete("gone").is_err(), "L1's delete fails");
    (cache, l1)
}

fn l2_reads(cache: &crate::CacheManager) -> u64 {
    let d = cache.stats().distributed;
    d.hits + d.misses
}

/// A failed delete whose marking of L1 failed too (a full disk) checks every L1 hit against
/// L2; once marking works again, a read's retry makes L1 trusted again, instead of every hit
/// going to L2 for the rest of the process.
#[test]
fn l1_is_trusted_again_once_marking_its_entries_works_again() {
    use std::sync::atomic::Ordering::Relaxed;
    let clock = ManualClock::new(1_000_000);
    let (cache, l1) = distrusted(&clock);
    let before = l2_reads(&cache);
    for _ in 0..3 {
        assert_eq!(cache.get_raw("a").unwrap().as_deref(), Some(&b"1"[..]));
    }
    assert_eq!(l2_reads(&cache) - before, 3, "distrusted, every hit asks L2");
    // While marking still fails, the tries (each an L1 error) come less and less often.
    let tries = |cache: &crate::CacheManager| cache.stats().local.errors;
    let retry = TRUST_RETRY_MS;
    let mut tried = Vec::new();
    for _ in 0..4 {
        clock.advance(Duration::from_millis(retry));
        let before = tries(&cache);
        cache.get_raw("a").unwrap();
        tried.push(tries(&cache) - before);
    }
    // Due after 1 s (fails: next after 2 s), then at 3 s (fails: next after 4 s), not at 2 or 4.
    assert_eq!(tried, [1, 0, 1, 0], "tries while marking fails");
    // The disk has room again; the next read once a try is due marks L1 suspect.
    l1.marks_fail.store(false, Relaxed);
    clock.advance(Duration::from_millis(4 * retry));
    let before = l2_reads(&cache);
    for _ in 0..3 {
        assert_eq!(cache.get_raw("a").unwrap().as_deref(), Some(&b"1"[..]));
    }
    assert_eq!(
        l2_reads(&cache) - before,
        1,
        "one revalidation of the suspect entry, then trusted L1 hits"
    );
}

/// The wait before the next try is a length of time, at most [`TRUST_RETRY_MAX_MS`]: a wall
/// clock stepped back must not stretch it. The try was due at its instant on the manager's
/// (wall) clock, so a step back of an hour left every L1 hit checked against L2 for an hour
/// after marking worked again.
#[test]
fn a_wall_clock_stepped_back_does_not_put_off_the_next_try_past_the_longest_wait() {
    use std::sync::atomic::Ordering::Relaxed;
    let clock = ManualClock::new(10_000_000);
    let (cache, l1) = distrusted(&clock);
    // A try that fails: the next is due a second or two on.
    let errors = cache.stats().local.errors;
    cache.get_raw("a").unwrap();
    assert_eq!(cache.stats().local.errors, errors + 1, "a try that failed");
    clock.set(clock.now_ms() - 3_600_000);
    l1.marks_fail.store(false, Relaxed);
    clock.advance(Duration::from_millis(TRUST_RETRY_MAX_MS));
    let before = l2_reads(&cache);
    for _ in 0..3 {
        assert_eq!(cache.get_raw("a").unwrap().as_deref(), Some(&b"1"[..]));
    }
    assert_eq!(
        l2_reads(&cache) - before,
        1,
        "one revalidation of the suspect entry, then trusted L1 hits"
    );
}
