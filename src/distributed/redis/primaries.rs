//! The primaries a walk of a cluster's keys goes over (`size`, `clear`, a prefix invalidation),
//! and whether the walk saw every key: slots whose primary is unknown, and slots that moved
//! while it ran.
//!
//! A `SCAN` cursor belongs to one node, so a walk goes primary by primary. A key that moves
//! during the walk (a resharding migrates a slot's keys one by one, `MIGRATE`, before the slot
//! changes owner) from a primary not walked yet to one walked already is seen by neither: a
//! prefix invalidation that said `Ok` then left a value in L2 that every instance would read
//! back. So [`ClusterWalk::begin`] reads each primary's own line of `CLUSTER NODES` before the
//! walk, and [`ClusterWalk::end`] again after it; the walk fails naming the slots if, at either
//! time, a primary marked a slot as moving out (`[slot->-id]`) or in (`[slot-<-id]`), if a
//! primary's own slots changed between the two (a move that began and ended within the walk,
//! or a failover), or if its config epoch did (a slot moved away and back within the walk: the
//! node that takes a slot back bumps its epoch, and a failback does too). Each node's own line
//! is the view that changes first: a migration marks its two nodes before the first key moves
//! and clears them, giving the slot away, after the last.
//!
//! A move begun and undone within the walk (both nodes marked, a key migrated away and back,
//! the marks cleared: an aborted resharding rolled back) changes none of that: no node was
//! given the slot, so no epoch was bumped. Yet the key was away from its primary while that was
//! walked, and back before the one holding it meanwhile was. So `begin` and `end` also read
//! each primary's `INFO commandstats`, and the walk fails if a primary ran a command that moves
//! keys or slots ([`MOVING_COMMANDS`]) in between.
//!
//! The primaries come from one node's `CLUSTER SLOTS`, which may be stale (gossip lag after a
//! move or a failover, a node that has not heard of a new primary yet): a slot it places on a
//! walked primary may be served by a node not walked. So `begin` also reads every line of each
//! primary's `CLUSTER NODES` (where it sees the others' slots), and the walk fails naming the
//! slots some primary sees served that none of the walked primaries serves by its own line.
//!
//! The keys the walk found are handled all the same (deleted or counted): the error says only
//! that others may have been missed, and to retry once the move is over.

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{RedisError, RedisResult};

use super::errors::LEVEL;
use super::slots::{ask_slots, bad_reply, parse_slots, Address, SlotRange};
use crate::error::Error;

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// Slot ranges an error lists before it says how many more there are.
const LISTED_RANGES: usize = 8;

/// A walk of every primary of a cluster, begun: the primaries to walk, and what
/// [`end`](Self::end) checks.
pub(crate) struct ClusterWalk {
    op: &'static str,
    primaries: Vec<Address>,
    /// The error the walk owes at its end for slots whose primary's endpoint is unknown (see
    /// [`unwalked_error`]).
    unwalked: Option<Error>,
    /// Slots that a primary's view assigns to a node the walk does not go over (see
    /// [`unseen_error`]).
    unseen: SlotSet,
    /// The host of the node whose `CLUSTER SLOTS` gave `primaries`, when known.
    answering: Option<String>,
    /// Each primary's view when the walk began (its own slots and moves, and its count of the
    /// commands that move slots or keys), in the order of `primaries`.
    before: Vec<View>,
}

impl ClusterWalk {
    /// Reads the slot map (`seeds`, the hosts given as `(host, port)`, are asked first, see
    /// [`ask_slots`]) and each primary's `CLUSTER NODES`: its own line, and where it sees the
    /// others' slots.
    pub(crate) async fn begin(
        cluster: &ClusterConnection,
        seeds: &[(String, u16)],
        op: &'static str,
    ) -> std::result::Result<ClusterWalk, WalkError> {
        let (reply, answering) = ask_slots(cluster, seeds).await.map_err(WalkError::Request)?;
        let ranges = parse_slots(reply, answering.as_deref())
            .map_err(|what| WalkError::Found(bad_reply(op, &what)))?;
        let (primaries, unknown) = primaries(ranges);
        let unwalked = (!unknown.is_empty()).then(|| unwalked_error(op, &unknown, answering.as_deref()));
        let views = views_of_each(cluster, &primaries, op).await?;
        // The map read may be stale (gossip lag after a move or a failover, a node that has not
        // heard of a new one): its primaries may not serve what it says. Each node's word on
        // its own slots is the one to trust, and any primary's view of where the others are
        // names the slots that one of them serves and none of the walked ones does.
        let mut unseen = SlotSet::default();
        let mut walked = SlotSet::default();
        for view in &views {
            unseen.union(&view.assigned);
            walked.union(&view.own.served);
        }
        unseen.remove_all(&walked);
        // Those are named by `unwalked`, whose advice fits them.
        for (start, end) in &unknown {
            unseen.remove(*start, *end);
        }
        Ok(ClusterWalk {
            op,
            primaries,
            unwalked,
            unseen,
            answering,
            before: views,
        })
    }

    /// The primaries to walk, each by its address, sorted.
    pub(crate) fn primaries(&self) -> &[Address] {
        &self.primaries
    }

    /// Once every primary was walked: fails if slots moved during the walk, a primary's
    /// config epoch changed or a primary ran a command that moves slots or keys (see the module
    /// docs), else if slots are served by a node not walked, else if slots could not be walked
    /// (their primary's endpoint unknown).
    pub(crate) async fn end(self, cluster: &ClusterConnection) -> std::result::Result<(), WalkError> {
        let after = views_of_each(cluster, &self.primaries, self.op).await?;
        let mut moved = SlotSet::default();
        for (before, after) in self.before.iter().zip(&after) {
            moved.add_changes(&before.own, &after.own);
        }
        if !moved.is_empty() {
            return Err(WalkError::Found(moved_error(self.op, &moved)));
        }
        let each = || self.primaries.iter().zip(self.before.iter().zip(&after));
        for (address, (before, after)) in each() {
            if before.own.epoch != after.own.epoch {
                let why = epoch_why(before.own.epoch, after.own.epoch);
                return Err(WalkError::Found(served_error(self.op, address, &after.own, &why)));
            }
        }
        for (address, (before, after)) in each() {
            if before.moves != after.moves {
                return Err(WalkError::Found(served_error(
                    self.op, address, &after.own, UNDONE_WHY,
                )));
            }
        }
        if !self.unseen.is_empty() {
            let err = unseen_error(self.op, &self.unseen, self.answering.as_deref());
            return Err(WalkError::Found(err));
        }
        self.unwalked.map_or(Ok(()), |err| Err(WalkError::Found(err)))
    }
}

/// Why [`ClusterWalk::begin`] or [`ClusterWalk::end`] failed.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A request failed (refused, timed out, …): named by the caller as it names the walk's
    /// other requests' failures.
    Request(RedisError),
    /// What the walk found: slots moved or unwalked ([`Error::WalkIncomplete`]), or a reply it
    /// cannot read.
    Found(Error),
}

impl WalkError {
    /// The error, a failed request named by `request`.
    pub(crate) fn named(self, request: impl FnOnce(&RedisError) -> Error) -> Error {
        match self {
            WalkError::Request(err) => request(&err),
            WalkError::Found(err) => err,
        }
    }
}

/// What a walk says when slots moved while it ran.
pub(crate) const MOVED_ADVICE: &str = "moved between primaries while the walk ran (a resharding \
    or a failover): a key that moved from a primary not walked yet to one walked already was \
    seen by neither, so keys may have been missed; the keys found were handled; retry once the \
    move is over (no primary's line of CLUSTER NODES shows a [slot->-…] or [slot-<-…] mark; \
    `redis-cli --cluster fix` ends a move left unfinished)";

fn moved_error(op: &'static str, moved: &SlotSet) -> Error {
    Error::WalkIncomplete {
        level: LEVEL,
        op,
        reason: format!("hash slots {} {MOVED_ADVICE}", moved.ranges_text()),
    }
}

/// What a walk says when a primary's slots and marks are the same at both ends but `why` says
/// some of them may have moved meanwhile: its config epoch changed (a slot moved away from it
/// and back, a failover and a failback), or it ran a command that moves slots or keys (a move
/// begun and undone within the walk).
fn served_error(op: &'static str, (host, port): &Address, after: &OwnSlots, why: &str) -> Error {
    Error::WalkIncomplete {
        level: LEVEL,
        op,
        reason: format!(
            "hash slots {} (those {host}:{port} serves; {why}, so some of them) {MOVED_ADVICE}",
            after.served.ranges_text(),
        ),
    }
}

/// Why a primary whose config epoch changed from `before` to `after` may have let slots move.
fn epoch_why(before: u64, after: u64) -> String {
    format!(
        "its config epoch went from {before} to {after} while the walk ran, as a node's does when \
         it takes slots over"
    )
}

/// Why a primary that ran a command of [`MOVING_COMMANDS`] may have let slots move.
const UNDONE_WHY: &str = "it ran MIGRATE, RESTORE-ASKING or CLUSTER SETSLOT, ADDSLOTS or DELSLOTS \
    while the walk ran, as a move begun and undone within it does";

/// What a walk says when a primary's view assigns slots to a node that it does not walk.
fn unseen_error(op: &'static str, unseen: &SlotSet, answering: Option<&str>) -> Error {
    Error::WalkIncomplete {
        level: LEVEL,
        op,
        reason: format!(
            "the keys in hash slots {} were not walked: a primary's CLUSTER NODES assigns them to \
             a node that none of the primaries in the cluster map read ({}'s CLUSTER SLOTS) is, \
             and none of those serves them (a node new to the cluster, a failover or a move the \
             node asked has not heard of yet); the keys of the primaries walked were handled; \
             retry once every node gives the same CLUSTER SLOTS",
            unseen.ranges_text(),
            answering.unwrap_or("a random node"),
        ),
    }
}

/// Each primary's view of `CLUSTER NODES`, asked of them all at once.
async fn views_of_each(
    cluster: &ClusterConnection,
    primaries: &[Address],
    op: &'static str,
) -> std::result::Result<Vec<View>, WalkError> {
    let asked = primaries.iter().map(|(host, port)| {
        let mut conn = cluster.clone();
        let route = SingleNodeRoutingInfo::ByAddress {
            host: host.clone(),
            port: *port,
        };
        async move {
            let mut nodes = redis::cmd("CLUSTER");
            nodes.arg("NODES");
            let mut stats = redis::cmd("INFO");
            stats.arg("commandstats");
            let at = RoutingInfo::SingleNode(route);
            let nodes = conn.route_command(nodes, at.clone()).await?.extract_error()?;
            let stats = conn.route_command(stats, at).await?.extract_error()?;
            RedisResult::Ok((nodes, stats))
        }
    });
    let replies = futures_util::future::join_all(asked).await;
    primaries
        .iter()
        .zip(replies)
        .map(|((host, port), reply)| {
            let (nodes, stats) = reply.map_err(WalkError::Request)?;
            let text: String = redis::from_redis_value(nodes)
                .map_err(|_| WalkError::Found(nodes_reply_error(op, host, *port, "not text")))?;
            let mut view = View::parse(&text)
                .map_err(|what| WalkError::Found(nodes_reply_error(op, host, *port, &what)))?;
            let stats: String = redis::from_redis_value(stats)
                .map_err(|_| WalkError::Found(stats_reply_error(op, host, *port, "not text")))?;
            view.moves = moving_calls(&stats)
                .map_err(|what| WalkError::Found(stats_reply_error(op, host, *port, &what)))?;
            Ok(view)
        })
        .collect()
}

fn nodes_reply_error(op: &'static str, host: &str, port: u16, what: &str) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: format!("unexpected CLUSTER NODES reply from {host}:{port} ({what})"),
    }
}

fn stats_reply_error(op: &'static str, host: &str, port: u16, what: &str) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: format!("unexpected INFO commandstats reply from {host}:{port} ({what})"),
    }
}

/// The commands that move a slot or a key between primaries, as `INFO commandstats` names
/// them: a key leaves a primary by `MIGRATE` and arrives by `RESTORE-ASKING`, and a slot is
/// marked or given by `CLUSTER SETSLOT` (or by hand with `ADDSLOTS` / `DELSLOTS`). A move
/// begun and undone within a walk (an aborted resharding rolled back) leaves no mark, no slot
/// and no config epoch changed at either end, yet a key away from its primary while that was
/// walked, and back before the one holding it was, is seen by neither; it cannot leave these
/// counts as they were. (A `CONFIG RESETSTAT` meanwhile fails the walk too: retried, it passes.)
const MOVING_COMMANDS: [&str; 7] = [
    "migrate",
    "restore-asking",
    "cluster|setslot",
    "cluster|addslots",
    "cluster|addslotsrange",
    "cluster|delslots",
    "cluster|delslotsrange",
];

/// The calls of [`MOVING_COMMANDS`] that an `INFO commandstats` reply counts, summed (a
/// command never called has no line).
fn moving_calls(stats: &str) -> std::result::Result<u64, String> {
    let mut calls = 0u64;
    for line in stats.lines() {
        let Some((name, fields)) = line
            .trim()
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if !MOVING_COMMANDS.contains(&name) {
            continue;
        }
        let count = fields
            .split(',')
            .find_map(|field| field.strip_prefix("calls="))
            .and_then(|count| count.parse::<u64>().ok())
            .ok_or_else(|| format!("no call count for {name}"))?;
        calls = calls.wrapping_add(count);
    }
    Ok(calls)
}

/// What one node's own line of `CLUSTER NODES` says: the slots it serves, those it is moving
/// out or in, and its config epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OwnSlots {
    served: SlotSet,
    moving: SlotSet,
    /// Rises when the node takes slots over: at the end of a move into it (`CLUSTER SETSLOT
    /// … NODE` on the importing node bumps it unless it holds the cluster's greatest epoch
    /// already), and when it wins a failover (a failback too). A slot moved away and back
    /// within one walk leaves the slots as they were, but not this.
    epoch: u64,
}

impl OwnSlots {
    /// The slots and config epoch of one line of `CLUSTER NODES`, the node's own or another's:
    /// `<id> <address> <flags> <primary> <ping> <pong> <epoch> <link> <slot>...`, each slot
    /// `n`, `n-m`, `[n->-id]` (migrating out) or `[n-<-id]` (importing).
    fn parse_line(line: &str) -> std::result::Result<OwnSlots, String> {
        let epoch = line.split(' ').nth(6).ok_or("a line without a config epoch")?;
        let mut own = OwnSlots {
            served: SlotSet::default(),
            moving: SlotSet::default(),
            epoch: epoch.parse().map_err(|_| format!("bad config epoch {epoch:?}"))?,
        };
        for token in line.split(' ').skip(8).filter(|t| !t.is_empty()) {
            if let Some(mark) = token.strip_prefix('[') {
                let slot = mark
                    .split_once("->-")
                    .or_else(|| mark.split_once("-<-"))
                    .map(|(slot, _)| slot)
                    .ok_or_else(|| format!("bad slot mark {token:?}"))?;
                let slot = parse_slot(slot)?;
                own.moving.insert(slot, slot);
            } else {
                let (start, end) = token.split_once('-').unwrap_or((token, token));
                let (start, end) = (parse_slot(start)?, parse_slot(end)?);
                if start > end {
                    return Err(format!("bad slot range {token:?}"));
                }
                own.served.insert(start, end);
            }
        }
        Ok(own)
    }
}

/// One primary's reply to `CLUSTER NODES`: its own line, and the slots it sees served by any
/// node, itself included.
#[derive(Debug)]
struct View {
    own: OwnSlots,
    assigned: SlotSet,
    /// The node's calls of [`MOVING_COMMANDS`] (from `INFO commandstats`, read with the view).
    moves: u64,
}

impl View {
    /// Reads every line, the one flagged `myself` as the node's own.
    fn parse(reply: &str) -> std::result::Result<View, String> {
        let mut own = None;
        let mut assigned = SlotSet::default();
        for line in reply.lines().filter(|line| !line.trim().is_empty()) {
            let slots = OwnSlots::parse_line(line)?;
            assigned.union(&slots.served);
            let myself = line
                .split(' ')
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|flag| flag == "myself"));
            if myself {
                own = Some(slots);
            }
        }
        let own = own.ok_or("no line flagged myself")?;
        Ok(View {
            own,
            assigned,
            moves: 0,
        })
    }
}

fn parse_slot(text: &str) -> std::result::Result<usize, String> {
    text.parse::<usize>()
        .ok()
        .filter(|slot| *slot < SLOTS)
        .ok_or_else(|| format!("bad slot {text:?}"))
}

/// A set of hash slots, one bit each.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotSet(Vec<u64>);

impl Default for SlotSet {
    fn default() -> Self {
        SlotSet(vec![0; SLOTS / 64])
    }
}

impl SlotSet {
    /// Adds the slots `start..=end` (each below [`SLOTS`]).
    fn insert(&mut self, start: usize, end: usize) {
        for slot in start..=end {
            if let Some(word) = self.0.get_mut(slot / 64) {
                *word |= 1 << (slot % 64);
            }
        }
    }

    /// Adds the slots `before` or `after` marked as moving, and those served by one and not
    /// the other.
    fn add_changes(&mut self, before: &OwnSlots, after: &OwnSlots) {
        let words = before
            .served
            .0
            .iter()
            .zip(&after.served.0)
            .zip(before.moving.0.iter().zip(&after.moving.0));
        for (out, ((b, a), (mb, ma))) in self.0.iter_mut().zip(words) {
            *out |= (b ^ a) | mb | ma;
        }
    }

    /// Removes the slots `start..=end` (`end` may be out of range: a `CLUSTER SLOTS` range's,
    /// which only the server bounds).
    fn remove(&mut self, start: usize, end: usize) {
        for slot in start..=end.min(SLOTS - 1) {
            if let Some(word) = self.0.get_mut(slot / 64) {
                *word &= !(1 << (slot % 64));
            }
        }
    }

    fn union(&mut self, other: &SlotSet) {
        for (word, other) in self.0.iter_mut().zip(&other.0) {
            *word |= other;
        }
    }

    fn remove_all(&mut self, other: &SlotSet) {
        for (word, other) in self.0.iter_mut().zip(&other.0) {
            *word &= !other;
        }
    }

    fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    fn contains(&self, slot: usize) -> bool {
        self.0.get(slot / 64).is_some_and(|w| w & (1 << (slot % 64)) != 0)
    }

    /// The slots as ranges, `5461-5470, 12000`, the first [`LISTED_RANGES`] and how many more.
    fn ranges_text(&self) -> String {
        let mut ranges = Vec::new();
        let mut slot = 0;
        while slot < SLOTS {
            if self.contains(slot) {
                let start = slot;
                while slot + 1 < SLOTS && self.contains(slot + 1) {
                    slot += 1;
                }
                ranges.push(if start == slot {
                    start.to_string()
                } else {
                    format!("{start}-{slot}")
                });
            }
            slot += 1;
        }
        let more = ranges.len().saturating_sub(LISTED_RANGES);
        ranges.truncate(LISTED_RANGES);
        let mut text = ranges.join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more ranges"));
        }
        text
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

/// The error of a walk that could not reach the primaries of the slots `unknown`.
fn unwalked_error(op: &'static str, unknown: &[(usize, usize)], answering: Option<&str>) -> Error {
    let mut slots = SlotSet::default();
    for (start, end) in unknown {
        // A `CLUSTER SLOTS` range's end, which only the server bounds.
        slots.insert(*start, (*end).min(SLOTS - 1));
    }
    Error::WalkIncomplete {
        level: LEVEL,
        op,
        reason: format!(
            "the keys in hash slots {} were not walked: the cluster node asked ({}) does not know their \
             primary's endpoint (CLUSTER SLOTS gives \"?\"); the other primaries were walked; retry \
             once every node knows the others (CLUSTER NODES shows them connected)",
            slots.ranges_text(),
            answering.unwrap_or("a random node"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Value;

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
        let text =
            unwalked_error("size", &[(7, 7), (100, 200), (16000, usize::MAX)], Some("a:1")).to_string();
        assert!(
            text.contains("redis size did not see every key: the keys in hash slots 7, 100-200, 16000-16383 were not walked: the cluster node asked (a:1)"),
            "{text}"
        );
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

    /// A primary's own line, as Redis 7 writes it: ranges, a single slot, the marks of a slot
    /// moving out and one moving in, and the config epoch; other nodes' lines are not its own.
    #[test]
    fn a_nodes_own_line_gives_its_slots_and_the_slots_it_is_moving() {
        let reply = "\
            07c3 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922\n\
            e7d1 127.0.0.1:30001@40001,node-a myself,master - 0 0 7 connected 0-100 102 \
            [101->-07c3] [16000-<-07c3]\n\
            67ed 127.0.0.1:30003@40003 master - 0 1 3 connected 10923-16383\n";
        let own = View::parse(reply).unwrap().own;
        let mut served = SlotSet::default();
        served.insert(0, 100);
        served.insert(102, 102);
        let mut moving = SlotSet::default();
        moving.insert(101, 101);
        moving.insert(16000, 16000);
        assert_eq!(
            own,
            OwnSlots {
                served,
                moving,
                epoch: 7
            }
        );
        assert_eq!(own.served.ranges_text(), "0-100, 102");
        assert_eq!(own.moving.ranges_text(), "101, 16000");
    }

    /// Every line's slots count as assigned, whoever serves them: a walk compares them with
    /// the walked primaries' own lines.
    #[test]
    fn a_view_assigns_the_slots_of_every_line() {
        let reply = "\
            07c3 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922\n\
            e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 [101->-07c3]\n\
            67ed 127.0.0.1:30003@40003 slave e7d1 0 1 3 connected\n\
            99aa 127.0.0.1:30004@40004 master - 0 1 4 connected 10923-16383\n";
        let view = View::parse(reply).unwrap();
        let mut own = SlotSet::default();
        own.insert(0, 5460);
        assert_eq!(view.own.served, own);
        let mut unseen = view.assigned.clone();
        unseen.remove_all(&own);
        assert_eq!(unseen.ranges_text(), "5461-16383");
        unseen.remove(5461, 10922);
        assert_eq!(unseen.ranges_text(), "10923-16383");
        unseen.remove(16000, usize::MAX);
        assert_eq!(unseen.ranges_text(), "10923-15999");
        let bad = format!("{reply}77bb 127.0.0.1:30005@40005 master - 0 1 5 connected 5-x\n");
        assert!(View::parse(&bad).unwrap_err().contains("bad slot"));
    }

    #[test]
    fn a_reply_without_a_line_of_its_own_or_with_a_bad_slot_is_refused() {
        let line =
            |slots: &str| format!("e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected {slots}\n");
        assert!(View::parse(&line("0-16383")).is_ok());
        assert!(View::parse(&line("")).is_ok_and(|view| view.own.served.is_empty()));
        for bad in ["16384", "5-4", "x", "[7>7]", "[x->-a]", "0-99999"] {
            let err = View::parse(&line(bad)).unwrap_err();
            assert!(err.contains("bad slot"), "{bad}: {err}");
        }
        let other = "07c3 127.0.0.1:30002@40002 master - 0 1 2 connected 0-16383\n";
        assert_eq!(View::parse(other).unwrap_err(), "no line flagged myself");
        let epoch = |epoch: &str| format!("e7d1 127.0.0.1:30001@40001 myself,master - 0 0 {epoch}");
        assert_eq!(View::parse(&epoch("-1")).unwrap_err(), "bad config epoch \"-1\"");
        assert!(View::parse(&epoch("")).unwrap_err().contains("bad config epoch"));
        let short = "e7d1 127.0.0.1:30001@40001 myself,master - 0 0";
        assert_eq!(View::parse(short).unwrap_err(), "a line without a config epoch");
    }

    /// A move is a change whether the walk saw it in progress (a mark at either end) or saw
    /// only its result (a slot served at one end and not at the other); slots that stayed
    /// where they were are not named.
    #[test]
    fn slots_marked_at_either_end_or_served_at_one_end_only_count_as_moved() {
        let own = |served: (usize, usize), moving: Option<usize>| {
            let mut own = OwnSlots {
                served: SlotSet::default(),
                moving: SlotSet::default(),
                epoch: 1,
            };
            own.served.insert(served.0, served.1);
            if let Some(slot) = moving {
                own.moving.insert(slot, slot);
            }
            own
        };
        let mut moved = SlotSet::default();
        moved.add_changes(&own((0, 5460), None), &own((0, 5460), None));
        assert!(moved.is_empty());
        moved.add_changes(&own((0, 5460), Some(7)), &own((0, 5460), None));
        moved.add_changes(&own((100, 200), None), &own((100, 190), Some(9000)));
        assert_eq!(moved.ranges_text(), "7, 191-200, 9000");

        let mut many = SlotSet::default();
        for slot in (0..40).map(|i| i * 3) {
            many.insert(slot, slot);
        }
        assert_eq!(
            many.ranges_text(),
            "0, 3, 6, 9, 12, 15, 18, 21 and 32 more ranges"
        );
        let text = moved_error("clear", &moved).to_string();
        assert!(
            text.contains(
                "redis clear did not see every key: hash slots 7, 191-200, 9000 moved between primaries"
            ),
            "{text}"
        );
    }

    /// A walk that met a primary whose config epoch changed names that primary, its slots and
    /// both epochs, and gives the advice of a move.
    #[test]
    fn a_changed_config_epoch_names_the_primary_and_its_slots() {
        let line =
            |epoch: u64| format!("e7d1 127.0.0.1:30001@40001 myself,master - 0 0 {epoch} connected 0-5460\n");
        let (before, after) = (View::parse(&line(3)).unwrap(), View::parse(&line(5)).unwrap());
        let address = ("127.0.0.1".to_owned(), 30001);
        let text = served_error(
            "clear",
            &address,
            &after.own,
            &epoch_why(before.own.epoch, after.own.epoch),
        )
        .to_string();
        assert!(
            text.contains(
                "hash slots 0-5460 (those 127.0.0.1:30001 serves; its config epoch went from 3 to 5"
            ),
            "{text}"
        );
        assert!(text.contains(MOVED_ADVICE), "{text}");
    }

    /// The commands that move keys or slots are summed from `INFO commandstats`, whatever else
    /// it lists; a line of one of them without a call count is refused.
    #[test]
    fn the_moving_commands_calls_are_summed_from_commandstats() {
        let stats = "# Commandstats\r\n\
            cmdstat_get:calls=90,usec=1,usec_per_call=0.01,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_migrate:calls=3,usec=121,usec_per_call=40.33,rejected_calls=0,failed_calls=1\r\n\
            cmdstat_restore-asking:calls=4,usec=9,usec_per_call=2.25,rejected_calls=0,failed_calls=0\r\n\
            cmdstat_cluster|setslot:calls=2,usec=9,usec_per_call=4.50,rejected_calls=1,failed_calls=0\r\n\
            cmdstat_cluster|nodes:calls=50,usec=9,usec_per_call=0.18,rejected_calls=0,failed_calls=0\r\n";
        assert_eq!(moving_calls(stats), Ok(9));
        assert_eq!(moving_calls("# Commandstats\r\n"), Ok(0));
        assert_eq!(
            moving_calls("cmdstat_migrate:usec=1\r\n"),
            Err("no call count for migrate".to_owned())
        );
        let line = "e7d1 127.0.0.1:30001@40001 myself,master - 0 0 3 connected 0-5460\n";
        let own = View::parse(line).unwrap().own;
        let text = served_error("clear", &("127.0.0.1".to_owned(), 30001), &own, UNDONE_WHY).to_string();
        assert!(
            text.contains("hash slots 0-5460 (those 127.0.0.1:30001 serves; it ran MIGRATE"),
            "{text}"
        );
        assert!(text.contains(MOVED_ADVICE), "{text}");
    }
}
