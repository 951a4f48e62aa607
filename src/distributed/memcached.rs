//! [`MemcachedStore`]: one or more Memcached servers as a cache level.
//!
//! See [`MemcachedStore`] for how each call maps to the server.

use std::borrow::Cow;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use memcache::{CommandError, MemcacheError, ServerError};
use scheduled_thread_pool::ScheduledThreadPool;
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use super::runtime::{deadline_after, IoRuntime};
use super::{ceil_ms, check_key, effective_ttl, envelope, open_envelope, redact};
use super::{DEFAULT_ADMIN_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT};
use crate::clock::{Clock, SystemClock};
use crate::error::{key_for_error, Error, Result};
use crate::storage::{BoxFuture, Entry, Storage, StorageSize};

const LEVEL: &str = "memcached";
/// The longest key memcached accepts.
pub const MAX_MEMCACHED_KEY: usize = 250;
/// memcached's default item size limit (`-I 1m`).
pub const DEFAULT_MAX_ITEM_SIZE: usize = 1024 * 1024;
/// Bytes memcached counts against the item limit besides key and value: the item header (48
/// bytes on 64-bit), the CAS value (8), the key's terminating NUL (1) and the value's CRLF (2).
/// Measured on memcached 1.6.18: with `-I 1m` the largest value for a key of `n` bytes is
/// `1048576 - 59 - n`. A server that counts more still refuses, which we also report as
/// [`Error::ValueTooLarge`].
const ITEM_OVERHEAD: usize = 59;
/// memcached reads an expiry above this many seconds as an absolute Unix time.
const RELATIVE_EXPIRY_LIMIT_SECS: u64 = 60 * 60 * 24 * 30;

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
    hosts: Vec<String>,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    admin_timeout: Duration,
    default_ttl: Option<Duration>,
    workers: usize,
    max_item_size: usize,
    clock: Arc<dyn Clock>,
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
    /// One host: `host:port`, `host` (port 11211) or a `memcache://host:port?…` URL (the
    /// `memcache` crate's query options, such as `protocol=ascii`, pass through).
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
        }
    }

    /// Adds a host.
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.hosts.push(host.into());
        self
    }

    /// Namespace: every key is stored as `prefix + key` (then mapped, see [`map_key`]). End it
    /// with a separator (`"app:"`) so that no prefix is the start of another.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Deadline of every key call (default 100 ms). Also the socket read/write timeout and the
    /// wait for a new connection, so a worker is never stuck much longer than a caller waits.
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

    /// Worker threads running the blocking client (default 4, at least 1): the number of calls
    /// in flight at once.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The servers' item size limit, memcached's `-I` (default 1 MiB).
    pub fn max_item_size(mut self, bytes: usize) -> Self {
        self.max_item_size = bytes;
        self
    }

    /// The clock that stamps envelope expiries and judges them on read.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

/// Maps `prefix + key` to a key memcached accepts, without collisions:
///
/// 1. A key of at most 250 bytes made only of printable ASCII other than `%` (0x21–0x7E, no
///    space) passes through unchanged.
/// 2. Any other key is escaped: each byte outside that set (space, control characters, `%`,
///    UTF-8 bytes of non-ASCII characters) becomes `%XX` (uppercase hex). The result contains a
///    `%`, so it never equals a pass-through key, and escaping is reversible, so two keys never
///    escape to the same string. Used if the result is at most 250 bytes.
/// 3. Otherwise the key becomes `%#` followed by the 64 hex digits of its SHA-256. `%#` never
///    appears in an escaped key (there `%` is always followed by a hex digit), so a hashed key
///    never equals a key of kind 1 or 2; two long keys share a form only if SHA-256 collides.
///
/// ```
/// use uno_cache::distributed::map_memcached_key as map_key;
/// assert_eq!(map_key("user:42"), "user:42");
/// assert_eq!(map_key("a key"), "a%20key");
/// assert_eq!(map_key("100%"), "100%25");
/// assert!(map_key(&"x".repeat(300)).starts_with("%#"));
/// ```
#[must_use]
pub fn map_key(full: &str) -> Cow<'_, str> {
    fn plain(b: u8) -> bool {
        (0x21..=0x7E).contains(&b) && b != b'%'
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if full.len() <= MAX_MEMCACHED_KEY && full.bytes().all(plain) {
        return Cow::Borrowed(full);
    }
    let mut escaped = String::with_capacity(full.len() + 16);
    for b in full.bytes() {
        if plain(b) {
            escaped.push(char::from(b));
        } else {
            escaped.push('%');
            escaped.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
            escaped.push(char::from(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0')));
        }
        if escaped.len() > MAX_MEMCACHED_KEY {
            break;
        }
    }
    if escaped.len() <= MAX_MEMCACHED_KEY {
        return Cow::Owned(escaped);
    }
    let digest = Sha256::digest(full.as_bytes());
    let mut hashed = String::with_capacity(2 + 64);
    hashed.push_str("%#");
    for b in digest {
        hashed.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
        hashed.push(char::from(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0')));
    }
    Cow::Owned(hashed)
}

/// FNV-1a, 64-bit: the fixed hash that picks a key's host.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash (Lamping & Veach, 2014): a bucket in `0..buckets`.
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]
fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let buckets = i64::try_from(buckets).unwrap_or(i64::MAX).max(1);
    let mut b: i64 = -1;
    let mut j: i64 = 0;
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    usize::try_from(b).unwrap_or(0)
}

/// The `exptime` memcached gets for a TTL of `ttl_ms` set at `now_ms`; see the module docs.
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
struct HostSpec {
    /// The URL handed to the client, with our socket timeout added unless given.
    url: url::Url,
    /// `host:port` for messages.
    display: String,
}

fn parse_host(index: usize, raw: &str, timeout: Duration) -> Result<HostSpec> {
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
    let mut url = url::Url::parse(&with_scheme).map_err(|err| {
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
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => return Err(bad(format!("{:?} names no host; use host:port", redact(raw)))),
    };
    if url.port().is_none() && url.set_port(Some(11211)).is_err() {
        return Err(bad(format!("cannot set the port of {:?}", redact(raw))));
    }
    let port = url.port().unwrap_or(11211);
    if !url.query_pairs().any(|(k, _)| k == "timeout") {
        let secs = format!("{:.3}", timeout.as_secs_f64());
        url.query_pairs_mut().append_pair("timeout", &secs);
    }
    Ok(HostSpec {
        url,
        display: format!("{host}:{port}"),
    })
}

/// Whether an error leaves the connection in a known state (a well-formed reply the server
/// sent); anything else drops the connection.
fn connection_survives(err: &MemcacheError) -> bool {
    matches!(
        err,
        MemcacheError::CommandError(
            CommandError::KeyNotFound | CommandError::KeyExists | CommandError::ValueTooLarge
        )
    )
}

fn is_too_large(err: &MemcacheError) -> bool {
    match err {
        MemcacheError::CommandError(CommandError::ValueTooLarge) => true,
        MemcacheError::ServerError(ServerError::Error(msg)) => msg.contains("too large"),
        _ => false,
    }
}

/// A worker's connection to one host, rebuilt after any failure.
struct HostConn {
    spec: Arc<HostSpec>,
    client: Option<memcache::Client>,
    wait: Duration,
    threads: Arc<ScheduledThreadPool>,
}

impl HostConn {
    fn client(&mut self) -> std::result::Result<&memcache::Client, MemcacheError> {
        if self.client.is_none() {
            self.client = Some(new_client(&self.spec.url, self.wait, &self.threads)?);
        }
        self.client
            .as_ref()
            .ok_or_else(|| MemcacheError::BadURL("no client".to_owned()))
    }

    /// Runs `f`; on a failure that may have broken the connection, drops it and, if `deadline`
    /// allows, tries once more on a fresh one (every call we make is idempotent).
    fn call<T>(
        &mut self,
        op: &'static str,
        deadline: Instant,
        f: impl Fn(&memcache::Client) -> std::result::Result<T, MemcacheError>,
    ) -> Result<T> {
        let mut retried = false;
        loop {
            let out = self.client().and_then(&f);
            match out {
                Ok(value) => return Ok(value),
                Err(err) if is_too_large(&err) => {
                    // Our own check passed, so the server's -I is below `max_item_size`. The
                    // caller fills in the key and size.
                    if !connection_survives(&err) {
                        self.client = None;
                    }
                    return Err(Error::ValueTooLarge {
                        key: String::new(),
                        len: 0,
                        max: 0,
                        store: format!(
                            "memcached at {} ({err}); its -I item limit is below max_item_size",
                            self.spec.display
                        ),
                    });
                }
                Err(err) if connection_survives(&err) => return Err(self.error(op, &err)),
                Err(err) => {
                    self.client = None;
                    let stale = matches!(&err, MemcacheError::IOError(io) if matches!(
                        io.kind(),
                        std::io::ErrorKind::BrokenPipe
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::UnexpectedEof
                    ));
                    if retried || !stale || Instant::now() >= deadline {
                        return Err(self.error(op, &err));
                    }
                    retried = true;
                }
            }
        }
    }

    fn error(&self, op: &'static str, err: &MemcacheError) -> Error {
        Error::Backend {
            level: LEVEL,
            op,
            reason: format!("{}: {err}", self.spec.display),
        }
    }
}

fn new_client(
    url: &url::Url,
    wait: Duration,
    threads: &Arc<ScheduledThreadPool>,
) -> std::result::Result<memcache::Client, MemcacheError> {
    // One connection per pool, never tested on checkout (that would cost a round trip per call);
    // we drop the whole client after a failure instead of trusting the pool to notice.
    let pool = r2d2::Pool::builder()
        .max_size(1)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(wait)
        .thread_pool(threads.clone())
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(memcache::ConnectionManager::new(url.clone()));
    memcache::Client::with_pools(vec![pool])
}

type Job = Box<dyn FnOnce(&mut [HostConn]) + Send>;

/// Where a job's result goes.
enum Reply<T> {
    Blocking(mpsc::SyncSender<Result<T>>),
    Async(oneshot::Sender<Result<T>>),
}

impl<T> Reply<T> {
    fn abandoned(&self) -> bool {
        match self {
            Reply::Blocking(_) => false,
            Reply::Async(tx) => tx.is_closed(),
        }
    }

    fn send(self, value: Result<T>) {
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.try_send(value);
            }
            Reply::Async(tx) => {
                let _ = tx.send(value);
            }
        }
    }
}

/// A call on one host, run by a worker.
type HostCall<T> = Box<dyn FnOnce(&mut HostConn, Instant) -> Result<T> + Send>;
/// Calls and the host each goes to.
type Calls<T> = Vec<(usize, HostCall<T>)>;
/// Entries found on one host, by index into the caller's keys.
type Found = Vec<(usize, Option<Entry>)>;

/// The worker threads; dropping closes the queue and joins them.
struct Workers {
    queue: Option<crossbeam_channel::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    ids: Vec<ThreadId>,
}

impl Workers {
    fn start(count: usize, hosts: &[Arc<HostSpec>], wait: Duration) -> Result<Workers> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        // Connection attempts run here (r2d2 connects in the background); a blocked attempt
        // must not hold up other hosts, so one thread per host.
        let connectors = Arc::new(
            ScheduledThreadPool::builder()
                .num_threads(hosts.len().max(1))
                .thread_name_pattern("uno-cache-memcached-connect-{}")
                .build(),
        );
        let mut threads = Vec::with_capacity(count);
        for n in 0..count.max(1) {
            let rx = rx.clone();
            let mut conns: Vec<HostConn> = hosts
                .iter()
                .map(|spec| HostConn {
                    spec: spec.clone(),
                    client: None,
                    wait,
                    threads: connectors.clone(),
                })
                .collect();
            let thread = std::thread::Builder::new()
                .name(format!("uno-cache-memcached-{n}"))
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        job(&mut conns);
                    }
                })
                .map_err(|err| Error::Backend {
                    level: LEVEL,
                    op: "start",
                    reason: format!("cannot start a worker thread: {err}"),
                })?;
            threads.push(thread);
        }
        let ids = threads.iter().map(|t| t.thread().id()).collect();
        Ok(Workers {
            queue: Some(tx),
            threads,
            ids,
        })
    }

    fn submit<T: Send + 'static>(&self, host: usize, deadline: Instant, call: HostCall<T>, reply: Reply<T>) {
        let job: Job = Box::new(move |conns: &mut [HostConn]| {
            // The caller has given up: do not touch the server for nothing.
            if reply.abandoned() || Instant::now() >= deadline {
                return;
            }
            let out = match conns.get_mut(host) {
                Some(conn) => call(conn, deadline),
                None => Err(Error::Backend {
                    level: LEVEL,
                    op: "route",
                    reason: format!("no host #{host}"),
                }),
            };
            reply.send(out);
        });
        if let Some(queue) = &self.queue {
            // A send fails only when every worker has exited; the reply side then sees its
            // sender dropped and reports the store as stopped.
            let _ = queue.send(job);
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.queue = None;
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if !self.ids.contains(&me) {
                let _ = thread.join();
            }
        }
    }
}

/// Memcached (one or more hosts) as a cache level.
///
/// - **Sharding** is ours, not the client's: a key goes to host `jump(fnv1a64(mapped key), n)`
///   (FNV-1a 64 and Lamping–Veach jump consistent hashing, both fixed and documented), so every
///   process and every build agrees on where a key lives, and adding a host moves only ~1/n of
///   the keys. (The `memcache` crate's default sharding uses `DefaultHasher`, which Rust does not
///   promise to keep stable.)
/// - **Keys** memcached cannot take (spaces, control characters, non-ASCII, over 250 bytes) are
///   mapped without collisions; see [`map_key`].
/// - **TTLs** are whole seconds for memcached, which reads `0` as "never" and anything over 30
///   days as an absolute Unix time. We send `ceil(ttl) + 1` seconds (never 0; the extra second
///   covers memcached's clock, which ticks in whole seconds and may otherwise drop an item up to
///   a second early), and an absolute time for TTLs over 30 days. The exact expiry, to the
///   millisecond, is in the [envelope](super::envelope), and `get` honours it.
/// - **Values** larger than the item limit (`max_item_size`, memcached's `-I`, 1 MiB by default,
///   less the key, the envelope and memcached's per-item header) are refused with
///   [`Error::ValueTooLarge`] before anything is sent.
/// - **`size`** sums `curr_items` and `bytes` from `stats` across hosts. Memcached has no way to
///   count by prefix, so this counts every item on the servers, whatever its prefix, and it
///   still counts items that expired or were flushed until memcached reclaims them lazily.
/// - **`clear`** runs `flush_all` on every host only when the store has no prefix (the servers
///   then belong to it). With a prefix it is refused with [`Error::Config`]: memcached cannot
///   find keys by prefix, and flushing would wipe other prefixes' entries.
///
/// The `memcache` client is blocking. Calls run on the store's worker threads
/// (`uno-cache-memcached-N`), each with its own connection per host, so a connection is never
/// shared while a call is on it; a connection that failed is dropped and replaced, never reused
/// (a timed-out connection may still hold a late reply). Callers wait on a channel with the
/// deadline; async callers never block the executor.
///
/// ```no_run
/// use std::time::Duration;
/// use uno_cache::Storage;
/// use uno_cache::distributed::{MemcachedOptions, MemcachedStore};
///
/// let mc = MemcachedStore::connect(MemcachedOptions::new("127.0.0.1:11211").prefix("app:"))?;
/// mc.set("a key with spaces", b"fine", Some(Duration::from_secs(30)))?;
/// assert_eq!(mc.get("a key with spaces")?.map(|e| e.value), Some(b"fine".to_vec()));
/// # Ok::<(), uno_cache::Error>(())
/// ```
pub struct MemcachedStore {
    // Field order is drop order: workers (and their connections) first, then the timer thread.
    workers: Workers,
    hosts: Vec<Arc<HostSpec>>,
    prefix: String,
    timeout: Duration,
    admin_timeout: Duration,
    default_ttl: Option<Duration>,
    max_item_size: usize,
    clock: Arc<dyn Clock>,
    rt: IoRuntime,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("hosts", &self.hosts())
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How many items went where: (host, indices into the caller's slice).
type Plan = Vec<(usize, Vec<usize>)>;

impl MemcachedStore {
    /// Starts the workers and checks that every host answers (`version`) within
    /// `connect_timeout`. Works from any thread, inside a tokio runtime or not.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad host or option; [`Error::Backend`] (op `"connect"`) naming
    /// the host that cannot be reached or refuses the connection.
    pub fn connect(options: MemcachedOptions) -> Result<Self> {
        let (store, connect_timeout) = Self::prepare(options)?;
        let results = store.wait_blocking("connect", connect_timeout, store.version_calls(connect_timeout));
        store.check_connect(results, connect_timeout)?;
        Ok(store)
    }

    /// [`connect`](Self::connect) without blocking the caller's executor.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_async(options: MemcachedOptions) -> Result<Self> {
        let (store, connect_timeout) = Self::prepare(options)?;
        let results = store
            .wait_async("connect", connect_timeout, store.version_calls(connect_timeout))
            .await;
        store.check_connect(results, connect_timeout)?;
        Ok(store)
    }

    fn prepare(options: MemcachedOptions) -> Result<(Self, Duration)> {
        if options.hosts.is_empty() {
            return Err(Error::Config {
                field: "memcached.hosts".to_owned(),
                reason: "no host given; give host:port".to_owned(),
            });
        }
        if options.timeout.is_zero() || options.connect_timeout.is_zero() || options.admin_timeout.is_zero() {
            return Err(Error::Config {
                field: "memcached.timeout".to_owned(),
                reason: "timeouts must be above zero".to_owned(),
            });
        }
        if options.default_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(Error::Config {
                field: "memcached.default_ttl".to_owned(),
                reason: "a default TTL of zero would expire every entry at once; use None for no expiry"
                    .to_owned(),
            });
        }
        if options.max_item_size <= ITEM_OVERHEAD + envelope::HEADER_LEN + MAX_MEMCACHED_KEY {
            return Err(Error::Config {
                field: "memcached.max_item_size".to_owned(),
                reason: format!(
                    "{} bytes leaves no room for a value; use the server's -I value",
                    options.max_item_size
                ),
            });
        }
        let hosts = options
            .hosts
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_host(i, raw, options.timeout).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let rt = IoRuntime::start(LEVEL)?;
        let workers = Workers::start(options.workers, &hosts, options.timeout)?;
        Ok((
            MemcachedStore {
                workers,
                hosts,
                prefix: options.prefix,
                timeout: options.timeout,
                admin_timeout: options.admin_timeout,
                default_ttl: options.default_ttl,
                max_item_size: options.max_item_size,
                clock: options.clock,
                rt,
            },
            options.connect_timeout,
        ))
    }

    /// One `version` call per host on a client made for the check (its connection wait is the
    /// connect timeout, not the per-call one).
    fn version_calls(&self, connect_timeout: Duration) -> Calls<String> {
        (0..self.hosts.len())
            .map(|host| {
                let call: HostCall<String> = Box::new(move |conn: &mut HostConn, _deadline| {
                    let client = new_client(&conn.spec.url, connect_timeout, &conn.threads)
                        .and_then(|client| client.version().map(|v| (client, v)));
                    match client {
                        Ok((client, _version)) => {
                            conn.client = Some(client);
                            Ok(String::new())
                        }
                        Err(err) => Err(Error::Backend {
                            level: LEVEL,
                            op: "connect",
                            reason: format!(
                                "{}: cannot connect ({err}); check the host and port, that memcached runs there, and the credentials if it needs any",
                                conn.spec.display
                            ),
                        }),
                    }
                });
                (host, call)
            })
            .collect()
    }

    fn check_connect(&self, results: Result<Vec<String>>, connect_timeout: Duration) -> Result<()> {
        match results {
            Ok(_) => Ok(()),
            Err(Error::Timeout { .. }) => Err(Error::Backend {
                level: LEVEL,
                op: "connect",
                reason: format!(
                    "{}: no answer within {connect_timeout:?}; check the hosts and ports and that memcached runs there (or raise connect_timeout)",
                    self.hosts()
                ),
            }),
            Err(err) => Err(err),
        }
    }

    /// The hosts, as `host:port`, comma-separated.
    #[must_use]
    pub fn hosts(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
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

    /// The key memcached sees for `key` (prefix added, then [mapped](map_key)), and its host
    /// index.
    #[must_use]
    pub fn server_key(&self, key: &str) -> (String, usize) {
        let full = format!("{}{key}", self.prefix);
        let mapped = map_key(&full).into_owned();
        let host = self.host_of(&mapped);
        (mapped, host)
    }

    fn host_of(&self, mapped: &str) -> usize {
        jump_hash(fnv1a64(mapped.as_bytes()), self.hosts.len())
    }

    /// Groups `mapped` keys by host.
    fn plan(&self, mapped: &[String]) -> Plan {
        let mut by_host: Vec<Vec<usize>> = vec![Vec::new(); self.hosts.len()];
        for (i, key) in mapped.iter().enumerate() {
            if let Some(group) = by_host.get_mut(self.host_of(key)) {
                group.push(i);
            }
        }
        by_host
            .into_iter()
            .enumerate()
            .filter(|(_, members)| !members.is_empty())
            .collect()
    }

    fn wait_blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        calls: Calls<T>,
    ) -> Result<Vec<T>> {
        let deadline = deadline_after(timeout);
        let receivers: Vec<_> = calls
            .into_iter()
            .map(|(host, call)| {
                let (tx, rx) = mpsc::sync_channel(1);
                self.workers.submit(host, deadline, call, Reply::Blocking(tx));
                rx
            })
            .collect();
        let mut out = Vec::with_capacity(receivers.len());
        let mut first_error = None;
        for rx in receivers {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Ok(value)) => out.push(value),
                Ok(Err(err)) => {
                    first_error.get_or_insert(err);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(Error::Timeout {
                        level: LEVEL,
                        op,
                        after: timeout,
                    })
                }
                // The job was dropped unrun: it reached a worker after the deadline.
                Err(mpsc::RecvTimeoutError::Disconnected) if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        level: LEVEL,
                        op,
                        after: timeout,
                    })
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Err(stopped(op)),
            }
        }
        match first_error {
            Some(err) => Err(err),
            None => Ok(out),
        }
    }

    fn wait_async<T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        calls: Calls<T>,
    ) -> impl std::future::Future<Output = Result<Vec<T>>> + Send + 'static {
        let deadline = deadline_after(timeout);
        let receivers: Vec<_> = calls
            .into_iter()
            .map(|(host, call)| {
                let (tx, rx) = oneshot::channel();
                self.workers.submit(host, deadline, call, Reply::Async(tx));
                rx
            })
            .collect();
        // The I/O thread keeps the deadline; the caller's executor needs no timer.
        self.rt.run(op, timeout, async move {
            let mut out = Vec::with_capacity(receivers.len());
            let mut first_error = None;
            for received in join_all(receivers).await {
                match received {
                    Ok(Ok(value)) => out.push(value),
                    Ok(Err(err)) => {
                        first_error.get_or_insert(err);
                    }
                    Err(_) if Instant::now() >= deadline => {
                        return Err(Error::Timeout {
                            level: LEVEL,
                            op,
                            after: timeout,
                        })
                    }
                    Err(_) => return Err(stopped(op)),
                }
            }
            match first_error {
                Some(err) => Err(err),
                None => Ok(out),
            }
        })
    }

    fn blocking<T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        calls: Result<Calls<T>>,
    ) -> Result<Vec<T>> {
        self.wait_blocking(op, timeout, calls?)
    }

    fn later<T: Send + 'static>(
        &self,
        op: &'static str,
        timeout: Duration,
        calls: Result<Calls<T>>,
    ) -> BoxFuture<'static, Result<Vec<T>>> {
        match calls {
            Ok(calls) => Box::pin(self.wait_async(op, timeout, calls)),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    fn get_calls(&self, keys: &[&str]) -> Result<Calls<Found>> {
        for key in keys {
            check_key(key)?;
        }
        let mapped: Vec<String> = keys.iter().map(|k| self.server_key(k).0).collect();
        let keys: Arc<Vec<String>> = Arc::new(keys.iter().map(|k| (*k).to_owned()).collect());
        let mapped = Arc::new(mapped);
        let plan = self.plan(&mapped);
        Ok(plan
            .into_iter()
            .map(|(host, members)| {
                let keys = keys.clone();
                let mapped = mapped.clone();
                let clock = self.clock.clone();
                let call: HostCall<Found> = Box::new(move |conn, deadline| {
                    let wanted: Vec<&str> = members
                        .iter()
                        .filter_map(|&i| mapped.get(i).map(String::as_str))
                        .collect();
                    let mut found: std::collections::HashMap<String, Vec<u8>> =
                        if let [one] = wanted.as_slice() {
                            let value: Option<Vec<u8>> = conn.call("get", deadline, |c| c.get(one))?;
                            value.map(|v| ((*one).to_owned(), v)).into_iter().collect()
                        } else {
                            conn.call("get_many", deadline, |c| c.gets(&wanted))?
                        };
                    let now = clock.now_ms();
                    members
                        .iter()
                        .map(|&i| {
                            let key = keys.get(i).map_or("", String::as_str);
                            let raw = mapped.get(i).and_then(|m| found.remove(m));
                            let entry = match raw {
                                Some(bytes) => open_envelope(LEVEL, key, bytes, now)?,
                                None => None,
                            };
                            Ok((i, entry))
                        })
                        .collect()
                });
                (host, call)
            })
            .collect())
    }

    /// The server key of `key`, if a value of `len` bytes fits the item limit under it.
    fn checked_key(&self, key: &str, len: usize) -> Result<String> {
        check_key(key)?;
        let (mapped, _) = self.server_key(key);
        let max = self
            .max_item_size
            .saturating_sub(ITEM_OVERHEAD + envelope::HEADER_LEN + mapped.len());
        if len > max {
            return Err(Error::ValueTooLarge {
                key: key_for_error(key),
                len,
                max,
                store: format!(
                    "memcached (item limit {} bytes, less key, envelope and item header)",
                    self.max_item_size
                ),
            });
        }
        Ok(mapped)
    }

    fn set_calls(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Result<Vec<(usize, HostCall<()>)>> {
        let now = self.clock.now_ms();
        let mut encoded: Vec<(String, Vec<u8>, u32)> = Vec::with_capacity(items.len());
        for (key, value) in items {
            let mapped = self.checked_key(key, value.len())?;
            let ttl_ms = effective_ttl(key, ttl, self.default_ttl)?.map(ceil_ms);
            let bytes = envelope::encode(value, ttl_ms.map(|ms| now.saturating_add(ms)));
            encoded.push((mapped, bytes, exptime(now, ttl_ms)));
        }
        let keys: Vec<String> = encoded.iter().map(|(k, _, _)| k.clone()).collect();
        let originals: Vec<String> = items.iter().map(|(k, _)| (*k).to_owned()).collect();
        let mut slots: Vec<Option<(String, Vec<u8>, u32)>> = encoded.into_iter().map(Some).collect();
        Ok(self
            .plan(&keys)
            .into_iter()
            .map(|(host, members)| {
                let batch: Vec<(String, String, Vec<u8>, u32)> = members
                    .iter()
                    .filter_map(|&i| {
                        let (mapped, bytes, exp) = slots.get_mut(i)?.take()?;
                        Some((originals.get(i).cloned().unwrap_or_default(), mapped, bytes, exp))
                    })
                    .collect();
                let call: HostCall<()> = Box::new(move |conn, deadline| {
                    for (original, mapped, bytes, exp) in &batch {
                        match conn.call("set", deadline, |c| c.set(mapped, bytes.as_slice(), *exp)) {
                            Ok(()) => {}
                            Err(Error::ValueTooLarge { store, .. }) => {
                                // The server's limit is unknown, only that this value is over it.
                                let len = bytes.len().saturating_sub(envelope::HEADER_LEN);
                                return Err(Error::ValueTooLarge {
                                    key: key_for_error(original),
                                    len,
                                    max: len.saturating_sub(1),
                                    store,
                                });
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    Ok(())
                });
                (host, call)
            })
            .collect())
    }

    fn delete_calls(&self, keys: &[&str]) -> Result<Calls<u64>> {
        for key in keys {
            check_key(key)?;
        }
        let mapped: Vec<String> = keys.iter().map(|k| self.server_key(k).0).collect();
        Ok(self
            .plan(&mapped)
            .into_iter()
            .map(|(host, members)| {
                let batch: Vec<String> = members.iter().filter_map(|&i| mapped.get(i).cloned()).collect();
                let call: HostCall<u64> = Box::new(move |conn, deadline| {
                    let mut removed = 0;
                    for key in &batch {
                        if conn.call("delete", deadline, |c| c.delete(key))? {
                            removed += 1;
                        }
                    }
                    Ok(removed)
                });
                (host, call)
            })
            .collect())
    }

    fn size_calls(&self) -> Calls<StorageSize> {
        (0..self.hosts.len())
            .map(|host| {
                let call: HostCall<StorageSize> = Box::new(|conn, deadline| {
                    let stats = conn.call("size", deadline, memcache::Client::stats)?;
                    let mut size = StorageSize::default();
                    for (_, stats) in stats {
                        let read = |name: &str| {
                            stats
                                .get(name)
                                .and_then(|v| v.trim().parse::<u64>().ok())
                                .unwrap_or(0)
                        };
                        size.items += read("curr_items");
                        size.bytes += read("bytes");
                    }
                    Ok(size)
                });
                (host, call)
            })
            .collect()
    }

    fn clear_calls(&self) -> Result<Vec<(usize, HostCall<()>)>> {
        if !self.prefix.is_empty() {
            return Err(Error::Config {
                field: "memcached.prefix".to_owned(),
                reason: format!(
                    "clear() is refused with prefix {:?}: memcached cannot find keys by prefix, and flush_all would wipe every prefix; delete known keys with delete_many, or give these servers to one store without a prefix",
                    self.prefix
                ),
            });
        }
        Ok((0..self.hosts.len())
            .map(|host| {
                let call: HostCall<()> =
                    Box::new(|conn, deadline| conn.call("clear", deadline, memcache::Client::flush));
                (host, call)
            })
            .collect())
    }
}

fn stopped(op: &'static str) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: "the store's worker threads have stopped".to_owned(),
    }
}

fn scatter(len: usize, parts: Vec<Found>) -> Vec<Option<Entry>> {
    let mut out: Vec<Option<Entry>> = vec![None; len];
    for (i, entry) in parts.into_iter().flatten() {
        if let Some(slot) = out.get_mut(i) {
            *slot = entry;
        }
    }
    out
}

impl Storage for MemcachedStore {
    fn name(&self) -> &str {
        LEVEL
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.checked_key(key, value_len).map(drop)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let parts = self.blocking("get", self.timeout, self.get_calls(&[key]))?;
        Ok(scatter(1, parts).pop().flatten())
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.blocking("set", self.timeout, self.set_calls(&[(key, value)], ttl))?;
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        let removed = self.blocking("delete", self.timeout, self.delete_calls(&[key]))?;
        Ok(removed.into_iter().sum::<u64>() > 0)
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let parts = self.blocking("get_many", self.timeout, self.get_calls(keys))?;
        Ok(scatter(keys.len(), parts))
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.blocking("set_many", self.timeout, self.set_calls(items, ttl))?;
        Ok(())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let removed = self.blocking("delete_many", self.timeout, self.delete_calls(keys))?;
        Ok(removed.into_iter().sum())
    }

    /// Items and bytes on every host (`stats`: `curr_items`, `bytes`), whatever their prefix.
    fn size(&self) -> Result<StorageSize> {
        let sizes = self.blocking("size", self.admin_timeout, Ok(self.size_calls()))?;
        Ok(sizes
            .into_iter()
            .fold(StorageSize::default(), |a, s| StorageSize {
                items: a.items + s.items,
                bytes: a.bytes + s.bytes,
            }))
    }

    /// `flush_all` on every host if the store has no prefix; refused with [`Error::Config`]
    /// otherwise (see the module docs).
    fn clear(&self) -> Result<()> {
        self.blocking("clear", self.admin_timeout, self.clear_calls())?;
        Ok(())
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        let fut = self.later("size", self.admin_timeout, Ok(self.size_calls()));
        Box::pin(async move {
            Ok(fut
                .await?
                .into_iter()
                .fold(StorageSize::default(), |a, s| StorageSize {
                    items: a.items + s.items,
                    bytes: a.bytes + s.bytes,
                }))
        })
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        let fut = self.later("get", self.timeout, self.get_calls(&[key]));
        Box::pin(async move { Ok(scatter(1, fut.await?).pop().flatten()) })
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let fut = self.later("set", self.timeout, self.set_calls(&[(key, value)], ttl));
        Box::pin(async move { fut.await.map(|_| ()) })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let fut = self.later("delete", self.timeout, self.delete_calls(&[key]));
        Box::pin(async move { Ok(fut.await?.into_iter().sum::<u64>() > 0) })
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        let len = keys.len();
        let fut = self.later("get_many", self.timeout, self.get_calls(keys));
        Box::pin(async move { Ok(scatter(len, fut.await?)) })
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let fut = self.later("set_many", self.timeout, self.set_calls(items, ttl));
        Box::pin(async move { fut.await.map(|_| ()) })
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        let fut = self.later("delete_many", self.timeout, self.delete_calls(keys));
        Box::pin(async move { Ok(fut.await?.into_iter().sum()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_short_keys_pass_through_unchanged() {
        assert_eq!(map_key("user:42"), Cow::Borrowed("user:42"));
        let max = "k".repeat(MAX_MEMCACHED_KEY);
        assert_eq!(map_key(&max), max.as_str());
    }

    #[test]
    fn unsafe_keys_are_escaped_reversibly() {
        assert_eq!(map_key("a b"), "a%20b");
        assert_eq!(map_key("tab\there"), "tab%09here");
        assert_eq!(map_key("50%"), "50%25");
        assert_eq!(map_key("é"), "%C3%A9");
        // The classic collision of naive schemes: a key that looks like an escaped one.
        assert_ne!(map_key("a%20b"), map_key("a b"));
        assert_eq!(map_key("a%20b"), "a%2520b");
    }

    #[test]
    fn long_keys_are_hashed_with_a_distinct_marker() {
        let long = "x".repeat(MAX_MEMCACHED_KEY + 1);
        let mapped = map_key(&long);
        assert!(mapped.starts_with("%#"));
        assert_eq!(mapped.len(), 66);
        assert_ne!(map_key(&format!("{long}y")), mapped);
        // A short key that escapes past the limit is hashed too.
        let spaces = " ".repeat(100);
        assert!(map_key(&spaces).starts_with("%#"));
    }

    #[test]
    fn every_mapped_key_is_acceptable_to_memcached() {
        let samples = [
            "plain".to_owned(),
            "with space".to_owned(),
            "ctl\u{1}\u{7f}".to_owned(),
            "ü".repeat(200),
            "x".repeat(1000),
            "%#".to_owned(),
        ];
        for key in &samples {
            let mapped = map_key(key);
            assert!(mapped.len() <= MAX_MEMCACHED_KEY, "{key:?}");
            assert!(
                mapped.bytes().all(|b| (0x21..=0x7E).contains(&b)),
                "{key:?} → {mapped:?}"
            );
        }
        assert_eq!(
            map_key("%#"),
            "%25#",
            "a literal %# key is escaped, not taken as hashed"
        );
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
    fn sharding_is_stable_and_balanced() {
        // Pinned values: a change here moves keys between hosts for every deployed process.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(jump_hash(0, 1), 0);
        let mut counts = [0usize; 3];
        for i in 0..3_000 {
            let host = jump_hash(fnv1a64(format!("key:{i}").as_bytes()), 3);
            counts[host] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        // Growing from 3 to 4 hosts moves only keys that go to the new host.
        for i in 0..1_000 {
            let h = fnv1a64(format!("key:{i}").as_bytes());
            let (before, after) = (jump_hash(h, 3), jump_hash(h, 4));
            assert!(after == before || after == 3);
        }
    }

    #[test]
    fn host_forms_normalise() {
        let spec = parse_host(0, "127.0.0.1", Duration::from_millis(100)).unwrap();
        assert_eq!(spec.display, "127.0.0.1:11211");
        assert!(spec.url.as_str().contains("timeout=0.100"), "{}", spec.url);
        let spec = parse_host(
            0,
            "memcache://h:1?protocol=ascii&timeout=2",
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(spec.url.as_str(), "memcache://h:1?protocol=ascii&timeout=2");
        for bad in ["", "redis://h:1", "memcache://:1", "h:port"] {
            assert!(
                matches!(
                    parse_host(1, bad, Duration::from_millis(1)),
                    Err(Error::Config { .. })
                ),
                "{bad}"
            );
        }
    }
}
