//! What a file store reports: [`FileStoreStats`] (sizes and counters) and [`VerifyReport`]
//! (what [`FileStore::verify`](super::FileStore::verify) found), and how the store works them out.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::segment::Segment;
use super::Inner;

/// Sizes and counters of a file store.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct FileStoreStats {
    /// Keys with a live value (expired ones not yet swept included).
    pub live_items: u64,
    /// Bytes of the live records (headers, keys and values).
    pub live_bytes: u64,
    /// Bytes of records across all segments, headers included, and of hint files: what
    /// `max_size` bounds.
    pub disk_bytes: u64,
    /// What the store's files take on the device: `disk_bytes` plus the space reserved for the
    /// active segment's next records. At most `max_size` plus one segment, but while a compaction
    /// rewrites a segment: its copies come before the segment goes, up to a segment more.
    pub allocated_bytes: u64,
    /// Segment files, the active one included.
    pub segments: u64,
    /// Values of fills refused lately, held in RAM for a second read (not in `live_items`):
    /// at most one per 64 entries of the store (but four, or an eighth of a store of fewer than
    /// 32), a 64th of its size (or what those take), and 8 MiB.
    pub held_fills: u64,
    /// RAM those values take, keys and bookkeeping included.
    pub held_fill_bytes: u64,
    /// `disk_bytes - live_bytes`: overwritten, deleted and expired records, tombstones, headers.
    pub dead_bytes: u64,
    /// Damaged byte ranges the open skipped (each may have held one or more records; see
    /// [`RecoveryReport::damaged_ranges`](super::RecoveryReport::damaged_ranges), which this is).
    pub recovery_skipped_records: u64,
    /// Reads that found a damaged record (treated as a miss; the key was dropped), and deletes
    /// that found the key's record damaged (no value removed).
    pub corrupt_reads: u64,
    /// Entries dropped by the size bound.
    pub evictions: u64,
    /// Entries an eviction re-appended instead of dropping (see the file tier's eviction in the
    /// README): read since written, protected, or unread ones kept in the room left over.
    pub second_chances: u64,
    /// Entries removed because their TTL passed, an expired value a write or delete of its key
    /// dropped included.
    pub expirations: u64,
    /// Segments rewritten by compaction.
    pub compactions: u64,
    /// Evictions whose segment's entries the planner thread had listed ahead, off the writer
    /// lock (the others read the segment while the evicting write waited).
    #[serde(default)]
    pub planned_evictions: u64,
    /// Damaged byte ranges that went with the oldest segment since the open, by compaction (every
    /// [`CompactionReport::damaged_ranges_dropped`](super::CompactionReport::damaged_ranges_dropped), the background compactor's included) or the
    /// size bound: records lost to damage that neither [`FileStore::verify`](super::FileStore::verify) nor a read can find
    /// any more. An eviction removes unread only a segment no value was written to in this run
    /// (tombstones only): that one counts what the open or a compaction found in it.
    #[serde(default)]
    pub damaged_ranges_dropped: u64,
    /// The segment maps are advised for random reads: a get that misses the page cache reads
    /// only its own page (see [`FileStoreOptions::map_reads`](super::FileStoreOptions::map_reads)). Decided at the open.
    #[serde(default)]
    pub random_map_reads: bool,
}

/// What [`FileStore::verify`](super::FileStore::verify) found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
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
    /// Without the writer lock, which a write holds across its fsync and its evictions: a
    /// monitoring poll must not wait for them. The figures are read one by one, as they always
    /// were (the counters are atomics), so a write in between may show in some and not others.
    pub(super) fn stats(&self) -> FileStoreStats {
        let disk_bytes = self.disk_bytes.load(Ordering::Relaxed);
        let (segments, reserved) = {
            let segments = self.segments.read();
            // The segment writes go to, if any, is the newest: a roll creates the next id.
            let active = segments
                .values()
                .next_back()
                .filter(|s| !s.sealed.load(Ordering::Acquire));
            let reserved = active.map_or(0, |a| self.segment_size.saturating_sub(a.data_end()));
            (segments.len() as u64, reserved)
        };
        let live_bytes = self.live_bytes.load(Ordering::Relaxed);
        let c = &self.counters;
        let (held_fills, held_fill_bytes) = self.stash.size();
        FileStoreStats {
            held_fills,
            held_fill_bytes,
            live_items: self.index.len() as u64,
            live_bytes,
            disk_bytes,
            segments,
            allocated_bytes: disk_bytes + reserved,
            dead_bytes: disk_bytes.saturating_sub(live_bytes),
            recovery_skipped_records: self.recovery.damaged_ranges,
            corrupt_reads: c.corrupt_reads.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            second_chances: c.second_chances.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            planned_evictions: c.planned_evictions.load(Ordering::Relaxed),
            damaged_ranges_dropped: c.damaged_ranges_dropped.load(Ordering::Relaxed),
            random_map_reads: self.random_map_reads,
        }
    }

    pub(super) fn verify(&self, mut progress: impl FnMut(u64, u64)) -> VerifyReport {
        let segments: Vec<Arc<Segment>> = self.segments.read().values().cloned().collect();
        let total: u64 = segments.iter().map(|s| s.data_end()).sum();
        let mut report = VerifyReport::default();
        let mut done = 0;
        for seg in segments {
            // Read once: the active segment grows while it is scanned, and records appended
            // after the scan are not a lost tail.
            let end = seg.data_end();
            let scan = seg.scan_data_to(end);
            report.segments += 1;
            report.records += scan.records.len() as u64;
            // Everything between the last good record and the data end the index relies on is
            // damage: torn bytes, or zeros, which a scan alone takes for the end of the log. Not
            // what the scan reported damaged already: a last record whose intact header gave its
            // length is skipped as a damaged range without moving the scan's data end past it.
            let counted = scan.damaged.last().map_or(0, |r| r.end).max(scan.data_end);
            let lost_tail = (counted < end).then_some(counted..end);
            for range in scan.damaged.iter().chain(lost_tail.iter()) {
                report.damaged_ranges += 1;
                report.damaged_bytes += range.end - range.start;
            }
            if !scan.damaged.is_empty() || lost_tail.is_some() {
                report
                    .problems
                    .push(format!("{}: damaged records", seg.path.display()));
            }
            done += end;
            progress(done, total);
        }
        report
    }
}
