//! The gates on fills that take room unchecked: once the store is full, a fill of a key no fill
//! was asked for lately (a *new key*) is written only while such fills are read before their
//! first eviction often enough, and a fill of a key asked for before (a *seen key*) goes into
//! free room unchecked only while such fills are.
//!
//! # Why
//! Admission weighs a fill only when it would make the store evict (see `admission`); an
//! eviction frees at least three sixteenths of a segment's records (a quarter when this was
//! measured), and whatever misses next took that
//! room unchecked. Under a scan, the scan's one-off keys took most of it, each kept for a pass of
//! the log, and the log kept turning: a scan of one third of the reads into a hot set 1.2 times
//! the capacity hit 46.5% where `quick_cache` hits 53.9%. A doorkeeper refusing every new key's
//! first fill closes that gap, but costs a working set that moves to new keys, and a trace such
//! as cache2k web12, one more miss per new key (up to 2.9 points, see `admission`).
//!
//! So a gate measures what admitting a class of fills is worth, on the store's own traffic: one
//! key hash in [`SAMPLE`] is a *probe*, whose fills are always admitted, and the first eviction
//! that meets a probe's entry counts whether it was read since it was written. While at least
//! [`OPEN_PERCENT`] of the probes were read, the gate is open and recency decides, as without
//! it.
//!
//! # New keys
//! Past a closed gate only probes are admitted, and a refused key gets in at its next fill, as
//! it is then no longer new ([`super::admission::RecentFills`] remembered it). Meanwhile its
//! value waits in RAM for a second read ([`super::stash`]). Measured, the
//! share of probes read (`examples/hit_ratios.rs`, one process): scans and loops 0 to 3%, zipf
//! 3 to 10%, drifting popular keys 3 to 4%, two loops mixed with zipf 1 to 7%; web12 22 to 26%
//! and a working set that moves to new keys at 1,000 entries 33%, where the gate stays open.
//!
//! # Seen keys in free room
//! With new keys gated, the room an eviction frees went to seen keys unchecked. Under two loops
//! longer than the capacity (mixed with zipf reads), those were the loops' keys, each evicted
//! unread a pass later, before its loop came back: the log kept turning on them, and the file
//! tier held no fixed part of either loop (at 3,000 entries, 308 hits on the long loop where
//! `quick_cache` got 6,190). Past this gate, when closed, a seen key's fill into free room is
//! weighed against the next victim as if the store were full (see `admission`), so the log stops
//! turning while such fills go unread. The share of these probes read is 17 to 36% on the
//! example's traces, and the gate closes in stretches, not for good (under the two loops at
//! 3,000 entries, with a threshold of 6%, about one probe counted in eight fell in a closed
//! stretch; 6% and 12% measured the same, 25% and 40% lost up to 10 points elsewhere). Closed for good, it cost
//! every other row 1 to 11 points (web12 at 1% 31.8, drifting popular keys 29.3).
//!
//! Measured (`examples/hit_ratios.rs`, four processes, before → after, `quick_cache` in
//! brackets): two loops mixed with zipf at 1,000 and 3,000 entries 29.7-31.6 → 31.4-32.4 (32.4)
//! and 55.6-56.2 → 57.0-57.8 (59.8-60.4), with half the evictions; zipf 0.7 42.4 → 42.0-42.2
//! (42.8); the other rows within the spread of the seeds; the average 49.6-49.7 → 49.7-49.8.

//! # Costs
//! Nothing on the read path, nothing on disk: per gate, the probes admitted and not yet evicted
//! (one in [`SAMPLE`] of its class's fills, a hash set bounded at [`MAX_PROBES_PER_ENTRY`]) and
//! two counters, under the writer lock. After a restart, or a clear, the gates start open.

use std::collections::HashSet;

use super::share::ReadShare;

/// One key hash in `SAMPLE` (a power of two) is a probe. One in 32 gives a store of 1,000
/// entries under a scan about 30 probes per pass of the log: enough to close the gate within a
/// pass or two.
const SAMPLE: u64 = 32;
/// Probes counted before the counts are halved: the share read is taken over the last 32 to 64
/// probes, so the gate follows a change of pattern within one to two thousand new keys. (256
/// measured the same on the example's traces, within the spread of the seeds.)
const WINDOW: u64 = 64;
/// Share of probes read, in percent, at or above which the gate is open. Between 8 and 20 the
/// example's rows moved within the spread of the seeds; the patterns it must tell apart are at 0
/// to 10 (scans, loops, zipf's one-hit wonders) and above 20 (web12, moving working sets).
const OPEN_PERCENT: u64 = 12;
/// Bound on probes remembered, per entry the store holds (and at least [`MIN_PROBES`]): a probe
/// deleted or overwritten before an eviction met it is never met, so the set is cleared when it
/// passes the bound rather than left to grow.
const MAX_PROBES_PER_ENTRY: usize = 8;
const MIN_PROBES: usize = 64;

/// Sampled usefulness of one class of fills that take room unchecked: new keys' fills, or seen
/// keys' fills into free room (see the module docs).
#[derive(Debug)]
pub(crate) struct FillGate {
    /// Probes admitted and not yet met by an eviction.
    probes: HashSet<u64>,
    /// Probes read before their first eviction, over the last [`WINDOW`] counted.
    share: ReadShare,
}

/// Whether `hash` is a probe: picked by bits of the hash that neither the index shard, the
/// sketch nor the Bloom filters use alone.
fn is_probe(hash: u64) -> bool {
    hash.rotate_left(23).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - SAMPLE.trailing_zeros()) == 0
}

impl Default for FillGate {
    fn default() -> FillGate {
        FillGate {
            probes: HashSet::new(),
            share: ReadShare::new(WINDOW),
        }
    }
}

impl FillGate {
    /// Whether a fill of `hash` in the gate's class passes: always for a probe, else while the
    /// gate is open.
    pub(crate) fn admits(&self, hash: u64) -> bool {
        is_probe(hash) || self.is_open()
    }

    /// Whether the probes say the class's fills are worth their room (no probe counted yet:
    /// open).
    pub(crate) fn is_open(&self) -> bool {
        self.share.at_least(OPEN_PERCENT)
    }

    /// A fill of `hash` in the gate's class was written, in a store holding `entries`.
    pub(crate) fn admitted(&mut self, hash: u64, entries: usize) {
        if is_probe(hash) {
            if self.probes.len() >= (entries / MAX_PROBES_PER_ENTRY).max(MIN_PROBES) {
                self.probes.clear();
            }
            self.probes.insert(hash);
        }
    }

    /// An eviction meets the entry of `hash`, which was `read` since it was written.
    pub(crate) fn evicting(&mut self, hash: u64, read: bool) {
        if !is_probe(hash) || !self.probes.remove(&hash) {
            return;
        }
        self.share.count(read);
    }

    /// Forgets everything (the store was cleared).
    pub(crate) fn clear(&mut self) {
        *self = FillGate::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::file::admission::tests::{
        full_store_of_entries_read_thrice, in_log, misses_log, small_store, spread_hashes,
    };
    use crate::local::file::format;
    use std::sync::atomic::Ordering;

    fn probes() -> impl Iterator<Item = u64> {
        spread_hashes().filter(|&h| is_probe(h))
    }

    fn non_probe() -> u64 {
        spread_hashes().find(|&h| !is_probe(h)).unwrap_or(1)
    }

    #[test]
    fn about_one_hash_in_the_sample_is_a_probe() {
        let n = 64_000u64;
        let probes = spread_hashes().take(n as usize).filter(|&h| is_probe(h)).count() as u64;
        let expected = n / SAMPLE;
        assert!(
            probes > expected * 8 / 10 && probes < expected * 12 / 10,
            "{probes} of {n}"
        );
    }

    #[test]
    fn the_gate_closes_when_probes_go_unread_and_reopens_when_they_are_read() {
        let mut gate = FillGate::default();
        let other = non_probe();
        assert!(gate.admits(other), "no probe counted yet: open");
        for probe in probes().take(40) {
            gate.admitted(probe, 1_000);
            gate.evicting(probe, false);
        }
        assert!(!gate.is_open());
        assert!(!gate.admits(other), "a new key is refused while probes go unread");
        let probe = probes().next().unwrap_or(0);
        assert!(gate.admits(probe), "a probe is always admitted");
        // New keys are read again: the window forgets the unread probes.
        for probe in probes().skip(40).take(40) {
            gate.admitted(probe, 1_000);
            gate.evicting(probe, true);
        }
        assert!(gate.is_open());
        assert!(gate.admits(other));
    }

    #[test]
    fn only_probes_admitted_as_new_keys_are_counted_and_each_once() {
        let mut gate = FillGate::default();
        let probe = probes().next().unwrap_or(0);
        // Never admitted as a new key (a key asked for before, or a set): not counted.
        gate.evicting(probe, false);
        assert_eq!((gate.share.read, gate.share.unread), (0, 0));
        gate.admitted(probe, 1_000);
        gate.evicting(probe, true);
        // Kept at that eviction and met again: counted once.
        gate.evicting(probe, false);
        assert_eq!((gate.share.read, gate.share.unread), (1, 0));
        // A non-probe is never remembered.
        gate.admitted(non_probe(), 1_000);
        assert!(gate.probes.is_empty());
    }

    #[test]
    fn probes_never_met_by_an_eviction_do_not_grow_the_set_past_its_bound() {
        let mut gate = FillGate::default();
        for probe in probes().take(1_000) {
            gate.admitted(probe, 1_000);
        }
        assert!(gate.probes.len() <= (1_000 / MAX_PROBES_PER_ENTRY).max(MIN_PROBES));
    }

    #[test]
    fn a_full_store_whose_new_keys_go_unread_refuses_a_new_key_until_it_is_asked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let value = vec![7u8; 4_000];
        // A scan: every key missed once, filled, never read again.
        let mut i = 0;
        while store.stats().evictions == 0 || store.inner.writer.lock().new_keys.is_open() {
            let key = format!("scan{i}");
            assert!(misses_log(&store, &key));
            store.fill(&key, &value, None).unwrap();
            i += 1;
            assert!(i < 10_000, "the gate never closed");
        }
        // A new key (not a probe, asked for by no fill before) is refused, and nothing is written.
        // Not one the filter of refused keys takes for a refused one (a false positive, about
        // one key in 300 for some hash seeds): such a key comes back past every check.
        let key = (0..)
            .map(|j| format!("fresh{j}"))
            .find(|key| {
                let inner = &store.inner;
                let hash = inner.hasher.hash(key);
                let (reads, entries) = (inner.sketch.reads(), inner.index.len());
                let mut w = inner.writer.lock();
                !is_probe(hash) && !w.recent_fills.seen(hash) && !w.refused.came_back(hash, reads, entries)
            })
            .unwrap_or_default();
        assert!(misses_log(&store, &key));
        assert!(!store.fill(&key, &value, None).unwrap(), "{key} admitted");
        assert!(!in_log(&store, &key));
        // Asked for again, it is no longer new: written, and read back.
        assert!(misses_log(&store, &key));
        assert!(store.fill(&key, &value, None).unwrap(), "{key} refused twice");
        assert_eq!(store.get(&key).unwrap(), Some(value.clone()));
        // A user's write is never gated.
        store.set("written", &value, None).unwrap();
        assert!(in_log(&store, "written"));
    }

    #[test]
    fn a_seen_keys_fill_into_free_room_is_weighed_against_the_next_victim_while_its_gate_is_closed() {
        let dir = tempfile::tempdir().unwrap();
        // Every entry read thrice: the next victims are read entries, which a key read less
        // does not beat. The eviction that filled the store left free room.
        let (store, value) = full_store_of_entries_read_thrice(dir.path());
        let inner = &store.inner;
        let entries = inner.index.len();
        // A key a fill was asked for lately (seen, so not gated as new), not a probe, not held.
        let key = (0..)
            .map(|j| format!("seen{j}"))
            .find(|key| !is_probe(inner.hasher.hash(key)) && !in_log(&store, key))
            .unwrap_or_default();
        let hash = inner.hasher.hash(&key);
        let len = format::stored_len(key.len(), value.len());
        let close = |read: bool| {
            let mut w = inner.writer.lock();
            w.recent_fills.record(hash, entries);
            for probe in probes().take(40) {
                w.seen_keys.admitted(probe, entries);
                w.seen_keys.evicting(probe, read);
            }
            w.seen_keys.is_open()
        };
        assert!(
            !close(false),
            "seen keys' fills into free room went unread: closed"
        );
        assert!(
            inner.disk_bytes.load(Ordering::Relaxed) + len <= inner.max_bytes,
            "the fill would go into free room"
        );
        assert!(
            !store.fill(&key, &value, None).unwrap(),
            "{key} admitted past a closed gate"
        );
        assert!(!in_log(&store, &key));
        // Such fills are read again: the gate opens, and free room takes the fill unchecked.
        assert!(close(true));
        assert!(
            store.fill(&key, &value, None).unwrap(),
            "{key} refused past an open gate"
        );
        assert_eq!(store.get(&key).unwrap(), Some(value));
    }
}
