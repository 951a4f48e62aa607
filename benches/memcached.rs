//! L2 overhead: `MemcachedStore` (envelope, key mapping, sharding, deadline) against the
//! `memcache` crate used directly (its default binary protocol), on the same local `memcached`,
//! in one process and one run; plus the write-behind flush of many keys through the manager, and
//! the cost of a circuit breaker per host (with / without), and a large `get_many` over three
//! hosts with latency, blocking against async.
//!
//! `cargo bench --bench memcached` (add `-- --quick` or set `UNO_BENCH_QUICK=1` for a short run).
//! Prints one line per comparison (get, set and get_many: the median of alternating rounds);
//! `ratio` = ours / peer for throughput, higher is better.
//! Loopback latency on a 2-vCPU machine depends on whether client and server share a vCPU:
//! compare only within a run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss
)]

#[path = "../tests/support/proxy.rs"]
mod proxy;
#[path = "shared/stats.rs"]
mod stats;
#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stats::alternating;

use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, MemcachedOptions, MemcachedStore, NodeBreakers, Storage,
};

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

fn threads_of_this_process() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count)
}

fn main() {
    let quick = stats::quick();
    let ops: u64 = if quick { 2_000 } else { 20_000 };
    let server = support::MemcachedServer::start();
    let peer = server.raw();
    let threads_before = threads_of_this_process();
    let ours = Arc::new(
        MemcachedStore::connect(
            MemcachedOptions::new(server.addr())
                .prefix("b:")
                .timeout(Duration::from_secs(1)),
        )
        .unwrap(),
    );
    println!(
        "bench: memcached_store_threads {}",
        threads_of_this_process().saturating_sub(threads_before)
    );
    let value = vec![7u8; 100];
    ours.set("hit", &value, None).unwrap();
    peer.set("p:hit", value.as_slice(), 0).unwrap();
    for _ in 0..200 {
        ours.get("hit").unwrap();
        let _: Option<Vec<u8>> = peer.get("p:hit").unwrap();
    }

    // Each comparison below: the median of ROUNDS alternating rounds of a fifth of the ops.
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
                let v: Option<Vec<u8>> = peer.get("p:hit").unwrap();
                assert!(v.is_some());
            }
            rate(per_round, started.elapsed())
        },
    );
    line("memcached_get_hit", ours_get, "memcache-crate", peer_get);

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
                peer.set(&format!("p:k{}", i % 1000), value.as_slice(), 61)
                    .unwrap();
            }
            rate(per_round, started.elapsed())
        },
    );
    line("memcached_set", ours_set, "memcache-crate", peer_set);

    // get_many of 100 keys (all hits): ours vs the crate's multi-get.
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let peer_keys: Vec<String> = keys.iter().map(|k| format!("p:{k}")).collect();
    let peer_refs: Vec<&str> = peer_keys.iter().map(String::as_str).collect();
    let batches = (ops / 20 / ROUNDS as u64).max(1);
    let (ours_many, peer_many) = alternating(
        ROUNDS,
        || {
            let started = Instant::now();
            for _ in 0..batches {
                assert!(ours.get_many(&key_refs).unwrap().iter().all(Option::is_some));
            }
            rate(batches * 100, started.elapsed())
        },
        || {
            let started = Instant::now();
            for _ in 0..batches {
                let got: std::collections::HashMap<String, Vec<u8>> = peer.gets(&peer_refs).unwrap();
                assert_eq!(got.len(), 100);
            }
            rate(batches * 100, started.elapsed())
        },
    );
    line(
        "memcached_get_many_100_keys",
        ours_many,
        "memcache-crate-gets",
        peer_many,
    );

    // set_each of 1 000 keys (the write-behind flush call) vs the crate's one `set` per key
    // (what the default `set_each` sent before the store batched it).
    let items: Vec<(String, Vec<u8>)> = (0..1_000).map(|i| (format!("e{i}"), value.clone())).collect();
    let each: Vec<(&str, &[u8], Option<Duration>)> = items
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice(), Some(Duration::from_secs(60))))
        .collect();
    let rounds = (ops / 1_000).max(2);
    let started = Instant::now();
    for _ in 0..rounds {
        ours.set_each(&each).unwrap();
    }
    let ours_each = rate(rounds * 1_000, started.elapsed());
    let started = Instant::now();
    for _ in 0..rounds {
        for (k, v) in &items {
            peer.set(&format!("p:{k}"), v.as_slice(), 61).unwrap();
        }
    }
    line(
        "memcached_set_each_1000_keys",
        ours_each,
        "memcache-crate-set-per-key",
        rate(rounds * 1_000, started.elapsed()),
    );

    // 64 tasks doing get_async on one store vs 4 threads on the blocking crate (it has no
    // stable async client).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let per_task = ops / 64 * 4;
    let started = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let ours = ours.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        assert!(ours.get_async("hit").await.unwrap().is_some());
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let ours_async = rate(per_task * 64, started.elapsed());
    // The peer's clients connected before its clock starts, as ours was: their connects are
    // setup, not gets.
    let clients: Vec<memcache::Client> = (0..4).map(|_| server.raw()).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        for client in &clients {
            s.spawn(move || {
                for _ in 0..per_task * 16 {
                    let v: Option<Vec<u8>> = client.get("p:hit").unwrap();
                    assert!(v.is_some());
                }
            });
        }
    });
    line(
        "memcached_get_async_64_tasks",
        ours_async,
        "memcache-crate-4-threads",
        rate(per_task * 64, started.elapsed()),
    );
    drop(rt);

    write_behind_flush(&server, if quick { 5_000 } else { 20_000 });
    node_breakers(&server, ops);
    hosts_at_once(if quick { 2 } else { 10 });
}

/// A 10 000-key `get_many` over three hosts, each behind a proxy that delays every read by
/// 1 ms (a link's latency; loopback has none to overlap): the blocking call against the async
/// one, whose hosts always ran at once. Each host's part is about 3 300 keys, four commands
/// run one after another; with the hosts' later commands in series as well, the blocking call
/// paid about ten round trips where the async one paid four. `ratio` = blocking / async.
/// Measured with `--quick` on a loaded 2-vCPU machine: 2.0 blocking batches/s (ratio 0.44)
/// with each host's commands after the previous host's, 4.6 (ratio 1.0) with the hosts on
/// threads of their own; with the delay at zero, 3.4 (0.45) and 7.0 to 7.8 (0.9 to 1.0).
fn hosts_at_once(batches: u64) {
    let servers: Vec<support::MemcachedServer> = (0..3).map(|_| support::MemcachedServer::start()).collect();
    let proxies: Vec<proxy::TcpProxy> = servers
        .iter()
        .map(|s| proxy::TcpProxy::start(&s.addr()))
        .collect();
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts(proxies.iter().map(proxy::TcpProxy::addr))
            .prefix("ha:")
            .timeout(Duration::from_secs(10)),
    )
    .unwrap();
    let keys: Vec<String> = (0..10_000).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, &[7u8; 100][..])).collect();
    store.set_many(&items, None).unwrap();
    for p in &proxies {
        p.delay(Duration::from_millis(1));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (blocking, asynchronous) = alternating(
        ROUNDS,
        || {
            let started = Instant::now();
            for _ in 0..batches {
                assert!(store.get_many(&keys).unwrap().iter().all(Option::is_some));
            }
            rate(batches, started.elapsed())
        },
        || {
            let started = Instant::now();
            for _ in 0..batches {
                let got = rt.block_on(store.get_many_async(&keys)).unwrap();
                assert!(got.iter().all(Option::is_some));
            }
            rate(batches, started.elapsed())
        },
    );
    println!(
        "bench: memcached_get_many_10k_keys_3_hosts_1ms blocking={blocking:.1} batches/s async={asynchronous:.1} batches/s ratio={:.2}",
        blocking / asynchronous
    );
}

/// What a breaker per host costs a call: the same store with and without
/// [`MemcachedOptions::node_breakers`] (what the manager gives it), rounds interleaved, best
/// round of each. `ratio` = with / without; 1.00 means no visible cost.
fn node_breakers(server: &support::MemcachedServer, ops: u64) {
    let store = |breakers: bool| {
        let options = MemcachedOptions::new(server.addr())
            .prefix("nb:")
            .timeout(Duration::from_secs(1));
        let options = if breakers {
            options.node_breakers(Arc::new(NodeBreakers::new(
                "memcached",
                5,
                Duration::from_secs(1),
            )))
        } else {
            options
        };
        MemcachedStore::connect(options).unwrap()
    };
    let (with, without) = (store(true), store(false));
    let value = vec![7u8; 100];
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    for key in &key_refs {
        with.set(key, &value, None).unwrap();
    }
    let get = |s: &MemcachedStore| {
        let started = Instant::now();
        for _ in 0..ops {
            assert!(s.get("k1").unwrap().is_some());
        }
        rate(ops, started.elapsed())
    };
    let many = |s: &MemcachedStore| {
        let started = Instant::now();
        for _ in 0..ops / 20 {
            assert_eq!(s.get_many(&key_refs).unwrap().len(), 100);
        }
        rate(ops / 20 * 100, started.elapsed())
    };
    let (mut best_with, mut best_without) = ([0f64; 2], [0f64; 2]);
    for _ in 0..3 {
        best_without[0] = best_without[0].max(get(&without));
        best_with[0] = best_with[0].max(get(&with));
        best_without[1] = best_without[1].max(many(&without));
        best_with[1] = best_with[1].max(many(&with));
    }
    for (i, name) in ["memcached_get_hit", "memcached_get_many_100_keys"]
        .iter()
        .enumerate()
    {
        println!(
            "bench: {name}_node_breakers with={:.3e} ops/s without={:.3e} ops/s ratio={:.2}",
            best_with[i],
            best_without[i],
            best_with[i] / best_without[i]
        );
    }
}

/// The manager (memory L1, Memcached L2, write-behind): `n` sets of distinct keys, then `flush`
/// (the drain to L2 counted), vs the crate setting the same keys one by one.
fn write_behind_flush(server: &support::MemcachedServer, n: usize) {
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = false
            [local]
            type = "memory"
            ttl = 3600
            [distributed]
            enabled = true
            type = "memcached"
            hosts = ["{}"]
            ttl = 3600
            key_prefix = "wb:"
            timeout_ms = 2000
            write_mode = "behind"
            "#,
            server.addr()
        ))
        .unwrap(),
    )
    .unwrap();
    let value = vec![7u8; 100];
    let started = Instant::now();
    for i in 0..n {
        cache.set_raw(&format!("wb{i}"), &value, None).unwrap();
    }
    cache.flush().unwrap();
    let ours = rate(n as u64, started.elapsed());
    assert_eq!(cache.stats().distributed.errors, 0);
    let peer = server.raw();
    let started = Instant::now();
    for i in 0..n {
        peer.set(&format!("p:wb{i}"), value.as_slice(), 3601).unwrap();
    }
    line(
        &format!("manager_memcached_write_behind_{n}_keys"),
        ours,
        "memcache-crate-set-per-key",
        rate(n as u64, started.elapsed()),
    );
}
