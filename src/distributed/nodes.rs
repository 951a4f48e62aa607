//! [`NodeBreakers`]: one [`CircuitBreaker`] per node of a multi-node level (each Memcached host,
//! each Redis Cluster primary), so that a dead node fails fast for its own keys while the other
//! nodes keep serving theirs.
//!
//! A level asks [`NodeBreakers::node`] for a node's [`Node`] once (when it learns the node), keeps
//! the `Arc`, and on the hot path costs one [`CircuitBreaker::allow`] (an atomic load while the
//! breaker is closed) before, and one record after, each call to that node. Node failures are
//! reported to the caller as [`Error::NodeUnavailable`], which a level-wide [`Guarded`] breaker
//! in front neither counts nor holds against the other nodes.
//!
//! [`Guarded`]: super::Guarded

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;

use super::breaker::{BreakerState, CircuitBreaker};
use crate::clock::{Clock, MonotonicClock};
use crate::error::{Error, Result};

/// One node: its breaker and the failures it saw.
#[derive(Debug)]
pub struct Node {
    name: String,
    level: &'static str,
    breaker: CircuitBreaker,
    errors: AtomicU64,
}

/// A snapshot of one node's breaker, for stats.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// The node, as `host:port`.
    pub node: String,
    /// Its breaker's state.
    pub state: BreakerState,
    /// How many times its breaker opened.
    pub trips: u64,
    /// Calls to it that failed (timeouts, connection and server failures; skips by its open
    /// breaker are not counted).
    pub errors: u64,
}

impl Node {
    /// The node, as `host:port`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's breaker.
    #[must_use]
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Asks the breaker: `Ok(probe)` if the call may go ahead (`probe`: it is the half-open
    /// probe), else [`Error::NodeUnavailable`] over [`Error::CircuitOpen`].
    pub(crate) fn admit(&self) -> Result<bool> {
        self.breaker
            .admit()
            .ok_or_else(|| self.unavailable(Error::CircuitOpen { level: self.level }))
    }

    /// Feeds a call's outcome to the breaker and wraps a node failure (timeout, backend,
    /// misconfiguration) in
    /// [`Error::NodeUnavailable`]; caller errors pass unchanged (and free a probe slot).
    pub(crate) fn record<T>(&self, probe: bool, result: Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                self.breaker.record_success();
                Ok(value)
            }
            // A refusal of one command or key is no failure of the node (see `guarded::record`):
            // passed on as a caller error is.
            Err(e @ Error::Misconfigured { call_only: true, .. }) => {
                if probe {
                    self.breaker.release_probe();
                }
                Err(e)
            }
            // A node that refuses the configuration (its password rotated alone) is that node's
            // failure, as it is the level's on a single server: held against the level, one
            // node's refusal would open the breaker of every node.
            Err(e @ (Error::Timeout { .. } | Error::Backend { .. } | Error::Misconfigured { .. })) => {
                self.count_failure(probe);
                Err(self.unavailable(e))
            }
            // Up, and out of memory for writes: no failure for the breaker, so its reads go on;
            // but its keys' writes wait, as for a node that is down (a batch's other nodes'
            // items stand, and a replay goes on with the other nodes' keys).
            Err(e @ Error::ServerFull { .. }) => {
                self.breaker.record_success();
                Err(self.unavailable(e))
            }
            Err(e @ (Error::InvalidEnvelope { .. } | Error::ItemRefused { .. })) => {
                // The node answered.
                self.breaker.record_success();
                Err(e)
            }
            Err(e) => {
                if probe {
                    self.breaker.release_probe();
                }
                Err(e)
            }
        }
    }

    /// Holds a failure (a timeout, a backend error) against this node: counted, and fed to its
    /// breaker. [`record`](Self::record) does this with the error at hand; a Cluster judges some
    /// failures later, once it knows which node owns the key (see `redis::store`).
    pub(crate) fn count_failure(&self, probe: bool) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.breaker.record_failure_of(probe);
    }

    /// A call admitted but never sent (the deadline went to other nodes first): reported as this
    /// node's [`Error::NodeUnavailable`], yet held against it by neither count nor breaker.
    pub(crate) fn not_sent(&self, probe: bool, cause: Error) -> Error {
        if probe {
            self.breaker.release_probe();
        }
        self.unavailable(cause)
    }

    /// Opens the breaker at once (a node found down at start-up): its keys fail fast from the
    /// first call, and a probe after the cool-down lets it rejoin.
    pub(crate) fn mark_down(&self, error: &Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.breaker.trip();
        tracing::warn!(node = %self.name, error = %error, "L2 node down; its keys fail fast until a probe reaches it");
    }

    pub(crate) fn unavailable(&self, cause: Error) -> Error {
        Error::NodeUnavailable {
            level: self.level,
            node: self.name.clone(),
            cause: Box::new(cause),
        }
    }

    fn stats(&self) -> NodeStats {
        NodeStats {
            node: self.name.clone(),
            state: self.breaker.state(),
            trips: self.breaker.trips(),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// The most nodes kept that nothing holds any more and whose breaker is not closed (primaries
/// that left a Cluster's slot map while down: their stats say how they left).
const MAX_LEFT_NOT_CLOSED: usize = 64;

/// The breakers of every node of one level, created as the level learns its nodes. Share it
/// (`Arc`) between the level and whoever reports stats; a level reconnected in the background
/// keeps the same set. A Cluster primary gone from the slot map is forgotten once nothing holds
/// it and its breaker is closed (a few open ones are kept, to show how they left).
#[derive(Debug)]
pub struct NodeBreakers {
    level: &'static str,
    failure_threshold: u32,
    cool_down: Duration,
    clock: Arc<dyn Clock>,
    nodes: RwLock<Vec<Arc<Node>>>,
}

impl NodeBreakers {
    /// Breakers on the monotonic clock that open after `failure_threshold` consecutive failures
    /// of their node and probe it again after `cool_down`.
    #[must_use]
    pub fn new(level: &'static str, failure_threshold: u32, cool_down: Duration) -> Self {
        Self::with_clock(level, failure_threshold, cool_down, Arc::new(MonotonicClock))
    }

    /// Like [`new`](Self::new) on a given clock (a [`ManualClock`](crate::ManualClock) in tests).
    #[must_use]
    pub fn with_clock(
        level: &'static str,
        failure_threshold: u32,
        cool_down: Duration,
        clock: Arc<dyn Clock>,
    ) -> Self {
        NodeBreakers {
            level,
            failure_threshold,
            cool_down,
            clock,
            nodes: RwLock::new(Vec::new()),
        }
    }

    /// The node named `name` (`host:port`), created closed on first use.
    #[must_use]
    pub fn node(&self, name: &str) -> Arc<Node> {
        if let Some(node) = self.nodes.read().iter().find(|n| n.name == name) {
            return Arc::clone(node);
        }
        let mut nodes = self.nodes.write();
        if let Some(node) = nodes.iter().find(|n| n.name == name) {
            return Arc::clone(node);
        }
        let node = self.new_node(name);
        nodes.push(Arc::clone(&node));
        node
    }

    /// The nodes named `names` (`host:port` each), in their order, each created closed on first
    /// use: [`node`](Self::node) for many names at once, in time linear in the names and the
    /// nodes known (a Cluster's slot map names up to 16384, where a search of the list for
    /// each took seconds).
    pub(crate) fn nodes_named(&self, names: &[String]) -> Vec<Arc<Node>> {
        let mut nodes = self.nodes.write();
        let mut known: HashMap<String, Arc<Node>> =
            nodes.iter().map(|n| (n.name.clone(), Arc::clone(n))).collect();
        names
            .iter()
            .map(|name| {
                let node = known.entry(name.clone()).or_insert_with(|| {
                    let node = self.new_node(name);
                    nodes.push(Arc::clone(&node));
                    node
                });
                Arc::clone(node)
            })
            .collect()
    }

    fn new_node(&self, name: &str) -> Arc<Node> {
        Arc::new(Node {
            name: name.to_owned(),
            level: self.level,
            breaker: CircuitBreaker::with_clock(
                self.failure_threshold,
                self.cool_down,
                Arc::clone(&self.clock),
            ),
            errors: AtomicU64::new(0),
        })
    }

    /// Forgets the nodes that nothing holds but this list (a Cluster primary absent from the
    /// slot map as re-read, and from every call under way) and whose breaker is closed; of those
    /// not closed, keeps the [`MAX_LEFT_NOT_CLOSED`] learnt last. Without it, a cluster that
    /// renames its primaries (up to 16384 new names a `CLUSTER SLOTS` reply) grew the list, and
    /// the stats, for the process's life. A node forgotten and named again starts afresh.
    pub(crate) fn forget_unheld(&self) {
        let mut nodes = self.nodes.write();
        // Under the write lock no one can take a new `Arc` from the list, so a node held by the
        // list alone stays so while this runs.
        let unheld = |node: &Arc<Node>| Arc::strong_count(node) == 1;
        let closed = |node: &Arc<Node>| node.breaker.state() == BreakerState::Closed;
        let mut not_closed = nodes.iter().filter(|n| unheld(n) && !closed(n)).count();
        // The list is in the order the nodes were learnt: the oldest go first.
        nodes.retain(|node| {
            if !unheld(node) {
                return true;
            }
            if closed(node) || not_closed > MAX_LEFT_NOT_CLOSED {
                not_closed -= usize::from(!closed(node));
                return false;
            }
            true
        });
    }

    /// Every node's breaker kept, in the order the nodes were learnt.
    #[must_use]
    pub fn stats(&self) -> Vec<NodeStats> {
        self.nodes.read().iter().map(|n| n.stats()).collect()
    }
}

/// What the nodes of a batch call answered, settled: the parts that were served, and the
/// caller's indices of the keys that were not (with the first node failure).
pub(crate) struct Settled<T> {
    pub(crate) served: Vec<(Vec<usize>, T)>,
    pub(crate) failed: Vec<usize>,
    pub(crate) cause: Option<Error>,
}

/// How long a batch split over nodes may run past its parts' own deadline before the whole
/// call gives up: long enough that a part which missed its deadline on a loaded machine is still
/// reported (and counted) as its node's timeout, not as a failure of the whole level (which
/// would feed the level's breaker although its other nodes answer).
pub(crate) fn part_grace(timeout: Duration) -> Duration {
    (timeout / 2).max(Duration::from_millis(10))
}

/// Settles the answers of a batch call's parts, each `(the caller's indices it carried, its
/// result)`. Any failure that is not a node's ([`Error::NodeUnavailable`]: bad input, say) fails
/// the whole call, as do node failures when no node answered.
pub(crate) fn settle<T>(parts: Vec<(Vec<usize>, Result<T>)>) -> Result<Settled<T>> {
    let mut settled = Settled {
        served: Vec::with_capacity(parts.len()),
        failed: Vec::new(),
        cause: None,
    };
    let mut other = None;
    for (members, result) in parts {
        match result {
            Ok(out) => settled.served.push((members, out)),
            Err(e @ Error::NodeUnavailable { .. }) => {
                settled.failed.extend(members);
                settled.cause.get_or_insert(e);
            }
            Err(e) => {
                other.get_or_insert(e);
            }
        }
    }
    if let Some(e) = other {
        return Err(e);
    }
    match settled.cause {
        Some(e) if settled.served.is_empty() => Err(e),
        _ => {
            settled.failed.sort_unstable();
            Ok(settled)
        }
    }
}

/// The answer of a `get_many` whose keys at `failed` were not served (their node was not
/// reached, or their value could not be read), `cause` the first such failure: every entry if
/// none failed, `cause` itself if every key failed, else an [`Error::PartialBatch`] carrying
/// the entries that were read.
pub(crate) fn entries_or_partial(
    level: &'static str,
    op: &'static str,
    entries: Vec<Option<crate::storage::Entry>>,
    mut failed: Vec<usize>,
    cause: Option<Error>,
) -> Result<Vec<Option<crate::storage::Entry>>> {
    let Some(cause) = cause else {
        return Ok(entries);
    };
    failed.sort_unstable();
    failed.dedup();
    if failed.len() >= entries.len() {
        return Err(cause);
    }
    Err(partial(
        level,
        op,
        entries.len(),
        failed,
        cause,
        crate::error::Served::Entries(entries),
    ))
}

/// The [`Error::PartialBatch`] of a settled call that left `failed` keys unreached.
pub(crate) fn partial(
    level: &'static str,
    op: &'static str,
    total: usize,
    failed: Vec<usize>,
    cause: Error,
    served: crate::error::Served,
) -> Error {
    // Nothing here is refused: a node was not reached, or a value could not be read.
    Error::PartialBatch(Box::new(crate::error::PartialBatch::new(
        level,
        op,
        total,
        failed,
        Vec::new(),
        cause,
        served,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    fn breakers() -> (NodeBreakers, ManualClock) {
        let clock = ManualClock::new(1_000);
        let b = NodeBreakers::with_clock(
            "memcached",
            2,
            Duration::from_millis(100),
            Arc::new(clock.clone()),
        );
        (b, clock)
    }

    fn down() -> Result<()> {
        Err(Error::Backend {
            level: "memcached",
            op: "get",
            reason: "refused".into(),
        })
    }

    /// One node that refuses the configuration (its own password rotated) opens its own breaker,
    /// and the error still reads as a misconfiguration for the stats and the log. Passed up
    /// unwrapped, it was counted by the level's breaker (which counts no `NodeUnavailable`),
    /// and that breaker then skipped every node.
    #[test]
    fn a_node_that_refuses_the_configuration_opens_its_own_breaker_only() {
        let (b, _clock) = breakers();
        let (a, other) = (b.node("a:1"), b.node("b:1"));
        for _ in 0..2 {
            let probe = a.admit().unwrap();
            let refused: Result<()> = Err(Error::Misconfigured {
                level: "memcached",
                hosts: "a:1".into(),
                reason: "WRONGPASS".into(),
                call_only: false,
            });
            let err = a.record(probe, refused).unwrap_err();
            assert!(
                matches!(err, Error::NodeUnavailable { ref node, .. } if node == "a:1"),
                "{err:?}"
            );
            assert!(err.is_misconfiguration(), "{err:?}");
        }
        assert!(a.admit().is_err(), "the node's breaker opened");
        assert!(other.admit().is_ok());
    }

    /// A refusal of one command (a user refused UNLINK) opened the node's breaker, and that node's
    /// reads were skipped with its deletes.
    #[test]
    fn a_refusal_of_one_command_leaves_the_nodes_breaker_closed_and_frees_a_probe() {
        let (b, clock) = breakers();
        let a = b.node("a:1");
        let refused = || -> Result<()> {
            Err(Error::Misconfigured {
                level: "redis",
                hosts: "a:1".into(),
                reason: "NOPERM unlink".into(),
                call_only: true,
            })
        };
        for _ in 0..4 {
            let probe = a.admit().unwrap();
            let err = a.record(probe, refused()).unwrap_err();
            assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
        }
        assert_eq!(a.breaker().state(), BreakerState::Closed);
        for _ in 0..2 {
            let probe = a.admit().unwrap();
            let _ = a.record(probe, down());
        }
        clock.advance(Duration::from_millis(100));
        let probe = a.admit().unwrap();
        assert!(probe);
        let _ = a.record(probe, refused());
        assert_eq!(a.admit().ok(), Some(true), "the next call probes");
    }

    #[test]
    fn one_node_opening_leaves_the_others_closed() {
        let (b, _clock) = breakers();
        let (a, other) = (b.node("a:1"), b.node("b:1"));
        assert!(Arc::ptr_eq(&a, &b.node("a:1")), "one breaker per name");
        for _ in 0..2 {
            let probe = a.admit().unwrap();
            let err = a.record(probe, down()).unwrap_err();
            assert!(matches!(err, Error::NodeUnavailable { ref node, .. } if node == "a:1"));
        }
        let skipped = a.admit().unwrap_err();
        assert!(
            matches!(&skipped, Error::NodeUnavailable { cause, .. } if matches!(**cause, Error::CircuitOpen { .. })),
            "{skipped:?}"
        );
        assert!(other.admit().is_ok());
        let stats = b.stats();
        assert_eq!(stats.len(), 2);
        assert_eq!(
            (stats[0].state, stats[0].errors, stats[0].trips),
            (BreakerState::Open, 2, 1)
        );
        assert_eq!(stats[1].state, BreakerState::Closed);
    }

    #[test]
    fn a_node_marked_down_probes_after_the_cool_down_and_rejoins() {
        let (b, clock) = breakers();
        let node = b.node("a:1");
        node.mark_down(&Error::Backend {
            level: "memcached",
            op: "connect",
            reason: "refused".into(),
        });
        assert!(node.admit().is_err(), "fails fast from the first call");
        clock.advance(Duration::from_millis(100));
        let probe = node.admit().unwrap();
        assert!(probe);
        node.record(probe, Ok(())).unwrap();
        assert_eq!(node.breaker().state(), BreakerState::Closed);
    }

    /// A node nothing holds (gone from a Cluster's slot map) used to stay for the process's
    /// life: a cluster renaming its primaries grew the list and the stats without bound.
    #[test]
    fn nodes_nothing_holds_are_forgotten_unless_their_breaker_is_open() {
        let (b, _clock) = breakers();
        let held = b.node("held:1");
        b.node("open:1").breaker().trip();
        drop(b.node("closed:1"));
        b.forget_unheld();
        let names: Vec<String> = b.stats().into_iter().map(|s| s.node).collect();
        assert_eq!(names, ["held:1", "open:1"]);
        assert!(
            Arc::ptr_eq(&held, &b.node("held:1")),
            "a held node keeps its breaker"
        );

        for i in 0..1_000 {
            b.node(&format!("renamed{i}:1")).breaker().trip();
            b.forget_unheld();
        }
        let stats = b.stats();
        assert_eq!(
            stats.len(),
            1 + MAX_LEFT_NOT_CLOSED,
            "the held node and the last open ones"
        );
        assert_eq!(stats[0].node, "held:1");
        assert_eq!(stats.last().map(|s| s.node.as_str()), Some("renamed999:1"));
        assert!(stats[1..].iter().all(|s| s.state == BreakerState::Open));
    }

    #[test]
    fn nodes_named_at_once_are_the_ones_named_one_by_one() {
        let (b, _clock) = breakers();
        let known = b.node("b:1");
        let names = ["a:1", "b:1", "c:1", "a:1"].map(String::from);
        let nodes = b.nodes_named(&names);
        let got: Vec<&str> = nodes.iter().map(|n| n.name()).collect();
        assert_eq!(got, ["a:1", "b:1", "c:1", "a:1"]);
        assert!(Arc::ptr_eq(&nodes[1], &known), "a known node keeps its breaker");
        assert!(Arc::ptr_eq(&nodes[0], &nodes[3]), "one breaker per name");
        assert!(Arc::ptr_eq(&nodes[2], &b.node("c:1")), "a new node is listed");
        let listed: Vec<String> = b.stats().into_iter().map(|s| s.node).collect();
        assert_eq!(listed, ["b:1", "a:1", "c:1"]);
    }

    #[test]
    fn caller_errors_pass_unchanged_and_free_the_probe() {
        let (b, clock) = breakers();
        let node = b.node("a:1");
        node.breaker().trip();
        clock.advance(Duration::from_millis(100));
        let probe = node.admit().unwrap();
        let err = node
            .record::<()>(probe, Err(Error::ZeroTtl { key: "k".into() }))
            .unwrap_err();
        assert!(matches!(err, Error::ZeroTtl { .. }));
        assert!(node.admit().unwrap(), "the next call probes at once");
    }
}
