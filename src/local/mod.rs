//! L1: levels that live in this process or on this machine.
//!
//! - [`mod@file`]: the default, a crash-safe persistent store.
//! - [`memory`]: in process, bounded by item count (quick_cache), TTL per entry.
//! - `redb` (feature `redb`): persistent, in one redb database file.
//! - [`hot`] and [`tiered`]: a tier of decoded values in front of any of them.
//! - `weigh`: what an entry kept in memory counts against a bound in bytes.

pub mod file;
pub mod hot;
pub mod memory;
#[cfg(feature = "redb")]
pub mod redb;
pub mod tiered;
mod weigh;
