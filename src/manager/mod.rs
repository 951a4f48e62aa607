//! [`CacheManager`]: the multi-level cache an application talks to.
//!
//! | module   | job                                                                  |
//! |----------|----------------------------------------------------------------------|
//! | `policy` | the read, write, delete, TTL, backfill and fallback rules            |
//! | `guard`  | per-key ordering of writes across both levels; keeps a backfill from landing after a racing write or delete |
//! | `behind` | write-behind: the queue of L2 writes and the thread that sends them   |
//! | `fill`   | backfills of batch reads, written by a background thread             |
//! | `loader` | stampede protection: one loader per key across threads and tasks    |
//! | `global` | the process-wide instance                                            |
//! | `deferred` | an L2 unreachable at start-up, connected in the background        |
//! | `consistency` | replay queue, invalidation backplane, revalidation of suspect L1 entries |
//! | `offline` | the background thread that replays the queue                          |
//! | `tags`   | tag sets and L2 prefix deletion on a shared Redis                     |
//! | `events` | [`InvalidationEvent`]: application events mapped to keys and tags       |
//!
//! The typed API encodes values with the manager's [`Codec`] (bincode 2 by default; the tag byte
//! is stored with the value). The `_raw` variants store and return bytes untouched.
//!
//! Sync methods call the levels' blocking trait methods and need no runtime; `_async` methods
//! call L2 through the levels' `*_async` methods and L1 directly (a local level does not wait
//! on the network).

mod background;
mod behind;
mod consistency;
mod deferred;
mod events;
mod fill;
mod global;
mod guard;
mod loader;
mod offline;
mod policy;
mod tags;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::behind::{start_writer, WriteQueue};
use self::consistency::Receiver;
use self::deferred::Deferred;
pub use self::events::InvalidationEvent;
use self::fill::{start_filler, FillQueue};
use self::guard::KeyOrder;
use self::loader::{Flights, Role};
use self::offline::Replayer;
use self::policy::{Plan, Route, Shared};
use self::tags::TagStore;
use crate::clock::{Clock, SystemClock};
use crate::codec::Codec;
use crate::config::{
    CacheConfig, DistributedCacheConfig, DistributedKind, LocalCacheConfig, LocalKind, RestartPolicy,
    WriteMode,
};
use crate::distributed::runtime::IoRuntime;
use crate::distributed::{
    CircuitBreaker, Guarded, MemcachedOptions, MemcachedStore, RedisOptions, RedisStore,
};
use crate::error::{Error, Result};
use crate::invalidation::{Backplane, BackplaneOptions, Invalidation};
use crate::local::file::{FileStore, FileStoreOptions};
use crate::local::memory::MemoryStore;
use crate::local::redb::{RedbOptions, RedbStore, REDB_FILE_NAME};
use crate::replay::{ReplayOptions, ReplayQueue};
use crate::stats::{CacheStats, ConsistencyStats, HitRates, Metrics, Sizes};
use crate::storage::{Storage, StorageSize};

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
    /// Dropped with the last handle: sends queued write-behind writes on the caller's thread
    /// before the drop returns (background threads hold `Shared` too, so its own drop may
    /// come later and elsewhere).
    _last_handle: Arc<LastHandle>,
}

struct LastHandle(std::sync::Weak<Shared>);

impl Drop for LastHandle {
    fn drop(&mut self) {
        if let Some(shared) = self.0.upgrade() {
            shared.drain_behind();
        }
    }
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

/// Builds a [`CacheManager`] from a configuration, with levels or a codec of your own.
///
/// ```
/// use std::sync::Arc;
/// use uno_cache::{CacheConfig, CacheManager, MemoryStore};
/// let l2 = Arc::new(MemoryStore::new(1000)?); // any `Storage` can serve as L2
/// let cache = CacheManager::builder()
///     .config(CacheConfig::default())
///     .local(Arc::new(MemoryStore::new(100)?))
///     .distributed(l2)
///     .build()?;
/// cache.set("k", &1u32, None)?;
/// # Ok::<(), uno_cache::Error>(())
/// ```
#[must_use]
pub struct CacheManagerBuilder {
    config: CacheConfig,
    local: Option<Arc<dyn Storage>>,
    distributed: Option<Arc<dyn Storage>>,
    breaker: Option<Arc<CircuitBreaker>>,
    codec: Option<Codec>,
    clock: Option<Arc<dyn Clock>>,
}

impl CacheManagerBuilder {
    /// The configuration (default: [`CacheConfig::default`]). Its TTLs, `fallback_on_error` and
    /// `use_multi_level` apply to levels given to the builder too.
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses this level as L1 instead of building the one `config.local` describes.
    pub fn local(mut self, level: Arc<dyn Storage>) -> Self {
        self.local = Some(level);
        self
    }

    /// Uses this level as L2 instead of building the one `config.distributed` describes (it is
    /// used even if `distributed.enabled` is false, but not if `use_multi_level` is false).
    pub fn distributed(mut self, level: Arc<dyn Storage>) -> Self {
        self.distributed = Some(level);
        self
    }

    /// The circuit breaker in front of the level given to
    /// [`distributed`](CacheManagerBuilder::distributed) (wrapped in a
    /// [`Guarded`]), so that the stats report its state. A level built from
    /// the configuration gets its breaker from `distributed.breaker_*` without this.
    pub fn breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The codec of the typed API (default: `config.codec`).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = Some(codec);
        self
    }

    /// The clock for TTL arithmetic, also given to the levels the builder creates (default: the
    /// system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the configuration and opens the levels.
    ///
    /// # Errors
    /// [`Error::Config`] naming the bad field, whatever opening L1 reports (for example
    /// [`Error::Locked`]), and, without `fallback_on_error`, the configured L2's connection error
    /// ([`Error::Backend`] or [`Error::Timeout`] naming the host). With `fallback_on_error` an
    /// unreachable L2 does not fail start-up: it is connected in the background.
    pub fn build(self) -> Result<CacheManager> {
        let config = self.config;
        config.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // One I/O thread for the Redis L2, the backplane and tags (if any of them is configured).
        let io = tag_redis(&config)
            .is_some()
            .then(|| IoRuntime::start("redis"))
            .transpose()?;
        let (l1, file_l1, l1_dir) = match self.local {
            Some(level) => (level, None, None),
            None => build_local(&config.local, &clock)?,
        };
        let (l2, breaker) = if !config.use_multi_level {
            (None, None)
        } else if let Some(level) = self.distributed {
            (Some(level), self.breaker)
        } else {
            match build_distributed(&config.distributed, config.fallback_on_error, &clock, io.as_ref())? {
                Some((level, breaker)) => (Some(level), Some(breaker)),
                None => (None, None),
            }
        };
        let replay_dir = config.offline.replay_dir.clone().or(l1_dir);
        let replay = match replay_dir {
            Some(dir) if l2.is_some() && config.offline.replay && config.fallback_on_error => {
                // The queue's files hold keys and values too: the same mode as the file store's.
                let mode = match &file_l1 {
                    Some(file) => file.file_mode(),
                    None => config.local.file_mode.unwrap_or(crate::perms::DEFAULT_FILE_MODE),
                };
                let options = ReplayOptions::default()
                    .file_mode(mode)
                    .max_bytes(config.offline.replay_max_bytes)
                    .max_entries(config.offline.replay_max_entries)
                    .clock(Arc::clone(&clock));
                Some(Arc::new(ReplayQueue::open(&dir, options)?))
            }
            _ => None,
        };
        let policy = config.consistency.restart_policy;
        let l2_present = l2.is_some();
        let tags = match tag_redis(&config) {
            Some((options, l2_prefix_delete)) => Some(TagStore::new(
                options.io_runtime(io.clone()),
                config.distributed.key_prefix.clone(),
                Duration::from_millis(
                    config
                        .distributed
                        .timeout_ms
                        .max(config.invalidation.publish_timeout_ms),
                ),
                l2_prefix_delete && l2.is_some(),
            )?),
            None => None,
        };
        let shared = Arc::new(Shared {
            check_freshness: AtomicBool::new(l2.is_some() && policy != RestartPolicy::Trust),
            distrust_l1: AtomicBool::new(false),
            l1,
            l2,
            breaker,
            l2_size: parking_lot::Mutex::new(None),
            local_ttl: config.local.ttl,
            distributed_ttl: config.distributed.ttl,
            fallback_on_error: config.fallback_on_error,
            codec: self.codec.unwrap_or_else(|| config.codec.codec()),
            clock,
            metrics: Metrics::default(),
            guard: KeyOrder::default(),
            flights: Flights::default(),
            replay,
            replayer: OnceLock::new(),
            replay_lock: parking_lot::Mutex::new(()),
            tags,
            l2_prefix: config.distributed.key_prefix.clone(),
            backplane: OnceLock::new(),
            file_l1,
            restart_policy: policy,
            behind: (config.distributed.write_mode == WriteMode::Behind && l2_present).then(|| {
                Arc::new(WriteQueue::new(
                    config.distributed.write_behind_max_keys,
                    Duration::from_millis(config.distributed.timeout_ms),
                ))
            }),
            behind_writer: OnceLock::new(),
            fills: l2_present.then(|| Arc::new(FillQueue::default())),
            filler: OnceLock::new(),
        });
        if let Some(queue) = &shared.fills {
            let filler = start_filler(Arc::downgrade(&shared), Arc::clone(queue))?;
            let _ = shared.filler.set(filler);
        }
        if let Some(queue) = &shared.behind {
            let writer = start_writer(Arc::downgrade(&shared), Arc::clone(queue))?;
            let _ = shared.behind_writer.set(writer);
        }
        if shared.replay.is_some() {
            let every = Duration::from_millis(config.offline.replay_interval_ms);
            let replayer = Replayer::start(Arc::downgrade(&shared), every)?;
            let _ = shared.replayer.set(replayer);
            shared.nudge_replay();
        }
        if config.invalidation.enabled {
            let options = backplane_options(&config).io_runtime(io.clone());
            let receiver = Arc::new(Receiver {
                shared: Arc::downgrade(&shared),
            });
            let backplane = Backplane::connect(options, receiver)?;
            let _ = shared.backplane.set(backplane);
        }
        let last = Arc::new(LastHandle(Arc::downgrade(&shared)));
        Ok(CacheManager {
            shared,
            _last_handle: last,
        })
    }
}

/// The Redis of the tag sets: the backplane's, or else the Redis L2's; and whether it is the
/// (standalone) L2 itself, where prefixes can be scanned.
fn tag_redis(config: &CacheConfig) -> Option<(RedisOptions, bool)> {
    let d = &config.distributed;
    let redis_l2 = config.use_multi_level && d.enabled && d.kind == DistributedKind::Redis;
    let inv = &config.invalidation;
    if inv.enabled {
        let same_as_l2 = inv.hosts.is_empty();
        Some((backplane_redis(config), same_as_l2 && redis_l2 && !d.cluster))
    } else if redis_l2 {
        Some((backplane_redis(config), !d.cluster))
    } else {
        None
    }
}

/// The backplane's Redis from `[invalidation]` (hosts default to the Redis L2's).
fn backplane_redis(config: &CacheConfig) -> RedisOptions {
    let inv = &config.invalidation;
    let d = &config.distributed;
    let redis = if inv.hosts.is_empty() || !inv.enabled {
        let mut r = RedisOptions::with_hosts(d.hosts.iter().cloned()).cluster(d.cluster);
        if let Some(user) = &d.username {
            r = r.username(user.clone());
        }
        if let Some(password) = &d.password {
            r = r.password(password.clone());
        }
        r
    } else {
        let mut r = RedisOptions::with_hosts(inv.hosts.iter().cloned()).cluster(inv.cluster);
        if let Some(user) = &inv.username {
            r = r.username(user.clone());
        }
        if let Some(password) = &inv.password {
            r = r.password(password.clone());
        }
        r
    };
    redis.connect_timeout(Duration::from_millis(
        d.timeout_ms.max(inv.publish_timeout_ms).max(500),
    ))
}

/// The backplane's options from `[invalidation]`.
fn backplane_options(config: &CacheConfig) -> BackplaneOptions {
    let inv = &config.invalidation;
    BackplaneOptions::new(backplane_redis(config))
        .channel(inv.channel.clone())
        .staleness_bound(Duration::from_millis(inv.staleness_bound_ms))
        .publish_timeout(Duration::from_millis(inv.publish_timeout_ms))
        .start_offline(config.fallback_on_error)
}

/// An L1, the same as a file store when it is one, and its directory when it has one.
type Local = (
    Arc<dyn Storage>,
    Option<Arc<FileStore>>,
    Option<std::path::PathBuf>,
);

/// Opens the L1 that `local` describes.
fn build_local(local: &LocalCacheConfig, clock: &Arc<dyn Clock>) -> Result<Local> {
    let max = local.effective_max_size();
    let dir = local.effective_path().to_path_buf();
    Ok(match local.kind {
        LocalKind::File => {
            let mut options = FileStoreOptions::default()
                .durability(local.effective_durability())
                .clock(Arc::clone(clock));
            // Unset settings are the ones the store recorded (its application's bound).
            if let Some(mb) = local.max_size {
                options = options.max_size_mb(mb);
            }
            if let Some(mode) = local.file_mode {
                options = options.file_mode(mode);
            }
            let file = Arc::new(FileStore::open(&dir, options)?);
            (file.clone(), Some(file), Some(dir))
        }
        LocalKind::Memory => (
            Arc::new(MemoryStore::with_clock(max, Arc::clone(clock))?),
            None,
            None,
        ),
        LocalKind::Redb => (
            Arc::new(RedbStore::open(
                dir.join(REDB_FILE_NAME),
                RedbOptions::default()
                    .max_size_mb(max)
                    .file_mode(local.file_mode.unwrap_or(crate::perms::DEFAULT_FILE_MODE))
                    .durability(local.effective_durability())
                    .clock(Arc::clone(clock)),
            )?),
            None,
            Some(dir),
        ),
    })
}

/// A level and the breaker in front of it.
type Breakered = (Arc<dyn Storage>, Arc<CircuitBreaker>);

fn redis_options(d: &DistributedCacheConfig, clock: &Arc<dyn Clock>) -> RedisOptions {
    let mut options = RedisOptions::with_hosts(d.hosts.iter().cloned())
        .cluster(d.cluster)
        .prefix(d.key_prefix.clone())
        .timeout(Duration::from_millis(d.timeout_ms))
        .default_ttl(Some(d.ttl))
        .clock(Arc::clone(clock));
    if let Some(user) = &d.username {
        options = options.username(user.clone());
    }
    if let Some(password) = &d.password {
        options = options.password(password.clone());
    }
    options
}

fn memcached_options(d: &DistributedCacheConfig, clock: &Arc<dyn Clock>) -> MemcachedOptions {
    MemcachedOptions::with_hosts(d.hosts.iter().cloned())
        .prefix(d.key_prefix.clone())
        .timeout(Duration::from_millis(d.timeout_ms))
        .default_ttl(Some(d.ttl))
        .clock(Arc::clone(clock))
}

/// Connects the configured L2 (for the background connector).
fn connect_distributed(d: &DistributedCacheConfig, clock: &Arc<dyn Clock>) -> Result<Arc<dyn Storage>> {
    let level: Result<Arc<dyn Storage>> = match d.kind {
        DistributedKind::Redis => RedisStore::connect(redis_options(d, clock)).map(|l| Arc::new(l) as _),
        DistributedKind::Memcached => {
            MemcachedStore::connect(memcached_options(d, clock)).map(|l| Arc::new(l) as _)
        }
    };
    level.map_err(in_config_terms)
}

/// A level names its own option (`redis.hosts[0]`); a manager built from configuration names
/// the configuration field the user wrote (`distributed.hosts[0]`).
fn in_config_terms(err: Error) -> Error {
    match err {
        Error::Config { field, reason } => {
            let field = match field.split_once('.') {
                Some(("redis" | "memcached", rest)) => format!("distributed.{rest}"),
                _ => field,
            };
            Error::Config { field, reason }
        }
        other => other,
    }
}

/// Connects the L2 that `distributed` describes, behind a circuit breaker; `None` if it is not
/// enabled. The level checks its connection (and credentials) once here. If that fails and
/// `fallback` is set, the manager starts anyway with a [`Deferred`] level that connects in the
/// background (retrying every `breaker_cooldown_ms`); otherwise the error is returned.
fn build_distributed(
    distributed: &DistributedCacheConfig,
    fallback: bool,
    clock: &Arc<dyn Clock>,
    io: Option<&IoRuntime>,
) -> Result<Option<Breakered>> {
    if !distributed.enabled {
        return Ok(None);
    }
    let d = distributed;
    let cool_down = Duration::from_millis(d.breaker_cooldown_ms);
    let breaker = Arc::new(CircuitBreaker::with_clock(
        d.breaker_failures,
        cool_down,
        Arc::clone(clock),
    ));
    let name = match d.kind {
        DistributedKind::Redis => "redis",
        DistributedKind::Memcached => "memcached",
    };
    let connected = match d.kind {
        DistributedKind::Redis => RedisStore::connect(redis_options(d, clock).io_runtime(io.cloned()))
            .map(|store| Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn Storage>),
        DistributedKind::Memcached => MemcachedStore::connect(memcached_options(d, clock))
            .map(|store| Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn Storage>),
    };
    let level = match connected.map_err(in_config_terms) {
        Ok(level) => level,
        // A configuration mistake is not an outage: retrying in the background cannot fix it.
        Err(e) if fallback && !matches!(e, Error::Config { .. }) => {
            let (config, level_clock) = (d.clone(), Arc::clone(clock));
            let connect: deferred::Connect = Box::new(move || connect_distributed(&config, &level_clock));
            let deferred = Deferred::start(name, cool_down.max(Duration::from_millis(1)), connect, &e)?;
            Arc::new(Guarded::new(name, deferred, Arc::clone(&breaker)))
        }
        Err(e) => return Err(e),
    };
    Ok(Some((level, breaker)))
}

/// How long a reading of L2's size is reused by the stats: counting a Redis or Memcached level
/// walks every key.
pub const L2_SIZE_MAX_AGE: Duration = Duration::from_secs(5);

/// Reads the manager's statistics; see [`CacheManager::monitor`].
#[derive(Debug, Clone, Copy)]
pub struct Monitor<'a> {
    manager: &'a CacheManager,
}

impl Monitor<'_> {
    /// A snapshot of the counters, with each level's size. Reading L2's size is a blocking call
    /// to L2; in async code use [`Monitor::get_stats_async`].
    ///
    /// L2's size is read at most every [`L2_SIZE_MAX_AGE`] and reused in between, because
    /// counting a Redis or Memcached level walks every key; L1's is read every time.
    #[must_use]
    pub fn get_stats(&self) -> CacheStats {
        let s = &self.manager.shared;
        let l1_size = s.l1.size();
        let l2_size = s.l2.as_ref().map(|l2| match s.fresh_l2_size() {
            Some(size) => Ok(size),
            None => s.remember_l2_size(l2.size()),
        });
        self.assemble(l1_size, l2_size)
    }

    /// [`Monitor::get_stats`] reading L2's size without blocking the executor.
    pub async fn get_stats_async(self) -> CacheStats {
        let s = &self.manager.shared;
        let l1_size = s.l1.size();
        let l2_size = match (&s.l2, s.fresh_l2_size()) {
            (Some(_), Some(size)) => Some(Ok(size)),
            (Some(l2), None) => Some(s.remember_l2_size(l2.size_async().await)),
            (None, _) => None,
        };
        self.assemble(l1_size, l2_size)
    }

    fn assemble(&self, l1_size: Result<StorageSize>, l2_size: Option<Result<StorageSize>>) -> CacheStats {
        let s = &self.manager.shared;
        let split = |r: Result<StorageSize>| match r {
            Ok(size) => (size, None),
            Err(e) => (StorageSize::default(), Some(e.to_string())),
        };
        let (local_size, local_err) = split(l1_size);
        let local = s
            .metrics
            .local
            .snapshot(s.l1.name(), true, s.l1.counters(), local_err);
        let (distributed_size, distributed) = match (&s.l2, l2_size) {
            (Some(l2), Some(size)) => {
                let (size, err) = split(size);
                let mut stats = s
                    .metrics
                    .distributed
                    .snapshot(l2.name(), true, l2.counters(), err);
                stats.breaker = s.breaker.as_ref().map(|b| b.stats());
                (size, stats)
            }
            _ => (
                StorageSize::default(),
                s.metrics.distributed.snapshot(
                    "none",
                    false,
                    crate::storage::StorageCounters::default(),
                    None,
                ),
            ),
        };
        let overall = s.metrics.overall();
        #[allow(clippy::cast_precision_loss)]
        let overall_rate = if overall.reads == 0 {
            0.0
        } else {
            overall.hits as f64 / overall.reads as f64
        };
        CacheStats {
            hit_rate: HitRates {
                local: local.hit_rate,
                distributed: distributed.hit_rate,
                overall: overall_rate,
            },
            size: Sizes {
                local: local_size,
                distributed: distributed_size,
            },
            local,
            distributed,
            overall,
            consistency: self.consistency(),
        }
    }

    fn consistency(&self) -> ConsistencyStats {
        let s = &self.manager.shared;
        let mut stats = ConsistencyStats::default();
        s.metrics.consistency.fill(&mut stats);
        if let Some(q) = &s.replay {
            stats.replay_enabled = true;
            stats.replay_pending = q.len() as u64;
            stats.replay_bytes = q.bytes();
            stats.replay_overflowed = q.is_overflowed();
        }
        if let Some(queue) = &s.behind {
            stats.write_behind = true;
            stats.write_behind_pending = queue.len() as u64;
        }
        if let Some(bp) = s.backplane.get() {
            stats.backplane_enabled = true;
            stats.backplane_connected = bp.stats().connected;
        }
        stats
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

    /// The L1 level.
    #[must_use]
    pub fn local(&self) -> &Arc<dyn Storage> {
        &self.shared.l1
    }

    /// The L2 level, if the manager uses one.
    #[must_use]
    pub fn distributed(&self) -> Option<&Arc<dyn Storage>> {
        self.shared.l2.as_ref()
    }

    /// The codec of the typed API.
    #[must_use]
    pub fn codec(&self) -> Codec {
        self.shared.codec
    }

    // ---- typed API ----

    /// Reads a value: L1, then L2 (backfilling L1). `Ok(None)` on a miss.
    ///
    /// # Errors
    /// [`Error::CodecMismatch`] or [`Error::Decode`] if the stored bytes are not a `T` written
    /// by this codec; a level's error unless hidden by `fallback_on_error`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.decode_opt(key, self.get_raw(key)?)
    }

    /// Writes a value to L1 (TTL capped at `local.ttl`) and L2 (capped at `distributed.ttl`);
    /// `ttl = None` gives each level its configured TTL.
    ///
    /// # Errors
    /// [`Error::Encode`], [`Error::ZeroTtl`], an L1 error, or an L2 error unless hidden by
    /// `fallback_on_error` (L1 then holds the new value).
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T, ttl: Option<Duration>) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw(key, &bytes, ttl)
    }

    /// Deletes a key from both levels; `true` if either had it.
    ///
    /// # Errors
    /// An L1 error (after L2 was tried too), or an L2 error unless hidden by
    /// `fallback_on_error`.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let s = &self.shared;
        let ordered = s.guard.order([key], true);
        let l1 = s.count_delete_l1(1, s.l1.delete(key).map(u64::from));
        s.settle_behind(&[key]);
        let l2 = match &s.l2 {
            Some(_) if s.must_queue(&[key]) => {
                s.queue_deletes(&[key])?;
                None
            }
            Some(l2) => Some(l2.delete(key).map(u64::from)),
            None => None,
        };
        let out = s.finish_delete(&[key], l1, l2);
        drop(ordered);
        s.publish_keys(&[key]);
        Ok(out? > 0)
    }

    /// Reads several keys: one L1 call, then one L2 call for the keys L1 did not have. The map
    /// holds the keys found.
    ///
    /// # Errors
    /// As [`CacheManager::get`], for any key.
    pub fn multi_get<T: DeserializeOwned>(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, T>> {
        self.decode_map(self.multi_get_raw(keys)?)
    }

    /// Writes several values with one TTL: one L1 call, one L2 call.
    ///
    /// # Errors
    /// As [`CacheManager::set`]; nothing is written if a value fails to encode.
    pub fn multi_set<K: AsRef<str>, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let encoded = self.encode_items(items)?;
        self.multi_set_raw(&borrow_items(&encoded), ttl)
    }

    /// Deletes several keys from both levels: one call to each. Returns the larger of the two
    /// levels' counts of keys removed.
    ///
    /// # Errors
    /// As [`CacheManager::delete`].
    pub fn multi_delete(&self, keys: &[impl AsRef<str>]) -> Result<u64> {
        let keys = as_strs(keys);
        let s = &self.shared;
        if keys.is_empty() {
            return Ok(0);
        }
        let ordered = s.guard.order(keys.iter().copied(), true);
        let l1 = s.count_delete_l1(keys.len(), s.l1.delete_many(&keys));
        s.settle_behind(&keys);
        let l2 = match &s.l2 {
            Some(_) if s.must_queue(&keys) => {
                s.queue_deletes(&keys)?;
                None
            }
            Some(l2) => Some(l2.delete_many(&keys)),
            None => None,
        };
        let out = s.finish_delete(&keys, l1, l2);
        drop(ordered);
        s.publish_keys(&keys);
        out
    }

    /// Reads a value, or runs `loader`, stores its value (with `ttl`, as [`CacheManager::set`])
    /// and returns it. Concurrent callers for one key — threads here and tasks in
    /// [`CacheManager::get_or_set_with_async`] alike — run one loader at a time: the others wait
    /// and get its value. If the loader fails, that caller gets its error and a waiter takes
    /// over with its own loader. Waiting has no deadline: a loader that never returns holds its
    /// key's callers, so give slow loaders their own timeout. A loader must not call
    /// `get_or_set_with` for its own key (it would wait for itself).
    ///
    /// # Errors
    /// The loader's error; or, converted with `From`, a cache error of [`CacheManager::get`]
    /// or [`CacheManager::set`] (the value was loaded but could not be stored; waiters still get
    /// it).
    pub fn get_or_set_with<T, E, F>(&self, key: &str, ttl: Option<Duration>, loader: F) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        F: FnOnce() -> Result<T, E>,
    {
        Shared::check_ttl(key, ttl)?;
        loop {
            if let Some(value) = self.get(key)? {
                return Ok(value);
            }
            match self.shared.flights.join(key) {
                Role::Waiter(flight) => {
                    self.shared.metrics.load_waits.incr();
                    if let Some(bytes) = flight.wait_blocking() {
                        return Ok(self.shared.codec.decode(key, &bytes)?);
                    }
                }
                Role::Leader(leader) => {
                    // A flight that just ended may have filled the cache.
                    if let Some(bytes) = self.get_raw(key)? {
                        let value = self.shared.codec.decode(key, &bytes)?;
                        leader.finish(Arc::from(bytes));
                        return Ok(value);
                    }
                    self.shared.metrics.loads.incr();
                    let value = loader()?;
                    let bytes = self.shared.codec.encode(key, &value)?;
                    let stored = self.set_raw(key, &bytes, ttl);
                    leader.finish(Arc::from(bytes));
                    stored?;
                    return Ok(value);
                }
            }
        }
    }

    // ---- raw bytes ----

    /// [`CacheManager::get`] without the codec.
    ///
    /// # Errors
    /// A level's error unless hidden by `fallback_on_error`.
    pub fn get_raw(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let s = &self.shared;
        let suspect = match s.plan_read(key)? {
            Plan::Done(value) => return Ok(value),
            Plan::AskL2(suspect) => suspect,
        };
        let Some(l2) = &s.l2 else {
            return Ok(suspect.map(|e| e.value));
        };
        let ticket = match s.before_l2(key) {
            Ok(ticket) => ticket,
            Err(answer) => return Ok(answer),
        };
        let started = Instant::now();
        let result = l2.get(key);
        match suspect {
            None => s.finish_read(key, ticket, (started, result)),
            Some(entry) => s.finish_revalidate(key, entry, ticket, (started, result)),
        }
    }

    /// [`CacheManager::set`] without the codec.
    ///
    /// # Errors
    /// As [`CacheManager::set`].
    pub fn set_raw(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.set_items(&[key], &[(key, value)], ttl, true)
    }

    /// [`CacheManager::multi_get`] without the codec.
    ///
    /// # Errors
    /// As [`CacheManager::get_raw`].
    pub fn multi_get_raw(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, Vec<u8>>> {
        let keys = as_strs(keys);
        let s = &self.shared;
        let mut out = HashMap::with_capacity(keys.len());
        let mut suspects = HashMap::new();
        let missed = s.read_many_l1(&keys, &mut out, &mut suspects)?;
        if missed.is_empty() {
            return Ok(out);
        }
        let Some(l2) = &s.l2 else {
            s.miss(missed.len());
            return Ok(out);
        };
        let (missed, tickets) = s.read_many_behind(missed, &mut out, &mut suspects);
        if missed.is_empty() {
            return Ok(out);
        }
        let started = Instant::now();
        let result = l2.get_many(&missed);
        s.finish_read_many(&missed, &tickets, (started, result), &mut out, &mut suspects)?;
        Ok(out)
    }

    /// [`CacheManager::multi_set`] without the codec.
    ///
    /// # Errors
    /// As [`CacheManager::set`].
    pub fn multi_set_raw(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        self.set_items(&keys, items, ttl, false)
    }

    /// The write rule for one key (`single`: `set` on each level) or a batch (`set_many`);
    /// `keys` are the items' keys: L1, then L2 as [`Shared::route_write`] says, then the
    /// invalidation (the writer publishes a queued one).
    fn set_items(
        &self,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        single: bool,
    ) -> Result<()> {
        let s = &self.shared;
        let (ordered, route) = s.begin_write(s.guard.order(keys.iter().copied(), false), keys, items, ttl)?;
        let out = match route {
            Route::Done(out) => out,
            Route::Behind => return Ok(()),
            Route::Through { l2, settle } => {
                if settle {
                    s.settle_behind(keys);
                }
                let l2_ttl = Some(s.l2_ttl(ttl));
                let started = Instant::now();
                let result = match (keys, items) {
                    ([_], [(key, value)]) if single => l2.set(key, value, l2_ttl),
                    _ => l2.set_many(items, l2_ttl),
                };
                s.finish_write(items, ttl, (started, result))
            }
        };
        drop(ordered);
        s.publish_keys(keys);
        out
    }

    // ---- async API ----

    /// Async [`CacheManager::get`]: L1 inline, L2 through its async methods.
    ///
    /// # Errors
    /// As [`CacheManager::get`].
    pub async fn get_async<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        let raw = self.get_raw_async(key).await?;
        self.decode_opt(key, raw)
    }

    /// Async [`CacheManager::set`].
    ///
    /// # Errors
    /// As [`CacheManager::set`].
    pub async fn set_async<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw_async(key, &bytes, ttl).await
    }

    /// Async [`CacheManager::delete`].
    ///
    /// # Errors
    /// As [`CacheManager::delete`].
    pub async fn delete_async(&self, key: &str) -> Result<bool> {
        let s = &self.shared;
        let ordered = s.guard.order_async([key], true).await;
        let l1 = s.count_delete_l1(1, s.l1.delete(key).map(u64::from));
        s.settle_behind_async(&[key]).await;
        let l2 = match &s.l2 {
            Some(_) if s.must_queue(&[key]) => {
                s.queue_deletes(&[key])?;
                None
            }
            Some(l2) => Some(l2.delete_async(key).await.map(u64::from)),
            None => None,
        };
        let out = s.finish_delete(&[key], l1, l2);
        drop(ordered);
        s.publish_keys_async(&[key]).await;
        Ok(out? > 0)
    }

    /// Async [`CacheManager::multi_get`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_get`].
    pub async fn multi_get_async<T: DeserializeOwned>(
        &self,
        keys: &[impl AsRef<str>],
    ) -> Result<HashMap<String, T>> {
        let raw = self.multi_get_raw_async(keys).await?;
        self.decode_map(raw)
    }

    /// Async [`CacheManager::multi_set`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_set`].
    pub async fn multi_set_async<K: AsRef<str>, V: Serialize>(
        &self,
        items: impl IntoIterator<Item = (K, V)>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        let encoded = self.encode_items(items)?;
        self.multi_set_raw_async(&borrow_items(&encoded), ttl).await
    }

    /// Async [`CacheManager::multi_delete`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_delete`].
    pub async fn multi_delete_async(&self, keys: &[impl AsRef<str>]) -> Result<u64> {
        let keys = as_strs(keys);
        let s = &self.shared;
        if keys.is_empty() {
            return Ok(0);
        }
        let ordered = s.guard.order_async(keys.iter().copied(), true).await;
        let l1 = s.count_delete_l1(keys.len(), s.l1.delete_many(&keys));
        s.settle_behind_async(&keys).await;
        let l2 = match &s.l2 {
            Some(_) if s.must_queue(&keys) => {
                s.queue_deletes(&keys)?;
                None
            }
            Some(l2) => Some(l2.delete_many_async(&keys).await),
            None => None,
        };
        let out = s.finish_delete(&keys, l1, l2);
        drop(ordered);
        s.publish_keys_async(&keys).await;
        out
    }

    /// Async [`CacheManager::get_or_set_with`]: the loader is an async closure. Shares loads
    /// with sync callers of the same key.
    ///
    /// # Errors
    /// As [`CacheManager::get_or_set_with`].
    pub async fn get_or_set_with_async<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Option<Duration>,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<Error>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        Shared::check_ttl(key, ttl)?;
        loop {
            if let Some(value) = self.get_async(key).await? {
                return Ok(value);
            }
            match self.shared.flights.join(key) {
                Role::Waiter(flight) => {
                    self.shared.metrics.load_waits.incr();
                    if let Some(bytes) = flight.wait_async().await {
                        return Ok(self.shared.codec.decode(key, &bytes)?);
                    }
                }
                Role::Leader(leader) => {
                    if let Some(bytes) = self.get_raw_async(key).await? {
                        let value = self.shared.codec.decode(key, &bytes)?;
                        leader.finish(Arc::from(bytes));
                        return Ok(value);
                    }
                    self.shared.metrics.loads.incr();
                    let value = loader().await?;
                    let bytes = self.shared.codec.encode(key, &value)?;
                    let stored = self.set_raw_async(key, &bytes, ttl).await;
                    leader.finish(Arc::from(bytes));
                    stored?;
                    return Ok(value);
                }
            }
        }
    }

    /// Async [`CacheManager::get_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::get_raw`].
    pub async fn get_raw_async(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let s = &self.shared;
        let suspect = match s.plan_read(key)? {
            Plan::Done(value) => return Ok(value),
            Plan::AskL2(suspect) => suspect,
        };
        let Some(l2) = &s.l2 else {
            return Ok(suspect.map(|e| e.value));
        };
        let ticket = match s.before_l2(key) {
            Ok(ticket) => ticket,
            Err(answer) => return Ok(answer),
        };
        let started = Instant::now();
        let result = l2.get_async(key).await;
        match suspect {
            None => s.finish_read(key, ticket, (started, result)),
            Some(entry) => s.finish_revalidate(key, entry, ticket, (started, result)),
        }
    }

    /// Async [`CacheManager::set_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::set_raw`].
    pub async fn set_raw_async(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.set_items_async(&[key], &[(key, value)], ttl, true).await
    }

    /// Async [`CacheManager::multi_get_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_get_raw`].
    pub async fn multi_get_raw_async(&self, keys: &[impl AsRef<str>]) -> Result<HashMap<String, Vec<u8>>> {
        let keys = as_strs(keys);
        let s = &self.shared;
        let mut out = HashMap::with_capacity(keys.len());
        let mut suspects = HashMap::new();
        let missed = s.read_many_l1(&keys, &mut out, &mut suspects)?;
        if missed.is_empty() {
            return Ok(out);
        }
        let Some(l2) = &s.l2 else {
            s.miss(missed.len());
            return Ok(out);
        };
        let (missed, tickets) = s.read_many_behind(missed, &mut out, &mut suspects);
        if missed.is_empty() {
            return Ok(out);
        }
        let started = Instant::now();
        let result = l2.get_many_async(&missed).await;
        s.finish_read_many(&missed, &tickets, (started, result), &mut out, &mut suspects)?;
        Ok(out)
    }

    /// Async [`CacheManager::multi_set_raw`].
    ///
    /// # Errors
    /// As [`CacheManager::multi_set_raw`].
    pub async fn multi_set_raw_async(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        self.set_items_async(&keys, items, ttl, false).await
    }

    /// Async [`CacheManager::set_items`].
    async fn set_items_async(
        &self,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        single: bool,
    ) -> Result<()> {
        let s = &self.shared;
        let ordered = s.guard.order_async(keys.iter().copied(), false).await;
        let (ordered, route) = s.begin_write(ordered, keys, items, ttl)?;
        let out = match route {
            Route::Done(out) => out,
            Route::Behind => return Ok(()),
            Route::Through { l2, settle } => {
                if settle {
                    s.settle_behind_async(keys).await;
                }
                let l2_ttl = Some(s.l2_ttl(ttl));
                let started = Instant::now();
                let result = match (keys, items) {
                    ([_], [(key, value)]) if single => l2.set_async(key, value, l2_ttl).await,
                    _ => l2.set_many_async(items, l2_ttl).await,
                };
                s.finish_write(items, ttl, (started, result))
            }
        };
        drop(ordered);
        s.publish_keys_async(keys).await;
        out
    }

    // ---- maintenance ----

    /// Deletes a key from L1 only (for example on an invalidation message from another process:
    /// L2 already has the news). Guarded like any delete against a racing backfill.
    ///
    /// # Errors
    /// The L1 error.
    pub fn invalidate_local(&self, key: &str) -> Result<bool> {
        let s = &self.shared;
        let _writing = s.guard.write([key]);
        Ok(s.count_delete_l1(1, s.l1.delete(key).map(u64::from))? > 0)
    }

    /// Sends the queued L2 writes and deletes (offline mode, see
    /// [`OfflineConfig`](crate::OfflineConfig)) to L2 now, in order, deletes first; returns how
    /// many reached L2. The background thread does the same every `offline.replay_interval_ms`
    /// and right after an L2 call succeeds; this is for shutdown hooks and tests.
    ///
    /// # Errors
    /// The first L2 error (the rest stays queued), or the queue's I/O error.
    pub fn replay_now(&self) -> Result<u64> {
        self.shared.replay_now()
    }

    /// The replay queue of L2 writes that failed, if the manager has one.
    #[must_use]
    pub fn replay_queue(&self) -> Option<&Arc<ReplayQueue>> {
        self.shared.replay.as_ref()
    }

    /// Clears the replay queue's overflow flag, after an operator reconciled (or flushed) L2;
    /// `true` if it was set.
    ///
    /// # Errors
    /// The queue's I/O error. Without a queue, `Ok(false)`.
    pub fn clear_replay_overflow(&self) -> Result<bool> {
        match &self.shared.replay {
            Some(q) => q.clear_overflow(),
            None => Ok(false),
        }
    }

    /// The invalidation backplane, if `invalidation.enabled`.
    #[must_use]
    pub fn backplane(&self) -> Option<&Backplane> {
        self.shared.backplane.get()
    }

    /// Drops every key that starts with `prefix`: from L1 here, from L2 where the backend can
    /// list keys, and (through the backplane) from every other instance's L1. L1 keys are listed
    /// where the level can (the file store, redb); another L1 is cleared instead (a superset).
    /// L2 keys are deleted with `SCAN` + `UNLINK` on a standalone Redis L2 (when the backplane,
    /// if any, is that same Redis); a Redis Cluster or Memcached L2 keeps them until their TTL
    /// (Memcached cannot list keys). Returns the number of keys dropped from L1 and L2.
    ///
    /// # Errors
    /// The L1 error, or the L2 scan's error unless hidden by `fallback_on_error`.
    pub fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let s = &self.shared;
        // Queued writes under the prefix must land before L2 is scanned, not after.
        s.drain_behind();
        let dropped = s.drop_local_prefix(prefix)?;
        let in_l2 = match &s.tags {
            Some(tags) => match tags.delete_prefix(&s.l2_prefix, prefix) {
                Ok(n) => n,
                Err(e) if s.fallback_on_error => {
                    tracing::warn!(error = %e, "deleting a prefix from L2 failed; hidden by fallback_on_error");
                    0
                }
                Err(e) => return Err(e),
            },
            None => 0,
        };
        s.publish(&Invalidation::Prefix(prefix.to_owned()));
        Ok(dropped + in_l2)
    }

    /// [`CacheManager::set_raw`], and records `key` as a member of each tag in a Redis set that
    /// every instance reaches (the backplane's Redis, or else the Redis L2), with a TTL no
    /// shorter than the entry's. Needs Redis 7 or later.
    ///
    /// # Errors
    /// As [`CacheManager::set_raw`]; [`Error::Config`] if there is no Redis for tags; the tag
    /// Redis's error (the value is then written but not tagged).
    pub fn set_raw_with_tags(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let s = &self.shared;
        let Some(store) = &s.tags else {
            return Err(Error::Config {
                field: "invalidation.enabled".to_owned(),
                reason: "tags need a Redis: enable the backplane or use a Redis L2".to_owned(),
            });
        };
        self.set_raw(key, value, ttl)?;
        store.add(&[key], tags, s.l2_ttl(ttl))
    }

    /// [`CacheManager::set`] with tags; see [`CacheManager::set_raw_with_tags`].
    ///
    /// # Errors
    /// As [`CacheManager::set_raw_with_tags`], and [`Error::Encode`].
    pub fn set_with_tags<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw_with_tags(key, &bytes, ttl, tags)
    }

    /// Deletes every key written with `tag` from both levels here and, through the backplane
    /// (as one message of keys), from every other instance's L1. Returns the number of keys
    /// the tag held.
    ///
    /// # Errors
    /// [`Error::Config`] if there is no Redis for tags; the tag Redis's error; otherwise as
    /// [`CacheManager::multi_delete`].
    pub fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        let Some(store) = &self.shared.tags else {
            return Err(Error::Config {
                field: "invalidation.enabled".to_owned(),
                reason: "tags need a Redis: enable the backplane or use a Redis L2".to_owned(),
            });
        };
        let members = store.take(tag)?;
        if members.is_empty() {
            return Ok(0);
        }
        self.multi_delete(&members)?;
        Ok(members.len() as u64)
    }

    /// Invalidates what an application event names: deletes its keys from both levels and
    /// invalidates its tags, in every instance. See [`InvalidationEvent`]. Returns the number of
    /// keys deleted (tag members included).
    ///
    /// # Errors
    /// As [`CacheManager::multi_delete`] and [`CacheManager::invalidate_tag`].
    pub fn invalidate_event(&self, event: &(impl InvalidationEvent + ?Sized)) -> Result<u64> {
        let keys = event.keys();
        let mut dropped = if keys.is_empty() {
            0
        } else {
            self.multi_delete(&keys)?;
            keys.len() as u64
        };
        for tag in event.tags() {
            dropped += self.invalidate_tag(&tag)?;
        }
        Ok(dropped)
    }

    /// Finishes the background work and makes both levels' completed writes durable, where
    /// they have such a notion: waits for queued backfills of batch reads, sends queued
    /// write-behind writes, then flushes L1 (fsync for the file store) and L2.
    ///
    /// # Errors
    /// The first level's error.
    pub fn flush(&self) -> Result<()> {
        if let Some(fills) = &self.shared.fills {
            fills.drain();
        }
        self.shared.drain_behind();
        self.shared.l1.flush()?;
        match &self.shared.l2 {
            Some(l2) => l2.flush(),
            None => Ok(()),
        }
    }

    // ---- helpers ----

    fn decode_opt<T: DeserializeOwned>(&self, key: &str, raw: Option<Vec<u8>>) -> Result<Option<T>> {
        match raw {
            Some(bytes) => self.shared.codec.decode(key, &bytes).map(Some),
            None => Ok(None),
        }
    }

    fn decode_map<T: DeserializeOwned>(&self, raw: HashMap<String, Vec<u8>>) -> Result<HashMap<String, T>> {
        raw.into_iter()
            .map(|(key, bytes)| {
                let value = self.shared.codec.decode(&key, &bytes)?;
                Ok((key, value))
            })
            .collect()
    }

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

fn borrow_items<K: AsRef<str>>(items: &[(K, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    items.iter().map(|(k, v)| (k.as_ref(), v.as_slice())).collect()
}
