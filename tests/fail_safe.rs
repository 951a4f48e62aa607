//! Fail-safe and loader timeouts (`[loader]`): an expired value is kept and served, marked
//! stale, when its loader fails or is slow; a dead source is asked once per throttle period; a
//! hung loader never holds its callers past the hard timeout nor its key's load slot for good;
//! and a plain `get` never returns a stale copy.
//!
//! Loaders are held on channels the test releases, so "the caller returned while the load went
//! on" is shown by the order of events, not by timing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use uno_cache::{CacheConfig, CacheManager, Error, Fetched, LocalKind, ManualClock, MemoryStore};

mod manager_support;

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
enum AppError {
    SourceDown,
    Cache(#[allow(dead_code)] Error),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Cache(e)
    }
}

struct Rig {
    cache: CacheManager,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

fn config(dir: &std::path::Path, fail_safe_s: u64, soft_ms: u64, hard_ms: u64) -> CacheConfig {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::File;
    config.local.path = Some(dir.to_owned());
    config.loader.fail_safe_max_duration = Duration::from_secs(fail_safe_s);
    config.loader.fail_safe_throttle = Duration::from_secs(5);
    config.loader.soft_timeout_ms = soft_ms;
    config.loader.hard_timeout_ms = hard_ms;
    config
}

fn rig(fail_safe_s: u64, soft_ms: u64, hard_ms: u64) -> Rig {
    rig_with(fail_safe_s, soft_ms, hard_ms, |_| {})
}

fn rig_with(fail_safe_s: u64, soft_ms: u64, hard_ms: u64, edit: impl FnOnce(&mut CacheConfig)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let mut config = config(dir.path(), fail_safe_s, soft_ms, hard_ms);
    edit(&mut config);
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Rig {
        cache,
        clock,
        _dir: dir,
    }
}

/// The key holds "v1", which has just expired.
fn expired_v1(rig: &Rig) {
    rig.cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
    rig.clock.advance(TTL + Duration::from_secs(1));
}

fn failing() -> Result<String, AppError> {
    Err(AppError::SourceDown)
}

#[test]
fn a_failing_loader_gets_the_stale_copy_instead_of_its_error() {
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    assert_eq!(
        rig.cache.get::<String>("k").unwrap(),
        None,
        "a plain get never serves it"
    );
    let got: String = rig.cache.get_or_set_with("k", Some(TTL), failing).unwrap();
    assert_eq!(got, "v1");
    let stats = rig.cache.stats().loader;
    assert!(stats.fail_safe);
    assert_eq!((stats.failures, stats.stale_served), (1, 1), "{stats:?}");
    // Still expired for plain reads: the stale copy was not rewritten as fresh.
    assert_eq!(rig.cache.get::<String>("k").unwrap(), None);
}

#[test]
fn without_fail_safe_the_loaders_error_reaches_the_caller() {
    let rig = rig(0, 0, 0);
    expired_v1(&rig);
    let err = rig.cache.get_or_set_with("k", Some(TTL), failing).unwrap_err();
    assert!(matches!(err, AppError::SourceDown), "{err:?}");
    assert_eq!(rig.cache.stats().loader.stale_served, 0);
}

#[test]
fn past_the_fail_safe_window_the_error_reaches_the_caller() {
    let rig = rig(60, 0, 0);
    expired_v1(&rig);
    rig.clock.advance(Duration::from_secs(61));
    let err = rig.cache.get_or_set_with("k", Some(TTL), failing).unwrap_err();
    assert!(matches!(err, AppError::SourceDown), "{err:?}");
}

#[test]
fn the_throttle_keeps_a_dead_source_from_being_asked_until_it_ends() {
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    let calls = AtomicU32::new(0);
    let counting = || {
        calls.fetch_add(1, Ordering::SeqCst);
        Err::<String, _>(AppError::SourceDown)
    };
    assert_eq!(rig.cache.get_or_set_with("k", Some(TTL), counting).unwrap(), "v1");
    for _ in 0..5 {
        assert_eq!(rig.cache.get_or_set_with("k", Some(TTL), counting).unwrap(), "v1");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "throttled calls do not ask the source"
    );
    assert_eq!(rig.cache.stats().loader.throttled, 5);
    // The throttle period (5 s) ends: the source is asked again, and a live one is used.
    rig.clock.advance(Duration::from_secs(6));
    let fresh: String = rig
        .cache
        .get_or_set_with("k", Some(TTL), || Ok::<_, AppError>("v2".to_string()))
        .unwrap();
    assert_eq!(fresh, "v2");
    assert_eq!(rig.cache.get::<String>("k").unwrap().as_deref(), Some("v2"));
}

#[test]
fn get_with_state_tells_a_fresh_value_from_a_stale_copy() {
    let rig = rig(600, 0, 0);
    rig.cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
    assert_eq!(
        rig.cache.get_with_state::<String>("k").unwrap(),
        Some(Fetched::Fresh("v1".to_string()))
    );
    rig.clock.advance(TTL + Duration::from_secs(1));
    let stale = rig.cache.get_with_state::<String>("k").unwrap().unwrap();
    assert!(stale.is_stale());
    assert_eq!(stale.into_value(), "v1");
    assert_eq!(rig.cache.get_with_state::<String>("missing").unwrap(), None);
}

#[test]
fn a_deleted_or_invalidated_key_has_no_stale_copy_to_serve() {
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    rig.cache.delete("k").unwrap();
    assert!(rig.cache.get_or_set_with("k", Some(TTL), failing).is_err());
    rig.cache.set("user:1", &"a".to_string(), Some(TTL)).unwrap();
    rig.clock.advance(TTL + Duration::from_secs(1));
    rig.cache.invalidate_prefix("user:").unwrap();
    assert_eq!(rig.cache.get_with_state::<String>("user:1").unwrap(), None);
}

/// The timed form reads the stale copy before it waits; a delete (or a write, or an
/// invalidation) of the key while the loader runs makes that copy one no caller may get.
#[test]
fn a_key_deleted_while_its_timed_load_runs_has_no_stale_copy_to_serve() {
    // A loader that fails at once, and one slower than the soft timeout (the sleep is the
    // scenario, not a synchronisation: the caller's soft timeout passes while it runs).
    for (soft_ms, slow) in [(0, Duration::ZERO), (20, Duration::from_millis(300))] {
        let rig = rig(600, soft_ms, 10_000);
        expired_v1(&rig);
        let cache = rig.cache.clone();
        let got = rig
            .cache
            .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
                cache.delete("k").unwrap();
                std::thread::sleep(slow);
                failing()
            });
        // The loader's error, or the timeout once the caller stopped waiting: never the copy.
        assert!(
            matches!(
                got,
                Err(AppError::SourceDown | AppError::Cache(Error::LoaderTimeout { .. }))
            ),
            "soft timeout {soft_ms} ms: {got:?}"
        );
        assert_eq!(rig.cache.get::<String>("k").unwrap(), None);
    }
}

#[test]
fn the_stale_copy_survives_a_restart_of_the_process_state() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let build = || {
        CacheManager::builder()
            .config(config(dir.path(), 600, 0, 0))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    };
    {
        let cache = build();
        cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
        cache.flush().unwrap();
    }
    clock.advance(TTL + Duration::from_secs(1));
    let cache = build();
    assert_eq!(cache.get::<String>("k").unwrap(), None);
    assert_eq!(cache.get_or_set_with("k", Some(TTL), failing).unwrap(), "v1");
}

#[test]
fn get_or_load_serves_the_stale_copy_at_the_soft_timeout_and_the_load_then_refreshes_the_entry() {
    let rig = rig(600, 50, 10_000);
    expired_v1(&rig);
    let (release, gate) = mpsc::channel::<()>();
    let started = Instant::now();
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), move || {
            gate.recv().unwrap();
            Ok::<_, AppError>("v2".to_string())
        })
        .unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(rig.cache.stats().loader.soft_timeouts, 1);
    // The load goes on: released, it stores v2. A waiter without a deadline sees it.
    release.send(()).unwrap();
    let fresh: String = rig.cache.get_or_set_with("k", Some(TTL), failing).unwrap();
    assert_eq!(fresh, "v2");
    assert_eq!(rig.cache.get::<String>("k").unwrap().as_deref(), Some("v2"));
    assert_eq!(rig.cache.stats().overall.loads, 1);
}

#[test]
fn get_or_load_without_a_stale_copy_gives_up_at_the_hard_timeout_and_frees_the_key() {
    let rig = rig(600, 0, 100);
    let (release, gate) = mpsc::channel::<()>();
    let err = rig
        .cache
        .get_or_load("k", Some(TTL), move || {
            let _ = gate.recv();
            Ok::<_, AppError>("late".to_string())
        })
        .unwrap_err();
    match err {
        AppError::Cache(Error::LoaderTimeout { key, after }) => {
            assert_eq!(key, "k");
            assert_eq!(after, Duration::from_millis(100));
        }
        other => panic!("expected LoaderTimeout, got {other:?}"),
    }
    assert_eq!(rig.cache.stats().loader.hard_timeouts, 1);
    // The hung load does not hold the key: the next call loads afresh at once.
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), || Ok::<_, AppError>("now".to_string()))
        .unwrap();
    assert_eq!(got, Fetched::Fresh("now".to_string()));
    drop(release);
}

/// "No caller waits longer than `hard_timeout_ms`", also a waiter whose flight another caller
/// gave up at the hard deadline before the waiter's task ran again: it gets the timeout. It
/// took the given-up flight for a failed one, led a new load with its own loader and waited a
/// whole hard timeout more.
#[test]
fn a_waiter_of_a_flight_given_up_at_the_hard_timeout_does_not_start_over() {
    const HARD_MS: u64 = 300;
    let rig = rig(600, 0, HARD_MS);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (started_tx, started) = mpsc::channel::<()>();
    let (release, gate) = mpsc::channel::<()>();
    let began = Instant::now();
    std::thread::scope(|scope| {
        // The leader: a caller whose loader hangs past the hard timeout.
        let leader = scope.spawn(|| {
            rig.cache.get_or_load("h", Some(TTL), move || {
                started_tx.send(()).unwrap();
                let _ = gate.recv();
                Ok::<_, AppError>("late".to_string())
            })
        });
        started.recv().unwrap();
        let second_loader_ran = AtomicU32::new(0);
        let mut waiter = Box::pin(rig.cache.get_or_load_async("h", Some(TTL), || {
            second_loader_ran.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<String, AppError>>()
        }));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            waiter.as_mut().poll(&mut cx).is_pending(),
            "the waiter joins the flight"
        );
        assert_eq!(rig.cache.stats().overall.load_waits, 1);
        // The waiter's task is not polled again until after the hard deadline (a busy
        // executor); meanwhile the leader gives the flight up.
        let led = leader.join().unwrap();
        assert!(
            matches!(led, Err(AppError::Cache(Error::LoaderTimeout { .. }))),
            "{led:?}"
        );
        let got = runtime.block_on(waiter);
        let waited = began.elapsed();
        assert!(
            matches!(got, Err(AppError::Cache(Error::LoaderTimeout { .. }))),
            "{got:?}"
        );
        assert_eq!(
            second_loader_ran.load(Ordering::SeqCst),
            0,
            "the waiter, past its hard deadline, loaded again"
        );
        // A second load would have held it until twice the hard timeout.
        assert!(
            waited < Duration::from_millis(HARD_MS * 2),
            "waited {waited:?} with a hard timeout of {HARD_MS} ms"
        );
        assert_eq!(rig.cache.stats().loader.hard_timeouts, 2, "both callers gave up");
    });
    drop(release);
}

#[test]
fn get_or_load_serves_the_stale_copy_when_its_loader_fails() {
    let rig = rig(600, 50, 1_000);
    expired_v1(&rig);
    let got = rig.cache.get_or_load("k", Some(TTL), failing).unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    let stats = rig.cache.stats().loader;
    assert_eq!((stats.failures, stats.stale_served), (1, 1), "{stats:?}");
    // Throttled now: no loader call.
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), || -> Result<String, AppError> {
            panic!("throttled")
        })
        .unwrap();
    assert!(got.is_stale());
}

#[test]
fn callers_with_timeouts_still_share_one_load() {
    let rig = rig(600, 0, 10_000);
    let calls = Arc::new(AtomicU32::new(0));
    let (release, gate) = mpsc::channel::<()>();
    let gate = Arc::new(parking_lot::Mutex::new(Some(gate)));
    let callers = 8;
    let barrier = Barrier::new(callers);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                let (calls, gate, barrier, cache) =
                    (Arc::clone(&calls), Arc::clone(&gate), &barrier, &rig.cache);
                s.spawn(move || {
                    barrier.wait();
                    cache.get_or_load("k", Some(TTL), move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        if let Some(gate) = gate.lock().take() {
                            gate.recv().unwrap();
                        }
                        Ok::<_, AppError>("v".to_string())
                    })
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.cache.stats().overall.load_waits < callers as u64 - 1 {
            assert!(Instant::now() < deadline, "{:?}", rig.cache.stats().overall);
            std::thread::yield_now();
        }
        release.send(()).unwrap();
        for h in handles {
            assert_eq!(h.join().unwrap().unwrap(), Fetched::Fresh("v".to_string()));
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn an_async_caller_gets_the_stale_copy_at_the_soft_timeout_and_cancelling_it_keeps_the_load() {
    let rig = rig(600, 50, 10_000);
    expired_v1(&rig);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    runtime.block_on(async {
        let got = rig
            .cache
            .get_or_load_async("k", Some(TTL), move || async move {
                gate.await.unwrap();
                Ok::<_, AppError>("v2".to_string())
            })
            .await
            .unwrap();
        assert_eq!(got, Fetched::Stale("v1".to_string()));
        // A second caller joins the load and is cancelled: the load is not.
        let cache = rig.cache.clone();
        let waiter = tokio::spawn(async move {
            cache
                .get_or_load_async("k", Some(TTL), || async { failing() })
                .await
        });
        // Cancelled once it has joined the load, not before.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.cache.stats().overall.load_waits < 1 {
            assert!(
                Instant::now() < deadline,
                "the second caller never joined the load"
            );
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        release.send(()).unwrap();
        let fresh: String = rig
            .cache
            .get_or_set_with_async("k", Some(TTL), || async { failing() })
            .await
            .unwrap();
        assert_eq!(fresh, "v2");
    });
    assert_eq!(rig.cache.stats().overall.loads, 1);
}

#[test]
fn a_cancelled_async_leader_never_cancels_the_load_its_waiters_share() {
    let rig = rig(0, 0, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let calls = Arc::new(AtomicU32::new(0));
    runtime.block_on(async {
        let cache = rig.cache.clone();
        let calls2 = Arc::clone(&calls);
        let leader = tokio::spawn(async move {
            cache
                .get_or_load_async("k", Some(TTL), move || async move {
                    calls2.fetch_add(1, Ordering::SeqCst);
                    gate.await.unwrap();
                    Ok::<_, AppError>("shared".to_string())
                })
                .await
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while rig.cache.stats().overall.loads < 1 {
            assert!(Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
        let cache = rig.cache.clone();
        let calls3 = Arc::clone(&calls);
        let waiter = tokio::spawn(async move {
            cache
                .get_or_load_async("k", Some(TTL), move || async move {
                    calls3.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, AppError>("second".to_string())
                })
                .await
        });
        while rig.cache.stats().overall.load_waits < 1 {
            assert!(Instant::now() < deadline);
            tokio::task::yield_now().await;
        }
        leader.abort();
        let _ = leader.await;
        release.send(()).unwrap();
        let got = waiter.await.unwrap().unwrap();
        assert_eq!(got, Fetched::Fresh("shared".to_string()));
    });
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the waiter did not start a second load"
    );
}

#[test]
fn config_refuses_fail_safe_on_redb_and_a_soft_timeout_above_the_hard_one() {
    // A build without redb refuses the type itself, before the loader settings.
    if cfg!(feature = "redb") {
        let mut config = CacheConfig::default();
        config.local.kind = LocalKind::Redb;
        config.loader.fail_safe_max_duration = Duration::from_secs(60);
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("loader.fail_safe_max_duration"), "{err}");
    }
    let mut config = CacheConfig::default();
    config.loader.soft_timeout_ms = 500;
    config.loader.hard_timeout_ms = 100;
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("loader.soft_timeout_ms"), "{err}");
    let parsed = CacheConfig::from_toml_str(
        "[loader]\nfail_safe_max_duration = 3600\nfail_safe_throttle = 10\nsoft_timeout_ms = 100\nhard_timeout_ms = 2000\n",
    )
    .unwrap();
    assert_eq!(parsed.loader.fail_safe_max_duration, Duration::from_secs(3600));
    assert_eq!(parsed.loader.hard_timeout_ms, 2000);
}

#[test]
fn with_l2_failing_and_errors_not_hidden_the_loading_calls_serve_the_stale_copy() {
    let clock = ManualClock::new(START_MS);
    let l1 = Arc::new(
        MemoryStore::with_clock(100, Arc::new(clock.clone()))
            .unwrap()
            .keep_expired(Duration::from_secs(600)),
    );
    let l2 = manager_support::ScriptedStore::new("scripted", &clock);
    let mut config = CacheConfig {
        fallback_on_error: false,
        ..CacheConfig::default()
    };
    config.loader.fail_safe_max_duration = Duration::from_secs(600);
    let cache = CacheManager::builder()
        .config(config)
        .local(l1)
        .distributed(l2.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
    clock.advance(TTL + Duration::from_secs(1));
    l2.set_failing(true);
    assert!(
        cache.get::<String>("k").is_err(),
        "a plain read reports the L2 error"
    );
    let got: String = cache
        .get_or_set_with("k", Some(TTL), || -> Result<String, AppError> {
            panic!("not asked: L2 is down")
        })
        .unwrap();
    assert_eq!(got, "v1");
    assert_eq!(
        cache.get_with_state::<String>("k").unwrap(),
        Some(Fetched::Stale("v1".to_string()))
    );
    let got = cache.get_or_load("k", Some(TTL), failing).unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    // Without a stale copy the error comes through.
    assert!(cache.get_with_state::<String>("other").is_err());
}

#[test]
fn an_async_load_that_fails_without_timeouts_serves_the_stale_copy() {
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let got = runtime
        .block_on(
            rig.cache
                .get_or_load_async("k", Some(TTL), || async { failing() }),
        )
        .unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    let stats = rig.cache.stats().loader;
    assert_eq!((stats.failures, stats.stale_served), (1, 1), "{stats:?}");
}

#[test]
fn a_loader_that_panics_on_its_thread_gets_its_callers_the_stale_copy() {
    let rig = rig(600, 0, 10_000);
    expired_v1(&rig);
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), || -> Result<String, AppError> {
            panic!("the loader's own bug")
        })
        .unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    assert_eq!(rig.cache.stats().loader.failures, 1);
}

/// The copy a caller read before waiting is served even if the store no longer has it when the
/// loader panics (its fail-safe window ended meanwhile), and counts as served stale like any.
#[test]
fn a_stale_copy_served_after_a_panic_past_the_window_counts_as_served_stale() {
    let rig = rig(60, 0, 10_000);
    expired_v1(&rig);
    let clock = rig.clock.clone();
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
            clock.advance(Duration::from_secs(120));
            panic!("the loader's own bug")
        })
        .unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    let stats = rig.cache.stats().loader;
    assert_eq!((stats.failures, stats.stale_served), (1, 1), "{stats:?}");
}

#[test]
fn an_async_loader_that_panics_gets_its_callers_the_stale_copy() {
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = runtime
        .block_on(rig.cache.get_or_load_async("k", Some(TTL), || async {
            if TTL > Duration::ZERO {
                panic!("the loader's own bug");
            }
            failing()
        }))
        .unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    assert_eq!(rig.cache.stats().loader.failures, 1);
}

/// The closure given to the async `get_or_load` calls is called only when the call starts a
/// load: it was called on every call, a hit too (its future dropped unpolled), so a closure with
/// side effects or a panic acted although the key was cached.
#[test]
fn get_or_load_async_does_not_call_the_loader_closure_on_a_hit() {
    let rig = rig(600, 0, 0);
    rig.cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
    let calls = AtomicU32::new(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = runtime
        .block_on(rig.cache.get_or_load_async("k", Some(TTL), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, AppError>("v2".to_string()) }
        }))
        .unwrap();
    assert_eq!(got, Fetched::Fresh("v1".to_string()));
    let got = runtime
        .block_on(rig.cache.get_or_load_optional_async("k", Some(TTL), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, AppError>(Some("v2".to_string())) }
        }))
        .unwrap();
    assert_eq!(got, Some(Fetched::Fresh("v1".to_string())));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the loader closure ran on a hit");
    // On a miss it is called, once.
    let got = runtime
        .block_on(rig.cache.get_or_load_async("other", Some(TTL), || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, AppError>("v2".to_string()) }
        }))
        .unwrap();
    assert_eq!(got, Fetched::Fresh("v2".to_string()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A closure that panics before it gives its future is a failed load, as a panicking future
/// is: the stale copy or an error naming the key, counted. It was called outside the guard
/// every other loading call puts around its loader, and its panic unwound into the caller.
#[test]
fn a_panicking_loader_closure_does_not_unwind_into_the_caller_of_get_or_load_async() {
    fn bug<T>() -> std::future::Ready<Result<T, AppError>> {
        panic!("the loader closure's own bug")
    }
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let got = runtime
        .block_on(rig.cache.get_or_load_async("k", Some(TTL), bug))
        .unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    let err = runtime
        .block_on(
            rig.cache
                .get_or_load_optional_async::<String, _, _, _>("other", Some(TTL), bug),
        )
        .unwrap_err();
    assert!(
        matches!(&err, AppError::Cache(e) if e.to_string().contains("\"other\"") && e.to_string().contains("panicked")),
        "{err:?}"
    );
    assert_eq!(rig.cache.stats().loader.failures, 2);
}

/// Every loading call that runs its loader on the caller's thread or in its future (no
/// timeouts, `get_or_set_with`, `get_or_set_with_async`) takes a panic for a failed load, as
/// the calls that run it apart do: the stale copy, counted, and no unwinding into the caller.
#[test]
fn a_loader_that_panics_on_its_callers_thread_gets_it_the_stale_copy() {
    fn bug() -> Result<String, AppError> {
        panic!("the loader's own bug")
    }
    let rig = rig(600, 0, 0);
    expired_v1(&rig);
    let got = rig.cache.get_or_load("k", Some(TTL), bug).unwrap();
    assert_eq!(got, Fetched::Stale("v1".to_string()));
    // Throttled now: the next calls are answered without asking; past the throttle, they ask.
    rig.clock.advance(Duration::from_secs(6));
    assert_eq!(rig.cache.get_or_set_with("k", Some(TTL), bug).unwrap(), "v1");
    rig.clock.advance(Duration::from_secs(6));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let got = runtime
        .block_on(
            rig.cache
                .get_or_set_with_async("k", Some(TTL), || async { bug() }),
        )
        .unwrap();
    assert_eq!(got, "v1");
    assert_eq!(rig.cache.stats().loader.failures, 3);
    // With no stale copy, the callers get an error naming the key, and the key is free again.
    let err = rig.cache.get_or_load("other", Some(TTL), bug).unwrap_err();
    assert!(
        matches!(&err, AppError::Cache(e) if e.to_string().contains("\"other\"") && e.to_string().contains("panicked")),
        "{err:?}"
    );
    let loaded = rig
        .cache
        .get_or_set_with("other", Some(TTL), || Ok::<_, AppError>("fine".to_string()))
        .unwrap();
    assert_eq!(loaded, "fine");
}

/// A caller that had a stale copy to serve at the soft timeout, whose key was deleted while it
/// waited, has nothing to serve then: it waits on, as a caller without a copy does, and gets
/// the load's value (it got `LoaderTimeout` at the soft timeout, naming the hard one).
#[test]
fn a_caller_whose_stale_copy_is_deleted_during_the_wait_waits_on_for_the_load() {
    let rig = rig(600, 50, 10_000);
    expired_v1(&rig);
    let (release, held) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let caller = s.spawn(|| {
            rig.cache
                .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
                    held.recv().unwrap();
                    Ok("v2".to_string())
                })
        });
        // The caller read its stale copy and its load runs: the key is deleted meanwhile.
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.cache.stats().overall.loads < 1 {
            assert!(
                Instant::now() < deadline,
                "the load never started: {:?}",
                rig.cache.stats().overall
            );
            std::thread::yield_now();
        }
        rig.cache.delete("k").unwrap();
        // Real time past the soft timeout (what the test is about), then the source answers.
        std::thread::sleep(Duration::from_millis(300));
        release.send(()).unwrap();
        assert_eq!(caller.join().unwrap().unwrap(), Fetched::Fresh("v2".to_string()));
    });
    let stats = rig.cache.stats().loader;
    assert_eq!(
        (stats.soft_timeouts, stats.hard_timeouts, stats.stale_served),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// The async form of the rule above.
#[test]
fn an_async_caller_whose_stale_copy_is_deleted_during_the_wait_waits_on_for_the_load() {
    let rig = rig(600, 50, 10_000);
    expired_v1(&rig);
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    std::thread::scope(|s| {
        let caller = s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(rig.cache.get_or_load_async("k", Some(TTL), || async move {
                held.await.unwrap();
                Ok::<_, AppError>("v2".to_string())
            }))
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.cache.stats().overall.loads < 1 {
            assert!(
                Instant::now() < deadline,
                "the load never started: {:?}",
                rig.cache.stats().overall
            );
            std::thread::yield_now();
        }
        rig.cache.delete("k").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        release.send(()).unwrap();
        assert_eq!(caller.join().unwrap().unwrap(), Fetched::Fresh("v2".to_string()));
    });
    assert_eq!(rig.cache.stats().loader.soft_timeouts, 0);
}

/// How a test's `get_or_load_optional` call runs its loader: on the caller's thread (no
/// timeouts), on a thread of its own (a hard timeout), or as a spawned task (the async form).
#[derive(Debug, Clone, Copy)]
enum Form {
    Inline,
    Timed,
    Async,
}

const FORMS: [Form; 3] = [Form::Inline, Form::Timed, Form::Async];

/// A rig for `form` whose "absent" answers are not cached (`absent_ttl = 0`), its key holding
/// "v1" just expired into its stale copy.
fn expired_v1_absent_uncached(form: Form) -> Rig {
    // The hard timeout is long: no caller stops waiting before a load that answers at once.
    let hard_ms = if matches!(form, Form::Timed) { 10_000 } else { 0 };
    let rig = rig_with(600, 0, hard_ms, |c| c.loader.absent_ttl = Duration::ZERO);
    expired_v1(&rig);
    assert_eq!(
        rig.cache.get_with_state::<String>("k").unwrap(),
        Some(Fetched::Stale("v1".to_string())),
        "{form:?}: the stale copy is there to begin with"
    );
    rig
}

/// Asks `k` through `form` with a loader that runs `before` and then answers "absent".
fn load_absent(rig: &Rig, form: Form, before: impl FnOnce() + Send + 'static) -> Option<Fetched<String>> {
    let absent = move || {
        before();
        Ok::<_, AppError>(None)
    };
    match form {
        Form::Inline | Form::Timed => rig.cache.get_or_load_optional("k", Some(TTL), absent),
        Form::Async => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(
                rig.cache
                    .get_or_load_optional_async("k", Some(TTL), || async move { absent() }),
            )
        }
    }
    .unwrap()
}

/// A loader's "absent" is the source saying the key is gone: not cached (`absent_ttl = 0`), it
/// still removes the stale copy, so a failed load after it gets its error rather than a value
/// the source no longer has (the copy stayed and was served as the key's last known value).
#[test]
fn an_absent_answer_not_cached_removes_the_stale_copy_a_failed_load_would_serve() {
    for form in FORMS {
        let rig = expired_v1_absent_uncached(form);
        assert_eq!(load_absent(&rig, form, || {}), None, "{form:?}");
        assert_eq!(
            rig.cache.get_with_state::<String>("k").unwrap(),
            None,
            "{form:?}: the stale copy outlived the absent answer"
        );
        let got = rig.cache.get_or_load("k", Some(TTL), failing);
        assert!(matches!(got, Err(AppError::SourceDown)), "{form:?}: {got:?}");
        let stats = rig.cache.stats().loader;
        assert_eq!(
            (stats.absent_stored, stats.failures),
            (0, 1),
            "{form:?}: {stats:?}"
        );
    }
}

/// The delete an uncached "absent" makes is the load's, watched as its store would be: a write
/// of the key while the loader ran is newer than the answer and stands (the call itself still
/// answers what its loader said).
#[test]
fn a_write_made_while_an_uncached_absent_answer_loads_survives_it() {
    for form in FORMS {
        let rig = expired_v1_absent_uncached(form);
        let cache = rig.cache.clone();
        let write = move || cache.set("k", &"v2".to_string(), Some(TTL)).unwrap();
        assert_eq!(load_absent(&rig, form, write), None, "{form:?}");
        assert_eq!(
            rig.cache.get::<String>("k").unwrap().as_deref(),
            Some("v2"),
            "{form:?}: the write made during the load was deleted"
        );
    }
}
