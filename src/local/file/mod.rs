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
//! | `dir`         | the directory: ownership check, lock, metadata              |
//! | `segment`     | one segment file and its mmap                               |
//! | `mmap`        | the only `unsafe`: creating the map                         |
//! | `index`       | key hash → location: the compact in-memory index            |
//! | `slots`       | the small segment numbers index entries use                 |
//! | `lookup`      | reads through the index; its bookkeeping; key listing       |
//! | `recovery`    | open: hints or scans, damage handling, rebuilding the index |
//! | `maintenance` | size-bound eviction, TTL sweep, segment rewriting           |
//! | `ghost`       | keys evicted lately as one-offs (scan resistance)           |
//! | `worker`      | background flusher and compactor threads                    |

mod dir;
pub(crate) mod format;
mod ghost;
mod index;
mod lookup;
mod maintenance;
mod mmap;
mod options;
#[cfg(test)]
mod power_loss_tests;
mod recovery;
mod segment;
mod slots;
mod worker;

#[cfg(test)]
mod collision_tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

pub use self::format::{FORMAT_VERSION, MAX_KEY_LEN};
pub use self::maintenance::CompactionReport;
pub use self::options::{Durability, FileStoreOptions, DEFAULT_MAX_SIZE_MB};
pub use self::recovery::RecoveryReport;

use self::dir::LockedDir;
use self::format::{Kind, Meta, SEGMENT_HEADER_LEN};
use self::ghost::Ghosts;
use self::index::{Index, IndexEntry, KeyHasher};
use self::segment::Segment;
use self::slots::Slots;
use self::worker::{Shutdown, Workers};
use crate::clock::{self, Clock};
use crate::disk::WriteLatch;
use crate::error::{key_for_error, Error, Result};
use crate::storage::{check_key, check_write, Entry, Freshness, Storage, StorageCounters, StorageSize};

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

/// Sizes and counters of a file store.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FileStoreStats {
    /// Keys with a live value (expired ones not yet swept included).
    pub live_items: u64,
    /// Bytes of the live records (headers, keys and values).
    pub live_bytes: u64,
    /// Bytes of records across all segments, headers included, and of hint files: what
    /// `max_size` bounds.
    pub disk_bytes: u64,
    /// What the store's files take on the device: `disk_bytes` plus the space reserved for the
    /// active segment's next records. At most `max_size` plus one segment.
    pub allocated_bytes: u64,
    /// Segment files, the active one included.
    pub segments: u64,
    /// `disk_bytes - live_bytes`: overwritten, deleted and expired records, tombstones, headers.
    pub dead_bytes: u64,
    /// Records skipped as damaged when the store was opened.
    pub recovery_skipped_records: u64,
    /// Reads that found a damaged record (treated as a miss; the key was dropped).
    pub corrupt_reads: u64,
    /// Entries dropped by the size bound.
    pub evictions: u64,
    /// Entries re-appended instead of evicted because they were read since written.
    pub second_chances: u64,
    /// Entries removed because their TTL passed.
    pub expirations: u64,
    /// Segments rewritten by compaction.
    pub compactions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    corrupt_reads: AtomicU64,
    evictions: AtomicU64,
    second_chances: AtomicU64,
    expirations: AtomicU64,
    compactions: AtomicU64,
}

/// State shared by the store handle and its background threads.
#[derive(Debug)]
pub(crate) struct Inner {
    dir: LockedDir,
    segment_size: u64,
    max_bytes: u64,
    durability: Durability,
    compaction_interval: Duration,
    min_live_ratio: f64,
    clock: Arc<dyn Clock>,
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
    /// Set by the first failed write or fsync; writes are refused from then on.
    latch: WriteLatch,
    disk_bytes: AtomicU64,
    live_bytes: AtomicU64,
    /// Entries with a sequence number below this are suspect unless confirmed in `epoch`.
    suspect_below_seq: AtomicU64,
    /// Bumped by every `mark_all_suspect`, so confirmations from before it no longer count.
    epoch: AtomicU32,
    counters: Counters,
    recovery: RecoveryReport,
    shutdown: Shutdown,
    /// Test hook: makes the flusher thread leave its loop as if it had died.
    #[cfg(test)]
    test_stop_flusher: AtomicBool,
}

/// One value a write appends: `(key, value)` takes the batch's TTL, `(key, value, ttl)` has its
/// own (a backfill of entries with different remaining TTLs).
trait ValueItem {
    fn key(&self) -> &str;
    fn value(&self) -> &[u8];
    fn ttl(&self, batch: Option<Duration>) -> Option<Duration>;
}

impl ValueItem for (&str, &[u8]) {
    fn key(&self) -> &str {
        self.0
    }
    fn value(&self) -> &[u8] {
        self.1
    }
    fn ttl(&self, batch: Option<Duration>) -> Option<Duration> {
        batch
    }
}

impl ValueItem for (&str, &[u8], Option<Duration>) {
    fn key(&self) -> &str {
        self.0
    }
    fn value(&self) -> &[u8] {
        self.1
    }
    fn ttl(&self, _batch: Option<Duration>) -> Option<Duration> {
        self.2
    }
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
    /// Scratch buffer for one encoded record.
    buf: Vec<u8>,
    /// Sealed segments not yet fsynced; their hint files are written once they are durable
    /// (a hint never describes data that a power loss could take away). A segment removed from
    /// the store is taken out of here at once: it needs no fsync, and holding it would keep its
    /// deleted file open and its disk space in use.
    unsynced: Vec<Sealed>,
    /// Keys evicted lately without having been read (see `maintenance`).
    ghosts: Ghosts,
    /// No eviction yet since open or clear: every write is protected, as a filling cache
    /// admits to its main queue (see `maintenance`).
    filling: bool,
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
    /// [`Error::Config`] for invalid options, [`Error::Io`] for I/O failures. Damaged records are
    /// not errors: they are skipped and counted in [`FileStore::recovery_report`].
    pub fn open(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<FileStore> {
        let (dir, meta) = LockedDir::open(dir.as_ref(), options.disk.clone(), options.wanted()?)?;
        let recovered = recovery::recover(&dir, &meta, options.clock.now_ms())?;
        let segments = recovered.segments;
        // No segment is created here: opening needs no free space, so a store on a full device
        // still opens and serves reads. The first write creates one.
        let disk_bytes: u64 = segments.values().map(|s| s.disk_bytes()).sum();
        let live_bytes: u64 = segments
            .values()
            .map(|s| s.live_bytes.load(Ordering::Relaxed))
            .sum();
        let max_bytes = options::bound_in_use(&meta, disk_bytes);
        let inner = Arc::new(Inner {
            segment_size: meta.segment_size,
            max_bytes,
            durability: options.durability,
            compaction_interval: options.compaction_interval,
            min_live_ratio: options.min_live_ratio,
            clock: options.clock,
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
                filling: true,
            }),
            sync_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            dirty: AtomicBool::new(false),
            looked_up: AtomicBool::new(false),
            latch: WriteLatch::new("file store"),
            disk_bytes: AtomicU64::new(disk_bytes),
            live_bytes: AtomicU64::new(live_bytes),
            // Whatever was restored from disk may have changed elsewhere while we were away.
            suspect_below_seq: AtomicU64::new(recovered.next_seq),
            epoch: AtomicU32::new(1),
            counters: Counters::default(),
            recovery: recovered.report,
            shutdown: Shutdown::default(),
            #[cfg(test)]
            test_stop_flusher: AtomicBool::new(false),
            dir,
        });
        let workers = if options.background {
            Workers::start(&inner)?
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
        Ok(self.inner.read(key).map(|hit| hit.taken))
    }

    /// Reads a value with its absolute expiry.
    ///
    /// # Errors
    /// As [`FileStore::get`].
    pub fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.get_entry_and_seq(key).map(|(entry, _)| entry))
    }

    /// Reads a value with its expiry and whether it is suspect: restored from disk at open, or
    /// written before the last [`mark_all_suspect`](FileStore::mark_all_suspect), and not
    /// confirmed or rewritten since.
    ///
    /// # Errors
    /// As [`FileStore::get`].
    pub fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        let Some((entry, hit)) = self.get_entry_and_seq(key) else {
            return Ok(None);
        };
        let freshness = if hit.seq >= self.inner.suspect_below_seq.load(Ordering::Acquire) {
            Freshness::Trusted
        } else {
            let epoch = self.inner.epoch.load(Ordering::Acquire);
            match self.inner.index.get(&self.inner.hasher.hash(key)) {
                Some(e) if e.loc == hit.loc && e.confirmed_in(epoch) => Freshness::Trusted,
                _ => Freshness::Suspect,
            }
        };
        Ok(Some((entry, freshness)))
    }

    /// Makes every entry written so far suspect (see [`get_checked`](FileStore::get_checked)),
    /// for example when the invalidation stream was lost. Costs O(1).
    pub fn mark_all_suspect(&self) {
        let w = self.inner.writer.lock();
        self.inner.epoch.fetch_add(1, Ordering::AcqRel);
        self.inner.suspect_below_seq.store(w.next_seq, Ordering::Release);
    }

    /// Confirms the current entry of `key` as fresh until the next loss of certainty.
    pub fn confirm(&self, key: &str) {
        // The entry of the key's hash may hold another key (a collision): confirm it only if its
        // record is this key's.
        let Some(hit) = self.inner.locate(key, false, |_| ()) else {
            return;
        };
        if let Some(e) = self.inner.index.get(&self.inner.hasher.hash(key)) {
            if e.loc == hit.loc {
                e.confirm(self.inner.epoch.load(Ordering::Acquire));
            }
        }
    }

    fn get_entry_and_seq(&self, key: &str) -> Option<(Entry, lookup::Hit<()>)> {
        self.inner.read(key).map(|hit| {
            let expires_at_ms = hit.expires_at_ms;
            (
                Entry {
                    value: hit.taken,
                    expires_at: (expires_at_ms != 0).then(|| clock::ms_to_system_time(expires_at_ms)),
                },
                lookup::Hit {
                    taken: (),
                    expires_at_ms,
                    seq: hit.seq,
                    loc: hit.loc,
                },
            )
        })
    }

    /// Whether `key` has a live value, without reading it.
    #[must_use]
    pub fn contains(&self, key: &str) -> bool {
        self.inner.locate(key, false, |_| ()).is_some()
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

    /// Deletes a key, writing a tombstone so the delete survives a restart. Returns whether a
    /// live value was removed.
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

    /// The live keys at this moment (a snapshot; expired keys are left out).
    #[must_use]
    pub fn keys(&self) -> Vec<String> {
        self.inner.keys()
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> FileStoreStats {
        self.inner.stats()
    }

    /// What the last open found: hints used, segments scanned, damage skipped.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.recovery
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

/// What [`FileStore::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerifyReport {
    /// Segments checked.
    pub segments: u64,
    /// Records with a valid CRC.
    pub records: u64,
    /// Damaged byte ranges (each may hide one or more records).
    pub damaged_ranges: u64,
    /// Bytes in damaged ranges.
    pub damaged_bytes: u64,
    /// Files with a problem, and what it is.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// True if nothing is damaged.
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.damaged_ranges == 0 && self.problems.is_empty()
    }
}

impl Inner {
    fn check_writable(&self) -> Result<()> {
        self.latch.check(&self.dir.path)
    }

    /// Latches the store read-only after a failed write or fsync and passes the error on.
    fn fail(&self, error: Error) -> Error {
        self.latch.fail(error)
    }

    fn max_value_len(&self, key: &str) -> usize {
        usize::try_from(self.segment_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(SEGMENT_HEADER_LEN + format::record_len(key.len(), 0))
    }

    fn set_many<I: ValueItem>(&self, items: &[I], ttl: Option<Duration>) -> Result<()> {
        for item in items {
            let (key, value) = (item.key(), item.value());
            check_write(key, item.ttl(ttl))?;
            let max = self.max_value_len(key);
            if value.len() > max {
                return Err(Error::ValueTooLarge {
                    key: key_for_error(key),
                    len: value.len(),
                    max,
                    store: format!("a {}-byte file-store segment", self.segment_size),
                });
            }
        }
        self.check_writable()?;
        let now = self.clock.now_ms();
        let expires = |item: &I| item.ttl(ttl).map_or(0, |t| clock::expiry_ms(now, t));
        let record_len = |item: &I| format::record_len(item.key().len(), item.value().len()) as u64;
        let stored_len = |item: &I| format::stored_len(item.key().len(), item.value().len());
        let mut w = self.writer.lock();
        let mut rest = items;
        while let Some(first) = rest.first() {
            // Space first: eviction may append second-chance copies, so it runs before this
            // batch's records are laid out.
            let wanted = rest.iter().map(stored_len).sum::<u64>().min(self.segment_size);
            self.ensure_space(&mut w, wanted)?;
            if w.offset + record_len(first) > self.segment_size {
                self.roll(&mut w)?;
            }
            // The longest run of records that fits in the active segment (at least the first:
            // every value was checked to fit in an empty segment).
            let room = self.segment_size - w.offset;
            let mut total = 0;
            let fits = rest
                .iter()
                .take_while(|item| {
                    total += record_len(item);
                    total <= room
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(fits.min(rest.len()));
            self.append_values(&mut w, chunk, expires)?;
            rest = tail;
        }
        self.sync_if_every_write(&w)
    }

    /// Appends value records with one `pwrite`, then publishes them in the index. The caller
    /// made sure they fit in the active segment.
    fn append_values<I: ValueItem>(
        &self,
        w: &mut Writer,
        chunk: &[I],
        expires_at_ms: impl Fn(&I) -> u64,
    ) -> Result<()> {
        let Some(active) = w.active.clone() else {
            return Err(self.no_active_segment());
        };
        let start = w.offset;
        let first_seq = w.next_seq;
        // Before the write: a store that cannot name its segment writes nothing.
        let base = self.slots.loc(&active, 0)?;
        let mut hint_added = 0u64;
        w.buf.clear();
        let mut seq = first_seq;
        for item in chunk {
            format::encode_record(
                &mut w.buf,
                active.salt,
                Kind::Value,
                seq,
                expires_at_ms(item),
                item.key(),
                item.value(),
            );
            seq = seq.saturating_add(1);
        }
        if let Err(e) = active.write_at(start, &w.buf) {
            return Err(self.write_failed(e, w.buf.len()));
        }
        let end = start + w.buf.len() as u64;
        // Published before the index points at the records: a read never goes past the data end.
        active.data_end.store(end, Ordering::Release);
        let mut offset = start;
        let mut seq = first_seq;
        for item in chunk {
            let (key, expires_at_ms) = (item.key(), expires_at_ms(item));
            let len = format::record_len(key.len(), item.value().len()) as u64;
            hint_added += hint_entry_len(key);
            self.account(&active, u32::try_from(len).unwrap_or(u32::MAX));
            let hash = self.hasher.hash(key);
            let entry =
                IndexEntry::with_protection(base.at(offset), expires_at_ms, self.admit_protected(w, hash));
            if let Some(old) = self.index.insert(hash, entry) {
                self.unaccount(old.loc);
            }
            offset += len;
            seq = seq.saturating_add(1);
        }
        w.next_seq = seq;
        w.offset = end;
        self.count_appended(&active, end - start, hint_added);
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.check_writable()?;
        let hash = self.hasher.hash(key);
        let mut w = self.writer.lock();
        // The record decides (the writer lock keeps the entry as it is): see `needs_tombstone`.
        if !self.needs_tombstone(key, hash) {
            return Ok(false);
        }
        let seq = w.next_seq;
        w.next_seq = w.next_seq.saturating_add(1);
        self.ensure_space(&mut w, format::stored_len(key.len(), 0))?;
        self.append(&mut w, Kind::Tombstone, seq, 0, key, &[])?;
        if let Some((_, old)) = self.index.remove(&hash) {
            self.unaccount(old.loc);
        }
        self.sync_if_every_write(&w)?;
        Ok(true)
    }

    /// Appends one record to the active segment, rolling to a new segment if it does not fit.
    /// Returns the segment, offset and length written. The caller updates the index.
    fn append(
        &self,
        w: &mut Writer,
        kind: Kind,
        seq: u64,
        expires_at_ms: u64,
        key: &str,
        value: &[u8],
    ) -> Result<(Arc<Segment>, u32, u32)> {
        let len = format::record_len(key.len(), value.len()) as u64;
        if w.active.is_none() || w.offset + len > self.segment_size {
            self.roll(w)?;
        }
        let Some(active) = w.active.clone() else {
            return Err(self.no_active_segment());
        };
        // Encoded after any roll: the CRC mixes in the salt of the segment it lands in.
        w.buf.clear();
        format::encode_record(&mut w.buf, active.salt, kind, seq, expires_at_ms, key, value);
        let offset = w.offset;
        if let Err(e) = active.write_at(offset, &w.buf) {
            return Err(self.write_failed(e, w.buf.len()));
        }
        let (offset32, len32) = (
            u32::try_from(offset).unwrap_or(u32::MAX),
            u32::try_from(len).unwrap_or(u32::MAX),
        );
        w.offset += len;
        active.data_end.store(w.offset, Ordering::Release);
        self.count_appended(&active, len, hint_entry_len(key));
        self.dirty.store(true, Ordering::Relaxed);
        Ok((active, offset32, len32))
    }

    fn sync_if_every_write(&self, w: &Writer) -> Result<()> {
        if self.durability == Durability::EveryWrite {
            if let Some(active) = &w.active {
                active.sync().map_err(|e| self.fail(e))?;
            }
        }
        Ok(())
    }

    /// Counts appended records against the size bound, with the hint entries they add: the hint
    /// file is written when the segment is sealed, and takes disk space as the records do.
    fn count_appended(&self, active: &Segment, records: u64, hint_added: u64) {
        active.hint_bytes.fetch_add(hint_added, Ordering::Relaxed);
        self.disk_bytes.fetch_add(records + hint_added, Ordering::Relaxed);
    }

    /// A write that could not land: a full device is reported as [`Error::DiskFull`] and latches
    /// nothing (the records were not published, and the next write goes to the same offset), any
    /// other failure latches the store read-only.
    fn write_failed(&self, e: Error, needed: usize) -> Error {
        if e.is_no_space() {
            self.disk_full("write segment", needed as u64)
        } else {
            self.fail(e)
        }
    }

    fn disk_full(&self, op: &'static str, needed: u64) -> Error {
        let e = Error::DiskFull {
            path: self.dir.path.clone(),
            op,
            needed,
        };
        tracing::warn!(error = %e, "file store write refused");
        e
    }

    /// Only reachable if a roll failed and its error was dropped; kept as an error, not a panic.
    fn no_active_segment(&self) -> Error {
        self.disk_full("append to a segment", self.segment_size)
    }

    /// Seals the active segment (its fsync and hint come later) and starts a new one.
    ///
    /// A device too full for the new segment's reservation makes room by evicting the oldest
    /// segments (a cache shrinks before it fails); with nothing left to evict the write gets
    /// [`Error::DiskFull`]. No failure here latches: nothing was written, and the next write tries
    /// again, so writes resume once space returns.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        if let Some(active) = w.active.take() {
            self.seal(w, active)?;
        }
        w.offset = self.segment_size;
        let id = w.next_segment_id;
        let segment = loop {
            match Segment::create(&self.dir, id, self.segment_size) {
                Ok(segment) => break Arc::new(segment),
                Err(e) if e.is_no_space() => {
                    if !self.evict_oldest(w, false)? {
                        return Err(self.disk_full("create segment", self.segment_size));
                    }
                }
                Err(e) => return Err(e),
            }
        };
        w.next_segment_id = w.next_segment_id.saturating_add(1);
        let hint_frame = (format::HINT_HEADER_LEN + format::HINT_TRAILER_LEN) as u64;
        segment.hint_bytes.store(hint_frame, Ordering::Relaxed);
        self.segments.write().insert(id, Arc::clone(&segment));
        self.disk_bytes
            .fetch_add(SEGMENT_HEADER_LEN as u64 + hint_frame, Ordering::Relaxed);
        w.active = Some(segment);
        w.offset = SEGMENT_HEADER_LEN as u64;
        // The new name must be durable before records in it are acknowledged as durable.
        self.dir.sync().map_err(|e| self.fail(e))
    }

    /// Seals the active segment: its hint is written once the segment is fsynced, which happens
    /// off the write path (the flusher, the compactor, `flush`, close), so filling a segment does
    /// not stall the writer for a 64 MiB fsync.
    ///
    /// The space reserved past the last record is given back now (the file is truncated to its
    /// data), so a sealed segment holds on disk only what it stores.
    fn seal(&self, w: &mut Writer, active: Arc<Segment>) -> Result<()> {
        if let Err(e) = active.truncate_to_data() {
            // Only space is at stake: the reservation stays until the segment is removed.
            tracing::warn!(error = %e, "could not release the unused tail of a sealed segment");
        }
        let sealed = Sealed { segment: active };
        if self.durability == Durability::EveryWrite {
            // Every write call fsyncs before it returns, but a batch that rolled mid-way has
            // records here that its final fsync (of the new segment) does not cover: the hint
            // must not describe them before they are durable. The power-loss test found this.
            sealed.segment.sync().map_err(|e| self.fail(e))?;
            self.write_hint(&sealed);
        } else {
            w.unsynced.push(sealed);
        }
        Ok(())
    }

    /// fsyncs sealed segments, then writes their hints. A segment evicted or compacted meanwhile
    /// needs neither.
    fn sync_sealed(&self, sealed: Vec<Sealed>) -> Result<()> {
        for s in sealed {
            if !self.is_listed(&s.segment) {
                continue;
            }
            s.segment.sync().map_err(|e| self.fail(e))?;
            self.write_hint(&s);
        }
        Ok(())
    }

    fn is_listed(&self, segment: &Segment) -> bool {
        self.segments.read().contains_key(&segment.id)
    }

    fn write_hint(&self, sealed: &Sealed) {
        if !self.is_listed(&sealed.segment) {
            return;
        }
        // Built from the segment itself, not kept in memory while the segment fills: that cost
        // 28 bytes plus the key per record, more than the index entry. The segment was just
        // written, so its pages are in the page cache.
        let seg = &sealed.segment;
        // A hint is an optimisation: if it is lost or torn, the next open scans the segment.
        // Its bytes were counted as the records were appended (`count_appended`).
        let written =
            recovery::hint_of_sealed(seg).and_then(|hint| recovery::write_hint(&self.dir, seg.id, &hint));
        if let Err(e) = written {
            tracing::warn!(error = %e, "could not write a hint file; the next open will scan that segment");
        }
    }

    /// fsyncs every segment that can hold records appended since segment `since_id` became
    /// active (the active one and any sealed since), for callers that are about to delete the
    /// originals of records they copied. Runs under the writer lock, so no flush can have taken
    /// those segments out of `unsynced` meanwhile.
    fn sync_since(&self, w: &Writer, since_id: u64) -> Result<()> {
        for s in w.unsynced.iter().filter(|s| s.segment.id >= since_id) {
            s.segment.sync().map_err(|e| self.fail(e))?;
        }
        match &w.active {
            Some(active) => active.sync().map_err(|e| self.fail(e)),
            None => Ok(()),
        }
    }

    /// fsyncs the sealed segments waiting for it and writes their hints (the compactor's tick).
    pub(crate) fn sync_sealed_pending(&self) -> Result<()> {
        let _sync = self.sync_lock.lock();
        let sealed = std::mem::take(&mut self.writer.lock().unsynced);
        self.sync_sealed(sealed)
    }

    fn seal_on_close(&self) -> Result<()> {
        // After a latch nothing more is written, and the caller must learn that what it wrote
        // since the failure may not be durable.
        self.check_writable()?;
        let _sync = self.sync_lock.lock();
        let mut w = self.writer.lock();
        let sealed = std::mem::take(&mut w.unsynced);
        self.sync_sealed(sealed)?;
        let Some(active) = w.active.take() else {
            return Ok(());
        };
        if w.offset == SEGMENT_HEADER_LEN as u64 {
            // Nothing was written: remove the empty segment instead of keeping it around.
            self.remove_segment(&mut w, &active)?;
            return self.sync_removals();
        }
        active.sync().map_err(|e| self.fail(e))?;
        self.seal(&mut w, active)?;
        let sealed = std::mem::take(&mut w.unsynced);
        self.sync_sealed(sealed)
    }

    fn flush(&self) -> Result<()> {
        self.check_writable()?;
        let _sync = self.sync_lock.lock();
        // Again under the lock: a flush that failed while this one waited has latched the store,
        // and an fsync retried after a failure can report success for pages the kernel dropped.
        self.check_writable()?;
        self.dirty.store(false, Ordering::Relaxed);
        let (sealed, active) = {
            let mut w = self.writer.lock();
            (std::mem::take(&mut w.unsynced), w.active.clone())
        };
        // Outside the writer lock: writers go on while we wait for the disk. Concurrent flushes
        // are serialised by `sync_lock`, so none returns before segments another one took are
        // durable.
        self.sync_sealed(sealed)?;
        match active {
            Some(active) => active.sync().map_err(|e| self.fail(e)),
            None => Ok(()),
        }
    }

    pub(crate) fn flush_if_dirty(&self) -> Result<()> {
        if self.dirty.load(Ordering::Relaxed) && !self.latch.is_latched() {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn clear(&self) -> Result<()> {
        self.check_writable()?;
        let mut w = self.writer.lock();
        // Raise the minimum sequence number first: once that is durable, every older record is
        // ignored by recovery, so removing the files is only space reclamation.
        let meta = Meta {
            segment_size: self.segment_size,
            min_seq: w.next_seq,
            max_size: self.max_bytes,
        };
        self.dir.write_meta(&meta).map_err(|e| self.fail(e))?;
        self.index.clear();
        w.ghosts.clear();
        w.filling = true;
        self.live_bytes.store(0, Ordering::Relaxed);
        // Every segment goes, the active one too; the next write starts a new one.
        w.active = None;
        w.offset = self.segment_size;
        let old: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        for seg in old {
            self.remove_segment(&mut w, &seg)?;
        }
        self.sync_removals()
    }

    /// Makes removed segment names durable. Compaction drops tombstones from a segment once it
    /// is the oldest, so an unlink that a power loss undoes could bring deleted keys back: a
    /// failure here latches.
    fn sync_removals(&self) -> Result<()> {
        self.dir.sync().map_err(|e| self.fail(e))
    }

    /// Forgets a segment and deletes its files. Readers holding it finish first (the segments
    /// lock); the mapping outlives the unlink. A sealed segment still waiting for its fsync is
    /// dropped from that queue, so nothing keeps its deleted file open.
    ///
    /// Idempotent: a segment already removed (say, evicted while compaction was rewriting it) is
    /// left alone.
    fn remove_segment(&self, w: &mut Writer, seg: &Segment) -> Result<()> {
        w.unsynced.retain(|s| s.segment.id != seg.id);
        if self.segments.write().remove(&seg.id).is_none() {
            return Ok(());
        }
        self.slots.release(seg.id);
        self.disk_bytes.fetch_sub(seg.disk_bytes(), Ordering::Relaxed);
        // A segment that stays on disk after the store forgot it would come back at the next
        // open, with records whose tombstones may be gone: latch.
        self.dir
            .disk
            .remove_file(&seg.path)
            .map_err(|e| self.fail(Error::io("remove segment", &seg.path, e)))?;
        let hint = segment::hint_path(&self.dir.path, seg.id);
        match self.dir.disk.remove_file(&hint) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove hint", &hint, e)),
        }
    }

    fn stats(&self) -> FileStoreStats {
        let disk_bytes = self.disk_bytes.load(Ordering::Relaxed);
        let reserved = {
            let w = self.writer.lock();
            w.active
                .as_ref()
                .map_or(0, |a| self.segment_size.saturating_sub(a.data_end()))
        };
        let live_bytes = self.live_bytes.load(Ordering::Relaxed);
        let c = &self.counters;
        FileStoreStats {
            live_items: self.index.len() as u64,
            live_bytes,
            disk_bytes,
            segments: self.segments.read().len() as u64,
            allocated_bytes: disk_bytes + reserved,
            dead_bytes: disk_bytes.saturating_sub(live_bytes),
            recovery_skipped_records: self.recovery.damaged_ranges,
            corrupt_reads: c.corrupt_reads.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            second_chances: c.second_chances.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
        }
    }

    fn verify(&self, mut progress: impl FnMut(u64, u64)) -> VerifyReport {
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let total: u64 = segments.iter().map(|s| s.data_end()).sum();
        let mut report = VerifyReport::default();
        let mut done = 0;
        for seg in segments {
            let scan = seg.scan_data();
            report.segments += 1;
            report.records += scan.records.len() as u64;
            // Everything between the last good record and the data end the index relies on is
            // damage: torn bytes, or zeros, which a scan alone takes for the end of the log.
            let end = seg.data_end();
            let lost_tail = (scan.data_end < end).then_some(scan.data_end..end);
            for range in scan.damaged.iter().chain(lost_tail.iter()) {
                report.damaged_ranges += 1;
                report.damaged_bytes += range.end - range.start;
            }
            if !scan.damaged.is_empty() || lost_tail.is_some() {
                report
                    .problems
                    .push(format!("{}: damaged records", seg.path.display()));
            }
            done += seg.data_end();
            progress(done, total);
        }
        report
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

    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        FileStore::get_checked(self, key)
    }

    fn mark_all_suspect(&self) -> Result<()> {
        FileStore::mark_all_suspect(self);
        Ok(())
    }

    fn confirm(&self, key: &str) -> Result<()> {
        FileStore::confirm(self, key);
        Ok(())
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
        }
    }
}
