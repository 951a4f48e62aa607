//! The manager with a file L1 and a Redis L2 against the `redis` crate used directly on the same
//! local `redis-server`, doing the same work, in one process and one run:
//!
//! - `manager_multi_get_100`: `multi_get_raw` of 100 keys that are all L1 misses (every batch
//!   is new keys, so each is one `MGET`; the backfill thread writes L1 after the call returns and
//!   is waited for, untimed, before the next raw `MGET`) vs one raw `MGET`. Aim: within 10%.
//!   Also with a memory L1, to tell the cost of the backfill into the file store.
//! - `manager_multi_set_100`: `multi_set_raw` of 100 new keys, write-through (both levels written
//!   before the call returns: the file L1 and one pipeline to Redis, with the last item per key
//!   kept), vs one raw pipeline of 100 `SET ... EX`s. What L1, the per-key ordering and the batch's
//!   bookkeeping add to the round trip. Also with a memory L1, to tell the file store's part.
//! - `manager_zipf099_90_10`: a zipf(0.99) trace over 100 000 keys, 90% gets / 10% sets, through
//!   the manager (L2 holds every key; L1 is warmed by an untimed pass of another trace) vs raw
//!   `GET`/`SET`. Throughput and get,
//!   set and overall p99. Aim: at least 10× the throughput and a lower p99.
//! - `manager_zipf099_90_10_vs_hand_made`: the same zipf trace through typed calls, so the
//!   memory tier (its default 10 000 values) answers first and the file tier next, write-through,
//!   against what a user would write by hand instead: a `quick_cache` of the same 10 000 values
//!   in front of redis-rs (a miss is a `GET` then an insert; a set is a `SET` then an insert).
//!   Both are warmed by the same untimed pass, then run the timed trace in alternating chunks
//!   of 500 operations (see `run_interleaved`). Aim: at least 0.8× the hand-made throughput.
//! - `manager_set_distinct`: `set_raw` of keys never written before (no two sets share a key),
//!   write-through and write-behind (the final drain counted), vs raw `SET`: what the per-key
//!   ordering of writes costs a set that waits for no other (issue 14: within 5% of before).
//!
//! With `write_mode = "behind"` ours queues its writes for L2, so the zipf and set_distinct
//! lines are printed twice, their labels naming the peer: `redis-rs sets awaited` (a round trip
//! per `SET`, as before) and `redis-rs sets unawaited` (its `SET`s sent on a multiplexed
//! connection without waiting, all awaited at the end as ours' `flush` is; see `UnawaitedSets`).
//! The peer's `GET`s wait on its plain connection in both.
//!
//! `cargo bench --bench manager_redis` (about a minute with `-- --quick` or
//! `UNO_BENCH_QUICK=1`; `UNO_BENCH_ONLY=multi_get`, `multi_set`, `zipf`, `hand_made` or `set_distinct` runs one part). Prints `bench:` lines; `ratio` > 1 means we are better (ours/peer for
//! throughput, peer/ours for latencies). A loopback round trip on a 2-vCPU machine costs ~22 µs
//! when client and server share a vCPU and ~120 µs when they do not, so every comparison runs
//! in both placements (`taskset`: client on CPU 0, server on CPU 0 or 1), labelled `same-cpu`
//! and `split-cpu`; compare only within one placement.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "shared/stats.rs"]
#[allow(dead_code)] // Its quantiles only.
mod stats;
#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use uno_cache::{CacheConfig, CacheManager};

const KEYS: usize = 100_000;
const VALUE_LEN: usize = 100;

struct Params {
    batches: usize,
    zipf_ops: usize,
}

/// Pins every thread of `pid` to `cpu`.
fn pin(pid: u32, cpu: usize) {
    let out = Command::new("taskset")
        .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
        .output()
        .expect("run taskset (util-linux)");
    assert!(
        out.status.success(),
        "taskset: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manager(
    server: &support::RedisServer,
    local: &str,
    dir: &std::path::Path,
    write_mode: &str,
) -> CacheManager {
    CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = false
            [local]
            type = "{local}"
            path = {:?}
            ttl = 3600
            [distributed]
            enabled = true
            type = "redis"
            hosts = ["{}"]
            ttl = 3600
            key_prefix = "m:"
            timeout_ms = 2000
            write_mode = "{write_mode}"
            "#,
            dir.display().to_string(),
            server.addr()
        ))
        .unwrap(),
    )
    .unwrap()
}

/// The `p` quantile of `sorted` nanoseconds, interpolated (`p = 0.5` is the median).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let ns: Vec<f64> = sorted.iter().map(|&n| n as f64).collect();
    stats::percentile(&ns, p).round() as u64
}

fn print_rate(name: &str, ours: f64, peer: f64) {
    println!(
        "bench: {name} ours={ours:.3e} ops/s redis-rs={peer:.3e} ops/s ratio={:.2}",
        ours / peer
    );
}

fn print_time(name: &str, ours_ns: u64, peer_ns: u64) {
    println!(
        "bench: {name} ours={:.1} µs redis-rs={:.1} µs ratio={:.2}",
        ours_ns as f64 / 1e3,
        peer_ns as f64 / 1e3,
        peer_ns as f64 / ours_ns as f64
    );
}

/// The raw peer's SETs in a second write-behind line: sent on a multiplexed connection and not
/// waited for, then all awaited at the end (as ours' `flush` drains its queue), its GETs on the
/// plain connection: what a redis-rs user writes to take writes off the caller's path. The main
/// line's peer waits a round trip per SET where ours queues it, and says so in its label; on
/// one vCPU the unawaited peer is not always the faster (its sends take the same core).
struct UnawaitedSets {
    rt: tokio::runtime::Runtime,
    conn: redis::aio::MultiplexedConnection,
    pending: Vec<tokio::task::JoinHandle<redis::RedisResult<()>>>,
}

impl UnawaitedSets {
    /// For `write_mode = "behind"`; `None` (every SET waited for) for write-through.
    fn for_mode(server: &support::RedisServer, write_mode: &str) -> Option<UnawaitedSets> {
        if write_mode != "behind" {
            return None;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = redis::Client::open(server.url()).unwrap();
        let conn = rt.block_on(client.get_multiplexed_async_connection()).unwrap();
        Some(UnawaitedSets {
            rt,
            conn,
            pending: Vec::new(),
        })
    }

    fn set(&mut self, key: String, value: &[u8]) {
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        self.pending
            .push(self.rt.spawn(async move { cmd.exec_async(&mut conn).await }));
    }

    fn drain(&mut self) {
        for set in self.pending.drain(..) {
            self.rt.block_on(set).unwrap().unwrap();
        }
    }
}

/// A line's label: `base`, and in a write-behind line how the peer's SETs were sent, as ours
/// are queued and its are not unless `unawaited_run`.
fn peer_label(base: &str, unawaited: Option<&UnawaitedSets>, unawaited_run: bool) -> String {
    match (unawaited, unawaited_run) {
        (None, _) => base.to_owned(),
        (Some(_), false) => format!("{base},redis-rs sets awaited"),
        (Some(_), true) => format!("{base},redis-rs sets unawaited"),
    }
}

/// `multi_get_raw` of 100 fresh keys (L1 misses) vs raw MGET; median and p99 per batch. With
/// `local = "memory"` too, to tell the backfill into the file store from the rest.
fn bench_multi_get(place: &str, p: &Params, server: &support::RedisServer, round: usize, local: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(server, local, dir.path(), "through");
    let mut raw = server.raw();
    let value = vec![7u8; VALUE_LEN];
    let batches: Vec<Vec<String>> = (0..p.batches)
        .map(|b| (0..100).map(|i| format!("mg{round}{local}:{b}:{i}")).collect())
        .collect();
    // L2 holds every key (through the level, so ours are enveloped); L1 none of them.
    let l2 = cache.distributed().unwrap();
    for keys in &batches {
        let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
        l2.set_many(&items, None).unwrap();
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET").arg(format!("p:{k}")).arg(&value).ignore();
        }
        pipe.exec(&mut raw).unwrap();
    }
    // Both sides warmed, untimed, on keys outside the measured set, so that neither pays a
    // first call in the timed loop: ours once, as a second call would be an L1 hit (its backfill
    // waited for, as in the timed loop), the peer 50 times.
    assert_eq!(cache.multi_get_raw(&batches[0]).unwrap().len(), 100);
    while cache.stats().overall.backfills < 100 {
        std::thread::yield_now();
    }
    for _ in 0..50 {
        let _: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
            .arg(batches[0].iter().map(|k| format!("p:{k}")).collect::<Vec<_>>())
            .query(&mut raw)
            .unwrap();
    }
    let mut ours = Vec::with_capacity(p.batches);
    let mut peer = Vec::with_capacity(p.batches);
    let mut backfilled = 100;
    // Interleave the two sides batch by batch so both see the same machine state.
    for keys in batches.iter().skip(1) {
        let peer_keys: Vec<String> = keys.iter().map(|k| format!("p:{k}")).collect();
        let started = Instant::now();
        let got: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&peer_keys).query(&mut raw).unwrap();
        peer.push(started.elapsed().as_nanos() as u64);
        assert!(got.iter().all(Option::is_some));
        let started = Instant::now();
        let got = cache.multi_get_raw(keys).unwrap();
        ours.push(started.elapsed().as_nanos() as u64);
        assert_eq!(got.len(), 100);
        // The backfill thread writes the batch into L1 after the call returned; let it finish
        // (untimed) so its work never lands in the next raw MGET's timing. (Not `flush`: its
        // fsync would disturb both sides' timings.)
        backfilled += 100;
        while cache.stats().overall.backfills < backfilled {
            std::thread::yield_now();
        }
    }
    ours.sort_unstable();
    peer.sort_unstable();
    print_time(
        &format!("manager_multi_get_100_l1_miss_p50[{place},{local}-l1]"),
        percentile(&ours, 0.5),
        percentile(&peer, 0.5),
    );
    print_time(
        &format!("manager_multi_get_100_l1_miss_p99[{place},{local}-l1]"),
        percentile(&ours, 0.99),
        percentile(&peer, 0.99),
    );
    let stats = cache.stats();
    assert_eq!(stats.distributed.errors, 0);
    assert_eq!(stats.local.hits, 0, "every batch was an L1 miss");
    assert_eq!(
        stats.overall.backfills,
        100 * p.batches as u64,
        "every miss was backfilled"
    );
}

/// `multi_set_raw` of 100 new keys, write-through, vs a raw pipeline of 100 `SET ... EX`s; median and
/// p99 per batch, the two sides interleaved batch by batch. With `local = "memory"` too, to tell
/// the file store's part from the rest.
fn bench_multi_set(place: &str, p: &Params, server: &support::RedisServer, round: usize, local: &str) {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(server, local, dir.path(), "through");
    let mut raw = server.raw();
    let value = vec![7u8; VALUE_LEN];
    let batches: Vec<Vec<String>> = (0..p.batches)
        .map(|b| (0..100).map(|i| format!("ms{round}{local}:{b}:{i}")).collect())
        .collect();
    let mut ours = Vec::with_capacity(p.batches);
    let mut peer = Vec::with_capacity(p.batches);
    for (b, keys) in batches.iter().enumerate() {
        // With the TTL ours writes (the levels' `ttl = 3600`), as a user's own code would.
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET")
                .arg(format!("p:{k}"))
                .arg(&value)
                .arg("EX")
                .arg(3600)
                .ignore();
        }
        let started = Instant::now();
        pipe.exec(&mut raw).unwrap();
        let peer_ns = started.elapsed().as_nanos() as u64;
        let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
        let started = Instant::now();
        cache.multi_set_raw(&items, None).unwrap();
        let ours_ns = started.elapsed().as_nanos() as u64;
        // The first batches warm the connections and the store's first segment.
        if b >= 50 {
            peer.push(peer_ns);
            ours.push(ours_ns);
        }
    }
    ours.sort_unstable();
    peer.sort_unstable();
    print_time(
        &format!("manager_multi_set_100_p50[{place},{local}-l1,through]"),
        percentile(&ours, 0.5),
        percentile(&peer, 0.5),
    );
    print_time(
        &format!("manager_multi_set_100_p99[{place},{local}-l1,through]"),
        percentile(&ours, 0.99),
        percentile(&peer, 0.99),
    );
    let stats = cache.stats();
    assert_eq!(stats.distributed.errors, 0);
    let last = batches.last().unwrap();
    let l2 = cache.distributed().unwrap();
    assert!(
        last.iter().all(|k| l2.get(k).unwrap().is_some()),
        "write-through: L2 holds the last batch when the call returns"
    );
}

/// Zipf(s) over `n` ranks by inverse CDF.
struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for rank in 1..=n {
            acc += 1.0 / (rank as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        let u: f64 = rng.random();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

/// (key index, is_set) for each op: zipf(0.99) keys, 10% sets.
fn trace(ops: usize, seed: u64) -> Vec<(usize, bool)> {
    let zipf = Zipf::new(KEYS, 0.99);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed + seed);
    (0..ops)
        .map(|_| {
            // Scramble ranks so popularity is unrelated to key order.
            let key = (zipf.sample(&mut rng) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) as usize % KEYS;
            (key, rng.random_bool(0.1))
        })
        .collect()
}

struct Run {
    ops_per_s: f64,
    get_ns: Vec<u64>,
    set_ns: Vec<u64>,
    all_ns: Vec<u64>,
}

/// Runs the trace; the throughput counts `finish` too (sending what write-behind still holds).
fn run(trace: &[(usize, bool)], mut op: impl FnMut(usize, bool), finish: impl FnOnce()) -> Run {
    let mut r = Run::for_trace(trace);
    let started = Instant::now();
    r.time_ops(trace, &mut op);
    finish();
    r.finish(trace.len() as f64 / started.elapsed().as_secs_f64());
    r
}

impl Run {
    fn for_trace(trace: &[(usize, bool)]) -> Run {
        Run {
            ops_per_s: 0.0,
            get_ns: Vec::with_capacity(trace.len()),
            set_ns: Vec::with_capacity(trace.len() / 8),
            all_ns: Vec::with_capacity(trace.len()),
        }
    }

    /// Runs `ops`, timing each; returns the seconds they took together.
    fn time_ops(&mut self, ops: &[(usize, bool)], op: &mut dyn FnMut(usize, bool)) -> f64 {
        let started = Instant::now();
        for &(key, is_set) in ops {
            let t = Instant::now();
            op(key, is_set);
            let ns = t.elapsed().as_nanos() as u64;
            self.all_ns.push(ns);
            if is_set {
                self.set_ns.push(ns);
            } else {
                self.get_ns.push(ns);
            }
        }
        started.elapsed().as_secs_f64()
    }

    /// Sets the throughput and sorts the times for percentiles.
    fn finish(&mut self, ops_per_s: f64) {
        self.ops_per_s = ops_per_s;
        self.get_ns.sort_unstable();
        self.set_ns.sort_unstable();
        self.all_ns.sort_unstable();
    }
}

/// Runs the trace through two implementations in alternating chunks of [`CHUNK`] operations,
/// each timed on its own (which goes first alternates too), so that a slow spell of the
/// machine falls on both rather than on whichever ran during it: run one after the other, the
/// two halves of the same comparison gave ratios from 0.63 to 1.42 on this 2-vCPU VM.
fn run_interleaved(
    trace: &[(usize, bool)],
    mut a: impl FnMut(usize, bool),
    mut b: impl FnMut(usize, bool),
) -> (Run, Run) {
    let (mut ra, mut rb) = (Run::for_trace(trace), Run::for_trace(trace));
    let (mut ta, mut tb) = (0.0f64, 0.0f64);
    for (i, chunk) in trace.chunks(CHUNK).enumerate() {
        if i % 2 == 0 {
            ta += ra.time_ops(chunk, &mut a);
            tb += rb.time_ops(chunk, &mut b);
        } else {
            tb += rb.time_ops(chunk, &mut b);
            ta += ra.time_ops(chunk, &mut a);
        }
    }
    ra.finish(trace.len() as f64 / ta);
    rb.finish(trace.len() as f64 / tb);
    (ra, rb)
}

/// Operations per chunk of [`run_interleaved`].
const CHUNK: usize = 500;

/// How the zipf run is set up: the write mode, and whether L1 starts holding the whole key space
/// (the steady state of a long-running instance, or of a restart: the file L1 persists) or only
/// what one untimed trace pass backfilled.
#[derive(Clone, Copy)]
struct ZipfSetup {
    write_mode: &'static str,
    l1_holds_all: bool,
}

fn bench_zipf(place: &str, p: &Params, server: &support::RedisServer, round: usize, setup: ZipfSetup) {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(server, "file", dir.path(), setup.write_mode);
    let mut unawaited = UnawaitedSets::for_mode(server, setup.write_mode);
    let base = format!(
        "{place},{},{}",
        setup.write_mode,
        if setup.l1_holds_all {
            "l1-warm"
        } else {
            "l1-one-pass"
        },
    );
    let label = peer_label(&base, unawaited.as_ref(), false);
    let mut raw = server.raw();
    let value = vec![7u8; VALUE_LEN];
    let key = |i: usize| format!("z{round}{}{}:{i}", setup.write_mode, setup.l1_holds_all);
    // L2 holds every key; L1 starts cold.
    let l2 = cache.distributed().unwrap();
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let keys: Vec<String> = chunk.iter().map(|&i| key(i)).collect();
        let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
        l2.set_many(&items, None).unwrap();
        let mut pipe = redis::pipe();
        for k in &keys {
            pipe.cmd("SET").arg(format!("p:{k}")).arg(&value).ignore();
        }
        pipe.exec(&mut raw).unwrap();
    }
    if setup.l1_holds_all {
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            let keys: Vec<String> = chunk.iter().map(|&i| key(i)).collect();
            assert_eq!(cache.multi_get_raw(&keys).unwrap().len(), keys.len());
        }
    }
    // An untimed pass of another trace warms L1 (and the server), then the timed trace runs.
    let warm = trace(p.zipf_ops, 1);
    let trace = trace(p.zipf_ops, 2);
    for &(i, is_set) in &warm {
        let k = key(i);
        if is_set {
            cache.set_raw(&k, &value, None).unwrap();
            redis::cmd("SET")
                .arg(format!("p:{k}"))
                .arg(&value)
                .exec(&mut raw)
                .unwrap();
            if let Some(sets) = unawaited.as_mut() {
                sets.set(format!("p:{k}"), &value);
            }
        } else {
            assert!(cache.get_raw(&k).unwrap().is_some());
        }
    }
    cache.flush().unwrap();
    if let Some(sets) = unawaited.as_mut() {
        sets.drain();
    }
    let warm_hits = cache.stats().local.hits;
    // The peer's GETs always wait on the plain connection; its SETs too, or (`sets`) are sent
    // on the multiplexed one unawaited.
    let mut peer_run = |sets: Option<&mut UnawaitedSets>| {
        let sets = std::cell::RefCell::new(sets);
        run(
            &trace,
            |i, is_set| {
                let k = format!("p:{}", key(i));
                if is_set {
                    match sets.borrow_mut().as_mut() {
                        Some(sets) => sets.set(k, &value),
                        None => redis::cmd("SET").arg(&k).arg(&value).exec(&mut raw).unwrap(),
                    }
                } else {
                    let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(&mut raw).unwrap();
                    assert!(v.is_some());
                }
            },
            || {
                if let Some(sets) = sets.borrow_mut().as_mut() {
                    sets.drain();
                }
            },
        )
    };
    let peer = peer_run(None);
    let peer_unawaited = unawaited.as_mut().map(|sets| peer_run(Some(sets)));
    let ours = run(
        &trace,
        |i, is_set| {
            let k = key(i);
            if is_set {
                cache.set_raw(&k, &value, None).unwrap();
            } else {
                assert!(cache.get_raw(&k).unwrap().is_some());
            }
        },
        || cache.flush().unwrap(),
    );
    let stats = cache.stats();
    assert_eq!(stats.distributed.errors, 0);
    print_rate(
        &format!("manager_zipf099_90_10_throughput[{label}]"),
        ours.ops_per_s,
        peer.ops_per_s,
    );
    for (what, o, pr) in [
        ("p99_all", &ours.all_ns, &peer.all_ns),
        ("p99_get", &ours.get_ns, &peer.get_ns),
        ("p99_set", &ours.set_ns, &peer.set_ns),
        ("p50_all", &ours.all_ns, &peer.all_ns),
    ] {
        let p = if what.starts_with("p50") { 0.5 } else { 0.99 };
        print_time(
            &format!("manager_zipf099_90_10_{what}[{label}]"),
            percentile(o, p),
            percentile(pr, p),
        );
    }
    if let Some(peer) = &peer_unawaited {
        let label = peer_label(&base, unawaited.as_ref(), true);
        print_rate(
            &format!("manager_zipf099_90_10_throughput[{label}]"),
            ours.ops_per_s,
            peer.ops_per_s,
        );
        print_time(
            &format!("manager_zipf099_90_10_p99_all[{label}]"),
            percentile(&ours.all_ns, 0.99),
            percentile(&peer.all_ns, 0.99),
        );
    }
    println!(
        "bench: manager_zipf099_90_10_l1_hit_rate[{label}] {:.1}% of {} timed gets (after a warm-up pass of {} ops)",
        (stats.local.hits - warm_hits) as f64 * 100.0 / ours.get_ns.len() as f64,
        ours.get_ns.len(),
        warm.len()
    );
}

/// The zipf trace through typed calls (memory tier, then file tier, then Redis; write-through)
/// against a quick_cache of the same capacity in front of redis-rs.
fn bench_zipf_hand_made(place: &str, p: &Params, server: &support::RedisServer, round: usize) {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(server, "file", dir.path(), "through");
    let capacity = uno_cache::DEFAULT_MEMORY_TIER_ITEMS as usize;
    let hand: quick_cache::sync::Cache<String, Vec<u8>> = quick_cache::sync::Cache::new(capacity);
    let mut raw = server.raw();
    let value = vec![7u8; VALUE_LEN];
    let key = |i: usize| format!("h{round}:{i}");
    let hand_hits = std::cell::Cell::new(0u64);
    // L2 holds every key on both sides; the local caches start cold.
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            cache.set(&key(i), &value, None).unwrap();
            pipe.cmd("SET").arg(format!("p:{}", key(i))).arg(&value).ignore();
        }
        pipe.exec(&mut raw).unwrap();
    }
    cache.local().clear().unwrap();
    let mut hand_op = |i: usize, is_set: bool| {
        let k = format!("p:{}", key(i));
        if is_set {
            redis::cmd("SET").arg(&k).arg(&value).exec(&mut raw).unwrap();
            hand.insert(k, value.clone());
        } else if hand.get(&k).is_none() {
            let v: Option<Vec<u8>> = redis::cmd("GET").arg(&k).query(&mut raw).unwrap();
            hand.insert(k, v.unwrap());
        } else {
            hand_hits.set(hand_hits.get() + 1);
        }
    };
    let ours_op = |i: usize, is_set: bool| {
        let k = key(i);
        if is_set {
            cache.set(&k, &value, None).unwrap();
        } else {
            assert!(cache.get::<Vec<u8>>(&k).unwrap().is_some());
        }
    };
    for &(i, is_set) in &trace(p.zipf_ops, 1) {
        hand_op(i, is_set);
        ours_op(i, is_set);
    }
    let trace = trace(p.zipf_ops, 2);
    let (before_memory, before_local) = {
        let s = cache.stats();
        (s.memory.hits, s.local.hits)
    };
    let before_hand = hand_hits.get();
    let (peer, ours) = run_interleaved(&trace, &mut hand_op, ours_op);
    let stats = cache.stats();
    assert_eq!(stats.distributed.errors, 0);
    println!(
        "bench: manager_zipf099_90_10_vs_hand_made_throughput[{place},through,memory+file] ours={:.3e} ops/s quick_cache+redis-rs={:.3e} ops/s ratio={:.2} (aim >= 0.8)",
        ours.ops_per_s,
        peer.ops_per_s,
        ours.ops_per_s / peer.ops_per_s
    );
    print_time(
        &format!("manager_zipf099_90_10_vs_hand_made_p99_all[{place},through,memory+file]"),
        percentile(&ours.all_ns, 0.99),
        percentile(&peer.all_ns, 0.99),
    );
    println!(
        "bench: manager_zipf099_90_10_vs_hand_made_hits[{place}] memory tier {:.1}%, both local tiers {:.1}%, hand-made quick_cache {:.1}% of {} timed gets",
        (stats.memory.hits - before_memory) as f64 * 100.0 / ours.get_ns.len() as f64,
        (stats.local.hits - before_local) as f64 * 100.0 / ours.get_ns.len() as f64,
        (hand_hits.get() - before_hand) as f64 * 100.0 / peer.get_ns.len() as f64,
        ours.get_ns.len()
    );
}

/// Sets of distinct keys (each written once), through the manager vs raw `SET`; throughput (the
/// write-behind drain included) and p50 per set.
fn bench_set_distinct(
    place: &str,
    p: &Params,
    server: &support::RedisServer,
    round: usize,
    write_mode: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(server, "file", dir.path(), write_mode);
    let mut unawaited = UnawaitedSets::for_mode(server, write_mode);
    let base = format!("{place},{write_mode}");
    let mut raw = server.raw();
    let value = vec![7u8; VALUE_LEN];
    let ops = p.zipf_ops;
    let trace: Vec<(usize, bool)> = (0..ops).map(|i| (i, true)).collect();
    let key = |i: usize| format!("sd{round}{write_mode}:{i}");
    // Warm both sides' connections and the server (untimed).
    for i in 0..1000 {
        cache.set_raw(&format!("warm:{}", key(i)), &value, None).unwrap();
        let k = format!("p:warm:{}", key(i));
        redis::cmd("SET").arg(&k).arg(&value).exec(&mut raw).unwrap();
        if let Some(sets) = unawaited.as_mut() {
            sets.set(k, &value);
        }
    }
    cache.flush().unwrap();
    if let Some(sets) = unawaited.as_mut() {
        sets.drain();
    }
    let peer = run(
        &trace,
        |i, _| {
            redis::cmd("SET")
                .arg(format!("p:{}", key(i)))
                .arg(&value)
                .exec(&mut raw)
                .unwrap();
        },
        || {},
    );
    let peer_unawaited = unawaited.as_mut().map(|sets| {
        let sets = std::cell::RefCell::new(sets);
        run(
            &trace,
            |i, _| sets.borrow_mut().set(format!("p:{}", key(i)), &value),
            || sets.borrow_mut().drain(),
        )
    });
    let ours = run(
        &trace,
        |i, _| cache.set_raw(&key(i), &value, None).unwrap(),
        || cache.flush().unwrap(),
    );
    assert_eq!(cache.stats().distributed.errors, 0);
    let peers = [(false, Some(&peer)), (true, peer_unawaited.as_ref())];
    for (unawaited_run, peer) in peers {
        let Some(peer) = peer else { continue };
        let label = peer_label(&base, unawaited.as_ref(), unawaited_run);
        print_rate(
            &format!("manager_set_distinct_throughput[{label}]"),
            ours.ops_per_s,
            peer.ops_per_s,
        );
        print_time(
            &format!("manager_set_distinct_p50[{label}]"),
            percentile(&ours.set_ns, 0.5),
            percentile(&peer.set_ns, 0.5),
        );
    }
}

/// `UNO_BENCH_ONLY=multi_get` (or `multi_set`, `zipf`, `set_distinct`) runs only that part, for profiling.
fn wanted(part: &str) -> bool {
    std::env::var("UNO_BENCH_ONLY").map_or(true, |only| only == part)
}

fn main() {
    let quick = stats::quick();
    let p = if quick {
        Params {
            batches: 300,
            zipf_ops: 30_000,
        }
    } else {
        Params {
            batches: 2_000,
            zipf_ops: 200_000,
        }
    };
    let started = Instant::now();
    // Pin this process before any other thread exists: the levels' threads inherit CPU 0.
    pin(std::process::id(), 0);
    let server = support::RedisServer::start();
    let server_pid = server.pid().unwrap();
    for (round, (place, server_cpu)) in [("same-cpu", 0), ("split-cpu", 1)].into_iter().enumerate() {
        pin(server_pid, server_cpu);
        pin(std::process::id(), 0);
        if wanted("multi_get") {
            bench_multi_get(place, &p, &server, round, "file");
            bench_multi_get(place, &p, &server, round, "memory");
        }
        if wanted("multi_set") {
            bench_multi_set(place, &p, &server, round, "file");
            bench_multi_set(place, &p, &server, round, "memory");
        }
        for write_mode in ["through", "behind"]
            .into_iter()
            .filter(|_| wanted("set_distinct"))
        {
            bench_set_distinct(place, &p, &server, round, write_mode);
        }
        if wanted("hand_made") {
            bench_zipf_hand_made(place, &p, &server, round);
        }
        for write_mode in ["through", "behind"].into_iter().filter(|_| wanted("zipf")) {
            for l1_holds_all in [false, true] {
                bench_zipf(
                    place,
                    &p,
                    &server,
                    round,
                    ZipfSetup {
                        write_mode,
                        l1_holds_all,
                    },
                );
            }
        }
        let mut raw = server.raw();
        redis::cmd("FLUSHALL").exec(&mut raw).unwrap();
    }
    println!(
        "bench: manager_redis_total_seconds {:.1}",
        started.elapsed().as_secs_f64()
    );
}
