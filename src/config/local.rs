//! `[local]`: the L1 level and the memory tier in front of it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::durability::Durability;

/// Where the file and redb levels keep their data when `local.path` is not set: `uno-cache-data`
/// in the working directory.
pub const DEFAULT_LOCAL_PATH: &str = "uno-cache-data";

/// Default `local.max_size` for `type = "memory"`, in items.
pub const DEFAULT_MEMORY_MAX_ITEMS: u64 = 10_000;

/// Default `local.max_size` for `type = "file"` and `type = "redb"`, in MiB.
pub const DEFAULT_DISK_MAX_MB: u64 = 1024;

/// Which implementation serves as L1 (`local.type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalKind {
    /// [`FileStore`](crate::FileStore): persistent, crash-safe (default).
    #[default]
    File,
    /// [`MemoryStore`](crate::MemoryStore): in process, bounded by item count.
    Memory,
    /// [`RedbStore`](crate::RedbStore): persistent, in a redb database.
    Redb,
}

/// When the file or redb level makes writes durable (`local.durability`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityMode {
    /// Only on flush and close. With redb a killed process loses everything since then (the
    /// file store's writes survive a kill in the page cache); see [`Durability`].
    None,
    /// Group commit every `local.durability_interval_ms` (default). With redb a killed process
    /// loses up to that interval of writes; see [`Durability`].
    #[default]
    Periodic,
    /// Before every write returns.
    EveryWrite,
}

/// The local level (`[local]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalCacheConfig {
    /// `"file"` (default), `"memory"` or `"redb"`. The TOML key is `type`.
    #[serde(rename = "type")]
    pub kind: LocalKind,
    /// Size bound: items for memory (default [`DEFAULT_MEMORY_MAX_ITEMS`]), MiB for file and redb
    /// (default [`DEFAULT_DISK_MAX_MB`]). `None` means the default for the type, except for an
    /// existing file store, which keeps the bound it recorded (set, the bound is recorded).
    pub max_size: Option<u64>,
    /// The longest an entry lives in L1, and the TTL of a `set` without one (default 300 s). In
    /// TOML, seconds.
    #[serde(with = "super::seconds")]
    pub ttl: Duration,
    /// Directory of the file or redb level (default [`DEFAULT_LOCAL_PATH`], relative to the
    /// working directory). The redb database is the file `cache.redb` inside it.
    pub path: Option<PathBuf>,
    /// `"none"`, `"periodic"` (default) or `"every_write"`.
    pub durability: DurabilityMode,
    /// The group-commit interval of `durability = "periodic"`, in milliseconds (default 1000).
    pub durability_interval_ms: u64,
    /// Permission bits of the files of the file store, the redb level and the replay queue, e.g.
    /// `file_mode = 0o640` in TOML; given, existing files are set to it at open. `None`
    /// (default): `0o600` for a new store, the recorded mode (the file store) or the file's own
    /// bits (redb) for an existing one. A directory they create gets the same bits plus search where read is
    /// allowed (`0o700` by default). See [`FileStoreOptions::file_mode`](crate::FileStoreOptions::file_mode).
    pub file_mode: Option<u32>,
    /// The memory tier in front of a file or redb L1: how many decoded values it keeps (default
    /// [`DEFAULT_MEMORY_TIER_ITEMS`]; 0 turns it off; ignored for `type = "memory"`, which is
    /// already in memory). A typed read it answers costs no read of the file, no decode and no
    /// copy; see [`HotTier`](crate::local::hot::HotTier).
    pub memory_items: u64,
    /// The bound in MiB of the values kept in memory (default [`DEFAULT_MEMORY_TIER_MB`]): of
    /// the memory tier, per value type, or of the whole L1 with `type = "memory"`. A value
    /// weighs its bytes (the memory tier's, the bytes it was decoded from), so values larger
    /// than this bound shared out over the bound in items are bounded by their bytes rather
    /// than their count. Without it, large values (images, documents) would each take one of
    /// the 10 000 places and their RAM with it.
    pub memory_max_mb: u64,
}

/// Default bound of the memory tier in front of a persistent L1: 10 000 decoded values. On by
/// default because a typed hit there is several times cheaper than a file-store hit (no mmap
/// read, CRC or decode), and 10 000 small values cost a few MB of RAM, which a desktop or edge
/// process can spare; set `memory_items = 0` where RAM is tighter than that.
pub const DEFAULT_MEMORY_TIER_ITEMS: u64 = 10_000;

/// Default `local.memory_max_mb`: 64 MiB (per value type in the memory tier), so the default
/// tier, or memory L1, holds no more than that many bytes of values, whatever their size (its
/// 10 000 values may be up to about 6.5 KiB each before this bound, rather than the count,
/// binds). The tier counts the bytes a value was decoded from: a decoded value made of many
/// small heap parts (maps, short strings) takes several times that in RAM.
pub const DEFAULT_MEMORY_TIER_MB: u64 = 64;

impl Default for LocalCacheConfig {
    fn default() -> Self {
        LocalCacheConfig {
            kind: LocalKind::default(),
            max_size: None,
            ttl: Duration::from_secs(300),
            path: None,
            durability: DurabilityMode::default(),
            durability_interval_ms: 1000,
            file_mode: None,
            memory_items: DEFAULT_MEMORY_TIER_ITEMS,
            memory_max_mb: DEFAULT_MEMORY_TIER_MB,
        }
    }
}

impl LocalCacheConfig {
    /// `max_size`, or the default for the type.
    #[must_use]
    pub fn effective_max_size(&self) -> u64 {
        self.max_size.unwrap_or(match self.kind {
            LocalKind::Memory => DEFAULT_MEMORY_MAX_ITEMS,
            LocalKind::File | LocalKind::Redb => DEFAULT_DISK_MAX_MB,
        })
    }

    /// `path`, or [`DEFAULT_LOCAL_PATH`].
    #[must_use]
    pub fn effective_path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(DEFAULT_LOCAL_PATH))
    }

    /// The durability policy of the file or redb level.
    #[must_use]
    pub fn effective_durability(&self) -> Durability {
        match self.durability {
            DurabilityMode::None => Durability::None,
            DurabilityMode::Periodic => {
                Durability::Periodic(Duration::from_millis(self.durability_interval_ms))
            }
            DurabilityMode::EveryWrite => Durability::EveryWrite,
        }
    }
}
