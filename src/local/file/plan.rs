//! Listing the next eviction's entries ahead of it, on a thread of its own, so that the write
//! that makes the store evict does not wait for a read of the whole segment.
//!
//! An eviction weighs every live entry of the oldest segment (see `maintenance`). Finding them
//! means reading the segment from end to end: each record's header, key and CRC, a hash of the
//! key, an index lookup. Under the writer lock, that was about half of what the evicting write
//! waited: 7 of 15 ms with 4 KiB values in 32 MiB segments (mostly page faults of the map),
//! 44 of 79 ms with 200-byte values (140,000 records). The planner thread lists them as soon as
//! a segment becomes the next to go, while writes go on; the eviction then only looks each
//! listed entry up again (0.4 and 10 ms there).
//!
//! Why a list made early is still the right one: a sealed segment never gains a live entry.
//! Writes and copies go to the active segment, a delete or an overwrite points the key
//! elsewhere, and compaction removes the whole segment; an entry the index does not point at
//! when the list is made is never pointed at again. So the listed entries that the index still
//! points at when the eviction comes are exactly what a read of the segment would find then.
//! Everything the choice depends on that can change is taken at the eviction, as without a
//! plan: the entry's reads and protection, its expiry against the clock, and whether the tier
//! in front holds the key (asked with the key read from the map, where a tier is attached). So
//! an eviction on a plan keeps and drops what one without would.
//!
//! A plan takes 32 bytes per live record of one segment (256 KiB for 32 MiB of 4 KiB values,
//! 4.5 MiB for 200-byte ones): the same list an eviction without one builds, held from the
//! listing to the eviction. Plans are only made while the store is within two segments of its
//! bound, where an eviction is coming. Without the thread (a store opened without background
//! work), or when the eviction comes before the list is done, the eviction reads the segment
//! itself, as it always did.
//!
//! What is left of the wait, with 4 KiB values: the keep-or-drop pass (about 2 ms) and freeing
//! the evicted file, 8 to 10 ms for 32 MiB (the kernel drops its pages and blocks at the last
//! close). Freeing it on another thread was tried, counting the segment against the bound
//! until freed (a roll, where the files grow, waited for it): the bound held, but the kernel's
//! freeing then slowed the writes that followed, so the top-20 mean fell by only 1 to 5 ms while
//! the writes over 2 ms doubled and the slowest write got slower. With 200-byte values the pass
//! is most of it: one index lookup per entry that misses the CPU caches.

use std::sync::Arc;
#[cfg(test)]
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::index::Loc;
use crate::shutdown::Shutdown;

/// How many records a listing reads between checks that its segment is still wanted, so that
/// one made useless by an eviction (or the store closing) stops within a few milliseconds and
/// lets go of the segment's map.
pub(super) const CHECK_EVERY: usize = 4096;

/// One value record of a segment, as a read of the segment finds it (a plan keeps the live ones).
#[derive(Debug, Clone, Copy)]
pub(super) struct Listed {
    pub(super) hash: u64,
    pub(super) loc: Loc,
    /// Bytes of the record.
    pub(super) len: u32,
    /// When the record's value expires, in ms since the epoch; 0 for never.
    pub(super) expires_at_ms: u64,
}

/// The live entries of one sealed segment, in log order.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) segment: u64,
    pub(super) entries: Vec<Listed>,
}

/// What the planner thread is asked to list, and what it listed.
#[derive(Debug, Default)]
pub(crate) struct Planner {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The segment to list next, or being listed.
    wanted: Option<u64>,
    ready: Option<Arc<Plan>>,
}

impl Planner {
    /// Asks for the plan of `segment`, unless it is ready or asked for already. A plan of
    /// another segment is dropped: only the oldest segment is evicted, and its RAM is better
    /// given back.
    pub(super) fn request(&self, segment: u64) {
        let mut state = self.state.lock();
        let ready = state.ready.as_ref().is_some_and(|p| p.segment == segment);
        if ready || state.wanted == Some(segment) {
            return;
        }
        state.ready = None;
        state.wanted = Some(segment);
        self.changed.notify_all();
    }

    /// Drops the plan of `segment`, removed from the store, and stops a listing of it.
    pub(super) fn forget(&self, segment: u64) {
        let mut state = self.state.lock();
        if state.wanted == Some(segment) {
            state.wanted = None;
        }
        if state.ready.as_ref().is_some_and(|p| p.segment == segment) {
            state.ready = None;
        }
    }

    /// The plan of `segment`, if it is ready.
    pub(super) fn ready_for(&self, segment: u64) -> Option<Arc<Plan>> {
        self.state
            .lock()
            .ready
            .as_ref()
            .filter(|p| p.segment == segment)
            .map(Arc::clone)
    }

    /// Whether `segment` is still the one to list: a listing stops once it is not.
    pub(super) fn still_wanted(&self, segment: u64) -> bool {
        self.state.lock().wanted == Some(segment)
    }

    /// Waits for a segment to list; `None` once `shutdown` fired. The segment stays wanted
    /// until [`Planner::finish`], so a new request meanwhile makes the listing stop.
    pub(super) fn next(&self, shutdown: &Shutdown) -> Option<u64> {
        let mut state = self.state.lock();
        loop {
            // Checked under the lock that `wake` takes: a fire between the check and the wait
            // finds the thread waiting.
            if shutdown.is_fired() {
                return None;
            }
            if let Some(segment) = state.wanted {
                return Some(segment);
            }
            self.changed.wait(&mut state);
        }
    }

    /// Keeps `plan` if its segment is still wanted; `None` stores nothing (the segment had no
    /// live entry's slot, or is gone) but ends the request all the same.
    pub(super) fn finish(&self, segment: u64, plan: Option<Plan>) {
        let mut state = self.state.lock();
        if state.wanted != Some(segment) {
            return;
        }
        state.wanted = None;
        state.ready = plan.map(Arc::new);
        self.changed.notify_all();
    }

    /// Wakes the planner thread (registered with the store's shutdown).
    pub(super) fn wake(&self) {
        let _state = self.state.lock();
        self.changed.notify_all();
    }

    /// Waits until the plan of `segment` is ready (tests), at most `timeout`.
    #[cfg(test)]
    pub(super) fn wait_ready(&self, segment: u64, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut state = self.state.lock();
        loop {
            if state.ready.as_ref().is_some_and(|p| p.segment == segment) {
                return true;
            }
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                return state.ready.as_ref().is_some_and(|p| p.segment == segment);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    use super::{Plan, Planner};
    use crate::{Durability, FileStore, FileStoreOptions, ManualClock};

    const KEYS: usize = 2_000;

    fn value(key: usize, round: u8) -> Vec<u8> {
        let mut v = vec![round; 1_000];
        v.extend_from_slice(format!("k{key}").as_bytes());
        v
    }

    fn options(clock: &ManualClock) -> FileStoreOptions {
        FileStoreOptions::default()
            .max_size_mb(1)
            .segment_size(64 * 1024)
            .durability(Durability::None)
            // The compactor thread stays out of the way, so that each eviction meets what the
            // test set up.
            .compaction_interval(Duration::from_secs(3_600))
            .clock(Arc::new(clock.clone()))
    }

    fn open(dir: &std::path::Path, clock: &ManualClock, plans: bool) -> FileStore {
        open_with(dir, options(clock), plans)
    }

    fn open_with(dir: &std::path::Path, options: FileStoreOptions, plans: bool) -> FileStore {
        let store = FileStore::open(dir, options).unwrap();
        store.inner.test_no_plans.store(!plans, Ordering::Relaxed);
        store
    }

    fn oldest(store: &FileStore) -> u64 {
        *store.inner.segments.read().keys().next().unwrap()
    }

    /// Writes keys from `k0` on (the first `expiring` of them with a TTL of a second) until the
    /// first roll within two segments of the bound, which asks for the plan of the oldest
    /// segment; waits for that plan if the store makes plans. Returns the segment and the next
    /// key to write.
    fn fill_until_planned(store: &FileStore, expiring: usize) -> (u64, usize) {
        let mut next = 0;
        while store.stats().disk_bytes + 2 * 64 * 1024 < 1 << 20 {
            let ttl = (next < expiring).then_some(Duration::from_secs(1));
            store.set(&format!("k{next}"), &value(next, 0), ttl).unwrap();
            next += 1;
        }
        let segments = store.stats().segments;
        while store.stats().segments == segments {
            store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
            next += 1;
        }
        let first = oldest(store);
        if !store.inner.test_no_plans.load(Ordering::Relaxed) {
            assert!(
                store.inner.planner.wait_ready(first, Duration::from_secs(30)),
                "no plan of segment {first} was made"
            );
        }
        (first, next)
    }

    /// Everything a reader could see of the keys the test wrote.
    fn contents(store: &FileStore) -> Vec<Option<Vec<u8>>> {
        (0..KEYS)
            .map(|k| store.get(&format!("k{k}")).unwrap().map(|v| v.to_vec()))
            .collect()
    }

    #[test]
    fn an_eviction_on_a_plan_keeps_and_drops_what_a_read_of_its_segment_would() {
        let mut outcomes = Vec::new();
        for plans in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(1_000_000);
            let store = open(dir.path(), &clock, plans);
            // Keys 0..2 expire after a second.
            let (first, mut next) = fill_until_planned(&store, 2);
            // About 60 keys, all protected (written while the store filled up): an eviction
            // copies thirteen sixteenths of them, the oldest first within a rank.
            let keys: Vec<usize> = store.inner.segments.read()[&first]
                .records()
                .filter_map(|r| r.record.key.strip_prefix('k')?.parse().ok())
                .collect();
            assert!(keys.len() > 40, "{} keys in the first segment", keys.len());
            let (deleted, rewritten, read) = (&keys[2..4], &keys[4..6], &keys[keys.len() - 10..]);
            // After the listing: the eviction must weigh them as they are now, not as listed.
            // The last ten are read, so they rank above the unread ones listed before them.
            clock.advance(Duration::from_secs(2));
            for k in read {
                for _ in 0..2 {
                    assert!(store.get(&format!("k{k}")).unwrap().is_some(), "k{k}");
                }
            }
            for k in deleted {
                assert!(store.delete(&format!("k{k}")).unwrap());
            }
            for &k in rewritten {
                store.set(&format!("k{k}"), &value(k, 1), None).unwrap();
            }
            while store.stats().evictions == 0 {
                assert!(next < KEYS, "no eviction after {KEYS} keys");
                store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
                next += 1;
            }
            assert!(
                !store.inner.segments.read().contains_key(&first),
                "segment {first} outlived the eviction"
            );
            let stats = store.stats();
            assert_eq!(stats.planned_evictions > 0, plans, "{stats:?}");
            let seen = contents(&store);
            assert_eq!(seen[..2], [None, None], "k0 and k1 expired before the eviction");
            for &k in deleted {
                assert_eq!(seen[k], None, "k{k} was deleted");
            }
            for &k in rewritten {
                assert_eq!(seen[k], Some(value(k, 1)), "k{k} lost its newer value");
            }
            for &k in read {
                assert_eq!(
                    seen[k],
                    Some(value(k, 0)),
                    "k{k}, read after the listing, was not kept"
                );
            }
            let dropped = keys.iter().filter(|&&k| seen[k].is_none()).count();
            assert!(
                dropped > 4,
                "the eviction dropped only {dropped} keys of the segment"
            );
            outcomes.push((seen, stats.evictions, stats.second_chances, stats.live_items));
            store.close().unwrap();
        }
        assert!(
            outcomes[0] == outcomes[1],
            "a plan changed what the eviction kept"
        );
    }

    /// Writes `k{key}` with a value that names its key and version, so a reader can check it.
    fn versioned(key: usize, version: usize) -> Vec<u8> {
        let mut v = format!("k{key}:{version}:").into_bytes();
        v.resize(200 + (key * 31 + version) % 600, b'v');
        v
    }

    #[test]
    fn evictions_on_plans_under_racing_writers_and_readers_lose_nothing_and_bring_nothing_back() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        // Segments a tenth dead are compacted: the racing compactions find some.
        let options = || options(&clock).min_live_ratio(0.9);
        let store = Arc::new(open_with(dir.path(), options(), true));
        // Half the keys' values take more than the bound: evictions drop live entries.
        const OWN: usize = 1_500;
        // Fill until the first segment is evicted, then wait for the plan of the next one to
        // go, so that at least the first eviction under the racing threads runs on one.
        store.set("k0", &versioned(0, 0), None).unwrap();
        let first = oldest(&store);
        let mut version = 0;
        while oldest(&store) == first {
            version += 1;
            store
                .set(
                    &format!("k{}", version % (2 * OWN)),
                    &versioned(version % (2 * OWN), version),
                    None,
                )
                .unwrap();
        }
        assert!(
            store
                .inner
                .planner
                .wait_ready(oldest(&store), Duration::from_secs(30)),
            "no plan was made"
        );
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Compaction removes segments too, the one a plan is for among them.
        let compactor = {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rewritten = 0;
                while !done.load(Ordering::SeqCst) {
                    rewritten += store.compact().unwrap().segments_rewritten;
                }
                rewritten
            })
        };
        // Each writer owns half the keys, so its own record of their latest state is exact.
        let writers: Vec<_> = (0..2)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut latest = vec![None; 2 * OWN];
                    for n in 0..8_000 {
                        let key = 2 * ((n * 7919) % OWN) + t;
                        if n % 13 == 0 {
                            store.delete(&format!("k{key}")).unwrap();
                            latest[key] = None;
                        } else {
                            let value = versioned(key, 1_000_000 + n);
                            store.set(&format!("k{key}"), &value, None).unwrap();
                            latest[key] = Some(value);
                        }
                    }
                    latest
                })
            })
            .collect();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, done) = (Arc::clone(&store), Arc::clone(&done));
                std::thread::spawn(move || {
                    let mut hits = 0;
                    let mut n = 0;
                    while !done.load(Ordering::SeqCst) {
                        n += 1;
                        let key = n % (2 * OWN);
                        if let Some(v) = store.get(&format!("k{key}")).unwrap() {
                            let text = String::from_utf8(v.to_vec()).unwrap();
                            let version: usize = text.split(':').nth(1).unwrap().parse().unwrap();
                            assert_eq!(v.to_vec(), versioned(key, version), "k{key}");
                            hits += 1;
                        }
                    }
                    hits
                })
            })
            .collect();
        let latest: Vec<Vec<Option<Vec<u8>>>> = writers.into_iter().map(|w| w.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        let hits: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(hits > 0, "the readers checked nothing");
        assert!(compactor.join().unwrap() > 0, "compaction rewrote nothing");
        // An entry an eviction missed would still point into the segment it removed.
        let dangling = store
            .inner
            .index
            .iter()
            .filter(|e| store.inner.slots.read().get(e.value().loc).is_none())
            .count();
        assert_eq!(dangling, 0, "index entries point into removed segments");
        let stats = store.stats();
        assert!(stats.planned_evictions > 0 && stats.evictions > 0, "{stats:?}");
        // Bytes of entries an eviction missed stay counted as live after their segment went.
        assert!(stats.live_bytes <= stats.disk_bytes, "{stats:?}");
        assert!(stats.disk_bytes <= 1 << 20, "{stats:?}");
        let check = |store: &FileStore| {
            let mut found = 0;
            for key in 0..2 * OWN {
                let want = &latest[key % 2][key];
                match (want, store.get(&format!("k{key}")).unwrap()) {
                    (None, Some(_)) => panic!("deleted k{key} came back"),
                    (Some(want), Some(got)) => {
                        assert_eq!(&got.to_vec(), want, "k{key} has an older value");
                        found += 1;
                    }
                    _ => {} // evicted, or deleted
                }
            }
            assert_eq!(
                found,
                store.stats().live_items,
                "entries the store counts but cannot read"
            );
        };
        check(&store);
        Arc::into_inner(store).unwrap().close().unwrap();
        let reopened = open_with(dir.path(), options(), true);
        check(&reopened);
        assert!(reopened.verify(|_, _| {}).unwrap().is_clean());
    }

    /// A tier in front whose keys the test sets.
    #[derive(Debug, Default)]
    struct Tier(parking_lot::Mutex<std::collections::HashSet<String>>);

    impl crate::storage::TierAbove for Tier {
        fn holds(&self, key: &str) -> bool {
            self.0.lock().contains(key)
        }
    }

    #[test]
    fn a_key_the_tier_in_front_took_after_the_listing_is_kept_by_the_eviction() {
        use crate::storage::LocalStorage;
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let store = open(dir.path(), &clock, true);
        let tier = Arc::new(Tier::default());
        store.watch_tier_above(Arc::clone(&tier) as Arc<dyn crate::storage::TierAbove>);
        let (first, mut next) = fill_until_planned(&store, 0);
        // The last ten keys of the segment, never read here: only the tier's word keeps them
        // ahead of the thirteen sixteenths listed before them.
        let keys: Vec<String> = store.inner.segments.read()[&first]
            .records()
            .map(|r| r.record.key.to_owned())
            .collect();
        let held = &keys[keys.len() - 10..];
        tier.0.lock().extend(held.iter().cloned());
        // Read once, so the store counts as being read (unread entries are then worth copying).
        assert!(store.get(&keys[0]).unwrap().is_some());
        while store.inner.segments.read().contains_key(&first) {
            store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
            next += 1;
        }
        assert_eq!(store.stats().planned_evictions, 1);
        for key in held {
            assert!(
                store.get(key).unwrap().is_some(),
                "{key}, held by the tier in front, was evicted"
            );
        }
        let dropped = keys.iter().filter(|k| store.get(k).unwrap().is_none()).count();
        assert!(
            dropped > 4,
            "the eviction dropped only {dropped} keys of the segment"
        );
    }

    /// The size bound removes the oldest segment with whatever damage it holds, where neither
    /// `verify` nor a read can find it any more: the eviction counts it, from its own read of the
    /// segment or from the planner's.
    #[test]
    fn an_eviction_counts_the_damaged_ranges_it_drops_with_its_segment_planned_or_not() {
        for plans in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(1_000_000);
            let store = open(dir.path(), &clock, plans);
            store.set("victim", &value(0, 9), None).unwrap();
            let first = oldest(&store);
            let mut next = 0;
            while store.stats().segments < 2 {
                store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
                next += 1;
            }
            // One flipped bit in the victim's value, in the sealed segment: its CRC fails.
            let seg = Arc::clone(&store.inner.segments.read()[&first]);
            seg.damage_record_of("victim");
            drop(seg);
            // Any plan of the segment is listed from here on, after the damage.
            let (planned, after) = fill_until_planned(&store, 0);
            assert_eq!(planned, first);
            next = next.max(after);
            while store.inner.segments.read().contains_key(&first) {
                store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
                next += 1;
            }
            let stats = store.stats();
            assert_eq!(stats.planned_evictions > 0, plans, "{stats:?}");
            assert_eq!(stats.compactions, 0, "{stats:?}");
            assert_eq!(stats.damaged_ranges_dropped, 1, "plans: {plans}, {stats:?}");
            assert_eq!(store.get("victim").unwrap(), None);
            store.close().unwrap();
        }
    }

    /// Damage only the open can see (a torn tail in a segment other than the last, which the
    /// open cuts off, and bytes past the segment size) is counted as dropped too when its segment
    /// goes: no later read of the segment finds it again.
    #[test]
    fn damage_only_the_open_saw_is_counted_when_its_segment_is_evicted() {
        for (torn, plans) in [(true, false), (true, true), (false, false), (false, true)] {
            let dir = tempfile::tempdir().unwrap();
            let clock = ManualClock::new(1_000_000);
            let store = open(dir.path(), &clock, plans);
            store.set("k0", &value(0, 0), None).unwrap();
            let first = oldest(&store);
            let mut next = 1;
            while store.stats().segments < 2 {
                store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
                next += 1;
            }
            let (seg_path, size) = (
                store.inner.segments.read()[&first].path.clone(),
                store.segment_size(),
            );
            store.close().unwrap();
            let file = std::fs::OpenOptions::new().write(true).open(&seg_path).unwrap();
            if torn {
                // Its last record cut short, and no hint: the open scans the segment.
                std::fs::remove_file(super::super::segment::hint_path(dir.path(), first)).unwrap();
                let len = file.metadata().unwrap().len();
                file.set_len(len - 3).unwrap();
            } else {
                file.set_len(size + 4096).unwrap();
            }
            drop(file);
            let store = open(dir.path(), &clock, plans);
            assert_eq!(store.recovery_report().damaged_ranges, 1, "torn: {torn}");
            while store.inner.segments.read().contains_key(&first) {
                store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
                next += 1;
            }
            let stats = store.stats();
            assert_eq!(
                stats.damaged_ranges_dropped, 1,
                "torn: {torn}, plans: {plans}, {stats:?}"
            );
            store.close().unwrap();
        }
    }

    #[test]
    fn a_store_reopened_near_its_bound_plans_its_first_eviction() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_000_000);
        let store = open(dir.path(), &clock, false);
        let mut next = 0;
        while store.stats().disk_bytes + 64 * 1024 < 1 << 20 {
            store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
            next += 1;
        }
        store.close().unwrap();
        let store = open(dir.path(), &clock, true);
        let first = oldest(&store);
        assert!(
            store.inner.planner.wait_ready(first, Duration::from_secs(30)),
            "no plan of segment {first} before the first write"
        );
        while store.stats().evictions == 0 {
            store.set(&format!("k{next}"), &value(next, 0), None).unwrap();
            next += 1;
        }
        assert_eq!(store.stats().planned_evictions, 1);
    }

    #[test]
    fn a_listing_overtaken_by_a_newer_request_keeps_nothing() {
        let planner = Planner::default();
        planner.request(1);
        let shutdown = crate::shutdown::Shutdown::default();
        assert_eq!(planner.next(&shutdown), Some(1));
        planner.request(2);
        assert!(!planner.still_wanted(1), "the listing of 1 must stop");
        let plan = |segment| Plan {
            segment,
            entries: Vec::new(),
        };
        planner.finish(1, Some(plan(1)));
        assert!(planner.ready_for(1).is_none(), "a plan nobody wants was kept");
        assert_eq!(planner.next(&shutdown), Some(2));
        planner.finish(2, Some(plan(2)));
        assert!(planner.ready_for(2).is_some());
        // Asking again for a ready plan keeps it; asking for another drops it.
        planner.request(2);
        assert!(planner.ready_for(2).is_some());
        planner.request(3);
        assert!(planner.ready_for(2).is_none());
        // A segment removed from the store: its listing stops, and its plan goes.
        assert_eq!(planner.next(&shutdown), Some(3));
        planner.forget(3);
        assert!(
            !planner.still_wanted(3),
            "the listing of a removed segment must stop"
        );
        planner.request(4);
        assert_eq!(planner.next(&shutdown), Some(4));
        planner.finish(4, Some(plan(4)));
        planner.forget(4);
        assert!(
            planner.ready_for(4).is_none(),
            "the plan of a removed segment was kept"
        );
        shutdown.fire();
        assert_eq!(planner.next(&shutdown), None);
    }
}
