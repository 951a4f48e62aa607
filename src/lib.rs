//! # uno-cache
//!
//! A persistent-first, embeddable, multi-level cache.
//!
//! L1 is local and comes first: by default a crash-safe file store ([`FileStore`]: append-only
//! segment files read through mmap, a CRC on every record, a size bound, TTLs, hint files for fast
//! start) whose entries survive restarts and crashes.
//!
//! ```
//! use std::time::Duration;
//! use uno_cache::{FileStore, FileStoreOptions};
//!
//! let dir = tempfile::tempdir()?;
//! let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(64))?;
//! store.set("user:42", b"{\"name\":\"Ada\"}", Some(Duration::from_secs(300)))?;
//! assert!(store.get("user:42")?.is_some());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Layout
//!
//! | path                 | what                                                     |
//! |----------------------|----------------------------------------------------------|
//! | `storage`            | [`Storage`], the one trait every level implements         |
//! | `local/file/`        | [`FileStore`], the persistent L1 (format, recovery, …)    |
//! | `distributed/`       | L2 levels: [`RedisStore`], [`MemcachedStore`], breaker     |
//! | `replay/`            | [`replay::ReplayQueue`], durable ops to replay to L2      |
//! | `invalidation/`      | [`Backplane`]: cross-process L1 invalidation on pub/sub   |
//! | `clock`              | wall-clock time, injectable for tests                    |
//! | `error`              | [`Error`], one enum with context for every failure       |
//!
//! The byte layout of every file is specified in `storage-format.md`.

mod clock;
pub mod distributed;
mod error;
pub mod invalidation;
pub mod local;
pub mod replay;
mod storage;

pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use crate::distributed::{
    BreakerState, BreakerStats, CircuitBreaker, Guarded, MemcachedOptions, MemcachedStore, RedisOptions,
    RedisStore,
};
pub use crate::error::{Error, KeyProblem, Result};
pub use crate::invalidation::{Backplane, BackplaneOptions, Invalidation, InvalidationHandler};
pub use crate::local::file::{
    CompactionReport, Durability, FileStore, FileStoreOptions, FileStoreStats, RecoveryReport, VerifyReport,
    FORMAT_VERSION, MAX_KEY_LEN,
};
pub use crate::storage::{BoxFuture, Entry, Freshness, Storage, StorageSize};

#[doc(hidden)]
/// Decoders exposed for the fuzz targets and format tests; not a stable API.
pub mod __fuzz {
    pub use crate::local::file::format::{
        decode_hint, decode_meta, decode_record, decode_segment_header, scan_segment, Decoded, SegmentHeader,
    };
}
