//! [`RedisStore`]: the [`Storage`] impl, which hands each [`Command`] to an executor.

use std::sync::Arc;
use std::time::Duration;

use super::batches::{key_in, key_of_item, removed_parts, with_ttl, written_parts};
use super::commands::{Command, Commands, Reply, ValueLimit};
use super::connection::{Conn, Link, Settings};
use super::doubt::{self, Doubts, Unanswered, Unsettled};
use super::errors::{call_error, connect_timeout_error, is_unanswered, LEVEL};
use super::keyed::{naming, naming_batch};
use super::options::RedisOptions;
use super::pool::CallerPool;
use super::scan;
use super::slots::Slots;
use crate::clock::Clock;
use crate::distributed::nodes::Node;
use crate::distributed::runtime::IoRuntime;
use crate::error::Result;
use crate::storage::{BoxFuture, DistributedStorage, Entry, Storage, StorageCounters, StorageSize};

mod routing;

/// Redis (standalone or Cluster) as a cache level.
///
/// - Keys are `prefix + key`; values are enveloped (`storage-format.md`); a TTL is sent as `SET …
///   PX <ms>` and also kept in the envelope, so `get` returns the expiry without a second round
///   trip. Keys starting with `uno-cache:tag:` are refused ([`Error::InvalidKey`](crate::Error::InvalidKey), bad input):
///   the manager keeps its tag sets there, under the same prefix.
/// - `get_many` is one `MGET` (standalone). On a cluster it is one `MGET` per hash slot (`MGET`
///   across slots is refused by Redis), sent at once, with the values put back in key order: a
///   slot the cluster does not serve fails its keys only ([`Error::PartialBatch`](crate::Error::PartialBatch)); likewise
///   `delete_many` (`UNLINK`), and `set_many`: one pipeline (standalone) or concurrent `SET`s
///   routed by slot (cluster), where a slot whose primary is out of memory for writes fails its
///   keys only too (its [`Error::NodeUnavailable`](crate::Error::NodeUnavailable) over [`Error::ServerFull`](crate::Error::ServerFull)). A key repeated in a
///   batch is sent once, with its last item: the last write of a key wins, as on the other
///   levels (the cluster's concurrent `SET`s could otherwise land in either order).
/// - A one-key call (`get`, `set`, `delete`) on a hash slot the cluster does not serve
///   (`CLUSTERDOWN`) fails with an [`Error::Backend`](crate::Error::Backend) that names the key, its slot and what to
///   check, as a batch's failed slots are named in its [`Error::PartialBatch`](crate::Error::PartialBatch).
/// - A batch on a hash slot being moved between nodes (`TRYAGAIN`, during a resharding) fails
///   its keys as its primary's [`Error::NodeUnavailable`](crate::Error::NodeUnavailable), held against no breaker: the node
///   answered.
/// - `size` counts this prefix's string keys with `SCAN MATCH prefix*` (plus a pipelined `STRLEN`
///   per batch for the bytes, which also leaves out keys of other types, such as tag sets) on
///   every primary: `DBSIZE` would be O(1) but counts every key in the
///   database, other programs' and other prefixes' included. It is O(keys) and runs under the
///   `admin_timeout` deadline.
/// - `clear` deletes only this prefix's keys (`SCAN MATCH prefix*` + `UNLINK`), never `FLUSHDB`,
///   and leaves the manager's tag sets (`prefix` + `uno-cache:tag:…`), as a prefix deletion does.
///
/// Connections: the blocking API on a standalone server (without TLS) runs on the caller's own
/// thread over a small pool of blocking connections, with socket timeouts as its deadline (see
/// `CallerPool`): one round trip, no thread hand-off. The async API, and the blocking API on a
/// cluster or over TLS, use the `redis` crate's `ConnectionManager` (one multiplexed connection,
/// reconnected on demand) or its async `ClusterConnection`, whose driver tasks live on the I/O
/// thread; a call is polled in the caller's own task (or, blocking, on the caller's parked
/// thread), with a deadline around the client's retries and reconnects, kept by the I/O
/// thread's sweeper (no timer is needed from the caller's executor). A connection (standalone or
/// cluster) on which a call ran out of that deadline is replaced by a new one (a silent
/// connection gives no other sign), as the blocking pool drops one. A `SET` on it may still run
/// after a newer write of its key: it is in doubt until that connection answers a later command
/// or fails, and then the key is deleted if it holds a value written in doubt (see
/// [`writes_in_doubt`](Self::writes_in_doubt)).
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
    // Field order is drop order: the connection goes before the I/O thread's handle.
    conn: Link,
    commands: Commands,
    timeout: Duration,
    admin_timeout: Duration,
    clock: Arc<dyn Clock>,
    hosts: String,
    /// The hosts as `(host, port)`: a cluster's nodes asked for `CLUSTER SLOTS` by address.
    seeds: Vec<(String, u16)>,
    /// Blocking connections for the sync API (standalone without TLS): see [`CallerPool`].
    pool: Option<CallerPool>,
    /// A Cluster's slot owners and their breakers, with [`RedisOptions::node_breakers`].
    slots: Option<Arc<Slots>>,
    /// `SET`s that may still land late, and their correction.
    doubts: Doubts,
    rt: IoRuntime,
}

/// The primaries of a batch: each one's breaker and the caller's indices of its keys.
type Groups = Vec<(Arc<Node>, Vec<usize>)>;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("hosts", &self.hosts)
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.commands.prefix())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects (and checks the credentials with a `PING`) within `connect_timeout`. Works from
    /// any thread, inside a tokio runtime or not (inside one it blocks that thread while it
    /// waits; use [`connect_async`](Self::connect_async) there).
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for a bad host, URL or option combination;
    /// [`Error::Backend`](crate::Error::Backend) (op `"connect"`) naming the host if it cannot
    /// be reached, refuses the credentials or does not answer within `connect_timeout`.
    pub fn connect(options: RedisOptions) -> Result<Self> {
        let settings = options.settings()?;
        let rt = options.runtime_for(LEVEL)?;
        let (hosts, timeout) = (settings.hosts(), settings.connect_timeout);
        let conn = rt
            .block_on("connect", timeout, settings.clone().connect())
            .map_err(|err| connect_timeout_error(LEVEL, err, &hosts, timeout))?;
        let (slots, limit) = rt
            .block_on("connect", timeout, Self::survey(&options, &settings, &conn))
            .map_err(|err| connect_timeout_error(LEVEL, err, &hosts, timeout))?;
        Ok(Self::assemble(&options, &settings, conn, slots, limit, rt))
    }

    /// What the level asks of the server once connected: with per-node breakers on a cluster,
    /// who owns each slot (see `slots`); and the longest value it reads ([`ValueLimit`]).
    fn survey(
        options: &RedisOptions,
        settings: &Settings,
        conn: &Link,
    ) -> impl std::future::Future<Output = Result<(Option<Arc<Slots>>, ValueLimit)>> + Send + 'static {
        let current = conn.current().0;
        let read = match (&current, options.breakers()) {
            (Conn::Cluster(conn), Some(breakers)) => {
                Some((conn.clone(), seeds(settings), Arc::clone(breakers)))
            }
            _ => None,
        };
        let hosts = settings.hosts();
        async move {
            let slots = match read {
                Some((conn, seeds, breakers)) => Some(Arc::new(Slots::read(&conn, seeds, breakers).await?)),
                None => None,
            };
            let limit = match current.bulk_limit().await {
                Some(bulk) => ValueLimit::reported(&hosts, bulk),
                None => ValueLimit::default_for(&hosts),
            };
            Ok((slots, limit))
        }
    }

    /// [`connect`](Self::connect) without blocking the caller's executor.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_async(options: RedisOptions) -> Result<Self> {
        let settings = options.settings()?;
        let rt = options.runtime_for(LEVEL)?;
        let (hosts, timeout) = (settings.hosts(), settings.connect_timeout);
        let conn = rt
            .run("connect", timeout, settings.clone().connect())
            .await
            .map_err(|err| connect_timeout_error(LEVEL, err, &hosts, timeout))?;
        let (slots, limit) = rt
            .run("connect", timeout, Self::survey(&options, &settings, &conn))
            .await
            .map_err(|err| connect_timeout_error(LEVEL, err, &hosts, timeout))?;
        Ok(Self::assemble(&options, &settings, conn, slots, limit, rt))
    }

    fn assemble(
        options: &RedisOptions,
        settings: &Settings,
        conn: Link,
        slots: Option<Arc<Slots>>,
        limit: ValueLimit,
        rt: IoRuntime,
    ) -> Self {
        let pool = match settings.targets.first() {
            Some(target) if !conn.is_cluster() && !target.is_tls() => options
                .client_for(target)
                .ok()
                .and_then(|client| CallerPool::new(client, settings.hosts())),
            _ => None,
        };
        RedisStore {
            pool,
            doubts: Doubts::new(conn.clone(), settings.timeout, options.key_prefix().len()),
            conn,
            commands: Commands::new(options.key_prefix().to_owned(), options.ttl_default(), limit),
            timeout: settings.timeout,
            admin_timeout: options.admin_deadline(),
            clock: options.clock_source(),
            hosts: settings.hosts(),
            seeds: seeds(settings),
            slots,
            rt,
        }
    }

    /// Keys whose `SET` went unanswered (it timed out, or its caller stopped waiting) on a
    /// connection that may still run it, or whose correction has not been answered yet; 0 in
    /// steady operation. Once the connection can no longer run the write, a key that holds the
    /// value it wrote is deleted, so that an older value landing after a newer one is not left
    /// in Redis (a cache's miss, never a wrong value).
    pub fn writes_in_doubt(&self) -> usize {
        self.doubts.open()
    }

    /// The hosts, as `host:port` (no credentials).
    #[must_use]
    pub fn hosts(&self) -> &str {
        &self.hosts
    }

    /// Whether this is a Redis Cluster connection.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        self.conn.is_cluster()
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.commands.prefix()
    }

    /// The per-call deadline.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A one-key call's result, its error naming the key (and its slot, see [`keyed`](super::keyed)).
    fn on_key<T>(&self, key: &str, result: Result<T>) -> Result<T> {
        result.map_err(|e| naming(e, key, self.commands.prefix()))
    }

    /// A batch's result when it went whole, its error naming its keys' hash slots (see
    /// [`naming_batch`]).
    fn on_batch<'k, T>(&self, keys: impl Iterator<Item = &'k str>, result: Result<T>) -> Result<T> {
        result.map_err(|e| naming_batch(e, keys, self.commands.prefix()))
    }

    /// Runs `command` for the blocking API: on the caller's thread over the pool, or through the
    /// async connection with the caller's thread parked. `SET`s that ran out of the deadline
    /// are in doubt (see `doubt`).
    fn call<R: Reply>(&self, command: Result<Command<R>>) -> Result<R::Out> {
        let Command { op, request, reply } = command?;
        let value = match &self.pool {
            Some(pool) => {
                let mut given_up = None;
                let sent = pool.send(op, self.timeout, &request, &mut given_up);
                if let Some(conn) = given_up {
                    self.doubts.begin(&request, conn);
                }
                sent?
            }
            None => {
                let (mut conn, ticket) = self.conn.current();
                let probe = doubt::sets_in(&request).then(|| conn.clone());
                let hosts = self.hosts.as_str();
                let cluster = conn.is_cluster();
                let link = &self.conn;
                let sent = &request;
                let send = async move {
                    conn.send(sent).await.map_err(|err| {
                        link.after_error(ticket, &err);
                        call_error(op, hosts, &err, cluster)
                    })
                };
                let bound = self.rt.bind(op, self.timeout, send);
                let answer = self
                    .rt
                    .wait(op, self.timeout, self.conn.judge(ticket, self.timeout, bound));
                // Unanswered by our deadline or by the cluster client's own timeout (which a
                // stall of the I/O thread can let fire first): either way it may land later.
                if let (Err(err), Some(probe)) = (&answer, probe) {
                    if is_unanswered(err) {
                        self.doubts.begin(&request, Unanswered::Linked(probe));
                    }
                }
                answer?
            }
        };
        reply.read(op, value, self.clock.now_ms())
    }

    /// Runs `command` for the async API, in the caller's task. `SET`s that ran out of the
    /// deadline, or whose caller stopped waiting for them, are in doubt (see `doubt`).
    fn call_async<'a, R>(&'a self, command: Result<Command<R>>) -> BoxFuture<'a, Result<R::Out>>
    where
        R: Reply + Send + 'a,
        R::Out: Send + 'a,
    {
        let Command { op, request, reply } = match command {
            Ok(command) => command,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let (mut conn, ticket) = self.conn.current();
        let probe = doubt::sets_in(&request).then(|| conn.clone());
        let cluster = conn.is_cluster();
        Box::pin(async move {
            let mut watch = Unsettled::new(&self.doubts, &request, probe);
            let call = self.rt.bind(op, self.timeout, async {
                let value = conn.send(&request).await.map_err(|err| {
                    self.conn.after_error(ticket, &err);
                    call_error(op, &self.hosts, &err, cluster)
                })?;
                reply.read(op, value, self.clock.now_ms())
            });
            let answer = self.conn.judge(ticket, self.timeout, call).await;
            if !answer.as_ref().is_err_and(is_unanswered) {
                watch.probe = None;
            }
            drop(watch);
            answer
        })
    }

    /// A walk of `size` or `clear` on the connection, under `admin_timeout`; one that runs out
    /// of it replaces the connection, as a key call's timeout does.
    fn admin<'a, T: Send + 'a, F>(
        &'a self,
        op: &'static str,
        walk: impl FnOnce(Conn) -> F,
    ) -> impl std::future::Future<Output = Result<T>> + Send + 'a
    where
        F: std::future::Future<Output = Result<T>> + Send + 'a,
    {
        let (conn, ticket) = self.conn.current();
        let walk = self.rt.bind(op, self.admin_timeout, walk(conn));
        self.conn.judge(ticket, self.admin_timeout, walk)
    }
}

/// The hosts given, as `(host, port)`.
fn seeds(settings: &Settings) -> Vec<(String, u16)> {
    settings.targets.iter().filter_map(|t| t.address()).collect()
}

impl Storage for RedisStore {
    fn name(&self) -> &str {
        LEVEL
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.commands.check_value(key, value_len)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.keyed(key, || self.on_key(key, self.call(self.commands.get(key))))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.keyed(key, || {
            let now = self.clock.now_ms();
            self.on_key(key, self.call(self.commands.set(key, value, ttl, now)))
        })
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.keyed(key, || self.on_key(key, self.call(self.commands.delete(key))))
    }

    /// An empty batch (here and in the other batch calls) asks no server and no node's breaker.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let Some(groups) = self.groups(keys.iter().copied()) else {
            if let Some(slots) = self.slot_groups(keys.iter().copied()) {
                let parts = self.per_slot("get_many", slots, self.get_many_part(keys));
                return self.get_many_parts(keys, self.rt.wait("get_many", self.batch_deadline(), parts)?);
            }
            let first = keys.first().copied().unwrap_or_default();
            let reads = self.keyed(first, || self.call(self.commands.get_many(keys)));
            let reads = self.on_batch(keys.iter().copied(), reads)?;
            return self.get_many_whole(keys, reads);
        };
        let parts = self.per_node_blocking("get_many", groups, key_in(keys), self.get_many_part(keys))?;
        self.get_many_parts(keys, parts)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let Some(groups) = self.groups(items.iter().map(|(k, _)| *k)) else {
            if let Some(slots) = self.slot_groups(items.iter().map(|(k, _)| *k)) {
                let items = with_ttl(items, ttl);
                self.commands.check_sets(&items)?;
                let parts = self.per_slot("set_many", slots, self.set_each_part("set_many", &items));
                return written_parts(
                    "set_many",
                    items.len(),
                    self.rt.wait("set_many", self.batch_deadline(), parts)?,
                );
            }
            let first = items.first().map(|(k, _)| *k).unwrap_or_default();
            let written = self.keyed(first, || {
                self.call(self.commands.set_many(items, ttl, self.clock.now_ms()))
            });
            return self.on_batch(items.iter().map(|(k, _)| *k), written);
        };
        let items = with_ttl(items, ttl);
        self.commands.check_sets(&items)?;
        let parts = self.per_node_blocking(
            "set_many",
            groups,
            key_of_item(&items),
            self.set_each_part("set_many", &items),
        )?;
        written_parts("set_many", items.len(), parts)
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let Some(groups) = self.groups(items.iter().map(|(k, _, _)| *k)) else {
            if let Some(slots) = self.slot_groups(items.iter().map(|(k, _, _)| *k)) {
                self.commands.check_sets(items)?;
                let parts = self.per_slot("set_each", slots, self.set_each_part("set_each", items));
                return written_parts(
                    "set_each",
                    items.len(),
                    self.rt.wait("set_each", self.batch_deadline(), parts)?,
                );
            }
            let first = items.first().map(|(k, _, _)| *k).unwrap_or_default();
            let written = self.keyed(first, || {
                self.call(self.commands.set_each(items, self.clock.now_ms()))
            });
            return self.on_batch(items.iter().map(|(k, _, _)| *k), written);
        };
        self.commands.check_sets(items)?;
        let parts = self.per_node_blocking(
            "set_each",
            groups,
            key_of_item(items),
            self.set_each_part("set_each", items),
        )?;
        written_parts("set_each", items.len(), parts)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        let Some(groups) = self.groups(keys.iter().copied()) else {
            if let Some(slots) = self.slot_groups(keys.iter().copied()) {
                Commands::check_keys(keys)?;
                let parts = self.per_slot("delete_many", slots, self.delete_many_part(keys));
                return removed_parts(
                    keys.len(),
                    self.rt.wait("delete_many", self.batch_deadline(), parts)?,
                );
            }
            let first = keys.first().copied().unwrap_or_default();
            let removed = self.keyed(first, || self.call(self.commands.delete_many(keys)));
            return self.on_batch(keys.iter().copied(), removed);
        };
        Commands::check_keys(keys)?;
        let parts =
            self.per_node_blocking("delete_many", groups, key_in(keys), self.delete_many_part(keys))?;
        removed_parts(keys.len(), parts)
    }

    /// Keys and bytes (key + enveloped value) under this prefix, counted with `SCAN` on every
    /// primary; O(keys), under `admin_timeout`.
    fn size(&self) -> Result<StorageSize> {
        let prefix = self.commands.prefix();
        let walk = self.admin("size", |conn| scan::size(conn, &self.seeds, &self.hosts, prefix));
        self.rt.wait("size", self.admin_timeout, walk)
    }

    /// Deletes every key under this prefix (`SCAN` + `UNLINK`) but the tag sets; keys of other
    /// prefixes and programs stay. Under `admin_timeout`.
    fn clear(&self) -> Result<()> {
        let prefix = self.commands.prefix();
        let walk = self.admin("clear", |conn| {
            scan::clear(conn, &self.seeds, &self.hosts, prefix)
        });
        self.rt.wait("clear", self.admin_timeout, walk)
    }

    /// Nothing to make durable from here: the server's persistence is its own configuration.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The server counts evictions and expirations for every client together: none per store.
    /// What the store counts is its writes in doubt.
    fn counters(&self) -> StorageCounters {
        self.doubts.counters()
    }
}

impl DistributedStorage for RedisStore {
    /// See [`writes_in_doubt`](Self::writes_in_doubt).
    fn on_late_write_deleted(&self, hook: crate::storage::LateWriteHook) {
        self.doubts.on_deleted(hook);
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        let prefix = self.commands.prefix();
        Box::pin(self.admin("size", |conn| scan::size(conn, &self.seeds, &self.hosts, prefix)))
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        let call = self.call_async(self.commands.get(key));
        self.keyed_async(key, Box::pin(async move { self.on_key(key, call.await) }))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let call = self.call_async(self.commands.set(key, value, ttl, self.clock.now_ms()));
        self.keyed_async(key, Box::pin(async move { self.on_key(key, call.await) }))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let call = self.call_async(self.commands.delete(key));
        self.keyed_async(key, Box::pin(async move { self.on_key(key, call.await) }))
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let Some(groups) = self.groups(keys.iter().copied()) else {
            if let Some(slots) = self.slot_groups(keys.iter().copied()) {
                let parts = self.per_slot("get_many", slots, self.get_many_part(keys));
                return Box::pin(async move { self.get_many_parts(keys, parts.await?) });
            }
            let first = keys.first().copied().unwrap_or_default();
            let call = self.keyed_async(first, self.call_async(self.commands.get_many(keys)));
            return Box::pin(async move {
                let reads = self.on_batch(keys.iter().copied(), call.await)?;
                self.get_many_whole(keys, reads)
            });
        };
        let parts = self.per_node("get_many", groups, key_in(keys), self.get_many_part(keys));
        Box::pin(async move { self.get_many_parts(keys, parts.await?) })
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        if items.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let Some(groups) = self.groups(items.iter().map(|(k, _)| *k)) else {
            if let Some(slots) = self.slot_groups(items.iter().map(|(k, _)| *k)) {
                return Box::pin(async move {
                    let items = with_ttl(items, ttl);
                    self.commands.check_sets(&items)?;
                    let parts = self
                        .per_slot("set_many", slots, self.set_each_part("set_many", &items))
                        .await?;
                    written_parts("set_many", items.len(), parts)
                });
            }
            let first = items.first().map(|(k, _)| *k).unwrap_or_default();
            let call = self.call_async(self.commands.set_many(items, ttl, self.clock.now_ms()));
            let call = self.keyed_async(first, call);
            return Box::pin(async move { self.on_batch(items.iter().map(|(k, _)| *k), call.await) });
        };
        Box::pin(async move {
            let items = with_ttl(items, ttl);
            self.commands.check_sets(&items)?;
            let parts = self
                .per_node(
                    "set_many",
                    groups,
                    key_of_item(&items),
                    self.set_each_part("set_many", &items),
                )
                .await?;
            written_parts("set_many", items.len(), parts)
        })
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        if items.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let Some(groups) = self.groups(items.iter().map(|(k, _, _)| *k)) else {
            if let Some(slots) = self.slot_groups(items.iter().map(|(k, _, _)| *k)) {
                if let Err(e) = self.commands.check_sets(items) {
                    return Box::pin(std::future::ready(Err(e)));
                }
                let parts = self.per_slot("set_each", slots, self.set_each_part("set_each", items));
                return Box::pin(async move { written_parts("set_each", items.len(), parts.await?) });
            }
            let first = items.first().map(|(k, _, _)| *k).unwrap_or_default();
            let call = self.call_async(self.commands.set_each(items, self.clock.now_ms()));
            let call = self.keyed_async(first, call);
            return Box::pin(async move { self.on_batch(items.iter().map(|(k, _, _)| *k), call.await) });
        };
        if let Err(e) = self.commands.check_sets(items) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let parts = self.per_node(
            "set_each",
            groups,
            key_of_item(items),
            self.set_each_part("set_each", items),
        );
        Box::pin(async move { written_parts("set_each", items.len(), parts.await?) })
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(0)));
        }
        let Some(groups) = self.groups(keys.iter().copied()) else {
            if let Some(slots) = self.slot_groups(keys.iter().copied()) {
                if let Err(e) = Commands::check_keys(keys) {
                    return Box::pin(std::future::ready(Err(e)));
                }
                let parts = self.per_slot("delete_many", slots, self.delete_many_part(keys));
                return Box::pin(async move { removed_parts(keys.len(), parts.await?) });
            }
            let first = keys.first().copied().unwrap_or_default();
            let call = self.keyed_async(first, self.call_async(self.commands.delete_many(keys)));
            return Box::pin(async move { self.on_batch(keys.iter().copied(), call.await) });
        };
        if let Err(e) = Commands::check_keys(keys) {
            return Box::pin(std::future::ready(Err(e)));
        }
        let parts = self.per_node("delete_many", groups, key_in(keys), self.delete_many_part(keys));
        Box::pin(async move { removed_parts(keys.len(), parts.await?) })
    }
}
