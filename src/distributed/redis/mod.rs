//! Redis standalone or Redis Cluster as a cache level ([`RedisStore`]), and the Redis
//! connection layer that the backplane (`crate::invalidation`) shares with it.
//!
//! | module       | job                                                                        |
//! |--------------|----------------------------------------------------------------------------|
//! | `errors`     | the level's errors (failed call, failed connect), shared with the backplane |
//! | `target`     | host strings and URLs checked and normalised                               |
//! | `options`    | [`RedisOptions`] and their checks                                          |
//! | `connection` | clients, connecting, the connection of either kind, replaced when silent   |
//! | `commands`   | every key call as data: what to send, how to read the reply                |
//! | `keyed`      | a one-key call's error naming its key, and its hash slot on `CLUSTERDOWN`  |
//! | `pool`       | the blocking executor: pooled blocking connections on the caller's thread  |
//! | `primaries`  | the primaries a walk goes over; slots unknown or moved during it           |
//! | `scan`       | `size` and `clear`: `SCAN` walks over every primary                        |
//! | `slots`      | a key's hash slot and the slot owners, for the per-primary breakers        |
//! | `batches`    | a batch split per slot or per primary, and its parts' answers put together |
//! | `doubt`      | `SET`s that timed out and may land late: probed, their keys corrected      |
//! | `replies`    | the reply reading from RESP bytes, for the fuzz target                      |
//! | `store`      | the [`Storage`](crate::Storage) impl; `store/routing`: a Cluster's calls by primary, for its breakers |
//! | `tls`        | `rediss://` roots, client certificate, the rustls crypto provider (`tls`)  |
//!
//! Dependencies run one way (no cycles): `errors` and `target` at the bottom; `commands` uses
//! `errors`; `connection` uses `errors`, `target` and `commands`; `options` uses `target` and
//! `connection`; `pool` uses `commands` and `errors`; `slots` uses `errors`; `keyed` uses
//! `errors` and `slots`; `primaries` uses `errors` and `slots` (the reading of `CLUSTER
//! SLOTS`); `scan` uses `connection`, `errors` and `primaries`; `replies` uses `commands`,
//! `connection` and `slots`; `store` uses them all.
//!
//! # What the `redis` crate does, and what we do
//! - Kept from the crate: connection management (`ConnectionManager` for a standalone server,
//!   the async `ClusterConnection` for a cluster), cluster routing (slot map, `MOVED`/`ASK`,
//!   topology refresh) and the splitting of a multi-key `MGET`/`UNLINK` across slots. Our own
//!   router (CRC16, slot map, per-node pipelines, `MOVED` fallback), about 250 lines, is gone:
//!   the crate sends the per-slot commands to all nodes at once, as ours did, and each node
//!   still sees exactly one `MGET` per slot it owns (`tests/redis_cluster_level.rs`). No cluster
//!   bench exists; the two were not timed against each other. A batch of `SET`s goes out as
//!   concurrent single commands (ours sent one pipeline per node), because the crate refuses a
//!   pipeline whose commands span slots.
//! - Ours: the blocking pool (`pool`), kept because it was measured faster than driving the
//!   async connection from a blocking caller (figures in `pool`), and the walk of every primary for
//!   `size`/`clear`, which the crate does not offer (a `SCAN` cursor belongs to one node).
//! - Ours, for speed: the per-call deadline. The standalone `ConnectionManager` runs without the
//!   crate's response timeout (`set_response_timeout(None)`): every call already has our
//!   deadline (`IoRuntime::bind`, kept by the I/O thread's sweeper in `distributed::deadline`),
//!   which covers the wait for a reconnect too, and fires first; the crate's timeout is a tokio
//!   timer entry per call, and from a caller that may have no timer it has to live in the I/O
//!   runtime's wheel, whose lock the I/O thread takes on every wake-up. Measured with
//!   `UNO_BENCH_ONLY=redis_get_hit_async_x64 cargo bench --bench redis --features redis`
//!   (64 tasks, ratio to the crate's own `MultiplexedConnection`, medians of alternating runs on
//!   a loaded 2-vCPU machine): 0.73 with both timers in the I/O runtime, 0.90 with ours alone,
//!   1.23 with ours kept by the sweeper. The cluster client keeps its response timeout (a little
//!   past our deadline), which also bounds its internal retries; no cluster bench measures it.
//! - Kept although it costs a little: `ConnectionManager` rather than a bare
//!   `MultiplexedConnection` (a shared-future clone per call; within the noise of the runs
//!   above), for its reconnects.
//! - Ours: a connection on which a call ran out of our deadline is replaced by a new one
//!   (`connection::Link`; one replacement connecting at a time), a standalone
//!   `ConnectionManager` and a `ClusterConnection` alike. The crate reconnects only on an error
//!   that says the connection is gone, and a flow that went silent without a reset (an idle
//!   timeout in a NAT or load balancer, a host powered off, a failover to another address)
//!   gives none for about 15 minutes; the cluster client even retries a timed-out call on the
//!   same node connection (`tests/redis_connection_replacement.rs`,
//!   `async_calls_move_to_a_new_connection_when_theirs_goes_silent`;
//!   `tests/redis_cluster_level.rs`,
//!   `async_calls_move_to_a_new_cluster_connection_when_a_node_goes_silent`). It costs each call
//!   one uncontended read lock. A cluster's replacement is the crate's whole connect (every node,
//!   the slot map): the crate has no way to drop one node's connection from outside. `size` and
//!   `clear` that run out of `admin_timeout` replace it too. An async call whose caller drops it
//!   before our deadline (a shorter timeout of its own) never times out at ours, so a dropped,
//!   unanswered call has the connection asked a `PING` (every primary's, on a cluster) that must
//!   be answered by the call's deadline, or the connection is replaced (one check at a time;
//!   `tests/redis_connection_replacement.rs`,
//!   `async_calls_whose_callers_give_up_first_still_move_to_a_new_connection`).
//!   That watch costs each async call one clock read; not benchmarked.

mod batches;
mod commands;
pub(crate) mod connection;
mod doubt;
pub(crate) mod errors;
mod keyed;
mod options;
mod pool;
mod primaries;
pub(crate) mod replies;
mod scan;
mod slots;
mod store;
mod target;
#[cfg(feature = "tls")]
mod tls;

pub(crate) use self::commands::{unlinked, MAX_PX_MS, TAG_NAMESPACE};
pub use self::options::RedisOptions;
pub(crate) use self::primaries::ClusterWalk;
pub(crate) use self::scan::prefix_pattern;
pub use self::store::RedisStore;
