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

/// The unit of a cache of `max_entries` (at least 1) and `max_bytes`: what every entry weighs
/// at least.
pub(crate) fn unit(max_bytes: u64, max_entries: u64) -> u64 {
    (max_bytes.min(MAX_BOUND) / max_entries.max(1)).max(1)
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
}
