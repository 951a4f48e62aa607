//! Loads that answer with their freshness: [`CacheManager::get_or_load`] (a loader with the
//! soft and hard timeouts of `[loader]`) and [`CacheManager::get_with_state`], sync and async
//! (the async forms in `load_async.rs`).
//!
//! A loader with a deadline cannot run on its caller's thread: the caller must be able to stop
//! waiting while the load goes on to refresh the entry. So the load runs on a thread of its own
//! (sync) or a task spawned on the caller's tokio runtime (async), holds the key's flight, and
//! stores its value through a weak handle of the manager (a load that outlives every handle
//! stores nothing). Callers, the one that started the load included, wait on the flight with
//! their deadline. The async load is spawned even without timeouts, so a cancelled caller never
//! cancels the load that others wait on.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::apart::{Apart, Pass};
use super::failsafe::{Fetched, RefreshSlot};
use super::guard::{Ticket, Watch};
use super::loader::{Flight, Leader, Role, Waited};
use super::policy::Shared;
use super::typed::Lookup;
use super::CacheManager;
use crate::codec::ABSENT;
use crate::error::{key_for_error, Error, Result};

/// A handle that does not keep the manager alive, for loads that outlive their caller.
pub(super) struct WeakManager {
    shared: Weak<Shared>,
    /// The gate a load passes before it takes the manager (see `Pass::enter_weak`).
    apart: Arc<Apart>,
}

impl WeakManager {
    /// The manager to store a load's value with, counted as work apart from its caller (see
    /// `apart`), or `None` once the last handle was dropped or is being dropped.
    fn upgrade(&self) -> Option<Pass> {
        Pass::enter_weak(&self.apart, &self.shared)
    }

    #[cfg(test)]
    pub(super) fn upgrade_for_test(&self) -> bool {
        self.upgrade().is_some()
    }
}

/// A load's watch of its key, held by the task that runs the load apart from its caller (see
/// `spawn_load_async`) and by the store of every load apart (`finish_load`), and ended when
/// they end, however they end. The store and the failure paths end it; but a task dropped at
/// an `.await` (its runtime shut down while the loader or the store was under way) runs
/// neither, nor does a store that panics, and the watch stayed for the manager's life: every
/// write from then on took the watches' lock, and their map kept its entry. Ending a watch
/// again does nothing, and a store still running then finds it ended and stores nothing, as
/// after a write of its key.
struct WatchEnds {
    manager: WeakManager,
    watch: Watch,
}

impl Drop for WatchEnds {
    fn drop(&mut self) {
        if let Some(m) = self.manager.upgrade() {
            m.shared().guard.unwatch(self.watch);
        }
    }
}

/// What a loader answers: a value (`None`: absent) or its error.
type Outcome<T, E> = std::result::Result<Option<T>, E>;

/// What a load running apart from its caller reports back, besides its flight.
enum Report<T, E> {
    /// The loader's outcome, when the flight does not carry it: the loader failed, or the
    /// manager was gone before its value could be stored.
    Loaded(Outcome<T, E>),
    /// The loaded value was not stored: it does not encode, or its bytes do not read back. Its
    /// error is the caller's answer, as on the caller's thread (`load_inline`); answered with
    /// the value, the caller took for cached what every later call loads again.
    NotStored(Error),
    /// The loader panicked: a failed load, counted and throttled by the load itself
    /// (`load_panicked`), as an error is by `finish_load`, since its caller may have left.
    Panicked,
}

/// What a leader found in the cache before loading.
enum Found<T> {
    Answer(Option<Fetched<T>>),
    /// Nothing this call takes: load, leading still.
    Load(Leader),
}

/// What a loading call does once it has read the cache.
enum Step<T> {
    Answer(Option<Fetched<T>>),
    /// Join the key's flight; `stale` is the copy to fall back on when a deadline passes (read
    /// only where a deadline depends on it).
    Load {
        stale: Option<ReadBefore<T>>,
    },
}

/// The stale copy a loading call read before it waited, with the key's ticket taken just before
/// the read: once the wait is over it is served only if no write, delete or invalidation of the
/// key (or of another key of its stripe) came in between; otherwise the store is asked again. A
/// delete while the loader ran left a copy that no caller may get.
pub(super) struct ReadBefore<T> {
    value: T,
    ticket: Ticket,
}

/// Where a wait for a flight left the caller.
enum Next<T, E> {
    Answer(std::result::Result<Option<Fetched<T>>, E>),
    /// The flight was given up or its leader failed without a word: look again.
    Retry,
    /// The soft timeout passed, but the stale copy this caller would serve is gone (its key was
    /// deleted or written meanwhile): it waits on for the same flight, as a caller that had no
    /// copy does, until the hard timeout.
    WaitOn,
}

impl CacheManager {
    #[cfg(test)]
    pub(super) fn downgrade_for_test(&self) -> WeakManager {
        self.downgrade()
    }

    fn downgrade(&self) -> WeakManager {
        WeakManager {
            shared: Arc::downgrade(&self.shared),
            apart: Arc::clone(&self.shared.apart),
        }
    }

    /// Reads a value and says whether it is fresh: a fresh value from any level, or else the
    /// stale copy fail-safe kept (`loader.fail_safe_max_duration`), or `None`. Use it where an
    /// old value beats none — a dashboard with the source down, a restarted process offline.
    ///
    /// # Errors
    /// As [`CacheManager::get`].
    pub fn get_with_state<T>(&self, key: &str) -> Result<Option<Fetched<T>>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.shared.check_read_key(key)?;
        match self.get(key) {
            Ok(Some(value)) => Ok(Some(Fetched::Fresh(value))),
            Ok(None) => Ok(self.shared.serve_stale(key).map(Fetched::Stale)),
            Err(e) => self.shared.stale_or(key, e).map(|v| Some(Fetched::Stale(v))),
        }
    }

    /// [`CacheManager::get_or_set_with`] with fail-safe and the loader timeouts of `[loader]`,
    /// answering with the value's freshness. One loader per key runs at a time across threads
    /// and tasks.
    ///
    /// - The loader fails: the stale copy is served if fail-safe kept one (and counts as fresh
    ///   for `fail_safe_throttle`), else the caller gets the loader's error.
    /// - With a stale copy, a caller waits at most `soft_timeout_ms` for the load, then gets
    ///   the copy; the load goes on and refreshes the entry.
    /// - No caller waits longer than `hard_timeout_ms`: it gets the stale copy or
    ///   [`Error::LoaderTimeout`], and the key's load slot is given up (the next caller starts a
    ///   new load; the late one stores its value when it finishes only if no write, delete,
    ///   invalidation or newer load of the key stored since it began).
    ///
    /// Timeouts count from the start of the key's load. With a timeout configured the loader
    /// runs on a thread of its own (hence `Send + 'static`); without one, on the caller's. A
    /// loader should not hold a clone of the manager: if every other handle is dropped while it
    /// runs (its callers gave up), its clone is the last, the manager shuts down on the load's
    /// thread when the loader is dropped, and the loaded value is not stored. A loading call the
    /// loader makes for its own key (or one it loads inside) is refused, as
    /// [`CacheManager::get_or_set_with`] says.
    ///
    /// # Errors
    /// The loader's error when no stale copy is kept; [`Error::LoaderTimeout`]; a cache error
    /// of [`CacheManager::get`] converted with `From`; the codec's error for a loaded value that
    /// does not encode or read back (not stored), wherever the loader ran; where the loader ran
    /// on the caller's thread (no timeouts), also an error of storing the loaded value, as
    /// [`CacheManager::set`] fails (elsewhere it is logged, a line a second at most while such
    /// failures repeat; the callers waiting on the load get the value either way).
    pub fn get_or_load<T, E, F>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> std::result::Result<Fetched<T>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> std::result::Result<T, E> + Send + 'static,
    {
        self.load_blocking(key, ttl, move || loader().map(Some), false)
            .and_then(|fetched| fetched.ok_or_else(|| E::from(super::caught::no_value(key))))
    }

    /// [`CacheManager::get_or_load`] for a source that may answer "absent" (`Ok(None)`): that
    /// answer is cached for `loader.absent_ttl` (capped by `ttl`) in every level, so repeated
    /// reads of a missing key do not reach the source. A cached "absent" is removed by deletes
    /// and invalidations as a value is; a plain [`CacheManager::get`] reads it as a miss. With
    /// `absent_ttl = 0` and fail-safe on, the answer deletes the key instead (as
    /// [`CacheManager::delete`], unless the key was written, deleted or invalidated while the
    /// loader ran): the stale copy of a key the source says is gone is not served afterwards.
    /// A refresh-ahead reload's answer does so with fail-safe off too: the key holds the fresh
    /// value it was to replace.
    ///
    /// # Errors
    /// As [`CacheManager::get_or_load`]; where the loader ran on the caller's thread (no
    /// timeouts), also an error of storing its "absent" or, not cached, of deleting the key, as
    /// [`CacheManager::set`] and [`CacheManager::delete`] fail (elsewhere it is logged).
    pub fn get_or_load_optional<T, E, F>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> std::result::Result<Option<Fetched<T>>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> std::result::Result<Option<T>, E> + Send + 'static,
    {
        self.load_blocking(key, ttl, loader, true)
    }

    /// The blocking loading calls. `optional`: a cached "absent" is an answer (`Ok(None)`), not
    /// a miss.
    fn load_blocking<T, E, F>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
        optional: bool,
    ) -> std::result::Result<Option<Fetched<T>>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> std::result::Result<Option<T>, E> + Send + 'static,
    {
        self.shared.check_load(key, ttl)?;
        let s = &self.shared;
        let mut loader = Some(loader);
        let mut looked = false;
        loop {
            let found = if looked {
                self.relook::<T>(key)
            } else {
                self.lookup_typed::<T, T>(key, None, |v| v)
            };
            looked = true;
            let refresh = |slot| {
                if let Some(load) = loader.take() {
                    self.refresh_ahead(key, slot, |leader, slot, watch| {
                        self.spawn_load(key, (ttl, true), (leader, watch), move || {
                            let _slot = slot;
                            load()
                        })
                    });
                }
            };
            let stale = match self.after_read(key, found, optional, refresh)? {
                Step::Answer(answer) => return Ok(answer),
                Step::Load { stale } => stale,
            };
            let Some(role) = self.join_flight(key)? else {
                continue;
            };
            let (flight, mut report) = match role {
                Role::Waiter(flight) => (flight, None),
                Role::Leader(mut leader) => {
                    // Before the second read: a write of the key from now on wins over the load.
                    let watching = s.guard.watching(key, leader.overtaken());
                    let watch = watching.get();
                    // A flight that just ended may have filled the cache.
                    match self.leader_found(key, (leader, watch), self.leader_reread(key), optional)? {
                        Found::Answer(answer) => return Ok(answer),
                        Found::Load(kept) => leader = kept,
                    }
                    let Some(load) = loader.take() else {
                        s.guard.unwatch(watch);
                        // A caller leads at most once: its lead always ends in an answer.
                        return Err(E::from(super::caught::spent_loader(key)));
                    };
                    if !s.fail_safe.has_timeouts() {
                        s.metrics.loads.incr();
                        return self.load_inline(key, ttl, (leader, watch), load);
                    }
                    if s.flights.too_many_hung() {
                        return self.shed_load(key, leader, stale);
                    }
                    let flight = Arc::clone(leader.flight());
                    let report = self.spawn_load(key, (ttl, false), (leader, watching.hand_on()), load)?;
                    // Once its thread started: a load that could not start did not run.
                    s.metrics.loads.incr();
                    (flight, Some(report))
                }
            };
            let mut waited = flight.wait_blocking_until(s.fail_safe.deadline(&flight, stale.is_some()));
            let mut stale = stale;
            loop {
                match self.after_wait(key, &flight, waited, stale.take(), report.as_mut(), optional) {
                    Next::Answer(answer) => return answer,
                    Next::Retry => break,
                    Next::WaitOn => waited = flight.wait_blocking_until(s.fail_safe.deadline(&flight, false)),
                }
            }
        }
    }

    /// The step both loading calls take between their cache read and a flight: a read error
    /// answers with the stale copy (or fails), a hit due for refresh-ahead starts one
    /// (`refresh`), a cached answer or a throttled stale copy answers; otherwise the call loads.
    fn after_read<T, E>(
        &self,
        key: &str,
        found: Result<Lookup<T>>,
        optional: bool,
        refresh: impl FnOnce(RefreshSlot),
    ) -> std::result::Result<Step<T>, E>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error>,
    {
        let s = &self.shared;
        let found = match found {
            Ok(found) => found,
            Err(e) if super::typed::reloads_unreadable(&self.shared, key, &e) => {
                return Ok(Step::Load { stale: None })
            }
            // L2 (or L1) failed the read: no fresh value can be had.
            Err(e) => {
                return s
                    .stale_or(key, e)
                    .map(|v| Step::Answer(Some(Fetched::Stale(v))))
                    .map_err(E::from)
            }
        };
        if matches!(found, Lookup::Hit(_)) {
            if let Some(slot) = s.take_refresh_due(key) {
                refresh(slot);
            }
        }
        if let Some(answer) = self.cached_answer(found, optional) {
            return Ok(Step::Answer(answer));
        }
        if let Some(value) = s.throttled_stale(key) {
            return Ok(Step::Answer(Some(Fetched::Stale(value))));
        }
        // Read before waiting only where a deadline depends on it; a failed load reads it when
        // it needs it (misses pay no extra read without timeouts).
        let stale = if s.fail_safe.has_timeouts() {
            let ticket = s.guard.ticket(key);
            s.stale_value(key).map(|value| ReadBefore { value, ticket })
        } else {
            None
        };
        Ok(Step::Load { stale })
    }

    /// Joins the key's flight, as its leader or a waiter (counted). `None`: the flight there was
    /// past its hard timeout and was given up; read the cache again.
    ///
    /// # Errors
    /// The flight is one the caller's own loader leads (`reentry`): it would wait for itself.
    pub(super) fn join_flight(&self, key: &str) -> Result<Option<Role>> {
        let s = &self.shared;
        Ok(match s.flights.join(key) {
            Role::Waiter(flight) if super::reentry::inside(&flight) => {
                return Err(super::caught::reentered(key))
            }
            Role::Waiter(flight) if s.fail_safe.overdue(&flight) => {
                s.flights.give_up(key, &flight);
                None
            }
            Role::Waiter(flight) => {
                s.metrics.load_waits.incr();
                Some(Role::Waiter(flight))
            }
            leader => Some(leader),
        })
    }

    /// Starts a background reload of a hit that is due for one (refresh-ahead), in `slot` (see
    /// [`take_refresh_due`](super::policy::Shared::take_refresh_due)), if no load of the key
    /// runs: `spawn` runs the loader apart, as a timed load does. The caller answers with the
    /// current value meanwhile; a failed reload keeps it.
    fn refresh_ahead<R>(
        &self,
        key: &str,
        slot: RefreshSlot,
        spawn: impl FnOnce(Leader, RefreshSlot, Watch) -> Result<R>,
    ) {
        let s = &self.shared;
        let Role::Leader(leader) = s.flights.join(key) else {
            return;
        };
        let watch = s.guard.watch(key, leader.overtaken());
        match spawn(leader, slot, watch) {
            Ok(_) => {
                // A loader call like any other (`overall.loads`), counted once it started.
                s.metrics.loads.incr();
                s.metrics.loader.refreshes.incr();
            }
            Err(e) => {
                tracing::warn!(key = %key_for_error(key), error = %e, "cannot start a background reload");
                // As when every slot is busy: a later hit retries.
                s.note_due_now(key);
            }
        }
    }

    /// What a read of the cache answers a loading call, if it answers it.
    fn cached_answer<T>(&self, found: Lookup<T>, optional: bool) -> Option<Option<Fetched<T>>> {
        match found {
            Lookup::Hit(value) => Some(Some(Fetched::Fresh(value))),
            Lookup::Absent if optional => {
                self.shared.metrics.loader.absent_hits.incr();
                Some(None)
            }
            Lookup::Absent | Lookup::Miss => None,
        }
    }

    /// A leader found the key filled by a flight that just ended: it ends its own flight with
    /// those bytes and answers, unless they are a cached "absent" its call does not take (then
    /// it loads, and its value replaces the "absent").
    ///
    /// `read` is the leader's second read of the key, taken after `watch`: the watch ends here
    /// unless the leader goes on to load.
    fn leader_found<T: DeserializeOwned>(
        &self,
        key: &str,
        (leader, watch): (Leader, Watch),
        read: Result<Option<Vec<u8>>>,
        optional: bool,
    ) -> Result<Found<T>> {
        let found = read.and_then(|read| match read {
            Some(bytes) => self.found_bytes(key, leader, bytes, optional),
            None => Ok(Found::Load(leader)),
        });
        if !matches!(found, Ok(Found::Load(_))) {
            self.shared.guard.unwatch(watch);
        }
        found
    }

    fn found_bytes<T: DeserializeOwned>(
        &self,
        key: &str,
        leader: Leader,
        bytes: Vec<u8>,
        optional: bool,
    ) -> Result<Found<T>> {
        if bytes == ABSENT {
            if !optional {
                return Ok(Found::Load(leader));
            }
            leader.finish(Arc::from(bytes));
            return Ok(Found::Answer(None));
        }
        let value = match self.shared.codec.decode(key, &bytes) {
            Ok(value) => value,
            Err(e) if super::typed::reloads_unreadable(&self.shared, key, &e) => {
                return Ok(Found::Load(leader))
            }
            Err(e) => return Err(e),
        };
        leader.finish(Arc::from(bytes));
        Ok(Found::Answer(Some(Fetched::Fresh(value))))
    }

    /// The leader's load on its own thread, without timeouts: as `get_or_set_with`, with
    /// fail-safe.
    fn load_inline<T, E, F>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        (leader, watch): (Leader, Watch),
        load: F,
    ) -> std::result::Result<Option<Fetched<T>>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error>,
        F: FnOnce() -> std::result::Result<Option<T>, E>,
    {
        let s = &self.shared;
        let running = || super::reentry::Loading::of(leader.flight()).run(load);
        let Some(loaded) = super::caught::catching(key, running) else {
            s.guard.unwatch(watch);
            // Counted and throttled as for a loader's error; set before the flight ends.
            let stale = s.stale_after_failure(key);
            drop(leader);
            return stale
                .map(|v| Some(Fetched::Stale(v)))
                .ok_or_else(|| E::from(super::caught::no_answer(key)));
        };
        match loaded {
            Ok(value) => {
                let (bytes, stored) = self.store_loaded(key, (ttl, false), value.as_ref(), watch)?;
                leader.finish(Arc::from(bytes));
                stored?;
                Ok(value.map(Fetched::Fresh))
            }
            Err(e) => {
                s.guard.unwatch(watch);
                // The throttle is set before the flight ends: its waiters find it.
                let stale = s.stale_after_failure(key);
                drop(leader);
                stale.map(|v| Some(Fetched::Stale(v))).ok_or(e)
            }
        }
    }

    /// The bytes of a loaded value; the watch ends if it does not encode, or if its bytes do not
    /// decode back.
    ///
    /// A value that does not read back (bincode and a field that needs a self-describing format:
    /// [`Error::TypeNotDecodable`]) would fail every later read of the key, and a loading call
    /// loads a key it cannot read anew (see `typed::reloads_unreadable`): stored, it would have
    /// the loader run on every call with the error only logged. Not stored, its error reaches
    /// the caller as an encoding error does. One decode per load, which a loader's round trip
    /// to its source dwarfs.
    pub(super) fn encode_loaded<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        watch: Watch,
        value: &T,
    ) -> Result<Vec<u8>> {
        let codec = self.shared.codec;
        let encoded = codec
            .encode(key, value)
            .and_then(|bytes| codec.decode::<T>(key, &bytes).map(|_| bytes));
        if encoded.is_err() {
            self.shared.guard.unwatch(watch);
        }
        encoded
    }

    /// Stores what a loader answered: the value with `ttl`, or "absent" with
    /// `loader.absent_ttl`. An "absent" that is not cached (`absent_ttl = 0`) deletes the key
    /// instead, with fail-safe on: the source said it is gone, so the stale copy fail-safe kept
    /// must not be served by a later failed load. So does the "absent" of a refresh-ahead
    /// reload (`reload`), fail-safe on or off: its key holds a fresh value, which the answer
    /// replaces. Returns the bytes the flight hands to its waiters, and whether the write
    /// succeeded (the waiters get the bytes either way).
    ///
    /// Neither stored nor deleted if a write, delete or invalidation of the key started since
    /// `watch` (taken before the loader read its source): the load's answer may be older than
    /// what that wrote or dropped, and would replace it for a whole TTL.
    fn store_loaded<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        (ttl, reload): (Option<Duration>, bool),
        value: Option<&T>,
        watch: Watch,
    ) -> Result<(Vec<u8>, Result<()>)> {
        let s = &self.shared;
        Ok(match value {
            Some(value) => {
                let bytes = self.encode_loaded(key, watch, value)?;
                let stored = self.set_loaded(key, &bytes, ttl, watch, (true, reload)).map(drop);
                (bytes, stored)
            }
            None => {
                let stored = match s.fail_safe.absent_ttl(ttl) {
                    Some(absent_ttl) => {
                        let stored = self.set_loaded(key, ABSENT, Some(absent_ttl), watch, (false, reload));
                        // Counted once stored: a write that overtook the load kept its value.
                        if matches!(stored, Ok(true)) {
                            s.metrics.loader.absent_stored.incr();
                        }
                        stored.map(drop)
                    }
                    // Only fail-safe serves an entry past its TTL: without it, a load that ran on
                    // a miss has no stale copy to remove, and the delete would cost every
                    // "absent" an L2 round trip and an invalidation message. A reload ran on a
                    // hit: left, the value the source no longer has was served as fresh until
                    // its TTL.
                    None if reload || s.fail_safe.enabled() => self.delete_loaded(key, watch).map(drop),
                    None => {
                        s.guard.unwatch(watch);
                        Ok(())
                    }
                };
                (ABSENT.to_vec(), stored)
            }
        })
    }

    /// Starts the leader's load on a thread of its own; its outcome comes back on the channel
    /// (sent before the flight ends, so a caller that sees the flight end finds it). `ttl`: the
    /// call's, and whether the load is a refresh-ahead reload (see `store_loaded`).
    fn spawn_load<T, E, F>(
        &self,
        key: &str,
        ttl: (Option<Duration>, bool),
        (leader, watch): (Leader, Watch),
        load: F,
    ) -> Result<mpsc::Receiver<Report<T, E>>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + 'static,
        F: FnOnce() -> std::result::Result<Option<T>, E> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let manager = self.downgrade();
        let owned_key = key.to_owned();
        // Taken here, on the caller's thread: the load thread inherits nothing.
        let loading = super::reentry::Loading::of(leader.flight());
        let load = move || loading.run(load);
        start_load_thread(
            move || match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) {
                Ok(outcome) => finish_load(&manager, &owned_key, ttl, (leader, watch), outcome, tx),
                Err(_) => load_panicked(&manager, &owned_key, (leader, watch), tx),
            },
        )
        .map_err(|e| self.no_load_thread(key, watch, &e))?;
        Ok(rx)
    }

    /// A load that could not start (no thread for it): its watch ends, and the caller's error.
    fn no_load_thread(&self, key: &str, watch: Watch, e: &std::io::Error) -> Error {
        self.shared.guard.unwatch(watch);
        Error::Backend {
            level: "manager",
            op: "load",
            reason: format!(
                "cannot start a thread for the loader of {:?}: {e}",
                key_for_error(key)
            ),
        }
    }

    /// What a caller does once its wait for `flight` ended.
    fn after_wait<T, E>(
        &self,
        key: &str,
        flight: &Arc<Flight>,
        waited: Waited,
        stale: Option<ReadBefore<T>>,
        report: Option<&mut mpsc::Receiver<Report<T, E>>>,
        optional: bool,
    ) -> Next<T, E>
    where
        T: DeserializeOwned,
        E: From<Error>,
    {
        let s = &self.shared;
        // The copy read before the wait, if nothing changed the key since; else the store's now.
        let current = |stale: Option<ReadBefore<T>>| match stale {
            Some(read) if s.guard.unchanged(&read.ticket) => Some(read.value),
            Some(_) => s.stale_value(key),
            None => None,
        };
        // Without a copy read before, the store is asked (once) now.
        let own_failure = |stale: Option<ReadBefore<T>>| {
            (if stale.is_some() {
                current(stale)
            } else {
                s.stale_value(key)
            })
            .map(|v| {
                s.metrics.loader.stale_served.incr();
                Some(Fetched::Stale(v))
            })
        };
        match waited {
            Waited::Done(bytes) if *bytes == *ABSENT => {
                if optional {
                    Next::Answer(Ok(None))
                } else {
                    // Another call's "absent" is no answer here: look again, and load.
                    Next::Retry
                }
            }
            Waited::Done(bytes) => Next::Answer(
                s.codec
                    .decode(key, &bytes)
                    .map(|v| Some(Fetched::Fresh(v)))
                    .map_err(E::from),
            ),
            Waited::Abandoned => match report.map(|rx| rx.try_recv()) {
                // This caller's own load failed (counted and throttled by the load): its
                // error, or the stale copy.
                Some(Ok(Report::Loaded(Err(e)))) => Next::Answer(own_failure(stale).ok_or(e)),
                Some(Ok(Report::Panicked)) => {
                    Next::Answer(own_failure(stale).ok_or_else(|| E::from(super::caught::no_answer(key))))
                }
                // Loaded while the manager was being dropped: nothing stored it.
                Some(Ok(Report::Loaded(Ok(value)))) => Next::Answer(Ok(value.map(Fetched::Fresh))),
                Some(Ok(Report::NotStored(e))) => Next::Answer(Err(E::from(e))),
                // The load stopped without an answer (its runtime shut down, or its store
                // panicked): a failure like any other, so fail-safe's stale copy if there is one.
                Some(Err(mpsc::TryRecvError::Disconnected)) => {
                    // Counted, the throttle started and the copy served as for a loader error.
                    let served = s.stale_after_failure(key);
                    // The store may have dropped its copy during the wait: the one read before is served.
                    let served =
                        served.or_else(|| current(stale).inspect(|_| s.metrics.loader.stale_served.incr()));
                    match served {
                        Some(value) => Next::Answer(Ok(Some(Fetched::Stale(value)))),
                        None => Next::Answer(Err(E::from(super::caught::no_answer(key)))),
                    }
                }
                // This caller's load, given up at the hard timeout by another caller: this
                // caller is past it too.
                Some(Err(mpsc::TryRecvError::Empty)) => self.timed_out(key, flight, current(stale), true),
                // Given up at the hard timeout (by a caller that got there first), or another
                // caller's load failed, with this caller past the hard deadline too: a new load
                // would hold it a whole hard timeout more.
                None if s.fail_safe.overdue(flight) => self.timed_out(key, flight, current(stale), true),
                // Another caller's load failed: look again (the failed leader left its
                // throttle, if any).
                None => Next::Retry,
            },
            // A copy gone since the wait began (the key was deleted or written meanwhile) is not
            // served: before the hard timeout the caller waits on, past it gets the timeout.
            Waited::TimedOut => {
                let overdue = s.fail_safe.overdue(flight);
                let had_copy = stale.is_some();
                match current(stale) {
                    None if had_copy && !overdue => Next::WaitOn,
                    copy => self.timed_out(key, flight, copy, overdue),
                }
            }
        }
    }

    /// A leader that would start a load while too many loads given up at the hard timeout still
    /// run ([`Flights::too_many_hung`](super::loader::Flights::too_many_hung)): no load, and the
    /// answer of a hard timeout, the stale copy or [`Error::LoaderTimeout`]. Its flight ends
    /// first, abandoned: the callers waiting on it look again, and are answered the same.
    pub(super) fn shed_load<T: DeserializeOwned, E: From<Error>>(
        &self,
        key: &str,
        leader: Leader,
        stale: Option<ReadBefore<T>>,
    ) -> std::result::Result<Option<Fetched<T>>, E> {
        let s = &self.shared;
        drop(leader);
        let copy = match stale {
            Some(read) if s.guard.unchanged(&read.ticket) => Some(read.value),
            Some(_) => s.stale_value(key),
            None => None,
        };
        s.metrics.loader.hard_timeouts.incr();
        match copy {
            Some(value) => {
                s.metrics.loader.stale_served.incr();
                Ok(Some(Fetched::Stale(value)))
            }
            None => Err(E::from(Error::LoaderTimeout {
                key: key_for_error(key),
                after: s.fail_safe.hard().unwrap_or_default(),
            })),
        }
    }

    /// A caller stops waiting: at the hard timeout the flight is given up.
    fn timed_out<T, E: From<Error>>(
        &self,
        key: &str,
        flight: &Arc<Flight>,
        stale: Option<T>,
        hard: bool,
    ) -> Next<T, E> {
        let s = &self.shared;
        if hard {
            s.metrics.loader.hard_timeouts.incr();
            s.flights.give_up(key, flight);
        } else {
            s.metrics.loader.soft_timeouts.incr();
        }
        match stale {
            Some(value) => {
                s.metrics.loader.stale_served.incr();
                Next::Answer(Ok(Some(Fetched::Stale(value))))
            }
            None => Next::Answer(Err(E::from(Error::LoaderTimeout {
                key: key_for_error(key),
                after: s.fail_safe.hard().unwrap_or_default(),
            }))),
        }
    }
}

/// Starts a load's thread (`uno-cache-load`). A test can make it fail on its own thread
/// (`without_load_threads` in the tests), as when the system has no thread to give.
fn start_load_thread(body: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    #[cfg(test)]
    if tests::NO_LOAD_THREADS.with(std::cell::Cell::get) {
        return Err(std::io::Error::other("no load threads in this test"));
    }
    std::thread::Builder::new()
        .name("uno-cache-load".into())
        .spawn(body)
        .map(drop)
}

#[path = "load_end.rs"]
mod end;
use end::{finish_load, load_panicked};

#[path = "load_async.rs"]
mod asynchronous;

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
