//! Segment slots: the small numbers index entries use to name a segment.
//!
//! Segment ids are u64 and grow forever (a long-lived store with 64 KiB segments rolls 2^24 of
//! them in hours), too wide for a 16-byte index entry. An entry names a slot (24 bits) and the
//! slot's generation (10 bits) instead. A segment gets a slot when the first index entry points
//! at it; [`Slots::release`] frees the slot when the segment is removed and bumps its generation.
//! Every path that removes a segment goes through `Inner::remove_segment`, after eviction or
//! compaction has moved or dropped the entries that pointed at it; an entry missed there (its
//! record damaged since it was indexed) then fails the generation check. Freed slots are reused
//! first, so the table stays as small as the number of open segments.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};

use super::index::{Loc, GEN_MASK, MAX_SLOTS};
use super::segment::Segment;
use crate::error::{Error, Result};

/// The slot table; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    table: RwLock<Table>,
}

#[derive(Debug, Default)]
pub(crate) struct Table {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_id: HashMap<u64, u32>,
}

#[derive(Debug, Default)]
struct Slot {
    segment: Option<Arc<Segment>>,
    generation: u16,
}

impl Table {
    /// The segment `loc` names, if its slot still holds the generation `loc` was made in.
    pub(crate) fn get(&self, loc: Loc) -> Option<&Arc<Segment>> {
        let slot = self.slots.get(loc.slot() as usize)?;
        if slot.generation == loc.generation() {
            slot.segment.as_ref()
        } else {
            None
        }
    }
}

impl Slots {
    /// Read access, for a reader that resolves a location it just read from the index (taken
    /// while the index guard is still held; see `index`).
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read()
    }

    /// The location of `offset` in `segment`, giving the segment a slot if it has none.
    ///
    /// # Errors
    /// [`Error::Config`] naming `segment_size` if 2^24 segments are open at once (16M segment files; the size bound and
    /// the smallest segment size allow 1 TiB of them).
    pub(crate) fn loc(&self, segment: &Arc<Segment>, offset: u64) -> Result<Loc> {
        if let Some(loc) = self.find(segment.id) {
            return Ok(loc.at(offset));
        }
        let mut t = self.table.write();
        if let Some(&slot) = t.by_id.get(&segment.id) {
            let generation = t.slots.get(slot as usize).map_or(0, |s| s.generation);
            return Ok(Loc::new(slot, generation, offset));
        }
        let slot = match t.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(t.slots.len()).unwrap_or(u32::MAX);
                if slot >= MAX_SLOTS {
                    return Err(Error::Config {
                        field: "segment_size".into(),
                        reason: format!(
                            "the file store has {MAX_SLOTS} segments open at once; reopen it with larger segments"
                        ),
                    });
                }
                t.slots.push(Slot::default());
                slot
            }
        };
        t.by_id.insert(segment.id, slot);
        let entry = t.slots.get_mut(slot as usize);
        let generation = match entry {
            Some(s) => {
                s.segment = Some(Arc::clone(segment));
                s.generation
            }
            None => 0,
        };
        Ok(Loc::new(slot, generation, offset))
    }

    /// The location of offset 0 in segment `id`, if it has a slot.
    pub(crate) fn find(&self, id: u64) -> Option<Loc> {
        let t = self.table.read();
        let slot = *t.by_id.get(&id)?;
        let generation = t.slots.get(slot as usize)?.generation;
        Some(Loc::new(slot, generation, 0))
    }

    /// The segment `loc` names, if it is still there.
    pub(crate) fn get(&self, loc: Loc) -> Option<Arc<Segment>> {
        self.table.read().get(loc).cloned()
    }

    /// Frees the slot of segment `id` (removed from the store) for reuse. Idempotent.
    pub(crate) fn release(&self, id: u64) {
        let mut t = self.table.write();
        let Some(slot) = t.by_id.remove(&id) else {
            return;
        };
        if let Some(s) = t.slots.get_mut(slot as usize) {
            s.segment = None;
            s.generation = s.generation.wrapping_add(1) & GEN_MASK;
            t.free.push(slot);
        }
    }

    /// Slots in use.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.read().by_id.len()
    }
}
