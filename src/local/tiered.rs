//! [`Tiered`]: the local level of two tiers, a [`HotTier`] of decoded values in front of a
//! level of bytes (the file store by default).
//!
//! As a [`LocalStorage`] it is the level below: every read of bytes goes there, and every change
//! goes there between the hot tier's `begin_change` and `end_change` (crate-internal), which drop the key
//! from the hot tier before and after the change, or, after a write of a key the hot tier held
//! (or that a typed read lately found nowhere), put the written value there (unless another
//! change of the key overlapped it); so the hot tier never serves a value the level below
//! replaced. Typed reads
//! use the hot tier directly (through the manager, which fills it under its backfill guard).
//! Fills (values copied in from L2, which the level below may refuse) drop the key too, and put
//! the value filled back, if the level below admitted it, in the types that hold a value of the
//! key or whose reads noted a miss of it: the single read that asked for a fill (having missed
//! the hot tier) keeps the value it decoded itself, once the fill is in; a batch read, whose
//! fills are written after it returns, notes its L2 hits so that the fill keeps them.

use std::sync::Arc;
use std::time::Duration;

use super::hot::{HotTier, Written};
use crate::error::{Error, Result, Served};
use crate::storage::{
    Confirmation, Entry, Freshness, LocalStorage, Storage, StorageCounters, StorageSize, SuspectEpoch,
    TierAbove,
};

/// The two local tiers; see the module docs.
pub struct Tiered {
    hot: Arc<HotTier>,
    base: Arc<dyn LocalStorage>,
}

impl std::fmt::Debug for Tiered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tiered")
            .field("hot", &self.hot)
            .field("base", &self.base.name())
            .finish()
    }
}

impl Tiered {
    /// `hot` in front of `base`, which is told so
    /// ([`watch_tier_above`](LocalStorage::watch_tier_above)): its eviction then keeps the keys
    /// `hot` serves.
    pub fn new(hot: Arc<HotTier>, base: Arc<dyn LocalStorage>) -> Tiered {
        base.watch_tier_above(Arc::clone(&hot) as Arc<dyn TierAbove>);
        Tiered { hot, base }
    }

    /// The hot tier.
    #[must_use]
    pub fn hot(&self) -> &Arc<HotTier> {
        &self.hot
    }

    /// The level below the hot tier.
    #[must_use]
    pub fn base(&self) -> &Arc<dyn LocalStorage> {
        &self.base
    }

    /// Runs a write of `items` (key, value, TTL) in the level below: the keys leave the hot
    /// tier around it, and those it held (or lately missed) come back with their new values if
    /// the write succeeded.
    fn writing<'k>(
        &self,
        items: impl Iterator<Item = (&'k str, &'k [u8], Option<Duration>)> + Clone,
        write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let changes = self
            .hot
            .begin_changes(items.clone().map(|(key, _, _)| key), false);
        let out = write();
        for ((key, bytes, ttl), change) in items.zip(changes) {
            self.hot.end_change(key, change, written(&out, bytes, ttl));
        }
        out
    }
}

/// What a write that answered `out` gave the level below, for [`HotTier::end_change`]: nothing
/// if it failed, or if it had no TTL of its own (the level's default is unknown here).
fn written<'a, T>(out: &Result<T>, bytes: &'a [u8], ttl: Option<Duration>) -> Option<Written<'a>> {
    ttl.filter(|_| out.is_ok()).map(|ttl| Written { bytes, ttl })
}

impl Storage for Tiered {
    fn name(&self) -> &str {
        self.base.name()
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.base.get(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        // One key: no list of changes to allocate.
        let change = self.hot.begin_change(key);
        let out = self.base.set(key, value, ttl);
        self.hot.end_change(key, change, written(&out, value, ttl));
        out
    }

    /// Whether either tier held the key: a value the hot tier still served is found, also
    /// where the level below had evicted it.
    fn delete(&self, key: &str) -> Result<bool> {
        let change = self.hot.begin_change(key);
        let in_memory = change.had_value();
        let out = self.base.delete(key);
        self.hot.end_change(key, change, None);
        out.map(|found| found || in_memory)
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.base.get_many(keys)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.writing(items.iter().map(|&(k, v)| (k, v, ttl)), || {
            self.base.set_many(items, ttl)
        })
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.writing(items.iter().copied(), || self.base.set_each(items))
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.base.check_value(key, value_len)
    }

    /// How many keys either tier held, as [`delete`](Storage::delete) tells: the level
    /// below's count, and the keys of values the hot tier held that it had evicted (asked for
    /// before the delete, only when the hot tier held a value of some key, with
    /// [`holds_many`](LocalStorage::holds_many): the file store answers from its index and
    /// records in place, where a read would copy each value out and count it as a use in its
    /// eviction policy). A delete below that fails partway ([`Error::PartialBatch`]) counts them
    /// too among the keys it got through: their values are gone as after a whole delete.
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let changes = self.hot.begin_changes(keys.iter().copied(), false);
        let in_memory: Vec<usize> = changes
            .iter()
            .enumerate()
            .filter(|(_, change)| change.had_value())
            .map(|(at, _)| at)
            .collect();
        // Positions of the keys only the hot tier held. A failed look only leaves the count at
        // the level below's.
        let only_in_memory: Vec<usize> = match in_memory.as_slice() {
            [] => Vec::new(),
            held => {
                let asked: Vec<&str> = held.iter().filter_map(|&at| keys.get(at).copied()).collect();
                self.base.holds_many(&asked).map_or_else(
                    |_| Vec::new(),
                    |found| {
                        held.iter()
                            .zip(found)
                            .filter(|(_, holds)| !holds)
                            .map(|(&at, _)| at)
                            .collect()
                    },
                )
            }
        };
        let out = self.base.delete_many(keys);
        for (key, change) in keys.iter().zip(changes) {
            self.hot.end_change(key, change, None);
        }
        match out {
            Ok(removed) => Ok(removed.saturating_add(only_in_memory.len() as u64)),
            Err(Error::PartialBatch(mut partial)) => {
                if let Served::Removed(removed) = &mut partial.served {
                    let through = only_in_memory
                        .iter()
                        .filter(|at| partial.failed.binary_search(at).is_err())
                        .count();
                    *removed = removed.saturating_add(through as u64);
                }
                Err(Error::PartialBatch(partial))
            }
            Err(e) => Err(e),
        }
    }

    fn size(&self) -> Result<StorageSize> {
        self.base.size()
    }

    fn clear(&self) -> Result<()> {
        self.hot.clear();
        let out = self.base.clear();
        self.hot.clear();
        out
    }

    fn flush(&self) -> Result<()> {
        self.base.flush()
    }

    fn counters(&self) -> StorageCounters {
        self.base.counters()
    }
}

impl LocalStorage for Tiered {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        self.base.get_checked(key)
    }

    /// Stale copies live in the base tier only: the hot tier drops a value when it expires.
    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        self.base.get_stale(key)
    }

    /// Suspect entries must be revalidated before they are served: the hot tier forgets all.
    fn mark_all_suspect(&self) -> Result<()> {
        self.hot.clear();
        let out = self.base.mark_all_suspect();
        self.hot.clear();
        out
    }

    /// The level below's: the hot tier holds no suspect entry (a loss of certainty empties it).
    fn suspect_epoch(&self) -> SuspectEpoch {
        self.base.suspect_epoch()
    }

    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        self.base.confirm(key, checked_at)
    }

    /// The level below's keys and the hot tier's: the hot tier may still hold a value the
    /// level below has evicted.
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        let Some(mut keys) = self.base.keys_with_prefix(prefix)? else {
            return Ok(None);
        };
        keys.extend(self.hot.keys_with_prefix(prefix));
        keys.sort_unstable();
        keys.dedup();
        Ok(Some(keys))
    }

    /// A change like any write: the keys leave the hot tier around it, whether the level below
    /// admits them or not. A key that a typed read lately noted as missed (a batch read notes
    /// the L2 hits it decoded, which this fill copies in after the read returned), or whose
    /// value the hot tier holds, comes back with the value filled, if the level below
    /// admitted it: the hot tier then holds what a single read's fill would have left there.
    /// A place without a value that no read noted only drops the key: a single read keeps
    /// what it decoded itself once its fill is in (see `HotTier::begin_changes`). Admission is
    /// asked of those keys alone ([`holds_many`](LocalStorage::holds_many), which does not
    /// count as a use), after the fill; a change of the key that overlapped it leaves the key
    /// out, as after a write.
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        let changes = self.hot.begin_changes(items.iter().map(|(key, _, _)| *key), true);
        let out = self.base.fill_each(items);
        let wanted: Vec<&str> = items
            .iter()
            .zip(&changes)
            .filter(|(_, change)| change.wants_value())
            .map(|((key, _, _), _)| *key)
            .collect();
        // A failed look keeps none of them: the next read asks the level below.
        let mut admitted = match (&out, wanted.as_slice()) {
            (Ok(_), [_, ..]) => self.base.holds_many(&wanted).unwrap_or_default(),
            _ => Vec::new(),
        }
        .into_iter();
        for ((key, bytes, ttl), change) in items.iter().zip(changes) {
            let kept = change.wants_value() && admitted.next().unwrap_or(false);
            let written = (*ttl).filter(|_| kept).map(|ttl| Written { bytes, ttl });
            self.hot.end_change(key, change, written);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::local::memory::MemoryStore;
    use crate::storage::delegate::{Delegate, Wrap, WrapLocal};

    /// A level below whose admission refuses every fill.
    struct RefusesFills(MemoryStore);

    impl Wrap for RefusesFills {
        type Inner = MemoryStore;
        fn inner(&self) -> &MemoryStore {
            &self.0
        }
    }

    impl WrapLocal for RefusesFills {
        fn fill_each(&self, _: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
            Ok(0)
        }
    }

    fn decoder() -> super::super::hot::Decoder<u32> {
        Box::new(|_, bytes: &[u8]| bytes.try_into().ok().map(u32::from_le_bytes))
    }

    /// Two tiers over `base`, with `missed` noted as a typed read's miss of `u32`.
    fn tiers(base: Arc<dyn LocalStorage>, missed: &str) -> Tiered {
        let hot = Arc::new(HotTier::new(10, 1 << 20, Arc::new(ManualClock::new(1000))));
        hot.note_miss::<u32>(missed, decoder);
        Tiered::new(hot, base)
    }

    const TTL: Option<Duration> = Some(Duration::from_secs(60));

    #[test]
    fn a_fill_of_a_key_a_typed_read_missed_leaves_its_value_in_both_tiers() {
        let tiers = tiers(Arc::new(MemoryStore::new(10).unwrap()), "k");
        let seven = 7u32.to_le_bytes();
        let other = 8u32.to_le_bytes();
        assert_eq!(
            tiers
                .fill_each(&[("k", &seven, TTL), ("j", &other, TTL)])
                .unwrap(),
            2
        );
        assert_eq!(tiers.hot().get::<u32>("k"), Some(7));
        assert_eq!(tiers.hot().get::<u32>("j"), None, "no read asked for j");
        assert!(tiers.base().get("j").unwrap().is_some());
    }

    /// A single read keeps what it decoded itself once its fill is in: a fill that put the
    /// value too had it decoded (and kept) twice on the reader's thread.
    #[test]
    fn a_fill_of_a_key_whose_place_the_hot_tier_held_but_no_read_noted_only_drops_it() {
        let tiers = tiers(Arc::new(MemoryStore::new(10).unwrap()), "other");
        tiers.hot().insert("k", 7u32, 0, 4);
        // A value: refreshed, as by a write.
        assert_eq!(tiers.fill_each(&[("k", &8u32.to_le_bytes(), TTL)]).unwrap(), 1);
        assert_eq!(tiers.hot().get::<u32>("k"), Some(8));
        assert_eq!(tiers.hot().written(), 1);
        // A place without a value, as a delete leaves: the fill only drops the key.
        assert!(tiers.delete("k").unwrap());
        assert_eq!(tiers.fill_each(&[("k", &9u32.to_le_bytes(), TTL)]).unwrap(), 1);
        assert_eq!(tiers.hot().get::<u32>("k"), None);
        assert_eq!(tiers.hot().written(), 1);
        // Noted by a read: the fill puts its value in the place.
        tiers.hot().note_miss::<u32>("k", decoder);
        assert_eq!(tiers.fill_each(&[("k", &10u32.to_le_bytes(), TTL)]).unwrap(), 1);
        assert_eq!(tiers.hot().get::<u32>("k"), Some(10));
    }

    #[test]
    fn a_fill_the_level_below_refuses_leaves_no_value_in_the_hot_tier() {
        let base = Delegate(RefusesFills(MemoryStore::new(10).unwrap()));
        let tiers = tiers(Arc::new(base), "k");
        assert_eq!(tiers.fill_each(&[("k", &7u32.to_le_bytes(), TTL)]).unwrap(), 0);
        assert_eq!(
            tiers.hot().get::<u32>("k"),
            None,
            "the hot tier holds no more than below"
        );
    }

    #[test]
    fn a_fill_that_fails_leaves_no_value_in_the_hot_tier() {
        struct FailsFills(MemoryStore);
        impl Wrap for FailsFills {
            type Inner = MemoryStore;
            fn inner(&self) -> &MemoryStore {
                &self.0
            }
        }
        impl WrapLocal for FailsFills {
            fn fill_each(&self, _: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
                Err(crate::Error::Backend {
                    level: "file",
                    op: "fill",
                    reason: "the device is gone (test)".into(),
                })
            }
        }
        let tiers = tiers(Arc::new(Delegate(FailsFills(MemoryStore::new(10).unwrap()))), "k");
        assert!(tiers.fill_each(&[("k", &7u32.to_le_bytes(), TTL)]).is_err());
        assert_eq!(tiers.hot().get::<u32>("k"), None);
    }
}
