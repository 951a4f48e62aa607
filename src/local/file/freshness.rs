//! Which entries are suspect, and their confirmation: an entry restored from disk at open, or
//! written before the last [`FileStore::mark_all_suspect`], is suspect until it is confirmed
//! (checked against L2) or rewritten. The marks are counted in an epoch, and a confirm is taken
//! only in the epoch its caller read before the check (see `storage-format.md`, Freshness).

use std::sync::atomic::Ordering;

use super::{index, FileStore};
use crate::entry::Entry;
use crate::error::Result;
use crate::storage::{Confirmation, Freshness, SuspectEpoch};

impl FileStore {
    /// Reads a value with its expiry and whether it is suspect: restored from disk at open, or
    /// written before the last [`mark_all_suspect`](FileStore::mark_all_suspect), and not
    /// confirmed or rewritten since.
    ///
    /// # Errors
    /// As [`FileStore::get`].
    pub fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        let Some((entry, hit)) = self.get_entry_and_seq(key) else {
            return Ok(None);
        };
        // A value held in RAM (see `stash`) was filled after the last loss of certainty, which
        // forgets them all.
        let Some(hit) = hit else {
            return Ok(Some((entry, Freshness::Trusted)));
        };
        let freshness = if hit.seq >= self.inner.suspect_below_seq.load(Ordering::Acquire) {
            Freshness::Trusted
        } else {
            let epoch = self.inner.epoch.load(Ordering::Acquire);
            match self.inner.index.get(&self.inner.hasher.hash(key)) {
                Some(e) if e.loc == hit.loc && e.confirmed_in(epoch) => Freshness::Trusted,
                _ => Freshness::Suspect,
            }
        };
        Ok(Some((entry, freshness)))
    }

    /// Makes every entry written so far suspect (see [`get_checked`](FileStore::get_checked)),
    /// for example when the invalidation stream was lost. Costs O(1), but for one call in 2^27,
    /// which goes over the index (see `index::laps_after`).
    pub fn mark_all_suspect(&self) {
        let w = self.inner.writer.lock();
        // Held values cannot be marked: they go (see `stash`).
        self.inner.stash.clear();
        // Moved before any stamp is forgotten: a confirm that stamps after the forgetting read
        // the epoch before this, and sees it moved when it looks again (see `confirm`).
        let before = self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        if index::laps_after(before) {
            // The epoch is now the one that is 0 mod 2^27, which confirms nothing.
            index::forget_confirmations(&self.inner.index);
            #[cfg(test)]
            if let Some((key, checked_at)) = self.inner.test_confirm_after_forget.lock().take() {
                *self.inner.test_confirmed_after_forget.lock() = Some(self.confirm(&key, checked_at));
            }
            self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.inner.suspect_below_seq.store(w.next_seq, Ordering::Release);
    }

    /// The store's current [`SuspectEpoch`]: read it before checking an entry against L2, and
    /// hand it to [`confirm`](FileStore::confirm).
    pub fn suspect_epoch(&self) -> SuspectEpoch {
        SuspectEpoch::new(self.inner.epoch_instance | u64::from(self.inner.epoch.load(Ordering::Acquire)))
    }

    /// Confirms the current entry of `key` as fresh until the next loss of certainty, unless
    /// [`mark_all_suspect`](FileStore::mark_all_suspect) ran since `checked_at` was read from
    /// [`suspect_epoch`](FileStore::suspect_epoch), or runs while this confirm does
    /// ([`Confirmation::EpochMoved`]; the entry stays suspect).
    pub fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Confirmation {
        // The entry of the key's hash may hold another key (a collision): confirm it only if its
        // record is this key's.
        let Some(hit) = self.inner.locate(key, false, |_| ()) else {
            // A value held in RAM (see `stash`) is trusted: the last loss of certainty forgot
            // them all.
            return if self.inner.holds(key) {
                Confirmation::Confirmed
            } else {
                Confirmation::Missing
            };
        };
        let Some(e) = self.inner.index.get(&self.inner.hasher.hash(key)) else {
            return Confirmation::Missing;
        };
        if e.loc != hit.loc {
            return Confirmation::Missing;
        }
        // An epoch of another store (this one before it was reopened included) matches none.
        let epoch = self.inner.epoch.load(Ordering::Acquire);
        if checked_at.get() != self.inner.epoch_instance | u64::from(epoch) {
            return Confirmation::EpochMoved;
        }
        #[cfg(test)]
        if self.inner.test_mark_before_stamp.swap(false, Ordering::Relaxed) {
            self.mark_all_suspect();
        }
        // Stamped with the epoch checked, not the one now: a mark between the look above and
        // this stamp leaves the entry confirmed in an epoch that is over, so still suspect.
        e.confirm(epoch);
        // A mark that started a new lap of the stamp since the look above may have forgotten
        // every stamp before this one was made; left, it would match again 2^27 marks later.
        // The mark moves the epoch before it forgets, so this look sees it.
        if self.inner.epoch.load(Ordering::Acquire) != epoch {
            e.unconfirm(epoch);
            return Confirmation::EpochMoved;
        }
        Confirmation::Confirmed
    }
}
