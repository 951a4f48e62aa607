//! [`CacheManagerBuilder`]: a manager from a configuration, with levels, a breaker, a codec
//! or a clock of your own; starts the manager's background threads.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::sync::OnceLock;
use std::time::Duration;

use super::behind::{start_writer, WriteQueue};
use super::failsafe::FailSafe;
use super::fill::{start_filler, FillQueue};
use super::guard::KeyOrder;
use super::l2_size::L2Size;
use super::loader::Flights;
use super::offline::Replayer;
use super::policy::Shared;
use super::wiring::{
    build_distributed, build_l2_keys, build_local, build_tags, connect_backplane, shared_io,
};
use super::workers::Workers;
use super::CacheManager;

use crate::clock::{Clock, SystemClock};
use crate::codec::Codec;
use crate::config::{CacheConfig, RestartPolicy, WriteMode};
use crate::distributed::CircuitBreaker;
use crate::error::Result;
use crate::level_panics::Caught;
use crate::local::hot::HotTier;
use crate::local::tiered::Tiered;
use crate::replay::{ReplayOptions, ReplayQueue};
use crate::shutdown::Shutdown;
use crate::stats::Metrics;
use crate::storage::{DistributedStorage, LocalStorage};

/// Builds a [`CacheManager`] from a configuration, with levels or a codec of your own.
///
/// ```
/// use std::sync::Arc;
/// use uno_cache::{CacheConfig, CacheManager, InProcess, MemoryStore};
/// // Any `DistributedStorage` can serve as L2; `InProcess` makes one of an in-process level.
/// let l2 = Arc::new(InProcess::new(MemoryStore::new(1000)?));
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
    pub(super) config: CacheConfig,
    pub(super) local: Option<Arc<dyn LocalStorage>>,
    pub(super) distributed: Option<Arc<dyn DistributedStorage>>,
    pub(super) breaker: Option<Arc<CircuitBreaker>>,
    pub(super) codec: Option<Codec>,
    pub(super) clock: Option<Arc<dyn Clock>>,
}

impl CacheManagerBuilder {
    /// The configuration (default: [`CacheConfig::default`]). Its TTLs, `fallback_on_error` and
    /// `use_multi_level` apply to levels given to the builder too.
    pub fn config(mut self, config: CacheConfig) -> Self {
        self.config = config;
        self
    }

    /// Uses this level as L1 instead of building the one `config.local` describes. A panic in
    /// one of its calls is that call's failure (an [`Error::Backend`](crate::Error::Backend) of
    /// "L1"), handled as any L1 failure.
    pub fn local(mut self, level: Arc<dyn LocalStorage>) -> Self {
        self.local = Some(level);
        self
    }

    /// Uses this level as L2 instead of building the one `config.distributed` describes (it is
    /// used even if `distributed.enabled` is false, but not if `use_multi_level` is false). A
    /// panic in one of its calls is that call's failure (an
    /// [`Error::Backend`](crate::Error::Backend) of "L2"), handled as any L2 failure.
    /// [`CacheManager::invalidate_prefix`](crate::CacheManager::invalidate_prefix) asks it to
    /// delete its keys under the prefix
    /// ([`DistributedStorage::delete_prefix`](crate::DistributedStorage::delete_prefix)), unless
    /// `[distributed]` describes it as a Redis, which the manager walks itself.
    pub fn distributed(mut self, level: Arc<dyn DistributedStorage>) -> Self {
        self.distributed = Some(level);
        self
    }

    /// The circuit breaker in front of the level given to
    /// [`distributed`](CacheManagerBuilder::distributed) (wrapped in a
    /// [`Guarded`](crate::distributed::Guarded)), so that the stats report its state. A level built from
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
    /// [`Error::Config`](crate::Error::Config) naming the bad field, whatever opening L1 reports (for example
    /// [`Error::Locked`](crate::Error::Locked)), and, without `fallback_on_error`, the configured L2's connection error
    /// ([`Error::Backend`](crate::Error::Backend) or [`Error::Timeout`](crate::Error::Timeout) naming the host). With `fallback_on_error` an
    /// unreachable L2 does not fail start-up: it is connected in the background, and until then
    /// its calls fail at once with [`Error::NotConnected`](crate::Error::NotConnected).
    pub fn build(self) -> Result<CacheManager> {
        let config = self.config;
        config.validate()?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        // One I/O thread for the Redis L2, the backplane and tags (if any of them is configured).
        let io = shared_io(&config)?;
        let (l1, file_l1, l1_dir) = match self.local {
            // A user's level may panic: its panics are its calls' errors (see `level_panics`).
            Some(level) => (
                Arc::new(Caught::new("L1", level)) as Arc<dyn LocalStorage>,
                None,
                None,
            ),
            None => build_local(&config.local, config.loader.fail_safe_max_duration, &clock)?,
        };
        // The memory tier goes in front of a persistent L1 the manager built.
        let hot = (l1_dir.is_some() && config.local.memory_items > 0).then(|| {
            let max_bytes = config.local.memory_max_mb.saturating_mul(1 << 20);
            Arc::new(HotTier::new(
                config.local.memory_items,
                max_bytes,
                Arc::clone(&clock),
            ))
        });
        let l1: Arc<dyn LocalStorage> = match &hot {
            Some(hot) => Arc::new(Tiered::new(Arc::clone(hot), l1)),
            None => l1,
        };
        let own_l2 = self.distributed.is_some();
        let (l2, breaker, nodes, connector) = if !config.use_multi_level {
            (None, None, None, None)
        } else if let Some(level) = self.distributed {
            let level: Arc<dyn DistributedStorage> = Arc::new(Caught::new("L2", level));
            (Some(level), self.breaker, None, None)
        } else {
            match build_distributed(&config.distributed, config.fallback_on_error, &clock, io.as_ref())? {
                Some((level, breaker, nodes, connector)) => (Some(level), Some(breaker), nodes, connector),
                None => (None, None, None, None),
            }
        };
        let replay_dir = config.offline.replay_dir.clone().or(l1_dir);
        // A run that queues none of its failures still drains a queue an earlier run left: its
        // ops were acknowledged, and a later run that queues again would replay them over what
        // this one wrote to L2 since.
        let replays_failures = config.offline.replay && config.fallback_on_error;
        let replay = match replay_dir {
            Some(dir) if l2.is_some() && (replays_failures || ReplayQueue::exists_in(&dir)) => {
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
                let queue = ReplayQueue::open(&dir, options)?;
                let keep = replays_failures || !queue.is_empty() || queue.is_overflowed();
                keep.then(|| Arc::new(queue))
            }
            _ => None,
        };
        let policy = config.consistency.restart_policy;
        let l2_present = l2.is_some();
        let tags = build_tags(&config, io.as_ref())?;
        let l2_keys = build_l2_keys(&config, io.as_ref(), (l2_present, own_l2))?;
        let replayer = replay.is_some().then(Replayer::default);
        // The one stop signal of this manager's threads; the queues they sleep on listen to it.
        let shutdown = Shutdown::default();
        let shared = Arc::new(Shared {
            check_freshness: AtomicBool::new(l2.is_some() && policy != RestartPolicy::Trust),
            distrust_l1: Default::default(),
            trust_retry_at_ms: std::sync::atomic::AtomicU64::new(0),
            trust_retry_wait_ms: std::sync::atomic::AtomicU64::new(super::consistency::TRUST_RETRY_MS),
            trust_lock: parking_lot::Mutex::new(()),
            l1,
            l2,
            breaker,
            nodes,
            local_file: file_l1.clone(),
            l2_size: L2Size::new(Duration::from_secs(config.distributed.size_max_age_secs)),
            local_ttl: config.local.ttl,
            distributed_ttl: config.distributed.ttl,
            fallback_on_error: config.fallback_on_error,
            replays_failures,
            codec: self.codec.unwrap_or_else(|| config.codec.codec()),
            // Not on `clock`: its quiet windows are lengths of time (see `KeyOrder::clock`).
            guard: KeyOrder::default(),
            clock,
            metrics: Metrics::default(),
            cancel_quiet: Duration::from_millis(config.distributed.timeout_ms)
                .saturating_mul(4)
                .max(Duration::from_millis(100)),
            flights: Arc::new(Flights::default()),
            fail_safe: FailSafe::new(&config.loader),
            left_behind: Default::default(),
            replay,
            replayer,
            replay_lock: parking_lot::Mutex::new(()),
            replayed_tags: Arc::default(),
            apart: Default::default(),
            late_writes: Default::default(),
            late_drops: Default::default(),
            stop: shutdown.clone(),
            tags,
            l2_keys,
            l2_prefix: config.distributed.key_prefix.clone(),
            #[cfg(feature = "redis")]
            backplane: OnceLock::new(),
            hot,
            restart_policy: policy,
            behind: (config.distributed.write_mode == WriteMode::Behind && l2_present).then(|| {
                Arc::new(WriteQueue::new(
                    config.distributed.write_behind_max_keys,
                    Duration::from_millis(config.distributed.timeout_ms),
                    shutdown.clone(),
                ))
            }),
            fills: l2_present.then(|| Arc::new(FillQueue::new(shutdown.clone()))),
        });
        if policy == RestartPolicy::Trust {
            // Before any read or worker: trust never asks L1 whether an entry is suspect, so
            // the suspect-entry rule that settles a key by its queued op would not be reached.
            shared.settle_queued_in_l1(true);
        } else if shared.fail_safe.enabled() {
            // An expired entry is read by fail-safe alone, which no suspect-entry rule reaches.
            shared.settle_queued_in_l1(false);
        }
        let mut workers = Workers::new(Arc::clone(&shared), shutdown.clone());
        if let Some(connector) = connector {
            connector.report_refusal(&shared.metrics.distributed);
            workers.spawn("l2-connect", move || connector.run(&shutdown))?;
        }
        if let Some(queue) = &shared.fills {
            start_filler(&mut workers, Arc::downgrade(&shared), Arc::clone(queue))?;
        }
        if let Some(queue) = &shared.behind {
            start_writer(&mut workers, Arc::downgrade(&shared), Arc::clone(queue))?;
        }
        // The backplane first: a replay publishes what it delivers, and the ops it acks are gone,
        // so a message sent before the backplane exists would be lost for good (an instance
        // restarted with queued changes replays them at once).
        connect_backplane(&config, &shared, io.as_ref())?;
        shared.on_late_writes();
        if let Some(replayer) = &shared.replayer {
            let every = Duration::from_millis(config.offline.replay_interval_ms);
            replayer.start(&mut workers, Arc::downgrade(&shared), every)?;
            shared.nudge_replay();
        }
        Ok(CacheManager {
            shared,
            _workers: Some(Arc::new(workers)),
        })
    }
}
