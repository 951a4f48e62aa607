//! Cross-process consistency and the offline mode: the manager's side of the replay queue and
//! the invalidation backplane (docs/design.md, sections 4 and 5). Publishing and receiving are in
//! `backplane.rs` (feature `redis`); the rules are all stated here.
//!
//! - **Replay.** An L2 write or delete that failed (hidden by `fallback_on_error`) is pushed to
//!   the durable [`ReplayQueue`](crate::replay::ReplayQueue) after L1 was written. While a key has a queued op, a new write
//!   of it is queued too (never sent to L2 directly, or the older op's replay could overwrite
//!   it), a read never backfills it from L2, a read that misses L1 does not ask L2, and a
//!   suspect L1 entry of it is settled by the op, which L1 may have lost (`settle_pending`;
//!   under `trust`, which never asks, every queued key at start-up: `settle_queued_in_l1`;
//!   with fail-safe, whose stale copies no read settles, every queued delete at start-up).
//!   The queue is replayed (deletes first, acked after L2 confirmed each op) by the `offline`
//!   thread every `offline.replay_interval_ms`, at once after an L2 call succeeds, and by
//!   [`CacheManager::replay_now`](super::CacheManager::replay_now).
//! - **Publish.** Every set and delete (and batch) publishes one `Keys` invalidation after both
//!   levels; a failed publish is counted (the backplane re-sends it).
//! - **Receive.** Another instance's invalidation drops keys from L1 only, under the backfill
//!   guard (a backfill of a value read from L2 before the message can never land after it).
//! - **Loss of certainty.** When the subscription is lost, every L1 entry becomes suspect and,
//!   until it is restored, every L1 hit is checked against L2; on restore, entries written
//!   during the outage become suspect too. Suspect entries follow `consistency.restart_policy`
//!   (revalidate, trust, drop), like entries restored from disk at start-up.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use super::left_behind::Removal;
use super::policy::Shared;
use crate::config::RestartPolicy;
use crate::error::{key_for_error, Error, Result, Served};
use crate::log_limit::LogLimit;
use crate::replay::{Push, PushOutcome, ReplayAction, ReplayOp};

/// How often a read may try again to mark L1's entries suspect after it failed (see
/// [`Shared::retry_trust`]).
pub(crate) const TRUST_RETRY_MS: u64 = 1000;

/// The longest wait between two such tries while they keep failing.
pub(crate) const TRUST_RETRY_MAX_MS: u64 = 60_000;

/// Ops replayed per batch (one `ack_many` fsync per batch).
const REPLAY_BATCH: usize = 256;

impl Shared {
    // ---- replay ----

    /// Whether a write or delete of `keys` must go to the replay queue instead of L2: one of
    /// them has a queued op.
    pub(crate) fn must_queue(&self, keys: &[&str]) -> bool {
        match &self.replay {
            Some(q) => !q.is_empty() && keys.iter().any(|k| q.is_pending(k)),
            None => false,
        }
    }

    /// Absolute expiry (Unix ms) of a queued set with this `set` TTL.
    pub(crate) fn replay_expiry_ms(&self, ttl: Option<Duration>) -> u64 {
        let ttl_ms = u64::try_from(self.l2_ttl(ttl).as_millis()).unwrap_or(u64::MAX);
        self.clock.now_ms().saturating_add(ttl_ms).max(1)
    }

    /// Queues writes that did not reach L2. Without a queue, nothing to do.
    pub(crate) fn queue_sets(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let expires_at_ms = self.replay_expiry_ms(ttl);
        let pushes: Vec<Push<'_>> = items
            .iter()
            .map(|(key, value)| Push::Set {
                key,
                value,
                expires_at_ms,
            })
            .collect();
        self.push_replay(&pushes)
    }

    /// Queues writes that failed to reach L2, if this run replays its failures.
    pub(crate) fn queue_failed_sets(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if !self.replays_failures {
            return Ok(());
        }
        self.queue_sets(items, ttl)
    }

    /// Queues deletes that failed to reach L2, if this run replays its failures.
    pub(crate) fn queue_failed_deletes(&self, keys: &[&str]) -> Result<()> {
        if !self.replays_failures {
            return Ok(());
        }
        self.queue_deletes(keys)
    }

    /// Queues deletes that did not reach L2.
    pub(crate) fn queue_deletes(&self, keys: &[&str]) -> Result<()> {
        let pushes: Vec<Push<'_>> = keys.iter().map(|key| Push::Delete { key }).collect();
        self.push_replay(&pushes)
    }

    /// Turns the replay queue's pending ops of keys under `prefix` into deletes; returns whether
    /// there were any. An invalidation of the prefix comes after them: replayed as they were,
    /// their sets would bring the keys back to L2, and to every instance that reads it, after
    /// the invalidation had cleared them (the queue keeps one op per key, the newest).
    pub(crate) fn queue_prefix_deletes(&self, prefix: &str) -> Result<bool> {
        let Some(q) = &self.replay else {
            return Ok(false);
        };
        let keys = q.pending_with_prefix(prefix);
        if keys.is_empty() {
            return Ok(false);
        }
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.queue_deletes(&keys)?;
        Ok(true)
    }

    pub(crate) fn push_replay(&self, pushes: &[Push<'_>]) -> Result<()> {
        self.push_replay_overflowed(pushes).map(drop)
    }

    /// [`push_replay`](Self::push_replay), returning the indices of the ops the full queue lost
    /// ([`PushOutcome::Overflowed`]): acknowledged write-behind writes that will never reach L2.
    pub(crate) fn push_replay_overflowed(&self, pushes: &[Push<'_>]) -> Result<Vec<usize>> {
        let Some(q) = &self.replay else {
            return Ok(Vec::new());
        };
        let c = &self.metrics.consistency;
        match q.push_many(pushes) {
            Ok(outcomes) => {
                let overflowed: Vec<usize> = outcomes
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| matches!(o, PushOutcome::Overflowed))
                    .map(|(i, _)| i)
                    .collect();
                let lost = overflowed.len();
                let downgraded = outcomes
                    .iter()
                    .filter(|o| matches!(o, PushOutcome::Downgraded { .. }))
                    .count();
                c.queued.add((pushes.len() - lost) as u64);
                c.queued_as_deletes.add(downgraded as u64);
                // Every write while L2 stays away finds the queue full: one line a second.
                let line = (lost > 0).then(|| c.queue_full_lines.pass()).flatten();
                if let Some(unlogged) = line {
                    tracing::error!(lost, unlogged,
                        "replay queue full: L2 writes were lost and L2 may hold stale values until reconciled (see CacheManager::clear_replay_overflow); unlogged: writes since the last line"
                    );
                }
                Ok(overflowed)
            }
            Err(e) => {
                c.queue_failures.add(pushes.len() as u64);
                if let Some(unlogged) = c.queue_failure_lines.pass() {
                    tracing::error!(error = %e, keys = pushes.len(), unlogged, "queueing failed L2 writes for replay failed (unlogged: writes since the last line)");
                }
                Err(e)
            }
        }
    }

    /// Wakes the replay thread if something is queued (after an L2 call succeeded).
    pub(crate) fn nudge_replay(&self) {
        if let (Some(q), Some(replayer)) = (&self.replay, &self.replayer) {
            if !q.is_empty() {
                replayer.nudge();
            }
        }
    }

    /// Sends queued ops to L2 in order (deletes first), acking each batch L2 confirmed; stops at
    /// the first L2 failure, except that of one node of a multi-node L2, whose keys wait while
    /// the other keys are replayed, and a value L2 refuses as bad input, whose key is dropped
    /// from both levels instead. Returns the number of ops replayed. Stops before the next op
    /// once the manager shuts down: a replay run for an async caller that gave up on it (a
    /// shutdown hook's timeout) would otherwise go on through the whole queue after the drop,
    /// on its own thread, and keep the queue and the levels open until it ends.
    pub(crate) fn replay_now(&self) -> Result<u64> {
        self.replay_until(&|| self.stop.is_fired())
    }

    /// [`replay_now`](Self::replay_now) that also stops before the next op once `stop()` holds
    /// (the manager is shutting down: the rest waits in the durable queue for the next start).
    pub(crate) fn replay_until(&self, stop: &dyn Fn() -> bool) -> Result<u64> {
        let (Some(q), Some(l2)) = (&self.replay, &self.l2) else {
            return Ok(0);
        };
        let _one_at_a_time = self.replay_lock.lock();
        // A failed write latched the queue: its acks are held in memory only, and the ops come
        // back at a restart, and every failed L2 write is lost, until the log is written anew.
        if let Err(e) = q.recover_if_due() {
            tracing::debug!(error = %e, "the replay queue is still latched by a write failure");
        }
        let c = &self.metrics.consistency;
        let mut replayed = 0u64;
        // The first op whose node was unreachable (one node of a multi-node L2): its key waits,
        // the other keys go on; the queue holds one op per key, so no key's order changes.
        let mut node_down: Option<(String, Error)> = None;
        // Once a tagging failed, the rest wait for the next pass: one tag timeout per pass.
        let mut tag_store_answers = true;
        loop {
            // Once a node is down, one pass over everything pending, so the keys of live nodes
            // are not stuck behind a batch of the dead node's.
            let ops = {
                // An op queued while an older write of its key was in a write-behind batch on
                // its way goes after that batch: waited for here. A batch taken later holds no
                // older write of these keys (the ops were queued after their keys' queued writes
                // were dropped), so the writer is held up only while the ops are read.
                let _after_the_batch_in_flight = self.behind.as_ref().map(|b| b.fence());
                q.pending_up_to(if node_down.is_some() {
                    usize::MAX
                } else {
                    REPLAY_BATCH
                })
            };
            if ops.is_empty() {
                // What keys that left the queue otherwise (a held ack released by the
                // recovery above) or whose tagging failed still owe (see `replayed_tags`).
                if tag_store_answers {
                    self.tag_replayed(stop);
                }
                return Ok(replayed);
            }
            let mut done: Vec<ReplayOp> = Vec::with_capacity(ops.len());
            let mut failure = None;
            let this_pass_is_full = node_down.is_some();
            let mut stopped = false;
            for op in ops {
                // Up to a million ops at one round trip each: the drop joining this thread (and
                // the write-behind drain after it) must not wait for all of them.
                if stop() {
                    stopped = true;
                    break;
                }
                // Owned until L2 has answered: a write or delete of the key made since the batch
                // was read queued a newer op, and this one, sent all the same, put the value that
                // op replaced back in L2 (published as fresh to the other instances, and kept
                // there until the newer op's own replay, for a whole outage if L2 failed again
                // first). A write that comes once the key is released finds it still pending
                // until the ack, so it is queued behind this op, never sent past it.
                let _key = self.guard.order([op.key.as_str()], false);
                if !q.still_pending(&op) {
                    // Superseded, or turned into a delete: what the key holds now is replayed
                    // in its turn (an ack would change nothing).
                    continue;
                }
                let result = match &op.action {
                    ReplayAction::Delete => l2.delete(&op.key).map(drop),
                    ReplayAction::Set { value, expires_at_ms } => match self.remaining_ms(*expires_at_ms) {
                        Some(ttl) => l2.set(&op.key, value, Some(ttl)),
                        None => l2.delete(&op.key).map(drop),
                    },
                };
                match result {
                    Ok(()) => done.push(op),
                    Err(e @ Error::NodeUnavailable { .. }) => {
                        node_down.get_or_insert((op.key, e));
                    }
                    // L2 will never take this value (a Memcached server whose `-I` is below
                    // `max_item_size`) or this key (one the open breaker let through unchecked,
                    // in the namespace Redis keeps for tag sets): retried, it would stop the
                    // queue for good. As for a write refused at once, no level keeps the key,
                    // so no instance reads a value the others cannot; the op is done.
                    // Counted as replayed (its delete reached L2, or L2 can hold nothing under
                    // that key), not as a failure: the replay goes on.
                    Err(e) if e.is_bad_input() => {
                        tracing::warn!(key = %key_for_error(&op.key), error = %e, "L2 refuses a replayed op; the key is dropped from both levels");
                        // Unless a newer op of the key was queued since: its value, in L1, is
                        // newer than the refused one, and its own replay decides. A write of
                        // the key queues its op while it owns the key, so owning it here (since
                        // before the send), the check and the delete see every such write whole.
                        if q.pending_seq(&op.key) == Some(op.seq) {
                            self.undo_local(&[op.key.as_str()]);
                        }
                        match l2.delete(&op.key) {
                            Ok(_) => done.push(op),
                            Err(e) if e.is_bad_input() => done.push(op),
                            Err(e) => {
                                failure = Some((op.key, e));
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        failure = Some((op.key, e));
                        break;
                    }
                }
            }
            if failure.is_none() && this_pass_is_full && !stopped {
                // Everything reachable is replayed; the unreachable node's keys wait.
                failure = node_down.take();
            }
            if !done.is_empty() {
                let acked = q.ack_many(&done);
                // Before the others hear of them: a tagged write among them is tagged again
                // now that its value can be read from L2 (see `replayed_tags`).
                if tag_store_answers {
                    tag_store_answers = self.tag_replayed(stop);
                }
                // L2 has them only now: the message published when they were queued came too
                // early (another instance may have read L2's older value back into its L1). Sent
                // whether or not the ack is durable (a full disk holds it in memory): L2 has them
                // either way, and an op replayed again after a restart is announced again.
                let keys: Vec<&str> = done.iter().map(|op| op.key.as_str()).collect();
                self.publish_keys(&keys);
                acked?;
                replayed += done.len() as u64;
                c.replayed.add(done.len() as u64);
            }
            if let Some((key, e)) = failure {
                c.replay_failures.incr();
                tracing::debug!(key = %key_for_error(&key), error = %e, replayed, "replay stopped by an L2 failure; retried later");
                return Err(e);
            }
            if stopped {
                return Ok(replayed);
            }
        }
    }

    /// The L2 TTL left until `expires_at_ms` (0 = never: the L2 TTL); `None` if it has passed.
    fn remaining_ms(&self, expires_at_ms: u64) -> Option<Duration> {
        if expires_at_ms == 0 {
            return Some(self.distributed_ttl);
        }
        let left = expires_at_ms
            .checked_sub(self.clock.now_ms())
            .filter(|&ms| ms > 0)?;
        Some(Duration::from_millis(left).min(self.distributed_ttl))
    }

    /// Makes L1 hold what the replay queue says of each of its keys: a queued set's value (with
    /// the op's expiry), and nothing for a queued delete or a set whose expiry has passed. Run
    /// once, while the manager is built under `restart_policy = "trust"`, before any read or
    /// worker. Why: the op was fsynced when queued, but the L1 write it records may have been
    /// lost (a power cut with the file store's periodic fsync, a kill with redb), and a delete
    /// L1 could not apply is queued all the same; other policies settle such an entry on its
    /// first read, as a suspect entry (`settle_pending`), but trust never asks L1 whether an
    /// entry is suspect, so the restored entry would be served over the op. One pass over the
    /// bounded queue keeps the hit path as it is. If L1 refuses, freshness checks are turned on
    /// instead: restored entries are then settled by their ops, or revalidated, when read.
    ///
    /// Without `sets` (the other policies, with fail-safe on): only the deletes, and the sets
    /// whose expiry has passed. A read settles a live entry by its op, but an expired one is read
    /// by fail-safe alone, which would serve the value the delete removed as a stale copy for
    /// the whole window (and after the replay, with the op gone, nothing would ever settle it).
    /// A delete L1 refuses leaves the key with no stale copy served (see `left_behind`).
    pub(crate) fn settle_queued_in_l1(&self, sets: bool) {
        use std::sync::atomic::Ordering;
        let Some(q) = &self.replay else {
            return;
        };
        if q.is_empty() {
            return;
        }
        let mut failed = false;
        for batch in q.pending().chunks(REPLAY_BATCH) {
            // Nothing else runs yet; taken all the same, as every L1 write of a key is.
            let _writing = self.guard.write(batch.iter().map(|op| op.key.as_str()));
            if let Err(e) = self.settle_batch_in_l1(batch, sets) {
                self.metrics.local.errors.incr();
                if !failed {
                    tracing::warn!(error = %e, "putting the replay queue's ops into L1 at start-up failed; L1 hits are checked for suspect entries instead");
                }
                failed = true;
                self.check_freshness.store(true, Ordering::Release);
                // On: each batch's deletes are tried, and those L1 refuses are remembered.
            }
        }
    }

    /// One batch of [`settle_queued_in_l1`](Self::settle_queued_in_l1); the caller guards its keys.
    fn settle_batch_in_l1(&self, ops: &[ReplayOp], with_sets: bool) -> Result<()> {
        let now = self.clock.now_ms();
        let mut deletes: Vec<&str> = Vec::new();
        let mut sets: Vec<(&str, &[u8], Option<Duration>)> = Vec::new();
        for op in ops {
            match &op.action {
                ReplayAction::Set { value, expires_at_ms } if *expires_at_ms == 0 || *expires_at_ms > now => {
                    let ttl = match *expires_at_ms {
                        0 => self.local_ttl,
                        at => Duration::from_millis(at - now).min(self.local_ttl),
                    };
                    sets.push((op.key.as_str(), value.as_slice(), Some(ttl)));
                }
                _ => deletes.push(op.key.as_str()),
            }
        }
        if !deletes.is_empty() {
            self.l1
                .delete_many(&deletes)
                .inspect_err(|_| self.left_behind.record(Removal::Keys(&deletes)))?;
        }
        if sets.is_empty() || !with_sets {
            return Ok(());
        }
        // An entry that already holds the queued bytes survived with its write: not rewritten.
        let keys: Vec<&str> = sets.iter().map(|(key, _, _)| *key).collect();
        let held = self.l1.get_many(&keys)?;
        let changed: Vec<(&str, &[u8], Option<Duration>)> = sets
            .into_iter()
            .zip(held)
            .filter(|((_, value, _), held)| held.as_ref().is_none_or(|h| h.value.as_slice() != *value))
            .map(|(set, _)| set)
            .collect();
        if !changed.is_empty() {
            self.l1.set_each(&changed)?;
            self.metrics.local.sets.add(changed.len() as u64);
        }
        Ok(())
    }

    // ---- receive ----

    /// Drops keys from L1 only, guarded against racing backfills; what L1 took out (see
    /// `take_out_of_l1`).
    pub(crate) fn drop_local(&self, keys: &[&str]) -> TakenOut {
        self.drop_local_keeping(keys).0
    }

    /// [`drop_local`](Self::drop_local), with L1's error where what it kept outlives this run
    /// (see `take_out_of_l1`).
    fn drop_local_keeping(&self, keys: &[&str]) -> (TakenOut, Option<Error>) {
        let lines = &self.metrics.consistency.undropped_lines;
        self.take_out_of_l1(keys, lines, "dropping invalidated keys from L1 failed")
    }

    /// Takes keys out of L1 whose write L2 did not take (it refused their values, or failed
    /// with `fallback_on_error` off), so every instance reads what L2 holds.
    pub(crate) fn undo_local(&self, keys: &[&str]) {
        let lines = &self.metrics.consistency.undone_lines;
        self.take_out_of_l1(keys, lines, "could not take values L2 did not take out of L1");
    }

    /// [`undo_local`](Self::undo_local) for the items of a write, by their keys.
    pub(crate) fn undo_local_items(&self, items: &[(&str, &[u8])]) {
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        self.undo_local(&keys);
    }

    /// Deletes `keys` from L1, guarded against racing backfills; what it took out. If L1 cannot
    /// delete (a full disk, a store latched read-only, a level a user plugged in that panicked),
    /// the keys it did not get to may still be there: every L1 entry becomes suspect rather
    /// than serve what the other levels and instances no longer have. Logged as `lines` lets
    /// it: while L1 refuses writes, every call fails so.
    ///
    /// With L1's error when what it kept outlives this run: only this run's distrust hides the
    /// kept entries where the next start serves restored entries without asking L2 (see
    /// [`next_start_trusts_l1`](Self::next_start_trusts_l1)), unless L1 was cleared instead
    /// (without an L2, suspect means cleared; that fails too on a store latched read-only). A
    /// caller must hear of it rather than take the keys for dropped. Otherwise the next start
    /// finds them suspect (every restored entry is) and asks L2.
    fn take_out_of_l1(
        &self,
        keys: &[&str],
        lines: &LogLimit,
        what: &'static str,
    ) -> (TakenOut, Option<Error>) {
        if keys.is_empty() {
            return (TakenOut::default(), None);
        }
        let _writing = self.guard.write(keys.iter().copied());
        match caught_l1("delete_many", || self.l1.delete_many(keys)) {
            Ok(removed) => (
                TakenOut {
                    removed,
                    through: keys.len(),
                },
                None,
            ),
            Err(e) => {
                if let Some(unlogged) = self.metrics.local.error_line(lines) {
                    tracing::warn!(error = %e, unlogged, "{what}; every L1 entry becomes suspect (unlogged: calls since the last line)");
                }
                self.left_behind.record(Removal::Keys(keys));
                let distrusted = self.distrust_everything();
                let taken = TakenOut::before(&e, keys.len());
                let cleared = distrusted && self.l2.is_none();
                let outlives = self.next_start_trusts_l1() && !cleared;
                (taken, outlives.then_some(e))
            }
        }
    }

    /// Whether the next start serves what L1 holds without asking L2: there is none, or
    /// `restart_policy = "trust"`. An entry this run only marked suspect is then served as
    /// current.
    pub(crate) fn next_start_trusts_l1(&self) -> bool {
        self.l2.is_none() || self.restart_policy == RestartPolicy::Trust
    }

    /// Every L1 entry becomes suspect (or, without an L2 to check them against, is dropped).
    /// Whether L1 did so: if it failed, `distrust_l1` is turned on until a later call succeeds
    /// (see [`retry_trust`](Self::retry_trust)): with an L2 at hand, every L1 hit is checked
    /// against L2 instead; without one, every L1 read misses, since nothing else can tell an
    /// entry the failed drop should have taken from one it should not.
    pub(crate) fn distrust_everything(&self) -> bool {
        use std::sync::atomic::Ordering;
        // An L2 read begun before must not backfill a value that a write we missed replaced.
        let _all = self.guard.write_all();
        let result = if self.l2.is_some() {
            self.check_freshness.store(true, Ordering::Release);
            caught_l1("mark_all_suspect", || self.l1.mark_all_suspect())
        } else {
            caught_l1("clear", || self.l1.clear())
        };
        let Err(e) = result else {
            return true;
        };
        self.metrics.local.errors.incr();
        if self.l2.is_some() {
            tracing::warn!(error = %e, "marking L1 suspect failed; every L1 hit is checked against L2 instead");
        } else {
            tracing::warn!(error = %e, "clearing L1 to distrust it failed; every L1 read misses until a clear succeeds");
            // Checks on first: a reader sees `distrust_l1` only while they are on.
            self.check_freshness.store(true, Ordering::Release);
        }
        self.distrust_l1.turn_on();
        false
    }

    /// Tries again to mark every L1 entry suspect after marking them failed (a full disk, a
    /// latched store) and left `distrust_l1` on with the backplane's subscription up: without it
    /// every L1 hit went on being checked against L2 long after the disk had room again. At most
    /// once every [`TRUST_RETRY_MS`], twice as long after each failed try up to
    /// [`TRUST_RETRY_MAX_MS`]: a try stops the stores of the loads in flight and is logged. The
    /// subscription's own loss and return take the same lock, and a failure that turned the
    /// distrust on again since the try began is not undone (see `distrust`).
    pub(crate) fn retry_trust(&self) {
        use std::sync::atomic::Ordering;
        if !self.distrust_l1.is_on() {
            return;
        }
        let now = self.clock.now_ms();
        let due = self.trust_retry_at_ms.load(Ordering::Relaxed);
        let wait = self.trust_retry_wait_ms.load(Ordering::Relaxed);
        // A try due further ahead than the longest wait was planned before the wall clock was
        // stepped back: it is due now, or the step would put it off by its size.
        if (now < due && due - now <= TRUST_RETRY_MAX_MS)
            || self
                .trust_retry_at_ms
                .compare_exchange(
                    due,
                    now.saturating_add(wait),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let Some(_one) = self.trust_lock.try_lock() else {
            return;
        };
        if !self.subscription_up() {
            return;
        }
        let seen = self.distrust_l1.seen();
        if self.distrust_everything() && self.subscription_up() {
            self.distrust_l1.turn_off_if(seen);
            self.trust_retry_wait_ms.store(TRUST_RETRY_MS, Ordering::Relaxed);
        } else {
            let longer = wait.saturating_mul(2).min(TRUST_RETRY_MAX_MS);
            self.trust_retry_wait_ms.store(longer, Ordering::Relaxed);
        }
    }

    /// Drops every L1 key that starts with `prefix`: by listing them where the level can (file
    /// store, redb), otherwise by clearing L1 (a superset). Returns the number of keys dropped
    /// (all of L1 when cleared; if deleting the listed keys failed, those deleted before the
    /// failure, L1 being distrusted instead).
    pub(crate) fn drop_local_prefix(&self, prefix: &str) -> Result<u64> {
        self.drop_local_prefix_keys(prefix).map(|dropped| dropped.count)
    }

    /// [`drop_local_prefix`](Self::drop_local_prefix), with the keys it counted, so that a
    /// prefix invalidation counts a key L2 held too only once.
    pub(crate) fn drop_local_prefix_keys(&self, prefix: &str) -> Result<PrefixDropped> {
        // Keys not in L1 now are not listed, and an L2 read of one begun before the prefix was
        // invalidated must not backfill it after.
        let _all = self.guard.write_all();
        let mark = self.left_behind.mark();
        // Caught: a panic here (a level a user plugged in) reached the backplane's handler
        // thread, which went on with L1 neither dropped nor distrusted.
        let listed =
            caught_l1("keys_with_prefix", || self.l1.keys_with_prefix(prefix)).inspect_err(|_| {
                self.metrics.local.errors.incr();
                self.left_behind.record(Removal::Prefix(prefix));
            })?;
        match listed {
            Some(mut keys) => {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                // The keys listed, not those the level below reports: the memory tier may
                // hold a key the level below has since evicted. After a failed delete, only
                // those L1 got through before it failed: it may still hold the others (suspect
                // now), which count as dropped neither in `keys_invalidated` nor in what
                // `invalidate_prefix` returns. A level deletes key by key in order, so those
                // are the first ones.
                let (taken, kept) = self.drop_local_keeping(&refs);
                let through = taken.through;
                if through == refs.len() {
                    self.left_behind.forget([], Some(prefix), mark);
                }
                keys.truncate(through);
                Ok(PrefixDropped {
                    count: through as u64,
                    keys,
                    kept,
                })
            }
            None => {
                let items = caught_l1("size", || self.l1.size()).map_or(0, |s| s.items);
                self.clear_local()?;
                Ok(PrefixDropped {
                    count: items,
                    keys: Vec::new(),
                    kept: None,
                })
            }
        }
    }

    /// Empties L1; if it cannot, what it keeps has no stale copy served (see `left_behind`).
    pub(super) fn clear_local(&self) -> Result<()> {
        let _all = self.guard.write_all();
        let mark = self.left_behind.mark();
        match caught_l1("clear", || self.l1.clear()) {
            Ok(()) => {
                self.left_behind.forget([], Some(""), mark);
                Ok(())
            }
            Err(e) => {
                self.metrics.local.errors.incr();
                self.left_behind.record(Removal::All);
                Err(e)
            }
        }
    }
}

/// What a prefix's L1 drop took out ([`Shared::drop_local_prefix_keys`]).
pub(crate) struct PrefixDropped {
    /// How many keys: those listed and deleted, or every entry of an L1 that cannot list its
    /// keys, cleared instead.
    pub(crate) count: u64,
    /// The keys listed and deleted; none for a cleared L1, which names none.
    pub(crate) keys: Vec<String>,
    /// L1's error, where it kept keys under the prefix that outlive this run (see
    /// `take_out_of_l1`): the next start serves them.
    pub(crate) kept: Option<Error>,
}

/// What an L1 delete of a batch of keys took out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TakenOut {
    /// Live entries removed: `delete_many`'s count, or, when it failed partway, that of the keys
    /// before the failure. Read by the backplane (feature `redis`).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) removed: u64,
    /// Keys L1 got through, held or not: all of them unless the delete failed.
    pub(crate) through: usize,
}

impl TakenOut {
    /// What a `delete_many` of `total` keys that failed with `error` took out before it failed.
    /// A level that deletes key by key (the file store) reports a failure after the first key
    /// as a partial batch naming the keys it did not get to (see `Storage::delete_many`); any
    /// other failure took out nothing that can be counted (redb's batch is one transaction,
    /// undone whole).
    fn before(error: &Error, total: usize) -> TakenOut {
        match error {
            Error::PartialBatch(partial) => TakenOut {
                removed: match partial.served {
                    Served::Removed(n) => n,
                    _ => 0,
                },
                through: total.saturating_sub(partial.failed.len()),
            },
            _ => TakenOut::default(),
        }
    }
}

/// `call()`, an L1 call made where no caller waits for it (the write-behind writer undoing a
/// write L2 did not take, among others), with a panic in it (in an L1 a user plugged in) taken
/// as its error. Unwinding on would end the writer thread: every later write-behind batch
/// would stay queued, never sent; and on the backplane's handler thread, which survives it, an
/// invalidation L1 could not apply left L1 trusted rather than suspect.
fn caught_l1<T>(op: &'static str, call: impl FnOnce() -> Result<T>) -> Result<T> {
    // Unwind safety: the manager's own state is not half-changed across an L1 call; what the
    // level left half-done is its own, and the failure is handled as any error of the call.
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| {
        tracing::error!(op, "an L1 call panicked; handled as a failed one");
        Err(Error::Backend {
            level: "L1",
            op,
            reason: "the call panicked".to_owned(),
        })
    })
}
