//! [`MemoryStore`]: an in-process level bounded by item count (and, if asked, by bytes), with a
//! TTL per entry.
//!
//! Built on `quick_cache` (S3-FIFO eviction, sharded read/write locks). Both candidates were
//! measured first on this project's 2-vCPU machine with `cargo bench --bench manager` (the
//! `memory_tier_candidates_*` lines: 1 000 hot keys, 64-byte values; a zipf(0.99) trace of 4 M
//! reads over 100 000 keys, capacity 10 000, insert on miss). The range is over several runs on
//! a machine shared with other builds:
//!
//! | crate              | hit (`get` of a present key) | hit ratio, zipf(0.99) |
//! |--------------------|------------------------------|-----------------------|
//! | `quick_cache` 0.6  | 15–31 ns                     | 78.27 %               |
//! | `moka` 0.12 (sync) | 143–310 ns                   | 78.12 %               |
//!
//! `quick_cache` is about ten times cheaper per hit with the same hit ratio, so it is the one
//! used. (Through the `Storage` trait the tier's hit ratio is the same, 78.30 % against moka's
//! 78.11 %, the `memory_hit_ratio_zipf099` line.)
//!
//! `quick_cache` has no TTL: each value is stored with its absolute expiry (Unix ms, from the
//! store's [`Clock`]) and an expired entry is a miss, removed when it is read (or by
//! [`MemoryStore::purge_expired`]); until then it occupies one of the `max_items` slots and the
//! eviction policy drops it like any cold entry (counted as an expiration, not an eviction).
//! Values are copied out under the shard's read lock, so a hit costs one allocation and no
//! shared reference count.
//!
//! Expiry is wall-clock time, like the file store's, so a TTL keeps running while the machine
//! sleeps (a monotonic clock, as moka uses, stops during suspend). The price is one wall-clock
//! read per hit of an entry with a TTL: about a quarter of a memory-tier hit through the manager
//! on this VM (`perf`: `clock_gettime` plus the conversion to Unix ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use super::weigh;
use crate::clock::{self, Clock, SystemClock};
use crate::error::{Error, Result};
use crate::storage::{
    check_write, delete_each, get_each, Confirmation, Entry, Freshness, LocalStorage, Storage,
    StorageCounters, StorageSize, SuspectEpoch,
};

/// One cached value and its absolute expiry (Unix ms; 0 = never).
#[derive(Clone)]
struct Slot {
    value: Box<[u8]>,
    expires_at_ms: u64,
}

impl Slot {
    fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

/// Byte and event counts shared with the eviction hook.
#[derive(Debug, Default)]
struct Tally {
    bytes: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

impl Tally {
    fn remove_bytes(&self, n: usize) {
        // Saturating: a racing `clear` may already have zeroed the count.
        let n = n as u64;
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }
}

fn weight(key: &str, value: &[u8]) -> usize {
    key.len() + value.len()
}

/// What an entry counts against the cache's bound: with a bound in bytes, as `weigh` has it
/// (its bytes, and at least that bound shared out over the bound in items); without, one.
#[derive(Clone)]
struct ByBytes {
    /// `None`: bounded by count alone.
    unit: Option<u64>,
}

impl Weighter<String, Slot> for ByBytes {
    fn weight(&self, key: &String, val: &Slot) -> u64 {
        let Some(unit) = self.unit else {
            return 1;
        };
        weigh::weight(key, val.value.len(), unit)
    }
}

/// Collects what an insert pushes out of the cache, so the caller can tell the key's own previous
/// value (an overwrite: its bytes go, it is no eviction) from entries evicted to make room.
#[derive(Clone)]
struct Hooks;

/// What one insert pushed out: `(key, weight, expiry)` of each entry, the first without an
/// allocation.
#[derive(Default)]
struct Pushed {
    first: Option<(String, usize, u64)>,
    more: Vec<(String, usize, u64)>,
}

impl Lifecycle<String, Slot> for Hooks {
    type RequestState = Pushed;

    fn begin_request(&self) -> Self::RequestState {
        Pushed::default()
    }

    fn on_evict(&self, pushed: &mut Self::RequestState, key: String, val: Slot) {
        let w = weight(&key, &val.value);
        if pushed.first.is_none() {
            pushed.first = Some((key, w, val.expires_at_ms));
        } else {
            pushed.more.push((key, w, val.expires_at_ms));
        }
    }
}

/// An in-process cache level bounded by item count (and, with
/// [`with_max_bytes`](Self::with_max_bytes), by bytes), with a TTL per entry.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::{MemoryStore, Storage};
/// let store = MemoryStore::new(10_000)?;
/// store.set("k", b"v", Some(Duration::from_secs(60)))?;
/// assert_eq!(store.get("k")?.map(|e| e.value), Some(b"v".to_vec()));
/// # Ok::<(), uno_cache::Error>(())
/// ```
pub struct MemoryStore {
    cache: Cache<String, Slot, ByBytes, DefaultHashBuilder, Hooks>,
    tally: Arc<Tally>,
    clock: Arc<dyn Clock>,
    max_items: u64,
    /// `None`: bounded by count alone.
    max_bytes: Option<u64>,
    /// How long expired entries stay for [`LocalStorage::get_stale`], in ms.
    keep_expired_ms: u64,
    /// Counts the losses of certainty ([`LocalStorage::mark_all_suspect`]), each of which
    /// forgets every entry: a caller that read L2 before one must not write what it read back
    /// in as if it came after (see [`LocalStorage::suspect_epoch`]).
    epoch: AtomicU64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_items", &self.max_items)
            .field("items", &self.cache.len())
            .finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// A store holding at most `max_items` entries, using the system clock for TTLs.
    ///
    /// # Errors
    /// [`Error::Config`] if `max_items` is 0.
    pub fn new(max_items: u64) -> Result<MemoryStore> {
        MemoryStore::with_clock(max_items, Arc::new(SystemClock))
    }

    /// As [`MemoryStore::new`], with the clock used for TTLs (a
    /// [`ManualClock`](crate::ManualClock) in tests).
    ///
    /// # Errors
    /// [`Error::Config`] if `max_items` is 0.
    pub fn with_clock(max_items: u64, clock: Arc<dyn Clock>) -> Result<MemoryStore> {
        if max_items == 0 {
            return Err(Error::Config {
                field: "local.max_size".into(),
                reason: "a memory store needs room for at least 1 item".into(),
            });
        }
        Ok(MemoryStore {
            cache: bounded(max_items, None),
            tally: Arc::new(Tally::default()),
            clock,
            max_items,
            max_bytes: None,
            keep_expired_ms: 0,
            epoch: AtomicU64::new(SuspectEpoch::first_of_a_new_level()),
        })
    }

    /// Bounds the store by bytes too: an entry weighs its key and value (and about 64 bytes),
    /// and at least `max_bytes / max_items`, so entries smaller than that are bounded by their
    /// count and larger ones by their bytes. An entry larger than the store's bound (shared out
    /// over its shards) is not kept: the write succeeds, the next read misses. Call before use:
    /// it empties the store.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.cache = bounded(self.max_items, Some(max_bytes));
        self.tally = Arc::new(Tally::default());
        self.max_bytes = Some(max_bytes);
        self
    }

    /// Keeps expired entries for `window` after their expiry (default zero), for fail-safe
    /// reads: `get` never returns them, [`LocalStorage::get_stale`] does until the window ends. They
    /// hold their slots meanwhile.
    #[must_use]
    pub fn keep_expired(mut self, window: Duration) -> Self {
        self.keep_expired_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// The item bound.
    #[must_use]
    pub fn max_items(&self) -> u64 {
        self.max_items
    }

    /// The bound in bytes, if there is one.
    #[must_use]
    pub fn max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }

    /// Removes every expired entry now (they are misses anyway); returns how many.
    #[allow(clippy::must_use_candidate)] // called for its effect
    pub fn purge_expired(&self) -> u64 {
        let now = self.clock.now_ms().saturating_sub(self.keep_expired_ms);
        let before = self.tally.expirations.load(Ordering::Relaxed);
        self.cache.retain(|key, slot| {
            let expired = slot.is_expired(now);
            if expired {
                self.tally.expirations.fetch_add(1, Ordering::Relaxed);
                self.tally.remove_bytes(weight(key, &slot.value));
            }
            !expired
        });
        self.tally
            .expirations
            .load(Ordering::Relaxed)
            .saturating_sub(before)
    }

    /// Inserts with `quick_cache`'s own `insert`, so a new key enters the policy as the crate's
    /// tuned path has it (evict first, then admit). Through `entry()` and its vacant guard, the
    /// guard linked the new key before evicting: with a probation queue of one or two entries
    /// per shard, the eviction then often took the key just admitted, and the tier lost up to 7
    /// points of hit ratio to a plain `quick_cache` (`examples/hit_ratios.rs`). A single insert
    /// is atomic under the shard lock, as the guarded path was: concurrent writers of a key still
    /// leave one of their values, and the manager's backfill guard orders them above this level.
    fn insert(&self, key: &str, value: &[u8], expires_at_ms: u64) {
        let slot = Slot {
            value: value.into(),
            expires_at_ms,
        };
        // Counted before the insert: once in the cache, the entry may be pushed out (by a
        // clear, another insert) and subtracted at once, and a subtraction that came first
        // would be lost to the saturation, leaving the count too high for good.
        self.tally
            .bytes
            .fetch_add(weight(key, value) as u64, Ordering::Relaxed);
        let pushed = self.cache.insert_with_lifecycle(key.to_owned(), slot);
        for (old_key, old_weight, old_expiry) in pushed.first.into_iter().chain(pushed.more) {
            self.tally.remove_bytes(old_weight);
            // A value whose TTL had passed is an expiration, as a read or a delete that took it
            // would count it, whether it was pushed out for room or replaced (as the file store
            // and redb count it). The key's previous value, replaced, or a value too large for
            // the bound in bytes, pushed out by its own insert: not an eviction.
            if old_expiry != 0 && self.clock.reached(old_expiry) {
                self.tally.expirations.fetch_add(1, Ordering::Relaxed);
            } else if old_key != key {
                self.tally.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The cache of a store of `max_items` entries (at least 1) and, if given, about `max_bytes`.
fn bounded(
    max_items: u64,
    max_bytes: Option<u64>,
) -> Cache<String, Slot, ByBytes, DefaultHashBuilder, Hooks> {
    let max_items = max_items.max(1);
    let unit = max_bytes.map(|bytes| weigh::unit(bytes, max_items));
    weigh::cache(
        usize::try_from(max_items).unwrap_or(usize::MAX),
        max_bytes
            .zip(unit)
            .map_or(max_items, |(bytes, unit)| weigh::capacity(bytes, max_items, unit)),
        ByBytes { unit },
        Hooks,
    )
}

impl Storage for MemoryStore {
    fn name(&self) -> &str {
        "memory"
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let Some(slot) = self.cache.get(key) else {
            return Ok(None);
        };
        // `reached` rather than a reading of the time: most hits are far from their expiry,
        // and the clock may tell so without reading the time exactly (see `Clock::reached`).
        if slot.expires_at_ms != 0 && self.clock.reached(slot.expires_at_ms) {
            let dead_before = self.clock.now_ms().saturating_sub(self.keep_expired_ms);
            if let Some((k, old)) = self.cache.remove_if(key, |s| s.is_expired(dead_before)) {
                self.tally.expirations.fetch_add(1, Ordering::Relaxed);
                self.tally.remove_bytes(weight(&k, &old.value));
            }
            return Ok(None);
        }
        Ok(Some(Entry {
            value: slot.value.into_vec(),
            expires_at: (slot.expires_at_ms != 0).then(|| clock::ms_to_system_time(slot.expires_at_ms)),
        }))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        get_each(self, keys)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        check_write(key, ttl)?;
        let expires = ttl.map_or(0, |t| clock::expiry_ms(self.clock.now_ms(), t));
        self.insert(key, value, expires);
        Ok(())
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        for (key, _) in items {
            check_write(key, ttl)?;
        }
        let expires = ttl.map_or(0, |t| clock::expiry_ms(self.clock.now_ms(), t));
        for (key, value) in items {
            self.insert(key, value, expires);
        }
        Ok(())
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        for (key, _, ttl) in items {
            check_write(key, *ttl)?;
        }
        let now = self.clock.now_ms();
        for (key, value, ttl) in items {
            self.insert(key, value, ttl.map_or(0, |t| clock::expiry_ms(now, t)));
        }
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        check_write(key, None)?;
        Ok(match self.cache.remove(key) {
            Some((k, slot)) => {
                self.tally.remove_bytes(weight(&k, &slot.value));
                if slot.is_expired(self.clock.now_ms()) {
                    self.tally.expirations.fetch_add(1, Ordering::Relaxed);
                    false
                } else {
                    true
                }
            }
            None => false,
        })
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        delete_each(self, "memory", keys)
    }

    /// Any value is taken: one too large for the bound in bytes is just not kept.
    fn check_value(&self, _key: &str, _value_len: usize) -> Result<()> {
        Ok(())
    }

    fn size(&self) -> Result<StorageSize> {
        Ok(StorageSize {
            items: self.cache.len() as u64,
            bytes: self.tally.bytes.load(Ordering::Relaxed),
        })
    }

    fn clear(&self) -> Result<()> {
        for (key, slot) in self.cache.drain() {
            self.tally.remove_bytes(weight(&key, &slot.value));
        }
        Ok(())
    }

    /// Nothing to make durable: the store lives and dies with the process.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn counters(&self) -> StorageCounters {
        StorageCounters {
            evictions: self.tally.evictions.load(Ordering::Relaxed),
            expirations: self.tally.expirations.load(Ordering::Relaxed),
            corrupt_reads: 0,
            ..StorageCounters::default()
        }
    }
}

/// The store keeps no entry across a restart and has no suspect mark: an entry is trusted
/// while it is here, and a loss of certainty forgets everything.
impl LocalStorage for MemoryStore {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        Ok(self.get(key)?.map(|entry| (entry, Freshness::Trusted)))
    }

    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        let Some(slot) = self.cache.peek(key) else {
            return Ok(None);
        };
        if slot.is_expired(self.clock.now_ms().saturating_sub(self.keep_expired_ms)) {
            return Ok(None);
        }
        Ok(Some(Entry {
            value: slot.value.into_vec(),
            expires_at: (slot.expires_at_ms != 0).then(|| clock::ms_to_system_time(slot.expires_at_ms)),
        }))
    }

    /// No suspect mark to set: forgetting every entry is the safe equivalent. The epoch moves
    /// first, so a caller that reads it after its write and finds it unchanged knows the
    /// forgetting comes after that write, and takes it too.
    fn mark_all_suspect(&self) -> Result<()> {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.clear()
    }

    /// Moved by every loss of certainty. No entry here is ever suspect, so no confirm is
    /// refused by it (one from before finds its entry gone); a backfill of a value read from L2
    /// before a loss is (see [`LocalStorage::suspect_epoch`]).
    fn suspect_epoch(&self) -> SuspectEpoch {
        SuspectEpoch::new(self.epoch.load(Ordering::Acquire))
    }

    /// Entries are never suspect: a held key is trusted as it is.
    fn confirm(&self, key: &str, _checked_at: SuspectEpoch) -> Result<Confirmation> {
        let live = self
            .cache
            .peek(key)
            .is_some_and(|slot| slot.expires_at_ms == 0 || !self.clock.reached(slot.expires_at_ms));
        Ok(if live {
            Confirmation::Confirmed
        } else {
            Confirmation::Missing
        })
    }

    /// Not listed: the cache has no ordered index, and a prefix invalidation clears it instead.
    fn keys_with_prefix(&self, _prefix: &str) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    /// Every fill is written: quick_cache's own policy decides at insert what stays, so
    /// there is nothing to refuse up front.
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        self.set_each(items)?;
        Ok(items.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn store(max: u64) -> (MemoryStore, ManualClock) {
        let clock = ManualClock::new(1_000_000);
        (
            MemoryStore::with_clock(max, Arc::new(clock.clone())).unwrap(),
            clock,
        )
    }

    #[test]
    fn entries_expire_at_their_own_ttl() {
        let (s, clock) = store(100);
        s.set("short", b"1", Some(Duration::from_secs(1))).unwrap();
        s.set("long", b"2", Some(Duration::from_secs(10))).unwrap();
        s.set("never", b"3", None).unwrap();
        let e = s.get("short").unwrap().unwrap();
        assert_eq!(e.expires_at, Some(clock::ms_to_system_time(1_001_000)));
        clock.advance(Duration::from_secs(1));
        assert_eq!(s.get("short").unwrap(), None);
        assert!(s.get("long").unwrap().is_some());
        clock.advance(Duration::from_secs(3600));
        assert_eq!(s.get("long").unwrap(), None);
        assert_eq!(s.get("never").unwrap().unwrap().expires_at, None);
        assert_eq!(s.counters().expirations, 2);
        assert_eq!(s.size().unwrap(), StorageSize { items: 1, bytes: 6 });
    }

    /// quick_cache refuses a value heavier than 97% of one shard, and by default it makes four
    /// shards per core: on a 64-core machine a 64 MiB store kept no value over about 250 KiB.
    /// With eight shards on every machine, a value up to about an eighth of the bound is kept.
    #[test]
    fn a_value_of_a_tenth_of_the_bound_is_kept_whatever_the_cores() {
        let s = MemoryStore::new(10_000).unwrap().with_max_bytes(64 << 20);
        let value = vec![7u8; (64 << 20) / 10];
        s.set("large", &value, None).unwrap();
        assert_eq!(s.get("large").unwrap().map(|e| e.value.len()), Some(value.len()));
    }

    #[test]
    fn bytes_follow_overwrites_deletes_and_clear() {
        let (s, _) = store(100);
        s.set("ab", b"1234", None).unwrap();
        assert_eq!(s.size().unwrap().bytes, 6);
        s.set("ab", b"12", None).unwrap();
        assert_eq!(s.size().unwrap(), StorageSize { items: 1, bytes: 4 });
        s.set_many(&[("c", b"1"), ("d", b"22")], None).unwrap();
        assert_eq!(s.size().unwrap(), StorageSize { items: 3, bytes: 9 });
        assert!(s.delete("ab").unwrap());
        assert!(!s.delete("ab").unwrap());
        assert_eq!(s.size().unwrap(), StorageSize { items: 2, bytes: 5 });
        s.clear().unwrap();
        assert_eq!(s.size().unwrap(), StorageSize::default());
    }

    /// A clear (or an eviction) may push out an entry between its insert and the count of its
    /// bytes; the count must not lose that subtraction.
    #[test]
    fn bytes_stay_exact_while_writes_race_clears() {
        let (s, _) = store(4);
        let start = std::sync::Barrier::new(5);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let (s, start) = (&s, &start);
                scope.spawn(move || {
                    start.wait();
                    for i in 0..400_000 {
                        s.set(&format!("t{t}-{}", i % 8), b"value", None).unwrap();
                    }
                });
            }
            start.wait();
            for _ in 0..80_000 {
                s.clear().unwrap();
            }
        });
        s.clear().unwrap();
        assert_eq!(s.size().unwrap(), StorageSize::default());
    }

    #[test]
    fn item_bound_holds_and_evictions_are_counted() {
        let (s, _) = store(50);
        for i in 0..500 {
            s.set(&format!("key{i}"), b"x", None).unwrap();
        }
        let size = s.size().unwrap();
        assert!(size.items <= 50, "{size:?}");
        assert_eq!(s.counters().evictions, 500 - size.items);
        assert_eq!(
            size.bytes,
            (0..500).map(|i| format!("key{i}").len() as u64 + 1).sum::<u64>() - evicted_bytes(&s)
        );
    }

    #[test]
    fn a_bound_in_items_past_one_per_byte_leaves_the_bound_in_bytes_binding() {
        // Four million places in 1 MiB: every entry weighs more than its share, so the bytes bind.
        let max_bytes = 1 << 20;
        let s = MemoryStore::new(4_000_000).unwrap().with_max_bytes(max_bytes);
        for i in 0..100_000 {
            s.set(&format!("k{i}"), &[7u8; 100], None).unwrap();
        }
        let size = s.size().unwrap();
        assert!(size.bytes <= max_bytes, "{size:?}");
        assert!(size.items > 1_000, "{size:?}");
    }

    #[test]
    fn a_bound_in_bytes_holds_large_values_by_their_bytes_and_small_ones_by_their_count() {
        // 100 items, 1 MiB: up to about 10 KiB an entry takes one of the 100 places.
        let s = MemoryStore::new(100).unwrap().with_max_bytes(1 << 20);
        assert_eq!(s.max_bytes(), Some(1 << 20));
        for i in 0..1000 {
            s.set(&format!("small-{i}"), &[1u8; 100], None).unwrap();
        }
        assert!((80..=100).contains(&s.size().unwrap().items), "{:?}", s.size());
        s.clear().unwrap();
        let large = vec![2u8; 100 << 10];
        for i in 0..1000 {
            s.set(&format!("large-{i}"), &large, None).unwrap();
        }
        let size = s.size().unwrap();
        assert!((1..=10).contains(&size.items), "{size:?}");
        assert!(size.bytes <= 1 << 20, "{size:?}");
        // The bytes counted are the entries held: what was pushed out was subtracted.
        let held: u64 = (0..1000)
            .map(|i| format!("large-{i}"))
            .filter(|k| s.get(k).unwrap().is_some())
            .map(|k| (k.len() + large.len()) as u64)
            .sum();
        assert_eq!(size.bytes, held);
        // Too large for the bound: the write is taken, the value is not kept, and nothing
        // counts it.
        s.set("huge", &vec![3u8; 2 << 20], None).unwrap();
        assert_eq!(s.get("huge").unwrap(), None);
        assert!(s.size().unwrap().bytes <= 1 << 20);
        // A bound in bytes past any RAM leaves the count as the bound (and does not overflow).
        let s = MemoryStore::new(50).unwrap().with_max_bytes(u64::MAX);
        for i in 0..500 {
            s.set(&format!("key{i}"), b"x", None).unwrap();
        }
        assert!((40..=50).contains(&s.size().unwrap().items), "{:?}", s.size());
    }

    fn evicted_bytes(s: &MemoryStore) -> u64 {
        // Bytes of every key that is no longer present.
        (0..500)
            .map(|i| format!("key{i}"))
            .filter(|k| s.cache.peek(k.as_str()).is_none())
            .map(|k| k.len() as u64 + 1)
            .sum()
    }

    #[test]
    fn bad_input_is_refused() {
        let (s, _) = store(10);
        assert!(matches!(s.set("", b"v", None), Err(Error::InvalidKey { .. })));
        assert!(matches!(
            s.set("k", b"v", Some(Duration::ZERO)),
            Err(Error::ZeroTtl { .. })
        ));
        assert!(matches!(MemoryStore::new(0), Err(Error::Config { .. })));
        assert_eq!(s.size().unwrap().items, 0);
    }

    #[test]
    fn purge_removes_only_expired_entries() {
        let (s, clock) = store(10);
        s.set("a", b"1", Some(Duration::from_millis(5))).unwrap();
        s.set("b", b"1", Some(Duration::from_secs(5))).unwrap();
        clock.advance(Duration::from_millis(5));
        assert_eq!(s.purge_expired(), 1);
        assert_eq!(s.size().unwrap().items, 1);
        assert!(s.get("b").unwrap().is_some());
    }
}
