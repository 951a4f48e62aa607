//! [`CacheManager`]: the multi-level cache an application talks to.
//!
//! | module   | job                                                                  |
//! |----------|----------------------------------------------------------------------|
//! | `builder` | [`CacheManagerBuilder`]: assembles a manager and starts its threads  |
//! | `wiring` | the levels, backplane and tag store a [`CacheConfig`] describes        |
//! | `blocking` | the blocking API (typed, raw, batches, `get_or_set_with`)          |
//! | `nonblocking` | the async API: the same shells, awaiting L2                     |
//! | `maintenance` | L1-only invalidation, replay, prefixes, tags, events, `flush`   |
//! | `offload` | blocking maintenance work awaited by the async API on a thread of its own |
//! | `apart`  | work run apart from its caller, which may outlive it (a load its caller gave up on), waited for at shutdown |
//! | `typed` | typed reads through the memory tier of decoded values                |
//! | `monitor` | [`Monitor`]: statistics from the counters and the levels' sizes     |
//! | `l2_size` | the last reading of L2's size, reused for a while, taken by one caller at a time |
//! | `policy` | the read, TTL, backfill and fallback rules, and the state they share |
//! | `batch_read` | batch reads: one L1 call, one L2 call for the rest, backfills queued |
//! | `writes` | the write and delete rules: L1 step, then L2 now, queued, or replayed |
//! | `requeue` | the op an async write or delete owes L2 when its caller drops it mid-way, handed back to a queue |
//! | `guard`  | per-key ordering of writes across both levels; keeps a backfill from landing after a racing write or delete |
//! | `behind` | write-behind: the queue of L2 writes and the thread that sends them   |
//! | `fill`   | backfills of batch reads, written by a background thread             |
//! | `load`   | `get_or_load` and `get_with_state`: loads with timeouts, answers with their freshness (async in `load_async`; a load apart ends in `load_end`) |
//! | `loader` | stampede protection: one loader per key across threads and tasks    |
//! | `reentry` | a loader's loading call for its own key (or one it loads inside), refused |
//! | `load_timer` | the one thread that wakes async waiters at their loader timeouts |
//! | `reread` | a loading call's second look at its key, by a read's rules, counted as no read |
//! | `set_with` | the steps of `get_or_set_with`'s leader its sync and async shells share |
//! | `caught` | loads that end without a value: a loader's panic as a failed load, and its callers' errors |
//! | `failsafe` | stale values served when a fresh one cannot be had; the throttle      |
//! | `left_behind` | what failed L1 writes and removals may have left, which no answer given without L2 serves |
//! | `refresh_due` | refresh-ahead's due times, forgotten by every write of their key (in `guard`) |
//! | `reload_keep` | a reload's store L2 did not take puts back the entry it replaced, where the key was taken out |
//! | `global` | the process-wide instance                                            |
//! | `pending` | a suspect L1 entry of a key with a queued replay op, settled by the op |
//! | `replayed_tags` | the taggings a tagged write owes once its replayed value lands |
//! | `late_writes` | keys L2 deleted after a late write, dropped from every L1       |
//! | `prefix` | the rules of a prefix invalidation around L2's scan, for both shells |
//! | `deferred` | an L2 unreachable at start-up, connected in the background        |
//! | `consistency` | replay queue, revalidation of suspect L1 entries                        |
//! | `distrust` | whether every L1 hit is checked against L2 (a lost subscription, a failed drop) |
//! | `backplane` | publishing and receiving invalidations (feature `redis`; a no-op without it) |
//! | `offline` | the background thread that replays the queue                          |
//! | `workers` | owns the background threads; their one shutdown, on the last handle's drop |
//! | `tags`   | tag sets on a shared Redis, and the walk of a Redis L2 for prefix deletion (feature `redis`; without it, tag calls report the missing feature) |
//! | `l2_keys` | where a prefix invalidation deletes L2's keys: a Redis L2 on its own hosts, or the L2 itself (`DistributedStorage::delete_prefix`), which may say it cannot |
//! | `events` | [`InvalidationEvent`]: application events mapped to keys and tags       |
//! | `tag_scripts/` | the Lua scripts of a tag's sorted set (feature `redis`)          |
//!
//! The typed API encodes values with the manager's [`Codec`] (bincode 2 by default; the tag byte
//! is stored with the value). The `_raw` variants store and return bytes untouched.
//!
//! Sync methods call the levels' blocking trait methods and need no runtime; `_async` methods
//! call L2 through the levels' `*_async` methods and L1 directly (a local level does not wait
//! on the network).

mod apart;
#[cfg(feature = "redis")]
mod backplane;
#[cfg(not(feature = "redis"))]
#[path = "backplane_off.rs"]
mod backplane;
mod batch_read;
mod behind;
mod blocking;
mod builder;
mod caught;
mod consistency;
mod deferred;
mod distrust;
mod events;
mod failsafe;
mod fill;
mod global;
mod guard;
mod l2_keys;
mod l2_size;
mod late_writes;
mod left_behind;
mod load;
mod load_timer;
mod loader;
mod maintenance;
mod monitor;
mod nonblocking;
mod offline;
mod offload;
mod pending;
mod policy;
mod prefix;
mod reentry;
mod refresh_due;
mod reload_keep;
mod replayed_tags;
mod requeue;
mod reread;
mod set_with;
#[cfg(feature = "redis")]
mod tags;
#[cfg(not(feature = "redis"))]
#[path = "tags_off.rs"]
mod tags;
mod typed;
mod wiring;
mod workers;
mod writes;

pub use self::builder::CacheManagerBuilder;
pub use self::monitor::{L2Failures, Monitor, L2_SIZE_MAX_AGE};

use std::borrow::Cow;
use std::sync::Arc;

use serde::Serialize;

pub use self::events::InvalidationEvent;
pub use self::failsafe::Fetched;
use self::policy::Shared;
use crate::codec::Codec;
use crate::config::CacheConfig;
use crate::error::Result;
use crate::stats::CacheStats;
use crate::storage::{DistributedStorage, LocalStorage};

/// A multi-level cache: L1 (file, memory, redb or your own level) in front of an optional L2.
///
/// Cloning is cheap and shares the cache.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::{CacheConfig, CacheManager, LocalKind};
///
/// let mut config = CacheConfig::default();
/// config.local.kind = LocalKind::Memory;
/// let cache = CacheManager::new(config)?;
/// cache.set("user:42", &("Ada".to_string(), 36u8), Some(Duration::from_secs(60)))?;
/// let user: Option<(String, u8)> = cache.get("user:42")?;
/// assert_eq!(user, Some(("Ada".to_string(), 36)));
/// assert_eq!(cache.monitor().get_stats().local.hits, 1);
/// # Ok::<(), uno_cache::Error>(())
/// ```
#[derive(Clone)]
pub struct CacheManager {
    shared: Arc<Shared>,
    /// The background threads, dropped with the last handle (after `shared`, which they also
    /// hold): stops and joins them, then sends queued write-behind writes, on the caller's thread.
    /// `None` only in the manager of work apart from its caller (see `apart`), which must not be
    /// the one to run that shutdown.
    _workers: Option<Arc<workers::Workers>>,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("local", &self.shared.l1.name())
            .field("distributed", &self.shared.l2.as_ref().map(|l| l.name()))
            .field("local_ttl", &self.shared.local_ttl)
            .field("distributed_ttl", &self.shared.distributed_ttl)
            .field("fallback_on_error", &self.shared.fallback_on_error)
            .field("codec", &self.shared.codec.name())
            .finish()
    }
}

impl CacheManager {
    /// Builds a manager from a configuration: L1 from `config.local`, L2 from
    /// `config.distributed` when `use_multi_level` and `distributed.enabled` are both true.
    ///
    /// # Errors
    /// As [`CacheManagerBuilder::build`].
    pub fn new(config: CacheConfig) -> Result<CacheManager> {
        CacheManager::builder().config(config).build()
    }

    /// A builder, to plug levels of your own or pick a codec.
    pub fn builder() -> CacheManagerBuilder {
        CacheManagerBuilder {
            config: CacheConfig::default(),
            local: None,
            distributed: None,
            breaker: None,
            codec: None,
            clock: None,
        }
    }

    /// The statistics.
    #[must_use]
    pub fn monitor(&self) -> Monitor<'_> {
        Monitor { manager: self }
    }

    /// Shorthand for `monitor().get_stats()`.
    #[must_use]
    pub fn stats(&self) -> CacheStats {
        self.monitor().get_stats()
    }

    /// The L1 level, to inspect it (sizes, counters, a key's entry) or run its maintenance.
    ///
    /// Writes, deletes and clears made through it bypass the manager: they reach neither L2 nor
    /// other instances, and the manager's per-key ordering and backfill guard do not see them,
    /// so a read through the manager that raced one may put back the value it replaced (in the
    /// memory tier too). Change keys through the manager (`set`, `delete`, `invalidate_local`).
    #[must_use]
    pub fn local(&self) -> &Arc<dyn LocalStorage> {
        &self.shared.l1
    }

    /// The L2 level, if the manager uses one.
    #[must_use]
    pub fn distributed(&self) -> Option<&Arc<dyn DistributedStorage>> {
        self.shared.l2.as_ref()
    }

    /// The codec of the typed API.
    #[must_use]
    pub fn codec(&self) -> Codec {
        self.shared.codec
    }
}

impl CacheManager {
    fn encode_items<K: AsRef<str>, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Vec<(K, Vec<u8>)>> {
        items
            .into_iter()
            .map(|(key, value)| {
                let bytes = self.shared.codec.encode(key.as_ref(), &value)?;
                Ok((key, bytes))
            })
            .collect()
    }
}

fn as_strs(keys: &[impl AsRef<str>]) -> Vec<&str> {
    keys.iter().map(AsRef::as_ref).collect()
}

/// The keys of a batch read, each once, in the order of their first listing: a key listed
/// twice is one read (the answer is a map, with one value per key), so each level is asked for
/// it once and the stats count it once.
fn distinct<'k>(keys: &[&'k str]) -> Vec<&'k str> {
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    keys.iter().copied().filter(|k| seen.insert(*k)).collect()
}

/// The items of a batch write, each key once, with the last value listed for it (what writing
/// them one after another would leave): a key listed twice is one write, so each level is sent
/// it once and the stats count it once. The items as given when no key repeats; else in the
/// order of each key's last listing.
fn last_of_each<'i, 'k, 'v>(items: &'i [(&'k str, &'v [u8])]) -> Cow<'i, [(&'k str, &'v [u8])]> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    if items.iter().all(|(key, _)| seen.insert(*key)) {
        return Cow::Borrowed(items);
    }
    seen.clear();
    let mut kept: Vec<(&str, &[u8])> = items
        .iter()
        .rev()
        .filter(|(key, _)| seen.insert(*key))
        .copied()
        .collect();
    kept.reverse();
    Cow::Owned(kept)
}

/// The keys of a batch write's items, as listed.
fn item_keys<'k>(items: &[(&'k str, &[u8])]) -> Vec<&'k str> {
    items.iter().map(|(k, _)| *k).collect()
}

fn borrow_items<K: AsRef<str>>(items: &[(K, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    items.iter().map(|(k, v)| (k.as_ref(), v.as_slice())).collect()
}
