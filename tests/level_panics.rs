//! Levels of the user's own that panic: an L2 (or L1) plugged in through the builder whose
//! calls panic is a level whose calls failed, not a panic unwinding through the manager into
//! the caller. Its call is a failed call of that level (`Error::Backend` naming the level, the
//! op and the key), so the manager's rules for a failed level call hold: a write L2 did not
//! take is queued for replay under `fallback_on_error` or taken out of L1 without it, the
//! failure is counted, and the key's later calls neither deadlock nor find it half-done.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/delegate.rs"]
mod delegate;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use delegate::{Delegate, Wrap, WrapLocal};
use uno_cache::distributed::{BreakerState, CircuitBreaker, Guarded};
use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, Entry, Error, InProcess, LocalKind, LocalStorage,
    MemoryStore, Result, Storage, StorageSize, WriteMode,
};

/// A memory level whose data calls panic while `panics` is set, as a faulty level a user
/// plugged in might (and fail with an error while `fails` is set).
struct Panicky {
    inner: MemoryStore,
    panics: AtomicBool,
    fails: AtomicBool,
}

impl Panicky {
    fn new() -> Self {
        Panicky {
            inner: MemoryStore::new(1000).unwrap(),
            panics: AtomicBool::new(false),
            fails: AtomicBool::new(false),
        }
    }

    fn check(&self, op: &str) {
        if self.panics.load(Ordering::SeqCst) {
            panic!("{op} panicked (test)");
        }
    }

    fn answer(&self, op: &'static str) -> Result<()> {
        self.check(op);
        if self.fails.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                level: "custom",
                op,
                reason: "down (test)".to_owned(),
            });
        }
        Ok(())
    }
}

impl Wrap for Panicky {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn name(&self) -> &str {
        "custom"
    }
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.check("get");
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.answer("set")?;
        self.inner.set(key, value, ttl)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.check("delete");
        self.inner.delete(key)
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.check("get_many");
        self.inner.get_many(keys)
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.check("set_many");
        self.inner.set_many(items, ttl)
    }
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.answer("set_each")?;
        self.inner.set_each(items)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.check("delete_many");
        self.inner.delete_many(keys)
    }
    fn size(&self) -> Result<StorageSize> {
        self.check("size");
        self.inner.size()
    }
    fn clear(&self) -> Result<()> {
        self.check("clear");
        self.inner.clear()
    }
}

impl WrapLocal for Panicky {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, uno_cache::Freshness)>> {
        self.check("get_checked");
        self.inner.get_checked(key)
    }
}

struct Setup {
    cache: CacheManager,
    l1: Arc<Delegate<Panicky>>,
    l2: Arc<Delegate<Panicky>>,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn l2_panics(&self, on: bool) {
        self.l2.panics.store(on, Ordering::SeqCst);
    }
    fn l1_panics(&self, on: bool) {
        self.l1.panics.store(on, Ordering::SeqCst);
    }
    fn l1_holds(&self, key: &str) -> bool {
        self.l1.inner.get(key).unwrap().is_some()
    }
    fn l2_value(&self, key: &str) -> Option<Vec<u8>> {
        self.l2.inner.get(key).unwrap().map(|e| e.value.to_vec())
    }
    fn queued(&self) -> usize {
        self.cache.replay_queue().map_or(0, |q| q.len())
    }
}

/// A manager over a panicky memory L1 and a panicky in-process L2 (neither panics until told),
/// with a replay queue only `replay_now` replays.
fn setup(fallback: bool, mode: WriteMode) -> Setup {
    setup_replaying_every(fallback, mode, 3_600_000)
}

fn setup_replaying_every(fallback: bool, mode: WriteMode, replay_ms: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.fallback_on_error = fallback;
    config.distributed.write_mode = mode;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = replay_ms;
    let l1 = Arc::new(Delegate(Panicky::new()));
    let l2 = Arc::new(Delegate(Panicky::new()));
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::clone(&l1) as Arc<dyn LocalStorage>)
        .distributed(Arc::new(InProcess::shared(Arc::clone(&l2))) as Arc<dyn DistributedStorage>)
        .build()
        .unwrap();
    Setup {
        cache,
        l1,
        l2,
        _dir: dir,
    }
}

/// `call()`, failing the test if the level's panic unwound into the caller.
fn no_unwind<T>(what: &str, call: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(call))
        .unwrap_or_else(|_| panic!("{what}: the level's panic unwound through the manager into the caller"))
}

/// The error names the level, the op and the key.
fn names(e: &Error, level: &str, op: &str, key: &str) {
    match e {
        Error::Backend {
            level: l,
            op: o,
            reason,
        } => {
            assert_eq!(*l, level, "{e}");
            assert!(o.starts_with(op), "{e}: op {o:?} is not {op:?}");
            assert!(reason.contains(key), "{e}: the key {key:?} is not named");
            assert!(reason.contains("panicked"), "{e}: the panic is not named");
        }
        other => panic!("expected a Backend error of {level}, got {other:?}"),
    }
}

/// Polls `ready` until it holds, for at most 15 s (the support module needs the `redis`
/// feature, which these tests do not).
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what}: not after 15 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Without `fallback_on_error`, a set whose L2 panics fails as a failed L2 write does: the
/// caller is told (the error names L2 and the key), L1 does not keep what L2 never took, the
/// failure is counted, and the key's next set (L2 well again) is neither blocked nor lost.
#[test]
fn a_set_whose_l2_panics_fails_and_leaves_l1_without_the_value() {
    let s = setup(false, WriteMode::Through);
    s.l2_panics(true);
    let e = no_unwind("set_raw", || s.cache.set_raw("k", b"v", None)).unwrap_err();
    names(&e, "L2", "set", "k");
    assert!(!s.l1_holds("k"), "L1 kept a value L2 never took");
    assert_eq!(
        s.cache.stats().distributed.errors,
        1,
        "the panic was not counted as an L2 error"
    );
    s.l2_panics(false);
    s.cache.set_raw("k", b"w", None).unwrap();
    assert_eq!(s.l2_value("k").as_deref(), Some(&b"w"[..]));
    assert_eq!(s.cache.get_raw("k").unwrap().as_deref(), Some(&b"w"[..]));
}

#[test]
fn an_async_set_whose_l2_panics_fails_and_leaves_l1_without_the_value() {
    let s = setup(false, WriteMode::Through);
    let rt = runtime();
    s.l2_panics(true);
    let e = no_unwind("set_raw_async", || {
        rt.block_on(s.cache.set_raw_async("k", b"v", None))
    })
    .unwrap_err();
    names(&e, "L2", "set", "k");
    assert!(!s.l1_holds("k"), "L1 kept a value L2 never took");
    s.l2_panics(false);
    rt.block_on(s.cache.set_raw_async("k", b"w", None)).unwrap();
    assert_eq!(s.l2_value("k").as_deref(), Some(&b"w"[..]));
}

/// With `fallback_on_error`, the panicking write is hidden and queued for replay, as a failed
/// one is; the replay brings L2 the value once the level is well again.
#[test]
fn a_set_whose_l2_panics_is_queued_for_replay_under_fallback() {
    let s = setup(true, WriteMode::Through);
    s.l2_panics(true);
    no_unwind("set_raw", || s.cache.set_raw("k", b"v", None)).unwrap();
    assert_eq!(s.queued(), 1, "the write L2 never took was not queued for replay");
    assert!(s.l1_holds("k"));
    s.l2_panics(false);
    s.cache.replay_now().unwrap();
    assert_eq!(s.l2_value("k").as_deref(), Some(&b"v"[..]));
}

#[test]
fn an_async_batch_set_whose_l2_panics_is_queued_for_replay_under_fallback() {
    let s = setup(true, WriteMode::Through);
    let rt = runtime();
    s.l2_panics(true);
    no_unwind("multi_set_raw_async", || {
        rt.block_on(s.cache.multi_set_raw_async(&[("a", b"1"), ("b", b"2")], None))
    })
    .unwrap();
    assert_eq!(s.queued(), 2);
    s.l2_panics(false);
    s.cache.replay_now().unwrap();
    assert_eq!(s.l2_value("a").as_deref(), Some(&b"1"[..]));
    assert_eq!(s.l2_value("b").as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_batch_set_whose_l2_panics_fails_and_leaves_l1_without_the_values() {
    let s = setup(false, WriteMode::Through);
    s.l2_panics(true);
    let e = no_unwind("multi_set_raw", || {
        s.cache.multi_set_raw(&[("a", b"1"), ("b", b"2")], None)
    })
    .unwrap_err();
    names(&e, "L2", "set", "a");
    assert!(
        !s.l1_holds("a") && !s.l1_holds("b"),
        "L1 kept values L2 never took"
    );
    s.l2_panics(false);
    s.cache.multi_set_raw(&[("a", b"3"), ("b", b"4")], None).unwrap();
    assert_eq!(s.l2_value("b").as_deref(), Some(&b"4"[..]));
}

/// A delete whose L2 panics: L2 keeps the value, and the caller is told, as after a failed L2
/// delete; the next read (L2 well again) answers what L2 holds, never an L1 copy.
#[test]
fn a_delete_whose_l2_panics_fails_and_the_key_is_read_from_l2_after() {
    let s = setup(false, WriteMode::Through);
    s.cache.set_raw("k", b"v", None).unwrap();
    s.l2_panics(true);
    let e = no_unwind("delete", || s.cache.delete("k")).unwrap_err();
    names(&e, "L2", "delete", "k");
    let e = no_unwind("multi_delete", || s.cache.multi_delete(&["k"])).unwrap_err();
    names(&e, "L2", "delete", "k");
    s.l2_panics(false);
    assert_eq!(s.cache.get_raw("k").unwrap(), s.l2_value("k"));
    assert!(s.cache.delete("k").unwrap());
    assert_eq!(s.l2_value("k"), None);
}

/// Reads whose L2 panics fail as failed L2 reads: an error without `fallback_on_error`, a miss
/// with it, counted either way.
#[test]
fn reads_whose_l2_panics_are_failed_l2_reads() {
    let rt = runtime();
    let s = setup(false, WriteMode::Through);
    s.l2_panics(true);
    let e = no_unwind("get_raw", || s.cache.get_raw("k")).unwrap_err();
    names(&e, "L2", "get", "k");
    let e = no_unwind("get_raw_async", || rt.block_on(s.cache.get_raw_async("k"))).unwrap_err();
    names(&e, "L2", "get", "k");
    no_unwind("multi_get_raw", || s.cache.multi_get_raw(&["k", "j"])).unwrap_err();
    assert!(s.cache.stats().distributed.errors >= 3);

    let s = setup(true, WriteMode::Through);
    s.l2_panics(true);
    assert_eq!(no_unwind("get_raw", || s.cache.get_raw("k")).unwrap(), None);
    assert!(no_unwind("multi_get_raw_async", || rt
        .block_on(s.cache.multi_get_raw_async(&["k", "j"])))
    .unwrap()
    .is_empty());
    assert_eq!(s.cache.stats().distributed.errors, 2);
}

/// Write-behind: the writer thread survives a panicking L2 and goes on sending once it is well;
/// without a replay queue to hide the failure, the write leaves L1 and the next flush reports it.
#[test]
fn the_write_behind_writer_survives_a_panicking_l2() {
    let s = setup(false, WriteMode::Behind);
    s.l2_panics(true);
    no_unwind("set_raw", || s.cache.set_raw("k", b"v", None)).unwrap();
    let e = no_unwind("flush", || s.cache.flush()).unwrap_err();
    assert!(matches!(e, Error::WriteBehindLost { .. }), "{e:?}");
    assert!(!s.l1_holds("k"), "L1 kept a value L2 never took");
    s.l2_panics(false);
    s.cache.set_raw("k", b"w", None).unwrap();
    s.cache.flush().unwrap();
    assert_eq!(s.l2_value("k").as_deref(), Some(&b"w"[..]));
}

/// The replay thread survives an L2 that panics while it replays: the pass fails (counted),
/// the op stays queued, and a later pass, the level well again, brings it to L2.
#[test]
fn the_replay_thread_survives_a_panicking_l2() {
    let s = setup_replaying_every(true, WriteMode::Through, 20);
    s.l2.fails.store(true, Ordering::SeqCst);
    s.cache.set_raw("k", b"v", None).unwrap();
    assert_eq!(s.queued(), 1);
    let failed = s.cache.stats().consistency.replay_failures;
    s.l2_panics(true);
    wait_until("a replay pass to meet the panic", || {
        s.cache.stats().consistency.replay_failures > failed
    });
    assert_eq!(
        s.queued(),
        1,
        "the op the panicking pass did not replay left the queue"
    );
    s.l2_panics(false);
    s.l2.fails.store(false, Ordering::SeqCst);
    wait_until("the replay thread to replay the op", || s.queued() == 0);
    assert_eq!(s.l2_value("k").as_deref(), Some(&b"v"[..]));
}

/// An L1 that panics fails the call as an L1 error (naming L1 and the key), and the key's next
/// calls, the level well again, go through.
#[test]
fn calls_whose_l1_panics_fail_as_l1_errors() {
    let rt = runtime();
    let s = setup(true, WriteMode::Through);
    s.l1_panics(true);
    let e = no_unwind("set_raw", || s.cache.set_raw("k", b"v", None)).unwrap_err();
    names(&e, "L1", "set", "k");
    let e = no_unwind("set_raw_async", || {
        rt.block_on(s.cache.set_raw_async("k", b"v", None))
    })
    .unwrap_err();
    names(&e, "L1", "set", "k");
    // With fallback on, the read is answered by L2 (which the failed sets never reached).
    let got = no_unwind("get_raw", || s.cache.get_raw("k"));
    assert!(matches!(got, Ok(None)), "{got:?}");
    let e = no_unwind("delete", || s.cache.delete("k")).unwrap_err();
    names(&e, "L1", "delete", "k");
    // Each of the four panics counted as an L1 error: two sets, the read and the delete.
    assert_eq!(s.cache.stats().local.errors, 4);
    s.l1_panics(false);
    s.cache.set_raw("k", b"w", None).unwrap();
    assert_eq!(s.cache.get_raw("k").unwrap().as_deref(), Some(&b"w"[..]));
}

/// Stats read L2's size: a panicking `size` leaves the stats without it, not the caller unwound.
#[test]
fn stats_survive_a_panicking_l2_size() {
    let s = setup(true, WriteMode::Through);
    s.l2_panics(true);
    let stats = no_unwind("stats", || s.cache.stats());
    let why = stats.distributed.size_error.expect("no size error");
    assert!(why.contains("panicked"), "{why}");
}

/// A user's L2 behind a breaker of their own: its panics are failures the breaker counts,
/// so that it opens after as many as it is set to, as for any failing level.
#[test]
fn a_breaker_in_front_of_a_panicking_l2_counts_its_panics() {
    let dir = tempfile::tempdir().unwrap();
    let breaker = Arc::new(CircuitBreaker::new(2, Duration::from_secs(3600)));
    let l2 = Arc::new(Delegate(Panicky::new()));
    l2.panics.store(true, Ordering::SeqCst);
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    let cache = CacheManager::builder()
        .config(config)
        .distributed(Arc::new(InProcess::new(Guarded::new(
            "custom",
            InProcess::shared(Arc::clone(&l2)),
            Arc::clone(&breaker),
        ))))
        .breaker(Arc::clone(&breaker))
        .build()
        .unwrap();
    for key in ["a", "b"] {
        no_unwind("get_raw", || cache.get_raw(key)).unwrap();
    }
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "the breaker did not count the panics"
    );
}

/// A value whose `Serialize` or `Deserialize` panics: the caller's own code, on the caller's
/// thread, so the panic reaches it; but the value is encoded before any level is written and
/// decoded after the read, so neither level is left half-changed and the key's later calls go
/// through.
#[test]
fn a_value_whose_serde_panics_leaves_both_levels_as_they_were() {
    struct Bad;
    impl serde::Serialize for Bad {
        fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            panic!("serialize panicked (test)");
        }
    }
    #[derive(Clone)]
    struct BadRead;
    impl<'de> serde::Deserialize<'de> for BadRead {
        fn deserialize<D: serde::Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
            panic!("deserialize panicked (test)");
        }
    }
    for mode in [WriteMode::Through, WriteMode::Behind] {
        let s = setup(false, mode);
        s.cache.set("k", &1u32, None).unwrap();
        s.cache.flush().unwrap();
        assert!(catch_unwind(AssertUnwindSafe(|| s.cache.set("k", &Bad, None))).is_err());
        s.cache.flush().unwrap();
        assert_eq!(s.cache.get::<u32>("k").unwrap(), Some(1), "{mode:?}");
        assert_eq!(
            s.l2_value("k"),
            s.l1.inner.get("k").unwrap().map(|e| e.value.to_vec())
        );
        assert!(catch_unwind(AssertUnwindSafe(|| s.cache.get::<BadRead>("k"))).is_err());
        s.cache.set("k", &2u32, None).unwrap();
        s.cache.flush().unwrap();
        assert_eq!(s.cache.get::<u32>("k").unwrap(), Some(2), "{mode:?}");
        assert!(s.cache.delete("k").unwrap());
        s.cache.flush().unwrap();
        assert_eq!(s.l2_value("k"), None);
    }
}
