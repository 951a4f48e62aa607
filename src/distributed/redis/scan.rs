//! `size` and `clear`: walks of every key under the prefix with `SCAN MATCH prefix*` (on each
//! primary of a cluster), counting with a pipelined `STRLEN` per batch or deleting with
//! `UNLINK` (the tag sets left). `DBSIZE` / `FLUSHDB` would be O(1) but count or delete every key of the database,
//! other programs' and other prefixes' included.
//!
//! A cluster's primaries come from `CLUSTER SLOTS`, asked once per walk of a seed by its address
//! (`slots::ask_slots`, so that a primary named by a NULL or empty host, "the node asked", is
//! known); each primary is then addressed directly (the crate's routing cannot continue a `SCAN`
//! cursor on one node). The `UNLINK` of a batch goes through the crate's routing, which splits it
//! per slot. A walk that cannot have seen every key fails once it has walked what it could,
//! naming the slots ([`Error::WalkIncomplete`](crate::Error::WalkIncomplete), see `primaries`):
//! slots whose primary's endpoint is unknown (`?`), and slots that moved between primaries
//! during the walk. So no `clear` says it deleted keys it never saw (nor a `size` counts short).

use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

use super::commands::TAG_NAMESPACE;
use super::connection::Conn;
use super::errors::call_error;
use super::primaries::ClusterWalk;
use crate::error::Result;
use crate::storage::StorageSize;

/// Keys per `SCAN` step.
const SCAN_BATCH: usize = 1_000;

/// The `SCAN MATCH` pattern of the keys that start with `prefix`: its glob characters escaped
/// (so it matches only itself), then `*`.
pub(crate) fn prefix_pattern(prefix: &str) -> String {
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

/// Keys and bytes (key + enveloped value) under `prefix`. `seeds`: the hosts given, as
/// `(host, port)`, asked for a cluster's slots; `hosts`, as errors name them.
pub(crate) async fn size(
    conn: Conn,
    seeds: &[(String, u16)],
    hosts: &str,
    prefix: &str,
) -> Result<StorageSize> {
    let mut total = StorageSize::default();
    walk(
        conn,
        (seeds, hosts),
        "size",
        &prefix_pattern(prefix),
        &mut Each::Count(&mut total),
    )
    .await?;
    Ok(total)
}

/// Deletes every key under `prefix` but the tag sets (`{prefix}uno-cache:tag:…`, see
/// [`TAG_NAMESPACE`]), as a prefix deletion leaves them: a tag's set is how an invalidation of
/// the tag finds the copies other levels (an instance's L1) still hold of its keys, which
/// outlive the values deleted here. Deleted with them, the invalidation found no member and
/// those copies were served after it. A set holds no value, and expires by itself.
pub(crate) async fn clear(conn: Conn, seeds: &[(String, u16)], hosts: &str, prefix: &str) -> Result<()> {
    let tag_sets = format!("{prefix}{TAG_NAMESPACE}").into_bytes();
    walk(
        conn,
        (seeds, hosts),
        "clear",
        &prefix_pattern(prefix),
        &mut Each::Unlink { keep: &tag_sets },
    )
    .await
}

/// What a walk does with each batch of keys.
enum Each<'a> {
    /// Adds the keys and their values' lengths (`STRLEN`, pipelined on the node).
    Count(&'a mut StorageSize),
    /// Deletes the keys, but those that start with `keep`.
    Unlink { keep: &'a [u8] },
}

/// One node being walked: the connection, and the node's address on a cluster.
struct Node {
    conn: Conn,
    route: Option<SingleNodeRoutingInfo>,
}

impl Node {
    async fn command(&mut self, cmd: Cmd) -> RedisResult<Value> {
        match (&mut self.conn, &self.route) {
            (Conn::Cluster(conn), Some(route)) => conn
                .route_command(cmd, RoutingInfo::SingleNode(route.clone()))
                .await?
                .extract_error(),
            (conn, _) => cmd.query_async::<Value>(conn).await,
        }
    }

    async fn pipeline(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        use redis::aio::ConnectionLike as _;
        match (&mut self.conn, &self.route) {
            (Conn::Cluster(conn), Some(route)) => {
                conn.route_pipeline(pipe.clone(), 0, pipe.len(), route.clone())
                    .await
            }
            (conn, _) => conn.req_packed_commands(pipe, 0, pipe.len()).await,
        }
    }
}

/// Applies `each` to every batch of keys that `SCAN MATCH pattern` finds, node by node; then,
/// on a cluster, fails if slots moved during the walk or were left unwalked (see
/// [`ClusterWalk`]).
async fn walk(
    conn: Conn,
    (seeds, hosts): (&[(String, u16)], &str),
    op: &'static str,
    pattern: &str,
    each: &mut Each<'_>,
) -> Result<()> {
    let cluster = match &conn {
        Conn::Single(_) => None,
        Conn::Cluster(cluster) => Some(cluster.clone()),
    };
    let Some(cluster) = cluster else {
        return walk_nodes(vec![Node { conn, route: None }], pattern, each)
            .await
            .map_err(|err| call_error(op, hosts, &err, false));
    };
    let named = |err: &RedisError| call_error(op, hosts, err, true);
    let begun = ClusterWalk::begin(&cluster, seeds, op)
        .await
        .map_err(|e| e.named(named))?;
    let nodes = begun
        .primaries()
        .iter()
        .map(|(host, port)| Node {
            conn: conn.clone(),
            route: Some(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            }),
        })
        .collect();
    walk_nodes(nodes, pattern, each)
        .await
        .map_err(|err| call_error(op, hosts, &err, true))?;
    begun.end(&cluster).await.map_err(|e| e.named(named))
}

async fn walk_nodes(nodes: Vec<Node>, pattern: &str, each: &mut Each<'_>) -> RedisResult<()> {
    for mut node in nodes {
        let mut cursor = 0u64;
        loop {
            let reply = node.command(scan_cmd(cursor, pattern)).await?;
            let (next, keys): (u64, Vec<Vec<u8>>) =
                redis::from_redis_value(reply).map_err(RedisError::from)?;
            if !keys.is_empty() {
                match each {
                    Each::Count(total) => {
                        let lens = node.pipeline(&strlen_pipe(&keys)).await?;
                        add_sizes(total, &keys, lens);
                    }
                    Each::Unlink { keep } => {
                        let doomed: Vec<&Vec<u8>> = keys.iter().filter(|k| !k.starts_with(keep)).collect();
                        if !doomed.is_empty() {
                            redis::cmd("UNLINK")
                                .arg(&doomed)
                                .query_async::<()>(&mut node.conn)
                                .await?;
                        }
                    }
                }
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(())
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

/// Adds the keys that hold strings, with their values' lengths. A key of another type answers
/// `STRLEN` with `WRONGTYPE` and is not counted: it holds no value of this level (a tag's set,
/// see `TAG_NAMESPACE`, or another program's key). The lengths are the server's word: the sums
/// saturate, as Memcached's do.
fn add_sizes(size: &mut StorageSize, keys: &[Vec<u8>], lens: Vec<Value>) {
    for (key, len) in keys.iter().zip(lens) {
        if let Some(len) = as_int(len) {
            size.items = size.items.saturating_add(1);
            let bytes = (key.len() as u64).saturating_add(u64::try_from(len).unwrap_or(0));
            size.bytes = size.bytes.saturating_add(bytes);
        }
    }
}

fn as_int(value: Value) -> Option<i64> {
    match value {
        Value::Int(i) => Some(i),
        Value::BulkString(bytes) => std::str::from_utf8(&bytes).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_pattern_matches_the_prefix_literally() {
        assert_eq!(prefix_pattern("app:"), "app:*");
        assert_eq!(prefix_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }

    /// The lengths are the server's word: a broken or hostile server must not overflow the
    /// sum (a panic in a debug build, a wrapped count in a release one).
    #[test]
    fn sizes_past_u64_saturate_instead_of_overflowing() {
        let keys = [b"a".to_vec(), b"b".to_vec()];
        let mut size = StorageSize::default();
        add_sizes(&mut size, &keys, vec![Value::Int(i64::MAX), Value::Int(i64::MAX)]);
        assert_eq!(
            size,
            StorageSize {
                items: 2,
                bytes: u64::MAX
            }
        );

        let mut size = StorageSize {
            items: u64::MAX,
            bytes: u64::MAX,
        };
        add_sizes(&mut size, &keys, vec![Value::Int(1), Value::Int(1)]);
        assert_eq!(
            size,
            StorageSize {
                items: u64::MAX,
                bytes: u64::MAX
            }
        );
    }
}
