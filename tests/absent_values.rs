//! Cached "absent" answers (`get_or_load_optional`): a loader that says a key does not exist is
//! believed for `loader.absent_ttl`, in every level, so repeated reads of a missing key do not
//! reach the source; the answer obeys deletes and expiry as values do, and never reads as a
//! value, not even to a `get_or_set_with` that meets it (it loads its own).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, Error, Fetched, InProcess, LocalKind, ManualClock,
    MemoryStore,
};

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(300);

fn manager(clock: &ManualClock, l2: Option<Arc<dyn DistributedStorage>>, absent_ttl_s: u64) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.loader.absent_ttl = Duration::from_secs(absent_ttl_s);
    let mut builder = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()));
    if let Some(l2) = l2 {
        builder = builder.distributed(l2);
    }
    builder.build().unwrap()
}

/// A loader that counts its calls and answers `answer`.
fn source(
    calls: &Arc<AtomicU32>,
    answer: Option<&str>,
) -> impl FnOnce() -> Result<Option<String>, Error> + Send + 'static {
    let calls = Arc::clone(calls);
    let answer = answer.map(str::to_owned);
    move || {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(answer)
    }
}

#[test]
fn an_absent_answer_is_cached_and_the_source_is_not_asked_again() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    for _ in 0..3 {
        let got: Option<Fetched<String>> = cache
            .get_or_load_optional("user:9", Some(TTL), source(&calls, None))
            .unwrap();
        assert_eq!(got, None);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = cache.stats().loader;
    assert_eq!((stats.absent_stored, stats.absent_hits), (1, 2), "{stats:?}");
    // A plain read sees no value, never the marker as one.
    assert_eq!(cache.get::<String>("user:9").unwrap(), None);
}

#[test]
fn a_cached_absent_ends_after_absent_ttl() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    let _: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), source(&calls, None))
        .unwrap();
    clock.advance(Duration::from_secs(31));
    let got: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), source(&calls, Some("now")))
        .unwrap();
    assert_eq!(got, Some(Fetched::Fresh("now".to_string())));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_delete_removes_a_cached_absent_as_it_removes_a_value() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    let _: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), source(&calls, None))
        .unwrap();
    assert!(cache.delete("k").unwrap());
    let got: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), source(&calls, Some("created")))
        .unwrap();
    assert_eq!(got, Some(Fetched::Fresh("created".to_string())));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn a_call_that_wants_a_value_loads_over_a_cached_absent() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    let _: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), source(&calls, None))
        .unwrap();
    let got: Fetched<String> = cache
        .get_or_load("k", Some(TTL), || Ok::<_, Error>("value".to_string()))
        .unwrap();
    assert_eq!(got, Fetched::Fresh("value".to_string()));
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("value"));
    let got: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), source(&calls, None))
        .unwrap();
    assert_eq!(
        got,
        Some(Fetched::Fresh("value".to_string())),
        "the value replaced the absent answer"
    );
}

#[test]
fn get_or_set_with_loads_over_a_cached_absent_in_both_apis() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    for key in ["sync", "async"] {
        let _: Option<Fetched<String>> = cache
            .get_or_load_optional(key, Some(TTL), source(&calls, None))
            .unwrap();
    }
    let got: Result<String, Error> = cache.get_or_set_with("sync", Some(TTL), || Ok("value".to_string()));
    assert_eq!(got.unwrap(), "value");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let got: Result<String, Error> =
        rt.block_on(cache.get_or_set_with_async("async", Some(TTL), || async { Ok("value".to_string()) }));
    assert_eq!(got.unwrap(), "value");
    for key in ["sync", "async"] {
        assert_eq!(
            cache.get::<String>(key).unwrap().as_deref(),
            Some("value"),
            "{key}"
        );
    }
}

#[test]
fn a_get_or_set_with_waiting_on_an_absent_answer_loads_its_own_value() {
    let clock = ManualClock::new(START_MS);
    let cache = Arc::new(manager(&clock, None, 0));
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, loading) = std::sync::mpsc::channel::<()>();
    let optional = {
        let cache = Arc::clone(&cache);
        std::thread::spawn(move || {
            cache.get_or_load_optional::<String, Error, _>("w", Some(TTL), move || {
                started.send(()).unwrap();
                released.recv().unwrap();
                Ok(None)
            })
        })
    };
    // The optional call leads the flight (its loader runs); this one waits on it.
    loading.recv().unwrap();
    let waiter = {
        let cache = Arc::clone(&cache);
        std::thread::spawn(move || {
            cache.get_or_set_with::<String, Error, _>("w", Some(TTL), || Ok("value".to_string()))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().overall.load_waits == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second call never waited"
        );
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    assert_eq!(optional.join().unwrap().unwrap(), None);
    assert_eq!(waiter.join().unwrap().unwrap(), "value");
}

#[test]
fn with_absent_ttl_zero_the_answer_is_not_cached() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 0);
    let calls = Arc::new(AtomicU32::new(0));
    for _ in 0..2 {
        let _: Option<Fetched<String>> = cache
            .get_or_load_optional("k", Some(TTL), source(&calls, None))
            .unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cache.stats().loader.absent_stored, 0);
}

/// An "absent" that a write of its key overtook is not stored, so it is not counted as stored
/// either (it was counted before the store was asked, stored or not).
#[test]
fn an_absent_answer_a_write_overtook_is_neither_stored_nor_counted() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let writer = cache.clone();
    let got: Option<Fetched<String>> = cache
        .get_or_load_optional("k", Some(TTL), move || {
            writer.set("k", &"written".to_string(), Some(TTL)).unwrap();
            Ok::<_, Error>(None)
        })
        .unwrap();
    assert_eq!(got, None, "the call answers what its loader said");
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("written"));
    assert_eq!(cache.stats().loader.absent_stored, 0);
    // One that nothing overtook is stored, and counted.
    let got: Option<Fetched<String>> = cache
        .get_or_load_optional("other", Some(TTL), || Ok::<_, Error>(None))
        .unwrap();
    assert_eq!(got, None);
    assert_eq!(cache.stats().loader.absent_stored, 1);
}

#[test]
fn another_instance_sharing_the_l2_believes_the_absent_answer() {
    let clock = ManualClock::new(START_MS);
    let l2: Arc<dyn DistributedStorage> = Arc::new(InProcess::new(
        MemoryStore::with_clock(1000, Arc::new(clock.clone())).unwrap(),
    ));
    let a = manager(&clock, Some(Arc::clone(&l2)), 30);
    let b = manager(&clock, Some(Arc::clone(&l2)), 30);
    let calls = Arc::new(AtomicU32::new(0));
    let _: Option<Fetched<String>> = a
        .get_or_load_optional("k", Some(TTL), source(&calls, None))
        .unwrap();
    let got: Option<Fetched<String>> = b
        .get_or_load_optional("k", Some(TTL), source(&calls, Some("x")))
        .unwrap();
    assert_eq!(got, None);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "B did not ask the source");
    // And L2 holds it with the absent TTL, not the call's.
    let entry = l2.get("k").unwrap().unwrap();
    let left = entry
        .remaining_ttl(std::time::UNIX_EPOCH + Duration::from_millis(START_MS))
        .unwrap();
    assert!(left <= Duration::from_secs(30), "{left:?}");
}

#[test]
fn the_async_form_caches_the_absent_answer_too() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        for _ in 0..2 {
            let c = Arc::clone(&calls);
            let got: Option<Fetched<String>> = cache
                .get_or_load_optional_async("k", Some(TTL), move || async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(None)
                })
                .await
                .unwrap();
            assert_eq!(got, None);
        }
    });
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_batch_read_leaves_a_cached_absent_out() {
    let clock = ManualClock::new(START_MS);
    let cache = manager(&clock, None, 30);
    let calls = Arc::new(AtomicU32::new(0));
    let _: Option<Fetched<String>> = cache
        .get_or_load_optional("gone", Some(TTL), source(&calls, None))
        .unwrap();
    cache.set("here", &"v".to_string(), None).unwrap();
    let found = cache.multi_get::<String>(&["gone", "here"]).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found["here"], "v");
}
