//! Refresh-ahead (`loader.refresh_ahead`): a `get_or_load` hit on a value past that share of its
//! TTL starts one background reload and answers with the current value at once, so a hot key
//! never expires under load; reloads are single-flight and bounded, and a failed one keeps the
//! current value.
//!
//! Reloads are held on channels the test releases: "answered at once" means answered while the
//! reload is provably still running.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use uno_cache::{CacheConfig, CacheManager, Error, Fetched, LocalKind, ManualClock};

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(10);

fn manager(clock: &ManualClock, max: usize) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.loader.refresh_ahead = 0.8;
    config.loader.refresh_ahead_max = max;
    CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn value(v: &str) -> impl FnOnce() -> Result<String, Error> + Send + 'static {
    let v = v.to_owned();
    move || Ok(v)
}

/// A loader that counts its call, then waits for the gate before answering `v`.
fn held(
    v: &str,
    calls: &Arc<AtomicU32>,
) -> (
    impl FnOnce() -> Result<String, Error> + Send + 'static,
    mpsc::Sender<()>,
) {
    let (release, gate) = mpsc::channel::<()>();
    let (v, calls) = (v.to_owned(), Arc::clone(calls));
    let load = move || {
        calls.fetch_add(1, Ordering::SeqCst);
        let _ = gate.recv();
        Ok(v)
    };
    (load, release)
}

/// Waits (bounded) until `key` reads `want`: the background reload stored it. The public API
/// has no event for "a background reload ended", so this polls what a user would observe.
fn reloaded(cache: &CacheManager, key: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = cache.get::<String>(key).unwrap().unwrap_or_default();
        if now == want || Instant::now() > deadline {
            return now;
        }
        std::thread::yield_now();
    }
}

/// Waits (bounded) until the stats count `n` loader failures.
fn failures(cache: &CacheManager, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = cache.stats().loader.failures;
        if seen >= n || Instant::now() > deadline {
            return seen;
        }
        std::thread::yield_now();
    }
}

#[test]
fn a_hit_past_the_share_reloads_in_the_background_and_answers_at_once() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 16);
    assert_eq!(
        cache.get_or_load("k", Some(TTL), value("v1")).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    // Before the share: no reload.
    clock.advance(Duration::from_secs(7));
    let calls = Arc::new(AtomicU32::new(0));
    let (load, _keep) = held("never", &calls);
    assert_eq!(
        cache.get_or_load("k", Some(TTL), load).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    assert_eq!(cache.stats().loader.refreshes, 0);
    // Past 80 % of the TTL: the hit answers v1 while the reload is held.
    clock.advance(Duration::from_secs(2));
    let (load, release) = held("v2", &calls);
    assert_eq!(
        cache.get_or_load("k", Some(TTL), load).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    assert_eq!(cache.stats().loader.refreshes, 1);
    // The reload is a loader call like the first load, counted as one.
    assert_eq!(cache.stats().overall.loads, 2);
    release.send(()).unwrap();
    assert_eq!(reloaded(&cache, "k", "v2"), "v2");
    // The reloaded value has a TTL of its own: past the first value's expiry, still a hit.
    clock.advance(Duration::from_secs(5));
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v2"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Asks `key` with a loader that would be held: the answer, and whether the hit started a
/// reload (counted before the call returns, so no wait is needed to see that none started).
fn hit_starts_reload(cache: &CacheManager, key: &str) -> (Fetched<String>, bool) {
    let before = cache.stats().loader.refreshes;
    let calls = Arc::new(AtomicU32::new(0));
    let (load, _never) = held("reloaded", &calls);
    let got = cache.get_or_load(key, Some(TTL), load).unwrap();
    (got, cache.stats().loader.refreshes > before)
}

/// The documented rule: a hit reloads "a value this process loaded, once that share of its L1
/// TTL has passed". A value the application wrote after the load is neither; the load's due
/// time once outlived the write and replaced the written value with a reload.
#[test]
fn a_value_written_after_a_load_is_not_reloaded_on_the_loads_schedule() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 16);
    cache.get_or_load("k", Some(TTL), value("loaded")).unwrap();
    clock.advance(Duration::from_secs(2));
    cache.set("k", &"written".to_string(), Some(TTL)).unwrap();
    // 8.5 s after the load (past its due time), 65 % into the written value's TTL.
    clock.advance(Duration::from_millis(6_500));
    assert_eq!(
        hit_starts_reload(&cache, "k"),
        (Fetched::Fresh("written".to_string()), false)
    );
    // Past the written value's own 80 %: it was not loaded, so still no reload.
    clock.advance(Duration::from_millis(1_000));
    assert_eq!(
        hit_starts_reload(&cache, "k"),
        (Fetched::Fresh("written".to_string()), false)
    );
}

/// A delete or an invalidation of the key drops the load's due time with its value: a value
/// stored later by other means (here `get_or_set_with`, which does not refresh ahead) is not
/// reloaded on the old schedule.
#[test]
fn a_delete_or_invalidation_forgets_the_loads_schedule() {
    type Change = fn(&CacheManager);
    let changes: [(&str, Change); 2] = [
        ("delete", |c| assert!(c.delete("k").unwrap())),
        ("invalidate_local", |c| assert!(c.invalidate_local("k").unwrap())),
    ];
    for (how, change) in changes {
        let clock = ManualClock::new(START_MS);
        let cache = manager(&clock, 16);
        cache.get_or_load("k", Some(TTL), value("loaded")).unwrap();
        clock.advance(Duration::from_secs(2));
        change(&cache);
        let set_with: String = cache.get_or_set_with("k", Some(TTL), value("set_with")).unwrap();
        assert_eq!(set_with, "set_with");
        clock.advance(Duration::from_millis(6_500));
        assert_eq!(
            hit_starts_reload(&cache, "k"),
            (Fetched::Fresh("set_with".to_string()), false),
            "after {how}"
        );
    }
}

/// A load that a write overtook does not store its value, and records no due time either: the
/// written value is not reloaded on the overtaken load's schedule.
#[test]
fn a_load_overtaken_by_a_write_leaves_the_written_value_unscheduled() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 16);
    let calls = Arc::new(AtomicU32::new(0));
    let (load, release) = held("loaded", &calls);
    std::thread::scope(|scope| {
        let loading = scope.spawn(|| cache.get_or_load("k", Some(TTL), load).unwrap());
        // The loader has read its source (it counts its call first): the write overtakes it.
        let deadline = Instant::now() + Duration::from_secs(20);
        while calls.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        cache.set("k", &"written".to_string(), Some(TTL)).unwrap();
        release.send(()).unwrap();
        loading.join().unwrap();
    });
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("written"));
    clock.advance(Duration::from_millis(8_500));
    assert_eq!(
        hit_starts_reload(&cache, "k"),
        (Fetched::Fresh("written".to_string()), false)
    );
}

#[test]
fn one_reload_per_key_however_many_hits() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 16);
    cache.get_or_load("k", Some(TTL), value("v1")).unwrap();
    clock.advance(Duration::from_secs(9));
    let calls = Arc::new(AtomicU32::new(0));
    let (first, release) = held("v2", &calls);
    cache.get_or_load("k", Some(TTL), first).unwrap();
    for _ in 0..10 {
        let (load, _r) = held("other", &calls);
        assert_eq!(
            cache.get_or_load("k", Some(TTL), load).unwrap(),
            Fetched::Fresh("v1".to_string())
        );
    }
    release.send(()).unwrap();
    assert_eq!(reloaded(&cache, "k", "v2"), "v2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().loader.refreshes, 1);
}

#[test]
fn a_failed_reload_keeps_the_current_value() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 16);
    cache.get_or_load("k", Some(TTL), value("v1")).unwrap();
    clock.advance(Duration::from_secs(9));
    let (release, gate) = mpsc::channel::<()>();
    let failing = move || -> Result<String, Error> {
        let _ = gate.recv();
        Err(Error::Backend {
            level: "source",
            op: "load",
            reason: "down".into(),
        })
    };
    assert_eq!(
        cache.get_or_load("k", Some(TTL), failing).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    release.send(()).unwrap();
    assert_eq!(failures(&cache, 1), 1);
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v1"));
}

#[test]
fn reloads_beyond_refresh_ahead_max_wait_for_a_later_hit() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 1);
    cache.get_or_load("a", Some(TTL), value("a1")).unwrap();
    cache.get_or_load("b", Some(TTL), value("b1")).unwrap();
    clock.advance(Duration::from_secs(9));
    let calls = Arc::new(AtomicU32::new(0));
    let (load_a, release_a) = held("a2", &calls);
    cache.get_or_load("a", Some(TTL), load_a).unwrap();
    // The one slot is taken by a's reload: b's hit answers and starts nothing.
    let (load_b, _r) = held("never", &calls);
    assert_eq!(
        cache.get_or_load("b", Some(TTL), load_b).unwrap(),
        Fetched::Fresh("b1".to_string())
    );
    assert_eq!(cache.stats().loader.refreshes, 1);
    release_a.send(()).unwrap();
    assert_eq!(reloaded(&cache, "a", "a2"), "a2");
    // The slot is free again: b is still due, and its next hit reloads it.
    let (load_b, release_b) = held("b2", &calls);
    cache.get_or_load("b", Some(TTL), load_b).unwrap();
    assert_eq!(cache.stats().loader.refreshes, 2);
    release_b.send(()).unwrap();
    assert_eq!(reloaded(&cache, "b", "b2"), "b2");
}

#[test]
fn the_async_form_reloads_in_the_background_too() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, 16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    runtime.block_on(async {
        cache
            .get_or_load_async("k", Some(TTL), || async { Ok::<_, Error>("v1".to_string()) })
            .await
            .unwrap();
        clock.advance(Duration::from_secs(9));
        let (release, gate) = tokio::sync::oneshot::channel::<()>();
        let got = cache
            .get_or_load_async("k", Some(TTL), move || async move {
                let _ = gate.await;
                Ok::<_, Error>("v2".to_string())
            })
            .await
            .unwrap();
        assert_eq!(got, Fetched::Fresh("v1".to_string()));
        assert_eq!(cache.stats().overall.loads, 2, "the reload counts as a load");
        release.send(()).unwrap();
    });
    assert_eq!(reloaded(&cache, "k", "v2"), "v2");
}

/// A reload whose source answers "absent" with `absent_ttl = 0` (nothing cached) and fail-safe
/// off: the reload dropped the answer and left the value it was started to replace, served as
/// fresh for the rest of its TTL by every call, though the source had said it is gone. With
/// `absent_ttl` above zero the answer replaces the value, and with fail-safe on it deletes it.
#[test]
fn a_reload_answered_absent_takes_the_value_out_also_when_absent_is_not_cached() {
    let clock = ManualClock::new(START_MS);
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.loader.refresh_ahead = 0.8;
    config.loader.absent_ttl = Duration::ZERO;
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let found = |v: &str| {
        let v = v.to_owned();
        move || Ok::<_, Error>(Some(v))
    };
    cache.get_or_load_optional("k", Some(TTL), found("v1")).unwrap();
    clock.advance(Duration::from_secs(9));
    let (release, gate) = mpsc::channel::<()>();
    let gone = move || -> Result<Option<String>, Error> {
        let _ = gate.recv();
        Ok(None)
    };
    assert_eq!(
        cache.get_or_load_optional("k", Some(TTL), gone).unwrap(),
        Some(Fetched::Fresh("v1".to_string()))
    );
    assert_eq!(cache.stats().loader.refreshes, 1);
    release.send(()).unwrap();
    // Polled as `reloaded` does: the reload's end is not observable otherwise.
    let deadline = Instant::now() + Duration::from_secs(20);
    while cache.get::<String>("k").unwrap().is_some() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        cache.get::<String>("k").unwrap(),
        None,
        "the value the source said is gone is still served"
    );
    assert_eq!(cache.stats().loader.absent_stored, 0);
}
