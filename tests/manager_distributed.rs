//! The manager with the real L2 levels built from configuration, against real `redis-server` and
//! `memcached` processes (started on free loopback ports by the shared harness; a missing server
//! fails the test naming the package): a value written through one instance is read by a second
//! instance from L2 and backfilled; L2 entries get `distributed.ttl` and the key prefix; a dead
//! L2 is hidden by `fallback_on_error` and then skipped by the open circuit breaker, whose state
//! is in the stats; an L2 unreachable at start-up is an error naming the host without fallback,
//! and with fallback the manager starts on L1 and connects L2 in the background once it is up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use support::{free_port, MemcachedServer, RedisServer};
use uno_cache::{BreakerState, CacheConfig, CacheManager, Error};

fn config(kind: &str, host: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&config_text(kind, host)).unwrap()
}

/// The TOML of [`config`], ending in its `[distributed]` table.
fn config_text(kind: &str, host: &str) -> String {
    format!(
        r#"
        fallback_on_error = true
        [local]
        type = "memory"
        ttl = 60
        [distributed]
        enabled = true
        type = "{kind}"
        hosts = ["{host}"]
        ttl = 600
        key_prefix = "app:"
        timeout_ms = 200
        breaker_failures = 2
        breaker_cooldown_ms = 600000
        "#
    )
}

fn second_instance_reads_through_l2(kind: &str, host: &str) -> (CacheManager, CacheManager) {
    let writer = CacheManager::new(config(kind, host)).unwrap();
    let reader = CacheManager::new(config(kind, host)).unwrap();
    writer.set("user:1", &("Ada".to_owned(), 36u8), None).unwrap();
    let got: Option<(String, u8)> = reader.get("user:1").unwrap();
    assert_eq!(got, Some(("Ada".to_owned(), 36)));
    let stats = reader.stats();
    assert_eq!(stats.distributed.name, kind);
    assert_eq!(
        (
            stats.local.misses,
            stats.distributed.hits,
            stats.overall.backfills
        ),
        (1, 1, 1)
    );
    assert_eq!(stats.distributed.breaker.unwrap().state, BreakerState::Closed);
    // Now an L1 hit on the reader.
    assert!(reader.local().get("user:1").unwrap().is_some());
    (writer, reader)
}

#[test]
fn redis_l2_from_config_serves_a_second_instance_with_ttl_and_prefix() {
    let server = RedisServer::start();
    let (writer, _reader) = second_instance_reads_through_l2("redis", &server.addr());
    let mut raw = server.raw();
    let pttl: i64 = redis::cmd("PTTL").arg("app:user:1").query(&mut raw).unwrap();
    assert!((590_000..=600_000).contains(&pttl), "PTTL {pttl}");
    assert!(writer.delete("user:1").unwrap());
    let exists: i64 = redis::cmd("EXISTS").arg("app:user:1").query(&mut raw).unwrap();
    assert_eq!(exists, 0);
}

#[test]
fn memcached_l2_from_config_serves_a_second_instance() {
    let server = MemcachedServer::start();
    let (writer, reader) = second_instance_reads_through_l2("memcached", &server.addr());
    assert!(writer.delete("user:1").unwrap());
    assert!(reader.invalidate_local("user:1").unwrap());
    assert_eq!(reader.get::<(String, u8)>("user:1").unwrap(), None);
}

#[test]
fn dead_redis_is_hidden_then_skipped_by_the_open_breaker() {
    let mut server = RedisServer::start();
    let cache = CacheManager::new(config("redis", &server.addr())).unwrap();
    cache.set("kept", &1u8, None).unwrap();
    server.kill();
    // Two failures (breaker_failures = 2) open the breaker; the reads are misses, not errors.
    assert_eq!(cache.get::<u8>("a").unwrap(), None);
    assert_eq!(cache.get::<u8>("b").unwrap(), None);
    let opened = cache.stats().distributed;
    let breaker = opened.breaker.unwrap();
    assert_eq!(breaker.state, BreakerState::Open);
    // While open, L2 is skipped: no call is sent, so none waits for a deadline. Counted, not
    // timed (a killed server refuses a connection at once, so a sent call would be fast too,
    // and a loaded machine can stall any call): a call sent to L2 is timed in `get_latency`
    // and a failed one feeds the breaker's failure count; a skipped one does neither (the cool
    // down of ten minutes lets no probe through).
    for i in 0..20 {
        assert_eq!(cache.get::<u8>(&format!("c{i}")).unwrap(), None);
    }
    let skipped = cache.stats().distributed;
    assert_eq!(
        skipped.get_latency.samples, opened.get_latency.samples,
        "a read reached the dead L2 through the open breaker"
    );
    assert_eq!(
        skipped.breaker.unwrap(),
        breaker,
        "the skipped reads fed the breaker"
    );
    // L1 still serves and takes writes.
    assert_eq!(cache.get::<u8>("kept").unwrap(), Some(1));
    cache.set("new", &2u8, None).unwrap();
    assert_eq!(cache.get::<u8>("new").unwrap(), Some(2));
    assert!(cache.stats().distributed.errors >= 23);
}

#[test]
fn without_fallback_an_unreachable_l2_at_start_is_an_error_naming_the_host() {
    let host = format!("127.0.0.1:{}", free_port());
    let mut config = config("redis", &host);
    config.fallback_on_error = false;
    let err = CacheManager::new(config).unwrap_err();
    assert!(
        matches!(err, Error::Backend { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    let port = host.rsplit(':').next().unwrap();
    assert!(err.to_string().contains(port), "{err}");
}

#[test]
fn with_fallback_an_l2_down_at_start_is_connected_in_the_background() {
    let mut server = RedisServer::start();
    let addr = server.addr();
    server.kill();
    let mut config = config("redis", &addr);
    config.distributed.breaker_cooldown_ms = 50;
    let cache = CacheManager::new(config).unwrap();
    assert_eq!(cache.stats().distributed.name, "redis");
    cache.set("a", &1u8, None).unwrap();
    assert_eq!(
        cache.get::<u8>("a").unwrap(),
        Some(1),
        "L1 serves while L2 is down"
    );
    assert!(cache.stats().distributed.errors >= 1);

    server.restart();
    let mut raw = server.raw();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        cache.set("b", &2u8, None).unwrap();
        let exists: i64 = redis::cmd("EXISTS").arg("app:b").query(&mut raw).unwrap();
        if exists == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "L2 never connected: {:?}",
            cache.stats().distributed
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        cache.stats().distributed.breaker.unwrap().state,
        BreakerState::Closed
    );
}

/// The async stats read L2's size without blocking: with the server frozen, the first poll of
/// `get_stats_async` is pending (a blocking read would wait inside the poll, then fail). Frozen,
/// because a live server on loopback can answer before the poll looks, which made the bare
/// "first poll is pending" check flaky.
fn async_stats_do_not_block_on_the_l2_size(kind: &str, host: &str, freeze: &dyn Fn(), thaw: &dyn Fn()) {
    let cache = CacheManager::new(config(kind, host)).unwrap();
    cache.set("k", &1u8, None).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    let mut stats = pin!(cache.monitor().get_stats_async());
    freeze();
    let first = stats.as_mut().poll(&mut cx).is_pending();
    thaw();
    assert!(first, "{kind}: the L2 size was read in the poll");
    let stats = support::block_on(stats);
    assert!(stats.size.distributed.items >= 1, "{kind}: {:?}", stats.size);
    assert_eq!(stats.distributed.size_error, None);
}

#[test]
fn async_stats_read_the_redis_and_memcached_size_without_blocking() {
    let redis = RedisServer::start();
    async_stats_do_not_block_on_the_l2_size("redis", &redis.addr(), &|| redis.pause(), &|| redis.resume());
    let memcached = MemcachedServer::start();
    async_stats_do_not_block_on_the_l2_size("memcached", &memcached.addr(), &|| memcached.pause(), &|| {
        memcached.resume()
    });
}

#[test]
fn one_unreadable_l2_value_is_a_miss_and_the_other_keys_of_a_multi_get_are_served() {
    // As for `get`: with fallback_on_error the bad key is a counted miss. The whole batch
    // failed with it, so every key of the multi_get was a miss.
    let server = RedisServer::start();
    let writer = CacheManager::new(config("redis", &server.addr())).unwrap();
    let reader = CacheManager::new(config("redis", &server.addr())).unwrap();
    writer.set_raw("a", b"1", None).unwrap();
    writer.set_raw("c", b"3", None).unwrap();
    redis::cmd("SET")
        .arg("app:foreign")
        .arg("written by another program")
        .exec(&mut server.raw())
        .unwrap();
    let got = reader.multi_get_raw(&["a", "foreign", "c"]).unwrap();
    assert_eq!(got.len(), 2, "{:?}", got.keys());
    assert_eq!(got["a"], b"1");
    assert_eq!(got["c"], b"3");
    assert_eq!(reader.stats().distributed.errors, 1);
    assert!(reader.get_raw("foreign").unwrap().is_none());
    assert_eq!(reader.stats().distributed.errors, 2);
}

/// Counting a Redis level walks every key. Stats read by several threads at once (a scrape and a
/// health check) each walked it when the last reading was stale; now one walks and the others
/// take its reading.
#[test]
fn stats_read_by_several_threads_at_once_walk_l2_once() {
    let server = RedisServer::start();
    let cache = CacheManager::new(config("redis", &server.addr())).unwrap();
    let items: Vec<(String, Vec<u8>)> = (0..20_000).map(|i| (format!("k{i}"), vec![b'v'; 8])).collect();
    let refs: Vec<(&str, &[u8])> = items.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    for chunk in refs.chunks(1000) {
        cache.multi_set_raw(chunk, None).unwrap();
    }
    // What one walk costs, counted on a level of its own.
    let scans = server.command_calls("scan");
    let alone =
        uno_cache::RedisStore::connect(uno_cache::RedisOptions::new(server.addr()).prefix("app:")).unwrap();
    assert_eq!(uno_cache::Storage::size(&alone).unwrap().items, 20_000);
    let one_walk = server.command_calls("scan") - scans;
    assert!(one_walk > 1);
    let threads = 4;
    let barrier = std::sync::Barrier::new(threads);
    let scans = server.command_calls("scan");
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                barrier.wait();
                assert_eq!(cache.stats().size.distributed.items, 20_000);
            });
        }
    });
    assert_eq!(
        server.command_calls("scan") - scans,
        one_walk,
        "L2 walked more than once"
    );
}

/// A Redis level is counted by walking every key under its prefix, on every instance that polls
/// its stats: `size_max_age_secs` sets how long a count is reused (60 s by default, where it was
/// 5 s), and 0 turns the count off, the stats saying so.
#[test]
fn l2_size_max_age_is_configured_and_zero_never_walks_l2() {
    let server = RedisServer::start();
    let counted = |distributed_line: &str| {
        let text = format!("{}{distributed_line}\n", config_text("redis", &server.addr()));
        let cache = CacheManager::new(CacheConfig::from_toml_str(&text).unwrap()).unwrap();
        cache.set_raw("k", b"v", None).unwrap();
        let scans = server.command_calls("scan");
        let first = cache.stats();
        let second = cache.stats();
        (first, second, server.command_calls("scan") - scans)
    };
    let (first, second, walks) = counted("");
    assert_eq!(
        uno_cache::CacheConfig::default().distributed.size_max_age_secs,
        60
    );
    assert_eq!(
        (first.size.distributed.items, second.size.distributed.items),
        (1, 1)
    );
    assert_eq!(walks, 1, "a second poll within the max age walked L2 again");
    let (first, _, walks) = counted("size_max_age_secs = 0");
    assert_eq!(walks, 0, "L2 was walked with size_max_age_secs = 0");
    assert_eq!(first.size.distributed.items, 0);
    let why = first.distributed.size_error.unwrap_or_default();
    assert!(why.contains("size_max_age_secs = 0"), "{why}");
    assert_eq!(first.distributed.errors, 0, "a count not taken is no L2 error");
}

/// What a level refuses without asking its server, `set` on a manager whose L2 is `host`
/// returns: the error, and whether L1 was written.
fn refused_by(kind: &str, host: &str, key: &str, value: &[u8]) -> (Error, bool) {
    let cache = CacheManager::new(config(kind, host)).unwrap();
    let err = cache.set_raw(key, value, None).unwrap_err();
    (err, cache.stats().local.sets > 0)
}

/// A delete of a key Redis refuses (the tag sets' namespace) is refused before any level is
/// touched, as a write of it is. In a batch, L1 dropped the keys listed with it before Redis
/// refused the whole batch; alone, an L2 not connected (its breaker open) took it, with
/// `fallback_on_error`, where a connected one refused it: one key, two answers.
#[test]
fn a_delete_of_a_key_redis_refuses_is_refused_before_any_level_is_touched() {
    let reserved = "uno-cache:tag:x";
    let refused = |api: &str, result: uno_cache::Result<u64>| {
        assert!(
            matches!(&result, Err(Error::InvalidKey { key, .. }) if key == reserved),
            "{api}: {result:?}"
        );
    };
    let redis = RedisServer::start();
    let cache = CacheManager::new(config("redis", &redis.addr())).unwrap();
    cache.set_raw("a", b"1", None).unwrap();
    refused("multi_delete", cache.multi_delete(&["a", reserved]));
    refused(
        "multi_delete_async",
        support::block_on(cache.multi_delete_async(&["a", reserved])),
    );
    assert_eq!(
        cache.local().get("a").unwrap().map(|e| e.value),
        Some(b"1".to_vec()),
        "a refused batch dropped a key listed with the refused one from L1"
    );
    refused("delete", cache.delete(reserved).map(u64::from));

    let down = format!("127.0.0.1:{}", free_port());
    let offline = CacheManager::new(config("redis", &down)).unwrap();
    refused("delete, L2 down", offline.delete(reserved).map(u64::from));
    refused(
        "delete_async, L2 down",
        support::block_on(offline.delete_async(reserved)).map(u64::from),
    );
}

/// An L2 not connected yet (down at start-up, with fallback) refused nothing: a value it would
/// refuse went into L1 and the replay queue, which refused it only once L2 was back, and the
/// caller never heard. It is refused at once now, with the error the connected level gives:
/// Memcached's item limit and the key namespace Redis keeps for tag sets are known without a
/// connection.
#[test]
fn an_l2_not_connected_yet_refuses_at_once_what_the_connected_level_would() {
    let big = vec![7u8; 1024 * 1024];
    let memcached = MemcachedServer::start();
    let (connected, _) = refused_by("memcached", &memcached.addr(), "big", &big);
    let down = format!("127.0.0.1:{}", free_port());
    let (deferred, in_l1) = refused_by("memcached", &down, "big", &big);
    assert!(matches!(deferred, Error::ValueTooLarge { .. }), "{deferred:?}");
    assert_eq!(deferred.to_string(), connected.to_string());
    assert!(!in_l1, "L1 took a value the unconnected L2 will refuse");

    let reserved = "uno-cache:tag:x";
    let redis = RedisServer::start();
    let (connected, _) = refused_by("redis", &redis.addr(), reserved, b"v");
    let down = format!("127.0.0.1:{}", free_port());
    let (deferred, in_l1) = refused_by("redis", &down, reserved, b"v");
    assert!(matches!(deferred, Error::InvalidKey { .. }), "{deferred:?}");
    assert_eq!(deferred.to_string(), connected.to_string());
    assert!(!in_l1, "L1 took a key the unconnected L2 will refuse");
}
