//! Ghost keys: which keys were evicted recently without having been read, in two bytes of RAM per
//! cached entry (two generations of as many evictions as there are entries, at 8 bits per key).
//!
//! Part of the scan resistance of the size bound (see `policy`): a key written again soon
//! after it was evicted as a one-off is not a one-off, and enters the protected class at once, as
//! S3-FIFO's ghost queue admits it to its main queue. The set only needs "probably evicted
//! lately", so it is two Bloom filters of the index's key hashes, the newer taking insertions and
//! the older dropped when the newer is full: a key stays a ghost for the last one to two
//! generations of evictions. A false positive (about 3%) only protects a key that did not earn it.
//! Nothing here is written to disk: after a restart the ghosts are gone, which costs a few hits.

use std::collections::VecDeque;

/// Bits per key in a generation's filter (with three probes: about 3% false positives).
const BITS_PER_KEY: usize = 8;
/// Smallest generation, so a small store still remembers a few evictions.
const MIN_GENERATION: usize = 64;

/// Recently evicted key hashes (two generations); see the module docs.
pub(crate) type Ghosts = BloomRing<2>;

/// Key hashes remembered by generations: up to `N` Bloom filters of `BITS` bits per key, the
/// newest taking insertions, a new one started when it is full and the oldest then dropped, so a
/// key is remembered for the last `N - 1` to `N` generations. The ghosts here, and the keys fills
/// were asked for lately (`admission::RecentFills`).
#[derive(Debug)]
pub(crate) struct BloomRing<const N: usize, const BITS: usize = BITS_PER_KEY> {
    /// Oldest first; the last takes insertions.
    generations: VecDeque<Bloom>,
}

impl<const N: usize, const BITS: usize> Default for BloomRing<N, BITS> {
    fn default() -> Self {
        BloomRing {
            generations: VecDeque::with_capacity(N + 1),
        }
    }
}

impl<const N: usize, const BITS: usize> BloomRing<N, BITS> {
    /// Whether `hash` was (probably) inserted in the generations kept.
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.generations.iter().any(|g| g.contains(hash))
    }

    /// Whether `hash` was (probably) inserted in the newest `generations`.
    pub(crate) fn contains_in_newest(&self, hash: u64, generations: usize) -> bool {
        self.generations
            .iter()
            .rev()
            .take(generations)
            .any(|g| g.contains(hash))
    }

    /// Remembers `hash`. `generation` is how many keys a generation holds (the caller sizes it
    /// from the entries the store holds); it applies from the next generation on.
    pub(crate) fn insert(&mut self, hash: u64, generation: usize) {
        if self.generations.back().is_none_or(Bloom::full) {
            self.roll(generation);
        }
        if let Some(newest) = self.generations.back_mut() {
            newest.insert(hash);
        }
    }

    /// Starts a new generation of `generation` keys, dropping the oldest if `N` are kept: a
    /// ring whose generations are spans of time rather than of insertions rolls by itself.
    pub(crate) fn roll(&mut self, generation: usize) {
        self.generations
            .push_back(Bloom::new(generation.max(MIN_GENERATION), BITS));
        while self.generations.len() > N {
            self.generations.pop_front();
        }
    }

    /// Forgets every key (the store was cleared).
    pub(crate) fn clear(&mut self) {
        self.generations.clear();
    }

    /// Bytes of RAM the filters take.
    #[cfg(test)]
    pub(crate) fn ram_bytes(&self) -> usize {
        self.generations.iter().map(|g| g.bits.len() * 8).sum()
    }
}

/// One generation: a Bloom filter over 64-bit hashes (already random: aHash with a per-process
/// seed), probed at `probes` positions by double hashing over the whole hash, each mapped onto
/// the filter's bits by a multiply-shift rather than a mask, so the filter takes the bits it is
/// sized for and not the next power of two (which cost up to twice the RAM).
#[derive(Debug, Default)]
struct Bloom {
    bits: Vec<u64>,
    probes: u64,
    inserted: usize,
    capacity: usize,
}

/// Probes per key for `bits_per_key` bits: three eighths of the bits, below the optimum of
/// ln 2 of them, as each probe is a cache miss. 8 bits: 3 probes, about 3% false positives;
/// 16 bits: 6, about 0.1%.
const fn probes_for(bits_per_key: usize) -> u64 {
    let probes = bits_per_key as u64 * 3 / 8;
    if probes == 0 {
        1
    } else {
        probes
    }
}

impl Bloom {
    /// Whether it holds as many keys as it was sized for.
    fn full(&self) -> bool {
        self.inserted >= self.capacity
    }

    fn new(capacity: usize, bits_per_key: usize) -> Bloom {
        Bloom {
            bits: vec![0; capacity.saturating_mul(bits_per_key).div_ceil(64)],
            probes: probes_for(bits_per_key),
            inserted: 0,
            capacity,
        }
    }

    /// (word, bit mask) of probe `i` of `hash`. The filter is not empty.
    fn probe(&self, hash: u64, i: u64) -> (usize, u64) {
        let bits = (self.bits.len() * 64) as u128;
        let step = hash.rotate_left(32) | 1;
        let at = hash.wrapping_add(i.wrapping_mul(step));
        // Lemire's multiply-shift: `at * bits / 2^64`, uniform over the bits as `at` is over u64.
        let bit = ((u128::from(at) * bits) >> 64) as u64;
        ((bit / 64) as usize, 1u64 << (bit % 64))
    }

    fn insert(&mut self, hash: u64) {
        if self.bits.is_empty() {
            return;
        }
        for i in 0..self.probes {
            let (word, bit) = self.probe(hash, i);
            if let Some(w) = self.bits.get_mut(word) {
                *w |= bit;
            }
        }
        self.inserted += 1;
    }

    fn contains(&self, hash: u64) -> bool {
        !self.bits.is_empty()
            && (0..self.probes).all(|i| {
                let (word, bit) = self.probe(hash, i);
                self.bits.get(word).is_some_and(|w| w & bit != 0)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(i)
    }

    #[test]
    fn a_ghost_is_remembered_for_one_to_two_generations_then_forgotten() {
        let mut g = Ghosts::default();
        assert!(!g.contains(hash(0)));
        for i in 0..100 {
            g.insert(hash(i), 100);
        }
        // One full generation: all remembered.
        assert!((0..100).all(|i| g.contains(hash(i))));
        for i in 100..200 {
            g.insert(hash(i), 100);
        }
        assert!((0..200).all(|i| g.contains(hash(i))));
        for i in 200..300 {
            g.insert(hash(i), 100);
        }
        // The first generation was dropped: only false positives remain of it.
        let remembered = (0..100).filter(|&i| g.contains(hash(i))).count();
        assert!(
            remembered < 10,
            "{remembered} of 100 forgotten ghosts still found"
        );
        g.clear();
        assert!(!g.contains(hash(250)));
    }

    #[test]
    fn false_positives_stay_near_three_percent_and_ram_near_a_byte_per_ghost() {
        let mut g = Ghosts::default();
        for i in 0..10_000 {
            g.insert(hash(i), 10_000);
        }
        let false_hits = (1_000_000..1_100_000).filter(|&i| g.contains(hash(i))).count();
        assert!(false_hits < 6_000, "{false_hits} false positives in 100k");
        // One generation of 10k ghosts at 8 bits each: a byte per ghost, not rounded up to a
        // power of two (16 KiB).
        assert!(g.ram_bytes() <= 10_000 + 8, "{}", g.ram_bytes());
    }
}
