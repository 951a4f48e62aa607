//! Admission of fills: whether a value copied in after a miss (a fill, never a user's write) is
//! worth the room it takes in a full store, in the spirit of TinyLFU.
//!
//! A fill is checked when it would make the store evict (see [`super::Inner::admits`]): it is
//! weighed against the next *victim*, an entry the next eviction would drop (see `policy`), by
//! how often each key was read lately. A [`Sketch`] counts reads, hits and misses alike, per
//! key hash. If the victim is an unread probationary entry (an entry that has not had its pass
//! of the log yet, or a one-off), or a protected one already kept unread at its last eviction (an
//! entry that stopped being read, which its next eviction would make probationary: see `policy`,
//! working sets that move), a fill of a new key is admitted: recency decides there, as before
//! admission. Otherwise the fill is admitted only if its key was read clearly more often than
//! the victim's (by more than [`MARGIN`]): a loop over more keys than fit no longer pushes out,
//! one fill at a time, the entries it will read again, and the log stops turning while nothing
//! better comes.
//!
//! Two more rules make a loop over many times the capacity stop the log (see [`RecentFills`],
//! the keys fills were asked for lately, written or refused):
//! - against an unread probationary victim, a fill is admitted if no fill of its key was asked
//!   for in the last eight to ten times the entries of fills (a new key: recency decides), or
//!   if it passes the check below; a key asked for again after longer than the store holds is
//!   not worth a place the log's newest entries have not had their pass in yet. Without it, the
//!   log kept turning on such victims for the first passes of a loop, and an eviction copies at
//!   most thirteen sixteenths of a segment (three quarters when this was measured): only that
//!   much of a loop stayed until the fresh entries were all gone.
//! - against a read or protected victim (and as the way past the first rule), the sketch needs
//!   a second witness: a fill of the key was asked for in the last two to four times the
//!   entries of fills. A key read once per pass was counted at two now and then (a collision
//!   in its sketch word), a few fills in a thousand; each one admitted made an eviction, which
//!   drops a share of a segment of the entries the loop reads (a quarter then, three sixteenths
//!   now) and lets as many fills in unchecked.
//!
//! With both, the log stops once it holds entries the loop reads, and the whole capacity stays
//! (a loop over five times the capacity: 11.8% → 16.1-16.7%, `quick_cache` 16.3%).
//!
//! Cost: web12 at 1% of its keys 36.8 → 36.2-36.6 (`quick_cache` 37.9): a key asked for again
//! after a while waits for a second fill or a read victim it beats. Nothing else moved by more
//! than 0.3 but up: the loops over twice and 4/3 the capacity and the loop with a hot set gained
//! 0.5 to 2 points.
//!
//! ## Tried: a doorkeeper on new keys, fixed or climbed on the hit ratio
//! Only the fill that would make the store evict is checked; the room an eviction frees (at
//! least a quarter of a segment's records when this was measured, three sixteenths now) is
//! filled unchecked by whatever misses next. Counted
//! (one process): on a scan into a hot set 1.2 times the capacity, 615 fills checked while
//! 20,400 entries were evicted, 15,290 of them unread probationary ones (the scan's keys, kept
//! a pass of the log: about a fifth of it); on drifting popular keys at 500 entries, 5,300
//! checked of 128,000 misses. So the three rows still more than 2 points below `quick_cache`
//! (`examples/hit_ratios.rs`: drifting popular keys, two loops mixed with zipf, that scan) are
//! decided by what takes the free room, not by the check.
//!
//! Tried: once the store is full, a fill of a key no fill was asked for in the longer window
//! of [`RecentFills`] admitted only as a share of such fills, in free room and against unread
//! victims alike (file tier - `quick_cache`, before: scan -7.5, two loops -4.2 and -3.7 at
//! 1,000 and 3,000 entries, drifting -2.6 and -2.9, average 48.5):
//! - no new key (a pure doorkeeper): the scan -1.9, two loops -0.9 and -4.3, drifting -1.6 and
//!   -2.3, average 49.1 (`quick_cache` 49.3); but web12 at 1% of its keys -2.9 (was -0.8), at
//!   10% and 25% 1.3 and 1.6 lower, a working set that moves at 1,000 entries -2.4 (was -1.1);
//! - half of them: the scan -5.6, two loops -3.5, web12 at 1% -1.9; average 48.7;
//! - the share climbed per store as Caffeine climbs its window (start at half, a quarter per
//!   window of four reads per entry, on while the hit ratio estimated as one less the fills per
//!   read counted by the sketch rises, back when it falls): the scan -2.5/-2.6, two loops
//!   -0.6/-1.0 and -4.7/-4.9, drifting -1.7/-1.9 and -2.4/-2.5, average 48.9 (two processes);
//!   web12 0.4 to 1.3 lower at every capacity, and the working set that moves at 1,000
//!   entries 73.2 to 74.2: more than 2 points below `quick_cache` in 4 runs of 10. Reopening
//!   the gate when the estimate fell by 5 points in a window did not help it (73.0-73.7, and
//!   a loop with a hot set -2.1/-2.5 in two runs of four), by 2 points neither (73.5-74.0, the
//!   scan back to -4.6/-4.9), nor
//!   did windows of two (the scan -4.3) or eight reads per entry with steps of an eighth
//!   starting from all admitted (nothing moved on these traces), nor steps of a half; starting
//!   from all admitted kept web12 but left the scan at -3.3/-3.7 and two loops at -2.2; the
//!   gate on free room only got drifting -1.4/-1.8 but two loops -3.4. The sketch's count of
//!   reads must be exact for such windows: estimated from its halvings it was too coarse and
//!   the climb wandered.
//!
//! A key that misses twice always came in (it was seen), so what a closed gate costs a working
//! set that moves is one more miss per new key; no measure of the hit ratio told those keys from
//! a scan's. What does is whether new keys are read before their first eviction, counted on a
//! sample of them: that gate is [`super::fillgate`], which keeps every new key of a working set
//! that moves and of web12, and closes on scans and loops.
//!
//! ## Fills that come back
//! A fill of a key refused lately, read again within about what the store holds, is admitted
//! past every check above: see [`super::refused`].
//!
//! Nothing here is on disk: after a restart the counts start from zero, and every fill is new.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::RwLock;

use super::ghost::BloomRing;

/// Words of the sketch per entry it is sized for, in halves: one word (sixteen 4-bit counters,
/// 8 bytes) per entry. It is sized for the entries rounded up to a power of two (a word is
/// picked by a mask), so per entry held it takes 8 to 16 bytes. Half of it lost the loops' gain (33 instead of 36-41 on a loop over twice
/// the capacity).
const HALF_WORDS_PER_ENTRY: usize = 2;
/// Reads between two halvings of the counts, per entry the sketch is sized for. Longer periods
/// remember old reads longer and cost recency: web12 at 1% of its keys lost 0.3 points more at
/// two, and 1 to 2 more at three to five without the margin.
const PERIOD_PER_ENTRY: u64 = 1;
/// Reads between two halvings at the least, however few entries the store holds. A store of a
/// hundred entries halved every 128 reads: most counts were zeros and ones when compared, and a
/// key read once every few capacities' worth of reads, which `quick_cache` keeps, had lost its
/// count before it came back. On sprite (a trace of the LIRS set, not in the repository) at 1%
/// of its keys, 69 entries, the file tier was 2.0 to 3.0 points behind `quick_cache` (8
/// processes) and is 1.4 to 1.6 behind; cpp at 1% (11 entries) was between -3.6 and +0.6 and
/// is between +0.1 and +3.1; glimpse at 10% (251 entries) was between -0.7 and -2.3 and is
/// between -0.4 and -1.8. Stores of 1,024
/// entries and more, which halve at this period or later anyway, are not changed; those of 136
/// to 500 entries in `examples/hit_ratios.rs` moved within the spread of the seeds. Twice this
/// floor cost cpp at 5% (60 entries) 1.3 to 1.9 points; twice the period for every store cost
/// a working set that slides 19 points and drifting popular keys 2.
const MIN_PERIOD: u64 = 1_024;
/// How many more reads than the victim's a fill's key needs to be admitted against a victim
/// that was read or is protected, less one. On a loop the two are read equally often, and a
/// collision in the sketch adds one to either: with no margin, such a tie broke often enough to
/// turn the log again (a loop over twice the capacity hit 33 to 41% from run to run; with the
/// margin 41 to 43). It costs recency: web12 at 1% of its keys 39.2 → 36.8 (quick_cache 38.0).
///
/// A margin of one still let a long loop turn the log: over a hundred passes and more, the few
/// keys the sketch counted two above their victim (a collision in each's word) each made an
/// eviction, and the loop over four times the capacity of the LIRS set (1,011 keys, 500
/// passes, 254 entries) hit 22.9% where `quick_cache` hits 24.5% and a full store of its keys
/// 25.1%; its scan trace (a loop over 2,001 keys, 25 passes) 22.8 at 507 entries (23.8). With two
/// (medians of 5 processes, `examples/trace_cells.rs`): 24.8 and 23.8, the loop over 1,000 keys
/// in 250 entries of `tests/hit_ratio.rs` 22.1-22.7 → 24.3-24.5; over the LIRS and cache2k
/// traces at 1, 5, 10 and 25% of their keys (72 cells) the lead over `quick_cache` averages +1.28
/// instead of +1.15, no cell moving down by more than the spread of the seeds, and web12 at 1%
/// 39.4 either way; in the median of 155 processes, multi3 at 25% -2.04 → -1.83 and cpp at 10%
/// -1.68 → -1.97. The cost measured when recent fills were not yet weighed (web12 at 1% lost 4
/// points, see `policy`) is gone: a fill of a key asked for lately is what the margin now
/// guards, and the window of refused fills that come back (see `refused`) lets a working set's
/// keys in past it.
pub(crate) const MARGIN: u32 = 2;
/// Shards of the sketch, each with its own lock, so concurrent readers do not share one lock
/// word (as the index's shards).
const SHARDS: usize = 16;
/// Each nibble's three low bits: a halving shifts every counter right by one.
const LOW3: u64 = 0x7777_7777_7777_7777;

/// A count-min sketch of 4-bit counters: four rows, all in one 64-bit word per key (16
/// nibbles, four per row, the row's nibble picked by the hash), so counting a read is one
/// compare-and-swap. Counts are halved every [`PERIOD_PER_ENTRY`] read per entry (and at most
/// every [`MIN_PERIOD`] reads), so what was read often long ago weighs less than what is read
/// now.
///
/// It counts nothing until [`Sketch::start`]: a store that never fills pays nothing on reads.
#[derive(Debug)]
pub(crate) struct Sketch {
    started: AtomicBool,
    shards: Box<[RwLock<Shard>]>,
    /// Reads counted before the last halving (see [`Sketch::reads`]).
    counted: AtomicU64,
}

#[derive(Debug, Default)]
struct Shard {
    table: Vec<AtomicU64>,
    /// Counts taken since the last halving.
    additions: AtomicU64,
    /// Counts between halvings.
    period: u64,
}

impl Default for Sketch {
    fn default() -> Sketch {
        Sketch {
            started: AtomicBool::new(false),
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            counted: AtomicU64::new(0),
        }
    }
}

/// Mixes the index's hash (whose low bits pick the index shard) into independent bits.
fn mix(hash: u64) -> u64 {
    let h = hash.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

impl Sketch {
    /// Whether the sketch is counting.
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::Relaxed)
    }

    /// Entries the sketch is sized for (0 before it starts).
    pub(crate) fn entries(&self) -> usize {
        self.shards.iter().map(|s| s.read().table.len()).sum::<usize>() * 2 / HALF_WORDS_PER_ENTRY
    }

    /// Sizes the sketch for `entries` keys, forgetting what it counted, and starts counting.
    /// Under the store's writer lock (one caller at a time).
    pub(crate) fn start(&self, entries: usize) {
        let entries = entries.max(64).next_power_of_two();
        let words = (entries * HALF_WORDS_PER_ENTRY / 2 / SHARDS).max(1);
        self.reset_shards(|| Shard {
            table: (0..words).map(|_| AtomicU64::new(0)).collect(),
            additions: AtomicU64::new(0),
            period: ((PERIOD_PER_ENTRY * entries as u64).max(MIN_PERIOD) / SHARDS as u64).max(1),
        });
        self.started.store(true, Ordering::Relaxed);
    }

    /// Puts `shard()` in place of every shard. The reads they counted stay on the clock
    /// ([`Sketch::reads`]), which never goes back.
    fn reset_shards(&self, shard: impl Fn() -> Shard) {
        for slot in self.shards.iter() {
            let mut slot = slot.write();
            self.counted
                .fetch_add(slot.additions.load(Ordering::Relaxed), Ordering::Relaxed);
            *slot = shard();
        }
    }

    /// Reads counted since the sketch was created: the clock of [`super::refused::Refused`].
    /// Reads of a counter already at fifteen are not counted (nor are those before
    /// [`Sketch::start`]), so it runs a little slow on a hot key; the windows it measures are
    /// then a little longer.
    pub(crate) fn reads(&self) -> u64 {
        let pending: u64 = self
            .shards
            .iter()
            .map(|s| s.read().additions.load(Ordering::Relaxed))
            .sum();
        self.counted.load(Ordering::Relaxed) + pending
    }

    /// Forgets every count (the store was cleared).
    pub(crate) fn clear(&self) {
        self.started.store(false, Ordering::Relaxed);
        self.reset_shards(Shard::default);
    }

    /// (shard, word, shift of each row's nibble) of `hash`.
    fn slots(&self, hash: u64) -> (usize, usize, [u32; 4]) {
        let h = mix(hash);
        let shard = (h >> 60) as usize % SHARDS;
        let word = (h >> 16) as usize;
        let shifts = [0u32, 1, 2, 3].map(|row| (row * 4 + ((h >> (row * 2)) & 3) as u32) * 4);
        (shard, word, shifts)
    }

    /// Estimated reads of `hash` lately (0 before the sketch starts).
    pub(crate) fn frequency(&self, hash: u64) -> u32 {
        let (shard, word, shifts) = self.slots(hash);
        let Some(shard) = self.shards.get(shard) else {
            return 0;
        };
        let shard = shard.read();
        let Some(cell) = shard.table.get(word & shard.table.len().wrapping_sub(1)) else {
            return 0;
        };
        let w = cell.load(Ordering::Relaxed);
        shifts.iter().map(|&s| ((w >> s) & 0xF) as u32).min().unwrap_or(0)
    }

    /// Counts a read of `hash`, once the sketch has started. Conservative update: only the
    /// lowest of its four counters go up, which keeps keys sharing a counter from inflating
    /// each other.
    pub(crate) fn increment(&self, hash: u64) {
        if !self.started() {
            return;
        }
        let (shard, word, shifts) = self.slots(hash);
        let Some(shard) = self.shards.get(shard) else {
            return;
        };
        let shard = shard.read();
        let Some(cell) = shard.table.get(word & shard.table.len().wrapping_sub(1)) else {
            return;
        };
        let counted = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
            let min = shifts.iter().map(|&s| (w >> s) & 0xF).min().unwrap_or(15);
            if min >= 15 {
                return None;
            }
            let add = shifts
                .iter()
                .filter(|&&s| (w >> s) & 0xF == min)
                .fold(0u64, |acc, &s| acc | (1u64 << s));
            Some(w + add)
        });
        if counted.is_ok() && shard.additions.fetch_add(1, Ordering::Relaxed) + 1 >= shard.period {
            drop(shard);
            self.halve();
        }
    }

    /// Halves every counter of every shard: all at once, so that two keys compared have had
    /// their counts halved as often. (A shard's own share of the period triggers it; reads are
    /// spread evenly over the shards by the hash.)
    fn halve(&self) {
        for shard in self.shards.iter() {
            let shard = shard.read();
            self.counted
                .fetch_add(shard.additions.swap(0, Ordering::Relaxed), Ordering::Relaxed);
            for cell in &shard.table {
                let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| Some((w >> 1) & LOW3));
            }
        }
    }
}

/// Fills asked for per generation of [`RecentFills`], per entry the store holds.
const RECENT_FILLS_PER_ENTRY: usize = 2;
/// Generations [`RecentFills::contains`] looks in: a key asked for in the last two to four
/// times the entries of fills is read again soon enough to be worth a read victim's place. With
/// one entry per generation (one to two times the entries) the loop over five times the
/// capacity got 14.4 instead of 15.4 (before the rule on unread victims); with four generations
/// of one (a window of four to eight) 11.9: a loop's keys came back within the window.
const RECENT_GENERATIONS: usize = 2;
/// Generations kept, for [`RecentFills::seen`]: a window of eight to ten times the entries of
/// fills, so a loop over up to about eight times the capacity comes back within it. Four (six
/// to eight) got a loop over eight times the capacity 8.3 instead of 9.1 (`quick_cache` 9.8);
/// six gained nothing more. A loop longer than the window gets what it got before.
const GENERATIONS: usize = 5;

/// Bits per key of a [`RecentFills`] generation (see its docs).
const RECENT_FILLS_BITS_PER_KEY: usize = 16;

/// Keys a fill was asked for lately, written or refused: the witness, besides the sketch, that
/// a key is read again soon ([`RecentFills::contains`]), and whether it was asked for at all
/// in a longer window ([`RecentFills::seen`]); see the module docs and
/// [`super::Inner::admits`]. Its false positives come from another hash of the key than the
/// sketch's, so both rarely err on the same key.
///
/// A ring of [`GENERATIONS`] Bloom filters ([`super::ghost`]'s, at two bytes per key and six
/// probes, about 0.1% false positives each) of [`RECENT_FILLS_PER_ENTRY`] times the entries each:
/// 20 bytes of RAM per entry (20 to 40 while the filters were rounded up to a power of two of
/// bits), none on disk, and nothing on the read path
/// (fills are recorded under the writer lock). At a byte per key, 8.6% of a scan's keys were
/// taken as seen (a false positive in any of the five filters) and passed the gate on new keys
/// into free room: a scan of a third of the reads into a hot set 1.2 times the capacity held 56
/// of its keys where it now holds 28, and hit 51.3-51.6% where it now hits 52.5-52.7%
/// (`quick_cache` 53.3-53.9; the other rows of `examples/hit_ratios.rs` within the spread of the
/// seeds, scans into smaller hot sets up to 0.7 higher).
#[derive(Debug, Default)]
pub(crate) struct RecentFills(BloomRing<GENERATIONS, RECENT_FILLS_BITS_PER_KEY>);

impl RecentFills {
    /// Whether a fill of `hash` was (probably) asked for lately: in the last
    /// [`RECENT_GENERATIONS`].
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.0.contains_in_newest(hash, RECENT_GENERATIONS)
    }

    /// Whether a fill of `hash` was (probably) asked for at all in the generations kept.
    pub(crate) fn seen(&self, hash: u64) -> bool {
        self.0.contains(hash)
    }

    /// Remembers a fill of `hash`, in a store holding `entries`.
    pub(crate) fn record(&mut self, hash: u64, entries: usize) {
        self.0
            .insert(hash, entries.saturating_mul(RECENT_FILLS_PER_ENTRY));
    }

    /// Forgets every fill (the store was cleared).
    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }

    /// Bytes of RAM the filters take.
    #[cfg(test)]
    fn ram_bytes(&self) -> usize {
        self.0.ram_bytes()
    }
}

/// The entries the next eviction would drop, for the admission check to weigh a fill against:
/// built from the oldest sealed segment (see [`super::Inner::admits`]).
#[derive(Debug, Default)]
pub(crate) struct Victims {
    /// The segment the list was built from.
    pub(crate) segment: Option<u64>,
    /// In log order.
    pub(crate) list: Vec<Victim>,
    /// The next victim in `list`.
    pub(crate) next: usize,
}

/// One entry the next eviction would drop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Victim {
    pub(crate) hash: u64,
    pub(crate) loc: super::index::Loc,
    /// Reads counted in its index entry when the list was built: if it was read since, it is
    /// no longer a victim.
    pub(crate) freq: u32,
}

impl Victims {
    /// Forgets the list (the store was cleared).
    pub(crate) fn clear(&mut self) {
        *self = Victims::default();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::local::file::{Durability, FileStore, FileStoreOptions};

    fn hash(i: u64) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(i)
    }

    #[test]
    fn the_sketch_counts_nothing_until_started_then_estimates_reads_per_key() {
        let sketch = Sketch::default();
        sketch.increment(hash(1));
        assert_eq!(sketch.frequency(hash(1)), 0, "not started");
        sketch.start(1_000);
        assert_eq!(sketch.entries(), 1_024);
        for _ in 0..5 {
            sketch.increment(hash(1));
        }
        sketch.increment(hash(2));
        assert_eq!(sketch.frequency(hash(1)), 5);
        assert_eq!(sketch.frequency(hash(2)), 1);
        // Keys never read are estimated at zero but for rare collisions.
        let unseen = (100..1_100).filter(|&i| sketch.frequency(hash(i)) > 0).count();
        assert!(unseen < 50, "{unseen} of 1000 unread keys counted");
        sketch.clear();
        assert_eq!(sketch.frequency(hash(1)), 0);
    }

    #[test]
    fn counts_saturate_at_fifteen_and_are_halved_as_reads_go_by() {
        let sketch = Sketch::default();
        sketch.start(4_096);
        for _ in 0..40 {
            sketch.increment(hash(7));
        }
        assert_eq!(sketch.frequency(hash(7)), 15);
        // Reads of other keys fill the period: every count is halved.
        for i in 0..(PERIOD_PER_ENTRY * 4_096 * 2) {
            sketch.increment(hash(1_000_000 + i));
        }
        assert!(sketch.frequency(hash(7)) <= 7, "{}", sketch.frequency(hash(7)));
    }

    #[test]
    fn a_small_store_keeps_its_counts_for_a_thousand_reads_not_for_its_entries() {
        let sketch = Sketch::default();
        // Sized for 64 entries: a period of one read per entry would halve every 64 reads.
        sketch.start(64);
        for _ in 0..4 {
            sketch.increment(hash(7));
        }
        // Ten times the entries of reads of other keys, within the floor: nothing is halved.
        for i in 0..640 {
            sketch.increment(hash(1_000_000 + i));
        }
        assert!(sketch.frequency(hash(7)) >= 4, "{}", sketch.frequency(hash(7)));
        // Past the floor the counts are halved.
        for i in 0..MIN_PERIOD {
            sketch.increment(hash(2_000_000 + i));
        }
        assert!(sketch.frequency(hash(7)) <= 3, "{}", sketch.frequency(hash(7)));
    }

    #[test]
    fn the_sketch_takes_eight_to_sixteen_bytes_per_entry_it_is_started_for() {
        for entries in [64, 1_000, 1_024, 1_025, 100_000] {
            let sketch = Sketch::default();
            sketch.start(entries);
            let bytes: usize = sketch.shards.iter().map(|s| s.read().table.len() * 8).sum();
            assert!(
                bytes >= 8 * entries && bytes <= 16 * entries,
                "{entries} entries: {bytes} bytes"
            );
        }
    }

    #[test]
    fn the_read_clock_counts_every_read_across_halvings_and_restarts_of_the_counts() {
        let sketch = Sketch::default();
        sketch.increment(hash(1));
        assert_eq!(sketch.reads(), 0, "not started");
        sketch.start(1_000);
        // Five periods of 1,024 reads, each ending in a halving.
        for i in 0..5_000 {
            sketch.increment(hash(i));
        }
        // A read of a counter at fifteen is not counted: a few collisions at most.
        assert!((4_950..=5_000).contains(&sketch.reads()), "{}", sketch.reads());
        let before = sketch.reads();
        sketch.start(4_000);
        assert_eq!(
            sketch.reads(),
            before,
            "the clock goes on when the counts start over"
        );
        sketch.increment(hash(1));
        assert_eq!(sketch.reads(), before + 1);
        sketch.clear();
        assert_eq!(sketch.reads(), before + 1, "nor when the store is cleared");
    }

    /// An empty store of 1 MiB with no background threads: every eviction comes from a write
    /// of the test. (The policy tests of sibling modules use it too.)
    /// Well-spread hashes, the same on every run: for the samplers that pick keys by hash bits
    /// (`fillgate`'s probes, `decay`'s watched entries).
    pub(in crate::local::file) fn spread_hashes() -> impl Iterator<Item = u64> {
        (0u64..).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i)
    }

    /// Whether `key` has a live record in the log. (`get` and `contains` also see the value
    /// of a refused fill held in RAM, see `stash`.)
    pub(in crate::local::file) fn in_log(store: &FileStore, key: &str) -> bool {
        store.inner.locate(key, false, |_| ()).is_some()
    }

    /// A read of `key`, as a read-through cache's before its fill: counted by the sketch, and
    /// true if the log has no value for it (a value held in RAM may answer it).
    pub(in crate::local::file) fn misses_log(store: &FileStore, key: &str) -> bool {
        store.get(key).unwrap();
        !in_log(store, key)
    }

    pub(in crate::local::file) fn small_store(dir: &std::path::Path) -> FileStore {
        let options = FileStoreOptions::default()
            .max_size_mb(1)
            .durability(Durability::None)
            .background_threads(false);
        FileStore::open(dir, options).unwrap()
    }

    /// A full store whose every entry was read three times since the sketch started: the next
    /// victims are read entries.
    pub(in crate::local::file) fn full_store_of_entries_read_thrice(
        dir: &std::path::Path,
    ) -> (FileStore, Vec<u8>) {
        filled_and_read_thrice(small_store(dir))
    }

    /// [`full_store_of_entries_read_thrice`] from an empty `store` of 1 MiB opened by the caller
    /// (with a clock of its own, say).
    pub(in crate::local::file) fn filled_and_read_thrice(store: FileStore) -> (FileStore, Vec<u8>) {
        let value = vec![7u8; 4_000];
        // Room to spare: a fill is written without a check.
        assert!(store.fill("early", &value, None).unwrap());
        let mut i = 0;
        while store.stats().evictions == 0 {
            store.set(&format!("k{i}"), &value, None).unwrap();
            i += 1;
        }
        store.inner.sketch.start(store.inner.index.len());
        for key in store.keys() {
            for _ in 0..3 {
                assert!(store.get(&key).unwrap().is_some());
            }
        }
        (store, value)
    }

    #[test]
    fn a_fill_that_would_evict_entries_read_more_often_is_refused_and_a_set_is_always_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, value) = full_store_of_entries_read_thrice(dir.path());
        let refused = (0..1_000).map(|j| format!("new{j}")).find(|key| {
            assert!(misses_log(&store, key));
            !store.fill(key, &value, None).unwrap()
        });
        let refused = refused.expect("a fill read once was refused against entries read thrice");
        assert!(!in_log(&store, &refused), "a refused fill writes nothing");
        // A user's write is never refused.
        store.set(&refused, &value, None).unwrap();
        assert!(in_log(&store, &refused));
    }

    #[test]
    fn a_fill_read_more_often_than_the_victim_is_admitted_only_once_a_fill_of_it_was_asked_for_lately() {
        let dir = tempfile::tempdir().unwrap();
        let (store, value) = full_store_of_entries_read_thrice(dir.path());
        // Fills take the room the last eviction left until one is checked and refused.
        let refused = (0..1_000).any(|j| {
            let key = format!("new{j}");
            assert!(misses_log(&store, &key));
            !store.fill(&key, &value, None).unwrap()
        });
        assert!(refused, "the store never got full");
        // A key the filters of recent fills do not report by a false positive (a few in a
        // hundred, by the per-process seed): no fill of it was asked for lately.
        let wanted = (0..100)
            .map(|j| format!("wanted{j}"))
            .find(|key| {
                let hash = store.inner.hasher.hash(key);
                !store.inner.writer.lock().recent_fills.contains(hash)
            })
            .expect("a key not witnessed by the filters");
        // Read six times: the sketch counts it above the victims' three by more than the
        // margin, as a collision in the sketch can count a key read once on a loop. That alone
        // is not enough: no fill of it was asked for lately.
        for _ in 0..6 {
            assert!(misses_log(&store, &wanted));
        }
        assert!(!store.fill(&wanted, &value, None).unwrap());
        assert!(!in_log(&store, &wanted), "a refused fill writes nothing");
        // Asked for again soon: both witnesses agree, and the fill is written.
        assert!(misses_log(&store, &wanted));
        assert!(store.fill(&wanted, &value, None).unwrap());
        assert_eq!(store.get(&wanted).unwrap(), Some(value));
    }

    #[test]
    fn recent_fills_witness_a_key_for_two_to_four_times_the_entries_and_have_seen_it_for_eight_to_ten() {
        let mut recent = RecentFills::default();
        let entries = 100;
        let per_generation = (entries * RECENT_FILLS_PER_ENTRY) as u64;
        let record = |recent: &mut RecentFills, range: std::ops::Range<u64>| {
            for i in range {
                recent.record(hash(i), entries);
            }
        };
        record(&mut recent, 0..100);
        assert!((0..100).all(|i| recent.contains(hash(i)) && recent.seen(hash(i))));
        // Two generations on (the first is then third newest): no longer a witness, still seen.
        record(&mut recent, 100..(2 * per_generation + 100));
        let witnessed = (0..100).filter(|&i| recent.contains(hash(i))).count();
        assert!(witnessed < 10, "{witnessed} of 100 older fills still witnessed");
        assert!((0..100).all(|i| recent.seen(hash(i))));
        // Five generations on: forgotten.
        record(
            &mut recent,
            (2 * per_generation + 100)..(5 * per_generation + 100),
        );
        let seen = (0..100).filter(|&i| recent.seen(hash(i))).count();
        assert!(seen < 15, "{seen} of 100 old fills still seen");
        // A key never asked for is seldom taken as seen: each one that is passes the gate on new
        // keys (at a byte per key, 8.6% of a scan's keys did).
        let fresh = (1_000_000..1_010_000).filter(|&i| recent.seen(hash(i))).count();
        assert!(
            fresh < 100,
            "{fresh} of 10,000 keys never asked for taken as seen"
        );
        // Five generations of twice the entries at two bytes per key (each rounded up to a
        // whole word, not to a power of two).
        assert!(
            recent.ram_bytes() <= 20 * entries + 5 * 8,
            "{} bytes for {entries} entries",
            recent.ram_bytes()
        );
        let last = 5 * per_generation + 99;
        assert!(recent.contains(hash(last)));
        recent.clear();
        assert!(!recent.seen(hash(last)));
    }

    /// Fills keys `{prefix}{first}`, `{prefix}{first + 1}`, ... while a record of `next_key`
    /// would still fit in the room the last eviction left (a fill there is never checked), so
    /// that a fill of `next_key` would make the store evict and is weighed for admission.
    fn fill_room_left_by_eviction(
        store: &FileStore,
        value: &[u8],
        next_key: &str,
        prefix: &str,
        first: usize,
    ) {
        let len = crate::local::file::format::stored_len(next_key.len(), value.len());
        let mut j = first;
        while store.inner.disk_bytes.load(std::sync::atomic::Ordering::Relaxed) + len <= store.inner.max_bytes
        {
            assert!(store.fill(&format!("{prefix}{j}"), value, None).unwrap());
            j += 1;
        }
    }

    /// Whether a fill of a new key is admitted in a full store whose every entry is protected,
    /// unread, and was kept unread at its last eviction if `kept_unread`.
    fn new_key_admitted_against_unread_protected_victims(kept_unread: bool) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let value = vec![7u8; 4_000];
        let mut i = 0;
        while store.stats().evictions == 0 {
            store.set(&format!("k{i}"), &value, None).unwrap();
            i += 1;
        }
        // Protected: written while the store filled up, or else kept at an eviction; and kept
        // unread at an eviction since if `kept_unread`.
        for entry in store.inner.index.iter() {
            if !entry.value().protected() {
                entry
                    .value()
                    .kept_at_eviction(crate::local::file::index::Spend::Nothing, false);
            }
            if kept_unread {
                entry
                    .value()
                    .kept_at_eviction(crate::local::file::index::Spend::Nothing, false);
            }
            assert!(entry.value().protected() && entry.value().kept_unread() == kept_unread);
        }
        // Fill the room the eviction left: the next fill is checked.
        fill_room_left_by_eviction(&store, &value, "new0", "room", 0);
        assert!(misses_log(&store, "new"));
        store.fill("new", &value, None).unwrap()
    }

    #[test]
    fn a_new_key_takes_the_place_of_a_protected_victim_only_once_it_was_kept_unread_before() {
        // Protected and unread, not marked: the sketch decides, and a key read once is no
        // better than the victim by the margin.
        assert!(!new_key_admitted_against_unread_protected_victims(false));
        // Kept unread once already: its next keep would make it probationary; recency decides.
        assert!(new_key_admitted_against_unread_protected_victims(true));
    }

    #[test]
    fn against_an_unread_victim_a_new_key_is_admitted_and_a_key_asked_for_before_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = small_store(dir.path());
        let value = vec![7u8; 4_000];
        // Asked for once, while there is room (not looked up: see below).
        assert!(store.fill("again", &value, None).unwrap());
        // Written and never read: every entry is an unread probationary one, and "again", the
        // oldest, goes at the first eviction (nothing was looked up: nothing unread is kept).
        let mut i = 0;
        while store.stats().evictions == 0 {
            store.set(&format!("k{i}"), &value, None).unwrap();
            i += 1;
        }
        assert!(!in_log(&store, "again"));
        // What was written while the store filled up started protected (see `policy`, filling
        // up): written on until all of it has gone, unread.
        while store.inner.index.iter().any(|e| e.value().protected()) {
            store.set(&format!("k{i}"), &value, None).unwrap();
            i += 1;
        }
        // New keys take unread victims' places: recency decides. A key the filters of recent
        // fills report by a false positive (about one in a thousand, by the per-process seed)
        // is not new to the store and may be refused: it is left out of the check.
        let mut false_positives = 0;
        for j in 0..100 {
            let key = format!("new{j}");
            assert!(misses_log(&store, &key));
            let hash = store.inner.hasher.hash(&key);
            if store.inner.writer.lock().recent_fills.seen(hash) {
                false_positives += 1;
                store.fill(&key, &value, None).unwrap();
                continue;
            }
            assert!(store.fill(&key, &value, None).unwrap(), "{key} refused");
        }
        assert!(
            false_positives < 10,
            "{false_positives} of 100 new keys seen before"
        );
        // The room the last eviction left is filled unchecked: the next fill is checked.
        fill_room_left_by_eviction(&store, &value, "again", "new", 100);
        // A key asked for before, and read no more often than the victims since: refused.
        assert!(misses_log(&store, "again"));
        assert!(!store.fill("again", &value, None).unwrap());
        assert!(!in_log(&store, "again"));
    }
}
