//! Fail-safe: the stale value served when a fresh one cannot be had, the throttle that keeps a
//! dead source from being asked on every read, and the loader deadlines (`[loader]`).
//!
//! The stale copies themselves live in the local level, which keeps expired entries for
//! `fail_safe_max_duration` ([`LocalStorage::get_stale`](crate::LocalStorage::get_stale)); the file store
//! keeps them on disk, so a restarted process that cannot reach its source still has them. Here
//! is only what the manager decides about them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::de::DeserializeOwned;

use super::loader::Flight;
use super::policy::Shared;
use crate::config::LoaderConfig;
use crate::error::{key_for_error, Error, Result};

/// A value with what the cache knows of its freshness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched<T> {
    /// Within its TTL, or just loaded.
    Fresh(T),
    /// Past its TTL, kept by fail-safe, and served because no fresh value could be had: the
    /// loader failed or timed out, or (for [`get_with_state`](crate::CacheManager::get_with_state))
    /// no level holds a fresh one.
    Stale(T),
}

impl<T> Fetched<T> {
    /// The value, fresh or stale.
    pub fn into_value(self) -> T {
        match self {
            Fetched::Fresh(v) | Fetched::Stale(v) => v,
        }
    }

    /// The value, fresh or stale.
    pub fn value(&self) -> &T {
        match self {
            Fetched::Fresh(v) | Fetched::Stale(v) => v,
        }
    }

    /// Whether the value is a stale copy.
    pub fn is_stale(&self) -> bool {
        matches!(self, Fetched::Stale(_))
    }
}

/// Size of the throttle map past which an insert first prunes the periods that ended.
const THROTTLE_PRUNE_AT: usize = 4096;

/// The throttle periods in progress: key → end of its period (the manager's clock, Unix ms).
#[derive(Debug)]
struct Throttles {
    periods: HashMap<String, u64>,
    /// The size at which the next insert prunes. Raised to twice what a prune leaves: with
    /// more live periods than [`THROTTLE_PRUNE_AT`] (a dead source, many keys), a fixed bound
    /// scanned the whole map on every insert, quadratic over an outage.
    prune_at: usize,
}

impl Throttles {
    /// Starts `key`'s period, ending at `until`; returns whether it pruned first.
    fn start(&mut self, key: &str, until: u64, now: u64, length: u64) -> bool {
        let pruned = self.periods.len() >= self.prune_at;
        if pruned {
            self.periods.retain(|_, &mut end| throttles(end, now, length));
            self.prune_at = THROTTLE_PRUNE_AT.max(self.periods.len().saturating_mul(2));
        }
        self.periods.insert(key.to_owned(), until);
        pruned
    }
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles {
            periods: HashMap::new(),
            prune_at: THROTTLE_PRUNE_AT,
        }
    }
}

/// A place among the running background reloads; given back on drop.
#[derive(Debug)]
pub(crate) struct RefreshSlot(Arc<AtomicUsize>);

impl Drop for RefreshSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The `[loader]` settings and the throttle periods in progress.
#[derive(Debug)]
pub(crate) struct FailSafe {
    enabled: bool,
    /// How long L1 keeps an entry past its TTL to serve it stale (`fail_safe_max_duration`).
    window: Duration,
    throttle: Duration,
    soft: Option<Duration>,
    hard: Option<Duration>,
    absent_ttl: Duration,
    /// Refresh-ahead: the share of the L1 TTL after which a hit reloads (0: off).
    refresh_share: f64,
    refresh_max: usize,
    refreshing: Arc<AtomicUsize>,
    /// The throttle periods in progress.
    throttled: Mutex<Throttles>,
    /// Whether `throttled` may hold anything: the one load a write pays while it is empty
    /// (see [`Shared::end_throttles`]).
    any_throttled: AtomicBool,
}

/// Whether a throttle period ending at `until` (Unix ms) covers `now`. One that ends further
/// ahead than its `length` began after `now`: the wall clock was stepped back since, and the
/// period is over, or the step would stretch it by its size (a live source left unasked, and a
/// stale copy served, for as long as the clock went back).
fn throttles(until: u64, now: u64, length: u64) -> bool {
    now < until && until - now <= length
}

impl FailSafe {
    /// `fail_safe_throttle` in ms.
    fn throttle_ms(&self) -> u64 {
        u64::try_from(self.throttle.as_millis()).unwrap_or(u64::MAX)
    }

    pub(crate) fn new(config: &LoaderConfig) -> FailSafe {
        let ms = |v: u64| (v > 0).then(|| Duration::from_millis(v));
        FailSafe {
            enabled: !config.fail_safe_max_duration.is_zero(),
            window: config.fail_safe_max_duration,
            throttle: config.fail_safe_throttle,
            soft: ms(config.soft_timeout_ms),
            hard: ms(config.hard_timeout_ms),
            absent_ttl: config.absent_ttl,
            refresh_share: config.refresh_ahead,
            refresh_max: config.refresh_ahead_max,
            refreshing: Arc::new(AtomicUsize::new(0)),
            throttled: Mutex::default(),
            any_throttled: AtomicBool::new(false),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// How long past its TTL a copy of an entry may still be served stale (zero when off).
    pub(crate) fn window(&self) -> Duration {
        self.window
    }

    /// Whether `get_or_load` runs its loader off the caller's thread to bound the wait.
    pub(crate) fn has_timeouts(&self) -> bool {
        self.soft.is_some() || self.hard.is_some()
    }

    pub(crate) fn hard(&self) -> Option<Duration> {
        self.hard
    }

    /// The TTL of a cached "absent" for a load asked with `ttl`; `None`: not cached.
    pub(crate) fn absent_ttl(&self, ttl: Option<Duration>) -> Option<Duration> {
        let absent = self.absent_ttl;
        (!absent.is_zero()).then(|| ttl.map_or(absent, |t| t.min(absent)))
    }

    /// When a caller stops waiting for `flight`: at the soft timeout if it has a stale value to
    /// serve, else at the hard one.
    pub(crate) fn deadline(&self, flight: &Flight, has_stale: bool) -> Option<Instant> {
        let limit = if has_stale {
            self.soft.or(self.hard)
        } else {
            self.hard
        };
        limit.map(|d| flight.started() + d)
    }

    /// Every deadline a waiter of `flight` may have, for the flights' timer (`load_timer`).
    pub(crate) fn deadlines(&self, flight: &Flight) -> Vec<Instant> {
        [self.soft, self.hard]
            .into_iter()
            .flatten()
            .map(|d| flight.started() + d)
            .collect()
    }

    /// A place among the background reloads, if one is free; held until the reload ends.
    pub(crate) fn refresh_slot(&self) -> Option<RefreshSlot> {
        let taken = self
            .refreshing
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.refresh_max).then_some(n + 1)
            });
        taken.ok().map(|_| RefreshSlot(Arc::clone(&self.refreshing)))
    }

    /// Whether `flight` ran past the hard timeout (it is then given up, not waited on).
    pub(crate) fn overdue(&self, flight: &Flight) -> bool {
        self.hard.is_some_and(|d| flight.started().elapsed() >= d)
    }
}

impl Shared {
    /// The key's stale copy, decoded; `None` without fail-safe, without a copy, or if the copy
    /// cannot be read or decoded (logged: a fallback must not fail the call).
    pub(crate) fn stale_value<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        if !self.fail_safe.enabled() {
            return None;
        }
        if self.l2.is_none() && self.distrust_l1.is_on() {
            // An invalidation L1 could not apply, with no L2 to check against: the copy may be
            // the very value it named (see `distrust_everything`).
            return None;
        }
        if self.left_behind.covers(key) {
            // L1 keeps such an entry, suspect: a read checks it against L2, but a stale copy is
            // served when nothing fresher can be had, so nothing would check it.
            tracing::debug!(key = %key_for_error(key), "the stale copy may be a value a delete removed or a failed write left; not served");
            return None;
        }
        let entry = match self.l1.get_stale(key) {
            Ok(entry) => entry?,
            Err(e) => {
                tracing::warn!(key = %key_for_error(key), error = %e, "cannot read the stale copy of a key");
                return None;
            }
        };
        // A cached "absent" is no value to fall back on.
        if entry.value == crate::codec::ABSENT {
            return None;
        }
        // The window is the manager's: an L1 handed to the builder may keep expired entries
        // longer (its own `keep_expired`), and its copies are not served past this one.
        let now = crate::clock::ms_to_system_time(self.clock.now_ms());
        if entry.expires_at.is_some_and(|at| {
            at.checked_add(self.fail_safe.window)
                .is_some_and(|end| end <= now)
        }) {
            return None;
        }
        match self.codec.decode(key, &entry.value) {
            Ok(value) => Some(value),
            Err(e) => {
                if let Some(unlogged) = self.metrics.loader.stale_unreadable_lines.pass() {
                    tracing::warn!(key = %key_for_error(key), error = %e, unlogged, "the stale copy of a key does not decode; not served (unlogged: reads since the last line)");
                }
                None
            }
        }
    }

    /// The stale copy, if an earlier failure's throttle period still covers the key.
    pub(crate) fn throttled_stale<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        if !self.fail_safe.enabled() {
            return None;
        }
        let now = self.clock.now_ms();
        let length = self.fail_safe.throttle_ms();
        let covered = self
            .fail_safe
            .throttled
            .lock()
            .periods
            .get(key)
            .is_some_and(|&until| throttles(until, now, length));
        if !covered {
            return None;
        }
        let value = self.stale_value(key)?;
        self.metrics.loader.throttled.incr();
        self.metrics.loader.stale_served.incr();
        Some(value)
    }

    /// A read failed (L2 unreachable with `fallback_on_error = false`, say): the stale copy if
    /// there is one, else the error.
    pub(crate) fn stale_or<T: DeserializeOwned>(&self, key: &str, error: Error) -> Result<T> {
        self.serve_stale(key).ok_or(error)
    }

    /// The stale copy, counted as served (no throttle).
    pub(crate) fn serve_stale<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let value = self.stale_value(key)?;
        self.metrics.loader.stale_served.incr();
        Some(value)
    }

    /// A load failed: the stale copy if there is one, which then counts as fresh for the
    /// throttle period. Called before the failed flight ends, so its waiters find the throttle.
    pub(crate) fn stale_after_failure<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.metrics.loader.failures.incr();
        let value = self.serve_stale(key)?;
        self.start_throttle(key);
        Some(value)
    }

    /// A load that ran apart from its callers failed: counted, and the throttle starts if there
    /// is a stale copy they could be served meanwhile (they decode it themselves), as
    /// [`stale_after_failure`](Self::stale_after_failure) decides for a load on its caller's
    /// thread. Not for any expired entry of the key (a cached "absent", a copy past the window or
    /// one a failed delete may have left, one that does not decode as `T`): the throttle would
    /// make a value written after the failure count as fresh once it expired, its source unasked.
    pub(crate) fn failed_apart<T: DeserializeOwned>(&self, key: &str) {
        if self.stale_value::<T>(key).is_some() {
            self.start_throttle(key);
        }
        // Counted once the throttle holds: a caller that sees the failure finds it.
        self.metrics.loader.failures.incr();
    }

    fn start_throttle(&self, key: &str) {
        let throttle = self.fail_safe.throttle;
        if throttle.is_zero() {
            return;
        }
        let now = self.clock.now_ms();
        let length = self.fail_safe.throttle_ms();
        let until = now.saturating_add(length);
        let mut throttles = self.fail_safe.throttled.lock();
        throttles.start(key, until, now, length);
        // Under the lock: a write that takes it after this period is in the map must see the
        // flag, or it skips the period it should end.
        self.fail_safe.any_throttled.store(true, Ordering::Release);
    }

    /// L1 now holds a value written for each of `keys`, or taken from L2 (a backfill): their
    /// throttle periods end. The period serves the stale copy a failed load fell back on; a
    /// value written since (here, or by another instance into L2) is not that copy,
    /// and once it expires the source is asked again (once, if it is still dead: its failure
    /// starts a new period). Kept, it served the written value stale past its TTL, unasked.
    pub(crate) fn end_throttles<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        let f = &self.fail_safe;
        if !f.any_throttled.load(Ordering::Acquire) {
            return;
        }
        let mut map = f.throttled.lock();
        for key in keys {
            map.periods.remove(key);
        }
        if map.periods.is_empty() {
            f.any_throttled.store(false, Ordering::Release);
        }
    }

    /// A value loaded for `key` with `ttl` is being stored: with refresh-ahead, remember when a
    /// hit should reload it. Called only while the load owns the key for its store (its watch
    /// not overtaken): a value a write overtook is not stored, and a write that follows the
    /// store forgets the due time (see `refresh_due`), so a written value is never reloaded on
    /// a load's schedule.
    pub(crate) fn note_loaded(&self, key: &str, ttl: Option<Duration>) {
        let share = self.fail_safe.refresh_share;
        if share <= 0.0 {
            return;
        }
        let now = self.clock.now_ms();
        let after = Duration::from_secs_f64(self.l1_ttl(ttl).as_secs_f64() * share);
        let due = now.saturating_add(u64::try_from(after.as_millis()).unwrap_or(u64::MAX));
        self.guard.note_refresh(key, due, now);
    }

    /// Makes `key` due for a reload at once (a reload that could not start).
    pub(crate) fn note_due_now(&self, key: &str) {
        if self.fail_safe.refresh_share > 0.0 {
            let now = self.clock.now_ms();
            self.guard.note_refresh(key, now, now);
        }
    }

    /// The place among the background reloads of a hit on `key` that should start one; the
    /// key is then no longer due (the reload makes it due again when it stores its value), so
    /// one hit starts it. `None` also when every place is taken: the key stays due, and a
    /// later hit tries again.
    pub(crate) fn take_refresh_due(&self, key: &str) -> Option<RefreshSlot> {
        if self.fail_safe.refresh_share <= 0.0 {
            return None;
        }
        self.guard
            .take_refresh(key, || self.clock.now_ms(), || self.fail_safe.refresh_slot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_throttle_periods_past_the_prune_size_are_not_scanned_on_every_insert() {
        let mut t = Throttles::default();
        let (now, length) = (1_000, 30_000);
        let inserts = THROTTLE_PRUNE_AT * 8;
        let scans = (0..inserts)
            .filter(|i| t.start(&format!("k{i}"), now + length, now, length))
            .count();
        assert_eq!(t.periods.len(), inserts, "a live period was pruned");
        assert!(scans <= 4, "{scans} scans of the map for {inserts} live periods");
    }

    #[test]
    fn periods_that_ended_are_pruned_once_the_map_reaches_its_prune_size() {
        let mut t = Throttles::default();
        let length = 30_000;
        for i in 0..THROTTLE_PRUNE_AT {
            t.start(&format!("old{i}"), 1_000 + length, 1_000, length);
        }
        let later = 1_000 + length + 1;
        assert!(t.start("new", later + length, later, length));
        assert_eq!(t.periods.len(), 1);
        assert_eq!(t.prune_at, THROTTLE_PRUNE_AT);
    }
}
