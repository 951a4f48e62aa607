//! The persistent L1: a crash-safe, append-only file store read through mmap.
//!
//! A store is a directory of fixed-size segment files. Every write appends a CRC-checked record
//! to the active segment; an in-memory index maps the hash of each key to its newest record
//! (about 52 bytes per entry, whatever the key length); reads go index → mmap slice → CRC and key
//! check. Deletes append tombstones. Sealed segments
//! get hint files (index snapshots) so that opening reads small files instead of all data.
//! `storage-format.md` specifies every byte.
//!
//! | module        | job                                                         |
//! |---------------|-------------------------------------------------------------|
//! | `format`      | bytes on disk: names, magic, encoders and decoders          |
//! | `options`     | how a store is opened, and what its directory records       |
//! | `dir`         | the directory: ownership check, lock, metadata              |
//! | `segment`     | one segment file and its mmap                               |
//! | `mmap`        | the only `unsafe`: creating the map                         |
//! | `map_reads`   | how a get that misses the page cache reads the device       |
//! | `index`       | key hash → location: the compact in-memory index            |
//! | `slots`       | the small segment numbers index entries use                 |
//! | `lookup`      | reads through the index; its bookkeeping; key listing       |
//! | `lapsed`      | expired keys out of the index whose records may remain      |
//! | `freshness`   | suspect entries: the losses of certainty, and confirms      |
//! | `recovery`    | open: hints or scans, damage handling                       |
//! | `rebuild`     | the index from the records found, a shard per thread        |
//! | `lost`        | the keys of a segment lost to damage, held as deleted       |
//! | `maintenance` | size-bound eviction, TTL sweep, segment rewriting           |
//! | `plan`        | the next eviction's entries, listed ahead off the lock      |
//! | `policy`      | which entries the size bound keeps (scan resistance)        |
//! | `ghost`       | keys evicted lately as one-offs (scan resistance)           |
//! | `admission`   | whether a fill is worth its room in a full store            |
//! | `fillgate`    | whether fills that skip checks are worth their room         |
//! | `refused`     | fills refused lately that come back: let in past the checks |
//! | `stash`       | fills refused lately, held in RAM for a second read         |
//! | `stats`       | the store's stats and what `verify` finds                   |
//! | `decay`       | whether entries no longer read lose their counted reads     |
//! | `share`       | the share of sampled entries read, over a sliding window    |
//! | `write`       | appends, roll, seal, fsync, hints, clear                    |
//! | `value_item`  | the items a write appends, whatever shape the caller holds  |
//! | `worker`      | background flusher, compactor and planner threads           |

mod admission;
mod decay;
mod dir;
mod fillgate;
pub(crate) mod format;
mod freshness;
mod ghost;
mod index;
mod lapsed;
mod lookup;
mod lost;
mod maintenance;
mod map_reads;
mod mmap;
mod options;
mod plan;
mod policy;
#[cfg(test)]
mod power_loss_tests;
mod rebuild;
mod recovery;
mod refused;
mod segment;
mod share;
mod slots;
mod stash;
mod stats;
mod value_item;
mod worker;
mod write;

#[cfg(test)]
mod collision_tests;
#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod full_device_tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use self::format::{FORMAT_VERSION, MAX_KEY_LEN};
pub use self::maintenance::CompactionReport;
pub use self::map_reads::MapReads;
pub(crate) use self::options::MAX_SIZE_MB;
pub use self::options::{Durability, FileStoreOptions, DEFAULT_MAX_SIZE_MB};
pub use self::recovery::RecoveryReport;
pub use self::stats::{FileStoreStats, VerifyReport};

use self::dir::LockedDir;
use self::ghost::Ghosts;
use self::index::{Index, KeyHasher};
use self::segment::Segment;
use self::slots::Slots;
use self::worker::Workers;
use crate::clock::{self, Clock};
use crate::disk::WriteLatch;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::storage::{
    delete_each, get_each, Confirmation, Entry, Freshness, LocalStorage, Storage, StorageCounters,
    StorageSize, SuspectEpoch, TierAbove,
};

/// The highest sequence number a store writes: a store reaching it would have made 2^63 writes,
/// so one past it comes from a damaged or crafted file, and such a store takes no writes (each
/// would reuse the number; see [`FileStore::open`]).
const LAST_SEQ: u64 = u64::MAX / 2;

/// A crash-safe, size-bounded, persistent key-value cache in a directory.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::{FileStore, FileStoreOptions};
///
/// let dir = tempfile::tempdir()?;
/// let store = FileStore::open(dir.path(), FileStoreOptions::default())?;
/// store.set("greeting", b"hello", Some(Duration::from_secs(60)))?;
/// assert_eq!(store.get("greeting")?.as_deref(), Some(&b"hello"[..]));
/// store.close()?;
///
/// // Still there after a restart.
/// let store = FileStore::open(dir.path(), FileStoreOptions::default())?;
/// assert_eq!(store.get("greeting")?.as_deref(), Some(&b"hello"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct FileStore {
    inner: Arc<Inner>,
    workers: Workers,
    closed: bool,
}

#[derive(Debug, Default)]
struct Counters {
    corrupt_reads: AtomicU64,
    evictions: AtomicU64,
    second_chances: AtomicU64,
    expirations: AtomicU64,
    compactions: AtomicU64,
    planned_evictions: AtomicU64,
    damaged_ranges_dropped: AtomicU64,
}

/// State shared by the store handle and its background threads.
#[derive(Debug)]
pub(crate) struct Inner {
    dir: LockedDir,
    segment_size: u64,
    max_bytes: u64,
    /// The segment maps are advised for random reads (see `map_reads`), new ones included.
    random_map_reads: bool,
    /// The length of the records written lately (the mean at the open), which a get reading
    /// from a map advised for random reads takes for the length of its record before it knows
    /// it (see `Segment::ahead_of_record`).
    typical_record_len: AtomicU32,
    durability: Durability,
    /// Lines of writes refused for lack of space (every write while the device stays full),
    /// and of damaged records read (each key of a segment damaged whole).
    full_lines: crate::log_limit::LogLimit,
    damaged_lines: crate::log_limit::LogLimit,
    compaction_interval: Duration,
    min_live_ratio: f64,
    clock: Arc<dyn Clock>,
    /// How long expired entries stay readable by `get_stale`, in ms (see
    /// [`FileStoreOptions::keep_expired`]).
    keep_expired_ms: u64,
    index: Index,
    hasher: KeyHasher,
    /// Segment slot → segment, for index entries. Lock order: an index shard before `slots`.
    slots: Slots,
    /// Every segment by id; the active one is the last. Lock order: `writer` before `segments`.
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// Serialises fsyncs of the active segment (flush, the flusher thread).
    sync_lock: Mutex<()>,
    /// Serialises compactions (the background thread and `FileStore::compact`).
    compaction_lock: Mutex<()>,
    dirty: AtomicBool,
    /// Set by lookups, cleared by each eviction: whether the store is being read, which decides
    /// if unread protected entries are worth copying (see `maintenance`).
    looked_up: AtomicBool,
    /// Segments with this id or higher are the young part of the log, where reads of
    /// probationary entries do not count (see `policy`, correlated reads). Updated with
    /// `segments`.
    young_from: AtomicU64,
    /// Reads per key hash lately, for the admission of fills (see `admission`).
    sketch: admission::Sketch,
    /// Values of fills refused lately, served to a read that misses the index (see `stash`).
    stash: stash::Stash,
    /// Keys dropped from the index as expired lately, whose deletes take a tombstone (see
    /// `lapsed`).
    lapsed: lapsed::Lapsed,
    /// The tier in front of the store (the memory tier), whose keys eviction counts as read
    /// (see `maintenance`).
    above: RwLock<Option<Arc<dyn TierAbove>>>,
    /// Lists the next eviction's entries ahead of it (see `plan`).
    planner: Arc<plan::Planner>,
    /// Set by the first failed write or fsync; writes are refused from then on.
    latch: WriteLatch,
    disk_bytes: AtomicU64,
    live_bytes: AtomicU64,
    /// Entries with a sequence number below this are suspect unless confirmed in `epoch`.
    suspect_below_seq: AtomicU64,
    /// Bumped by every `mark_all_suspect`, so confirmations from before it no longer count.
    epoch: AtomicU32,
    /// The top 32 bits of every `SuspectEpoch` this instance hands out (the low ones are
    /// `epoch`): one of this store before it was reopened is refused.
    epoch_instance: u64,
    counters: Counters,
    recovery: RecoveryReport,
    shutdown: Shutdown,
    /// Test hook: makes the flusher thread leave its loop as if it had died.
    #[cfg(test)]
    test_stop_flusher: AtomicBool,
    /// Test hook: no plans are asked for, so every eviction reads its segment.
    #[cfg(test)]
    test_no_plans: AtomicBool,
    /// Test hook: the next confirm runs a `mark_all_suspect` between its look at the epoch and its stamp.
    #[cfg(test)]
    test_mark_before_stamp: AtomicBool,
    /// Test hook: the next mark that starts a lap of the stamp confirms this key at this epoch
    /// once it has forgotten every confirmation, before it returns; the answer goes in
    /// `test_confirmed_after_forget`.
    #[cfg(test)]
    test_confirm_after_forget: Mutex<Option<(String, SuspectEpoch)>>,
    #[cfg(test)]
    test_confirmed_after_forget: Mutex<Option<Confirmation>>,
}

/// The appender. Only one thread writes at a time; index updates happen under this lock too, so
/// "check the index, then append" is atomic with respect to every other write.
#[derive(Debug)]
struct Writer {
    /// The segment records are appended to. `None` until the first write after open (so opening
    /// needs no disk space), and after a roll that found the device full.
    active: Option<Arc<Segment>>,
    /// Where the next record goes in `active`; `segment_size` while there is none, so the next
    /// append rolls.
    offset: u64,
    next_seq: u64,
    next_segment_id: u64,
    /// Scratch buffer for one encoded record (or batch), emptied after each write and kept to
    /// 1 MiB (`format::release_scratch`).
    buf: Vec<u8>,
    /// Sealed segments not yet fsynced; their hint files are written once they are durable
    /// (a hint never describes data that a power loss could take away). A segment removed from
    /// the store is taken out of here at once: it needs no fsync, and holding it would keep its
    /// deleted file open and its disk space in use.
    unsynced: Vec<Sealed>,
    /// Keys evicted lately without having been read (see `maintenance`).
    ghosts: Ghosts,
    /// What the next eviction would drop, for the admission of fills (see `admission`).
    victims: admission::Victims,
    /// Keys fills were asked for lately, for the admission of fills (see `admission`).
    recent_fills: admission::RecentFills,
    /// Keys whose fill was refused lately, by reads: fills that come back (see `refused`).
    refused: refused::Refused,
    /// Whether the size bound evicted since the store was opened or cleared: until it does,
    /// every value written starts protected (see `policy`, filling up).
    evicted: bool,
    /// Set while a compaction appends (see `maintenance`): a roll that finds the device full
    /// then fails instead of evicting, as evicting live entries to make room for copies of
    /// live entries emptied the store.
    compacting: bool,
    /// The gate on fills of new keys (see `fillgate`).
    new_keys: fillgate::FillGate,
    /// The gate on fills of seen keys into free room (see `fillgate`).
    seen_keys: fillgate::FillGate,
    /// The gate on refused fills that come back (see `fillgate`).
    returns: fillgate::FillGate,
    /// Whether kept entries that stopped being read lose their counted reads (see `decay`).
    decay: decay::Decay,
}

/// An entry of `value` expiring at `expires_at_ms` (Unix ms, 0 = never).
fn entry(value: Vec<u8>, expires_at_ms: u64) -> Entry {
    Entry {
        value,
        expires_at: (expires_at_ms != 0).then(|| clock::ms_to_system_time(expires_at_ms)),
    }
}

/// Bytes a record's entry adds to its segment's hint file.
fn hint_entry_len(key: &str) -> u64 {
    (format::HINT_ENTRY_LEN + key.len()) as u64
}

impl Writer {
    /// The id below which no segment can receive records from now on.
    fn first_writable_id(&self) -> u64 {
        self.active.as_ref().map_or(self.next_segment_id, |a| a.id)
    }

    fn active_id(&self) -> Option<u64> {
        self.active.as_ref().map(|a| a.id)
    }
}

/// A sealed segment waiting for its fsync, after which its hint file is written.
#[derive(Debug)]
struct Sealed {
    segment: Arc<Segment>,
}

impl FileStore {
    /// Opens (or creates) the store in `dir`, recovering whatever a previous run left there.
    ///
    /// # Errors
    /// [`Error::Locked`] if another store has the directory open, [`Error::NotOurDirectory`] if
    /// it holds foreign files, [`Error::UnsupportedVersion`] if a newer uno-cache wrote it,
    /// [`Error::Config`] for invalid options, [`Error::Io`] for I/O failures,
    /// [`Error::LostKeysUnreadable`] if the keys of a segment lost to damage cannot be read.
    /// Damaged records are not errors: they are skipped and counted in
    /// [`FileStore::recovery_report`]. A record or metadata whose sequence number is past any a
    /// store reaches (2^63) opens the store for reads only: each write returns
    /// [`Error::WritesDisabled`] naming that cause.
    pub fn open(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<FileStore> {
        let (dir, meta) = LockedDir::open(dir.as_ref(), options.disk.clone(), options.wanted()?)?;
        let keep_expired_ms = u64::try_from(options.keep_expired.as_millis()).unwrap_or(u64::MAX);
        // Entries that expired within the keep window are recovered: they are stale copies.
        let dead_before = options.clock.now_ms().saturating_sub(keep_expired_ms);
        let recovered = recovery::recover(&dir, &meta, dead_before, KeyHasher::new(options.hash_seed))?;
        let segments = recovered.segments;
        // No segment is created here: opening needs no free space, so a store on a full device
        // still opens and serves reads. The first write creates one.
        let disk_bytes: u64 = segments.values().map(|s| s.disk_bytes()).sum();
        let live_bytes: u64 = segments
            .values()
            .map(|s| s.live_bytes.load(Ordering::Relaxed))
            .sum();
        let max_bytes = options::bound_in_use(&meta, disk_bytes);
        // After the open's scans, which read whole segments in order and gain by the read-around.
        let random_map_reads = options
            .map_reads
            .random_for(max_bytes, map_reads::memory_available());
        if random_map_reads {
            segments.values().for_each(|s| s.advise_random_reads());
        }
        let young_from = policy::young_from(segments.keys());
        let exhausted = (recovered.next_seq > LAST_SEQ).then(|| Error::CorruptMetadata {
            path: dir.path.clone(),
            reason: format!(
                "a record or the metadata carries sequence number {}, past any a store reaches: \
                 its writes are refused",
                recovered.next_seq - 1
            ),
        });
        let inner = Arc::new(Inner {
            segment_size: meta.segment_size,
            max_bytes,
            random_map_reads,
            typical_record_len: AtomicU32::new(
                u32::try_from(live_bytes / (recovered.index.len() as u64).max(1)).unwrap_or(u32::MAX),
            ),
            durability: options.durability,
            full_lines: crate::log_limit::LogLimit::new(),
            damaged_lines: crate::log_limit::LogLimit::new(),
            compaction_interval: options.compaction_interval,
            min_live_ratio: options.min_live_ratio,
            clock: options.clock,
            keep_expired_ms,
            index: recovered.index,
            hasher: recovered.hasher,
            slots: recovered.slots,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                offset: meta.segment_size,
                next_seq: recovered.next_seq,
                next_segment_id: recovered.next_segment_id,
                active: None,
                buf: Vec::new(),
                unsynced: Vec::new(),
                ghosts: Ghosts::default(),
                victims: admission::Victims::default(),
                recent_fills: admission::RecentFills::default(),
                new_keys: fillgate::FillGate::default(),
                seen_keys: fillgate::FillGate::default(),
                returns: fillgate::FillGate::counting_every_fill(),
                decay: decay::Decay::default(),
                refused: refused::Refused::default(),
                evicted: false,
                compacting: false,
            }),
            sync_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            dirty: AtomicBool::new(false),
            looked_up: AtomicBool::new(false),
            young_from: AtomicU64::new(young_from),
            sketch: admission::Sketch::default(),
            stash: stash::Stash::default(),
            lapsed: recovered.lapsed,
            above: RwLock::new(None),
            planner: Arc::default(),
            latch: WriteLatch::new("file store"),
            disk_bytes: AtomicU64::new(disk_bytes),
            live_bytes: AtomicU64::new(live_bytes),
            // Whatever was restored from disk may have changed elsewhere while we were away.
            suspect_below_seq: AtomicU64::new(recovered.next_seq),
            epoch: AtomicU32::new(1),
            epoch_instance: SuspectEpoch::first_of_a_new_level(),
            counters: Counters::default(),
            recovery: recovered.report,
            shutdown: Shutdown::default(),
            #[cfg(test)]
            test_stop_flusher: AtomicBool::new(false),
            #[cfg(test)]
            test_no_plans: AtomicBool::new(false),
            #[cfg(test)]
            test_mark_before_stamp: AtomicBool::new(false),
            #[cfg(test)]
            test_confirm_after_forget: Mutex::new(None),
            #[cfg(test)]
            test_confirmed_after_forget: Mutex::new(None),
            dir,
        });
        if let Some(cause) = exhausted {
            // Reads still work; a write would reuse a sequence number, and the next open would
            // let the record it replaced win the tie.
            inner.fail(cause);
        } else if inner.disk_bytes.load(Ordering::Relaxed) > inner.max_bytes {
            // A bound lowered since the last run holds from the open, not from the first
            // write: a store that is only read would keep the old bound's bytes. Nothing was
            // read since the open, so the eviction copies nothing and needs no free block
            // (`tests/file_store_disks.rs`); should it fail all the same (an I/O error
            // unlinking a segment, after the open rewrote the metadata), the open does not:
            // the store is read as it is, and its writes are refused, naming the cause, until it
            // is reopened (the latch: the forgotten segment is still on disk).
            if let Err(err) = inner.ensure_space(&mut inner.writer.lock(), 0) {
                tracing::warn!(dir = %inner.dir.path.display(), %err,
                    "the store holds more than its lowered size bound and could not evict at open; it is read as it is, and writes are refused until it is reopened");
            }
        }
        inner.merge_small_at_open();
        let workers = if options.background {
            let workers = Workers::start(&inner)?;
            // A store reopened near its bound evicts before its next roll asks for a plan.
            inner.plan_next(&inner.writer.lock());
            workers
        } else {
            Workers::default()
        };
        Ok(FileStore {
            inner,
            workers,
            closed: false,
        })
    }

    /// Reads a value. Expired, deleted, evicted and damaged entries are all misses.
    ///
    /// # Errors
    /// Reads of a valid key do not fail; a damaged record is reported as a miss and counted in
    /// [`FileStoreStats::corrupt_reads`].
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        Ok(match self.inner.read(key) {
            Some(hit) => Some(hit.taken),
            None => self.inner.held(key, false, true).map(|held| held.value),
        })
    }

    /// Reads a value with its absolute expiry.
    ///
    /// # Errors
    /// As [`FileStore::get`].
    pub fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get_entry_and_seq(key).map(|(entry, _)| entry))
    }

    /// Reads a value as [`get_entry`](FileStore::get_entry) does, and also one that expired
    /// less than [`keep_expired`](FileStoreOptions::keep_expired) ago: a stale copy for
    /// fail-safe reads, told apart by its `expires_at` being past. Does not count as a read for
    /// eviction.
    ///
    /// # Errors
    /// As [`FileStore::get`].
    pub fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self
            .inner
            .locate_with(key, false, true, |r| r.value.to_vec())
            .map(|hit| entry(hit.taken, hit.expires_at_ms))
            .or_else(|| {
                self.inner
                    .held(key, true, false)
                    .map(|held| entry(held.value, held.expires_at_ms))
            }))
    }

    /// The entry for `key`, and where its record is; `None` for the record if the value is one
    /// held in RAM (see `stash`).
    fn get_entry_and_seq(&self, key: &str) -> Option<(Entry, Option<lookup::Hit<()>>)> {
        let Some(hit) = self.inner.read(key) else {
            return self
                .inner
                .held(key, false, true)
                .map(|held| (entry(held.value, held.expires_at_ms), None));
        };
        let found = lookup::Hit {
            taken: (),
            expires_at_ms: hit.expires_at_ms,
            seq: hit.seq,
            loc: hit.loc,
        };
        Some((entry(hit.taken, hit.expires_at_ms), Some(found)))
    }

    /// Whether `key` has a live value, without reading it.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.inner.locate(key, false, |_| ()).is_some() || self.inner.holds(key)
    }

    /// Writes a value; `ttl = None` means it never expires.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::ZeroTtl`] or [`Error::ValueTooLarge`] for bad input (nothing
    /// is written); [`Error::WritesDisabled`] after an earlier write or fsync failure;
    /// [`Error::Io`] if this write fails (later writes are then refused).
    pub fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner.set_many(&[(key, value)], ttl)
    }

    /// Writes a value copied in after a miss (a fill: a read-through cache's backfill), unless
    /// the write would make the store evict and the key was read no more often lately than
    /// what the eviction would drop, or, once the store has been full, the key is new and new
    /// keys' fills have lately gone unread, or the fill would go into free room but such fills
    /// of keys asked for before have lately gone unread and it fails the check against the next
    /// victim that a fill which evicts must pass (see the file tier's admission policy in the
    /// README). A fill of a key the store holds a live value of is always written: it replaces
    /// that value (the caller has newer bytes, as a revalidation that found other ones in L2).
    /// Returns whether it was written. A refused value may still be read for a short while: it
    /// is held in RAM until newer ones push it out ([`FileStoreStats::held_fills`]). For values
    /// the caller must find again, use [`set`](FileStore::set): a set is always written.
    ///
    /// # Errors
    /// As [`FileStore::set`].
    pub fn fill(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<bool> {
        Ok(self.inner.fill_many(&[(key, value)], ttl)? == 1)
    }

    /// [`fill`](FileStore::fill) for several values, each with its own TTL, under one lock
    /// acquisition. A key given more than once is filled with its last value only, as
    /// [`set_each`](Self::set_each) leaves it. Returns how many were written.
    ///
    /// # Errors
    /// As [`FileStore::set`]; one bad item writes nothing.
    pub fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        self.inner.fill_many(items, None)
    }

    /// Writes several values under one lock acquisition (and one fsync with
    /// [`Durability::EveryWrite`]). Input is checked first: one bad item writes nothing.
    ///
    /// # Errors
    /// As [`FileStore::set`].
    pub fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.inner.set_many(items, ttl)
    }

    /// Writes several values, each with its own TTL, as [`set_many`](Self::set_many) does (one
    /// `pwrite` per run of records that fits the active segment).
    ///
    /// # Errors
    /// As [`FileStore::set`].
    pub fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.inner.set_many(items, None)
    }

    /// Deletes a key, writing a tombstone so the delete survives a restart. Returns whether it
    /// removed a value: live, expired but kept for stale reads, or a refused fill's.
    ///
    /// A key whose record is damaged (its checksum fails) has no value a read could get: a
    /// `get` misses and [`contains`](Self::contains) says no. Its delete takes the record out
    /// with a tombstone as any other (under the size bound, durable as the store's
    /// [`Durability`] makes every write), counts the damage in
    /// [`FileStoreStats::corrupt_reads`] and logs it, as a read that meets it does, and returns
    /// `false`: it removed no value. So does a delete after a read met the damage first. The
    /// same holds for each key of [`Storage::delete_many`], which
    /// counts only the values removed.
    ///
    /// # Errors
    /// [`Error::InvalidKey`], [`Error::WritesDisabled`], [`Error::Io`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key)
    }

    /// Makes every write that returned before this call durable (fsync).
    ///
    /// # Errors
    /// [`Error::Io`] if the fsync fails (writes are refused from then on), or
    /// [`Error::WritesDisabled`] if an earlier one did.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Runs one compaction step now: sweeps expired entries and rewrites sparse segments.
    /// The background compactor does the same on its own; this is for tools and tests.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::WritesDisabled`].
    pub fn compact(&self) -> Result<CompactionReport> {
        self.inner.compact(&Shutdown::default())
    }

    /// Removes every entry, durably.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::WritesDisabled`].
    pub fn clear(&self) -> Result<()> {
        self.inner.clear()
    }

    /// Reads every record of every segment and checks its CRC. `progress` is called with
    /// `(bytes checked, total bytes)` after each segment.
    ///
    /// # Errors
    /// None today; I/O errors would be reported as [`Error::Io`].
    pub fn verify(&self, progress: impl FnMut(u64, u64)) -> Result<VerifyReport> {
        Ok(self.inner.verify(progress))
    }

    /// The keys at this moment (a snapshot): the live ones, those that expired less than
    /// [`keep_expired`](FileStoreOptions::keep_expired) ago (stale copies
    /// [`get_stale`](FileStore::get_stale) serves, which prefix invalidation must reach; a
    /// [`get`](FileStore::get) of them misses), and those of refused fills held in RAM for a
    /// second read ([`FileStoreStats::held_fills`]). Keys that expired longer ago are left out.
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        let mut keys = self.inner.keys();
        // Held values (see `stash`) are values a read can get: prefix invalidation must reach
        // them.
        let held = self.inner.stash.keys(self.inner.moment());
        if !held.is_empty() {
            keys.extend(held);
            keys.sort_unstable();
            keys.dedup();
        }
        keys
    }

    /// How many entries [`keys`](Self::keys) leaves out because their record is damaged where
    /// the key is read (its key, kind or expiry): a `get` of the key finds the damage, but the
    /// key cannot be read back, so a listing of the store (`uno-cache dump`) misses them.
    #[must_use]
    pub fn unlisted_damaged_entries(&self) -> u64 {
        self.inner.list_keys().1
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> FileStoreStats {
        self.inner.stats()
    }

    /// [`FileStoreStats::corrupt_reads`] alone, without the locks the rest of
    /// [`stats`](Self::stats) takes: cheap enough to ask around every read (as `uno-cache dump`
    /// does, to name the records it found damaged).
    #[must_use]
    pub fn corrupt_reads(&self) -> u64 {
        self.inner.counters.corrupt_reads.load(Ordering::Relaxed)
    }

    /// What the last open found: hints used, segments scanned, damage skipped.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
    }

    /// The size of its segment files, fixed when the directory was created (recorded in its
    /// metadata). No record, and so no value, is larger.
    #[must_use]
    pub fn segment_size(&self) -> u64 {
        self.inner.segment_size
    }

    /// The store's directory.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.dir.path
    }

    /// Stops the background threads, fsyncs, and writes the hint file of the active segment so
    /// the next open is fast. Dropping the store does the same but can only log errors.
    ///
    /// # Errors
    /// [`Error::Io`] if the final fsync or hint write fails.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Drops the store as a crash would: no final fsync, no hint, no close (tests).
    #[cfg(test)]
    pub(crate) fn abandon(mut self) {
        self.closed = true;
        self.workers.stop(&self.inner.shutdown);
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.workers.stop(&self.inner.shutdown);
        self.inner.seal_on_close()
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, path = %self.inner.dir.path.display(), "closing the file store failed");
        }
    }
}

impl Storage for FileStore {
    fn name(&self) -> &str {
        "file"
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.get_entry(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        FileStore::set(self, key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        FileStore::delete(self, key)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        FileStore::set_many(self, items, ttl)
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        FileStore::set_each(self, items)
    }

    /// Each key is a lookup in the mmap'd index: no batch to gain.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        get_each(self, keys)
    }

    /// Each key as [`FileStore::delete`]: a key whose record is damaged is taken out, counted
    /// in `corrupt_reads`, and not counted as removed.
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        delete_each(self, "file", keys)
    }

    /// A value must fit in one segment with its record header.
    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.inner.check_value_len(key, value_len)
    }

    fn size(&self) -> Result<StorageSize> {
        let stats = self.stats();
        Ok(StorageSize {
            items: stats.live_items,
            bytes: stats.live_bytes,
        })
    }

    fn clear(&self) -> Result<()> {
        FileStore::clear(self)
    }

    fn flush(&self) -> Result<()> {
        FileStore::flush(self)
    }

    fn counters(&self) -> StorageCounters {
        let c = &self.inner.counters;
        StorageCounters {
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            corrupt_reads: c.corrupt_reads.load(Ordering::Relaxed),
            ..StorageCounters::default()
        }
    }
}

impl LocalStorage for FileStore {
    fn watch_tier_above(&self, above: Arc<dyn TierAbove>) {
        *self.inner.above.write() = Some(above);
    }

    /// As [`contains`](FileStore::contains), from the index and the records in place: no value
    /// is copied out, and no lookup counts for the eviction policy (each record's checksum is
    /// still checked, so that a damaged record is no value, as for a read).
    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        Ok(keys.iter().map(|key| self.contains(key)).collect())
    }

    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        FileStore::get_checked(self, key)
    }

    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        FileStore::get_stale(self, key)
    }

    /// One pass over the index, reading each key from its record: prefix invalidation drops
    /// just those keys (stale copies in the keep window included) instead of the whole store.
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        let mut keys = FileStore::keys(self);
        keys.retain(|k| k.starts_with(prefix));
        Ok(Some(keys))
    }

    fn mark_all_suspect(&self) -> Result<()> {
        FileStore::mark_all_suspect(self);
        Ok(())
    }

    fn suspect_epoch(&self) -> SuspectEpoch {
        FileStore::suspect_epoch(self)
    }

    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        Ok(FileStore::confirm(self, key, checked_at))
    }

    /// Through the admission check of [`FileStore::fill_each`].
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        FileStore::fill_each(self, items)
    }
}
