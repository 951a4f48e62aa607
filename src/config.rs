//! Configuration of a [`CacheManager`](crate::CacheManager): which levels, their sizes and TTLs.
//!
//! Deserializable with serde (TOML through [`CacheConfig::from_toml_str`]); every field has a
//! default, and [`CacheConfig::validate`] names the field at fault. TTLs and intervals are given
//! in seconds in TOML (`ttl = 300`, or `ttl = 0.5`).
//!
//! ```
//! # #[cfg(feature = "redis")] { // a Redis L2 needs the `redis` feature
//! use uno_cache::{CacheConfig, LocalKind};
//! let config = CacheConfig::from_toml_str(r#"
//!     use_multi_level = true
//!     fallback_on_error = true
//!
//!     [local]
//!     type = "memory"
//!     max_size = 10000   # items for memory, MiB for file and redb
//!     ttl = 300          # seconds
//!
//!     [distributed]
//!     enabled = true
//!     type = "redis"
//!     hosts = ["127.0.0.1:6379"]
//!     ttl = 3600
//! "#)?;
//! assert_eq!(config.local.kind, LocalKind::Memory);
//! # }
//! # Ok::<(), uno_cache::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::replay::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};

/// Where the file and redb levels keep their data when `local.path` is not set: `uno-cache-data`
/// in the working directory.
pub const DEFAULT_LOCAL_PATH: &str = "uno-cache-data";

/// Default `local.max_size` for `type = "memory"`, in items.
pub const DEFAULT_MEMORY_MAX_ITEMS: u64 = 10_000;

/// Default `local.max_size` for `type = "file"` and `type = "redb"`, in MiB.
pub const DEFAULT_DISK_MAX_MB: u64 = 1024;

/// The whole cache configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Use the distributed level (L2) when it is enabled (default true). `false`: L1 alone.
    pub use_multi_level: bool,
    /// Hide L2 failures (default true): counted, logged, and treated as a miss on read and as
    /// L1-only on write; an L2 unreachable at start-up is connected in the background meanwhile.
    /// `false`: the error reaches the caller (and an unreachable L2 fails start-up).
    pub fallback_on_error: bool,
    /// How typed values become bytes: `"bincode"` (default) or `"json"`.
    pub codec: CodecName,
    /// The local level (L1).
    pub local: LocalCacheConfig,
    /// The distributed level (L2).
    pub distributed: DistributedCacheConfig,
    /// What happens to writes and deletes that cannot reach L2 (`[offline]`).
    pub offline: OfflineConfig,
    /// How far L1 entries that may be stale are trusted (`[consistency]`).
    pub consistency: ConsistencyConfig,
    /// The cross-process invalidation backplane (`[invalidation]`).
    pub invalidation: InvalidationConfig,
    /// Fail-safe stale values and loader timeouts (`[loader]`).
    pub loader: LoaderConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            use_multi_level: true,
            fallback_on_error: true,
            codec: CodecName::default(),
            local: LocalCacheConfig::default(),
            distributed: DistributedCacheConfig::default(),
            offline: OfflineConfig::default(),
            consistency: ConsistencyConfig::default(),
            invalidation: InvalidationConfig::default(),
            loader: LoaderConfig::default(),
        }
    }
}

/// `[loader]`: what the manager serves when a fresh value cannot be had — the data source
/// behind [`get_or_set_with`](crate::CacheManager::get_or_set_with) fails or is slow, or L2 is
/// unreachable — and how long it waits for a loader.
///
/// **Fail-safe.** With `fail_safe_max_duration` above zero, an entry that expires is kept that
/// much longer in the local level (the file store keeps it on disk, so it survives a restart).
/// A plain `get` never returns it. It is served, marked stale, when the loader fails or times
/// out, and by [`get_with_state`](crate::CacheManager::get_with_state) when no level has a fresh
/// value. After a failed load, the stale value counts as fresh for `fail_safe_throttle`, so a
/// dead source is asked once per throttle period, not on every read. Deletes, invalidations and
/// prefix or tag invalidation remove stale copies as they remove values.
///
/// **Timeouts** ([`get_or_load`](crate::CacheManager::get_or_load) and its async form; the
/// loader then runs off the caller's thread or task). They count from the start of the key's
/// load, which its callers share: with a stale value at hand, a caller gets it after
/// `soft_timeout_ms` and the load goes on in the background to refresh the entry; after
/// `hard_timeout_ms` a caller gets the stale value or [`Error::LoaderTimeout`](crate::Error),
/// and the key's load slot is given up, so the next caller starts a new load.
///
/// **Refresh-ahead.** With `refresh_ahead` set (say 0.8), a `get_or_load` hit on a value this
/// process loaded, once that share of its L1 TTL has passed, starts one background reload
/// through the call's loader and returns the current value at once: hot keys never expire
/// under load. Reloads are single-flight per key and at most `refresh_ahead_max` run at once; a
/// failed one keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// How long an expired entry is kept for fail-safe, in seconds (default 0: off). Needs
    /// `local.type = "file"` or `"memory"`.
    #[serde(with = "seconds")]
    pub fail_safe_max_duration: Duration,
    /// How long a stale value served after a failed load counts as fresh for the loading
    /// calls, in seconds (default 30; 0: ask the source on every call).
    #[serde(with = "seconds")]
    pub fail_safe_throttle: Duration,
    /// With a stale value, how long a caller waits for the load, in milliseconds (default 0:
    /// no soft timeout).
    pub soft_timeout_ms: u64,
    /// How long any caller waits for the load, in milliseconds (default 0: no limit).
    pub hard_timeout_ms: u64,
    /// How long the answer "absent" of a loader of
    /// [`get_or_load_optional`](crate::CacheManager::get_or_load_optional) is cached, in seconds
    /// (default 30; capped by the call's TTL; 0: not cached).
    #[serde(with = "seconds")]
    pub absent_ttl: Duration,
    /// The share of a loaded value's L1 TTL after which a hit reloads it in the background
    /// (default 0: off; otherwise above 0 and below 1).
    pub refresh_ahead: f64,
    /// Background reloads running at once, at most (default 16).
    pub refresh_ahead_max: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            fail_safe_max_duration: Duration::ZERO,
            fail_safe_throttle: Duration::from_secs(30),
            soft_timeout_ms: 0,
            hard_timeout_ms: 0,
            absent_ttl: Duration::from_secs(30),
            refresh_ahead: 0.0,
            refresh_ahead_max: 16,
        }
    }
}

/// The offline mode (`[offline]`): writes and deletes that could not reach L2.
///
/// With `fallback_on_error = true`, a `set` or `delete` whose L2 call failed (or was skipped by
/// the open circuit breaker) is queued in a durable [replay queue](crate::replay) and replayed in
/// order (deletes first, a later delete winning over an earlier set of the same key) when L2
/// answers again: on a background tick every `replay_interval_ms`, and at once after an L2 call
/// succeeds. While a key has a queued op, L1 is the truth for it: a read never backfills it from
/// L2, and a read that misses L1 does not return L2's (stale) value.
///
/// **When the queue is full** (`replay_max_bytes` or `replay_max_entries`): a set that does not
/// fit is queued as a delete of its key (L2 loses the key rather than keeping a stale value); a
/// delete replaces its key's pending op and always fits; when even a new key's delete does not
/// fit, the op is lost and the queue is marked **overflowed** (durably, in the stats as
/// `consistency.replay_overflowed`): L2 may then hold stale values until an operator reconciles
/// it and calls [`CacheManager::clear_replay_overflow`](crate::CacheManager::clear_replay_overflow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// Queue and replay L2 writes that failed (default true; needs a directory, see
    /// `replay_dir`, and `fallback_on_error = true`).
    pub replay: bool,
    /// Where the queue's files live (`replay.log`, `replay.lock`). Default: the L1 directory
    /// (`local.path`) for `type = "file"` and `"redb"`; with `type = "memory"` or an L1 given to
    /// the builder there is no queue unless this is set.
    pub replay_dir: Option<PathBuf>,
    /// Bound on the queued bytes (default [`DEFAULT_MAX_BYTES`](crate::replay::DEFAULT_MAX_BYTES)).
    pub replay_max_bytes: u64,
    /// Bound on the queued keys (default [`DEFAULT_MAX_ENTRIES`](crate::replay::DEFAULT_MAX_ENTRIES)).
    pub replay_max_entries: usize,
    /// How often a background thread tries to replay a non-empty queue, in milliseconds
    /// (default 1000). An open breaker skips the attempt until its cool-down has passed.
    pub replay_interval_ms: u64,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            replay: true,
            replay_dir: None,
            replay_max_bytes: DEFAULT_MAX_BYTES,
            replay_max_entries: DEFAULT_MAX_ENTRIES,
            replay_interval_ms: 1000,
        }
    }
}

/// What to do with an L1 entry that may be stale (`consistency.restart_policy`): one restored
/// from disk at start-up, or one written before the invalidation backplane lost its
/// subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// On its first read, compare it with L2 (default): same bytes → trusted and served; other
    /// bytes → replaced by L2's; missing in L2 → dropped (a miss). While L2 cannot be reached it
    /// is served as is (offline mode). A key with a queued replay op is served from L1 (L1 is
    /// the truth for it).
    #[default]
    Revalidate,
    /// Serve entries restored at start-up without asking L2. Entries made suspect by a lost
    /// backplane subscription are still revalidated (and, from then on, restored ones too).
    Trust,
    /// Drop a suspect entry on its first read and read L2 as on a miss; while L2 is down it is a
    /// miss (nothing possibly stale is served).
    Drop,
}

/// `[consistency]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// `"revalidate"` (default), `"trust"` or `"drop"`; see [`RestartPolicy`]. Applies only with
    /// an L2 (without one there is nothing to compare with, and entries are served).
    pub restart_policy: RestartPolicy,
}

/// The invalidation backplane (`[invalidation]`): Redis pub/sub between instances that share an
/// L2. Every set and delete publishes the key; every other instance drops it from its L1.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvalidationConfig {
    /// Whether to connect the backplane (default false).
    pub enabled: bool,
    /// The backplane's Redis (`host:port`, or Cluster seed nodes). Default: the L2's hosts when
    /// the L2 is Redis (with its cluster flag and credentials); required when L2 is Memcached.
    pub hosts: Vec<String>,
    /// Redis Cluster mode for `hosts` (default false; ignored when `hosts` is empty).
    pub cluster: bool,
    /// User name for `hosts` (ignored when `hosts` is empty).
    pub username: Option<String>,
    /// Password for `hosts` (never printed by `Debug`; ignored when `hosts` is empty).
    pub password: Option<String>,
    /// The pub/sub channel (default `uno-cache:invalidate`). Instances that share an L2 must
    /// share it.
    pub channel: String,
    /// The longest a dead subscription goes unnoticed, in milliseconds (default 1000, at least
    /// 30). Until it is restored, every L1 hit is checked against L2.
    pub staleness_bound_ms: u64,
    /// Deadline of one publish, in milliseconds (default 100).
    pub publish_timeout_ms: u64,
}

impl Default for InvalidationConfig {
    fn default() -> Self {
        InvalidationConfig {
            enabled: false,
            hosts: Vec::new(),
            cluster: false,
            username: None,
            password: None,
            channel: crate::invalidation::DEFAULT_CHANNEL.to_owned(),
            staleness_bound_ms: 1000,
            publish_timeout_ms: 100,
        }
    }
}

impl std::fmt::Debug for InvalidationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidationConfig")
            .field("enabled", &self.enabled)
            .field("hosts", &self.hosts)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("channel", &self.channel)
            .field("staleness_bound_ms", &self.staleness_bound_ms)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .finish()
    }
}

/// The codec named in configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecName {
    /// bincode 2 (compact, fast).
    #[default]
    Bincode,
    /// JSON (readable by other tools).
    Json,
}

impl CodecName {
    /// The codec itself.
    #[must_use]
    pub fn codec(self) -> Codec {
        match self {
            CodecName::Bincode => Codec::bincode(),
            CodecName::Json => Codec::json(),
        }
    }
}

/// Which implementation serves as L1 (`local.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    /// [`FileStore`](crate::FileStore): persistent, crash-safe (default).
    #[default]
    File,
    /// [`MemoryStore`](crate::MemoryStore): in process, bounded by item count.
    Memory,
    /// [`RedbStore`](crate::RedbStore): persistent, in a redb database.
    Redb,
}

/// When the file or redb level makes writes durable (`local.durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// Only on flush and close.
    None,
    /// Group commit every `local.durability_interval_ms` (default).
    #[default]
    Periodic,
    /// Before every write returns.
    EveryWrite,
}

/// The local level (`[local]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCacheConfig {
    /// `"file"` (default), `"memory"` or `"redb"`. The TOML key is `type`.
    #[serde(rename = "type")]
    pub kind: LocalKind,
    /// Size bound: items for memory (default [`DEFAULT_MEMORY_MAX_ITEMS`]), MiB for file and redb
    /// (default [`DEFAULT_DISK_MAX_MB`]). `None` means the default for the type, except for an
    /// existing file store, which keeps the bound it recorded (set, the bound is recorded).
    pub max_size: Option<u64>,
    /// The longest an entry lives in L1, and the TTL of a `set` without one (default 300 s). In
    /// TOML, seconds.
    #[serde(with = "seconds")]
    pub ttl: Duration,
    /// Directory of the file or redb level (default [`DEFAULT_LOCAL_PATH`], relative to the
    /// working directory). The redb database is the file `cache.redb` inside it.
    pub path: Option<PathBuf>,
    /// `"none"`, `"periodic"` (default) or `"every_write"`.
    pub durability: DurabilityMode,
    /// The group-commit interval of `durability = "periodic"`, in milliseconds (default 1000).
    pub durability_interval_ms: u64,
    /// Permission bits of the files the file store and the replay queue create, e.g.
    /// `file_mode = 0o640` in TOML. `None` (default): `0o600` for a new store, the recorded mode
    /// for an existing one. A directory they create gets the same bits plus search where read is
    /// allowed (`0o700` by default). See [`FileStoreOptions::file_mode`](crate::FileStoreOptions::file_mode).
    pub file_mode: Option<u32>,
    /// The memory tier in front of a file or redb L1: how many decoded values it keeps (default
    /// [`DEFAULT_MEMORY_TIER_ITEMS`]; 0 turns it off; ignored for `type = "memory"`, which is
    /// already in memory). A typed read it answers costs no read of the file, no decode and no
    /// copy; see [`HotTier`](crate::local::hot::HotTier).
    pub memory_items: u64,
}

/// Default bound of the memory tier in front of a persistent L1: 10 000 decoded values. On by
/// default because a typed hit there is several times cheaper than a file-store hit (no mmap
/// read, CRC or decode), and 10 000 small values cost a few MB of RAM, which a desktop or edge
/// process can spare; set `memory_items = 0` where RAM is tighter than that.
pub const DEFAULT_MEMORY_TIER_ITEMS: u64 = 10_000;

impl Default for LocalCacheConfig {
    fn default() -> Self {
        LocalCacheConfig {
            kind: LocalKind::default(),
            max_size: None,
            ttl: Duration::from_secs(300),
            path: None,
            durability: DurabilityMode::default(),
            durability_interval_ms: 1000,
            file_mode: None,
            memory_items: DEFAULT_MEMORY_TIER_ITEMS,
        }
    }
}

impl LocalCacheConfig {
    /// `max_size`, or the default for the type.
    #[must_use]
    pub fn effective_max_size(&self) -> u64 {
        self.max_size.unwrap_or(match self.kind {
            LocalKind::Memory => DEFAULT_MEMORY_MAX_ITEMS,
            LocalKind::File | LocalKind::Redb => DEFAULT_DISK_MAX_MB,
        })
    }

    /// `path`, or [`DEFAULT_LOCAL_PATH`].
    #[must_use]
    pub fn effective_path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(DEFAULT_LOCAL_PATH))
    }

    /// The file store's durability policy.
    #[must_use]
    pub fn effective_durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::None => Durability::None,
            DurabilityMode::Periodic => {
                Durability::Periodic(Duration::from_millis(self.durability_interval_ms))
            }
            DurabilityMode::EveryWrite => Durability::EveryWrite,
        }
    }
}

/// Which implementation serves as L2 (`distributed.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DistributedKind {
    /// Redis or Redis Cluster (default).
    #[default]
    Redis,
    /// Memcached, one or more hosts.
    Memcached,
}

/// When a write reaches L2 (`distributed.write_mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// The caller waits for L2 (default): an L2 error reaches it as `fallback_on_error` says,
    /// and another instance reads the new value from L2 as soon as the call returns.
    #[default]
    Through,
    /// The caller waits for L1 only; a writer thread sends queued L2 writes in batches, newest
    /// value per key. L2 lags by about one batch; its errors are counted and (in offline mode)
    /// replayed, never returned; a crash loses the queued L2 writes (L1 keeps them). Deletes
    /// still wait for L2. See the `manager::behind` module docs.
    Behind,
}

/// The distributed level (`[distributed]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedCacheConfig {
    /// Whether there is an L2 at all (default false).
    pub enabled: bool,
    /// `"redis"` (default) or `"memcached"`. The TOML key is `type`.
    #[serde(rename = "type")]
    pub kind: DistributedKind,
    /// `host:port` of each server (for Redis Cluster: seed nodes). Required when enabled.
    pub hosts: Vec<String>,
    /// The longest an entry lives in L2, and the TTL of a `set` without one (default 3600 s). In
    /// TOML, seconds.
    #[serde(with = "seconds")]
    pub ttl: Duration,
    /// Prepended to every key in L2, to share a server between applications (default empty).
    pub key_prefix: String,
    /// Deadline of every L2 call in milliseconds (default 100).
    pub timeout_ms: u64,
    /// Redis Cluster mode (Redis only; default false).
    pub cluster: bool,
    /// User name for authentication.
    pub username: Option<String>,
    /// Password for authentication (never printed by `Debug`).
    pub password: Option<String>,
    /// Consecutive failures that open the circuit breaker (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker skips L2 before a probe, in milliseconds (default 1000).
    pub breaker_cooldown_ms: u64,
    /// `"through"` (default) or `"behind"`: whether a set waits for L2 ([`WriteMode`]).
    pub write_mode: WriteMode,
    /// With `write_mode = "behind"`, the most keys waiting for L2 (default 10 000); a set that
    /// finds the queue full writes through instead (backpressure, bounded memory).
    pub write_behind_max_keys: usize,
    /// Start anyway (L1 only, L2 retried in the background, the error counted in stats) when
    /// L2 answers at start-up that the configuration is wrong: credentials refused, no such
    /// database, an untrusted TLS certificate, a host name that does not resolve, a cluster
    /// setting that does not match (default false: [`CacheManager::new`](crate::CacheManager::new)
    /// fails with [`Error::Misconfigured`]). An unreachable L2 is an outage, not this: it starts
    /// degraded whenever `fallback_on_error` is set.
    pub start_degraded_on_config_error: bool,
    /// For `rediss://` (the `tls` feature): a PEM file of the CA certificate(s) to trust instead
    /// of the built-in web PKI roots, for servers with certificates from a private CA.
    pub tls_ca_file: Option<PathBuf>,
    /// For `rediss://`: trust the operating system's root store (rustls-native-certs) instead of
    /// the built-in web PKI roots (default false). Not together with `tls_ca_file`.
    pub tls_system_roots: bool,
    /// For `rediss://` with mutual TLS: a PEM file of the client certificate (chain). Give
    /// `tls_key_file` with it.
    pub tls_cert_file: Option<PathBuf>,
    /// For `rediss://` with mutual TLS: a PEM file of the client certificate's private key.
    pub tls_key_file: Option<PathBuf>,
    /// For `rediss://`: if the program has not installed a process-wide rustls `CryptoProvider`
    /// when L2 connects, install the *ring* provider (default true). `false`: never touch the
    /// process-wide provider; connecting fails with a configuration error if none is installed.
    pub tls_install_crypto_provider: bool,
}

impl Default for DistributedCacheConfig {
    fn default() -> Self {
        DistributedCacheConfig {
            enabled: false,
            kind: DistributedKind::default(),
            hosts: Vec::new(),
            ttl: Duration::from_secs(3600),
            key_prefix: String::new(),
            timeout_ms: 100,
            cluster: false,
            username: None,
            password: None,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
            write_mode: WriteMode::Through,
            write_behind_max_keys: 10_000,
            start_degraded_on_config_error: false,
            tls_ca_file: None,
            tls_system_roots: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_install_crypto_provider: true,
        }
    }
}

impl std::fmt::Debug for DistributedCacheConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedCacheConfig")
            .field("enabled", &self.enabled)
            .field("kind", &self.kind)
            .field("hosts", &self.hosts)
            .field("ttl", &self.ttl)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown_ms", &self.breaker_cooldown_ms)
            .field("write_mode", &self.write_mode)
            .field("write_behind_max_keys", &self.write_behind_max_keys)
            .field(
                "start_degraded_on_config_error",
                &self.start_degraded_on_config_error,
            )
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_system_roots", &self.tls_system_roots)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("tls_install_crypto_provider", &self.tls_install_crypto_provider)
            .finish()
    }
}

/// The TLS keys of `[distributed]`: Redis only, with the `tls` feature, one root source, and a
/// client certificate only with its key.
fn validate_tls(dist: &DistributedCacheConfig) -> Result<()> {
    let set = [
        ("distributed.tls_ca_file", dist.tls_ca_file.is_some()),
        ("distributed.tls_system_roots", dist.tls_system_roots),
        ("distributed.tls_cert_file", dist.tls_cert_file.is_some()),
        ("distributed.tls_key_file", dist.tls_key_file.is_some()),
    ];
    let Some((first, _)) = set.iter().find(|(_, on)| *on) else {
        return Ok(());
    };
    if dist.kind == DistributedKind::Memcached {
        return Err(invalid(first, "memcached is used without TLS; remove it"));
    }
    if !cfg!(feature = "tls") {
        return Err(invalid(
            first,
            "uno-cache was built without its `tls` feature; enable it or remove the TLS keys",
        ));
    }
    if dist.tls_ca_file.is_some() && dist.tls_system_roots {
        return Err(invalid(
            "distributed.tls_system_roots",
            "give either tls_ca_file (a private CA) or tls_system_roots = true (the system's roots), not both",
        ));
    }
    match (&dist.tls_cert_file, &dist.tls_key_file) {
        (Some(_), None) => Err(invalid(
            "distributed.tls_key_file",
            "tls_cert_file is set without its private key; set tls_key_file too",
        )),
        (None, Some(_)) => Err(invalid(
            "distributed.tls_cert_file",
            "tls_key_file is set without its certificate; set tls_cert_file too",
        )),
        _ => Ok(()),
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

impl CacheConfig {
    /// Parses TOML and validates the result.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field (`local.type`, `distributed.ttl`, …) of a syntax error,
    /// an unknown field, a value of the wrong type or an invalid value.
    pub fn from_toml_str(text: &str) -> Result<CacheConfig> {
        let config: CacheConfig = toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .and_then(|span| field_at(text, span.start))
                .unwrap_or_else(|| "config".to_owned());
            invalid(&field, e.message().trim().to_owned())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; otherwise as [`CacheConfig::from_toml_str`].
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<CacheConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read config", path, e))?;
        CacheConfig::from_toml_str(&text)
    }

    /// Checks every value.
    ///
    /// # Errors
    /// [`Error::FeatureDisabled`] if it asks for an L2, the backplane or a redb L1 this build was
    /// compiled without (naming the Cargo feature); otherwise [`Error::Config`] naming the first
    /// field at fault.
    pub fn validate(&self) -> Result<()> {
        self.validate_features()?;
        let local = &self.local;
        if local.ttl.is_zero() {
            return Err(invalid("local.ttl", "must be above zero (seconds)"));
        }
        if local.max_size == Some(0) {
            let unit = match local.kind {
                LocalKind::Memory => "items",
                LocalKind::File | LocalKind::Redb => "MiB",
            };
            return Err(invalid("local.max_size", format!("must be at least 1 ({unit})")));
        }
        if local.path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(invalid(
                "local.path",
                "must not be empty; leave it out for the default",
            ));
        }
        if let Some(mode) = local.file_mode {
            crate::perms::check_file_mode(mode).map_err(|reason| invalid("local.file_mode", reason))?;
        }
        if local.durability == DurabilityMode::Periodic && local.durability_interval_ms == 0 {
            return Err(invalid(
                "local.durability_interval_ms",
                "must be at least 1 with durability = \"periodic\"; use \"every_write\" to sync every write",
            ));
        }
        self.validate_consistency()?;
        self.validate_loader()?;
        let dist = &self.distributed;
        if !dist.enabled {
            return Ok(());
        }
        if dist.hosts.is_empty() {
            return Err(invalid(
                "distributed.hosts",
                "at least one host:port is needed when enabled",
            ));
        }
        if let Some(i) = dist.hosts.iter().position(|h| h.trim().is_empty()) {
            return Err(invalid(&format!("distributed.hosts[{i}]"), "is empty"));
        }
        if dist.ttl.is_zero() {
            return Err(invalid("distributed.ttl", "must be above zero (seconds)"));
        }
        if dist.timeout_ms == 0 {
            return Err(invalid("distributed.timeout_ms", "must be at least 1"));
        }
        if dist.breaker_failures == 0 {
            return Err(invalid("distributed.breaker_failures", "must be at least 1"));
        }
        if dist.write_mode == WriteMode::Behind && dist.write_behind_max_keys == 0 {
            return Err(invalid(
                "distributed.write_behind_max_keys",
                "must be at least 1 with write_mode = \"behind\"",
            ));
        }
        validate_tls(dist)?;
        if dist.kind == DistributedKind::Memcached {
            if dist.username.is_some() {
                return Err(invalid(
                    "distributed.username",
                    "memcached is used without authentication; remove it",
                ));
            }
            if dist.password.is_some() {
                return Err(invalid(
                    "distributed.password",
                    "memcached is used without authentication; remove it",
                ));
            }
        }
        if dist.cluster && dist.kind != DistributedKind::Redis {
            return Err(invalid(
                "distributed.cluster",
                "cluster mode exists only with type = \"redis\"",
            ));
        }
        Ok(())
    }
}

impl CacheConfig {
    fn validate_loader(&self) -> Result<()> {
        let loader = &self.loader;
        if !loader.fail_safe_max_duration.is_zero() && self.local.kind == LocalKind::Redb {
            return Err(invalid(
                "loader.fail_safe_max_duration",
                "needs local.type = \"file\" or \"memory\" (the redb level keeps no expired entries); set it to 0 or change the local type",
            ));
        }
        if loader.refresh_ahead != 0.0 && !(loader.refresh_ahead > 0.0 && loader.refresh_ahead < 1.0) {
            return Err(invalid(
                "loader.refresh_ahead",
                "must be 0 (off) or a share of the TTL above 0 and below 1, such as 0.8",
            ));
        }
        if loader.refresh_ahead_max == 0 {
            return Err(invalid("loader.refresh_ahead_max", "must be at least 1"));
        }
        if loader.soft_timeout_ms > 0
            && loader.hard_timeout_ms > 0
            && loader.soft_timeout_ms >= loader.hard_timeout_ms
        {
            return Err(invalid(
                "loader.soft_timeout_ms",
                "must be below loader.hard_timeout_ms (the soft timeout serves a stale value before the hard one gives up)",
            ));
        }
        Ok(())
    }

    /// Refuses what this build was compiled without, naming the Cargo feature: a configuration
    /// that asks for an L2 or the backplane never runs as a silent L1-only cache.
    fn validate_features(&self) -> Result<()> {
        let missing = |field: &str, what: &str, feature: &'static str| Error::FeatureDisabled {
            field: field.to_owned(),
            what: what.to_owned(),
            feature,
        };
        if self.local.kind == LocalKind::Redb && !cfg!(feature = "redb") {
            return Err(missing("local.type", "a redb L1 (type = \"redb\")", "redb"));
        }
        let dist = &self.distributed;
        if dist.enabled {
            match dist.kind {
                DistributedKind::Redis if !cfg!(feature = "redis") => {
                    return Err(missing(
                        "distributed.type",
                        "a Redis L2 (type = \"redis\")",
                        "redis",
                    ));
                }
                DistributedKind::Memcached if !cfg!(feature = "memcached") => {
                    return Err(missing(
                        "distributed.type",
                        "a Memcached L2 (type = \"memcached\")",
                        "memcached",
                    ));
                }
                _ => {}
            }
        }
        if self.invalidation.enabled && !cfg!(feature = "redis") {
            return Err(missing(
                "invalidation.enabled",
                "the invalidation backplane (Redis pub/sub)",
                "redis",
            ));
        }
        Ok(())
    }

    fn validate_consistency(&self) -> Result<()> {
        let offline = &self.offline;
        if offline
            .replay_dir
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            return Err(invalid(
                "offline.replay_dir",
                "must not be empty; leave it out for the default",
            ));
        }
        if offline.replay_interval_ms == 0 {
            return Err(invalid("offline.replay_interval_ms", "must be at least 1"));
        }
        if offline.replay_max_entries == 0 {
            return Err(invalid("offline.replay_max_entries", "must be at least 1"));
        }
        if !(4124..=u64::from(u32::MAX)).contains(&offline.replay_max_bytes) {
            return Err(invalid(
                "offline.replay_max_bytes",
                "must be between 4124 (one delete of the longest key) and 4294967295",
            ));
        }
        let inv = &self.invalidation;
        if !inv.enabled {
            return Ok(());
        }
        if inv.hosts.is_empty()
            && !(self.distributed.enabled && self.distributed.kind == DistributedKind::Redis)
        {
            return Err(invalid(
                "invalidation.hosts",
                "needed unless the L2 is an enabled Redis (its hosts are the default)",
            ));
        }
        if let Some(i) = inv.hosts.iter().position(|h| h.trim().is_empty()) {
            return Err(invalid(&format!("invalidation.hosts[{i}]"), "is empty"));
        }
        if inv.channel.is_empty() {
            return Err(invalid("invalidation.channel", "must not be empty"));
        }
        if inv.staleness_bound_ms < 30 {
            return Err(invalid("invalidation.staleness_bound_ms", "must be at least 30"));
        }
        if inv.publish_timeout_ms == 0 {
            return Err(invalid("invalidation.publish_timeout_ms", "must be at least 1"));
        }
        Ok(())
    }
}

/// Works out the dotted name of the key at byte `pos` of a TOML text (`[local]` + `ttl = …` →
/// `local.ttl`), for error messages.
fn field_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text.get(pos..)?.find('\n').map_or(text.len(), |i| pos + i);
    let line = text.get(line_start..line_end)?.trim();
    let table = |l: &str| {
        l.strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .map(|t| t.trim().trim_matches('[').trim().to_owned())
    };
    if line.starts_with('[') {
        return table(line);
    }
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let section = before
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(table);
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key.to_owned(),
    })
}

/// Serde for durations as seconds (an integer or a float) in configuration files.
mod seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Secs {
        Whole(u64),
        Fraction(f64),
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Secs::deserialize(d)? {
            Secs::Whole(s) => Ok(Duration::from_secs(s)),
            Secs::Fraction(f) => Duration::try_from_secs_f64(f)
                .map_err(|_| serde::de::Error::custom(format!("{f} is not a duration in seconds (>= 0)"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_text_gives_the_documented_defaults() {
        let c = CacheConfig::from_toml_str("").unwrap();
        assert_eq!(c, CacheConfig::default());
        assert!(c.use_multi_level && c.fallback_on_error);
        assert_eq!(c.local.kind, LocalKind::File);
        assert_eq!(c.local.ttl, Duration::from_secs(300));
        assert_eq!(c.local.effective_max_size(), DEFAULT_DISK_MAX_MB);
        assert_eq!(c.local.effective_path(), Path::new(DEFAULT_LOCAL_PATH));
        assert_eq!(
            c.local.effective_durability(),
            Durability::Periodic(Duration::from_secs(1))
        );
        assert!(!c.distributed.enabled);
        assert_eq!(c.distributed.ttl, Duration::from_secs(3600));
    }

    #[test]
    #[cfg(all(feature = "redb", feature = "memcached"))]
    fn seed_names_parse_with_type_keys_and_seconds() {
        let c = CacheConfig::from_toml_str(
            r#"
            use_multi_level = false
            fallback_on_error = false
            codec = "json"
            [local]
            type = "redb"
            max_size = 64
            ttl = 1.5
            path = "/tmp/x"
            durability = "every_write"
            [distributed]
            enabled = true
            type = "memcached"
            hosts = ["a:11211", "b:11211"]
            ttl = 60
            key_prefix = "app:"
            timeout_ms = 20
            "#,
        )
        .unwrap();
        assert!(!c.use_multi_level && !c.fallback_on_error);
        assert_eq!(c.codec, CodecName::Json);
        assert_eq!(c.local.kind, LocalKind::Redb);
        assert_eq!(c.local.ttl, Duration::from_millis(1500));
        assert_eq!(c.local.effective_durability(), Durability::EveryWrite);
        assert_eq!(c.distributed.kind, DistributedKind::Memcached);
        assert_eq!(c.distributed.hosts.len(), 2);
        assert_eq!(c.distributed.ttl, Duration::from_secs(60));
        assert_eq!(c.distributed.timeout_ms, 20);
    }

    fn field_of(text: &str) -> String {
        match CacheConfig::from_toml_str(text).unwrap_err() {
            Error::Config { field, .. } => field,
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn parse_errors_name_the_field() {
        assert_eq!(field_of("[local]\ntype = \"disk\"\n"), "local.type");
        assert_eq!(field_of("[local]\nttl = \"five\"\n"), "local.ttl");
        assert_eq!(
            field_of("[distributed]\nenabled = true\ntll = 5\n"),
            "distributed.tll"
        );
        assert_eq!(field_of("use_multi_level = 3\n"), "use_multi_level");
        assert_eq!(field_of("[local]\nttl = -1.0\n"), "local.ttl");
    }

    #[test]
    #[cfg(all(feature = "redis", feature = "memcached"))]
    fn validation_errors_name_the_field() {
        assert_eq!(field_of("[local]\nttl = 0\n"), "local.ttl");
        assert_eq!(
            field_of("[local]\ntype = \"memory\"\nmax_size = 0\n"),
            "local.max_size"
        );
        assert_eq!(
            field_of("[local]\ndurability_interval_ms = 0\n"),
            "local.durability_interval_ms"
        );
        assert_eq!(field_of("[distributed]\nenabled = true\n"), "distributed.hosts");
        assert_eq!(
            field_of("[distributed]\nenabled = true\nhosts = [\"a:1\", \" \"]\n"),
            "distributed.hosts[1]"
        );
        assert_eq!(
            field_of("[distributed]\nenabled = true\nhosts = [\"a:1\"]\nttl = 0\n"),
            "distributed.ttl"
        );
        assert_eq!(
            field_of(
                "[distributed]\nenabled = true\nhosts = [\"a:1\"]\ntype = \"memcached\"\ncluster = true\n"
            ),
            "distributed.cluster"
        );
        assert_eq!(
            field_of(
                "[distributed]\nenabled = true\nhosts = [\"a:1\"]\ntype = \"memcached\"\npassword = \"x\"\n"
            ),
            "distributed.password"
        );
        // A disabled L2 is not checked.
        assert!(CacheConfig::from_toml_str("[distributed]\nttl = 0\n").is_ok());
    }

    #[test]
    fn debug_never_prints_the_password() {
        let c = DistributedCacheConfig {
            password: Some("hunter2".into()),
            ..DistributedCacheConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn serializing_and_parsing_round_trips() {
        let mut c = CacheConfig::default();
        c.local.ttl = Duration::from_millis(2500);
        c.distributed.hosts = vec!["h:1".into()];
        let text = toml::to_string(&c).unwrap();
        assert_eq!(CacheConfig::from_toml_str(&text).unwrap(), c);
    }
}
