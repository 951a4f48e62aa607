//! A loading call's look again at its key: its leader's once it leads, for what a load that just
//! ended or a write stored since its first read, and a waiter's whose flight ended without a
//! value (see `CacheManager::relook`). The look follows a read's rules (`policy`): L1, a suspect
//! entry checked against L2, a replay op or a delete in progress, the write-behind queue, L2 with
//! a backfill. But it counts no read: the caller's was counted once, as the miss that made it
//! load. Errors are counted, as every level call's.

use super::guard::Ticket;
use super::policy::{time_l2, L1Read, Level, Shared, Suspect, Timed};
use crate::error::{Error, Result};
use crate::storage::{DistributedStorage, Entry};

/// What a loading call's look again does (see [`Shared::leader_reread`]).
pub(crate) enum Reread<'a> {
    /// Answered without L2.
    Done(Option<Vec<u8>>),
    /// Ask this L2 with this ticket, then [`Shared::finish_reread`], with the suspect L1 entry
    /// to check against its answer, if L1 held one.
    AskL2(&'a dyn DistributedStorage, Ticket, Option<Suspect>),
    /// L1 failed, and `fallback_on_error` does not hide it: the caller's error.
    Failed(Error),
}

impl Shared {
    /// The part of a loading call's look again before L2, uncounted (see the module docs).
    pub(crate) fn leader_reread(&self, key: &str) -> Reread<'_> {
        let suspect = match self.look_l1(key) {
            Ok(L1Read::Hit(value)) => return Reread::Done(Some(value)),
            Ok(L1Read::Miss) => None,
            // Checked as a read checks it, not counted: a full read counted the key again, an
            // L1 miss and an L2 hit on top of the misses that made the caller load.
            Ok(L1Read::Suspect(suspect)) => match self.suspect_before_l2(key, suspect, false) {
                Ok(answer) => return Reread::Done(answer),
                Err(suspect) => suspect,
            },
            // Counted as every failed call is; hidden, the look goes on as after an L1 miss, as
            // a read's does (the full read would count the key a second time).
            Err(e) => {
                if let Err(e) = self.failed(Level::Local, "get", key, e) {
                    return Reread::Failed(e);
                }
                None
            }
        };
        let Some(l2) = &self.l2 else {
            return Reread::Done(None);
        };
        // As `plan_read` and `before_l2`: L2 is older than a key's queued op, so a key with one
        // is a miss here, as is a key this manager is deleting, and the write-behind queue is
        // newer than L2. Pending is looked at once the ticket is taken: a write whose L2 step
        // failed before it leaves the ticket current.
        let ticket = self.ticket(key);
        if ticket.deleting() || self.is_pending(key) {
            return Reread::Done(None);
        }
        if let Some(found) = self
            .behind
            .as_ref()
            .and_then(|q| q.lookup(key, self.clock.now_ms()))
        {
            return Reread::Done(found);
        }
        Reread::AskL2(l2.as_ref(), ticket, suspect)
    }

    /// L2's answer to a loading call's look again ([`leader_reread`](Self::leader_reread)): as
    /// [`finish_read`](Self::finish_read), or [`settle_suspect`](Self::settle_suspect) for a
    /// suspect L1 entry, the hit or miss not counted.
    pub(crate) fn finish_reread(
        &self,
        key: &str,
        ticket: Ticket,
        suspect: Option<Suspect>,
        (started, result): Timed<Option<Entry>>,
    ) -> Result<Option<Vec<u8>>> {
        time_l2(&self.metrics.distributed.get_latency, started, &result);
        if let Some(suspect) = suspect {
            return self.settle_suspect(key, suspect, ticket, result, false);
        }
        match result {
            Ok(Some(entry)) => {
                if let Some(answer) = self.overtaken_answer(key, ticket) {
                    return Ok(answer);
                }
                self.backfill(key, ticket, &entry);
                Ok(Some(entry.value))
            }
            Ok(None) => Ok(None),
            Err(e) => self.failed(Level::Distributed, "get", key, e).map(|()| None),
        }
    }
}
