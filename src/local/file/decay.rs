//! Whether entries kept at eviction spend a read at every keep, decided by watching a sample of
//! the kept entries that stopped being read.
//!
//! # Why
//! An entry read since it was written is kept at eviction, and spends one of its counted reads
//! only when read entries had to be evicted for want of room (see `policy`). A key read often and
//! then never again (the item of yesterday's news, the last phase's hot set) keeps its count of
//! three, and with it its place, for pass after pass of the log: on popular keys that drift a
//! little all the time (`examples/hit_ratios.rs`), 60% of a store of 1,000 entries held keys that
//! were never read again, where LRU holds 8%, and the file tier hit 46% where LRU hits 52%.
//! Spending a read at every keep drains them (52.5%), but a loop over more keys than fit, whose
//! keys are read once every several passes, then loses the part it keeps: two loops mixed with
//! zipf reads fell from 30 to 23 at 1,000 entries, zipf 0.7 from 42.4 to 39.7.
//!
//! What tells the two apart is whether a kept entry that stopped being read is read again. One
//! key hash in [`SAMPLE`] is watched: when an eviction keeps its entry with reads counted but
//! none lately (the sketch of reads, see `admission`, counts none), the next evictions that meet
//! it count whether it was read since (its count rose, or the sketch counts a read), or went
//! unread until it was evicted or [`HORIZON_PER_ENTRY`] times the entries were evicted.
//! Measured, the share of them read (one process each): popular keys that drift 28 to 37%,
//! cache2k web12 48 to 64%, a working set that moves to new keys 60 to 62%, zipf 79 to 84%, two
//! loops mixed with zipf 96%. Below [`SPEND_BELOW_PERCENT`], an entry kept with reads counted but
//! none lately spends them all: unread, it is kept once more protected and then only as a
//! probationary filler (see `policy`). Watched entries never do, so what they measure is the
//! rule's other side, and the share does not feed on itself.
//!
//! Measured (`examples/hit_ratios.rs`, five processes, before → after, `quick_cache` in
//! brackets): popular keys that drift at 500 and 1,000 entries 36.8-37.0 → 39.7-40.4 (38.3) and
//! 45.9-46.1 → 50.4-50.6 (48.2); web12 at 1% of its keys 36.8-37.1 → 37.6-37.9 (37.9), at 10%
//! 71.1-71.3 → 70.6-70.8 (71.3); a working set that moves, at 1,000 entries, 74.2-74.4 →
//! 75.0-76.2 (75.6), at 500 62.0-62.2 → 61.5-62.1 (63.1); a loop mixed with a hot set 44.7 →
//! 44.2-44.6 (45.8); the other rows within the spread of the seeds; the average 49.1-49.2 →
//! 49.5-49.7 (49.3).
//!
//! Tried: spending a read at every keep whatever the watched entries say (drifting keys 42.7 and
//! 52.5, web12 at 1% 39.7, but two loops mixed with zipf 23.0 and 47.5 where they got 30 and 56,
//! zipf 0.7 39.7 instead of 42.4); with the rule on, one read per keep instead of all (drifting
//! keys 38.6-39.1 and 48.4-48.8), or at every keep rather than at keeps of entries not read
//! lately (web12 at 1% 36.3).

//! # Costs
//! Nothing on the read path, nothing on disk: the watched entries (one in [`SAMPLE`] of the kept
//! ones not read lately, a map bounded at an eighth of the entries) and two counters, under the
//! writer lock, and one look at the sketch per entry an eviction keeps. After a restart, or a
//! clear, no read is spent but for room, until the watched entries say otherwise.

use super::index::ByHash;
use super::share::ReadShare;

/// One key hash in `SAMPLE` (a power of two) is watched.
const SAMPLE: u64 = 32;
/// Watched entries counted before the counts are halved: the share is taken over the last 128 to
/// 256. With 32 to 64, the share of a zipf trace (about 80%) dipped below the threshold now and
/// then, and each such stretch cost it: a slice of 30,000 zipf(0.99) reads at 500 entries hit
/// 60.7-63.8% over 16 processes, 62.2-64.0% with this window (the same as with no rule at all).
/// Popular keys that drift lost 0.3 to 0.9 of their gain.
const WINDOW: u64 = 256;
/// Fewest watched entries counted before the share decides anything: a quarter of the window.
const MIN_COUNTED: u64 = 64;
/// Share of watched entries read again, in percent, below which a kept entry that stopped being
/// read spends all its reads.
const SPEND_BELOW_PERCENT: u64 = 70;
/// Entries evicted, per entry the store holds, after which a watched entry still unread counts
/// as unread: a loop over up to eight times the capacity comes back to its keys within it.
const HORIZON_PER_ENTRY: u64 = 8;
/// Bound on watched entries, per entry the store holds (and at least [`MIN_WATCHED`]); the map is
/// cleared when it passes it (an entry deleted or overwritten is never met again).
const MAX_WATCHED_PER_ENTRY: usize = 8;
const MIN_WATCHED: usize = 64;

/// A watched entry: its count of reads when kept, and the store's evictions then.
#[derive(Debug, Clone, Copy)]
struct Watch {
    freq: u32,
    evicted: u64,
}

/// Sampled worth of the reads counted by kept entries that stopped being read (see the module
/// docs).
#[derive(Debug)]
pub(crate) struct Decay {
    watched: ByHash<Watch>,
    /// Watched entries read again, over the last [`WINDOW`] counted.
    share: ReadShare,
}

/// What an eviction knows of an entry it meets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Met {
    pub(crate) hash: u64,
    /// Reads counted in the index entry.
    pub(crate) freq: u32,
    /// Reads the sketch counts lately.
    pub(crate) recent: u32,
    /// Kept (re-appended) by this eviction.
    pub(crate) kept: bool,
}

/// Whether `hash` is watched: picked by bits of the hash that neither the index shard, the
/// sketch, the Bloom filters nor the gate on new keys use alone.
pub(crate) fn is_watched(hash: u64) -> bool {
    hash.rotate_left(41).wrapping_mul(0xA076_1D64_78BD_642F) >> (64 - SAMPLE.trailing_zeros()) == 0
}

impl Default for Decay {
    fn default() -> Decay {
        Decay {
            watched: ByHash::default(),
            share: ReadShare::new(WINDOW),
        }
    }
}

impl Decay {
    /// Whether an entry of `hash` kept at eviction spends a read even with room to spare.
    pub(crate) fn spends(&self, hash: u64) -> bool {
        !is_watched(hash) && self.is_on()
    }

    /// Whether the watched entries say reads counted long ago are worth little.
    pub(crate) fn is_on(&self) -> bool {
        self.share.counted() >= MIN_COUNTED && !self.share.at_least(SPEND_BELOW_PERCENT)
    }

    /// An eviction meets `met`; the store has evicted `evicted` entries so far and holds
    /// `entries`.
    pub(crate) fn meet(&mut self, met: Met, evicted: u64, entries: usize) {
        if !is_watched(met.hash) {
            return;
        }
        if let Some(watch) = self.watched.get(&met.hash).copied() {
            let horizon = HORIZON_PER_ENTRY.saturating_mul(entries as u64);
            if met.freq > watch.freq || met.recent > 0 {
                self.share.count(true);
            } else if !met.kept || evicted.saturating_sub(watch.evicted) > horizon {
                self.share.count(false);
            } else {
                return;
            }
            self.watched.remove(&met.hash);
        } else if met.kept && met.freq > 0 && met.recent == 0 {
            if self.watched.len() >= (entries / MAX_WATCHED_PER_ENTRY).max(MIN_WATCHED) {
                self.watched.clear();
            }
            self.watched.insert(
                met.hash,
                Watch {
                    freq: met.freq,
                    evicted,
                },
            );
        }
    }

    /// Forgets everything (the store was cleared).
    pub(crate) fn clear(&mut self) {
        *self = Decay::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::file::admission::tests::spread_hashes;

    fn watched() -> impl Iterator<Item = u64> {
        spread_hashes().filter(|&h| is_watched(h))
    }

    /// A kept entry with reads counted, none lately: what starts a watch.
    fn kept_stale(hash: u64, freq: u32) -> Met {
        Met {
            hash,
            freq,
            recent: 0,
            kept: true,
        }
    }

    /// Watches `n` entries and lets each be read again or not.
    fn watch_and_settle(decay: &mut Decay, hashes: impl Iterator<Item = u64>, read: bool) {
        for hash in hashes {
            decay.meet(kept_stale(hash, 2), 0, 1_000);
            let next = Met {
                freq: if read { 3 } else { 2 },
                kept: read,
                ..kept_stale(hash, 2)
            };
            decay.meet(next, 10, 1_000);
        }
    }

    #[test]
    fn about_one_hash_in_the_sample_is_watched_and_watched_entries_never_spend_for_it() {
        let n = 64_000u64;
        let count = spread_hashes()
            .take(n as usize)
            .filter(|&h| is_watched(h))
            .count() as u64;
        let expected = n / SAMPLE;
        assert!(
            count > expected * 8 / 10 && count < expected * 12 / 10,
            "{count} of {n}"
        );
        let mut decay = Decay::default();
        watch_and_settle(&mut decay, watched().take(64), false);
        assert!(decay.is_on());
        assert!(watched().take(10).all(|h| !decay.spends(h)));
        assert!(spread_hashes()
            .filter(|&h| !is_watched(h))
            .take(10)
            .all(|h| decay.spends(h)));
    }

    #[test]
    fn spending_turns_on_when_watched_entries_go_unread_and_off_when_they_are_read_again() {
        let mut decay = Decay::default();
        // Nothing counted: reads are spent for room only, as before a restart.
        assert!(!decay.is_on());
        let mut w = watched();
        watch_and_settle(&mut decay, w.by_ref().take(MIN_COUNTED as usize - 1), false);
        assert!(!decay.is_on(), "decided before {MIN_COUNTED} were counted");
        watch_and_settle(&mut decay, w.by_ref().take(1), false);
        assert!(decay.is_on());
        // Read again: loops come back to their keys.
        watch_and_settle(&mut decay, w.by_ref().take(WINDOW as usize), true);
        assert!(!decay.is_on());
        assert!(decay.share.counted() < WINDOW, "the counts are halved");
    }

    #[test]
    fn a_watched_entry_counts_as_read_by_its_count_or_the_sketch_and_as_unread_when_evicted_or_past_the_horizon(
    ) {
        let entries = 1_000;
        let horizon = HORIZON_PER_ENTRY * entries as u64;
        let mut w = watched();
        let mut decay = Decay::default();
        // Only a kept entry with reads counted and none lately is watched.
        let h = w.next().unwrap_or(0);
        decay.meet(
            Met {
                recent: 1,
                ..kept_stale(h, 2)
            },
            0,
            entries,
        );
        decay.meet(kept_stale(h, 0), 0, entries);
        decay.meet(
            Met {
                kept: false,
                ..kept_stale(h, 2)
            },
            0,
            entries,
        );
        assert!(decay.watched.is_empty());
        // Kept again unread within the horizon: still watched, nothing counted.
        decay.meet(kept_stale(h, 2), 0, entries);
        decay.meet(kept_stale(h, 2), horizon, entries);
        assert_eq!(
            (decay.share.read, decay.share.unread, decay.watched.len()),
            (0, 0, 1)
        );
        // Past it: unread.
        decay.meet(kept_stale(h, 2), horizon + 1, entries);
        assert_eq!(
            (decay.share.read, decay.share.unread, decay.watched.len()),
            (0, 1, 0)
        );
        // Evicted unread: unread.
        decay.meet(kept_stale(h, 2), 0, entries);
        decay.meet(
            Met {
                kept: false,
                ..kept_stale(h, 2)
            },
            5,
            entries,
        );
        assert_eq!((decay.share.read, decay.share.unread), (0, 2));
        // Its count rose, or (saturated) the sketch counts a read: read, evicted or not.
        decay.meet(kept_stale(h, 2), 0, entries);
        decay.meet(
            Met {
                kept: false,
                ..kept_stale(h, 3)
            },
            5,
            entries,
        );
        decay.meet(kept_stale(h, 3), 0, entries);
        decay.meet(
            Met {
                recent: 1,
                ..kept_stale(h, 3)
            },
            5,
            entries,
        );
        assert_eq!((decay.share.read, decay.share.unread), (2, 2));
        // Entries never met again do not pile up.
        for hash in w.take(2 * MIN_WATCHED) {
            decay.meet(kept_stale(hash, 1), 0, entries);
        }
        assert!(decay.watched.len() <= MIN_WATCHED);
    }
}
