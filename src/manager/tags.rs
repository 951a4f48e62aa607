//! Tag membership and prefix deletion on a Redis that every instance reaches (the backplane's,
//! or else the Redis L2): one Redis set per tag, `{key_prefix}uno-cache:tag:{tag}`, holding the
//! keys written with that tag. `SADD` adds a key, then `EXPIRE NX` + `EXPIRE GT` give the set a
//! TTL no shorter than any member's L2 TTL (Redis 7 or later). Invalidating a tag reads and
//! deletes the set; the manager then deletes the members from L1 and L2 and publishes them as
//! keys, so every instance drops them from its L1.
//!
//! Prefix deletion in L2 (`SCAN MATCH` + `UNLINK`) is done on a standalone Redis only: a Redis
//! Cluster would need a scan of every primary, and Memcached cannot list keys at all; there
//! the L2 entries live out their TTL (L1 copies are still dropped everywhere).

use std::time::Duration;

use parking_lot::Mutex;

use crate::distributed::runtime::IoRuntime;
use crate::distributed::RedisOptions;
use crate::error::{Error, Result};

const LEVEL: &str = "tags";

#[derive(Clone)]
enum Conn {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

/// A lazily connected Redis for tag sets; see the module docs.
pub(crate) struct TagStore {
    options: RedisOptions,
    prefix: String,
    timeout: Duration,
    rt: IoRuntime,
    conn: Mutex<Option<Conn>>,
    /// Whether keys of this prefix may be scanned and deleted in L2 here.
    pub(crate) l2_prefix_delete: bool,
}

fn backend(op: &'static str, e: &redis::RedisError) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: e.to_string(),
    }
}

/// Escapes the glob characters of `MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl TagStore {
    pub(crate) fn new(
        options: RedisOptions,
        prefix: String,
        timeout: Duration,
        l2_prefix_delete: bool,
    ) -> Result<Self> {
        // The I/O thread the options name (shared with the L2 and the backplane), or its own.
        let rt = options.runtime_for(LEVEL)?;
        Ok(TagStore {
            options,
            prefix,
            timeout,
            rt,
            conn: Mutex::new(None),
            l2_prefix_delete,
        })
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}uno-cache:tag:{tag}", self.prefix)
    }

    fn connection(&self) -> Result<Conn> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let (targets, cluster) = self.options.resolve_targets()?;
        let conn = if cluster {
            let urls: Vec<String> = targets.iter().map(|t| t.url.clone()).collect();
            let client = redis::cluster::ClusterClientBuilder::new(urls)
                .build()
                .map_err(|e| backend("connect", &e))?;
            self.rt.block_on("connect", self.timeout, async move {
                client
                    .get_async_connection()
                    .await
                    .map(Conn::Cluster)
                    .map_err(|e| backend("connect", &e))
            })?
        } else {
            let target = targets.first().ok_or_else(|| Error::Config {
                field: "invalidation.hosts".to_owned(),
                reason: "no host".to_owned(),
            })?;
            let client = self
                .options
                .client_for(target)
                .map_err(|e| backend("connect", &e))?;
            self.rt.block_on("connect", self.timeout, async move {
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map(Conn::Single)
                    .map_err(|e| backend("connect", &e))
            })?
        };
        *self.conn.lock() = Some(conn.clone());
        Ok(conn)
    }

    fn query<T: redis::FromRedisValue + Send + 'static>(
        &self,
        op: &'static str,
        pipe: redis::Pipeline,
    ) -> Result<T> {
        let conn = self.connection()?;
        let out = self.rt.block_on(op, self.timeout, async move {
            let result = match conn {
                Conn::Single(mut c) => pipe.query_async::<T>(&mut c).await,
                Conn::Cluster(mut c) => pipe.query_async::<T>(&mut c).await,
            };
            result.map_err(|e| backend(op, &e))
        });
        if out.is_err() {
            // Reconnect next time.
            *self.conn.lock() = None;
        }
        out
    }

    /// Records `keys` as members of each tag, for at least `ttl`.
    pub(crate) fn add(&self, keys: &[&str], tags: &[&str], ttl: Duration) -> Result<()> {
        if keys.is_empty() || tags.is_empty() {
            return Ok(());
        }
        let secs = ttl.as_secs().max(1);
        let mut pipe = redis::pipe();
        for tag in tags {
            let set = self.tag_key(tag);
            pipe.cmd("SADD").arg(&set).arg(keys).ignore();
            pipe.cmd("EXPIRE").arg(&set).arg(secs).arg("NX").ignore();
            pipe.cmd("EXPIRE").arg(&set).arg(secs).arg("GT").ignore();
        }
        self.query::<()>("tag", pipe)
    }

    /// Takes (reads and deletes) a tag's members.
    pub(crate) fn take(&self, tag: &str) -> Result<Vec<String>> {
        let set = self.tag_key(tag);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SMEMBERS")
            .arg(&set)
            .cmd("DEL")
            .arg(&set)
            .ignore();
        let (members,): (Vec<String>,) = self.query("invalidate_tag", pipe)?;
        Ok(members)
    }

    /// Deletes L2 keys `{l2_prefix}{prefix}*` (standalone Redis only); returns how many.
    pub(crate) fn delete_prefix(&self, l2_prefix: &str, prefix: &str) -> Result<u64> {
        if !self.l2_prefix_delete {
            return Ok(0);
        }
        let pattern = format!("{}*", glob_escape(&format!("{l2_prefix}{prefix}")));
        let mut cursor: u64 = 0;
        let mut deleted = 0u64;
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let ((next, keys),): ((u64, Vec<Vec<u8>>),) = self.query("invalidate_prefix", pipe)?;
            if !keys.is_empty() {
                let mut pipe = redis::pipe();
                pipe.cmd("UNLINK").arg(&keys);
                let (n,): (u64,) = self.query("invalidate_prefix", pipe)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
