//! The thread that wakes async waiters at their loader timeouts (`uno-cache-load-timer`): one per
//! manager, however many keys load at once, and gone once the manager is. It was one per flight,
//! so a stampede of distinct keys (a cold start, a flush) started a thread per key in flight.
//!
//! The runtimes here have no time driver: the waiters' deadlines are kept by the cache's timer,
//! not by tokio's. The tests count this process's threads, so they run one at a time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uno_cache::Error;

mod fail_safe_support;
#[path = "manager_support/threads.rs"]
mod threads;

use fail_safe_support::{rig, AppError, TTL};
use threads::{cache_threads, until_thread};

/// The timer's name as the kernel keeps it (15 bytes).
const TIMER: &str = "uno-cache-load-";

/// The tests count the process's threads: one at a time.
static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn timers() -> usize {
    cache_threads().iter().filter(|name| *name == TIMER).count()
}

/// A runtime without tokio's timer, as an embedder's executor may be.
fn runtime_without_time() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

/// A loader that answers only once `release` says so.
async fn held(
    mut release: tokio::sync::watch::Receiver<bool>,
    finished: Arc<AtomicUsize>,
) -> Result<String, AppError> {
    let _ = release.wait_for(|go| *go).await;
    finished.fetch_add(1, Ordering::SeqCst);
    Ok("late".to_string())
}

#[test]
fn a_stampede_of_async_loads_of_distinct_keys_shares_one_timer_thread_and_every_caller_times_out_at_its_deadline(
) {
    const KEYS: usize = 200;
    const HARD_MS: u64 = 3_000;
    let _serial = SERIAL.lock();
    let rig = rig(0, 0, HARD_MS);
    let runtime = runtime_without_time();
    let (release, gate) = tokio::sync::watch::channel(false);
    let finished = Arc::new(AtomicUsize::new(0));
    let began = Instant::now();
    // Two callers per key: the one that starts its load and one that joins it; all wait with the
    // hard timeout while every loader is held.
    let calls: Vec<_> = (0..KEYS)
        .flat_map(|i| [i, i])
        .map(|i| {
            let (cache, gate, finished) = (rig.cache.clone(), gate.clone(), Arc::clone(&finished));
            runtime.spawn(async move {
                let got = cache
                    .get_or_load_async(&format!("k{i}"), Some(TTL), move || held(gate, finished))
                    .await;
                (Instant::now(), got)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = rig.cache.stats().overall;
        if (stats.loads, stats.load_waits) == (KEYS as u64, KEYS as u64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the callers never all joined: {stats:?}"
        );
        std::thread::yield_now();
    }
    until_thread(TIMER, true);
    assert!(
        began.elapsed() < Duration::from_millis(HARD_MS),
        "the machine is too slow for this test: the first deadlines passed before the count"
    );
    assert_eq!(
        timers(),
        1,
        "{KEYS} flights with async waiters and a deadline: {:?}",
        cache_threads()
    );
    for call in calls {
        let (at, got) = runtime.block_on(call).unwrap();
        match got {
            Err(AppError::Cache(Error::LoaderTimeout { after, .. })) => {
                assert_eq!(after, Duration::from_millis(HARD_MS));
            }
            other => panic!("expected LoaderTimeout, got {other:?}"),
        }
        assert!(
            at.duration_since(began) >= Duration::from_millis(HARD_MS),
            "answered {:?} after the start, before the hard timeout",
            at.duration_since(began)
        );
    }
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "a loader finished before every caller timed out"
    );
    assert_eq!(rig.cache.stats().loader.hard_timeouts, 2 * KEYS as u64);
    release.send(true).unwrap();
    drop(rig);
    drop(runtime);
}

#[test]
fn the_timer_thread_ends_with_the_manager_while_a_load_with_deadlines_still_runs() {
    let _serial = SERIAL.lock();
    let rig = rig(0, 0, 60_000);
    let runtime = runtime_without_time();
    let (release, gate) = tokio::sync::watch::channel(false);
    let finished = Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..2)
        .map(|_| {
            let (cache, gate, finished) = (rig.cache.clone(), gate.clone(), Arc::clone(&finished));
            runtime.spawn(async move {
                cache
                    .get_or_load_async("k", Some(TTL), move || held(gate, finished))
                    .await
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    // The load runs apart from its callers once it is counted; the second caller waits on it.
    while (
        rig.cache.stats().overall.loads,
        rig.cache.stats().overall.load_waits,
    ) != (1, 1)
    {
        assert!(Instant::now() < deadline, "{:?}", rig.cache.stats().overall);
        std::thread::yield_now();
    }
    until_thread(TIMER, true);
    // The callers leave; their load goes on, its deadlines a minute away.
    for call in calls {
        call.abort();
        assert!(runtime.block_on(call).unwrap_err().is_cancelled());
    }
    assert_eq!(timers(), 1, "the timer ended before its deadlines");
    drop(rig);
    let deadline = Instant::now() + Duration::from_secs(5);
    while timers() > 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        timers(),
        0,
        "the timer thread outlived its manager: {:?}",
        cache_threads()
    );
    assert_eq!(finished.load(Ordering::SeqCst), 0, "the load was still held");
    release.send(true).unwrap();
    drop(runtime);
}
