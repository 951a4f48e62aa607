//! The blocking API of [`CacheManager`]: typed and raw reads, writes, deletes, batches and
//! `get_or_set_with`. Each method is a thin shell around the rules of `policy`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::batch_read::ManyPlan;
use super::guard::{Watch, WriteGuard};
use super::loader::Role;
use super::policy::{partial_over, Plan, Route};
use super::reload_keep::Kept;
use super::reread::Reread;
use super::typed::Lookup;
use super::writes::L2Owed;
use super::{as_strs, borrow_items, distinct, item_keys, last_of_each, CacheManager};

use crate::error::{key_for_error, Error, Result};

impl CacheManager {
    // ---- typed API ----

    /// Reads a value: L1, then L2 (backfilling L1). `Ok(None)` on a miss.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a key no write could store (empty, over
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN), or the tag sets' namespace with a Redis L2), whatever
    /// the levels, before any is asked; [`Error::CodecMismatch`] or [`Error::Decode`] if the
    /// stored bytes are not a `T` written by this codec; a level's error unless hidden by
    /// `fallback_on_error`.
    ///
    /// With the memory tier on (`local.memory_items`), a value read before and still current is
    /// answered from it as a clone of the decoded value, without reading L1 or decoding.
    #[inline]
    pub fn get<T: DeserializeOwned + Clone + Send + Sync + 'static>(&self, key: &str) -> Result<Option<T>> {
        self.get_typed::<T, T>(key, |value| value)
    }

    /// [`CacheManager::get`] that hands out the decoded value as an `Arc`: a memory-tier hit
    /// then costs no clone of the value (and `T` need not be `Clone`).
    ///
    /// # Errors
    /// As [`CacheManager::get`].
    #[inline]
    pub fn get_arc<T: DeserializeOwned + Send + Sync + 'static>(&self, key: &str) -> Result<Option<Arc<T>>> {
        self.get_typed::<T, Arc<T>>(key, Arc::new)
    }

    /// A typed read kept in the memory tier as `V` (`T` or `Arc<T>`): the tier, then
    /// [`get_raw`](Self::get_raw) and a decode.
    #[inline]
    fn get_typed<T, V>(&self, key: &str, wrap: fn(T) -> V) -> Result<Option<V>>
    where
        T: DeserializeOwned + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let start = crate::stats::sample_read();
        // The memory tier's hit is answered here, without going through `Lookup`: each wrapper
        // of the value is a copy of it, and on a hit those copies were a tenth of the work.
        if let Some(value) = self.shared.hot_hit::<V>(key, start) {
            self.shared.metrics.get_latency.record_since(start);
            return Ok(Some(value));
        }
        self.shared.check_read_key(key)?;
        let found = self.lookup_behind_hot(key, start, wrap);
        self.shared.metrics.get_latency.record_since(start);
        found.map(Lookup::into_option)
    }

    /// [`get_typed`](Self::get_typed) telling a cached "absent" from a miss. `timed`: the
    /// sampled start of the read, if it is timed (the memory tier's latency is measured from it).
    #[inline]
    pub(crate) fn lookup_typed<T, V>(
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
        self.lookup_behind_hot(key, timed, wrap)
    }

    /// A typed read the memory tier missed, its key checked (a hit needs none, see
    /// `Shared::hot_hit`): the miss counted, then L1, then L2, decoded and kept in the tier.
    /// Never inlined, so that a memory-tier hit runs in a small frame of its own.
    #[inline(never)]
    fn lookup_behind_hot<T, V>(
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
        s.decode_and_keep::<T, V>(key, miss, self.get_raw(key)?, wrap)
    }

    /// Writes a value to L1 (TTL capped at `local.ttl`) and L2 (capped at `distributed.ttl`);
    /// `ttl = None` gives each level its configured TTL.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a key refused as [`CacheManager::get`] refuses it, before any
    /// level is asked; [`Error::Encode`], [`Error::ZeroTtl`], an L1 error, or an L2 error unless
    /// hidden by `fallback_on_error` (L1 then holds the new value). An L1 error other than bad input (an
    /// I/O error, a full disk) may come after L1 stored some of the write; with an L2 at hand,
    /// every L1 entry is then suspect (a hit is checked against L2), so a write that failed is
    /// not served from this L1 alone.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Option<Duration>) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw(key, &bytes, ttl)
    }

    /// Deletes a key from both levels; `true` if either had it.
    ///
    /// `false` is certain only when L2 answered: if its delete failed and was hidden by
    /// `fallback_on_error` or queued for replay, `false` means that L1 did not have the key, and
    /// L2 may have (its delete reaches it when the replay does).
    ///
    /// # Errors
    /// [`Error::InvalidKey`] as [`CacheManager::get`] refuses a key, before any level is asked;
    /// an L1 error (after L2 was tried too), or an L2 error unless hidden by
    /// `fallback_on_error`, or the error of a replay queue that could not take the delete (one
    /// of the keys had an op pending there; L1's error comes first). After an L1 error (a full
    /// disk, a store latched read-only) with an L2 at hand, every L1 entry is suspect: a hit is
    /// checked against L2 before it is served, so the value the delete took out of L2 is not
    /// served from L1.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let s = &self.shared;
        s.check_delete(&[key])?;
        let ordered = s.guard.order([key], true);
        Ok(self.delete_ordered(ordered, key)? > 0)
    }

    /// The levels' deletes of `key`, which `ordered` owns, and the invalidation that follows.
    fn delete_ordered(&self, ordered: WriteGuard<'_>, key: &str) -> Result<u64> {
        let s = &self.shared;
        let l1 = s.delete_l1_done(&[key], s.l1.delete(key).map(u64::from));
        let l2 = s.delete_l2(&[key], |l2| l2.delete(key).map(u64::from));
        let out = s.finish_delete_or_unqueued(&[key], l1, l2, L2Owed::Hidden);
        drop(ordered);
        s.publish_keys(&[key]);
        out
    }

    /// Reads several keys: the memory tier, then one L1 call for the keys it did not have, then
    /// one L2 call for the keys L1 did not have. The map holds the keys found. A key listed
    /// twice is read once (and counted once in the stats).
    ///
    /// # Errors
    /// As [`CacheManager::get`], for any key (one key no write could store refuses the whole
    /// batch with [`Error::InvalidKey`], as `multi_set` does). Where only some keys failed (with
    /// `fallback_on_error = false`: their L2 node was not reached, or L1 failed to read them), a
    /// [`PartialBatch`](crate::Error::PartialBatch) names every position of those keys and
    /// carries what the others found ([`Served::Found`](crate::Served::Found)).
    pub fn multi_get<T>(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        let keys = as_strs(keys);
        let s = &self.shared;
        s.check_read_keys(&keys)?;
        let (mut found, missed, misses) = s.read_hot_batch::<T>(&distinct(&keys));
        if !missed.is_empty() {
            let raw = self
                .multi_get_raw(&missed)
                .map_err(|e| partial_over(e, &missed, &keys))?;
            s.decode_batch_and_keep(&mut found, &missed, misses, raw)?;
        }
        Ok(found)
    }

    /// Writes several values with one TTL: one L1 call, one L2 call.
    ///
    /// A key listed more than once is written once, with the last value listed for it (what
    /// setting the items one after another would leave): each level is sent that value alone,
    /// and the stats count one set of the key at each level. Its earlier values are dropped
    /// before anything is written (though each must still encode).
    ///
    /// # Errors
    /// As [`CacheManager::set`]; nothing is written if a value fails to encode. A
    /// [`PartialBatch`](crate::Error::PartialBatch) names every position of a key not written.
    pub fn multi_set<K: AsRef<str>, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let encoded = self.encode_items(items)?;
        self.multi_set_raw(&borrow_items(&encoded), ttl)
    }

    /// Deletes several keys from both levels: one call to each. Returns the larger of the two
    /// levels' counts of keys removed. A key listed more than once is deleted (and counted) once.
    ///
    /// # Errors
    /// As [`CacheManager::delete`]. A [`PartialBatch`](crate::Error::PartialBatch) names every
    /// position of a key whose L2 delete did not reach its node.
    pub fn multi_delete(&self, keys: &[impl AsRef<str>]) -> Result<u64> {
        self.multi_delete_owing(keys, L2Owed::Hidden)
    }

    /// [`CacheManager::multi_delete`], with what an L2 failure owes the caller (see [`L2Owed`]).
    pub(crate) fn multi_delete_owing(&self, keys: &[impl AsRef<str>], owed: L2Owed) -> Result<u64> {
        let given = as_strs(keys);
        // A key listed twice is one delete: each level is asked once, and counts it once.
        let keys = distinct(&given);
        let s = &self.shared;
        if keys.is_empty() {
            return Ok(0);
        }
        s.check_delete(&keys)?;
        let ordered = s.guard.order(keys.iter().copied(), true);
        let l1 = s.delete_l1_done(&keys, s.l1.delete_many(&keys));
        let l2 = s.delete_l2(&keys, |l2| l2.delete_many(&keys));
        let out = s
            .finish_delete_or_unqueued(&keys, l1, l2, owed)
            .map_err(|e| partial_over(e, &keys, &given));
        drop(ordered);
        s.publish_keys(&keys);
        out
    }

    /// Reads a value, or runs `loader`, stores its value (with `ttl`, as [`CacheManager::set`])
    /// and returns it. Concurrent callers for one key — threads here and tasks in
    /// [`CacheManager::get_or_set_with_async`] alike — run one loader at a time: the others wait
    /// and get its value. If the loader fails, that caller gets its error and a waiter takes
    /// over with its own loader — unless fail-safe (`loader.fail_safe_max_duration`) kept a
    /// stale copy of the key: then the callers get that copy, and it counts as fresh for
    /// `loader.fail_safe_throttle`. The value is not stored if the key was written, deleted or
    /// invalidated while the loader ran: it may be older than that change (the callers still
    /// get it). Waiting has no deadline of its own: a loader that never returns holds its
    /// key's callers; [`CacheManager::get_or_load`] bounds the wait. With
    /// `loader.hard_timeout_ms` set, though, a caller waiting on another caller's load gives it
    /// up at that timeout, as `get_or_load`'s callers do, and runs its own loader. A loading
    /// call a loader makes for its own key, or for a key whose load it runs inside (it would
    /// wait for a load that waits for it), fails at once with [`Error::Backend`] (op `"load"`)
    /// naming the key. A loader that
    /// panics counts as one that failed (the panic is logged and does not unwind into the
    /// caller): the stale copy, or an error naming the key.
    ///
    /// # Errors
    /// The loader's error when no stale copy is kept; or, converted with `From`, a cache error of [`CacheManager::get`]
    /// or [`CacheManager::set`] (the value was loaded but could not be stored; waiters still get
    /// it).
    pub fn get_or_set_with<T, E, F>(&self, key: &str, ttl: Option<Duration>, loader: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        self.shared.check_load(key, ttl)?;
        let mut looked = false;
        loop {
            let found = if looked {
                self.relook::<T>(key).map(Lookup::into_option)
            } else {
                self.get(key)
            };
            looked = true;
            match found {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                // No fresh value can be had: fail-safe serves the stale copy, if any.
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
                    let waited = flight.wait_blocking_until(self.shared.fail_safe.deadline(&flight, false));
                    if let Some(bytes) = self.waited_for_load(key, &flight, waited) {
                        return Ok(self.shared.codec.decode(key, &bytes)?);
                    }
                }
                Some(Role::Leader(leader)) => {
                    let s = &self.shared;
                    // Before the second read: a write of the key from now on wins over the load.
                    let watching = s.guard.watching(key, leader.overtaken());
                    let watch = watching.get();
                    // A flight that just ended may have filled the cache.
                    if let Some((bytes, value)) = self.found_by_leader(key, watch, self.leader_reread(key))? {
                        leader.finish(Arc::from(bytes));
                        return Ok(value);
                    }
                    s.metrics.loads.incr();
                    let loaded = super::caught::catching(key, || {
                        super::reentry::Loading::of(leader.flight()).run(loader)
                    });
                    // Failed: fail-safe's stale copy, or the error.
                    let value = match self.leader_loaded(key, watch, loaded) {
                        Ok(value) => value,
                        Err(answer) => return answer,
                    };
                    let bytes = self.encode_loaded(key, watch, &value)?;
                    let stored = self.set_loaded(key, &bytes, ttl, watch, (false, false));
                    leader.finish(Arc::from(bytes));
                    stored?;
                    return Ok(value);
                }
            }
        }
    }

    // ---- raw bytes ----

    /// [`CacheManager::get`] without the codec.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] as [`CacheManager::get`] refuses a key; a level's error unless
    /// hidden by `fallback_on_error`.
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
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
        let result = l2.get(key);
        match suspect {
            None => s.finish_read(key, ticket, (started, result)),
            Some(entry) => s.finish_revalidate(key, entry, ticket, (started, result)),
        }
    }

    /// A loading call's look again at `key` once the flight it waited on ended without a
    /// value for it (failed, or given up at the hard timeout): the read's rules, not counted,
    /// as a leader's second look is; the call's read was counted once, before it waited.
    pub(crate) fn relook<T>(&self, key: &str) -> Result<Lookup<T>>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        if let Some(value) = self.shared.hot_uncounted::<T>(key) {
            return Ok(Lookup::Hit(value));
        }
        // No miss taken: what the look finds is decoded, not kept in the memory tier.
        let read = self.leader_reread(key)?;
        self.shared
            .decode_and_keep(key, None, read, std::convert::identity)
    }

    /// A loading call's leader's second look at the key, uncounted (see
    /// [`Shared::leader_reread`](super::policy::Shared::leader_reread)).
    pub(crate) fn leader_reread(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let s = &self.shared;
        match s.leader_reread(key) {
            Reread::Done(found) => Ok(found),
            Reread::Failed(e) => Err(e),
            Reread::AskL2(l2, ticket, suspect) => {
                let started = Instant::now();
                let result = l2.get(key);
                s.finish_reread(key, ticket, suspect, (started, result))
            }
        }
    }

    /// [`CacheManager::set`] without the codec.
    ///
    /// # Errors
    /// As [`CacheManager::set`].
    pub fn set_raw(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.set_items(&[key], &[(key, value)], ttl, true)
    }

    /// Stores what a load of `key` read, as `set_raw` does, unless a write, delete or
    /// invalidation of the key started since `watch` (see [`KeyOrder::order_watched`]):
    /// whether it was stored. `refresh_ahead`: a `get_or_load` value, whose refresh-ahead due
    /// time is recorded once the store owns the key (see `Shared::note_loaded`). `reload`: the
    /// store of a refresh-ahead reload, which L2 failing does not leave without the entry it
    /// replaced, and which gives way to a write of the key still on its way to L2 (see
    /// `reload_keep`).
    ///
    /// [`KeyOrder::order_watched`]: super::guard::KeyOrder::order_watched
    pub(crate) fn set_loaded(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        watch: Watch,
        (refresh_ahead, reload): (bool, bool),
    ) -> Result<bool> {
        let Some(ordered) = self.shared.guard.order_watched(key, watch) else {
            tracing::debug!(key = %key_for_error(key), "a loaded value was not stored: the key was written meanwhile");
            return Ok(false);
        };
        if reload && self.shared.reload_yields(key) {
            tracing::debug!(key = %key_for_error(key), "a reload was not stored: the key's write is still on its way to L2");
            return Ok(false);
        }
        if refresh_ahead {
            self.shared.note_loaded(key, ttl);
        }
        let kept = if reload {
            self.shared.keep_before_reload(key)
        } else {
            None
        };
        self.write_items(ordered, &[key], &[(key, value)], ttl, (true, kept.as_ref()))?;
        Ok(true)
    }

    /// Deletes `key` as [`CacheManager::delete`] does, for a load whose loader found it gone,
    /// unless a write, delete or invalidation of the key started since `watch` (see
    /// [`KeyOrder::order_watched`]): whether it was deleted. A change made while the loader ran
    /// is newer than its "absent", so it stands.
    ///
    /// [`KeyOrder::order_watched`]: super::guard::KeyOrder::order_watched
    pub(crate) fn delete_loaded(&self, key: &str, watch: Watch) -> Result<bool> {
        if let Err(e) = self.shared.check_delete(&[key]) {
            self.shared.guard.unwatch(watch);
            return Err(e);
        }
        let Some(ordered) = self.shared.guard.order_watched_delete(key, watch) else {
            tracing::debug!(key = %key_for_error(key), "a key found absent was not deleted: it was written meanwhile");
            return Ok(false);
        };
        self.delete_ordered(ordered, key)?;
        Ok(true)
    }

    /// [`CacheManager::multi_get`] without the codec.
    ///
    /// # Errors
    /// As [`CacheManager::multi_get`] (a partial batch included), but for decoding.
    pub fn multi_get_raw(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, Vec<u8>>> {
        let s = &self.shared;
        match s.begin_read_many(as_strs(keys))? {
            ManyPlan::Done(answer) => answer,
            ManyPlan::AskL2(l2, read) => {
                let started = Instant::now();
                let answer = l2.get_many(read.missed());
                s.end_read_many(read, (started, answer))
            }
        }
    }

    /// [`CacheManager::multi_set`] without the codec: a key listed more than once is written
    /// once, with its last value, as there.
    ///
    /// # Errors
    /// As [`CacheManager::multi_set`].
    pub fn multi_set_raw(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let once = last_of_each(items);
        let keys: Vec<&str> = once.iter().map(|(k, _)| *k).collect();
        self.set_items(&keys, &once, ttl, false)
            .map_err(|e| partial_over(e, &keys, &item_keys(items)))
    }

    /// The write rule for one key (`single`: `set` on each level) or a batch (`set_many`);
    /// `keys` are the items' keys: L1, then L2 as [`Shared::route_write`] says, then the
    /// invalidation (the writer publishes a queued one).
    fn set_items(
        &self,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        single: bool,
    ) -> Result<()> {
        let ordered = self.shared.guard.order(keys.iter().copied(), false);
        self.write_items(ordered, keys, items, ttl, (single, None))
    }

    /// [`set_items`](Self::set_items) with its keys already ordered; `kept`: a reload's, see
    /// [`set_loaded`](Self::set_loaded).
    fn write_items(
        &self,
        ordered: WriteGuard<'_>,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        (single, kept): (bool, Option<&Kept>),
    ) -> Result<()> {
        let s = &self.shared;
        let (ordered, route) = s.begin_write(ordered, (keys, kept), items, ttl)?;
        let out = match route {
            Route::Done(out) => out,
            Route::Behind => return Ok(()),
            Route::Through { l2, settle } => {
                let now = if settle {
                    ordered.reads_miss();
                    s.settle_behind(keys, Some((items, ttl)))
                } else {
                    Ok(true)
                };
                if !matches!(now, Ok(true)) {
                    // Handed to a queue behind the batch in flight, or refused by the replay
                    // queue.
                    now.map(drop)
                } else if settle && s.must_queue(keys) {
                    // The batch the settle waited for failed and queued older writes of these
                    // keys for replay: this newer one goes after them, not to L2 before them.
                    s.queued_or_put_back(items, s.queue_sets(items, ttl), kept)
                } else {
                    let l2_ttl = Some(s.l2_ttl(ttl));
                    let started = Instant::now();
                    let result = match (keys, items) {
                        ([_], [(key, value)]) if single => l2.set(key, value, l2_ttl),
                        _ => l2.set_many(items, l2_ttl),
                    };
                    s.finish_write_keeping(items, ttl, (started, result), kept)
                }
            }
        };
        drop(ordered);
        s.publish_keys(keys);
        out
    }
}
