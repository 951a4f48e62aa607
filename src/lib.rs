//! # uno-cache
//!
//! A persistent-first, embeddable, multi-level cache.
//!
//! L1 is local and comes first: by default a crash-safe file store ([`FileStore`]: append-only
//! segment files read through mmap, a CRC on every record, a size bound, TTLs, hint files for fast
//! start) whose entries survive restarts and crashes. A [`CacheManager`] puts L1 in front of an
//! optional distributed L2 and applies the multi-level rules (read-through with backfill,
//! write-through with per-level TTL caps, fallback when L2 fails, stampede protection).
//!
//! ```
//! use std::time::Duration;
//! use uno_cache::{CacheConfig, CacheManager};
//!
//! let dir = tempfile::tempdir()?;
//! let config = CacheConfig::from_toml_str(&format!(
//!     "[local]\ntype = \"file\"\npath = {:?}\nttl = 300\n",
//!     dir.path()
//! ))?;
//! let cache = CacheManager::new(config)?;
//! let n: u64 = cache.get_or_set_with("answer", Some(Duration::from_secs(60)), || {
//!     Ok::<_, uno_cache::Error>(42)
//! })?;
//! assert_eq!(n, 42);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A file store can also be used on its own:
//!
//! ```
//! use std::time::Duration;
//! use uno_cache::{FileStore, FileStoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(64))?;
//! store.set("user:42", b"{\"name\":\"Ada\"}", Some(Duration::from_secs(300)))?;
//! assert!(store.get("user:42")?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Where to look
//!
//! | to …                         | start at                                                          |
//! |------------------------------|-------------------------------------------------------------------|
//! | configure a cache            | [`CacheConfig`] (TOML: `from_toml_str`, `from_toml_file`), or [`CacheManager::builder`] for levels of your own |
//! | read                         | [`CacheManager::get`], [`get_or_load`](CacheManager::get_or_load) / [`get_or_set_with`](CacheManager::get_or_set_with) (read-through with a loader), [`multi_get`](CacheManager::multi_get), [`get_raw`](CacheManager::get_raw) for bytes; each has an `_async` form |
//! | write                        | [`CacheManager::set`], [`multi_set`](CacheManager::multi_set), [`set_with_tags`](CacheManager::set_with_tags), [`set_raw`](CacheManager::set_raw); [`flush`](CacheManager::flush) to wait for write-behind |
//! | delete or invalidate         | [`CacheManager::delete`], [`multi_delete`](CacheManager::multi_delete), [`invalidate_tag`](CacheManager::invalidate_tag), [`invalidate_prefix`](CacheManager::invalidate_prefix), [`invalidate_event`](CacheManager::invalidate_event) |
//! | use an L1 on its own         | [`FileStore`] (the default, on disk), [`MemoryStore`] (in process), `RedbStore` (feature `redb`); the memory tier in front of a disk L1 is [`local::tiered`] |
//! | use an L2                    | `RedisStore` (feature `redis`), `MemcachedStore` (feature `memcached`), each behind a [`Guarded`] circuit breaker in a manager |
//! | write a level of your own    | the [`Storage`], [`LocalStorage`] and [`DistributedStorage`] traits; [`InProcess`] makes any level an L2 |
//! | keep writes while L2 is down | [`replay::ReplayQueue`] (`[offline]` in the configuration)        |
//! | invalidate other instances   | [`invalidation`]: `Backplane` on Redis pub/sub (`[invalidation]`, feature `redis`) |
//! | watch it                     | [`CacheManager::stats`] ([`CacheStats`]); `CacheStats::publish_metrics` (feature `metrics`) |
//! | handle a failure             | [`Error`]: each message names the key, file, field or host and says what to do; [`Error::is_bad_input`] and [`Error::is_misconfiguration`] sort them |
//!
//! ## Layout
//!
//! | path                 | what                                                               |
//! |----------------------|--------------------------------------------------------------------|
//! | `storage`            | [`Storage`], the core every level implements; [`LocalStorage`] (L1) and [`DistributedStorage`] (L2, async); [`InProcess`] |
//! | `manager/`           | [`CacheManager`]: multi-level rules, stampede guard, write-behind, background backfill, global instance |
//! | `config`             | [`CacheConfig`], serde/TOML configuration with validation           |
//! | `codec`              | [`Codec`]: bincode 2 or JSON, with a tag byte per value             |
//! | `stats`              | [`CacheStats`]: counters, hit rates, latency percentiles            |
//! | `metrics_export`     | [`CacheStats::publish_metrics`]: the stats through the `metrics` facade (feature `metrics`) |
//! | `local/file/`        | [`FileStore`], the persistent L1 (format, recovery, …)              |
//! | `local/memory`       | [`MemoryStore`], the in-process L1 (quick_cache, TTL per entry)     |
//! | `local/redb/`        | `RedbStore`, an L1 in a redb database (feature `redb`)              |
//! | `local/hot`, `local/tiered` | the memory tier of decoded values, and the two-tier L1 it makes with a disk level |
//! | `local/weigh`        | what an entry kept in memory counts against `memory_max_mb`         |
//! | `distributed/`       | L2 levels: `RedisStore` (feature `redis`), `MemcachedStore` (feature `memcached`); breaker |
//! | `replay/`            | [`replay::ReplayQueue`], durable ops to replay to L2               |
//! | `invalidation/`      | cross-process L1 invalidation: messages, handler; `Backplane` on Redis pub/sub (feature `redis`) |
//! | `clock`              | wall-clock time, injectable for tests                              |
//! | `error`              | [`Error`], one enum with context for every failure                 |
//! | `entry`              | [`Entry`], a value read from a level with its expiry               |
//! | `keys`               | key rules ([`MAX_KEY_LEN`], empty keys, zero TTLs) every level shares |
//! | `durability`         | [`Durability`]: when writes reach stable storage                   |
//! | `files`              | [`files`]: the name of every file uno-cache keeps on disk           |
//! | `frame`              | header check and record header shared by segments and the replay log |
//! | `le`                 | little-endian fields of the on-disk formats, read without panicking |
//! | `perms`              | permission bits of what uno-cache creates (private by default)     |
//! | `log_limit`          | at most a line a second of a failure that repeats on every call    |
//! | `level_panics`       | a level's panic as its call's error, so no lock or thread is lost   |
//! | `disk/`              | the I/O layer every write goes through; lock file; write latch     |
//! | `shutdown`           | the one stop signal background threads and tasks listen to          |
//!
//! Modules import each other without cycles (`tests/module_graph.rs` checks it): `entry`, `error`, `keys`,
//! `durability`, `files`, `frame`, `disk`, `log_limit` and `shutdown` are at the bottom, the manager at the top.
//!
//! ## Features
//!
//! The default build is the embedded cache above: file store, memory L1 and tier, manager (sync
//! and async), configuration, codecs; no network stack and no CLI parser. `redb`, `redis`,
//! `memcached`, `tls` (implies `redis`), `metrics` (the stats as metrics of the `metrics` crate)
//! and `cli` (the binary) add the rest; `full` is all of
//! them. A configuration that needs a feature the build lacks is refused with
//! [`Error::FeatureDisabled`] naming it. The README's "Features" table says what each one adds
//! and what it costs in crates.
//!
//! The byte layout of every file is specified in `storage-format.md`; the design the code follows
//! (levels, the read/write/delete rules, ordering, failure handling, threads) in `docs/design.md`.

mod clock;
mod codec;
mod config;
mod disk;
pub mod distributed;
mod durability;
mod entry;
mod error;
pub mod files;
mod frame;
pub mod invalidation;
mod keys;
mod le;
mod level_panics;
pub mod local;
mod log_limit;
mod manager;
#[cfg(feature = "metrics")]
pub mod metrics_export;
mod perms;
pub mod replay;
mod shutdown;
mod stats;
mod storage;

// The test levels of `tests/support/delegate.rs` (`storage::delegate`) name the crate as the
// integration tests do.
#[cfg(test)]
extern crate self as uno_cache;

pub use crate::clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use crate::codec::Codec;
pub use crate::config::{
    CacheConfig, CodecName, ConsistencyConfig, DistributedCacheConfig, DistributedKind, DurabilityMode,
    InvalidationConfig, LoaderConfig, LocalCacheConfig, LocalKind, OfflineConfig, RestartPolicy, WriteMode,
    DEFAULT_DISK_MAX_MB, DEFAULT_LOCAL_PATH, DEFAULT_MEMORY_MAX_ITEMS, DEFAULT_MEMORY_TIER_ITEMS,
    DEFAULT_MEMORY_TIER_MB,
};
pub use crate::distributed::{BreakerState, BreakerStats, CircuitBreaker, Guarded, NodeBreakers, NodeStats};
#[cfg(feature = "memcached")]
pub use crate::distributed::{MemcachedOptions, MemcachedStore};
#[cfg(feature = "redis")]
pub use crate::distributed::{RedisOptions, RedisStore};
pub use crate::durability::Durability;
pub use crate::error::{Error, KeyProblem, PartialBatch, Result, Served};
#[cfg(feature = "redis")]
pub use crate::invalidation::{Backplane, BackplaneOptions};
pub use crate::invalidation::{Invalidation, InvalidationHandler};
pub use crate::keys::MAX_KEY_LEN;
pub use crate::local::file::{
    CompactionReport, FileStore, FileStoreOptions, FileStoreStats, MapReads, RecoveryReport, VerifyReport,
    DEFAULT_MAX_SIZE_MB, FORMAT_VERSION,
};
pub use crate::local::memory::MemoryStore;
#[cfg(feature = "redb")]
pub use crate::local::redb::{RedbOptions, RedbStore, REDB_FILE_NAME};
pub use crate::manager::{
    CacheManager, CacheManagerBuilder, Fetched, InvalidationEvent, L2Failures, Monitor, L2_SIZE_MAX_AGE,
};
pub use crate::perms::DEFAULT_FILE_MODE;
pub use crate::stats::{
    CacheStats, ConsistencyStats, HitRates, LatencyStats, LevelStats, LoaderStats, OverallStats, Sizes,
};
pub use crate::storage::{
    BoxFuture, Confirmation, DistributedStorage, Entry, Freshness, InProcess, LateWriteHook, LocalStorage,
    Storage, StorageCounters, StorageSize, SuspectEpoch, TierAbove,
};

#[doc(hidden)]
/// Decoders exposed for the fuzz targets and format tests; not a stable API.
pub mod __fuzz {
    pub use crate::local::file::format::{
        decode_hint, decode_meta, decode_record, decode_segment_header, scan_segment, Decoded, SegmentHeader,
    };

    /// Memcached's reply reading over a byte slice.
    #[cfg(feature = "memcached")]
    pub mod memcached {
        pub use crate::distributed::memcached_replies::{read_replies, Outcome, COMMANDS, KEYS};
    }

    /// Redis's reply reading over RESP bytes.
    #[cfg(feature = "redis")]
    pub mod redis {
        pub use crate::distributed::redis_replies::{read_reply, Outcome, KEYS, REPLIES};
    }
}

/// The README's examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
