//! The write path of the file store: appends of values and tombstones, rolling the active
//! segment (reserving its space, evicting on a full device), sealing and fsyncing segments and
//! writing their hints, flush, clear, removal of segments, and the store's stats and verify.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::format::{self, Kind, Meta, META_EXT_LEN, SEGMENT_HEADER_LEN};
use super::index::IndexEntry;
use super::lookup::{Deletes, RefusedFill};
use super::policy;
use super::segment::{self, Segment, OPEN_UNSYNCED};
use super::value_item::ValueItem;
use super::{hint_entry_len, Inner, Sealed, Writer};
use super::{recovery, Durability};
use crate::error::{key_for_error, Error, Result};
use crate::storage::{check_key, check_write};

/// Bytes a roll adds to what the size bound counts: the new segment's header and the frame of
/// its hint file.
pub(super) const ROLL_BYTES: u64 =
    (SEGMENT_HEADER_LEN + format::HINT_HEADER_LEN + format::HINT_TRAILER_LEN) as u64;

impl Inner {
    pub(super) fn check_writable(&self) -> Result<()> {
        self.latch.check(&self.dir.path)
    }

    /// Latches the store read-only after a failed write or fsync and passes the error on.
    pub(super) fn fail(&self, error: Error) -> Error {
        self.latch.fail(error)
    }

    pub(super) fn max_value_len(&self, key: &str) -> usize {
        usize::try_from(self.segment_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(SEGMENT_HEADER_LEN + format::record_len(key.len(), 0))
    }

    /// Refuses a value that cannot fit in one segment with its record header.
    pub(super) fn check_value_len(&self, key: &str, len: usize) -> Result<()> {
        let max = self.max_value_len(key);
        if len > max {
            return Err(Error::ValueTooLarge {
                key: key_for_error(key),
                len,
                max,
                // Raising the size bound of an existing store does not raise this: say so, or
                // the advice to "raise the limit" sends the user to a setting that cannot help.
                store: format!(
                    "a {}-byte file-store segment (fixed when the directory was created: an eighth of its size bound then, 64 KiB to 64 MiB; a new directory with a larger local.max_size, or FileStoreOptions::segment_size, takes larger values)",
                    self.segment_size
                ),
            });
        }
        Ok(())
    }

    /// Refuses the batch, before anything is written, if a key, TTL or value is invalid or the
    /// store takes no writes.
    fn check_batch<I: ValueItem>(&self, items: &[I], ttl: Option<Duration>) -> Result<()> {
        for item in items {
            let (key, value) = (item.key(), item.value());
            check_write(key, item.ttl(ttl))?;
            self.check_value_len(key, value.len())?;
        }
        self.check_writable()
    }

    pub(super) fn set_many<I: ValueItem>(&self, items: &[I], ttl: Option<Duration>) -> Result<()> {
        self.check_batch(items, ttl)?;
        let mut w = self.writer.lock();
        self.write_locked(&mut w, items, ttl)
    }

    /// [`set_many`](Self::set_many) for fills: the items the admission check refuses (see
    /// `admission`) are left out, the others written as `set_many` writes them. Returns how
    /// many were written.
    pub(super) fn fill_many<I: ValueItem>(&self, items: &[I], ttl: Option<Duration>) -> Result<usize> {
        self.check_batch(items, ttl)?;
        let mut w = self.writer.lock();
        // A fill that makes the store evict is checked against the next victim (see
        // `admission`); one that fits in free room only passes the gates below. (In a batch, the
        // bytes of the fills admitted before it count as written.)
        let mut pending = self.disk_bytes.load(Ordering::Relaxed);
        // Once per batch: a `DashMap`'s length locks every shard, and nothing is written before
        // the filter ends.
        let entries = self.index.len();
        // Once per batch too: the read clock of `refused` sums every shard of the sketch, and
        // a batch of fills reads nothing.
        let reads = self.sketch.reads();
        let now = self.clock.now_ms();
        // A key given more than once: only its last item is weighed, as `set_many` leaves the
        // last value. Weighed in turn, an earlier item admitted and the last one refused left
        // the earlier value in the log (the refused one is held only while the index lacks the
        // key, and the earlier one's write then dropped it).
        let last: Option<HashMap<&str, usize>> = (items.len() > 1).then(|| {
            items
                .iter()
                .enumerate()
                .map(|(i, item)| (item.key(), i))
                .collect()
        });
        let admitted: Vec<&I> = items
            .iter()
            .enumerate()
            .filter(|&(i, item)| last.as_ref().is_none_or(|last| last.get(item.key()) == Some(&i)))
            .map(|(_, item)| item)
            .filter(|item| {
                let len = format::stored_len(item.key().len(), item.value().len());
                let hash = self.hasher.hash(item.key());
                // Once the store was full, a fill that would take room unchecked passes a gate
                // first (see `fillgate`): a new key's (no fill asked for lately) wherever it
                // would go, a seen key's into free room. Past a closed gate, a new key is refused
                // and a seen one is weighed against the next victim as if the store were full.
                let started = self.sketch.started();
                let new_key = started && !w.recent_fills.seen(hash);
                let free = pending + len <= self.max_bytes;
                // A key refused lately and read again within about the store's entries of
                // reads is let in past every check (see `refused`), while such fills are read
                // before their first eviction often enough (see `fillgate`).
                let came_back =
                    started && w.refused.came_back(hash, reads, entries) && w.returns.admits(hash);
                let admit = if came_back {
                    true
                } else if new_key {
                    w.new_keys.admits(hash) && (free || self.admits(&mut w, hash, entries))
                } else if started && free {
                    w.seen_keys.admits(hash) || self.admits(&mut w, hash, entries)
                } else {
                    free || self.admits(&mut w, hash, entries)
                };
                if admit && came_back {
                    w.returns.admitted(hash, entries);
                }
                if admit && new_key {
                    w.new_keys.admitted(hash, entries);
                } else if admit && started && free {
                    w.seen_keys.admitted(hash, entries);
                }
                // After the check: a fill is evidence for the key's next one, not its own.
                w.recent_fills.record(hash, entries);
                // Refused, it still replaces a live value of its key, or else waits in RAM for
                // a second read (see `refused_fill`).
                let refusal = (!admit).then(|| self.refused_fill(item.key(), hash));
                let replaces = matches!(refusal, Some(RefusedFill::Replaces));
                if started && !admit && !replaces {
                    w.refused.record(hash, reads, entries);
                }
                if matches!(refusal, Some(RefusedFill::Held)) {
                    let expires = item.expires_at_ms(ttl, now);
                    // One read while held and pushed out since: its key came back, as a refused
                    // fill read again does (see `refused`), so its next fill is let in.
                    let refused = &mut w.refused;
                    self.stash.hold(
                        hash,
                        item.key(),
                        item.value(),
                        expires,
                        entries,
                        self.max_bytes,
                        |read| refused.record(read, reads, entries),
                    );
                }
                let written = admit || replaces;
                pending += if written { len } else { 0 };
                written
            })
            .collect();
        self.write_locked(&mut w, &admitted, ttl)?;
        Ok(admitted.len())
    }

    /// Appends `items` under the writer lock, evicting and rolling as needed.
    fn write_locked<I: ValueItem>(&self, w: &mut Writer, items: &[I], ttl: Option<Duration>) -> Result<()> {
        let now = self.clock.now_ms();
        let expires = |item: &I| item.expires_at_ms(ttl, now);
        let record_len = |item: &I| format::record_len(item.key().len(), item.value().len()) as u64;
        let stored_len = |item: &I| format::stored_len(item.key().len(), item.value().len());
        let mut rest = items;
        while let Some(first) = rest.first() {
            // The longest run of records that fits in the active segment, or in a new one if
            // the first does not (at least the first: every value was checked to fit in an
            // empty segment), and what it adds to the bytes the bound counts: its records and
            // hint entries, and the roll's header and hint frame. Space first: eviction may
            // append second-chance copies, so it runs before this run of records is laid out,
            // and the run is planned again if it moved the active segment's end.
            let fits = self.ensure_space_for(w, |w| {
                let rolls = self.rolls_for(w, record_len(first));
                let room = self.segment_size
                    - if rolls {
                        SEGMENT_HEADER_LEN as u64
                    } else {
                        w.offset
                    };
                let mut total = 0;
                let fits = rest
                    .iter()
                    .take_while(|item| {
                        total += record_len(item);
                        total <= room
                    })
                    .count()
                    .max(1);
                let chunk = rest.get(..fits).unwrap_or(rest);
                let needed = chunk.iter().map(stored_len).sum::<u64>() + if rolls { ROLL_BYTES } else { 0 };
                (needed, fits)
            })?;
            if self.rolls_for(w, record_len(first)) {
                self.roll(w)?;
            }
            // The plan can be a round older than the writer (see `ensure_space_for`): the run
            // never goes past the segment's end, where recovery would ignore it.
            let room = self.segment_size.saturating_sub(w.offset);
            let mut total = 0;
            let fits = rest
                .iter()
                .take(fits)
                .take_while(|item| {
                    total += record_len(item);
                    total <= room
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(fits.min(rest.len()));
            self.append_values(w, chunk, expires, now)?;
            rest = tail;
        }
        self.sync_if_every_write(w)
    }

    /// Appends value records with one `pwrite`, then publishes them in the index. The caller
    /// made sure they fit in the active segment.
    pub(super) fn append_values<I: ValueItem>(
        &self,
        w: &mut Writer,
        chunk: &[I],
        expires_at_ms: impl Fn(&I) -> u64,
        now: u64,
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
        let written = active.write_at(start, &w.buf);
        let needed = format::release_scratch(&mut w.buf);
        if let Err(e) = written {
            return Err(self.write_failed(w, e, needed, seq));
        }
        let end = start + needed as u64;
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
            // A value held for the key is older than this one (see `stash`).
            self.stash.forget(hash, super::stash::Moment::default());
            let entry =
                IndexEntry::with_protection(base.at(offset), expires_at_ms, self.admit_protected(w, hash));
            if let Some(old) = self.index.insert(hash, entry) {
                self.unaccount(old.loc);
                self.count_if_expired(&old, now);
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

    pub(super) fn delete(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        self.check_writable()?;
        let hash = self.hasher.hash(key);
        let mut w = self.writer.lock();
        // A value held in RAM goes with the key (see `stash`); it has no record to tombstone.
        let held = self.stash.forget(hash, self.moment());
        // The record decides (the writer lock keeps the entry as it is): see `needs_tombstone`;
        // with no entry, whether the key's value left the index expired lately (see `lapsed`).
        let Some(deletes) = self
            .needs_tombstone(key, hash)
            .or_else(|| self.lapsed.contains(hash).then_some(Deletes::Nothing))
        else {
            return Ok(held);
        };
        if let Deletes::Damaged(loc) = deletes {
            return self.delete_damaged(&mut w, key, hash, loc).map(|()| held);
        }
        self.append_tombstone(&mut w, key)?;
        if let Some((_, old)) = self.index.remove(&hash) {
            self.unaccount(old.loc);
            self.count_if_expired(&old, self.clock.now_ms());
        }
        self.sync_if_every_write(&w)?;
        Ok(matches!(deletes, Deletes::Value) || held)
    }

    /// Whether a record of `len` bytes needs a new segment: there is no active one, or it does
    /// not fit in it.
    pub(super) fn rolls_for(&self, w: &Writer, len: u64) -> bool {
        w.active.is_none() || w.offset + len > self.segment_size
    }

    /// Evicts until what `plan` says the next write adds fits under the size bound, and returns
    /// the plan's answer. An eviction may append second-chance copies (and roll for them), which
    /// changes what the write takes, so the write is planned again after one until the plan
    /// stands; a few rounds are enough, as every round but the last evicted a segment.
    pub(super) fn ensure_space_for<T>(
        &self,
        w: &mut Writer,
        plan: impl Fn(&Writer) -> (u64, T),
    ) -> Result<T> {
        const ROUNDS: usize = 8;
        let mut planned = plan(w);
        for _ in 0..ROUNDS {
            let before = (w.active_id(), w.offset);
            self.ensure_space(w, planned.0)?;
            if (w.active_id(), w.offset) == before {
                return Ok(planned.1);
            }
            planned = plan(w);
        }
        // Every round moved the writer: the last plan still gets its room (what that round's
        // copies add is all it may pass the bound by).
        self.ensure_space(w, planned.0)?;
        Ok(planned.1)
    }

    /// Appends one record to the active segment, rolling to a new segment if it does not fit.
    /// Returns the segment, offset and length written. The caller updates the index.
    pub(super) fn append(
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
        let written = active.write_at(offset, &w.buf);
        let needed = format::release_scratch(&mut w.buf);
        if let Err(e) = written {
            return Err(self.write_failed(w, e, needed, seq.saturating_add(1)));
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

    pub(super) fn sync_if_every_write(&self, w: &Writer) -> Result<()> {
        if self.durability == Durability::EveryWrite {
            if let Some(active) = &w.active {
                active.sync().map_err(|e| self.fail(e))?;
            }
        }
        Ok(())
    }

    /// Counts appended records against the size bound, with the hint entries they add: the hint
    /// file is written when the segment is sealed, and takes disk space as the records do.
    pub(super) fn count_appended(&self, active: &Segment, records: u64, hint_added: u64) {
        active.hint_bytes.fetch_add(hint_added, Ordering::Relaxed);
        self.disk_bytes.fetch_add(records + hint_added, Ordering::Relaxed);
    }

    /// A write that did not land whole: a full device is reported as [`Error::DiskFull`] and
    /// latches nothing (unless ending the segment then fails, whose error it returns), any
    /// other failure latches the store read-only. The records were not
    /// published, but some may have landed whole before the error (a short write), and they are
    /// valid records. So the sequence numbers they took, up to `seq_after`, are never used again,
    /// and on a full device, where writes go on, the active segment ends at its data end
    /// ([`Inner::end_after_failed_write`]).
    pub(super) fn write_failed(&self, w: &mut Writer, e: Error, needed: usize, seq_after: u64) -> Error {
        w.next_seq = w.next_seq.max(seq_after);
        if !e.is_no_space() {
            return self.fail(e);
        }
        if let Err(ended) = self.end_after_failed_write(w, needed) {
            return ended;
        }
        self.disk_full("write segment", needed as u64)
    }

    /// Ends the active segment after a write past its data end failed: sealed, which truncates
    /// the file at the data end (that needs no free space) and so cuts off whatever the write
    /// left, or removed if it holds no record. The next write starts a new segment. Left there,
    /// those bytes had the next write's sequence numbers, and its record overwrote only their
    /// start: a crash before the segment was sealed let the failed write's records shadow it.
    ///
    /// The cut is fsynced before the error is returned: left to the segment's later fsync, a
    /// power cut in between could keep the failed write's records and lose the cut.
    ///
    /// If the truncation fails too (it can need space on a copy-on-write file system), the
    /// `needed` bytes the write may have left are overwritten with zeros and fsynced, in space
    /// the segment already holds: a crash before the hint is written would otherwise let the
    /// scan apply the records of a write its caller was told failed. If that fails as well, the
    /// store is latched read-only.
    fn end_after_failed_write(&self, w: &mut Writer, needed: usize) -> Result<()> {
        let Some(active) = w.active.take() else {
            return Ok(());
        };
        w.offset = self.segment_size;
        if active.data_end() <= SEGMENT_HEADER_LEN as u64 {
            self.remove_segment(w, &active)?;
            return self.sync_removals();
        }
        if active.truncate_to_data().is_ok() {
            // The cut is as unsynced as the records it cut off: a power cut could keep them
            // and lose it, and the scan would apply the failed write. Synced now, as the
            // zeros below are (the segment's space is reserved, so this needs none).
            active.sync().map_err(|e| self.fail(e))?;
        } else {
            let end = active.data_end();
            let room = usize::try_from(self.segment_size.saturating_sub(end)).unwrap_or(usize::MAX);
            let zeros = vec![0u8; needed.min(room)];
            active
                .write_at(end, &zeros)
                .and_then(|()| active.sync())
                .map_err(|e| self.fail(e))?;
        }
        self.seal(w, active)
    }

    pub(super) fn disk_full(&self, op: &'static str, needed: u64) -> Error {
        let e = Error::DiskFull {
            path: self.dir.path.clone(),
            op,
            needed,
        };
        if let Some(unlogged) = self.full_lines.pass() {
            tracing::warn!(error = %e, unlogged, "file store write refused (unlogged: refusals since the last line)");
        }
        e
    }

    /// Only reachable if a roll failed and its error was dropped; kept as an error, not a panic.
    pub(super) fn no_active_segment(&self) -> Error {
        self.disk_full("append to a segment", self.segment_size)
    }

    /// Seals the active segment (its fsync and hint come later) and starts a new one.
    ///
    /// A device too full for the new segment's reservation makes room by evicting the oldest
    /// segments (a cache shrinks before it fails); with nothing left to evict the write gets
    /// [`Error::DiskFull`]; so does a compaction's roll, which evicts nothing (see
    /// `maintenance`). No failure here latches: nothing was written, and the next write tries
    /// again, so writes resume once space returns.
    pub(super) fn roll(&self, w: &mut Writer) -> Result<()> {
        if let Some(active) = w.active.take() {
            self.seal(w, active)?;
        }
        w.offset = self.segment_size;
        let id = w.next_segment_id;
        let segment = loop {
            match Segment::create(&self.dir, id, self.segment_size) {
                Ok(segment) => break Arc::new(segment),
                Err(e) if e.is_no_space() => {
                    if w.compacting || !self.evict_oldest(w, false)? {
                        return Err(self.disk_full("create segment", self.segment_size));
                    }
                }
                Err(e) => return Err(e),
            }
        };
        if self.random_map_reads {
            segment.advise_random_reads();
        }
        w.next_segment_id = w.next_segment_id.saturating_add(1);
        let hint_frame = ROLL_BYTES - SEGMENT_HEADER_LEN as u64;
        segment.hint_bytes.store(hint_frame, Ordering::Relaxed);
        {
            let mut segments = self.segments.write();
            segments.insert(id, Arc::clone(&segment));
            self.follow_segments(&segments);
        }
        self.disk_bytes.fetch_add(ROLL_BYTES, Ordering::Relaxed);
        w.active = Some(segment);
        w.offset = SEGMENT_HEADER_LEN as u64;
        self.plan_next(w);
        // The new name must be durable before records in it are acknowledged as durable.
        self.dir.sync().map_err(|e| self.fail(e))
    }

    /// Seals the active segment: its hint is written once the segment is fsynced, which happens
    /// off the write path (the flusher, the compactor, `flush`, close), so filling a segment does
    /// not stall the writer for a 64 MiB fsync.
    ///
    /// The space reserved past the last record is given back now (the file is truncated to its
    /// data), so a sealed segment holds on disk only what it stores.
    pub(super) fn seal(&self, w: &mut Writer, active: Arc<Segment>) -> Result<()> {
        if let Err(e) = active.truncate_to_data() {
            // Only space is at stake: the reservation stays until the segment is removed.
            tracing::warn!(error = %e, "could not release the unused tail of a sealed segment");
        }
        // After the cut, which an fsync that sees the segment sealed covers (`Segment::sync`).
        active.sealed.store(true, Ordering::Release);
        let sealed = Sealed { segment: active };
        if self.durability == Durability::EveryWrite {
            // Every write call fsyncs before it returns, but a batch that rolled mid-way has
            // records here that its final fsync (of the new segment) does not cover: the hint
            // must not describe them before they are durable. The power-loss test found this.
            sealed.segment.sync().map_err(|e| self.fail(e))?;
            self.write_hint(&sealed);
        } else {
            w.unsynced.push(sealed);
            // Past `OPEN_UNSYNCED` sealed segments, the oldest is fsynced now, which closes its
            // file; it stays listed for the flush to write its hint.
            let past = w.unsynced.len().checked_sub(OPEN_UNSYNCED + 1);
            if let Some(oldest) = past.and_then(|i| w.unsynced.get(i)) {
                oldest.segment.sync().map_err(|e| self.fail(e))?;
            }
        }
        Ok(())
    }

    /// fsyncs sealed segments, then writes their hints. A segment evicted or compacted meanwhile
    /// needs neither.
    pub(super) fn sync_sealed(&self, sealed: Vec<Sealed>) -> Result<()> {
        // Held weakly while the ones before are synced: held strongly, a segment evicted
        // meanwhile stayed open, deleted but its space not given back, until the flush reached
        // it (a periodic flush of several small segments held two such files on tmpfs).
        let waiting: Vec<Weak<Segment>> = sealed.iter().map(|s| Arc::downgrade(&s.segment)).collect();
        drop(sealed);
        for segment in waiting {
            let Some(segment) = segment.upgrade() else {
                continue;
            };
            let s = Sealed { segment };
            if !self.is_listed(&s.segment) {
                continue;
            }
            s.segment.sync().map_err(|e| self.fail(e))?;
            self.write_hint(&s);
        }
        Ok(())
    }

    pub(super) fn is_listed(&self, segment: &Segment) -> bool {
        self.segments.read().contains_key(&segment.id)
    }

    pub(super) fn write_hint(&self, sealed: &Sealed) {
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
        // Evicted while the hint was written (a flush writes hints outside the writer lock):
        // the eviction found no hint to remove, so nothing else will, and its bytes would
        // stay on disk uncounted until the next open.
        if !self.is_listed(seg) {
            let hint = segment::hint_path(&self.dir.path, seg.id);
            match self.dir.disk.remove_file(&hint) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(error = %e, path = %hint.display(), "could not remove the hint of an evicted segment; the next open removes it")
                }
            }
        }
    }

    /// fsyncs every segment that waits for it (the active one and the sealed ones a flush has
    /// not taken yet), for callers about to delete records that newer ones shadow or that
    /// they copied. Runs under the writer lock, so no flush can have taken segments out of
    /// `unsynced` without its fsync being over (callers hold `sync_lock` or the flush that
    /// took them has returned). The sealed ones stay listed: the flush writes their hints.
    pub(super) fn sync_pending(&self, w: &Writer) -> Result<()> {
        self.sync_since(w, 0)
    }

    /// [`sync_pending`](Self::sync_pending) of the segments that can hold records appended
    /// since segment `since_id` became active (the active one and any sealed since): enough for
    /// an eviction, which removes the oldest segment, behind which nothing older can come back.
    pub(super) fn sync_since(&self, w: &Writer, since_id: u64) -> Result<()> {
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

    pub(super) fn seal_on_close(&self) -> Result<()> {
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

    pub(super) fn flush(&self) -> Result<()> {
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

    pub(super) fn clear(&self) -> Result<()> {
        self.check_writable()?;
        let mut w = self.writer.lock();
        // Raise the minimum sequence number first: once that is durable, every older record is
        // ignored by recovery, so removing the files is only space reclamation.
        let meta = Meta {
            segment_size: self.segment_size,
            min_seq: w.next_seq,
            max_size: self.max_bytes,
        };
        self.write_meta_making_room(&mut w, &meta)?;
        self.index.clear();
        self.stash.clear();
        self.lapsed.clear();
        w.ghosts.clear();
        w.victims.clear();
        w.recent_fills.clear();
        w.refused.clear();
        w.evicted = false;
        w.new_keys.clear();
        w.seen_keys.clear();
        w.returns.clear();
        w.decay.clear();
        self.sketch.clear();
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

    /// Writes the metadata file for `clear`. On a device too full for even that small file (the
    /// moment a user is most likely to clear), room is made the way a write makes it: the active
    /// segment is sealed (giving back its reservation) and the oldest segments are evicted, each
    /// a step that is safe on its own. Nothing latches on a full disk: the old metadata is still
    /// in place, and the caller gets [`Error::DiskFull`] only when nothing is left to remove.
    fn write_meta_making_room(&self, w: &mut Writer, meta: &Meta) -> Result<()> {
        loop {
            match self.dir.write_meta(meta) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_no_space() => {
                    if self.evict_oldest(w, false)? {
                        continue;
                    }
                    match w.active.take() {
                        Some(active) => {
                            w.offset = self.segment_size;
                            self.seal(w, active)?;
                        }
                        None => return Err(self.disk_full("write the metadata", META_EXT_LEN as u64)),
                    }
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
    }

    /// Makes removed segment names durable. Compaction drops tombstones from a segment once it
    /// is the oldest, so an unlink that a power loss undoes could bring deleted keys back: a
    /// failure here latches.
    pub(super) fn sync_removals(&self) -> Result<()> {
        self.dir.sync().map_err(|e| self.fail(e))
    }

    /// Moves the young part of the log (see `policy`, correlated reads) to follow `segments`,
    /// the store's segments just after one was added or removed (their lock still held).
    fn follow_segments(&self, segments: &BTreeMap<u64, Arc<Segment>>) {
        self.young_from
            .store(policy::young_from(segments.keys()), Ordering::Relaxed);
    }

    /// Forgets a segment and deletes its files. Readers holding it finish first (the segments
    /// lock); the mapping outlives the unlink. A sealed segment still waiting for its fsync is
    /// dropped from that queue, so nothing keeps its deleted file open.
    ///
    /// Idempotent: a segment already removed (say, evicted while compaction was rewriting it) is
    /// left alone. Returns whether this call removed it.
    pub(super) fn remove_segment(&self, w: &mut Writer, seg: &Segment) -> Result<bool> {
        w.unsynced.retain(|s| s.segment.id != seg.id);
        {
            let mut segments = self.segments.write();
            if segments.remove(&seg.id).is_none() {
                return Ok(false);
            }
            self.follow_segments(&segments);
        }
        self.slots.release(seg.id);
        self.disk_bytes.fetch_sub(seg.disk_bytes(), Ordering::Relaxed);
        // Its plan, or a listing of it, is of no use now; the next segment's may be.
        self.planner.forget(seg.id);
        self.plan_next(w);
        // A segment that stays on disk after the store forgot it would come back at the next
        // open, with records whose tombstones may be gone: latch.
        self.dir
            .disk
            .remove_file(&seg.path)
            .map_err(|e| self.fail(Error::io("remove segment", &seg.path, e)))?;
        // A hint left behind is harmless: the next open removes a hint without its segment. An
        // error here used to return before the caller's fsync of the directory, which a power
        // cut then could undo the segment's unlink without: its records came back.
        let hint = segment::hint_path(&self.dir.path, seg.id);
        match self.dir.disk.remove_file(&hint) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %hint.display(), error = %e, "could not remove the hint of a removed segment; the next open removes it");
            }
            _ => {}
        }
        Ok(true)
    }

    /// Removes the oldest segment for good (`by` an eviction or a compaction), durably, and
    /// counts the damaged ranges known in it ([`Segment::damaged_ranges`]) as dropped; returns
    /// them. Counted once the file is gone, before the directory's fsync: if that fails (the
    /// error is returned, and latches the store), the store has still forgotten the segment.
    pub(super) fn drop_segment(&self, w: &mut Writer, seg: &Segment, by: &'static str) -> Result<u64> {
        let damaged = if self.remove_segment(w, seg)? {
            seg.damaged_ranges.load(Ordering::Relaxed)
        } else {
            0
        };
        if damaged > 0 {
            let dropped = &self.counters.damaged_ranges_dropped;
            dropped.fetch_add(damaged, Ordering::Relaxed);
            tracing::warn!(path = %seg.path.display(), ranges = damaged, by,
                "damaged records went with the oldest segment; their keys are gone");
        }
        self.sync_removals()?;
        Ok(damaged)
    }
}
