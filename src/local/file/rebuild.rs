//! The index rebuilt from the records recovery found: shard by shard, on every core.
//!
//! The rule (storage-format.md, "Recovery"): per key hash, the record with the highest sequence
//! number wins; on a tie a tombstone wins, then the record found later (a newer copy left by an
//! interrupted compaction). Ties only happen between records of one key: every write takes a new
//! sequence number. So all that matters is that the records of one hash are applied in the order
//! they have on disk (segment, then file order).
//!
//! # Why by shard
//! The index is a sharded map, and every record of a hash lands in the same shard. Recovery
//! sorts each record into its shard as it finds it ([`Parts`]); the shards are then independent,
//! so each is applied by one thread, with its own tombstones, and the open uses every core.
//! Within a shard, records are applied in the order of the shard table's memory (a stable
//! partition into runs of 512 buckets), so a million inserts walk the table instead of missing
//! the cache and the TLB on each. Before, one thread ordered all records at once (4,096 runs
//! over 40 MB: a scatter that missed the TLB on every record) and applied them: 75 of the
//! 135 ms of opening a million entries from their hints, on 2 cores (`open-ours` of the
//! `file_store` bench). Measured on a quiet 2-core machine, alternating the builds: that open
//! went from 135–169 ms to 100–108 ms, and `file_reopen_1m_after_kill` (one segment from its
//! hint, the active one scanned, already on two threads) from 109–124 ms to 98–103 ms.
//!
//! The index keeps no sequence number: when a record meets an entry of its hash (an overwrite,
//! a tombstone), the entry's sequence number and length are read back from its record header,
//! in a segment already mapped. A store of distinct keys reads nothing back; every overwrite
//! still on disk costs one header read, which is cheaper than a second table of a million
//! sequence numbers that every record would have to go through. A header that claims a seq
//! above the record found after it (a compaction's copy, or damage) is checked whole: under an
//! intact hint, a damaged seq in an overwritten record kept the newer one out of the index.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry as MapEntry;

use super::format::{self, Kind};
use super::index::{self, Index, IndexEntry, Loc, PassThrough};
use super::lapsed::Lapsed;
use super::segment::Segment;
use super::slots::Slots;

/// Records fewer than this are applied on the opening thread alone: threads would cost more
/// than they save.
const PARALLEL_FROM: usize = 1 << 16;
/// Most threads an open applies records on.
const MAX_THREADS: usize = 8;
/// Buckets of the index per run of the partition (see [`in_bucket_order`]): a run's part of the
/// table is a few kilobytes.
const BUCKETS_PER_RUN: u64 = 512;

/// A record found, waiting to be applied: its key is hashed already (the hint bytes and scans
/// it came from are dropped segment by segment).
#[derive(Clone, Copy)]
pub(super) struct Pending {
    pub(super) hash: u64,
    pub(super) seq: u64,
    pub(super) loc: Loc,
    pub(super) expires_at_ms: u64,
    pub(super) len: u32,
    pub(super) kind: Kind,
}

/// The records of one segment, one part per index shard ([`index::shard_of`]), each in file
/// order. The parts are made with the first record, or the first room asked for: a store of
/// many small segments on a machine of many cores would otherwise hold a part per shard for
/// every segment through the open, records or not.
pub(super) struct Parts(Vec<Vec<Pending>>);

impl Parts {
    /// Empty parts with room for about `records` records in all.
    pub(super) fn with_capacity(records: usize) -> Parts {
        let mut parts = Parts(Vec::new());
        parts.reserve(records);
        parts
    }

    /// Room for about `records` more records in all.
    pub(super) fn reserve(&mut self, records: usize) {
        if records == 0 {
            return;
        }
        let each = share(records, self.made().len());
        for part in &mut self.0 {
            part.reserve(each);
        }
    }

    pub(super) fn push(&mut self, p: Pending) {
        if let Some(part) = self.made().get_mut(index::shard_of(p.hash)) {
            part.push(p);
        }
    }

    /// The parts, one per shard, made if they were not.
    fn made(&mut self) -> &mut Vec<Vec<Pending>> {
        if self.0.is_empty() {
            self.0.resize_with(index::shard_amount(), Vec::new);
        }
        &mut self.0
    }

    /// Records held, in all parts.
    pub(super) fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    /// The length of each part, to go back to with [`Parts::truncate`].
    pub(super) fn mark(&self) -> Vec<usize> {
        self.0.iter().map(Vec::len).collect()
    }

    /// Drops every record pushed since `mark` was taken (parts made since then held none).
    pub(super) fn truncate(&mut self, mark: &[usize]) {
        for (i, part) in self.0.iter_mut().enumerate() {
            part.truncate(mark.get(i).copied().unwrap_or(0));
        }
    }

    fn shard(&self, shard: usize) -> &[Pending] {
        self.0.get(shard).map_or(&[], Vec::as_slice)
    }
}

/// A part's room for `records` spread over `shards`: a little over an even share (a large
/// reservation never written is never made resident), and no more: every segment's parts are
/// held through the open, and a fixed room in each (16 records, 640 bytes) outweighed the
/// records in a store of small segments: a GiB in 16,384 segments of 64 KiB held 84 MB of it
/// with 8 shards (2 cores), 1.3 GB with 128 (32 cores), where its million records of 1 KiB take
/// 40 MB.
fn share(records: usize, shards: usize) -> usize {
    let shards = shards.max(1);
    records.div_ceil(shards) + records / shards.saturating_mul(8)
}

/// A new index holding, for every hash, the winner of its records in `parts` (one per segment,
/// in segment order; `segments` in slot order) after the tombstones `buried` (hash, seq), which
/// come before every record. Records of a value add their length to their segment's live bytes.
pub(super) fn build(
    segments: &[Arc<Segment>],
    slots: &Slots,
    buried: &[(u64, u64)],
    parts: &[Parts],
) -> Index {
    let records: usize = parts.iter().map(Parts::len).sum();
    // Sized once for every record: growing a map of a million keys rehashes every key several
    // times, which was about a quarter of the time to open.
    let index = index::with_capacity(records);
    let shards = index::shard_amount();
    let mut tombstones: Vec<Vec<(u64, u64)>> = vec![Vec::new(); shards];
    for &(hash, seq) in buried {
        if let Some(part) = tombstones.get_mut(index::shard_of(hash)) {
            part.push((hash, seq));
        }
    }
    let (bucket_of, buckets) = index::bucket_in_shard(records);
    let next = AtomicUsize::new(0);
    let work = || {
        let mut ordered = Vec::new();
        loop {
            let shard = next.fetch_add(1, Ordering::Relaxed);
            let Some(buried) = tombstones.get(shard) else {
                break;
            };
            let mut applied = Applied {
                index: &index,
                slots,
                tombstones: HashMap::default(),
            };
            for &(hash, seq) in buried {
                applied.bury(hash, seq);
            }
            in_bucket_order(
                parts.iter().map(|p| p.shard(shard)),
                &bucket_of,
                buckets,
                &mut ordered,
            );
            for p in &ordered {
                // Recovery gave the segments slots 0, 1, 2… in this order.
                if let Some(seg) = segments.get(p.loc.slot() as usize) {
                    applied.apply(seg, p);
                }
            }
        }
    };
    let threads = if records < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(shards)
            .min(MAX_THREADS)
    };
    std::thread::scope(|scope| {
        for _ in 1..threads {
            // A thread the system refuses (a limit on threads) leaves its shards to the others
            // and to this one.
            if let Err(e) = std::thread::Builder::new()
                .name("uno-cache-open".to_owned())
                .spawn_scoped(scope, work)
            {
                tracing::debug!(error = %e, "opening with fewer threads: one could not be started");
                break;
            }
        }
        work();
    });
    index
}

/// Records of one shard, taken from `parts` (in their order), stably partitioned into runs of
/// [`BUCKETS_PER_RUN`] buckets of the shard's table, in table order, into `out`. Stable, so the
/// records of one hash keep their order on disk. Two sequential passes, where a comparison sort
/// of a million records cost more than the misses it saved.
fn in_bucket_order<'p>(
    parts: impl Iterator<Item = &'p [Pending]> + Clone,
    bucket_of: &impl Fn(u64) -> u64,
    buckets: u64,
    out: &mut Vec<Pending>,
) {
    let runs = usize::try_from(buckets.div_ceil(BUCKETS_PER_RUN))
        .unwrap_or(1)
        .clamp(1, 1 << 16);
    let run_of = |p: &Pending| {
        usize::try_from(bucket_of(p.hash) / BUCKETS_PER_RUN)
            .unwrap_or(0)
            .min(runs - 1)
    };
    let mut starts = vec![0usize; runs];
    for p in parts.clone().flatten() {
        if let Some(n) = starts.get_mut(run_of(p)) {
            *n += 1;
        }
    }
    let mut at = 0;
    for n in &mut starts {
        (at, *n) = (at + *n, at);
    }
    out.clear();
    out.extend(parts.clone().flatten().copied());
    for p in parts.flatten() {
        if let Some(next) = starts.get_mut(run_of(p)) {
            if let Some(slot) = out.get_mut(*next) {
                *slot = *p;
            }
            *next += 1;
        }
    }
}

/// The records of one shard being applied: the shard's part of the index, and its tombstones.
struct Applied<'s> {
    index: &'s Index,
    slots: &'s Slots,
    /// The highest tombstone per key hash.
    tombstones: HashMap<u64, u64, BuildHasherDefault<PassThrough>>,
}

impl Applied<'_> {
    /// Applies one record of `seg` (see the module's rule).
    fn apply(&mut self, seg: &Segment, f: &Pending) {
        let (hash, loc) = (f.hash, f.loc);
        if f.kind == Kind::Tombstone {
            self.bury(hash, f.seq);
            return;
        }
        if self.tombstones.get(&hash).is_some_and(|&t| t >= f.seq) {
            return;
        }
        let entry = IndexEntry::new(loc, f.expires_at_ms);
        match self.index.entry(hash) {
            MapEntry::Occupied(mut old) => {
                let (old_seq, _) = unaccount_if(self.slots, old.get().loc, |seq| seq <= f.seq);
                if old_seq.is_none_or(|seq| seq <= f.seq) {
                    old.insert(entry);
                    seg.live_bytes.fetch_add(u64::from(f.len), Ordering::Relaxed);
                }
            }
            MapEntry::Vacant(slot) => {
                slot.insert(entry);
                seg.live_bytes.fetch_add(u64::from(f.len), Ordering::Relaxed);
            }
        }
    }

    /// A tombstone of `hash` at `seq`: from a record, or from the keys of a lost segment.
    fn bury(&mut self, hash: u64, seq: u64) {
        let old = self.index.get(&hash).map(|e| e.loc);
        if let Some(old) = old {
            if let (_, true) = unaccount_if(self.slots, old, |s| s <= seq) {
                self.index.remove(&hash);
            }
        }
        let slot = self.tombstones.entry(hash).or_insert(seq);
        *slot = (*slot).max(seq);
    }
}

/// Reads the header of the record at `loc`; if `replace(its seq)` holds, subtracts its length
/// from its segment's live bytes. Returns the seq (`None` for an unreadable header, which loses
/// to any record) and whether it was replaced.
///
/// Threads applying other shards add to the same segments' live bytes meanwhile; a record's
/// length is only ever taken away after it was added, by the thread of its shard, so the
/// subtraction never saturates.
fn unaccount_if(slots: &Slots, loc: Loc, replace: impl FnOnce(u64) -> bool) -> (Option<u64>, bool) {
    let Some(seg) = slots.get(loc) else {
        return (None, true);
    };
    let header = seg
        .read(loc.offset(), format::RECORD_HEADER_LEN as u32)
        .and_then(format::peek_record_header);
    let Some(header) = header else {
        return (None, true);
    };
    if !replace(header.seq) {
        // A record newer than one found after it on disk: a compaction's copy of it, or a
        // header whose seq was damaged, which would keep an intact newer record out of the
        // index (and the read of the damaged one would then tombstone the key). Checked in
        // full here only: this order is rare, so an open of overwritten keys still reads one
        // header per overwrite.
        if !record_checks(&seg, loc, header.len) {
            return (None, true);
        }
        return (Some(header.seq), false);
    }
    let _ = seg
        .live_bytes
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(u64::from(header.len)))
        });
    (Some(header.seq), true)
}

/// True if the record of `len` bytes at `loc` in `seg` passes its CRC.
fn record_checks(seg: &Segment, loc: Loc, len: u32) -> bool {
    seg.read(loc.offset(), len).is_some_and(|bytes| {
        matches!(
            format::decode_record(bytes, seg.salt),
            format::Decoded::Record(..)
        )
    })
}

/// Drops expired values from `index`, exactly: the coarse expiry in memory decides, and for an
/// entry in its last second the record's own. Returns how many were dropped, remembered in
/// `lapsed`.
pub(super) fn drop_expired(index: &Index, slots: &Slots, now_ms: u64, lapsed: &Lapsed) -> u64 {
    let mut expired = Vec::new();
    for e in index.iter() {
        let (hash, entry) = (*e.key(), e.value());
        if entry.is_expired(now_ms) {
            expired.push((hash, entry.loc));
        } else if entry.may_be_expired(now_ms) {
            let exact = slots
                .get(entry.loc)
                .and_then(|seg| {
                    seg.read(entry.loc.offset(), format::RECORD_HEADER_LEN as u32)
                        .and_then(format::peek_record_header)
                })
                .map_or(0, |h| h.expires_at_ms);
            if exact != 0 && now_ms >= exact {
                expired.push((hash, entry.loc));
            }
        }
    }
    let entries = index.len();
    for &(hash, loc) in &expired {
        unaccount_if(slots, loc, |_| true);
        index.remove(&hash);
        lapsed.insert(hash, entries);
    }
    expired.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::file::index::KeyHasher;

    fn pending(hash: u64, seq: u64) -> Pending {
        Pending {
            hash,
            seq,
            loc: Loc::new(0, 0, 32),
            expires_at_ms: 0,
            len: 40,
            kind: Kind::Value,
        }
    }

    #[test]
    fn a_segments_parts_reserve_room_for_its_records_not_a_fixed_amount_per_shard() {
        let room = |parts: &Parts| parts.0.iter().map(Vec::capacity).sum::<usize>();
        let shards = index::shard_amount();
        // A scanned segment's parts, before its scan: held, as every segment's, through the open.
        let mut scanned = Parts::with_capacity(0);
        assert_eq!(room(&scanned), 0);
        scanned.reserve(0);
        assert_eq!(room(&scanned), 0);
        assert!(scanned.0.is_empty(), "parts made for a segment of no records");
        // Records pushed after a mark taken before the parts were made go with a truncate.
        let mark = scanned.mark();
        scanned.push(pending(7, 1));
        assert_eq!(scanned.len(), 1);
        scanned.truncate(&mark);
        assert_eq!(scanned.len(), 0);
        // A hint of 64 records (a 64 KiB segment of 1 KiB values).
        let records = 64;
        let hinted = Parts::with_capacity(records);
        assert!(
            room(&hinted) >= records,
            "room for {} of {records}",
            room(&hinted)
        );
        assert!(
            room(&hinted) <= records + records / 8 + shards,
            "room for {} records, {records} expected, {shards} shards",
            room(&hinted)
        );
    }

    #[test]
    fn bucket_order_partition_is_stable_so_the_records_of_one_hash_keep_their_disk_order() {
        let capacity = 100_000;
        let (bucket_of, buckets) = index::bucket_in_shard(capacity);
        let hasher = KeyHasher::default();
        // Three records per key, interleaved as on disk, in two segments; seq tells their order.
        let mut segments = [Parts::with_capacity(capacity), Parts::with_capacity(capacity)];
        for seq in 0..3 * capacity as u64 {
            let hash = hasher.hash(&format!("key{}", seq % capacity as u64));
            segments[usize::from(seq >= capacity as u64)].push(pending(hash, seq));
        }
        let mut seen = 0;
        let mut ordered = Vec::new();
        for shard in 0..index::shard_amount() {
            in_bucket_order(
                segments.iter().map(|p| p.shard(shard)),
                &bucket_of,
                buckets,
                &mut ordered,
            );
            seen += ordered.len();
            let runs: Vec<u64> = ordered
                .iter()
                .map(|p| bucket_of(p.hash) / BUCKETS_PER_RUN)
                .collect();
            assert!(runs.windows(2).all(|w| w[0] <= w[1]), "not in bucket runs");
            assert!(
                ordered.iter().all(|p| index::shard_of(p.hash) == shard),
                "a record in another shard's part"
            );
            let mut last_seq: HashMap<u64, u64> = HashMap::new();
            for p in &ordered {
                if let Some(prev) = last_seq.insert(p.hash, p.seq) {
                    assert!(prev < p.seq, "records of one hash were reordered");
                }
            }
        }
        assert_eq!(seen, 3 * capacity);
    }

    #[test]
    fn shards_applied_on_many_threads_give_the_index_one_thread_gives() {
        // More records than `PARALLEL_FROM`, overwrites and tombstones of every kind: the
        // parallel build must pick the same winner per hash as applying in disk order would.
        let dir = tempfile::tempdir().unwrap();
        let seg = Arc::new(
            Segment::create_in(&crate::disk::Disk::default(), dir.path(), 0o600, 1, 64 << 20).unwrap(),
        );
        let slots = Slots::default();
        let base = slots.loc(&seg, 0).unwrap();
        let hasher = KeyHasher::default();
        let keys = 40_000u64;
        let mut buf = Vec::new();
        let mut parts = Parts::with_capacity(3 * keys as usize);
        // Per hash, the offset and length of the record that wins, if a value.
        let mut expected: HashMap<u64, Option<(u64, u32)>> = HashMap::new();
        let mut at = format::SEGMENT_HEADER_LEN as u64;
        for seq in 0..3 * keys {
            let key = format!("key{}", (seq * 7919) % keys);
            let kind = if seq % 5 == 0 {
                Kind::Tombstone
            } else {
                Kind::Value
            };
            let value: &[u8] = if kind == Kind::Tombstone { b"" } else { b"value" };
            let start = buf.len();
            format::encode_record(&mut buf, seg.salt, kind, seq, 0, &key, value);
            let len = (buf.len() - start) as u32;
            let hash = hasher.hash(&key);
            parts.push(Pending {
                hash,
                seq,
                loc: base.at(at),
                expires_at_ms: 0,
                len,
                kind,
            });
            expected.insert(hash, (kind == Kind::Value).then_some((at, len)));
            at += u64::from(len);
        }
        seg.write_at(format::SEGMENT_HEADER_LEN as u64, &buf).unwrap();
        seg.data_end.store(at, Ordering::Release);
        // One hash buried by a lost segment past every record of it: absent, though its last
        // record is a value.
        let lost = hasher.hash("key1");
        assert!(expected.get(&lost).is_some_and(Option::is_some));
        let index = build(std::slice::from_ref(&seg), &slots, &[(lost, u64::MAX)], &[parts]);
        expected.insert(lost, None);
        let live: Vec<(u64, (u64, u32))> = expected
            .iter()
            .filter_map(|(&h, won)| won.map(|w| (h, w)))
            .collect();
        assert_eq!(index.len(), live.len());
        for &(hash, (at, _)) in &live {
            assert_eq!(
                index.get(&hash).map(|e| e.loc.offset()),
                Some(at),
                "hash {hash:#x}"
            );
        }
        assert!(index.get(&lost).is_none());
        let live_bytes: u64 = live.iter().map(|&(_, (_, len))| u64::from(len)).sum();
        assert_eq!(seg.live_bytes.load(Ordering::Relaxed), live_bytes);
    }
}
