//! One segment file: a preallocated, append-only log of records, read through an mmap.
//!
//! Reads go through the map alone, so a segment keeps its file open only while it may still be
//! written or need an fsync: from its creation until it is sealed and an fsync after that has
//! succeeded. Then the file is closed; the map stays valid without it. A store of many segments
//! (a 64 GiB bound with 64 MiB segments is 1,024) kept one open file per segment, and past the
//! process's limit on open files (1,024 by default on many systems) its rolls and its open
//! failed with `EMFILE`. The rare write or fsync of a closed segment (recovery's cut of a torn
//! tail, its fsync of a segment a killed run left) opens the file again for as long as needed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;
use parking_lot::Mutex;

use super::dir::LockedDir;
use super::format::{self, HINT_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN};
use super::mmap::map_segment;
use crate::disk::{Disk, DiskFile};
use crate::error::{Error, Result};
use crate::files::LOST_EXT;

/// File name of segment `id`.
pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{SEGMENT_EXT}"))
}

/// File name of the hint file of segment `id`.
pub(crate) fn hint_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{HINT_EXT}"))
}

/// File name of the kept hint of segment `id` after the segment was lost to damage (see `lost`).
pub(crate) fn lost_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.{LOST_EXT}"))
}

/// Parses `{id:020}.{ext}` back into an id.
pub(crate) fn parse_file_id(name: &str, ext: &str) -> Option<u64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// An open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) id: u64,
    /// Mixed into every record's CRC (see `format::SegmentHeader`).
    pub(crate) salt: u32,
    pub(crate) path: PathBuf,
    /// The open file, while the segment may be written or still need an fsync (see the module
    /// docs); reads never use it.
    file: Mutex<FileSlot>,
    /// To open the file again where a closed segment needs it.
    disk: Disk,
    map: Mmap,
    /// Bytes of records the index points at (values only).
    pub(crate) live_bytes: AtomicU64,
    /// Offset just past the last record written; final once sealed.
    pub(crate) data_end: AtomicU64,
    /// Length of the segment's hint file once it is written (0 before).
    pub(crate) hint_bytes: AtomicU64,
    /// False while records are appended to it (from its creation until `Inner::seal`): its
    /// space past the data end is reserved. Read by `stats` without the writer lock.
    pub(crate) sealed: AtomicBool,
    /// Compaction found damaged records here: it leaves the segment alone until it is the
    /// oldest (see `maintenance`, `rewrite`). In memory only.
    pub(crate) damaged: AtomicBool,
    /// Damaged ranges known in it, counted as dropped when the segment goes (see
    /// `Inner::drop_segment`): what the open's scan found (a torn tail it cut off included) and
    /// bytes past the segment size, or what a later read of all its records in this run found (a
    /// compaction's, an eviction's, the planner's listing) if that is more. The most any read
    /// found: a sealed segment's bytes only change by damage. In memory only: a hint records no
    /// damage, so a segment opened from one counts none until read.
    pub(crate) damaged_ranges: AtomicU64,
    /// The first segment compaction moved records of this one to (`u64::MAX`: none). It may
    /// have stopped before they were durable (the segment was evicted under it, it was asked to
    /// stop, it found damage, the device was full): whoever removes the segment first fsyncs
    /// that one and every newer one. In memory only.
    pub(crate) moved_to: AtomicU64,
    /// Held across each fsync; true once one failed (see [`Segment::sync`]).
    sync_failed: Mutex<bool>,
    /// The map is advised for random reads (see `map_reads`): scans ask for their bytes ahead.
    random_reads: AtomicBool,
}

/// How many sealed segments the writer leaves to the flusher's fsync, each with its file open:
/// when it seals the next, it fsyncs the oldest of any more itself (`Inner::seal`), which closes
/// it. Left to the flusher, a burst of writes kept a file open per segment it filled, and a
/// store of small segments passed the limit on open files within a second. With a flush's (as
/// many again, taken before), the lock, the directory and the active segment, a store holds
/// about 36 files open at most, whatever its number of segments.
pub(crate) const OPEN_UNSYNCED: usize = 16;

/// A segment's file, open or not.
#[derive(Debug)]
struct FileSlot {
    /// Shared so an fsync can run without the slot's lock: a write to the active segment takes
    /// it, and must not wait for a flush's fsync of that segment.
    open: Option<Arc<DiskFile>>,
    /// Sealed, and every write to it durable: an fsync has nothing to do, and the file is
    /// closed. Set by the first fsync that succeeds after the seal.
    durable: bool,
}

impl FileSlot {
    fn open(file: DiskFile) -> Mutex<FileSlot> {
        Mutex::new(FileSlot {
            open: Some(Arc::new(file)),
            durable: false,
        })
    }
}

/// A scan of a segment whose map is advised for random reads asks for the pages ahead of it:
/// each fault would read only its own page.
impl format::ReadAhead for Segment {
    fn read_ahead(&self, range: std::ops::Range<usize>) {
        // Advice only: without it the scan faults its pages in one at a time.
        if let Err(e) = self
            .map
            .advise_range(memmap2::Advice::WillNeed, range.start, range.len())
        {
            tracing::debug!(path = %self.path.display(), error = %e, "madvise(MADV_WILLNEED) of a scan's next bytes failed");
        }
    }
}

/// The unit of [`Segment::ahead_of_record`]'s guess: a page of the common 4 KiB size (where
/// pages are larger, a record it takes for straddling two may fit in one, and is asked for
/// needlessly).
const PAGE: u64 = 4096;

/// Point reads of one segment in the order of their offsets (an eviction's copies, the keys of
/// its candidates): where the map is advised for random reads, each read asks first for the
/// bytes ahead of it, a [`format::READ_AHEAD`] window at a time, as a scan does. Without it, a
/// segment out of the page cache was read a page per fault: an eviction in a 32 MiB memory
/// cgroup took twice as long as with the read-around.
pub(crate) struct InOrder<'a> {
    seg: &'a Segment,
    window: format::AheadWindow,
}

impl<'a> InOrder<'a> {
    pub(crate) fn new(seg: &'a Segment) -> InOrder<'a> {
        InOrder {
            seg,
            window: format::AheadWindow::default(),
        }
    }

    /// Before a read at `offset`.
    pub(crate) fn at(&mut self, offset: u64) -> &'a Segment {
        if self.seg.random_reads.load(Ordering::Relaxed) {
            let offset = usize::try_from(offset).unwrap_or(usize::MAX);
            let end = usize::try_from(self.seg.data_end()).unwrap_or(usize::MAX);
            if let Some(range) = self.window.due(offset, end) {
                format::ReadAhead::read_ahead(self.seg, range);
            }
        }
        self.seg
    }
}

/// Why a segment file is not one the store can read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unreadable {
    /// Empty, or every byte of it reads as zero: a roll that a power loss cut short before the header
    /// reached the disk (the header is fsynced before the roll makes the name durable, but a
    /// file system may commit the new name on its own first, and stores before that fsync
    /// left such files behind). Nothing in it was ever acknowledged.
    Unwritten,
    /// The header is damaged or names another segment: why.
    Damaged(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::Unwritten => f.write_str("no byte written (a roll cut short)"),
            Unreadable::Damaged(reason) => f.write_str(reason),
        }
    }
}

impl Segment {
    /// Creates segment `id` with its header written and `size` bytes reserved on the device.
    ///
    /// The space is allocated now (`fallocate`), not left as a sparse hole: reading a hole through
    /// the map needs a fresh page, and on a full tmpfs there is none, so the read would raise
    /// SIGBUS. With the space reserved, neither a write nor a read of this segment can run out of
    /// room later. A failure removes the file again, so nothing is left behind.
    pub(crate) fn create(dir: &LockedDir, id: u64, size: u64) -> Result<Segment> {
        Self::create_in(&dir.disk, &dir.path, dir.file_mode, id, size)
    }

    /// [`Segment::create`] in a directory given by its parts (tests make segments without a store).
    pub(crate) fn create_in(disk: &Disk, dir: &Path, mode: u32, id: u64, size: u64) -> Result<Segment> {
        let path = segment_path(dir, id);
        let file = disk
            .create_new(&path, mode)
            .map_err(|e| Error::io("create segment", &path, e))?;
        match Self::init(disk, file, &path, id, size) {
            Ok(segment) => Ok(segment),
            Err(e) => {
                if let Err(rm) = disk.remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %rm, "could not remove a segment whose creation failed");
                }
                Err(e)
            }
        }
    }

    fn init(disk: &Disk, file: DiskFile, path: &Path, id: u64, size: u64) -> Result<Segment> {
        let salt = format::new_salt(id);
        file.allocate(size)
            .map_err(|e| Error::io("reserve segment space", path, e))?;
        file.write_all_at(
            &format::encode_segment_header(format::SegmentHeader { id, salt }),
            0,
        )
        .map_err(|e| Error::io("write segment header", path, e))?;
        // Durable before the roll makes the name durable: a power cut between the two left a
        // segment of the full reserved size whose header read as zeros, which the next open
        // counted as damaged and moved aside, keeping its space, for nothing that was lost.
        file.sync_data()
            .map_err(|e| Error::io("fsync segment header", path, e))?;
        let len = usize::try_from(size).unwrap_or(usize::MAX);
        let map = map_segment(file.file(), len).map_err(|e| Error::io("mmap segment", path, e))?;
        Ok(Segment {
            id,
            salt,
            path: path.to_owned(),
            file: FileSlot::open(file),
            disk: disk.clone(),
            map,
            live_bytes: AtomicU64::new(0),
            data_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            hint_bytes: AtomicU64::new(0),
            sealed: AtomicBool::new(false),
            damaged: AtomicBool::new(false),
            damaged_ranges: AtomicU64::new(0),
            moved_to: AtomicU64::new(u64::MAX),
            sync_failed: Mutex::new(false),
            random_reads: AtomicBool::new(false),
        })
    }

    /// Opens an existing segment and checks its header; the file is closed again once it is
    /// mapped (see the module docs). Only its first `max_len`
    /// bytes (the store's segment size) are mapped: no segment the store writes is longer, so
    /// what a file holds past that is not its records. Returns the segment and how many bytes
    /// past `max_len` the file held.
    ///
    /// Returns `Ok(Err(_))` if the header is damaged or names another id (see [`Unreadable`]),
    /// and [`Error::UnsupportedVersion`] if a newer format version wrote it.
    pub(crate) fn open(
        disk: &Disk,
        path: PathBuf,
        id: u64,
        max_len: u64,
    ) -> Result<std::result::Result<(Segment, u64), Unreadable>> {
        let file = disk
            .open(&path)
            .map_err(|e| Error::io("open segment", &path, e))?;
        let len = file
            .file()
            .metadata()
            .map_err(|e| Error::io("stat segment", &path, e))?
            .len();
        if len == 0 {
            // Created, and cut short before its space was reserved.
            return Ok(Err(Unreadable::Unwritten));
        }
        if len < SEGMENT_HEADER_LEN as u64 {
            // Zeros up to a point inside the header are no more written than an empty file.
            let mut head = [0u8; SEGMENT_HEADER_LEN];
            let head = head
                .get_mut(..usize::try_from(len).unwrap_or(0))
                .unwrap_or_default();
            file.file()
                .read_exact_at(head, 0)
                .map_err(|e| Error::io("read segment header", &path, e))?;
            if head.iter().all(|&b| b == 0) {
                return Ok(Err(Unreadable::Unwritten));
            }
            return Ok(Err(Unreadable::Damaged(format!(
                "{len} bytes long, shorter than a segment header"
            ))));
        }
        // Records are written front to back, so written data ends at the first hole. A store
        // written before segments were reserved has a sparse tail; mapping only up to the hole
        // keeps a scan from faulting a page in (SIGBUS on a full tmpfs).
        let past = len.saturating_sub(max_len);
        let len = len.min(max_len.max(SEGMENT_HEADER_LEN as u64));
        let hole = first_hole(file.file());
        let len = hole.map_or(len, |hole| hole.clamp(SEGMENT_HEADER_LEN as u64, len));
        let map = || {
            map_segment(file.file(), usize::try_from(len).unwrap_or(usize::MAX))
                .map_err(|e| Error::io("mmap segment", &path, e))
        };
        // Read, not mapped: in such a store, a roll cut short left its header in a hole, and
        // the map would fault a page in for it too, where a read returns zeros.
        let mut header = [0u8; SEGMENT_HEADER_LEN];
        file.file()
            .read_exact_at(&mut header, 0)
            .map_err(|e| Error::io("read segment header", &path, e))?;
        let salt = match format::decode_segment_header(&header) {
            Ok(header) if header.id == id => header.salt,
            Ok(header) => {
                return Ok(Err(Unreadable::Damaged(format!(
                    "header names segment {}",
                    header.id
                ))))
            }
            // A newer uno-cache wrote it: refuse the directory rather than delete its data.
            Err(format::HeaderError::Version(found)) => {
                return Err(Error::UnsupportedVersion {
                    path,
                    found,
                    supported: format::FORMAT_VERSION,
                })
            }
            Err(e) => {
                // Not one byte written: a roll cut short (see `Unreadable::Unwritten`). Past the
                // header, the bytes up to the first hole are checked; a header in a hole has
                // none, and mapping it is what must not happen.
                let zeros = |bytes: &[u8]| bytes.iter().all(|&b| b == 0);
                let unwritten = zeros(&header)
                    && (hole.is_some_and(|hole| hole <= SEGMENT_HEADER_LEN as u64) || zeros(&map()?));
                return Ok(Err(if unwritten {
                    Unreadable::Unwritten
                } else {
                    Unreadable::Damaged(format!("bad header: {e}"))
                }));
            }
        };
        let map = map()?;
        // Closed here: kept, one per segment, they failed the open of a store of more segments
        // than the process may open files. Recovery opens it again to cut or fsync it.
        drop(file);
        let segment = Segment {
            id,
            salt,
            path,
            file: Mutex::new(FileSlot {
                open: None,
                durable: false,
            }),
            disk: disk.clone(),
            map,
            live_bytes: AtomicU64::new(0),
            data_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            hint_bytes: AtomicU64::new(0),
            // An open store appends only to segments it creates.
            sealed: AtomicBool::new(true),
            damaged: AtomicBool::new(false),
            damaged_ranges: AtomicU64::new(0),
            moved_to: AtomicU64::new(u64::MAX),
            sync_failed: Mutex::new(false),
            random_reads: AtomicBool::new(false),
        };
        Ok(Ok((segment, past)))
    }

    /// Advises the map for random reads (see `map_reads`): a fault reads its own page, and
    /// scans ask for their bytes ahead from now on. Advice only: a kernel that refuses it reads
    /// around faults as before.
    pub(crate) fn advise_random_reads(&self) {
        if let Err(e) = self.map.advise(memmap2::Advice::Random) {
            tracing::debug!(path = %self.path.display(), error = %e, "madvise(MADV_RANDOM) of a segment map failed; its faults read around themselves");
        }
        self.random_reads.store(true, Ordering::Relaxed);
    }

    /// The records of `bytes` (a prefix of the map), asking for them ahead if the map is
    /// advised for random reads.
    fn records_of<'a>(&'a self, bytes: &'a [u8]) -> format::Records<'a> {
        let records = format::records(bytes, self.salt);
        if self.random_reads.load(Ordering::Relaxed) {
            records.read_ahead(self)
        } else {
            records
        }
    }

    /// Scans the records up to `end`, a data end read earlier (an active segment's grows).
    pub(crate) fn scan_data_to(&self, end: u64) -> format::Scan<'_> {
        let end = usize::try_from(end).unwrap_or(usize::MAX);
        format::scan(self.records_of(self.map.get(..end).unwrap_or(&self.map)))
    }

    /// The records up to the data end, one at a time (see [`format::records`]).
    pub(crate) fn records(&self) -> format::Records<'_> {
        let end = usize::try_from(self.data_end()).unwrap_or(usize::MAX);
        self.records_of(self.map.get(..end).unwrap_or(&self.map))
    }

    /// Notes what `records`, a read of all this segment's records that has ended, found damaged
    /// (see [`Segment::damaged_ranges`]).
    pub(crate) fn note_damage(&self, records: &format::Records<'_>) {
        self.damaged_ranges
            .fetch_max(records.damaged_ranges(), Ordering::Relaxed);
    }

    /// Scans the whole file, past any known data end (recovery without a hint).
    pub(crate) fn scan_file(&self) -> format::Scan<'_> {
        format::scan(self.records_of(&self.map))
    }

    /// Before a get reads the record at `offset`, whose length it does not know yet; `typical`
    /// is the length of the records written lately. Where the map is advised for random reads
    /// and a record that long would not fit in the page it starts in, asks for its pages at once:
    /// otherwise the header's page and the rest were two reads of the device one after the
    /// other. A record likely to fit in its page needs no request (the fault reads that page),
    /// so a get served from the page cache makes no system call. Returns where the bytes asked
    /// for, or that page, end.
    pub(crate) fn ahead_of_record(&self, offset: u64, typical: u32) -> u64 {
        let page_end = (offset / PAGE + 1).saturating_mul(PAGE);
        let end = offset.saturating_add(u64::from(typical));
        if !self.random_reads.load(Ordering::Relaxed) || end <= page_end {
            return page_end;
        }
        self.ahead_of(offset, end - offset);
        end
    }

    /// Once the record at `offset` is known to be `len` bytes: asks for the part of it past
    /// `asked_to` (what [`Segment::ahead_of_record`] returned) in one request, if there is one.
    pub(crate) fn ahead_of_rest(&self, asked_to: u64, offset: u64, len: u32) {
        let end = offset.saturating_add(u64::from(len));
        if self.random_reads.load(Ordering::Relaxed) && end > asked_to {
            self.ahead_of(asked_to, end - asked_to);
        }
    }

    fn ahead_of(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.data_end());
        if let (Ok(start), Ok(end)) = (usize::try_from(offset), usize::try_from(end)) {
            if start < end {
                format::ReadAhead::read_ahead(self, start..end);
            }
        }
    }

    /// Decodes the record at `offset`, if the bytes are inside the file.
    pub(crate) fn decode_at(&self, offset: u64, len: u32) -> Option<format::Decoded<'_>> {
        self.read(offset, len)
            .map(|bytes| format::decode_record(bytes, self.salt))
    }

    /// The key of the record of `len` bytes at `offset`, read without checking the record's
    /// CRC: for bookkeeping about a record that was checked when it was listed (see `plan`),
    /// never to serve a read.
    pub(crate) fn key_at(&self, offset: u64, len: u32) -> Option<&str> {
        let bytes = self.read(offset, len)?;
        let header = format::peek_record_header(bytes)?;
        let key_end = format::RECORD_HEADER_LEN.checked_add(usize::from(header.key_len))?;
        std::str::from_utf8(bytes.get(format::RECORD_HEADER_LEN..key_end)?).ok()
    }

    /// The record of `len` bytes at `offset`, if it decodes there.
    pub(crate) fn located(&self, offset: u64, len: u32) -> Option<format::Located<'_>> {
        match self.decode_at(offset, len)? {
            format::Decoded::Record(record, decoded) if decoded == len as usize => {
                Some(format::Located { offset, len, record })
            }
            _ => None,
        }
    }

    /// The bytes `offset..offset + len`, or `None` if they are not all written data: past the
    /// data end lie reserved zeros or, once the segment is sealed, nothing (it was truncated).
    pub(crate) fn read(&self, offset: u64, len: u32) -> Option<&[u8]> {
        let end = offset.checked_add(u64::from(len))?;
        if end > self.data_end() {
            return None;
        }
        let start = usize::try_from(offset).ok()?;
        self.map.get(start..usize::try_from(end).ok()?)
    }

    /// Writes `bytes` at `offset` (not through the map, so an I/O error is an error, not SIGBUS).
    pub(crate) fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        // The active segment's file is open: a write only opens one in tests that damage a
        // sealed segment.
        let file = self.opened(&mut self.file.lock(), "open segment to write")?;
        file.write_all_at(bytes, offset)
            .map_err(|e| Error::io("write segment", &self.path, e))
    }

    /// The open file of the segment, opened again if it was closed; it stays open until the
    /// next fsync succeeds (see the module docs).
    fn opened(&self, slot: &mut FileSlot, op: &'static str) -> Result<Arc<DiskFile>> {
        if let Some(file) = &slot.open {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(
            self.disk
                .open(&self.path)
                .map_err(|e| Error::io(op, &self.path, e))?,
        );
        slot.open = Some(Arc::clone(&file));
        slot.durable = false;
        Ok(file)
    }

    /// Makes written data durable.
    ///
    /// One fsync of the segment at a time, and none succeeds after one failed: Linux reports a
    /// writeback error to one fsync of an open file and marks the pages clean, so a second
    /// fsync (a write's under `EveryWrite`, racing a flush's) returned success for records the
    /// kernel had dropped, and its write was acknowledged as durable.
    ///
    /// The first fsync that succeeds once the segment is sealed closes its file: nothing more is
    /// written to it, so later fsyncs have nothing to do. Until then the file stays open, so the
    /// fsync goes to the file the writes went to, and no writeback error can be missed for want
    /// of an open file that saw it.
    pub(crate) fn sync(&self) -> Result<()> {
        let mut failed = self.sync_failed.lock();
        if *failed {
            return Err(Error::io(
                "fsync segment",
                &self.path,
                std::io::Error::other(
                    "an earlier fsync of this segment failed: its unsynced writes may be lost",
                ),
            ));
        }
        // Read before the fsync: `seal` truncates before it marks the segment sealed, so what
        // this fsync covers includes everything written to a segment seen sealed here.
        let sealed = self.sealed.load(Ordering::Acquire);
        let file = {
            let mut slot = self.file.lock();
            if slot.durable {
                return Ok(());
            }
            self.opened(&mut slot, "open segment to fsync")?
        };
        file.sync_data().map_err(|e| {
            *failed = true;
            Error::io("fsync segment", &self.path, e)
        })?;
        if sealed {
            let mut slot = self.file.lock();
            slot.durable = true;
            slot.open = None;
        }
        Ok(())
    }

    /// Gives the reserved space past the data end back to the device: the segment takes no more
    /// writes (sealed), or a crash left it (recovery). Reads never go past the data end, so the
    /// mapping, longer than the file from now on, is never touched there.
    pub(crate) fn truncate_to_data(&self) -> Result<()> {
        let end = self.data_end();
        let mut slot = self.file.lock();
        let len = match &slot.open {
            Some(file) => file.file().metadata(),
            // Closed (opened by recovery): opened again only to cut it.
            None => std::fs::metadata(&self.path),
        }
        .map_err(|e| Error::io("stat segment", &self.path, e))?
        .len();
        if len > end {
            self.opened(&mut slot, "open segment to truncate")?
                .set_len(end)
                .map_err(|e| Error::io("truncate segment", &self.path, e))?;
        }
        Ok(())
    }

    /// Whether the segment's file is open (see the module docs).
    #[cfg(test)]
    pub(crate) fn holds_file(&self) -> bool {
        self.file.lock().open.is_some()
    }

    pub(crate) fn data_end(&self) -> u64 {
        self.data_end.load(Ordering::Acquire)
    }

    /// Bytes this segment counts against the size bound: its records and its hint file.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.data_end() + self.hint_bytes.load(Ordering::Relaxed)
    }

    /// Length of the file as mapped (at most the file's length when it was mapped).
    pub(crate) fn mapped_len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Bytes of records written (header excluded).
    pub(crate) fn data_bytes(&self) -> u64 {
        self.data_end().saturating_sub(SEGMENT_HEADER_LEN as u64)
    }
}

/// Offset of the first hole in `file` (its length if it has none), or `None` where the file
/// system cannot tell.
fn first_hole(file: &File) -> Option<u64> {
    rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(0)).ok()
}

#[cfg(test)]
impl Segment {
    /// Damages the record of `key` in this segment (its last byte flipped, so its CRC fails), as
    /// a bad sector would.
    pub(crate) fn damage_record_of(&self, key: &str) {
        let rec = self
            .records()
            .find(|r| r.record.key == key)
            .unwrap_or_else(|| panic!("no record of {key} in segment {}", self.id));
        let at = rec.offset + u64::from(rec.len) - 1;
        let Some(&[byte]) = self.read(at, 1) else {
            panic!("the record of {key} ends past the data end");
        };
        if let Err(e) = self.write_at(at, &[byte ^ 1]) {
            panic!("damaging the record of {key}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment whose data end is `end`, its map advised for random reads or not.
    fn segment(dir: &Path, random: bool, end: u64) -> Segment {
        let seg = Segment::create_in(&Disk::default(), dir, 0o600, 1, 64 * 1024).unwrap();
        seg.data_end.store(end, Ordering::Release);
        if random {
            seg.advise_random_reads();
        }
        seg
    }

    #[test]
    fn a_segment_closes_its_file_once_sealed_and_synced_and_opens_it_again_only_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path(), false, 1000);
        seg.sync().unwrap();
        assert!(
            seg.holds_file(),
            "the active segment closed its file after an fsync"
        );
        seg.truncate_to_data().unwrap();
        seg.sealed.store(true, Ordering::Release);
        assert!(seg.holds_file(), "closed before the fsync after its seal");
        seg.sync().unwrap();
        assert!(!seg.holds_file(), "a sealed, synced segment kept its file open");
        // Its fsync has nothing left to do, and reads need no file.
        seg.sync().unwrap();
        assert!(!seg.holds_file());
        assert_eq!(seg.read(100, 8), Some(&[0u8; 8][..]));
        // A write (tests damaging a record) opens it again, until the next fsync.
        seg.write_at(100, b"x").unwrap();
        assert!(seg.holds_file());
        assert_eq!(seg.read(100, 1), Some(&b"x"[..]));
        seg.sync().unwrap();
        assert!(!seg.holds_file());
    }

    #[test]
    fn an_opened_segment_holds_no_file_and_recoverys_cut_and_fsync_open_it_for_as_long_as_they_need() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 1);
        drop(segment(dir.path(), false, 0));
        let (seg, past) = Segment::open(&Disk::default(), path.clone(), 1, 64 * 1024)
            .unwrap()
            .unwrap();
        assert_eq!(past, 0);
        assert!(!seg.holds_file(), "an opened segment kept its file open");
        seg.data_end.store(4096, Ordering::Release);
        seg.truncate_to_data().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        assert!(seg.holds_file(), "closed between recovery's cut and its fsync");
        seg.sync().unwrap();
        assert!(!seg.holds_file());
    }

    #[test]
    fn a_get_asks_ahead_only_for_a_record_likely_to_straddle_pages_of_a_random_read_map() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path(), true, 60_000);
        // A record of the typical 1 KiB at the start of a page fits in it: the fault reads it.
        assert_eq!(seg.ahead_of_record(8192, 1024), 3 * PAGE);
        // Near the end of a page it would not: asked for through its typical end.
        assert_eq!(seg.ahead_of_record(8192 + 3500, 1024), 8192 + 3500 + 1024);
        // The read-around reads the pages around a fault anyway: nothing asked.
        let other = tempfile::tempdir().unwrap();
        let around = segment(other.path(), false, 60_000);
        assert_eq!(around.ahead_of_record(8192 + 3500, 1024), 3 * PAGE);
    }

    #[test]
    fn a_record_longer_than_guessed_is_asked_for_past_the_guess_and_within_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let seg = segment(dir.path(), true, 20_000);
        let asked = seg.ahead_of_record(100, 5000);
        assert_eq!(asked, 5100);
        // The request itself is advice: what is pinned is that it stays inside the map.
        seg.ahead_of_rest(asked, 100, 30_000);
        seg.ahead_of_rest(asked, 100, 4000);
        // Past the data end nothing is asked for (the request stops there); the guess stands.
        assert_eq!(seg.ahead_of_record(19_990, 5000), 24_990);
    }
}
