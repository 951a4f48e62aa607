//! The writer thread of write-behind (`uno-cache-l2-writer`): it takes a batch from the
//! [`WriteQueue`], sends it to L2 in one call, publishes its keys' invalidations once L2 has the
//! values, and hands what L2 did not take to the replay queue (see the parent module for the
//! rules). `flush`, invalidations by prefix or tag and shutdown drain the queue the same way on
//! the caller's thread.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::{Queued, WriteQueue, BATCH};
use crate::error::{key_for_error, Error, Result};
use crate::manager::policy::{self, Shared};
use crate::manager::workers::Workers;
use crate::replay::Push;
use crate::storage::DistributedStorage;

/// Starts the writer thread (`uno-cache-l2-writer`), owned by `workers`.
pub(crate) fn start_writer(
    workers: &mut Workers,
    shared: Weak<Shared>,
    queue: Arc<WriteQueue>,
) -> Result<()> {
    queue.wake_writer_on_shutdown();
    workers.spawn("l2-writer", move || {
        while queue.wait_for_work() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            shared.send_behind();
        }
    })
}

impl Shared {
    /// Sends every write queued now (on the caller's thread); for `flush`, prefix and tag
    /// invalidation and shutdown.
    pub(crate) fn drain_behind(&self) {
        let Some(queue) = &self.behind else {
            return;
        };
        // Bounded by what is queued now, so a steady stream of new sets cannot keep it here.
        let rounds = queue.len() / BATCH + 2;
        for _ in 0..rounds {
            if self.send_behind() == 0 {
                break;
            }
        }
        // A batch the writer thread had in flight has landed once `sending` is free.
        drop(queue.sending.lock());
    }

    /// Sends one batch; returns its size.
    pub(crate) fn send_behind(&self) -> usize {
        let (Some(queue), Some(l2)) = (&self.behind, &self.l2) else {
            return 0;
        };
        let _one_batch = queue.sending.lock();
        let batch = queue.take();
        if batch.is_empty() {
            return 0;
        }
        // A panic while sending (in an L2 a user plugged in, say) left the batch in flight for
        // good: never sent nor replayed, a settle of one of its keys waiting on it forever (an
        // async one without a deadline, holding the key), and the writer thread gone. It goes
        // the way of a failed batch instead, and the writer goes on.
        let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.send_batch(queue, l2.as_ref(), &batch);
        }));
        if sent.is_err() {
            tracing::error!(
                keys = batch.len(),
                "sending a write-behind batch to L2 panicked; the batch is handled as a failed one"
            );
            let error = Error::Backend {
                level: "L2",
                op: "set_each",
                reason: "the call panicked".to_owned(),
            };
            self.behind_failed(&error, &batch);
        }
        let keys: Vec<&str> = batch.iter().map(|(key, _)| key.as_str()).collect();
        self.publish_keys(&keys);
        queue.land(&batch);
        batch.len()
    }

    /// Sends `batch` (taken from `queue`) to `l2`; what did not reach it goes to the replay
    /// queue, what L2 refused leaves L1.
    fn send_batch(&self, queue: &WriteQueue, l2: &dyn DistributedStorage, batch: &[(String, Queued)]) {
        let now = self.clock.now_ms();
        let (live, expired): (Vec<_>, Vec<_>) = batch.iter().partition(|(_, q)| q.expires_at_ms > now);
        let items: Vec<(&str, &[u8], Option<Duration>)> = live
            .iter()
            .map(|(key, q)| {
                // L2 counts a TTL from its receipt: after a step back of the wall clock the time
                // left to the queued expiry is longer by the step, so it is capped as the
                // replay queue caps it.
                let ttl = Duration::from_millis(q.expires_at_ms - now).min(self.distributed_ttl);
                (key.as_str(), &*q.value, Some(ttl))
            })
            .collect();
        // A write that expired while queued must still replace the older value in L2.
        let dead: Vec<&str> = expired.iter().map(|(key, _)| key.as_str()).collect();
        let m = &self.metrics.distributed;
        let started = Instant::now();
        // Writes that did not reach L2 while others of the batch did (a partial batch, or the
        // deletes after L2 took the sets): only these go to the replay queue.
        let mut unreached: Vec<(String, Queued)> = Vec::new();
        let mut unreached_error = None;
        // Writes L2 refused as bad input after they were sent (a partial batch naming them,
        // whether L2 took, did not reach or also refused the others): they leave L1 below, and
        // only the unreached ones are replayed. A batch refused whole before it was sent (a bare
        // bad-input error: an item failed the level's own check) is sent again one by one below.
        // `after_sent`: L2 took the batch's earlier call, so a failure of this one leaves only
        // its own items unsent.
        let mut refused: Vec<String> = Vec::new();
        let mut refused_error = None;
        let mut partial = |result: Result<()>, sent: &[&(String, Queued)], after_sent: bool| match result {
            Err(Error::PartialBatch(p)) if !p.cause.is_bad_input() => {
                unreached.extend(p.failed.iter().filter_map(|&i| sent.get(i).map(|q| (*q).clone())));
                unreached_error.get_or_insert(Error::PartialBatch(p));
                Ok(())
            }
            Err(Error::PartialBatch(p)) if !p.refused.is_empty() => {
                refused.extend(p.refused.iter().filter_map(|&i| sent.get(i).map(|q| q.0.clone())));
                let unsent = p.unreached();
                unreached.extend(unsent.iter().filter_map(|&i| sent.get(i).map(|q| (*q).clone())));
                refused_error.get_or_insert(Error::PartialBatch(p));
                Ok(())
            }
            Err(e) if after_sent && !e.is_bad_input() => {
                unreached.extend(sent.iter().map(|q| (*q).clone()));
                unreached_error.get_or_insert(e);
                Ok(())
            }
            other => other,
        };
        let mut result = if items.is_empty() {
            Ok(())
        } else {
            partial(l2.set_each(&items), &live, false)
        };
        if result.is_ok() && !dead.is_empty() {
            result = partial(l2.delete_many(&dead).map(drop), &expired, !items.is_empty());
        }
        policy::time_l2(&m.set_latency, started, &result);
        match result {
            Ok(()) => {
                // A write that expired while queued reaches L2 as a delete, and counts as one.
                let dead_unsent = unreached.iter().filter(|(_, q)| q.expires_at_ms <= now).count()
                    + refused.iter().filter(|key| dead.contains(&key.as_str())).count();
                let live_unsent = (unreached.len() + refused.len()).saturating_sub(dead_unsent);
                m.sets.add(items.len().saturating_sub(live_unsent) as u64);
                m.deletes.add(dead.len().saturating_sub(dead_unsent) as u64);
                self.metrics.consistency.behind_flushes.incr();
                if let Some(e) = &refused_error {
                    let keys: Vec<&str> = refused.iter().map(String::as_str).collect();
                    self.refused_behind(&keys, e);
                }
                match (&unreached_error, &refused_error) {
                    (Some(e), _) if !unreached.is_empty() => self.behind_failed(e, &unreached),
                    // Left unsent by the call that refused the others, counted with them.
                    (None, Some(e)) if !unreached.is_empty() => self.behind_unsent(e, &unreached),
                    _ => self.nudge_replay(),
                }
            }
            Err(e) if e.is_bad_input() => {
                self.send_one_by_one(&items, batch);
                // The deletes of writes that expired while queued were not sent yet; the sends
                // one by one may have outlasted a settle of one of their keys (see there).
                let dead: Vec<&str> = dead.into_iter().filter(|key| queue.in_flight(key)).collect();
                if !dead.is_empty() {
                    match l2.delete_many(&dead) {
                        Ok(_) => m.deletes.add(dead.len() as u64),
                        Err(e) => {
                            let expired: Vec<(String, Queued)> =
                                expired.iter().map(|q| (*q).clone()).collect();
                            self.behind_failed(&e, &expired);
                        }
                    }
                }
            }
            Err(e) => self.behind_failed(&e, batch),
        }
    }

    /// A batch L2 refused as bad input: the others must still land; a refused value leaves L1
    /// too, so every instance reads the same (older) value.
    fn send_one_by_one(&self, items: &[(&str, &[u8], Option<Duration>)], batch: &[(String, Queued)]) {
        let (Some(l2), Some(queue)) = (&self.l2, &self.behind) else {
            return;
        };
        let m = &self.metrics.distributed;
        let mut failed = Vec::new();
        for (key, value, ttl) in items {
            // One L2 round trip per key can outlast a settle's wait, which is sized for one
            // call: a key it gave up on has a newer write or delete that this would undo.
            if !queue.in_flight(key) {
                continue;
            }
            match l2.set(key, value, *ttl) {
                Ok(()) => m.sets.incr(),
                Err(e) if e.is_bad_input() => self.refused_behind(&[*key], &e),
                Err(e) => failed.push((*key, e)),
            }
        }
        if let Some((_, e)) = failed.first() {
            let failed: Vec<(String, Queued)> = batch
                .iter()
                .filter(|(key, _)| failed.iter().any(|(k, _)| k == key))
                .cloned()
                .collect();
            self.behind_failed(e, &failed);
        }
    }

    /// Write-behind values L2 refused as bad input: counted, and taken out of L1 too so every
    /// instance reads the same (older) value; not a key written again since (queued), nor one a
    /// settle took over meanwhile (no longer in flight): their newer op goes on, so the refused
    /// write is not lost, and L1 holds the newer value.
    fn refused_behind(&self, keys: &[&str], error: &Error) {
        let n = keys.len() as u64;
        // One failed call, however many of its items it refused, shown as the last error, as a
        // write-through's refusal is (`finish_write`).
        self.metrics.distributed.failure("L2", error);
        self.metrics.consistency.behind_failures.add(n);
        tracing::error!(key = %key_for_error(keys.first().copied().unwrap_or("")), keys = n, error = %error,
            "L2 refused write-behind values; removed from L1 too so every instance reads the same value");
        let Some(queue) = &self.behind else {
            return;
        };
        let current = queue.current_writes(keys.iter().copied());
        queue.lost.note(&current, || {
            format!("L2 refused them ({error}), and they left L1 too")
        });
        self.undo_local(&current);
    }

    /// A batch that did not reach L2: counted, and queued for replay where there is a queue.
    fn behind_failed(&self, error: &Error, batch: &[(String, Queued)]) {
        self.metrics.distributed.failure("L2", error);
        self.behind_unsent(error, batch);
    }

    /// [`behind_failed`](Self::behind_failed) for writes of a call whose failure is counted
    /// already (with the refusal of its other items): one call, one L2 error.
    fn behind_unsent(&self, error: &Error, batch: &[(String, Queued)]) {
        self.metrics.consistency.behind_failures.add(batch.len() as u64);
        if error.is_breaker_skip() {
            tracing::debug!(
                keys = batch.len(),
                "write-behind batch skipped by the open circuit breaker"
            );
        } else {
            tracing::warn!(keys = batch.len(), error = %error, "write-behind batch did not reach L2");
        }
        let Some(queue) = &self.behind else {
            return;
        };
        // Each batch the breaker skips gets here, as often as the writer sends: a line a second.
        let lost_lines = &self.metrics.consistency.behind_lost_lines;
        if !self.replays_failures || self.replay.is_none() {
            if let Some(unlogged) = lost_lines.pass() {
                tracing::warn!(keys = batch.len(), unlogged,
                    "failed L2 writes are not queued (no replay queue: offline.replay = false, fallback_on_error = false, or no directory for it): L2 keeps older values for these keys until they expire (unlogged: batches since the last line)");
            }
            let lost = queue.current_writes(batch.iter().map(|(key, _)| key.as_str()));
            queue.lost.note(&lost, || {
                format!("they did not reach L2 ({error}) and no replay queue takes them (offline.replay needs fallback_on_error = true and a directory)")
            });
            if !self.fallback_on_error {
                // As for a write-through L2 failed (`finish_write`): the other instances, told
                // of the batch, read L2's older value, and this one must not serve the lost
                // write from L1 alone until its TTL.
                self.undo_local(&lost);
            }
            return;
        }
        // Under the queue lock: a set of one of these keys either is queued already (newer, so
        // this older value is not replayed) or will see the key pending in the replay queue.
        let st = queue.state.lock();
        // Nor one a settle took over when it gave up waiting (it is no longer in flight): the
        // caller's delete or write went on, and replaying this older value would undo it.
        let pushes: Vec<Push<'_>> = batch
            .iter()
            .filter(|(key, _)| !st.queued.contains_key(key) && st.in_flight.contains_key(key))
            .map(|(key, q)| Push::Set {
                key,
                value: &q.value,
                expires_at_ms: q.expires_at_ms,
            })
            .collect();
        match self.push_replay_overflowed(&pushes) {
            Err(e) => {
                // No caller is left to tell: the log says so now, the next flush to whoever asks.
                let keys: Vec<&str> = pushes.iter().map(Push::key).collect();
                queue.lost.note(&keys, || {
                    format!("they did not reach L2 ({error}) and the replay queue could not take them ({e})")
                });
                if let Some(unlogged) = lost_lines.pass() {
                    tracing::error!(keys = pushes.len(), unlogged,
                        "a write-behind batch that did not reach L2 could not be queued for replay either: L2 keeps older values for these keys until they expire or are written again (unlogged: batches since the last line)");
                }
            }
            // The full queue lost them as surely (it logs so, and stats says it overflowed).
            Ok(overflowed) => {
                let keys: Vec<&str> = overflowed
                    .iter()
                    .filter_map(|&i| pushes.get(i))
                    .map(Push::key)
                    .collect();
                queue.lost.note(&keys, || {
                    format!("they did not reach L2 ({error}) and the replay queue, full, lost them (consistency.replay_overflowed)")
                });
            }
        }
        drop(st);
    }
}
