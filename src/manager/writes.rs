//! The write and delete rules of `policy`: the L1 step of a write, where its L2 step goes
//! (through now, the write-behind queue, the replay queue), and how each level's outcome
//! becomes the call's answer. The sync and async shells (`blocking`, `nonblocking`) make the L2
//! call between these steps.

use std::time::Duration;

use super::behind::Pushed;
use super::guard::WriteGuard;
use super::left_behind::Removal;
use super::policy::{check_ttl, time_l2, unreached, Level, Route, Shared, Timed};
use super::reload_keep::Kept;
use crate::error::{Error, Result, Served};
use crate::stats;

impl Shared {
    /// The L1 step of a write (checked input, capped TTL). Errors always reach the caller.
    pub(crate) fn write_l1(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        for (key, _) in items {
            check_ttl(key, ttl)?;
        }
        let m = &self.metrics.local;
        let ttl = Some(self.l1_ttl(ttl));
        let mark = self.left_behind.mark();
        let start = stats::sample_l1_write();
        let result = match items {
            [(key, value)] => self.l1.set(key, value, ttl),
            _ => self.l1.set_many(items, ttl),
        };
        m.set_latency.record_since(start);
        match result {
            Ok(()) => {
                m.sets.add(items.len() as u64);
                self.left_behind
                    .forget(items.iter().map(|(key, _)| *key), None, mark);
                self.end_throttles(items.iter().map(|(key, _)| *key));
                Ok(())
            }
            Err(e) => {
                m.errors.incr();
                if !e.is_bad_input() && self.l2.is_some() {
                    // L1 may have stored some of it before failing (an fsync that failed after
                    // the records were indexed): the caller is told the write failed and L2
                    // never gets it, so L1 must not serve it as fresh (see `drop_local`), nor
                    // as a stale copy, nor unverified while L2 is down (see `left_behind`).
                    let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
                    self.left_behind.record(Removal::Keys(&keys));
                    self.distrust_everything();
                }
                Err(e)
            }
        }
    }

    /// Refuses, before L1 is written, a value L2 could never take (its own checks, local
    /// arithmetic: too large for Memcached, a key Redis keeps for tag sets). Written first and
    /// refused by L2 after, it had to be taken out of L1 again, and a write whose L2 part goes to
    /// the write-behind or the replay queue would not hear L2's answer before returning.
    pub(crate) fn check_l2_input(&self, items: &[(&str, &[u8])]) -> Result<()> {
        if let Some(l2) = &self.l2 {
            for (key, value) in items {
                l2.check_value(key, value.len())?;
            }
        }
        Ok(())
    }

    /// The part of a write before L2, shared by both APIs, once the caller owns the keys'
    /// stripes (`ordered`, from `KeyOrder::order` or its async form, see `guard`): input
    /// checks, L1, and where L2's part goes. The caller holds the returned guard until L2 (or
    /// a queue) has the write, so the writes of a key reach both levels in one order. `kept`:
    /// a refresh-ahead reload's store, and the entry it replaced (see `route_write`).
    pub(crate) fn begin_write<'a>(
        &'a self,
        ordered: WriteGuard<'a>,
        (keys, kept): (&[&str], Option<&Kept>),
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<(WriteGuard<'a>, Route<'a>)> {
        // The key rule a read and a delete check before any level is asked: left to L1, a bad
        // key counted as an L1 failure, and only where no L2 refused it first.
        for (key, _) in items {
            crate::keys::check_key(key)?;
        }
        self.check_l2_input(items)?;
        self.write_l1(items, ttl)?;
        Ok((ordered, self.route_write((keys, kept), items, ttl)))
    }

    /// Where the L2 part of a write of `items` (whose keys are `keys`) goes: the replay queue
    /// while a key has a queued op there (with write-behind on, once the keys' older writes
    /// there are settled), else the write-behind queue when it is on and has room, else through.
    ///
    /// `kept`: a refresh-ahead reload's store with an entry to put back if L2 does not take it
    /// (see `reload_keep`). With `fallback_on_error = false` it goes through, as a write the
    /// queue has no room for does: queued, its failed batch took it out of L1 on the writer
    /// thread, long after the store let go of the key, with nothing to put back (for the same
    /// reason the store gives way to a write of its key the queue holds: `reload_yields`). With
    /// `true` a failed batch leaves its values in L1 (whether or not the replay queue takes
    /// them), so it may be queued; the entry is put back where the replay queue refuses the
    /// write at once.
    pub(crate) fn route_write(
        &self,
        (keys, kept): (&[&str], Option<&Kept>),
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Route<'_> {
        let Some(l2) = &self.l2 else {
            return Route::Done(Ok(()));
        };
        if kept.is_some() && !self.fallback_on_error && self.behind.is_some() {
            return Route::Through { l2, settle: true };
        }
        match self.push_behind(keys, items, ttl) {
            Some(Pushed::Queued) => Route::Behind,
            // A key waits in the replay queue, so the write goes there, after it; but another
            // key of the batch may have an older write queued or in flight here, which a failure
            // would replay after this one. Settled first (as a full queue does), the shell then
            // finds the key still pending and queues the batch behind whatever that write left.
            Some(Pushed::Replay) => Route::Through { l2, settle: true },
            Some(Pushed::Full) => {
                self.metrics.consistency.behind_overflows.incr();
                Route::Through { l2, settle: true }
            }
            None if self.must_queue(keys) => {
                Route::Done(self.queued_or_put_back(items, self.queue_sets(items, ttl), kept))
            }
            None => Route::Through { l2, settle: false },
        }
    }

    /// What to do with L2's answer to a write: a failure hidden by `fallback_on_error` is
    /// queued for replay (when there is a queue).
    pub(crate) fn finish_write(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        timed: Timed<()>,
    ) -> Result<()> {
        self.finish_write_keeping(items, ttl, timed, None)
    }

    /// [`finish_write`](Self::finish_write) for a refresh-ahead reload's store: where L2 did not
    /// take it and nothing hides that, the entry it replaced (`kept`) goes back into L1 rather
    /// than the key be taken out (see `reload_keep`).
    pub(crate) fn finish_write_keeping(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        (started, result): Timed<()>,
        kept: Option<&Kept>,
    ) -> Result<()> {
        let m = &self.metrics.distributed;
        time_l2(&m.set_latency, started, &result);
        match result {
            Ok(()) => {
                m.sets.add(items.len() as u64);
                self.nudge_replay();
                Ok(())
            }
            Err(e) if e.is_bad_input() => {
                // L2 refused the value (too large for memcached, say): take it out of L1 too, so
                // that a failed set leaves every instance reading the same value: L2's older one,
                // or a miss where a memcached server dropped it when it refused the set. A
                // partial batch names the items refused; L2 stored the others, which stay, but
                // for those whose node was not reached: as any unreached write, they stay in L1
                // and wait for replay under `fallback_on_error` (dropped, they would leave L2
                // the older value), and leave L1 without it.
                let (refused, unsent): (Vec<&str>, Vec<(&str, &[u8])>) = match &e {
                    // A level of the caller's own written before `refused` existed names its
                    // refusals in `failed` alone, with a refusal as the cause.
                    Error::PartialBatch(p) if p.refused.is_empty() => (
                        p.failed
                            .iter()
                            .filter_map(|&i| items.get(i).map(|(k, _)| *k))
                            .collect(),
                        Vec::new(),
                    ),
                    Error::PartialBatch(p) => (
                        p.refused
                            .iter()
                            .filter_map(|&i| items.get(i).map(|(k, _)| *k))
                            .collect(),
                        p.unreached()
                            .iter()
                            .filter_map(|&i| items.get(i).copied())
                            .collect(),
                    ),
                    _ => (items.iter().map(|(k, _)| *k).collect(), Vec::new()),
                };
                // Saturating: a level of the caller's own may list more failed items than sent.
                m.sets
                    .add(items.len().saturating_sub(refused.len() + unsent.len()) as u64);
                self.undo_local(&refused);
                if !self.fallback_on_error {
                    // Unreached items the caller is told of are taken out of L1 too, as when
                    // the batch had no refusal (below): nothing replays them.
                    self.undo_local_items(&unsent);
                } else if !unsent.is_empty() {
                    // A queue failure is counted and logged there; the refusal is what the
                    // caller is told, and its `unreached` still names these items.
                    let _ = self.queued_or_undone(&unsent, self.queue_failed_sets(&unsent, ttl));
                }
                let first = refused.first().copied().unwrap_or("");
                self.failed(Level::Distributed, "set", first, e)
            }
            Err(e) => match unreached(e) {
                // Some nodes have the write: only the items of the others wait for replay.
                Ok((failed, _, error)) => {
                    let unsent: Vec<(&str, &[u8])> =
                        failed.iter().filter_map(|&i| items.get(i).copied()).collect();
                    // The reached nodes stored theirs, whether or not the error is hidden.
                    // Saturating: a level of a user's own may name an index twice.
                    m.sets.add(items.len().saturating_sub(unsent.len()) as u64);
                    let first = unsent.first().map_or("", |(k, _)| *k);
                    if !self.hidden(Level::Distributed, "set", first, &error) {
                        // Told the write failed, the caller may go on as if it had not been
                        // made; L1 must not keep it either (see below).
                        self.undo_or_put_back(&unsent, kept);
                        return Err(error);
                    }
                    let queued = self.queued_or_put_back(&unsent, self.queue_failed_sets(&unsent, ttl), kept);
                    self.lost_through(&unsent, &error, &queued);
                    queued
                }
                Err(e) => {
                    let first = items.first().map_or("", |(k, _)| *k);
                    if !self.hidden(Level::Distributed, "set", first, &e) {
                        // Not hidden (`fallback_on_error = false`), so not queued for replay
                        // either: L1 alone would hold the value, which this instance would
                        // serve until its TTL while every other one, told by the message to
                        // drop its copy, reads L2's older value (or L2's new one, after a
                        // timeout that hid a write L2 did make). Taken out of L1, every
                        // instance reads what L2 holds, as after a value L2 refused. A
                        // reload's older entry goes back instead (see `reload_keep`).
                        self.undo_or_put_back(items, kept);
                        return Err(e);
                    }
                    let queued = self.queued_or_put_back(items, self.queue_failed_sets(items, ttl), kept);
                    self.lost_through(items, &e, &queued);
                    queued
                }
            },
        }
    }

    /// `queued`, the replay queue's answer to taking `items` (whose write did not reach L2):
    /// if it refused them (its device full, a latched log), they leave L1 too. Nothing will
    /// send them to L2 and the caller is told they failed, so kept in L1 they were served here
    /// until their TTL while L2, and every other instance (told of the write), held the older
    /// value, or got it from the key's older op still queued, as after any write L2 failed
    /// that nothing replays (`fallback_on_error = false`).
    pub(crate) fn queued_or_undone(&self, items: &[(&str, &[u8])], queued: Result<()>) -> Result<()> {
        self.queued_or_put_back(items, queued, None)
    }

    /// [`queued_or_undone`](Self::queued_or_undone) for a refresh-ahead reload's store: the
    /// entry it replaced (`kept`) goes back into L1 rather than the key be taken out (see
    /// `reload_keep`).
    pub(crate) fn queued_or_put_back(
        &self,
        items: &[(&str, &[u8])],
        queued: Result<()>,
        kept: Option<&Kept>,
    ) -> Result<()> {
        if queued.is_err() {
            self.undo_or_put_back(items, kept);
        }
        queued
    }

    // ---- deletes ----

    /// Refuses, before any level is touched, a delete of a key no level can hold (empty, or
    /// longer than [`MAX_KEY_LEN`](crate::keys::MAX_KEY_LEN)), or that L2 refuses whatever its
    /// value (the namespace Redis keeps for tag sets), as a write of it is refused
    /// ([`check_l2_input`](Self::check_l2_input)). Sent on, L1's refusal looked like a delete L1
    /// could not apply, and distrusted every L1 entry; in a batch, L1 deleted the keys before
    /// the bad one while L2 refused the whole batch; and an L2 whose breaker was open, or a key
    /// queued for replay, took a delete the connected L2 refused.
    pub(crate) fn check_delete(&self, keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|key| self.check_delete_key(key))
    }

    /// [`check_delete`](Self::check_delete) of one key.
    pub(crate) fn check_delete_key(&self, key: &str) -> Result<()> {
        crate::keys::check_key(key)?;
        match &self.l2 {
            // A value of no bytes: what L2 refuses then, it refuses for the key.
            Some(l2) => l2.check_value(key, 0),
            None => Ok(()),
        }
    }

    /// Refuses the read of a key no write or delete of it could pass
    /// ([`check_delete_key`](Self::check_delete_key)), before any level or the memory tier is
    /// asked: levels answered such a key differently (an L1 read `""` or an over-long key as a
    /// miss, Redis refused `""`), so the same bad key was a miss or an error by the levels
    /// configured.
    pub(crate) fn check_read_key(&self, key: &str) -> Result<()> {
        self.check_delete_key(key)
    }

    /// [`check_read_key`](Self::check_read_key) of every key of a batch read: one bad key
    /// refuses the batch, as it refuses a batch write or delete.
    pub(crate) fn check_read_keys(&self, keys: &[&str]) -> Result<()> {
        self.check_delete(keys)
    }

    /// A loading call's input: the key as a read checks it, and the TTL its store would use,
    /// both before the loader could run (a value loaded for a bad key could not be stored,
    /// and a loader on a thread of its own handed it out anyway).
    pub(crate) fn check_load(&self, key: &str, ttl: Option<Duration>) -> Result<()> {
        self.check_read_key(key)?;
        check_ttl(key, ttl)
    }

    /// Counts an L1 delete of `n` keys and turns the result into a count. An L1 that failed
    /// partway (a file store deletes key by key) is reported by its failure, not its partial
    /// batch: a partial batch from a manager's delete names the keys whose L2 node it did not
    /// reach, which wait for replay (see `finish_delete`), and a caller could not tell L1's from
    /// those.
    pub(crate) fn count_delete_l1(&self, n: usize, result: Result<u64>) -> Result<u64> {
        let m = &self.metrics.local;
        m.deletes.add(n as u64);
        result.map_err(|e| {
            m.errors.incr();
            match e {
                Error::PartialBatch(partial) => partial.cause,
                other => other,
            }
        })
    }

    /// The L1 step of a delete of `keys`, done: counted as
    /// [`count_delete_l1`](Self::count_delete_l1) counts it, and if L1 failed (other than on bad
    /// input) with an L2 at hand, every L1 entry is made suspect now, before L2 is asked: L1 may
    /// still hold what the delete takes out of L2 and, through the message, out of every other
    /// instance, and must not serve that as fresh (see `drop_local`), nor as fail-safe's stale
    /// copy or unverified while L2 is down (see `left_behind`). Not once L2 has answered:
    /// an async delete dropped while it waits for L2 (a caller's timeout) never gets there, yet
    /// its L2 part goes on (L2 has the command, or a queue takes it back). Input L1 refused
    /// left nothing behind.
    pub(crate) fn delete_l1_done(&self, keys: &[&str], result: Result<u64>) -> Result<u64> {
        let result = self.count_delete_l1(keys.len(), result);
        if matches!(&result, Err(e) if !e.is_bad_input()) && self.l2.is_some() {
            self.left_behind.record(Removal::Keys(keys));
            self.distrust_everything();
        }
        result
    }

    /// The L2 step of a sync delete of `keys`: `Ok(None)` if the op went to a queue instead
    /// of L2 (see [`settle_behind`](Self::settle_behind) and [`must_queue`](Self::must_queue)),
    /// `Ok(Some(_))` with L2's answer to `send`, `Err` if no queue could take the op. Passed to
    /// [`finish_delete_or_unqueued`](Self::finish_delete_or_unqueued) whatever it is.
    pub(crate) fn delete_l2(
        &self,
        keys: &[&str],
        send: impl FnOnce(&dyn crate::storage::DistributedStorage) -> Result<u64>,
    ) -> Result<Option<Result<u64>>> {
        let Some(l2) = &self.l2 else {
            return Ok(None);
        };
        if !self.settle_behind(keys, None)? {
            return Ok(None);
        }
        if self.must_queue(keys) {
            self.queue_deletes(keys)?;
            return Ok(None);
        }
        Ok(Some(send(l2.as_ref())))
    }

    /// [`finish_delete`](Self::finish_delete) after an L2 step that may have failed to queue
    /// its op (`Err`). L1's outcome is handled all the same: returned at once, that error left
    /// L1 trusted after its own delete had failed. It is reported after L1's error, as an L2
    /// error is.
    pub(crate) fn finish_delete_or_unqueued(
        &self,
        keys: &[&str],
        l1: Result<u64>,
        l2: Result<Option<Result<u64>>>,
        owed: L2Owed,
    ) -> Result<u64> {
        let (l2, unqueued) = match l2 {
            Ok(l2) => (l2, Ok(())),
            Err(e) => (None, Err(e)),
        };
        let removed = self.finish_delete(keys, l1, l2, owed)?;
        unqueued?;
        Ok(removed)
    }

    /// Combines both levels' answers to a delete of `keys`: an L1 error always reaches the
    /// caller (after L2 was tried), an L2 error per `fallback_on_error` (a hidden one is queued
    /// for replay). `l2 = None`: L2 was not asked. The count is the larger of the levels'.
    /// Deletes are counted but not timed. An L1 failure has already made L1 suspect (see
    /// [`delete_l1_done`](Self::delete_l1_done)).
    pub(crate) fn finish_delete(
        &self,
        keys: &[&str],
        l1: Result<u64>,
        l2: Option<Result<u64>>,
        owed: L2Owed,
    ) -> Result<u64> {
        let first_key = keys.first().copied().unwrap_or("");
        let removed_l2 = match l2 {
            None => 0,
            Some(result) => {
                let m = &self.metrics.distributed;
                m.deletes.add(keys.len() as u64);
                match result {
                    Ok(removed) => {
                        self.nudge_replay();
                        removed
                    }
                    // Report L1's error first if both failed.
                    Err(e) if l1.is_err() => {
                        m.failure(Level::Distributed.name(), &e);
                        if self.fallback_on_error {
                            let _ = self.queue_failed_deletes(keys);
                        }
                        0
                    }
                    Err(e) => match unreached(e) {
                        // Some nodes deleted theirs: only the others' keys wait for replay.
                        Ok((failed, served, error)) => {
                            let unsent: Vec<&str> =
                                failed.iter().filter_map(|&i| keys.get(i).copied()).collect();
                            let first = unsent.first().copied().unwrap_or(first_key);
                            if !self.delete_hidden(first, &error, owed) {
                                return Err(error);
                            }
                            self.queue_failed_deletes(&unsent)?;
                            match served {
                                Served::Removed(n) => n,
                                _ => 0,
                            }
                        }
                        Err(e) => {
                            if !self.delete_hidden(first_key, &e, owed) {
                                return Err(e);
                            }
                            self.queue_failed_deletes(keys)?;
                            0
                        }
                    },
                }
            }
        };
        Ok(l1?.max(removed_l2))
    }

    /// Whether `fallback_on_error` hides L2's failed delete of `key` (counted and logged
    /// either way). Not for a delete whose keys must leave L2 ([`L2Owed::Reported`]) when no
    /// replay queue takes the failed ones.
    fn delete_hidden(&self, key: &str, error: &Error, owed: L2Owed) -> bool {
        // `replays_failures` alone is the setting: a memory L1 has no directory for the queue.
        let queued = self.replays_failures && self.replay.is_some();
        if owed == L2Owed::Reported && !queued {
            self.metrics.distributed.failure(Level::Distributed.name(), error);
            return false;
        }
        self.hidden(Level::Distributed, "delete", key, error)
    }
}

/// What a delete owes when L2 fails it and `fallback_on_error` is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum L2Owed {
    /// Nothing more: the failure is hidden (and queued for replay, if there is a queue); without
    /// a queue L2 keeps the value, as an L1-only write is documented to leave it.
    Hidden,
    /// Unless a replay queue takes the failed deletes, the failure reaches the caller: a tag's
    /// invalidation forgets its members once the deletes return, and a value L2 kept would be
    /// listed by no tag, out of reach of a retry.
    Reported,
}
