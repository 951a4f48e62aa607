//! The levels and the backplane a configuration describes: how `[local]`, `[distributed]`,
//! `[invalidation]` and the tag settings become stores, options and connections.

use std::sync::Arc;
use std::time::Duration;

use super::deferred::Deferred;

use crate::clock::Clock;
use crate::config::{CacheConfig, DistributedCacheConfig, DistributedKind, LocalCacheConfig, LocalKind};
use crate::distributed::runtime::IoRuntime;
use crate::distributed::{
    CircuitBreaker, Guarded, MemcachedOptions, MemcachedStore, NodeBreakers, RedisOptions, RedisStore,
};
use crate::error::{Error, Result};
use crate::invalidation::BackplaneOptions;
use crate::local::file::{FileStore, FileStoreOptions};
use crate::local::memory::MemoryStore;
use crate::local::redb::{RedbOptions, RedbStore, REDB_FILE_NAME};
use crate::storage::Storage;

/// The Redis of the tag sets: the backplane's, or else the Redis L2's; and whether it is the
/// (standalone) L2 itself, where prefixes can be scanned.
pub(super) fn tag_redis(config: &CacheConfig) -> Option<(RedisOptions, bool)> {
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
pub(super) fn backplane_options(config: &CacheConfig) -> BackplaneOptions {
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
pub(super) fn build_local(local: &LocalCacheConfig, clock: &Arc<dyn Clock>) -> Result<Local> {
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

/// A level, the breaker in front of it, and its per-node breakers (a multi-node level).
type Breakered = (Arc<dyn Storage>, Arc<CircuitBreaker>, Option<Arc<NodeBreakers>>);

/// Per-node breakers for a level whose keys spread over nodes (Memcached, Redis Cluster): a dead
/// node then fails fast for its own keys only. A standalone Redis is one node: the level's
/// breaker is its breaker.
fn node_breakers(d: &DistributedCacheConfig) -> Option<Arc<NodeBreakers>> {
    let name = match d.kind {
        DistributedKind::Memcached => "memcached",
        DistributedKind::Redis if d.cluster => "redis",
        DistributedKind::Redis => return None,
    };
    let cool_down = Duration::from_millis(d.breaker_cooldown_ms);
    Some(Arc::new(NodeBreakers::new(name, d.breaker_failures, cool_down)))
}

fn redis_options(
    d: &DistributedCacheConfig,
    clock: &Arc<dyn Clock>,
    nodes: Option<&Arc<NodeBreakers>>,
) -> RedisOptions {
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
    if let Some(nodes) = nodes {
        options = options.node_breakers(Arc::clone(nodes));
    }
    options
}

fn memcached_options(
    d: &DistributedCacheConfig,
    clock: &Arc<dyn Clock>,
    nodes: Option<&Arc<NodeBreakers>>,
) -> MemcachedOptions {
    let options = MemcachedOptions::with_hosts(d.hosts.iter().cloned())
        .prefix(d.key_prefix.clone())
        .timeout(Duration::from_millis(d.timeout_ms))
        .default_ttl(Some(d.ttl))
        .clock(Arc::clone(clock));
    match nodes {
        Some(nodes) => options.node_breakers(Arc::clone(nodes)),
        None => options,
    }
}

/// Connects the configured L2 (for the background connector).
fn connect_distributed(
    d: &DistributedCacheConfig,
    clock: &Arc<dyn Clock>,
    nodes: Option<&Arc<NodeBreakers>>,
) -> Result<Arc<dyn Storage>> {
    let level: Result<Arc<dyn Storage>> = match d.kind {
        DistributedKind::Redis => {
            RedisStore::connect(redis_options(d, clock, nodes)).map(|l| Arc::new(l) as _)
        }
        DistributedKind::Memcached => {
            MemcachedStore::connect(memcached_options(d, clock, nodes)).map(|l| Arc::new(l) as _)
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
pub(super) fn build_distributed(
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
    // A cool-down is a duration: on the monotonic clock, so a step of the wall clock neither
    // keeps the breaker open nor cuts its cool-down short.
    let breaker = Arc::new(CircuitBreaker::new(d.breaker_failures, cool_down));
    // Shared with a level connected later in the background, so stats see one set.
    let nodes = node_breakers(d);
    let name = match d.kind {
        DistributedKind::Redis => "redis",
        DistributedKind::Memcached => "memcached",
    };
    let connected = match d.kind {
        DistributedKind::Redis => {
            RedisStore::connect(redis_options(d, clock, nodes.as_ref()).io_runtime(io.cloned()))
                .map(|store| Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn Storage>)
        }
        DistributedKind::Memcached => MemcachedStore::connect(memcached_options(d, clock, nodes.as_ref()))
            .map(|store| Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn Storage>),
    };
    let level = match connected.map_err(in_config_terms) {
        Ok(level) => level,
        // A configuration mistake is not an outage: retrying in the background cannot fix it.
        Err(e) if fallback && !matches!(e, Error::Config { .. }) => {
            let (config, level_clock, level_nodes) = (d.clone(), Arc::clone(clock), nodes.clone());
            let connect: super::deferred::Connect =
                Box::new(move || connect_distributed(&config, &level_clock, level_nodes.as_ref()));
            let deferred = Deferred::start(name, cool_down.max(Duration::from_millis(1)), connect, &e)?;
            Arc::new(Guarded::new(name, deferred, Arc::clone(&breaker)))
        }
        Err(e) => return Err(e),
    };
    Ok(Some((level, breaker, nodes)))
}
