//! Tests of `load.rs` that need its internals: what is counted when a load's thread cannot be
//! started, that a load's watch of its key ends however the load ends, the bound on loads
//! given up at the hard timeout that still hang, and that a backfill ends a throttle period.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::config::{CacheConfig, LocalKind};

thread_local! {
    /// Set by [`without_load_threads`]: [`start_load_thread`] fails on this thread.
    pub(super) static NO_LOAD_THREADS: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every load thread started from this thread failing to start.
fn without_load_threads<R>(f: impl FnOnce() -> R) -> R {
    /// Clears the flag however `f` ends, a panic included.
    struct Restore;
    impl Drop for Restore {
        fn drop(&mut self) {
            NO_LOAD_THREADS.with(|no| no.set(false));
        }
    }
    NO_LOAD_THREADS.with(|no| no.set(true));
    let _restore = Restore;
    f()
}

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(10);

fn manager(clock: &ManualClock, config: impl FnOnce(&mut CacheConfig)) -> CacheManager {
    let mut c = CacheConfig::default();
    c.local.kind = LocalKind::Memory;
    config(&mut c);
    CacheManager::builder()
        .config(c)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

/// A timeout, so that `get_or_load` runs its loader on a thread of its own.
fn timed(c: &mut CacheConfig) {
    c.loader.hard_timeout_ms = 60_000;
}

fn value(v: &str) -> impl FnOnce() -> std::result::Result<String, Error> + Send + 'static {
    let v = v.to_owned();
    move || Ok(v)
}

fn is_no_load_thread(e: &Error) -> bool {
    matches!(e, Error::Backend { op: "load", reason, .. } if reason.contains("cannot start a thread"))
}

/// Polls `fut` on this thread, outside any tokio runtime (so an async load takes a thread of its
/// own, the path that can fail to start).
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn a_load_whose_thread_cannot_start_is_not_counted() {
    let cache = manager(&ManualClock::new(START_MS), timed);
    let err = without_load_threads(|| cache.get_or_load::<String, Error, _>("k", Some(TTL), value("v")))
        .unwrap_err();
    assert!(is_no_load_thread(&err), "{err:?}");
    assert_eq!(
        cache.stats().overall.loads,
        0,
        "a load that never ran was counted"
    );
    // The flight was given up: the next call loads, and that load is counted.
    assert_eq!(
        cache.get_or_load("k", Some(TTL), value("v")).unwrap(),
        Fetched::Fresh("v".to_string())
    );
    assert_eq!(cache.stats().overall.loads, 1);
}

#[test]
fn an_async_load_whose_thread_cannot_start_is_not_counted() {
    let cache = manager(&ManualClock::new(START_MS), |_| {});
    let load = || async { Ok::<_, Error>("v".to_string()) };
    let err = without_load_threads(|| block_on(cache.get_or_load_async("k", Some(TTL), load))).unwrap_err();
    assert!(is_no_load_thread(&err), "{err:?}");
    assert_eq!(
        cache.stats().overall.loads,
        0,
        "a load that never ran was counted"
    );
    assert_eq!(
        block_on(cache.get_or_load_async("k", Some(TTL), load)).unwrap(),
        Fetched::Fresh("v".to_string())
    );
    assert_eq!(cache.stats().overall.loads, 1);
}

#[test]
fn a_background_reload_whose_thread_cannot_start_is_not_counted_and_is_retried_by_the_next_hit() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, |c| c.loader.refresh_ahead = 0.5);
    for key in ["a", "b"] {
        cache
            .get_or_load::<String, Error, _>(key, Some(TTL), value("v1"))
            .unwrap();
    }
    // Past half the TTL: a hit on either key is due for a reload.
    clock.advance(Duration::from_secs(6));
    let hit = without_load_threads(|| cache.get_or_load::<String, Error, _>("a", Some(TTL), value("v2")));
    assert_eq!(
        hit.unwrap(),
        Fetched::Fresh("v1".to_string()),
        "the hit still answers"
    );
    let counted = cache.stats();
    assert_eq!(
        (counted.loader.refreshes, counted.overall.loads),
        (0, 2),
        "a reload that never started was counted"
    );
    // The same hit with threads to spare starts (and counts) its reload.
    cache
        .get_or_load::<String, Error, _>("b", Some(TTL), value("v2"))
        .unwrap();
    let counted = cache.stats();
    assert_eq!((counted.loader.refreshes, counted.overall.loads), (1, 3));
    // The key whose reload could not start is due again: its next hit starts one.
    cache
        .get_or_load::<String, Error, _>("a", Some(TTL), value("v2"))
        .unwrap();
    assert_eq!(
        cache.stats().loader.refreshes,
        2,
        "the key whose reload could not start was not retried"
    );
}

/// An async load runs in a task on the caller's runtime, which holds its watch of the key. A
/// runtime shut down while the loader ran dropped the task without ending the watch, which then
/// stayed for the manager's life: every write from then on took the watches' lock.
#[test]
fn an_async_load_whose_runtime_shut_down_mid_load_ends_its_watch() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, |_| {});
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let call = cache.get_or_load_async::<String, Error, _, _>("k", Some(TTL), || {
            std::future::pending::<std::result::Result<String, Error>>()
        });
        let mut call = std::pin::pin!(call);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(call.as_mut().poll(&mut cx).is_pending(), "the loader never ends");
    });
    assert_eq!(cache.shared.guard.watches(), 1, "the load watches its key");
    drop(runtime);
    assert_eq!(
        cache.shared.guard.watches(),
        0,
        "the load's task was dropped with the runtime, and left its watch"
    );
}

/// A value whose `Serialize` panics: the user's bug, met by the load's store.
#[derive(Debug, Clone, serde::Deserialize)]
struct PanicsAsItEncodes;

impl Serialize for PanicsAsItEncodes {
    fn serialize<S: serde::Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
        panic!("the value's own Serialize panicked")
    }
}

/// A loaded value that panics as the store encodes it, on the load's thread, is a load that
/// stopped without an answer, as a panicking loader is: its caller gets that error, and the
/// load's watch of the key ends. The watch stayed for the manager's life (every write from then
/// on took the watches' lock), and the flight could end before the report channel closed, so
/// the caller could take its load for one given up at the hard timeout.
#[test]
fn a_loaded_value_that_panics_as_it_is_stored_apart_is_a_load_without_an_answer_and_ends_its_watch() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, timed);
    let err = cache
        .get_or_load::<PanicsAsItEncodes, Error, _>("k", Some(TTL), || Ok(PanicsAsItEncodes))
        .unwrap_err();
    assert!(
        matches!(&err, Error::Backend { op: "load", reason, .. } if reason.contains("without an answer")),
        "{err:?}"
    );
    assert_eq!(cache.stats().loader.hard_timeouts, 0);
    assert_eq!(
        cache.shared.guard.watches(),
        0,
        "the load's watch was left in place"
    );
}

/// A source that hangs (a connection whose packets are dropped, no timeout of its own): each
/// call past the hard timeout gave its key up and started another load, on a thread of its own,
/// which hung too. Nothing bounded them: a key asked every hard timeout left a thread behind
/// each time, for as long as the source hung, until the process had no memory or threads left.
/// Past the bound, a caller is answered as at the hard timeout, without a load.
#[test]
fn loads_given_up_at_the_hard_timeout_that_still_hang_are_bounded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, |c| c.loader.hard_timeout_ms = 5);
    let hanging = Arc::new(AtomicUsize::new(0));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = Arc::new(parking_lot::Mutex::new(released));
    let bound = crate::manager::loader::MAX_HUNG;
    for i in 0..bound + 40 {
        let (hanging, released) = (Arc::clone(&hanging), Arc::clone(&released));
        let got = cache.get_or_load(&format!("k{}", i % 3), Some(TTL), move || {
            hanging.fetch_add(1, Ordering::SeqCst);
            // Each hung loader waits for the test to end it: one message each, or the sender's drop.
            let _ = released.lock().recv();
            hanging.fetch_sub(1, Ordering::SeqCst);
            Ok::<String, Error>("late".into())
        });
        assert!(matches!(got, Err(Error::LoaderTimeout { .. })), "{got:?}");
    }
    let hung = hanging.load(Ordering::SeqCst);
    assert!(hung <= bound, "{hung} loaders hang, each on a thread of its own");
    assert_eq!(cache.stats().loader.hard_timeouts, (bound + 40) as u64);
    drop(release);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while hanging.load(Ordering::SeqCst) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the hung loaders never ended"
        );
        std::thread::yield_now();
    }
    // Once they returned, the key loads again.
    let again = cache.get_or_load("fresh", Some(TTL), value("v"));
    assert!(
        matches!(again, Ok(Fetched::Fresh(ref v)) if v == "v"),
        "{again:?}"
    );
}

/// The async form of the bound: a loader future that never completes holds its task.
#[test]
fn async_loads_given_up_at_the_hard_timeout_that_still_hang_are_bounded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    /// Counts a hung loader's future from its first poll to its drop.
    struct Hanging(Arc<AtomicUsize>);
    impl Drop for Hanging {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, |c| c.loader.hard_timeout_ms = 5);
    let hanging = Arc::new(AtomicUsize::new(0));
    let bound = crate::manager::loader::MAX_HUNG;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        for i in 0..bound + 20 {
            let hanging = Arc::clone(&hanging);
            let got = cache
                .get_or_load_async(&format!("k{}", i % 3), Some(TTL), move || async move {
                    hanging.fetch_add(1, Ordering::SeqCst);
                    let _held = Hanging(hanging);
                    std::future::pending::<()>().await;
                    Ok::<String, Error>("never".into())
                })
                .await;
            assert!(matches!(got, Err(Error::LoaderTimeout { .. })), "{got:?}");
        }
    });
    let hung = hanging.load(Ordering::SeqCst);
    assert!(hung <= bound, "{hung} loader futures hang, each holding its task");
    drop(runtime);
    assert_eq!(hanging.load(Ordering::SeqCst), 0);
}

/// A value L1 took from L2 after a failed load (another instance wrote it) is not the stale copy
/// the throttle period serves, as a write of the key here is not: once it expired within the
/// period, the period served it stale with the source unasked.
#[test]
fn a_value_backfilled_after_a_failed_load_ends_its_throttle_period() {
    use crate::storage::Storage;
    let clock = ManualClock::new(crate::clock::system_time_to_ms(std::time::SystemTime::now()));
    let l2 = Arc::new(crate::local::memory::MemoryStore::new(100).unwrap());
    let mut c = CacheConfig::default();
    c.local.kind = LocalKind::Memory;
    c.loader.fail_safe_max_duration = Duration::from_secs(600);
    c.loader.fail_safe_throttle = Duration::from_secs(5);
    let cache = CacheManager::builder()
        .config(c)
        .clock(Arc::new(clock.clone()))
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    cache.set("k", &"v1".to_owned(), Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    // L2's copy expired too (its clock is the system's).
    l2.delete("k").unwrap();
    let source_down = || -> std::result::Result<String, Error> {
        Err(Error::Backend {
            level: "source",
            op: "load",
            reason: "down (test)".into(),
        })
    };
    let got = cache.get_or_load("k", Some(TTL), source_down).unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    // Another instance writes "w", with a TTL that ends within the period (L2's clock is
    // behind the manager's by the 11 s advanced); a read here takes it into L1.
    let w = cache.shared.codec.encode("k", &"w".to_owned()).unwrap();
    l2.set("k", &w, Some(TTL + Duration::from_secs(3))).unwrap();
    let got = cache.get_or_load("k", Some(TTL), value("unused")).unwrap();
    assert_eq!(got, Fetched::Fresh("w".to_string()));
    clock.advance(Duration::from_secs(3));
    l2.delete("k").unwrap();
    let got = cache.get_or_load("k", Some(TTL), value("v2")).unwrap();
    assert_eq!(
        got,
        Fetched::Fresh("v2".to_string()),
        "the expired backfill was served stale, the source unasked"
    );
    assert_eq!(cache.stats().loader.throttled, 0);
}

/// A load on a thread of its own stores its value as work apart from its caller, counted in
/// while it holds the manager's shared state, so the last handle's drop waits for it and
/// releases the state itself. The store's manager was a temporary of the function's tail
/// expression, which lives past the function's locals: past the count-out. Then the drop, no
/// longer waiting, returned with the state still held by the load's thread, released there a
/// moment later, and the file store L1 with it: a reopen right after the drop found the store
/// locked now and then. Held right after its count-out, the load holds nothing of the manager.
#[test]
fn a_load_apart_counted_out_holds_nothing_of_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    let open = || crate::FileStore::open(dir.path(), crate::FileStoreOptions::default());
    let mut c = CacheConfig::default();
    timed(&mut c);
    let cache = CacheManager::builder()
        .config(c)
        .local(Arc::new(open().unwrap()))
        .build()
        .unwrap();
    let shared = Arc::downgrade(&cache.shared);
    let hold = Arc::new(std::sync::Barrier::new(2));
    let theirs = Arc::clone(&hold);
    let got = cache
        .get_or_load("k", Some(TTL), move || {
            // On the load's thread: its count-out, once it has stored, holds there.
            crate::manager::apart::tests::hold_this_thread_when_counted_out(theirs);
            Ok::<_, Error>("v".to_owned())
        })
        .unwrap();
    assert_eq!(got, Fetched::Fresh("v".to_owned()));
    // The load has counted out, and is held there until the second meeting.
    hold.wait();
    drop(cache);
    let still_held = shared.strong_count();
    let reopened = open();
    hold.wait();
    assert_eq!(
        still_held, 0,
        "the manager's shared state outlived its drop, held by a load counted out"
    );
    reopened
        .unwrap_or_else(|e| panic!("the store could not be reopened right after the manager's drop: {e}"));
}
