//! [`HotTier`]: decoded values of the hottest keys, in front of the local level, so that a hit
//! costs no read of the level, no decode and no copy of bytes: the typed value itself is kept,
//! inline in a cache of its own type, and a hit hands out a clone of it.
//!
//! The tier holds only what a typed read decoded; it never holds a value the level below does
//! not hold too. Every change to the level below goes through [`Tiered`](super::tiered::Tiered),
//! which drops the key from this tier first, and a read fills this tier only if no write of the
//! key started since the read began (the manager's backfill guard) and no clear began either.
//! So a delete or an invalidation can never leave an older value readable here. A value is kept
//! with the expiry of the entry it was decoded from, checked on every hit. It is empty after a
//! restart and refills from the level below, which has already been revalidated by then.
//!
//! One cache per value type (up to [`MAX_TYPES`] types; reads of further types just miss), each
//! bounded by `max_items`, with quick_cache's eviction (S3-FIFO) and a plain `insert`. A value
//! type gets its cache the first time a value of it is kept; a lookup finds it by `TypeId` in a
//! short array of write-once slots, without a lock. Keeping values inline (rather than behind a
//! type-erased `Arc`) spares a hit one pointer chase, the difference between a memory-tier hit
//! and a plain quick_cache hit of the same value (`memory_tier_hit` in `benches/manager.rs`);
//! likewise a short key is kept inside the entry, with the value's expiry (the `key` module).

mod key;

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use quick_cache::sync::Cache;

use self::key::{HotKey, Probe};
use crate::clock::Clock;

/// How many value types the tier keeps caches for.
pub const MAX_TYPES: usize = 8;

/// A kept value; `None`: the key was written or deleted below since. The empty entry keeps the
/// key's place (and how hot it is) in the cache, so that the value read back after a write goes
/// where the old one was rather than in among keys never seen before, which a hot key that is
/// written now and then would otherwise pay for with a miss each time it fell out
/// (`manager_zipf099_90_10_vs_hand_made` in `benches/manager_redis.rs`).
type Slot<V> = Option<V>;

/// What the tier needs of a cache without knowing its value type.
trait Erased: Any + Send + Sync {
    /// Makes `key` a miss, keeping its place (see [`Slot`]).
    fn forget(&self, key: &str);
    fn clear(&self);
    fn len(&self) -> usize;
}

struct Typed<V>(Cache<HotKey, Slot<V>>);

impl<V: Clone + Send + Sync + 'static> Erased for Typed<V> {
    fn forget(&self, key: &str) {
        if self.0.contains_key(&Probe::new(key)) {
            let gone = HotKey::new(key, 0);
            // `soft`: the write does not make the key hotter; a miss of a key no longer
            // present is right as it is.
            let _ = self.0.replace(gone, None, true);
        }
    }
    fn clear(&self) {
        self.0.clear();
    }
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Decoded values of hot keys; see the module docs.
pub struct HotTier {
    types: [OnceLock<(TypeId, Box<dyn Erased>)>; MAX_TYPES],
    clock: Arc<dyn Clock>,
    max_items: u64,
    /// Bumped before and after every [`clear`](HotTier::clear); see
    /// [`insert_unless_cleared`](HotTier::insert_unless_cleared).
    clears: AtomicU64,
}

impl std::fmt::Debug for HotTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotTier")
            .field("max_items", &self.max_items)
            .field("items", &self.len())
            .finish_non_exhaustive()
    }
}

impl HotTier {
    /// A tier of at most `max_items` values (at least 1) per value type, expiring by `clock`.
    #[must_use]
    pub fn new(max_items: u64, clock: Arc<dyn Clock>) -> HotTier {
        HotTier {
            types: std::array::from_fn(|_| OnceLock::new()),
            clock,
            max_items: max_items.max(1),
            clears: AtomicU64::new(0),
        }
    }

    /// The cache of values of type `V`, if the tier has one.
    #[inline]
    fn typed<V: Clone + Send + Sync + 'static>(&self) -> Option<&Cache<HotKey, Slot<V>>> {
        let id = TypeId::of::<V>();
        for slot in &self.types {
            let (slot_id, cache) = slot.get()?;
            if *slot_id == id {
                let cache: &dyn Any = cache.as_ref();
                return cache.downcast_ref::<Typed<V>>().map(|t| &t.0);
            }
        }
        None
    }

    /// The cache of values of type `V`, made if there is a free slot.
    fn typed_or_new<V: Clone + Send + Sync + 'static>(&self) -> Option<&Cache<HotKey, Slot<V>>> {
        let id = TypeId::of::<V>();
        for slot in &self.types {
            let (slot_id, cache) = slot.get_or_init(|| {
                let items = usize::try_from(self.max_items).unwrap_or(usize::MAX);
                (id, Box::new(Typed::<V>(Cache::new(items))))
            });
            if *slot_id == id {
                let cache: &dyn Any = cache.as_ref();
                return cache.downcast_ref::<Typed<V>>().map(|t| &t.0);
            }
        }
        None
    }

    /// The value of `key` if the tier holds one of type `V` that has not expired.
    #[inline]
    pub fn get<V: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<V> {
        let cache = self.typed::<V>()?;
        let probe = Probe::new(key);
        let slot = cache.get(&probe)?;
        let expires_at_ms = probe.expires_at_ms();
        if expires_at_ms != 0 && self.clock.reached(expires_at_ms) {
            cache.remove(&probe);
            return None;
        }
        slot
    }

    /// Keeps `value` for `key` until `expires_at_ms` (Unix ms; 0 = never). Call only under the
    /// backfill guard (see the module docs).
    pub fn insert<V: Clone + Send + Sync + 'static>(&self, key: &str, value: V, expires_at_ms: u64) {
        if let Some(cache) = self.typed_or_new::<V>() {
            cache.insert(HotKey::new(key, expires_at_ms), Some(value));
        }
    }

    /// A mark to take before reading the value to keep; see
    /// [`insert_unless_cleared`](Self::insert_unless_cleared).
    #[must_use]
    pub fn clear_mark(&self) -> u64 {
        self.clears.load(Ordering::SeqCst)
    }

    /// [`insert`](Self::insert), undone if a [`clear`](Self::clear) began since `mark` was
    /// taken: a value read before a clear (entries marked suspect, say) must not outlive it.
    pub fn insert_unless_cleared<V: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        value: V,
        expires_at_ms: u64,
        mark: u64,
    ) -> bool {
        self.insert(key, value, expires_at_ms);
        if self.clears.load(Ordering::SeqCst) != mark {
            self.remove(key);
            return false;
        }
        true
    }

    fn each(&self, f: impl Fn(&dyn Erased)) {
        for slot in &self.types {
            match slot.get() {
                Some((_, cache)) => f(cache.as_ref()),
                None => return,
            }
        }
    }

    /// Drops the value of `key`, whatever its type: a read of it misses from now on. The key
    /// keeps its place in the cache until evicted (its slot holds no value).
    pub fn remove(&self, key: &str) {
        self.each(|cache| cache.forget(key));
    }

    /// Drops every key.
    pub fn clear(&self) {
        self.clears.fetch_add(1, Ordering::SeqCst);
        self.each(|cache| cache.clear());
        self.clears.fetch_add(1, Ordering::SeqCst);
    }

    /// How many keys the tier holds a place for, all types: values (expired ones not yet read
    /// included) and keys written or deleted since their value was kept.
    #[must_use]
    pub fn len(&self) -> u64 {
        let mut n = 0u64;
        for slot in &self.types {
            match slot.get() {
                Some((_, cache)) => n += cache.len() as u64,
                None => break,
            }
        }
        n
    }

    /// Whether the tier is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound, per value type.
    #[must_use]
    pub fn max_items(&self) -> u64 {
        self.max_items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[derive(Clone, Debug, PartialEq)]
    struct User {
        name: String,
    }

    #[test]
    fn a_value_comes_back_as_its_own_type_and_not_as_another() {
        let tier = HotTier::new(10, Arc::new(ManualClock::new(1000)));
        tier.insert("u", User { name: "Ada".into() }, 0);
        assert_eq!(tier.get::<User>("u"), Some(User { name: "Ada".into() }));
        assert_eq!(tier.get::<String>("u"), None, "another type is a miss");
        tier.insert("u", Arc::new(User { name: "Bob".into() }), 0);
        assert_eq!(
            tier.get::<Arc<User>>("u").map(|u| u.name.clone()),
            Some("Bob".into())
        );
        tier.remove("u");
        assert_eq!(tier.get::<User>("u"), None, "a remove reaches every type");
        assert_eq!(tier.get::<Arc<User>>("u"), None);
    }

    #[test]
    fn an_expired_value_is_a_miss_and_leaves_the_tier() {
        let clock = ManualClock::new(1000);
        let tier = HotTier::new(10, Arc::new(clock.clone()));
        tier.insert("k", 7u32, 1500);
        assert_eq!(tier.get::<u32>("k"), Some(7));
        clock.advance(std::time::Duration::from_millis(500));
        assert_eq!(tier.get::<u32>("k"), None);
        assert!(tier.is_empty());
    }

    #[test]
    fn a_value_kept_again_takes_its_new_expiry() {
        let clock = ManualClock::new(1000);
        let tier = HotTier::new(10, Arc::new(clock.clone()));
        tier.insert("k", 1u32, 1500);
        tier.insert("k", 2u32, 0);
        clock.advance(std::time::Duration::from_millis(1000));
        assert_eq!(tier.get::<u32>("k"), Some(2), "the second value never expires");
        tier.insert("k", 3u32, 2500);
        assert_eq!(tier.get::<u32>("k"), Some(3));
        clock.advance(std::time::Duration::from_millis(500));
        assert_eq!(tier.get::<u32>("k"), None, "the third value's expiry is its own");
        tier.insert("k", 4u32, 4000);
        tier.remove("k");
        tier.insert("k", 5u32, 0);
        clock.advance(std::time::Duration::from_millis(5000));
        assert_eq!(
            tier.get::<u32>("k"),
            Some(5),
            "a forgotten key's expiry is not kept either"
        );
    }

    #[test]
    fn the_tier_holds_at_most_its_bound_per_type() {
        let tier = HotTier::new(100, Arc::new(ManualClock::new(0)));
        for i in 0..1000u32 {
            tier.insert(&format!("k{i}"), i, 0);
        }
        assert!(tier.len() <= 100, "{}", tier.len());
    }

    #[test]
    fn a_clear_undoes_an_insert_that_read_before_it() {
        let tier = HotTier::new(10, Arc::new(ManualClock::new(0)));
        let mark = tier.clear_mark();
        tier.clear();
        assert!(!tier.insert_unless_cleared("k", 1u8, 0, mark));
        assert_eq!(tier.get::<u8>("k"), None);
        let mark = tier.clear_mark();
        assert!(tier.insert_unless_cleared("k", 2u8, 0, mark));
        assert_eq!(tier.get::<u8>("k"), Some(2));
    }

    #[test]
    fn types_past_the_last_slot_just_miss() {
        let tier = HotTier::new(10, Arc::new(ManualClock::new(0)));
        tier.insert("a", 1u8, 0);
        tier.insert("a", 1u16, 0);
        tier.insert("a", 1u32, 0);
        tier.insert("a", 1u64, 0);
        tier.insert("a", 1i8, 0);
        tier.insert("a", 1i16, 0);
        tier.insert("a", 1i32, 0);
        tier.insert("a", 1i64, 0);
        tier.insert("a", 1u128, 0);
        assert_eq!(tier.get::<u128>("a"), None, "a ninth type is not kept");
        assert_eq!(tier.get::<i64>("a"), Some(1));
    }
}

#[cfg(test)]
mod hit_ratio_tests {
    use super::*;
    use crate::clock::ManualClock;

    /// Zipf(0.99)-distributed keys over `n` ranks, 10% writes, from a fixed xorshift stream.
    fn trace(n: usize, ops: usize) -> Vec<(usize, bool)> {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for rank in 1..=n {
            acc += 1.0 / (rank as f64).powf(0.99);
            cdf.push(acc);
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..ops)
            .map(|_| {
                let u = next() * acc;
                let rank = cdf.partition_point(|&c| c < u).min(n - 1);
                (rank, next() < 0.1)
            })
            .collect()
    }

    /// A write forgets the key's value but not its place: on a zipf trace with writes, the tier
    /// keeps more hits than a cache that removes written keys (which sends a hot key back among
    /// the keys never seen before each time it is written).
    #[test]
    fn a_written_key_keeps_its_place_and_the_tier_beats_remove_on_write() {
        let (keys, capacity) = (20_000, 1_000);
        let ops = trace(keys, 200_000);
        let tier = HotTier::new(capacity as u64, Arc::new(ManualClock::new(0)));
        let removing = Cache::<String, u32>::new(capacity);
        let (mut ours, mut theirs, mut reads) = (0u32, 0u32, 0u32);
        for &(rank, write) in &ops {
            let key = format!("k{rank}");
            if write {
                tier.remove(&key);
                removing.remove(&key);
                continue;
            }
            reads += 1;
            match tier.get::<u32>(&key) {
                Some(_) => ours += 1,
                None => tier.insert(&key, 1u32, 0),
            }
            match removing.get(&key) {
                Some(_) => theirs += 1,
                None => removing.insert(key, 1),
            }
        }
        let (ours, theirs) = (
            f64::from(ours) / f64::from(reads),
            f64::from(theirs) / f64::from(reads),
        );
        assert!(
            ours > theirs + 0.005,
            "hit ratio {ours:.4} with places kept vs {theirs:.4} with written keys removed"
        );
    }
}
