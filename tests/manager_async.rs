//! Sync and async APIs: the async API reaches L2 only through the level's `*_async` methods, on
//! multi-thread and current-thread tokio runtimes alike; the sync API uses the blocking methods
//! from plain threads with no runtime anywhere; an L1 hit in the async API completes on its first
//! poll (it never crosses a thread, channel or runtime) and needs no runtime at all.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use manager_support::ScriptedStore;
use uno_cache::{CacheConfig, CacheManager, Error, MemoryStore, Storage};

fn setup(fallback: bool) -> (CacheManager, Arc<MemoryStore>, Arc<ScriptedStore>) {
    let s = manager_support::scripted(CacheConfig {
        fallback_on_error: fallback,
        ..CacheConfig::default()
    });
    (s.cache, s.l1, s.l2)
}

/// Every async operation once; returns nothing but asserts the results.
async fn exercise_async(cache: &CacheManager, l2: &ScriptedStore) {
    cache.set_async("a", &1u32, None).await.unwrap();
    assert_eq!(cache.get_async::<u32>("a").await.unwrap(), Some(1));
    l2.put_raw("b", &cache.codec().encode("b", &2u32).unwrap(), 0);
    assert_eq!(cache.get_async::<u32>("b").await.unwrap(), Some(2));
    cache
        .multi_set_async([("c", 3u32), ("d", 4u32)], Some(Duration::from_secs(5)))
        .await
        .unwrap();
    l2.put_raw("e", &cache.codec().encode("e", &5u32).unwrap(), 0);
    let got = cache
        .multi_get_async::<u32>(&["a", "c", "e", "zz"])
        .await
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got["e"], 5);
    assert!(cache.delete_async("a").await.unwrap());
    assert_eq!(cache.multi_delete_async(&["c", "d"]).await.unwrap(), 2);
    cache.set_raw_async("r", b"raw", None).await.unwrap();
    assert_eq!(
        cache.get_raw_async("r").await.unwrap().as_deref(),
        Some(&b"raw"[..])
    );
    let loaded: u32 = cache
        .get_or_set_with_async("f", None, || async { Ok::<_, Error>(6) })
        .await
        .unwrap();
    assert_eq!(loaded, 6);
    let stats = cache.monitor().get_stats_async().await;
    assert!(stats.size.distributed.items >= 3);
}

fn assert_only_async_l2_calls(l2: &ScriptedStore) {
    let ops = l2.ops();
    assert!(!ops.is_empty());
    assert!(
        ops.iter().all(|op| op.ends_with("_async")),
        "blocking L2 call from the async API: {ops:?}"
    );
    for op in [
        "get_async",
        "set_async",
        "delete_async",
        "get_many_async",
        "set_many_async",
        "delete_many_async",
    ] {
        assert!(ops.iter().any(|o| o == op), "{op} never called: {ops:?}");
    }
}

#[test]
fn async_api_uses_only_async_l2_calls_on_a_multi_thread_runtime() {
    let (cache, _, l2) = setup(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let task = {
        let (cache, l2) = (cache.clone(), l2.clone());
        rt.spawn(async move { exercise_async(&cache, &l2).await })
    };
    rt.block_on(task).unwrap();
    assert_only_async_l2_calls(&l2);
}

#[test]
fn async_api_uses_only_async_l2_calls_on_a_current_thread_runtime() {
    let (cache, _, l2) = setup(true);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(exercise_async(&cache, &l2));
    assert_only_async_l2_calls(&l2);
}

#[test]
fn async_l1_hit_completes_on_the_first_poll_without_any_runtime() {
    let (cache, _, l2) = setup(true);
    cache.set("k", &11u64, None).unwrap();
    l2.clear_calls();
    let mut cx = Context::from_waker(Waker::noop());
    let mut hit = pin!(cache.get_async::<u64>("k"));
    match hit.as_mut().poll(&mut cx) {
        Poll::Ready(got) => assert_eq!(got.unwrap(), Some(11)),
        Poll::Pending => panic!("an L1 hit waited on something"),
    }
    let mut many = pin!(cache.multi_get_async::<u64>(&["k"]));
    assert!(matches!(many.as_mut().poll(&mut cx), Poll::Ready(Ok(m)) if m["k"] == 11));
    assert!(l2.calls().is_empty());
    // A miss does go to L2 and waits on it (the scripted L2 yields once).
    let mut miss = pin!(cache.get_async::<u64>("absent"));
    assert!(miss.as_mut().poll(&mut cx).is_pending());
}

#[test]
fn sync_api_works_from_plain_threads_without_a_runtime() {
    let (cache, _, l2) = setup(true);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let cache = &cache;
            s.spawn(move || {
                assert!(
                    tokio::runtime::Handle::try_current().is_err(),
                    "a runtime is around"
                );
                let key = format!("k{t}");
                cache.set(&key, &t, None).unwrap();
                assert_eq!(cache.get::<u32>(&key).unwrap(), Some(t));
                cache.multi_set([(format!("m{t}"), t)], None).unwrap();
                assert_eq!(
                    cache
                        .multi_get::<u32>(&[format!("m{t}"), "none".into()])
                        .unwrap()
                        .len(),
                    1
                );
                assert!(cache.delete(&key).unwrap());
                assert_eq!(cache.get::<u32>(&key).unwrap(), None);
                let loaded: u32 = cache
                    .get_or_set_with(&format!("l{t}"), None, || Ok::<_, Error>(t))
                    .unwrap();
                assert_eq!(loaded, t);
            });
        }
    });
    let ops = l2.ops();
    assert!(ops.iter().all(|op| !op.ends_with("_async")), "{ops:?}");
    assert!(ops.iter().any(|op| op == "get") && ops.iter().any(|op| op == "set_many"));
}

#[test]
fn async_errors_follow_the_fallback_setting() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for fallback in [true, false] {
        let (cache, l1, l2) = setup(fallback);
        l2.set_failing(true);
        rt.block_on(async {
            let set = cache.set_async("k", &1u8, None).await;
            let get = cache.get_async::<u8>("absent").await;
            let del = cache.delete_async("k").await;
            if fallback {
                assert!(set.is_ok() && get.unwrap().is_none() && del.unwrap());
            } else {
                assert!(matches!(set, Err(Error::Io { .. })));
                assert!(matches!(get, Err(Error::Io { .. })));
                assert!(matches!(del, Err(Error::Io { .. })));
            }
        });
        assert_eq!(l1.get("k").unwrap(), None);
        assert_eq!(cache.stats().distributed.errors, 3);
    }
}

#[test]
fn async_backfill_does_not_resurrect_a_key_deleted_during_the_l2_read() {
    let (cache, l1, l2) = setup(true);
    l2.put_raw("k", &cache.codec().encode("k", &"old").unwrap(), 0);
    let gate = l2.gate("get");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let reader = {
        let cache = cache.clone();
        rt.spawn(async move { cache.get_async::<String>("k").await.unwrap() })
    };
    gate.wait_entered();
    assert!(cache.delete("k").unwrap());
    gate.release();
    assert_eq!(rt.block_on(reader).unwrap().as_deref(), Some("old"));
    assert_eq!(l1.get("k").unwrap(), None);
    assert_eq!(cache.get::<String>("k").unwrap(), None);
}
