//! How a [`FileStore`](super::FileStore) is opened: size bound, segment size, durability, file
//! permissions; and which of them the directory records.

use std::sync::Arc;
use std::time::Duration;

use super::dir::Wanted;
use super::format::{Meta, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
use super::map_reads::MapReads;
use super::FileStore;
use crate::clock::{Clock, SystemClock};
use crate::disk::Disk;
pub use crate::durability::Durability;
use crate::error::{Error, Result};
use crate::perms;

/// The largest size bound taken, in MiB: 1 PiB, past any device (and past it, the bound in
/// bytes would saturate).
pub(crate) const MAX_SIZE_MB: u64 = 1 << 30;

/// Size bound of a new store opened without [`FileStoreOptions::max_size_mb`]: 1 GiB.
pub const DEFAULT_MAX_SIZE_MB: u64 = 1024;
/// The most segments a new store holds by default: above 1 TiB, its default segments grow past
/// 64 MiB (to at most 1 GiB) rather than number more. Each segment is read through a memory map
/// of its own, and Linux allows 65,530 maps per process by default (`vm.max_map_count`; the
/// open refuses a bound whose segments would take more than half of them).
const DEFAULT_SEGMENTS_AT_MOST: u64 = 16_384;

/// Options for [`FileStore::open`](super::FileStore::open).
///
/// The store records in its directory the options that shape its files: the segment size (fixed
/// when the directory is created), the size bound, and the permission bits of its files. An
/// option left unset uses what the directory recorded, so a tool that opens a store with default
/// options (the `uno-cache` CLI, say) keeps the bound its application chose instead of evicting
/// down to the default. An option that is set is obeyed and recorded.
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
    pub(crate) max_size_mb: Option<u64>,
    pub(crate) file_mode: Option<u32>,
    pub(crate) segment_size: Option<u64>,
    pub(crate) durability: Durability,
    pub(crate) compaction_interval: Duration,
    pub(crate) min_live_ratio: f64,
    pub(crate) background: bool,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) keep_expired: Duration,
    pub(crate) disk: Disk,
    pub(crate) hash_seed: Option<u64>,
    pub(crate) map_reads: MapReads,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions {
            max_size_mb: None,
            file_mode: None,
            segment_size: None,
            durability: Durability::default(),
            compaction_interval: Duration::from_secs(30),
            min_live_ratio: 0.5,
            background: true,
            clock: Arc::new(SystemClock),
            keep_expired: Duration::ZERO,
            disk: Disk::default(),
            hash_seed: None,
            map_reads: MapReads::Auto,
        }
    }
}

impl FileStoreOptions {
    /// Bound on bytes on disk, in MiB. When a write would pass it, the oldest segment is
    /// evicted; its recently-read entries get a second chance.
    ///
    /// Set, it is obeyed and recorded in the directory (a changed bound replaces the recorded
    /// one; a bound below what the directory holds evicts at the open). It must allow at least
    /// four segments: for an existing directory, four of the segments it was created with; and
    /// at most 1 PiB (1,073,741,824 MiB) ([`Error::Config`] naming `max_size_mb` otherwise, and
    /// nothing is recorded). Unset, the
    /// store uses the bound its directory recorded; a new directory gets
    /// [`DEFAULT_MAX_SIZE_MB`], and a directory written before bounds were recorded gets the
    /// default or the bytes it already holds, whichever is larger (opening never evicts data
    /// for want of a setting).
    pub fn max_size_mb(mut self, mb: u64) -> Self {
        self.max_size_mb = Some(mb);
        self
    }

    /// Permission bits of the files the store creates (default `0o600`, owner only), recorded
    /// in the directory; a directory the store creates gets the same bits plus search where read
    /// is allowed (`0o700` by default). Unset, an existing store keeps the mode it recorded.
    /// Set to a mode other than the recorded one, it is applied to the directory and every file
    /// in it. The process umask can still remove bits from new files. The owner must keep read
    /// and write.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = Some(mode);
        self
    }

    /// Segment file size in bytes for a new directory (default: `max_size / 8`, between 64 KiB and
    /// 64 MiB; for a bound above 1 TiB, a 16,384th of it, at most 1 GiB). An existing directory
    /// keeps the size it was created with. A value must fit in one segment. Each segment is read
    /// through a memory map of its own: the open refuses a bound whose segments would take more
    /// than half of the maps a process may hold (`vm.max_map_count`, 65,530 by default on
    /// Linux), naming the segment size that would do.
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

    /// How long an expired entry is kept after its expiry (default zero: dropped at once), for
    /// fail-safe reads: [`FileStore::get`](super::FileStore::get) never returns it, but
    /// [`FileStore::get_stale`](super::FileStore::get_stale) does, across restarts too, until
    /// the window ends. Compaction and recovery keep such entries; eviction does not (a size
    /// bound beats a stale copy). Rounded to milliseconds.
    pub fn keep_expired(mut self, window: Duration) -> Self {
        self.keep_expired = window;
        self
    }

    /// Fixes the seed of the key hash, so that the same operations make the same eviction and
    /// admission choices in every run of one build: for simulations, hit-ratio tests and
    /// reproducing a report. (The hash, aHash, takes another algorithm where AES instructions
    /// are enabled at compile time, so another build target may choose otherwise.) Unset (the default), each open draws a random seed, which keeps hash flooding
    /// out: whoever knows the seed and chooses the keys can make them collide in the index and
    /// in the admission sketch. The hash is never written to disk, so the seed may differ
    /// between opens of one directory.
    pub fn hash_seed(mut self, seed: u64) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    /// How a get that misses the page cache reads the device (default [`MapReads::Auto`]: only
    /// its own page when the size bound is more than half the memory the process may use, its
    /// memory cgroup's limit included; the device's read-ahead window around it otherwise). See
    /// [`MapReads`]; what the open chose is [`FileStoreStats::random_map_reads`](super::FileStoreStats::random_map_reads).
    pub fn map_reads(mut self, reads: MapReads) -> Self {
        self.map_reads = reads;
        self
    }

    /// Routes the store's writes through a simulated disk (power-loss and fault tests).
    #[cfg(test)]
    pub(crate) fn disk(mut self, disk: Disk) -> Self {
        self.disk = disk;
        self
    }

    /// Checks the options and works out what to ask of the directory: the metadata of a new one,
    /// and the explicit settings to apply to an existing one.
    pub(crate) fn wanted(&self) -> Result<Wanted> {
        if self.max_size_mb == Some(0) {
            return Err(Error::Config {
                field: "max_size_mb".into(),
                reason: "must be at least 1 (MiB)".into(),
            });
        }
        if self.max_size_mb.is_some_and(|mb| mb > MAX_SIZE_MB) {
            // Saturated to 2^64 bytes, such a bound was recorded, and shown as 17592186044416 MiB.
            return Err(Error::Config {
                field: "max_size_mb".into(),
                reason: format!("must be at most {MAX_SIZE_MB} (MiB, 1 PiB)"),
            });
        }
        if let Some(mode) = self.file_mode {
            perms::check_file_mode(mode).map_err(|reason| Error::Config {
                field: "file_mode".into(),
                reason,
            })?;
        }
        let explicit = self.max_size_mb.map(|mb| mb.saturating_mul(1024 * 1024));
        let max_bytes = explicit.unwrap_or(DEFAULT_MAX_SIZE_MB * 1024 * 1024);
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
            None => (max_bytes / 8)
                .clamp(MIN_SEGMENT_SIZE, 64 * 1024 * 1024)
                .max(
                    max_bytes
                        .div_ceil(DEFAULT_SEGMENTS_AT_MOST)
                        .next_multiple_of(MIN_SEGMENT_SIZE),
                )
                .min(MAX_SEGMENT_SIZE),
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
        Ok(Wanted {
            new_meta: Meta {
                segment_size,
                min_seq: 0,
                max_size: max_bytes,
            },
            max_size: explicit,
            file_mode: self.file_mode,
            segment_size_asked: self.segment_size.is_some(),
        })
    }
}

/// The size bound a store opens with: the one its metadata records, or for a directory that
/// never recorded one, the default or the bytes already on disk, whichever is larger.
pub(crate) fn bound_in_use(meta: &Meta, disk_bytes: u64) -> u64 {
    if meta.max_size != 0 {
        meta.max_size
    } else {
        disk_bytes.max(DEFAULT_MAX_SIZE_MB * 1024 * 1024)
    }
}

impl FileStore {
    /// The size bound in bytes this store holds to (see [`FileStoreOptions::max_size_mb`]).
    #[must_use]
    pub fn max_size(&self) -> u64 {
        self.inner.max_bytes
    }

    /// The permission bits of the files this store creates (see
    /// [`FileStoreOptions::file_mode`]).
    #[must_use]
    pub fn file_mode(&self) -> u32 {
        self.inner.dir.file_mode
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, FileStore, FileStoreOptions};

    fn options() -> FileStoreOptions {
        FileStoreOptions::default().background_threads(false)
    }

    #[test]
    fn a_bound_below_four_of_the_directorys_segments_is_refused_and_not_recorded() {
        // The segment size of an existing directory is the one it recorded, not the option's:
        // a bound set later must be checked against that size, or the active segment alone could
        // be many times the bound.
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), options().segment_size(1024 * 1024).max_size_mb(64)).unwrap();
        store.set("k", b"v", None).unwrap();
        store.close().unwrap();
        for asked in [
            options().max_size_mb(3),
            options().max_size_mb(3).segment_size(64 * 1024),
        ] {
            match FileStore::open(dir.path(), asked) {
                Err(Error::Config { field, reason }) => {
                    assert_eq!(field, "max_size_mb");
                    assert!(reason.contains("1048576-byte segments"), "{reason}");
                    assert!(reason.contains("at least 4"), "{reason}");
                }
                Err(e) => panic!("expected a Config error naming max_size_mb, got {e}"),
                Ok(store) => panic!("opened with a bound of {} bytes", store.max_size()),
            }
        }
        // Nothing was recorded: the directory keeps its bound, and four segments are enough.
        let store = FileStore::open(dir.path(), options()).unwrap();
        assert_eq!(store.max_size(), 64 * 1024 * 1024);
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
        store.close().unwrap();
        let store = FileStore::open(dir.path(), options().max_size_mb(4)).unwrap();
        assert_eq!(store.max_size(), 4 * 1024 * 1024);
        store.close().unwrap();
    }

    fn max_map_count() -> u64 {
        let text = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .expect("/proc/sys/vm/max_map_count (Linux, with procfs mounted) is needed by this test");
        text.trim().parse().unwrap()
    }

    /// Each segment is read through a memory map of its own, and past `vm.max_map_count` a new
    /// segment's map fails: a bound whose segments would take more than half of the maps is
    /// refused at the first open, naming the segment size that would do, which then opens; a
    /// bound set later on an existing directory is checked against its recorded segment size.
    /// Nothing is left behind by a refused first open, nor recorded by a refused later one.
    #[test]
    fn a_bound_whose_segments_would_outnumber_half_the_maps_a_process_may_hold_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let small = 64 * 1024;
        let allowed = max_map_count() / 2;
        let mb = (allowed * small).div_ceil(1024 * 1024) + 1;
        let least = match FileStore::open(&path, options().segment_size(small).max_size_mb(mb)) {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, "segment_size");
                assert!(reason.contains("vm.max_map_count"), "{reason}");
                let least = reason
                    .split("a segment_size of at least ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or_else(|| panic!("no segment size named: {reason}"));
                assert!(least > small, "{reason}");
                least
            }
            Err(e) => panic!("expected a Config error naming segment_size, got {e}"),
            Ok(store) => panic!("opened {} bytes in {small}-byte segments", store.max_size()),
        };
        assert!(!path.exists(), "a refused first open left the directory behind");
        let store = FileStore::open(&path, options().segment_size(least).max_size_mb(mb)).unwrap();
        store.set("k", b"v", None).unwrap();
        store.close().unwrap();

        // An existing directory of small segments asked for a bound past what they allow.
        let other = dir.path().join("small");
        let store = FileStore::open(&other, options().segment_size(small).max_size_mb(64)).unwrap();
        store.close().unwrap();
        match FileStore::open(&other, options().max_size_mb(mb)) {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, "max_size_mb");
                assert!(reason.contains("set max_size_mb to at most"), "{reason}");
            }
            Err(e) => panic!("expected a Config error naming max_size_mb, got {e}"),
            Ok(store) => panic!("opened {} bytes in {small}-byte segments", store.max_size()),
        }
        let store = FileStore::open(&other, options()).unwrap();
        assert_eq!(
            store.max_size(),
            64 * 1024 * 1024,
            "the refused bound was recorded"
        );
        store.close().unwrap();
    }

    /// The arithmetic of the check, on any system: half the maps, two segments over the bound.
    #[test]
    fn the_maps_check_counts_the_bounds_segments_and_two_more_against_half_the_limit() {
        use crate::local::file::dir::check_segments_fit_maps as check;
        let seg = 64 * 1024;
        assert!(check(98 * seg, seg, "max_size_mb", Some(200)).is_ok());
        let err = check(99 * seg, seg, "max_size_mb", Some(200)).unwrap_err();
        assert!(err.to_string().contains("is 101 segments"), "{err}");
        assert!(
            check(u64::MAX, seg, "max_size_mb", None).is_ok(),
            "no limit known: no check"
        );
    }

    /// Above 1 TiB, a default segment grows so that the store holds at most 16,384 of them.
    #[test]
    fn default_segments_grow_past_64_mib_for_bounds_above_one_tib() {
        let segment = |mb: u64| options().max_size_mb(mb).wanted().unwrap().new_meta.segment_size;
        assert_eq!(segment(64), 8 * 1024 * 1024);
        assert_eq!(segment(1 << 20), 64 * 1024 * 1024);
        assert_eq!(segment(4 << 20), 256 * 1024 * 1024);
        assert_eq!(
            segment(super::MAX_SIZE_MB),
            super::super::format::MAX_SEGMENT_SIZE
        );
    }

    #[test]
    fn a_bound_past_one_pib_is_refused_rather_than_saturated_and_recorded() {
        let dir = tempfile::tempdir().unwrap();
        for mb in [super::MAX_SIZE_MB + 1, 99_999_999_999_999, u64::MAX] {
            match FileStore::open(dir.path(), options().max_size_mb(mb)) {
                Err(Error::Config { field, reason }) => {
                    assert_eq!(field, "max_size_mb");
                    assert!(reason.contains("at most 1073741824"), "{reason}");
                }
                Err(e) => panic!("expected a Config error naming max_size_mb, got {e}"),
                Ok(store) => panic!("{mb} MiB opened with a bound of {} bytes", store.max_size()),
            }
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a refused open left files behind"
        );
    }

    #[test]
    fn a_bound_below_four_segments_that_an_earlier_build_recorded_still_opens() {
        // Earlier builds recorded such bounds; the application's unchanged configuration must
        // not stop opening its store after an upgrade.
        use crate::local::file::format::{self, META_FILE};
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), options().segment_size(1024 * 1024).max_size_mb(64)).unwrap();
        store.set("k", b"v", None).unwrap();
        store.close().unwrap();
        let meta_path = dir.path().join(META_FILE);
        let meta = format::decode_meta(&std::fs::read(&meta_path).unwrap()).unwrap();
        let small = format::Meta {
            max_size: 3 * 1024 * 1024,
            ..meta
        };
        std::fs::write(&meta_path, format::encode_meta(&small)).unwrap();
        for asked in [options().max_size_mb(3), options()] {
            let store = FileStore::open(dir.path(), asked).unwrap();
            assert_eq!(store.max_size(), 3 * 1024 * 1024);
            assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
            store.close().unwrap();
        }
    }
}
