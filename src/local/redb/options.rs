//! [`RedbOptions`], the settings of [`RedbStore::open`](super::RedbStore::open).

use std::sync::Arc;
use std::time::Duration;

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
    /// `file_mode` was given: an existing file is set to it too.
    pub(super) file_mode_given: bool,
    /// How often the background thread removes expired entries (`None`: never).
    pub(super) purge_every: Option<Duration>,
}

/// The default of [`RedbOptions::purge_every`]: a full scan of the entries a minute.
pub(super) const DEFAULT_PURGE_EVERY: Duration = Duration::from_secs(60);

impl Default for RedbOptions {
    fn default() -> Self {
        RedbOptions {
            max_size_mb: 1024,
            durability: Durability::default(),
            clock: Arc::new(SystemClock),
            file_mode: perms::DEFAULT_FILE_MODE,
            file_mode_given: false,
            purge_every: Some(DEFAULT_PURGE_EVERY),
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

    /// How often a background thread (`uno-cache-redb`) removes the expired entries (default
    /// every minute; `Duration::ZERO`: never, only
    /// [`RedbStore::purge_expired`](super::RedbStore::purge_expired) does). Reads skip expired
    /// entries either way; removed, they stop holding their share of the size bound, so the
    /// oldest-first eviction drops live entries only when nothing expired is left. Each turn
    /// reads every entry (in a read transaction, which writers do not wait for).
    pub fn purge_every(mut self, every: Duration) -> Self {
        self.purge_every = (!every.is_zero()).then_some(every);
        self
    }

    /// The clock used for TTLs (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Permission bits of the database file (default `0o600`, owner only, for a file the store
    /// creates; an existing file keeps its bits unless this is called): given, an existing
    /// file with other bits is set to them at open, as the file store does with its files. A
    /// directory the store creates gets the same bits plus search where read is allowed. The
    /// owner must keep read and write.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self.file_mode_given = true;
        self
    }
}
