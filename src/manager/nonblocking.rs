//! The async API of [`CacheManager`]: the same shells as `blocking`, awaiting L2 through the
//! levels' async methods (L1 is local and called inline).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::batch_read::ManyPlan;
use super::guard::{Watch, WriteGuard};
use super::loader::Role;
use super::policy::{partial_over, Plan, Route};
use super::reread::Reread;
use super::typed::Lookup;
use super::writes::L2Owed;
use super::{as_strs, borrow_items, distinct, item_keys, last_of_each, CacheManager};

use crate::error::{key_for_error, Error, Result};

impl CacheManager {
    /// Async [`CacheManager::get`]: L1 inline, L2 through its async methods.
    ///
    /// # Errors
    /// As [`CacheManager::get`].
    pub async fn get_async<T: DeserializeOwned + Clone + Send + Sync + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<T>> {
        self.get_typed_async::<T, T>(key, |value| value).await
    }

    /// Async [`CacheManager::get_arc`].
    ///
    /// # Errors
    /// As [`CacheManager::get`].
    pub async fn get_arc_async<T: DeserializeOwned + Send + Sync + 'static>(
        &self,
        key: &str,
    ) -> Result<Option<Arc<T>>> {
        self.get_typed_async::<T, Arc<T>>(key, Arc::new).await
    }

    /// Async `get_typed`: the memory tier, then [`get_raw_async`](Self::get_raw_async).
    async fn get_typed_async<T, V>(&self, key: &str, wrap: fn(T) -> V) -> Result<Option<V>>
    where
        T: DeserializeOwned + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let start = crate::stats::sample_read();
        // As the blocking read: a memory-tier hit is answered without the `Lookup` wrapper.
        if let Some(value) = self.shared.hot_hit::<V>(key, start) {
            self.shared.metrics.get_latency.record_since(start);
            return Ok(Some(value));
        }
        self.shared.check_read_key(key)?;
        let found = self.lookup_behind_hot_async(key, start, wrap).await;
        self.shared.metrics.get_latency.record_since(start);
        found.map(Lookup::into_option)
    }

    /// Async `lookup_typed`.
    pub(crate) async fn lookup_typed_async<T, V>(
        &self,
        key: &str,
        timed: Option<std::time::Instant>,
        wrap: fn(T) -> V,
    ) -> Result<Lookup<V>>
    where
        T: DeserializeOwned + 'static,
        V: Clone + Send + Sync + 'static,
    {
        if let Some(value) = self.shared.hot_hit::<V>(key, timed) {
            return Ok(Lookup::Hit(value));
        }
        self.shared.check_read_key(key)?;
        self.lookup_behind_hot_async(key, timed, wrap).await
    }

    /// Async `lookup_behind_hot`: a typed read the memory tier missed.
    async fn lookup_behind_hot_async<T, V>(
        &self,
        key: &str,
        timed: Option<std::time::Instant>,
        wrap: fn(T) -> V,
    ) -> Result<Lookup<V>>
    where
        T: DeserializeOwned + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let s = &self.shared;
        s.count_hot_miss(timed);
        let miss = s.hot_miss(key);
        let raw = self.get_raw_async(key).await?;
        s.decode_and_keep::<T, V>(key, miss, raw, wrap)
    }

    /// Async [`CacheManager::set`].
    ///
    /// # Errors
    /// As [`CacheManager::set`].
    pub async fn set_async<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw_async(key, &bytes, ttl).await
    }

    /// Async [`CacheManager::delete`].
    ///
    /// # Errors
    /// As [`CacheManager::delete`].
    pub async fn delete_async(&self, key: &str) -> Result<bool> {
        let s = &self.shared;
        s.check_delete(&[key])?;
        let ordered = s.guard.order_async([key], true).await;
        let keys = [key];
        let announcement = s.announce(&keys);
        let l1 = s.delete_l1_done(&keys, s.l1.delete(key).map(u64::from));
        // The settle drops the key's queued write: dropped before L2 answers, this future hands
        // the delete back to the write-behind queue.
        let owed = s.owe(&keys, None);
        s.settle_behind_async(&keys).await;
        let l2 = match &s.l2 {
            Some(_) if s.must_queue(&keys) => {
                let queued = s.queue_deletes(&keys);
                // Queued (or not) already: nothing left to hand back on the way out.
                owed.paid();
                queued.map(|()| None)
            }
            Some(l2) => {
                let deleted = l2.delete_async(key).await.map(u64::from);
                owed.paid();
                Ok(Some(deleted))
            }
            None => {
                owed.paid();
                Ok(None)
            }
        };
        let out = s.finish_delete_or_unqueued(&keys, l1, l2, L2Owed::Hidden);
        drop(ordered);
        announcement.publish().await;
        Ok(out? > 0)
    }

    /// Async [`CacheManager::multi_get`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_get`].
    pub async fn multi_get_async<T>(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let keys = as_strs(keys);
        let s = &self.shared;
        s.check_read_keys(&keys)?;
        let (mut found, missed, misses) = s.read_hot_batch::<T>(&distinct(&keys));
        if !missed.is_empty() {
            let raw = self
                .multi_get_raw_async(&missed)
                .await
                .map_err(|e| partial_over(e, &missed, &keys))?;
            s.decode_batch_and_keep(&mut found, &missed, misses, raw)?;
        }
        Ok(found)
    }

    /// Async [`CacheManager::multi_set`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_set`].
    pub async fn multi_set_async<K: AsRef<str>, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let encoded = self.encode_items(items)?;
        self.multi_set_raw_async(&borrow_items(&encoded), ttl).await
    }

    /// Async [`CacheManager::multi_delete`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_delete`].
    pub async fn multi_delete_async(&self, keys: &[impl AsRef<str>]) -> Result<u64> {
        self.multi_delete_owing_async(keys, L2Owed::Hidden).await
    }

    /// [`CacheManager::multi_delete_async`], with what an L2 failure owes the caller (see
    /// [`L2Owed`]).
    pub(crate) async fn multi_delete_owing_async(
        &self,
        keys: &[impl AsRef<str>],
        l2_owed: L2Owed,
    ) -> Result<u64> {
        let given = as_strs(keys);
        // A key listed twice is one delete: each level is asked once, and counts it once.
        let keys = distinct(&given);
        let s = &self.shared;
        if keys.is_empty() {
            return Ok(0);
        }
        s.check_delete(&keys)?;
        let ordered = s.guard.order_async(keys.iter().copied(), true).await;
        let announcement = s.announce(&keys);
        let l1 = s.delete_l1_done(&keys, s.l1.delete_many(&keys));
        let owed = s.owe(&keys, None);
        s.settle_behind_async(&keys).await;
        let l2 = match &s.l2 {
            Some(_) if s.must_queue(&keys) => {
                let queued = s.queue_deletes(&keys);
                owed.paid();
                queued.map(|()| None)
            }
            Some(l2) => {
                let deleted = l2.delete_many_async(&keys).await;
                owed.paid();
                Ok(Some(deleted))
            }
            None => {
                owed.paid();
                Ok(None)
            }
        };
        let out = s
            .finish_delete_or_unqueued(&keys, l1, l2, l2_owed)
            .map_err(|e| partial_over(e, &keys, &given));
        drop(ordered);
        announcement.publish().await;
        out
    }

    /// Async [`CacheManager::get_or_set_with`]: the loader is an async closure. Shares loads
    /// with sync callers of the same key.
    ///
    /// # Errors
    /// As [`CacheManager::get_or_set_with`].
    pub async fn get_or_set_with_async<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.shared.check_load(key, ttl)?;
        let mut looked = false;
        loop {
            let found = if looked {
                self.relook_async::<T>(key).await.map(Lookup::into_option)
            } else {
                self.get_async(key).await
            };
            looked = true;
            match found {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                // A value this type cannot read is loaded anew, as a miss is.
                Err(e) if super::typed::reloads_unreadable(&self.shared, key, &e) => {}
                Err(e) => return Ok(self.shared.stale_or(key, e)?),
            }
            if let Some(value) = self.shared.throttled_stale(key) {
                return Ok(value);
            }
            match self.join_flight(key)? {
                // A load past the hard timeout, given up: look again.
                None => {}
                Some(Role::Waiter(flight)) => {
                    let s = &self.shared;
                    let deadline = s.fail_safe.deadline(&flight, false);
                    if deadline.is_some() {
                        s.flights.ensure_ticker(&flight, s.fail_safe.deadlines(&flight));
                    }
                    let waited = flight.wait_async_until(deadline).await;
                    if let Some(bytes) = self.waited_for_load(key, &flight, waited) {
                        return Ok(s.codec.decode(key, &bytes)?);
                    }
                }
                Some(Role::Leader(leader)) => {
                    let s = &self.shared;
                    // Before the second read: a write of the key from now on wins over the load.
                    // Ended by the drop if this future is dropped before it ends it.
                    let watching = s.guard.watching(key, leader.overtaken());
                    let watch = watching.get();
                    // A flight that just ended may have filled the cache.
                    let read = self.leader_reread_async(key).await;
                    if let Some((bytes, value)) = self.found_by_leader(key, watch, read)? {
                        leader.finish(Arc::from(bytes));
                        return Ok(value);
                    }
                    s.metrics.loads.incr();
                    let loading = super::reentry::Loading::of(leader.flight());
                    let loaded =
                        super::caught::catching_async(key, loading.run_async(async move { loader().await }))
                            .await;
                    // Failed: fail-safe's stale copy, or the error.
                    let value = match self.leader_loaded(key, watch, loaded) {
                        Ok(value) => value,
                        Err(answer) => return answer,
                    };
                    let bytes = self.encode_loaded(key, watch, &value)?;
                    let stored = self.set_loaded_async(key, &bytes, ttl, watch).await;
                    leader.finish(Arc::from(bytes));
                    stored?;
                    return Ok(value);
                }
            }
        }
    }

    /// Async [`CacheManager::get_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::get_raw`].
    pub async fn get_raw_async(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let s = &self.shared;
        s.check_read_key(key)?;
        let suspect = match s.plan_read(key)? {
            Plan::Done(value) => return Ok(value),
            Plan::AskL2(suspect) => suspect,
        };
        let Some(l2) = &s.l2 else {
            return Ok(suspect.map(|s| s.entry.value));
        };
        let ticket = match s.before_l2(key, suspect.is_some()) {
            Ok(ticket) => ticket,
            Err(answer) => return Ok(answer),
        };
        let started = Instant::now();
        let result = l2.get_async(key).await;
        match suspect {
            None => s.finish_read(key, ticket, (started, result)),
            Some(entry) => s.finish_revalidate(key, entry, ticket, (started, result)),
        }
    }

    /// Async [`relook`](CacheManager::relook).
    pub(crate) async fn relook_async<T>(&self, key: &str) -> Result<Lookup<T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if let Some(value) = self.shared.hot_uncounted::<T>(key) {
            return Ok(Lookup::Hit(value));
        }
        let read = self.leader_reread_async(key).await?;
        self.shared
            .decode_and_keep(key, None, read, std::convert::identity)
    }

    /// Async `leader_reread`.
    pub(crate) async fn leader_reread_async(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let s = &self.shared;
        match s.leader_reread(key) {
            Reread::Done(found) => Ok(found),
            Reread::Failed(e) => Err(e),
            Reread::AskL2(l2, ticket, suspect) => {
                let started = Instant::now();
                let result = l2.get_async(key).await;
                s.finish_reread(key, ticket, suspect, (started, result))
            }
        }
    }

    /// Async [`CacheManager::set_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::set_raw`].
    pub async fn set_raw_async(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.set_items_async(&[key], &[(key, value)], ttl, true).await
    }

    /// Async `set_loaded`: stores what a load read unless its key was written since `watch`.
    pub(crate) async fn set_loaded_async(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        watch: Watch,
    ) -> Result<bool> {
        let Some(ordered) = self.shared.guard.order_watched_async(key, watch).await else {
            tracing::debug!(key = %key_for_error(key), "a loaded value was not stored: the key was written meanwhile");
            return Ok(false);
        };
        self.write_items_async(ordered, &[key], &[(key, value)], ttl, true)
            .await?;
        Ok(true)
    }

    /// Async [`CacheManager::multi_get_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_get_raw`].
    pub async fn multi_get_raw_async(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, Vec<u8>>> {
        let s = &self.shared;
        match s.begin_read_many(as_strs(keys))? {
            ManyPlan::Done(answer) => answer,
            ManyPlan::AskL2(l2, read) => {
                let started = Instant::now();
                let answer = l2.get_many_async(read.missed()).await;
                s.end_read_many(read, (started, answer))
            }
        }
    }

    /// Async [`CacheManager::multi_set_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_set_raw`].
    pub async fn multi_set_raw_async(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let once = last_of_each(items);
        let keys: Vec<&str> = once.iter().map(|(k, _)| *k).collect();
        self.set_items_async(&keys, &once, ttl, false)
            .await
            .map_err(|e| partial_over(e, &keys, &item_keys(items)))
    }

    /// Async [`CacheManager::set_items`].
    async fn set_items_async(
        &self,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        single: bool,
    ) -> Result<()> {
        let ordered = self.shared.guard.order_async(keys.iter().copied(), false).await;
        self.write_items_async(ordered, keys, items, ttl, single).await
    }

    /// [`set_items_async`](Self::set_items_async) with its keys already ordered.
    async fn write_items_async(
        &self,
        ordered: WriteGuard<'_>,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        single: bool,
    ) -> Result<()> {
        let s = &self.shared;
        let (ordered, route) = s.begin_write(ordered, (keys, None), items, ttl)?;
        // L1 has changed: the other instances hear of it even if this future is dropped.
        let announcement = s.announce(keys);
        let out = match route {
            Route::Done(out) => out,
            Route::Behind => {
                // The write-behind writer publishes, once L2 has the values.
                announcement.dismiss();
                return Ok(());
            }
            Route::Through { l2, settle } => {
                // A settle drops the keys' queued writes: dropped before L2 answers, this future
                // hands its values back to the write-behind queue (without write-behind, to the
                // replay queue: see `Requeue`).
                let owed = s.owe(keys, Some((items, ttl)));
                if settle {
                    ordered.reads_miss();
                    s.settle_behind_async(keys).await;
                }
                let out = if settle && s.must_queue(keys) {
                    // The batch the settle waited for failed and queued older writes of these
                    // keys for replay: this newer one goes after them, not to L2 before them.
                    s.queued_or_undone(items, s.queue_sets(items, ttl))
                } else {
                    let l2_ttl = Some(s.l2_ttl(ttl));
                    let started = Instant::now();
                    let result = match (keys, items) {
                        ([_], [(key, value)]) if single => l2.set_async(key, value, l2_ttl).await,
                        _ => l2.set_many_async(items, l2_ttl).await,
                    };
                    s.finish_write(items, ttl, (started, result))
                };
                owed.paid();
                out
            }
        };
        drop(ordered);
        announcement.publish().await;
        out
    }
}
