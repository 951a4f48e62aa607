//! Opening a store: rebuild the index from hint files, or by scanning segments where a hint is
//! missing, stale or damaged.
//!
//! The algorithm, step by step, is in storage-format.md ("Recovery"). In short: for every key the
//! record with the highest sequence number wins (ties: a tombstone wins, then the later copy);
//! a winning tombstone or an expired value means "absent". A torn tail is zeroed; damage elsewhere
//! is skipped and counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::hash::BuildHasherDefault;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::dir::LockedDir;
use super::format::{self, Kind, Meta, HINT_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN, TMP_EXT};
use super::index::{self, Index, IndexEntry, KeyHasher, Loc, PassThrough};
use super::segment::{self, Segment};
use super::slots::Slots;
use crate::error::{Error, Result};

/// What opening the store found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Segment files whose header was unreadable; they were removed.
    pub damaged_segments: u64,
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

/// What recovery keeps per key hash while it applies records: the index entry lacks the
/// sequence number that decides between records, and the length that live bytes are counted
/// from (both are on disk, but reading them back there would touch every segment).
#[derive(Clone, Copy)]
struct Newest {
    seq: u64,
    loc: Loc,
    len: u32,
    expires_at_ms: u64,
}

type ByHash<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// The newest record per key hash, and the highest tombstone per key hash. Records are applied
/// by hash, as the index holds them (see `index`).
struct Applied {
    hasher: KeyHasher,
    newest: ByHash<Newest>,
    tombstones: ByHash<u64>,
}

pub(crate) fn recover(dir: &LockedDir, meta: &Meta, now_ms: u64) -> Result<Recovered> {
    let (segment_ids, hint_ids) = list(&dir.path)?;
    for id in hint_ids.difference(&segment_ids) {
        remove_quietly(&segment::hint_path(&dir.path, *id));
    }
    let mut report = RecoveryReport::default();
    // Sized up front: growing a map of a million keys rehashes every key several times, which was
    // about a quarter of the time to open such a store.
    let mut applied = Applied {
        hasher: KeyHasher::default(),
        newest: ByHash::with_capacity_and_hasher(
            hinted_entries(&dir.path, hint_ids.intersection(&segment_ids)),
            BuildHasherDefault::default(),
        ),
        tombstones: ByHash::default(),
    };
    let slots = Slots::default();
    let mut segments = BTreeMap::new();
    let mut max_seq = meta.min_seq;
    let last_id = segment_ids.iter().next_back().copied();

    for &id in &segment_ids {
        let path = segment::segment_path(&dir.path, id);
        let seg = match Segment::open(path.clone(), id)? {
            Ok(seg) => Arc::new(seg),
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "removing an unreadable segment");
                report.damaged_segments += 1;
                remove_quietly(&path);
                remove_quietly(&segment::hint_path(&dir.path, id));
                continue;
            }
        };
        report.segments += 1;
        // Every segment that recovery keeps may be pointed at: give it its slot now.
        let base = slots.loc(&seg, 0)?;
        let mut apply = |f: Found<'_>| {
            report.records += 1;
            if f.seq < meta.min_seq {
                return;
            }
            max_seq = max_seq.max(f.seq);
            applied.apply(Loc::new(base.slot(), base.generation(), u64::from(f.offset)), f);
        };
        let bytes = fs::read(segment::hint_path(&dir.path, id)).ok();
        let data_end = match bytes.as_deref().and_then(|b| check_hint(&dir.path, &seg, b)) {
            Some(hint) => {
                report.from_hints += 1;
                for e in hint.entries() {
                    apply(Found {
                        kind: e.kind,
                        key: e.key,
                        offset: e.offset,
                        len: e.len,
                        seq: e.seq,
                        expires_at_ms: e.expires_at_ms,
                    });
                }
                hint.data_end
            }
            None => {
                report.scanned += 1;
                let mut scan = seg.scan_file();
                if Some(id) == last_id {
                    cut_at_first_bad_record(&mut scan);
                }
                let mut hint = Vec::new();
                format::encode_hint_header(&mut hint, id, scan.data_end);
                for rec in &scan.records {
                    let r = rec.record;
                    let offset = u32::try_from(rec.offset).unwrap_or(u32::MAX);
                    format::encode_hint_entry(
                        &mut hint,
                        r.kind,
                        r.key,
                        offset,
                        rec.len,
                        r.seq,
                        r.expires_at_ms,
                    );
                    apply(Found {
                        kind: r.kind,
                        key: r.key,
                        offset,
                        len: rec.len,
                        seq: r.seq,
                        expires_at_ms: r.expires_at_ms,
                    });
                }
                format::encode_hint_trailer(&mut hint, u32::try_from(scan.records.len()).unwrap_or(u32::MAX));
                for range in &scan.damaged {
                    report.damaged_ranges += 1;
                    report.damaged_bytes += range.end - range.start;
                    tracing::warn!(path = %path.display(), start = range.start, end = range.end, "skipped damaged records");
                }
                if let Some(torn) = &scan.torn_tail {
                    if Some(id) == last_id {
                        report.torn_tail_bytes += torn.end - torn.start;
                    } else {
                        // Only the last segment can be torn by a crash; elsewhere it is damage.
                        report.damaged_ranges += 1;
                        report.damaged_bytes += torn.end - torn.start;
                    }
                    // Cut the tail: zero it, so a later scan ends cleanly at the last good record.
                    let zeros = vec![0u8; usize::try_from(torn.end - torn.start).unwrap_or(0)];
                    seg.write_at(torn.start, &zeros)?;
                    seg.sync()?;
                }
                if let Err(e) = write_hint(&dir.path, id, &hint) {
                    tracing::warn!(error = %e, "could not write a hint file after scanning a segment");
                }
                scan.data_end
            }
        };
        seg.data_end.store(data_end, Ordering::Release);
        segments.insert(id, seg);
    }

    // Expired values lost their key; count live bytes per segment for the rest (one pass).
    let index = index::with_capacity(applied.newest.len());
    for (hash, e) in applied.newest.drain() {
        if e.expires_at_ms != 0 && now_ms >= e.expires_at_ms {
            report.expired += 1;
            continue;
        }
        if let Some(seg) = slots.get(e.loc) {
            seg.live_bytes.fetch_add(u64::from(e.len), Ordering::Relaxed);
        }
        index.insert(hash, IndexEntry::new(e.loc, e.expires_at_ms));
    }
    // Saturating: ids and sequence numbers near u64::MAX only come from crafted files; the store
    // must fail cleanly on them (a segment id that exists cannot be created), not overflow.
    let next_segment_id = segment_ids
        .iter()
        .next_back()
        .map_or(1, |id| id.saturating_add(1));
    Ok(Recovered {
        segments,
        index,
        slots,
        hasher: applied.hasher,
        next_seq: max_seq.saturating_add(1),
        next_segment_id,
        report,
    })
}

/// The last segment is the only one a crash can tear, and only at its end: cut it at the first bad
/// record instead of resynchronising past it. Past a torn record come the zeros of space never
/// written, or the rest of the torn value, whose bytes can hold anything, even what looks like a
/// valid record of another key.
fn cut_at_first_bad_record(scan: &mut format::Scan<'_>) {
    let Some(first_bad) = scan.damaged.first().map(|r| r.start) else {
        return;
    };
    let tail_end = scan
        .torn_tail
        .as_ref()
        .map_or(scan.data_end, |t| t.end)
        .max(scan.data_end);
    scan.records.retain(|r| r.offset < first_bad);
    scan.data_end = first_bad;
    scan.damaged.clear();
    scan.torn_tail = Some(first_bad..tail_end);
}

impl Applied {
    /// Applies one record: per key hash, the highest seq wins; on a tie a tombstone wins, then the
    /// record found later (a newer copy left by an interrupted compaction). Ties only happen
    /// between records of one key: every write takes a new sequence number.
    fn apply(&mut self, loc: Loc, f: Found<'_>) {
        let hash = self.hasher.hash(f.key);
        match f.kind {
            Kind::Value => {
                if self.tombstones.get(&hash).is_some_and(|&t| t >= f.seq) {
                    return;
                }
                let new = Newest {
                    seq: f.seq,
                    loc,
                    len: f.len,
                    expires_at_ms: f.expires_at_ms,
                };
                let slot = self.newest.entry(hash).or_insert(new);
                if slot.seq <= f.seq {
                    *slot = new;
                }
            }
            Kind::Tombstone => {
                if self.newest.get(&hash).is_some_and(|e| e.seq <= f.seq) {
                    self.newest.remove(&hash);
                }
                let slot = self.tombstones.entry(hash).or_insert(f.seq);
                *slot = (*slot).max(f.seq);
            }
        }
    }
}

/// An upper bound on the keys the hint files of `ids` hold: the entry counts in their trailers,
/// each capped by what the file's length allows (a damaged trailer only mis-sizes the index).
/// Segments without a hint are scanned and grow the index as they go.
fn hinted_entries<'a>(dir: &Path, ids: impl Iterator<Item = &'a u64>) -> usize {
    let mut total = 0usize;
    for &id in ids {
        let Ok(file) = fs::File::open(segment::hint_path(dir, id)) else {
            continue;
        };
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            continue;
        };
        let mut trailer = [0u8; format::HINT_TRAILER_LEN];
        let Some(at) = len.checked_sub(format::HINT_TRAILER_LEN as u64) else {
            continue;
        };
        if file.read_exact_at(&mut trailer, at).is_err() {
            continue;
        }
        let count = trailer
            .first_chunk::<4>()
            .map_or(0, |c| u32::from_le_bytes(*c) as usize);
        let fits = usize::try_from(len).unwrap_or(usize::MAX) / (format::HINT_ENTRY_LEN + 1);
        total = total.saturating_add(count.min(fits));
    }
    total
}

/// Checks the hint file bytes of `seg`; `None` if they are damaged or do not match the segment
/// (the caller then scans).
fn check_hint<'a>(dir: &Path, seg: &Segment, bytes: &'a [u8]) -> Option<format::HintView<'a>> {
    let path = segment::hint_path(dir, seg.id);
    let hint = match format::check_hint(bytes) {
        Ok(hint) => hint,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged hint file; scanning its segment");
            return None;
        }
    };
    let fits = hint.segment_id == seg.id
        && hint.data_end >= SEGMENT_HEADER_LEN as u64
        && hint.data_end <= seg.mapped_len()
        && hint.entries().all(|e| {
            u64::from(e.offset) >= SEGMENT_HEADER_LEN as u64
                && u64::from(e.offset) + u64::from(e.len) <= hint.data_end
        });
    if !fits {
        tracing::warn!(path = %path.display(), "ignoring a hint file that does not match its segment");
        return None;
    }
    Some(hint)
}

/// Writes a hint file via a temporary file and a rename. Not fsynced: a lost or torn hint only
/// means the next open scans the segment.
pub(crate) fn write_hint(dir: &Path, id: u64, bytes: &[u8]) -> Result<()> {
    let path = segment::hint_path(dir, id);
    let tmp = path.with_extension(format!("{HINT_EXT}.{TMP_EXT}"));
    fs::write(&tmp, bytes).map_err(|e| Error::io("write hint", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io("rename hint", &path, e))
}

/// Segment and hint ids in the directory; deletes leftover temporary files.
fn list(dir: &Path) -> Result<(BTreeSet<u64>, BTreeSet<u64>)> {
    let mut segments = BTreeSet::new();
    let mut hints = BTreeSet::new();
    let entries = fs::read_dir(dir).map_err(|e| Error::io("list directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(&format!(".{TMP_EXT}")) {
            remove_quietly(&entry.path());
        } else if let Some(id) = segment::parse_file_id(name, SEGMENT_EXT) {
            segments.insert(id);
        } else if let Some(id) = segment::parse_file_id(name, HINT_EXT) {
            hints.insert(id);
        }
    }
    Ok((segments, hints))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove a file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint_file(dir: &Path, id: u64, entries: u32, claimed: u32) {
        let mut hint = Vec::new();
        format::encode_hint_header(&mut hint, id, 4096);
        for i in 0..entries {
            format::encode_hint_entry(
                &mut hint,
                Kind::Value,
                &format!("key{i}"),
                64,
                40,
                u64::from(i),
                0,
            );
        }
        format::encode_hint_trailer(&mut hint, claimed);
        write_hint(dir, id, &hint).unwrap();
    }

    #[test]
    fn index_is_presized_from_hint_trailers_and_a_lying_trailer_is_capped_by_file_length() {
        let dir = tempfile::tempdir().unwrap();
        hint_file(dir.path(), 1, 10, 10);
        hint_file(dir.path(), 2, 5, 5);
        assert_eq!(hinted_entries(dir.path(), [1u64, 2].iter()), 15);
        // A missing hint file counts nothing.
        assert_eq!(hinted_entries(dir.path(), [1u64, 3].iter()), 10);
        // A damaged count cannot make the index reserve more than the file could hold.
        hint_file(dir.path(), 4, 5, u32::MAX);
        let len = fs::metadata(segment::hint_path(dir.path(), 4)).unwrap().len() as usize;
        let capped = hinted_entries(dir.path(), [4u64].iter());
        assert!(
            capped <= len / format::HINT_ENTRY_LEN,
            "{capped} entries from {len} bytes"
        );
    }
}
