//! How a [`FileStore`](super::FileStore) is opened: size bound, segment size, durability.

use std::sync::Arc;
use std::time::Duration;

use super::format::{MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use crate::clock::{Clock, SystemClock};
use crate::disk::Disk;
use crate::error::{Error, Result};

/// When written data reaches stable storage.
///
/// Whatever the policy, a write that returned is in the operating system's page cache, so it
/// survives the process being killed (even by SIGKILL). The policy decides what survives a power
/// loss or kernel crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Never fsync the active segment on its own; only [`FileStore::flush`](super::FileStore::flush)
    /// and close do (full, sealed segments are fsynced by the background compactor's tick). A
    /// power loss can lose everything since the last of those.
    None,
    /// Group commit: a background thread fsyncs at this interval when there were writes.
    /// A power loss loses at most the last interval of writes (plus the fsync's own time).
    Periodic(Duration),
    /// fsync before every write returns. Nothing acknowledged is lost; slowest.
    EveryWrite,
}

impl Default for Durability {
    /// `Periodic(1 s)`.
    fn default() -> Self {
        Durability::Periodic(Duration::from_secs(1))
    }
}

/// Options for [`FileStore::open`](super::FileStore::open).
///
/// ```
/// use std::time::Duration;
/// use uno_cache::{Durability, FileStoreOptions};
/// let options = FileStoreOptions::default()
///     .max_size_mb(256)
///     .durability(Durability::Periodic(Duration::from_millis(200)));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct FileStoreOptions {
    pub(crate) max_size_mb: u64,
    pub(crate) segment_size: Option<u64>,
    pub(crate) durability: Durability,
    pub(crate) compaction_interval: Duration,
    pub(crate) min_live_ratio: f64,
    pub(crate) background: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) disk: Disk,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            max_size_mb: 1024,
            segment_size: None,
            durability: Durability::default(),
            compaction_interval: Duration::from_secs(30),
            min_live_ratio: 0.5,
            background: true,
            clock: Arc::new(SystemClock),
            disk: Disk::default(),
        }
    }
}

impl FileStoreOptions {
    /// Bound on bytes on disk, in MiB (default 1024). When a write would pass it, the oldest
    /// segment is evicted; its recently-read entries get a second chance.
    pub fn max_size_mb(mut self, mb: u64) -> Self {
        self.max_size_mb = mb;
        self
    }

    /// Segment file size in bytes for a new directory (default: `max_size / 8`, between 64 KiB and
    /// 64 MiB). An existing directory keeps the size it was created with. A value must fit in one
    /// segment.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = Some(bytes);
        self
    }

    /// When writes are fsynced (default `Periodic(1 s)`).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// How often the background compactor looks for expired entries and sparse segments
    /// (default 30 s).
    pub fn compaction_interval(mut self, interval: Duration) -> Self {
        self.compaction_interval = interval;
        self
    }

    /// A sealed segment whose live bytes fall below this fraction of its data is rewritten
    /// (default 0.5).
    pub fn min_live_ratio(mut self, ratio: f64) -> Self {
        self.min_live_ratio = ratio;
        self
    }

    /// Whether to run the background flusher and compactor threads (default true). Without them,
    /// call [`FileStore::compact`](super::FileStore::compact) and
    /// [`FileStore::flush`](super::FileStore::flush) yourself; correctness does not depend on them.
    pub fn background_threads(mut self, enabled: bool) -> Self {
        self.background = enabled;
        self
    }

    /// The clock used for TTLs (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Routes the store's writes through a simulated disk (power-loss and fault tests).
    #[cfg(test)]
    pub(crate) fn disk(mut self, disk: Disk) -> Self {
        self.disk = disk;
        self
    }

    /// Checks the options and works out the size bound and the segment size for a new directory.
    pub(crate) fn resolve(&self) -> Result<(u64, u64)> {
        if self.max_size_mb == 0 {
            return Err(Error::Config {
                field: "max_size_mb".into(),
                reason: "must be at least 1 (MiB)".into(),
            });
        }
        let max_bytes = self.max_size_mb.saturating_mul(1024 * 1024);
        let segment_size = match self.segment_size {
            Some(size) if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&size) => {
                return Err(Error::Config {
                    field: "segment_size".into(),
                    reason: format!("{size} bytes is outside {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"),
                })
            }
            Some(size) if size.saturating_mul(4) > max_bytes => {
                return Err(Error::Config {
                    field: "segment_size".into(),
                    reason: format!(
                        "{size} bytes is more than a quarter of max_size ({max_bytes} bytes); the size bound needs at least four segments"
                    ),
                })
            }
            Some(size) => size,
            None => (max_bytes / 8).clamp(MIN_SEGMENT_SIZE, 64 * 1024 * 1024),
        };
        if let Durability::Periodic(interval) = self.durability {
            if interval.is_zero() {
                return Err(Error::Config {
                    field: "durability".into(),
                    reason: "a periodic fsync interval must be above zero; use EveryWrite for fsync on every write".into(),
                });
            }
        }
        if !(0.0..=1.0).contains(&self.min_live_ratio) {
            return Err(Error::Config {
                field: "min_live_ratio".into(),
                reason: format!("{} is outside 0.0..=1.0", self.min_live_ratio),
            });
        }
        if self.compaction_interval.is_zero() {
            return Err(Error::Config {
                field: "compaction_interval".into(),
                reason: "must be above zero".into(),
            });
        }
        Ok((max_bytes, segment_size))
    }
}
