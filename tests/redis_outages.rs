//! `RedisStore` when its server goes away: killed mid-workload (every call comes back within the
//! deadline with an error, nothing panics, and calls succeed again once it restarts on the same
//! port), or hung (calls time out at our deadline, sync and async, and recover when it wakes), and
//! a flush through an open breaker. Peer crates stall 9–38 s per call while Redis is down; this
//! file pins that we do not. Round trips, batches and construction errors are in
//! `tests/redis_level.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/outage.rs"]
mod outage;

use std::sync::Arc;
use std::time::{Duration, Instant};

use outage::Workload;
use support::{until_k_answers_v, RedisServer};
use uno_cache::{
    BreakerState, CircuitBreaker, DistributedStorage, Error, Guarded, ManualClock, RedisOptions, RedisStore,
    Storage,
};

#[test]
fn outage_calls_fail_within_the_deadline_and_recover_after_restart() {
    let mut server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let redis = Arc::new(
        RedisStore::connect(RedisOptions::new(server.addr()).prefix("o:").timeout(timeout)).unwrap(),
    );
    redis.set("k", b"before", None).unwrap();
    let workload = Workload::start(redis.clone(), timeout);
    server.kill();
    workload.fails();

    server.restart();
    let started = Instant::now();
    while redis.get("k").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no recovery after restart"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    redis.set("k", b"after", None).unwrap();
    assert_eq!(redis.get("k").unwrap().unwrap().value, b"after");
    workload.finish();
}

/// Redis has nothing for `flush` to make durable, so it makes no call: the CLI ends every
/// command with one, and it must neither fail while the breaker cools down nor pass for the
/// breaker's probe (closing it with no word from the server) nor reset its failure count.
#[test]
fn a_flush_through_the_breaker_neither_probes_nor_resets_it_nor_fails_while_it_is_open() {
    let mut server = RedisServer::start();
    let clock = ManualClock::new(0);
    let breaker = Arc::new(CircuitBreaker::with_clock(
        2,
        Duration::from_secs(1),
        Arc::new(clock.clone()),
    ));
    let store =
        RedisStore::connect(RedisOptions::new(server.addr()).timeout(Duration::from_millis(200))).unwrap();
    let redis = Guarded::new("redis", store, breaker.clone());
    redis.set("k", b"v", None).unwrap();
    server.kill();

    assert!(redis.get("k").is_err());
    redis.flush().unwrap();
    assert!(redis.get("k").is_err());
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "the flush between the two failures did not reset their count"
    );
    redis.flush().unwrap();

    clock.advance(Duration::from_secs(1));
    redis.flush().unwrap();
    assert_eq!(
        breaker.state(),
        BreakerState::Open,
        "a flush is no probe: it asked the dead server nothing"
    );
    let probe = redis.get("k");
    assert!(
        matches!(probe, Err(Error::Timeout { .. } | Error::Backend { .. })),
        "the next read is the probe, and reaches the dead server: {probe:?}"
    );
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(breaker.stats().trips, 2);
}

#[test]
fn hung_server_calls_time_out_at_the_deadline_and_recover_when_it_wakes() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let redis = RedisStore::connect(RedisOptions::new(server.addr()).timeout(timeout)).unwrap();
    redis.set("k", b"v", None).unwrap();
    server.pause();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // Five blocking calls, then five async ones.
    let mut took: Vec<Duration> = (0..10)
        .map(|call| {
            let started = Instant::now();
            let result = if call >= 5 {
                rt.block_on(redis.get_async("k")).map(|_| ())
            } else if call % 2 == 0 {
                redis.get("k").map(|_| ())
            } else {
                redis.set("k", b"w", None)
            };
            let took = started.elapsed();
            assert!(
                matches!(result, Err(Error::Timeout { level: "redis", .. })),
                "call {call}: {result:?}"
            );
            assert!(
                took >= timeout - Duration::from_millis(5),
                "call {call} gave up early: {took:?}"
            );
            took
        })
        .collect();
    let (blocking, asynchronous) = took.split_at_mut(5);
    // Every call ends near its deadline: the median of each kind within 50 ms of it (a retry,
    // or a deadline per read rather than per call, would double it), and none hung (a test
    // thread that the busy CI machine does not schedule for a while may take longer once,
    // never a second), as in memcached_level's twin of this test.
    for (kind, took) in [("blocking", blocking), ("async", asynchronous)] {
        took.sort();
        assert!(took[2] <= timeout + Duration::from_millis(50), "{kind}: {took:?}");
        assert!(took[4] <= timeout + Duration::from_secs(1), "{kind}: {took:?}");
    }
    server.resume();
    let started = Instant::now();
    while redis.get("k").is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no recovery after the server woke"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The client's own response timeout is off (one timer entry per call is ours): our deadline
/// alone must end every call of a burst on a hung server, from a runtime that has timers of its
/// own, as `Error::Timeout`, and leave the connection usable once the server wakes.
#[test]
fn hung_server_async_burst_times_out_at_our_deadline_under_a_runtime_with_timers() {
    let server = RedisServer::start();
    let timeout = Duration::from_millis(100);
    let redis = RedisStore::connect(RedisOptions::new(server.addr()).timeout(timeout)).unwrap();
    redis.set("k", b"v", None).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    server.pause();
    // Three bursts: the median one must end within 100 ms of the deadline (a deadline that
    // waited for another call's, or a retry, would take twice as long each time), and none
    // past a second (a busy CI machine that does not schedule the runtime's threads for a
    // while may slow one burst; a call left to the client would never end).
    let mut bursts: Vec<Duration> = (0..3)
        .map(|_| {
            let (results, took) = rt.block_on(async {
                let started = Instant::now();
                let calls = (0..64).map(|_| async {
                    let started = Instant::now();
                    (redis.get_async("k").await, started.elapsed())
                });
                let results = futures_util::future::join_all(calls).await;
                (results, started.elapsed())
            });
            for (result, took) in &results {
                assert!(
                    matches!(
                        result,
                        Err(Error::Timeout {
                            level: "redis",
                            op: "get",
                            server: named,
                            ..
                        }) if *named == server.addr()
                    ),
                    "a timeout naming the server: {result:?}"
                );
                assert!(
                    *took >= timeout - Duration::from_millis(5),
                    "gave up early: {took:?}"
                );
            }
            took
        })
        .collect();
    server.resume();
    bursts.sort();
    assert!(bursts[1] <= timeout + Duration::from_millis(100), "{bursts:?}");
    assert!(bursts[2] <= timeout + Duration::from_secs(1), "{bursts:?}");
    until_k_answers_v("no recovery after the server woke", || {
        rt.block_on(redis.get_async("k"))
    });
}
