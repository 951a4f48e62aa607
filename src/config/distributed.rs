//! `[distributed]`: the L2 level, its deadlines, breaker, write mode and TLS.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::invalid;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

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
    /// replayed, never returned; a crash loses the queued L2 writes (L1's copies too, once the
    /// restart's revalidation checks them against L2, under the default restart policy). Deletes
    /// still wait for L2. See the `manager::behind` module docs.
    Behind,
}

/// The distributed level (`[distributed]`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistributedCacheConfig {
    /// Whether there is an L2 at all (default false). In TOML, a table that names `hosts` must
    /// say it, either way: left out, the hosts would be unused without a word.
    pub enabled: bool,
    /// `"redis"` (default) or `"memcached"`. The TOML key is `type`.
    #[serde(rename = "type")]
    pub kind: DistributedKind,
    /// `host:port` of each server (for Redis Cluster: seed nodes). Required when enabled.
    pub hosts: Vec<String>,
    /// The longest an entry lives in L2, and the TTL of a `set` without one (default 3600 s). In
    /// TOML, seconds; at least 0.001 (expiries are kept in milliseconds).
    #[serde(with = "super::seconds")]
    pub ttl: Duration,
    /// Prepended to every key in L2, to share a server between applications (default empty).
    pub key_prefix: String,
    /// Deadline of every L2 call in milliseconds (default 100).
    pub timeout_ms: u64,
    /// Redis Cluster mode (Redis only; default false).
    pub cluster: bool,
    /// Memcached only: the largest item the servers take, in bytes, their smallest `-I` (default
    /// 1 MiB, memcached's own default). A value that would not fit is refused before it is sent
    /// ([`Error::ValueTooLarge`](crate::Error::ValueTooLarge)); unset, a server started with a
    /// larger `-I` still gets no value over 1 MiB.
    pub max_item_size: Option<usize>,
    /// ACL user name for authentication (Redis 6+); needs `password` (or credentials in the host
    /// URLs): without one the client logs in as no one and is the default user.
    pub username: Option<String>,
    /// Password for authentication (never printed by `Debug`).
    pub password: Option<String>,
    /// Consecutive failures that open the circuit breaker (default 5).
    pub breaker_failures: u32,
    /// How long an open breaker skips L2 before a probe, in milliseconds (default 1000).
    pub breaker_cooldown_ms: u64,
    /// How long the stats reuse a reading of L2's size, in seconds (default 60,
    /// `L2_SIZE_MAX_AGE`). Counting a Redis level walks every key under
    /// `key_prefix` (`SCAN` and a `STRLEN` per key): on a large server, seconds of its time, once
    /// per instance that polls its stats. 0: never count it (`size.distributed` reads zero and
    /// `distributed.size_error` says why).
    pub size_max_age_secs: u64,
    /// `"through"` (default) or `"behind"`: whether a set waits for L2 ([`WriteMode`]).
    pub write_mode: WriteMode,
    /// With `write_mode = "behind"`, the most keys waiting for L2 (default 10 000), besides the
    /// batch of up to 1000 in flight, and 64 MiB of their keys and values; a set that finds the
    /// queue full writes through instead (backpressure, bounded memory).
    pub write_behind_max_keys: usize,
    /// Start anyway (L1 only, L2 retried in the background, the error counted in stats) when
    /// L2 answers at start-up that the configuration is wrong: credentials refused, no such
    /// database, an untrusted TLS certificate, a host name that does not resolve, a cluster
    /// setting that does not match (default false: [`CacheManager::new`](crate::CacheManager::new)
    /// fails with [`Error::Misconfigured`]). Needs `fallback_on_error = true`: validation refuses
    /// it without (starting without L2 is a fallback). An unreachable L2 is an outage, not
    /// this: it starts degraded whenever `fallback_on_error` is set. It covers the
    /// invalidation backplane too (whose hosts are L2's unless `[invalidation]` names its own):
    /// a backplane refused so starts unsubscribed, L1 entries suspect, and retries in the
    /// background.
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

/// The default of [`DistributedCacheConfig::size_max_age_secs`] (the manager's
/// `L2_SIZE_MAX_AGE`).
pub(crate) const DEFAULT_SIZE_MAX_AGE_SECS: u64 = 60;

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
            max_item_size: None,
            username: None,
            password: None,
            breaker_failures: 5,
            breaker_cooldown_ms: 1000,
            size_max_age_secs: DEFAULT_SIZE_MAX_AGE_SECS,
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
            .field("hosts", &super::redacted_hosts(&self.hosts))
            .field("ttl", &self.ttl)
            .field("key_prefix", &self.key_prefix)
            .field("timeout_ms", &self.timeout_ms)
            .field("cluster", &self.cluster)
            .field("max_item_size", &self.max_item_size)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown_ms", &self.breaker_cooldown_ms)
            .field("size_max_age_secs", &self.size_max_age_secs)
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

/// Refuses a `[distributed]` table that names hosts, or an `[invalidation]` table with any
/// setting, without saying `enabled`. `enabled` defaults to false, so such a file ran as an
/// L1-only cache, its servers unused, without a word: the silent fallback the configuration
/// never makes otherwise (a level compiled out is refused by name). `enabled = false` keeps the
/// settings for later, as before.
pub(super) fn check_enabled_stated(written: &toml::Table) -> Result<()> {
    let unstated = |section: &str, named: &dyn Fn(&toml::Table) -> bool| {
        written
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| !t.contains_key("enabled") && named(t))
    };
    let names_hosts = |t: &toml::Table| {
        t.get("hosts")
            .and_then(toml::Value::as_array)
            .is_some_and(|hosts| !hosts.is_empty())
    };
    if unstated("distributed", &names_hosts) {
        return Err(invalid(
            "distributed.enabled",
            "not set, so it is false and the hosts are not used: the cache would run without an L2; write enabled = true for the L2 (or enabled = false to keep it off)",
        ));
    }
    if unstated("invalidation", &|t| !t.is_empty()) {
        return Err(invalid(
            "invalidation.enabled",
            "not set, so it is false and the backplane is off: other instances' writes would not reach this one's L1; write enabled = true for the backplane (or enabled = false to keep it off)",
        ));
    }
    Ok(())
}

/// Whether `host` names a TLS scheme (`rediss://`, `rediss+cluster://`; scheme names are
/// case-insensitive). A bare `host:port` is plain Redis, whatever the host is called.
fn is_tls_host(host: &str) -> bool {
    host.trim().split_once("://").is_some_and(|(scheme, _)| {
        matches!(scheme.to_ascii_lowercase().as_str(), "rediss" | "rediss+cluster")
    })
}

/// The TLS keys of `[distributed]`: Redis only, with the `tls` feature, for a `rediss://` host
/// of the L2 or of the backplane (`backplane_hosts`), one root source, and a client certificate
/// only with its key.
pub(super) fn validate_tls(
    dist: &DistributedCacheConfig,
    l2: bool,
    backplane_hosts: &[String],
) -> Result<()> {
    let set = [
        ("distributed.tls_ca_file", dist.tls_ca_file.is_some()),
        ("distributed.tls_system_roots", dist.tls_system_roots),
        ("distributed.tls_cert_file", dist.tls_cert_file.is_some()),
        ("distributed.tls_key_file", dist.tls_key_file.is_some()),
    ];
    let Some((first, _)) = set.iter().find(|(_, on)| *on) else {
        return Ok(());
    };
    let backplane_tls = backplane_hosts.iter().any(|h| is_tls_host(h));
    let l2_hosts: &[String] = if l2 { &dist.hosts } else { &[] };
    if l2 && dist.kind == DistributedKind::Memcached && !backplane_tls {
        return Err(invalid(
            first,
            "memcached is used without TLS, and no invalidation.hosts is rediss://; remove it",
        ));
    }
    if !cfg!(feature = "tls") {
        return Err(invalid(
            first,
            "uno-cache was built without its `tls` feature; enable it or remove the TLS keys",
        ));
    }
    if !backplane_tls && !l2_hosts.iter().any(|h| is_tls_host(h)) {
        return Err(invalid(
            first,
            "no host uses TLS, so the key would be ignored and the connection (its password too) go in plain text; write the hosts as rediss://host:port, or remove the TLS keys",
        ));
    }
    if dist.tls_ca_file.is_some() && dist.tls_system_roots {
        return Err(invalid(
            "distributed.tls_system_roots",
            "give either tls_ca_file (a private CA) or tls_system_roots = true (the system's roots), not both",
        ));
    }
    // Read only when L2 or the backplane connects: refused here, a path that can name no
    // file is told before anything starts.
    for (field, path) in [
        ("distributed.tls_ca_file", &dist.tls_ca_file),
        ("distributed.tls_cert_file", &dist.tls_cert_file),
        ("distributed.tls_key_file", &dist.tls_key_file),
    ] {
        super::local::check_path(field, path.as_deref())?;
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

#[cfg(test)]
mod tests {
    use crate::config::CacheConfig;
    use crate::error::Error;

    fn field_of(text: &str) -> Option<String> {
        match CacheConfig::from_toml_str(text) {
            Ok(_) => None,
            Err(Error::Config { field, .. }) => Some(field),
            Err(other) => Some(format!("not a config error: {other}")),
        }
    }

    #[test]
    fn hosts_without_enabled_are_refused_rather_than_left_unused() {
        let err = CacheConfig::from_toml_str("[distributed]\ntype = \"redis\"\nhosts = [\"h:1\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("distributed.enabled") && err.contains("enabled = true"),
            "{err}"
        );
        assert_eq!(
            field_of("[invalidation]\nchannel = \"app:inv\"\n").as_deref(),
            Some("invalidation.enabled")
        );
        // Saying it either way is accepted: false keeps the settings for later.
        assert_eq!(
            field_of("[distributed]\nenabled = false\nhosts = [\"h:1\"]\n"),
            None
        );
        assert_eq!(
            field_of("[invalidation]\nenabled = false\nchannel = \"c\"\n"),
            None
        );
        // Settings without hosts were, and are, left alone while the L2 is off.
        assert_eq!(field_of("[distributed]\nttl = 60\nhosts = []\n"), None);
        assert_eq!(field_of("[invalidation]\n"), None);
    }
}
