//! What an entry kept in memory counts against a bound in bytes: the rule the memory tier
//! ([`super::hot`]) and the memory L1 ([`super::memory`]) share.
//!
//! An entry weighs its bytes (its key, its value's bytes and about [`ENTRY_OVERHEAD`]), and at
//! least the *unit*: the bound in bytes shared out over the bound in entries. So entries smaller
//! than the unit are bounded by their count alone, as with no bound in bytes, and larger ones by
//! their bytes.

/// Bytes an entry takes beside its key's and value's, about: the cache's entry (key, value,
/// links) and its share of the cache's table.
const ENTRY_OVERHEAD: u64 = 64;

/// The largest bound in bytes taken, 1 PiB (past any machine's RAM): quick_cache adds weights
/// in `u64` without a check, so a bound near `u64::MAX` would wrap.
const MAX_BOUND: u64 = 1 << 50;

/// Shards of every in-memory cache. A value heavier than 97% of one shard's share of the bound
/// is never kept (quick_cache refuses it), and quick_cache's default is four shards per core: on
/// a 64-core machine a 64 MiB memory L1 refused every value over about 250 KiB (its write
/// succeeded, the next read missed), on two cores one over 7.8 MiB. Eight everywhere: what two
/// cores get, so a value up to about an eighth of the bound is kept on any machine. Reads take
/// a shard's lock shared, so more cores contend little for it.
const SHARDS: usize = 8;

/// A quick_cache of about `items` entries and `weight` in all, with [`SHARDS`] shards.
pub(crate) fn cache<K, V, We, L>(
    items: usize,
    weight: u64,
    weighter: We,
    lifecycle: L,
) -> quick_cache::sync::Cache<K, V, We, quick_cache::DefaultHashBuilder, L>
where
    K: Eq + std::hash::Hash,
    V: Clone,
    We: quick_cache::Weighter<K, V> + Clone,
    L: quick_cache::Lifecycle<K, V> + Clone,
{
    let built = quick_cache::OptionsBuilder::new()
        .estimated_items_capacity(items)
        .weight_capacity(weight)
        .shards(SHARDS)
        .build();
    match built {
        Ok(options) => quick_cache::sync::Cache::with_options(
            options,
            weighter,
            quick_cache::DefaultHashBuilder::default(),
            lifecycle,
        ),
        // Only a missing field fails the builder, and both are set.
        Err(_) => quick_cache::sync::Cache::with(
            items,
            weight,
            weighter,
            quick_cache::DefaultHashBuilder::default(),
            lifecycle,
        ),
    }
}

/// The unit of a cache of `max_entries` (at least 1) and `max_bytes`: what every entry weighs
/// at least.
pub(crate) fn unit(max_bytes: u64, max_entries: u64) -> u64 {
    (max_bytes.min(MAX_BOUND) / max_entries.max(1)).max(1)
}

/// The total weight a cache of `max_entries` entries of at least `unit` each and `max_bytes` may
/// hold: the entries' share, and never more than the bytes. Past one entry per byte the unit is
/// 1, and `max_entries × unit` alone would let small entries fill `max_entries` bytes of weight.
///
/// But always room for one entry of the unit: quick_cache refuses an entry heavier than 97% of
/// a shard, and a cache this small has one shard, so a bound of one entry (`max_size = 1`,
/// `memory_items = 1`) kept nothing: a write succeeded and the next read missed. Such a cache
/// may hold a thirty-second more than its bytes.
pub(crate) fn capacity(max_bytes: u64, max_entries: u64, unit: u64) -> u64 {
    let share = max_entries
        .max(1)
        .saturating_mul(unit)
        .min(max_bytes.clamp(1, MAX_BOUND));
    share.max(unit.saturating_add(unit / 32).saturating_add(1))
}

/// The weight of an entry of `key` whose value is `value_len` bytes, given the cache's `unit`.
pub(crate) fn weight(key: &str, value_len: usize, unit: u64) -> u64 {
    let bytes = u64::try_from(value_len.saturating_add(key.len())).unwrap_or(u64::MAX);
    bytes.saturating_add(ENTRY_OVERHEAD).max(unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_entries_weigh_the_unit_and_large_ones_their_bytes() {
        let unit = unit(1 << 20, 100);
        assert_eq!(unit, 10_485);
        assert_eq!(weight("k", 10, unit), unit);
        assert_eq!(weight("k", 100_000, unit), 100_000 + 1 + ENTRY_OVERHEAD);
        // No bound past 1 PiB, and never a unit of 0.
        assert_eq!(super::unit(u64::MAX, 1), MAX_BOUND);
        assert_eq!(super::unit(0, 0), 1);
    }

    #[test]
    fn the_capacity_is_the_entries_share_and_never_more_than_the_bytes() {
        let unit = unit(1 << 20, 100);
        assert_eq!(capacity(1 << 20, 100, unit), 100 * unit);
        // More entries than bytes: the unit is 1, and the bytes bind.
        assert_eq!(
            capacity(1 << 20, 4_000_000, super::unit(1 << 20, 4_000_000)),
            1 << 20
        );
        assert_eq!(capacity(u64::MAX, u64::MAX, 1), MAX_BOUND);
        assert_eq!(capacity(0, 0, 1), 2);
    }

    /// quick_cache keeps no entry heavier than 97% of a shard: a cache bounded to one entry
    /// (or two, three) still keeps that many entries of the unit, with a byte bound or not.
    #[test]
    fn a_cache_of_a_few_entries_keeps_that_many() {
        for max_entries in 1..=3u64 {
            for max_bytes in [u64::MAX, 1 << 20, 1000] {
                let unit = unit(max_bytes, max_entries);
                let cache = cache(
                    max_entries as usize,
                    capacity(max_bytes, max_entries, unit),
                    Unit(unit),
                    quick_cache::sync::DefaultLifecycle::default(),
                );
                for i in 0..max_entries {
                    cache.insert(i, ());
                }
                assert_eq!(
                    cache.len() as u64,
                    max_entries,
                    "{max_entries} entries, {max_bytes} bytes"
                );
                cache.insert(max_entries, ());
                assert_eq!(cache.len() as u64, max_entries, "one over the bound");
            }
        }
    }

    /// Every entry weighs the unit.
    #[derive(Clone)]
    struct Unit(u64);

    impl quick_cache::Weighter<u64, ()> for Unit {
        fn weight(&self, _: &u64, _: &()) -> u64 {
            self.0
        }
    }
}
