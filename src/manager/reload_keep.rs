//! What a refresh-ahead reload leaves in L1 when L2 does not take its value and nothing will
//! send it there: with `fallback_on_error = false`, or with `true` where the replay queue
//! refuses the write (its device full, its log latched).
//!
//! A write L2 failed is taken out of L1 again (see `finish_write`): told it failed, its caller
//! may go on as if it had not been made, and every instance then reads what L2 holds. A reload
//! has no caller to tell, and the entry its value replaced was an L1 hit that L2 held too. Taken
//! out, the key became an L1 miss, and every read of it went to the L2 that had just failed, for
//! the rest of the outage: refresh-ahead made the key less available than no refresh-ahead. So
//! the entry the reload replaced goes back instead, with its own expiry: L1 is as it was before
//! the reload, which is what it would be without refresh-ahead. The reloaded value, which L2
//! did not take, does not stay.
//!
//! Put back only if nothing else touched the key or L1's trust meanwhile: the entry is read
//! once the reload's store owns the key, and only a trusted entry, none a failed removal may
//! have left (`left_behind`); it goes back only if no writer (a local invalidation, a mark of
//! every entry) began on its stripe since, and stays only if L1's suspect epoch did not move
//! (a mark by another holder of L1, which no stripe sees: written after it, the old entry would
//! be trusted in the new epoch). Otherwise, and for a value L2 refused (not an outage: L2 will
//! never take it), the key is taken out as any failed write's is.
//!
//! With `fallback_on_error = true` a failed L2 write stays in L1 and waits for the replay, but
//! one the replay queue refuses leaves L1 as well (`queued_or_undone`): nothing will send it,
//! and the caller is told it failed. A reload's did so too, and the key, an L1 hit holding what
//! L2 held before the outage, became a miss for as long as the queue's device stayed full: its
//! reads went to the dead L2, and each loading call ran its loader, whose store failed the same
//! way. So the older entry goes back there as well, on the same terms. It is read for every
//! reload where a replay queue could refuse (one L1 read, next to the loader's round trip to its
//! source). A write-behind reload is not sent through for it: a failed batch leaves its values
//! in L1 whether or not the replay queue takes them, so its key never empties.
//!
//! With write-behind and `fallback_on_error = false` such a store goes to L2 itself (see
//! `route_write`), after settling its key: a write of the key still waiting in the queue is
//! dropped, one on its way is waited for. But a batch slower than the settle's wait (a stuck
//! sender, a batch resent key by key) made the settle give up and hand the reload's write to
//! the queue, behind that batch (see `Requeue`): the batch landed, the reload's write was sent
//! after it into the outage, and its failure took the key out of L1 on the writer thread, with
//! nothing to put back, where without refresh-ahead the key stayed an L1 hit of what L2 now
//! held. So a reload whose key has a write waiting in the queue (queued or on its way) gives way
//! to it and stores nothing ([`Shared::reload_yields`]): L1 keeps the entry, which is that write's
//! value, and the write goes on as it would without refresh-ahead (landed, the key stays a hit;
//! failed, it leaves L1 as any failed write does). Only the refresh is lost: the key serves
//! what it would have without refresh-ahead. Checked once the store owns the key, so no write of
//! it can join the queue after the check (a withdrawal by another instance's message queues a
//! delete only for a key that waits already). With fallback a reload goes through the queue
//! like any write, and its failed batch leaves it in L1.
//!
//! Why not rather start no reload while L2's breaker is open: the failures before the breaker
//! opens, a timeout, or a node's own breaker still fail a reload's store, and each of them
//! emptied the key as before; and the older entry is the one a reload that did not run leaves.

use crate::codec::ABSENT;
use crate::storage::{Entry, Freshness, SuspectEpoch};

use super::guard::Ticket;
use super::policy::Shared;

/// The L1 entry a refresh-ahead reload's store replaces, read once the store owns the key.
pub(crate) struct Kept {
    key: String,
    entry: Entry,
    /// Taken after the store owned the key: a writer that began since changed it.
    ticket: Ticket,
    epoch: SuspectEpoch,
}

impl Shared {
    /// The entry of `key` a reload's store would put back if L2 does not take the reloaded
    /// value; `None` where none would be (see the module docs). Called while the store owns
    /// the key, before its L1 write.
    pub(crate) fn keep_before_reload(&self, key: &str) -> Option<Kept> {
        // With fallback, only a replay queue's refusal takes a write L2 failed out of L1.
        let undone_on_failure = !self.fallback_on_error || self.replay.is_some();
        if !undone_on_failure || self.l2.is_none() || self.left_behind.covers(key) {
            return None;
        }
        let ticket = self.guard.ticket(key);
        let epoch = self.l1.suspect_epoch();
        match self.l1.get_checked(key) {
            Ok(Some((entry, Freshness::Trusted))) if entry.value != ABSENT => Some(Kept {
                key: key.to_owned(),
                entry,
                ticket,
                epoch,
            }),
            _ => None,
        }
    }

    /// Whether a reload's store of `key` gives way to a write of the key that the write-behind
    /// queue has not sent yet (see the module docs): with `fallback_on_error = false` only,
    /// where a write the queue holds leaves L1 if its batch fails. Called while the store owns
    /// the key, before its L1 write.
    pub(crate) fn reload_yields(&self, key: &str) -> bool {
        !self.fallback_on_error && self.l2.is_some() && self.behind.as_ref().is_some_and(|q| q.holds(key))
    }

    /// Takes `items`, a write L2 did not take, out of L1 (`undo_local_items`), but for the key of
    /// `kept`, whose older entry goes back if it can (see the module docs).
    pub(crate) fn undo_or_put_back(&self, items: &[(&str, &[u8])], kept: Option<&Kept>) {
        let rest: Vec<(&str, &[u8])> = match kept {
            Some(kept) if self.put_back(kept) => items
                .iter()
                .filter(|(key, _)| *key != kept.key)
                .copied()
                .collect(),
            _ => items.to_vec(),
        };
        self.undo_local_items(&rest);
    }

    /// Whether `kept` is back in L1, as it was before the reload.
    fn put_back(&self, kept: &Kept) -> bool {
        // Expired meanwhile: nothing to put back (the key then misses, as it would have).
        let Some(ttl) = self.backfill_ttl(&kept.entry) else {
            return false;
        };
        let mut wrote = Ok(());
        let current = self.guard.put_back_if_current(&kept.ticket, || {
            wrote = self.l1.set(&kept.key, &kept.entry.value, Some(ttl));
        });
        match wrote {
            Ok(()) if current => {
                self.metrics.local.sets.incr();
                // A mark that came before the write would leave the old entry trusted: the
                // key is taken out instead (by the caller), as a fill is (`fill_in`).
                self.l1.suspect_epoch() == kept.epoch
            }
            Ok(()) => false,
            Err(_) => {
                // The caller's removal follows, and handles an L1 that refuses it too.
                self.metrics.local.errors.incr();
                false
            }
        }
    }
}
