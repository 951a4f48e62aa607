//! The gates on fills that take room unchecked: once the store is full, a fill of a key no fill
//! was asked for lately (a *new key*) is written only while such fills are read before their
//! first eviction often enough, a fill of a key asked for before (a *seen key*) goes into
//! free room unchecked only while such fills are, and a refused fill that comes back is let in
//! past every check (see `refused`) only while such fills are.
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
//! # Refused fills that come back
//! A fill refused lately whose key is read again within about what the store holds is let in
//! past every check (see `refused`): the key was read again as a working set's keys are. A loop
//! whose order changes from pass to pass brings some keys back that soon too, and each one let
//! in turned the log and pushed out a kept key of the loop, then went unread before its first
//! eviction. So these fills have a gate of their own, which counts every such fill rather than a
//! sample (they are few: 1,400 in the 20,000 reads of the example's shuffled loop, under 200 on
//! cpp at 10% of its keys, where a sample of one in [`SAMPLE`] counted too few to decide and the
//! gate stayed open or shut by chance), stays open until [`MIN_COUNTED`] are counted, and past
//! it when closed lets only probes come back. Measured, the share of them read before their
//! first eviction: 5.5% on the shuffled loop; 46 to 86% on cpp, multi1 and multi3 of the LIRS
//! set, 31 to 52% on cache2k web12, 35 to 44% under two loops mixed with zipf; 8% on sprite at
//! 1% of its keys and 14 to 16% on 2_pools at 10 and 25%. A working set that slides to new
//! keys (each refused once, then let in as it comes back) reads its new entries less often than
//! the log turns: half of them are met unread, in runs that closed the gate and cost it 2.5
//! points (`quick_cache` 72.3, the file tier 72.4 → 69.9 over eight processes). So an entry
//! that comes back counts as worth its room if it was read or if the eviction keeps it for its
//! key's reads or its protection (not as a filler, see `policy`).
//!
//! Measured (`examples/hit_ratios.rs`, four processes, before → after, `quick_cache` in
//! brackets): the loop over 2,000 keys shuffled a little every pass at 1,016 entries 36.1-36.9
//! → 39.3-43.1 (40.3); a loop mixed with a hot set 45.4-45.6 → 45.0-45.4 (46.0); the other rows
//! within the spread of the seeds (the sliding working set 71.1-72.6 → 71.1-72.1; 72.3), the
//! average 49.3-49.4 → 49.4-49.6 (48.7). On the traces of the LIRS and cache2k sets at 1, 10 and
//! 25% of their keys, against `quick_cache`, medians of 30 processes: sprite at 1% -1.4 → +0.3,
//! multi2 at 25% -0.8 → -1.5, 2_pools at 1% -1.5 → -1.7, multi3 at 25% -1.8 → -1.9, cpp at 10%
//! -2.0 → -2.0, multi1 at 25% -1.9 → -1.8; of six: backf at 10 and 25% +1.8 → +4.1 and +4.0 →
//! +10.7, zigzag +1.4 → +4.4 and +3.8 → +7.0 (loops whose keys come back early), the other
//! cells within 0.3.
//!
//! # Seen keys: measured
//! Measured (`examples/hit_ratios.rs`, four processes, before → after, `quick_cache` in
//! brackets): two loops mixed with zipf at 1,000 and 3,000 entries 29.7-31.6 → 31.4-32.4 (32.4)
//! and 55.6-56.2 → 57.0-57.8 (59.8-60.4), with half the evictions; zipf 0.7 42.4 → 42.0-42.2
//! (42.8); the other rows within the spread of the seeds; the average 49.6-49.7 → 49.7-49.8.

//! # Costs
//! Nothing on the read path, nothing on disk: per gate, the probes admitted and not yet evicted
//! (one in [`SAMPLE`] of its class's fills, every one for refused fills that come back; a hash
//! set bounded at [`MAX_PROBES_PER_ENTRY`]) and two counters, under the writer lock. After a restart, or a clear, the gates start open.

use super::index::HashesSet;
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
/// Fills a gate that counts every fill of its class counts before its share can close it: a
/// handful of unread fills at the start of a trace closed it, and past a closed gate only one
/// fill in [`SAMPLE`] is counted, so it stayed shut for most of a short trace.
const MIN_COUNTED: u64 = 32;

/// Sampled usefulness of one class of fills that take room unchecked: new keys' fills, seen
/// keys' fills into free room, or refused fills that come back (see the module docs).
#[derive(Debug)]
pub(crate) struct FillGate {
    /// Fills counted (probes, or every fill) admitted and not yet met by an eviction.
    probes: HashesSet,
    /// Counted fills read before their first eviction, over the last [`WINDOW`] counted.
    share: ReadShare,
    /// Whether every fill admitted is counted, not only probes (a class of few fills).
    counts_every_fill: bool,
}

/// Whether `hash` is a probe: picked by bits of the hash that neither the index shard, the
/// sketch nor the Bloom filters use alone.
fn is_probe(hash: u64) -> bool {
    hash.rotate_left(23).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - SAMPLE.trailing_zeros()) == 0
}

impl Default for FillGate {
    fn default() -> FillGate {
        FillGate {
            probes: HashesSet::default(),
            share: ReadShare::new(WINDOW),
            counts_every_fill: false,
        }
    }
}

impl FillGate {
    /// A gate that counts every fill of its class admitted, not a sample, and stays open until
    /// [`MIN_COUNTED`] are counted; closed, it still admits only probes. For a class of few
    /// fills: refused fills that come back.
    pub(crate) fn counting_every_fill() -> FillGate {
        FillGate {
            counts_every_fill: true,
            ..FillGate::default()
        }
    }

    /// Whether the gate counts a fill of `hash` it admits.
    fn counts(&self, hash: u64) -> bool {
        self.counts_every_fill || is_probe(hash)
    }

    /// Whether a fill of `hash` in the gate's class passes: always for a probe, else while the
    /// gate is open.
    pub(crate) fn admits(&self, hash: u64) -> bool {
        is_probe(hash) || self.is_open()
    }

    /// Whether the probes say the class's fills are worth their room (no probe counted yet:
    /// open).
    pub(crate) fn is_open(&self) -> bool {
        (self.counts_every_fill && self.share.counted() < MIN_COUNTED) || self.share.at_least(OPEN_PERCENT)
    }

    /// A fill of `hash` in the gate's class was written, in a store holding `entries`.
    pub(crate) fn admitted(&mut self, hash: u64, entries: usize) {
        if self.counts(hash) {
            if self.probes.len() >= (entries / MAX_PROBES_PER_ENTRY).max(MIN_PROBES) {
                self.probes.clear();
            }
            self.probes.insert(hash);
        }
    }

    /// An eviction meets the entry of `hash`, which was `read` since it was written (for refused
    /// fills that come back: or is kept for its key's reads or its protection, see the module
    /// docs).
    pub(crate) fn evicting(&mut self, hash: u64, read: bool) {
        // Most evictions meet no probe at all: the empty check spares them even the lookup.
        if !self.counts(hash) || self.probes.is_empty() || !self.probes.remove(&hash) {
            return;
        }
        self.share.count(read);
    }

    /// Forgets everything (the store was cleared).
    pub(crate) fn clear(&mut self) {
        *self = FillGate {
            counts_every_fill: self.counts_every_fill,
            ..FillGate::default()
        };
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
    fn a_gate_counting_every_fill_closes_once_enough_go_unread_and_then_admits_only_probes() {
        let mut gate = FillGate::counting_every_fill();
        let others: Vec<u64> = spread_hashes().filter(|&h| !is_probe(h)).take(200).collect();
        let (first, rest) = others.split_at(MIN_COUNTED as usize - 1);
        // Every fill is counted, not a sample, but a handful unread does not close it.
        for &hash in first {
            gate.admitted(hash, 1_000);
            gate.evicting(hash, false);
        }
        assert_eq!(gate.share.unread, MIN_COUNTED - 1);
        assert!(gate.is_open(), "closed on {} fills", MIN_COUNTED - 1);
        let mut rest = rest.iter().copied();
        let next = rest.next().unwrap_or(0);
        gate.admitted(next, 1_000);
        gate.evicting(next, false);
        assert!(!gate.is_open(), "open with every fill counted unread");
        let other = rest.next().unwrap_or(0);
        assert!(
            !gate.admits(other),
            "a fill that is no probe passes a closed gate"
        );
        assert!(
            gate.admits(probes().next().unwrap_or(0)),
            "a probe is always admitted"
        );
        // The fills are read again: the window forgets the unread ones.
        for hash in rest.take(64) {
            gate.admitted(hash, 1_000);
            gate.evicting(hash, true);
        }
        assert!(gate.is_open());
        // A clear starts it open again, still counting every fill.
        gate.clear();
        assert!(gate.is_open() && gate.counts_every_fill);
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
