//! `size` and `clear`: walks of every key under the prefix with `SCAN MATCH prefix*` (on each
//! primary of a cluster), counting with a pipelined `STRLEN` per batch or deleting with
//! `UNLINK`. `DBSIZE` / `FLUSHDB` would be O(1) but count or delete every key of the database,
//! other programs' and other prefixes' included.
//!
//! A cluster's primaries come from `CLUSTER SLOTS`, asked once per walk; each primary is then
//! addressed directly (the crate's routing cannot continue a `SCAN` cursor on one node). The
//! `UNLINK` of a batch goes through the crate's routing, which splits it per slot.

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisResult, Value};

use super::connection::Conn;
use super::errors::backend;
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

/// Keys and bytes (key + enveloped value) under `prefix`.
pub(crate) async fn size(conn: Conn, prefix: &str) -> Result<StorageSize> {
    let mut total = StorageSize::default();
    walk(conn, &prefix_pattern(prefix), &mut Each::Count(&mut total))
        .await
        .map_err(|err| backend("size", &err))?;
    Ok(total)
}

/// Deletes every key under `prefix`.
pub(crate) async fn clear(conn: Conn, prefix: &str) -> Result<()> {
    walk(conn, &prefix_pattern(prefix), &mut Each::Unlink)
        .await
        .map_err(|err| backend("clear", &err))
}

/// What a walk does with each batch of keys.
enum Each<'a> {
    /// Adds the keys and their values' lengths (`STRLEN`, pipelined on the node).
    Count(&'a mut StorageSize),
    /// Deletes the keys.
    Unlink,
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

/// Applies `each` to every batch of keys that `SCAN MATCH pattern` finds, node by node.
async fn walk(conn: Conn, pattern: &str, each: &mut Each<'_>) -> RedisResult<()> {
    let nodes = match &conn {
        Conn::Single(_) => vec![Node { conn, route: None }],
        Conn::Cluster(cluster) => {
            let mut cluster = cluster.clone();
            primaries(&mut cluster)
                .await?
                .into_iter()
                .map(|(host, port)| Node {
                    conn: conn.clone(),
                    route: Some(SingleNodeRoutingInfo::ByAddress { host, port }),
                })
                .collect()
        }
    };
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
                    Each::Unlink => {
                        redis::cmd("UNLINK")
                            .arg(&keys)
                            .query_async::<()>(&mut node.conn)
                            .await?;
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

/// The primaries' addresses, from `CLUSTER SLOTS`.
async fn primaries(conn: &mut ClusterConnection) -> RedisResult<Vec<(String, u16)>> {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let reply = conn
        .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
        .await?;
    parse_primaries(reply)
        .ok_or_else(|| RedisError::from((ErrorKind::UnexpectedReturnType, "unexpected CLUSTER SLOTS reply")))
}

/// `CLUSTER SLOTS` as the distinct primaries, sorted; ranges whose endpoint is unknown (`?`)
/// are skipped.
fn parse_primaries(value: Value) -> Option<Vec<(String, u16)>> {
    let Value::Array(entries) = value else { return None };
    let mut nodes = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(fields) = entry else { return None };
        let mut fields = fields.into_iter().skip(2);
        let Value::Array(primary) = fields.next()? else {
            return None;
        };
        let mut primary = primary.into_iter();
        let host = match primary.next()? {
            Value::BulkString(bytes) => String::from_utf8(bytes).ok()?,
            Value::SimpleString(s) => s,
            _ => return None,
        };
        let port = u16::try_from(as_int(primary.next()?)?).ok()?;
        if host.is_empty() || host == "?" {
            continue;
        }
        nodes.push((host, port));
    }
    nodes.sort();
    nodes.dedup();
    Some(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_pattern_matches_the_prefix_literally() {
        assert_eq!(prefix_pattern("app:"), "app:*");
        assert_eq!(prefix_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }

    #[test]
    fn cluster_slots_give_each_primary_once_and_skip_unknown_endpoints() {
        let range = |start: i64, end: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                Value::Array(vec![
                    Value::BulkString(host.as_bytes().to_vec()),
                    Value::Int(port),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            range(10923, 16383, "c", 3),
            range(0, 5460, "a", 1),
            range(5461, 10000, "b", 2),
            range(10001, 10922, "a", 1),
            range(100, 200, "?", 9),
        ]);
        assert_eq!(
            parse_primaries(reply).unwrap(),
            [("a".to_owned(), 1), ("b".to_owned(), 2), ("c".to_owned(), 3)]
        );
        assert_eq!(parse_primaries(Value::Nil), None);
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
