//! A manager with a Redis L2, the invalidation backplane and tags runs all three on one I/O
//! thread (`uno-cache-redis`): before, the L2, the backplane's publisher, its subscriber and the
//! tag store each started their own. Counted from `/proc/self/task/*/comm` (Linux), so this
//! file holds one test: no other test's threads are counted.

#![cfg(target_os = "linux")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;
#[path = "manager_support/threads.rs"]
mod threads;

use std::time::{Duration, Instant};

use support::RedisServer;
use threads::{cache_threads as uno_threads, until_thread};
use uno_cache::{CacheConfig, CacheManager};

fn redis_io_threads() -> usize {
    uno_threads()
        .iter()
        .filter(|name| {
            name.starts_with("uno-cache-redis")
                || name.starts_with("uno-cache-backp")
                || name.starts_with("uno-cache-tags")
        })
        .count()
}

fn handler_threads() -> usize {
    uno_threads()
        .iter()
        .filter(|name| name.starts_with("uno-cache-inval"))
        .count()
}

#[test]
fn l2_backplane_and_tags_share_one_io_thread_that_stops_with_the_manager() {
    let redis = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "memory"
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "io:"
        timeout_ms = 500
        [invalidation]
        enabled = true
        "#,
        redis.addr()
    ))
    .unwrap();
    assert_eq!(redis_io_threads(), 0, "{:?}", uno_threads());
    let cache = CacheManager::new(config).unwrap();
    // All three are in use: an L2 write, a tag set, a published invalidation.
    cache.set_with_tags("k", "v", None, &["t"]).unwrap();
    assert_eq!(cache.get::<String>("k").unwrap().as_deref(), Some("v"));
    cache.invalidate_tag("t").unwrap();
    assert_eq!(cache.get::<String>("k").unwrap(), None);
    // A thread names itself once it first runs, which on a loaded machine can be after the
    // calls above: until then it is listed under its parent's name and not counted.
    until_thread("uno-cache-redis", true);
    until_thread("uno-cache-inval", true);
    assert_eq!(
        uno_threads()
            .iter()
            .filter(|n| n.as_str() == "uno-cache-redis")
            .count(),
        1,
        "{:?}",
        uno_threads()
    );
    assert_eq!(redis_io_threads(), 1, "{:?}", uno_threads());
    // The invalidation handler runs on a thread of its own, off the I/O thread.
    assert_eq!(handler_threads(), 1, "{:?}", uno_threads());

    drop(cache);
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis_io_threads() + handler_threads() > 0 {
        assert!(Instant::now() < deadline, "still running: {:?}", uno_threads());
        std::thread::yield_now();
    }
}
