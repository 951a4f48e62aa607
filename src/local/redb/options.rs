//! [`RedbOptions`], the settings of [`RedbStore::open`](super::RedbStore::open).

use std::sync::Arc;

use crate::clock::{Clock, SystemClock};
use crate::durability::Durability;
use crate::perms;

/// Options for [`RedbStore::open`](super::RedbStore::open).
#[derive(Debug, Clone)]
#[must_use]
pub struct RedbOptions {
    pub(super) max_size_mb: u64,
    pub(super) durability: Durability,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) file_mode: u32,
}

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            max_size_mb: 1024,
            durability: Durability::default(),
            clock: Arc::new(SystemClock),
            file_mode: perms::DEFAULT_FILE_MODE,
        }
    }
}

impl RedbOptions {
    /// Bound on the bytes of the entries, in MiB (default 1024).
    pub fn max_size_mb(mut self, mb: u64) -> Self {
        self.max_size_mb = mb;
        self
    }

    /// When commits are fsynced (default `Periodic(1 s)`; see the module docs).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// The clock used for TTLs (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Permission bits of a database file the store creates (default `0o600`, owner only); a
    /// directory it creates gets the same bits plus search where read is allowed. An existing
    /// file keeps its bits. The owner must keep read and write.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }
}
