//! Fills refused lately, held in RAM for a short while: a key read again soon after its fill
//! was refused is served from here instead of missing a second time.
//!
//! # Why
//! Admission refuses a fill that is not worth its room in the log ([`super::admission`],
//! [`super::fillgate`]): the log must not turn for one-off keys. But a refused key is not
//! always a one-off. On the block traces of the ARC set most of the reads the file tier lost to
//! `quick_cache` were second reads of a key whose first fill the closed gate on new keys had
//! refused, within a sixteenth of the capacity's worth of reads (P12 at 5% of its keys, one
//! process: 9,829 such reads hit in `quick_cache` and not here, against 1,207 the other way;
//! another 9,300 at the third and later reads at the same distance). `quick_cache` admits every
//! new key to a small queue, so a key read again soon after its miss is a hit there.
//!
//! A fill written to the log turns it, and that is what the gates avoid. So a refused fill's value
//! is held here, apart from the log, in a FIFO of at most one entry per [`SHARE`] the store holds
//! (and one byte per `SHARE` of its size, and never more than [`MAX_BYTES`]), or [`FLOOR`] in a
//! store of a few hundred entries or fewer (see [`held_entries`]). A read that misses
//! the index looks here; a hit is served and counts as a hit, and nothing is written. A value read
//! while held is recorded as refused again when it leaves the FIFO, so its key's next fill comes in
//! past the checks ([`super::refused`]), as it would have after a second miss: without that, a key
//! read twice in a row and then again later waited for a third fill (cpp at 10%, 0.4 points).
//! Writing held values to the log as soon as they leave, if read (as S3-FIFO moves what its small
//! queue saw read into its main queue), turned the log for them: in a simulation, it lost 4 points
//! on glimpse at 25% and 1 on P12 at 25%.
//!
//! Measured (`examples/trace_cells.rs`, file tier less `quick_cache`, before → after; the harness
//! gives the other caches the FIFO's entries on top of the store's, so it must earn them): P12 at
//! 1, 5, 10 and 25% of its keys +0.2 → +1.1, -2.8 → -1.3, -2.5 → -1.6 and -1.9 → -1.4 (three to
//! five processes); P2 at 10% -1.8 → +0.8; ARC's OLTP at 1% -1.3 → -0.6; web12 at 1% and 5% +1.9 →
//! +2.6 and +0.6 → +1.1; multi2 at 25% -3.0 → -2.3 and cpp at 10% -2.2 → -2.4 (21 processes, within
//! the spread of the seeds); the other cells of the LIRS, cache2k and block traces moved by less
//! than a point, or gained (P2 at 5% +0.3 → +2.5). On `examples/hit_ratios.rs` (one process) the
//! average lead over `quick_cache` went from 0.3 to 0.6 points; the two rows where every entry of
//! capacity counts and nothing is read again soon lost what the other caches gained: a scan into a
//! hot set 1.2 times the capacity -0.8 → -1.2, two loops mixed with zipf at 3,000 entries -2.2 →
//! -3.6.
//!
//! # What it must never do: serve a value that was replaced
//! A held value is a copy of a fill, as an admitted fill's record is, and must go wherever such a
//! record would: every write and delete of the key forgets it (under the writer lock, with the
//! index), as do [`clear`](super::FileStore::clear) and
//! [`mark_all_suspect`](super::FileStore::mark_all_suspect) (a held value is never suspect: it
//! goes with the certainty it was filled under); a value that expired is a miss, but for a stale
//! read in the keep window ([`get_stale`](super::FileStore::get_stale)), to which it is a stale
//! copy as an expired record is (listed by `keys`, removed by a delete: it was dropped at its
//! expiry, and with it the one copy a fail-safe read had of a key whose expired record the
//! fill had replaced); a fill of a key
//! the index holds a live value of is not held but written, whatever the checks said: it
//! replaces that value, which the index would answer with first (a revalidation that found
//! other bytes in L2 fills them, and a refusal left the replaced bytes served; see
//! `lookup::refused_fill`), while an expired entry of the key, a stale copy kept for
//! `get_stale` included, leaves the index for the held fill, which is newer (a stale read went
//! back to it);
//! [`keys`](super::FileStore::keys) lists held keys, so that prefix invalidation reaches them.
//! Nothing here is on disk: a restart starts empty.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::index::ByHash;

/// The FIFO holds at most one entry per `SHARE` entries of the store, and one byte per `SHARE`
/// bytes of its size. Its entries count in the capacity the other caches get when hit ratios
/// are compared (`tests/policy_sim`), so a larger FIFO must earn its room: a 32nd got P12 as
/// close to `quick_cache` as a 64th does, but cost the rows whose working set is a little larger
/// than the capacity, where every entry counts and nothing is read again soon (a scan into a hot
/// set 1.2 times the capacity: -2.1 points against -1.2 with a 64th, -0.8 without the FIFO).
pub(crate) const SHARE: usize = 64;
/// Entries held at least, in a store of `8 * FLOOR` entries or more; a smaller one holds an
/// eighth of its entries (see [`held_entries`]).
pub(crate) const FLOOR: usize = 4;

/// Entries the FIFO holds at most in a store holding `entries`: a 64th, but at least
/// [`FLOOR`] (an eighth in a store of fewer than `8 * FLOOR`); and as many bytes as that many
/// of its entries take on average, where that is more than a 64th of its size. Stores of 256
/// entries and more are not changed by the floor.
///
/// A 64th of a store of a few dozen entries is one value or none, and there, on recency-heavy
/// traces, the second read of a key soon after its refused fill was what the file tier lost to
/// `quick_cache` (cache2k orm-busy at 76 entries, `examples/trace_cells.rs`, file tier less
/// `quick_cache`, median of three processes: -2.86; orm-night at 86, -2.26; web12 at 12 and
/// 26 entries, -2.68 and -3.25). With four held: -0.12, -0.26, +0.49 and +1.91 (the harness
/// gives the other caches the four entries too). Eight gained those cells more, but lost on
/// loops what the other caches' eight more entries bought them (cpp at 60 entries, +0.31 before,
/// -4.18 with eight, -1.51 with four).
pub(crate) fn held_entries(entries: usize) -> usize {
    (entries / SHARE).max((entries / 8).min(FLOOR))
}

/// Bytes held at most, whatever the store's size: a refused fill is worth a second chance, not
/// a second cache. (A store of 512 MiB and more holds less than its 64th.)
const MAX_BYTES: u64 = 8 << 20;
/// RAM an entry takes besides its key and value: the map's slot, the queue's and the boxes'.
const OVERHEAD: u64 = 64;

/// A value held, with the key it belongs to (the map is keyed by hash) and its expiry.
#[derive(Debug)]
struct Held {
    key: Box<str>,
    value: Box<[u8]>,
    /// Unix ms; 0 = never.
    expires_at_ms: u64,
    /// Which push put it there: the queue's older slots for the same hash are stale.
    id: u64,
    /// Read since held.
    read: bool,
}

/// What a held value of `key` counts against the bytes bound.
fn weight(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + OVERHEAD
}

impl Held {
    fn bytes(&self) -> u64 {
        weight(&self.key, &self.value)
    }
}

#[derive(Debug, Default)]
struct Fifo {
    map: ByHash<Held>,
    /// Hash and push id, oldest first; a slot whose id the map no longer has is skipped.
    order: VecDeque<(u64, u64)>,
    bytes: u64,
    next_id: u64,
}

impl Fifo {
    fn remove(&mut self, hash: u64) {
        if let Some(held) = self.map.remove(&hash) {
            self.bytes = self.bytes.saturating_sub(held.bytes());
        }
        // Forgotten slots leave the queue when they reach its front; a queue of mostly
        // forgotten slots is compacted so it stays within twice the map.
        if self.order.len() > 2 * self.map.len() + 64 {
            let map = &self.map;
            self.order
                .retain(|(h, id)| map.get(h).is_some_and(|held| held.id == *id));
        }
    }

    /// Drops the oldest value held; returns its hash if it was read while held.
    fn pop_oldest(&mut self) -> Option<u64> {
        while let Some((hash, id)) = self.order.pop_front() {
            if let Some(read) = self
                .map
                .get(&hash)
                .filter(|held| held.id == id)
                .map(|held| held.read)
            {
                self.remove(hash);
                return read.then_some(hash);
            }
        }
        None
    }
}

/// The values of fills refused lately (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Stash {
    fifo: Mutex<Fifo>,
    /// Entries held: a read that misses the index takes the lock only if there are any.
    len: AtomicUsize,
}

/// A moment (Unix ms) and the keep window then: a value that expired less than `keep_ms` ago
/// is a stale copy a stale read answers (see [`FileStoreOptions::keep_expired`]).
///
/// [`FileStoreOptions::keep_expired`]: super::FileStoreOptions::keep_expired
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Moment {
    pub(crate) now_ms: u64,
    pub(crate) keep_ms: u64,
}

impl Moment {
    /// Whether a value expiring at `expires_at_ms` (0 = never) is live or in the keep window.
    fn kept(self, expires_at_ms: u64) -> bool {
        expires_at_ms == 0 || self.now_ms < expires_at_ms.saturating_add(self.keep_ms)
    }
}

/// What a read found held: the value and its expiry (Unix ms, 0 = never).
pub(crate) struct Found {
    pub(crate) value: Vec<u8>,
    pub(crate) expires_at_ms: u64,
}

impl Stash {
    /// Holds a refused fill of `key` (hash `hash`), in a store holding `entries` of at most
    /// `max_bytes`: the oldest values held make room for it, and `read_out` is called with the
    /// hash of each of those that was read while held. A value too large for the bound is not
    /// held, but still displaces what was held for the key: that is older, and a newer fill
    /// refused must not leave it readable. Under the writer lock.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hold(
        &self,
        hash: u64,
        key: &str,
        value: &[u8],
        expires_at_ms: u64,
        entries: usize,
        max_bytes: u64,
        mut read_out: impl FnMut(u64),
    ) {
        let max_entries = held_entries(entries);
        let max_bytes = (max_bytes / SHARE as u64)
            .max(max_bytes.saturating_mul(max_entries as u64) / entries.max(1) as u64)
            .min(MAX_BYTES);
        if max_entries == 0 || weight(key, value) > max_bytes {
            // Not held; an older held value of the key goes all the same (this fill is newer).
            // Checked before the copy, which may be of up to a segment's size.
            let mut fifo = self.fifo.lock();
            fifo.remove(hash);
            self.len.store(fifo.map.len(), Ordering::Relaxed);
            return;
        }
        // Copied before the lock is taken, so readers of other held values do not wait on it.
        let held = Held {
            key: key.into(),
            value: value.into(),
            expires_at_ms,
            id: 0,
            read: false,
        };
        let mut fifo = self.fifo.lock();
        fifo.remove(hash);
        while fifo.map.len() >= max_entries || fifo.bytes + held.bytes() > max_bytes {
            if fifo.map.is_empty() {
                break;
            }
            if let Some(read) = fifo.pop_oldest() {
                read_out(read);
            }
        }
        let id = fifo.next_id;
        fifo.next_id += 1;
        fifo.bytes += held.bytes();
        fifo.order.push_back((hash, id));
        fifo.map.insert(hash, Held { id, ..held });
        self.len.store(fifo.map.len(), Ordering::Relaxed);
    }

    /// Whether nothing is held (a relaxed load).
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// The value held for `key` (hash `hash`), unless it expired by `at.now_ms`: then only for a
    /// stale read (`stale_too`) while it is in the keep window, as a record is, and dropped once
    /// it has left it. `counts`: the read counts as one (see `refused`); a stale read for
    /// fail-safe or a check that the key is there does not.
    pub(crate) fn get(
        &self,
        hash: u64,
        key: &str,
        at: Moment,
        stale_too: bool,
        counts: bool,
    ) -> Option<Found> {
        self.with_held(hash, key, at, (stale_too, counts), |held| Found {
            value: held.value.to_vec(),
            expires_at_ms: held.expires_at_ms,
        })
    }

    /// Whether [`get`](Self::get) would find a value, not counted as a read: a check that the
    /// key is there copies no value out.
    pub(crate) fn holds(&self, hash: u64, key: &str, at: Moment, stale_too: bool) -> bool {
        self.with_held(hash, key, at, (stale_too, false), |_| ())
            .is_some()
    }

    /// `found(held)` of the value [`get`](Self::get) would answer, under the lock.
    fn with_held<R>(
        &self,
        hash: u64,
        key: &str,
        at: Moment,
        (stale_too, counts): (bool, bool),
        found: impl FnOnce(&Held) -> R,
    ) -> Option<R> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut fifo = self.fifo.lock();
        let held = fifo.map.get_mut(&hash).filter(|held| &*held.key == key)?;
        if !at.kept(held.expires_at_ms) {
            fifo.remove(hash);
            self.len.store(fifo.map.len(), Ordering::Relaxed);
            return None;
        }
        if !stale_too && held.expires_at_ms != 0 && at.now_ms >= held.expires_at_ms {
            return None;
        }
        held.read |= counts;
        Some(found(held))
    }

    /// Forgets what is held for `hash`: its key was written or deleted. Under the writer lock.
    /// Returns whether a value live or in the keep window at `at` was held (a delete reports
    /// what it removed, and a value expired longer ago is not one, as for a record in the log).
    pub(crate) fn forget(&self, hash: u64, at: Moment) -> bool {
        if self.len.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut fifo = self.fifo.lock();
        let held = fifo
            .map
            .get(&hash)
            .is_some_and(|held| at.kept(held.expires_at_ms));
        fifo.remove(hash);
        self.len.store(fifo.map.len(), Ordering::Relaxed);
        held
    }

    /// Forgets everything held.
    pub(crate) fn clear(&self) {
        let mut fifo = self.fifo.lock();
        *fifo = Fifo::default();
        self.len.store(0, Ordering::Relaxed);
    }

    /// The keys held that are live or in the keep window at `at`: a stale read answers those.
    pub(crate) fn keys(&self, at: Moment) -> Vec<String> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let fifo = self.fifo.lock();
        fifo.map
            .values()
            .filter(|held| at.kept(held.expires_at_ms))
            .map(|held| held.key.to_string())
            .collect()
    }

    /// Entries and bytes (keys, values and their overhead) held.
    pub(crate) fn size(&self) -> (u64, u64) {
        let fifo = self.fifo.lock();
        (fifo.map.len() as u64, fifo.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::local::file::admission::tests::{filled_and_read_thrice, in_log};
    use crate::local::file::{Durability, FileStore, FileStoreOptions};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::Duration;

    /// `now_ms`, with no keep window.
    fn at(now_ms: u64) -> Moment {
        Moment { now_ms, keep_ms: 0 }
    }

    /// A full store of 1 MiB (about 250 entries of 4,000 bytes, so 3 held at most) whose every
    /// entry was read three times, on `clock`: fills of new keys are refused against them.
    fn full_store(dir: &std::path::Path, clock: &ManualClock) -> (FileStore, Vec<u8>) {
        let options = FileStoreOptions::default()
            .max_size_mb(1)
            .durability(Durability::None)
            .background_threads(false)
            .clock(Arc::new(clock.clone()));
        filled_and_read_thrice(FileStore::open(dir, options).unwrap())
    }

    /// A key read once (a miss) whose fill of `value` was refused and is held; `tag` names it.
    fn held_key(store: &FileStore, tag: &str, value: &[u8], ttl: Option<Duration>) -> String {
        (0..1_000)
            .map(|j| format!("{tag}{j}"))
            .find(|key| {
                assert!(store.get(key).unwrap().is_none());
                !store.fill(key, value, ttl).unwrap()
            })
            .expect("a fill refused against entries read thrice")
    }

    #[test]
    fn a_refused_fill_is_read_from_ram_and_listed_but_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let (store, value) = full_store(dir.path(), &clock);
        let key = held_key(&store, "new", &value, None);
        assert!(!in_log(&store, &key), "a refused fill writes nothing");
        assert_eq!(store.get(&key).unwrap(), Some(value.clone()));
        assert!(store.contains(&key));
        let (entry, freshness) = store.get_checked(&key).unwrap().unwrap();
        assert_eq!((entry.value, entry.expires_at), (value.clone(), None));
        assert_eq!(freshness, crate::storage::Freshness::Trusted);
        assert!(store.keys().contains(&key));
        let by_prefix = crate::storage::LocalStorage::keys_with_prefix(&store, "new").unwrap();
        assert!(
            by_prefix.unwrap_or_default().contains(&key),
            "prefix invalidation must find it"
        );
        let stats = store.stats();
        assert_eq!(stats.held_fills, 1);
        assert!(stats.held_fill_bytes >= value.len() as u64);
        assert_eq!(stats.live_items as usize, store.inner.index.len());
        // Gone after a restart: nothing of it is on disk.
        store.close().unwrap();
        let options = FileStoreOptions::default()
            .max_size_mb(1)
            .background_threads(false);
        let reopened = FileStore::open(dir.path(), options).unwrap();
        assert!(reopened.get(&key).unwrap().is_none());
    }

    #[test]
    fn no_older_value_of_a_held_key_is_readable_after_a_write_a_delete_a_clear_or_a_loss_of_certainty() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let (store, value) = full_store(dir.path(), &clock);
        // Overwritten, then deleted: the held value must not come back from behind either.
        let key = held_key(&store, "set", &value, None);
        store.set(&key, b"newer", None).unwrap();
        assert_eq!(store.get(&key).unwrap(), Some(b"newer".to_vec()));
        assert!(store.delete(&key).unwrap());
        assert!(store.get(&key).unwrap().is_none());
        assert!(!store.contains(&key));
        // Deleted while only held: the delete reports it, and it is gone.
        let key = held_key(&store, "del", &value, None);
        assert!(store.delete(&key).unwrap());
        assert!(store.get(&key).unwrap().is_none() && !store.keys().contains(&key));
        assert!(!store.delete(&key).unwrap());
        // Its TTL ends: a miss, as an expired record is.
        let key = held_key(&store, "ttl", &value, Some(Duration::from_secs(5)));
        assert!(store.get(&key).unwrap().is_some());
        clock.advance(Duration::from_secs(5));
        assert!(store.get(&key).unwrap().is_none());
        assert!(store.get_stale(&key).unwrap().is_none());
        // Marked suspect: a held value cannot be confirmed, so it goes.
        let key = held_key(&store, "suspect", &value, None);
        store.mark_all_suspect();
        assert!(store.get(&key).unwrap().is_none());
        // Cleared.
        let key = held_key(&store, "clear", &value, None);
        store.clear().unwrap();
        assert!(store.get(&key).unwrap().is_none());
        assert_eq!(store.stats().held_fills, 0);
    }

    #[test]
    fn once_a_delete_returns_no_reader_gets_the_held_value() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let (store, value) = full_store(dir.path(), &clock);
        let store = Arc::new(store);
        for round in 0..20 {
            let key = held_key(&store, &format!("race{round}-"), &value, None);
            let deleted = Arc::new(AtomicBool::new(false));
            let readers: Vec<_> = (0..3)
                .map(|_| {
                    let (store, key, deleted) = (Arc::clone(&store), key.clone(), Arc::clone(&deleted));
                    std::thread::spawn(move || {
                        let mut after = 0;
                        while after < 200 {
                            let was_deleted = deleted.load(Ordering::SeqCst);
                            let got = store.get(&key).unwrap();
                            if was_deleted {
                                assert!(got.is_none(), "{key}: held value read after its delete returned");
                                after += 1;
                            }
                        }
                    })
                })
                .collect();
            assert!(store.delete(&key).unwrap());
            deleted.store(true, Ordering::SeqCst);
            for reader in readers {
                reader.join().unwrap();
            }
        }
    }

    #[test]
    fn the_oldest_values_held_make_room_and_a_bound_of_zero_holds_nothing() {
        // A store of 1,024 entries: a 64th, sixteen, held at most.
        let stash = Stash::default();
        for i in 0..20u64 {
            stash.hold(i, &format!("k{i}"), b"v", 0, 1024, 1 << 20, |_| {});
        }
        assert_eq!(stash.size().0, 16);
        assert!((0..4).all(|i| stash.get(i, &format!("k{i}"), at(0), false, true).is_none()));
        assert_eq!(
            stash.get(19, "k19", at(0), false, true).map(|f| f.value),
            Some(b"v".to_vec())
        );
        // A store of 192 entries: four, more than its 64th (see `held_entries`).
        let small = Stash::default();
        for i in 0..10u64 {
            small.hold(i, &format!("k{i}"), b"v", 0, 192, 1 << 20, |_| {});
        }
        assert_eq!(small.size().0, 4);
        // A store of 24 entries: an eighth, three.
        let smaller = Stash::default();
        for i in 0..10u64 {
            smaller.hold(i, &format!("k{i}"), b"v", 0, 24, 1 << 20, |_| {});
        }
        assert_eq!(smaller.size().0, 3);
        // A store of fewer than eight entries holds nothing.
        let tiny = Stash::default();
        tiny.hold(1, "k1", b"v", 0, 7, 1 << 20, |_| {});
        assert_eq!(tiny.size().0, 0);
    }

    #[test]
    fn a_small_store_holds_as_many_bytes_as_its_entries_take() {
        // 100 entries in 1 MiB: four held of about 10 KiB each, though a 64th of the bytes
        // (16 KiB) is one.
        let stash = Stash::default();
        let value = vec![7u8; 10_000];
        for i in 0..10u64 {
            stash.hold(i, &format!("k{i}"), &value, 0, 100, 1 << 20, |_| {});
        }
        assert_eq!(stash.size().0, 4);
    }

    #[test]
    fn bytes_bound_what_is_held_and_a_value_too_large_is_not_held() {
        let stash = Stash::default();
        // 64 KiB of store: 1 KiB held at most.
        stash.hold(1, "a", &[0; 900], 0, 1 << 20, 64 << 10, |_| {});
        stash.hold(2, "b", &[0; 900], 0, 1 << 20, 64 << 10, |_| {});
        assert!(
            stash.get(1, "a", at(0), false, true).is_none(),
            "the older value made room"
        );
        assert!(stash.get(2, "b", at(0), false, true).is_some());
        stash.hold(3, "c", &[0; 2_000], 0, 1 << 20, 64 << 10, |_| {});
        assert!(stash.get(3, "c", at(0), false, true).is_none());
        assert!(
            stash.get(2, "b", at(0), false, true).is_some(),
            "a value too large takes nothing's room"
        );
        // A newer fill of a held key, too large to hold: the older value goes all the same.
        stash.hold(2, "b", &[1; 2_000], 0, 1 << 20, 64 << 10, |_| {});
        assert!(
            stash.get(2, "b", at(0), false, true).is_none(),
            "the older value outlived a newer fill"
        );
        assert_eq!(stash.size(), (0, 0));
    }

    #[test]
    fn forgetting_an_expired_held_value_reports_nothing_removed() {
        let stash = Stash::default();
        stash.hold(7, "k", b"v", 1_000, 1 << 10, 1 << 20, |_| {});
        assert!(
            !stash.forget(7, at(1_000)),
            "expired at 1,000: nothing live was held"
        );
        stash.hold(7, "k", b"v", 1_000, 1 << 10, 1 << 20, |_| {});
        assert!(stash.forget(7, at(999)));
        assert_eq!(stash.size().0, 0);
    }

    #[test]
    fn a_held_value_is_found_by_its_key_only_until_it_expires_or_is_forgotten() {
        let stash = Stash::default();
        stash.hold(7, "k", b"v", 1_000, 1 << 10, 1 << 20, |_| {});
        // Same hash, another key: a miss.
        assert!(stash.get(7, "other", at(0), false, true).is_none());
        let found = stash
            .get(7, "k", at(999), false, true)
            .map(|f| (f.value, f.expires_at_ms));
        assert_eq!(found, Some((b"v".to_vec(), 1_000)));
        assert_eq!(stash.keys(at(999)), ["k"]);
        assert!(stash.keys(at(1_000)).is_empty());
        assert!(stash.get(7, "k", at(1_000), false, true).is_none());
        assert_eq!(stash.size().0, 0, "an expired value found is dropped");
        stash.hold(8, "k8", b"v", 0, 1 << 10, 1 << 20, |_| {});
        assert!(stash.forget(8, at(0)));
        assert!(stash.get(8, "k8", at(0), false, true).is_none());
        stash.hold(9, "k9", b"v", 0, 1 << 10, 1 << 20, |_| {});
        stash.clear();
        assert!(stash.get(9, "k9", at(0), false, true).is_none() && stash.keys(at(0)).is_empty());
    }

    #[test]
    fn a_key_held_again_keeps_one_entry_and_forgotten_slots_do_not_pile_up() {
        let stash = Stash::default();
        for round in 0..1_000u64 {
            stash.hold(1, "k", &round.to_le_bytes(), 0, 1 << 10, 1 << 20, |_| {});
            stash.hold(2 + round, "x", b"v", 0, 1 << 10, 1 << 20, |_| {});
            stash.forget(2 + round, at(0));
        }
        assert_eq!(stash.size().0, 1);
        assert_eq!(
            stash.get(1, "k", at(0), false, true).map(|f| f.value),
            Some(999u64.to_le_bytes().to_vec())
        );
        assert!(stash.fifo.lock().order.len() <= 2 + 64);
    }
    #[test]
    fn a_fill_over_an_older_live_value_of_its_key_replaces_it_whatever_the_checks_say() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let (store, value) = full_store(dir.path(), &clock);
        // Keys written by a set, each then filled with a newer value, as a revalidation that
        // found other bytes in L2 fills it: against entries read thrice, the checks refuse
        // most of these fills, and a refused one left the older value answering reads.
        let newer = vec![9u8; value.len()];
        let keys: Vec<String> = (0..100).map(|j| format!("old{j}")).collect();
        for key in &keys {
            store.set(key, &value, None).unwrap();
            assert!(store.fill(key, &newer, None).unwrap(), "{key}: not written");
            let got = store.get(key).unwrap();
            assert!(
                got.as_ref() == Some(&newer),
                "{key}: the value the fill replaced is read"
            );
        }
        // Written, not held: the newer value is what a reopen finds too.
        store.close().unwrap();
        let options = FileStoreOptions::default()
            .max_size_mb(1)
            .background_threads(false);
        let reopened = FileStore::open(dir.path(), options).unwrap();
        for key in &keys {
            let got = reopened.get(key).unwrap();
            assert!(
                got.is_none() || got.as_ref() == Some(&newer),
                "{key}: older value after a reopen"
            );
        }
    }

    #[test]
    fn an_expired_value_is_kept_for_stale_reads_in_the_keep_window_only() {
        let stash = Stash::default();
        stash.hold(7, "k", b"v", 1_000, 1 << 10, 1 << 20, |_| {});
        let at = |now_ms| Moment { now_ms, keep_ms: 500 };
        assert!(
            stash.get(7, "k", at(1_000), false, true).is_none(),
            "expired: a miss"
        );
        let stale = stash.get(7, "k", at(1_499), true, false).map(|f| f.expires_at_ms);
        assert_eq!(stale, Some(1_000), "a stale copy in the window");
        assert_eq!(stash.keys(at(1_499)), ["k"]);
        assert!(stash.keys(at(1_500)).is_empty());
        assert!(stash.get(7, "k", at(1_500), true, false).is_none());
        assert_eq!(stash.size().0, 0, "dropped once out of the window");
        stash.hold(7, "k", b"v", 1_000, 1 << 10, 1 << 20, |_| {});
        assert!(stash.forget(7, at(1_499)), "a stale copy is removed");
    }
}
