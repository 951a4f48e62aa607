//! Which changes of the level below overlap in time, so that the memory tier keeps the value a
//! write decoded only when that write was the last change of its key.
//!
//! A write may leave its value in the memory tier only if no other change of the key (a write,
//! a delete, an invalidation) ran at any moment between its start and the moment the value is
//! in place: two changes that overlap may reach the level below in either order, and the one
//! that finishes last is not always the one the level below kept. So every change of a key
//! takes a [`Change`] of the key's stripe before it touches the level below and drops it after:
//! the stripe counts the changes begun and the changes running. A write that found its stripe
//! idle when it began, and finds no change begun since, overlapped nothing, and puts its value
//! ([`Change::unless_overlapped`]); any change that begins later takes the key out of the tier
//! itself. The check and the put are one step against changes beginning (a lock per stripe,
//! taken by each change as it begins and by a write as it puts, never by reads): a put checked
//! only after it was made, and undone if another change had begun, was readable in between, and
//! the other change could have returned by then (a write that ended first, having overlapped,
//! leaves nothing in the tier), so that a read after it answered the older value of the write
//! that ended last. Two keys share a stripe with probability 1 / [`STRIPES`]; a shared stripe
//! only makes a write forget its key rather than keep the new value, which is always safe, and
//! makes a change's start wait while the other key's write puts its value (a decode).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

/// How many stripes the keys are spread over.
pub(super) const STRIPES: usize = 1024;

/// One change begun, as it counts in [`Stripe::counts`]: one more running, one more begun.
const BEGIN: u64 = (1 << RUNNING_BITS) | 1;
/// The low bits of [`Stripe::counts`] count the changes running.
const RUNNING_BITS: u32 = 32;
const RUNNING: u64 = (1 << RUNNING_BITS) - 1;

#[derive(Debug, Default)]
struct Stripe {
    /// Changes running (begun and not yet dropped) in the low 32 bits, changes begun ever
    /// (wrapping) in the high ones. One word, so that a change reads both as one moment: kept
    /// apart, a write could count itself alone while another change that began after it took
    /// its begun number first, and miss their overlap.
    counts: AtomicU64,
    /// Held while a change begins (its count taken) and while a write checks and puts its value,
    /// so that no change begins between the two (see the module docs).
    lock: Mutex<()>,
}

/// The stripes; see the module docs.
#[derive(Debug)]
pub(super) struct Changes {
    stripes: Box<[Stripe]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Changes {
    pub(super) fn new() -> Changes {
        Changes {
            stripes: (0..STRIPES).map(|_| Stripe::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// The hash of `key` that picks its stripe (also the tier's key of recent misses).
    pub(super) fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The stripe of the key of `hash`.
    pub(super) fn stripe_of(&self, hash: u64) -> usize {
        // `STRIPES` divides 2^64, so the remainder is uniform, and below `STRIPES`.
        usize::try_from(hash % STRIPES as u64).unwrap_or(0)
    }

    /// Marks a change of the key of `hash` as running until the returned [`Change`] is
    /// dropped. (`None` cannot happen: the stripe index is in range.)
    pub(super) fn begin(&self, hash: u64) -> Option<Change<'_>> {
        let stripe = self.stripes.get(self.stripe_of(hash))?;
        let before = {
            let _no_put = stripe.lock.lock();
            stripe.counts.fetch_add(BEGIN, Ordering::SeqCst)
        };
        Some(Change {
            stripe,
            begun: (before >> RUNNING_BITS).wrapping_add(1),
            alone: before & RUNNING == 0,
        })
    }
}

/// A change of a key of one stripe, running until dropped.
#[derive(Debug)]
pub(super) struct Change<'a> {
    stripe: &'a Stripe,
    /// The stripe's count of changes begun, this one included (32 bits, wrapping).
    begun: u64,
    /// Whether no other change of the stripe was running when this one began.
    alone: bool,
}

impl Change<'_> {
    /// Runs `put` (a write putting its value in the tier) and gives its answer, unless another
    /// change of the stripe ran at some moment since this one began; no change begins while
    /// `put` runs, and one that begins after takes the key out of the tier itself.
    pub(super) fn unless_overlapped<R>(&self, put: impl FnOnce() -> R) -> Option<R> {
        if !self.alone {
            return None;
        }
        let _no_begin = self.stripe.lock.lock();
        (!self.overlapped()).then(put)
    }

    /// Whether another change of the stripe ran at some moment since this one began.
    fn overlapped(&self) -> bool {
        let begun = self.stripe.counts.load(Ordering::SeqCst) >> RUNNING_BITS;
        !self.alone || begun != self.begun & (u64::MAX >> RUNNING_BITS)
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        self.stripe.counts.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_alone_in_its_stripe_did_not_overlap() {
        let changes = Changes::new();
        let c = changes.begin(changes.hash("k")).unwrap();
        assert!(!c.overlapped());
        drop(c);
        let again = changes.begin(changes.hash("k")).unwrap();
        assert!(!again.overlapped(), "a change that ended before does not count");
    }

    #[test]
    fn a_change_begun_during_another_overlaps_it_and_it_overlaps_the_later_one() {
        let changes = Changes::new();
        let first = changes.begin(changes.hash("k")).unwrap();
        let second = changes.begin(changes.hash("k")).unwrap();
        assert!(first.overlapped(), "a change begun since");
        assert!(second.overlapped(), "a change running when it began");
        drop(first);
        assert!(
            second.overlapped(),
            "the overlap stays once the other one is over"
        );
    }

    #[test]
    fn keys_spread_over_the_stripes() {
        let changes = Changes::new();
        let held: Vec<Change<'_>> = (0..64)
            .map(|i| changes.begin(changes.hash(&format!("held{i}"))).unwrap())
            .collect();
        let alone = (0..1000)
            .filter(|i| {
                !changes
                    .begin(changes.hash(&format!("other{i}")))
                    .unwrap()
                    .overlapped()
            })
            .count();
        // 64 of 1024 stripes are busy: about 94% of other keys find theirs idle.
        assert!(alone > 880, "{alone} of 1000 keys found their stripe idle");
        drop(held);
    }
}
