//! Fail-safe (`loader.fail_safe_max_duration`): an expired value is kept and served, marked
//! stale, when its loader fails or panics, also with L2 failing; a dead source is asked once per
//! throttle period; a deleted, invalidated or source-absent key has no stale copy to serve; and
//! a plain `get` never returns a stale copy. The timeouts are in `loader_timeouts.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uno_cache::{CacheConfig, CacheManager, Clock, Error, Fetched, LocalKind, ManualClock, MemoryStore};

mod fail_safe_support;
mod manager_support;
mod support;

use fail_safe_support::{config, expired_v1, failing, rig, rig_with, AppError, Rig, START_MS, TTL};

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

/// A write of the key ends its throttle period: the value written is not the stale one the
/// throttle was started to serve, and once it expires the source is asked again (once: a dead
/// one starts a new period). The period outlived the write, so a value written after the failure
/// and expired within the period was served stale, its source unasked, in every form.
#[test]
fn a_write_of_the_key_ends_its_throttle_period() {
    for form in FORMS {
        let hard_ms = if matches!(form, Form::Timed) { 10_000 } else { 0 };
        let rig = rig(600, 0, hard_ms);
        expired_v1(&rig);
        let got = load_in(&rig, form, Err(AppError::SourceDown)).unwrap();
        assert_eq!(got, Fetched::Stale("v1".to_string()), "{form:?}");
        the_source_is_asked_once_a_value_written_after_the_failure_expires(&rig, form, "w");
    }
}

/// The throttle is a length of time, not an instant: a wall clock stepped back (an NTP
/// correction, a VM resumed) must not stretch it by the step. It ended at its instant on the
/// wall clock, so a step back of 200 s kept a live source unasked, and the stale copy served,
/// for 200 s more than `fail_safe_throttle`.
#[test]
fn a_wall_clock_stepped_back_does_not_stretch_the_throttle() {
    let rig = rig(600, 0, 0);
    rig.cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
    // Long expired, and still so after the step back below.
    rig.clock.advance(Duration::from_secs(300));
    assert_eq!(rig.cache.get_or_set_with("k", Some(TTL), failing).unwrap(), "v1");
    rig.clock.set(rig.clock.now_ms() - 200_000);
    assert_eq!(
        rig.cache.get_or_set_with("k", Some(TTL), failing).unwrap(),
        "v1",
        "the copy is still stale after the step, and a failing source still gets it served"
    );
    // More than the throttle period (5 s) passes after the step: the source is asked again.
    rig.clock.advance(Duration::from_secs(6));
    let asked = AtomicU32::new(0);
    let fresh: String = rig
        .cache
        .get_or_set_with("k", Some(TTL), || {
            asked.fetch_add(1, Ordering::SeqCst);
            Ok::<_, AppError>("v2".to_string())
        })
        .unwrap();
    assert_eq!(
        (fresh.as_str(), asked.load(Ordering::SeqCst)),
        ("v2", 1),
        "the source is asked once the throttle period has passed"
    );
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
        // A loader thread the machine did not run until the soft timeout had passed deletes
        // the key after the caller was rightly served the copy: such a run proves nothing and
        // is tried again; a run whose delete came first must never serve it.
        let mut proven = false;
        for _ in 0..20 {
            let rig = rig(600, soft_ms, 10_000);
            expired_v1(&rig);
            let cache = rig.cache.clone();
            let deleted_at = Arc::new(std::sync::Mutex::new(None));
            let deleted = Arc::clone(&deleted_at);
            let started = Instant::now();
            let got = rig
                .cache
                .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
                    cache.delete("k").unwrap();
                    *deleted.lock().unwrap() = Some(Instant::now());
                    std::thread::sleep(slow);
                    failing()
                });
            let deleted_late = deleted_at
                .lock()
                .unwrap()
                .is_none_or(|at| soft_ms > 0 && at.duration_since(started) >= Duration::from_millis(soft_ms));
            if deleted_late && matches!(got, Ok(Fetched::Stale(_))) {
                continue;
            }
            // The loader's error, or the timeout once the caller stopped waiting: never the copy.
            assert!(
                matches!(
                    got,
                    Err(AppError::SourceDown | AppError::Cache(Error::LoaderTimeout { .. }))
                ),
                "soft timeout {soft_ms} ms: {got:?}"
            );
            assert_eq!(rig.cache.get::<String>("k").unwrap(), None);
            proven = true;
            break;
        }
        assert!(
            proven,
            "soft timeout {soft_ms} ms: no run had its delete before the soft timeout"
        );
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
fn get_or_load_serves_the_stale_copy_when_its_loader_fails() {
    // A loader thread the machine did not run within the 50 ms soft timeout had the caller
    // rightly served the copy at the timeout, before the failure was counted: such a run proves
    // nothing and is tried again; one whose loader failed first must count it before returning.
    let mut proven = None;
    for _ in 0..20 {
        let rig = rig(600, 50, 1_000);
        expired_v1(&rig);
        let got = rig.cache.get_or_load("k", Some(TTL), failing).unwrap();
        assert_eq!(got, Fetched::Stale("v1".to_string()));
        let stats = rig.cache.stats().loader;
        if stats.soft_timeouts == 1 {
            continue;
        }
        assert_eq!(
            (stats.failures, stats.stale_served, stats.soft_timeouts),
            (1, 1, 0),
            "{stats:?}"
        );
        proven = Some(rig);
        break;
    }
    let rig = proven.expect("no run had its loader fail before the soft timeout");
    // Throttled now: no loader call.
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), || -> Result<String, AppError> {
            panic!("throttled")
        })
        .unwrap();
    assert!(got.is_stale());
}

/// A soft timeout serves the stale copy fail-safe keeps: with fail-safe off there is never one,
/// and the setting was accepted to do nothing (found by review).
#[test]
fn config_refuses_a_soft_timeout_without_fail_safe_naming_both_settings() {
    let err =
        CacheConfig::from_toml_str("[loader]\nsoft_timeout_ms = 200\nhard_timeout_ms = 2000\n").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("loader.soft_timeout_ms") && text.contains("fail_safe_max_duration"),
        "{text}"
    );
    let with_fail_safe =
        "[loader]\nfail_safe_max_duration = 60\nsoft_timeout_ms = 200\nhard_timeout_ms = 2000\n";
    assert_eq!(
        CacheConfig::from_toml_str(with_fail_safe)
            .unwrap()
            .loader
            .soft_timeout_ms,
        200
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
    config.loader.fail_safe_max_duration = Duration::from_secs(60);
    config.loader.soft_timeout_ms = 500;
    config.loader.hard_timeout_ms = 100;
    let err = config.validate().unwrap_err();
    assert!(err.to_string().contains("loader.soft_timeout_ms"), "{err}");
    assert!(err.to_string().contains("below loader.hard_timeout_ms"), "{err}");
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
    let got = support::block_on(rig.cache.get_or_load_async("k", Some(TTL), || async {
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
        Form::Async => support::block_on(rig.cache.get_or_load_optional_async(
            "k",
            Some(TTL),
            || async move { absent() },
        )),
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

/// A loader that panics after its caller left with the stale copy (at the soft timeout) is a
/// failed load as one that returns an error is: counted, and the throttle starts, so the dead
/// source is not asked again by every call for the throttle period. Only an error did that: a
/// panic was counted by the caller still waiting, and with none left it went uncounted and
/// unthrottled.
#[test]
fn a_loader_that_panics_after_its_caller_left_is_counted_and_throttled() {
    let rig = rig(600, 20, 10_000);
    expired_v1(&rig);
    let (release, gate) = std::sync::mpsc::channel::<()>();
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
            gate.recv().unwrap();
            panic!("the loader's own bug")
        })
        .unwrap();
    assert_eq!(
        got,
        Fetched::Stale("v1".to_string()),
        "served at the soft timeout"
    );
    release.send(()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.cache.stats().loader.failures < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the panic was never counted as a failed load"
        );
        std::thread::yield_now();
    }
    let calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&calls);
    let got = rig
        .cache
        .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok("v2".to_string())
        })
        .unwrap();
    assert_eq!(
        got,
        Fetched::Stale("v1".to_string()),
        "the throttle serves the copy"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the source was asked within the throttle period"
    );
}

/// The window is the manager's: an L1 given to the builder that keeps expired entries longer
/// (a file store opened with a longer `keep_expired`, one the CLI keeps for another
/// application) does not have them served past `fail_safe_max_duration`.
#[test]
fn a_stale_copy_is_not_served_past_the_window_whatever_l1_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let file = uno_cache::FileStore::open(
        dir.path(),
        uno_cache::FileStoreOptions::default()
            .clock(Arc::new(clock.clone()))
            .keep_expired(Duration::from_secs(86_400)),
    )
    .unwrap();
    let memory = MemoryStore::with_clock(100, Arc::new(clock.clone()))
        .unwrap()
        .keep_expired(Duration::from_secs(86_400));
    let levels: [Arc<dyn uno_cache::LocalStorage>; 2] = [Arc::new(file), Arc::new(memory)];
    for l1 in levels {
        let mut config = CacheConfig::default();
        config.loader.fail_safe_max_duration = Duration::from_secs(60);
        let cache = CacheManager::builder()
            .config(config)
            .clock(Arc::new(clock.clone()))
            .local(l1)
            .build()
            .unwrap();
        cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
        clock.advance(TTL + Duration::from_secs(59));
        assert_eq!(
            cache.get_with_state::<String>("k").unwrap(),
            Some(Fetched::Stale("v1".to_string())),
            "within the window"
        );
        clock.advance(Duration::from_secs(2));
        assert_eq!(
            cache.get_with_state::<String>("k").unwrap(),
            None,
            "past the window"
        );
        let err = cache.get_or_set_with("k", Some(TTL), failing).unwrap_err();
        assert!(matches!(err, AppError::SourceDown), "{err:?}");
    }
}

/// Asks `k` through `form` with a loader that answers `answer`.
fn load_in(rig: &Rig, form: Form, answer: Result<String, AppError>) -> Result<Fetched<String>, AppError> {
    let loader = move || answer;
    match form {
        Form::Inline | Form::Timed => rig.cache.get_or_load("k", Some(TTL), loader),
        Form::Async => support::block_on(rig.cache.get_or_load_async(
            "k",
            Some(TTL),
            || async move { loader() },
        )),
    }
}

/// A failed load with no stale copy to serve (here L1 keeps only the source's expired
/// "absent", which is no value) starts no throttle, wherever its loader ran: the throttle makes
/// the copy served after a failure count as fresh. A load run apart from its caller (the async
/// form, or with a timeout) started it whenever L1 held any expired entry of the key, so a value
/// written after the failure and expired within the throttle period was served stale, its live
/// source unasked, where the same calls on the caller's thread (and `get_or_set_with`, sync or
/// async) asked the source and answered its fresh value.
#[test]
fn a_failed_load_with_no_copy_to_serve_throttles_no_copy_written_after_it() {
    for form in FORMS {
        let hard_ms = if matches!(form, Form::Timed) { 10_000 } else { 0 };
        let rig = rig(600, 0, hard_ms);
        assert_eq!(load_absent(&rig, form, || {}), None, "{form:?}");
        rig.clock.advance(TTL + Duration::from_secs(1));
        let got = load_in(&rig, form, Err(AppError::SourceDown));
        assert!(matches!(got, Err(AppError::SourceDown)), "{form:?}: {got:?}");
        the_source_is_asked_once_a_value_written_after_the_failure_expires(&rig, form, "v1");
    }
}

/// After one failed load (the only one), `written` is written and expires within the throttle
/// period (5 s) of the failure: the next load in `form` asks the source, whose answer is fresh.
fn the_source_is_asked_once_a_value_written_after_the_failure_expires(rig: &Rig, form: Form, written: &str) {
    rig.cache
        .set("k", &written.to_string(), Some(Duration::from_secs(1)))
        .unwrap();
    rig.clock.advance(Duration::from_secs(2));
    let got = load_in(rig, form, Ok("v2".to_string())).unwrap();
    assert_eq!(
        got,
        Fetched::Fresh("v2".to_string()),
        "{form:?}: the source was not asked"
    );
    let stats = rig.cache.stats().loader;
    assert_eq!((stats.failures, stats.throttled), (1, 0), "{form:?}: {stats:?}");
}
