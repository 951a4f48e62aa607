//! Keys whose expired value left the index while its record may still be on disk, so that a
//! delete of one still writes a tombstone.
//!
//! A delete of an expired value takes a tombstone (see `lookup::needs_tombstone`): recovery
//! skips the record only under this open's keep-expired window and clock, so reopened with a
//! longer window (fail-safe raised) it is a stale copy, and behind a clock set back a live value.
//! But once the entry has left the index (recovery skipped it, a read or the sweep dropped it),
//! the delete finds nothing, and tombstoning every delete of a key not found would write a record
//! per delete of an absent key (every invalidation a backplane brings of a key this store never
//! held). So the key hashes dropped as expired are remembered here, in Bloom filters of two
//! generations of as many keys as the store holds (2 bytes per entry once some have expired,
//! none before): a delete of one writes its tombstone. A false positive (about 3%) costs one
//! tombstone. A key that expired more than about two generations of expirations ago is
//! forgotten, and its delete writes nothing, as before; its record has usually left the log by
//! then, with the segment that held it.
//!
//! A key whose record a read found damaged leaves the index too, and the read writes a tombstone
//! for it: an older record of the key may be on disk, which a reopen that scans past the damaged
//! one (its segment's hint lost) would apply. Where that tombstone cannot be written (a full
//! device, a store refusing writes), the key is remembered here, so its next delete writes it.

use parking_lot::Mutex;

use super::ghost::BloomRing;

/// Hashes of keys dropped from the index as expired, lately; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Lapsed(Mutex<BloomRing<2>>);

impl Lapsed {
    /// Remembers that `hash`'s entry left the index expired; `entries` is how many the store
    /// holds, which sizes a generation.
    pub(crate) fn insert(&self, hash: u64, entries: usize) {
        self.0.lock().insert(hash, entries);
    }

    /// Whether `hash`'s entry (probably) left the index expired lately.
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.0.lock().contains(hash)
    }

    /// Forgets every key (the store was cleared: no record is left).
    pub(crate) fn clear(&self) {
        self.0.lock().clear();
    }
}
