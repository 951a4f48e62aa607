//! How a [`ReplayQueue`](super::ReplayQueue) is opened: its bounds and its clock.

use std::sync::Arc;

use super::format::record_len;
use crate::clock::{Clock, SystemClock};
use crate::disk::Disk;
use crate::error::{Error, Result};
use crate::keys::MAX_KEY_LEN;

/// Default bound on the bytes of pending ops: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on the number of pending ops (one per key): 1,048,576.
pub const DEFAULT_MAX_ENTRIES: usize = 1 << 20;

/// Options for [`ReplayQueue::open`](super::ReplayQueue::open).
///
/// ```
/// use uno_cache::replay::ReplayOptions;
/// let options = ReplayOptions::default().max_bytes(16 << 20).max_entries(100_000);
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ReplayOptions {
    pub(crate) max_bytes: u64,
    pub(crate) max_entries: usize,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) file_mode: u32,
    pub(crate) disk: Disk,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            max_entries: DEFAULT_MAX_ENTRIES,
            clock: Arc::new(SystemClock),
            file_mode: crate::perms::DEFAULT_FILE_MODE,
            disk: Disk::default(),
        }
    }
}

impl ReplayOptions {
    /// Bound on the encoded bytes of the pending ops (record headers, keys and values; default
    /// 64 MiB). The queue holds pending values in memory too, so this also bounds its memory; the
    /// log file stays under about twice this (it is compacted when half of it is dead). Accepted:
    /// 4124 (one delete of the longest key) ..= `u32::MAX`.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Bound on the number of pending ops, one per key after coalescing (default 1,048,576).
    /// At least 1.
    pub fn max_entries(mut self, entries: usize) -> Self {
        self.max_entries = entries;
        self
    }

    /// Routes the queue's writes through a simulated disk (power-loss and fault tests).
    #[cfg(test)]
    pub(crate) fn disk(mut self, disk: Disk) -> Self {
        self.disk = disk;
        self
    }

    /// The clock that decides whether a queued set has expired (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Permission bits of the files the queue creates (default `0o600`, owner only); a directory
    /// it creates gets the same bits plus search where read is allowed (`0o700`). The manager
    /// passes the file store's mode when the queue shares its directory. Existing files keep
    /// their bits until the log is rewritten. The owner must keep read and write.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }

    pub(crate) fn check(&self) -> Result<()> {
        crate::perms::check_file_mode(self.file_mode).map_err(|reason| Error::Config {
            field: "replay.file_mode".into(),
            reason,
        })?;
        let min = record_len(MAX_KEY_LEN, 0) as u64;
        if !(min..=u64::from(u32::MAX)).contains(&self.max_bytes) {
            return Err(Error::Config {
                field: "replay.max_bytes".into(),
                reason: format!(
                    "{} is outside {min}..={} (the smallest bound holds one delete of the longest key)",
                    self.max_bytes,
                    u32::MAX
                ),
            });
        }
        if self.max_entries == 0 {
            return Err(Error::Config {
                field: "replay.max_entries".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}
