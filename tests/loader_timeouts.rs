//! Loader timeouts (`loader.soft_timeout_ms`, `loader.hard_timeout_ms`): a caller with a stale
//! copy gets it at the soft timeout while the load goes on to refresh the entry; a hung loader
//! never holds its callers past the hard timeout nor its key's load slot for good; callers with
//! timeouts still share one load, and a cancelled async caller never cancels it.
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

use uno_cache::{Error, Fetched};

mod fail_safe_support;
mod support;

use fail_safe_support::{expired_v1, failing, rig, AppError, TTL};

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
    // A whole second: the second load below must end within it, on a thread that a loaded
    // machine did not schedule within 100 ms.
    const HARD_MS: u64 = 1_000;
    let rig = rig(600, 0, HARD_MS);
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
            assert_eq!(after, Duration::from_millis(HARD_MS));
        }
        other => panic!("expected LoaderTimeout, got {other:?}"),
    }
    assert_eq!(rig.cache.stats().loader.hard_timeouts, 1);
    // The hung load does not hold the key: the next call loads afresh at once (joined to the
    // hung load, it would time out as well).
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
    // A whole second: the check below leaves one hard timeout to a loaded machine's stalls.
    const HARD_MS: u64 = 1_000;
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
        // A second load would have held it until twice the hard timeout (the loader above never
        // ends), and a waiter that took the flight for a failed one would have run it.
        assert!(
            waited < Duration::from_millis(HARD_MS * 2),
            "waited {waited:?} with a hard timeout of {HARD_MS} ms"
        );
        assert_eq!(rig.cache.stats().loader.hard_timeouts, 2, "both callers gave up");
    });
    drop(release);
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

/// A caller that had a stale copy to serve at the soft timeout, whose key was deleted while it
/// waited, has nothing to serve then: it waits on, as a caller without a copy does, and gets
/// the load's value (it got `LoaderTimeout` at the soft timeout, naming the hard one).
#[test]
fn a_caller_whose_stale_copy_is_deleted_during_the_wait_waits_on_for_the_load() {
    let (release, held) = mpsc::channel::<()>();
    stale_copy_deleted_during_the_wait(
        move || release.send(()).unwrap(),
        |rig| {
            rig.cache
                .get_or_load("k", Some(TTL), move || -> Result<String, AppError> {
                    held.recv().unwrap();
                    Ok("v2".to_string())
                })
        },
    );
}

/// The async form of the rule above.
#[test]
fn an_async_caller_whose_stale_copy_is_deleted_during_the_wait_waits_on_for_the_load() {
    let (release, held) = tokio::sync::oneshot::channel::<()>();
    stale_copy_deleted_during_the_wait(
        move || release.send(()).unwrap(),
        |rig| {
            support::block_on(rig.cache.get_or_load_async("k", Some(TTL), || async move {
                held.await.unwrap();
                Ok::<_, AppError>("v2".to_string())
            }))
        },
    );
}

/// Runs `call`, a `get_or_load` of `k` whose loader answers "v2" once `release` is called, on a
/// thread, with an expired copy of `k` to serve at the soft timeout (500 ms); deletes `k`
/// while the load runs, and releases the loader past the soft timeout. Checks that the call
/// waited on for the load's value, and that no timeout or stale copy was counted.
fn stale_copy_deleted_during_the_wait<E: std::fmt::Debug + Send>(
    release: impl FnOnce(),
    call: impl FnOnce(&fail_safe_support::Rig) -> Result<Fetched<String>, E> + Send,
) {
    // The delete must come before the soft timeout: with 50 ms, a loaded machine descheduled
    // the test between the load's start and its delete, and the caller served its copy.
    const SOFT_MS: u64 = 500;
    let rig = rig(600, SOFT_MS, 10_000);
    expired_v1(&rig);
    std::thread::scope(|s| {
        let caller = s.spawn(|| call(&rig));
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
        std::thread::sleep(Duration::from_millis(SOFT_MS + 200));
        release();
        assert_eq!(caller.join().unwrap().unwrap(), Fetched::Fresh("v2".to_string()));
    });
    let stats = rig.cache.stats().loader;
    assert_eq!(
        (stats.soft_timeouts, stats.hard_timeouts, stats.stale_served),
        (0, 0, 0),
        "{stats:?}"
    );
}

/// The rule of the hard timeout holds for a `get_or_set_with` caller too: one that joins a
/// `get_or_load` whose loader hangs, after that load's own caller left with the stale copy at
/// the soft timeout, gives the load up at the hard timeout and runs its own loader. It waited
/// on the hung loader for good: nobody else was left to give the load up.
#[test]
fn a_get_or_set_with_caller_is_not_held_past_the_hard_timeout_by_a_hung_get_or_load() {
    behind_a_hung_get_or_load(|rig| {
        rig.cache
            .get_or_set_with("k", Some(TTL), || Ok::<_, AppError>("own".to_string()))
    });
}

/// The async form of the rule above: the caller's task is woken at the hard timeout.
#[test]
fn a_get_or_set_with_async_caller_is_not_held_past_the_hard_timeout_by_a_hung_get_or_load() {
    behind_a_hung_get_or_load(|rig| {
        support::block_on(
            rig.cache
                .get_or_set_with_async("k", Some(TTL), || async { Ok::<_, AppError>("own".to_string()) }),
        )
    });
}

/// Runs `call`, a `get_or_set_with` of `k` whose loader answers "own", on a thread, behind a
/// `get_or_load` of `k` whose loader hangs and whose caller left with the stale copy; checks
/// that the call is answered by its own loader, and counted as a wait given up at the hard
/// timeout (300 ms).
fn behind_a_hung_get_or_load<E: std::fmt::Debug + Send>(
    call: impl FnOnce(&fail_safe_support::Rig) -> Result<String, E> + Send,
) {
    const HARD_MS: u64 = 300;
    let rig = rig(600, 50, HARD_MS);
    expired_v1(&rig);
    let (release, hung) = mpsc::channel::<()>();
    let left = rig
        .cache
        .get_or_load("k", Some(TTL), move || {
            let _ = hung.recv();
            Ok::<_, AppError>("late".to_string())
        })
        .unwrap();
    assert_eq!(left, Fetched::Stale("v1".to_string()));
    let (answered, answer) = mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| answered.send(call(&rig)).unwrap());
        let got = answer.recv_timeout(Duration::from_secs(10));
        // Frees the caller (and the scope) if it is still held.
        drop(release);
        let got = got.expect("the caller was still held by the hung loader 10 s after the hard timeout");
        assert_eq!(got.unwrap(), "own");
    });
    let stats = rig.cache.stats();
    assert_eq!(
        (stats.overall.loads, stats.overall.load_waits),
        (2, 1),
        "{stats:?}"
    );
    assert_eq!(stats.loader.hard_timeouts, 1);
}
