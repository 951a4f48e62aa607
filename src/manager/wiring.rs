//! The levels and the backplane a configuration describes: how `[local]`, `[distributed]`,
//! `[invalidation]` and the tag settings become stores, options and connections.

use std::sync::Arc;
use std::time::Duration;

use super::deferred::Deferred;

use crate::clock::Clock;
use crate::config::{CacheConfig, DistributedCacheConfig, DistributedKind, LocalCacheConfig, LocalKind};
use crate::distributed::runtime::IoRuntime;
use crate::distributed::{
    CircuitBreaker, Guarded, MemcachedOptions, MemcachedStore, RedisOptions, RedisStore,
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
        // The L2's hosts with the L2's TLS settings. A file that cannot be read fails the L2's
        // own start-up, naming its key; here it leaves the defaults.
        with_tls(r.clone(), d).unwrap_or(r)
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

/// A level and the breaker in front of it.
type Breakered = (Arc<dyn Storage>, Arc<CircuitBreaker>);

fn redis_options(d: &DistributedCacheConfig, clock: &Arc<dyn Clock>) -> Result<RedisOptions> {
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
    with_tls(options, d)
}

/// The `tls_*` keys of `[distributed]` on `options`; the files are read here, so a missing one
/// fails start-up naming its key.
#[cfg(feature = "tls")]
fn with_tls(mut options: RedisOptions, d: &DistributedCacheConfig) -> Result<RedisOptions> {
    let read = |field: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Config {
            field: field.to_owned(),
            reason: format!("cannot read {}: {e}; give a readable PEM file", path.display()),
        })
    };
    if let Some(path) = &d.tls_ca_file {
        options = options.tls_root_cert(read("distributed.tls_ca_file", path)?);
    }
    if let (Some(cert), Some(key)) = (&d.tls_cert_file, &d.tls_key_file) {
        options = options.tls_client_cert(
            read("distributed.tls_cert_file", cert)?,
            read("distributed.tls_key_file", key)?,
        );
    }
    Ok(options
        .tls_system_roots(d.tls_system_roots)
        .tls_install_crypto_provider(d.tls_install_crypto_provider))
}

/// Without the `tls` feature the keys are refused by `CacheConfig::validate`.
#[cfg(not(feature = "tls"))]
#[allow(clippy::unnecessary_wraps)]
fn with_tls(options: RedisOptions, _d: &DistributedCacheConfig) -> Result<RedisOptions> {
    Ok(options)
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
        DistributedKind::Redis => redis_options(d, clock)
            .and_then(RedisStore::connect)
            .map(|l| Arc::new(l) as _),
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
/// enabled. The level checks its connection (and credentials) once here. If the server cannot
/// be reached and `fallback` is set, the manager starts anyway with a [`Deferred`] level that
/// connects in the background (retrying every `breaker_cooldown_ms`); otherwise the error is
/// returned. A server that answers that the configuration is wrong ([`Error::Misconfigured`])
/// fails start-up even with `fallback`, unless `start_degraded_on_config_error` is set.
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
    let name = match d.kind {
        DistributedKind::Redis => "redis",
        DistributedKind::Memcached => "memcached",
    };
    let connected = match d.kind {
        DistributedKind::Redis => redis_options(d, clock)
            .and_then(|options| RedisStore::connect(options.io_runtime(io.cloned())))
            .map(|store| Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn Storage>),
        DistributedKind::Memcached => MemcachedStore::connect(memcached_options(d, clock))
            .map(|store| Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn Storage>),
    };
    let level = match connected.map_err(in_config_terms) {
        Ok(level) => level,
        // A configuration mistake is not an outage: retrying in the background cannot fix it.
        // One the server reported (a refused password, say) starts degraded only if asked to.
        Err(e)
            if fallback
                && match e {
                    Error::Config { .. } => false,
                    Error::Misconfigured { .. } => d.start_degraded_on_config_error,
                    _ => true,
                } =>
        {
            let (config, level_clock) = (d.clone(), Arc::clone(clock));
            let connect: super::deferred::Connect =
                Box::new(move || connect_distributed(&config, &level_clock));
            let deferred = Deferred::start(name, cool_down.max(Duration::from_millis(1)), connect, &e)?;
            Arc::new(Guarded::new(name, deferred, Arc::clone(&breaker)))
        }
        Err(e) => return Err(e),
    };
    Ok(Some((level, breaker)))
}
