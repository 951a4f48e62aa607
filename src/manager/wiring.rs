//! The levels and the backplane a configuration describes: how `[local]`, `[distributed]`,
//! `[invalidation]` and the tag settings become stores, options and connections.
//!
//! The Cargo features decide which of them exist here: a level or a backplane compiled out is
//! refused by [`CacheConfig::validate`] with [`Error::FeatureDisabled`] before wiring starts, and
//! again here if a caller got past validation.

use std::sync::Arc;
use std::time::Duration;

use super::deferred::{Connector, Deferred};
use super::l2_keys::L2Keys;
use super::policy::Shared;
use super::tags::TagStore;

use crate::clock::Clock;
use crate::config::{CacheConfig, DistributedCacheConfig, DistributedKind, LocalCacheConfig, LocalKind};
#[cfg(feature = "redis")]
use crate::distributed::runtime::IoRuntime;
use crate::distributed::{CircuitBreaker, Guarded, NodeBreakers};
#[cfg(feature = "memcached")]
use crate::distributed::{MemcachedOptions, MemcachedStore};
#[cfg(feature = "redis")]
use crate::distributed::{RedisOptions, RedisStore};
use crate::error::{Error, Result};
#[cfg(feature = "redis")]
use crate::invalidation::{Backplane, BackplaneOptions, RefusalHook};
use crate::local::file::{FileStore, FileStoreOptions};
use crate::local::memory::MemoryStore;
#[cfg(feature = "redb")]
use crate::local::redb::{RedbOptions, RedbStore, REDB_FILE_NAME};
use crate::storage::{DistributedStorage, LocalStorage};

/// The I/O thread the Redis L2, the backplane and tags share. Without the `redis` feature there
/// is nothing to share it: the type has no values.
#[cfg(feature = "redis")]
pub(super) type SharedIo = IoRuntime;
/// The I/O thread the Redis L2, the backplane and tags share. Without the `redis` feature there
/// is nothing to share it: the type has no values.
#[cfg(not(feature = "redis"))]
pub(super) type SharedIo = std::convert::Infallible;

/// Starts the one I/O thread for the Redis L2, the backplane and tags, if any of them is
/// configured.
#[cfg(feature = "redis")]
pub(super) fn shared_io(config: &CacheConfig) -> Result<Option<SharedIo>> {
    tag_redis(config)?
        .is_some()
        .then(|| IoRuntime::start("redis", "the Redis servers configured"))
        .transpose()
}

/// Without the `redis` feature nothing needs a shared I/O thread.
#[cfg(not(feature = "redis"))]
pub(super) fn shared_io(_config: &CacheConfig) -> Result<Option<SharedIo>> {
    Ok(None)
}

/// The deadline of a call on the tag sets: the larger of the L2's and the backplane's, as the
/// sets are on either's Redis.
#[cfg(feature = "redis")]
fn tag_deadline(config: &CacheConfig) -> Duration {
    Duration::from_millis(
        config
            .distributed
            .timeout_ms
            .max(config.invalidation.publish_timeout_ms),
    )
}

/// The tag store on the Redis of the tag sets, if the configuration has one (see [`tag_redis`]).
#[cfg(feature = "redis")]
pub(super) fn build_tags(config: &CacheConfig, io: Option<&SharedIo>) -> Result<Option<TagStore>> {
    let Some(options) = tag_redis(config)? else {
        return Ok(None);
    };
    TagStore::new(
        options.io_runtime(io.cloned()),
        config.distributed.key_prefix.clone(),
        tag_deadline(config),
    )
    .map(Some)
    .map_err(|e| in_backplane_terms(config, e))
}

/// Without the `redis` feature there is no Redis for tag sets.
#[cfg(not(feature = "redis"))]
pub(super) fn build_tags(_config: &CacheConfig, _io: Option<&SharedIo>) -> Result<Option<TagStore>> {
    Ok(None)
}

/// How a prefix invalidation deletes L2's keys (see [`L2Keys`]): a Redis L2 that
/// `[distributed]` describes through a store on its own hosts, credentials and TLS settings,
/// with its timeout, never the backplane's (whose Redis holds none of L2's values when
/// `[invalidation] hosts` names another), connected on the first prefix invalidation; a
/// Memcached L2 built from `[distributed]` known to keep them; any other L2 given to the builder
/// (`own_l2`) asked to delete them itself.
pub(super) fn build_l2_keys(
    config: &CacheConfig,
    io: Option<&SharedIo>,
    (l2_present, own_l2): (bool, bool),
) -> Result<L2Keys> {
    #[cfg(not(feature = "redis"))]
    let _ = io; // only a Redis L2 is walked
    if !l2_present {
        return Ok(L2Keys::NoL2);
    }
    // An L2 given to the builder is walked only as `[distributed]` describes it (a Redis
    // level given with its own settings, say); any other is asked, as it alone can list its
    // keys.
    if !config.distributed.enabled {
        return Ok(L2Keys::Asked { level: "L2" });
    }
    match config.distributed.kind {
        DistributedKind::Memcached if own_l2 => Ok(L2Keys::Asked { level: "memcached" }),
        DistributedKind::Memcached => Ok(L2Keys::Unlisted { level: "memcached" }),
        #[cfg(feature = "redis")]
        DistributedKind::Redis => TagStore::new(
            l2_redis(config)?.io_runtime(io.cloned()),
            config.distributed.key_prefix.clone(),
            Duration::from_millis(config.distributed.timeout_ms),
        )
        .map(|store| L2Keys::Walked(Box::new(store)))
        .map_err(in_config_terms),
        #[cfg(not(feature = "redis"))]
        DistributedKind::Redis => Err(feature_disabled_l2(DistributedKind::Redis)),
    }
}

/// Connects the backplane if `invalidation.enabled`, handing what it hears to `shared`.
#[cfg(feature = "redis")]
pub(super) fn connect_backplane(
    config: &CacheConfig,
    shared: &Arc<Shared>,
    io: Option<&SharedIo>,
) -> Result<()> {
    if !config.invalidation.enabled {
        return Ok(());
    }
    // The subscriber's and the re-send task's refusals have no caller to reach: counted with
    // the publishes' (`count_publish`), where an operator looks for what to fix.
    let weak = Arc::downgrade(shared);
    let hook = RefusalHook(Arc::new(move |e: &Error| {
        if let Some(shared) = weak.upgrade() {
            shared.metrics.distributed.config_error("backplane", e);
        }
    }));
    let options = backplane_options(config)?
        .io_runtime(io.cloned())
        .on_refusal(hook);
    let receiver = Arc::new(super::backplane::Receiver {
        shared: Arc::downgrade(shared),
    });
    let backplane = Backplane::connect(options, receiver).map_err(|e| in_backplane_terms(config, e))?;
    let _ = shared.backplane.set(backplane);
    Ok(())
}

/// Without the `redis` feature there is no backplane (validation refuses `invalidation.enabled`).
#[cfg(not(feature = "redis"))]
pub(super) fn connect_backplane(
    _config: &CacheConfig,
    _shared: &Arc<Shared>,
    _io: Option<&SharedIo>,
) -> Result<()> {
    Ok(())
}

#[cfg(feature = "redis")]
/// The Redis of the tag sets: the backplane's, or else the Redis L2's.
fn tag_redis(config: &CacheConfig) -> Result<Option<RedisOptions>> {
    let d = &config.distributed;
    let redis_l2 = config.use_multi_level && d.enabled && d.kind == DistributedKind::Redis;
    if config.invalidation.enabled || redis_l2 {
        backplane_redis(config).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(feature = "redis")]
/// The Redis L2's hosts, credentials and TLS settings, for a connection besides the level's
/// own (the backplane's or the tag sets' when `[invalidation]` names no hosts, the walk of a
/// prefix invalidation).
fn l2_redis(config: &CacheConfig) -> Result<RedisOptions> {
    let d = &config.distributed;
    let mut r = RedisOptions::with_hosts(d.hosts.iter().cloned()).cluster(d.cluster);
    if let Some(user) = &d.username {
        r = r.username(user.clone());
    }
    if let Some(password) = &d.password {
        r = r.password(password.clone());
    }
    // The L2's hosts with the L2's TLS settings, a file that cannot be read refused here
    // too: without an L2 (`use_multi_level = false`) nothing else would name it, and the
    // connection would go on without the CA, client certificate or choice of provider.
    Ok(with_tls(r, d)?.connect_timeout(connect_timeout(config)))
}

#[cfg(feature = "redis")]
/// How long a connection besides the L2's own may take to open.
fn connect_timeout(config: &CacheConfig) -> Duration {
    let (d, inv) = (&config.distributed, &config.invalidation);
    Duration::from_millis(d.timeout_ms.max(inv.publish_timeout_ms).max(500))
}

#[cfg(feature = "redis")]
/// The backplane's Redis from `[invalidation]` (hosts default to the Redis L2's).
fn backplane_redis(config: &CacheConfig) -> Result<RedisOptions> {
    let inv = &config.invalidation;
    let d = &config.distributed;
    let redis = if inv.hosts.is_empty() || !inv.enabled {
        l2_redis(config)?
    } else {
        let mut r = RedisOptions::with_hosts(inv.hosts.iter().cloned()).cluster(inv.cluster);
        if let Some(user) = &inv.username {
            r = r.username(user.clone());
        }
        if let Some(password) = &inv.password {
            r = r.password(password.clone());
        }
        // Hosts of its own, but the TLS settings of `[distributed]`: there are no others, and
        // without them a private CA could not be trusted, and the choice not to install a
        // crypto provider would be overridden.
        with_tls(r, d)?
    };
    Ok(redis.connect_timeout(connect_timeout(config)))
}

/// A backplane error in the terms of the section its hosts came from.
#[cfg(feature = "redis")]
fn in_backplane_terms(config: &CacheConfig, err: Error) -> Error {
    let own_hosts = config.invalidation.enabled && !config.invalidation.hosts.is_empty();
    in_section(err, if own_hosts { "invalidation" } else { "distributed" })
}

#[cfg(feature = "redis")]
/// The backplane's options from `[invalidation]`.
fn backplane_options(config: &CacheConfig) -> Result<BackplaneOptions> {
    let inv = &config.invalidation;
    Ok(BackplaneOptions::new(backplane_redis(config)?)
        .channel(inv.channel.clone())
        .staleness_bound(Duration::from_millis(inv.staleness_bound_ms))
        .publish_timeout(Duration::from_millis(inv.publish_timeout_ms))
        .start_offline(config.fallback_on_error)
        // The one setting for the distributed side: an L2 and its backplane usually share the
        // hosts and credentials, so a refusal that starts one degraded would fail the other.
        .start_offline_when_refused(config.distributed.start_degraded_on_config_error)
        // A cancelled write's L2 command may run after its first message (see
        // `Announcement`): the second one comes once it has usually run or failed, by the
        // deadline of the slowest L2 step (a prefix invalidation's, through the tag store).
        .repeat_later_after(if config.distributed.enabled {
            tag_deadline(config)
        } else {
            Duration::ZERO
        }))
}

/// An L1, the same as a file store when it is one, and its directory when it has one.
type Local = (
    Arc<dyn LocalStorage>,
    Option<Arc<FileStore>>,
    Option<std::path::PathBuf>,
);

/// Opens the L1 that `local` describes.
/// `keep_expired` is the fail-safe window: how long the level keeps expired entries.
pub(super) fn build_local(
    local: &LocalCacheConfig,
    keep_expired: Duration,
    clock: &Arc<dyn Clock>,
) -> Result<Local> {
    let max = local.effective_max_size();
    let dir = local.effective_path().to_path_buf();
    Ok(match local.kind {
        LocalKind::File => {
            let mut options = FileStoreOptions::default()
                .durability(local.effective_durability())
                .keep_expired(keep_expired)
                .map_reads(local.map_reads)
                .clock(Arc::clone(clock));
            // Unset settings are the ones the store recorded (its application's bound).
            if let Some(mb) = local.max_size {
                options = options.max_size_mb(mb);
            }
            if let Some(mode) = local.file_mode {
                options = options.file_mode(mode);
            }
            let file = Arc::new(FileStore::open(&dir, options).map_err(in_local_terms)?);
            (file.clone(), Some(file), Some(dir))
        }
        LocalKind::Memory => (
            Arc::new(
                MemoryStore::with_clock(max, Arc::clone(clock))?
                    .with_max_bytes(local.memory_max_mb.saturating_mul(1 << 20))
                    .keep_expired(keep_expired),
            ),
            None,
            None,
        ),
        #[cfg(feature = "redb")]
        LocalKind::Redb => (
            Arc::new(RedbStore::open(dir.join(REDB_FILE_NAME), {
                let options = RedbOptions::default()
                    .max_size_mb(max)
                    .durability(local.effective_durability())
                    .clock(Arc::clone(clock));
                match local.file_mode {
                    Some(mode) => options.file_mode(mode),
                    None => options,
                }
            })?),
            None,
            Some(dir),
        ),
        #[cfg(not(feature = "redb"))]
        LocalKind::Redb => return Err(feature_disabled_redb()),
    })
}

/// A redb L1 in a build without the `redb` feature (validation refuses it first).
#[cfg(not(feature = "redb"))]
fn feature_disabled_redb() -> Error {
    Error::FeatureDisabled {
        field: "local.type".to_owned(),
        what: "a redb L1 (type = \"redb\")".to_owned(),
        feature: "redb",
    }
}

/// An L2 kind this build was compiled without (validation refuses it first).
#[cfg(not(all(feature = "redis", feature = "memcached")))]
fn feature_disabled_l2(kind: DistributedKind) -> Error {
    let (what, feature) = match kind {
        DistributedKind::Redis => ("a Redis L2 (type = \"redis\")", "redis"),
        DistributedKind::Memcached => ("a Memcached L2 (type = \"memcached\")", "memcached"),
    };
    Error::FeatureDisabled {
        field: "distributed.type".to_owned(),
        what: what.to_owned(),
        feature,
    }
}

/// A level, the breaker in front of it, and its per-node breakers (a multi-node level).
type Breakered = (
    Arc<dyn DistributedStorage>,
    Arc<CircuitBreaker>,
    Option<Arc<NodeBreakers>>,
    // The connect loop of a level that could not be reached at start-up, for `Workers`.
    Option<Connector>,
);

/// Per-node breakers for a level whose keys spread over nodes (Memcached, Redis Cluster): a dead
/// node then fails fast for its own keys only. A standalone Redis is one node: the level's
/// breaker is its breaker.
fn node_breakers(d: &DistributedCacheConfig) -> Option<Arc<NodeBreakers>> {
    let name = match d.kind {
        DistributedKind::Memcached => "memcached",
        DistributedKind::Redis if l2_cluster(d) => "redis",
        DistributedKind::Redis => return None,
    };
    let cool_down = Duration::from_millis(d.breaker_cooldown_ms);
    Some(Arc::new(NodeBreakers::new(name, d.breaker_failures, cool_down)))
}

/// Whether the Redis L2 is a Cluster: `cluster = true`, or a host named by a cluster URL
/// (`redis+cluster://`), which `RedisStore` takes for one whatever `cluster` says. Read from
/// `cluster` alone, such an L2 had no node breakers (and a prefix invalidation, which took it
/// for a standalone server whose keyspace one `SCAN` walks, failed on every call: `CROSSSLOT`).
#[cfg(feature = "redis")]
fn l2_cluster(d: &DistributedCacheConfig) -> bool {
    RedisOptions::with_hosts(d.hosts.iter().cloned())
        .cluster(d.cluster)
        .resolve_targets()
        .map_or(d.cluster, |(_, cluster)| cluster)
}

/// Without the `redis` feature no Redis L2 is connected.
#[cfg(not(feature = "redis"))]
fn l2_cluster(d: &DistributedCacheConfig) -> bool {
    d.cluster
}

#[cfg(feature = "redis")]
fn redis_options(
    d: &DistributedCacheConfig,
    clock: &Arc<dyn Clock>,
    nodes: Option<&Arc<NodeBreakers>>,
) -> Result<RedisOptions> {
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
#[cfg(all(feature = "redis", not(feature = "tls")))]
#[allow(clippy::unnecessary_wraps)]
fn with_tls(options: RedisOptions, _d: &DistributedCacheConfig) -> Result<RedisOptions> {
    Ok(options)
}

#[cfg(feature = "memcached")]
fn memcached_options(
    d: &DistributedCacheConfig,
    clock: &Arc<dyn Clock>,
    nodes: Option<&Arc<NodeBreakers>>,
) -> MemcachedOptions {
    let mut options = MemcachedOptions::with_hosts(d.hosts.iter().cloned())
        .prefix(d.key_prefix.clone())
        .timeout(Duration::from_millis(d.timeout_ms))
        .default_ttl(Some(d.ttl))
        .clock(Arc::clone(clock));
    if let Some(bytes) = d.max_item_size {
        options = options.max_item_size(bytes);
    }
    match nodes {
        Some(nodes) => options.node_breakers(Arc::clone(nodes)),
        None => options,
    }
}

/// What the configured L2 refuses before it is connected (see `Deferred`): the checks its
/// connected store makes that need no server. Nothing if its options cannot be built (the
/// connect then fails the same way, and nothing is written to it).
fn check_before_connect(d: &DistributedCacheConfig, clock: &Arc<dyn Clock>) -> super::deferred::ValueCheck {
    #[cfg(not(any(feature = "redis", feature = "memcached")))]
    let _ = clock; // only the levels compiled out would take it
    match d.kind {
        #[cfg(feature = "redis")]
        DistributedKind::Redis => match redis_options(d, clock, None).and_then(|o| o.value_check()) {
            Ok(check) => Box::new(check),
            Err(_) => Box::new(|_: &str, _: usize| Ok(())),
        },
        #[cfg(feature = "memcached")]
        DistributedKind::Memcached => Box::new(memcached_options(d, clock, None).value_check()),
        #[cfg(not(all(feature = "redis", feature = "memcached")))]
        _ => Box::new(|_: &str, _: usize| Ok(())),
    }
}

/// Connects the configured L2 (for the background connector).
fn connect_distributed(
    d: &DistributedCacheConfig,
    clock: &Arc<dyn Clock>,
    nodes: Option<&Arc<NodeBreakers>>,
) -> Result<Arc<dyn DistributedStorage>> {
    #[cfg(not(any(feature = "redis", feature = "memcached")))]
    let _ = (clock, nodes); // only the levels compiled out would take them
    let level: Result<Arc<dyn DistributedStorage>> = match d.kind {
        #[cfg(feature = "redis")]
        DistributedKind::Redis => redis_options(d, clock, nodes)
            .and_then(RedisStore::connect)
            .map(|l| Arc::new(l) as _),
        #[cfg(feature = "memcached")]
        DistributedKind::Memcached => {
            MemcachedStore::connect(memcached_options(d, clock, nodes)).map(|l| Arc::new(l) as _)
        }
        #[cfg(not(all(feature = "redis", feature = "memcached")))]
        kind => Err(feature_disabled_l2(kind)),
    };
    level.map_err(in_config_terms)
}

/// A level names its own option (`redis.hosts[0]`); a manager built from configuration names
/// the configuration field the user wrote (`distributed.hosts[0]`).
fn in_config_terms(err: Error) -> Error {
    in_section(err, "distributed")
}

/// A Redis or Memcached options' error in the terms of `section`, the part of the configuration
/// its settings came from: `redis.hosts` is not what the user wrote.
fn in_section(err: Error, section: &str) -> Error {
    match err {
        Error::Config { field, reason } => {
            let field = match field.split_once('.') {
                Some(("redis" | "memcached", rest)) => format!("{section}.{rest}"),
                _ => field,
            };
            Error::Config { field, reason }
        }
        other => other,
    }
}

/// A file store options' error in the terms of `[local]`.
fn in_local_terms(err: Error) -> Error {
    match err {
        Error::Config { field, reason } => {
            let field = match field.as_str() {
                "max_size_mb" => "local.max_size".to_owned(),
                "file_mode" | "durability" => format!("local.{field}"),
                _ => field,
            };
            let reason = reason.replace("max_size_mb", "local.max_size");
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
    io: Option<&SharedIo>,
) -> Result<Option<Breakered>> {
    #[cfg(not(feature = "redis"))]
    let _ = io; // only a Redis L2 shares the I/O thread
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
        #[cfg(feature = "redis")]
        DistributedKind::Redis => redis_options(d, clock, nodes.as_ref())
            .and_then(|options| RedisStore::connect(options.io_runtime(io.cloned())))
            .map(|store| {
                Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn DistributedStorage>
            }),
        #[cfg(feature = "memcached")]
        DistributedKind::Memcached => MemcachedStore::connect(memcached_options(d, clock, nodes.as_ref()))
            .map(|store| {
                Arc::new(Guarded::new(name, store, Arc::clone(&breaker))) as Arc<dyn DistributedStorage>
            }),
        #[cfg(not(all(feature = "redis", feature = "memcached")))]
        kind => Err(feature_disabled_l2(kind)),
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
            let (config, level_clock, level_nodes) = (d.clone(), Arc::clone(clock), nodes.clone());
            let connect: super::deferred::Connect =
                Box::new(move || connect_distributed(&config, &level_clock, level_nodes.as_ref()));
            let check = check_before_connect(d, clock);
            let (deferred, connector) =
                Deferred::new(name, cool_down.max(Duration::from_millis(1)), connect, check, e);
            let level: Arc<dyn DistributedStorage> =
                Arc::new(Guarded::new(name, deferred, Arc::clone(&breaker)));
            return Ok(Some((level, breaker, nodes, Some(connector))));
        }
        Err(e) => return Err(e),
    };
    Ok(Some((level, breaker, nodes, None)))
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    use super::*;

    /// Redis's 512 MiB per string is known without a connection: a Redis not connected yet
    /// refuses a longer value as the connected level does. Only the length is checked, so no
    /// value that large is made.
    #[test]
    fn a_redis_not_connected_yet_refuses_a_value_over_512_mib() {
        let d = DistributedCacheConfig {
            kind: DistributedKind::Redis,
            hosts: vec!["127.0.0.1:1".to_owned()],
            ..DistributedCacheConfig::default()
        };
        let clock: Arc<dyn Clock> = Arc::new(crate::clock::SystemClock);
        let check = check_before_connect(&d, &clock);
        let max = 512 * 1024 * 1024 - crate::distributed::envelope::HEADER_LEN;
        match check("k", max + 1) {
            Err(Error::ValueTooLarge { key, len, max: m, .. }) => {
                assert_eq!((key.as_str(), len, m), ("k", max + 1, max));
            }
            other => panic!("a value over 512 MiB was not refused: {other:?}"),
        }
        check("k", max).unwrap();
    }
}
