//! A circuit breaker for a distributed level: after `failure_threshold` consecutive failures it
//! opens and calls are skipped at the cost of two atomic loads; after `cool_down` one call is let
//! through as a probe (half-open); the probe's success closes it, its failure opens it again.
//!
//! ```text
//!            N consecutive failures              cool-down passed: one probe
//!  Closed ───────────────────────────► Open ─────────────────────────────► HalfOpen
//!    ▲                                   ▲                                    │
//!    │                                   └──────────── probe failed ──────────┤
//!    └─────────────────────────────── probe succeeded ────────────────────────┘
//! ```
//!
//! A probe that never reports back (its caller gave up) does not wedge the breaker: after another
//! cool-down in half-open, a new probe is let through. A probe that ends in a caller error (which
//! says nothing about the level) hands its slot on at once with
//! [`release_probe`](CircuitBreaker::release_probe).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, MonotonicClock};

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are skipped until the cool-down has passed.
    Open,
    /// One probe call is in flight; other calls are skipped.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// A snapshot of a breaker for stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// How many times the breaker has opened (closed → open and half-open → open).
    pub trips: u64,
    /// Failures since the last success.
    pub consecutive_failures: u32,
}

/// A lock-free circuit breaker; share it with `Arc`.
#[derive(Debug)]
pub struct CircuitBreaker {
    failure_threshold: u32,
    cool_down_ms: u64,
    clock: Arc<dyn Clock>,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// When the state last became open or half-open (Unix ms of `clock`).
    since_ms: AtomicU64,
    trips: AtomicU64,
}

impl CircuitBreaker {
    /// A closed breaker on the system clock that opens after `failure_threshold` consecutive
    /// failures (at least 1) and probes again after `cool_down`.
    #[must_use]
    pub fn new(failure_threshold: u32, cool_down: Duration) -> Self {
        Self::with_clock(failure_threshold, cool_down, Arc::new(MonotonicClock))
    }

    /// Like [`new`](Self::new) on a given clock (a [`ManualClock`](crate::ManualClock) in tests).
    #[must_use]
    pub fn with_clock(failure_threshold: u32, cool_down: Duration, clock: Arc<dyn Clock>) -> Self {
        CircuitBreaker {
            failure_threshold: failure_threshold.max(1),
            cool_down_ms: u64::try_from(cool_down.as_millis()).unwrap_or(u64::MAX),
            clock,
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            trips: AtomicU64::new(0),
        }
    }

    /// Whether a call may go ahead now. In the open state, the first caller after the cool-down
    /// gets `true` and becomes the probe; it must report with [`record_success`] or
    /// [`record_failure`].
    ///
    /// [`record_success`]: Self::record_success
    /// [`record_failure`]: Self::record_failure
    pub fn allow(&self) -> bool {
        self.admit().is_some()
    }

    /// [`allow`](Self::allow), telling the call whether it is the probe: `Some(true)` for the
    /// one call the half-open state lets through, `Some(false)` for a call of a closed breaker,
    /// `None` if the call is skipped. Known at admission, not asked of the state after it, when
    /// another call may already have moved it.
    pub(crate) fn admit(&self) -> Option<bool> {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Some(false),
            from @ (OPEN | HALF_OPEN) => {
                let now = self.clock.now_ms();
                let since = self.since_ms.load(Ordering::Acquire);
                if now < since {
                    // The clock stepped back (a wall clock given to `with_clock`): cool down from
                    // now, not until the clock is back where it was.
                    let _ = self
                        .since_ms
                        .compare_exchange(since, now, Ordering::AcqRel, Ordering::Acquire);
                    return None;
                }
                if now - since < self.cool_down_ms {
                    return None;
                }
                // Cool-down over (or a probe was lost): exactly one caller wins the probe.
                if self
                    .state
                    .compare_exchange(from, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    return None;
                }
                // From half-open (a lost probe) the state CAS above succeeds for every racer;
                // re-stamping `since` picks exactly one of them.
                self.since_ms
                    .compare_exchange(since, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                    .then_some(true)
            }
            _ => Some(false),
        }
    }

    /// Reports a successful call: the breaker closes and the failure count resets.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        // Only the probe closes the breaker; a slow call that started before it opened and
        // succeeds late leaves an open breaker open until its probe.
        let _ = self
            .state
            .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Reports a failed call (a timeout or a connection or server failure; not a caller error such
    /// as an invalid key).
    pub fn record_failure(&self) {
        self.record_failure_of(true);
    }

    /// [`record_failure`](Self::record_failure) of a call that was the probe or not (as
    /// [`admit`](Self::admit) said). A call admitted before the breaker opened that fails late,
    /// while the probe is out, is counted but does not open the breaker again: it would start a
    /// new cool-down under the probe, whose success then found the breaker open and was lost.
    pub(crate) fn record_failure_of(&self, probe: bool) {
        let failures = self
            .consecutive_failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        let state = self.state.load(Ordering::Acquire);
        let should_open = match state {
            HALF_OPEN => probe,
            CLOSED => failures >= self.failure_threshold,
            _ => false,
        };
        if should_open {
            // Stamp first so a concurrent `allow` never sees OPEN with an old timestamp.
            self.since_ms.store(self.clock.now_ms(), Ordering::Release);
            if self
                .state
                .compare_exchange(state, OPEN, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.trips.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// Opens the breaker now, whatever its state (a node found down before any call): calls
    /// are skipped until a probe after the cool-down.
    pub fn trip(&self) {
        self.consecutive_failures
            .fetch_max(self.failure_threshold, Ordering::AcqRel);
        self.since_ms.store(self.clock.now_ms(), Ordering::Release);
        if self.state.swap(OPEN, Ordering::AcqRel) != OPEN {
            self.trips.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Reports that the probe let through by [`allow`](Self::allow) ended without telling
    /// anything about the level (a caller error such as an invalid key or an oversized value):
    /// the breaker stays half-open but the probe slot is freed, so the next call probes at once
    /// instead of waiting for another cool-down. Does nothing unless the breaker is half-open.
    pub fn release_probe(&self) {
        let since = self.since_ms.load(Ordering::Acquire);
        if self.state.load(Ordering::Acquire) != HALF_OPEN {
            return;
        }
        // Backdating `since` past the cool-down lets the next `allow` win the probe. A CAS, so
        // that a failure stamping a new opening in between is not undone.
        let _ = self
            .since_ms
            .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The state now.
    #[must_use]
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        }
    }

    /// How many times the breaker has opened.
    #[must_use]
    pub fn trips(&self) -> u64 {
        self.trips.load(Ordering::Acquire)
    }

    /// A snapshot for stats.
    #[must_use]
    pub fn stats(&self) -> BreakerStats {
        BreakerStats {
            state: self.state(),
            trips: self.trips(),
            consecutive_failures: self.consecutive_failures.load(Ordering::Acquire),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn breaker(threshold: u32, cool_down_ms: u64) -> (CircuitBreaker, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        let breaker = CircuitBreaker::with_clock(
            threshold,
            Duration::from_millis(cool_down_ms),
            Arc::new(clock.clone()),
        );
        (breaker, clock)
    }

    #[test]
    fn a_late_failure_of_a_call_admitted_while_closed_does_not_void_the_probes_success() {
        let (b, clock) = breaker(1, 100);
        let slow = b.admit();
        let failing = b.admit();
        assert_eq!(
            (slow, failing),
            (Some(false), Some(false)),
            "admitted while closed"
        );
        b.record_failure_of(false);
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_millis(100));
        assert_eq!(b.admit(), Some(true), "the probe knows it is the probe");
        assert_eq!(b.admit(), None, "the others are skipped while it is out");
        // The slow call, admitted before the opening, times out now: counted, but it does not
        // start a new cool-down under the probe.
        b.record_failure_of(false);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_success();
        assert_eq!((b.state(), b.trips()), (BreakerState::Closed, 1));
        // The probe's own failure still opens it again.
        b.record_failure_of(false);
        clock.advance(Duration::from_millis(100));
        assert_eq!(b.admit(), Some(true));
        b.record_failure_of(true);
        assert_eq!((b.state(), b.trips()), (BreakerState::Open, 3));
    }

    #[test]
    fn opens_after_threshold_consecutive_failures_only() {
        let (b, _clock) = breaker(3, 1_000);
        b.record_failure();
        b.record_failure();
        b.record_success(); // resets the streak
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trips(), 1);
        assert!(!b.allow());
    }

    #[test]
    fn lets_exactly_one_probe_through_after_cool_down() {
        let (b, clock) = breaker(1, 1_000);
        b.record_failure();
        clock.advance(Duration::from_millis(999));
        assert!(!b.allow(), "still cooling down");
        clock.advance(Duration::from_millis(1));
        assert!(b.allow(), "first caller after the cool-down probes");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(), "a second caller is skipped while the probe is out");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        assert_eq!(b.stats().consecutive_failures, 0);
    }

    #[test]
    fn failed_probe_reopens_for_a_full_cool_down() {
        let (b, clock) = breaker(2, 500);
        b.record_failure();
        b.record_failure();
        clock.advance(Duration::from_millis(500));
        assert!(b.allow());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.trips(), 2);
        clock.advance(Duration::from_millis(499));
        assert!(!b.allow());
        clock.advance(Duration::from_millis(1));
        assert!(b.allow());
    }

    #[test]
    fn lost_probe_does_not_wedge_the_breaker() {
        let (b, clock) = breaker(1, 100);
        b.record_failure();
        clock.advance(Duration::from_millis(100));
        assert!(b.allow()); // the probe's caller never reports back
        clock.advance(Duration::from_millis(99));
        assert!(!b.allow());
        clock.advance(Duration::from_millis(1));
        assert!(b.allow(), "a new probe after another cool-down");
    }

    #[test]
    fn released_probe_lets_the_next_caller_probe_at_once() {
        let (b, clock) = breaker(1, 1_000);
        b.record_failure();
        clock.advance(Duration::from_millis(1_000));
        assert!(b.allow());
        b.release_probe(); // the probe ended in a caller error
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "the next caller probes without another cool-down");
        assert!(!b.allow(), "but only one of them");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn release_probe_leaves_closed_and_open_breakers_alone() {
        let (b, clock) = breaker(1, 1_000);
        b.release_probe();
        assert_eq!(b.state(), BreakerState::Closed);
        b.record_failure();
        b.release_probe();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_millis(999));
        assert!(!b.allow(), "an open breaker still cools down in full");
    }

    #[test]
    fn concurrent_callers_get_one_probe() {
        let (b, clock) = breaker(1, 10);
        b.record_failure();
        clock.advance(Duration::from_millis(10));
        let b = Arc::new(b);
        let winners: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| usize::from(b.allow()))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(winners, 1);
    }

    #[test]
    fn stats_serialize_with_snake_case_state() {
        let (b, _clock) = breaker(1, 10);
        b.record_failure();
        let json = serde_json::to_string(&b.stats()).unwrap();
        assert_eq!(json, r#"{"state":"open","trips":1,"consecutive_failures":1}"#);
    }

    #[test]
    fn a_clock_stepped_back_keeps_the_breaker_open_one_cool_down_at_most() {
        let (b, clock) = breaker(1, 1_000);
        clock.set(10_000_000);
        b.record_failure();
        clock.set(10_000_000 - 3_600_000);
        assert!(!b.allow(), "still cooling down");
        clock.advance(Duration::from_millis(1_000));
        assert!(
            b.allow(),
            "a probe one cool-down after the step, not an hour later"
        );
    }

    #[test]
    fn trip_opens_at_once_for_one_cool_down() {
        let (b, clock) = breaker(5, 100);
        b.trip();
        assert_eq!((b.state(), b.trips()), (BreakerState::Open, 1));
        assert!(!b.allow());
        clock.advance(Duration::from_millis(100));
        assert!(b.allow(), "a probe after the cool-down");
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn the_default_clock_is_monotonic() {
        let clock = MonotonicClock;
        let a = clock.now_ms();
        let b = clock.now_ms();
        assert!(a >= 1 && b >= a);
    }
}
