//! Tag membership and prefix deletion on a Redis that every instance reaches (the backplane's,
//! or else the Redis L2): one sorted set per tag, `{key_prefix}uno-cache:tag:{tag}`, holding the
//! keys written with that tag, each scored with the moment (Redis's clock, Unix ms) until which
//! a copy of it may be read: the longer of its L1 and L2 TTLs, plus the fail-safe window in
//! which an expired copy may still be served stale. The Redis level refuses cache keys in that
//! namespace, and a prefix deletion leaves the sets, so a value can neither replace a tag's set
//! nor take its members with it.
//!
//! Every write of a tag runs [`ADD_SCRIPT`], one script per tag (a cluster keeps two tags in
//! different slots): it adds the keys (a shorter write never cuts a member's time, and moves it
//! on by a ms), drops the members whose time ended more than [`SKEW_MS`] ago, and keeps the set's
//! TTL no shorter than its longest member's (`PEXPIREAT NX`, then `GT`; Redis 7 or later). A plain
//! set of members that never left grew as long as its tag was written: a tag on a stream of
//! short-lived keys held every key it was ever given, and an invalidation read them all. Now a
//! set holds the members that may still be read, and those deleted since (by a write without
//! the tag, a plain `delete`) until their time ends. Invalidating a tag reads the set's members;
//! the manager then deletes them from L1 and L2, publishes them as keys, so every instance
//! drops them from its L1, and removes them from the set.
//!
//! A set an earlier version wrote (a plain Redis set) is turned into a sorted set by the first
//! write or read of its tag, every member scored with the set's expiry. See storage-format.md,
//! "Tag sets".
//!
//! A tag is read (`ZSCAN`) and forgotten [`WALK_STEP`] members per round trip, each within the
//! timeout, as a prefix deletion walks the keyspace: in one command, a tag of 100,000 members
//! took Redis 50 to 90 ms to read and a few hundred to forget, past the default timeout of
//! 100 ms, and a large tag could not be invalidated at all.
//!
//! Prefix deletion in L2 (`SCAN MATCH` + `UNLINK`, on each primary of a cluster) runs on a
//! store of this kind of its own, on the L2's hosts and credentials, whatever Redis holds the
//! tag sets (see `L2Keys`): the backplane's Redis, when `[invalidation] hosts` names one, holds
//! none of L2's values. Memcached cannot list keys at all: there the L2 entries live out their
//! TTL, and the call says so (`Error::PrefixKeptInL2`).

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use parking_lot::Mutex;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};

use super::requeue::Landing;
use crate::distributed::ceil_ms;
use crate::distributed::redis::{prefix_pattern, unlinked, ClusterWalk, MAX_PX_MS, TAG_NAMESPACE};
use crate::distributed::runtime::IoRuntime;
use crate::distributed::RedisOptions;
use crate::error::{Error, Result};

const LEVEL: &str = "tags";

/// How long after its time a member stays in its tag's set. The time is Redis's clock; an
/// instance whose clock runs behind it still holds its copy that much longer, and an
/// invalidation must still find it.
const SKEW_MS: u64 = 60_000;

/// Adds members to a tag's sorted set (`KEYS[1]`): `ARGV[1]` their time to live in ms, `ARGV[2]`
/// [`SKEW_MS`], the rest the keys. Turns an earlier version's plain set into a sorted set first,
/// its members scored with the set's expiry (or, without one, as long as the longest TTL). A
/// member already there always gets a new score, one ms past its old one if its new time is
/// no longer: an invalidation that read it before this write then leaves it in the set (see
/// [`FORGET_SCRIPT`]). Atomic, as a script is: no invalidation reads a set half turned. Numbers
/// stay below 2^53, where Lua's doubles are exact, and are written with `%.0f` (`%d` casts to a
/// C `long`, 32 bits on some builds).
const ADD_SCRIPT: &str = concat!(
    include_str!("tag_scripts/convert.lua"),
    include_str!("tag_scripts/add.lua")
);

/// Turns an earlier version's plain set (`KEYS[1]`) into a sorted set, as [`ADD_SCRIPT`] does,
/// before a read: every member read then has a score, and only a member whose score is still
/// the one read is forgotten. `ARGV[1]` is [`SKEW_MS`]. The read itself is `ZSCAN`s after it
/// (see `members_task`): a script that returned the members took four times as long as one
/// `ZRANGE` on a large tag, and a script cannot be split into round trips.
const SORTED_SCRIPT: &str = concat!(
    include_str!("tag_scripts/convert.lua"),
    include_str!("tag_scripts/sorted.lua")
);

/// Removes members (`ARGV`: each key, then the score it was read with) from a tag's set
/// (`KEYS[1]`); a member whose score has changed since (tagged again meanwhile) stays. Sent
/// [`WALK_STEP`] members at a time.
const FORGET_SCRIPT: &str = include_str!("tag_scripts/forget.lua");

#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// A tag's members as one read saw them.
#[derive(Debug, Default)]
pub(crate) struct Members {
    /// The cache keys.
    pub(crate) keys: Vec<String>,
    /// Each key's score as read (empty from a plain set): forgetting a member whose score
    /// changed since would untag a write made after the read.
    scores: Vec<String>,
}

impl Members {
    fn into_pairs(self) -> impl Iterator<Item = (String, String)> {
        self.keys.into_iter().zip(self.scores)
    }

    /// The members of a `ZSCAN` page (member, score, member, score, ...). A member that is not
    /// UTF-8 is no cache key (another program put it there) and is passed over, left in the set:
    /// read as text, it failed the page, and every invalidation of the tag with it.
    fn from_flat(flat: Vec<Vec<u8>>) -> Members {
        let mut members = Members::default();
        let mut it = flat.into_iter();
        while let (Some(key), Some(score)) = (it.next(), it.next()) {
            if let (Ok(key), Ok(score)) = (String::from_utf8(key), String::from_utf8(score)) {
                members.keys.push(key);
                members.scores.push(score);
            }
        }
        members
    }
}

/// A lazily connected Redis for tag sets; see the module docs.
pub(crate) struct TagStore {
    options: RedisOptions,
    prefix: String,
    timeout: Duration,
    rt: IoRuntime,
    conn: Arc<Mutex<Option<Conn>>>,
    /// The hosts as errors name them (`host:port, …`, no credentials).
    hosts: String,
}

/// A failed call: [`Error::Misconfigured`] if the server's answer says the settings are wrong
/// (EVAL renamed away, a user refused the scripts), else [`Error::Backend`]. The hosts are put
/// in by [`TagStore::task`] ([`naming_hosts`]).
fn backend(op: &'static str, e: &redis::RedisError) -> Error {
    use crate::distributed::redis::errors::{error_text, misconfiguration, misconfigured};
    match misconfiguration(e) {
        Some(advice) => misconfigured(LEVEL, "", advice, e, op != "connect"),
        None => Error::Backend {
            level: LEVEL,
            op,
            reason: error_text(e),
        },
    }
}

/// `err` naming `hosts`, which [`backend`] could not.
fn naming_hosts(err: Error, hosts: &str) -> Error {
    match err {
        Error::Misconfigured {
            level,
            hosts: unnamed,
            reason,
            call_only,
        } if unnamed.is_empty() => Error::Misconfigured {
            level,
            hosts: hosts.to_owned(),
            reason,
            call_only,
        },
        Error::Backend { level, op, reason } => Error::Backend {
            level,
            op,
            reason: format!("{hosts}: {reason}"),
        },
        Error::Timeout {
            level,
            op,
            server,
            after,
        } if server.is_empty() => Error::Timeout {
            level,
            op,
            server: hosts.to_owned(),
            after,
        },
        other => other,
    }
}

impl TagStore {
    pub(crate) fn new(options: RedisOptions, prefix: String, timeout: Duration) -> Result<Self> {
        // The I/O thread the options name (shared with the L2 and the backplane), or its own.
        let rt = options.runtime_for(LEVEL)?;
        let hosts = options.hosts_shown();
        Ok(TagStore {
            hosts,
            options,
            prefix,
            timeout,
            rt,
            conn: Arc::new(Mutex::new(None)),
        })
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}{TAG_NAMESPACE}{tag}", self.prefix)
    }

    /// The cached connection, or a future that opens one (run on the I/O thread).
    fn connection(&self) -> Result<std::result::Result<Conn, ConnectFuture>> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(Ok(conn));
        }
        let (targets, cluster) = self.options.resolve_targets()?;
        // The client's own timeouts only clean up; our deadlines report. Left at the client's
        // defaults, every tag round trip timed out at 500 ms whatever the configured deadline
        // (the one a tag of many members needs).
        let respond = self.timeout.saturating_add(Duration::from_millis(50));
        if cluster {
            // With the L2's TLS settings: built bare, a private CA or a client certificate was
            // dropped, and every tag call failed on a cluster the L2 reached.
            let client = self
                .options
                .cluster_builder_for(&targets)
                .and_then(|builder| {
                    builder
                        .connection_timeout(self.timeout)
                        .response_timeout(respond)
                        .build()
                })
                .map_err(|e| backend("connect", &e))?;
            return Ok(Err(Box::pin(async move {
                client
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| backend("connect", &e))
            })));
        }
        let target = targets.first().ok_or_else(|| Error::Config {
            field: "invalidation.hosts".to_owned(),
            reason: "no host".to_owned(),
        })?;
        let client = self
            .options
            .client_for(target)
            .map_err(|e| backend("connect", &e))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(respond));
        Ok(Err(Box::pin(async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map(Conn::Single)
                .map_err(|e| backend("connect", &e))
        })))
    }

    /// One tag operation, described once as a task on a connection: blocking callers wait for
    /// it on the I/O thread, async callers await it there (never on their own executor). A
    /// failure drops the cached connection, so the next call reconnects.
    fn task<T, F, Fut>(
        &self,
        op: &'static str,
        body: F,
    ) -> Result<impl Future<Output = Result<T>> + Send + 'static>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        // Building the client can fail too (a CA file rustls cannot take), before any connect.
        let conn = self.connection().map_err(|e| naming_hosts(e, &self.hosts))?;
        let cache = Arc::clone(&self.conn);
        let timeout = self.timeout;
        let hosts = self.hosts.clone();
        Ok(async move {
            let conn = match conn {
                Ok(conn) => conn,
                Err(connect) => {
                    let conn = within(op, timeout, connect)
                        .await
                        .map_err(|e| naming_hosts(e, &hosts))?;
                    *cache.lock() = Some(conn.clone());
                    conn
                }
            };
            let out = body(conn).await;
            if out.is_err() {
                *cache.lock() = None;
            }
            out.map_err(|e| naming_hosts(e, &hosts))
        })
    }

    /// Runs a tag operation for a blocking caller. `deadline`: the whole operation's (a prefix
    /// scan is many round trips, each bounded by the timeout).
    fn block<T: Send + 'static>(
        &self,
        op: &'static str,
        deadline: Duration,
        task: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.rt.block_on(op, deadline, task)
    }

    /// Runs a tag operation for an async caller.
    async fn run<T: Send + 'static>(
        &self,
        op: &'static str,
        deadline: Duration,
        task: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        self.rt.run(op, deadline, task).await
    }

    /// The pipelines of [`add`](Self::add): one per tag, each on that tag's set alone. Two
    /// tags' sets are in different slots of a cluster as a rule, and its client refuses a
    /// pipeline across slots (CROSSSLOT).
    fn add_pipes(&self, keys: &[&str], tags: &[&str], ttl: Duration) -> Vec<redis::Pipeline> {
        // Milliseconds, rounded up: whole seconds rounded down let a set expire before a member.
        let ms = ceil_ms(ttl).min(MAX_PX_MS);
        tags.iter()
            .map(|tag| {
                let set = self.tag_key(tag);
                let mut pipe = redis::pipe();
                pipe.cmd("EVAL")
                    .arg(ADD_SCRIPT)
                    .arg(1)
                    .arg(&set)
                    .arg(ms)
                    .arg(SKEW_MS)
                    .arg(keys)
                    .ignore();
                pipe
            })
            .collect()
    }

    /// The first command of [`members`](Self::members): a plain set made sorted.
    fn sorted_cmd(&self, set: &str) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(SORTED_SCRIPT)
            .arg(1)
            .arg(set)
            .arg(SKEW_MS)
            .ignore();
        pipe
    }

    /// The commands of [`forget`](Self::forget), [`WALK_STEP`] members each.
    fn forget_cmds(&self, tag: &str, members: &Members) -> Vec<redis::Pipeline> {
        let set = self.tag_key(tag);
        members
            .keys
            .chunks(WALK_STEP)
            .zip(members.scores.chunks(WALK_STEP))
            .map(|(keys, scores)| {
                let mut pipe = redis::pipe();
                let cmd = pipe.cmd("EVAL").arg(FORGET_SCRIPT).arg(1).arg(&set);
                for (key, score) in keys.iter().zip(scores) {
                    cmd.arg(key).arg(score);
                }
                cmd.ignore();
                pipe
            })
            .collect()
    }

    fn add_task(
        &self,
        keys: &[&str],
        tags: &[&str],
        ttl: Duration,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let pipes = self.add_pipes(keys, tags, ttl);
        let timeout = self.timeout;
        self.task("tag", move |conn| async move {
            // Sent together: on one connection they still go out back to back.
            let sent = pipes
                .into_iter()
                .map(|pipe| query::<()>("tag", timeout, conn.clone(), pipe));
            join_all(sent).await.into_iter().collect()
        })
    }

    /// The members of a tag, read [`WALK_STEP`] at a time (`ZSCAN`), each round trip within the
    /// timeout: one `ZRANGE` of a tag of 60,000 members took longer than the default timeout,
    /// and the tag could not be invalidated at all. `ZSCAN` returns every member present for the
    /// whole walk (some twice: kept once); one added meanwhile is a write after the read.
    fn members_task(&self, tag: &str) -> Result<impl Future<Output = Result<Members>> + Send + 'static> {
        let set = self.tag_key(tag);
        let sorted = self.sorted_cmd(&set);
        let timeout = self.timeout;
        self.task("invalidate_tag", move |conn| async move {
            query::<()>("invalidate_tag", timeout, conn.clone(), sorted).await?;
            let mut seen = std::collections::HashSet::new();
            let mut members = Members::default();
            let mut cursor: u64 = 0;
            loop {
                let mut pipe = redis::pipe();
                pipe.cmd("ZSCAN")
                    .arg(&set)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(WALK_STEP);
                let ((next, flat),): ((u64, Vec<Vec<u8>>),) =
                    query("invalidate_tag", timeout, conn.clone(), pipe).await?;
                for (key, score) in Members::from_flat(flat).into_pairs() {
                    if seen.insert(key.clone()) {
                        members.keys.push(key);
                        members.scores.push(score);
                    }
                }
                if next == 0 {
                    return Ok(members);
                }
                cursor = next;
            }
        })
    }

    fn forget_task(
        &self,
        tag: &str,
        members: &Members,
    ) -> Result<impl Future<Output = Result<()>> + Send + 'static> {
        let pipes = self.forget_cmds(tag, members);
        let timeout = self.timeout;
        self.task("invalidate_tag", move |conn| async move {
            for pipe in pipes {
                query::<()>("invalidate_tag", timeout, conn.clone(), pipe).await?;
            }
            Ok(())
        })
    }

    /// `SCAN MATCH` + `UNLINK` of `{l2_prefix}{prefix}*` on this store's server, or on each
    /// primary of its cluster (a `SCAN` through the cluster client goes to one node, whose keys
    /// are a third of the keyspace, or less), each round trip bounded by the timeout; counts the
    /// keys it unlinked that are not in `in_l1` (the keys the caller counted already). Tag sets
    /// that match are left: they hold the members of tags outside the prefix too, and deleting
    /// one would let an invalidation of its tag miss them. On a cluster whose map names no
    /// endpoint for some slots, or whose slots moved during the walk, the primaries are walked,
    /// then the call fails naming those slots (see `ClusterWalk`): no `Ok` for keys never seen.
    fn delete_prefix_task(
        &self,
        l2_prefix: &str,
        prefix: &str,
        in_l1: Vec<String>,
    ) -> Result<impl Future<Output = Result<u64>> + Send + 'static> {
        let walk = PrefixWalk {
            pattern: prefix_pattern(&format!("{l2_prefix}{prefix}")),
            tag_sets: format!("{}{TAG_NAMESPACE}", self.prefix).into_bytes(),
            l2_prefix: l2_prefix.as_bytes().to_vec(),
            in_l1: in_l1.into_iter().collect(),
            timeout: self.timeout,
        };
        let (targets, _) = self.options.resolve_targets()?;
        let seeds: Vec<(String, u16)> = targets.iter().filter_map(|t| t.address()).collect();
        self.task(PREFIX_OP, move |conn| async move {
            let Conn::Cluster(cluster) = &conn else {
                return walk.node(&conn, None).await;
            };
            let named = |err: &redis::RedisError| backend(PREFIX_OP, err);
            let begun = ClusterWalk::begin(cluster, &seeds, PREFIX_OP)
                .await
                .map_err(|e| e.named(named))?;
            let mut deleted = 0u64;
            for (host, port) in begun.primaries() {
                let node = SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                };
                deleted = deleted.saturating_add(walk.node(&conn, Some(node)).await?);
            }
            begun.end(cluster).await.map_err(|e| e.named(named))?;
            Ok(deleted)
        })
    }

    /// Records `keys` as members of each tag, for at least `ttl` (the set's TTL is never
    /// shortened).
    pub(crate) fn add(&self, keys: &[&str], tags: &[&str], ttl: Duration) -> Result<()> {
        if keys.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let task = self.add_task(keys, tags, ttl)?;
        self.block("tag", self.timeout.saturating_mul(2), task)
    }

    /// Async [`add`](Self::add).
    pub(crate) async fn add_async(&self, keys: &[&str], tags: &[&str], ttl: Duration) -> Result<()> {
        if keys.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let task = self.add_task(keys, tags, ttl)?;
        // To its end even if the caller gives up: its value is written by now, and a key left
        // out of its tags' sets escapes every later invalidation of them.
        self.rt
            .run_to_end("tag", self.timeout.saturating_mul(2), task)
            .await
    }

    /// [`add`](Self::add) once the write of `keys` whose caller gave up during its set or the
    /// wait for its batch can no longer land (see [`Landing`]), not waited for (see
    /// `set_raw_with_tags_async`).
    pub(crate) fn add_later(
        &self,
        keys: &[&str],
        tags: &[&str],
        ttl: Duration,
        landing: Landing<impl Future<Output = ()> + Send + 'static>,
    ) {
        if keys.is_empty() || tags.is_empty() {
            return;
        }
        match self.add_task(keys, tags, ttl) {
            Ok(task) => {
                let waits = landing.sent_within.saturating_add(landing.in_flight_for);
                let task = async move {
                    let in_flight = tokio::time::sleep(landing.in_flight_for);
                    if tokio::time::timeout(landing.sent_within, landing.sent)
                        .await
                        .is_err()
                    {
                        tracing::warn!("a cancelled tagged write's batch did not land in time; its key is tagged again before");
                    }
                    (landing.owe)();
                    in_flight.await;
                    task.await
                };
                let deadline = self.timeout.saturating_mul(2).saturating_add(waits);
                self.rt.detach("tag", deadline, task);
            }
            Err(e) => tracing::warn!(error = %e, "could not tag the key of a write whose caller gave up"),
        }
    }

    /// A tag's members. They stay in the tag's set until [`forget`](Self::forget): an
    /// invalidation that fails or is dropped half-way leaves them there for its retry.
    pub(crate) fn members(&self, tag: &str) -> Result<Members> {
        let task = self.members_task(tag)?;
        self.block("invalidate_tag", WALK_DEADLINE, task)
    }

    /// Async [`members`](Self::members).
    pub(crate) async fn members_async(&self, tag: &str) -> Result<Members> {
        let task = self.members_task(tag)?;
        self.run("invalidate_tag", WALK_DEADLINE, task).await
    }

    /// Removes `members` (deleted by an invalidation) from a tag's set; members added since,
    /// or tagged again since they were read, stay.
    pub(crate) fn forget(&self, tag: &str, members: &Members) -> Result<()> {
        if members.keys.is_empty() {
            return Ok(());
        }
        let task = self.forget_task(tag, members)?;
        self.block("invalidate_tag", WALK_DEADLINE, task)
    }

    /// Async [`forget`](Self::forget).
    pub(crate) async fn forget_async(&self, tag: &str, members: &Members) -> Result<()> {
        if members.keys.is_empty() {
            return Ok(());
        }
        let task = self.forget_task(tag, members)?;
        self.run("invalidate_tag", WALK_DEADLINE, task).await
    }

    /// Deletes the keys `{l2_prefix}{prefix}*` of this store's Redis or Redis Cluster (a store
    /// on the L2's own hosts and credentials, see `L2Keys`); returns how many, less those among
    /// `in_l1`, which the caller counted already.
    pub(crate) fn delete_prefix(&self, l2_prefix: &str, prefix: &str, in_l1: Vec<String>) -> Result<u64> {
        let task = self.delete_prefix_task(l2_prefix, prefix, in_l1)?;
        self.block(PREFIX_OP, WALK_DEADLINE, task)
    }

    /// Async [`delete_prefix`](Self::delete_prefix).
    pub(crate) async fn delete_prefix_async(
        &self,
        l2_prefix: &str,
        prefix: &str,
        in_l1: Vec<String>,
    ) -> Result<u64> {
        let task = self.delete_prefix_task(l2_prefix, prefix, in_l1)?;
        self.run(PREFIX_OP, WALK_DEADLINE, task).await
    }
}

/// Of `keys`, one `UNLINK` that deleted `count` of them, how many the caller had not counted
/// yet: those whose name after `l2_prefix` is not in `in_l1`. `UNLINK` says how many it deleted,
/// not which: when it deleted fewer than it was given (a key expired, or was deleted, since the
/// scan, or the scan listed it twice), the keys in `in_l1` are taken off all the same, which may
/// count fewer than were deleted, never more.
fn not_counted_yet(keys: &[Vec<u8>], count: u64, l2_prefix: &[u8], in_l1: &HashSet<String>) -> u64 {
    let counted = keys
        .iter()
        .filter(|key| {
            key.strip_prefix(l2_prefix)
                .and_then(|name| std::str::from_utf8(name).ok())
                .is_some_and(|name| in_l1.contains(name))
        })
        .count();
    unlinked(keys.len(), count).saturating_sub(counted as u64)
}

/// The op a prefix deletion's errors name.
const PREFIX_OP: &str = "invalidate_prefix";

/// One prefix deletion's walk of the keyspace (see [`TagStore::delete_prefix`]).
struct PrefixWalk {
    /// `SCAN MATCH` pattern of the prefix.
    pattern: String,
    /// The tag sets' namespace, whose keys are left.
    tag_sets: Vec<u8>,
    /// The L2's key prefix, taken off a key's name before it is looked up in `in_l1`.
    l2_prefix: Vec<u8>,
    /// The keys the caller counted already.
    in_l1: HashSet<String>,
    timeout: Duration,
}

impl PrefixWalk {
    /// Walks one node: the server (`node` `None`) or the cluster primary `node`, whose `SCAN`
    /// is sent to it alone. The `UNLINK` of a page goes through the cluster client's routing,
    /// which splits it per slot and sums the answers.
    async fn node(&self, conn: &Conn, node: Option<SingleNodeRoutingInfo>) -> Result<u64> {
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&self.pattern)
                .arg("COUNT")
                .arg(WALK_STEP);
            let (next, mut keys): (u64, Vec<Vec<u8>>) = match (&node, conn) {
                (Some(node), Conn::Cluster(cluster)) => {
                    let mut cluster = cluster.clone();
                    let route = RoutingInfo::SingleNode(node.clone());
                    let reply = within(PREFIX_OP, self.timeout, async move {
                        cluster
                            .route_command(scan, route)
                            .await
                            .and_then(redis::Value::extract_error)
                            .map_err(|e| backend(PREFIX_OP, &e))
                    })
                    .await?;
                    redis::from_redis_value(reply)
                        .map_err(|e| backend(PREFIX_OP, &redis::RedisError::from(e)))?
                }
                _ => command(PREFIX_OP, self.timeout, conn.clone(), scan).await?,
            };
            keys.retain(|key| !key.starts_with(&self.tag_sets));
            if !keys.is_empty() {
                // A command, not a pipeline: the cluster client splits a command's keys per
                // slot, and refuses a pipelined one across slots (CROSSSLOT).
                let mut unlink = redis::cmd("UNLINK");
                unlink.arg(&keys);
                let n: u64 = command(PREFIX_OP, self.timeout, conn.clone(), unlink).await?;
                deleted = deleted.saturating_add(not_counted_yet(&keys, n, &self.l2_prefix, &self.in_l1));
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// A connection being opened.
type ConnectFuture = Pin<Box<dyn Future<Output = Result<Conn>> + Send>>;

/// How long a call that walks a tag's set or the keyspace round trip by round trip may take (a
/// tag's read and forget, a prefix deletion); each of its round trips has the timeout.
const WALK_DEADLINE: Duration = Duration::from_secs(600);

/// Members read or forgotten per round trip of such a walk.
const WALK_STEP: usize = 1_000;

/// `fut`, or a timeout error after `timeout`.
async fn within<T>(op: &'static str, timeout: Duration, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or(Err(Error::Timeout {
            level: LEVEL,
            op,
            // Named by `naming_hosts`, which every result of a tag operation goes through.
            server: String::new(),
            after: timeout,
        }))
}

/// Sends `pipe` on `conn` within `timeout`.
async fn query<T: redis::FromRedisValue>(
    op: &'static str,
    timeout: Duration,
    conn: Conn,
    pipe: redis::Pipeline,
) -> Result<T> {
    within(op, timeout, async move {
        let result = match conn {
            Conn::Single(mut c) => pipe.query_async::<T>(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async::<T>(&mut c).await,
        };
        result.map_err(|e| backend(op, &e))
    })
    .await
}

/// Sends `cmd` on `conn` within `timeout`.
async fn command<T: redis::FromRedisValue>(
    op: &'static str,
    timeout: Duration,
    conn: Conn,
    cmd: redis::Cmd,
) -> Result<T> {
    within(op, timeout, async move {
        let result = match conn {
            Conn::Single(mut c) => cmd.query_async::<T>(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async::<T>(&mut c).await,
        };
        result.map_err(|e| backend(op, &e))
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::not_counted_yet;

    /// A key L1 counted is not counted again; when `UNLINK` deleted fewer keys than it was
    /// given, it is taken off all the same, so the count may fall short but never exceeds the
    /// keys deleted that L1 did not hold.
    #[test]
    fn an_unlinked_key_is_counted_only_if_l1_did_not_count_it() {
        let keys: Vec<Vec<u8>> = ["app:a", "app:b", "app:c"]
            .iter()
            .map(|k| k.as_bytes().to_vec())
            .collect();
        let in_l1: HashSet<String> = ["a".to_owned(), "c".to_owned()].into();
        assert_eq!(not_counted_yet(&keys, 3, b"app:", &in_l1), 1);
        assert_eq!(not_counted_yet(&keys, 2, b"app:", &in_l1), 0);
        assert_eq!(not_counted_yet(&keys, 3, b"app:", &HashSet::new()), 3);
        // A name L1 could not hold (not valid UTF-8, or outside the prefix) is L2's alone.
        let odd = vec![b"app:\xff".to_vec(), b"other:a".to_vec()];
        assert_eq!(not_counted_yet(&odd, 2, b"app:", &in_l1), 2);
        // `UNLINK` never counts more than it was given.
        assert_eq!(not_counted_yet(&keys, 9, b"app:", &in_l1), 1);
    }
}
