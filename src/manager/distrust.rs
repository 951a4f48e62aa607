//! [`Distrust`]: whether every L1 hit is checked against L2 (the backplane's subscription is
//! down, or L1 could not mark its entries suspect), and which turning-on a clearing answers.
//!
//! It is turned on from several places (a lost subscription, an invalidation or a delete that
//! L1 could not apply) and off by the subscription's return or by a retry of the marking. Each
//! off-switch read the state before its marking; it must not clear a turning-on that came after
//! that (the marking it did predates the failure that turned it on). So the flag carries a
//! generation, bumped by every turning-on, and is cleared only if it is still the one read.

use std::sync::atomic::{AtomicU64, Ordering};

/// See the [module docs](self). Bit 0: on; the other bits: the generation.
#[derive(Debug, Default)]
pub(crate) struct Distrust(AtomicU64);

/// The state read before a marking: clear the flag with [`Distrust::turn_off_if`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen(u64);

impl Distrust {
    /// Whether every L1 hit must be checked against L2: one load on the hit path.
    #[inline]
    pub(crate) fn is_on(&self) -> bool {
        self.0.load(Ordering::Acquire) & 1 == 1
    }

    /// Turns it on, as a new generation.
    pub(crate) fn turn_on(&self) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            Some(((v >> 1).wrapping_add(1) << 1) | 1)
        });
    }

    /// The state now, read before a marking that may clear it.
    pub(crate) fn seen(&self) -> Seen {
        Seen(self.0.load(Ordering::Acquire))
    }

    /// Turns it off unless it was turned on again since `seen`; whether it is off now.
    pub(crate) fn turn_off_if(&self, seen: Seen) -> bool {
        // Release: a reader that sees it off also sees the entries the marking made suspect.
        let off = seen.0 & !1;
        self.0
            .compare_exchange(seen.0, off, Ordering::AcqRel, Ordering::Acquire)
            .map_or_else(|now| now & 1 == 0, |_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clearing_does_not_undo_a_turning_on_that_came_after_what_it_read() {
        let d = Distrust::default();
        assert!(!d.is_on());
        d.turn_on();
        let seen = d.seen();
        d.turn_on();
        assert!(!d.turn_off_if(seen), "cleared a later turning-on");
        assert!(d.is_on());
        let seen = d.seen();
        assert!(d.turn_off_if(seen));
        assert!(!d.is_on());
        assert!(d.turn_off_if(d.seen()), "off stays off");
    }
}
