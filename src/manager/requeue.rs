//! What a write owes L2 when its caller goes away mid-way: an async delete or write-through
//! dropped (a caller's timeout) after its settle took the keys' queued writes out of the
//! write-behind queue, and before L2 answered, hands its op back to a queue from `Drop`
//! ([`Requeue`]), so that L2 does not keep a value older than writes acknowledged to their
//! callers. See `behind` for the ordering rules this keeps.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::behind::Pushed;
use super::policy::Shared;
use crate::error::Result;

/// The values of a write-through and their TTL, as a write passes them.
pub(crate) type Sets<'a> = (&'a [(&'a str, &'a [u8])], Option<Duration>);

/// What an async delete or write-through owes L2 once its settle took the keys' queued writes
/// out of the write-behind queue; handed back to the queue from `Drop` if the future is dropped
/// before L2 answered (see the module docs). Made by [`Shared::owe`]; [`paid`](Requeue::paid)
/// once L2 (or the replay queue) has the op.
pub(crate) struct Requeue<'a> {
    shared: &'a Shared,
    keys: &'a [&'a str],
    /// The values of a write-through; `None` for a delete.
    sets: Option<Sets<'a>>,
    paid: bool,
}

impl Requeue<'_> {
    /// L2 (or the replay queue) has the op: nothing is owed.
    pub(crate) fn paid(mut self) {
        self.paid = true;
    }
}

impl Requeue<'_> {
    /// Hands the op to the write-behind queue, behind the batch in flight, or to the replay
    /// queue if a key is pending there; the error of a replay queue that could not take it.
    /// Without write-behind, to the replay queue, as an L2 call that timed out is: the op may
    /// never have reached L2 (dropped while it waited for a connection or a breaker's permit),
    /// and L2 would keep the value it replaced, which this instance (its L1 changed) and the
    /// others (they hear of the write) would read back. The key reads as pending until the
    /// replay, which is woken at once to keep short the window in which an op that did run
    /// overwrites a newer write of another instance (the risk of every replayed timeout).
    pub(super) fn hand_back(&mut self) -> Result<()> {
        self.paid = true;
        let s = self.shared;
        let Some(queue) = &s.behind else {
            if !(s.replays_failures && s.replay.is_some()) {
                // No queue to send it later: L2 may keep the value this write replaced, which
                // the other instances read (they heard of the write). L1 gives up the new one
                // too, so this instance reads what they read rather than disagree until its TTL.
                if self.sets.is_some() {
                    tracing::debug!(
                        keys = self.keys.len(),
                        "a cancelled write-through left L1 too (no replay queue)"
                    );
                    s.undo_local(self.keys);
                }
                // Or L2 takes the op a moment later: what a read meanwhile gets from L2 is
                // older, and kept in L1 it would outlive the op for its TTL (the others hear
                // of it again by the backplane's repeat; this instance ignores its own).
                s.guard.quiet(self.keys.iter().copied(), s.cancel_quiet);
                return Ok(());
            }
            let queued = match self.sets {
                Some((items, ttl)) => s.queued_or_undone(items, s.queue_failed_sets(items, ttl)),
                None => s.queue_failed_deletes(self.keys),
            };
            let queued = self.quiet_unless_held(queued);
            s.nudge_replay();
            return queued;
        };
        let queued = match self.sets {
            Some((items, ttl)) => {
                let expires_at_ms = s.replay_expiry_ms(ttl);
                match queue.push_with(items, expires_at_ms, || s.must_queue(self.keys), false) {
                    Pushed::Replay => s.queued_or_undone(items, s.queue_sets(items, ttl)),
                    _ => Ok(()),
                }
            }
            None => s.queue_behind_deletes(self.keys),
        };
        tracing::debug!(
            keys = self.keys.len(),
            "a write's L2 part was handed back to the write-behind or replay queue"
        );
        self.quiet_unless_held(queued)
    }

    /// `queued`, a queue's answer to taking the op back. If a queue does not hold it now (the
    /// replay queue failed, or was full even for a delete and lost it: `Ok`, overflowed), the
    /// op is where it would be without a queue at all, and is treated so (see `hand_back`):
    /// a write's values leave L1, which kept them while L2 and the other instances (told
    /// nothing) held the older ones; and as the op may still land, its keys are kept from
    /// backfills meanwhile (see [`KeyOrder::quiet`]), where a read in the window got L2's older
    /// value, and L1 kept it for its TTL after L2 took the op. An op a queue sent at once is
    /// not held either: its keys are kept quiet, and a write's taken out of L1, for nothing (a
    /// few reads answered by L2).
    ///
    /// [`KeyOrder::quiet`]: super::guard::KeyOrder::quiet
    fn quiet_unless_held(&self, queued: Result<()>) -> Result<()> {
        let s = self.shared;
        let now = s.clock.now_ms();
        let held =
            |key: &str| s.is_pending(key) || s.behind.as_ref().is_some_and(|q| q.lookup(key, now).is_some());
        if queued.is_err() || !self.keys.iter().all(|key| held(key)) {
            if self.sets.is_some() {
                s.undo_local(self.keys);
            }
            s.guard.quiet(self.keys.iter().copied(), s.cancel_quiet);
        }
        queued
    }
}

impl Drop for Requeue<'_> {
    fn drop(&mut self) {
        if self.paid {
            return;
        }
        if let Err(e) = self.hand_back() {
            tracing::warn!(error = %e, "a cancelled write's L2 part could not be queued for replay");
        }
    }
}

impl Shared {
    /// A [`Requeue`] for a delete of `keys` (`sets`: `None`) or a write-through of `sets`, to
    /// take before its settle (or, without write-behind, before its L2 call). With neither a
    /// write-behind nor a replay queue to hand the op to, a write-through takes its values out
    /// of L1 again, and neither kind lets a read backfill the keys while the op may still land.
    pub(crate) fn owe<'a>(&'a self, keys: &'a [&'a str], sets: Option<Sets<'a>>) -> Requeue<'a> {
        Requeue {
            shared: self,
            keys,
            sets,
            paid: false,
        }
    }
}

/// What must pass before the tagging a cancelled tagged write owes (see `TagsOwed` in
/// `maintenance`): that tagging must not come before the write can land any more than the
/// caller's own would. Tagged before it, an invalidation of the tag between the tagging and the
/// landing (heard here only after it, too late to withdraw a write-behind write, or never for
/// a write-through's command) forgot the key, and the value then landed in L2 listed by no tag,
/// escaping every later invalidation of the tag.
// Read by the tag store alone, which a build without `redis` does not have.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) struct Landing<F> {
    /// Ends once no write of the keys waits in the write-behind queue (landed, handed to the
    /// replay queue, or dropped); at once without write-behind.
    pub(crate) sent: F,
    /// The longest to wait for `sent`: a settle's wait.
    pub(crate) sent_within: Duration,
    /// Without write-behind, how long after the cancellation the write's own command may still
    /// land ([`Shared::cancel_quiet`], as for backfills, see `KeyOrder::quiet`); zero with it.
    pub(crate) in_flight_for: Duration,
    /// Run once `sent` ended or its wait was given up, before the tagging: owes the keys their
    /// tags again after a landing still to come (see `replayed_tags`). Not part of `sent`,
    /// which a wait given up drops, while the write is still on its way.
    pub(crate) owe: Box<dyn FnOnce() + Send + 'static>,
}

impl Shared {
    /// The [`Landing`] of a cancelled write of `keys` tagged with `tags` (members kept `ttl`),
    /// owning what it needs (it outlives the caller). Its waits need a runtime with a timer (the
    /// tag store's). A write that went to the replay queue meanwhile is owed its tags again
    /// when the replay lands it (see `replayed_tags`), as a write that was not cancelled.
    pub(crate) fn landing(
        &self,
        keys: &[&str],
        tags: &[&str],
        ttl: Duration,
    ) -> Landing<impl Future<Output = ()> + Send + 'static> {
        let queue = self.behind.clone();
        let replayed = self
            .tags
            .as_ref()
            .and(self.replay.clone())
            .map(|q| (q, self.behind.clone(), Arc::clone(&self.replayed_tags)));
        let tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
        let sent_within = queue.as_ref().map_or(Duration::ZERO, |q| q.max_wait());
        let in_flight_for = if queue.is_some() {
            Duration::ZERO
        } else {
            self.cancel_quiet
        };
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let waited: Vec<String> = keys.clone();
        let sent = async move {
            if let Some(queue) = queue {
                let keys: Vec<&str> = waited.iter().map(String::as_str).collect();
                queue.wait_sent_async(&keys).await;
            }
        };
        let owe = move || {
            if let Some((q, behind, owed)) = replayed {
                let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
                for key in &keys {
                    owed.owe(&q, behind.as_deref(), key, &tags, ttl);
                }
            }
        };
        Landing {
            sent,
            sent_within,
            in_flight_for,
            owe: Box::new(owe),
        }
    }
}
