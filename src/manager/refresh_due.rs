//! Refresh-ahead's due times: when a `get_or_load` hit should reload a value this process
//! loaded (see `failsafe`, which decides them).
//!
//! Kept by the key guard ([`KeyOrder`](super::guard::KeyOrder)), by the guard's 64-bit hash of
//! the key, because every write, delete and invalidation of a key passes the guard: each one
//! forgets its keys' due times there, so a due time only ever describes the value the load that
//! recorded it stored. Left in place, the due time of a load outlived a `set` of its key, and
//! the written value was replaced by a reload on the load's schedule. A load records its due
//! time while it owns the key for its store, so a write that follows waits for it and then
//! forgets it.
//!
//! Two keys whose hashes collide (2^-64) share a due time: at worst one reload too many or too
//! few; the hash spares a `String` per load and lets the guard, which knows keys only by hash,
//! forget them.

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Bound on the keys tracked; beyond it, due times already passed are pruned on insert (those
/// keys then simply expire), and if that is not enough the key is not tracked.
const TRACKED_MAX: usize = 65_536;

/// Key hash → when a hit should reload it (the manager's clock, Unix ms).
#[derive(Debug, Default)]
pub(crate) struct RefreshDue {
    due: DashMap<u64, u64, ahash::RandomState>,
    /// Entries in `due` (at least: see [`note`](Self::note)), kept beside it so that a write
    /// (every `set`, with refresh-ahead off too) finds nothing to forget with one atomic load
    /// instead of a look at a shard.
    tracked: AtomicUsize,
}

impl RefreshDue {
    /// The key of `hash` is due for a reload at `at`; `now` prunes a full map.
    pub(crate) fn note(&self, hash: u64, at: u64, now: u64) {
        if self.tracked.load(Ordering::Acquire) >= TRACKED_MAX && !self.due.contains_key(&hash) {
            self.due.retain(|_, &mut due| {
                let keep = due > now;
                if !keep {
                    self.tracked.fetch_sub(1, Ordering::AcqRel);
                }
                keep
            });
            if self.tracked.load(Ordering::Acquire) >= TRACKED_MAX {
                return;
            }
        }
        // Counted before it is inserted (and after it is removed), so the count is never
        // below the entries: a write that reads zero has nothing to forget.
        self.tracked.fetch_add(1, Ordering::AcqRel);
        if self.due.insert(hash, at).is_some() {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// If the key of `hash` is due at `now()` and `claim` gives what its reload needs (a
    /// place among the running reloads), it is no longer tracked, so one hit starts its reload.
    /// Claimed before the due time is taken: one taken first and put back when nothing could
    /// be claimed could come back after a write of the key had forgotten it, and the written
    /// value was reloaded on the load's schedule. The clock is read only for a tracked key:
    /// most hits are not due.
    pub(crate) fn take<S>(
        &self,
        hash: u64,
        now: impl FnOnce() -> u64,
        claim: impl FnOnce() -> Option<S>,
    ) -> Option<S> {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return None;
        }
        // A shared look first: no write lock for a key that is not due.
        let at = self.due.get(&hash).map(|at| *at)?;
        let now = now();
        if at > now {
            return None;
        }
        // Nothing to claim: the key stays due, and a later hit tries again.
        let claimed = claim()?;
        // Forgotten meanwhile by a write, or taken by another hit: the claim is given back.
        self.forget_if(hash, |at| at <= now).then_some(claimed)
    }

    /// A write, delete or invalidation of the keys of `hashes` began: what a load stored is
    /// being replaced or dropped, so its due time no longer applies.
    pub(crate) fn forget(&self, hashes: impl IntoIterator<Item = u64>) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        for hash in hashes {
            self.forget_if(hash, |_| true);
        }
    }

    /// [`forget`](Self::forget) for an invalidation of keys nobody listed (all of L1, a
    /// prefix, every entry made suspect).
    pub(crate) fn forget_all(&self) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        self.due.retain(|_, _| {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
            false
        });
    }

    fn forget_if(&self, hash: u64, when: impl FnOnce(u64) -> bool) -> bool {
        let gone = self.due.remove_if(&hash, |_, &at| when(at)).is_some();
        if gone {
            self.tracked.fetch_sub(1, Ordering::AcqRel);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_key_whose_reload_finds_no_place_stays_due_for_a_later_hit() {
        let due = RefreshDue::default();
        due.note(7, 100, 0);
        assert_eq!(due.take(7, || 100, || None::<()>), None);
        assert_eq!(due.take(7, || 100, || Some(())), Some(()), "no longer due");
        assert_eq!(
            due.take(7, || 100, || Some(())),
            None,
            "one hit starts the reload"
        );
    }

    #[test]
    fn a_write_while_a_reload_claims_its_place_leaves_the_key_not_due() {
        let due = RefreshDue::default();
        due.note(7, 100, 0);
        // The write forgets the due time between the look and the claim's end.
        let taken = due.take(
            7,
            || 100,
            || {
                due.forget([7]);
                Some(())
            },
        );
        assert_eq!(taken, None, "the reload of a written value started");
        assert_eq!(
            due.take(7, || 100, || Some(())),
            None,
            "the written value became due"
        );
    }

    #[test]
    fn a_key_not_yet_due_claims_nothing() {
        let due = RefreshDue::default();
        due.note(7, 100, 0);
        let mut claimed = false;
        assert_eq!(
            due.take(
                7,
                || 99,
                || {
                    claimed = true;
                    Some(())
                }
            ),
            None
        );
        assert!(!claimed);
    }
}
