//! Configuration of a [`CacheManager`](crate::CacheManager): which levels, their sizes and TTLs.
//!
//! Deserializable with serde (TOML through [`CacheConfig::from_toml_str`]); every field has a
//! default, and [`CacheConfig::validate`] names the field at fault. TTLs and other durations are
//! given in seconds in TOML (`ttl = 300`, or `ttl = 0.5`); a key that ends in `_ms`
//! (`timeout_ms`, `durability_interval_ms`) is in milliseconds.
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

mod consistency;
mod distributed;
mod loader;
mod local;
mod parse_errors;

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::consistency::{ConsistencyConfig, InvalidationConfig, OfflineConfig, RestartPolicy};
use self::distributed::validate_tls;
pub(crate) use self::distributed::DEFAULT_SIZE_MAX_AGE_SECS;
pub use self::distributed::{DistributedCacheConfig, DistributedKind, WriteMode};
pub use self::loader::LoaderConfig;
pub use self::local::{
    DurabilityMode, LocalCacheConfig, LocalKind, DEFAULT_DISK_MAX_MB, DEFAULT_LOCAL_PATH,
    DEFAULT_MEMORY_MAX_ITEMS, DEFAULT_MEMORY_TIER_ITEMS, DEFAULT_MEMORY_TIER_MB,
};
use crate::codec::Codec;
use crate::error::{Error, Result};

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

/// Whether a host string carries a password of its own: `user:password@` in a URL, or a unix
/// socket URL's `?pass=`.
pub(crate) fn carries_password(host: &str) -> bool {
    // The user info ends at the authority's last `@`; a user name there without `:password`
    // (`redis://bob@h`) is no password, and the client would not log in with it.
    let rest = host.split_once("://").map_or(host, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let in_user_info = authority
        .rsplit_once('@')
        .and_then(|(user_info, _)| user_info.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty());
    in_user_info
        || host
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("pass=")))
}

/// `hosts` as [`redact_host`](crate::error::redact_host) shows them, for `Debug`.
pub(crate) fn redacted_hosts(hosts: &[String]) -> Vec<String> {
    hosts.iter().map(|h| crate::error::redact_host(h)).collect()
}

/// `distributed.max_item_size` at the least: room for the envelope, the longest key and a value
/// (memcached's own `-I` floor is 1 KiB).
const MIN_ITEM_SIZE: usize = 1024;
/// `distributed.max_item_size` at the most: memcached's own `-I` ceiling, 1 GiB.
const MAX_ITEM_SIZE: usize = 1 << 30;

fn invalid(field: &str, reason: impl Into<String>) -> Error {
    Error::Config {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Refuses a duration in seconds below a millisecond (but zero, if `zero_allowed`): expiries
/// are kept in milliseconds, so a shorter one acted as about a millisecond, not as written.
fn at_least_a_millisecond(field: &str, value: Duration, zero_allowed: bool) -> Result<()> {
    if value >= Duration::from_millis(1) || (zero_allowed && value.is_zero()) {
        return Ok(());
    }
    let accepted = if zero_allowed {
        "0 (off) or at least 0.001"
    } else {
        "at least 0.001"
    };
    Err(invalid(
        field,
        format!("must be {accepted} (seconds; expiries are kept in milliseconds)"),
    ))
}

impl CacheConfig {
    /// Parses TOML and validates the result.
    ///
    /// # Errors
    /// [`Error::Config`] naming the field (`local.type`, `distributed.ttl`, …) of a syntax error,
    /// an unknown field (saying which section takes it, where another does, or that it is a
    /// top-level setting written under a section), a value of the wrong type or an invalid
    /// value; `distributed.enabled`
    /// (or `invalidation.enabled`) when a table that names hosts (or, for the backplane, any
    /// setting) leaves it out, since its default, false, would leave them unused;
    /// `offline.replay` when `replay = true` is written out for a memory L1 with an L2 and no
    /// `offline.replay_dir`, where no queue can be kept.
    pub fn from_toml_str(text: &str) -> Result<CacheConfig> {
        // The checks on how the text is written, beyond what its fields mean, read the table as
        // written; a text that is not TOML leaves them nothing, and the parse below names where.
        let written = toml::from_str::<toml::Table>(text).unwrap_or_default();
        parse_errors::check_sections_are_tables(&written)?;
        let config: CacheConfig = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| span.start);
            let field = at
                .and_then(|pos| parse_errors::field_at(text, pos))
                .unwrap_or_else(|| "config".to_owned());
            let message = parse_errors::without_secrets(
                text,
                at,
                &field,
                parse_errors::with_placement(
                    &field,
                    parse_errors::with_unit(&field, parse_errors::in_range_terms(e.message().trim())),
                ),
            );
            match at.and_then(|pos| parse_errors::line_and_column(text, pos)) {
                Some((line, column)) => invalid(&field, format!("{message} (line {line}, column {column})")),
                None => invalid(&field, message.to_owned()),
            }
        })?;
        local::check_mode_literal(text)?;
        distributed::check_enabled_stated(&written)?;
        config.validate()?;
        consistency::check_replay_stated(&written, &config)?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read; [`Error::Config`] (field `config`) if it is over
    /// 1 MiB, or naming the field and line where it is not UTF-8; otherwise as
    /// [`CacheConfig::from_toml_str`], an [`Error::Config`] also naming the file.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<CacheConfig> {
        let path = path.as_ref();
        // A service may read several files: say which one holds the field at fault.
        read_config_text(path)
            .and_then(|text| CacheConfig::from_toml_str(&text))
            .map_err(|e| match e {
                Error::Config { field, reason } => Error::Config {
                    field,
                    reason: format!("{reason} (in {})", path.display()),
                },
                Error::FeatureDisabled { field, what, feature } => Error::FeatureDisabled {
                    field,
                    what: format!("{what} (asked for in {})", path.display()),
                    feature,
                },
                other => other,
            })
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
        at_least_a_millisecond("local.ttl", local.ttl, false)?;
        if local.max_size == Some(0) {
            let unit = match local.kind {
                LocalKind::Memory => "items",
                LocalKind::File | LocalKind::Redb => "MiB",
            };
            return Err(invalid("local.max_size", format!("must be at least 1 ({unit})")));
        }
        // Past 1 PiB the bytes saturated: the store recorded a bound of 2^64 bytes, and `stats`
        // showed 17592186044416.00 MiB.
        if local.kind != LocalKind::Memory
            && local
                .max_size
                .is_some_and(|mb| mb > crate::local::file::MAX_SIZE_MB)
        {
            return Err(invalid(
                "local.max_size",
                "must be at most 1073741824 (MiB, 1 PiB)",
            ));
        }
        let memory_used = local.kind == LocalKind::Memory || local.memory_items > 0;
        if local.memory_max_mb > 1 << 30 {
            return Err(invalid(
                "local.memory_max_mb",
                "must be at most 1073741824 (MiB, 1 PiB)",
            ));
        }
        if memory_used && local.memory_max_mb == 0 {
            return Err(invalid(
                "local.memory_max_mb",
                "must be at least 1 (MiB) for a memory L1 or while the memory tier is on (memory_items = 0 turns the tier off)",
            ));
        }
        local::check_path("local.path", local.path.as_deref())?;
        if let Some(mode) = local.file_mode {
            crate::perms::check_mode_bits(mode).map_err(|reason| invalid("local.file_mode", reason))?;
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
        let backplane_hosts: &[String] = if self.invalidation.enabled {
            &self.invalidation.hosts
        } else {
            &[]
        };
        if !dist.enabled {
            // The TLS keys still apply to a backplane on hosts of its own, and are checked as
            // for an L2: left unchecked, they were ignored on plain hosts (the password going in
            // clear) and contradicted each other unnoticed. With nothing to connect to, they
            // are left as they are: an L2 switched off keeps its settings for when it is back.
            if backplane_hosts.is_empty() {
                return Ok(());
            }
            return validate_tls(dist, false, backplane_hosts);
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
        at_least_a_millisecond("distributed.ttl", dist.ttl, false)?;
        if dist.timeout_ms == 0 {
            return Err(invalid("distributed.timeout_ms", "must be at least 1"));
        }
        if dist.breaker_failures == 0 {
            return Err(invalid("distributed.breaker_failures", "must be at least 1"));
        }
        if dist.breaker_cooldown_ms == 0 {
            return Err(invalid(
                "distributed.breaker_cooldown_ms",
                "must be at least 1 (milliseconds before an open breaker lets a call through)",
            ));
        }
        if dist.start_degraded_on_config_error && !self.fallback_on_error {
            // Starting on L1 alone is a fallback: without fallback_on_error the manager fails
            // start-up anyway, and the setting would be accepted only to be ignored.
            return Err(invalid(
                "distributed.start_degraded_on_config_error",
                "needs fallback_on_error = true (starting without L2 is a fallback); set fallback_on_error = true, or remove start_degraded_on_config_error",
            ));
        }
        if dist.write_mode == WriteMode::Behind && dist.write_behind_max_keys == 0 {
            return Err(invalid(
                "distributed.write_behind_max_keys",
                "must be at least 1 with write_mode = \"behind\"",
            ));
        }
        validate_tls(dist, true, backplane_hosts)?;
        // The client authenticates only when it has a password: a user name alone would be
        // dropped, and the connection made as the default user.
        let password_in_urls = dist.hosts.iter().any(|h| carries_password(h));
        if dist.kind == DistributedKind::Redis
            && dist.username.is_some()
            && dist.password.is_none()
            && !password_in_urls
        {
            return Err(invalid(
                "distributed.username",
                "a user name without a password is not used to log in (the connection would be the default user's); set distributed.password too, or remove it",
            ));
        }
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
        match dist.max_item_size {
            Some(_) if dist.kind != DistributedKind::Memcached => {
                return Err(invalid(
                    "distributed.max_item_size",
                    "only a Memcached L2 has an item limit to set (Redis takes values up to 512 MiB); remove it",
                ));
            }
            Some(bytes) if !(MIN_ITEM_SIZE..=MAX_ITEM_SIZE).contains(&bytes) => {
                return Err(invalid(
                    "distributed.max_item_size",
                    format!(
                        "{bytes} bytes is outside {MIN_ITEM_SIZE}..={MAX_ITEM_SIZE}; give the servers' -I in bytes (memcached -I 8m: 8388608)"
                    ),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// The largest configuration file read, 1 MiB: far past any real one (ten thousand hosts fit),
/// and a bound for a path that holds none: `--config /dev/zero` read until the process ran out
/// of memory.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of the configuration file at `path`, at most [`MAX_CONFIG_BYTES`].
fn read_config_text(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let failed = |e| Error::io(crate::error::CONFIG_READ, path, e);
    // Read as bytes: the size is told before the encoding (a read cut at the bound may end
    // inside a character), and bytes that are not UTF-8 are shown where they are.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(failed)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(failed)?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > MAX_CONFIG_BYTES {
        return Err(invalid(
            "config",
            format!("the file is over {MAX_CONFIG_BYTES} bytes, more than any configuration; is it the TOML file meant?"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| not_utf8(e.as_bytes(), e.utf8_error().valid_up_to()))
}

/// A configuration whose byte `at` starts no UTF-8 character (a file saved as Latin-1, say),
/// named by the field that holds it and its line and column, as a parse error is: read as a
/// whole, the file was an I/O error, "stream did not contain valid UTF-8", naming neither.
fn not_utf8(bytes: &[u8], at: usize) -> Error {
    // The text before `at` is UTF-8; its line up to `at` is what names the field.
    let before = bytes
        .get(..at)
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default();
    let field = parse_errors::field_at(before, before.len()).unwrap_or_else(|| "config".to_owned());
    let byte = bytes.get(at).copied().unwrap_or_default();
    let (line, column) = parse_errors::line_and_column(before, before.len()).unwrap_or((1, 1));
    invalid(
        &field,
        format!("byte {byte:#04X} at line {line}, column {column} is not UTF-8, which a TOML file must be; save the file as UTF-8 (a path that is not UTF-8 cannot be written in TOML)"),
    )
}

impl CacheConfig {
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
}

/// Serde for durations as seconds (an integer or a float) in configuration files.
mod seconds {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.subsec_nanos() == 0 {
            s.serialize_u64(d.as_secs())
        } else {
            s.serialize_f64(d.as_secs_f64())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(Secs)
    }

    /// A number of seconds, whole or not. A visitor of our own rather than an untagged enum of
    /// `u64` and `f64`: TOML's parser gives an integer past `u64::MAX` as a 128-bit one, which
    /// the enum's buffering refused by its type alone ("invalid type: integer … as i128"),
    /// without the range.
    struct Secs;

    impl Visitor<'_> for Secs {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of seconds, such as 300 or 0.5")
        }

        fn visit_u64<E: Error>(self, secs: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(secs))
        }

        fn visit_i64<E: Error>(self, secs: i64) -> Result<Duration, E> {
            self.visit_i128(i128::from(secs))
        }

        fn visit_i128<E: Error>(self, secs: i128) -> Result<Duration, E> {
            if secs < 0 {
                return Err(E::custom(format!(
                    "{secs} is negative; give a number of seconds, 0 or more"
                )));
            }
            self.visit_u128(secs.unsigned_abs())
        }

        fn visit_u128<E: Error>(self, secs: u128) -> Result<Duration, E> {
            u64::try_from(secs)
                .map(Duration::from_secs)
                .map_err(|_| too_long(secs))
        }

        fn visit_f64<E: Error>(self, secs: f64) -> Result<Duration, E> {
            // `< 0.0`, not the sign bit: `-0.0` is zero, as the integer `-0` already was.
            if secs < 0.0 || secs.is_nan() {
                return Err(E::custom(format!(
                    "{secs} is negative or not a number; give a number of seconds, 0 or more"
                )));
            }
            Duration::try_from_secs_f64(secs).map_err(|_| too_long(secs))
        }
    }

    fn too_long<E: Error>(secs: impl fmt::Display) -> E {
        E::custom(format!(
            "{secs} seconds is too long; give at most {} (u64::MAX)",
            u64::MAX
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Both levels compiled: with one missing, its `type` is refused for that before the field.
    #[cfg(all(feature = "redis", feature = "memcached"))]
    #[test]
    fn max_item_size_is_for_memcached_only_and_within_memcacheds_own_limits() {
        let with = |kind: &str, bytes: &str| {
            CacheConfig::from_toml_str(&format!(
                "[distributed]\nenabled = true\ntype = \"{kind}\"\nhosts = [\"a:1\"]\nmax_item_size = {bytes}\n"
            ))
        };
        let field_of = |r: Result<CacheConfig>| match r {
            Err(Error::Config { field, reason }) => (field, reason),
            other => panic!("{other:?}"),
        };
        let (field, reason) = field_of(with("redis", "4194304"));
        assert_eq!(field, "distributed.max_item_size");
        assert!(reason.contains("remove it"), "{reason}");
        for bytes in ["1023", "1073741825"] {
            let (field, reason) = field_of(with("memcached", bytes));
            assert_eq!(field, "distributed.max_item_size");
            assert!(reason.contains("-I"), "{reason}");
        }
        let config = with("memcached", "8388608").unwrap();
        assert_eq!(config.distributed.max_item_size, Some(8 << 20));
    }
    use std::time::Duration;

    use crate::durability::Durability;

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
        // An empty table name is no field (it named the field ``).
        assert_eq!(field_of("[]\n"), "config");
    }

    #[test]
    fn an_element_of_a_multi_line_array_is_named_by_its_array() {
        assert_eq!(
            field_of("[distributed]\nenabled = true\nhosts = [\n  \"a:1\",\n  6379,\n]\n"),
            "distributed.hosts"
        );
        assert_eq!(
            field_of("use_multi_level = true\n[local]\nttl 5\n"),
            "local.ttl 5"
        );
        // A comment holding `=` on an element's line sets no key (it named `distributed.a", #`).
        assert_eq!(
            field_of("[distributed]\nhosts = [\n  \"a:1\", # primary = east\n  6379,\n]\n"),
            "distributed.hosts"
        );
    }

    #[test]
    fn parse_errors_give_the_line_and_column() {
        let err = CacheConfig::from_toml_str("[local]\n\nttl = \"five\"\n").unwrap_err();
        assert!(err.to_string().contains("line 3, column 7"), "{err}");
    }

    #[test]
    #[cfg(feature = "redis")]
    fn a_breaker_cool_down_of_zero_is_refused() {
        assert_eq!(
            field_of("[distributed]\nenabled = true\nhosts = [\"h:1\"]\nbreaker_cooldown_ms = 0\n"),
            "distributed.breaker_cooldown_ms"
        );
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
        assert_eq!(field_of("[local]\nmemory_max_mb = 0\n"), "local.memory_max_mb");
        assert_eq!(
            field_of("[local]\ntype = \"memory\"\nmemory_items = 0\nmemory_max_mb = 0\n"),
            "local.memory_max_mb"
        );
        assert_eq!(field_of("[local]\nmax_size = 99999999999999\n"), "local.max_size");
        assert_eq!(
            field_of("[local]\nmemory_max_mb = 2000000000\n"),
            "local.memory_max_mb"
        );
        // With the tier off its bound is not used.
        assert!(CacheConfig::from_toml_str("[local]\nmemory_items = 0\nmemory_max_mb = 0\n").is_ok());
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

    fn reason_of(text: &str) -> (String, String) {
        match CacheConfig::from_toml_str(text).unwrap_err() {
            Error::Config { field, reason } => (field, reason),
            other => panic!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn a_duration_written_as_text_or_too_large_says_what_to_write() {
        let (field, reason) = reason_of("[local]\nttl = \"300s\"\n");
        assert_eq!(field, "local.ttl");
        assert!(
            reason.contains("number of seconds") && !reason.contains("Secs"),
            "{reason}"
        );
        let (field, reason) = reason_of("[local]\nttl = 1e20\n");
        assert_eq!(field, "local.ttl");
        assert!(reason.contains("at most"), "{reason}");
        let (_, reason) = reason_of("[local]\nttl = -1.5\n");
        assert!(reason.contains("negative"), "{reason}");
    }

    #[test]
    fn minus_zero_seconds_is_zero_written_as_a_float_as_it_is_as_an_integer() {
        // A duration where 0 is allowed (it turns the throttle off).
        let throttle = |secs: &str| {
            CacheConfig::from_toml_str(&format!("[loader]\nfail_safe_throttle = {secs}\n"))
                .map(|c| c.loader.fail_safe_throttle)
                .unwrap_or_else(|e| panic!("fail_safe_throttle = {secs}: {e}"))
        };
        for secs in ["0", "-0", "0.0", "-0.0"] {
            assert_eq!(throttle(secs), std::time::Duration::ZERO, "{secs}");
        }
        let (_, reason) = reason_of("[loader]\nfail_safe_throttle = -1e-300\n");
        assert!(reason.contains("negative"), "{reason}");
    }

    #[test]
    fn a_file_mode_written_in_decimal_says_to_write_it_in_octal() {
        let (field, reason) = reason_of("[local]\nfile_mode = 640\n");
        assert_eq!(field, "local.file_mode");
        assert!(reason.contains("0o640"), "{reason}");
    }

    // The checks run after the level's feature is found enabled.
    #[cfg(feature = "redis")]
    #[test]
    fn a_redis_user_name_without_a_password_is_refused() {
        // The client authenticates only with a password: the name alone would be dropped and
        // the connection made as the default user.
        let (field, reason) =
            reason_of("[distributed]\nenabled = true\nhosts = [\"a:1\"]\nusername = \"app\"\n");
        assert_eq!(field, "distributed.username");
        assert!(reason.contains("password"), "{reason}");
        // A password in the host itself does: `user:password@`, or a unix socket's `?pass=`.
        for host in ["redis://:p@a:1", "unix:///run/r.sock?db=1&pass=p"] {
            let text = format!("[distributed]\nenabled = true\nhosts = [\"{host}\"]\nusername = \"app\"\n");
            assert!(CacheConfig::from_toml_str(&text).is_ok(), "{host}");
        }
    }

    // The checks run after the level's feature is found enabled.
    #[cfg(feature = "redis")]
    #[test]
    fn a_user_in_a_host_url_is_no_password_for_a_redis_user_name() {
        // `bob@` names a user, no password: the connection would be the default user's.
        for host in ["redis://bob@a:1", "bob@a:1", "redis://bob:@a:1/0"] {
            let (field, reason) = reason_of(&format!(
                "[distributed]\nenabled = true\nhosts = [\"{host}\"]\nusername = \"app\"\n"
            ));
            assert_eq!(field, "distributed.username", "{host}");
            assert!(reason.contains("password"), "{reason}");
            let (field, _) = reason_of(&format!(
                "[distributed]\nenabled = true\nhosts = [\"a:1\"]\n[invalidation]\nenabled = true\nhosts = [\"{host}\"]\nusername = \"u\"\n"
            ));
            assert_eq!(field, "invalidation.username", "{host}");
        }
        for host in [
            "redis://bob:p@a:1",
            "bob:p@a:1",
            "redis://:p@a:1/0",
            "redis://u:p@ss@a:1",
        ] {
            let text = format!("[distributed]\nenabled = true\nhosts = [\"{host}\"]\nusername = \"app\"\n");
            assert!(CacheConfig::from_toml_str(&text).is_ok(), "{host}");
        }
    }

    // The checks run after the level's feature is found enabled.
    #[cfg(feature = "redis")]
    #[test]
    fn backplane_credentials_without_backplane_hosts_are_refused() {
        let base = "[distributed]\nenabled = true\nhosts = [\"a:1\"]\n[invalidation]\nenabled = true\n";
        for (key, value) in [("username", "\"u\""), ("password", "\"p\""), ("cluster", "true")] {
            let (field, reason) = reason_of(&format!("{base}{key} = {value}\n"));
            assert_eq!(field, format!("invalidation.{key}"));
            assert!(reason.contains("invalidation.hosts"), "{reason}");
        }
        let own = format!("{base}hosts = [\"b:2\"]\npassword = \"p\"\n");
        assert!(CacheConfig::from_toml_str(&own).is_ok());
        // The L2's own values, said again, are what the backplane uses: not refused.
        let same = "[distributed]\nenabled = true\nhosts = [\"a:1\"]\ncluster = true\nusername = \"u\"\npassword = \"p\"\n\
                    [invalidation]\nenabled = true\ncluster = true\nusername = \"u\"\npassword = \"p\"\n";
        assert!(CacheConfig::from_toml_str(same).is_ok());
        // A user name alone on the backplane's own hosts would log in as the default user.
        let (field, _) = reason_of(&format!("{base}hosts = [\"b:2\"]\nusername = \"u\"\n"));
        assert_eq!(field, "invalidation.username");
    }

    #[test]
    fn debug_never_prints_the_password() {
        let hosts = vec![
            "redis://app:hunter2@h:1/0".to_owned(),
            "unix:///run/r.sock?db=1&pass=hunter2".to_owned(),
        ];
        let c = DistributedCacheConfig {
            password: Some("hunter2".into()),
            hosts: hosts.clone(),
            ..DistributedCacheConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redacted"),
            "{shown}"
        );
        assert!(shown.contains("unix:///run/r.sock?db=1&pass=***"), "{shown}");
        let backplane = InvalidationConfig {
            hosts,
            ..InvalidationConfig::default()
        };
        let shown = format!("{backplane:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("app:***@h:1"),
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
