//! The traits cache levels implement: [`Storage`], the core every level has, and two
//! extensions, [`LocalStorage`] for what only a level in this process can do and
//! [`DistributedStorage`] for the async forms a level on the network must provide.
//!
//! # Why three traits
//! One trait with defaults for everything let a level compile while doing the wrong thing
//! silently: a level without `set_each` wrote a batch one key at a time, a wrapper that forgot
//! an `*_async` method blocked the executor in the blocking call, and "mark every entry
//! suspect" defaulted to "forget everything". So:
//! - [`Storage`] is the narrow core every level implements in full: reads, writes, deletes,
//!   their batches, size, clear, flush, counters. No method has a default: each level says
//!   what it does, even where that is "nothing to flush".
//! - [`LocalStorage`] (file store, memory store, redb store, the two-tier L1) adds what only a
//!   level in this process can answer: which entries are suspect ([`Freshness`]) and their
//!   confirmation, stale reads for fail-safe, and key listing for prefix invalidation. The
//!   manager's L1 is an `Arc<dyn LocalStorage>`.
//! - [`DistributedStorage`] (Redis, Memcached, and the wrappers in front of them) adds the async
//!   twins, all required, so that no level or wrapper can fall back on a blocking call inside
//!   an executor, and prefix deletion, whose default says "this level cannot list its keys"
//!   (an answer that is true of any level, and that the manager reports rather than hides).
//!   The manager's L2 is an `Arc<dyn DistributedStorage>`.
//!
//! A level that never waits on the network (a memory or file store) can serve as an L2 in
//! tests, benches or a single-host setup through [`InProcess`], an explicit adapter whose async
//! methods run the blocking call inline: the choice is visible where the level is wired in,
//! instead of being a default every level inherits.
//!
//! The split follows the manager's use of its levels: it calls the local-only methods on L1
//! only, and the async ones on L2 only (L1 calls are an mmap read or an append to the page
//! cache, cheaper than a hop to a blocking pool). `set_many` stays in the core as its own
//! required method rather than a provided wrapper around `set_each`: the wrapper has to build
//! the per-item TTL list, and on the file store that measured 4-15% slower per key for batches
//! of 1 to 16 (equal within noise at 256).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, PartialBatch, Result, Served};
/// The key rules live in `keys` (a bottom module); every level reaches them from here too.
pub(crate) use crate::keys::{check_key, check_write};

/// A boxed, sendable future: the return type of the trait's async methods (object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A value read from a level (a bottom module, so that errors can carry entries too).
pub use crate::entry::Entry;

/// Whether a local entry can be trusted without asking L2.
///
/// An entry is *suspect* when it may have been changed elsewhere without this process hearing of
/// it: it was restored from disk at start-up, or written before the invalidation stream was lost.
/// The manager revalidates suspect entries against L2 when L2 is reachable and serves them as
/// they are when it is not (offline mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Freshness {
    /// Written (or confirmed) since the last loss of certainty.
    Trusted,
    /// May be stale; revalidate before trusting it.
    Suspect,
}

/// A local level's count of losses of certainty, read with
/// [`LocalStorage::suspect_epoch`] before an entry is checked against L2 and handed to
/// [`LocalStorage::confirm`], which refuses to vouch for the entry if a
/// [`mark_all_suspect`](LocalStorage::mark_all_suspect) came in between.
///
/// Without it, a check that compared the entry with L2 before a loss of certainty and confirmed
/// after it would make an entry trusted in the new epoch on the strength of an answer older than
/// the loss: the very entries the loss was meant to distrust.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SuspectEpoch(u64);

impl SuspectEpoch {
    /// The epoch numbered `n`, for a level that counts its own (a wrapper hands on its inner
    /// level's epoch as it is).
    pub const fn new(n: u64) -> Self {
        SuspectEpoch(n)
    }

    /// The number the level gave the epoch.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The first epoch number of a level opened now, in its top 32 bits a count of the levels
    /// this process opened: a level reopened (a restart restores its entries suspect) must
    /// refuse an epoch its former self handed out, whose check predates the restart, and a
    /// count starting at the same number each open would take it.
    pub(crate) fn first_of_a_new_level() -> u64 {
        static OPENED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        OPENED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 32
    }
}

/// What [`LocalStorage::confirm`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// The key's entry is trusted until the next loss of certainty (it may have been already).
    Confirmed,
    /// Refused: the level was made suspect after the caller read its epoch (before the confirm,
    /// or while it ran), so the check may predate the loss of certainty. The entry stays
    /// suspect; check it again under a new epoch.
    EpochMoved,
    /// The level holds no entry of the key: nothing was confirmed.
    Missing,
}

/// How much a level holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageSize {
    /// Entries the level holds, read without visiting them. An expired entry reads as a miss
    /// at once, but is counted until the level removes it: the memory store when it is read or
    /// purged, the file store at its sweep, redb at its purge (`RedbStore::count_live` counts
    /// only what a read returns); Redis and Memcached as their servers do.
    pub items: u64,
    /// Bytes of those entries as the level counts them (keys, values and per-entry overhead for
    /// the file store and redb; keys and values for the memory store).
    pub bytes: u64,
}

/// Events a level counted itself since it was opened (for the manager's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageCounters {
    /// Live entries dropped to respect the level's size bound (an expired one pushed out counts
    /// in `expirations`).
    pub evictions: u64,
    /// Entries removed because their TTL passed, an expired value a write or delete of its key
    /// dropped, or an eviction pushed out, included.
    pub expirations: u64,
    /// Reads that found a record damaged (its bytes do not match their checksum) and answered
    /// a miss, so that a caller can tell lost data from an absent key; the file store counts
    /// its deletes that found the key's record damaged here too (they removed no value).
    /// Levels that keep no checksummed records report zero.
    pub corrupt_reads: u64,
    /// Keys an L2 deleted because a write of theirs that timed out landed late, possibly after
    /// a newer one (Redis and Memcached; see `RedisStore::writes_in_doubt`): a miss instead of an
    /// older value.
    #[serde(default)]
    pub late_writes_deleted: u64,
    /// Not an event but the current count: keys whose write timed out and may still land late,
    /// or whose check after that has not been answered (Redis and Memcached).
    #[serde(default)]
    pub writes_in_doubt: u64,
}

/// A cache level: bytes in, bytes out, keyed by string: the core every level implements.
///
/// What only an L1 can answer (suspect entries, stale copies, key listing) is in
/// [`LocalStorage`]; the async forms an L2 must provide are in [`DistributedStorage`]. No method
/// of the three traits has a default, so no level can inherit an answer that is wrong for it (a
/// batch sent one key at a time, a blocking call inside an executor, "mark suspect" meaning
/// "forget everything"). An in-process level becomes an L2 through [`InProcess`].
///
/// The trait is object safe, so the level can be picked from configuration at run time.
/// Implementations know nothing of other levels; multi-level policy lives only in the manager.
///
/// Contract for every implementation:
/// - `get` never returns an expired entry or bytes other than the ones last `set` for the key.
/// - `set` with `Some(ttl)` requires `ttl > 0` ([`Error::ZeroTtl`](crate::Error::ZeroTtl)
///   otherwise); `None` means the level's default (which may be "never").
/// - A failed call changes nothing that a later successful `get` could observe as garbage.
///
/// A level that cannot batch writes its batch loop itself, where it can be seen.
pub trait Storage: Send + Sync + 'static {
    /// A short name for logs and stats ("file", "memory", "redis", ...).
    fn name(&self) -> &str;

    /// Reads a key. A miss is `Ok(None)`.
    fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Writes a key, replacing any previous value.
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Deletes a key; `true` if a live entry was removed.
    fn delete(&self, key: &str) -> Result<bool>;

    /// Reads several keys; the result has one slot per key, in order.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>>;

    /// Writes several keys with the same TTL.
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()>;

    /// Writes several keys, each with its own TTL: a batched backfill from L2 (each entry keeps
    /// its own remaining TTL) or a write-behind flush.
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()>;

    /// Deletes several keys; returns how many live entries were removed.
    ///
    /// A level that deletes key by key and fails after some keys are gone returns
    /// [`Error::PartialBatch`](crate::Error::PartialBatch): `failed` lists the keys it did not
    /// delete (the failing one and those after it), `served` is
    /// [`Served::Removed`](crate::Served::Removed) with the live entries removed before,
    /// and `cause` is the failure. A failure before any key was deleted is returned as it is.
    fn delete_many(&self, keys: &[&str]) -> Result<u64>;

    /// Refuses, before anything is written anywhere, a value this level could never store (too
    /// large for memcached's item limit, say), so that a write that does not wait for this
    /// level (write-behind) still reports bad input to its caller. `Ok(())` for a level that
    /// takes any value.
    fn check_value(&self, key: &str, value_len: usize) -> Result<()>;

    /// How much the level holds now.
    fn size(&self) -> Result<StorageSize>;

    /// Removes every entry.
    fn clear(&self) -> Result<()>;

    /// Makes every completed write durable, where the level has such a notion (`Ok(())` where
    /// it has none).
    fn flush(&self) -> Result<()>;

    /// Evictions and expirations the level has counted; zeros where it does not track them.
    /// Cheap: the manager calls it when stats are read.
    fn counters(&self) -> StorageCounters;
}

/// What only a level in this process can do: the manager's L1 (file store, memory store, redb
/// store, the two-tier level). Every method is required but
/// [`watch_tier_above`](LocalStorage::watch_tier_above), which a level without an eviction policy
/// has no use for, and [`holds_many`](LocalStorage::holds_many), which by default reads the
/// values.
pub trait LocalStorage: Storage {
    /// Reads a key and says whether the entry is [`Freshness::Suspect`]. A level that keeps
    /// nothing across a loss of certainty reports every entry as trusted.
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>>;

    /// Reads a key as [`get`](Storage::get) does, and also an entry that expired less than the
    /// level's keep-expired window ago (its `expires_at` is then past): the stale copy that
    /// fail-safe reads fall back on. `Ok(None)` for a level that keeps nothing expired.
    fn get_stale(&self, key: &str) -> Result<Option<Entry>>;

    /// Every entry written before this call becomes suspect until confirmed or rewritten. A
    /// level that cannot mark entries forgets them instead ([`clear`](Storage::clear)), which
    /// is always safe for a cache.
    fn mark_all_suspect(&self) -> Result<()>;

    /// The level's current [`SuspectEpoch`]: read it before checking an entry against L2, and
    /// pass it to [`confirm`](LocalStorage::confirm). Every
    /// [`mark_all_suspect`](LocalStorage::mark_all_suspect) moves it, also in a level that
    /// forgets its entries instead: the manager reads it before an L2 read and again when it
    /// writes the value read into the level, and leaves the value out if it moved, since a
    /// value read before a loss of certainty must not be trusted after it.
    fn suspect_epoch(&self) -> SuspectEpoch;

    /// Marks the current entry of `key` as confirmed fresh (revalidated against L2), unless
    /// [`mark_all_suspect`](LocalStorage::mark_all_suspect) ran since `checked_at` was read
    /// ([`Confirmation::EpochMoved`]: the entry stays suspect). A level may answer
    /// `EpochMoved` too when a mark runs while the confirm does (the file store takes its stamp
    /// back then), so a caller treats it as "not confirmed", whenever the mark came.
    ///
    /// `checked_at` must come from [`suspect_epoch`](LocalStorage::suspect_epoch), read before
    /// the L2 answer the confirm rests on was asked for. A confirm vouches for the entry in
    /// `checked_at`'s epoch only, so a `mark_all_suspect` racing it leaves the entry suspect.
    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation>;

    /// The keys that start with `prefix`, for levels that can list them cheaply (prefix
    /// invalidation then drops just those); `None` means the level cannot, and the caller
    /// clears it instead.
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>>;

    /// Writes values copied in after a miss (backfills from L2), each with its own TTL, except
    /// those the level's admission policy refuses; returns how many it wrote. A fill is an
    /// optimisation, so leaving one out is always correct: the next read of the key misses and
    /// asks L2 again. A user's write never goes through here. A level without an admission
    /// policy writes them all, as [`set_each`](Storage::set_each) does.
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize>;

    /// Gives the level the tier in front of it (the memory tier), so that its eviction can ask
    /// whether a key it is about to drop is held there. The reads that tier serves never reach
    /// this level: without asking, the keys read most look unread to its policy and are the
    /// first it evicts, and a restart, which empties the memory tier, finds them gone. A level
    /// without an eviction policy ignores it (the default).
    fn watch_tier_above(&self, _above: Arc<dyn TierAbove>) {}

    /// Whether the level holds a value of each key now that [`get`](Storage::get) would
    /// answer, for counting rather than serving: the two-tier level's batch delete asks it of
    /// the keys whose values only the memory tier may still hold. The default reads the values
    /// ([`get_many`](Storage::get_many)); a level that can tell without reading them, and
    /// without counting a read in its eviction policy (the file store, from its index), should.
    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        Ok(self.get_many(keys)?.iter().map(Option::is_some).collect())
    }
}

/// A tier in front of a local level, serving some of its keys without the level seeing the
/// reads: the memory tier in front of the file store (see
/// [`LocalStorage::watch_tier_above`]).
pub trait TierAbove: Send + Sync + std::fmt::Debug {
    /// Whether the tier holds `key` now. Called by the level's eviction, under its writer lock:
    /// it must be cheap and must not call back into the level.
    fn holds(&self, key: &str) -> bool;
}

/// Told each key (as the caller names it) that an L2 deleted because a write of it that timed
/// out landed late (see [`DistributedStorage::on_late_write_deleted`]). Called on the level's
/// I/O thread: it must not block.
pub type LateWriteHook = Arc<dyn Fn(&str) + Send + Sync>;

/// The async forms of the core, for a level on the network: the manager's L2 (Redis,
/// Memcached, and the breaker and background-connection wrappers in front of them). Every
/// call is required and must not block the executor (only the notice
/// [`on_late_write_deleted`](Self::on_late_write_deleted) and prefix deletion
/// ([`delete_prefix`](Self::delete_prefix)) have defaults); a level that never waits can use
/// [`InProcess`] instead of writing these.
pub trait DistributedStorage: Storage {
    /// Deletes every key that starts with `prefix` (a cache key's prefix, as the other calls
    /// name keys: a level that stores keys under a namespace of its own adds it here too);
    /// returns how many live entries it removed, or `Ok(None)` if this level cannot list its
    /// keys (the default).
    ///
    /// [`CacheManager::invalidate_prefix`](crate::CacheManager::invalidate_prefix) calls it on an
    /// L2 given to the builder; a Memcached L2 built from `[distributed]` is known to keep its
    /// keys and is not asked; a Redis or Redis Cluster L2 that
    /// `[distributed]` describes is walked by the manager itself. `Ok(None)` makes that call
    /// fail with [`Error::PrefixKeptInL2`](crate::Error::PrefixKeptInL2) once it has dropped L1
    /// and told the other instances: the level still serves the values under the prefix, and
    /// the next read would bring one back into L1. A level that can find its keys by prefix
    /// implements this and [`delete_prefix_async`](Self::delete_prefix_async) (which does not
    /// default to the blocking call); one that cannot keeps the default, and never answers
    /// `Some(0)`, which would be the silent `Ok` this answer exists to avoid.
    ///
    /// The manager drops L1's keys under the prefix before this call and again after it, so a
    /// set of this manager that ran between the two ends in both levels or in neither; keys
    /// written to the level during the call by others may stay, as after any invalidation that
    /// raced a write. A level that deletes part of the prefix and then fails returns the error:
    /// the manager reports it, and a retry deletes the rest. One whose deletes may still land
    /// after it gave up returns [`Error::Timeout`](crate::Error::Timeout): the manager then
    /// keeps reads out of L1 for four `distributed.timeout_ms` and drops L1 once more at their
    /// end. A wrapper passes the call on.
    fn delete_prefix(&self, _prefix: &str) -> Result<Option<u64>> {
        Ok(None)
    }

    /// Async [`delete_prefix`](Self::delete_prefix), with the same default (`Ok(None)`: this
    /// level cannot list its keys), not the blocking call: a level implements both.
    fn delete_prefix_async<'a>(&'a self, _prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(std::future::ready(Ok(None)))
    }

    /// Calls `hook` with each key the level deletes because a write of it that timed out
    /// landed late, possibly after a newer one (the writes in doubt of the Redis and Memcached levels). Another
    /// instance may have read the older value into its L1 before the deletion: the manager
    /// publishes an invalidation of the key. A later call replaces the hook. A level that
    /// corrects nothing ignores it (the default); a wrapper passes it on.
    fn on_late_write_deleted(&self, _hook: LateWriteHook) {}

    /// Async [`get`](Storage::get).
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>>;

    /// Async [`set`](Storage::set).
    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Async [`delete`](Storage::delete).
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>>;

    /// Async [`get_many`](Storage::get_many).
    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>>;

    /// Async [`set_many`](Storage::set_many).
    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Async [`set_each`](Storage::set_each).
    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>>;

    /// Async [`delete_many`](Storage::delete_many).
    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>>;

    /// Async [`size`](Storage::size) (for stats read from async code).
    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>>;
}

/// An in-process level used as an L2: its async methods run the blocking call inline.
///
/// Only right for a level that never waits on the network (a [`MemoryStore`](crate::MemoryStore),
/// a [`FileStore`](crate::FileStore)): tests and benches that need a second level without a
/// server, or a second process-local level. A level that may block for long must implement
/// [`DistributedStorage`] itself.
///
/// ```
/// use std::sync::Arc;
/// use uno_cache::{CacheManager, InProcess, MemoryStore};
///
/// let l2 = Arc::new(MemoryStore::new(1000)?);
/// let cache = CacheManager::builder()
///     .local(Arc::new(MemoryStore::new(100)?))
///     .distributed(Arc::new(InProcess::shared(Arc::clone(&l2))))
///     .build()?;
/// cache.set("k", &1u32, None)?;
/// assert!(uno_cache::Storage::get(&*l2, "k")?.is_some());
/// # Ok::<(), uno_cache::Error>(())
/// ```
pub struct InProcess<S: ?Sized> {
    level: Arc<S>,
    /// How the level lists its keys under a prefix, for
    /// [`delete_prefix`](DistributedStorage::delete_prefix); `None`: it cannot (see
    /// [`listing`](InProcess::listing)).
    keys: Option<KeysWithPrefix<S>>,
}

/// A level's [`LocalStorage::keys_with_prefix`], kept by an [`InProcess`] made by
/// [`InProcess::listing`] (a plain [`Storage`] has no way to list its keys).
type KeysWithPrefix<S> = fn(&S, &str) -> Result<Option<Vec<String>>>;

impl<S: Storage> InProcess<S> {
    /// Wraps `level`. It cannot list its keys here: a prefix invalidation reports them kept in
    /// it ([`Error::PrefixKeptInL2`]); wrap a level that lists its keys with
    /// [`listing`](InProcess::listing) instead.
    pub fn new(level: S) -> Self {
        InProcess {
            level: Arc::new(level),
            keys: None,
        }
    }
}

impl<S: Storage + ?Sized> InProcess<S> {
    /// Wraps a level shared with other users (a test that reads it directly, say). As with
    /// [`new`](InProcess::new), its keys cannot be listed here.
    pub fn shared(level: Arc<S>) -> Self {
        InProcess { level, keys: None }
    }

    /// The wrapped level.
    pub fn level(&self) -> &Arc<S> {
        &self.level
    }
}

impl<S: LocalStorage + ?Sized> InProcess<S> {
    /// Wraps a local level, shared with other users as with [`shared`](InProcess::shared), so
    /// that a prefix invalidation deletes its keys under the prefix
    /// ([`DistributedStorage::delete_prefix`]) as it does L1's: the keys listed
    /// ([`LocalStorage::keys_with_prefix`]: a [`FileStore`](crate::FileStore)), then deleted in
    /// one batch, or, in a level that cannot list them (a [`MemoryStore`](crate::MemoryStore)),
    /// every entry cleared, a superset (counted as the entries it held). A key written between
    /// the listing and the delete stays, as after any invalidation that raced a write.
    pub fn listing(level: Arc<S>) -> Self {
        InProcess {
            level,
            keys: Some(|level, prefix| level.keys_with_prefix(prefix)),
        }
    }
}

impl<S: Storage + ?Sized> InProcess<S> {
    /// [`DistributedStorage::delete_prefix`], inline: `None` unless made by
    /// [`listing`](InProcess::listing).
    fn delete_listed(&self, prefix: &str) -> Result<Option<u64>> {
        let Some(list) = self.keys else {
            return Ok(None);
        };
        match list(&self.level, prefix)? {
            Some(keys) => {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.level.delete_many(&keys).map(Some)
            }
            None => {
                let held = self.level.size()?.items;
                self.level.clear().map(|()| Some(held))
            }
        }
    }
}

impl<S: Storage + ?Sized> std::fmt::Debug for InProcess<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("level", &self.level.name())
            .finish()
    }
}

impl<S: Storage + ?Sized> Storage for InProcess<S> {
    fn name(&self) -> &str {
        self.level.name()
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.level.get(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.level.set(key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.level.delete(key)
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.level.get_many(keys)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.level.set_many(items, ttl)
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.level.set_each(items)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.level.delete_many(keys)
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.level.check_value(key, value_len)
    }

    fn size(&self) -> Result<StorageSize> {
        self.level.size()
    }

    fn clear(&self) -> Result<()> {
        self.level.clear()
    }

    fn flush(&self) -> Result<()> {
        self.level.flush()
    }

    fn counters(&self) -> StorageCounters {
        self.level.counters()
    }
}

/// Inline: the level never waits on the network (see the type's docs).
impl<S: Storage + ?Sized> DistributedStorage for InProcess<S> {
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.delete_listed(prefix)
    }

    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(std::future::ready(self.delete_listed(prefix)))
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(std::future::ready(self.level.get(key)))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.level.set(key, value, ttl)))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(std::future::ready(self.level.delete(key)))
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        Box::pin(std::future::ready(self.level.get_many(keys)))
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.level.set_many(items, ttl)))
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.level.set_each(items)))
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(std::future::ready(self.level.delete_many(keys)))
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        Box::pin(std::future::ready(self.level.size()))
    }
}

/// Reads keys one at a time: `get_many` for a level with no batched read.
pub(crate) fn get_each<S: Storage + ?Sized>(level: &S, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
    keys.iter().map(|key| level.get(key)).collect()
}

/// Deletes keys one at a time: `delete_many` for a level with no batched delete, called `name`
/// in its errors. A failure after the first key is a partial batch: the keys before it are
/// deleted, and an invalidation counts them (see [`Storage::delete_many`]).
pub(crate) fn delete_each<S: Storage + ?Sized>(level: &S, name: &'static str, keys: &[&str]) -> Result<u64> {
    let mut removed = 0;
    for (i, key) in keys.iter().enumerate() {
        match level.delete(key) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) if i == 0 => return Err(e),
            Err(e) => {
                return Err(Error::PartialBatch(Box::new(PartialBatch::new(
                    name,
                    "delete_many",
                    keys.len(),
                    (i..keys.len()).collect(),
                    Vec::new(),
                    e,
                    Served::Removed(removed),
                ))))
            }
        }
    }
    Ok(removed)
}

/// The wrapper the integration tests build their faulty levels on, shared with the unit tests.
#[cfg(test)]
#[path = "../tests/support/delegate.rs"]
pub(crate) mod delegate;
