//! Which Cluster primary owns a key, for its per-node circuit breaker: the key's hash slot
//! (CRC16 of the key or its `{hash tag}`, mod 16384, as Redis and the `redis` crate compute it)
//! and the slot map read with `CLUSTER SLOTS` when the level connects. The reading and parsing of
//! `CLUSTER SLOTS` ([`ask_slots`], [`parse_slots`]) is shared with the walks of `size` / `clear`.
//!
//! The `redis` crate still routes every command itself (and follows `MOVED` after a failover or
//! a resharding); this map only says which breaker a key's call answers to. It goes stale when
//! slots move, and the crate's following of a `MOVED` is not seen from here: so a call of a
//! mapped node that fails (a timeout, a backend error) has the map re-read ([`Slots::reread`],
//! at most once a second) before its failure is held against a breaker, and the failure is
//! held against the key's owner in the map as re-read, never against a node that no longer
//! owns the key's slot (which would open a healthy primary's breaker for another's outage).
//! The call does not wait for that: it returns its error by its own deadline, and its failure
//! is held on the I/O thread once the re-read ends.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisResult, Value};

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use super::errors::backend;
use crate::distributed::runtime::IoRuntime;
use crate::distributed::{Node, NodeBreakers};
use crate::error::{Error, Result};

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// No owner known (a slot the map did not cover).
const UNKNOWN: u16 = u16::MAX;
/// The longest host a `CLUSTER SLOTS` range may name: a DNS name's 253, or Redis's own limit
/// on an announced host name (`NET_HOST_STR_LEN`, 256 with its terminating NUL).
const MAX_HOST: usize = 255;

/// CRC16-CCITT (XMODEM) table, the checksum Redis Cluster hashes keys with.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)]
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        #[allow(clippy::indexing_slicing)] // i < 256, in a constant: checked at compile time
        {
            table[i] = crc;
        }
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        let i = usize::from(((crc >> 8) as u8) ^ b);
        (crc << 8) ^ CRC16_TABLE.get(i).copied().unwrap_or(0)
    })
}

/// The hash slot of `key`: of its `{tag}` if it has a non-empty one.
pub(crate) fn slot_of(key: &[u8]) -> usize {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            rest.get(..close).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    usize::from(crc16(hashed)) % SLOTS
}

/// The indices of `keys` (full server keys) grouped by hash slot, in the order each slot first
/// appears, if they span more than one slot.
pub(crate) fn by_slot(keys: impl Iterator<Item = Vec<u8>>) -> Option<Vec<(usize, Vec<usize>)>> {
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut index_of: HashMap<usize, usize> = HashMap::new();
    for (i, key) in keys.enumerate() {
        let slot = slot_of(&key);
        let at = *index_of.entry(slot).or_insert_with(|| {
            let at = groups.len();
            groups.push((slot, Vec::new()));
            at
        });
        if let Some((_, members)) = groups.get_mut(at) {
            members.push(i);
        }
    }
    (groups.len() > 1).then_some(groups)
}

/// A node's address as `(host, port)`.
pub(crate) type Address = (String, u16);

/// One range of `CLUSTER SLOTS`: its first and last slot and its primary's address, `None` when
/// the answering node does not know that primary's endpoint (`?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) primary: Option<(String, u16)>,
}

/// `CLUSTER SLOTS`, and the host of the node that answered it when known.
///
/// A node may answer with a NULL or empty host (`cluster-preferred-endpoint-type
/// unknown-endpoint`), or a wildcard one, meaning "the host you asked". So the question goes to
/// the seeds by address (the crate's routing by address, all at once, the first answer wins):
/// a seed the cluster client knows under that address answers, and its host is the answer's.
/// Only when none does (seeds given as names the nodes do not announce) is a random node
/// asked, and an answer with such hosts is then refused by [`parse_slots`].
pub(crate) async fn ask_slots(
    conn: &ClusterConnection,
    seeds: &[(String, u16)],
) -> RedisResult<(Value, Option<String>)> {
    let cmd = || {
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        cmd
    };
    let mut asked: FuturesUnordered<_> = seeds
        .iter()
        .map(|(host, port)| {
            let mut conn = conn.clone();
            let route = SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port: *port,
            };
            let cmd = cmd();
            async move {
                let reply = conn.route_command(cmd, RoutingInfo::SingleNode(route)).await;
                (reply, host.clone())
            }
        })
        .collect();
    while let Some((reply, host)) = asked.next().await {
        if let Ok(reply) = reply.and_then(Value::extract_error) {
            return Ok((reply, Some(host)));
        }
    }
    let reply = conn
        .clone()
        .route_command(cmd(), RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
        .await?
        .extract_error()?;
    Ok((reply, None))
}

/// Parses a `CLUSTER SLOTS` reply. A NULL, empty or wildcard (`0.0.0.0`, `::`) host is the
/// answering node's (`answering`); `?` (an endpoint the answering node does not know) gives a
/// range with no primary. `Err` says what is wrong with the reply.
pub(crate) fn parse_slots(
    reply: Value,
    answering: Option<&str>,
) -> std::result::Result<Vec<SlotRange>, String> {
    let Value::Array(ranges) = reply else {
        return Err("not an array".to_owned());
    };
    // Each range takes at least one slot. Without this bound, a reply of a million ranges each
    // naming every slot, and each another primary, cost the I/O thread billions of steps to
    // map, and a breaker per name.
    if ranges.len() > SLOTS {
        return Err(format!("{} ranges, more than the {SLOTS} slots", ranges.len()));
    }
    ranges
        .into_iter()
        .map(|range| parse_range(range, answering))
        .collect()
}

fn parse_range(range: Value, answering: Option<&str>) -> std::result::Result<SlotRange, String> {
    let Value::Array(fields) = range else {
        return Err("a range is not an array".to_owned());
    };
    let mut fields = fields.into_iter();
    let (Some(start), Some(end), Some(Value::Array(primary))) = (fields.next(), fields.next(), fields.next())
    else {
        return Err("a range lacks its slots or primary".to_owned());
    };
    let int = |v: Value| redis::from_redis_value::<usize>(v).map_err(|_| "a slot is not a number".to_owned());
    let (start, end) = (int(start)?, int(end)?);
    let mut primary = primary.into_iter();
    let (Some(host), Some(port)) = (primary.next(), primary.next()) else {
        return Err(format!("the primary of slots {start}-{end} lacks its address"));
    };
    let host: Option<String> = match host {
        Value::Nil => None,
        host => redis::from_redis_value(host)
            .map_err(|_| format!("the host of slots {start}-{end} is not text"))?,
    };
    // A node's name goes into its breaker, the stats, and every error and log line of its
    // keys: a longer host is no host a node can announce, only a server out of step.
    if let Some(len) = host.as_ref().map(String::len).filter(|&len| len > MAX_HOST) {
        return Err(format!(
            "the host of slots {start}-{end} is {len} bytes long, more than the {MAX_HOST} of a host name"
        ));
    }
    let port: u16 = redis::from_redis_value(port)
        .map_err(|_| format!("the port of slots {start}-{end} is not a number"))?;
    let host = match host.as_deref() {
        Some("?") => {
            return Ok(SlotRange {
                start,
                end,
                primary: None,
            })
        }
        None | Some("" | "0.0.0.0" | "::") => match answering {
            Some(answering) => answering.to_owned(),
            None => {
                return Err(format!(
                    "slots {start}-{end} name no host (the node's own: cluster-preferred-endpoint-type \
                     unknown-endpoint), and no seed host answered by its own address; list the \
                     cluster's nodes among the hosts as they announce themselves"
                ))
            }
        },
        Some(_) => host.unwrap_or_default(),
    };
    Ok(SlotRange {
        start,
        end,
        primary: Some((host, port)),
    })
}

/// The owner of every slot, and the owners' breakers.
pub(crate) struct SlotMap {
    /// Slot → index into `nodes` ([`UNKNOWN`] if not covered, or its endpoint is `?`).
    owner: Vec<u16>,
    nodes: Vec<Arc<Node>>,
}

impl SlotMap {
    /// Reads `CLUSTER SLOTS` over `conn` (any node answers for the whole cluster; see
    /// [`ask_slots`] for which one is asked).
    pub(crate) async fn read(
        conn: &ClusterConnection,
        seeds: &[(String, u16)],
        breakers: Arc<NodeBreakers>,
    ) -> Result<SlotMap> {
        let (reply, answering) = ask_slots(conn, seeds)
            .await
            .map_err(|err| backend("connect", &err))?;
        let ranges = parse_slots(reply, answering.as_deref()).map_err(|what| bad_reply("connect", &what))?;
        Ok(SlotMap::from_ranges(ranges, &breakers))
    }

    /// The map of `ranges` (as [`parse_slots`] gives them), in time linear in the ranges: a
    /// reply may name a primary per slot, and a search of the names seen for each took the I/O
    /// thread seconds.
    fn from_ranges(ranges: Vec<SlotRange>, breakers: &NodeBreakers) -> SlotMap {
        let mut owner = vec![UNKNOWN; SLOTS];
        let mut names: Vec<String> = Vec::new();
        let mut index_of: HashMap<String, u16> = HashMap::new();
        for range in ranges {
            // A range whose endpoint is unknown stays without an owner: its keys' calls go
            // without a node's breaker until a map names it.
            let Some((host, port)) = range.primary else {
                continue;
            };
            // At most `SLOTS` ranges (see `parse_slots`), so an index never reaches `UNKNOWN`.
            let next = u16::try_from(names.len()).unwrap_or(UNKNOWN);
            let index = *index_of
                .entry(format!("{host}:{port}"))
                .or_insert_with_key(|name| {
                    names.push(name.clone());
                    next
                });
            for slot in range.start..=range.end.min(SLOTS - 1) {
                if let Some(owner) = owner.get_mut(slot) {
                    *owner = index;
                }
            }
        }
        SlotMap {
            owner,
            nodes: breakers.nodes_named(&names),
        }
    }

    /// The primary that owns `key` (the full server key, prefix included), if the map knows.
    pub(crate) fn node_of(&self, key: &[u8]) -> Option<&Arc<Node>> {
        let owner = *self.owner.get(slot_of(key))?;
        self.nodes.get(usize::from(owner))
    }
}

/// Whom a call's failure is held against: see [`Slots::answerable`].
pub(crate) enum Answerable {
    /// The node whose breaker admitted the call.
    Admitter,
    /// The key's owner now: its slot moved.
    Owner(Arc<Node>),
    /// No node: the keys moved, to owners the map does not name or to several.
    Nobody,
}

/// The least time between two re-reads of the slot map.
const REREAD_EVERY: Duration = Duration::from_secs(1);

/// The slot map as the level holds it: read at connect, re-read when it may be stale (after a
/// counted failure of a mapped node's call: a resharding or a failover moves slots without the
/// level seeing the crate follow the `MOVED`), at most once per [`REREAD_EVERY`]. A re-read runs
/// on the I/O thread under the level's call timeout; a failed one keeps the map it had.
pub(crate) struct Slots {
    breakers: Arc<NodeBreakers>,
    seeds: Vec<Address>,
    /// The current map: one uncontended read lock and an `Arc` clone per call.
    map: RwLock<Arc<SlotMap>>,
    /// Re-reads started (numbered from 1) and when the last one started.
    started: Mutex<(u64, Option<Instant>)>,
    /// The number of the last re-read that ended (swapped in, failed or out of time).
    ended: watch::Sender<u64>,
}

impl Slots {
    /// Reads the map (as [`SlotMap::read`]) and holds it.
    pub(crate) async fn read(
        conn: &ClusterConnection,
        seeds: Vec<Address>,
        breakers: Arc<NodeBreakers>,
    ) -> Result<Slots> {
        let map = SlotMap::read(conn, &seeds, Arc::clone(&breakers)).await?;
        Ok(Slots::new(map, seeds, breakers))
    }

    fn new(map: SlotMap, seeds: Vec<Address>, breakers: Arc<NodeBreakers>) -> Slots {
        // The map of a connection replaced in the background may have left primaries.
        breakers.forget_unheld();
        Slots {
            breakers,
            seeds,
            map: RwLock::new(Arc::new(map)),
            started: Mutex::new((0, None)),
            ended: watch::Sender::new(0),
        }
    }

    /// Makes `map` the current map, and forgets the breakers of the primaries no map names any
    /// more (see [`NodeBreakers::forget_unheld`]).
    fn install(&self, map: SlotMap) {
        *self.map.write() = Arc::new(map);
        self.breakers.forget_unheld();
    }

    /// The primary that owns `key` (the full server key) in the current map, if it knows.
    pub(crate) fn node_of(&self, key: &[u8]) -> Option<Arc<Node>> {
        self.map.read().node_of(key).cloned()
    }

    /// Whether the current map says `node` owns `key` (the full server key).
    pub(crate) fn owns(&self, node: &Arc<Node>, key: &[u8]) -> bool {
        self.map
            .read()
            .node_of(key)
            .is_some_and(|owner| Arc::ptr_eq(owner, node))
    }

    /// Whom a failure of a call on `keys` (full server keys), admitted by `node`'s breaker, is
    /// held against in the current map: `node` while it owns one of the keys; else the owner of
    /// a lone key (the crate followed its slot there), or nobody. When it is not `node`, the
    /// call's probe slot of `node` (`probe`) is freed: the probe told nothing of `node`.
    pub(crate) fn answerable(&self, node: &Arc<Node>, probe: bool, keys: &[Vec<u8>]) -> Answerable {
        if keys.iter().any(|key| self.owns(node, key)) {
            return Answerable::Admitter;
        }
        if probe {
            node.breaker().release_probe();
        }
        match (keys, keys.first().and_then(|key| self.node_of(key))) {
            ([_], Some(owner)) => Answerable::Owner(owner),
            _ => Answerable::Nobody,
        }
    }

    /// Starts a re-read of the map on `rt` over `conn` unless one is under way or one started
    /// less than [`REREAD_EVERY`] ago; the future returned ends when the re-read under way (or
    /// just started) has ended, or at once if none is. It needs no timer of its caller's
    /// executor: the re-read's deadline (`timeout`) is kept on the I/O thread.
    pub(crate) fn reread(
        self: &Arc<Self>,
        conn: ClusterConnection,
        rt: &IoRuntime,
        timeout: Duration,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.subscribe();
        let wait_for = {
            let mut started = self.started.lock();
            let under_way = *ended.borrow() < started.0;
            let recent = started.1.is_some_and(|at| at.elapsed() < REREAD_EVERY);
            if under_way {
                Some(started.0)
            } else if recent {
                None
            } else {
                started.0 += 1;
                started.1 = Some(Instant::now());
                // Made before the task, so that it marks the re-read ended even if the task is
                // dropped unpolled (a runtime stopping).
                let end = Ended(Arc::clone(self), started.0);
                rt.detach("slots", timeout, async move {
                    let slots = &end.0;
                    let map = SlotMap::read(&conn, &slots.seeds, Arc::clone(&slots.breakers)).await?;
                    slots.install(map);
                    drop(end);
                    Ok(())
                });
                Some(started.0)
            }
        };
        async move {
            if let Some(number) = wait_for {
                // An error here means the sender is gone with the store: nothing to wait for.
                let _ = ended.wait_for(|&ended| ended >= number).await;
            }
        }
    }
}

/// Marks re-read number `.1` ended when dropped, however its task ended.
struct Ended(Arc<Slots>, u64);

impl Drop for Ended {
    fn drop(&mut self) {
        let number = self.1;
        self.0.ended.send_modify(|ended| *ended = (*ended).max(number));
    }
}

/// A `CLUSTER SLOTS` reply that could not be read, for `op`.
pub(crate) fn bad_reply(op: &'static str, what: &str) -> Error {
    Error::Backend {
        level: super::errors::LEVEL,
        op,
        reason: format!("unexpected CLUSTER SLOTS reply ({what})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::{Route, SlotAddr};

    #[test]
    fn slots_match_the_redis_crate_and_redis() {
        // CLUSTER KEYSLOT values from Redis.
        assert_eq!(slot_of(b"foo"), 12_182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        for key in ["", "a", "outage:{t7}x", "foo{}{bar}", "{a}b", "x{", "é∂"] {
            let slot = u16::try_from(slot_of(key.as_bytes())).unwrap();
            assert_eq!(
                Route::new(slot, SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key:?}"
            );
        }
    }

    #[test]
    fn a_slots_reply_of_more_ranges_than_slots_is_refused() {
        let range = |slot: usize| {
            Value::Array(vec![
                Value::Int(i64::try_from(slot % SLOTS).unwrap()),
                Value::Int(i64::try_from(slot % SLOTS).unwrap()),
                Value::Array(vec![
                    Value::BulkString(format!("h{slot}").into_bytes()),
                    Value::Int(6379),
                ]),
            ])
        };
        let every_slot = Value::Array((0..SLOTS).map(range).collect());
        assert_eq!(parse_slots(every_slot, None).unwrap().len(), SLOTS);
        let one_more = Value::Array((0..=SLOTS).map(range).collect());
        let err = parse_slots(one_more, None).unwrap_err();
        assert!(err.contains("16385 ranges"), "{err}");
    }

    #[test]
    fn a_slots_reply_naming_a_host_longer_than_a_host_name_is_refused() {
        let reply = |host: &str| {
            Value::Array(vec![Value::Array(vec![
                Value::Int(0),
                Value::Int(16_383),
                Value::Array(vec![
                    Value::BulkString(host.as_bytes().to_vec()),
                    Value::Int(6379),
                ]),
            ])])
        };
        let longest = "h".repeat(MAX_HOST);
        let ranges = parse_slots(reply(&longest), None).unwrap();
        assert_eq!(ranges[0].primary, Some((longest, 6379)));
        let err = parse_slots(reply(&"h".repeat(1 << 20)), None).unwrap_err();
        assert!(err.contains("slots 0-16383 is 1048576 bytes long"), "{err}");
    }

    fn ranges(hosts: &[String]) -> Vec<SlotRange> {
        let share = SLOTS / hosts.len();
        (0..hosts.len())
            .map(|i| SlotRange {
                start: i * share,
                end: if i + 1 == hosts.len() {
                    SLOTS - 1
                } else {
                    (i + 1) * share - 1
                },
                primary: Some((hosts[i].clone(), 6379)),
            })
            .collect()
    }

    /// Every primary any map ever named kept its breaker, and its row in the stats, for the
    /// process's life: a cluster renaming its primaries grew them without bound.
    #[test]
    fn a_primary_gone_from_the_re_read_map_is_forgotten_unless_its_breaker_is_open() {
        let breakers = Arc::new(NodeBreakers::new("redis", 1, Duration::from_secs(60)));
        let map = |hosts: &[&str]| {
            let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
            SlotMap::from_ranges(ranges(&hosts), &breakers)
        };
        let slots = Slots::new(map(&["a", "b", "c"]), Vec::new(), Arc::clone(&breakers));
        let last_slot_key = (0..)
            .map(|i| format!("k{i}"))
            .find(|k| slot_of(k.as_bytes()) == SLOTS - 1);
        let c = slots.node_of(last_slot_key.unwrap().as_bytes()).unwrap();
        assert_eq!(c.name(), "c:6379");
        c.breaker().trip();
        drop(c);

        slots.install(map(&["a", "d"]));
        let names: Vec<String> = breakers.stats().into_iter().map(|s| s.node).collect();
        assert_eq!(names, ["a:6379", "c:6379", "d:6379"], "b gone, c kept while open");

        for round in 0..200 {
            let hosts: Vec<String> = (0..16).map(|i| format!("r{round}n{i}")).collect();
            slots.install(SlotMap::from_ranges(ranges(&hosts), &breakers));
        }
        assert_eq!(
            breakers.stats().len(),
            16 + 1,
            "the current map's and the open one"
        );
    }
}
