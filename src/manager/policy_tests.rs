//! Tests of the rules in `policy.rs`.

use super::*;
use crate::clock::ManualClock;
use crate::local::memory::MemoryStore;
#[cfg(feature = "redis")]
use crate::storage::delegate::{Delegate, Wrap, WrapLocal};
use crate::storage::{Storage, StorageSize};
use std::collections::HashMap;

fn shared(local: u64, distributed: u64, clock: &ManualClock) -> Shared {
    Shared {
        l1: Arc::new(MemoryStore::new(10).unwrap()),
        l2: None,
        breaker: None,
        nodes: None,
        l2_size: crate::manager::l2_size::L2Size::default(),
        local_ttl: Duration::from_secs(local),
        distributed_ttl: Duration::from_secs(distributed),
        fallback_on_error: true,
        replays_failures: true,
        codec: Codec::default(),
        clock: Arc::new(clock.clone()),
        metrics: Metrics::default(),
        guard: KeyOrder::default(),
        cancel_quiet: Duration::from_millis(400),
        flights: Arc::new(Flights::default()),
        fail_safe: crate::manager::failsafe::FailSafe::new(&crate::config::LoaderConfig::default()),
        left_behind: Default::default(),
        replay: None,
        replayer: None,
        replay_lock: Mutex::new(()),
        replayed_tags: Default::default(),
        apart: Default::default(),
        late_writes: Default::default(),
        late_drops: Default::default(),
        stop: crate::shutdown::Shutdown::default(),
        tags: None,
        l2_keys: crate::manager::l2_keys::L2Keys::NoL2,
        l2_prefix: String::new(),
        #[cfg(feature = "redis")]
        backplane: OnceLock::new(),
        hot: None,
        local_file: None,
        restart_policy: RestartPolicy::default(),
        check_freshness: AtomicBool::new(false),
        distrust_l1: Default::default(),
        trust_retry_at_ms: std::sync::atomic::AtomicU64::new(0),
        trust_retry_wait_ms: std::sync::atomic::AtomicU64::new(crate::manager::consistency::TRUST_RETRY_MS),
        trust_lock: parking_lot::Mutex::new(()),
        behind: None,
        fills: None,
    }
}

#[test]
fn set_ttls_are_capped_per_level_and_default_to_the_level_ttl() {
    let s = shared(60, 600, &ManualClock::new(0));
    assert_eq!(s.l1_ttl(None), Duration::from_secs(60));
    assert_eq!(s.l2_ttl(None), Duration::from_secs(600));
    assert_eq!(s.l1_ttl(Some(Duration::from_secs(300))), Duration::from_secs(60));
    assert_eq!(s.l2_ttl(Some(Duration::from_secs(300))), Duration::from_secs(300));
    assert_eq!(s.l1_ttl(Some(Duration::from_secs(5))), Duration::from_secs(5));
}

#[test]
fn backfill_ttl_never_outlives_l2_nor_local_ttl() {
    let clock = ManualClock::new(1_000_000);
    let s = shared(60, 600, &clock);
    let at = |ms: u64| Entry {
        value: vec![],
        expires_at: Some(clock::ms_to_system_time(ms)),
    };
    assert_eq!(s.backfill_ttl(&at(1_010_000)), Some(Duration::from_secs(10)));
    assert_eq!(s.backfill_ttl(&at(9_000_000)), Some(Duration::from_secs(60)));
    assert_eq!(s.backfill_ttl(&at(1_000_000)), None);
    assert_eq!(s.backfill_ttl(&at(5)), None);
    let forever = Entry {
        value: vec![],
        expires_at: None,
    };
    assert_eq!(s.backfill_ttl(&forever), Some(Duration::from_secs(60)));
}

/// A batch's backfills queued at one time and written by the backfill thread later: each L1
/// entry still expires when L2's copy does, and one whose copy expired meanwhile is not written.
#[test]
fn a_queued_backfill_expires_when_l2_copy_does_however_late_it_is_written() {
    let clock = ManualClock::new(1_000_000);
    let mut s = shared(60, 600, &clock);
    s.l1 = Arc::new(MemoryStore::with_clock(10, Arc::new(clock.clone())).unwrap());
    let queue = Arc::new(FillQueue::new(Shutdown::default()));
    s.fills = Some(Arc::clone(&queue));
    let at = |ms: u64| Entry {
        value: b"v".to_vec(),
        expires_at: Some(clock::ms_to_system_time(ms)),
    };
    let hits = [
        ("a", s.guard.ticket("a"), at(1_010_000)),
        ("b", s.guard.ticket("b"), at(1_003_000)),
    ];
    s.backfill_many(&hits);
    clock.advance(Duration::from_secs(5));
    for batch in queue.take().unwrap_or_default() {
        s.apply_fills(&batch);
    }
    queue.done();
    assert_eq!(
        s.l1.get("b").unwrap(),
        None,
        "L2's copy expired while the fill was queued"
    );
    clock.set(1_009_999);
    assert!(s.l1.get("a").unwrap().is_some());
    clock.set(1_010_000);
    assert_eq!(s.l1.get("a").unwrap(), None, "expired with L2's copy");
    assert_eq!(s.metrics.backfills.get(), 1);
    assert_eq!(
        s.metrics.backfills_skipped.get(),
        0,
        "an entry with no time left is no backfill to do"
    );
}

/// An in-process L2 whose next call of a chosen kind is held until the test releases it.
pub(super) struct HeldL2 {
    pub(super) inner: MemoryStore,
    gates: std::sync::Mutex<Vec<(&'static str, Held)>>,
    /// Longer values are refused as bad input, as a Memcached below its `-I` refuses them.
    pub(super) max_value: std::sync::atomic::AtomicUsize,
    /// `set_each` fails as an unreachable server's does.
    pub(super) batches_fail: std::sync::atomic::AtomicBool,
    /// `set` and `delete` fail as an unreachable server's do.
    pub(super) writes_fail: std::sync::atomic::AtomicBool,
    /// The next `set_each` panics, as a faulty level plugged in by a user might.
    pub(super) batch_panics: std::sync::atomic::AtomicBool,
}

struct Held {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

pub(super) struct Gate {
    entered: std::sync::mpsc::Receiver<()>,
    pub(super) release: std::sync::mpsc::Sender<()>,
}

impl Gate {
    pub(super) fn wait_entered(&self) {
        self.entered
            .recv_timeout(Duration::from_secs(20))
            .expect("the held call never came");
    }
}

impl HeldL2 {
    pub(super) fn new() -> Arc<HeldL2> {
        Arc::new(HeldL2 {
            inner: MemoryStore::new(1000).unwrap(),
            gates: std::sync::Mutex::new(Vec::new()),
            max_value: std::sync::atomic::AtomicUsize::new(usize::MAX),
            batches_fail: std::sync::atomic::AtomicBool::new(false),
            writes_fail: std::sync::atomic::AtomicBool::new(false),
            batch_panics: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub(super) fn hold(&self, op: &'static str) -> Gate {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let held = Held {
            entered: entered_tx,
            release: release_rx,
        };
        self.gates.lock().unwrap().push((op, held));
        Gate {
            entered: entered_rx,
            release: release_tx,
        }
    }

    fn write_fails(&self, op: &'static str) -> Result<()> {
        if self.writes_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Backend {
                level: "held",
                op,
                reason: "unreachable (test)".into(),
            });
        }
        Ok(())
    }

    fn enter(&self, op: &str) {
        let held = {
            let mut gates = self.gates.lock().unwrap();
            gates
                .iter()
                .position(|(o, _)| *o == op)
                .map(|i| gates.remove(i).1)
        };
        if let Some(held) = held {
            let _ = held.entered.send(());
            let _ = held.release.recv_timeout(Duration::from_secs(20));
        }
    }
}

impl Storage for HeldL2 {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.enter("get");
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.enter("set");
        self.write_fails("set")?;
        let max = self.max_value.load(std::sync::atomic::Ordering::Relaxed);
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                key: key.to_owned(),
                len: value.len(),
                max,
                store: "held".to_owned(),
            });
        }
        self.inner.set(key, value, ttl)
    }
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.enter("set_each");
        if self
            .batch_panics
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            panic!("set_each panicked (test)");
        }
        if self.batches_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Backend {
                level: "held",
                op: "set_each",
                reason: "unreachable (test)".into(),
            });
        }
        self.inner.set_each(items)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.enter("delete");
        self.write_fails("delete")?;
        self.inner.delete(key)
    }
    fn name(&self) -> &str {
        "custom"
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        crate::storage::get_each(self, keys)
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.set(key, value, ttl)?;
        }
        Ok(())
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        crate::storage::delete_each(self, "test", keys)
    }
    fn check_value(&self, _: &str, _: usize) -> Result<()> {
        Ok(())
    }
    fn size(&self) -> Result<StorageSize> {
        self.inner.size()
    }
    fn clear(&self) -> Result<()> {
        self.inner.clear()
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn counters(&self) -> crate::StorageCounters {
        crate::StorageCounters::default()
    }
}

/// A manager on a memory L1 of 100 entries and `l2`, configured by `config`.
pub(super) fn memory_l1_with(l2: Arc<HeldL2>, config: crate::CacheConfig) -> crate::CacheManager {
    crate::CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(100).unwrap()))
        .distributed(Arc::new(crate::InProcess::shared(l2)))
        .build()
        .unwrap()
}

/// Write-behind, L2 holding `old`, `set(k, new)` returned but `new` still queued and no longer
/// in L1 (evicted). A read misses L1 and takes its ticket; a `delete(k)` starts, takes `new` out
/// of the queue and waits on L2; the read then finds the queue empty and asks L2, which still
/// answers `old`. The read stops between its ticket and its look into the queue, where only a
/// test can hold it; the rest runs through the manager as the shells run it.
struct OvertakenRead {
    cache: crate::CacheManager,
    l2: Arc<HeldL2>,
    sending: Gate,
    deleting: Gate,
    delete: std::thread::JoinHandle<Result<bool>>,
    ticket: Ticket,
}

fn read_overtaken_by_a_delete() -> OvertakenRead {
    let l2 = HeldL2::new();
    l2.inner.set("k", b"old", None).unwrap();
    let mut config = crate::CacheConfig::default();
    config.distributed.write_mode = crate::WriteMode::Behind;
    let cache = memory_l1_with(l2.clone(), config);
    // Keeps `new` in the queue: the writer is busy sending another key.
    let sending = l2.hold("set_each");
    cache.set_raw("other", b"x", None).unwrap();
    sending.wait_entered();
    cache.set_raw("k", b"new", None).unwrap();
    cache.shared.l1.delete("k").unwrap();
    let s = &cache.shared;
    assert!(matches!(s.plan_read("k").unwrap(), Plan::AskL2(None)));
    let ticket = s.ticket("k");
    let deleting = l2.hold("delete");
    let racing = cache.clone();
    let delete = std::thread::spawn(move || racing.delete("k"));
    deleting.wait_entered();
    OvertakenRead {
        cache,
        l2,
        sending,
        deleting,
        delete,
        ticket,
    }
}

impl OvertakenRead {
    fn finish(self) {
        let _ = self.deleting.release.send(());
        let _ = self.sending.release.send(());
        assert!(self.delete.join().unwrap().unwrap(), "the delete found the key");
        self.cache.flush().unwrap();
        assert_eq!(self.l2.inner.get("k").unwrap(), None, "the delete reached L2");
        assert_eq!(self.cache.get_raw("k").unwrap(), None);
        assert_eq!(self.cache.stats().consistency.overtaken_reads, 1);
    }
}

#[test]
fn a_read_overtaken_by_a_delete_never_answers_the_value_a_completed_set_replaced() {
    let race = read_overtaken_by_a_delete();
    let s = &race.cache.shared;
    let ticket = match s.before_l2_with("k", race.ticket) {
        Ok(ticket) => ticket,
        Err(answer) => panic!("answered {answer:?} before L2: the race did not happen"),
    };
    let l2 = s.l2.as_ref().unwrap();
    let answer = s.finish_read("k", ticket, (Instant::now(), l2.get("k"))).unwrap();
    assert_ne!(
        answer.as_deref(),
        Some(&b"old"[..]),
        "answered the replaced value"
    );
    assert_eq!(answer, None);
    race.finish();
}

#[test]
fn a_batch_read_overtaken_by_a_delete_never_answers_the_value_a_completed_set_replaced() {
    let race = read_overtaken_by_a_delete();
    let s = &race.cache.shared;
    let l2 = s.l2.as_ref().unwrap();
    let mut out = HashMap::new();
    let mut suspects = HashMap::new();
    let keys = ["k"];
    let result = (Instant::now(), l2.get_many(&keys));
    s.finish_read_many(&keys, &[race.ticket], result, &mut out, &mut suspects)
        .unwrap();
    assert_eq!(out.get("k"), None, "answered {:?}", out.get("k"));
    race.finish();
}

/// An L1 whose deletes (and clears) fail, as a file store's do once its disk is full
/// (`DiskFull`) or after a failed fsync latched it read-only (`WritesDisabled`); reads work.
#[cfg(feature = "redis")]
pub(super) struct DeletesFail {
    pub(super) inner: MemoryStore,
    /// Marking every entry suspect fails too (a redb L1 that cannot begin a write).
    pub(super) marks_fail: std::sync::atomic::AtomicBool,
    /// A set fails after the value was stored, as a file store's does when the fsync of
    /// `Durability::EveryWrite` fails after the records were indexed.
    pub(super) sets_fail: bool,
    /// Clears fail (until the disk has room again).
    pub(super) clears_fail: std::sync::atomic::AtomicBool,
    /// Every entry reads as suspect, as a file store's entries restored at start-up do.
    pub(super) restored: bool,
}

#[cfg(feature = "redis")]
impl Wrap for DeletesFail {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn name(&self) -> &str {
        "deletes-fail"
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner.set(key, value, ttl)?;
        if self.sets_fail {
            return Err(Error::WritesDisabled {
                path: std::path::PathBuf::from("test"),
                cause: "fsync failed (test)".to_owned(),
            });
        }
        Ok(())
    }
    fn delete(&self, _key: &str) -> Result<bool> {
        Err(Error::WritesDisabled {
            path: std::path::PathBuf::from("test"),
            cause: "disk full (test)".to_owned(),
        })
    }
    fn delete_many(&self, _keys: &[&str]) -> Result<u64> {
        Err(Error::WritesDisabled {
            path: std::path::PathBuf::from("test"),
            cause: "disk full (test)".to_owned(),
        })
    }
    fn clear(&self) -> Result<()> {
        if !self.clears_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Storage::clear(&self.inner);
        }
        Err(Error::WritesDisabled {
            path: std::path::PathBuf::from("test"),
            cause: "disk full (test)".to_owned(),
        })
    }
}

#[cfg(feature = "redis")]
impl WrapLocal for DeletesFail {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        let checked = self.inner.get_checked(key)?;
        Ok(match checked {
            Some((entry, _)) if self.restored => Some((entry, Freshness::Suspect)),
            other => other,
        })
    }
    /// In memory only (as the file store's): works with a full disk.
    fn mark_all_suspect(&self) -> Result<()> {
        if self.marks_fail.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::WritesDisabled {
                path: std::path::PathBuf::from("test"),
                cause: "cannot begin a write (test)".to_owned(),
            });
        }
        self.inner.mark_all_suspect()
    }
}

/// A manager on a [`DeletesFail`] L1 and a [`HeldL2`].
#[cfg(feature = "redis")]
fn failing_l1_with_held_l2(marks_fail: bool, sets_fail: bool) -> (crate::CacheManager, Arc<HeldL2>) {
    failing_l1_with(crate::CacheConfig::default(), marks_fail, sets_fail)
}

/// [`failing_l1_with_held_l2`] configured by `config`.
#[cfg(feature = "redis")]
pub(super) fn failing_l1_with(
    config: crate::CacheConfig,
    marks_fail: bool,
    sets_fail: bool,
) -> (crate::CacheManager, Arc<HeldL2>) {
    let l2 = HeldL2::new();
    let cache = crate::CacheManager::builder()
        .config(config)
        .local(Arc::new(Delegate(DeletesFail {
            inner: MemoryStore::new(100).unwrap(),
            marks_fail: marks_fail.into(),
            sets_fail,
            clears_fail: true.into(),
            restored: false,
        })))
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    (cache, l2)
}

/// A manager (`config`) on a [`DeletesFail`] L1 whose entries all read as suspect, holding
/// `k` = old, and a [`HeldL2`] that holds nothing.
#[cfg(feature = "redis")]
pub(super) fn suspect_l1_that_cannot_delete(config: crate::CacheConfig) -> crate::CacheManager {
    let l1 = DeletesFail {
        inner: MemoryStore::new(100).unwrap(),
        marks_fail: false.into(),
        sets_fail: false,
        clears_fail: true.into(),
        restored: true,
    };
    l1.inner.set("k", b"old", None).unwrap();
    crate::CacheManager::builder()
        .config(config)
        .local(Arc::new(Delegate(l1)))
        .distributed(Arc::new(crate::InProcess::shared(HeldL2::new())))
        .build()
        .unwrap()
}

/// Another instance's invalidation of `k` arrives while L1 cannot delete (disk full, or latched
/// read-only): L1 must stop vouching for its copy rather than serve it as a trusted hit until
/// its TTL, while L2 has the new one.
#[cfg(feature = "redis")]
#[test]
fn an_invalidation_that_l1_could_not_apply_does_not_leave_the_old_value_trusted() {
    use crate::invalidation::{InstanceId, Invalidation, InvalidationHandler, InvalidationMessage};
    for (invalidation, marks_fail) in [
        Invalidation::Keys(vec!["k".to_owned()]),
        Invalidation::Prefix("k".to_owned()),
        Invalidation::All,
    ]
    .into_iter()
    .flat_map(|i| [(i.clone(), false), (i, true)])
    {
        let (cache, l2) = failing_l1_with_held_l2(marks_fail, false);
        let receiver = super::super::backplane::Receiver {
            shared: Arc::downgrade(&cache.shared),
        };
        cache.set_raw("k", b"v1", None).unwrap();
        // Another instance writes v2 and publishes its invalidation.
        l2.inner.set("k", b"v2", None).unwrap();
        receiver.invalidate(&InvalidationMessage {
            origin: InstanceId::random(),
            seq: 1,
            invalidation: invalidation.clone(),
        });
        assert_eq!(
            cache.get_raw("k").unwrap().as_deref(),
            Some(&b"v2"[..]),
            "{invalidation:?} was lost (marking fails: {marks_fail}): L1 serves v1"
        );
    }
}

/// The same invalidations with fail-safe on: the copy L1 could not drop is not served as a
/// stale copy either (L1 keeps it, suspect, and nothing checks a stale copy against L2).
#[cfg(feature = "redis")]
#[test]
fn an_invalidation_that_l1_could_not_apply_leaves_no_stale_copy_to_serve() {
    use crate::invalidation::{InstanceId, Invalidation, InvalidationHandler, InvalidationMessage};
    for invalidation in [
        Invalidation::Keys(vec!["k".to_owned()]),
        Invalidation::Prefix("k".to_owned()),
        Invalidation::All,
    ] {
        let mut config = crate::CacheConfig::default();
        config.loader.fail_safe_max_duration = Duration::from_secs(3600);
        let (cache, l2) = failing_l1_with(config, true, false);
        let receiver = super::super::backplane::Receiver {
            shared: Arc::downgrade(&cache.shared),
        };
        cache.set("k", &"v1".to_owned(), None).unwrap();
        // Another instance deletes it and publishes its invalidation.
        l2.inner.delete("k").unwrap();
        receiver.invalidate(&InvalidationMessage {
            origin: InstanceId::random(),
            seq: 1,
            invalidation: invalidation.clone(),
        });
        assert_eq!(cache.get::<String>("k").unwrap(), None, "{invalidation:?}");
        assert_eq!(
            cache.get_with_state::<String>("k").unwrap(),
            None,
            "{invalidation:?}: the invalidated value was served as a stale copy"
        );
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_delete_that_l1_could_not_apply_does_not_leave_the_old_value_trusted() {
    for (batch, marks_fail) in [(false, false), (false, true), (true, false), (true, true)] {
        let (cache, l2) = failing_l1_with_held_l2(marks_fail, false);
        cache.set_raw("k", b"v1", None).unwrap();
        let deleted = if batch {
            cache.multi_delete(&["k"]).map(drop)
        } else {
            cache.delete("k").map(drop)
        };
        assert!(deleted.is_err(), "L1's error reaches the caller");
        assert_eq!(l2.inner.get("k").unwrap(), None, "L2 took the delete");
        assert_eq!(
            cache.get_raw("k").unwrap(),
            None,
            "L1 served the value its delete removed from L2 (batch: {batch}, marking fails: {marks_fail})"
        );
    }
}

/// `invalidate_local`, the hook for another process's invalidation, on an L1 whose delete fails:
/// the invalidated value was left trusted, served until its TTL.
#[cfg(feature = "redis")]
#[test]
fn an_invalidation_of_one_key_that_l1_could_not_apply_does_not_leave_the_old_value_trusted() {
    for marks_fail in [false, true] {
        let (cache, l2) = failing_l1_with_held_l2(marks_fail, false);
        cache.set_raw("k", b"v1", None).unwrap();
        // Another process deleted it from L2, and told this one.
        l2.inner.delete("k").unwrap();
        assert!(
            cache.invalidate_local("k").is_err(),
            "L1's error reaches the caller"
        );
        assert_eq!(
            cache.get_raw("k").unwrap(),
            None,
            "L1 served the invalidated value (marking fails: {marks_fail})"
        );
    }
}

/// Under `restart_policy = "trust"` the manager puts the replay queue's ops into L1 when it is
/// built, since its reads never ask whether an entry is suspect. If L1 refuses (a full disk),
/// its reads ask after all: a restored entry of a key with a queued delete is still a miss,
/// not the value the delete replaced.
#[cfg(feature = "redis")]
#[test]
fn under_trust_a_queued_delete_l1_refuses_at_start_up_still_decides_the_restored_entry() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = Arc::new(Delegate(DeletesFail {
        inner: MemoryStore::new(100).unwrap(),
        marks_fail: false.into(),
        sets_fail: false,
        clears_fail: true.into(),
        restored: true,
    }));
    l1.inner.set("k", b"old", None).unwrap();
    let queue =
        crate::replay::ReplayQueue::open(dir.path(), crate::replay::ReplayOptions::default()).unwrap();
    queue.push_delete("k").unwrap();
    drop(queue);
    let mut config = crate::CacheConfig::default();
    config.consistency.restart_policy = RestartPolicy::Trust;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    // L2 is older than the op (a replay that deletes it first answers a miss too).
    let l2 = HeldL2::new();
    l2.inner.set("k", b"old", None).unwrap();
    let cache = crate::CacheManager::builder()
        .config(config)
        .local(l1)
        .distributed(Arc::new(crate::InProcess::shared(l2)))
        .build()
        .unwrap();
    assert!(cache.stats().local.errors >= 1, "L1's delete at start-up failed");
    assert_eq!(
        cache.get_raw("k").unwrap(),
        None,
        "served the value a queued delete replaced"
    );
}

#[cfg(feature = "redis")]
#[path = "trust_retry_tests.rs"]
mod trust_retry;

#[cfg(feature = "redis")]
#[test]
fn a_value_l2_refused_that_l1_could_not_take_back_is_not_served_as_fresh() {
    for marks_fail in [false, true] {
        let (cache, l2) = failing_l1_with_held_l2(marks_fail, false);
        l2.max_value.store(4, std::sync::atomic::Ordering::Relaxed);
        cache.set_raw("k", b"v1", None).unwrap();
        let refused = cache.set_raw("k", b"too long for L2", None);
        assert!(matches!(refused, Err(Error::ValueTooLarge { .. })), "{refused:?}");
        assert_eq!(
            cache.get_raw("k").unwrap().as_deref(),
            Some(&b"v1"[..]),
            "L1 served a value L2 refused (marking fails: {marks_fail})"
        );
    }
}

#[cfg(feature = "redis")]
#[test]
fn a_write_that_failed_after_l1_stored_it_is_not_served_from_l1_alone() {
    for marks_fail in [false, true] {
        let (cache, l2) = failing_l1_with_held_l2(marks_fail, true);
        l2.inner.set("k", b"v1", None).unwrap();
        let failed = cache.set_raw("k", b"v2", None);
        assert!(matches!(failed, Err(Error::WritesDisabled { .. })), "{failed:?}");
        assert_eq!(
            cache.get_raw("k").unwrap().as_deref(),
            Some(&b"v1"[..]),
            "a write the caller was told failed is served from L1 (marking fails: {marks_fail})"
        );
    }
}

#[test]
fn a_cancelled_or_panicking_load_ends_its_watch() {
    use std::future::Future as _;
    let cache = crate::CacheManager::builder()
        .config(crate::CacheConfig::default())
        .local(Arc::new(MemoryStore::new(100).unwrap()))
        .build()
        .unwrap();
    let guard = &cache.shared.guard;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut load = Box::pin(cache.get_or_set_with_async("k", None, || {
        std::future::pending::<std::result::Result<String, Error>>()
    }));
    assert!(load.as_mut().poll(&mut cx).is_pending());
    assert_eq!(guard.watches(), 1, "the load watches its key");
    drop(load);
    assert_eq!(guard.watches(), 0, "the cancelled load left its watch");
    // The panic is a failed load: an error, not an unwinding into the caller.
    let panicked = cache.get_or_set_with::<String, Error, _>("p", None, || panic!("the loader's own bug"));
    assert!(panicked.is_err());
    assert_eq!(guard.watches(), 0, "the panicking load left its watch");
}

/// A delete of a key no level can hold (empty, longer than any level takes) is refused before
/// any level is touched. It reached L1, whose refusal was taken for a failure to apply the
/// delete: every L1 entry was distrusted (a memory L1 was emptied), and a batch with one such
/// key deleted the others from L1 while L2 refused the whole batch.
#[cfg(feature = "redis")]
#[test]
fn a_delete_of_a_key_no_level_can_hold_is_refused_before_any_level_is_touched() {
    let long = "x".repeat(crate::keys::MAX_KEY_LEN + 1);
    for bad in ["", long.as_str()] {
        for batch in [false, true] {
            let l2 = HeldL2::new();
            let cache = memory_l1_with(l2.clone(), crate::CacheConfig::default());
            cache.set_raw("a", b"1", None).unwrap();
            let refused = if batch {
                cache.multi_delete(&["a", bad]).map(drop)
            } else {
                cache.delete(bad).map(drop)
            };
            assert!(
                matches!(refused, Err(Error::InvalidKey { .. })),
                "{refused:?} (batch: {batch})"
            );
            let l2_reads = cache.stats().distributed.misses + cache.stats().distributed.hits;
            assert_eq!(cache.get_raw("a").unwrap().as_deref(), Some(&b"1"[..]));
            assert_eq!(
                cache.stats().distributed.misses + cache.stats().distributed.hits,
                l2_reads,
                "L1 still serves `a` as trusted (batch: {batch}, key of {} bytes)",
                bad.len()
            );
            assert_eq!(
                l2.inner.get("a").unwrap().map(|e| e.value).as_deref(),
                Some(&b"1"[..])
            );
        }
    }
}

/// Without an L2, an invalidation that L1 cannot apply (its deletes and its clear fail: a full
/// disk, a store latched read-only) must not leave the old value readable: nothing can check an
/// entry, so L1 answers nothing (to the batch API too) until a clear works.
/// It went on serving every entry, the invalidated one too, for the rest of the outage.
#[cfg(feature = "redis")]
#[test]
fn without_an_l2_an_invalidation_l1_cannot_apply_leaves_nothing_readable_until_a_clear_works() {
    use std::sync::atomic::Ordering::Relaxed;
    let clock = ManualClock::new(1_000_000);
    let l1 = Arc::new(Delegate(DeletesFail {
        inner: MemoryStore::new(100).unwrap(),
        marks_fail: true.into(),
        sets_fail: false,
        clears_fail: true.into(),
        restored: false,
    }));
    let mut config = crate::CacheConfig::default();
    config.loader.fail_safe_max_duration = Duration::from_secs(3600);
    let cache = crate::CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .local(l1.clone())
        .build()
        .unwrap();
    cache.set("k", &"old".to_owned(), None).unwrap();
    cache.set_raw("other", b"o", None).unwrap();
    // As a received `Keys` message does.
    cache.shared.drop_local(&["k"]);
    assert_eq!(
        cache.get_raw("k").unwrap(),
        None,
        "the invalidated value was served"
    );
    assert!(
        cache.get_with_state::<String>("k").unwrap().is_none(),
        "the invalidated value was served as a fail-safe stale copy"
    );
    assert_eq!(cache.get_raw("other").unwrap(), None, "L1 vouched for an entry");
    assert!(cache.multi_get_raw(&["k", "other"]).unwrap().is_empty());

    l1.clears_fail.store(false, Relaxed);
    clock.advance(Duration::from_millis(crate::manager::consistency::TRUST_RETRY_MS));
    assert_eq!(cache.get_raw("other").unwrap(), None, "the clear took it");
    cache.set_raw("k", b"new", None).unwrap();
    assert_eq!(
        cache.get_raw("k").unwrap().as_deref(),
        Some(&b"new"[..]),
        "L1 is trusted again once a clear worked"
    );
}

/// A panic while the writer thread sent a batch (in an L2 a user plugged in, say) left the batch
/// in flight for good: never sent nor queued for replay, and a settle of its keys waiting on it.
#[test]
fn a_write_behind_batch_whose_sending_panicked_is_queued_for_replay_and_the_writer_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = HeldL2::new();
    let mut config = crate::CacheConfig::default();
    config.distributed.write_mode = crate::WriteMode::Behind;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    let cache = memory_l1_with(l2.clone(), config);
    l2.batch_panics.store(true, std::sync::atomic::Ordering::Relaxed);
    cache.set_raw("k", b"v1", None).unwrap();
    cache.flush().unwrap();
    assert!(cache.shared.is_pending("k"), "the batch was lost");
    assert_eq!(cache.stats().consistency.write_behind_failures, 1);
    cache.set_raw("other", b"v2", None).unwrap();
    cache.flush().unwrap();
    assert_eq!(
        l2.inner.get("other").unwrap().map(|e| e.value).as_deref(),
        Some(&b"v2"[..]),
        "the writer stopped"
    );
}
