//! Wall-clock time, injectable so tests can move it.
//!
//! Expiry is stored as absolute Unix milliseconds, because an `Instant` means nothing after a
//! restart. If the system clock jumps backwards, entries live longer by the size of the jump; if it
//! jumps forwards they expire early. Neither case returns a value that was never written.
//!
//! A length of time is no expiry, and a step must not stretch it: a circuit breaker's cool-down
//! and the window in which a dropped write may still land run on [`MonotonicClock`]; the
//! fail-safe throttle and the wait before retrying a failed marking of L1's entries, on the
//! manager's clock, are over once they would end further ahead than their length. The TTL a
//! queued write (write-behind or the replay queue) sends L2, which counts it from its receipt,
//! is the time left to the write's expiry capped at `distributed.ttl`, so a step back never
//! keeps a value in L2 longer than that cap from the moment it is sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(any(feature = "redb", feature = "redis", feature = "memcached"))]
use std::time::Instant;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of wall-clock time in Unix milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;

    /// Whether the instant `at_ms` (Unix ms) has come: `at_ms <= self.now_ms()`. The expiry
    /// check of every hit asks this; a clock may answer it more cheaply than by reading the
    /// time exactly ([`SystemClock`] does), but must give the same answer.
    fn reached(&self, at_ms: u64) -> bool {
        at_ms <= self.now_ms()
    }
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// An instant more than a second after the kernel's coarse clock (`CLOCK_REALTIME_COARSE`,
    /// on Linux) has not come; only nearer ones are checked against the exact clock, so the
    /// answer is the exact clock's while a hit mostly skips reading the time-stamp counter.
    fn reached(&self, at_ms: u64) -> bool {
        if coarse_ms().is_some_and(|coarse| at_ms > coarse.saturating_add(COARSE_SLACK_MS)) {
            return false;
        }
        at_ms <= self.now_ms()
    }
}

/// How far behind the exact clock the coarse one may be for [`SystemClock::reached`] to trust it.
/// The coarse clock is the exact one as of the kernel's last timer tick (1 to 10 ms ago: its
/// resolution); a lag of a second would mean the kernel's timekeeping had stalled.
pub(crate) const COARSE_SLACK_MS: u64 = 1000;

/// `CLOCK_REALTIME_COARSE` in Unix ms, where the kernel has it with a resolution finer than a
/// tenth of [`COARSE_SLACK_MS`]; `None` elsewhere.
///
/// Why: the exact clock reads the CPU's time-stamp counter, which costs a memory-tier hit about
/// 40 % on a VM (`memory_tier_hit` in `benches/manager.rs`: it stalls the loads of the next
/// lookups, not just its own 40 ns), while the coarse clock is a read of memory the kernel
/// updates at every tick. The coarse clock never runs ahead of the exact one, and a step of the
/// wall clock moves both.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn coarse_ms() -> Option<u64> {
    use rustix::time::{clock_getres, clock_gettime, ClockId, Timespec};
    fn ms(t: Timespec) -> Option<u64> {
        let secs = u64::try_from(t.tv_sec).ok()?;
        let ms = u64::try_from(t.tv_nsec).ok()? / 1_000_000;
        secs.checked_mul(1000)?.checked_add(ms)
    }
    static FINE_ENOUGH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let fine = *FINE_ENOUGH.get_or_init(|| {
        ms(clock_getres(ClockId::RealtimeCoarse)).is_some_and(|res| res <= COARSE_SLACK_MS / 10)
    });
    if !fine {
        return None;
    }
    ms(clock_gettime(ClockId::RealtimeCoarse))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn coarse_ms() -> Option<u64> {
    None
}

/// Milliseconds of a monotonic clock (since the first reading in this process), for durations
/// that must not follow a step of the wall clock: a circuit breaker's cool-down. Not for
/// expiries, which must mean the same after a restart.
#[derive(Debug, Default, Clone, Copy)]
pub struct MonotonicClock;

impl Clock for MonotonicClock {
    fn now_ms(&self) -> u64 {
        static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let origin = ORIGIN.get_or_init(std::time::Instant::now);
        // Starts at 1 so that 0 never means "now".
        u64::try_from(origin.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }
}

/// A clock that only moves when told to; for tests.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(Duration::from_secs(1));
/// assert_eq!(clock.now_ms(), 2_000);
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock standing at `now_ms` Unix milliseconds.
    #[must_use]
    pub fn new(now_ms: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now_ms)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock, forwards or backwards.
    pub fn set(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `d` after `at`, saturating at a century instead of overflowing: a user's interval or timeout
/// of `Duration::MAX` (as good as never) is too long to add to an `Instant`, and the addition
/// panics.
#[cfg(any(feature = "redb", feature = "redis", feature = "memcached"))]
pub(crate) fn instant_after(at: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d.min(FAR)).unwrap_or(at)
}

/// Absolute expiry in Unix ms for a TTL starting now; sub-millisecond TTLs round up to 1 ms.
pub(crate) fn expiry_ms(now_ms: u64, ttl: Duration) -> u64 {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
    now_ms.saturating_add(ms)
}

/// Converts Unix milliseconds to a `SystemTime`.
pub(crate) fn ms_to_system_time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// Converts a `SystemTime` to Unix milliseconds, rounded up so an expiry is never moved earlier
/// (0 for times before the epoch, which never occur as expiries).
pub(crate) fn system_time_to_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_says_an_instant_came_exactly_when_its_time_says_so() {
        let clock = SystemClock;
        let now = clock.now_ms();
        for at in [0, now.saturating_sub(5000), now.saturating_sub(1), now] {
            assert!(clock.reached(at), "{at} is past at {now}");
        }
        for at in [now + 5, now + 999, now + 1001, now + 60_000, u64::MAX] {
            // Well inside the test's own run time: each of these is still ahead.
            assert!(
                !clock.reached(at) || clock.now_ms() >= at,
                "{at} is ahead at {now}"
            );
        }
        assert!(!clock.reached(now + 60_000));
        assert!(!clock.reached(u64::MAX));
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn the_coarse_clock_is_behind_the_exact_one_by_less_than_the_slack() {
        // `None` only on a kernel whose coarse clock ticks slower than a tenth of the slack:
        // `reached` then always reads the exact clock, which the test above covers.
        let Some(coarse) = coarse_ms() else {
            // Said, not skipped in silence: the exact clock's test above is what runs here.
            eprintln!(
                "this kernel's coarse clock ticks too slowly to be used: `reached` reads the exact clock"
            );
            return;
        };
        let exact = SystemClock.now_ms();
        assert!(coarse <= exact, "coarse {coarse} is ahead of exact {exact}");
        assert!(
            exact - coarse < COARSE_SLACK_MS,
            "coarse {coarse} lags exact {exact}"
        );
    }
}
