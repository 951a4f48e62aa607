//! Redis standalone or Redis Cluster as a cache level ([`RedisStore`]), and the Redis
//! connection layer that the backplane (`crate::invalidation`) shares with it.
//!
//! | module       | job                                                                        |
//! |--------------|----------------------------------------------------------------------------|
//! | `errors`     | the level's errors (failed call, failed connect), shared with the backplane |
//! | `target`     | host strings and URLs checked and normalised                               |
//! | `options`    | [`RedisOptions`] and their checks                                          |
//! | `connection` | clients, connecting, connect errors, the connection of either kind         |
//! | `commands`   | every key call as data: what to send, how to read the reply                |
//! | `pool`       | the blocking executor: pooled blocking connections on the caller's thread  |
//! | `scan`       | `size` and `clear`: `SCAN` walks over every primary                        |
//! | `slots`      | a key's hash slot and the slot owners, for the per-primary breakers        |
//! | `store`      | the [`Storage`](crate::Storage) impl                                        |
//! | `tls`        | `rediss://` roots, client certificate, the rustls crypto provider (`tls`)  |
//!
//! Dependencies run one way (no cycles): `errors` and `target` at the bottom; `commands` uses
//! `errors`; `connection` uses `errors`, `target` and `commands`; `options` uses `target` and
//! `connection`; `pool` uses `commands` and `errors`; `scan` uses `connection` and `errors`;
//! `store` uses them all.
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

mod commands;
pub(crate) mod connection;
pub(crate) mod errors;
mod options;
mod pool;
mod scan;
mod slots;
mod store;
mod target;
#[cfg(feature = "tls")]
mod tls;

pub use self::options::RedisOptions;
pub use self::store::RedisStore;
