//! Keeping the store small and clean: size-bound eviction, the TTL sweep, and segment rewriting.
//!
//! The size bound drops the oldest segment; which of its live entries are re-appended first is
//! the eviction policy, in [`super::policy`].
//!
//! Why tombstones are kept or dropped (the invariant, proved in storage-format.md): every record
//! older than a record R of the same key lies in R's segment or an older one. So a segment's
//! records that are not live can be dropped outright only when it is the oldest segment; in any
//! other segment a dead record of a key that is no longer in the index is kept as a tombstone
//! (same sequence number), so an older value of the key cannot resurface at restart.
//!
//! The size bound holds after every write: a write makes room for all it adds to the bytes
//! counted (its records, their hint entries, and a roll's segment header and hint frame) before
//! it appends (`Inner::ensure_space_for`). Between writes the count may pass the bound for a
//! moment, by at most one segment's copies and a roll: compaction appends its copies and
//! tombstones before it removes the segment they come from (which then frees at least as much),
//! and the tombstone a read appends for a damaged record makes no room first (the next write
//! does).
//!
//! A segment in which compaction finds damaged records is not removed unless it is the oldest:
//! a damaged record is skipped unread, and it may have been a tombstone that the segment's hint
//! still applies at every open.
//!
//! The same goes for copies: every record on disk that the index does not point at must be
//! shadowed by a newer record or a tombstone. A copy is written only after the roll it needs
//! (which may evict, on a full device, the very segment being copied from), and only if the
//! index still points at the original; and a segment's originals are removed only while the
//! store is writable, since a failed fsync may have lost the copies.
//!
//! A compaction never evicts to make room for what it appends: on a device too full for the
//! next segment it stops with `DiskFull`, and the segment stays. Evicting the oldest segment for
//! the roll, as a write does, made a compaction on a full device evict more live entries than it
//! freed room for: a store whose segments were mostly live ended empty.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::admission::{self, Victim};
use super::format::{self, Kind};
use super::index::{Loc, Spend};
use super::plan::{self, Listed};
use super::policy::{self, Standing};
use super::segment::{InOrder, Segment};
use super::{decay, Inner, Writer};
use crate::error::Result;
use crate::shutdown::Shutdown;

/// What one compaction step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Expired entries removed from the index.
    pub expired: u64,
    /// Segments rewritten and deleted.
    pub segments_rewritten: u64,
    /// Live records copied forward.
    pub records_moved: u64,
    /// Bytes on disk before minus after.
    pub bytes_reclaimed: i64,
    /// Damaged byte ranges (records that could not be read, lost already) in the segments
    /// rewritten, dropped with them: the damage a later `verify` can no longer see, and a `get`
    /// of its keys no longer reports. Absent from reports written before it existed (then 0).
    /// Every compaction's, the background compactor's included, add up in
    /// [`FileStoreStats::damaged_ranges_dropped`](super::FileStoreStats::damaged_ranges_dropped).
    #[serde(default)]
    pub damaged_ranges_dropped: u64,
}

/// How many records are moved per acquisition of the writer lock, so writers are not starved.
const BATCH: usize = 256;

/// The small sealed segments (less than an eighth of a segment each: what a run that wrote a
/// little left) an open leaves as they are; past it, the open merges them all (see
/// `Inner::merge_small_at_open`). Each is a file and a map while the store is open.
pub(crate) const SMALL_SEGMENTS_AT_OPEN: usize = 16;

/// A live value record of the segment an eviction drops: what ranking it needs, without its
/// bytes.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    hash: u64,
    loc: Loc,
    /// Bytes of the record.
    len: u32,
    /// As ranking weighs it: with the reads the sketch and the tier in front saw.
    standing: Standing,
    /// Its index entry's standing when it was listed: what the loop over the candidates uses
    /// for one it will not copy, rather than look its entry up again (see `evict_oldest`).
    listed: Standing,
    /// The reads counted in its index entry, as they were when it was listed.
    counted: u32,
    /// The tier in front of the store holds the key (see `policy`, reads served in front).
    held_above: bool,
    expired: bool,
}

impl Candidate {
    /// `listed` as an eviction at `now` weighs it, with its `standing` now, whether the sketch
    /// saw its key read lately and whether the tier in front holds its key now.
    fn new(listed: Listed, standing: Standing, read_lately: bool, held_above: bool, now: u64) -> Candidate {
        Candidate {
            hash: listed.hash,
            loc: listed.loc,
            len: listed.len,
            standing: standing
                .with_reads_lately(read_lately)
                .with_reads_above(held_above),
            listed: standing,
            counted: standing.freq,
            held_above,
            expired: listed.expires_at_ms != 0 && now >= listed.expires_at_ms,
        }
    }
}

/// How an entry an eviction keeps is marked (see `IndexEntry::kept_at_eviction`).
#[derive(Debug, Clone, Copy)]
struct Kept {
    /// The reads it spends.
    spend: Spend,
    /// Protected and unread since its last keep, but read lately by the sketch: it stays
    /// protected.
    read_lately: bool,
}

/// Which of `seg`'s `candidates` an eviction keeps (see `policy`): ranked (expired ones are
/// never kept), within the shares of the segment's records that may be copied.
fn rank_and_choose(seg: &Segment, candidates: &[Candidate], looked_up: bool) -> policy::Choice {
    let ranks: Vec<u8> = candidates
        .iter()
        .map(|c| if c.expired { 0 } else { c.standing.rank(looked_up) })
        .collect();
    let lens: Vec<u64> = candidates.iter().map(|c| u64::from(c.len)).collect();
    // Shares of the records this segment holds, not of its size: a segment sealed early by a
    // roll is short, and a share of the full size let an eviction copy all of it and free
    // nothing but the file.
    policy::choose(
        &ranks,
        &lens,
        policy::copy_limit(seg.data_bytes()),
        policy::filler_limit(seg.data_bytes()),
        policy::copy_ceiling(seg.data_bytes()),
    )
}

impl Inner {
    /// Evicts oldest segments until `needed` more bytes fit under the size bound.
    ///
    /// The bound is on records and hints; the active segment also has the rest of its reserved
    /// space on disk, so the files take no more than the bound plus one segment (but for a
    /// compaction's copies, made before the segment they come from goes: see the module docs).
    pub(super) fn ensure_space(&self, w: &mut Writer, needed: u64) -> Result<()> {
        let mut evicted = false;
        while self.disk_bytes.load(Ordering::Relaxed) + needed > self.max_bytes {
            if !self.evict_oldest(w, true)? {
                break;
            }
            evicted = true;
        }
        if evicted {
            // Reset once per write, not per eviction: a write that needs several evictions
            // judges them all by the same lookups (see `evict_oldest`).
            self.looked_up.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a value written now for `hash` starts protected (see `policy`): while the store
    /// fills up, as a ghost, or over a protected entry. Called under the writer lock, before the
    /// new entry replaces the old one.
    pub(super) fn admit_protected(&self, w: &Writer, hash: u64) -> bool {
        !w.evicted || w.ghosts.contains(hash) || self.index.get(&hash).is_some_and(|e| e.protected())
    }

    /// Whether a fill of `hash`, which would make the store evict, is admitted (see
    /// `admission`): if the key was read more often lately than the next victim's, by more
    /// than [`admission::MARGIN`], and a fill of it was asked for lately
    /// ([`admission::RecentFills`]); or if the victim is an unread probationary entry and no fill
    /// of the key was asked for in the longer window. Under the writer lock; `entries` is what
    /// the store holds, read once per batch of fills (`DashMap::len` locks every shard).
    pub(super) fn admits(&self, w: &mut Writer, hash: u64, entries: usize) -> bool {
        if !self.sketch.started() || entries > self.sketch.entries() {
            // The first time the store is full, or it now holds more entries than the sketch
            // was sized for (smaller values): counts start over, at the size the store holds.
            self.sketch.start(entries);
        }
        let mut rebuilt = false;
        loop {
            let Some(seg) = self.oldest_sealed(w) else {
                return true;
            };
            let stale = w.victims.segment != Some(seg.id) || w.victims.next >= w.victims.list.len();
            if stale {
                if rebuilt {
                    // Nothing live would be dropped: the eviction frees dead bytes only.
                    return true;
                }
                self.build_victims(w, &seg);
                rebuilt = true;
            }
            while let Some(&victim) = w.victims.list.get(w.victims.next) {
                // Still there, and not read since the list was built (then it is kept).
                let standing = self
                    .index
                    .get(&victim.hash)
                    .filter(|e| e.loc == victim.loc && e.freq() <= victim.freq)
                    .map(|e| Standing::of(&e));
                // As the ranking that listed it weighs it.
                let standing = standing.map(|s| s.with_reads_lately(self.read_lately(victim.hash, s)));
                let Some(standing) = standing else {
                    w.victims.next += 1;
                    continue;
                };
                let read_more = || {
                    self.sketch.frequency(hash) > self.sketch.frequency(victim.hash) + admission::MARGIN
                        && w.recent_fills.contains(hash)
                };
                let admit = if standing.gives_way_to_new_keys() {
                    // A key never asked for lately: recency decides, as without admission.
                    !w.recent_fills.seen(hash) || read_more()
                } else {
                    read_more()
                };
                if admit {
                    // The fill takes this victim's place; the next fill faces the next one.
                    w.victims.next += 1;
                }
                return admit;
            }
        }
    }

    /// Lists, in log order, the live entries of `seg` that an eviction would drop now: those
    /// `policy` does not keep.
    fn build_victims(&self, w: &mut Writer, seg: &Segment) {
        w.victims.segment = Some(seg.id);
        w.victims.list.clear();
        w.victims.next = 0;
        let Some(base) = self.slots.find(seg.id) else {
            return;
        };
        let (candidates, _) = self.candidates(seg, base, self.clock.now_ms());
        // As the eviction ranks them, the store being read (a fill follows a read).
        let choice = rank_and_choose(seg, &candidates, true);
        // Into the list's own allocation: it is rebuilt for every segment.
        w.victims.list.extend(
            candidates
                .iter()
                .zip(&choice.keep)
                .filter(|(c, &kept)| !kept && !c.expired)
                .map(|(c, _)| Victim {
                    hash: c.hash,
                    loc: c.loc,
                    freq: c.counted,
                }),
        );
    }

    /// The live value records of `seg` (the index points at them), in log order, as an eviction
    /// weighs them now. `base`: the segment's location. From the segment's plan if the planner
    /// listed it (see `plan`); `planned` says so.
    ///
    /// Without one, reads the records one at a time: decoded all at once, a segment's records
    /// took about 70 bytes each on top of the 32 here, and every eviction of a store at its
    /// bound allocated (and the allocator kept) about 1.5 times the segment's size for them.
    fn candidates(&self, seg: &Segment, base: Loc, now: u64) -> (Vec<Candidate>, bool) {
        let above = self.above.read().clone();
        // Asked now, as the tier's keys change between a listing and its eviction.
        let held_above = |key: &str| above.as_deref().is_some_and(|above| above.holds(key));
        if let Some(plan) = self.planner.ready_for(seg.id) {
            // Listed entries only die (see `plan`): those still live are the candidates. The key
            // is read from the map only for the tier in front (the listing checked the record).
            let mut in_order = InOrder::new(seg);
            let candidates = plan
                .entries
                .iter()
                .filter_map(|&listed| {
                    let standing = self.standing_at(listed.hash, listed.loc)?;
                    let lately = self.read_lately(listed.hash, standing);
                    let held = above.is_some()
                        && in_order
                            .at(listed.loc.offset())
                            .key_at(listed.loc.offset(), listed.len)
                            .is_some_and(held_above);
                    Some(Candidate::new(listed, standing, lately, held, now))
                })
                .collect();
            return (candidates, true);
        }
        let mut records = seg.records();
        let candidates = self
            .value_records(&mut records, base)
            .filter_map(|(listed, key)| {
                let standing = self.standing_at(listed.hash, listed.loc)?;
                let lately = self.read_lately(listed.hash, standing);
                Some(Candidate::new(listed, standing, lately, held_above(key), now))
            })
            .collect();
        // The segment's damage goes with it (see `drop_segment`).
        seg.note_damage(&records);
        (candidates, false)
    }

    /// Every value record `records` reads (of the segment at `base`) in log order, live or not
    /// (the index decides), with its key.
    fn value_records<'r, 's: 'r>(
        &'r self,
        records: &'r mut format::Records<'s>,
        base: Loc,
    ) -> impl Iterator<Item = (Listed, &'s str)> + 'r {
        records
            .filter(|rec| rec.record.kind == Kind::Value)
            .map(move |rec| {
                let listed = Listed {
                    hash: self.hasher.hash(rec.record.key),
                    loc: base.at(rec.offset),
                    len: rec.len,
                    expires_at_ms: rec.record.expires_at_ms,
                };
                (listed, rec.record.key)
            })
    }

    /// Lists the live entries of segment `id` for the eviction that will drop it (the planner
    /// thread, off the writer lock; see `plan`). Stops early, keeping nothing, once another
    /// segment is wanted or the store is closing.
    pub(super) fn list_for_plan(&self, id: u64) {
        let seg = self.segments.read().get(&id).cloned();
        // No slot: no index entry points into the segment, and an eviction finds nothing either.
        let Some((seg, base)) = seg.and_then(|seg| {
            let base = self.slots.find(seg.id)?;
            Some((seg, base))
        }) else {
            self.planner.finish(id, None);
            return;
        };
        let mut entries = Vec::new();
        let mut records = seg.records();
        // Counted over every record read, live or not, so a listing made useless stops soon.
        for (i, (listed, _)) in self.value_records(&mut records, base).enumerate() {
            if i % plan::CHECK_EVERY == 0 && (self.shutdown.is_fired() || !self.planner.still_wanted(id)) {
                return;
            }
            if self.standing_at(listed.hash, listed.loc).is_some() {
                entries.push(listed);
            }
        }
        // The eviction on this plan reads nothing, and the segment's damage goes with it.
        seg.note_damage(&records);
        // Held until the eviction: give back what doubling the vector left over.
        entries.shrink_to_fit();
        self.planner.finish(id, Some(plan::Plan { segment: id, entries }));
    }

    /// Asks the planner to list the next segment to evict once an eviction is coming: the store
    /// is within two segments of its bound. Called where the oldest sealed segment can change,
    /// after a roll and after a removal.
    pub(super) fn plan_next(&self, w: &Writer) {
        #[cfg(test)]
        if self.test_no_plans.load(Ordering::Relaxed) {
            return;
        }
        let coming = self
            .disk_bytes
            .load(Ordering::Relaxed)
            .saturating_add(2 * self.segment_size);
        if coming < self.max_bytes {
            return;
        }
        if let Some(seg) = self.oldest_sealed(w) {
            self.planner.request(seg.id);
        }
    }

    /// The standing of the index entry of `hash`, if it points at `loc`.
    fn standing_at(&self, hash: u64, loc: Loc) -> Option<Standing> {
        self.index
            .get(&hash)
            .filter(|e| e.loc == loc)
            .map(|e| Standing::of(&e))
    }

    /// Whether the entry of `hash`, of `standing`, is protected and unread since its last keep
    /// but the admission sketch saw its key looked up lately (see `policy`, working sets read
    /// less often than the log turns). The sketch counts only once the store is full; before,
    /// nothing is evicted.
    fn read_lately(&self, hash: u64, standing: Standing) -> bool {
        standing.unread_protected() && self.sketch.started() && self.sketch.frequency(hash) > 0
    }

    fn oldest_sealed(&self, w: &Writer) -> Option<Arc<Segment>> {
        let active = w.active_id();
        self.segments
            .read()
            .values()
            .next()
            .filter(|s| Some(s.id) != active)
            .cloned()
    }

    /// Drops the oldest sealed segment. With `second_chance`, its live entries that earned it are
    /// re-appended first, up to [`policy::copy_limit`] (see `policy`), so a hot set survives a
    /// stream of one-off writes. Returns false if there was nothing to evict.
    ///
    /// The copies go into the active segment, rolling to a new one first if they would not fit:
    /// a roll while the old segment is still on disk does not add to the bytes counted (a roll
    /// allocates, but the bound already counts a full active segment), and copies that could
    /// roll mid-way would.
    pub(super) fn evict_oldest(&self, w: &mut Writer, second_chance: bool) -> Result<bool> {
        let Some(seg) = self.oldest_sealed(w) else {
            return Ok(false);
        };
        let now = self.clock.now_ms();
        // A segment without a slot has no index entry pointing at it.
        if let Some(base) = self.slots.find(seg.id) {
            let (candidates, planned) = self.candidates(&seg, base, now);
            if planned {
                self.counters.planned_evictions.fetch_add(1, Ordering::Relaxed);
            }
            // Unread entries are only worth copying in a store that is being read: a stream of
            // writes nobody looks up (a bulk load) copies nothing. Read once, so the ranking and
            // the copies agree on it.
            let looked_up = self.looked_up.load(Ordering::Relaxed);
            // Which records are kept (see `policy`).
            let policy::Choice {
                keep,
                bytes: hot_bytes,
                spend,
            } = if second_chance {
                rank_and_choose(&seg, &candidates, looked_up)
            } else {
                policy::Choice {
                    keep: vec![false; candidates.len()],
                    bytes: 0,
                    spend: true,
                }
            };
            if hot_bytes > 0 && (w.active.is_none() || w.offset + hot_bytes > self.segment_size) {
                self.roll(w)?;
            }
            let first_active = w.first_writable_id();
            // Copies only go where they fit without another roll.
            let budget = hot_bytes.min(self.segment_size.saturating_sub(w.offset));
            // Once per eviction: a `DashMap`'s length locks every shard.
            let entries = self.index.len();
            let generation = policy::ghost_generation(entries);
            let mut kept = 0u64;
            // The entries to drop, taken out of the index only once every copy is made: a copy
            // that fails (a full device, which does not latch the store) then leaves the segment
            // on disk with every entry still pointing at it. Dropped as they came, an entry was
            // gone from the index while its record stayed on disk, so a delete of its key wrote
            // no tombstone and the record came back at the next open.
            let mut drops: Vec<(&Candidate, bool)> = Vec::new();
            let mut evicted = self.counters.evictions.load(Ordering::Relaxed);
            let mut in_order = InOrder::new(&seg);
            for (c, chosen) in candidates.iter().zip(keep) {
                // Looked up again only if it may be copied, as the copy carries the reads counted
                // since (reads take no writer lock); one that goes is weighed as listed, and taken
                // out below only if it still points here: a lookup fewer under the writer lock.
                let (hash, loc) = (c.hash, c.loc);
                let again = chosen.then(|| self.standing_at(hash, loc));
                let Some(standing) = again.unwrap_or(Some(c.listed)) else {
                    continue;
                };
                let standing = standing.with_reads_above(c.held_above);
                w.new_keys.evicting(hash, standing.read);
                w.seen_keys.evicting(hash, standing.read);
                // Only a record kept is decoded again, to be copied.
                let copy = (!c.expired && chosen && kept + u64::from(c.len) <= budget)
                    .then(|| in_order.at(loc.offset()).located(loc.offset(), c.len))
                    .flatten();
                let keeps = copy.is_some();
                // Only a read entry kept can spend or be watched: only it needs the sketch.
                let recent = if (keeps && standing.freq > 0) || decay::is_watched(hash) {
                    self.sketch.frequency(hash)
                } else {
                    0
                };
                // Read lately, in the tier in front, where the sketch does not see it: neither
                // stale nor a sample of stale entries for `decay`.
                let recent = if c.held_above { recent.max(1) } else { recent };
                // A read entry spends a read when room was short; one that stopped being read
                // spends them all while the watched ones say such reads are worth little.
                let spends = if recent == 0 && w.decay.spends(hash) {
                    Spend::All
                } else if spend {
                    Spend::One
                } else {
                    Spend::Nothing
                };
                // A filler stays probationary: only a read or a ghost hit protects a key.
                let filler = standing.rank(looked_up) == policy::FILLER;
                // A refused fill that came back is worth its room if read, or kept for its
                // key's reads or protection rather than as a filler: a working set's new keys,
                // read less often than the log turns, are met unread but kept by the sketch.
                w.returns.evicting(hash, standing.read || (keeps && !filler));
                let met = decay::Met {
                    hash,
                    freq: if keeps && !filler {
                        spends.after(standing.freq)
                    } else {
                        standing.freq
                    },
                    recent,
                    kept: keeps,
                };
                // The count of evictions is the decay's clock: the drops ahead of this entry
                // count as they did when each was made in turn.
                w.decay.meet(met, evicted, entries);
                if let Some(rec) = copy {
                    kept += u64::from(rec.len);
                    // The copy fits the active segment (see `budget`): no roll can drop it.
                    let kept_as = Kept {
                        spend: spends,
                        read_lately: self.read_lately(hash, standing),
                    };
                    if self.move_record(w, &seg, &rec, (hash, loc), (!filler).then_some(kept_as))? {
                        // As for a compaction's copy: if a later copy fails (a full device),
                        // this one is unsynced and the index points at it, and the eviction
                        // that next removes the segment no longer meets the record; it syncs
                        // from here first (below).
                        if let Some(to) = w.active_id() {
                            seg.moved_to.fetch_min(to, Ordering::AcqRel);
                        }
                        self.counters.second_chances.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    evicted += u64::from(!c.expired);
                    drops.push((c, standing.protected));
                }
            }
            for (c, protected) in drops {
                if c.expired {
                    self.expire_at(c.hash, c.loc);
                } else if self.index.remove_if(&c.hash, |_, e| e.loc == c.loc).is_some() {
                    self.unaccount_len(&seg, c.len);
                    self.counters.evictions.fetch_add(1, Ordering::Relaxed);
                    if !protected {
                        w.ghosts.insert(c.hash, generation);
                    }
                }
            }
            if kept > 0 {
                // The copies must be durable before the originals disappear.
                self.sync_since(w, first_active)?;
            }
        }
        let moved_to = seg.moved_to.load(Ordering::Acquire);
        if moved_to != u64::MAX {
            // So must a compaction's or an earlier eviction's, cut short before it synced them. They may be in any
            // segment from the first they went to on, one a flush took out of `unsynced` and is
            // syncing without the writer lock included, so each of those is synced (a second
            // fsync of a clean file is cheap, and this is rare).
            let newer: Vec<Arc<Segment>> = self
                .segments
                .read()
                .range(moved_to..)
                .map(|(_, s)| Arc::clone(s))
                .collect();
            for s in newer {
                s.sync().map_err(|e| self.fail(e))?;
            }
        }
        self.drop_segment(w, &seg, "an eviction")?;
        w.evicted = true;
        Ok(true)
    }

    /// Re-appends a live value record (same sequence number and expiry) and points the index at
    /// the copy. `kept`: `None` carries the entry's policy bits over (compaction, and a filler
    /// kept at eviction); `Some(spend)` protects it and takes the reads `spend` says off its
    /// count (any other entry kept at eviction).
    ///
    /// Returns false, copying nothing, if the roll a copy needs evicted the entry: a copy the
    /// index does not point at would bring the key back at the next open, and a delete in
    /// between would write no tombstone for it.
    fn move_record(
        &self,
        w: &mut Writer,
        seg: &Segment,
        rec: &format::Located<'_>,
        (hash, loc): (u64, Loc),
        kept: Option<Kept>,
    ) -> Result<bool> {
        let r = rec.record;
        if w.active.is_none() || w.offset + u64::from(rec.len) > self.segment_size {
            // Roll before copying, as `append` would: on a full device the roll evicts the
            // oldest segment, which may be the one this record is in (compaction rewrites the
            // oldest first).
            self.roll(w)?;
            if self.standing_at(hash, loc).is_none() {
                return Ok(false);
            }
        }
        let (new_seg, offset, len) = self.append(w, Kind::Value, r.seq, r.expires_at_ms, r.key, r.value)?;
        let new_loc = self.slots.loc(&new_seg, u64::from(offset))?;
        if let Some(mut e) = self.index.get_mut(&hash) {
            if e.loc == loc {
                e.loc = new_loc;
                if let Some(Kept { spend, read_lately }) = kept {
                    e.kept_at_eviction(spend, read_lately);
                }
                drop(e);
                seg.live_bytes.fetch_sub(u64::from(rec.len), Ordering::Relaxed);
                new_seg.live_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
                self.live_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
                self.live_bytes.fetch_sub(u64::from(rec.len), Ordering::Relaxed);
            }
        }
        Ok(true)
    }

    /// One compaction step: sweep expired entries, then rewrite sealed segments whose live
    /// fraction is below `min_live_ratio` or that hold less than an eighth of a segment (left by
    /// restarts), oldest first. Stops early when `stop` is signalled.
    pub(crate) fn compact(&self, stop: &Shutdown) -> Result<CompactionReport> {
        self.check_writable()?;
        let _one_at_a_time = self.compaction_lock.lock();
        let before = self.disk_bytes.load(Ordering::Relaxed);
        let mut report = CompactionReport {
            expired: self.sweep_expired(),
            ..CompactionReport::default()
        };
        self.rewrite_all(self.to_rewrite(true), stop, &mut report)?;
        report.bytes_reclaimed = before as i64 - self.disk_bytes.load(Ordering::Relaxed) as i64;
        Ok(report)
    }

    /// At open: merges the small sealed segments restarts left (each open starts a segment of
    /// its own) if there are more than [`SMALL_SEGMENTS_AT_OPEN`]. The compactor merges them
    /// too, but only once a store has been open for its interval: a program that opened the
    /// store, wrote a little and exited within it left one file more per run, and when each
    /// segment held its file open, past the process's limit on open files (1,024 by default on
    /// most systems) the store could not be opened at all (1,100 runs of `uno-cache set` did
    /// it). Sealed segments are now closed once durable (see `segment`), but each is still a
    /// map and a scan at the next open. A store that takes no writes (its
    /// latch set at open) merges nothing, and a failure (a full device) leaves the rest as they
    /// are, for the compactor or the next open: the open goes on either way.
    pub(crate) fn merge_small_at_open(&self) {
        if self.latch.is_latched() {
            return;
        }
        let small = self.to_rewrite(false);
        if small.len() <= SMALL_SEGMENTS_AT_OPEN {
            return;
        }
        let _one_at_a_time = self.compaction_lock.lock();
        let mut report = CompactionReport::default();
        if let Err(err) = self.rewrite_all(small, &Shutdown::default(), &mut report) {
            tracing::warn!(dir = %self.dir.path.display(), %err, merged = report.segments_rewritten,
                "merging the small segments restarts left failed at open; the rest stay until the compactor or a later open merges them");
        }
    }

    /// The sealed segments a compaction rewrites, oldest first: those that hold less than an
    /// eighth of a segment, and with `sparse_too` those whose live fraction is below
    /// `min_live_ratio`.
    fn to_rewrite(&self, sparse_too: bool) -> Vec<Arc<Segment>> {
        // Listed under the writer lock, so that no segment writes go to is a candidate. With the
        // active id read first and the list taken after the lock was let go, a roll in between
        // made the new active segment a candidate (it is small), and rewriting it removed the
        // file the writes since were going to: a store that closed right after lost them.
        let w = self.writer.lock();
        let first_writable = w.first_writable_id();
        let segments = self.segments.read();
        let oldest = segments.keys().next().copied();
        segments
            .values()
            .filter(|s| s.id < first_writable)
            // Left alone until it is the oldest (see `rewrite`).
            .filter(|s| !s.damaged.load(Ordering::Relaxed) || Some(s.id) == oldest)
            .filter(|s| {
                let data = s.data_bytes() as f64;
                let sparse = (s.live_bytes.load(Ordering::Relaxed) as f64) < data * self.min_live_ratio;
                // Segments sealed early by a restart are merged so their files do not pile up.
                let small = s.data_bytes() < self.segment_size / 8;
                data > 0.0 && ((sparse_too && sparse) || small)
            })
            .cloned()
            .collect()
    }

    /// Rewrites `candidates` in turn, adding to `report`, until `stop` is signalled.
    fn rewrite_all(
        &self,
        candidates: Vec<Arc<Segment>>,
        stop: &Shutdown,
        report: &mut CompactionReport,
    ) -> Result<()> {
        for seg in candidates {
            if stop.is_fired() {
                break;
            }
            let rewritten = self.rewrite(&seg, stop)?;
            report.records_moved += rewritten.moved;
            // Counted in the stats too, by `drop_segment`: the background compactor's reports
            // go nowhere.
            report.damaged_ranges_dropped += rewritten.damaged_dropped;
            report.segments_rewritten += 1;
            self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Removes every entry expired longer ago than the keep window from the index. Their
    /// records become dead bytes.
    fn sweep_expired(&self) -> u64 {
        let now = self.dead_before(self.clock.now_ms());
        // Entries expire by their coarse expiry (whole seconds, rounded up): one that expired
        // in the last second is swept by the next pass, or dropped by a read.
        let expired: Vec<(u64, Loc)> = self
            .index
            .iter()
            .filter(|e| e.value().is_expired(now))
            .map(|e| (*e.key(), e.value().loc))
            .collect();
        // Counted here, not as the change of the store's counter: reads and evictions expire
        // entries meanwhile too, and they are not this sweep's.
        expired
            .iter()
            .filter(|&&(hash, loc)| self.expire_at(hash, loc))
            .count() as u64
    }

    /// Copies a segment's live records forward, keeps what must stay as tombstones, deletes the
    /// segment.
    fn rewrite(&self, seg: &Arc<Segment>, stop: &Shutdown) -> Result<Rewritten> {
        let first_active = self.writer.lock().first_writable_id();
        if seg.id >= first_active {
            // Writes go there: only sealed segments are rewritten (see `compact`).
            return Ok(Rewritten::default());
        }
        // A batch at a time, decoded before the writer lock is taken: the whole segment decoded
        // at once took about 70 bytes per record (see `candidates`).
        let mut records = seg.records();
        let mut batch = Vec::with_capacity(BATCH);
        let mut moved = 0;
        // Without a slot, no index entry points into the segment.
        let base = self.slots.find(seg.id);
        // Keys no longer in the index, with the highest seq of their records here: each gets one
        // tombstone with that seq, which shadows every older record of the key elsewhere.
        let mut tombstones: HashMap<&str, u64> = HashMap::new();
        loop {
            batch.clear();
            batch.extend(records.by_ref().take(BATCH));
            if batch.is_empty() {
                break;
            }
            if stop.is_fired() {
                // Nothing is lost by stopping here: moved records are duplicates of the
                // originals (same sequence number), and the segment stays until a later pass.
                return Ok(Rewritten::moved(moved));
            }
            let mut w = self.writer.lock();
            if !self.segments.read().contains_key(&seg.id) {
                // Evicted (or cleared) meanwhile: nothing left to rewrite.
                return Ok(Rewritten::moved(moved));
            }
            // Latched meanwhile: nothing more is written.
            self.check_writable()?;
            // Values in the keep window are copied like live ones: compaction keeps stale copies.
            let now = self.dead_before(self.clock.now_ms());
            w.compacting = true;
            let copied = (|| -> Result<()> {
                for rec in &batch {
                    let r = rec.record;
                    let hash = self.hasher.hash(r.key);
                    let loc = base.map(|b| b.at(rec.offset));
                    let here = self.index.get(&hash).map(|e| Some(e.loc) == loc);
                    let expired = r.expires_at_ms != 0 && now >= r.expires_at_ms;
                    match (r.kind, here, loc) {
                        (Kind::Value, Some(true), Some(loc)) if !expired => {
                            if self.move_record(&mut w, seg, rec, (hash, loc), None)? {
                                // Before the next roll can evict the segment (see `evict_oldest`).
                                if let Some(to) = w.active_id() {
                                    seg.moved_to.fetch_min(to, Ordering::AcqRel);
                                }
                                moved += 1;
                            }
                        }
                        (Kind::Value, Some(true), Some(loc)) => {
                            self.expire_at(hash, loc);
                            note_tombstone(&mut tombstones, r.key, r.seq);
                        }
                        // The hash lives in another record, the newest of every key with this hash
                        // (see `index`), so newer than this one.
                        (_, Some(_), _) => {}
                        // Deleted, expired or damaged key.
                        (_, None, _) => note_tombstone(&mut tombstones, r.key, r.seq),
                    }
                }
                Ok(())
            })();
            w.compacting = false;
            // A full device stops the rewrite here, losing nothing: the copies are duplicates
            // (same seq) and the segment stays.
            copied?;
        }
        seg.note_damage(&records);
        // `sync_lock` first (the order `flush` takes them in): a flush that took sealed segments
        // holding our copies out of `unsynced` has finished syncing them once we have it.
        let _sync = self.sync_lock.lock();
        let mut w = self.writer.lock();
        if !self.segments.read().contains_key(&seg.id) {
            return Ok(Rewritten::moved(moved));
        }
        // A flush that failed meanwhile latched the store, and its failed fsync may have been
        // of our copies: the originals stay.
        self.check_writable()?;
        // In the oldest segment nothing older can exist, so dead keys need no tombstone.
        let is_oldest = self.segments.read().keys().next() == Some(&seg.id);
        if !is_oldest && records.damaged_ranges() > 0 {
            // A damaged record was skipped, not read: it may have been a tombstone (or a newer
            // value) that the segment's hint still applies at every open, shadowing an older
            // value elsewhere. Without it, removing the segment brings that value back. The
            // segment stays until it is the oldest, when nothing older is left to shadow; the
            // copies made meanwhile are duplicates with the originals' seq.
            seg.damaged.store(true, Ordering::Relaxed);
            tracing::warn!(path = %seg.path.display(), "compaction found damaged records; the segment stays until it is the oldest");
            return Ok(Rewritten::moved(moved));
        }
        if !is_oldest {
            w.compacting = true;
            let appended = tombstones.into_iter().try_for_each(|(key, seq)| {
                // A key set again meanwhile has a higher seq, so this tombstone cannot hide it.
                self.append(&mut w, Kind::Tombstone, seq, 0, key, &[]).map(drop)
            });
            w.compacting = false;
            appended?;
        }
        // The copies must be durable before the originals disappear, and so must every newer
        // record a dropped one gave way to (`(_, Some(_), _)` above): a segment sealed before
        // this rewrite began may still wait for its fsync, and if a power cut took its record
        // of a key, the original here (a tombstone, a newer value) would be all that shadowed
        // an older one.
        self.sync_pending(&w)?;
        // The oldest segment goes even if damaged: what could not be read is lost already, and
        // nothing older is left for a damaged tombstone to shadow. The damage goes with it.
        let damaged_dropped = self.drop_segment(&mut w, seg, "compaction")?;
        Ok(Rewritten {
            moved,
            damaged_dropped,
        })
    }
}

/// What [`Inner::rewrite`] did to one segment.
#[derive(Debug, Default)]
struct Rewritten {
    /// Records copied forward.
    moved: u64,
    /// Damaged ranges removed with the segment (see [`CompactionReport::damaged_ranges_dropped`]).
    damaged_dropped: u64,
}

impl Rewritten {
    /// A rewrite that stopped (or left the segment) after moving `moved` records.
    fn moved(moved: u64) -> Self {
        Rewritten {
            moved,
            damaged_dropped: 0,
        }
    }
}

fn note_tombstone<'k>(tombstones: &mut HashMap<&'k str, u64>, key: &'k str, seq: u64) {
    let slot = tombstones.entry(key).or_insert(seq);
    *slot = (*slot).max(seq);
}

#[cfg(test)]
#[path = "maintenance_tests.rs"]
mod tests;
