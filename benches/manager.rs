//! Manager benchmarks against moka, the crate a user would pick instead, in one process and run.
//!
//! - `l1_hit_sync`: `CacheManager::get::<User>` answered by a memory L1 (lookup, copy, bincode
//!   decode, stats) against `moka::sync::Cache<String, User>::get` (lookup, clone).
//! - `l1_hit_async`: the same through `get_async` against `moka::future::Cache::get`, awaited in a
//!   current-thread runtime.
//! - `l1_hit_sync_file`: the file L1 alone (mmap read + CRC + decode, no memory tier) against
//!   moka's `get`.
//! - `memory_tier_hit`: `get::<User>` answered by the memory tier in front of the file store
//!   (100 000 keys, random order) against a `quick_cache` get of the same typed value.
//! - `l1_hit_sync_2threads`: two threads reading concurrently, ns per read per thread.
//! - `memory_tier_*`: the two candidates for the memory tier, raw (quick_cache vs moka get of
//!   keys both hold, every read checked a hit; hit ratio on the zipf trace), the measurement
//!   behind the choice of quick_cache.
//! - `set_distinct_memory_l2[threads=N]`: `CacheManager::set_raw` of keys no other set writes
//!   at the same time, with a memory L1 and an in-process memory L2 (no network, so what the
//!   manager itself costs a set: per-key ordering, both levels, stats) against moka's `insert`;
//!   ns per set per thread.
//! - `loader_hit`: a hit through the loading calls (`get_or_set_with`, and `get_or_load` with
//!   fail-safe, timeouts and refresh-ahead configured) on a file L1 with its memory tier,
//!   against `moka::sync::Cache::get_with` of the same typed value: what fail-safe and
//!   refresh-ahead cost a hit.
//! - `memory_hit_ratio_zipf099`: `MemoryStore` (through the `Storage` trait) against moka on a
//!   zipf(0.99) trace with a capacity of 10 % of the keys; on a miss the key is inserted.
//!
//! Times are the median of several alternating trials, in ns per operation; `ratio` is moka/ours for times and
//! ours/moka for hit ratios, so above 1 means we are better. `UNO_BENCH_QUICK=1` shortens every
//! loop (about a minute in all on 2 vCPUs); `UNO_BENCH_ONLY=memory_tier_hit`, `memory_tier`,
//! `loader_hit` or `set_distinct` runs one part.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    missing_docs
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use uno_cache::{CacheConfig, CacheManager, InProcess, LocalKind, MemoryStore, Storage};

#[path = "shared/stats.rs"]
mod stats;
use stats::median;

#[path = "shared/user.rs"]
mod shared_user;
use shared_user::{memory_tier_manager, user, User};

struct Params {
    hot_keys: u64,
    rounds: u64,
    trials: u32,
    zipf_keys: usize,
    zipf_reads: usize,
}

fn params() -> Params {
    if stats::quick() {
        Params {
            hot_keys: 1000,
            rounds: 200,
            trials: 9,
            zipf_keys: 100_000,
            zipf_reads: 1_000_000,
        }
    } else {
        Params {
            hot_keys: 1000,
            rounds: 1000,
            trials: 15,
            zipf_keys: 100_000,
            zipf_reads: 4_000_000,
        }
    }
}

/// Runs `ours` and `theirs` alternately, `trials` times each (after a warm-up), each run doing
/// `ops` operations; returns the median ns per operation of each. Alternating makes both see the
/// same background load on a shared machine; the median keeps one disturbed run from deciding.
fn compare(trials: u32, ops: u64, mut ours: impl FnMut(), mut theirs: impl FnMut()) -> (f64, f64) {
    ours();
    theirs();
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        f();
        start.elapsed().as_nanos() as f64 / ops as f64
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..trials {
        a.push(time(&mut ours));
        b.push(time(&mut theirs));
    }
    (median(&a), median(&b))
}

fn print_time(name: &str, ours: f64, moka: f64) {
    println!(
        "bench: {name} ours={ours:.1} ns moka={moka:.1} ns ratio={:.2}",
        moka / ours
    );
}

fn memory_manager(capacity: u64) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.local.max_size = Some(capacity);
    config.local.ttl = Duration::from_secs(3600);
    CacheManager::new(config).unwrap()
}

fn hot_keys(p: &Params) -> Vec<String> {
    (0..p.hot_keys).map(|i| format!("user:{i}")).collect()
}

fn moka_sync(keys: &[String]) -> moka::sync::Cache<String, User> {
    let moka = moka::sync::Cache::new(keys.len() as u64 * 2);
    for (i, k) in keys.iter().enumerate() {
        moka.insert(k.clone(), user(i as u64));
    }
    moka.run_pending_tasks();
    moka
}

fn bench_l1_hit_sync(p: &Params) {
    let keys = hot_keys(p);
    let ops = p.rounds * p.hot_keys;
    let cache = memory_manager(p.hot_keys * 2);
    for (i, k) in keys.iter().enumerate() {
        cache.set(k, &user(i as u64), None).unwrap();
    }
    let moka = moka_sync(&keys);
    let read_ours = || {
        for _ in 0..p.rounds {
            for k in &keys {
                black_box(cache.get::<User>(k).unwrap());
            }
        }
    };
    let read_moka = || {
        for _ in 0..p.rounds {
            for k in &keys {
                black_box(moka.get(k));
            }
        }
    };
    let (ours, theirs) = compare(p.trials, ops, read_ours, read_moka);
    assert_eq!(cache.stats().local.misses, 0, "the benchmark must only hit");
    print_time("l1_hit_sync", ours, theirs);

    // Two threads at once: wall time per read of each thread.
    let twice = |f: &(dyn Fn() + Sync)| {
        std::thread::scope(|s| {
            s.spawn(f);
            s.spawn(f);
        });
    };
    let (ours, theirs) = compare(p.trials, ops, || twice(&read_ours), || twice(&read_moka));
    print_time("l1_hit_sync_2threads", ours, theirs);
}

fn bench_l1_hit_file(p: &Params) {
    let keys = hot_keys(p);
    let ops = p.rounds * p.hot_keys;
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.local.path = Some(dir.path().to_path_buf());
    config.local.max_size = Some(64);
    config.local.ttl = Duration::from_secs(3600);
    // The file tier itself, without the memory tier in front.
    config.local.memory_items = 0;
    let cache = CacheManager::new(config).unwrap();
    for (i, k) in keys.iter().enumerate() {
        cache.set(k, &user(i as u64), None).unwrap();
    }
    let moka = moka_sync(&keys);
    let (ours, theirs) = compare(
        p.trials,
        ops,
        || {
            for _ in 0..p.rounds {
                for k in &keys {
                    black_box(cache.get::<User>(k).unwrap());
                }
            }
        },
        || {
            for _ in 0..p.rounds {
                for k in &keys {
                    black_box(moka.get(k));
                }
            }
        },
    );
    assert_eq!(cache.stats().local.misses, 0);
    print_time("l1_hit_sync_file", ours, theirs);
}

/// `CacheManager::get::<User>` answered by the memory tier in front of the file store, against
/// a `quick_cache` get of the same typed value (a clone), 100 000 keys read in random order.
fn bench_memory_tier_hit(p: &Params) {
    const KEYS: u64 = 100_000;
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let cache = memory_tier_manager(dir.path(), KEYS);
    // Each cache filled in a loop of its own: filled in one loop, where the allocator put the
    // reference's keys and strings depended on what our fill allocated between them, and the
    // reference's hit time moved by a quarter with changes to our entries alone.
    let raw = quick_cache::sync::Cache::<String, User>::new(KEYS as usize * 2);
    for (i, k) in keys.iter().enumerate() {
        raw.insert(k.clone(), user(i as u64));
    }
    for (i, k) in keys.iter().enumerate() {
        cache.set(k, &user(i as u64), None).unwrap();
        black_box(cache.get::<User>(k).unwrap());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let order: Vec<usize> = (0..p.rounds * 1000)
        .map(|_| rng.random_range(0..KEYS as usize))
        .collect();
    let before = cache.stats().memory.hits;
    let (ours, theirs) = compare(
        p.trials,
        order.len() as u64,
        || {
            for &i in &order {
                black_box(cache.get::<User>(&keys[i]).unwrap());
            }
        },
        || {
            for &i in &order {
                black_box(raw.get(&keys[i]));
            }
        },
    );
    let stats = cache.stats();
    assert_eq!(
        stats.memory.misses, KEYS,
        "every timed read was a memory-tier hit"
    );
    assert!(stats.memory.hits > before);
    println!(
        "bench: memory_tier_hit[100k keys, random] ours={ours:.1} ns quick_cache={theirs:.1} ns ratio={:.2} (aim: ours <= 1.2x quick_cache, ratio >= 0.83)",
        theirs / ours
    );
}

fn bench_l1_hit_async(p: &Params) {
    let keys = hot_keys(p);
    let ops = p.rounds * p.hot_keys;
    let cache = memory_manager(p.hot_keys * 2);
    for (i, k) in keys.iter().enumerate() {
        cache.set(k, &user(i as u64), None).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let moka: moka::future::Cache<String, User> = moka::future::Cache::new(p.hot_keys * 2);
    rt.block_on(async {
        for (i, k) in keys.iter().enumerate() {
            moka.insert(k.clone(), user(i as u64)).await;
        }
        moka.run_pending_tasks().await;
    });
    let (ours, theirs) = compare(
        p.trials,
        ops,
        || {
            rt.block_on(async {
                for _ in 0..p.rounds {
                    for k in &keys {
                        black_box(cache.get_async::<User>(k).await.unwrap());
                    }
                }
            });
        },
        || {
            rt.block_on(async {
                for _ in 0..p.rounds {
                    for k in &keys {
                        black_box(moka.get(k).await);
                    }
                }
            });
        },
    );
    assert_eq!(cache.stats().local.misses, 0);
    print_time("l1_hit_async", ours, theirs);
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

fn zipf_trace(p: &Params) -> Vec<String> {
    let zipf = Zipf::new(p.zipf_keys, 0.99);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    // Scramble ranks so popularity is unrelated to key order or hash.
    (0..p.zipf_reads)
        .map(|_| {
            format!(
                "key:{}",
                (zipf.sample(&mut rng) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            )
        })
        .collect()
}

fn percent(hits: usize, total: usize) -> f64 {
    hits as f64 * 100.0 / total as f64
}

fn bench_memory_tier(p: &Params) {
    let trace = zipf_trace(p);
    let capacity = p.zipf_keys / 10;
    let value: Vec<u8> = vec![7; 64];

    // Raw candidates (the measurement behind the choice).
    let qc: quick_cache::sync::Cache<String, Arc<[u8]>> = quick_cache::sync::Cache::new(capacity);
    let shared: Arc<[u8]> = Arc::from(value.as_slice());
    let mut qc_hits = 0;
    for k in &trace {
        if qc.get(k.as_str()).is_some() {
            qc_hits += 1;
        } else {
            qc.insert(k.clone(), Arc::clone(&shared));
        }
    }
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(capacity as u64);
    let mut moka_hits = 0;
    for k in &trace {
        if moka.get(k).is_some() {
            moka_hits += 1;
        } else {
            moka.insert(k.clone(), Arc::clone(&shared));
        }
    }
    let (qc_ratio, moka_ratio) = (percent(qc_hits, trace.len()), percent(moka_hits, trace.len()));
    println!(
        "bench: memory_tier_candidates_zipf099 quick_cache={qc_ratio:.2}% moka={moka_ratio:.2}% ratio={:.3}",
        qc_ratio / moka_ratio
    );
    // The cost of a hit, on caches sure to hold the keys read: fresh ones of twice their number.
    // (In the full caches above a key never read loses to the trace's keys at admission, and
    // the loop would time misses.)
    let hot: Vec<String> = (0..1000).map(|i| format!("hot:{i}")).collect();
    let qc: quick_cache::sync::Cache<String, Arc<[u8]>> = quick_cache::sync::Cache::new(2 * hot.len());
    let moka: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(2 * hot.len() as u64);
    for k in &hot {
        qc.insert(k.clone(), Arc::clone(&shared));
        moka.insert(k.clone(), Arc::clone(&shared));
    }
    moka.run_pending_tasks();
    let ops = 1000 * p.rounds;
    let misses = std::cell::Cell::new(0u64);
    let (qc_ns, moka_ns) = compare(
        p.trials,
        ops,
        || {
            for _ in 0..p.rounds {
                for k in &hot {
                    if black_box(qc.get(k.as_str())).is_none() {
                        misses.set(misses.get() + 1);
                    }
                }
            }
        },
        || {
            for _ in 0..p.rounds {
                for k in &hot {
                    if black_box(moka.get(k)).is_none() {
                        misses.set(misses.get() + 1);
                    }
                }
            }
        },
    );
    assert_eq!(misses.get(), 0, "every timed read is a hit");
    println!(
        "bench: memory_tier_candidates_hit quick_cache={qc_ns:.1} ns moka={moka_ns:.1} ns ratio={:.2}",
        moka_ns / qc_ns
    );

    // The tier as shipped, through the Storage trait.
    let ours = MemoryStore::new(capacity as u64).unwrap();
    let mut our_hits = 0;
    for k in &trace {
        if ours.get(k).unwrap().is_some() {
            our_hits += 1;
        } else {
            ours.set(k, &value, None).unwrap();
        }
    }
    let moka: moka::sync::Cache<String, Vec<u8>> = moka::sync::Cache::new(capacity as u64);
    let mut moka_hits = 0;
    for k in &trace {
        if moka.get(k).is_some() {
            moka_hits += 1;
        } else {
            moka.insert(k.clone(), value.clone());
        }
    }
    let (ours_ratio, moka_ratio) = (percent(our_hits, trace.len()), percent(moka_hits, trace.len()));
    println!(
        "bench: memory_hit_ratio_zipf099 ours={ours_ratio:.2}% moka={moka_ratio:.2}% ratio={:.3} (keys={} capacity={} reads={})",
        ours_ratio / moka_ratio,
        p.zipf_keys,
        capacity,
        trace.len()
    );
}

/// Sets of distinct keys through a manager with a memory L1 and an in-process memory L2, from
/// `threads` threads (each its own keys), vs moka inserts of the same keys.
fn bench_set_distinct(p: &Params, threads: usize) {
    let per_thread = p.rounds as usize * 100;
    let keys: Vec<Vec<String>> = (0..threads)
        .map(|t| (0..per_thread).map(|i| format!("set:{t}:{i}")).collect())
        .collect();
    let capacity = (threads * per_thread * 2) as u64;
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.local.max_size = Some(capacity);
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(capacity).unwrap()))
        .distributed(Arc::new(InProcess::new(MemoryStore::new(capacity).unwrap())))
        .build()
        .unwrap();
    let moka: moka::sync::Cache<String, Vec<u8>> = moka::sync::Cache::new(capacity);
    let value = vec![7u8; 100];
    let (ours, theirs) = compare(
        p.trials,
        per_thread as u64,
        || {
            std::thread::scope(|scope| {
                for mine in &keys {
                    let (cache, value) = (&cache, &value);
                    scope.spawn(move || {
                        for k in mine {
                            cache.set_raw(k, value, None).unwrap();
                        }
                    });
                }
            });
        },
        || {
            std::thread::scope(|scope| {
                for mine in &keys {
                    let (moka, value) = (&moka, &value);
                    scope.spawn(move || {
                        for k in mine {
                            moka.insert(k.clone(), value.clone());
                        }
                    });
                }
            });
        },
    );
    print_time(
        &format!("set_distinct_memory_l2[threads={threads}]"),
        ours,
        theirs,
    );
}

/// A hit through the loading calls against moka's `get_with` (1000 keys, each read in turn).
fn bench_loader_hit(p: &Params) {
    let keys = hot_keys(p);
    let ops = p.rounds * p.hot_keys;
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.local.path = Some(dir.path().to_path_buf());
    config.local.ttl = Duration::from_secs(3600);
    config.loader.fail_safe_max_duration = Duration::from_secs(3600);
    config.loader.soft_timeout_ms = 100;
    config.loader.hard_timeout_ms = 1000;
    config.loader.refresh_ahead = 0.8;
    let cache = CacheManager::new(config).unwrap();
    let moka = moka::sync::Cache::<String, User>::new(p.hot_keys * 2);
    for (i, k) in keys.iter().enumerate() {
        let u = user(i as u64);
        let u2 = u.clone();
        cache
            .get_or_load(k, None, move || Ok::<_, uno_cache::Error>(u))
            .unwrap();
        moka.get_with(k.clone(), || u2);
    }
    let rounds = p.rounds;
    let plain = |cache: &CacheManager| {
        for _ in 0..rounds {
            for k in &keys {
                black_box(
                    cache
                        .get_or_set_with(k, None, || -> Result<User, uno_cache::Error> { unreachable!() })
                        .unwrap(),
                );
            }
        }
    };
    let theirs_fn = || {
        for _ in 0..rounds {
            for k in &keys {
                // By reference: a hit allocates no key, as ours does not.
                black_box(moka.get_with_by_ref(k.as_str(), || unreachable!()));
            }
        }
    };
    let (ours, theirs) = compare(p.trials, ops, || plain(&cache), theirs_fn);
    print_time("loader_hit[get_or_set_with]", ours, theirs);
    let (ours, theirs) = compare(
        p.trials,
        ops,
        || {
            for _ in 0..rounds {
                for k in &keys {
                    black_box(
                        cache
                            .get_or_load(k, None, || -> Result<User, uno_cache::Error> { unreachable!() })
                            .unwrap(),
                    );
                }
            }
        },
        theirs_fn,
    );
    print_time(
        "loader_hit[get_or_load, fail-safe + timeouts + refresh-ahead]",
        ours,
        theirs,
    );
    assert_eq!(
        cache.stats().overall.loads,
        p.hot_keys,
        "every timed call was a hit"
    );
}

fn main() {
    let p = params();
    let start = Instant::now();
    if std::env::var("UNO_BENCH_ONLY").is_ok_and(|only| only == "memory_tier_hit") {
        bench_memory_tier_hit(&p);
        return;
    }
    if std::env::var("UNO_BENCH_ONLY").is_ok_and(|only| only == "memory_tier") {
        bench_memory_tier(&p);
        return;
    }
    if std::env::var("UNO_BENCH_ONLY").is_ok_and(|only| only == "loader_hit") {
        bench_loader_hit(&p);
        return;
    }
    if std::env::var("UNO_BENCH_ONLY").is_ok_and(|only| only == "set_distinct") {
        bench_set_distinct(&p, 1);
        bench_set_distinct(&p, 2);
        return;
    }
    bench_set_distinct(&p, 1);
    bench_set_distinct(&p, 2);
    bench_l1_hit_sync(&p);
    bench_l1_hit_async(&p);
    bench_l1_hit_file(&p);
    bench_memory_tier_hit(&p);
    bench_loader_hit(&p);
    bench_memory_tier(&p);
    println!("bench: total_seconds {:.1}", start.elapsed().as_secs_f64());
}
