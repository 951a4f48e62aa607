//! [`RedisStore`]: Redis standalone or Redis Cluster as a cache level.
//!
//! See [`RedisStore`] for how each call maps to the server.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use parking_lot::RwLock;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::runtime::IoRuntime;
use super::{ceil_ms, check_key, effective_ttl, envelope, open_envelope, redact};
use super::{DEFAULT_ADMIN_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
use crate::clock::{Clock, SystemClock};
use crate::error::{key_for_error, Error, Result};
use crate::storage::{BoxFuture, Entry, Storage, StorageSize};

const LEVEL: &str = "redis";
/// Redis refuses string values over 512 MiB.
const MAX_REDIS_VALUE: usize = 512 * 1024 * 1024;
/// Longest TTL sent as `PX`; Redis refuses expiries that overflow its millisecond clock.
const MAX_PX_MS: u64 = 1 << 52;
/// Refuses an empty key or a value over Redis's string limit (less the envelope).
fn check_value(key: &str, len: usize) -> Result<()> {
    check_key(key)?;
    if len > MAX_REDIS_VALUE - envelope::HEADER_LEN {
        return Err(Error::ValueTooLarge {
            key: key_for_error(key),
            len,
            max: MAX_REDIS_VALUE - envelope::HEADER_LEN,
            store: "Redis (512 MiB per string value)".to_owned(),
        });
    }
    Ok(())
}

/// Keys per `SCAN` step and per `UNLINK` batch.
const SCAN_BATCH: usize = 1_000;
const CLUSTER_SLOTS: u16 = 16_384;

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
    tls_root_cert: Option<Vec<u8>>,
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
            tls_root_cert: None,
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

    /// For `rediss://`: trust this CA certificate (PEM) instead of the built-in web PKI roots,
    /// for servers with certificates from a private CA.
    #[cfg(feature = "tls")]
    pub fn tls_root_cert(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_cert = Some(pem.into());
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
        if cluster && targets.iter().any(|t| t.db != 0) {
            return Err(config_error(
                "redis.hosts".to_owned(),
                "a Redis Cluster has only database 0; drop the /db from the URLs".to_owned(),
            ));
        }
        Ok((targets, cluster))
    }

    /// A client for one host, with this configuration's TLS settings. It does not connect.
    pub(crate) fn client_for(&self, target: &Target) -> RedisResult<redis::Client> {
        open_client(
            target,
            #[cfg(feature = "tls")]
            self.tls_root_cert.as_deref(),
        )
    }

    /// The deadline for connecting.
    pub(crate) fn connect_deadline(&self) -> Duration {
        self.connect_timeout
    }
}

/// A client for one host (TLS with an optional private CA). It does not connect.
fn open_client(
    target: &Target,
    #[cfg(feature = "tls")] tls_root_cert: Option<&[u8]>,
) -> RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    {
        if target.url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; ours unless the program set one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        match tls_root_cert {
            Some(pem) => redis::Client::build_with_tls(
                target.url.as_str(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                },
            ),
            None => redis::Client::open(target.url.as_str()),
        }
    }
    #[cfg(not(feature = "tls"))]
    redis::Client::open(target.url.as_str())
}

/// A host, checked and normalised.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL handed to the client (credentials included).
    pub(crate) url: String,
    /// `host:port` (or the socket path) for messages; never a password.
    pub(crate) display: String,
    /// The URL scheme asked for cluster mode.
    cluster_scheme: bool,
    db: i64,
}

fn config_error(field: String, reason: String) -> Error {
    Error::Config { field, reason }
}

fn parse_target(index: usize, raw: &str, username: Option<&str>, password: Option<&str>) -> Result<Target> {
    let field = format!("redis.hosts[{index}]");
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(config_error(
            field,
            "empty host; use host:port or redis://[user:password@]host:port[/db]".to_owned(),
        ));
    }
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("redis://{raw}")
    };
    let mut url = url::Url::parse(&with_scheme).map_err(|err| {
        config_error(
            field.clone(),
            format!(
                "{:?} is not a valid host or URL ({err}); use host:port or redis://[user:password@]host:port[/db]",
                redact(raw)
            ),
        )
    })?;
    let (base, cluster_scheme) = match url.scheme() {
        "redis" => ("redis", false),
        "rediss" => ("rediss", false),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        "unix" | "redis+unix" => ("unix", false),
        other => {
            return Err(config_error(
                field,
                format!("unsupported scheme {other:?}; use redis://, rediss://, redis+cluster://, rediss+cluster:// or unix://"),
            ))
        }
    };
    if base == "rediss" && !cfg!(feature = "tls") {
        return Err(config_error(
            field,
            format!(
                "{:?} asks for TLS, but uno-cache was built without its `tls` feature; enable it or use redis://",
                redact(raw)
            ),
        ));
    }
    if base == "unix" {
        return Ok(Target {
            url: url.to_string(),
            display: url.path().to_owned(),
            cluster_scheme: false,
            db: 0,
        });
    }
    if url.scheme() != base && url.set_scheme(base).is_err() {
        return Err(config_error(
            field,
            format!("cannot use scheme {base:?} for {:?}", redact(raw)),
        ));
    }
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => {
            return Err(config_error(
                field,
                format!("{:?} names no host; use host:port", redact(raw)),
            ))
        }
    };
    let port = url.port().unwrap_or(6379);
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db.parse::<i64>().map_err(|_| {
            config_error(
                field.clone(),
                format!(
                    "database {db:?} in {:?} is not a number; use /0, /1, …",
                    redact(raw)
                ),
            )
        })?,
    };
    if url.username().is_empty() {
        if let Some(user) = username {
            if url.set_username(user).is_err() {
                return Err(config_error(
                    field,
                    "cannot put the user name into the URL".to_owned(),
                ));
            }
        }
    }
    if url.password().is_none() {
        if let Some(pass) = password {
            if url.set_password(Some(pass)).is_err() {
                return Err(config_error(
                    field,
                    "cannot put the password into the URL".to_owned(),
                ));
            }
        }
    }
    Ok(Target {
        url: url.to_string(),
        display: if base == "rediss" {
            format!("rediss://{host}:{port}")
        } else {
            format!("{host}:{port}")
        },
        cluster_scheme,
        db,
    })
}

/// Escapes Redis glob characters so the prefix matches only itself in `SCAN MATCH`.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('*');
    out
}

/// The Redis Cluster hash slot of a key: CRC16/XMODEM of the key (or of its `{hash tag}`) mod
/// 16384, as the cluster specification defines it.
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            let tag = rest.get(..close)?;
            (!tag.is_empty()).then_some(tag)
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &byte in hashed {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % CLUSTER_SLOTS
}

/// Which primary serves which slots, from `CLUSTER SLOTS`.
#[derive(Debug, Default)]
struct SlotMap {
    /// (first slot, last slot, host, port), sorted by first slot.
    ranges: Vec<(u16, u16, String, u16)>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<(&str, u16)> {
        let i = self.ranges.partition_point(|r| r.0 <= slot).checked_sub(1)?;
        let (start, end, host, port) = self.ranges.get(i)?;
        (*start <= slot && slot <= *end).then_some((host.as_str(), *port))
    }

    fn primaries(&self) -> Vec<(String, u16)> {
        let mut nodes: Vec<(String, u16)> = self.ranges.iter().map(|r| (r.2.clone(), r.3)).collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    fn parse(value: Value) -> Option<SlotMap> {
        let Value::Array(entries) = value else { return None };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else { return None };
            let mut fields = fields.into_iter();
            let start = as_int(fields.next()?)?;
            let end = as_int(fields.next()?)?;
            let Value::Array(primary) = fields.next()? else {
                return None;
            };
            let mut primary = primary.into_iter();
            let host = match primary.next()? {
                Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
                Value::SimpleString(s) => s,
                _ => return None,
            };
            let port = as_int(primary.next()?)?;
            if host.is_empty() || host == "?" {
                continue; // unknown endpoint: those slots take the fallback path
            }
            ranges.push((
                u16::try_from(start).ok()?,
                u16::try_from(end).ok()?,
                host,
                u16::try_from(port).ok()?,
            ));
        }
        ranges.sort_by_key(|r| r.0);
        Some(SlotMap { ranges })
    }
}

fn as_int(value: Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(i),
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        _ => None,
    }
}

/// The cluster connection with our copy of the slot map.
#[derive(Clone)]
struct Cluster {
    conn: ClusterConnection,
    slots: Arc<RwLock<SlotMap>>,
    stale: Arc<AtomicBool>,
}

impl Cluster {
    async fn refresh_slots(&mut self) -> RedisResult<()> {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        let value = self
            .conn
            .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
            .await?;
        let map = SlotMap::parse(value).ok_or_else(|| {
            RedisError::from((ErrorKind::UnexpectedReturnType, "unexpected CLUSTER SLOTS reply"))
        })?;
        *self.slots.write() = map;
        self.stale.store(false, Ordering::Release);
        Ok(())
    }

    /// Runs one command per slot group and returns one reply per command, in order. The
    /// commands for one node go out as one pipeline (one round trip per node, all nodes at
    /// once); a command whose node is unknown or that the node refuses (`MOVED`, `ASK`,
    /// `TRYAGAIN`, …) is retried alone through the client's own routing, which follows
    /// redirects, and the slot map is refreshed afterwards.
    async fn per_slot(&mut self, commands: Vec<(u16, Cmd)>) -> RedisResult<Vec<Value>> {
        if self.stale.load(Ordering::Acquire) {
            let _ = self.refresh_slots().await;
        }
        let mut by_node: BTreeMap<(String, u16), Vec<usize>> = BTreeMap::new();
        let mut retry: Vec<usize> = Vec::new();
        {
            let map = self.slots.read();
            for (i, (slot, _)) in commands.iter().enumerate() {
                match map.owner(*slot) {
                    Some((host, port)) => by_node.entry((host.to_owned(), port)).or_default().push(i),
                    None => retry.push(i),
                }
            }
        }
        let mut replies: Vec<Option<Value>> = vec![None; commands.len()];
        let sends = by_node.into_iter().map(|((host, port), members)| {
            let mut pipe = Pipeline::with_capacity(members.len());
            for &i in &members {
                if let Some((_, cmd)) = commands.get(i) {
                    pipe.add_command(cmd.clone());
                }
            }
            let mut conn = self.conn.clone();
            async move {
                let count = pipe.len();
                let out = conn
                    .route_pipeline(pipe, 0, count, SingleNodeRoutingInfo::ByAddress { host, port })
                    .await;
                (members, out)
            }
        });
        for (members, out) in join_all(sends).await {
            match out {
                Ok(values) if values.len() == members.len() => {
                    for (i, value) in members.into_iter().zip(values) {
                        if matches!(value, Value::ServerError(_)) {
                            retry.push(i);
                        } else if let Some(slot) = replies.get_mut(i) {
                            *slot = Some(value);
                        }
                    }
                }
                Ok(_) | Err(_) => retry.extend(members),
            }
        }
        if !retry.is_empty() {
            self.stale.store(true, Ordering::Release);
            let singles = retry.iter().filter_map(|&i| {
                let (_, cmd) = commands.get(i)?;
                let mut conn = self.conn.clone();
                Some(async move { (i, cmd.query_async::<Value>(&mut conn).await) })
            });
            for (i, out) in join_all(singles).await {
                let value = out?;
                if let Value::ServerError(err) = value {
                    return Err(err.into());
                }
                if let Some(slot) = replies.get_mut(i) {
                    *slot = Some(value);
                }
            }
            let _ = self.refresh_slots().await;
        }
        replies
            .into_iter()
            .map(|r| r.ok_or_else(|| RedisError::from((ErrorKind::Client, "a per-slot reply is missing"))))
            .collect()
    }

    /// Runs `cmd` on every primary, one after another.
    async fn on_each_primary<T, F, Fut>(&mut self, mut each: F) -> RedisResult<Vec<T>>
    where
        F: FnMut(ClusterConnection, String, u16) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if self.stale.load(Ordering::Acquire) || self.slots.read().ranges.is_empty() {
            self.refresh_slots().await?;
        }
        let nodes = self.slots.read().primaries();
        let mut out = Vec::with_capacity(nodes.len());
        for (host, port) in nodes {
            out.push(each(self.conn.clone(), host, port).await?);
        }
        Ok(out)
    }
}

/// The connection of either kind.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(Cluster),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(cluster) => cluster.conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(cluster) => cluster.conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(cluster) => cluster.conn.get_db(),
        }
    }
}

/// Redis (standalone or Cluster) as a cache level.
///
/// - Keys are `prefix + key`; values are [enveloped](super::envelope); a TTL is sent as `SET …
///   PX <ms>` and also kept in the envelope, so `get` returns the expiry without a second round
///   trip.
/// - `get_many` is one `MGET` (standalone). On a cluster, keys are grouped by hash slot (`MGET`
///   across slots is refused by Redis) and the per-slot `MGET`s for one node go out as one
///   pipeline: one round trip per node, all nodes at once. `set_many` and `delete_many` are
///   pipelined the same way.
/// - `size` counts this prefix's keys with `SCAN MATCH prefix*` (plus a pipelined `STRLEN` per
///   batch for the bytes) on every primary: `DBSIZE` would be O(1) but counts every key in the
///   database, other programs' and other prefixes' included. It is O(keys) and runs under the
///   `admin_timeout` deadline.
/// - `clear` deletes only this prefix's keys (`SCAN MATCH prefix*` + `UNLINK`), never `FLUSHDB`.
///
/// Connections: the blocking API on a standalone server (without TLS) runs on the caller's own
/// thread over a small pool of blocking connections, with socket timeouts as its deadline (see
/// `CallerPool`): one round trip, no thread hand-off. The async API, a cluster and TLS use
/// the `redis` crate's `ConnectionManager` (one multiplexed connection, reconnected on demand)
/// or its async `ClusterConnection` on the store's own I/O thread, with a deadline around the
/// client's retries.
///
/// ```no_run
/// use std::time::Duration;
/// use uno_cache::Storage;
/// use uno_cache::distributed::{RedisOptions, RedisStore};
///
/// let redis = RedisStore::connect(RedisOptions::new("127.0.0.1:6379").prefix("app:"))?;
/// redis.set("user:42", b"Ada", Some(Duration::from_secs(60)))?;
/// let entry = redis.get("user:42")?.expect("just written");
/// assert_eq!(entry.value, b"Ada");
/// assert!(entry.expires_at.is_some());
/// # Ok::<(), uno_cache::Error>(())
/// ```
pub struct RedisStore {
    // Field order is drop order: the connection goes before the I/O thread stops.
    conn: Conn,
    prefix: String,
    timeout: Duration,
    admin_timeout: Duration,
    default_ttl: Option<Duration>,
    clock: Arc<dyn Clock>,
    hosts: String,
    /// Blocking connections for the sync API (standalone without TLS): see [`CallerPool`].
    pool: Option<CallerPool>,
    rt: IoRuntime,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("hosts", &self.hosts)
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn backend(op: &'static str, err: &RedisError) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: err.to_string(),
    }
}

fn is_auth_error(err: &RedisError) -> bool {
    err.kind() == ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

fn connect_error(hosts: &str, err: &RedisError) -> Error {
    connect_error_for(LEVEL, hosts, err)
}

/// A connection failure as [`Error::Backend`] (op `"connect"`) for `level`, naming the hosts and
/// what to check.
pub(crate) fn connect_error_for(level: &'static str, hosts: &str, err: &RedisError) -> Error {
    let advice = if is_auth_error(err) {
        "authentication failed; check the user name and password (requirepass or the ACL user)"
    } else if err.kind() == ErrorKind::Io || err.is_connection_refusal() || err.is_timeout() {
        "cannot reach the server; check the host and port and that redis-server is running and reachable"
    } else if err.kind() == ErrorKind::InvalidClientConfig {
        "the connection settings are invalid; check the URL"
    } else {
        "the server refused the connection; check the server and the options"
    };
    Error::Backend {
        level,
        op: "connect",
        reason: format!("{hosts}: {advice} ({err})"),
    }
}

type Op<T> = std::pin::Pin<Box<dyn Future<Output = Result<T>> + Send + 'static>>;

impl RedisStore {
    /// Connects (and checks the credentials with a `PING`) within `connect_timeout`. Works from
    /// any thread, inside a tokio runtime or not (inside one it blocks that thread while it
    /// waits; use [`connect_async`](Self::connect_async) there).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad host, URL or option combination; [`Error::Backend`] (op
    /// `"connect"`) naming the host if it cannot be reached, refuses the credentials or does not
    /// answer within `connect_timeout`.
    pub fn connect(options: RedisOptions) -> Result<Self> {
        let (plan, rt) = Self::prepare(options)?;
        let hosts = plan.hosts.clone();
        let timeout = plan.connect_timeout;
        let conn = rt
            .block_on("connect", timeout, plan.clone().connect())
            .map_err(|err| connect_timeout_error(err, &hosts, timeout))?;
        Ok(Self::assemble(plan, conn, rt))
    }

    /// [`connect`](Self::connect) without blocking the caller's executor.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_async(options: RedisOptions) -> Result<Self> {
        let (plan, rt) = Self::prepare(options)?;
        let hosts = plan.hosts.clone();
        let timeout = plan.connect_timeout;
        let conn = rt
            .run("connect", timeout, plan.clone().connect())
            .await
            .map_err(|err| connect_timeout_error(err, &hosts, timeout))?;
        Ok(Self::assemble(plan, conn, rt))
    }

    fn prepare(options: RedisOptions) -> Result<(ConnectPlan, IoRuntime)> {
        if options.timeout.is_zero() || options.connect_timeout.is_zero() || options.admin_timeout.is_zero() {
            return Err(config_error(
                "redis.timeout".to_owned(),
                "timeouts must be above zero".to_owned(),
            ));
        }
        if options.default_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(config_error(
                "redis.default_ttl".to_owned(),
                "a default TTL of zero would expire every entry at once; use None for no expiry".to_owned(),
            ));
        }
        let (targets, cluster) = options.resolve_targets()?;
        let hosts = targets
            .iter()
            .map(|t| t.display.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let rt = IoRuntime::start(LEVEL)?;
        Ok((
            ConnectPlan {
                targets,
                cluster,
                hosts,
                timeout: options.timeout,
                connect_timeout: options.connect_timeout,
                prefix: options.prefix,
                admin_timeout: options.admin_timeout,
                default_ttl: options.default_ttl,
                clock: options.clock,
                #[cfg(feature = "tls")]
                tls_root_cert: options.tls_root_cert,
            },
            rt,
        ))
    }

    fn assemble(plan: ConnectPlan, conn: Conn, rt: IoRuntime) -> Self {
        let pool = match (&conn, plan.targets.first()) {
            (Conn::Single(_), Some(target)) if !target.url.starts_with("rediss://") => open_client(
                target,
                #[cfg(feature = "tls")]
                plan.tls_root_cert.as_deref(),
            )
            .ok()
            .and_then(CallerPool::new),
            _ => None,
        };
        RedisStore {
            pool,
            conn,
            prefix: plan.prefix,
            timeout: plan.timeout,
            admin_timeout: plan.admin_timeout,
            default_ttl: plan.default_ttl,
            clock: plan.clock,
            hosts: plan.hosts,
            rt,
        }
    }

    /// The hosts, as `host:port` (no credentials).
    #[must_use]
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Whether this is a Redis Cluster connection.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The per-call deadline.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }

    fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: Result<Op<T>>,
    ) -> Result<T> {
        self.rt.block_on(op, timeout, fut?)
    }

    fn later<'a, T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: Result<Op<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        match fut {
            Ok(fut) => Box::pin(self.rt.run(op, timeout, fut)),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    fn get_op(&self, key: &str) -> Result<Op<Option<Entry>>> {
        check_key(key)?;
        let full = self.full_key(key);
        let key = key.to_owned();
        let mut conn = self.conn.clone();
        let clock = self.clock.clone();
        Ok(Box::pin(async move {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(&full)
                .query_async(&mut conn)
                .await
                .map_err(|err| backend("get", &err))?;
            decode_one(&key, raw, clock.now_ms())
        }))
    }

    /// Builds `SET key envelope [PX ms]` for one item.
    fn set_cmd(&self, key: &str, value: &[u8], ttl: Option<Duration>, now_ms: u64) -> Result<Cmd> {
        check_value(key, value.len())?;
        let ttl_ms = effective_ttl(key, ttl, self.default_ttl)?.map(|ttl| ceil_ms(ttl).min(MAX_PX_MS));
        let bytes = envelope::encode(value, ttl_ms.map(|ms| now_ms.saturating_add(ms)));
        let mut cmd = redis::cmd("SET");
        cmd.arg(FullKey {
            prefix: &self.prefix,
            key,
        })
        .arg(bytes);
        if let Some(ms) = ttl_ms {
            cmd.arg("PX").arg(ms);
        }
        Ok(cmd)
    }

    fn set_op(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<Op<()>> {
        let cmd = self.set_cmd(key, value, ttl, self.clock.now_ms())?;
        let mut conn = self.conn.clone();
        Ok(Box::pin(async move {
            cmd.query_async::<()>(&mut conn)
                .await
                .map_err(|err| backend("set", &err))
        }))
    }

    fn delete_op(&self, key: &str) -> Result<Op<bool>> {
        check_key(key)?;
        let full = self.full_key(key);
        let mut conn = self.conn.clone();
        Ok(Box::pin(async move {
            let removed: i64 = redis::cmd("UNLINK")
                .arg(&full)
                .query_async(&mut conn)
                .await
                .map_err(|err| backend("delete", &err))?;
            Ok(removed > 0)
        }))
    }

    fn get_many_op(&self, keys: &[&str]) -> Result<Op<Vec<Option<Entry>>>> {
        for key in keys {
            check_key(key)?;
        }
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let conn = self.conn.clone();
        let clock = self.clock.clone();
        Ok(Box::pin(async move {
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let raw: Vec<Option<Vec<u8>>> = match conn {
                Conn::Single(mut conn) => redis::cmd("MGET")
                    .arg(&full)
                    .query_async(&mut conn)
                    .await
                    .map_err(|err| backend("get_many", &err))?,
                Conn::Cluster(mut cluster) => cluster_mget(&mut cluster, &full)
                    .await
                    .map_err(|err| backend("get_many", &err))?,
            };
            decode_many(&keys, raw, clock.now_ms())
        }))
    }

    fn set_many_commands(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<Vec<(u16, Cmd)>> {
        let now = self.clock.now_ms();
        items
            .iter()
            .map(|(key, value)| self.slotted_set(key, value, ttl, now))
            .collect()
    }

    fn set_each_commands(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<Vec<(u16, Cmd)>> {
        let now = self.clock.now_ms();
        items
            .iter()
            .map(|(key, value, ttl)| self.slotted_set(key, value, *ttl, now))
            .collect()
    }

    fn set_many_op(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<Op<()>> {
        Ok(self.send_sets("set_many", self.set_many_commands(items, ttl)?))
    }

    fn set_each_op(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<Op<()>> {
        Ok(self.send_sets("set_each", self.set_each_commands(items)?))
    }

    /// `name key…` with every key checked and prefixed (blocking path).
    fn keyed_cmd(&self, name: &str, keys: &[&str]) -> Result<Cmd> {
        let mut cmd = redis::cmd(name);
        for key in keys {
            check_key(key)?;
            cmd.arg(FullKey {
                prefix: &self.prefix,
                key,
            });
        }
        Ok(cmd)
    }

    /// A `SET` with the hash slot of its key (for routing on a cluster).
    fn slotted_set(&self, key: &str, value: &[u8], ttl: Option<Duration>, now_ms: u64) -> Result<(u16, Cmd)> {
        let cmd = self.set_cmd(key, value, ttl, now_ms)?;
        // Only a cluster routes by slot.
        let slot = if self.is_cluster() {
            key_slot(self.full_key(key).as_bytes())
        } else {
            0
        };
        Ok((slot, cmd))
    }

    /// Sends `SET`s as one pipeline (standalone) or one pipeline per node (cluster).
    fn send_sets(&self, op: &'static str, commands: Vec<(u16, Cmd)>) -> Op<()> {
        let conn = self.conn.clone();
        Box::pin(async move {
            if commands.is_empty() {
                return Ok(());
            }
            match conn {
                Conn::Single(mut conn) => set_pipeline(commands)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(|err| backend(op, &err)),
                Conn::Cluster(mut cluster) => {
                    cluster
                        .per_slot(commands)
                        .await
                        .map_err(|err| backend(op, &err))?;
                    Ok(())
                }
            }
        })
    }

    fn delete_many_op(&self, keys: &[&str]) -> Result<Op<u64>> {
        for key in keys {
            check_key(key)?;
        }
        let full: Vec<String> = keys.iter().map(|k| self.full_key(k)).collect();
        let conn = self.conn.clone();
        Ok(Box::pin(async move {
            if full.is_empty() {
                return Ok(0);
            }
            let removed: i64 = match conn {
                Conn::Single(mut conn) => redis::cmd("UNLINK")
                    .arg(&full)
                    .query_async(&mut conn)
                    .await
                    .map_err(|err| backend("delete_many", &err))?,
                Conn::Cluster(mut cluster) => {
                    let commands = group_by_slot(&full)
                        .into_iter()
                        .map(|(slot, members)| {
                            let mut cmd = redis::cmd("UNLINK");
                            for i in members {
                                if let Some(key) = full.get(i) {
                                    cmd.arg(key);
                                }
                            }
                            (slot, cmd)
                        })
                        .collect();
                    let replies = cluster
                        .per_slot(commands)
                        .await
                        .map_err(|err| backend("delete_many", &err))?;
                    replies.into_iter().filter_map(as_int).sum()
                }
            };
            Ok(u64::try_from(removed).unwrap_or(0))
        }))
    }

    fn size_op(&self) -> Op<StorageSize> {
        let pattern = glob_escape(&self.prefix);
        let conn = self.conn.clone();
        Box::pin(async move {
            match conn {
                Conn::Single(mut conn) => scan_size(&mut conn, &pattern, None)
                    .await
                    .map_err(|err| backend("size", &err)),
                Conn::Cluster(mut cluster) => {
                    let sizes = cluster
                        .on_each_primary(|conn, host, port| {
                            let pattern = pattern.clone();
                            async move {
                                let mut conn = conn;
                                scan_size_cluster(&mut conn, &pattern, host, port).await
                            }
                        })
                        .await
                        .map_err(|err| backend("size", &err))?;
                    Ok(sizes
                        .into_iter()
                        .fold(StorageSize::default(), |acc, s| StorageSize {
                            items: acc.items + s.items,
                            bytes: acc.bytes + s.bytes,
                        }))
                }
            }
        })
    }

    fn clear_op(&self) -> Op<()> {
        let pattern = glob_escape(&self.prefix);
        let conn = self.conn.clone();
        Box::pin(async move {
            match conn {
                Conn::Single(mut conn) => scan_unlink(&mut conn, &pattern)
                    .await
                    .map_err(|err| backend("clear", &err)),
                Conn::Cluster(mut cluster) => {
                    cluster
                        .on_each_primary(|conn, host, port| {
                            let pattern = pattern.clone();
                            async move {
                                let mut conn = conn;
                                scan_unlink_cluster(&mut conn, &pattern, host, port).await
                            }
                        })
                        .await
                        .map_err(|err| backend("clear", &err))?;
                    Ok(())
                }
            }
        })
    }
}

/// Everything `connect` needs, owned, so it can run on the I/O thread.
#[derive(Clone)]
struct ConnectPlan {
    targets: Vec<Target>,
    cluster: bool,
    hosts: String,
    timeout: Duration,
    connect_timeout: Duration,
    prefix: String,
    admin_timeout: Duration,
    default_ttl: Option<Duration>,
    clock: Arc<dyn Clock>,
    #[cfg(feature = "tls")]
    tls_root_cert: Option<Vec<u8>>,
}

impl ConnectPlan {
    /// The client's own reply timeout: a little past our deadline, so that a slow reply is
    /// reported by our deadline as [`Error::Timeout`]; the client's timeout only cleans up.
    fn client_response_timeout(&self) -> Duration {
        self.timeout.saturating_add(Duration::from_millis(50))
    }

    async fn connect(self) -> Result<Conn> {
        let hosts = self.hosts.clone();
        self.try_connect()
            .await
            .map_err(|err| connect_error(&hosts, &err))
    }

    async fn try_connect(self) -> RedisResult<Conn> {
        #[cfg(feature = "tls")]
        if self.targets.iter().any(|t| t.url.starts_with("rediss://")) {
            // rustls needs a process-wide crypto provider; ours unless the program set one.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if self.cluster {
            let urls: Vec<String> = self.targets.iter().map(|t| t.url.clone()).collect();
            let builder = redis::cluster::ClusterClientBuilder::new(urls)
                .connection_timeout(
                    self.connect_timeout
                        .min(self.timeout.max(Duration::from_millis(50))),
                )
                .response_timeout(self.client_response_timeout())
                .retries(1);
            #[cfg(feature = "tls")]
            let builder = match &self.tls_root_cert {
                Some(pem) => builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                }),
                None => builder,
            };
            let client = builder.build()?;
            let conn = client.get_async_connection().await?;
            let mut cluster = Cluster {
                conn,
                slots: Arc::new(RwLock::new(SlotMap::default())),
                stale: Arc::new(AtomicBool::new(false)),
            };
            cluster.refresh_slots().await?;
            let mut cmd = redis::cmd("PING");
            cmd.arg("uno-cache");
            cluster
                .conn
                .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                .await?;
            Ok(Conn::Cluster(cluster))
        } else {
            let target = self
                .targets
                .first()
                .ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no host")))?;
            let client = open_client(
                target,
                #[cfg(feature = "tls")]
                self.tls_root_cert.as_deref(),
            )?;
            // No retries inside the client: a failed reconnect fails the call at once and the
            // next call tries again; the caller's deadline and breaker decide the pace.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(Some(self.client_response_timeout()))
                .set_max_delay(Duration::from_millis(500));
            let mut conn = ConnectionManager::new_with_config(client, config).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok(Conn::Single(conn))
        }
    }
}

fn connect_timeout_error(err: Error, hosts: &str, timeout: Duration) -> Error {
    match err {
        Error::Timeout { .. } => Error::Backend {
            level: LEVEL,
            op: "connect",
            reason: format!(
                "{hosts}: no answer within {timeout:?}; check the host and port and that redis-server is running and reachable (or raise connect_timeout)"
            ),
        },
        other => other,
    }
}

/// Blocking connections for the sync API on a standalone server without TLS.
///
/// A blocking call runs on the caller's own thread over an idle connection (or a new one), so it
/// costs one round trip and no thread hand-off: through the I/O thread a call woke three threads,
/// which on a 2-vCPU machine doubled a 100-key `MGET`. The async API keeps the I/O thread (it must
/// never block an executor), as do a cluster and TLS.
///
/// Deadline: a pooled connection has `timeout` as its socket read and write timeout; a new one
/// connects within `timeout` and gets what is left for its first call. A connection that saw any
/// error is dropped (its replies may be out of step); one that the server closed while it was idle
/// (a restart) is replaced once within the same deadline.
struct CallerPool {
    client: redis::Client,
    idle: parking_lot::Mutex<Vec<redis::Connection>>,
}

/// Idle connections kept; a burst of threads beyond this closes its extra ones when done.
const MAX_IDLE: usize = 16;

impl CallerPool {
    /// `None` if the client's settings cannot be reused (the I/O-thread path then serves).
    fn new(client: redis::Client) -> Option<CallerPool> {
        // No `CLIENT SETINFO` round trips when connecting: on a hung server each one waited out
        // the deadline again, so a call that had to connect took twice its timeout.
        let info = client.get_connection_info().clone();
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let client = redis::Client::open(info.set_redis_settings(settings)).ok()?;
        Some(CallerPool {
            client,
            idle: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// Runs `call` on a connection within `timeout`.
    fn run<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        mut call: impl FnMut(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let pooled = self.idle.lock().pop();
        let mut retried = pooled.is_none();
        let mut next = pooled;
        loop {
            let (mut conn, fresh) = match next.take() {
                Some(conn) => (conn, false),
                None => (self.connect(op, timeout, started)?, true),
            };
            match call(&mut conn) {
                Ok(value) => {
                    if fresh && set_timeouts(&conn, timeout).is_err() {
                        return Ok(value);
                    }
                    let mut idle = self.idle.lock();
                    if idle.len() < MAX_IDLE {
                        idle.push(conn);
                    }
                    return Ok(value);
                }
                // An idle connection the server closed (restarted, or timed it out): one more
                // try on a new connection, which fails fast if the server is really down.
                Err(err) if !retried && err.is_connection_dropped() && started.elapsed() < timeout => {
                    retried = true;
                }
                Err(err) => return Err(call_error(op, timeout, &err)),
            }
        }
    }

    fn run_pipeline(&self, op: &'static str, timeout: Duration, commands: Vec<(u16, Cmd)>) -> Result<()> {
        if commands.is_empty() {
            return Ok(());
        }
        let pipe = set_pipeline(commands);
        self.run(op, timeout, |c| pipe.query(c))
    }

    /// A new connection, with what is left of the call's deadline as its socket timeouts.
    fn connect(&self, op: &'static str, timeout: Duration, started: Instant) -> Result<redis::Connection> {
        let left = |started: Instant| timeout.saturating_sub(started.elapsed());
        if left(started).is_zero() {
            return Err(Error::Timeout {
                level: LEVEL,
                op,
                after: timeout,
            });
        }
        let conn = self
            .client
            .get_connection_with_timeout(left(started))
            .map_err(|err| call_error(op, timeout, &err))?;
        set_timeouts(&conn, left(started).max(Duration::from_millis(1)))
            .map_err(|err| call_error(op, timeout, &err))?;
        Ok(conn)
    }
}

fn set_timeouts(conn: &redis::Connection, timeout: Duration) -> RedisResult<()> {
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))
}

/// A failed blocking call: a socket timeout is the call's [`Error::Timeout`].
fn call_error(op: &'static str, timeout: Duration, err: &RedisError) -> Error {
    if err.is_timeout() {
        Error::Timeout {
            level: LEVEL,
            op,
            after: timeout,
        }
    } else {
        backend(op, err)
    }
}

/// `prefix + key` as one command argument, written straight into the command's buffer (no
/// `String` per key on the blocking path).
struct FullKey<'a> {
    prefix: &'a str,
    key: &'a str,
}

impl redis::ToRedisArgs for FullKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's in-memory buffer cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(self.key.as_bytes());
    }
}

/// A `GET` reply as an entry of `key`.
fn decode_one(key: &str, raw: Option<Vec<u8>>, now_ms: u64) -> Result<Option<Entry>> {
    match raw {
        Some(bytes) => open_envelope(LEVEL, key, bytes, now_ms),
        None => Ok(None),
    }
}

/// An `MGET` reply as one entry slot per key.
fn decode_many<K: AsRef<str>>(
    keys: &[K],
    raw: Vec<Option<Vec<u8>>>,
    now_ms: u64,
) -> Result<Vec<Option<Entry>>> {
    if raw.len() != keys.len() {
        return Err(Error::Backend {
            level: LEVEL,
            op: "get_many",
            reason: format!("MGET of {} keys returned {} values", keys.len(), raw.len()),
        });
    }
    keys.iter()
        .zip(raw)
        .map(|(key, bytes)| decode_one(key.as_ref(), bytes, now_ms))
        .collect()
}

/// The `SET`s of a batch as one pipeline (standalone).
fn set_pipeline(commands: Vec<(u16, Cmd)>) -> Pipeline {
    let mut pipe = Pipeline::with_capacity(commands.len());
    for (_, cmd) in commands {
        pipe.add_command(cmd).ignore();
    }
    pipe
}

/// Groups key indices by hash slot, in slot order.
fn group_by_slot(full_keys: &[String]) -> BTreeMap<u16, Vec<usize>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, key) in full_keys.iter().enumerate() {
        groups.entry(key_slot(key.as_bytes())).or_default().push(i);
    }
    groups
}

/// `MGET` on a cluster: one `MGET` per slot, pipelined per node.
async fn cluster_mget(cluster: &mut Cluster, full: &[String]) -> RedisResult<Vec<Option<Vec<u8>>>> {
    let groups: Vec<(u16, Vec<usize>)> = group_by_slot(full).into_iter().collect();
    let commands = groups
        .iter()
        .map(|(slot, members)| {
            let mut cmd = redis::cmd("MGET");
            for &i in members {
                if let Some(key) = full.get(i) {
                    cmd.arg(key);
                }
            }
            (*slot, cmd)
        })
        .collect();
    let replies = cluster.per_slot(commands).await?;
    let mut out: Vec<Option<Vec<u8>>> = vec![None; full.len()];
    for ((_, members), reply) in groups.into_iter().zip(replies) {
        let values: Vec<Option<Vec<u8>>> = redis::from_redis_value(reply).map_err(RedisError::from)?;
        if values.len() != members.len() {
            return Err(RedisError::from((
                ErrorKind::UnexpectedReturnType,
                "MGET returned the wrong number of values",
            )));
        }
        for (i, value) in members.into_iter().zip(values) {
            if let Some(slot) = out.get_mut(i) {
                *slot = value;
            }
        }
    }
    Ok(out)
}

fn scan_cmd(cursor: u64, pattern: &str) -> Cmd {
    let mut cmd = redis::cmd("SCAN");
    cmd.arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(SCAN_BATCH);
    cmd
}

fn strlen_pipe(keys: &[Vec<u8>]) -> Pipeline {
    let mut pipe = Pipeline::with_capacity(keys.len());
    for key in keys {
        pipe.cmd("STRLEN").arg(key);
    }
    pipe
}

fn add_sizes(size: &mut StorageSize, keys: &[Vec<u8>], lens: Vec<Value>) {
    size.items += keys.len() as u64;
    let key_bytes: usize = keys.iter().map(Vec::len).sum();
    size.bytes += key_bytes as u64;
    // A key of another type (not written by uno-cache) answers WRONGTYPE: it counts 0 bytes.
    size.bytes += lens
        .into_iter()
        .filter_map(as_int)
        .map(|n| u64::try_from(n).unwrap_or(0))
        .sum::<u64>();
}

async fn scan_size(
    conn: &mut ConnectionManager,
    pattern: &str,
    _node: Option<()>,
) -> RedisResult<StorageSize> {
    let mut size = StorageSize::default();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = scan_cmd(cursor, pattern).query_async(conn).await?;
        if !keys.is_empty() {
            let pipe = strlen_pipe(&keys);
            let lens = conn.req_packed_commands(&pipe, 0, pipe.len()).await?;
            add_sizes(&mut size, &keys, lens);
        }
        if next == 0 {
            return Ok(size);
        }
        cursor = next;
    }
}

async fn scan_size_cluster(
    conn: &mut ClusterConnection,
    pattern: &str,
    host: String,
    port: u16,
) -> RedisResult<StorageSize> {
    let route = SingleNodeRoutingInfo::ByAddress { host, port };
    let mut size = StorageSize::default();
    let mut cursor = 0u64;
    loop {
        let reply = conn
            .route_command(scan_cmd(cursor, pattern), RoutingInfo::SingleNode(route.clone()))
            .await?;
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply).map_err(RedisError::from)?;
        if !keys.is_empty() {
            let pipe = strlen_pipe(&keys);
            let count = pipe.len();
            let lens = conn.route_pipeline(pipe, 0, count, route.clone()).await?;
            add_sizes(&mut size, &keys, lens);
        }
        if next == 0 {
            return Ok(size);
        }
        cursor = next;
    }
}

async fn scan_unlink(conn: &mut ConnectionManager, pattern: &str) -> RedisResult<()> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = scan_cmd(cursor, pattern).query_async(conn).await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK").arg(&keys).query_async::<()>(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

async fn scan_unlink_cluster(
    conn: &mut ClusterConnection,
    pattern: &str,
    host: String,
    port: u16,
) -> RedisResult<()> {
    let route = SingleNodeRoutingInfo::ByAddress { host, port };
    let mut cursor = 0u64;
    loop {
        let reply = conn
            .route_command(scan_cmd(cursor, pattern), RoutingInfo::SingleNode(route.clone()))
            .await?;
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::from_redis_value(reply).map_err(RedisError::from)?;
        if !keys.is_empty() {
            // UNLINK of several keys must stay within one slot on a cluster.
            let mut by_slot: BTreeMap<u16, Vec<&Vec<u8>>> = BTreeMap::new();
            for key in &keys {
                by_slot.entry(key_slot(key)).or_default().push(key);
            }
            let mut pipe = Pipeline::with_capacity(by_slot.len());
            for members in by_slot.values() {
                pipe.cmd("UNLINK").arg(members.as_slice());
            }
            let count = pipe.len();
            let replies = conn.route_pipeline(pipe, 0, count, route.clone()).await?;
            if let Some(Value::ServerError(err)) =
                replies.into_iter().find(|v| matches!(v, Value::ServerError(_)))
            {
                return Err(err.into());
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

impl Storage for RedisStore {
    fn name(&self) -> &str {
        LEVEL
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        check_value(key, value_len)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        if let Some(pool) = &self.pool {
            let cmd = self.keyed_cmd("GET", &[key])?;
            let raw = pool.run("get", self.timeout, |c| cmd.query(c))?;
            return decode_one(key, raw, self.clock.now_ms());
        }
        self.blocking("get", self.timeout, self.get_op(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if let Some(pool) = &self.pool {
            let cmd = self.set_cmd(key, value, ttl, self.clock.now_ms())?;
            return pool.run("set", self.timeout, |c| cmd.query(c));
        }
        self.blocking("set", self.timeout, self.set_op(key, value, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        if let Some(pool) = &self.pool {
            let cmd = self.keyed_cmd("UNLINK", &[key])?;
            let removed: i64 = pool.run("delete", self.timeout, |c| cmd.query(c))?;
            return Ok(removed > 0);
        }
        self.blocking("delete", self.timeout, self.delete_op(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if let Some(pool) = &self.pool {
            let cmd = self.keyed_cmd("MGET", keys)?;
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let raw = pool.run("get_many", self.timeout, |c| cmd.query(c))?;
            return decode_many(keys, raw, self.clock.now_ms());
        }
        self.blocking("get_many", self.timeout, self.get_many_op(keys))
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if let Some(pool) = &self.pool {
            let commands = self.set_many_commands(items, ttl)?;
            return pool.run_pipeline("set_many", self.timeout, commands);
        }
        self.blocking("set_many", self.timeout, self.set_many_op(items, ttl))
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        if let Some(pool) = &self.pool {
            let commands = self.set_each_commands(items)?;
            return pool.run_pipeline("set_each", self.timeout, commands);
        }
        self.blocking("set_each", self.timeout, self.set_each_op(items))
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if let Some(pool) = &self.pool {
            let cmd = self.keyed_cmd("UNLINK", keys)?;
            if keys.is_empty() {
                return Ok(0);
            }
            let removed: i64 = pool.run("delete_many", self.timeout, |c| cmd.query(c))?;
            return Ok(u64::try_from(removed).unwrap_or(0));
        }
        self.blocking("delete_many", self.timeout, self.delete_many_op(keys))
    }

    /// Keys and bytes (key + enveloped value) under this prefix, counted with `SCAN` on every
    /// primary; O(keys), under `admin_timeout`.
    fn size(&self) -> Result<StorageSize> {
        self.blocking("size", self.admin_timeout, Ok(self.size_op()))
    }

    /// Deletes every key under this prefix (`SCAN` + `UNLINK`); keys of other prefixes and
    /// programs stay. Under `admin_timeout`.
    fn clear(&self) -> Result<()> {
        self.blocking("clear", self.admin_timeout, Ok(self.clear_op()))
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        self.later("size", self.admin_timeout, Ok(self.size_op()))
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        self.later("get", self.timeout, self.get_op(key))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.later("set", self.timeout, self.set_op(key, value, ttl))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.later("delete", self.timeout, self.delete_op(key))
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        self.later("get_many", self.timeout, self.get_many_op(keys))
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.later("set_many", self.timeout, self.set_many_op(items, ttl))
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        self.later("set_each", self.timeout, self.set_each_op(items))
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        self.later("delete_many", self.timeout, self.delete_many_op(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_matches_the_cluster_specification() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(key_slot(b"123456789"), 0x31C3 % CLUSTER_SLOTS);
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            key_slot(b"foo{}{bar}"),
            "empty tag: whole key"
        );
        assert_ne!(key_slot(b"foo{}{bar}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    }

    #[test]
    fn glob_escape_matches_the_prefix_literally() {
        assert_eq!(glob_escape("app:"), "app:*");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }

    #[test]
    fn host_forms_normalise_and_hide_passwords() {
        let t = parse_target(0, "127.0.0.1:7000", None, None).unwrap();
        assert_eq!(
            (t.url.as_str(), t.display.as_str()),
            ("redis://127.0.0.1:7000", "127.0.0.1:7000")
        );
        let t = parse_target(0, "cache.local", Some("app"), Some("p@ss word")).unwrap();
        assert_eq!(t.display, "cache.local:6379");
        assert!(
            t.url.starts_with("redis://app:p%40ss%20word@cache.local"),
            "{}",
            t.url
        );
        let t = parse_target(0, "redis+cluster://u:secret@h:1/", None, None).unwrap();
        assert!(t.cluster_scheme);
        assert!(t.url.starts_with("redis://u:secret@h:1"));
        assert_eq!(parse_target(0, "redis://h:1/3", None, None).unwrap().db, 3);
    }

    #[test]
    fn bad_hosts_are_config_errors_naming_the_field_without_the_password() {
        for bad in [
            "",
            "http://h:1",
            "redis://u:topsecret@h:1/notanumber",
            "redis://:topsecret@:1",
            "h:notaport",
        ] {
            let err = parse_target(2, bad, None, None).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, Error::Config { ref field, .. } if field == "redis.hosts[2]"),
                "{bad}: {text}"
            );
            assert!(!text.contains("topsecret"), "{text}");
        }
    }

    #[test]
    fn slot_map_finds_owners_and_gaps() {
        let map = SlotMap {
            ranges: vec![
                (0, 5460, "a".into(), 1),
                (5461, 10922, "b".into(), 2),
                (10923, 16383, "c".into(), 3),
            ],
        };
        assert_eq!(map.owner(0), Some(("a", 1)));
        assert_eq!(map.owner(5461), Some(("b", 2)));
        assert_eq!(map.owner(16383), Some(("c", 3)));
        let gap = SlotMap {
            ranges: vec![(10, 20, "a".into(), 1)],
        };
        assert_eq!(gap.owner(5), None);
        assert_eq!(gap.owner(21), None);
        assert_eq!(map.primaries().len(), 3);
    }
}
