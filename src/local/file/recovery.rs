//! Opening a store: rebuild the index from hint files, or by scanning segments where a hint is
//! missing, stale or damaged.
//!
//! The algorithm, step by step, is in storage-format.md ("Recovery"). In short: for every key the
//! record with the highest sequence number wins (ties: a tombstone wins, then the later copy);
//! a winning tombstone or an expired value means "absent". A torn tail is zeroed; damage elsewhere
//! is skipped and counted.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dashmap::mapref::entry::Entry as MapEntry;

use super::dir::LockedDir;
use super::format::{self, Kind, Meta, HINT_EXT, SEGMENT_EXT, SEGMENT_HEADER_LEN, TMP_EXT};
use super::index::{Index, IndexEntry};
use super::segment::{self, Segment};
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
    pub(crate) next_seq: u64,
    pub(crate) next_segment_id: u64,
    pub(crate) report: RecoveryReport,
}

/// One record as recovery sees it: from a hint entry (whose key it owns, so the index can take it
/// without another allocation) or a scanned record (whose key borrows the segment map).
struct Found<'a> {
    kind: Kind,
    key: FoundKey<'a>,
    offset: u32,
    len: u32,
    seq: u64,
    expires_at_ms: u64,
}

enum FoundKey<'a> {
    Owned(Box<str>),
    Borrowed(&'a str),
}

impl FoundKey<'_> {
    fn as_str(&self) -> &str {
        match self {
            FoundKey::Owned(key) => key,
            FoundKey::Borrowed(key) => key,
        }
    }

    fn into_box(self) -> Box<str> {
        match self {
            FoundKey::Owned(key) => key,
            FoundKey::Borrowed(key) => Box::from(key),
        }
    }
}

pub(crate) fn recover(dir: &LockedDir, meta: &Meta, now_ms: u64) -> Result<Recovered> {
    let (segment_ids, hint_ids) = list(dir)?;
    for id in hint_ids.difference(&segment_ids) {
        remove_quietly(dir, &segment::hint_path(&dir.path, *id));
    }
    let mut report = RecoveryReport::default();
    // Sized up front: growing a map of a million keys rehashes every key several times, which was
    // about a quarter of the time to open such a store.
    let index = Index::with_capacity_and_hasher(
        hinted_entries(&dir.path, hint_ids.intersection(&segment_ids)),
        Default::default(),
    );
    let mut tombstones: HashMap<Box<str>, u64> = HashMap::new();
    let mut segments = BTreeMap::new();
    let mut max_seq = meta.min_seq;
    let last_id = segment_ids.iter().next_back().copied();

    for &id in &segment_ids {
        let path = segment::segment_path(&dir.path, id);
        let seg = match Segment::open(&dir.disk, path.clone(), id)? {
            Ok(seg) => seg,
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "removing an unreadable segment");
                report.damaged_segments += 1;
                remove_quietly(dir, &path);
                remove_quietly(dir, &segment::hint_path(&dir.path, id));
                continue;
            }
        };
        report.segments += 1;
        let mut apply = |f: Found<'_>| {
            report.records += 1;
            if f.seq < meta.min_seq {
                return;
            }
            max_seq = max_seq.max(f.seq);
            apply(&index, &mut tombstones, id, f);
        };
        let data_end = match load_hint(&dir.path, &seg) {
            Some((hint, hint_len)) => {
                report.from_hints += 1;
                seg.hint_bytes.store(hint_len, Ordering::Relaxed);
                for e in hint.entries {
                    apply(Found {
                        kind: e.kind,
                        key: FoundKey::Owned(e.key),
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
                        key: FoundKey::Borrowed(r.key),
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
                }
                // Cut the file at the last good record: a torn tail is gone, so a later scan
                // ends cleanly there, and the space a crashed active segment had reserved is
                // given back. Truncating needs no free space, so this works on a full disk.
                let data_end = scan.data_end;
                seg.data_end.store(data_end, Ordering::Release);
                seg.truncate_to_data()?;
                if scan.torn_tail.is_some() {
                    seg.sync()?;
                }
                match write_hint(dir, id, &hint) {
                    Ok(()) => seg.hint_bytes.store(hint.len() as u64, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!(error = %e, "could not write a hint file after scanning a segment")
                    }
                }
                data_end
            }
        };
        seg.data_end.store(data_end, Ordering::Release);
        segments.insert(id, Arc::new(seg));
    }

    // Expired values lost their key; count live bytes per segment for the rest (one pass).
    index.retain(|_, e| {
        if e.is_expired(now_ms) {
            report.expired += 1;
            false
        } else {
            if let Some(seg) = segments.get(&e.segment) {
                seg.live_bytes.fetch_add(u64::from(e.len), Ordering::Relaxed);
            }
            true
        }
    });
    // Saturating: ids and sequence numbers near u64::MAX only come from crafted files; the store
    // must fail cleanly on them (a segment id that exists cannot be created), not overflow.
    let next_segment_id = segment_ids
        .iter()
        .next_back()
        .map_or(1, |id| id.saturating_add(1));
    Ok(Recovered {
        segments,
        index,
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

/// Applies one record to the index: highest seq wins; on a tie a tombstone wins, then the
/// record found later (a newer copy left by an interrupted compaction).
fn apply(index: &Index, tombstones: &mut HashMap<Box<str>, u64>, segment: u64, f: Found<'_>) {
    match f.kind {
        Kind::Value => {
            if tombstones.get(f.key.as_str()).is_some_and(|&t| t >= f.seq) {
                return;
            }
            let entry = IndexEntry::new(segment, f.offset, f.len, f.seq, f.expires_at_ms);
            match index.entry(f.key.into_box()) {
                MapEntry::Occupied(mut old) => {
                    if old.get().seq <= f.seq {
                        old.insert(entry);
                    }
                }
                MapEntry::Vacant(slot) => {
                    slot.insert(entry);
                }
            }
        }
        Kind::Tombstone => {
            index.remove_if(f.key.as_str(), |_, e| e.seq <= f.seq);
            let slot = tombstones.entry(f.key.into_box()).or_insert(f.seq);
            *slot = (*slot).max(f.seq);
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

/// Reads and checks the hint file of `seg`; `None` if it is missing, damaged or does not match
/// the segment (the caller then scans).
fn load_hint(dir: &Path, seg: &Segment) -> Option<(format::Hint, u64)> {
    let path = segment::hint_path(dir, seg.id);
    let bytes = fs::read(&path).ok()?;
    let hint = match format::decode_hint(&bytes) {
        Ok(hint) => hint,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring a damaged hint file; scanning its segment");
            return None;
        }
    };
    let fits = hint.segment_id == seg.id
        && hint.data_end >= SEGMENT_HEADER_LEN as u64
        && hint.data_end <= seg.mapped_len()
        && hint.entries.iter().all(|e| {
            u64::from(e.offset) >= SEGMENT_HEADER_LEN as u64
                && u64::from(e.offset) + u64::from(e.len) <= hint.data_end
        });
    if !fits {
        tracing::warn!(path = %path.display(), "ignoring a hint file that does not match its segment");
        return None;
    }
    Some((hint, bytes.len() as u64))
}

/// Writes a hint file via a temporary file and a rename. Not fsynced: a lost or torn hint only
/// means the next open scans the segment. A failure (a full disk) leaves no temporary file.
pub(crate) fn write_hint(dir: &LockedDir, id: u64, bytes: &[u8]) -> Result<()> {
    let path = segment::hint_path(&dir.path, id);
    let tmp = path.with_extension(format!("{HINT_EXT}.{TMP_EXT}"));
    let written = dir
        .disk
        .write_file(&tmp, bytes, dir.file_mode)
        .map_err(|e| Error::io("write hint", &tmp, e))
        .and_then(|()| {
            dir.disk
                .rename(&tmp, &path)
                .map_err(|e| Error::io("rename hint", &path, e))
        });
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Segment and hint ids in the directory; deletes leftover temporary files.
fn list(dir: &LockedDir) -> Result<(BTreeSet<u64>, BTreeSet<u64>)> {
    let mut segments = BTreeSet::new();
    let mut hints = BTreeSet::new();
    let entries = fs::read_dir(&dir.path).map_err(|e| Error::io("list directory", &dir.path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", &dir.path, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(&format!(".{TMP_EXT}")) {
            remove_quietly(dir, &entry.path());
        } else if let Some(id) = segment::parse_file_id(name, SEGMENT_EXT) {
            segments.insert(id);
        } else if let Some(id) = segment::parse_file_id(name, HINT_EXT) {
            hints.insert(id);
        }
    }
    Ok((segments, hints))
}

fn remove_quietly(dir: &LockedDir, path: &Path) {
    if let Err(e) = dir.disk.remove_file(path) {
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
        fs::write(segment::hint_path(dir, id), &hint).unwrap();
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
