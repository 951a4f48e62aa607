//! Reading through the index: hash → location → the record on disk, whose key, kind and exact
//! expiry decide (see `index` for why the index keeps none of them), and the index bookkeeping
//! that goes with it (expiry, damaged records, live-byte accounting, key listing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::format::{self, Decoded, Kind, RecordHeader, RecordRef, RECORD_HEADER_LEN};
use super::index::{IndexEntry, Loc};
use super::segment::Segment;
use super::write::ROLL_BYTES;
use super::{Inner, Writer};
use crate::error::{key_for_error, Result};

/// A live value found for a key: what the caller took from it, the exact expiry (Unix ms, 0 =
/// never), the sequence number and where it is.
pub(crate) struct Hit<T> {
    pub(crate) taken: T,
    pub(crate) expires_at_ms: u64,
    pub(crate) seq: u64,
    pub(crate) loc: Loc,
}

/// What becomes of a fill the admission checks refused (see [`Inner::refused_fill`]).
pub(crate) enum RefusedFill {
    /// Written all the same: it replaces a live value of its key.
    Replaces,
    /// Held in RAM for a second read (see `stash`).
    Held,
    /// Neither: the key's hash has an entry of another key or a damaged record.
    Dropped,
}

/// What a delete's tombstone of a key takes out (see [`Inner::needs_tombstone`]).
pub(crate) enum Deletes {
    /// A live value, or a lapsed one kept for stale reads: the delete removed it.
    Value,
    /// An expired value, which no read gets: the tombstone keeps it from coming back.
    Nothing,
    /// A damaged record (at this location), which a read treats as a miss: no value was
    /// removed, and the damage is counted as a read's is.
    Damaged(Loc),
}

/// What the record an index entry points at says about a key.
enum Found<T> {
    Hit(Hit<T>),
    /// A live value of another key with the same hash: a plain miss, the entry stays.
    OtherKey,
    /// Expired longer ago than the keep window: the entry goes.
    Expired,
    /// Expired within the keep window: a miss for `get`, kept for `get_stale`.
    Lapsed,
    /// Not a live value of this hash (a slot that moved on, a tombstone): the entry is wrong.
    Stale,
    Damaged,
}

/// The record at `offset`, CRC checked; `None` if it lies outside the file.
/// `typical`: the length of the records written lately (see [`Segment::ahead_of_record`]).
fn record_at(seg: &Segment, offset: u64, typical: u32) -> Option<Decoded<'_>> {
    let asked_to = seg.ahead_of_record(offset, typical);
    let header = format::peek_record_header(seg.read(offset, RECORD_HEADER_LEN as u32)?)?;
    seg.ahead_of_rest(asked_to, offset, header.len);
    seg.decode_at(offset, header.len)
}

/// The header and key of the record at `offset`, without checking the CRC (the caller checks the
/// key's hash instead, so damage is not mistaken for a key).
fn key_at(seg: &Segment, offset: u64) -> Option<(RecordHeader, &str)> {
    let header = format::peek_record_header(seg.read(offset, RECORD_HEADER_LEN as u32)?)?;
    let bytes = seg.read(offset, RECORD_HEADER_LEN as u32 + u32::from(header.key_len))?;
    let key = std::str::from_utf8(bytes.get(RECORD_HEADER_LEN..)?).ok()?;
    Some((header, key))
}

/// Subtracts without wrapping: a length read back from a damaged header must not turn a counter
/// into nonsense.
fn saturating_sub(counter: &AtomicU64, by: u64) {
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(by))
    });
}

impl Inner {
    /// Finds `key`'s live value and passes its record to `take` while the segment is held.
    /// `touch` counts a read of the entry (see `policy`). Drops entries found expired,
    /// stale or damaged (the last takes the writer lock: not for callers that hold it).
    pub(crate) fn locate<T>(
        &self,
        key: &str,
        touch: bool,
        take: impl FnOnce(&RecordRef<'_>) -> T,
    ) -> Option<Hit<T>> {
        self.locate_with(key, touch, false, take)
    }

    /// As [`locate`](Self::locate); with `lapsed_too`, a value that expired within the keep
    /// window is found as well (its `expires_at_ms` says so).
    pub(crate) fn locate_with<T>(
        &self,
        key: &str,
        touch: bool,
        lapsed_too: bool,
        take: impl FnOnce(&RecordRef<'_>) -> T,
    ) -> Option<Hit<T>> {
        let hash = self.hasher.hash(key);
        if touch {
            self.count_lookup(hash);
        }
        let (found, loc) = self.probe(key, hash, touch, lapsed_too, take)?;
        match found {
            Found::Hit(hit) => return Some(hit),
            Found::OtherKey | Found::Lapsed => {}
            Found::Expired => {
                self.expire_at(hash, loc);
            }
            Found::Stale => self.drop_stale(hash, loc),
            Found::Damaged => self.forget_corrupt(key, hash, loc),
        }
        None
    }

    /// A lookup of `hash`, for the policy: the store is being read, and the sketch counts it.
    fn count_lookup(&self, hash: u64) {
        // Checked first so lookups do not write a shared cache line but once per eviction.
        if !self.looked_up.load(Ordering::Relaxed) {
            self.looked_up.store(true, Ordering::Relaxed);
        }
        self.sketch.increment(hash);
    }

    /// Whether a read of an entry whose record is in `seg` falls in the young part of the log
    /// (see `policy`, correlated reads); so does one whose segment is gone.
    fn is_young(&self, seg: Option<&Arc<Segment>>) -> bool {
        let young_from = self.young_from.load(Ordering::Relaxed);
        seg.is_none_or(|s| s.id >= young_from)
    }

    /// What the entry of `hash` points at, for `key`; `None` if there is no entry. No side
    /// effects but the read count.
    fn probe<T>(
        &self,
        key: &str,
        hash: u64,
        touch: bool,
        lapsed_too: bool,
        take: impl FnOnce(&RecordRef<'_>) -> T,
    ) -> Option<(Found<T>, Loc)> {
        let entry = self.index.get(&hash)?;
        // The expiry checks ask the clock whether an instant has come (`Clock::reached`) rather
        // than read the time: most hits are far from their expiry, and the clock can tell so
        // without reading the time exactly. `dead_before(now) >= at` is `now >= at + keep`.
        let keep = self.keep_expired_ms;
        let loc = entry.loc;
        let entry_expiry = entry.expired_from_ms();
        if entry_expiry.is_some_and(|at| self.clock.reached(at.saturating_add(keep))) {
            return Some((Found::Expired, loc));
        }
        if !lapsed_too && keep > 0 && entry_expiry.is_some_and(|at| self.clock.reached(at)) {
            return Some((Found::Lapsed, loc));
        }
        // The segment is taken while the entry's guard is held: nothing can move the entry and
        // recycle its slot meanwhile (see `slots`).
        let table = self.slots.read();
        let seg = table.get(loc);
        if touch {
            // A read of a probationary entry still in the young part of the log is correlated
            // with its write: it marks the entry read, but does not count (see `policy`).
            entry.touch(self.is_young(seg));
        }
        drop(entry);
        let typical = self.typical_record_len.load(Ordering::Relaxed);
        let found = match seg.map(|seg| record_at(seg, loc.offset(), typical)) {
            None => Found::Stale,
            Some(Some(Decoded::Record(r, _))) if r.kind == Kind::Value && r.key == key => {
                if r.expires_at_ms != 0 && self.clock.reached(r.expires_at_ms.saturating_add(keep)) {
                    Found::Expired
                } else if r.expires_at_ms != 0 && !lapsed_too && self.clock.reached(r.expires_at_ms) {
                    Found::Lapsed
                } else {
                    Found::Hit(Hit {
                        taken: take(&r),
                        expires_at_ms: r.expires_at_ms,
                        seq: r.seq,
                        loc,
                    })
                }
            }
            Some(Some(Decoded::Record(r, _))) if r.kind == Kind::Value && self.hasher.hash(r.key) == hash => {
                Found::OtherKey
            }
            Some(Some(Decoded::Record(..))) => Found::Stale,
            Some(_) => Found::Damaged,
        };
        Some((found, loc))
    }

    /// For a delete under the writer lock: whether `key` has a record that needs a tombstone,
    /// and what the delete removes with it (see [`Deletes`]). Drops expired and stale entries.
    pub(crate) fn needs_tombstone(&self, key: &str, hash: u64) -> Option<Deletes> {
        // `lapsed_too`: the record, not the entry's expiry in whole seconds, tells a lapsed value
        // from one whose keep window ended in the last second, as for `get_stale` and the prefix
        // listing; a delete must not say it removed what they no longer see.
        let (found, loc) = self.probe(key, hash, false, true, |_| ())?;
        match found {
            // A lapsed value is still recovered at the next open (it is kept for fail-safe
            // reads): deleting it takes a tombstone like a live one.
            Found::Hit(_) | Found::Lapsed => Some(Deletes::Value),
            Found::Damaged => Some(Deletes::Damaged(loc)),
            // Another key's newer value shadows this key's older records.
            Found::OtherKey => None,
            // Recovery ignores an expired record only under the same keep window and a clock
            // that has not gone back: reopened with a longer window (fail-safe raised) it is a
            // stale copy a fail-safe read serves, and behind a clock set back (a device whose
            // clock waits for the network) a live value. Either way an explicit delete would not
            // hold, so it takes a tombstone too; nothing was removed for the caller.
            Found::Expired => {
                self.expire_at(hash, loc);
                Some(Deletes::Nothing)
            }
            Found::Stale => {
                self.drop_stale(hash, loc);
                None
            }
        }
    }

    /// A delete of `key`, under the writer lock `w`, found its entry pointing at a damaged
    /// record (at `loc`): as a read that found it ([`forget_corrupt`](Self::forget_corrupt)),
    /// the damage is counted and logged (under the same line limit), the entry goes, and a
    /// tombstone of the key is appended (durable with `Durability::EveryWrite`, as a delete's).
    /// The entry goes first, whatever becomes of the tombstone, so the damage is counted once:
    /// left in place after a tombstone that found no room, the next read met it again. Returns
    /// the tombstone's error, the delete's; the key's next delete then writes the tombstone.
    pub(super) fn delete_damaged(&self, w: &mut Writer, key: &str, hash: u64, loc: Loc) -> Result<()> {
        self.counters.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        if let Some(unlogged) = self.damaged_lines.pass() {
            let path = self.slots.get(loc).map(|seg| seg.path.display().to_string());
            tracing::warn!(key = %key_for_error(key), path = path.as_deref().unwrap_or("?"), offset = loc.offset(), unlogged,
                "damaged record met by a delete; it removed no value (unlogged: damaged records met by reads and deletes since the last line)");
        }
        if let Some((_, e)) = self.index.remove_if(&hash, |_, e| e.loc == loc) {
            self.unaccount(e.loc);
        }
        let appended = self
            .append_tombstone(w, key)
            .and_then(|()| self.sync_if_every_write(w));
        if appended.is_err() {
            // As after a read's (`forget_corrupt`): an older record of the key may be on disk.
            self.lapsed.insert(hash, self.index.len());
        }
        appended
    }

    /// Value, expiry (Unix ms, 0 = never), sequence number and location of a live entry.
    pub(crate) fn read(&self, key: &str) -> Option<Hit<Vec<u8>>> {
        self.locate(key, true, |r| r.value.to_vec())
    }

    /// The value of a fill of `key` refused lately and held in RAM (see `stash`), for a read
    /// that missed the index; `counts` as [`locate`](Self::locate)'s, and `stale_too` as
    /// [`locate_with`](Self::locate_with)'s `lapsed_too`.
    pub(crate) fn held(&self, key: &str, stale_too: bool, counts: bool) -> Option<super::stash::Found> {
        // Most stores hold nothing: a miss then costs no second hash of the key.
        if self.stash.is_empty() {
            return None;
        }
        self.stash
            .get(self.hasher.hash(key), key, self.moment(), stale_too, counts)
    }

    /// Whether the stash holds a live value of `key` (see `held`), with no value copied out
    /// and no read counted.
    pub(crate) fn holds(&self, key: &str) -> bool {
        !self.stash.is_empty() && self.stash.holds(self.hasher.hash(key), key, self.moment(), false)
    }

    /// Now, and the keep window, for what the stash holds.
    pub(crate) fn moment(&self) -> super::stash::Moment {
        super::stash::Moment {
            now_ms: self.clock.now_ms(),
            keep_ms: self.keep_expired_ms,
        }
    }

    /// Values that expired before this moment are gone; later ones are live or kept for the
    /// keep window (Unix ms).
    pub(crate) fn dead_before(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.keep_expired_ms)
    }

    /// The keys at this moment, read from their records (the index holds hashes only): live
    /// ones and those kept in the keep window, so that prefix invalidation reaches stale copies
    /// too.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.list_keys().0
    }

    /// [`keys`](Self::keys), and how many entries it left out because their record fails its
    /// CRC: damage in the key (or in the kind or expiry read with it) hides the key, which a
    /// listing cannot name, though a read of that key finds the damage.
    pub(crate) fn list_keys(&self) -> (Vec<String>, u64) {
        let now = self.dead_before(self.clock.now_ms());
        let typical = self.typical_record_len.load(Ordering::Relaxed);
        let mut keys = Vec::with_capacity(self.index.len());
        let mut damaged = 0u64;
        for e in self.index.iter() {
            if e.value().is_expired(now) {
                continue;
            }
            let (hash, loc) = (*e.key(), e.value().loc);
            // Under the shard guard the iteration holds, as in `locate`.
            let table = self.slots.read();
            let Some(seg) = table.get(loc) else {
                continue;
            };
            if let Some((header, key)) = key_at(seg, loc.offset()) {
                let live =
                    header.kind == Kind::Value && (header.expires_at_ms == 0 || now < header.expires_at_ms);
                if live && self.hasher.hash(key) == hash {
                    keys.push(key.to_owned());
                    continue;
                }
            }
            // Whole records that are not this hash's live value (expired, a slot that moved on)
            // are no loss: only a record that fails its CRC is.
            if !matches!(record_at(seg, loc.offset(), typical), Some(Decoded::Record(..))) {
                damaged = damaged.saturating_add(1);
            }
        }
        (keys, damaged)
    }

    /// Removes an expired entry from the index (if it was not rewritten meanwhile); whether it
    /// did.
    pub(crate) fn expire_at(&self, hash: u64, loc: Loc) -> bool {
        let Some((_, e)) = self.index.remove_if(&hash, |_, e| e.loc == loc) else {
            return false;
        };
        self.unaccount(e.loc);
        self.counters.expirations.fetch_add(1, Ordering::Relaxed);
        // Its record may stay on disk: a delete of the key must still take a tombstone.
        self.lapsed.insert(hash, self.index.len());
        true
    }

    /// Counts an entry a write or delete of its key took out of the index as expired if its TTL
    /// had passed: a read or the sweep would have counted it so, and once out of the index no
    /// read or sweep can (the memory tier and the other L1s count it alike). A value in the
    /// keep window (fail-safe) is counted here too, as it was never counted when it lapsed.
    /// In the last second before the entry's coarse expiry (whole seconds, rounded up) only its
    /// record can tell: a value of a 5.5 s TTL replaced at 5.6 s was in no count.
    pub(crate) fn count_if_expired(&self, old: &IndexEntry, now: u64) {
        let expired = old.is_expired(now)
            || (old.may_be_expired(now) && {
                let table = self.slots.read();
                table
                    .get(old.loc)
                    .and_then(|seg| key_at(seg, old.loc.offset()))
                    .is_some_and(|(header, _)| header.expires_at_ms != 0 && header.expires_at_ms <= now)
            });
        if expired {
            self.counters.expirations.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// For a fill of `key` the checks refused: what becomes of it, by what the index holds of
    /// the key. A live value of the key is replaced all the same ([`RefusedFill::Replaces`]): the
    /// caller has a newer copy (a revalidation that found other bytes in L2), the fill takes no
    /// entry more, and refused it left the value it replaced answering reads. Without an entry
    /// of the key the fill is held in RAM (see `stash`): an expired value, a stale copy kept for
    /// `get_stale` included, is dropped first, since the fill is newer and a stale read must not
    /// go back to the value it replaced. (Its record stays on disk, and a reopen within the keep
    /// window finds it again, as it finds no held value.)
    pub(crate) fn refused_fill(&self, key: &str, hash: u64) -> RefusedFill {
        let Some((found, loc)) = self.probe(key, hash, false, true, |_| ()) else {
            return RefusedFill::Held;
        };
        match found {
            Found::Hit(hit) if hit.expires_at_ms != 0 && self.clock.reached(hit.expires_at_ms) => {
                self.expire_at(hash, loc);
            }
            Found::Hit(_) => return RefusedFill::Replaces,
            Found::Expired => {
                self.expire_at(hash, loc);
            }
            Found::Stale => self.drop_stale(hash, loc),
            Found::OtherKey | Found::Lapsed | Found::Damaged => {}
        }
        if self.index.contains_key(&hash) {
            RefusedFill::Dropped
        } else {
            RefusedFill::Held
        }
    }

    /// An entry whose slot moved on or that points at something other than a live value of its
    /// hash: dropped (it cannot name a value; see `slots`).
    fn drop_stale(&self, hash: u64, loc: Loc) {
        if self.index.remove_if(&hash, |_, e| e.loc == loc).is_some() {
            tracing::warn!(?loc, "dropped an index entry that no longer names a record");
        }
    }

    /// A read found a damaged record: drop the entry and append a tombstone of the key with a new
    /// sequence number. It shadows every older record of the key's hash at the next open, so
    /// nothing older of that hash can resurface, whichever key the damaged record held. The
    /// tombstone makes room under the size bound as any write does: a segment damaged whole is
    /// read key by key, and tombstones appended past the bound grew the store by one per key.
    /// The read is a miss whatever becomes of the tombstone (an error is logged, not returned).
    pub(crate) fn forget_corrupt(&self, key: &str, hash: u64, loc: Loc) {
        self.counters.corrupt_reads.fetch_add(1, Ordering::Relaxed);
        let mut w = self.writer.lock();
        let Some((_, e)) = self.index.remove_if(&hash, |_, e| e.loc == loc) else {
            return;
        };
        self.unaccount(e.loc);
        // Named now: making room for the tombstone may evict the segment.
        let path = self.slots.get(loc).map(|seg| seg.path.clone());
        let mut tombstone_error = None;
        let tombstoned = self.check_writable().is_ok() && {
            // Durable before the miss is returned, as a delete's, where every write is: left to
            // the next flush, a power cut could take it, and a scan of its segment at the reopen
            // bring the older value back past the damaged record.
            let appended = self
                .append_tombstone(&mut w, key)
                .and_then(|()| self.sync_if_every_write(&w));
            tombstone_error = appended.as_ref().err().map(ToString::to_string);
            appended.is_ok()
        };
        // One line per record: a segment damaged whole (a bad sector, a bad copy) is read key
        // by key, as fast as the reads come, so at most a line a second (`corrupt_reads`
        // counts each). It names the file, and the key as errors do.
        if let Some(unlogged) = self.damaged_lines.pass() {
            let path = path.map(|p| p.display().to_string());
            tracing::warn!(key = %key_for_error(key), path = path.as_deref().unwrap_or("?"), offset = loc.offset(), tombstone_error, unlogged,
                "damaged record read; treated as a miss (unlogged: damaged records met by reads and deletes since the last line)");
        }
        if !tombstoned {
            // An older record of the key may be on disk, which a reopen that scans past the
            // damaged one would bring back: the key's next delete writes the tombstone.
            self.lapsed.insert(hash, self.index.len());
        }
    }

    /// Appends a tombstone of `key` with the next seq, making room under the size bound first
    /// as a value's write does (by evicting): for a delete, and for a read that found a damaged
    /// record (see [`forget_corrupt`](Self::forget_corrupt)).
    pub(super) fn append_tombstone(&self, w: &mut Writer, key: &str) -> Result<()> {
        let len = format::record_len(key.len(), 0) as u64;
        self.ensure_space_for(w, |w| {
            let roll = if self.rolls_for(w, len) { ROLL_BYTES } else { 0 };
            (format::stored_len(key.len(), 0) + roll, ())
        })?;
        let seq = w.next_seq;
        w.next_seq = w.next_seq.saturating_add(1);
        self.append(w, Kind::Tombstone, seq, 0, key, &[]).map(drop)
    }

    /// Subtracts the bytes of the record at `loc` (an entry just replaced or removed) from the
    /// live counts. The length comes from the record's header; if that is unreadable (damage)
    /// the counts keep it, which only makes compaction of that segment later.
    pub(crate) fn unaccount(&self, loc: Loc) {
        let Some(seg) = self.slots.get(loc) else {
            return;
        };
        let len = seg
            .read(loc.offset(), RECORD_HEADER_LEN as u32)
            .and_then(format::peek_record_header)
            .map(|h| h.len);
        if let Some(len) = len {
            self.unaccount_len(&seg, len);
        }
    }

    /// As [`unaccount`](Self::unaccount) for a record whose length the caller has.
    pub(crate) fn unaccount_len(&self, seg: &Segment, len: u32) {
        saturating_sub(&self.live_bytes, u64::from(len));
        saturating_sub(&seg.live_bytes, u64::from(len));
    }

    pub(crate) fn account(&self, segment: &Segment, len: u32) {
        self.live_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        segment.live_bytes.fetch_add(u64::from(len), Ordering::Relaxed);
        // A running average of about the last eight records written, for a get's guess (see
        // `Segment::ahead_of_record`). Racy between writers: a lost update costs a guess.
        let typical = u64::from(self.typical_record_len.load(Ordering::Relaxed));
        let typical = (typical * 7 + u64::from(len)) / 8;
        self.typical_record_len
            .store(u32::try_from(typical).unwrap_or(u32::MAX), Ordering::Relaxed);
    }
}
