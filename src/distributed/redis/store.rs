//! [`RedisStore`]: the [`Storage`] impl, which hands each [`Command`] to an executor.

use std::sync::Arc;
use std::time::Duration;

use super::commands::{check_value, Command, Commands, Reply};
use super::connection::{Conn, Settings};
use super::errors::{call_error, connect_timeout_error, LEVEL};
use super::options::RedisOptions;
use super::pool::CallerPool;
use super::scan;
use crate::clock::Clock;
use crate::distributed::runtime::IoRuntime;
use crate::error::Result;
use crate::storage::{BoxFuture, Entry, Storage, StorageSize};

/// Redis (standalone or Cluster) as a cache level.
///
/// - Keys are `prefix + key`; values are [enveloped](super::envelope); a TTL is sent as `SET …
///   PX <ms>` and also kept in the envelope, so `get` returns the expiry without a second round
///   trip.
/// - `get_many` is one `MGET` (standalone). On a cluster, the `redis` crate splits it into one
///   `MGET` per hash slot (`MGET` across slots is refused by Redis), sent to every node at once,
///   and puts the values back in key order; `delete_many` (`UNLINK`) likewise. `set_many` is one
///   pipeline (standalone) or concurrent `SET`s routed by slot (cluster).
/// - `size` counts this prefix's keys with `SCAN MATCH prefix*` (plus a pipelined `STRLEN` per
///   batch for the bytes) on every primary: `DBSIZE` would be O(1) but counts every key in the
///   database, other programs' and other prefixes' included. It is O(keys) and runs under the
///   `admin_timeout` deadline.
/// - `clear` deletes only this prefix's keys (`SCAN MATCH prefix*` + `UNLINK`), never `FLUSHDB`.
///
/// Connections: the blocking API on a standalone server (without TLS) runs on the caller's own
/// thread over a small pool of blocking connections, with socket timeouts as its deadline (see
/// `CallerPool`): one round trip, no thread hand-off. The async API, and the blocking API on a
/// cluster or over TLS, use the `redis` crate's `ConnectionManager` (one multiplexed connection,
/// reconnected on demand) or its async `ClusterConnection`, whose driver tasks live on the I/O
/// thread; a call is polled in the caller's own task (or, blocking, on the caller's parked
/// thread), with a deadline around the client's retries.
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
    conn: Conn,
    commands: Commands,
    timeout: Duration,
    admin_timeout: Duration,
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
        Ok(Self::assemble(&options, &settings, conn, rt))
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
        Ok(Self::assemble(&options, &settings, conn, rt))
    }

    fn assemble(options: &RedisOptions, settings: &Settings, conn: Conn, rt: IoRuntime) -> Self {
        let pool = match (&conn, settings.targets.first()) {
            (Conn::Single(_), Some(target)) if !target.is_tls() => options
                .client_for(target)
                .ok()
                .and_then(|client| CallerPool::new(client, settings.hosts())),
            _ => None,
        };
        RedisStore {
            pool,
            conn,
            commands: Commands::new(options.key_prefix().to_owned(), options.ttl_default()),
            timeout: settings.timeout,
            admin_timeout: options.admin_deadline(),
            clock: options.clock_source(),
            hosts: settings.hosts(),
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
        self.commands.prefix()
    }

    /// The per-call deadline.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `command` for the blocking API: on the caller's thread over the pool, or through the
    /// async connection with the caller's thread parked.
    fn call<R: Reply>(&self, command: Result<Command<R>>) -> Result<R::Out> {
        let Command { op, request, reply } = command?;
        let value = match &self.pool {
            Some(pool) => pool.send(op, self.timeout, &request)?,
            None => {
                let mut conn = self.conn.clone();
                let hosts = self.hosts.as_str();
                let send = async move {
                    conn.send(&request)
                        .await
                        .map_err(|err| call_error(op, hosts, &err))
                };
                self.rt
                    .wait(op, self.timeout, self.rt.bind(op, self.timeout, send))?
            }
        };
        reply.read(op, value, self.clock.now_ms())
    }

    /// Runs `command` for the async API, in the caller's task.
    fn call_async<'a, R>(&'a self, command: Result<Command<R>>) -> BoxFuture<'a, Result<R::Out>>
    where
        R: Reply + Send + 'a,
        R::Out: Send + 'a,
    {
        let Command { op, request, reply } = match command {
            Ok(command) => command,
            Err(err) => return Box::pin(std::future::ready(Err(err))),
        };
        let mut conn = self.conn.clone();
        Box::pin(self.rt.bind(op, self.timeout, async move {
            let value = conn
                .send(&request)
                .await
                .map_err(|err| call_error(op, &self.hosts, &err))?;
            reply.read(op, value, self.clock.now_ms())
        }))
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
        self.call(self.commands.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.call(self.commands.set(key, value, ttl, self.clock.now_ms()))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.call(self.commands.delete(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.call(self.commands.get_many(keys))
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.call(self.commands.set_many(items, ttl, self.clock.now_ms()))
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.call(self.commands.set_each(items, self.clock.now_ms()))
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.call(self.commands.delete_many(keys))
    }

    /// Keys and bytes (key + enveloped value) under this prefix, counted with `SCAN` on every
    /// primary; O(keys), under `admin_timeout`.
    fn size(&self) -> Result<StorageSize> {
        let walk = scan::size(self.conn.clone(), self.commands.prefix());
        self.rt.wait(
            "size",
            self.admin_timeout,
            self.rt.bind("size", self.admin_timeout, walk),
        )
    }

    /// Deletes every key under this prefix (`SCAN` + `UNLINK`); keys of other prefixes and
    /// programs stay. Under `admin_timeout`.
    fn clear(&self) -> Result<()> {
        let walk = scan::clear(self.conn.clone(), self.commands.prefix());
        self.rt.wait(
            "clear",
            self.admin_timeout,
            self.rt.bind("clear", self.admin_timeout, walk),
        )
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        let walk = scan::size(self.conn.clone(), self.commands.prefix());
        Box::pin(self.rt.bind("size", self.admin_timeout, walk))
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        self.call_async(self.commands.get(key))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.call_async(self.commands.set(key, value, ttl, self.clock.now_ms()))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.call_async(self.commands.delete(key))
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        self.call_async(self.commands.get_many(keys))
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.call_async(self.commands.set_many(items, ttl, self.clock.now_ms()))
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        self.call_async(self.commands.set_each(items, self.clock.now_ms()))
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        self.call_async(self.commands.delete_many(keys))
    }
}
