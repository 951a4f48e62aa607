//! [`HotTier`]: decoded values of the hottest keys, in front of the local level, so that a hit
//! costs no read of the level, no decode and no copy of bytes: the typed value itself is kept,
//! inline in a cache of its own type, and a hit hands out a clone of it.
//!
//! The tier holds what a typed read decoded, and what a write decoded of a key it holds or of
//! a key a typed read lately found nowhere (see `note_miss`). It may
//! keep a value the level below has since evicted (the file store keeps what the tier holds
//! first, but only in the room an eviction may copy), never one the level below has since
//! replaced or deleted, and a prefix invalidation lists its keys too
//! ([`keys_with_prefix`](HotTier::keys_with_prefix)). Every change to the level below goes
//! through [`Tiered`](super::tiered::Tiered) between `begin_change`,
//! which drops the key from this tier, and `end_change`, which drops it
//! again or, after a write, puts the written value, decoded, where the old one was, unless
//! another change of the key overlapped the write (the `changes` module). A read fills this
//! tier only if no write of the key started since the read began (the manager's backfill guard)
//! and no clear began either. So a delete or an invalidation can never leave an older value
//! readable here. A value is kept with the expiry of the entry it was decoded from, or of the
//! write, checked on every hit. It is empty after a restart and refills from the level below,
//! which has already been revalidated by then.
//!
//! Why a write puts its value here rather than only dropping the old one: a hot key that is
//! written now and then would otherwise miss here after every write, and the read that follows
//! pays the level below (a read, a CRC check, a decode and a second read to check what it
//! keeps). Under zipf(0.99) reads with 10% writes the tier hit 66% of reads where a
//! quick_cache of the same capacity, updated on writes, hit 73%
//! (`manager_zipf099_90_10_vs_hand_made` in `benches/manager_redis.rs`). Only a key the tier
//! already holds, or that a typed read lately missed, is filled, and only in the types it was
//! read as: a write carries bytes, and the type a reader will ask for is known from its earlier
//! reads alone.
//!
//! One cache per value type (up to [`MAX_TYPES`] types; reads of further types just miss), each
//! bounded by `max_items` and by `max_bytes` (a value weighs the bytes it was decoded from, at
//! least `max_bytes / max_items`; see [`HotTier::new`]), with quick_cache's eviction (S3-FIFO)
//! and a plain `insert`. A value
//! type gets its cache the first time a value of it is kept; a lookup finds it by `TypeId` in a
//! short array of write-once slots, without a lock. Keeping values inline (rather than behind a
//! type-erased `Arc`) spares a hit one pointer chase, the difference between a memory-tier hit
//! and a plain quick_cache hit of the same value (`memory_tier_hit` in `benches/manager.rs`);
//! likewise a short key is kept inside the entry, with the value's expiry and weight (the `key`
//! module).

mod changes;
mod key;
#[cfg(test)]
mod tests;

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::RwLock;
use quick_cache::sync::Cache;
use quick_cache::{DefaultHashBuilder, Lifecycle, Weighter};

use self::changes::{Change as StripeChange, Changes};
use self::key::{HotKey, Probe, Weight};
use super::weigh;
use crate::clock::{self, Clock};

/// The clear mark taken while a clear runs: no count of clears ever reaches it, so nothing put
/// under it stays (see [`HotTier::clear_mark`]).
const RUNNING_CLEAR: u64 = u64::MAX;
use crate::storage::{StorageCounters, TierAbove};

/// How many value types the tier keeps caches for.
pub const MAX_TYPES: usize = 8;

/// How many times a clear of one type's cache is tried while dropping its values panics (see
/// [`Erased::clear`]).
const CLEAR_TRIES: usize = 1024;

/// A kept value; `None`: the key was deleted below since, or written while it could not be
/// refreshed (a change overlapped the write). The empty entry keeps the key's place (and how hot
/// it is) in the cache, so that the value written or read back next goes where the old one was
/// rather than in among keys never seen before, which a hot key that is written now and then
/// would otherwise pay for with a miss each time it fell out
/// (`manager_zipf099_90_10_vs_hand_made` in `benches/manager_redis.rs`).
type Slot<V> = Option<V>;

/// Turns the bytes a write gave the level below into a value of one cache's type, so that the
/// write can refresh a key the cache holds; `None`: the bytes are not a value of that type (or
/// are the marker of a cached absence).
pub type Decoder<V> = Box<dyn Fn(&str, &[u8]) -> Option<V> + Send + Sync>;

/// What [`Erased::forget`] found of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Forgot {
    /// Nothing: the key had no place in the cache.
    Nothing,
    /// A place without a value (see [`Slot`]).
    Place,
    /// A value, kept until this expiry (Unix ms; 0 = never).
    Value(u64),
}

/// What the tier needs of a cache without knowing its value type.
trait Erased: Any + Send + Sync {
    /// Makes `key` a miss, keeping its place (see [`Slot`]); what it had.
    fn forget(&self, key: &str) -> Forgot;
    /// Puts the value `bytes` decode to where `key` is, if the key still has a place (or, with
    /// `insert`, as a new entry); forgets it if they do not decode. Whether a value was put.
    fn refresh(&self, key: &str, bytes: &[u8], expires_at_ms: u64, insert: bool) -> bool;
    /// Whether a typed read of this type lately found no value for the key of `hash` (see
    /// [`HotTier::note_miss`]); forgets that it did.
    fn take_miss(&self, hash: u64) -> bool;
    /// Whether `key` has a place in the cache (with or without a value), without making it
    /// hotter.
    fn holds(&self, key: &str) -> bool;
    /// Adds to `out` the keys that start with `prefix` and hold a value that has not expired
    /// by `clock`.
    fn keys_with_prefix(&self, prefix: &str, clock: &dyn Clock, out: &mut Vec<String>);
    /// Drops every entry, also when dropping a value panics.
    fn clear(&self);
    fn len(&self) -> usize;
    /// The weight the cache's entries count against its bound in bytes.
    fn weight(&self) -> u64;
}

/// The cache of one value type.
type TypedCache<V> = Cache<HotKey, Slot<V>, ByWeight, DefaultHashBuilder, Evictions>;

struct Typed<V> {
    cache: TypedCache<V>,
    /// What an entry weighs at least (see [`HotTier::new`]).
    unit: u64,
    /// Set by the first read that keeps a value with a way to decode one (see
    /// [`HotTier::insert_unless_cleared`]).
    decode: OnceLock<Decoder<V>>,
    /// Keys lately read as this type and found nowhere, by hash (see [`HotTier::note_miss`]):
    /// a slot of the key's pair (see `miss_slots`) holds `hash | 1`, or 0. Lossy: a miss
    /// overwrites an older one once both slots of its pair are taken.
    misses: Box<[AtomicU64]>,
    /// The tier's count of values evicted for room (see [`HotTier::counters`]).
    evictions: Arc<AtomicU64>,
    /// The tier's count of values dropped expired, and the clock they expire by.
    expirations: Arc<AtomicU64>,
    clock: Arc<dyn Clock>,
}

/// What an entry counts against the tier's bound in bytes, kept in its key (see `key`).
#[derive(Debug, Clone, Copy)]
struct ByWeight;

impl<V> Weighter<HotKey, Slot<V>> for ByWeight {
    fn weight(&self, key: &HotKey, _: &Slot<V>) -> u64 {
        key.weight()
    }
}

/// Collects the keys of the values a request pushes out of a cache, so that the caller can tell
/// the written key's own value (replaced, or too heavy to be admitted: quick_cache reports both
/// as evicted) from values evicted for room, the only ones the tier's stats count (see
/// [`Typed::count_evictions`]). An empty place pushed out is no value lost, and is not listed.
#[derive(Clone)]
struct Evictions;

/// The keys of the values one request pushed out, the first without an allocation.
#[derive(Default)]
struct Pushed {
    first: Option<HotKey>,
    more: Vec<HotKey>,
}

impl<V> Lifecycle<HotKey, Slot<V>> for Evictions {
    type RequestState = Pushed;

    fn begin_request(&self) -> Self::RequestState {
        Pushed::default()
    }

    fn on_evict(&self, pushed: &mut Self::RequestState, key: HotKey, value: Slot<V>) {
        let Some(value) = value else {
            return;
        };
        // The value a write replaces or forgets is dropped here, inside the cache's call.
        drop_caught(key.as_str().unwrap_or(""), value);
        if pushed.first.is_none() {
            pushed.first = Some(key);
        } else {
            pushed.more.push(key);
        }
    }
}

/// Drops a value of `key` that a write replaced, forgot or could not keep: a panicking `Drop`
/// of a user's type unwound out of that write (its bytes already stored), and out of the cache's
/// call it ran in. The value is gone either way.
fn drop_caught<V>(key: &str, value: V) {
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(value))).is_err() {
        tracing::error!(key = %crate::error::key_for_error(key), "dropping a value of the memory tier panicked");
    }
}

/// Slots of recent misses per value type: 32 KiB. A miss is remembered until a write of the
/// key takes it or other misses take both slots of its pair; with thousands of misses between
/// a miss and its write, the write just does not fill the tier (the next read does).
const MISSES: usize = 4096;

/// The pair of slots that may note a recent miss of the key of `hash`. A pair rather than one
/// slot: a batch read notes every L2 hit it decoded, and two of them landing on one slot lost
/// a note, so the backfill's fill did not put that key in the tier (20 keys: 18 put in one run
/// of `tests/memory_tier_batch_fill.rs`; about one batch in twenty loses a key that way with
/// one slot a key, one in thousands with a pair).
fn miss_slots(misses: &[AtomicU64], hash: u64) -> &[AtomicU64] {
    let pair = usize::try_from(hash % (MISSES as u64 / 2)).unwrap_or(0) * 2;
    misses.get(pair..pair + 2).unwrap_or(&[])
}

/// Notes a recent miss of the key of `hash` in its pair of slots: nothing if noted already, a
/// free slot if there is one, else over the note in the slot the hash picks (which of the two
/// is older is not known).
fn note_miss_of(misses: &[AtomicU64], hash: u64) {
    let note = hash | 1;
    let slots = miss_slots(misses, hash);
    let noted = slots.iter().any(|slot| {
        let held = slot.load(Ordering::Relaxed);
        held == note
            || (held == 0
                && slot
                    .compare_exchange(0, note, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok())
    });
    if !noted {
        if let Some(slot) = slots.get(usize::from(hash >> 63 == 1)) {
            slot.store(note, Ordering::Relaxed);
        }
    }
}

/// Whether a miss of the key of `hash` was noted; forgets it.
fn take_miss_of(misses: &[AtomicU64], hash: u64) -> bool {
    miss_slots(misses, hash).iter().any(|slot| {
        slot.compare_exchange(hash | 1, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

impl<V: Clone + Send + Sync + 'static> Typed<V> {
    /// Keeps `value` for `key` until `expires_at_ms`, weighing the `size` bytes it was decoded
    /// from; whether it was admitted.
    fn put(&self, key: &str, value: V, expires_at_ms: u64, size: usize) -> bool {
        let weight = weigh::weight(key, size, self.unit);
        let pushed = self
            .cache
            .insert_with_lifecycle(HotKey::new(key, expires_at_ms, weight), Some(value));
        self.admitted(key, pushed)
    }

    /// Counts the values `pushed` holds of keys other than `key` as evictions, or as
    /// expirations if their TTL had passed (as every kind of L1 counts an expired entry pushed
    /// out for room); the expiry of the value of `key` pushed out too, if one was.
    fn count_evictions(&self, key: &str, pushed: Pushed) -> Option<u64> {
        let mut own = None;
        for pushed in pushed.first.into_iter().chain(pushed.more) {
            let expires_at_ms = pushed.expires_at_ms();
            if pushed.as_str() == Some(key) {
                own = Some(expires_at_ms);
            } else if expires_at_ms != 0 && self.clock.reached(expires_at_ms) {
                self.expirations.fetch_add(1, Ordering::Relaxed);
            } else {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        own
    }

    /// Counts the evictions of a request that wrote `key`, and tells whether the value written
    /// was admitted. A value heavier than the cache's share for its key is pushed out by its own
    /// insert, as the key's previous value is when replaced: only a lookup tells them apart, and
    /// only writes that pushed out a value of their own key pay for it.
    fn admitted(&self, key: &str, pushed: Pushed) -> bool {
        self.count_evictions(key, pushed).is_none() || self.holds(key)
    }
}

impl<V: Clone + Send + Sync + 'static> Erased for Typed<V> {
    fn forget(&self, key: &str) -> Forgot {
        if !self.cache.contains_key(&Probe::new(key)) {
            return Forgot::Nothing;
        }
        let gone = HotKey::new(key, 0, self.unit);
        // `soft`: the write does not make the key hotter; a miss of a key no longer present is
        // right as it is. Not replaced (the key left meanwhile), nothing was pushed out.
        match self.cache.replace_with_lifecycle(gone, None, true) {
            Ok(pushed) => self
                .count_evictions(key, pushed)
                .map_or(Forgot::Place, Forgot::Value),
            Err(_) => Forgot::Place,
        }
    }
    fn refresh(&self, key: &str, bytes: &[u8], expires_at_ms: u64, insert: bool) -> bool {
        match self.decode.get().and_then(|decode| decode(key, bytes)) {
            // A new key enters as an insert after a miss would.
            Some(value) if insert => self.put(key, value, expires_at_ms, bytes.len()),
            // `soft`, as a forget: a write is not a read. Evicted meanwhile, the key stays out;
            // too heavy, its old value is dropped and nothing else pushed out.
            Some(value) => match self.cache.replace_with_lifecycle(
                HotKey::new(key, expires_at_ms, weigh::weight(key, bytes.len(), self.unit)),
                Some(value),
                true,
            ) {
                Ok(pushed) => self.admitted(key, pushed),
                // Handed back, not kept: dropped here, in the write, as a value pushed out is
                // in `on_evict`.
                Err((_, value)) => {
                    drop_caught(key, value);
                    false
                }
            },
            None => {
                self.forget(key);
                false
            }
        }
    }
    fn take_miss(&self, hash: u64) -> bool {
        take_miss_of(&self.misses, hash)
    }
    fn holds(&self, key: &str) -> bool {
        self.cache.contains_key(&Probe::new(key))
    }
    fn keys_with_prefix(&self, prefix: &str, clock: &dyn Clock, out: &mut Vec<String>) {
        // `retain` visits every entry without cloning values (`iter` clones each one); it
        // keeps them all.
        let found = std::cell::RefCell::new(Vec::new());
        self.cache.retain(|stored, slot| {
            if let (Some(_), Some(key)) = (slot, stored.as_str()) {
                let expires_at_ms = stored.expires_at_ms();
                if key.starts_with(prefix) && (expires_at_ms == 0 || !clock.reached(expires_at_ms)) {
                    found.borrow_mut().push(key.to_owned());
                }
            }
            true
        });
        out.append(&mut found.into_inner());
    }
    fn clear(&self) {
        // quick_cache drops the values of a shard inside `clear`: a panicking `Drop` of a
        // user's type unwound out of it with the later shards (and the later types' caches) not
        // cleared, out of the write, invalidation or loss of trust that cleared the tier, and
        // left the clear counted as running for good, so that the tier kept nothing from then
        // on. A shard whose value panicked is emptied all the same (the rest of its values are
        // dropped while unwinding), so each try gets further; the bound only stops a loop
        // against writers that keep putting such values back.
        for _ in 0..CLEAR_TRIES {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.cache.clear())).is_ok() {
                return;
            }
            tracing::error!("dropping a value of the memory tier panicked while clearing it");
        }
    }
    fn len(&self) -> usize {
        self.cache.len()
    }
    fn weight(&self) -> u64 {
        self.cache.weight()
    }
}

/// A change of a key of the level below, from [`HotTier::begin_change`] to
/// [`HotTier::end_change`]; see the module docs.
#[derive(Debug)]
pub(crate) struct Change<'a> {
    /// Shared by the keys of one batch that fall in one stripe (see
    /// [`HotTier::begin_changes`]).
    stripe: Option<Arc<StripeChange<'a>>>,
    /// The clear mark when the change began.
    mark: u64,
    /// Bit `i`: the cache in type slot `i` held the key when the change began (for a fill, a
    /// place without a value counts only if a read of its type lately noted a miss of the key
    /// too: see [`HotTier::begin_changes`]).
    held: u8,
    /// Bit `i`: the cache in type slot `i` did not, but a read of its type lately found no
    /// value for the key.
    missed: u8,
    /// The time when it began (Unix ms), if the key was held or missed: a value written with
    /// a TTL is kept until this time plus the TTL, no later than the level below keeps it.
    began_ms: u64,
    /// Whether a cache held a value of the key, unexpired, when the change began.
    had_value: bool,
}

impl Change<'_> {
    /// Whether the tier held a value of the key that had not expired when the change began (in
    /// any type): a typed read answered it, so a delete found the key even where the level
    /// below had evicted it (the tier keeps what it decoded until its own eviction).
    #[must_use]
    pub(crate) fn had_value(&self) -> bool {
        self.had_value
    }

    /// Whether a write of the key would leave its value in the tier: a cache held the key, or
    /// a read of a cache's type lately found no value for it (see [`HotTier::end_change`]).
    #[must_use]
    pub(crate) fn wants_value(&self) -> bool {
        self.held | self.missed != 0
    }
}

/// What a write gave the level below, for [`HotTier::end_change`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Written<'a> {
    /// The bytes written.
    pub bytes: &'a [u8],
    /// Their TTL. (A write without one takes the level's default, unknown here: it only
    /// drops the key.)
    pub ttl: Duration,
}

/// Decoded values of hot keys; see the module docs.
pub struct HotTier {
    types: [OnceLock<(TypeId, Box<dyn Erased>)>; MAX_TYPES],
    clock: Arc<dyn Clock>,
    max_items: u64,
    max_bytes: u64,
    /// What an entry weighs at least: the bound in bytes shared out over `max_items` entries,
    /// rounded down to a weight a key can hold (see `key`), so that small values are bounded by
    /// their count alone.
    unit: u64,
    /// Clears begun and clears ended (see [`clear`](HotTier::clear) and
    /// [`insert_unless_cleared`](HotTier::insert_unless_cleared)): equal, no clear is running.
    clears: AtomicU64,
    cleared: AtomicU64,
    /// Held to write by a [`clear`](HotTier::clear), and to read by every put that must not
    /// outlive one begun since its mark (see
    /// [`insert_unless_cleared`](HotTier::insert_unless_cleared)): the check and the put are
    /// then one step. A put checked only after it was made, and undone if a clear had begun,
    /// was readable in between: a value read before a loss of trust was answered by a read that
    /// began after the loss returned.
    clearing: RwLock<()>,
    changes: Changes,
    /// See [`written`](HotTier::written).
    written: AtomicU64,
    /// Values evicted for room, by every type's cache (see [`counters`](HotTier::counters)).
    evictions: Arc<AtomicU64>,
    /// Values found expired by a read, or by a change of their key, or pushed out for room
    /// expired, and dropped.
    expirations: Arc<AtomicU64>,
}

impl std::fmt::Debug for HotTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HotTier")
            .field("max_items", &self.max_items)
            .field("max_bytes", &self.max_bytes)
            .field("items", &self.len())
            .finish_non_exhaustive()
    }
}

impl HotTier {
    /// A tier of at most `max_items` values (at least 1) per value type, and at most about
    /// `max_bytes` of them per type, expiring by `clock`.
    ///
    /// A value weighs the bytes it was decoded from (or written as), its key and
    /// about 64 bytes of entry, and at least `max_bytes / max_items`: values smaller than that are
    /// bounded by their count, larger ones by their bytes. The bytes stand for the decoded
    /// value, whose own size is not known here: a value much larger decoded than encoded
    /// takes more RAM than the bound says.
    #[must_use]
    pub fn new(max_items: u64, max_bytes: u64, clock: Arc<dyn Clock>) -> HotTier {
        let max_items = max_items.max(1);
        let share = weigh::unit(max_bytes, max_items);
        // Rounded down to a weight a key can hold, so that `max_items` small values fit.
        let class = Weight::class(share);
        let unit = if Weight::of(class) > share {
            Weight::of(class.saturating_sub(1))
        } else {
            Weight::of(class)
        };
        HotTier {
            types: std::array::from_fn(|_| OnceLock::new()),
            clock,
            max_items,
            max_bytes,
            unit,
            clears: AtomicU64::new(0),
            cleared: AtomicU64::new(0),
            clearing: RwLock::new(()),
            changes: Changes::new(),
            written: AtomicU64::new(0),
            evictions: Arc::new(AtomicU64::new(0)),
            expirations: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The cache of values of type `V`, if the tier has one.
    #[inline]
    fn typed<V: Clone + Send + Sync + 'static>(&self) -> Option<&TypedCache<V>> {
        let id = TypeId::of::<V>();
        for slot in &self.types {
            let (slot_id, cache) = slot.get()?;
            if *slot_id == id {
                let cache: &dyn Any = cache.as_ref();
                return cache.downcast_ref::<Typed<V>>().map(|t| &t.cache);
            }
        }
        None
    }

    /// The cache of values of type `V`, made if there is a free slot.
    fn typed_or_new<V: Clone + Send + Sync + 'static>(&self) -> Option<&Typed<V>> {
        let id = TypeId::of::<V>();
        for slot in &self.types {
            let (slot_id, cache) = slot.get_or_init(|| {
                let items = usize::try_from(self.max_items).unwrap_or(usize::MAX);
                let typed = Typed::<V> {
                    cache: weigh::cache(
                        items,
                        weigh::capacity(self.max_bytes, self.max_items, self.unit),
                        ByWeight,
                        Evictions,
                    ),
                    unit: self.unit,
                    decode: OnceLock::new(),
                    misses: (0..MISSES).map(|_| AtomicU64::new(0)).collect(),
                    evictions: Arc::clone(&self.evictions),
                    expirations: Arc::clone(&self.expirations),
                    clock: Arc::clone(&self.clock),
                };
                (id, Box::new(typed))
            });
            if *slot_id == id {
                let cache: &dyn Any = cache.as_ref();
                return cache.downcast_ref::<Typed<V>>();
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
            // Only the value found expired: one written since carries its own expiry (a value
            // with the same expiry has expired as well).
            let again = Probe::new(key);
            let dropped = cache.remove_if(&again, |slot| {
                slot.is_some() && again.expires_at_ms() == expires_at_ms
            });
            if dropped.is_some() {
                self.expirations.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
        slot
    }

    /// Keeps `value` for `key` until `expires_at_ms` (Unix ms; 0 = never). `size`: the bytes it
    /// was decoded from, its weight against the bound in bytes (see [`new`](Self::new)). Call
    /// only under the backfill guard (see the module docs).
    pub fn insert<V: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        value: V,
        expires_at_ms: u64,
        size: usize,
    ) {
        if let Some(typed) = self.typed_or_new::<V>() {
            typed.put(key, value, expires_at_ms, size);
        }
    }

    /// A mark to take before reading the value to keep; see
    /// [`insert_unless_cleared`](Self::insert_unless_cleared).
    #[must_use]
    pub(crate) fn clear_mark(&self) -> u64 {
        let begun = self.clears.load(Ordering::SeqCst);
        if self.cleared.load(Ordering::SeqCst) != begun {
            // Taken while a clear runs: its caches may be emptied already, so nothing put
            // under this mark may stay.
            return RUNNING_CLEAR;
        }
        begun
    }

    /// [`insert`](Self::insert), unless a [`clear`](Self::clear) began since `mark` was taken:
    /// a value read before a clear (entries marked suspect, say) must not outlive it, nor be
    /// readable for a moment after it.
    /// `decoder` is called once per value type, for the first value kept: it is how later
    /// writes of the type's keys refresh them (see `end_change`). Whether
    /// the value was kept: not if a clear began, nor if it is too heavy for the tier.
    pub(crate) fn insert_unless_cleared<V: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        value: V,
        expires_at_ms: u64,
        size: usize,
        mark: u64,
        decoder: impl FnOnce() -> Decoder<V>,
    ) -> bool {
        // A type past the last slot is not kept (and not counted as kept).
        let Some(typed) = self.typed_or_new::<V>() else {
            return false;
        };
        typed.decode.get_or_init(decoder);
        // No clear begins between the check and the put, nor while a reader could see it.
        let _no_clear = self.clearing.read();
        if !self.no_clear_since(mark) {
            return false;
        }
        typed.put(key, value, expires_at_ms, size)
    }

    /// Notes that a typed read of `key` as `V` found no value in any level (the cache of `V`
    /// is made if need be, with `decoder` as for
    /// [`insert_unless_cleared`](Self::insert_unless_cleared)), so that the write that usually
    /// follows such a miss (a loader's, or the caller's own `set`) leaves its value here, as a
    /// cache filled on misses would have it (see `end_change`). Kept apart
    /// from the cache: keys read and never written (existence checks) take no room there.
    pub(crate) fn note_miss<V: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        decoder: impl FnOnce() -> Decoder<V>,
    ) {
        if let Some(typed) = self.typed_or_new::<V>() {
            typed.decode.get_or_init(decoder);
            let hash = self.changes.hash(key);
            note_miss_of(&typed.misses, hash);
        }
    }

    fn each(&self, mut f: impl FnMut(usize, &dyn Erased)) {
        for (i, slot) in self.types.iter().enumerate() {
            match slot.get() {
                Some((_, cache)) => f(i, cache.as_ref()),
                None => return,
            }
        }
    }

    /// Drops the value of `key`, whatever its type: a read of it misses from now on. The key
    /// keeps its place in the cache until evicted (its slot holds no value).
    pub fn remove(&self, key: &str) {
        self.each(|_, cache| {
            self.count_if_expired(cache.forget(key));
        });
    }

    /// Counts a value a change dropped as expired if it was: a change that drops a value past
    /// its expiry removes what a read would have found expired, and it is counted as a read
    /// would count it (the memory L1 counts an expired entry a delete takes alike). Uncounted,
    /// it was in no count: not evicted, not expired, not found.
    fn count_if_expired(&self, forgot: Forgot) {
        if let Forgot::Value(expires_at_ms) = forgot {
            if expires_at_ms != 0 && self.clock.reached(expires_at_ms) {
                self.expirations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// To call before changing `key` in the level below: drops its value (as
    /// [`remove`](Self::remove)) and notes which types held it. The change ends with
    /// [`end_change`](Self::end_change).
    pub(crate) fn begin_change(&self, key: &str) -> Change<'_> {
        let hash = self.changes.hash(key);
        self.begin_in(key, hash, self.changes.begin(hash).map(Arc::new), false)
    }

    /// [`begin_change`](Self::begin_change) for each key of one batch, the level below changing
    /// them all in one call.
    ///
    /// With `fill`, the batch is a fill (values copied in from L2): a type that
    /// holds a value of the key gets the value filled back, as after a write, but a type that
    /// holds only the key's place (its value dropped by a change, see [`Slot`]) or nothing
    /// gets it only if a typed read of it lately noted a miss of the key (see
    /// [`note_miss`](Self::note_miss)). A batch read notes the L2 hits its fill copies in after
    /// it returned; a single read, which missed the tier, keeps the value it decoded itself
    /// once its fill is in, and a fill that put the value first had it decoded twice on the
    /// reader's thread (and kept twice). A value another read or fill put meanwhile is
    /// refreshed rather than dropped, so that two batch reads of the same keys, filled one after
    /// the other, leave them in the tier.
    /// The keys of the
    /// batch that fall in one stripe share one change of it: begun one by one, each counted the
    /// others as overlapping it, and a batch fill of 20 keys left two of them out of the tier
    /// about one time in six (100 keys: about ten). Another change of a key of the stripe
    /// still overlaps the whole batch there.
    pub(crate) fn begin_changes<'k>(
        &self,
        keys: impl Iterator<Item = &'k str>,
        fill: bool,
    ) -> Vec<Change<'_>> {
        let mut begun: Vec<(usize, Arc<StripeChange<'_>>)> = Vec::new();
        keys.map(|key| {
            let hash = self.changes.hash(key);
            let index = self.changes.stripe_of(hash);
            let stripe = match begun.iter().find(|(i, _)| *i == index) {
                Some((_, stripe)) => Some(Arc::clone(stripe)),
                None => self.changes.begin(hash).map(|stripe| {
                    let stripe = Arc::new(stripe);
                    begun.push((index, Arc::clone(&stripe)));
                    stripe
                }),
            };
            self.begin_in(key, hash, stripe, fill)
        })
        .collect()
    }

    /// A change of `key` (of `hash`) under `stripe`'s change.
    fn begin_in<'a>(
        &'a self,
        key: &str,
        hash: u64,
        stripe: Option<Arc<StripeChange<'a>>>,
        fill: bool,
    ) -> Change<'a> {
        let mark = self.clear_mark();
        let (mut held, mut missed, mut had_value) = (0u8, 0u8, false);
        self.each(|i, cache| match cache.forget(key) {
            Forgot::Value(expires_at_ms) => {
                held |= 1 << i;
                let live = expires_at_ms == 0 || !self.clock.reached(expires_at_ms);
                had_value |= live;
                if !live {
                    self.expirations.fetch_add(1, Ordering::Relaxed);
                }
            }
            // A fill refreshes a place without a value only if a read of its type asked.
            Forgot::Place => {
                if !fill || cache.take_miss(hash) {
                    held |= 1 << i;
                }
            }
            Forgot::Nothing => {
                if cache.take_miss(hash) {
                    missed |= 1 << i;
                }
            }
        });
        let began_ms = if held | missed == 0 {
            0
        } else {
            self.clock.now_ms()
        };
        Change {
            stripe,
            mark,
            held,
            missed,
            began_ms,
            had_value,
        }
    }

    /// To call once the change `change` of `key` in the level below is done. After a delete,
    /// a failed write, or a write of a key the tier did not hold (`written: None` or nothing
    /// held), drops the key again, in case a read kept the older value meanwhile. After a write
    /// of a key the tier held (or that a read of a type lately missed, see
    /// [`note_miss`](Self::note_miss)), puts the written value, decoded, in the types that held
    /// it (or missed it), unless another change of the key or a clear overlapped this one.
    pub(crate) fn end_change(&self, key: &str, change: Change<'_>, written: Option<Written<'_>>) {
        let written = written.filter(|_| change.wants_value());
        // A put that a clear begun since the change would undo is not made, nor one that
        // another change of the key overlapped: no read sees it (as in
        // `insert_unless_cleared`). Neither can begin between the check and the put.
        let _no_clear = written.map(|_| self.clearing.read());
        let written = written.filter(|_| self.no_clear_since(change.mark));
        let put = written.and_then(|w| {
            let stripe = change.stripe.as_ref()?;
            stripe.unless_overlapped(|| {
                let mut put = 0u64;
                self.each(|i, cache| {
                    if (change.held | change.missed) & (1 << i) != 0 {
                        let expires_at_ms = clock::expiry_ms(change.began_ms, w.ttl);
                        let missed = change.missed & (1 << i) != 0;
                        put += u64::from(cache.refresh(key, w.bytes, expires_at_ms, missed));
                    } else {
                        self.count_if_expired(cache.forget(key));
                    }
                });
                put
            })
        });
        match put {
            Some(put) => {
                self.written.fetch_add(put, Ordering::Relaxed);
            }
            None => self.remove(key),
        }
    }

    /// Values evicted for room and values found expired (and dropped) by a read, a change of
    /// their key or an eviction, all types, since the tier was made. Places without a value are not counted.
    #[must_use]
    pub fn counters(&self) -> StorageCounters {
        StorageCounters {
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            corrupt_reads: 0,
            ..StorageCounters::default()
        }
    }

    /// Values that writes put in the tier (see `end_change`), since it was
    /// made; reads' inserts are counted by their callers.
    #[must_use]
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// The keys starting with `prefix` that hold a value here that has not expired, in any
    /// type (a key may be listed once per type). The level below may have dropped some of them
    /// since: the tier keeps what it decoded until its own eviction, so a prefix invalidation
    /// must ask it too. An expired value is left out, as the level below leaves out its expired
    /// entries: no read answers it, and a prefix invalidation counts the keys it lists as
    /// dropped (it counted a key that had expired in both tiers).
    #[must_use]
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        self.each(|_, cache| cache.keys_with_prefix(prefix, self.clock.as_ref(), &mut keys));
        keys
    }

    /// Whether no [`clear`](Self::clear) began since `mark` was taken, nor was running then
    /// (see [`clear_mark`](Self::clear_mark)): a value put after a clear emptied the caches
    /// would outlive it.
    fn no_clear_since(&self, mark: u64) -> bool {
        mark != RUNNING_CLEAR && self.clears.load(Ordering::SeqCst) == mark
    }

    /// Drops every key.
    pub fn clear(&self) {
        let _no_put = self.clearing.write();
        self.clears.fetch_add(1, Ordering::SeqCst);
        self.each(|_, cache| cache.clear());
        self.cleared.fetch_add(1, Ordering::SeqCst);
    }

    /// What the tier's entries count against its bounds in bytes, all types (see
    /// [`new`](Self::new)): the bytes each value was decoded from, its key and about 64 bytes,
    /// and at least the bound in bytes shared out over the bound in values. An estimate of its
    /// RAM, and how close each type is to `max_bytes`.
    #[must_use]
    pub fn weight(&self) -> u64 {
        let mut total = 0u64;
        self.each(|_, cache| total = total.saturating_add(cache.weight()));
        total
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

    /// The bound in values, per value type.
    #[must_use]
    pub fn max_items(&self) -> u64 {
        self.max_items
    }

    /// The bound in bytes, per value type (see [`new`](Self::new)).
    #[must_use]
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// The level below asks, before it drops a key, whether the key is held here: a key is here
/// because it was read lately, and the reads served here never reach the level below.
impl TierAbove for HotTier {
    fn holds(&self, key: &str) -> bool {
        let mut held = false;
        self.each(|_, cache| held = held || cache.holds(key));
        held
    }
}
