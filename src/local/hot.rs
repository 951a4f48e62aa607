//! [`HotTier`]: decoded values of the hottest keys, in front of the local level, so that a hit
//! costs no read of the level, no decode and no copy of bytes: the typed value itself is kept
//! (as an `Arc`) and a hit hands out a clone of it, or of the `Arc`.
//!
//! The tier holds only what a typed read decoded; it never holds a value the level below does
//! not hold too. Every change to the level below goes through [`Tiered`](super::tiered::Tiered),
//! which drops the key from this tier first, and a read fills this tier only if no write of the
//! key started since the read began (the manager's backfill guard). So a delete or an
//! invalidation can never leave an older value readable here. A value is kept with the expiry
//! of the entry it was decoded from, checked on every hit. It is empty after a restart and
//! refills from the level below, which has already been revalidated by then.
//!
//! Bounded by item count, with quick_cache's eviction (S3-FIFO), inserted with a plain `insert`.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quick_cache::sync::Cache;

use crate::clock::Clock;

/// A decoded value and its absolute expiry (Unix ms; 0 = never).
#[derive(Clone)]
struct Slot {
    value: Arc<dyn Any + Send + Sync>,
    expires_at_ms: u64,
}

/// Decoded values of hot keys; see the module docs.
pub struct HotTier {
    cache: Cache<String, Slot>,
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
            .field("items", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl HotTier {
    /// A tier of at most `max_items` values (at least 1), expiring by `clock`.
    #[must_use]
    pub fn new(max_items: u64, clock: Arc<dyn Clock>) -> HotTier {
        let max_items = max_items.max(1);
        HotTier {
            cache: Cache::new(usize::try_from(max_items).unwrap_or(usize::MAX)),
            clock,
            max_items,
            clears: AtomicU64::new(0),
        }
    }

    fn live(&self, key: &str) -> Option<Slot> {
        let slot = self.cache.get(key)?;
        if slot.expires_at_ms != 0 && slot.expires_at_ms <= self.clock.now_ms() {
            self.cache.remove(key);
            return None;
        }
        Some(slot)
    }

    /// The value of `key` if the tier holds one of type `T` that has not expired.
    pub fn get<T: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<T> {
        let slot = self.live(key)?;
        slot.value.downcast_ref::<T>().cloned()
    }

    /// [`get`](Self::get) without cloning the value.
    pub fn get_arc<T: Send + Sync + 'static>(&self, key: &str) -> Option<Arc<T>> {
        let slot = self.live(key)?;
        slot.value.downcast::<T>().ok()
    }

    /// Keeps `value` for `key` until `expires_at_ms` (Unix ms; 0 = never). Call only under the
    /// backfill guard (see the module docs).
    pub fn insert<T: Send + Sync + 'static>(&self, key: &str, value: Arc<T>, expires_at_ms: u64) {
        self.cache.insert(key.to_owned(), Slot { value, expires_at_ms });
    }

    /// Drops `key`.
    pub fn remove(&self, key: &str) {
        self.cache.remove(key);
    }

    /// Drops every key.
    pub fn clear(&self) {
        self.clears.fetch_add(1, Ordering::SeqCst);
        self.cache.clear();
        self.clears.fetch_add(1, Ordering::SeqCst);
    }

    /// A mark to take before reading the value to keep; see
    /// [`insert_unless_cleared`](Self::insert_unless_cleared).
    #[must_use]
    pub fn clear_mark(&self) -> u64 {
        self.clears.load(Ordering::SeqCst)
    }

    /// [`insert`](Self::insert), undone if a [`clear`](Self::clear) began since `mark` was
    /// taken: a value read before a clear (entries marked suspect, say) must not outlive it.
    pub fn insert_unless_cleared<T: Send + Sync + 'static>(
        &self,
        key: &str,
        value: Arc<T>,
        expires_at_ms: u64,
        mark: u64,
    ) -> bool {
        self.insert(key, value, expires_at_ms);
        if self.clears.load(Ordering::SeqCst) != mark {
            self.cache.remove(key);
            return false;
        }
        true
    }

    /// How many values the tier holds (expired ones not yet read included).
    #[must_use]
    pub fn len(&self) -> u64 {
        self.cache.len() as u64
    }

    /// Whether the tier is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// The bound.
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
        tier.insert("u", Arc::new(User { name: "Ada".into() }), 0);
        assert_eq!(tier.get::<User>("u"), Some(User { name: "Ada".into() }));
        assert_eq!(tier.get::<String>("u"), None, "another type is a miss");
        assert_eq!(
            tier.get_arc::<User>("u").map(|u| u.name.clone()),
            Some("Ada".into())
        );
    }

    #[test]
    fn an_expired_value_is_a_miss_and_leaves_the_tier() {
        let clock = ManualClock::new(1000);
        let tier = HotTier::new(10, Arc::new(clock.clone()));
        tier.insert("k", Arc::new(7u32), 1500);
        assert_eq!(tier.get::<u32>("k"), Some(7));
        clock.advance(std::time::Duration::from_millis(500));
        assert_eq!(tier.get::<u32>("k"), None);
        assert!(tier.is_empty());
    }

    #[test]
    fn the_tier_holds_at_most_its_bound() {
        let tier = HotTier::new(100, Arc::new(ManualClock::new(0)));
        for i in 0..1000u32 {
            tier.insert(&format!("k{i}"), Arc::new(i), 0);
        }
        assert!(tier.len() <= 100, "{}", tier.len());
    }
}
