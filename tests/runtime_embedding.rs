//! The manager embedded in the runtimes and threads its users have: the blocking API called from
//! a task of a multi-thread tokio runtime, from inside a current-thread runtime's `block_on`, from
//! `spawn_blocking` and from `block_in_place`; the async API on a current-thread runtime (with
//! and without timers) and on an executor that is not tokio's; the manager built inside a
//! runtime, or used in one, and used on after that runtime is gone, and dropped on a runtime
//! worker; loaders that call back into the cache, for their own key included (a loading call
//! for it is refused, where it waited for itself). Against a file L1 alone, and over real
//! Redis (backplane, tags, write-behind) and Memcached L2s. Each scenario runs under a watchdog:
//! a hang fails the test, naming the scenario, instead of holding it for good.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use support::{MemcachedServer, RedisServer};
use uno_cache::{CacheConfig, CacheManager, Error, Fetched};

/// How long one scenario may take before it counts as hung.
const WATCHDOG: Duration = Duration::from_secs(60);

/// Runs `scenario` on a thread of its own and fails, naming `what`, if it does not end within
/// the watchdog (a deadlock), or re-raises its panic.
fn within_watchdog(what: &str, scenario: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(format!("scenario {what}"))
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario));
            let _ = tx.send(out);
        })
        .unwrap();
    match rx.recv_timeout(WATCHDOG) {
        Ok(Ok(())) => thread.join().unwrap(),
        Ok(Err(panic)) => {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{what}: panicked: {text}");
        }
        Err(_) => panic!("{what}: still running after {WATCHDOG:?} (deadlock?)"),
    }
}

#[derive(Clone, Copy, Debug)]
enum Levels {
    FileOnly,
    Redis { behind: bool },
    Memcached,
}

struct Servers {
    redis: RedisServer,
    memcached: MemcachedServer,
}

impl Servers {
    fn start() -> Self {
        Servers {
            redis: RedisServer::start(),
            memcached: MemcachedServer::start(),
        }
    }
}

fn config(dir: &Path, levels: Levels, servers: &Servers, loader: &str) -> CacheConfig {
    let l2 = match levels {
        Levels::FileOnly => String::new(),
        Levels::Redis { behind } => format!(
            r#"
            [distributed]
            enabled = true
            type = "redis"
            hosts = ["{host}"]
            key_prefix = "{prefix}:"
            timeout_ms = 2000
            write_mode = "{mode}"
            [invalidation]
            enabled = true
            channel = "{prefix}"
            "#,
            host = servers.redis.addr(),
            prefix = dir.file_name().unwrap().to_string_lossy(),
            mode = if behind { "behind" } else { "through" },
        ),
        Levels::Memcached => format!(
            r#"
            [distributed]
            enabled = true
            type = "memcached"
            hosts = ["{host}"]
            key_prefix = "{prefix}:"
            timeout_ms = 2000
            "#,
            host = servers.memcached.addr(),
            prefix = dir.file_name().unwrap().to_string_lossy(),
        ),
    };
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        {l2}
        [loader]
        {loader}
        "#,
        dir.display(),
    ))
    .unwrap()
}

fn levels_of(servers: &Servers) -> Vec<Levels> {
    let _ = servers;
    vec![
        Levels::FileOnly,
        Levels::Redis { behind: false },
        Levels::Redis { behind: true },
        Levels::Memcached,
    ]
}

/// A prefix invalidation's answer: `Ok` where L2 can list its keys; Memcached cannot, keeps
/// them until their TTL, and the call says so.
fn prefix_invalidated(levels: Levels, result: Result<u64, Error>) {
    if matches!(levels, Levels::Memcached) {
        assert!(
            matches!(
                result,
                Err(Error::PrefixKeptInL2 {
                    level: "memcached",
                    ..
                })
            ),
            "{result:?}"
        );
    } else {
        result.unwrap();
    }
}

/// A prefix invalidation's answer, Memcached's report that it keeps the keys taken as `Ok`.
fn kept_in_memcached(result: Result<u64, Error>) -> Result<(), Error> {
    match result {
        Ok(_) | Err(Error::PrefixKeptInL2 { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Every blocking call once (loaders with and without deadlines, whose loaders read and write
/// other keys of the cache), asserting what each returns.
fn exercise_blocking(cache: &Arc<CacheManager>, levels: Levels) {
    cache.set("a", &1u32, None).unwrap();
    assert_eq!(cache.get::<u32>("a").unwrap(), Some(1));
    cache.multi_set([("b", 2u32), ("c", 3u32)], None).unwrap();
    let got = cache.multi_get::<u32>(&["a", "b", "c", "zz"]).unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(cache.delete("a").unwrap());
    assert_eq!(cache.multi_delete(&["b", "c"]).unwrap(), 2);
    cache.set_raw("r", b"raw", None).unwrap();
    assert_eq!(cache.get_raw("r").unwrap().as_deref(), Some(&b"raw"[..]));
    let inner = Arc::clone(cache);
    let loaded: u32 = cache
        .get_or_set_with("f", None, || {
            // A loader that uses the cache for other keys.
            inner.set("f-side", &9u32, None)?;
            Ok::<_, Error>(inner.get::<u32>("f-side")?.unwrap_or(0) + 1)
        })
        .unwrap();
    assert_eq!(loaded, 10);
    let inner = Arc::clone(cache);
    let fetched: Fetched<u32> = cache
        .get_or_load("g", None, move || {
            inner.set("g-side", &7u32, None)?;
            Ok::<_, Error>(7)
        })
        .unwrap();
    assert_eq!(fetched.into_value(), 7);
    assert_eq!(cache.get::<u32>("g").unwrap(), Some(7));
    if !matches!(levels, Levels::FileOnly) {
        if matches!(levels, Levels::Redis { .. }) {
            cache.set_with_tags("t1", &1u32, None, &["tag"]).unwrap();
            assert_eq!(cache.invalidate_tag("tag").unwrap(), 1);
            assert_eq!(cache.get::<u32>("t1").unwrap(), None);
        }
        cache.set("p:1", &1u32, None).unwrap();
        prefix_invalidated(levels, cache.invalidate_prefix("p:"));
        if matches!(levels, Levels::Redis { .. }) {
            assert_eq!(cache.get::<u32>("p:1").unwrap(), None);
        }
        cache.replay_now().unwrap();
    }
    assert!(cache.invalidate_local("r").unwrap());
    cache.flush().unwrap();
    let _ = cache.stats();
    cache.set("last", &5u32, None).unwrap();
}

fn with_each_levels(what: &str, loader: &'static str, body: fn(Arc<CacheManager>, Levels)) {
    let servers = Arc::new(Servers::start());
    for levels in levels_of(&servers) {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(CacheManager::new(config(dir.path(), levels, &servers, loader)).unwrap());
        within_watchdog(&format!("{what} over {levels:?}"), move || body(cache, levels));
        let reopened = CacheManager::new(config(dir.path(), levels, &servers, loader))
            .unwrap_or_else(|e| panic!("{what} over {levels:?}: reopened after the drop: {e}"));
        assert_eq!(
            reopened.get::<u32>("last").unwrap(),
            Some(5),
            "{what} over {levels:?}: the last write was lost"
        );
    }
}

const NO_DEADLINES: &str = "";
const DEADLINES: &str = "hard_timeout_ms = 5000";

/// A multi-thread runtime of two workers, with timers and I/O.
fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A current-thread runtime, with timers and I/O.
fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_blocking_api_works_in_a_task_of_a_multi_thread_runtime() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("multi-thread task", loader, |cache, levels| {
            let rt = multi_thread();
            rt.block_on(async move {
                tokio::spawn(async move {
                    exercise_blocking(&cache, levels);
                    // The last handle, dropped on a runtime worker.
                    drop(cache);
                })
                .await
                .unwrap();
            });
        });
    }
}

#[test]
fn the_blocking_api_works_inside_a_current_thread_runtime() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("current-thread block_on", loader, |cache, levels| {
            let rt = current_thread();
            rt.block_on(async move {
                exercise_blocking(&cache, levels);
                drop(cache);
            });
        });
    }
}

#[test]
fn the_blocking_api_works_from_spawn_blocking_and_block_in_place() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("spawn_blocking", loader, |cache, levels| {
            let rt = multi_thread();
            rt.block_on(async move {
                tokio::task::spawn_blocking(move || {
                    exercise_blocking(&cache, levels);
                    drop(cache);
                })
                .await
                .unwrap();
            });
        });
        with_each_levels("block_in_place", loader, |cache, levels| {
            let rt = multi_thread();
            rt.block_on(async move {
                tokio::spawn(async move {
                    tokio::task::block_in_place(|| {
                        exercise_blocking(&cache, levels);
                        drop(cache);
                    });
                })
                .await
                .unwrap();
            });
        });
    }
}

/// Every async call once, loaders included (with deadlines the load is a task spawned on the
/// caller's runtime), asserting what each returns.
async fn exercise_async(cache: &Arc<CacheManager>, levels: Levels) {
    cache.set_async("a", &1u32, None).await.unwrap();
    assert_eq!(cache.get_async::<u32>("a").await.unwrap(), Some(1));
    cache
        .multi_set_async([("b", 2u32), ("c", 3u32)], None)
        .await
        .unwrap();
    let got = cache
        .multi_get_async::<u32>(&["a", "b", "c", "zz"])
        .await
        .unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(cache.delete_async("a").await.unwrap());
    assert_eq!(cache.multi_delete_async(&["b", "c"]).await.unwrap(), 2);
    let inner = Arc::clone(cache);
    let loaded: u32 = cache
        .get_or_set_with_async("f", None, || async move {
            inner.set_async("f-side", &9u32, None).await?;
            Ok::<_, Error>(inner.get_async::<u32>("f-side").await?.unwrap_or(0) + 1)
        })
        .await
        .unwrap();
    assert_eq!(loaded, 10);
    let inner = Arc::clone(cache);
    let fetched: Fetched<u32> = cache
        .get_or_load_async("g", None, move || async move {
            inner.set_async("g-side", &7u32, None).await?;
            Ok::<_, Error>(7)
        })
        .await
        .unwrap();
    assert_eq!(fetched.into_value(), 7);
    if !matches!(levels, Levels::FileOnly) {
        if matches!(levels, Levels::Redis { .. }) {
            cache
                .set_with_tags_async("t1", &1u32, None, &["tag"])
                .await
                .unwrap();
            assert_eq!(cache.invalidate_tag_async("tag").await.unwrap(), 1);
            assert_eq!(cache.get_async::<u32>("t1").await.unwrap(), None);
        }
        cache.set_async("p:1", &1u32, None).await.unwrap();
        prefix_invalidated(levels, cache.invalidate_prefix_async("p:").await);
        if matches!(levels, Levels::Redis { .. }) {
            assert_eq!(cache.get_async::<u32>("p:1").await.unwrap(), None);
        }
        cache.replay_now_async().await.unwrap();
    }
    cache.flush_async().await.unwrap();
    cache.set_async("last", &5u32, None).await.unwrap();
}

#[test]
fn the_async_api_works_on_a_current_thread_runtime_with_and_without_timers() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("async on current-thread", loader, |cache, levels| {
            let rt = current_thread();
            rt.block_on(async move {
                exercise_async(&cache, levels).await;
                drop(cache);
            });
        });
        with_each_levels(
            "async on current-thread without timers",
            loader,
            |cache, levels| {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(async move {
                    exercise_async(&cache, levels).await;
                    drop(cache);
                });
            },
        );
    }
}

/// The manager is built inside one runtime, which is then shut down with async calls of it in
/// flight (loads spawned on it among them); the manager is then used from a second runtime and
/// from a plain thread, every key touched by the cancelled calls included, and dropped there.
#[test]
fn a_manager_outlives_the_runtime_it_was_built_and_used_in() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("runtime gone", loader, |cache, levels| {
            let first = multi_thread();
            let (started_tx, started_rx) = mpsc::channel();
            first.block_on(async {
                for i in 0..32u32 {
                    let cache = Arc::clone(&cache);
                    tokio::spawn(async move {
                        let _ = cache.set_async(&format!("k{}", i % 4), &i, None).await;
                        let _ = cache.delete_async(&format!("k{}", i % 4)).await;
                    });
                }
                let loading = Arc::clone(&cache);
                let started = started_tx.clone();
                tokio::spawn(async move {
                    let _ = loading
                        .get_or_load_async::<u32, Error, _, _>("hung", None, move || async move {
                            let _ = started.send(());
                            std::future::pending().await
                        })
                        .await;
                });
            });
            started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            first.shutdown_timeout(Duration::from_secs(5));

            let second = current_thread();
            second.block_on(async {
                for i in 0..4u32 {
                    cache.set_async(&format!("k{i}"), &i, None).await.unwrap();
                    // The cancelled writes of these keys may still be corrected (a write that
                    // landed late is deleted from L2, and its key from L1): a miss then, never
                    // an older value.
                    let got = cache.get_async::<u32>(&format!("k{i}")).await.unwrap();
                    assert!(got.is_none() || got == Some(i), "k{i}: {got:?}");
                    cache.set_async(&format!("fresh{i}"), &i, None).await.unwrap();
                    assert_eq!(
                        cache.get_async::<u32>(&format!("fresh{i}")).await.unwrap(),
                        Some(i)
                    );
                }
                let fetched: Fetched<u32> = cache
                    .get_or_load_async("hung", None, || async { Ok::<_, Error>(3) })
                    .await
                    .unwrap();
                assert_eq!(fetched.into_value(), 3);
            });
            drop(second);
            exercise_blocking(&cache, levels);
            drop(cache);
        });
    }
}

/// What a loader does to its own key through the cache: write it, delete it, invalidate it
/// locally, by prefix and by tag, flush, read it. None of it may wait on the load's own hold of
/// the key.
fn touch_own_key(cache: &CacheManager, key: &str, levels: Levels) -> Result<(), Error> {
    assert_eq!(cache.get::<u32>(key)?, None);
    cache.set(key, &100u32, None)?;
    cache.delete(key)?;
    cache.multi_set([(key, 101u32), ("other", 1u32)], None)?;
    cache.multi_delete(&[key])?;
    cache.invalidate_local(key)?;
    if matches!(levels, Levels::Redis { .. }) {
        cache.set_with_tags(key, &102u32, None, &["own"])?;
        cache.invalidate_tag("own")?;
    }
    kept_in_memcached(cache.invalidate_prefix(key))?;
    cache.flush()?;
    Ok(())
}

async fn touch_own_key_async(cache: &CacheManager, key: &str, levels: Levels) -> Result<(), Error> {
    assert_eq!(cache.get_async::<u32>(key).await?, None);
    cache.set_async(key, &100u32, None).await?;
    cache.delete_async(key).await?;
    cache
        .multi_set_async([(key, 101u32), ("other", 1u32)], None)
        .await?;
    cache.multi_delete_async(&[key]).await?;
    cache.invalidate_local_async(key).await?;
    if matches!(levels, Levels::Redis { .. }) {
        cache.set_with_tags_async(key, &102u32, None, &["own"]).await?;
        cache.invalidate_tag_async("own").await?;
    }
    kept_in_memcached(cache.invalidate_prefix_async(key).await)?;
    cache.flush_async().await?;
    Ok(())
}

#[test]
fn a_loader_that_writes_and_invalidates_its_own_key_does_not_wait_on_its_load() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("sync loaders touching their key", loader, |cache, levels| {
            let inner = Arc::clone(&cache);
            let v: u32 = cache
                .get_or_set_with("own-a", None, || {
                    touch_own_key(&inner, "own-a", levels)?;
                    Ok::<_, Error>(1)
                })
                .unwrap();
            assert_eq!(v, 1);
            let inner = Arc::clone(&cache);
            let v = cache
                .get_or_load("own-b", None, move || {
                    touch_own_key(&inner, "own-b", levels)?;
                    Ok::<_, Error>(2u32)
                })
                .unwrap();
            assert_eq!(v.into_value(), 2);
            // The loads were overtaken by their own writes: their values were not stored.
            assert_eq!(cache.get::<u32>("own-a").unwrap(), None);
            assert_eq!(cache.get::<u32>("own-b").unwrap(), None);
            cache.set("last", &5u32, None).unwrap();
        });
        with_each_levels("async loaders touching their key", loader, |cache, levels| {
            let rt = current_thread();
            rt.block_on(async move {
                let inner = Arc::clone(&cache);
                let v: u32 = cache
                    .get_or_set_with_async("own-a", None, || async move {
                        touch_own_key_async(&inner, "own-a", levels).await?;
                        Ok::<_, Error>(1)
                    })
                    .await
                    .unwrap();
                assert_eq!(v, 1);
                let inner = Arc::clone(&cache);
                let v = cache
                    .get_or_load_async("own-b", None, move || async move {
                        touch_own_key_async(&inner, "own-b", levels).await?;
                        Ok::<_, Error>(2u32)
                    })
                    .await
                    .unwrap();
                assert_eq!(v.into_value(), 2);
                assert_eq!(cache.get_async::<u32>("own-a").await.unwrap(), None);
                assert_eq!(cache.get_async::<u32>("own-b").await.unwrap(), None);
                cache.set_async("last", &5u32, None).await.unwrap();
            });
        });
    }
}

/// The error a loading call made by a loader for the loader's own key must end with: it names
/// the key and says why, where it used to wait for its own load for good (or, with a hard
/// timeout, until that passed).
fn assert_reentry_refused<T: std::fmt::Debug>(form: &str, nested: &Result<T, Error>) {
    assert_reentry_of("own", form, nested);
}

fn assert_reentry_of<T: std::fmt::Debug>(key: &str, form: &str, nested: &Result<T, Error>) {
    let text = match nested {
        Err(e @ Error::Backend { op: "load", .. }) => e.to_string(),
        other => panic!("{form}: the nested call for the loader's own key answered {other:?}"),
    };
    assert!(
        text.contains(&format!("{key:?}")) && text.contains("its own key"),
        "{form}: {text}"
    );
}

/// A loader that makes a loading call for the key it loads, in each form, sync and async: the
/// nested call is refused at once with an error naming the key (the loader then fails, and so
/// does the outer call), where it waited on the load it ran, which could never end.
#[test]
fn a_loader_that_loads_its_own_key_again_is_refused_not_deadlocked() {
    for loader in [NO_DEADLINES, DEADLINES] {
        let servers = Servers::start();
        let dir = tempfile::tempdir().unwrap();
        let cache =
            Arc::new(CacheManager::new(config(dir.path(), Levels::FileOnly, &servers, loader)).unwrap());
        within_watchdog(&format!("sync reentry ({loader:?})"), move || {
            let inner = Arc::clone(&cache);
            let outer = cache.get_or_set_with("own", None, || {
                let nested = inner.get_or_set_with("own", None, || Ok::<u32, Error>(1));
                assert_reentry_refused("get_or_set_with in get_or_set_with", &nested);
                nested
            });
            assert_reentry_refused("get_or_set_with", &outer);
            let inner = Arc::clone(&cache);
            let outer = cache.get_or_load("own", None, move || {
                let nested = inner.get_or_load("own", None, || Ok::<u32, Error>(1));
                assert_reentry_refused("get_or_load in get_or_load", &nested);
                nested.map(Fetched::into_value)
            });
            assert_reentry_refused("get_or_load", &outer);
            // A cycle through another key's load (inline, or each on a load thread of its
            // own with deadlines) is refused where it comes back.
            let inner = Arc::clone(&cache);
            let outer = cache.get_or_load("cycle", None, move || {
                let back = Arc::clone(&inner);
                let mid = inner.get_or_load("mid", None, move || {
                    let nested = back.get_or_load("cycle", None, || Ok::<u32, Error>(1));
                    assert_reentry_of("cycle", "get_or_load back to the outer key", &nested);
                    nested.map(Fetched::into_value)
                });
                assert_reentry_of("cycle", "get_or_load of the middle key", &mid);
                mid.map(Fetched::into_value)
            });
            assert_reentry_of("cycle", "get_or_load of a cycle", &outer);
            // A load that is not its own key's is no reentry: it nests as usual.
            let inner = Arc::clone(&cache);
            let outer = cache
                .get_or_load("own", None, move || {
                    Ok::<u32, Error>(
                        inner
                            .get_or_load("other", None, || Ok::<u32, Error>(2))?
                            .into_value()
                            + 1,
                    )
                })
                .unwrap();
            assert_eq!(outer.into_value(), 3);
        });
        let dir = tempfile::tempdir().unwrap();
        let cache =
            Arc::new(CacheManager::new(config(dir.path(), Levels::FileOnly, &servers, loader)).unwrap());
        within_watchdog(&format!("async reentry ({loader:?})"), move || {
            let rt = current_thread();
            rt.block_on(async move {
                let inner = Arc::clone(&cache);
                let outer = cache
                    .get_or_set_with_async("own", None, || async move {
                        let nested = inner
                            .get_or_set_with_async("own", None, || async { Ok::<u32, Error>(1) })
                            .await;
                        assert_reentry_refused("get_or_set_with_async in get_or_set_with_async", &nested);
                        nested
                    })
                    .await;
                assert_reentry_refused("get_or_set_with_async", &outer);
                let inner = Arc::clone(&cache);
                let outer = cache
                    .get_or_load_async("own", None, move || async move {
                        let nested = inner
                            .get_or_load_async("own", None, || async { Ok::<u32, Error>(1) })
                            .await;
                        assert_reentry_refused("get_or_load_async in get_or_load_async", &nested);
                        nested.map(Fetched::into_value)
                    })
                    .await;
                assert_reentry_refused("get_or_load_async", &outer);
                let inner = Arc::clone(&cache);
                let outer = cache
                    .get_or_load_async("cycle", None, move || async move {
                        let back = Arc::clone(&inner);
                        let mid = inner
                            .get_or_load_async("mid", None, move || async move {
                                let nested = back
                                    .get_or_load_async("cycle", None, || async { Ok::<u32, Error>(1) })
                                    .await;
                                assert_reentry_of(
                                    "cycle",
                                    "get_or_load_async back to the outer key",
                                    &nested,
                                );
                                nested.map(Fetched::into_value)
                            })
                            .await;
                        assert_reentry_of("cycle", "get_or_load_async of the middle key", &mid);
                        mid.map(Fetched::into_value)
                    })
                    .await;
                assert_reentry_of("cycle", "get_or_load_async of a cycle", &outer);
                let inner = Arc::clone(&cache);
                let outer = cache
                    .get_or_load_async("own", None, move || async move {
                        let other = inner
                            .get_or_load_async("other", None, || async { Ok::<u32, Error>(2) })
                            .await?;
                        Ok::<u32, Error>(other.into_value() + 1)
                    })
                    .await
                    .unwrap();
                assert_eq!(outer.into_value(), 3);
            });
        });
    }
}

/// Polls `fut` to its end on this thread with no tokio runtime anywhere: the executor of an
/// application that is not tokio's.
fn block_on_plain<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn the_async_api_works_on_an_executor_that_is_not_tokio() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("async on a plain executor", loader, |cache, levels| {
            block_on_plain(async move {
                exercise_async(&cache, levels).await;
                drop(cache);
            });
        });
    }
}

/// The manager built inside a runtime (a current-thread one's `block_on`, a multi-thread one's
/// task), which is then shut down: the manager works on from a plain thread and another
/// runtime, and its last write survives its drop.
#[test]
fn a_manager_built_inside_a_runtime_works_after_that_runtime_is_gone() {
    let servers = Arc::new(Servers::start());
    for levels in levels_of(&servers) {
        for multi in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_owned();
            let cfg = config(&path, levels, &servers, DEADLINES);
            within_watchdog(
                &format!("built inside a runtime (multi {multi}) over {levels:?}"),
                move || {
                    let cache = if multi {
                        let rt = multi_thread();
                        let cache = rt.block_on(async move {
                            tokio::spawn(async move { Arc::new(CacheManager::new(cfg).unwrap()) })
                                .await
                                .unwrap()
                        });
                        drop(rt);
                        cache
                    } else {
                        let rt = current_thread();
                        let cache = rt.block_on(async move {
                            let cache = Arc::new(CacheManager::new(cfg).unwrap());
                            cache.set_async("early", &1u32, None).await.unwrap();
                            cache
                        });
                        drop(rt);
                        cache
                    };
                    exercise_blocking(&cache, levels);
                    let rt = multi_thread();
                    let cache = rt.block_on(async move {
                        exercise_async(&cache, levels).await;
                        cache
                    });
                    drop(rt);
                    drop(cache);
                },
            );
            let reopened = CacheManager::new(config(dir.path(), levels, &servers, DEADLINES)).unwrap();
            assert_eq!(reopened.get::<u32>("last").unwrap(), Some(5), "{levels:?}");
        }
    }
}

/// A load led on a runtime that is shut down while callers elsewhere wait on it (a blocking one
/// on a plain thread, an async one on another runtime): they are not left waiting; one of them
/// loads in its place and both get its value, which is stored.
#[test]
fn callers_waiting_on_a_load_whose_runtime_shuts_down_load_in_its_place() {
    for loader in [NO_DEADLINES, DEADLINES] {
        with_each_levels("load's runtime shut down", loader, |cache, _levels| {
            let first = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let (started_tx, started_rx) = mpsc::channel();
            let leading = Arc::clone(&cache);
            first.spawn(async move {
                let _ = leading
                    .get_or_load_async::<u32, Error, _, _>("k", None, move || async move {
                        let _ = started_tx.send(());
                        std::future::pending().await
                    })
                    .await;
            });
            started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
            let waits_before = cache.stats().overall.load_waits;
            let blocking = {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    cache
                        .get_or_load("k", None, || Ok::<u32, Error>(7))
                        .unwrap()
                        .into_value()
                })
            };
            let other = {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    support::block_on(async move {
                        cache
                            .get_or_load_async("k", None, || async { Ok::<u32, Error>(7) })
                            .await
                            .unwrap()
                            .into_value()
                    })
                })
            };
            support::wait_until("both callers wait on the load", || {
                cache.stats().overall.load_waits >= waits_before + 2
            });
            first.shutdown_timeout(Duration::from_secs(5));
            assert_eq!(blocking.join().unwrap(), 7);
            assert_eq!(other.join().unwrap(), 7);
            assert_eq!(cache.get::<u32>("k").unwrap(), Some(7));
            cache.set("last", &5u32, None).unwrap();
        });
    }
}
