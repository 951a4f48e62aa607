//! Opening a store: rebuild the index from hint files, or by scanning segments where a hint is
//! missing, stale or damaged.
//!
//! The algorithm, step by step, is in storage-format.md ("Recovery"). In short: for every key
//! hash (the index holds one entry per hash, see `index`) the record with the highest sequence
//! number wins (ties: a tombstone wins, then the later copy); a winning tombstone or an expired
//! value means "absent". A torn tail is cut; damage elsewhere is skipped and counted.
//!
//! Speed (a million entries after SIGKILL, the active segment scanned): keys are hashed straight
//! from the hint bytes or the mapped segment, never allocated; the segments' hints are read and
//! the segments without one scanned on one thread per core; a hint is checked while it is read;
//! each record is sorted into its index shard as it is found, and `rebuild` applies the shards
//! on one thread per core. That took the open from 0.70–0.73 s to 0.21–0.28 s on the bench
//! machine, 2 cores shared with other builds (`file_reopen_1m_after_kill`), before the shards
//! were applied apart (see `rebuild` for what that saved).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::dir::LockedDir;
use super::format::{self, Kind, Meta, HINT_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN, TMP_EXT};
use super::lapsed::Lapsed;
use crate::files::{DAMAGED_EXT, LOST_EXT};

use super::index::{Index, KeyHasher, Loc};
use super::lost;
use super::rebuild::{self, Parts, Pending};
use super::segment::{self, Segment};
use super::slots::Slots;
use crate::error::{Error, Result};

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments loaded.
    pub segments: u64,
    /// Segments whose index came from a hint file.
    pub from_hints: u64,
    /// Segments that had to be scanned (no valid hint).
    pub scanned: u64,
    /// Records seen (values and tombstones).
    pub records: u64,
    /// Damaged ranges skipped in the middle of segments (real damage).
    pub damaged_ranges: u64,
    /// Bytes in those ranges.
    pub damaged_bytes: u64,
    /// Bytes cut from a torn tail.
    pub torn_tail_bytes: u64,
    /// Segment files whose header was unreadable; they were moved aside as `{id:020}.damaged`
    /// (removed if that failed), and their records are lost.
    pub damaged_segments: u64,
    /// Segment files whose header was unreadable and whose intact hint could not be renamed to
    /// `{id:020}.lost` (the log says why): left in place, unloaded, with the hint, for the next
    /// open to try again. Their records are lost; their keys are held as deleted for this run
    /// (counted in `lost_keys`).
    #[serde(default)]
    pub damaged_segments_left: u64,
    /// Keys of segments lost to damage, or of segments whose files lost records their hints
    /// name, named by their kept hints (`{id:020}.lost`), held as deleted at this open so that
    /// no older version of them is served (every key such a hint names counts, also those
    /// whose records remain). A damaged segment without an intact hint adds none: older
    /// versions of its keys can be read again.
    #[serde(default)]
    pub lost_keys: u64,
    /// `{id:020}.lost` files whose bytes did not check, removed: the keys they named are no
    /// longer held as deleted, so older versions of them can be read again. Damage as much as
    /// a removed segment is, and gone from the directory after this open.
    #[serde(default)]
    pub damaged_lost_files: u64,
    /// Values found already expired.
    pub expired: u64,
}

pub(crate) struct Recovered {
    pub(crate) segments: BTreeMap<u64, Arc<Segment>>,
    pub(crate) index: Index,
    pub(crate) slots: Slots,
    pub(crate) hasher: KeyHasher,
    pub(crate) next_seq: u64,
    pub(crate) next_segment_id: u64,
    pub(crate) report: RecoveryReport,
    /// The keys whose values recovery found expired (see `lapsed`).
    pub(crate) lapsed: Lapsed,
}

/// One record as recovery sees it, from a hint entry or a scanned record.
struct Found<'a> {
    kind: Kind,
    key: &'a str,
    offset: u32,
    len: u32,
    seq: u64,
    expires_at_ms: u64,
}

/// Collects the records of every segment, hashed, in segment and file order.
struct Gather<'h> {
    hasher: &'h KeyHasher,
    min_seq: u64,
    max_seq: u64,
    records: u64,
    any_expiry: bool,
    pending: Parts,
}

impl Gather<'_> {
    fn push(&mut self, base: Loc, f: Found<'_>) {
        self.records += 1;
        if f.seq < self.min_seq {
            return;
        }
        self.max_seq = self.max_seq.max(f.seq);
        self.any_expiry |= f.expires_at_ms != 0;
        self.pending.push(Pending {
            hash: self.hasher.hash(f.key),
            seq: f.seq,
            loc: base.at(u64::from(f.offset)),
            expires_at_ms: f.expires_at_ms,
            len: f.len,
            kind: f.kind,
        });
    }

    fn push_scan(&mut self, base: Loc, scan: &format::Scan<'_>) {
        for rec in &scan.records {
            let r = rec.record;
            self.push(
                base,
                Found {
                    kind: r.kind,
                    key: r.key,
                    offset: u32::try_from(rec.offset).unwrap_or(u32::MAX),
                    len: rec.len,
                    seq: r.seq,
                    expires_at_ms: r.expires_at_ms,
                },
            );
        }
    }

    /// Takes the records of `seg` from its hint file `bytes` in one pass; returns its data end,
    /// or `None` (and takes nothing) if the hint is damaged or does not match the segment.
    fn hint(&mut self, seg: &Segment, base: Loc, bytes: &[u8]) -> Option<u64> {
        let path = || segment::hint_path(&seg.path.with_file_name(""), seg.id);
        let view = match format::check_hint(bytes) {
            Ok(view) => view,
            Err(e) => {
                tracing::warn!(path = %path().display(), error = %e, "ignoring a damaged hint file; scanning its segment");
                return None;
            }
        };
        let fits_file = view.segment_id == seg.id
            && view.data_end >= SEGMENT_HEADER_LEN as u64
            && view.data_end <= seg.mapped_len();
        let (records, mark) = (self.records, self.pending.mark());
        let taken = fits_file
            && view
                .try_for_each(|e| {
                    // At least as long as a record of its key: a shorter entry could point at
                    // the very end of the largest segment, an offset an index entry cannot hold.
                    let inside = u64::from(e.offset) >= SEGMENT_HEADER_LEN as u64
                        && u64::from(e.offset) + u64::from(e.len) <= view.data_end
                        && e.len as usize >= format::record_len(e.key.len(), 0);
                    if !inside {
                        return Err(format::HeaderError::Field("entry outside the segment's data"));
                    }
                    self.push(
                        base,
                        Found {
                            kind: e.kind,
                            key: e.key,
                            offset: e.offset,
                            len: e.len,
                            seq: e.seq,
                            expires_at_ms: e.expires_at_ms,
                        },
                    );
                    Ok(())
                })
                .is_ok();
        if !taken {
            tracing::warn!(path = %path().display(), "ignoring a hint file that is damaged or does not match its segment");
            // A stale hint may have raised `max_seq`: that only skips sequence numbers.
            self.records = records;
            self.pending.truncate(&mark);
            return None;
        }
        Some(view.data_end)
    }
}

/// Rebuilds the index from the directory. Values that expired before `now_ms` are dropped (the
/// caller moves it back by the store's keep-expired window, so stale copies survive a restart).
/// The index is built with `hasher`, which the store keeps.
pub(crate) fn recover(dir: &LockedDir, meta: &Meta, now_ms: u64, hasher: KeyHasher) -> Result<Recovered> {
    let (segment_ids, hint_ids, mut lost_ids) = list(dir)?;
    for id in hint_ids.difference(&segment_ids) {
        dir.remove_quietly(&segment::hint_path(&dir.path, *id));
    }
    let mut report = RecoveryReport::default();
    // The keys of damaged segments whose hints could not be kept as `.lost` files (see `lost`).
    let mut held = lost::Buried::default();
    let mut last_id = segment_ids.iter().next_back().copied();
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(segment_ids.len());
    for &id in &segment_ids {
        let path = segment::segment_path(&dir.path, id);
        match Segment::open(&dir.disk, path.clone(), id, meta.segment_size)? {
            Ok((seg, past)) => {
                if past > 0 {
                    tracing::warn!(path = %path.display(), bytes = past, "ignoring bytes past the segment size: the store never writes them");
                    report.damaged_ranges += 1;
                    report.damaged_bytes += past;
                    // Counted as dropped when the segment goes: no later read sees these bytes.
                    seg.damaged_ranges.store(1, Ordering::Relaxed);
                }
                segments.push(Arc::new(seg));
            }
            // The newest segment, never written: the roll that created it was cut short. It
            // held nothing, so it goes, and the segment before it is the last one written (its
            // torn tail is a crash's, not damage). Not one with a hint: that one was fsynced
            // before its hint was written, so its zeros are damage, and its hint names the keys
            // it held (lost below, as for any unreadable header).
            Err(segment::Unreadable::Unwritten)
                if Some(id) == last_id && !hint_ids.contains(&id) && dir.disk.remove_file(&path).is_ok() =>
            {
                tracing::info!(path = %path.display(), "removing a segment whose creation a crash cut short");
                last_id = segment_ids.range(..id).next_back().copied();
            }
            Err(reason) => {
                // Moved aside, not deleted: `verify` (which opens the store first) and whoever
                // looks into the damage still find the file. Only if that fails is it removed.
                let aside = path.with_extension(DAMAGED_EXT);
                // The hint first: a crash between the two renames then leaves the lost keys
                // named, and the damaged segment to be found again; the other way round, the
                // next open deleted the hint as one without a segment. A hint that cannot be
                // read fails the open with both left as they are (see `lost`). The directory is
                // fsynced between them: ext4 and xfs journal renames in order, but POSIX
                // promises no order without it (a damaged segment is rare; one fsync).
                // A hint read whole but not renamed: the segment stays with it, unloaded, for
                // the next open to try again (its file keeps its id taken). Whatever stands at
                // the `.lost` name is no file a rename of this hint left, which would have taken
                // the hint's name away: the hint names the keys, and `load` leaves that alone.
                if let Some(buried) = keep_lost_hint(dir, id, meta.min_seq, &hasher, &mut lost_ids)? {
                    held.add(buried);
                    lost_ids.remove(&id);
                    report.damaged_segments_left += 1;
                    tracing::warn!(path = %path.display(), %reason, "leaving an unreadable segment in place until its hint can be kept");
                    continue;
                }
                // Logged and counted once the open goes on: a hint it could not read refused it,
                // and the segment stays where it was.
                tracing::warn!(path = %path.display(), %reason, moved_to = %aside.display(), "moving an unreadable segment aside");
                report.damaged_segments += 1;
                if let Err(e) = dir.disk.rename(&path, &aside) {
                    tracing::warn!(path = %path.display(), error = %e, "could not move the segment aside; removing it");
                    dir.remove_quietly(&path);
                }
            }
        }
    }
    // Every segment that recovery keeps may be pointed at: each gets its slot now (0, 1, 2…).
    let slots = Slots::default();
    let bases = segments
        .iter()
        .map(|seg| slots.loc(seg, 0))
        .collect::<Result<Vec<Loc>>>()?;
    let new_gather = |capacity: usize| Gather {
        hasher: &hasher,
        min_seq: meta.min_seq,
        max_seq: meta.min_seq,
        records: 0,
        any_expiry: false,
        pending: Parts::with_capacity(capacity),
    };
    // Whether bad bytes after the last good record of segment `id` can be the torn tail of a
    // crash: only in the newest segment, and only if it has no hint file, damaged or not (a
    // segment is fsynced before its hint is written); elsewhere they are damage.
    let torn_by_a_crash = |id: u64| Some(id) == last_id && !hint_ids.contains(&id);
    // The records of segment `i`, from its hint file, or by a scan where it has none (the one
    // active at a crash) or one that is damaged or stale. `bytes` is a buffer for the hint, kept
    // by each thread: a fresh one for every hint of tens of megabytes was mapped and zeroed by
    // the kernel page by page.
    let gather_one = |i: usize, bytes: &mut Vec<u8>| -> Option<Gathered<'_, '_>> {
        #[cfg(test)]
        tests::panic_if_asked(&dir.path, i);
        let (seg, &base) = (segments.get(i)?, bases.get(i)?);
        let mut cut_short = false;
        let from_hint = hint_ids.contains(&seg.id).then(|| {
            bytes.clear();
            let mut file = fs::File::open(segment::hint_path(&dir.path, seg.id)).ok()?;
            file.read_to_end(bytes).ok()?;
            let mut gather = new_gather(bytes.len() / (format::HINT_ENTRY_LEN + 8));
            let Some(data_end) = gather.hint(seg, base, bytes) else {
                cut_short = hint_past_the_file(seg, bytes);
                return None;
            };
            seg.hint_bytes.store(bytes.len() as u64, Ordering::Relaxed);
            Some(Gathered::Hinted(data_end, gather))
        });
        Some(from_hint.flatten().unwrap_or_else(|| {
            let last = torn_by_a_crash(seg.id);
            let (scan, gather) = scan_into(seg, base, last, new_gather(0));
            Gathered::Scanned {
                scan,
                gather,
                cut_short,
            }
        }))
    };
    let mut gathered = gather_all(segments.len(), &gather_one);

    let mut gathers = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        // Gathered here if a thread that panicked left it out.
        let Some(found) = gathered
            .get_mut(i)
            .and_then(Option::take)
            .or_else(|| gather_one(i, &mut Vec::new()))
        else {
            continue;
        };
        let id = seg.id;
        report.segments += 1;
        let data_end = match found {
            Gathered::Hinted(data_end, gather) => {
                report.from_hints += 1;
                gathers.push(gather);
                data_end
            }
            Gathered::Scanned {
                scan,
                gather,
                cut_short,
            } => {
                gathers.push(gather);
                // The file lost records its intact hint names: the hint is kept as the
                // segment's `.lost` file, whose keys stay deleted as a lost segment's do (a
                // record still there keeps its seq, above its entry's tombstone). A `.lost`
                // file of this id already names every key: the segment takes no record since.
                let mut new_hint = true;
                if cut_short && !lost_ids.contains(&id) {
                    tracing::warn!(path = %seg.path.display(), "the segment ends before records its hint names; keeping the hint as its lost keys");
                    // Left in place for the next open, so no hint of the scan replaces it.
                    if let Some(buried) = keep_lost_hint(dir, id, meta.min_seq, &hasher, &mut lost_ids)? {
                        held.add(buried);
                        new_hint = false;
                    }
                }
                let last = torn_by_a_crash(id);
                settle_scan(dir, seg, &scan, last, new_hint, &mut report)?
            }
        };
        seg.data_end.store(data_end, Ordering::Release);
    }
    drop(gathered);

    let mut buried = lost::load(
        dir,
        &lost_ids,
        segments.first().map(|s| s.id),
        meta.min_seq,
        &hasher,
    )?;
    buried.add(held);
    report.lost_keys = buried.tombstones.len() as u64;
    report.damaged_lost_files = buried.damaged_files;
    let mut max_seq = meta.min_seq.max(buried.max_seq);
    let mut any_expiry = false;
    let mut parts = Vec::with_capacity(gathers.len());
    for g in gathers {
        report.records += g.records;
        max_seq = max_seq.max(g.max_seq);
        any_expiry |= g.any_expiry;
        parts.push(g.pending);
    }
    let index = rebuild::build(&segments, &slots, &buried.tombstones, &parts);
    drop(parts);
    // Expired values lost their key.
    let lapsed = Lapsed::default();
    if any_expiry {
        report.expired = rebuild::drop_expired(&index, &slots, now_ms, &lapsed);
    }
    // Saturating: ids and sequence numbers near u64::MAX only come from crafted files; the store
    // must fail cleanly on them (a segment id that exists cannot be created), not overflow.
    // Past the lost segments' ids too: a new segment of a lost one's id, damaged in turn, would
    // have its hint replace the `.lost` file that names the first one's keys.
    let next_segment_id = segment_ids
        .iter()
        .chain(&lost_ids)
        .max()
        .map_or(1, |id| id.saturating_add(1));
    Ok(Recovered {
        segments: segments.into_iter().map(|s| (s.id, s)).collect(),
        index,
        slots,
        hasher,
        next_seq: max_seq.saturating_add(1),
        next_segment_id,
        report,
        lapsed,
    })
}

/// The hint file of a sealed segment, built from its headers and keys read with `pread` in
/// large chunks (values are skipped, not read): reading through the mmap would make every page
/// of the segment resident in this process. The records were written by this process into a
/// sealed segment, so they are not CRC-checked again; if one does not even decode, no hint is
/// written and the next open scans the segment, with the damage handling of a scan.
pub(crate) fn hint_of_sealed(seg: &Segment) -> Result<Vec<u8>> {
    const CHUNK: usize = 1 << 20;
    let data_end = seg.data_end();
    let file = fs::File::open(&seg.path).map_err(|e| Error::io("open segment for its hint", &seg.path, e))?;
    let mut buf = vec![0u8; CHUNK];
    // `buf[..filled]` holds the file from `buf_at`.
    let (mut buf_at, mut filled) = (0u64, 0usize);
    let mut at = SEGMENT_HEADER_LEN as u64;
    let mut body = Vec::new();
    let mut entries = 0u32;
    while at < data_end {
        let rel = usize::try_from(at.saturating_sub(buf_at)).unwrap_or(usize::MAX);
        let head = format::RECORD_HEADER_LEN;
        let in_buf = |n: usize| at >= buf_at && rel.checked_add(n).is_some_and(|end| end <= filled);
        if !in_buf(head + format::MAX_KEY_LEN)
            && !in_buf(usize::try_from(data_end - at).unwrap_or(usize::MAX))
        {
            let want = usize::try_from(data_end - at).unwrap_or(usize::MAX).min(CHUNK);
            let chunk = buf.get_mut(..want).unwrap_or_default();
            file.read_exact_at(chunk, at)
                .map_err(|e| Error::io("read segment for its hint", &seg.path, e))?;
            (buf_at, filled) = (at, want);
            continue;
        }
        let bytes = buf.get(rel..filled).unwrap_or_default();
        let Some(h) = bytes.get(..head).and_then(format::peek_record_header) else {
            break;
        };
        let key = bytes
            .get(head..head + usize::from(h.key_len))
            .and_then(|k| std::str::from_utf8(k).ok());
        let Some(key) = key else { break };
        let offset = u32::try_from(at).unwrap_or(u32::MAX);
        format::encode_hint_entry(&mut body, h.kind, key, offset, h.len, h.seq, h.expires_at_ms);
        entries += 1;
        at += u64::from(h.len);
    }
    if at != data_end {
        return Err(Error::io(
            "build the hint of a segment",
            &seg.path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("undecodable record at offset {at}"),
            ),
        ));
    }
    let mut hint = Vec::with_capacity(format::HINT_HEADER_LEN + body.len() + format::HINT_TRAILER_LEN);
    format::encode_hint_header(&mut hint, seg.id, data_end);
    hint.extend_from_slice(&body);
    format::encode_hint_trailer(&mut hint, entries);
    Ok(hint)
}

/// Keeps the hint of segment `id` as its `.lost` file ([`lost::keep`]), noted in `lost_ids`
/// once the directory is fsynced. Returns the hint's tombstones if it was read whole but could
/// not be renamed: the caller holds them for this run and must leave the hint where it is.
fn keep_lost_hint(
    dir: &LockedDir,
    id: u64,
    min_seq: u64,
    hasher: &KeyHasher,
    lost_ids: &mut BTreeSet<u64>,
) -> Result<Option<lost::Buried>> {
    match lost::keep(dir, id, min_seq, hasher)? {
        lost::Kept::Renamed => {
            lost_ids.insert(id);
            dir.sync()?;
            Ok(None)
        }
        lost::Kept::Nothing => Ok(None),
        lost::Kept::Held(buried) => Ok(Some(buried)),
    }
}

/// Accounts for the scan of `seg` (the `last` segment, or another) in `report`, cuts the file
/// at its last good record, syncs it and writes its hint (unless `write` is false). Returns the
/// segment's data end.
fn settle_scan(
    dir: &LockedDir,
    seg: &Segment,
    scan: &format::Scan<'_>,
    last: bool,
    write: bool,
    report: &mut RecoveryReport,
) -> Result<u64> {
    report.scanned += 1;
    for range in &scan.damaged {
        report.damaged_ranges += 1;
        report.damaged_bytes += range.end - range.start;
        tracing::warn!(path = %seg.path.display(), start = range.start, end = range.end, "skipped damaged records");
    }
    if let Some(torn) = &scan.torn_tail {
        if last {
            report.torn_tail_bytes += torn.end - torn.start;
        } else {
            // Only the last segment can be torn by a crash; elsewhere it is damage.
            report.damaged_ranges += 1;
            report.damaged_bytes += torn.end - torn.start;
        }
    }
    // Noted on the segment, to be counted as dropped when it goes: the cut below takes a
    // torn tail out of every later read, so only this scan ever sees it.
    let torn = u64::from(scan.torn_tail.is_some() && !last);
    seg.damaged_ranges
        .fetch_add(scan.damaged.len() as u64 + torn, Ordering::Relaxed);
    // Cut the file at the last good record: a torn tail is gone, so a later scan ends
    // cleanly there, and the space a crashed active segment had reserved is given back.
    // Truncating needs no free space, so this works on a full disk.
    seg.data_end.store(scan.data_end, Ordering::Release);
    seg.truncate_to_data()?;
    // Synced whether or not it was cut: a segment without a hint was left by a killed
    // run, whose last writes may still be in the page cache only. The hint written next
    // must not describe records a power loss could take away, and no later flush or
    // close would sync this segment (only the ones this run writes).
    seg.sync()?;
    if !write {
        return Ok(scan.data_end);
    }
    let hint = hint_of_scan(seg.id, scan);
    match write_hint(dir, seg.id, &hint) {
        Ok(()) => seg.hint_bytes.store(hint.len() as u64, Ordering::Relaxed),
        Err(e) => {
            tracing::warn!(error = %e, "could not write a hint file after scanning a segment")
        }
    }
    Ok(scan.data_end)
}

/// The records of one segment, as recovery found them.
enum Gathered<'s, 'h> {
    /// From its hint file: the segment's data end, and the records.
    Hinted(u64, Gather<'h>),
    /// By a scan of the segment; `cut_short` if its hint checked but named records past the
    /// end of the file (see [`hint_past_the_file`]).
    Scanned {
        scan: format::Scan<'s>,
        gather: Gather<'h>,
        cut_short: bool,
    },
}

/// Most threads an open reads hints and scans segments on.
const MAX_GATHER_THREADS: usize = 8;

/// `gather_one(i, buffer)` for every segment `i` in `0..segments`, on up to one thread per core (the
/// segments are independent, and a store of many segments has as many hints to read), in
/// segment order. A segment is `None` if its thread panicked, or no thread could be started:
/// the caller gathers it itself.
fn gather_all<'s, 'h, G>(segments: usize, gather_one: &G) -> Vec<Option<Gathered<'s, 'h>>>
where
    G: Fn(usize, &mut Vec<u8>) -> Option<Gathered<'s, 'h>> + Sync,
    Gathered<'s, 'h>: Send,
{
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(segments)
        .min(MAX_GATHER_THREADS);
    let next = AtomicUsize::new(0);
    let work = || {
        let (mut done, mut bytes) = (Vec::new(), Vec::new());
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= segments {
                break done;
            }
            done.push((i, gather_one(i, &mut bytes)));
        }
    };
    let mut gathered: Vec<Option<Gathered<'s, 'h>>> = (0..segments).map(|_| None).collect();
    let batches = std::thread::scope(|scope| {
        // A thread the system refuses (a limit on threads) leaves its segments to the others,
        // or to the caller.
        let threads: Vec<_> = (0..threads)
            .map_while(|_| {
                std::thread::Builder::new()
                    .name("uno-cache-open".to_owned())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        threads
            .into_iter()
            .filter_map(|t| t.join().ok())
            .collect::<Vec<_>>()
    });
    for (i, found) in batches.into_iter().flatten() {
        if let Some(slot) = gathered.get_mut(i) {
            *slot = found;
        }
    }
    gathered
}

/// True if the hint `bytes` checks and names `seg`, but says its data runs past what the file
/// holds: the file lost its tail after it was fsynced (no crash does that: a segment is fsynced
/// before its hint is written), and the hint names the keys of the records that went with it.
fn hint_past_the_file(seg: &Segment, bytes: &[u8]) -> bool {
    format::check_hint(bytes).is_ok_and(|view| view.segment_id == seg.id && view.data_end > seg.mapped_len())
}

/// Scans `seg` (see [`scan`]) and gathers its records.
fn scan_into<'s, 'h>(
    seg: &'s Segment,
    base: Loc,
    last: bool,
    mut gather: Gather<'h>,
) -> (format::Scan<'s>, Gather<'h>) {
    let scan = scan(seg, last);
    gather.pending.reserve(scan.records.len());
    gather.push_scan(base, &scan);
    (scan, gather)
}

/// Scans a segment without a usable hint; in the last one, bad bytes after the last good
/// record are its torn tail.
fn scan(seg: &Segment, last: bool) -> format::Scan<'_> {
    let mut scan = seg.scan_file();
    if last {
        torn_tail_after_last_record(&mut scan);
    }
    scan
}

/// The hint file of segment `id` from a scan of its records.
pub(crate) fn hint_of_scan(id: u64, scan: &format::Scan<'_>) -> Vec<u8> {
    let keys: usize = scan.records.iter().map(|r| r.record.key.len()).sum();
    let mut hint = Vec::with_capacity(
        format::HINT_HEADER_LEN
            + scan.records.len() * format::HINT_ENTRY_LEN
            + keys
            + format::HINT_TRAILER_LEN,
    );
    format::encode_hint_header(&mut hint, id, scan.data_end);
    for rec in &scan.records {
        let r = rec.record;
        let offset = u32::try_from(rec.offset).unwrap_or(u32::MAX);
        format::encode_hint_entry(&mut hint, r.kind, r.key, offset, rec.len, r.seq, r.expires_at_ms);
    }
    format::encode_hint_trailer(&mut hint, u32::try_from(scan.records.len()).unwrap_or(u32::MAX));
    hint
}

/// The last segment is the only one a crash can tear, and only after its last good record: bad
/// bytes there (a record skipped by its length included) are its torn tail, not damage.
///
/// Bad bytes followed by a good record are damage here as in any other segment, and the records
/// after them stay. This segment was once cut at its first bad record, so that a record hidden
/// in the rest of a torn value could not surface; the salt in every record's CRC has since made
/// such a record fail here. The cut lost records that may have been fsynced (a crash cannot
/// tear what came before an fsynced record, but the medium can damage it), and a tombstone among
/// them brought its key's older value back.
fn torn_tail_after_last_record(scan: &mut format::Scan<'_>) {
    let last_good = scan.data_end;
    let Some(first) = scan.damaged.iter().position(|r| r.start >= last_good) else {
        return;
    };
    let tail_end = scan
        .damaged
        .iter()
        .map(|r| r.end)
        .chain(scan.torn_tail.as_ref().map(|t| t.end))
        .fold(last_good, u64::max);
    let start = scan.damaged.get(first).map_or(last_good, |r| r.start);
    scan.damaged.truncate(first);
    scan.torn_tail = Some(start..tail_end);
}

/// Writes a hint file via a temporary file and a rename. Not fsynced: a lost or torn hint only
/// means the next open scans the segment.
pub(crate) fn write_hint(dir: &LockedDir, id: u64, bytes: &[u8]) -> Result<()> {
    let path = segment::hint_path(&dir.path, id);
    let tmp = path.with_extension(format!("{HINT_EXT}.{TMP_EXT}"));
    dir.replace_file(&tmp, &path, |file| {
        file.write_all_at(bytes, 0)
            .map_err(|e| Error::io("write hint", &tmp, e))
    })
}

/// The ids of the segment, hint and lost-keys files in the directory; deletes `*.tmp` files.
fn list(dir: &LockedDir) -> Result<(BTreeSet<u64>, BTreeSet<u64>, BTreeSet<u64>)> {
    let mut segments = BTreeSet::new();
    let mut hints = BTreeSet::new();
    let mut lost = BTreeSet::new();
    let entries = fs::read_dir(&dir.path).map_err(|e| Error::io("list directory", &dir.path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", &dir.path, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(&format!(".{TMP_EXT}")) {
            dir.remove_quietly(&entry.path());
        } else if let Some(id) = segment::parse_file_id(name, SEGMENT_EXT) {
            segments.insert(id);
        } else if let Some(id) = segment::parse_file_id(name, HINT_EXT) {
            hints.insert(id);
        } else if let Some(id) = segment::parse_file_id(name, LOST_EXT) {
            lost.insert(id);
        }
    }
    Ok((segments, hints, lost))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FileStore, FileStoreOptions};

    /// A store directory (by its last component) whose gather of one segment (by index) panics,
    /// once.
    static PANIC_ONCE: parking_lot::Mutex<Option<(String, usize)>> = parking_lot::const_mutex(None);

    pub(super) fn panic_if_asked(dir: &std::path::Path, i: usize) {
        let mut asked = PANIC_ONCE.lock();
        let here = asked
            .as_ref()
            .is_some_and(|(name, at)| dir.ends_with(name) && *at == i);
        if here {
            *asked = None;
            drop(asked);
            panic!("a gather thread panics (injected by a test)");
        }
    }

    #[test]
    fn segments_a_panicking_open_thread_left_are_gathered_by_the_opening_thread() {
        let dir = tempfile::tempdir().unwrap();
        let options = || FileStoreOptions::default().segment_size(64 * 1024);
        let store = FileStore::open(dir.path(), options()).unwrap();
        for i in 0..400u32 {
            store.set(&format!("k{i}"), &[i as u8; 1000], None).unwrap();
        }
        store.close().unwrap();
        let first = FileStore::open(dir.path(), options()).unwrap();
        let report = first.recovery_report().clone();
        assert!(report.segments >= 4 && report.from_hints >= 3, "{report:?}");
        first.close().unwrap();
        let name = dir.path().file_name().unwrap().to_string_lossy().into_owned();
        *PANIC_ONCE.lock() = Some((name, 1));
        let again = FileStore::open(dir.path(), options()).unwrap();
        assert!(PANIC_ONCE.lock().is_none(), "the injected panic did not happen");
        assert_eq!(again.recovery_report(), &report);
        for i in 0..400u32 {
            let read = again.get(&format!("k{i}")).unwrap();
            assert_eq!(read, Some(vec![i as u8; 1000]), "k{i}");
        }
    }

    #[test]
    fn hint_read_back_with_pread_equals_the_hint_of_a_full_scan_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create_in(&crate::disk::Disk::default(), dir.path(), 0o600, 1, 4 << 20).unwrap();
        let salt = seg.salt;
        let mut buf = Vec::new();
        let mut i = 0u64;
        // Values from 0 bytes to past the 1 MiB read chunk, keys up to the longest allowed.
        while buf.len() < 3 << 20 {
            let key = "k".repeat(1 + (i as usize * 37) % format::MAX_KEY_LEN);
            let value = vec![i as u8; (i as usize * 7919) % 300_000];
            let kind = if i.is_multiple_of(5) {
                Kind::Tombstone
            } else {
                Kind::Value
            };
            let value = if kind == Kind::Tombstone {
                Vec::new()
            } else {
                value
            };
            format::encode_record(&mut buf, salt, kind, i, i * 3, &key, &value);
            i += 1;
        }
        seg.write_at(SEGMENT_HEADER_LEN as u64, &buf).unwrap();
        seg.data_end
            .store((SEGMENT_HEADER_LEN + buf.len()) as u64, Ordering::Release);
        let scanned = hint_of_scan(1, &seg.scan_data_to(seg.data_end()));
        assert_eq!(hint_of_sealed(&seg).unwrap(), scanned);
        assert_eq!(format::decode_hint(&scanned).unwrap().entries.len() as u64, i);
    }
}
