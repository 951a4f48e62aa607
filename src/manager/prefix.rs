//! The rules of a prefix invalidation around L2's scan, for both shells
//! (`CacheManager::invalidate_prefix` and its async form, in `maintenance`): the shells drain the
//! write-behind queue, make L2's scan and publish the message; the steps before and after the
//! scan, and what a scan cut short still owes, are here, said once.

use super::policy::Shared;
use crate::error::Result;

/// A prefix invalidation past its first L1 drop, on its way to L2's scan
/// ([`Shared::prefix_before_l2`]), for [`Shared::prefix_after_l2`].
pub(crate) struct PrefixBegun {
    /// L1's keys dropped.
    dropped: u64,
    /// Whether the replay queue had writes under the prefix (turned into deletes), or the
    /// queue's error.
    queued: Result<bool>,
}

impl PrefixBegun {
    /// Whether L1 is dropped again once L2's scan is over: a set of this manager that ran whole
    /// between the first drop and L2's scan (or the queue's listing) is gone from L2 by then,
    /// or will be, and its L1 copy must go too, so the levels agree.
    pub(crate) fn drops_again(&self, s: &Shared) -> bool {
        s.tags.is_some() || matches!(self.queued, Ok(true))
    }
}

impl Shared {
    /// The steps before L2's scan: L1's keys under `prefix` dropped (an error here ends the
    /// call), then the writes under it still waiting in the replay queue turned into deletes
    /// (they came before the call: replayed as sets, they would bring the keys back). A queue
    /// that cannot take the deletes fails the call only at its end: L2's scan, the second L1
    /// drop and the message still come, as L2 and the other instances must lose the prefix all
    /// the same.
    pub(crate) fn prefix_before_l2(&self, prefix: &str) -> Result<PrefixBegun> {
        let dropped = self.drop_local_prefix(prefix)?;
        let queued = self.queue_prefix_deletes(prefix);
        Ok(PrefixBegun { dropped, queued })
    }

    /// The step after L2's scan answered `in_l2` (`Ok(0)` without a scan): L1 dropped again
    /// where [`PrefixBegun::drops_again`] says so, also after L2's error (the scan may have
    /// deleted part of the prefix before it failed). Returns the call's answer, which the shell
    /// gives once it has published the message: the keys dropped from L1 and L2, or the first
    /// error of the second drop, the queue and L2's scan.
    pub(crate) fn prefix_after_l2(
        &self,
        prefix: &str,
        begun: PrefixBegun,
        in_l2: Result<u64>,
    ) -> Result<u64> {
        let again = if begun.drops_again(self) {
            self.drop_local_prefix(prefix).map(drop)
        } else {
            Ok(())
        };
        again?;
        begun.queued?;
        Ok(begun.dropped + in_l2?)
    }
}
