//! The backfill guard: an L2 value read before a write or delete of the same key must never land
//! in L1 after it.
//!
//! Keys hash onto [`STRIPES`] stripes, each a small mutex over `(version, writers)`:
//! - a write or delete (or a local invalidation) takes a [`WriteGuard`] for its keys before it
//!   touches any level: `version += 1; writers += 1`, and on drop (after both levels, also when a
//!   future is cancelled) `writers -= 1; version += 1`;
//! - a read takes a [`Ticket`] (the version) before it reads L2, and backfills L1 only under the
//!   stripe's mutex and only if the version is unchanged and no writer is in progress.
//!
//! So a backfill happens only if no write or delete of any key of its stripe started or finished
//! between the L2 read and the L1 write. Sharing a stripe with another key can only skip a
//! backfill (the next read goes to L2 again), never admit a stale one.

use std::collections::BTreeMap;

use parking_lot::{Mutex, MutexGuard};

/// Number of stripes (a power of two).
const STRIPES: usize = 1024;

#[derive(Debug, Default)]
struct Stripe {
    version: u64,
    writers: u32,
}

#[derive(Debug)]
pub(crate) struct BackfillGuard {
    stripes: Box<[Mutex<Stripe>]>,
    /// aHash: a ticket per key of every batch read, so SipHash's cost showed.
    hasher: ahash::RandomState,
}

/// The state of a key's stripe when its L2 read began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    version: u64,
}

/// Marks writes of some keys in progress; see the module docs.
#[derive(Debug)]
pub(crate) struct WriteGuard<'a> {
    guard: &'a BackfillGuard,
    stripes: Vec<usize>,
}

impl Default for BackfillGuard {
    fn default() -> Self {
        BackfillGuard {
            stripes: (0..STRIPES).map(|_| Mutex::new(Stripe::default())).collect(),
            hasher: ahash::RandomState::new(),
        }
    }
}

impl BackfillGuard {
    fn stripe_of(&self, key: &str) -> usize {
        // Truncation is fine: only the low bits pick the stripe.
        #[allow(clippy::cast_possible_truncation)]
        let h = self.hasher.hash_one(key) as usize;
        h & (STRIPES - 1)
    }

    /// Taken before reading L2.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let stripe = self.stripe_of(key);
        let version = self.stripes.get(stripe).map_or(0, |s| s.lock().version);
        Ticket { stripe, version }
    }

    /// Runs `backfill` (the L1 write) if nothing wrote the key's stripe since `ticket`; returns
    /// whether it ran.
    pub(crate) fn backfill_if_current(&self, ticket: Ticket, backfill: impl FnOnce()) -> bool {
        let Some(stripe) = self.stripes.get(ticket.stripe) else {
            return false;
        };
        let s = stripe.lock();
        if s.version == ticket.version && s.writers == 0 {
            backfill();
            true
        } else {
            false
        }
    }

    /// The batch form of [`backfill_if_current`](Self::backfill_if_current): holds the stripes of
    /// every ticket (in index order, so two batches never deadlock) and runs `backfill` once with
    /// one flag per ticket, `true` where nothing wrote the stripe since the ticket.
    pub(crate) fn backfill_many_if_current(&self, tickets: &[Ticket], backfill: impl FnOnce(&[bool])) {
        let mut stripes: Vec<usize> = tickets.iter().map(|t| t.stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let held: BTreeMap<usize, MutexGuard<'_, Stripe>> = stripes
            .into_iter()
            .filter_map(|i| self.stripes.get(i).map(|s| (i, s.lock())))
            .collect();
        let current: Vec<bool> = tickets
            .iter()
            .map(|t| {
                held.get(&t.stripe)
                    .is_some_and(|s| s.version == t.version && s.writers == 0)
            })
            .collect();
        backfill(&current);
    }

    /// Marks writes of `keys` in progress until the guard is dropped.
    pub(crate) fn write<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> WriteGuard<'_> {
        let mut stripes: Vec<usize> = keys.into_iter().map(|k| self.stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        for &i in &stripes {
            if let Some(stripe) = self.stripes.get(i) {
                let mut s = stripe.lock();
                s.version = s.version.wrapping_add(1);
                s.writers = s.writers.saturating_add(1);
            }
        }
        WriteGuard { guard: self, stripes }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        for &i in &self.stripes {
            if let Some(stripe) = self.guard.stripes.get(i) {
                let mut s = stripe.lock();
                s.writers = s.writers.saturating_sub(1);
                s.version = s.version.wrapping_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backfill_runs_when_nothing_intervened() {
        let g = BackfillGuard::default();
        let t = g.ticket("k");
        assert!(g.backfill_if_current(t, || {}));
    }

    #[test]
    fn a_write_that_finished_after_the_ticket_blocks_the_backfill() {
        let g = BackfillGuard::default();
        let t = g.ticket("k");
        drop(g.write(["k"]));
        assert!(!g.backfill_if_current(t, || panic!("must not run")));
    }

    #[test]
    fn a_batch_backfill_admits_only_the_tickets_no_write_overtook() {
        let g = BackfillGuard::default();
        let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
        let tickets: Vec<Ticket> = keys.iter().map(|k| g.ticket(k)).collect();
        drop(g.write(["k7"]));
        let stale = g.stripe_of("k7");
        let mut seen = Vec::new();
        g.backfill_many_if_current(&tickets, |current| seen = current.to_vec());
        assert_eq!(seen.len(), 64);
        for (ticket, current) in tickets.iter().zip(&seen) {
            assert_eq!(*current, ticket.stripe != stale, "stripe {}", ticket.stripe);
        }
    }

    #[test]
    fn a_write_in_progress_blocks_backfills_of_tickets_taken_during_it() {
        let g = BackfillGuard::default();
        let w = g.write(["k", "k"]);
        let t = g.ticket("k");
        assert!(!g.backfill_if_current(t, || panic!("must not run")));
        drop(w);
        assert!(!g.backfill_if_current(t, || panic!("must not run")));
        let fresh = g.ticket("k");
        assert!(g.backfill_if_current(fresh, || {}));
    }
}
