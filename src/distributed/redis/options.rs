//! [`RedisOptions`]: where and how to reach Redis, with the checks that turn them into
//! [`Target`]s and connection [`Settings`].

use std::sync::Arc;
use std::time::Duration;

use super::commands::ValueLimit;
use super::connection::{open_client, Settings};
use super::target::{config_error, parse_target, Target};
#[cfg(feature = "tls")]
use super::tls::TlsOptions;
use crate::clock::{Clock, SystemClock};
use crate::distributed::runtime::IoRuntime;
use crate::distributed::NodeBreakers;
use crate::distributed::{
    redact, LevelDurations, DEFAULT_ADMIN_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
};
use crate::error::Result;
use redis::RedisResult;

/// Where and how to reach Redis.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::distributed::RedisOptions;
///
/// let standalone = RedisOptions::new("127.0.0.1:6379").prefix("app:").timeout(Duration::from_millis(50));
/// let cluster = RedisOptions::with_hosts(["10.0.0.1:7000", "10.0.0.2:7000"]).cluster(true);
/// let with_auth = RedisOptions::new("redis://cache:s3cret@redis.internal:6379/2");
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisOptions {
    hosts: Vec<String>,
    cluster: bool,
    username: Option<String>,
    password: Option<String>,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    admin_timeout: Duration,
    default_ttl: Option<Duration>,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "tls")]
    tls: TlsOptions,
    /// The I/O thread to run on; `None` starts one of the store's own.
    runtime: Option<IoRuntime>,
    /// A breaker per Cluster primary.
    node_breakers: Option<Arc<NodeBreakers>>,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("hosts", &self.hosts.iter().map(|h| redact(h)).collect::<Vec<_>>())
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("admin_timeout", &self.admin_timeout)
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisOptions {
    /// One host: `host:port`, `host` (port 6379), or a URL `redis://[user[:password]@]host[:port][/db]`
    /// (`rediss://` for TLS, with the `tls` feature; `redis+cluster://` / `rediss+cluster://` turn
    /// on cluster mode).
    pub fn new(host: impl Into<String>) -> Self {
        Self::with_hosts([host.into()])
    }

    /// Several hosts; more than one needs [`cluster(true)`](Self::cluster) (or a cluster URL).
    pub fn with_hosts<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RedisOptions {
            hosts: hosts.into_iter().map(Into::into).collect(),
            cluster: false,
            username: None,
            password: None,
            prefix: String::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            admin_timeout: DEFAULT_ADMIN_TIMEOUT,
            default_ttl: None,
            clock: Arc::new(SystemClock),
            #[cfg(feature = "tls")]
            tls: TlsOptions::default(),
            runtime: None,
            node_breakers: None,
        }
    }

    /// Adds a host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Treats the hosts as seed nodes of a Redis Cluster (default: standalone).
    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = on;
        self
    }

    /// ACL user name, for hosts whose URL carries none.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Password (`requirepass` or the ACL user's), for hosts whose URL carries none.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Namespace: every key is stored as `prefix + key`, and `size`/`clear` touch only keys that
    /// start with it. End it with a separator (`"app:"`) so that no prefix is the start of
    /// another. Avoid `{`/`}` in it on a cluster unless every key should hash to one slot.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Deadline of every key call, including the client's retries and reconnects (default
    /// 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Deadline for connecting and checking credentials at construction (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of `size` and `clear`, which walk every key of the prefix (default 10 s).
    pub fn admin_timeout(mut self, timeout: Duration) -> Self {
        self.admin_timeout = timeout;
        self
    }

    /// TTL for a `set` without one (default: none, the entry stays until deleted or evicted).
    pub fn default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The clock that stamps envelope expiries and judges them on read.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// On a Redis Cluster, a circuit breaker per primary (by the address that owns a key's
    /// slot). A primary whose breaker is open fails its keys at once with
    /// [`Error::NodeUnavailable`](crate::Error::NodeUnavailable) while the other primaries serve
    /// theirs; a batch that reached only some primaries fails with
    /// [`Error::PartialBatch`](crate::Error::PartialBatch). Ignored on a standalone server.
    pub fn node_breakers(mut self, breakers: Arc<NodeBreakers>) -> Self {
        self.node_breakers = Some(breakers);
        self
    }

    /// For `rediss://`: trust this CA certificate (PEM; several may follow each other) instead
    /// of the built-in web PKI roots, for servers with certificates from a private CA. Wins over
    /// [`tls_system_roots`](Self::tls_system_roots).
    #[cfg(feature = "tls")]
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// For `rediss://`: trust the operating system's root store (read with rustls-native-certs
    /// when connecting) instead of the built-in web PKI roots (default false).
    #[cfg(feature = "tls")]
    pub fn tls_system_roots(mut self, on: bool) -> Self {
        self.tls.system_roots = on;
        self
    }

    /// For `rediss://` with mutual TLS: present this client certificate chain and its private
    /// key (both PEM) to servers that ask for one (`tls-auth-clients yes`).
    #[cfg(feature = "tls")]
    pub fn tls_client_cert(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.tls.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// For `rediss://`: whether uno-cache may install the *ring* rustls `CryptoProvider` as the
    /// process-wide default when the program has installed none by the time it connects
    /// (default true). With `false` it never touches the process-wide provider, and connecting
    /// fails with [`Error::Config`](crate::Error::Config) (field `redis.tls_install_crypto_provider`)
    /// if none is installed. A provider the program installs first is always the one used.
    #[cfg(feature = "tls")]
    pub fn tls_install_crypto_provider(mut self, on: bool) -> Self {
        self.tls.install_provider = on;
        self
    }
}

impl RedisOptions {
    /// The hosts, checked and normalised, and whether they form a Redis Cluster.
    pub(crate) fn resolve_targets(&self) -> Result<(Vec<Target>, bool)> {
        if self.hosts.is_empty() {
            return Err(config_error(
                "redis.hosts".to_owned(),
                "no host given; give host:port or a redis:// URL".to_owned(),
            ));
        }
        let targets = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_target(i, raw, self.username.as_deref(), self.password.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        let cluster = self.cluster || targets.iter().any(|t| t.cluster_scheme);
        if !cluster && targets.len() > 1 {
            return Err(config_error(
                "redis.hosts".to_owned(),
                format!(
                    "{} hosts given for a standalone server; set cluster = true for a Redis Cluster, or give one host",
                    targets.len()
                ),
            ));
        }
        // The client refuses such a cluster only when it connects, as "invalid settings" that
        // were taken for an outage and retried in the background for good.
        let first_tls = targets.first().is_some_and(Target::is_tls);
        if let Some(i) = targets.iter().position(|t| t.is_tls() != first_tls) {
            return Err(config_error(
                format!("redis.hosts[{i}]"),
                "mixes rediss:// (TLS) and redis:// with hosts[0]; the nodes of one cluster are all reached the same way, so write every host with one scheme".to_owned(),
            ));
        }
        if cluster && targets.iter().any(|t| t.db != 0) {
            return Err(config_error(
                "redis.hosts".to_owned(),
                "a Redis Cluster has only database 0; drop the /db from the URLs".to_owned(),
            ));
        }
        Ok((targets, cluster))
    }

    /// A Redis Cluster client for `targets`, with this configuration's TLS settings. It does
    /// not connect.
    pub(crate) fn cluster_builder_for(
        &self,
        targets: &[Target],
    ) -> RedisResult<redis::cluster::ClusterClientBuilder> {
        super::connection::cluster_builder(
            targets,
            #[cfg(feature = "tls")]
            &self.tls,
        )
    }

    /// A client for one host, with this configuration's TLS settings. It does not connect.
    pub(crate) fn client_for(&self, target: &Target) -> RedisResult<redis::Client> {
        open_client(
            target,
            #[cfg(feature = "tls")]
            &self.tls,
        )
    }

    /// The deadline for connecting.
    pub(crate) fn connect_deadline(&self) -> Duration {
        self.connect_timeout
    }

    /// Runs the level (or backplane, or tags) on this I/O thread instead of starting its own,
    /// so that one thread serves all of them (`None`: its own thread).
    pub(crate) fn io_runtime(mut self, runtime: Option<IoRuntime>) -> Self {
        self.runtime = runtime;
        self
    }

    /// The shared I/O thread, labelled `level` and these hosts, or a new one of its own.
    pub(crate) fn runtime_for(&self, level: &'static str) -> Result<IoRuntime> {
        let hosts = self.hosts_shown();
        match &self.runtime {
            Some(shared) => Ok(shared.for_level(level, &hosts)),
            None => IoRuntime::start(level, &hosts),
        }
    }

    /// The hosts as errors name them (`host:port`, joined by `, `; never a password). Hosts
    /// that do not parse fail the connect with [`Error::Config`](crate::Error::Config) before any call is made.
    pub(crate) fn hosts_shown(&self) -> String {
        match self.resolve_targets() {
            Ok((targets, _)) => targets
                .iter()
                .map(|t| t.display.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            Err(_) => "the hosts configured, which do not parse".to_owned(),
        }
    }

    /// Checks the options and resolves the hosts into what connecting needs.
    pub(crate) fn settings(&self) -> Result<Settings> {
        LevelDurations {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            admin_timeout: self.admin_timeout,
            default_ttl: self.default_ttl,
        }
        .check("RedisOptions", "redis")?;
        let (targets, cluster) = self.resolve_targets()?;
        #[cfg(feature = "tls")]
        if targets.iter().any(Target::is_tls) {
            self.tls.ensure_provider().map_err(|_| {
                config_error(
                    "redis.tls_install_crypto_provider".to_owned(),
                    "it is false and the program has installed no rustls CryptoProvider; install one \
                     (rustls::crypto::CryptoProvider::install_default) before building the cache, \
                     or set it to true to let uno-cache install ring"
                        .to_owned(),
                )
            })?;
        }
        Ok(Settings {
            targets,
            cluster,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            #[cfg(feature = "tls")]
            tls: self.tls.clone(),
        })
    }

    /// The check a store connected with these options makes of a value before sending it, as
    /// far as it is known without a connection: the key rules and Redis's 512 MiB per string (a
    /// lower `proto-max-bulk-len` is learned from the server at connect). For a level not
    /// connected yet, so that it refuses at once what the connected store would.
    ///
    /// # Errors
    /// As [`settings`](Self::settings).
    pub(crate) fn value_check(&self) -> Result<impl Fn(&str, usize) -> Result<()> + Send + Sync + 'static> {
        let limit = ValueLimit::default_for(&self.settings()?.hosts());
        Ok(move |key: &str, len| limit.check(key, len))
    }

    pub(crate) fn key_prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn admin_deadline(&self) -> Duration {
        self.admin_timeout
    }

    pub(crate) fn ttl_default(&self) -> Option<Duration> {
        self.default_ttl
    }

    pub(crate) fn clock_source(&self) -> Arc<dyn Clock> {
        Arc::clone(&self.clock)
    }

    pub(crate) fn breakers(&self) -> Option<&Arc<NodeBreakers>> {
        self.node_breakers.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn a_zero_timeout_is_refused_naming_the_builder_call_that_set_it() {
        let zero = Duration::ZERO;
        for (options, field) in [
            (RedisOptions::new("h:1").timeout(zero), "RedisOptions::timeout"),
            (
                RedisOptions::new("h:1").connect_timeout(zero),
                "RedisOptions::connect_timeout",
            ),
            (
                RedisOptions::new("h:1").admin_timeout(zero),
                "RedisOptions::admin_timeout",
            ),
        ] {
            let err = options.settings().err().unwrap();
            assert!(
                matches!(&err, Error::Config { field: f, .. } if f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn a_zero_default_ttl_is_refused_naming_the_redis_key() {
        let err = RedisOptions::new("h:1")
            .default_ttl(Some(Duration::ZERO))
            .settings()
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::Config { field, reason }
                if field == "redis.default_ttl" && reason.contains("use None for no expiry")),
            "{err}"
        );
        assert!(RedisOptions::new("h:1").default_ttl(None).settings().is_ok());
    }
}
