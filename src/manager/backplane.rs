//! The manager's side of the invalidation backplane (feature `redis`; without it,
//! `backplane_off.rs` stands in and publishing does nothing): every set and delete publishes
//! one `Keys` invalidation after both levels, and another instance's invalidation drops keys
//! from L1 only. When the subscription is lost every L1 entry becomes suspect, as
//! `consistency.rs` describes (docs/design.md, section 5).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::SystemTime;

use super::policy::Shared;
use crate::error::Result;
use crate::invalidation::{Invalidation, InvalidationHandler, InvalidationMessage, Outage};
use crate::log_limit::LogLimit;

impl Shared {
    /// Stops the backplane's receiving and re-sending tasks, after a last attempt to send what
    /// it keeps (at shutdown, by `Workers`).
    pub(crate) fn stop_backplane(&self) {
        if let Some(bp) = self.backplane.get() {
            bp.shutdown();
        }
    }

    /// Whether the backplane's subscription, if there is one, is up.
    pub(crate) fn subscription_up(&self) -> bool {
        self.backplane.get().is_none_or(|bp| bp.stats().connected)
    }

    /// Publishes that `keys` changed, if there is a backplane: one message, or several for a
    /// list longer than one should carry ([`Invalidation::keys_in_messages`]).
    pub(crate) fn publish_keys(&self, keys: &[&str]) {
        if let Some(bp) = self.backplane.get() {
            for message in Invalidation::keys_in_messages(keys) {
                self.count_publish(bp.publish(&message).map(drop));
            }
        }
    }

    /// An async write's promise to publish `keys`, kept even if its future is dropped: see
    /// [`Announcement`].
    pub(crate) fn announce<'a>(&'a self, keys: &'a [&'a str]) -> Announcement<'a> {
        Announcement {
            shared: self,
            owed: Owed::Keys(keys),
            done: false,
            publishing: false,
            begun: 0,
        }
    }

    /// [`announce`](Self::announce) of any one invalidation (an async prefix invalidation's).
    pub(crate) fn announce_one<'a>(&'a self, invalidation: &'a Invalidation) -> Announcement<'a> {
        Announcement {
            shared: self,
            owed: Owed::One(invalidation),
            done: false,
            publishing: false,
            begun: 0,
        }
    }

    /// Publishes a key L2 deleted because an older write of it landed late (see
    /// `late_writes`), as another instance may have read that value into its L1 meanwhile.
    /// Handed to the backplane's re-send task: the caller is L2's I/O thread, which must not
    /// wait.
    pub(crate) fn publish_late_write(&self, key: &str) {
        if let Some(bp) = self.backplane.get() {
            let keys = Invalidation::Keys(vec![key.to_owned()]);
            if let Err(err) = bp.publish_later_repeated(&keys, false) {
                tracing::warn!(%err, key, "could not publish a key L2 deleted after a late write");
            }
        }
    }

    /// Publishes any invalidation, if there is a backplane.
    pub(crate) fn publish(&self, invalidation: &Invalidation) {
        if let Some(bp) = self.backplane.get() {
            self.count_publish(bp.publish(invalidation).map(drop));
        }
    }

    fn count_publish(&self, result: Result<()>) {
        let c = &self.metrics.consistency;
        match result {
            Ok(()) => c.published.incr(),
            Err(e) => {
                c.publish_failures.incr();
                if e.is_misconfiguration() {
                    // No re-send gets past a server that refuses the setting (an ACL user without
                    // PUBLISH on the channel): counted where an operator looks for what to fix,
                    // and logged, where a debug line alone hid it.
                    self.metrics.distributed.config_error("backplane", &e);
                } else {
                    tracing::debug!(error = %e, "publishing an invalidation failed; the backplane re-sends it");
                }
            }
        }
    }

    fn on_invalidation(&self, message: &InvalidationMessage) {
        self.apply(message);
        // Counted once applied: a caller that sees the count has seen L1 change.
        self.metrics.consistency.invalidations_received.incr();
    }

    fn apply(&self, message: &InvalidationMessage) {
        let invalidated = &self.metrics.consistency.keys_invalidated;
        match &message.invalidation {
            // Keys this L1 did not hold lose nothing here: only those it dropped are counted,
            // also when its delete failed partway. Writes still on their way give way first: a
            // read between the two steps then misses rather than take the queued value as the
            // newest.
            Invalidation::Keys(keys) => {
                let refs = holdable(keys, &self.metrics.consistency.unheld_lines);
                self.withdraw_behind(&refs, None);
                invalidated.add(self.drop_local(&refs).removed);
            }
            // If L1 cannot drop what the message names (a full disk, a store latched
            // read-only), it must stop vouching for what it holds rather than serve it.
            Invalidation::Prefix(prefix) => {
                self.withdraw_behind(&[], Some(prefix));
                match self.drop_local_prefix(prefix) {
                    Ok(dropped) => invalidated.add(dropped),
                    Err(e) => {
                        self.metrics.local.errors.incr();
                        tracing::warn!(error = %e, "dropping a prefix from L1 failed; every L1 entry becomes suspect");
                        self.distrust_everything();
                    }
                }
            }
            // This manager publishes a tag's members as keys; a bare tag (from another
            // publisher) cannot be resolved without a network call, so L1 is re-checked instead.
            Invalidation::Tags(_) => {
                self.distrust_everything();
            }
            Invalidation::All => {
                self.withdraw_behind(&[], Some(""));
                if let Err(e) = self.clear_local() {
                    self.metrics.local.errors.incr();
                    tracing::warn!(error = %e, "clearing L1 on an invalidation failed; every L1 entry becomes suspect");
                    self.distrust_everything();
                }
            }
        }
    }

    /// Another instance's invalidation of `keys` (or, with `prefix`, of every key under it;
    /// `""` for all) reached this one: this instance's writes of them still on their way to L2
    /// become deletes.
    ///
    /// Why: such a write (queued behind, in a batch in flight, or waiting in the replay queue)
    /// was acknowledged before the message came, and the message is sent once the other
    /// instance's delete or write has reached L2. Sent as it is, the write would land after
    /// that: a deleted value back in L2, or an older value over the other's newer one, and
    /// for a tagged key a value its tag no longer lists, out of reach of the next invalidation.
    /// As a delete, sent after the batch in flight, the key reads as a miss everywhere. The
    /// price: a write of this instance that was in truth newer than the other's op (its
    /// message was slow) is lost, which costs a miss, never a stale read. A write that landed
    /// before the message came is not undone: it took effect in L2 then, as the lag of one
    /// batch that write-behind is documented to have.
    ///
    /// Why no key's write guard is taken: every change here only turns ops into deletes, each
    /// under its queue's own order (the write-behind queue's lock, which a set's push takes
    /// too; the replay queue's seqs, so the ack of an op a replay was sending under the guard
    /// leaves the delete pending), and the caller drops L1 last. A set of this instance whose
    /// queue step came before is withdrawn, and its L1 step, earlier still, undone by that
    /// drop: a miss. One whose queue step came after is queued behind the delete, or (pushed
    /// to the write-behind queue while the delete goes to the replay queue, the key's older op
    /// acked meanwhile) lands before or after that delete: a miss, or its value in L2, as two
    /// instances' racing writes may end. No level keeps a value the other has replaced.
    /// Waiting for the guard would hold the subscription's thread for an L2 round trip of this
    /// instance (a replay's send, an outage's deadline).
    fn withdraw_behind(&self, keys: &[&str], prefix: Option<&str>) {
        let mut deletes = Vec::new();
        if let Some(queue) = &self.behind {
            let (withdrawn, to_replay) = queue.withdraw(keys, prefix, |found| self.must_queue(found));
            self.metrics
                .consistency
                .behind_withdrawn
                .add(withdrawn.len() as u64);
            if to_replay {
                deletes = withdrawn;
            }
        }
        if let Some(q) = &self.replay {
            match prefix {
                Some(prefix) => deletes.extend(q.pending_with_prefix(prefix)),
                None => deletes.extend(keys.iter().filter(|k| q.is_pending(k)).map(|k| (*k).to_owned())),
            }
        }
        if deletes.is_empty() {
            return;
        }
        deletes.sort_unstable();
        deletes.dedup();
        let refs: Vec<&str> = deletes.iter().map(String::as_str).collect();
        if let Err(e) = self.queue_deletes(&refs) {
            tracing::warn!(error = %e, "replay-queue writes another instance invalidated could not be turned into deletes; they may land after its op");
        }
    }

    fn on_subscription_lost(&self) {
        let _one = self.trust_lock.lock();
        self.metrics.consistency.subscription_losses.incr();
        if self.l2.is_some() {
            // Checks on first: a reader sees `distrust_l1` only while they are on.
            self.check_freshness.store(true, Ordering::Release);
            self.distrust_l1.turn_on();
        }
        self.distrust_everything();
    }

    fn on_subscription_restored(&self) {
        let _one = self.trust_lock.lock();
        // Entries written during the outage may have missed a message too. If L1 could not
        // mark them, every hit stays checked.
        let seen = self.distrust_l1.seen();
        // Only while the subscription is up: a restore the handler's thread made up after
        // dropping events (see the backplane's `delivery`) can come while it is down again.
        if self.distrust_everything() && self.subscription_up() {
            // Unless a failure turned it on again meanwhile (see `distrust`).
            self.distrust_l1.turn_off_if(seen);
        }
    }
}

/// The invalidation an async write owes once it has changed L1: published by
/// [`publish`](Announcement::publish), or, if the write's future is dropped first (a caller's
/// timeout, a cancelled request), handed to the backplane's re-send task from `Drop`. Without
/// it, a write cancelled at its L2 call or at its publish changed this L1 (and often L2: a
/// command already sent is run) while no other instance heard of it.
///
/// Handed over from `Drop` before the publish began, the message goes twice: at once, and again
/// after the L2 timeout
/// (`repeat_later_after`, set in `wiring.rs`). The L2 command a cancelled write sent may still
/// be on its way; an instance that reads the key from L2 after the first message and before
/// the command runs caches the old value, which only the second message drops (if the command
/// ran by then, as it usually has).
pub(crate) struct Announcement<'a> {
    shared: &'a Shared,
    owed: Owed<'a>,
    done: bool,
    /// [`publish`](Announcement::publish) has begun: the write's L2 step is over (publishing is
    /// the only wait after it), so a message handed over from `Drop` needs no repeat.
    publishing: bool,
    /// The messages whose publish has begun: one dropped before Redis answered is kept for
    /// re-sending by the backplane itself (`Backplane::publish_async`), so `Drop` hands over
    /// only those after it.
    begun: usize,
}

/// What an [`Announcement`] publishes.
enum Owed<'a> {
    /// Keys, in as many messages as [`Invalidation::keys_in_messages`] makes.
    Keys(&'a [&'a str]),
    /// One message.
    One(&'a Invalidation),
}

impl Announcement<'_> {
    /// Owes nothing: the write's invalidation is published by another (the write-behind
    /// writer, once L2 has the values).
    pub(crate) fn dismiss(mut self) {
        self.done = true;
    }

    /// Publishes the messages and waits for Redis to take each, as [`Shared::publish_keys`].
    pub(crate) async fn publish(mut self) {
        self.publishing = true;
        if let Some(bp) = self.shared.backplane.get() {
            for message in self.messages() {
                self.begun += 1;
                let result = bp.publish_async(&message).await;
                self.shared.count_publish(result.map(drop));
            }
        }
        self.done = true;
    }

    fn messages(&self) -> Vec<Invalidation> {
        match self.owed {
            Owed::Keys(keys) => Invalidation::keys_in_messages(keys),
            Owed::One(invalidation) => vec![invalidation.clone()],
        }
    }
}

impl Drop for Announcement<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(bp) = self.shared.backplane.get() {
            for message in self.messages().into_iter().skip(self.begun) {
                if let Err(e) = bp.publish_later_repeated(&message, !self.publishing) {
                    tracing::warn!(error = %e, "the invalidation of a cancelled call could not be kept for sending");
                }
            }
        }
    }
}

/// The manager's backplane handler: holds the manager weakly (the manager owns the backplane).
pub(crate) struct Receiver {
    pub(crate) shared: Weak<Shared>,
}

impl InvalidationHandler for Receiver {
    fn invalidate(&self, message: &InvalidationMessage) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_invalidation(message);
        }
    }

    fn subscription_lost(&self, _since: SystemTime) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_subscription_lost();
        }
    }

    fn subscription_restored(&self, _outage: &Outage) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_subscription_restored();
        }
    }
}

/// The keys of a received message that an L1 can hold. One that no L1 takes (empty, or longer
/// than [`crate::MAX_KEY_LEN`]: sent by a publisher with other rules) is in no L1, so there is
/// nothing of it to drop. Passed on, it failed the whole delete: the keys after it stayed, and
/// every L1 entry was made suspect, at every such message. Logged a line a second at most.
fn holdable<'k>(keys: &'k [String], lines: &LogLimit) -> Vec<&'k str> {
    let (held, refused) = crate::keys::passing_keys(keys, crate::keys::check_key);
    if let Some((e, skipped)) = refused {
        if let Some(unlogged) = lines.pass() {
            tracing::warn!(error = %e, skipped, unlogged, "an invalidation names keys no L1 can hold; skipped (unlogged: messages since the last line)");
        }
    }
    held
}
