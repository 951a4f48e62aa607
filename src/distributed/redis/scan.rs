//! `size` and `clear`: walks of every key under the prefix with `SCAN MATCH prefix*` (on each
//! primary of a cluster), counting with a pipelined `STRLEN` per batch or deleting with
//! `UNLINK` (the tag sets left). `DBSIZE` / `FLUSHDB` would be O(1) but count or delete every key of the database,
//! other programs' and other prefixes' included.
//!
//! A cluster's primaries come from `CLUSTER SLOTS`, asked once per walk of a seed by its address
//! (`slots::ask_slots`, so that a primary named by a NULL or empty host, "the node asked", is
//! known); each primary is then addressed directly (the crate's routing cannot continue a `SCAN`
//! cursor on one node). The `UNLINK` of a batch goes through the crate's routing, which splits it
//! per slot. Slots whose primary's endpoint is unknown (`?`) cannot be walked: the other
//! primaries are, and the walk then fails naming those slots, so that no `clear` says it
//! deleted keys it never saw (nor a `size` counts short).

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Pipeline, RedisError, RedisResult, Value};

use super::commands::TAG_NAMESPACE;
use super::connection::Conn;
use super::errors::{backend, call_error, LEVEL};
use super::slots::{ask_slots, bad_reply, parse_slots, Address, SlotRange};
use crate::error::{Error, Result};
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

/// Applies `each` to every batch of keys that `SCAN MATCH pattern` finds, node by node; then
/// fails if slots of the cluster were left unwalked (their primary's endpoint unknown).
async fn walk(
    conn: Conn,
    (seeds, hosts): (&[(String, u16)], &str),
    op: &'static str,
    pattern: &str,
    each: &mut Each<'_>,
) -> Result<()> {
    let cluster = matches!(conn, Conn::Cluster(_));
    let (nodes, unwalked) = match &conn {
        Conn::Single(_) => (vec![Node { conn, route: None }], None),
        Conn::Cluster(cluster) => {
            let (primaries, unwalked) = cluster_primaries(cluster, seeds, op).await?;
            let nodes = primaries
                .into_iter()
                .map(|(host, port)| Node {
                    conn: conn.clone(),
                    route: Some(SingleNodeRoutingInfo::ByAddress { host, port }),
                })
                .collect();
            (nodes, unwalked)
        }
    };
    walk_nodes(nodes, pattern, each)
        .await
        .map_err(|err| call_error(op, hosts, &err, cluster))?;
    unwalked.map_or(Ok(()), Err)
}

/// The primaries of a cluster, each to be walked by its address (the crate's routing cannot
/// continue a `SCAN` cursor on one node), and the error a walk of them owes at its end if the
/// slots of some primary cannot be walked (its endpoint unknown, see [`unwalked_error`]).
/// `seeds` are asked first (see [`ask_slots`]).
pub(crate) async fn cluster_primaries(
    cluster: &ClusterConnection,
    seeds: &[(String, u16)],
    op: &'static str,
) -> Result<(Vec<Address>, Option<Error>)> {
    let (reply, answering) = ask_slots(cluster, seeds).await.map_err(|err| backend(op, &err))?;
    let ranges = parse_slots(reply, answering.as_deref()).map_err(|what| bad_reply(op, &what))?;
    let (primaries, unknown) = primaries(ranges);
    let unwalked = (!unknown.is_empty()).then(|| unwalked_error(op, &unknown, answering.as_deref()));
    Ok((primaries, unwalked))
}

/// The error of a walk that could not reach the primaries of the slots `unknown`.
fn unwalked_error(op: &'static str, unknown: &[(usize, usize)], answering: Option<&str>) -> Error {
    let ranges: Vec<String> = unknown
        .iter()
        .map(|(start, end)| format!("{start}-{end}"))
        .collect();
    Error::Backend {
        level: LEVEL,
        op,
        reason: format!(
            "the keys in slots {} were not walked: the cluster node asked ({}) does not know their \
             primary's endpoint (CLUSTER SLOTS gives \"?\"); the other primaries were walked; retry \
             once every node knows the others (CLUSTER NODES shows them connected)",
            ranges.join(", "),
            answering.unwrap_or("a random node"),
        ),
    }
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

/// The distinct primaries of `CLUSTER SLOTS`, sorted, and the ranges whose primary's endpoint is
/// unknown.
fn primaries(ranges: Vec<SlotRange>) -> (Vec<Address>, Vec<(usize, usize)>) {
    let mut nodes = Vec::with_capacity(ranges.len());
    let mut unknown = Vec::new();
    for range in ranges {
        match range.primary {
            Some(primary) => nodes.push(primary),
            None => unknown.push((range.start, range.end)),
        }
    }
    nodes.sort();
    nodes.dedup();
    unknown.sort_unstable();
    (nodes, unknown)
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
    fn cluster_slots_give_each_primary_once_and_set_aside_unknown_endpoints() {
        let range = |start: i64, end: i64, host: Value, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(end),
                Value::Array(vec![host, Value::Int(port)]),
            ])
        };
        let text = |host: &str| Value::BulkString(host.as_bytes().to_vec());
        let reply = Value::Array(vec![
            range(10923, 16383, text("c"), 3),
            range(0, 5460, text("a"), 1),
            range(5461, 10000, text("b"), 2),
            range(10001, 10922, text("a"), 1),
            range(100, 200, text("?"), 9),
        ]);
        let (nodes, unknown) = primaries(parse_slots(reply, None).unwrap());
        assert_eq!(
            nodes,
            [("a".to_owned(), 1), ("b".to_owned(), 2), ("c".to_owned(), 3)]
        );
        assert_eq!(unknown, [(100, 200)]);
        assert!(parse_slots(Value::Nil, None).is_err());
    }

    /// `cluster-preferred-endpoint-type unknown-endpoint`: a NULL host is the answering node's;
    /// so are an empty and a wildcard one.
    #[test]
    fn a_null_empty_or_wildcard_host_is_the_answering_nodes() {
        let range = |start: i64, host: Value, port: i64| {
            Value::Array(vec![
                Value::Int(start),
                Value::Int(start),
                Value::Array(vec![host, Value::Int(port)]),
            ])
        };
        let text = |host: &str| Value::BulkString(host.as_bytes().to_vec());
        let reply = || {
            Value::Array(vec![
                range(0, Value::Nil, 1),
                range(1, text(""), 2),
                range(2, text("0.0.0.0"), 3),
                range(3, text("::"), 4),
            ])
        };
        let (nodes, unknown) = primaries(parse_slots(reply(), Some("seed")).unwrap());
        assert_eq!(nodes, [1, 2, 3, 4].map(|port| ("seed".to_owned(), port)));
        assert!(unknown.is_empty());
        let err = parse_slots(reply(), None).unwrap_err();
        assert!(err.contains("slots 0-0 name no host"), "{err}");
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
