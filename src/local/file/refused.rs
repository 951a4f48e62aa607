//! Fills that come back: a fill of a key whose fill was refused lately, read again within
//! about what the store holds, is admitted past every check of [`super::admission`] (while
//! such fills earn their room: see [`super::fillgate`]).
//!
//! # Why
//! The checks of `admission` weigh a fill against entries that were read; they cannot tell
//! entries read by a working set that is over from entries read by one that goes on. On cpp (a
//! trace of the LIRS set: phases whose keys are read again within about the capacity, then
//! left), a store of 121 entries refused 1,072 of 1,150 fills of new keys and 1,478 of 1,492 of
//! seen keys; the entries of the phase before kept their places, and the file tier hit 72.8%
//! where `quick_cache` hits 80.6% (LRU 75.3%), at 60 entries 37.8% (61.2%; LRU 18.6%).
//!
//! So a refusal is remembered ([`Refused`]), and a fill of a key refused within the last 9/8
//! to 3/2 of the store's entries of reads is admitted past every check: the key was read again
//! within about what the store holds, as a working set's keys are. cpp: 60.7-62.0% at 60
//! entries, 77.6-78.6% at 121. A loop over more keys than fit comes back to its keys only after
//! more reads than that, so its refused keys stay out (a loop over twice the capacity: 44.1-45.2,
//! as before; `quick_cache` 43.9); a loop over 4/3 of the capacity partly comes back within the
//! window, 66.2-68.0 → 62.9-64.1 (54.1), and one over five times the capacity lost a little,
//! 16.7 → 15.4-15.5 (16.3). The cost is on loops whose order changes from pass to pass: some
//! keys come back early, are let in, and turn the log. A loop over twice the capacity shuffled a
//! little every pass (not in the example) hit 45.5-46.3% and now 38.9-39.1% (`quick_cache`
//! 43.9-44.4%); sampling whether such fills are read before their first eviction, as `fillgate`
//! does, got it to 40.3% only. (The example's shuffled loop, 36.1-36.9 against 40.3, is within
//! the spread of `quick_cache` since these fills have a gate that counts every one of them:
//! see `fillgate`, refused fills that come back.) A working set that slides (900 keys, 100 new ones a pass, in a
//! store of 1,000) got 50.2-56.4% and now 58.4-66.2% (`quick_cache` 72.0; LRU 87.4): each new
//! key is refused once, then let in. The other rows of `examples/hit_ratios.rs` moved within the
//! spread of the seeds. On the traces of the LIRS and cache2k sets at 1, 5, 10 and 25% of their
//! keys (cpp, glimpse, multi2, sprite, cache2k web07, web12, oltp, orm-busy) the file tier is
//! within 2 points of `quick_cache` or ahead but for cpp at 10% and multi2 at 25%: over 22
//! processes each (the seeds move these small traces by up to 3 points), -2.5 (-1.5 to -3.8)
//! and -3.4 (-0.9 to -3.7; -1.0 to -4.0 before). (Sprite at 1%, -2.0 to -3.0 here, is 1.4 to
//! 1.6 behind since a small store's sketch keeps its counts longer; see `admission`.)
//!
//! Most of the reads those two cells lose against `quick_cache` are of keys whose last fill was
//! refused, and most of those refusals weighed a seen key against a read or protected victim
//! (the sketch's check). Tried: letting such fills in, or in at an equal count, while more than
//! a tenth to three fifths of the refused keys come back; the gate on seen keys open at 0 or 6%
//! of its probes read instead of 12%; one probe in eight for the gates instead of one in 32.
//! Each moved these cells within the spread of the seeds. A floor of 512 or 1,024 reads on the
//! window here cost cpp at 1% and 5% 5 to 9 points.
//!
//! A refused fill's value waits in RAM a short while ([`super::stash`]); a read served there is
//! not a miss, so no fill asks again. So a value read while held is recorded as refused once
//! more when it leaves, and its key's next fill comes back as it would have after a second miss.
//!
//! # Costs
//! Three bytes of RAM per entry (the filters), nothing on disk, nothing on the read path: the
//! clock is the sketch's count of reads, and fills are checked and recorded under the writer
//! lock. After a restart, or a clear, no refusal is remembered.

use super::ghost::BloomRing;

/// Generations of [`Refused`], each [`REFUSED_EIGHTHS`] / 8 / 4 of the store's entries of
/// reads: a refused key is remembered for the last 9/8 to 3/2 of the entries of reads.
const REFUSED_GENERATIONS: usize = 4;
/// The longest span of reads [`Refused`] remembers a refusal for, in eighths of the entries.
/// cpp (a trace of the LIRS set, not in the repository) at 5% of its keys hit 55.8% with a
/// window of the entries (3/4 to 1 of them), 61.9% with this one (`quick_cache` 61.2%); at 10%,
/// 77.4 and 78.5 (80.5). A longer window lets more of a loop's refused keys in: a loop over 4/3
/// of the capacity hit 68.8% with the shorter window and 62.8% with this one (`quick_cache`
/// 54.2%).
const REFUSED_EIGHTHS: usize = 12;
/// Bits per key of a [`Refused`] generation: about 0.1% false positives, each a fill let in
/// past every check.
const REFUSED_BITS_PER_KEY: usize = 16;

/// Keys whose fill was refused lately, by reads: a fill of a key refused within the last 9/8
/// to 3/2 of the store's entries of reads is admitted whatever the other checks say, while the
/// gate on such fills is open (see the module docs, fills that come back, and `fillgate`). A
/// ring of Bloom filters ([`super::ghost`]'s) rolled every [`REFUSED_EIGHTHS`] / 32 of the
/// entries of reads, counted by the sketch ([`super::admission::Sketch::reads`]): three bytes
/// of RAM per entry, none on disk, nothing on the read path (fills are checked and recorded
/// under the writer lock).
#[derive(Debug, Default)]
pub(crate) struct Refused {
    ring: BloomRing<REFUSED_GENERATIONS, REFUSED_BITS_PER_KEY>,
    /// The read clock when the newest generation started.
    since: u64,
}

impl Refused {
    /// Whether a fill of `hash` was refused within the window, the clock being at `reads` in a
    /// store holding `entries`.
    pub(crate) fn came_back(&mut self, hash: u64, reads: u64, entries: usize) -> bool {
        self.advance(reads, entries);
        self.ring.contains(hash)
    }

    /// Remembers that a fill of `hash` was refused.
    pub(crate) fn record(&mut self, hash: u64, reads: u64, entries: usize) {
        self.advance(reads, entries);
        self.ring.insert(hash, Self::span(entries) as usize);
    }

    /// Reads per generation.
    fn span(entries: usize) -> u64 {
        (entries * REFUSED_EIGHTHS / 8 / REFUSED_GENERATIONS).max(1) as u64
    }

    /// Starts a new generation for every span of reads gone by since the newest started (at
    /// most as many as are kept: then every refusal is forgotten).
    fn advance(&mut self, reads: u64, entries: usize) {
        let span = Self::span(entries);
        let passed = reads.saturating_sub(self.since) / span;
        if passed == 0 {
            return;
        }
        for _ in 0..passed.min(REFUSED_GENERATIONS as u64) {
            self.ring.roll(span as usize);
        }
        self.since = reads - reads.saturating_sub(self.since) % span;
    }

    /// Forgets every refusal (the store was cleared).
    pub(crate) fn clear(&mut self) {
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::file::admission::tests::{full_store_of_entries_read_thrice, in_log, misses_log};

    fn hash(i: u64) -> u64 {
        ahash::RandomState::with_seeds(5, 6, 7, 8).hash_one(i)
    }

    #[test]
    fn a_refusal_is_remembered_for_nine_eighths_to_three_halves_of_the_entries_of_reads() {
        let entries = 1_000;
        // Generations of 375 reads: a refusal at the start of one is forgotten 1,500 reads
        // later, one at its end 1,125 reads later.
        let mut refused = Refused::default();
        refused.record(hash(1), 0, entries);
        refused.record(hash(2), 374, entries);
        assert!(refused.came_back(hash(1), 1_124, entries));
        assert!(refused.came_back(hash(2), 1_124, entries));
        assert!(!refused.came_back(hash(3), 1_124, entries), "never refused");
        assert!(refused.came_back(hash(1), 1_499, entries));
        assert!(
            !refused.came_back(hash(1), 1_500, entries),
            "3/2 of the entries ago"
        );
        assert!(
            !refused.came_back(hash(2), 1_500, entries),
            "9/8 of the entries and more ago"
        );
        // A long silence forgets everything at once, and the clock goes on from there.
        refused.record(hash(4), 1_600, entries);
        assert!(!refused.came_back(hash(4), 100_000, entries));
        refused.record(hash(5), 100_000, entries);
        assert!(refused.came_back(hash(5), 100_100, entries));
        refused.clear();
        assert!(!refused.came_back(hash(5), 100_100, entries));
    }

    #[test]
    fn a_refused_fill_read_again_soon_is_admitted_past_the_checks_that_refused_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, value) = full_store_of_entries_read_thrice(dir.path());
        // A new key read once is no match for victims read three times.
        let refused = (0..1_000)
            .map(|j| format!("new{j}"))
            .find(|key| {
                assert!(misses_log(&store, key));
                !store.fill(key, &value, None).unwrap()
            })
            .expect("a fill read once was refused against entries read thrice");
        assert!(!in_log(&store, &refused));
        // Read again at once: the sketch still counts it below the victims (two against three,
        // and the margin), so only its refusal lets it in.
        assert!(misses_log(&store, &refused));
        let hash = store.inner.hasher.hash(&refused);
        assert!(store.inner.sketch.frequency(hash) <= 3);
        assert!(
            store.fill(&refused, &value, None).unwrap(),
            "{refused} refused again"
        );
        assert_eq!(store.get(&refused).unwrap(), Some(value));
    }
}
