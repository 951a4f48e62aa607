//! The async loading calls ([`CacheManager::get_or_load_async`] and its kin): the same steps as
//! the blocking ones in `load.rs`, the load always spawned (on the caller's tokio runtime, or on
//! a thread with a runtime of its own outside one) so that a cancelled caller never cancels the
//! load that others wait on.

use std::future::Future;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::end::{finish_load, load_panicked};
use super::{start_load_thread, Found, Next, Report, Step, WatchEnds};
use crate::error::{Error, Result};
use crate::manager::failsafe::Fetched;
use crate::manager::guard::Watch;
use crate::manager::loader::{Leader, Role};
use crate::manager::{caught, CacheManager};

impl CacheManager {
    /// Async [`CacheManager::get_with_state`].
    ///
    /// # Errors
    /// As [`CacheManager::get_with_state`].
    pub async fn get_with_state_async<T>(&self, key: &str) -> Result<Option<Fetched<T>>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    {
        self.shared.check_read_key(key)?;
        match self.get_async(key).await {
            Ok(Some(value)) => Ok(Some(Fetched::Fresh(value))),
            Ok(None) => Ok(self.shared.serve_stale(key).map(Fetched::Stale)),
            Err(e) => self.shared.stale_or(key, e).map(|v| Some(Fetched::Stale(v))),
        }
    }

    /// Async [`CacheManager::get_or_load`]. The load is a task spawned on the caller's tokio
    /// runtime (on a thread of its own outside one), so dropping this future never cancels a
    /// load that other callers wait on. On a current-thread runtime that task runs only while
    /// the runtime is driven: a caller that gave up (a timeout around this call) and left its
    /// `block_on` leaves the load stalled, and the key's other callers wait for it (at most
    /// `loader.hard_timeout_ms`, if set) until the runtime is driven again or dropped (which
    /// ends the load: the next caller loads afresh). `loader` is called, on the caller's task,
    /// only when this call starts a load; if it panics, that is a failed load as a panicking
    /// future is.
    ///
    /// # Errors
    /// As [`CacheManager::get_or_load`].
    pub async fn get_or_load_async<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> std::result::Result<Fetched<T>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>> + Send + 'static,
    {
        let load = move || {
            let load = loader();
            async move { load.await.map(Some) }
        };
        self.load_async(key, ttl, load, false)
            .await
            .and_then(|fetched| fetched.ok_or_else(|| E::from(caught::no_value(key))))
    }

    /// Async [`CacheManager::get_or_load_optional`].
    ///
    /// # Errors
    /// As [`CacheManager::get_or_load`].
    pub async fn get_or_load_optional_async<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> std::result::Result<Option<Fetched<T>>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    {
        self.load_async(key, ttl, loader, true).await
    }

    /// The async loading calls; as [`load_blocking`](Self::load_blocking), the load spawned.
    async fn load_async<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        load: F,
        optional: bool,
    ) -> std::result::Result<Option<Fetched<T>>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error> + Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    {
        self.shared.check_load(key, ttl)?;
        let s = &self.shared;
        let mut load = Some(load);
        let mut looked = false;
        loop {
            let found = if looked {
                self.relook_async::<T>(key).await
            } else {
                self.lookup_typed_async::<T, T>(key, None, |v| v).await
            };
            looked = true;
            let refresh = |slot| {
                if let Some(load) = load.take() {
                    self.refresh_ahead(key, slot, |leader, slot, watch| {
                        self.spawn_load_async(key, (ttl, true), (leader, watch), move || {
                            let load = load();
                            async move {
                                let _slot = slot;
                                load.await
                            }
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
                    // Ended by the drop if this future is dropped before the load takes it.
                    let watching = s.guard.watching(key, leader.overtaken());
                    let watch = watching.get();
                    let read = self.leader_reread_async(key).await;
                    match self.leader_found(key, (leader, watch), read, optional)? {
                        Found::Answer(answer) => return Ok(answer),
                        Found::Load(kept) => leader = kept,
                    }
                    let Some(load) = load.take() else {
                        s.guard.unwatch(watch);
                        return Err(E::from(caught::spent_loader(key)));
                    };
                    if s.flights.too_many_hung() {
                        return self.shed_load(key, leader, stale);
                    }
                    let flight = Arc::clone(leader.flight());
                    let report =
                        self.spawn_load_async(key, (ttl, false), (leader, watching.hand_on()), load)?;
                    // Once its task or thread started: a load that could not start did not run.
                    s.metrics.loads.incr();
                    (flight, Some(report))
                }
            };
            let deadline = s.fail_safe.deadline(&flight, stale.is_some());
            if deadline.is_some() {
                s.flights.ensure_ticker(&flight, s.fail_safe.deadlines(&flight));
            }
            let mut waited = flight.wait_async_until(deadline).await;
            let mut stale = stale;
            loop {
                match self.after_wait(key, &flight, waited, stale.take(), report.as_mut(), optional) {
                    Next::Answer(answer) => return answer,
                    Next::Retry => break,
                    Next::WaitOn => {
                        waited = flight
                            .wait_async_until(s.fail_safe.deadline(&flight, false))
                            .await;
                    }
                }
            }
        }
    }

    /// Spawns the leader's async load on the caller's tokio runtime, or on a thread with a
    /// runtime of its own outside one. `load` gives the loader's future, on the caller's task;
    /// `ttl` is as for [`spawn_load`](Self::spawn_load).
    fn spawn_load_async<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: (Option<Duration>, bool),
        (leader, watch): (Leader, Watch),
        load: F,
    ) -> Result<mpsc::Receiver<Report<T, E>>>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Send + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::result::Result<Option<T>, E>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        let manager = self.downgrade();
        let owned_key = key.to_owned();
        // Unwind safety: a closure that panicked left nothing of the cache's half-done. Its
        // panic ends the load as a panicking future's does, a failed load and the flight
        // abandoned, so its callers get the stale copy or an error instead of the unwinding.
        let Ok(load) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) else {
            load_panicked(&manager, key, (leader, watch), tx);
            return Ok(rx);
        };
        // Taken here, in the caller's context: the task the load is spawned in inherits nothing.
        let load = crate::manager::reentry::Loading::of(leader.flight()).run_async(load);
        let watch_ends = WatchEnds {
            manager: self.downgrade(),
            watch,
        };
        let task = async move {
            let _watch_ends = watch_ends;
            // A task of its own, so that a panicking loader is seen (its `JoinError`).
            let outcome = match tokio::spawn(load).await {
                Ok(outcome) => outcome,
                Err(_) => return load_panicked(&manager, &owned_key, (leader, watch), tx),
            };
            // The store is a blocking write, which waits for a write of the key in progress:
            // on the runtime's thread it could wait for an async write that only that thread
            // can finish (a current-thread runtime hung for good). Off the runtime's threads.
            let store = move || finish_load(&manager, &owned_key, ttl, (leader, watch), outcome, tx);
            // A store that did not run dropped its leader: the flight ends abandoned.
            let _ = tokio::task::spawn_blocking(store).await;
        };
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            drop(handle.spawn(task));
            return Ok(rx);
        }
        let no_thread = |e: std::io::Error| self.no_load_thread(key, watch, &e);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(no_thread)?;
        start_load_thread(move || runtime.block_on(task)).map_err(no_thread)?;
        Ok(rx)
    }
}
