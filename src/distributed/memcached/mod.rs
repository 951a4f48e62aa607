//! [`MemcachedStore`]: one or more Memcached servers as a cache level, over memcached's binary
//! protocol on connections of its own.
//!
//! | module     | job                                                                        |
//! |------------|----------------------------------------------------------------------------|
//! | `options`  | [`MemcachedOptions`], host strings, item-size and expiry rules               |
//! | `routing`  | a key's server form ([`map_key`]) and its host (fixed hashes)               |
//! | `protocol` | the binary protocol's 24-byte header, nothing about commands                |
//! | `commands` | each command as data: its request bytes and how its reply is read           |
//! | `conn`     | connections per host and the blocking and async executors that run commands |
//! | `doubt`    | `set`s given up unanswered: their connections probed, their keys corrected    |
//! | `startup`  | the start-up check of every host: binary `version`, item limit, text-only servers |
//! | `spread`   | a blocking batch's hosts on threads of their own, when one has several commands or must connect |
//! | `replies`  | the commands' reply reading from a byte slice, for the fuzz target          |
//! | `store`    | [`MemcachedStore`]: the [`Storage`](crate::Storage) and [`DistributedStorage`](crate::DistributedStorage) impls |
//!
//! Dependencies point one way: `store` → `startup` → `conn` → `commands` → `protocol`,
//! `store` → `doubt` → `conn`, and
//! `store` → `routing` → `options`; `spread` depends on nothing of the level. (`conn` looks
//! names up with `distributed::resolve`.)

mod commands;
mod conn;
mod doubt;
mod options;
mod protocol;
pub(crate) mod replies;
mod routing;
mod spread;
mod startup;
mod store;

pub use self::options::{MemcachedOptions, DEFAULT_MAX_ITEM_SIZE, MAX_MEMCACHED_KEY};
pub use self::routing::map_key;
pub use self::store::MemcachedStore;
