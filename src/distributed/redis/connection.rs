//! The Redis connection layer shared by the level and the backplane (`crate::invalidation`):
//! clients for a [`Target`], connecting (its errors are in `super::errors`), and [`Conn`],
//! the level's connection of either kind, which runs any [`Request`] the same way for the
//! blocking and the async API.
//!
//! What the `redis` crate does here, and what we keep of our own:
//! - Standalone: its `ConnectionManager` (one multiplexed connection, reconnected on demand).
//! - Cluster: its async `ClusterConnection` routes every key command by slot, follows `MOVED` /
//!   `ASK` and refreshes its slot map, and splits a multi-key `UNLINK` into one command per slot
//!   (sent concurrently, replies summed). A `get_many` is split per slot by the level itself,
//!   so that a slot the cluster does not serve fails its own keys only (see `store`). Its
//!   waits before a retry are cut to fit our deadline (`Settings::cluster_max_retry_wait_ms`). Our own router
//!   (CRC16, slot map, per-node pipelines) is gone: it did the same work (see the module docs
//!   of [`super`]).
//! - Either kind is held in a [`Link`] that replaces it with a new one after a call on it times
//!   out at our deadline. The crate reconnects only on an error that says a connection is gone
//!   (a reset, an end of stream); a flow that went silent without one (a NAT or load balancer
//!   that dropped it as idle, a host powered off, a failover to another address) gives no such
//!   error until the kernel gives up on its retransmits, about 15 minutes, and until then every
//!   call would wait out our deadline on it. The cluster client retries a call that timed out on
//!   the same node connection (a timeout is `RetryImmediately` to it), so it needs this as much.
//!   A standalone connection is also replaced when the server answers `READONLY`: a failover
//!   demoted it and it stayed up as a replica, which the crate does not count as a lost
//!   connection, so every write would fail on it until the process restarted.
//! - A batch of `SET`s cannot be one pipeline on a cluster (the crate refuses pipelines across
//!   slots), so it goes out as concurrent single commands, which the crate's multiplexed node
//!   connections pipeline on the wire anyway.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::try_join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use super::commands::Request;
use super::errors::{connect_error_for, error_text, greeting_error, is_unanswered, LEVEL};
pub(crate) use super::target::Target;
#[cfg(feature = "tls")]
use super::tls::TlsOptions;
use crate::distributed::runtime::deadline_after;
use crate::error::Result;

/// A client for one host (TLS with the roots and client certificate of `tls`). It does not
/// connect.
/// A Redis Cluster client for `targets`, with the TLS settings (a custom CA, system roots, a
/// client certificate) the single-host client gets too. It does not connect.
pub(crate) fn cluster_builder(
    targets: &[Target],
    #[cfg(feature = "tls")] tls: &TlsOptions,
) -> RedisResult<redis::cluster::ClusterClientBuilder> {
    let urls: Vec<String> = targets.iter().map(|t| t.url.clone()).collect();
    let builder = redis::cluster::ClusterClientBuilder::new(urls);
    #[cfg(feature = "tls")]
    if targets.iter().any(Target::is_tls) {
        tls.ensure_provider()?;
        if let Some(certs) = tls.certificates()? {
            return Ok(builder.certs(certs));
        }
    }
    Ok(builder)
}

pub(crate) fn open_client(
    target: &Target,
    #[cfg(feature = "tls")] tls: &TlsOptions,
) -> RedisResult<redis::Client> {
    #[cfg(feature = "tls")]
    if target.is_tls() {
        tls.ensure_provider()?;
        if let Some(certs) = tls.certificates()? {
            return redis::Client::build_with_tls(target.url.as_str(), certs);
        }
    }
    redis::Client::open(target.url.as_str())
}

/// The shortest wait of the cluster client before a retry (see
/// `Settings::cluster_max_retry_wait_ms`).
const CLUSTER_MIN_RETRY_WAIT_MS: u64 = 10;

/// Everything connecting needs, owned and checked (see `RedisOptions::settings`).
#[derive(Clone)]
pub(crate) struct Settings {
    pub(crate) targets: Vec<Target>,
    pub(crate) cluster: bool,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: TlsOptions,
}

impl Settings {
    /// The hosts as `host:port, …` for messages (no credentials).
    pub(crate) fn hosts(&self) -> String {
        self.targets
            .iter()
            .map(|t| t.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A cluster client's own reply timeout: a little past our deadline, so that a slow reply is
    /// reported by our deadline as [`Error::Timeout`](crate::Error::Timeout); the client's timeout only cleans up.
    fn client_response_timeout(&self) -> Duration {
        self.timeout.saturating_add(Duration::from_millis(50))
    }

    /// The longest wait of the cluster client before it retries a call the cluster answered
    /// `CLUSTERDOWN`, `TRYAGAIN`, `MASTERDOWN` or `LOADING` (and one whose slot it knows no
    /// owner for): a quarter of our deadline, so that the retry's answer comes back within it.
    /// The client's own default (at least 1.28 s) outlasted any usual deadline: such a key's
    /// call waited it out and said `Timeout`, never what the cluster had said.
    fn cluster_max_retry_wait_ms(&self) -> u64 {
        let quarter = u64::try_from((self.timeout / 4).as_millis()).unwrap_or(u64::MAX);
        quarter.max(CLUSTER_MIN_RETRY_WAIT_MS.saturating_add(1))
    }

    /// Connects and checks the credentials with a `PING`. Errors name the hosts.
    pub(crate) async fn connect(self) -> crate::error::Result<Link> {
        let hosts = self.hosts();
        let plain = match self.targets.as_slice() {
            [only] if !self.cluster && !only.is_tls() => only.address(),
            _ => None,
        };
        let wait = self.connect_timeout.min(Duration::from_millis(500));
        let err = match self.try_connect().await {
            Ok(link) => return Ok(link),
            Err(err) => err,
        };
        // A hang-up after the accept, not a refusal (nobody listens) nor a timeout (nobody
        // answers), whose greeting would only wait again.
        if err.kind() == ErrorKind::Io && !err.is_timeout() && !err.is_connection_refusal() {
            if let Some(said) = match plain {
                Some(address) => greeting(address, wait).await,
                None => None,
            } {
                return Err(greeting_error(&hosts, &said));
            }
        }
        Err(connect_error_for(LEVEL, &hosts, &err))
    }

    async fn try_connect(self) -> RedisResult<Link> {
        #[cfg(feature = "tls")]
        if self.targets.iter().any(Target::is_tls) {
            self.tls.ensure_provider()?;
        }
        if self.cluster {
            let builder = cluster_builder(
                &self.targets,
                #[cfg(feature = "tls")]
                &self.tls,
            )?;
            let client = builder
                .connection_timeout(
                    self.connect_timeout
                        .min(self.timeout.max(Duration::from_millis(50))),
                )
                .response_timeout(self.client_response_timeout())
                .retries(1)
                .min_retry_wait(CLUSTER_MIN_RETRY_WAIT_MS)
                .max_retry_wait(self.cluster_max_retry_wait_ms())
                .build()?;
            let mut conn = client.get_async_connection().await?;
            let mut cmd = redis::cmd("PING");
            cmd.arg("uno-cache");
            conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                .await?;
            Link::new(Conn::Cluster(conn), Source::Cluster(client), self.connect_timeout)
        } else {
            let target = self
                .targets
                .first()
                .ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no host")))?;
            let client = open_client(
                target,
                #[cfg(feature = "tls")]
                &self.tls,
            )?;
            // No retries inside the client: a failed reconnect fails the call at once and the
            // next call tries again; the caller's deadline and breaker decide the pace.
            // No response timeout inside the client either: every call already runs under our
            // deadline (`IoRuntime::bind`), which fires first; the client's would be a second
            // timer entry per call (measured: about 15% of `get_async` throughput) that never
            // fires.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(self.connect_timeout))
                .set_response_timeout(None)
                .set_max_delay(Duration::from_millis(500));
            let mut conn = ConnectionManager::new_with_config(client.clone(), config.clone()).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            // A cluster node answers PING like any server, and then MOVED for most keys: say so
            // now.
            if info_has(&mut conn, "cluster", "cluster_enabled:1").await {
                return Err(RedisError::from((
                    ErrorKind::Server(redis::ServerErrorKind::Moved),
                    "the server has cluster_enabled:1",
                )));
            }
            // A replica serves reads and refuses every write (READONLY); found at the first
            // write, it was an outage of writes retried for good.
            if info_has(&mut conn, "replication", "role:slave").await {
                return Err(RedisError::from((
                    ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
                    "the server has role:slave",
                )));
            }
            Link::new(
                Conn::Single(conn),
                Source::Single { client, config },
                self.connect_timeout,
            )
        }
    }
}

/// Whether section `section` of the server's `INFO` has the line `line`, for the checks made
/// at connect. A server that does not answer the `INFO` (a user without the right to it) is
/// taken to have no such line: it is not refused for that.
async fn info_has(conn: &mut ConnectionManager, section: &str, line: &str) -> bool {
    redis::cmd("INFO")
        .arg(section)
        .query_async::<String>(conn)
        .await
        .is_ok_and(|info| info.lines().any(|l| l.trim() == line))
}

/// The error line a plain-TCP server at `address` sends unasked on a new connection, if it sends
/// one within `wait`. A Redis that will not serve a client (protected mode, `maxclients` reached)
/// writes its error as it accepts and hangs up without reading; the client, which has sent its
/// first commands by then, sees only a reset or a broken pipe, and the server's reason is lost.
/// Asked only after a connect failed on I/O, on a thread of the blocking pool.
async fn greeting(address: (String, u16), wait: Duration) -> Option<String> {
    let read = move || {
        use std::io::Read as _;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&address).ok()?.next()?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, wait).ok()?;
        stream.set_read_timeout(Some(wait)).ok()?;
        let mut said = [0u8; 512];
        let got = stream.read(&mut said).ok()?;
        let line = said.get(..got)?.strip_prefix(b"-")?;
        Some(crate::distributed::server_text(line.trim_ascii_end()))
    };
    tokio::task::spawn_blocking(read).await.ok().flatten()
}

/// The level's connection as the store keeps it; [`current`](Self::current) gives the one a call
/// uses.
///
/// A timeout is the only sign a silent connection gives, and a server that is merely slow gives
/// it too; replacing costs that server one connect (a cluster: the crate's whole connect, every
/// node and the slot map, since the crate offers no way to drop one node's connection), and the
/// calls still in flight on the old connection end on it (it closes when the last of them drops
/// it). One replacement connects at a time, on the I/O thread, within `connect_timeout`; until
/// it has connected, calls keep using the old connection (a timeout in the meantime starts
/// nothing), and if it fails, the next timeout tries again. The swap is a write under the lock
/// that every call reads.
///
/// A call whose caller stops waiting before our deadline (its own shorter timeout, a `select!`)
/// never reaches that deadline, so it is watched ([`InFlight`]): once dropped unanswered, the
/// connection is asked a `PING` (every primary of a cluster) that must be answered by the call's
/// own deadline, or the connection is replaced as if the call had timed out.
#[derive(Clone)]
pub(crate) struct Link(Arc<Replaceable>);

struct Replaceable {
    /// The connection, and how many times it has been replaced (a [`Ticket`]).
    current: parking_lot::RwLock<(Conn, u64)>,
    /// Set while a replacement connects.
    replacing: AtomicBool,
    /// Set while a `PING` checks the connection after an abandoned call.
    probing: AtomicBool,
    source: Source,
    connect_timeout: Duration,
    /// The I/O thread's runtime, where the crate spawns the connection's tasks.
    runtime: tokio::runtime::Handle,
}

/// What a replacement connects with: the client of the first connection.
#[derive(Clone)]
enum Source {
    Single {
        client: redis::Client,
        config: ConnectionManagerConfig,
    },
    Cluster(redis::cluster::ClusterClient),
}

impl Source {
    async fn connect(self) -> RedisResult<Conn> {
        match self {
            Source::Single { client, config } => ConnectionManager::new_with_config(client, config)
                .await
                .map(Conn::Single),
            Source::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
        }
    }
}

/// Which connection a call ran on, so that its timeout replaces that one only: a call that began
/// before the latest replacement says nothing about the new connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticket(u64);

impl Link {
    /// Must run on the I/O thread (`IoRuntime::block_on` / `run`), whose runtime the replacements
    /// need.
    fn new(conn: Conn, source: Source, connect_timeout: Duration) -> RedisResult<Link> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| RedisError::from((ErrorKind::Client, "connecting outside the I/O runtime")))?;
        Ok(Link(Arc::new(Replaceable {
            current: parking_lot::RwLock::new((conn, 0)),
            replacing: AtomicBool::new(false),
            probing: AtomicBool::new(false),
            source,
            connect_timeout,
            runtime,
        })))
    }

    /// The connection for one call, and its [`Ticket`] for [`judge`](Self::judge).
    pub(crate) fn current(&self) -> (Conn, Ticket) {
        // The hot path of every async call: one uncontended shared lock, and the clone of the
        // connection (an `Arc`) that the call needed anyway.
        let current = self.0.current.read();
        (current.0.clone(), Ticket(current.1))
    }

    /// Whether this is a cluster client (which follows redirects itself).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.0.source, Source::Cluster(_))
    }

    /// The I/O thread's runtime.
    pub(crate) fn runtime(&self) -> &tokio::runtime::Handle {
        &self.0.runtime
    }

    /// A call on the connection of `ticket` ran out of its deadline outside [`judge`](Self::judge):
    /// the connection is replaced as there.
    pub(crate) fn gave_up(&self, ticket: Ticket) {
        Replaceable::replace(&self.0, ticket);
    }

    /// Runs `call`, made on the connection of `ticket` under our deadline `timeout`
    /// (`IoRuntime::bind`), and judges the connection by it: a call that ran out of the deadline
    /// replaces it, and one dropped unanswered has it checked ([`InFlight`]).
    pub(crate) async fn judge<T>(
        &self,
        ticket: Ticket,
        timeout: Duration,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let in_flight = InFlight {
            link: self,
            ticket,
            deadline: deadline_after(timeout),
            answered: false,
        };
        let out = call.await;
        in_flight.answered();
        if out.as_ref().is_err_and(is_unanswered) {
            Replaceable::replace(&self.0, ticket);
        }
        out
    }
}

impl Link {
    /// Replaces the connection of `ticket` when the server's answer says it is no longer the
    /// primary (`READONLY`: a failover demoted it, and it stayed up as a replica). A standalone
    /// connection would otherwise stay on it for good: the client reconnects only when the
    /// connection breaks, and a name that now resolves to the new primary is looked up again
    /// only by a new connection. A cluster client follows the slots itself.
    pub(crate) fn after_error(&self, ticket: Ticket, err: &RedisError) {
        if !self.is_cluster() && is_demoted(err) {
            tracing::warn!(error = %error_text(err), "the Redis server is no longer the primary; reconnecting");
            Replaceable::replace(&self.0, ticket);
        }
    }
}

/// Whether the server says it cannot take writes as the primary it was.
fn is_demoted(err: &RedisError) -> bool {
    matches!(err.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly))
}

/// A call in flight on a [`Link`]. Dropped before [`answered`](Self::answered), the connection
/// is checked with a `PING` that must be answered by the call's deadline (see [`Link`]).
struct InFlight<'a> {
    link: &'a Link,
    ticket: Ticket,
    deadline: Instant,
    answered: bool,
}

impl InFlight<'_> {
    /// The call ended (answered, failed or timed out at our deadline): nothing to check.
    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            Replaceable::check(&self.link.0, self.ticket, self.deadline);
        }
    }
}

impl Replaceable {
    fn replace(this: &Arc<Self>, ticket: Ticket) {
        if this.current.read().1 != ticket.0 || this.replacing.swap(true, Ordering::AcqRel) {
            return;
        }
        // Re-read now that this caller owns the replacement: one that ended between the read
        // above and the flag already replaced the connection of `ticket`.
        if this.current.read().1 != ticket.0 {
            this.replacing.store(false, Ordering::Release);
            return;
        }
        let weak: Weak<Replaceable> = Arc::downgrade(this);
        let (source, within) = (this.source.clone(), this.connect_timeout);
        // Detached: the store may be dropped meanwhile (the task then drops what it connected),
        // and the runtime's end cancels it.
        drop(this.runtime.spawn(async move {
            // Bounded, so that a connect that hangs cannot hold the flag and stop every later
            // replacement.
            let fresh = tokio::time::timeout(within, source.connect()).await;
            let Some(this) = weak.upgrade() else {
                return;
            };
            match fresh {
                Ok(Ok(conn)) => {
                    let mut current = this.current.write();
                    let replaced = std::mem::replace(&mut *current, (conn, ticket.0.wrapping_add(1)));
                    drop(current);
                    // Dropped outside the lock: the last handle on the old connection ends its
                    // tasks.
                    drop(replaced);
                    tracing::info!("replaced a Redis connection (a call on it timed out, or the server was no longer the primary)");
                }
                Ok(Err(err)) => tracing::debug!(err = %error_text(&err), "could not replace a Redis connection that timed out"),
                Err(_) => tracing::debug!(?within, "could not replace a Redis connection that timed out: no connection within the connect timeout"),
            }
            this.replacing.store(false, Ordering::Release);
        }));
    }

    /// A call on the connection of `ticket` was dropped unanswered before its `deadline`: a
    /// `PING` sent now must be answered by then, or the connection is replaced. Replies come in
    /// the order of the requests on a connection, so a `PING` that is answered in time means the
    /// dropped call was too. One check runs at a time; a drop meanwhile starts none.
    fn check(this: &Arc<Self>, ticket: Ticket, deadline: Instant) {
        let conn = {
            let current = this.current.read();
            if current.1 != ticket.0 || this.probing.swap(true, Ordering::AcqRel) {
                return;
            }
            current.0.clone()
        };
        let weak: Weak<Self> = Arc::downgrade(this);
        // Detached, as a replacement is.
        drop(this.runtime.spawn(async move {
            let answer = tokio::time::timeout_at(deadline.into(), conn.ping()).await;
            let Some(this) = weak.upgrade() else {
                return;
            };
            this.probing.store(false, Ordering::Release);
            // An error that is not a timeout says the connection is gone or refused, which the
            // crate's own reconnects handle.
            let silent = match answer {
                Err(_elapsed) => true,
                Ok(Err(err)) => err.is_timeout(),
                Ok(Ok(())) => false,
            };
            if silent {
                Self::replace(&this, ticket);
            }
        }));
    }
}

/// The level's connection of either kind. Clones share it.
#[derive(Clone)]
pub(crate) enum Conn {
    /// A standalone server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Conn {
    /// Whether this is a cluster client (which follows redirects itself).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// A `PING` on the connection (on a cluster, on every primary's).
    async fn ping(mut self) -> RedisResult<()> {
        match &mut self {
            Conn::Single(conn) => redis::cmd("PING").query_async::<()>(conn).await,
            Conn::Cluster(conn) => {
                let every_primary = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::AllSucceeded),
                ));
                conn.route_command(redis::cmd("PING"), every_primary)
                    .await?
                    .extract_error()
                    .map(drop)
            }
        }
    }
}

impl Conn {
    /// Of `keys`, one for each `PING` of [`ping_owner`](Self::ping_owner) that together reach
    /// every node their commands went to: one per hash slot on a cluster, any one standalone.
    pub(crate) fn owners<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<Vec<u8>> {
        let mut routes: Vec<(Route, &[u8])> = Vec::new();
        for key in keys {
            let route = match self {
                Conn::Single(_) => Route::new(0, SlotAddr::Master),
                Conn::Cluster(_) => Route::with_key(key, SlotAddr::Master),
            };
            if !routes.iter().any(|(r, _)| *r == route) {
                routes.push((route, key));
            }
        }
        routes.into_iter().map(|(_, key)| key.to_vec()).collect()
    }

    /// A `PING` on the connection to the server that holds `key`: on a cluster, the primary of
    /// its slot (the node a command of `key` went to), not every primary, whose silence would
    /// say nothing of it.
    pub(crate) async fn ping_owner(mut self, key: &[u8]) -> RedisResult<()> {
        match &mut self {
            Conn::Single(conn) => redis::cmd("PING").query_async::<()>(conn).await,
            Conn::Cluster(conn) => {
                let owner = Route::with_key(key, SlotAddr::Master);
                let owner = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(owner));
                conn.route_command(redis::cmd("PING"), owner)
                    .await?
                    .extract_error()
                    .map(drop)
            }
        }
    }
}

/// The `proto-max-bulk-len` a `CONFIG GET proto-max-bulk-len` reply says, if it says one.
pub(crate) fn bulk_limit_of(reply: Value) -> Option<usize> {
    // A RESP2 reply is the pair as an array, a RESP3 one a map.
    let value = match reply {
        Value::Array(mut pair) if pair.len() == 2 => pair.pop()?,
        Value::Map(mut pairs) if pairs.len() == 1 => pairs.pop()?.1,
        _ => return None,
    };
    redis::from_redis_value::<String>(value).ok()?.parse().ok()
}

impl Conn {
    /// The server's `proto-max-bulk-len` (on a cluster, one node's: a cluster's nodes share
    /// their configuration), or `None` if it does not say: managed services often refuse
    /// `CONFIG`, and a user without the right to it is not refused for that.
    pub(crate) async fn bulk_limit(mut self) -> Option<usize> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("proto-max-bulk-len");
        let reply = match &mut self {
            Conn::Single(conn) => cmd.query_async::<Value>(conn).await,
            Conn::Cluster(conn) => {
                conn.route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
                    .await
            }
        };
        bulk_limit_of(reply.ok()?)
    }

    /// Sends `request` and returns its reply (server errors as `Err`). A [`Request::Batch`]
    /// answers `Okay` once every command in it succeeded.
    pub(crate) async fn send(&mut self, request: &Request) -> RedisResult<Value> {
        match request {
            Request::Nothing => Ok(Value::Nil),
            Request::Single(cmd) => cmd.query_async::<Value>(self).await,
            Request::Batch(pipe) => match self {
                Conn::Single(conn) => {
                    pipe.query_async::<()>(conn).await?;
                    Ok(Value::Okay)
                }
                Conn::Cluster(conn) => {
                    let sends = pipe.cmd_iter().map(|cmd| {
                        let mut conn = conn.clone();
                        async move { cmd.query_async::<()>(&mut conn).await }
                    });
                    try_join_all(sends).await?;
                    Ok(Value::Okay)
                }
            },
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
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
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}
