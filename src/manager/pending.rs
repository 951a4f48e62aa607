//! A suspect L1 entry of a key with a queued replay op, settled by the op (see
//! [`Shared::settle_pending`]). While L1 refuses writes, every read of such a key fails to put
//! the op into L1: its lines are limited (see `crate::log_limit`).

use std::time::Duration;

use super::guard::Ticket;
use super::left_behind::Removal;
use super::policy::Shared;
use crate::error::key_for_error;
use crate::replay::ReplayAction;
use crate::storage::SuspectEpoch;

impl Shared {
    /// A suspect L1 entry of a key with a queued replay op. L2 is older than the op, and L1 may
    /// be too: the op was fsynced when it was queued, but the L1 write it records may not have
    /// been (a restart after a power cut with the file store's periodic fsync, or a kill with
    /// redb), and a delete L1 could not apply (a store latched read-only) is queued all the
    /// same. So the op answers: a set its value, which L1 takes (or is confirmed with, if it
    /// holds those bytes); a delete, or a set whose expiry has passed, a miss, the L1 entry
    /// dropped. `None`: no op (replayed since `look_l1`), so L2 can be asked. `epoch`: L1's,
    /// read before the suspect entry was. `counted`: see `suspect_before_l2`.
    pub(super) fn settle_pending(
        &self,
        key: &str,
        epoch: SuspectEpoch,
        counted: bool,
    ) -> Option<Option<Vec<u8>>> {
        let queue = self.replay.as_ref()?;
        if !queue.is_pending(key) {
            return None;
        }
        // Taken before the op is read: a write of the key (or an invalidation) that starts
        // after it may have queued a newer op, and then keeps L1 from taking this one.
        let ticket = self.guard.ticket(key);
        let op = queue.pending_op(key)?;
        let now = self.clock.now_ms();
        match op.action {
            ReplayAction::Set { value, expires_at_ms } if expires_at_ms == 0 || expires_at_ms > now => {
                let ttl = match expires_at_ms {
                    0 => self.local_ttl,
                    at => Duration::from_millis(at - now).min(self.local_ttl),
                };
                self.l1_takes_pending(key, ticket, epoch, &value, ttl);
                if counted {
                    self.metrics.local.hits.incr();
                }
                Some(Some(value))
            }
            _ => {
                if counted {
                    self.metrics.local.misses.incr();
                    self.metrics.consistency.pending_misses.incr();
                    self.miss(1);
                }
                // Dropping is right whatever raced it: at worst a later read misses.
                let _writing = self.guard.write([key]);
                if let Err(e) = self.l1.delete(key) {
                    // The entry stays, suspect, and reads go on asking the op; but once it is
                    // replayed nothing checks a stale copy, nor an answer while L2 is down.
                    self.left_behind.record(Removal::Keys(&[key]));
                    let lines = &self.metrics.consistency.pending_drop_lines;
                    if let Some(unlogged) = self.metrics.local.error_line(lines) {
                        tracing::warn!(key = %key_for_error(key), error = %e, unlogged, "dropping an L1 entry whose key has a queued delete failed (unlogged: reads since the last line)");
                    }
                }
                Some(None)
            }
        }
    }

    /// Makes L1 hold `value`, the queued set of `key`, under `ticket`: a write of the key since
    /// the ticket may have put a newer value in L1 and the queue, which this must not replace.
    /// A confirm is refused if L1 was made suspect since `epoch` (the entry is then asked
    /// about again).
    fn l1_takes_pending(&self, key: &str, ticket: Ticket, epoch: SuspectEpoch, value: &[u8], ttl: Duration) {
        let mut result = Ok(());
        self.guard.backfill_if_current(ticket, || {
            result = match self.l1.get_checked(key) {
                Ok(Some((held, _))) if held.value == value => self.l1.confirm(key, epoch).map(drop),
                Ok(_) => self
                    .l1
                    .set(key, value, Some(ttl))
                    .map(|()| self.metrics.local.sets.incr()),
                Err(e) => Err(e),
            };
        });
        if let Err(e) = result {
            // The queued value is still the answer; the suspect entry is asked about again.
            let lines = &self.metrics.consistency.pending_fill_lines;
            if let Some(unlogged) = self.metrics.local.error_line(lines) {
                tracing::warn!(key = %key_for_error(key), error = %e, unlogged, "putting a key's queued value into L1 failed (unlogged: reads since the last line)");
            }
        }
    }
}
