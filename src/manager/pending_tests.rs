//! Tests of reads of keys whose write failed at L2 and was queued for replay: L2 holds an older
//! value than the pending write, and a read that missed L1 must not answer it nor backfill it,
//! whatever its ticket says; and L1 may hold an older value too (it lost the write, or could
//! not apply a delete), which a read of its suspect entry must not serve.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::{memory_l1_with, HeldL2};
use super::Plan;
use crate::clock::ManualClock;
use crate::storage::{Freshness, Storage};

/// A read that missed L1 before a failed write-behind batch of its key was queued for replay,
/// and looks into the queue after the batch landed: the key is pending now, and L2 holds the
/// value the failed write replaced. The read found the queue empty and nothing pending in
/// between, asked L2, and answered (and backfilled) that older value.
/// The rest of a read of `k` that missed L1 (batch or single), from its ticket on, as the shells
/// run it: what it answers.
fn rest_of_read_of_k(s: &super::Shared, batch: bool) -> Option<Vec<u8>> {
    let l2 = s.l2.as_ref().unwrap();
    if batch {
        let mut out = HashMap::new();
        let mut suspects = HashMap::new();
        let (left, tickets) = s.read_many_behind(vec!["k"], &mut out, &mut suspects);
        if !left.is_empty() {
            let result = (Instant::now(), l2.get_many(&left));
            s.finish_read_many(&left, &tickets, result, &mut out, &mut suspects)
                .unwrap();
        }
        out.remove("k")
    } else {
        match s.before_l2("k", false) {
            Ok(ticket) => s.finish_read("k", ticket, (Instant::now(), l2.get("k"))).unwrap(),
            Err(answer) => answer,
        }
    }
}

#[test]
fn a_read_that_missed_l1_before_a_failed_batch_of_its_key_landed_does_not_answer_l2s_older_value() {
    for batch in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let l2 = HeldL2::new();
        l2.inner.set("k", b"old", None).unwrap();
        let mut config = crate::CacheConfig::default();
        config.distributed.write_mode = crate::WriteMode::Behind;
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        let cache = memory_l1_with(l2.clone(), config);
        l2.batches_fail.store(true, std::sync::atomic::Ordering::Relaxed);
        let sending = l2.hold("set_each");
        cache.set_raw("k", b"new", None).unwrap();
        sending.wait_entered();
        cache.shared.l1.delete("k").unwrap();
        let s = &cache.shared;
        assert!(matches!(s.plan_read("k").unwrap(), Plan::AskL2(None)));
        let _ = sending.release.send(());
        // The batch failed, was queued for replay and landed.
        cache.flush().unwrap();
        assert!(s.is_pending("k"));
        let answer = rest_of_read_of_k(s, batch);
        assert_eq!(
            answer, None,
            "answered L2's value older than the pending write (batch: {batch})"
        );
        assert_eq!(
            cache.get_raw("k").unwrap(),
            None,
            "L1 was backfilled with L2's older value (batch: {batch})"
        );
    }
}

/// A read that missed L1 before a write-through of its key whose L2 step failed, and takes its
/// ticket after the write returned: the ticket is current, but the key is pending, and L2 holds
/// the value the write replaced (or deleted). The read asked L2 and answered, and backfilled,
/// that older value: after a delete, the deleted value; after a set, over the new one in L1.
#[test]
fn a_read_that_missed_l1_before_a_failed_write_through_of_its_key_does_not_answer_l2s_older_value() {
    for (delete, batch) in [(true, false), (true, true), (false, false), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let l2 = HeldL2::new();
        l2.inner.set("k", b"old", None).unwrap();
        let mut config = crate::CacheConfig::default();
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        config.offline.replay_interval_ms = 3_600_000;
        let cache = memory_l1_with(l2.clone(), config);
        let s = &cache.shared;
        assert!(matches!(s.plan_read("k").unwrap(), Plan::AskL2(None)));
        l2.writes_fail.store(true, std::sync::atomic::Ordering::Relaxed);
        // Acknowledged: with a replay queue, a write L2 refused is queued, not an error.
        if delete {
            cache.delete("k").unwrap();
        } else {
            cache.set_raw("k", b"new", None).unwrap();
        }
        assert!(s.is_pending("k"), "the failed write was queued for replay");
        let answer = rest_of_read_of_k(s, batch);
        assert_ne!(
            answer.as_deref(),
            Some(&b"old"[..]),
            "answered L2's value older than the pending write (delete: {delete}, batch: {batch})"
        );
        let want: Option<&[u8]> = if delete { None } else { Some(b"new") };
        assert_eq!(
            cache.get_raw("k").unwrap().as_deref(),
            want,
            "L1 was backfilled with L2's older value (delete: {delete}, batch: {batch})"
        );
    }
}

/// How a test reads `k`: through the sync API, its batch form, or the async API.
#[derive(Debug, Clone, Copy)]
enum Read {
    Single,
    Batch,
    Async,
}

const READS: [Read; 3] = [Read::Single, Read::Batch, Read::Async];

fn read_k(cache: &crate::CacheManager, how: Read) -> Option<Vec<u8>> {
    match how {
        Read::Single => cache.get_raw("k").unwrap(),
        Read::Batch => cache.multi_get_raw(&["k"]).unwrap().remove("k"),
        Read::Async => tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(cache.get_raw_async("k"))
            .unwrap(),
    }
}

/// The op of `k` queued while L2 is down.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Queued {
    /// A set of `v2`.
    Set,
    /// A set of `v2` that expires after a minute, read two minutes later.
    ExpiredSet,
    Delete,
}

/// A manager on a file-store L1 whose entry of `k` is suspect while the replay queue holds a
/// newer op of `k`: `k` = v1 reached both levels, L2 went down, the op reached L1 and the queue,
/// then L1 lost it unless `l1_kept_it` (a power cut loses what the file store's periodic fsync
/// had not written), and every L1 entry became suspect (as after the restart).
struct LostWrite {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    cache: crate::CacheManager,
    l1: Arc<crate::FileStore>,
    l2: Arc<HeldL2>,
}

fn suspect_k_with_a_queued(op: Queued, l1_kept_it: bool) -> LostWrite {
    let (l1_dir, replay_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let l1 = Arc::new(crate::FileStore::open(l1_dir.path(), crate::FileStoreOptions::default()).unwrap());
    let l2 = HeldL2::new();
    let mut config = crate::CacheConfig::default();
    config.offline.replay_dir = Some(replay_dir.path().to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    let clock = ManualClock::new(crate::clock::system_time_to_ms(std::time::SystemTime::now()));
    let cache = crate::CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .local(l1.clone())
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    cache.set_raw("k", b"v1", None).unwrap();
    l2.writes_fail.store(true, Relaxed);
    match op {
        Queued::Set => cache.set_raw("k", b"v2", None).unwrap(),
        Queued::ExpiredSet => cache.set_raw("k", b"v2", Some(Duration::from_secs(60))).unwrap(),
        Queued::Delete => assert!(cache.delete("k").unwrap()),
    }
    assert!(cache.shared.is_pending("k"), "the failed L2 write was queued");
    if op == Queued::ExpiredSet {
        clock.advance(Duration::from_secs(120));
    }
    if !l1_kept_it {
        l1.set("k", b"v1", None).unwrap();
    }
    assert!(cache.shared.distrust_everything());
    assert!(matches!(
        l1.get_checked("k").unwrap(),
        Some((_, Freshness::Suspect)) | None
    ));
    LostWrite {
        _dirs: (l1_dir, replay_dir),
        cache,
        l1,
        l2,
    }
}

impl LostWrite {
    /// L2 is back and the queue replayed: what every other instance now reads of `k`.
    fn replayed(&self) -> Option<Vec<u8>> {
        self.l2.writes_fail.store(false, Relaxed);
        self.cache.replay_now().unwrap();
        self.l2.inner.get("k").unwrap().map(|e| e.value)
    }
}

/// L1 holds v1, suspect, and the queue a set of v2 that L1 lost: the read confirmed and served
/// v1 ("L1 is the truth for a key with a queued op"), as trusted from then on, while the replay
/// put v2 in L2 and every other instance.
#[test]
fn a_suspect_entry_whose_queued_set_holds_other_bytes_is_not_served() {
    for how in READS {
        let rig = suspect_k_with_a_queued(Queued::Set, false);
        assert_eq!(
            read_k(&rig.cache, how).as_deref(),
            Some(&b"v2"[..]),
            "served L1's v1 over the queued v2 ({how:?})"
        );
        let held = rig.l1.get_checked("k").unwrap().map(|(e, f)| (e.value, f));
        assert_eq!(
            held,
            Some((b"v2".to_vec(), Freshness::Trusted)),
            "L1 took the queued value ({how:?})"
        );
        assert_eq!(rig.replayed().as_deref(), Some(&b"v2"[..]));
        assert_eq!(read_k(&rig.cache, how).as_deref(), Some(&b"v2"[..]));
    }
}

/// L1 holds v1, suspect, and the queue a delete of `k` that L1 lost: the read served the
/// deleted value, which the replay took out of L2 and every other instance.
#[test]
fn a_suspect_entry_whose_key_has_a_queued_delete_is_not_served() {
    for how in READS {
        let rig = suspect_k_with_a_queued(Queued::Delete, false);
        let misses = rig.cache.stats().consistency.pending_misses;
        assert_eq!(
            read_k(&rig.cache, how),
            None,
            "served the deleted value ({how:?})"
        );
        assert_eq!(rig.cache.stats().consistency.pending_misses, misses + 1);
        assert_eq!(
            rig.l1.get("k").unwrap(),
            None,
            "L1 kept the deleted value ({how:?})"
        );
        assert_eq!(rig.replayed(), None);
        assert_eq!(read_k(&rig.cache, how), None);
    }
}

/// A queued set whose expiry has passed replays as a delete: the suspect entry is not served,
/// neither the older value L1 holds nor the dead one it lost.
#[test]
fn a_suspect_entry_whose_queued_set_has_expired_is_not_served() {
    for l1_kept_it in [false, true] {
        let rig = suspect_k_with_a_queued(Queued::ExpiredSet, l1_kept_it);
        assert_eq!(read_k(&rig.cache, Read::Single), None, "L1 kept v2: {l1_kept_it}");
        assert_eq!(rig.l1.get("k").unwrap(), None, "L1 kept v2: {l1_kept_it}");
    }
}

/// L1 holds the very bytes the queued set holds: confirmed and served without asking L2, whose
/// value is older.
#[test]
fn a_suspect_entry_whose_queued_set_holds_the_same_bytes_is_confirmed_without_asking_l2() {
    for how in READS {
        let rig = suspect_k_with_a_queued(Queued::Set, true);
        let l2_reads = |cache: &crate::CacheManager| {
            let d = cache.stats().distributed;
            d.hits + d.misses
        };
        let before = l2_reads(&rig.cache);
        assert_eq!(read_k(&rig.cache, how).as_deref(), Some(&b"v2"[..]), "{how:?}");
        assert_eq!(l2_reads(&rig.cache), before, "asked L2 ({how:?})");
        let held = rig.l1.get_checked("k").unwrap().map(|(e, f)| (e.value, f));
        assert_eq!(held, Some((b"v2".to_vec(), Freshness::Trusted)), "{how:?}");
    }
}

/// Without a restart: L1 is latched read-only (its deletes fail) and marking its entries suspect
/// fails too, L2 is down; `delete(k)` fails in L1 but its L2 part is queued, and every L1 hit is
/// distrusted. The read of `k` confirmed and served the value the delete took out of L2.
#[cfg(feature = "redis")]
#[test]
fn a_suspect_entry_whose_queued_delete_l1_could_not_apply_is_not_served() {
    for how in READS {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::CacheConfig::default();
        config.offline.replay_dir = Some(dir.path().to_path_buf());
        config.offline.replay_interval_ms = 3_600_000;
        let (cache, l2) = super::tests::failing_l1_with(config, true, false);
        cache.set_raw("k", b"v1", None).unwrap();
        l2.writes_fail.store(true, Relaxed);
        assert!(cache.delete("k").is_err(), "L1's error reaches the caller");
        assert!(cache.shared.is_pending("k"), "the L2 delete was queued");
        assert_eq!(read_k(&cache, how), None, "served the deleted value ({how:?})");
        assert_eq!(
            read_k(&cache, how),
            None,
            "served the deleted value later ({how:?})"
        );
    }
}

/// L1 holds v1, suspect, and the queue a set of v2 that has expired since (it replays as a
/// delete), while L1 refuses deletes (a full disk): the read's drop of v1 failed and it answered
/// a miss, but v1 stayed in L1 unrecorded, and was then served as fail-safe's stale copy (and
/// would be unverified while L2 is down), the value the replay takes out of L2.
#[cfg(feature = "redis")]
#[test]
fn a_suspect_entry_whose_queued_op_l1_could_not_drop_is_not_served_stale() {
    use super::tests::DeletesFail;
    use crate::local::memory::MemoryStore;
    use crate::storage::delegate::Delegate;
    let dir = tempfile::tempdir().unwrap();
    let l2 = HeldL2::new();
    let mut config = crate::CacheConfig::default();
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    config.loader.fail_safe_max_duration = Duration::from_secs(3600);
    let clock = ManualClock::new(crate::clock::system_time_to_ms(std::time::SystemTime::now()));
    let cache = crate::CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .local(Arc::new(Delegate(DeletesFail {
            inner: MemoryStore::new(100).unwrap(),
            marks_fail: false.into(),
            sets_fail: false,
            clears_fail: true.into(),
            // Every entry suspect, as after a restart (a memory store's marking clears it).
            restored: true,
        })))
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    let v1 = "v1".to_owned();
    cache.set("k", &v1, None).unwrap();
    l2.writes_fail.store(true, Relaxed);
    cache
        .set("k", &"v2".to_owned(), Some(Duration::from_secs(60)))
        .unwrap();
    assert!(cache.shared.is_pending("k"), "the failed L2 write was queued");
    // L1 lost the write (see `suspect_k_with_a_queued`); its entries are suspect.
    let bytes = cache.shared.codec.encode("k", &v1).unwrap();
    cache.shared.l1.set("k", &bytes, None).unwrap();
    cache.shared.check_freshness.store(true, Relaxed);
    clock.advance(Duration::from_secs(120));
    assert_eq!(
        cache.get::<String>("k").unwrap(),
        None,
        "served v1 over the queued op"
    );
    assert!(
        cache.get_with_state::<String>("k").unwrap().is_none(),
        "served v1, which the queued op replaces, as a stale copy"
    );
}
