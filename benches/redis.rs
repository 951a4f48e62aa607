//! L2 overhead: `RedisStore` (envelope, deadline; the blocking API over its caller-thread pool,
//! the async API polled in the caller's own task) against the `redis` crate used directly, on
//! the same local `redis-server`, in one process and one run. `redis_get_hit_async_x64` is the
//! target of issue 13: 64 tasks doing `get_async` on one store against 64 tasks on the crate's
//! own `MultiplexedConnection` (wanted: ratio >= 0.9). `redis_cluster_*_node_breakers` compares
//! a three-primary cluster with and without a breaker per primary.
//!
//! `cargo bench --bench redis --features redis` (add `-- --quick` or set `UNO_BENCH_QUICK=1` for
//! a short run; `UNO_BENCH_ONLY=redis_get_hit_async_x64` or `UNO_BENCH_ONLY=cluster_node_breakers`
//! runs only that part).
//! Prints one line per comparison, the median of alternating rounds; `ratio` = ours / peer,
//! higher is better. Loopback latency on a
//! 2-vCPU machine depends on whether client and server share a vCPU: compare only within a run,
//! or pin both (`taskset -c 0 cargo bench --bench redis`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use uno_cache::{DistributedStorage, NodeBreakers, RedisOptions, RedisStore, Storage};

#[path = "shared/stats.rs"]
mod stats;
use stats::{alternating, median};

/// Alternating rounds per comparison; each line is the median of them.
const ROUNDS: usize = 5;

fn rate(ops: u64, took: Duration) -> f64 {
    ops as f64 / took.as_secs_f64()
}

fn line(name: &str, ours: f64, peer_name: &str, peer: f64) {
    println!(
        "bench: {name} ours={ours:.3e} ops/s {peer_name}={peer:.3e} ops/s ratio={:.2}",
        ours / peer
    );
}

fn main() {
    let quick = stats::quick();
    let ops: u64 = if quick { 2_000 } else { 20_000 };
    if std::env::var("UNO_BENCH_ONLY").is_ok_and(|only| only == "cluster_node_breakers") {
        cluster_node_breakers(ops);
        return;
    }
    let only_async = std::env::var("UNO_BENCH_ONLY").is_ok_and(|only| only == "redis_get_hit_async_x64");
    let server = support::RedisServer::start();

    let ours = RedisStore::connect(
        RedisOptions::new(server.addr())
            .prefix("b:")
            .timeout(Duration::from_secs(1)),
    )
    .unwrap();
    let mut peer = server.raw();
    let value = vec![7u8; 100];
    ours.set("hit", &value, None).unwrap();
    redis::cmd("SET")
        .arg("p:hit")
        .arg(&value)
        .exec(&mut peer)
        .unwrap();

    // Warm up both.
    for _ in 0..200 {
        ours.get("hit").unwrap();
        let _: Option<Vec<u8>> = redis::cmd("GET").arg("p:hit").query(&mut peer).unwrap();
    }

    if only_async {
        get_hit_async_x64(&server, &ours, quick, ops);
        return;
    }

    // Each comparison: the median of ROUNDS alternating rounds of a fifth of the ops each.
    let per_round = (ops / ROUNDS as u64).max(1);

    // get (hit), sync API.
    let (ours_get, peer_get) = alternating(
        ROUNDS,
        || {
            let started = Instant::now();
            for _ in 0..per_round {
                assert!(ours.get("hit").unwrap().is_some());
            }
            rate(per_round, started.elapsed())
        },
        || {
            let started = Instant::now();
            for _ in 0..per_round {
                let v: Option<Vec<u8>> = redis::cmd("GET").arg("p:hit").query(&mut peer).unwrap();
                assert!(v.is_some());
            }
            rate(per_round, started.elapsed())
        },
    );
    line("redis_get_hit", ours_get, "redis-rs-sync", peer_get);

    // set, sync API.
    let (ours_set, peer_set) = alternating(
        ROUNDS,
        || {
            let started = Instant::now();
            for i in 0..per_round {
                ours.set(&format!("k{}", i % 1000), &value, Some(Duration::from_secs(60)))
                    .unwrap();
            }
            rate(per_round, started.elapsed())
        },
        || {
            let started = Instant::now();
            for i in 0..per_round {
                redis::cmd("SET")
                    .arg(format!("p:k{}", i % 1000))
                    .arg(&value)
                    .arg("PX")
                    .arg(60_000)
                    .exec(&mut peer)
                    .unwrap();
            }
            rate(per_round, started.elapsed())
        },
    );
    line("redis_set", ours_set, "redis-rs-sync", peer_set);

    // get_many of 100 keys (one MGET each side), every key a hit.
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let peer_keys: Vec<String> = keys.iter().map(|k| format!("p:{k}")).collect();
    let batches = (ops / 20 / ROUNDS as u64).max(1);
    let (ours_many, peer_many) = alternating(
        ROUNDS,
        || {
            let started = Instant::now();
            for _ in 0..batches {
                assert!(ours.get_many(&refs).unwrap().iter().all(Option::is_some));
            }
            rate(batches * 100, started.elapsed())
        },
        || {
            let started = Instant::now();
            for _ in 0..batches {
                let v: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&peer_keys).query(&mut peer).unwrap();
                assert!(v.iter().all(Option::is_some));
            }
            rate(batches * 100, started.elapsed())
        },
    );
    line(
        "redis_get_many_100 (keys/s)",
        ours_many,
        "redis-rs-sync",
        peer_many,
    );

    get_hit_async_x64(&server, &ours, quick, ops);
    cluster_node_breakers(ops);
}

/// The async API from a multi-thread runtime: 64 concurrent gets in flight, against 64 on the
/// crate's own multiplexed connection. `UNO_BENCH_ONLY=redis_get_hit_async_x64` runs only this
/// part.
fn get_hit_async_x64(server: &support::RedisServer, ours: &RedisStore, quick: bool, ops: u64) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Rounds alternate ours and the peer, so that load from other processes hits both alike;
    // the figures are medians over the rounds.
    let rounds: u64 = if quick { 3 } else { 9 };
    let per_round = (ops / rounds).div_ceil(64) * 64;
    let client = redis::Client::open(server.url()).unwrap();
    let conn = rt.block_on(client.get_multiplexed_async_connection()).unwrap();
    let (mut ours_rates, mut peer_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        rt.block_on(async {
            let mut done = 0;
            while done < per_round {
                let calls = (0..64).map(|_| ours.get_async("hit"));
                for r in futures_util::future::join_all(calls).await {
                    assert!(r.unwrap().is_some());
                }
                done += 64;
            }
        });
        let ours_rate = rate(per_round, started.elapsed());
        let started = Instant::now();
        rt.block_on(async {
            let mut done = 0;
            while done < per_round {
                let calls = (0..64).map(|_| {
                    let mut conn = conn.clone();
                    async move {
                        redis::cmd("GET")
                            .arg("p:hit")
                            .query_async::<Option<Vec<u8>>>(&mut conn)
                            .await
                    }
                });
                for r in futures_util::future::join_all(calls).await {
                    assert!(r.unwrap().is_some());
                }
                done += 64;
            }
        });
        let peer_rate = rate(per_round, started.elapsed());
        ours_rates.push(ours_rate);
        peer_rates.push(peer_rate);
        ratios.push(ours_rate / peer_rate);
    }
    println!(
        "bench: redis_get_hit_async_x64 ours={:.3e} ops/s redis-rs-multiplexed={:.3e} ops/s ratio={:.2} (medians of {rounds} alternating rounds; ratio = median of the per-round ratios)",
        median(&ours_rates),
        median(&peer_rates),
        median(&ratios)
    );
}

/// What a breaker per Cluster primary costs a call (the key's slot, its owner's breaker, and a
/// batch split by primary): the same three-primary cluster through a store with and without
/// [`RedisOptions::node_breakers`], rounds alternating. `ratio` = with / without; 1.00 means no
/// visible cost. `UNO_BENCH_ONLY=cluster_node_breakers` runs only this part.
fn cluster_node_breakers(ops: u64) {
    let cluster = support::RedisCluster::start();
    let store = |breakers: bool| {
        let options = RedisOptions::with_hosts(cluster.addrs())
            .cluster(true)
            .prefix("nb:")
            .timeout(Duration::from_secs(1));
        let options = if breakers {
            options.node_breakers(Arc::new(NodeBreakers::new("redis", 5, Duration::from_secs(1))))
        } else {
            options
        };
        RedisStore::connect(options).unwrap()
    };
    // The first store connected to a fresh cluster was measured up to 5x slower than the next
    // ones, whichever kind it is (seen with the order flipped): a store built first and unused
    // keeps that out of the comparison.
    let _first = store(false);
    let (with, without) = (store(true), store(false));
    let value = vec![7u8; 100];
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    for key in &key_refs {
        with.set(key, &value, None).unwrap();
    }
    let get = |s: &RedisStore| {
        let started = Instant::now();
        for _ in 0..ops {
            assert!(s.get("k1").unwrap().is_some());
        }
        rate(ops, started.elapsed())
    };
    let many = |s: &RedisStore| {
        let started = Instant::now();
        for _ in 0..ops / 20 {
            assert_eq!(s.get_many(&key_refs).unwrap().len(), 100);
        }
        rate(ops / 20 * 100, started.elapsed())
    };
    // Alternating which goes first; medians, and the median of the per-round ratios (the
    // machine is shared, so a single round says little).
    let rounds = 7;
    let mut rates: [[Vec<f64>; 3]; 2] = Default::default();
    for round in 0..rounds {
        for (i, run) in [&get as &dyn Fn(&RedisStore) -> f64, &many]
            .into_iter()
            .enumerate()
        {
            let (w, wo) = if round % 2 == 0 {
                let wo = run(&without);
                (run(&with), wo)
            } else {
                let w = run(&with);
                (w, run(&without))
            };
            rates[i][0].push(w);
            rates[i][1].push(wo);
            rates[i][2].push(w / wo);
        }
    }
    for (i, name) in ["redis_cluster_get_hit", "redis_cluster_get_many_100_keys"]
        .iter()
        .enumerate()
    {
        let [with, without, ratio] = &mut rates[i];
        println!(
            "bench: {name}_node_breakers with={:.3e} ops/s without={:.3e} ops/s ratio={:.2} (medians of {rounds} alternating rounds; ratio = median of the per-round ratios)",
            median(with),
            median(without),
            median(ratio)
        );
    }
}
