//! What a [`MemcachedStore`](super::MemcachedStore) is told: [`MemcachedOptions`], the host
//! strings it parses into [`HostSpec`]s, and the item-size and expiry rules of memcached.

use std::sync::Arc;
use std::time::Duration;

use super::super::nodes::NodeBreakers;
use super::super::{
    check_key, redact, LevelDurations, DEFAULT_ADMIN_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT,
};
use super::routing::map_key;
use super::store::fits_item;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// The longest key memcached accepts.
pub const MAX_MEMCACHED_KEY: usize = 250;
/// memcached's default item size limit (`-I 1m`).
pub const DEFAULT_MAX_ITEM_SIZE: usize = 1024 * 1024;
/// Bytes memcached counts against the item limit besides key and value: the item header (48
/// bytes on 64-bit), the CAS value (8), the key's terminating NUL (1) and the value's CRLF (2).
/// Measured on memcached 1.6.18: with `-I 1m` the largest value for a key of `n` bytes is
/// `1048576 - 59 - n`. A server that counts more still refuses, which we also report as
/// [`Error::ValueTooLarge`].
pub(super) const ITEM_OVERHEAD: usize = 59;
/// The largest value (before the envelope) that fits an item limit of `item_size_max` bytes
/// under a server key of `server_key_len` bytes: the limit less [`ITEM_OVERHEAD`], the envelope
/// and the key. The level's own check applies it to `max_item_size`; a server's refusal, to the
/// `item_size_max` that server reported.
pub(super) fn value_limit(item_size_max: usize, server_key_len: usize) -> usize {
    item_size_max.saturating_sub(ITEM_OVERHEAD + super::super::envelope::HEADER_LEN + server_key_len)
}

/// memcached reads an expiry above this many seconds as an absolute Unix time.
pub(super) const RELATIVE_EXPIRY_LIMIT_SECS: u64 = 60 * 60 * 24 * 30;
/// The largest item limit we accept: a value must fit the binary protocol's 32-bit body length.
const MAX_ITEM_SIZE_LIMIT: usize = 1 << 30;

/// Where and how to reach Memcached.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::distributed::MemcachedOptions;
///
/// let one = MemcachedOptions::new("127.0.0.1:11211");
/// let sharded = MemcachedOptions::with_hosts(["10.0.0.1:11211", "10.0.0.2:11211"])
///     .prefix("app:")
///     .timeout(Duration::from_millis(50));
/// ```
#[derive(Clone)]
#[must_use]
pub struct MemcachedOptions {
    pub(super) hosts: Vec<String>,
    pub(super) prefix: String,
    pub(super) timeout: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) admin_timeout: Duration,
    pub(super) default_ttl: Option<Duration>,
    pub(super) workers: usize,
    pub(super) max_item_size: usize,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) node_breakers: Option<Arc<NodeBreakers>>,
}

impl std::fmt::Debug for MemcachedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedOptions")
            .field("hosts", &self.hosts.iter().map(|h| redact(h)).collect::<Vec<_>>())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("admin_timeout", &self.admin_timeout)
            .field("default_ttl", &self.default_ttl)
            .field("workers", &self.workers)
            .field("max_item_size", &self.max_item_size)
            .finish_non_exhaustive()
    }
}

impl MemcachedOptions {
    /// One host: `host:port`, `host` (port 11211) or a `memcache://host:port` URL (the query
    /// options `timeout`, `tcp_nodelay` and `protocol=binary` of the `memcache` crate are
    /// accepted; `protocol=ascii`, `udp=true` and credentials are refused).
    pub fn new(host: impl Into<String>) -> Self {
        Self::with_hosts([host.into()])
    }

    /// Several hosts; keys are sharded across them.
    pub fn with_hosts<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        MemcachedOptions {
            hosts: hosts.into_iter().map(Into::into).collect(),
            prefix: String::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            admin_timeout: DEFAULT_ADMIN_TIMEOUT,
            default_ttl: None,
            workers: 4,
            max_item_size: DEFAULT_MAX_ITEM_SIZE,
            clock: Arc::new(SystemClock),
            node_breakers: None,
        }
    }

    /// Adds a host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Namespace: every key is stored as `prefix + key` (then mapped, see
    /// [`map_key`](super::map_key)). End it with a separator (`"app:"`) so that no prefix is the
    /// start of another.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Deadline of every key call (default 100 ms), covering the wait for a connection, the
    /// request and the whole reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Deadline for reaching every host at construction (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of `size` and `clear` (default 10 s).
    pub fn admin_timeout(mut self, timeout: Duration) -> Self {
        self.admin_timeout = timeout;
        self
    }

    /// TTL for a `set` without one (default: none; memcached may still evict under memory
    /// pressure).
    pub fn default_ttl(mut self, ttl: Option<Duration>) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// Async calls in flight per host at once, each on a connection kept open (default 4, at
    /// least 1); more wait for a free connection, within their deadline. Blocking calls run on
    /// the caller's thread, on a connection of their own kept for reuse (up to `max(workers,
    /// 64)` per host).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The servers' item size limit, memcached's `-I` (default 1 MiB). A value over it is
    /// refused with [`Error::ValueTooLarge`] before anything is sent, and the key's value on the
    /// server is left as it was.
    ///
    /// Set above a server's `-I`, that server refuses the larger values itself: the same error
    /// for a single `set`, whose `max` is the largest value that server takes (from the
    /// `item_size_max` it reported at connect, or, with
    /// [`node_breakers`](Self::node_breakers), when a probe found it back after it was down,
    /// at start or since; 0 if it did not say), and in a batch of more than one
    /// item an [`Error::PartialBatch`] whose `refused` (and `failed`) are the refused items, all
    /// of them if the server refused them all, and whose cause is that error; items of the
    /// batch whose host was not reached are in `failed` too, but not in `refused`. The others
    /// were stored. Such a refusal comes after the value was
    /// sent, and memcached then drops the key's previous value on that server too: the key
    /// reads as a miss there, never as the older value. Set this to the smallest `-I` of the
    /// servers to have such values refused before they are sent instead.
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes;
        self
    }

    /// The clock that stamps envelope expiries and judges them on read. A TTL over 30 days goes
    /// to memcached as a Unix time by the system clock all the same: memcached reads it on its
    /// own clock.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// A circuit breaker per host, from `breakers` (the same set may be given to a store that
    /// replaces this one). A host whose breaker is open fails its keys at once with
    /// [`Error::NodeUnavailable`] while the other hosts serve theirs; a batch that reached only
    /// some hosts fails with [`Error::PartialBatch`], which says which keys were not reached and
    /// carries what the others answered. With breakers the store also starts while some (not
    /// all) hosts are down: their breakers start open, and a probe after the cool-down lets a
    /// host rejoin. Without (the default) every host must answer at start-up and a failed
    /// host's error is returned as it is; but a `clear` some hosts took and others did not
    /// names them all, with or without breakers (see [`MemcachedStore`](super::MemcachedStore)).
    pub fn node_breakers(mut self, breakers: Arc<NodeBreakers>) -> Self {
        self.node_breakers = Some(breakers);
        self
    }

    /// The check a store opened with these options makes of a value before sending it (the key
    /// rules, the item limit), made without a connection: for a level not connected yet, so
    /// that it refuses at once what the connected store would.
    pub(crate) fn value_check(&self) -> impl Fn(&str, usize) -> Result<()> + Send + Sync + 'static {
        let (prefix, max_item_size) = (self.prefix.clone(), self.max_item_size);
        move |key, len| {
            check_key(key)?;
            // The server form `Router::server_key` gives the key.
            let full = format!("{prefix}{key}");
            let mapped = map_key(&full);
            fits_item(max_item_size, key, &mapped, len)
        }
    }

    /// Refuses options no store could work with.
    pub(super) fn check(&self) -> Result<()> {
        if self.hosts.is_empty() {
            return Err(Error::Config {
                field: "memcached.hosts".to_owned(),
                reason: "no host given; give host:port".to_owned(),
            });
        }
        LevelDurations {
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            admin_timeout: self.admin_timeout,
            default_ttl: self.default_ttl,
        }
        .check("MemcachedOptions", "memcached")?;
        let floor = ITEM_OVERHEAD + super::super::envelope::HEADER_LEN + MAX_MEMCACHED_KEY;
        if self.max_item_size <= floor || self.max_item_size > MAX_ITEM_SIZE_LIMIT {
            return Err(Error::Config {
                field: "memcached.max_item_size".to_owned(),
                reason: format!(
                    "{} bytes is outside {floor}..={MAX_ITEM_SIZE_LIMIT}; use the server's -I value",
                    self.max_item_size
                ),
            });
        }
        Ok(())
    }
}

/// The `exptime` memcached gets for a TTL of `ttl_ms` set at `now_ms`: `ceil(ttl) + 1` whole
/// seconds (never 0, which means "never"), or an absolute Unix time past 30 days.
pub(crate) fn exptime(now_ms: u64, ttl_ms: Option<u64>) -> u32 {
    let Some(ttl_ms) = ttl_ms else { return 0 };
    let relative = ttl_ms.div_ceil(1_000).saturating_add(1);
    if relative <= RELATIVE_EXPIRY_LIMIT_SECS {
        return u32::try_from(relative).unwrap_or(u32::MAX);
    }
    let absolute = now_ms.saturating_add(ttl_ms).div_ceil(1_000).saturating_add(1);
    u32::try_from(absolute).unwrap_or(u32::MAX)
}

/// A host, checked and normalised.
#[derive(Debug, Clone)]
pub(super) struct HostSpec {
    /// The name or address to resolve.
    pub(super) host: String,
    pub(super) port: u16,
    /// `host:port` for messages.
    pub(super) display: String,
    /// Whether to turn Nagle's algorithm off (the default; `tcp_nodelay=false` keeps it).
    pub(super) nodelay: bool,
}

pub(super) fn parse_host(index: usize, raw: &str) -> Result<HostSpec> {
    let field = format!("memcached.hosts[{index}]");
    let raw = raw.trim();
    let bad = |reason: String| Error::Config {
        field: field.clone(),
        reason,
    };
    if raw.is_empty() {
        return Err(bad("empty host; use host:port or memcache://host:port".to_owned()));
    }
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("memcache://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|err| {
        bad(format!(
            "{:?} is not a valid host or URL ({err}); use host:port or memcache://host:port",
            redact(raw)
        ))
    })?;
    match url.scheme() {
        "memcache" | "memcache+tcp" => {}
        other => {
            return Err(bad(format!(
                "unsupported scheme {other:?}; use memcache:// (TCP; TLS, UDP and unix sockets are not supported)"
            )))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(format!(
            "{:?} carries credentials; memcached is used without authentication, remove them",
            redact(raw)
        )));
    }
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.trim_start_matches('[').trim_end_matches(']').to_owned(),
        _ => return Err(bad(format!("{:?} names no host; use host:port", redact(raw)))),
    };
    let port = url.port().unwrap_or(11211);
    if port == 0 {
        // Nothing listens on port 0: every connect was refused, and taken for an outage.
        return Err(bad(format!(
            "{:?} names port 0, which no server listens on; give the server's port (11211 by default)",
            redact(raw)
        )));
    }
    let mut nodelay = true;
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("protocol", "ascii") => {
                return Err(bad(
                    "protocol=ascii is not supported; uno-cache speaks memcached's binary protocol, drop the option"
                        .to_owned(),
                ))
            }
            ("udp", "true") => return Err(bad("udp=true is not supported; use TCP".to_owned())),
            ("tcp_nodelay", "false") => nodelay = false,
            // `timeout` (the crate's socket timeout) is covered by the store's own deadlines.
            _ => {}
        }
    }
    Ok(HostSpec {
        display: format!("{}:{port}", url.host_str().unwrap_or(&host)),
        host,
        port,
        nodelay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zero_timeout_is_refused_naming_the_builder_call_that_set_it() {
        let zero = Duration::ZERO;
        for (options, field) in [
            (
                MemcachedOptions::new("h:1").timeout(zero),
                "MemcachedOptions::timeout",
            ),
            (
                MemcachedOptions::new("h:1").connect_timeout(zero),
                "MemcachedOptions::connect_timeout",
            ),
            (
                MemcachedOptions::new("h:1").admin_timeout(zero),
                "MemcachedOptions::admin_timeout",
            ),
        ] {
            let err = options.check().unwrap_err();
            assert!(
                matches!(&err, Error::Config { field: f, .. } if f == field),
                "{err}"
            );
        }
        assert!(MemcachedOptions::new("h:1").check().is_ok());
    }

    #[test]
    fn a_zero_default_ttl_is_refused_naming_the_memcached_key() {
        let err = MemcachedOptions::new("h:1")
            .default_ttl(Some(Duration::ZERO))
            .check()
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config { field, reason }
                if field == "memcached.default_ttl" && reason.contains("use None for no expiry")),
            "{err}"
        );
        assert!(MemcachedOptions::new("h:1").default_ttl(None).check().is_ok());
    }

    #[test]
    fn exptime_follows_memcached_rules() {
        let now = 1_700_000_000_000;
        assert_eq!(exptime(now, None), 0, "no TTL: never");
        assert_eq!(exptime(now, Some(1)), 2, "sub-second rounds up, plus a tick");
        assert_eq!(exptime(now, Some(1_000)), 2);
        assert_eq!(exptime(now, Some(1_001)), 3);
        let limit_ms = (RELATIVE_EXPIRY_LIMIT_SECS - 1) * 1_000;
        assert_eq!(
            u64::from(exptime(now, Some(limit_ms))),
            RELATIVE_EXPIRY_LIMIT_SECS
        );
        let long = 31 * 24 * 3600 * 1_000;
        assert_eq!(
            u64::from(exptime(now, Some(long))),
            (now + long) / 1_000 + 1,
            "absolute time"
        );
        assert_eq!(exptime(now, Some(u64::MAX)), u32::MAX);
    }

    #[test]
    fn host_forms_normalise() {
        let spec = parse_host(0, "127.0.0.1").unwrap();
        assert_eq!(spec.display, "127.0.0.1:11211");
        assert_eq!((spec.host.as_str(), spec.port), ("127.0.0.1", 11211));
        assert!(spec.nodelay);
        let spec = parse_host(0, "memcache://h:1?protocol=binary&timeout=2&tcp_nodelay=false").unwrap();
        assert_eq!((spec.host.as_str(), spec.port, spec.nodelay), ("h", 1, false));
        let spec = parse_host(0, "[::1]:11212").unwrap();
        assert_eq!(
            (spec.host.as_str(), spec.display.as_str()),
            ("::1", "[::1]:11212")
        );
        for bad in [
            "",
            "redis://h:1",
            "memcache://:1",
            "h:port",
            "memcache://h:1?protocol=ascii",
            "memcache://u:p@h:1",
        ] {
            assert!(matches!(parse_host(1, bad), Err(Error::Config { .. })), "{bad}");
        }
    }
}
