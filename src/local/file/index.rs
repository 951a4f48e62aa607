//! The in-memory index: a key's 64-bit hash → where the newest record with that hash is.
//!
//! # Why a hash, not the key
//! The index used to map the key itself (`Box<str>`) to a 48-byte entry: 192 bytes of RSS per
//! entry with 16-byte keys and 251 with 64-byte keys (a million entries). Flash caches keep no key
//! in memory: they map a hash to a location and check the full key against the record on disk
//! when they read it. So does this index. An entry is the key's 64-bit aHash (the map key) and 16
//! bytes of value: a packed location ([`Loc`]: in-memory segment slot, its generation, offset), a
//! coarse expiry (Unix seconds, rounded up) and a word of flags (read frequency, read bit,
//! protected bit, confirmed epoch).
//!
//! Memory: hashbrown grows by powers of two with a 7/8 maximum load, so a million entries sit in
//! 2^21 buckets, 2.1 per entry; a bucket is the 24-byte `(hash, entry)` pair plus one control
//! byte, so about 52 bytes per entry, whatever the key length. Everything else an entry used to
//! hold is on disk, in the record header, and is read when needed: the length (to account live
//! bytes when an entry is replaced), the sequence number (the suspect check of `get_checked`),
//! the exact expiry (a read re-checks it), the key (`keys()` for prefix invalidation).
//!
//! The hash is aHash with a random seed per open (or the fixed one of
//! [`FileStoreOptions::hash_seed`](super::FileStoreOptions::hash_seed)), so nothing about it is
//! written to disk: the
//! index is rebuilt at open from hint files and records, which keep full keys. Nothing on disk
//! changed.
//!
//! # Collisions: one slot per hash, correctness by hash
//! Two keys with the same 64-bit hash share one entry. The index then holds, for every hash, the
//! newest record (highest sequence number) of *any* key with that hash, if it is a live value. A
//! read checks the key in the record: a record of another key is a plain miss (not damage), so a
//! later write of a colliding key evicts the earlier key and never returns its value for it.
//! Every other path works by hash, and stays correct:
//! - **Delete** of a key whose hash entry holds another key: the key is already absent (it was
//!   displaced), so nothing is removed and no tombstone is written. Its older records on disk are
//!   shadowed by the newer record of the same hash, and recovery applies records by hash too.
//! - **Tombstones** shadow every older record of their hash at recovery, not only their key's: a
//!   colliding key's older value never comes back after its hash was deleted.
//! - **Compaction** asks "is this hash in the index?" for a dead record. If it is, the entry points
//!   at the newest record of the hash, newer than this one, and shadows it at recovery; if not, the
//!   record's key gets a tombstone, which shadows the hash's older records. The invariant "every
//!   older record of a hash lies in the same or an older segment" holds as it did by key: only the
//!   newest record of a hash is ever copied forward.
//! - **A damaged record** found by a read is dropped from the index and a tombstone of the read
//!   key is appended with a fresh sequence number: it shadows every older record of the hash, so
//!   nothing older of that hash can resurface, whichever colliding key the damaged record held.
//! - **Recovery** applies records by hash (highest sequence number wins; a tombstone wins a tie,
//!   which only ever happens between records of the same key, as every write takes a new number).
//!   So the rebuilt index is the one the running store had: no deleted key comes back and a read
//!   never returns a value that is not its key's newest.
//!
//! With 2^64 hashes a collision among a million keys has a probability of about 3·10^-8; its
//! cost is one eviction. A test hasher forces them (`collision_tests`).
//!
//! # Segment slots
//! A [`Loc`] names a segment by a 24-bit slot of [`super::slots::Slots`], not by its 64-bit id
//! (ids grow forever), plus a 10-bit generation of that slot. A slot is released when its segment
//! is removed, after the entries pointing at it were moved or dropped (eviction and compaction
//! visit every record of the segment first), and its generation is bumped, so an entry that was
//! missed (its record was damaged after it was indexed) fails the generation check instead of
//! following the slot into another segment; should a generation ever wrap onto it, the key check
//! of the read still makes it a miss. A reader takes the segment from the slot table while it
//! still holds the index shard's guard, so the entry it read cannot be moved meanwhile.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU32, Ordering};

use dashmap::DashMap;

/// Bits of a [`Loc`]: offset (segments are at most 1 GiB), slot generation, slot.
const OFFSET_BITS: u32 = 30;
const GEN_BITS: u32 = 10;
/// Most segments that can be open at once (16M: 1 TiB of the smallest, 64 KiB segments).
pub(crate) const MAX_SLOTS: u32 = 1 << 24;
pub(crate) const GEN_MASK: u16 = (1 << GEN_BITS) - 1;
const OFFSET_MASK: u64 = (1 << OFFSET_BITS) - 1;

/// Where a record is: segment slot (24 bits), the slot's generation (10), offset (30).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc(u64);

impl Loc {
    pub(crate) fn new(slot: u32, generation: u16, offset: u64) -> Loc {
        debug_assert!(slot < MAX_SLOTS && offset <= OFFSET_MASK);
        Loc((u64::from(slot) << (OFFSET_BITS + GEN_BITS))
            | (u64::from(generation & GEN_MASK) << OFFSET_BITS)
            | (offset & OFFSET_MASK))
    }

    pub(crate) fn slot(self) -> u32 {
        (self.0 >> (OFFSET_BITS + GEN_BITS)) as u32
    }

    pub(crate) fn generation(self) -> u16 {
        ((self.0 >> OFFSET_BITS) as u16) & GEN_MASK
    }

    pub(crate) fn offset(self) -> u64 {
        self.0 & OFFSET_MASK
    }

    /// The same segment slot, at `offset`.
    pub(crate) fn at(self, offset: u64) -> Loc {
        Loc::new(self.slot(), self.generation(), offset)
    }
}

/// Protected bit in [`IndexEntry::flags`]: the entry proved itself (kept at eviction, or written
/// again soon after it was evicted), so the size bound keeps it before one-off entries (see
/// `policy`). In RAM only: entries are rebuilt without it.
const PROTECTED: u32 = 1 << 30;
/// Read frequency (bits 28–29): a counter that saturates at [`FREQ_MAX`], one up per read, one
/// down when the entry is kept at an eviction that had to drop read entries, and down to zero
/// when it is kept unread lately while such entries are seldom read again (see [`Spend`]). It orders what the
/// size bound keeps (see `policy`).
const FREQ_SHIFT: u32 = 28;
const FREQ: u32 = 0b11 << FREQ_SHIFT;
/// Highest read frequency counted.
pub(crate) const FREQ_MAX: u32 = 3;
/// Kept-unread bit (bit 31): the entry was last kept at eviction without a read counted, and
/// is protected. Kept unread once more, it loses its protection (see `policy`); a read counted
/// by the next eviction that keeps it clears the bit. In RAM only, as the other policy bits.
const KEPT_UNREAD: u32 = 1 << 31;
/// Read bit (bit 27): read since written, whether the read counted in [`FREQ`] or not (a read
/// of a probationary entry in the young part of the log does not: see `policy`, correlated
/// reads). The gates on fills ask it (see `fillgate`): a new key read only in its burst was
/// still read.
const READ: u32 = 1 << 27;
/// The other 27 bits: the confirmed epoch.
const EPOCH_MASK: u32 = !(KEPT_UNREAD | PROTECTED | FREQ | READ);

/// Reads an entry kept at eviction spends (see `policy` and `decay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Room was not short: the count stays.
    Nothing,
    /// Read entries were evicted for want of room: one read.
    One,
    /// The entry stopped being read, and such entries are seldom read again lately: every read.
    All,
}

impl Spend {
    /// The count of reads `freq` after the spending.
    pub(crate) fn after(self, freq: u32) -> u32 {
        match self {
            Spend::Nothing => freq,
            Spend::One => freq.saturating_sub(1),
            Spend::All => 0,
        }
    }
}

/// One index entry (16 bytes; the 64-bit key hash is the map key).
#[derive(Debug)]
pub(crate) struct IndexEntry {
    pub(crate) loc: Loc,
    /// Expiry in Unix seconds, rounded up (0: never). Coarse: when it says "expired", the record
    /// is; in the last second before it the exact expiry is checked from the record.
    expires_s: u32,
    /// Bit 31: kept unread ([`KEPT_UNREAD`]); bit 30: protected (see [`PROTECTED`]); bits
    /// 28–29: read frequency ([`FREQ`]); bit 27: read ([`READ`]). Bits 0–26: the suspicion
    /// epoch (mod 2^27) in which the entry was last confirmed fresh (0: never).
    flags: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<IndexEntry>() == 16);

impl IndexEntry {
    pub(crate) fn new(loc: Loc, expires_at_ms: u64) -> Self {
        IndexEntry {
            loc,
            expires_s: coarse_expiry(expires_at_ms),
            flags: AtomicU32::new(0),
        }
    }

    /// As [`IndexEntry::new`], protected from the start if `protected` (no reads counted).
    pub(crate) fn with_protection(loc: Loc, expires_at_ms: u64, protected: bool) -> Self {
        let entry = IndexEntry::new(loc, expires_at_ms);
        if protected {
            entry.flags.store(PROTECTED, Ordering::Relaxed);
        }
        entry
    }

    pub(crate) fn protected(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & PROTECTED != 0
    }

    /// Reads counted since written, less one per pass kept at eviction (see [`FREQ`]).
    pub(crate) fn freq(&self) -> u32 {
        (self.flags.load(Ordering::Relaxed) & FREQ) >> FREQ_SHIFT
    }

    /// Whether the entry was last kept at eviction unread, and still is (see [`KEPT_UNREAD`]).
    pub(crate) fn kept_unread(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & KEPT_UNREAD != 0
    }

    /// Kept at eviction (re-appended). With reads counted: protected from now on, less the reads
    /// `spend` takes. Without: a protected entry kept unread for the first time in a row stays
    /// protected (marked [`KEPT_UNREAD`]), the second time it loses its protection, unless its
    /// key was `read_lately` (by the admission sketch: it then stays protected, marked, as at a
    /// first unread keep); an unread probationary one is made protected (kept in the room that
    /// better ranks left).
    pub(crate) fn kept_at_eviction(&self, spend: Spend, read_lately: bool) {
        let _ = self
            .flags
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                let freq = (f & FREQ) >> FREQ_SHIFT;
                if freq == 0 && f & PROTECTED != 0 {
                    return Some(if f & KEPT_UNREAD != 0 && !read_lately {
                        f & !(KEPT_UNREAD | PROTECTED)
                    } else {
                        f | KEPT_UNREAD
                    });
                }
                let freq = spend.after(freq);
                Some((f & !(FREQ | KEPT_UNREAD)) | PROTECTED | (freq << FREQ_SHIFT))
            });
    }

    /// Certainly expired at `now_ms` (the record's exact expiry may already have passed when this
    /// is still false, for at most a second).
    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_s != 0 && now_ms >= u64::from(self.expires_s) * 1000
    }

    /// The instant (Unix ms) from which the entry is certainly expired; `None` if it never
    /// expires. As [`is_expired`](Self::is_expired): `is_expired(now)` is `now >= at`.
    pub(crate) fn expired_from_ms(&self) -> Option<u64> {
        (self.expires_s != 0).then(|| u64::from(self.expires_s) * 1000)
    }

    /// Possibly expired at `now_ms`: in the last second before the coarse expiry, when only the
    /// record's exact expiry can tell.
    pub(crate) fn may_be_expired(&self, now_ms: u64) -> bool {
        self.expires_s != 0 && now_ms.saturating_add(1000) >= u64::from(self.expires_s) * 1000
    }

    /// Marks the entry read, and counts the read unless the entry is probationary and `young`
    /// (its record is in the young part of the log: see `policy`, correlated reads). Checks
    /// first so a hot key, its counter saturated, does not bounce a cache line between cores.
    pub(crate) fn touch(&self, young: bool) {
        let counts = |f: u32| !young || f & PROTECTED != 0;
        let f = self.flags.load(Ordering::Relaxed);
        if f & READ == 0 || (counts(f) && (f & FREQ) >> FREQ_SHIFT < FREQ_MAX) {
            let _ = self
                .flags
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| {
                    let freq = (f & FREQ) >> FREQ_SHIFT;
                    let freq = if counts(f) { (freq + 1).min(FREQ_MAX) } else { freq };
                    Some((f & !FREQ) | READ | (freq << FREQ_SHIFT))
                });
        }
    }

    /// Whether the entry was read since it was written (counted or not).
    pub(crate) fn was_read(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & READ != 0
    }

    /// Whether the entry was confirmed in `epoch` (compared mod 2^27; an epoch that is 0 mod
    /// 2^27 confirms nothing, as 0 means "never").
    pub(crate) fn confirmed_in(&self, epoch: u32) -> bool {
        let epoch = epoch & EPOCH_MASK;
        epoch != 0 && self.flags.load(Ordering::Acquire) & EPOCH_MASK == epoch
    }

    pub(crate) fn confirm(&self, epoch: u32) {
        let _ = self.flags.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
            Some((f & !EPOCH_MASK) | (epoch & EPOCH_MASK))
        });
    }

    /// Takes back a confirmation in `epoch`, unless another has replaced it since.
    pub(crate) fn unconfirm(&self, epoch: u32) {
        let _ = self.flags.fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| {
            (f & EPOCH_MASK == epoch & EPOCH_MASK).then_some(f & !EPOCH_MASK)
        });
    }
}

/// Whether the loss of certainty after `epoch` starts a lap of the 27-bit stamp: the epochs
/// from there on would match the stamps of a lap ago, so [`forget_confirmations`] runs first.
pub(crate) fn laps_after(epoch: u32) -> bool {
    epoch.wrapping_add(1) & EPOCH_MASK == 0
}

/// Forgets every entry's confirmation, before the epoch starts a new lap (see [`laps_after`]).
/// A confirm that stamps the old lap's last epoch while this runs takes its stamp back (see
/// `FileStore::confirm`).
pub(crate) fn forget_confirmations(index: &Index) {
    for e in index.iter() {
        e.value().confirm(0);
    }
}

/// Unix seconds, rounded up, saturating (u32 seconds last until 2106; later expiries are kept
/// exactly in the record and checked on read).
fn coarse_expiry(expires_at_ms: u64) -> u32 {
    u32::try_from(expires_at_ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// The map hashes its `u64` keys by passing them through: they are aHash outputs already.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PassThrough(u64);

/// A map keyed by key hashes, which it takes as they are ([`PassThrough`]): they are random
/// already, and the standard hasher (SipHash) costs more than the lookup. An eviction looks
/// every entry it meets up in one of these under the writer lock; with SipHash there, and no
/// check for an empty set first, the write that evicted a 140k-entry segment of 200-byte values
/// waited 72-77 ms, against 55-59 ms (`examples/eviction_stall.rs`).
pub(crate) type ByHash<V> = HashMap<u64, V, BuildHasherDefault<PassThrough>>;

/// A set of key hashes, taken as they are (see [`ByHash`]).
pub(crate) type HashesSet = HashSet<u64, BuildHasherDefault<PassThrough>>;

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in so the hasher stays total.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Key hash → newest record of that hash.
pub(crate) type Index = DashMap<u64, IndexEntry, BuildHasherDefault<PassThrough>>;

/// Hashes keys for the index: aHash, several times faster than SipHash on short keys, randomly
/// seeded per open so hash flooding stays out (and collisions differ between runs) unless a
/// seed is fixed. The hash is never written to disk.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyHasher(ahash::RandomState);

impl KeyHasher {
    /// A hasher that hashes every key the same in every process
    /// ([`FileStoreOptions::hash_seed`](super::FileStoreOptions::hash_seed)), or a randomly
    /// seeded one.
    pub(crate) fn new(seed: Option<u64>) -> KeyHasher {
        match seed {
            // aHash takes four seeds; the other three are the digits of pi, so no seed gives
            // the all-zero state.
            Some(seed) => KeyHasher(ahash::RandomState::with_seeds(
                seed,
                0x243f_6a88_85a3_08d3,
                0x1319_8a2e_0370_7344,
                0xa409_3822_299f_31d0,
            )),
            None => KeyHasher::default(),
        }
    }

    pub(crate) fn hash(&self, key: &str) -> u64 {
        #[cfg(test)]
        if let Some(group) = key.strip_prefix("collide/") {
            // Tests: every "collide/{group}/…" key of a group gets the same hash.
            return self.0.hash_one(group.split('/').next().unwrap_or_default());
        }
        self.0.hash_one(key)
    }
}

/// Shards of the index: dashmap's own default (4 per core, a power of two), fixed here so that
/// recovery can tell which shard and bucket a hash lands in (see [`shard_of`]).
pub(crate) fn shard_amount() -> usize {
    static SHARDS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *SHARDS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        (cores * 4).next_power_of_two().clamp(4, 1024)
    })
}

/// An empty index sized for `capacity` entries.
pub(crate) fn with_capacity(capacity: usize) -> Index {
    Index::with_capacity_and_hasher_and_shard_amount(capacity, BuildHasherDefault::default(), shard_amount())
}

/// The shard of an index made by [`with_capacity`] that `hash` lands in, as dashmap picks it: the
/// bits below hashbrown's 7-bit tag. Recovery applies the shards apart (see `rebuild`); were
/// dashmap to pick otherwise, the index would still be right, only built slower.
pub(crate) fn shard_of(hash: u64) -> usize {
    let shards = shard_amount();
    let shift = u64::BITS - shards.trailing_zeros();
    // `shards` is a power of two: the mask only keeps the compiler sure of the bound.
    ((hash << 7) >> shift) as usize & (shards - 1)
}

/// Where a hash lands in its shard's table, for an index made by [`with_capacity`]`(capacity)`:
/// the bucket where hashbrown's probe starts. Returns the function and the buckets per shard.
/// Inserting a shard's entries in this order walks its table instead of missing the cache and
/// the TLB on every insert (see `rebuild`).
pub(crate) fn bucket_in_shard(capacity: usize) -> (impl Fn(u64) -> u64, u64) {
    let per_shard = capacity.div_ceil(shard_amount());
    // As hashbrown sizes a table: a power of two, at most 7/8 full.
    let buckets = (per_shard.saturating_mul(8) / 7).max(1).next_power_of_two() as u64;
    (move |hash: u64| hash & (buckets - 1), buckets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_round_trips_its_fields_at_their_limits() {
        let loc = Loc::new(MAX_SLOTS - 1, GEN_MASK, OFFSET_MASK);
        assert_eq!(
            (loc.slot(), loc.generation(), loc.offset()),
            (MAX_SLOTS - 1, GEN_MASK, OFFSET_MASK)
        );
        let loc = Loc::new(7, 3, 32);
        assert_eq!((loc.slot(), loc.generation(), loc.offset()), (7, 3, 32));
    }

    #[test]
    fn coarse_expiry_never_says_expired_before_the_exact_expiry() {
        let e = IndexEntry::new(Loc::new(0, 0, 32), 1_500);
        assert!(!e.is_expired(1_499));
        assert!(!e.is_expired(1_999));
        assert!(e.is_expired(2_000));
        assert!(!IndexEntry::new(Loc::new(0, 0, 32), 0).is_expired(u64::MAX));
        // Past 2106 the coarse expiry saturates: never "certainly expired" from memory alone.
        assert!(!IndexEntry::new(Loc::new(0, 0, 32), u64::MAX / 2).is_expired(u64::from(u32::MAX) * 999));
    }

    #[test]
    fn read_frequency_protection_and_confirmed_epoch_do_not_disturb_each_other() {
        let e = IndexEntry::new(Loc::new(0, 0, 32), 0);
        assert!(e.freq() == 0 && !e.protected() && !e.confirmed_in(0) && !e.confirmed_in(1));
        e.confirm(5);
        e.touch(false);
        assert!(e.freq() == 1 && e.confirmed_in(5) && !e.confirmed_in(4));
        // The count saturates: more reads than it holds change nothing around it.
        for _ in 0..10 {
            e.touch(false);
        }
        assert!(e.freq() == FREQ_MAX && !e.protected() && e.confirmed_in(5));
        e.kept_at_eviction(Spend::Nothing, false);
        assert!(e.freq() == FREQ_MAX && e.protected() && e.confirmed_in(5));
        e.kept_at_eviction(Spend::One, false);
        assert!(e.freq() == FREQ_MAX - 1 && e.protected());
        for _ in 0..2 {
            e.kept_at_eviction(Spend::One, false);
        }
        assert!(e.freq() == 0 && e.protected() && !e.kept_unread() && e.confirmed_in(5));
        e.confirm(6);
        assert!(e.protected() && e.confirmed_in(6) && !e.confirmed_in(5));
        // The epoch wraps at 2^27 without touching the flags.
        e.confirm((1 << 27) + 7);
        assert!(e.protected() && e.freq() == 0 && e.was_read() && e.confirmed_in(7));
        assert!(!IndexEntry::with_protection(Loc::new(0, 0, 32), 0, false).protected());
        let protected = IndexEntry::with_protection(Loc::new(0, 0, 32), 0, true);
        assert!(protected.protected() && protected.freq() == 0);
    }

    #[test]
    fn a_young_probationary_entry_is_marked_read_without_counting_and_a_protected_one_counts() {
        let e = IndexEntry::new(Loc::new(0, 0, 32), 0);
        e.confirm(3);
        assert!(!e.was_read());
        e.touch(true);
        assert!(e.was_read() && e.freq() == 0 && e.confirmed_in(3));
        e.touch(false);
        e.touch(true);
        assert!(e.was_read() && e.freq() == 1 && !e.protected());
        // A copy at eviction keeps the mark: it says "read since written".
        e.kept_at_eviction(Spend::One, false);
        assert!(e.was_read() && e.freq() == 0 && e.protected() && e.confirmed_in(3));
        // Protected, its reads count even in the young part.
        e.touch(true);
        assert!(e.freq() == 1);
        let p = IndexEntry::with_protection(Loc::new(0, 0, 32), 0, true);
        p.touch(true);
        assert!(p.was_read() && p.freq() == 1);
    }

    #[test]
    fn an_entry_kept_spending_all_its_reads_is_kept_unread_once_more_before_it_loses_its_protection() {
        let e = IndexEntry::with_protection(Loc::new(0, 0, 32), 0, false);
        for _ in 0..FREQ_MAX {
            e.touch(false);
        }
        e.kept_at_eviction(Spend::All, false);
        assert!(e.freq() == 0 && e.protected() && !e.kept_unread());
        e.kept_at_eviction(Spend::All, false);
        assert!(e.protected() && e.kept_unread());
        e.kept_at_eviction(Spend::All, false);
        assert!(
            !e.protected(),
            "kept unread twice after its reads were spent: probationary"
        );
        assert_eq!(
            [Spend::Nothing, Spend::One, Spend::All].map(|s| s.after(2)),
            [2, 1, 0]
        );
    }

    #[test]
    fn a_protected_entry_kept_unread_twice_in_a_row_loses_its_protection_and_a_read_between_resets_it() {
        let e = IndexEntry::with_protection(Loc::new(0, 0, 32), 0, true);
        e.confirm(9);
        e.kept_at_eviction(Spend::One, false);
        assert!(
            e.protected() && e.kept_unread(),
            "kept unread once: still protected"
        );
        // Read before the next eviction: the next keep counts the read, and starts over.
        e.touch(false);
        e.kept_at_eviction(Spend::One, false);
        assert!(e.protected() && !e.kept_unread() && e.freq() == 0);
        e.kept_at_eviction(Spend::Nothing, false);
        assert!(e.protected() && e.kept_unread());
        e.kept_at_eviction(Spend::Nothing, false);
        assert!(
            !e.protected() && !e.kept_unread(),
            "kept unread twice in a row: probationary"
        );
        assert!(e.freq() == 0 && e.confirmed_in(9));
    }

    #[test]
    fn a_protected_entry_kept_unread_but_read_lately_keeps_its_protection() {
        let e = IndexEntry::with_protection(Loc::new(0, 0, 32), 0, true);
        e.kept_at_eviction(Spend::One, false);
        assert!(e.protected() && e.kept_unread());
        // Kept unread again, but the sketch saw it read: as at a first unread keep.
        e.kept_at_eviction(Spend::One, true);
        assert!(e.protected() && e.kept_unread() && e.freq() == 0);
        e.kept_at_eviction(Spend::One, true);
        assert!(e.protected() && e.kept_unread());
        // Not read lately at the next keep: its protection goes, as before.
        e.kept_at_eviction(Spend::Nothing, false);
        assert!(!e.protected() && !e.kept_unread());
        // A probationary entry kept is made protected whatever the sketch says.
        e.kept_at_eviction(Spend::Nothing, true);
        assert!(e.protected() && !e.kept_unread());
    }

    #[test]
    fn test_hasher_makes_a_group_collide_and_other_keys_not() {
        let h = KeyHasher::default();
        assert_eq!(h.hash("collide/a/1"), h.hash("collide/a/2"));
        assert_ne!(h.hash("collide/a/1"), h.hash("collide/b/1"));
        assert_ne!(h.hash("x"), h.hash("y"));
    }
}
