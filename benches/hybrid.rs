//! The local level of two tiers (a memory tier of decoded values in front of the file store)
//! against foyer's `HybridCache` (memory + block disk engine), the hybrid a Rust user would pick
//! instead, in one process and one run.
//!
//! - `hybrid_memory_hit`: a typed `CacheManager::get::<User>` answered by the memory tier (a
//!   clone of the value) against `HybridCache::get` answered by foyer's memory cache (a
//!   reference-counted entry of the value's bytes, nothing cloned or decoded): 10 000 keys, random
//!   order, ns per get.
//! - `hybrid_disk_hit`: a get of a key that only the disk tier holds (a memory tier of a few
//!   entries, so nearly every read goes to the file store, and foyer's memory cache weighed to
//!   64 KiB): p50 and p99 of each call, in µs.
//! - `hybrid_insert_acked`: inserts per second where each insert is acknowledged as stored: ours
//!   `set` returns once the record is in the store's file (it survives a crash of the process);
//!   foyer's `insert` is waited for (`storage().wait()`) every 1 000 inserts, which is what keeps
//!   its submit queue from dropping entries. Durability differs, and the line says so: ours
//!   runs with the default `Periodic(1 s)`, a background fsync each second while there were
//!   writes; foyer never fsyncs its device.
//! - `hybrid_disk_bytes_per_entry`: bytes the files take on the device (allocated blocks) after
//!   those inserts and a close, per entry (the store's metadata and hint files included).
//!
//! RAM per entry and the reopen of 1M entries after SIGKILL, beside foyer, are in the
//! `file_store` bench (`file_rss_per_entry_*`, `file_reopen_1m_after_kill`).
//!
//! Each line alternates the two sides over several rounds and prints medians; `ratio` > 1 means
//! we are better. `UNO_BENCH_QUICK=1` shortens it; `UNO_BENCH_ONLY=memory|disk|insert` runs one
//! part.
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
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy,
};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use uno_cache::{CacheConfig, CacheManager, Codec};

#[path = "shared/stats.rs"]
mod stats;
use stats::{median, percentile};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    score: f64,
}

fn user(i: u64) -> User {
    User {
        id: i,
        name: format!("user number {i}"),
        score: i as f64 * 0.5,
    }
}

fn key(i: u64) -> String {
    format!("user:{i}")
}

struct Params {
    rounds: usize,
    memory_keys: u64,
    memory_reads: usize,
    disk_keys: u64,
    disk_reads: usize,
    inserts: u64,
}

fn params() -> Params {
    if stats::quick() {
        Params {
            rounds: 5,
            memory_keys: 10_000,
            memory_reads: 200_000,
            disk_keys: 20_000,
            disk_reads: 5_000,
            inserts: 20_000,
        }
    } else {
        Params {
            rounds: 9,
            memory_keys: 10_000,
            memory_reads: 1_000_000,
            disk_keys: 50_000,
            disk_reads: 20_000,
            inserts: 50_000,
        }
    }
}

fn only(part: &str) -> bool {
    std::env::var("UNO_BENCH_ONLY").map_or(true, |only| only == part)
}

/// Ours: the file store with a memory tier of `memory_items`, no L2.
fn ours(dir: &Path, memory_items: u64) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.path = Some(dir.to_path_buf());
    config.local.max_size = Some(1024);
    config.local.ttl = Duration::from_secs(3600);
    config.local.memory_items = memory_items;
    CacheManager::new(config).unwrap()
}

/// foyer's hybrid cache on `dir`: its memory cache weighed in bytes, every insert written to
/// disk, a device with room for every entry (each takes a 4 KiB page).
async fn foyer(dir: &Path, memory_bytes: usize, entries: u64) -> HybridCache<String, Vec<u8>> {
    let capacity = ((entries as usize * 4096) * 5 / 4).max(64 << 20);
    let device = FsDeviceBuilder::new(dir).with_capacity(capacity).build().unwrap();
    HybridCacheBuilder::new()
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(memory_bytes)
        .with_weighter(|k: &String, v: &Vec<u8>| k.len() + v.len())
        .storage()
        .with_engine_config(BlockEngineConfig::new(device))
        .build()
        .await
        .unwrap()
}

/// Inserts keys `0..n` into foyer, waiting for its disk writes every 1 000 (acknowledged).
async fn foyer_fill(cache: &HybridCache<String, Vec<u8>>, codec: Codec, n: u64) {
    for start in (0..n).step_by(1000) {
        for i in start..(start + 1000).min(n) {
            let k = key(i);
            let bytes = codec.encode(&k, &user(i)).unwrap();
            cache.insert(k, bytes);
        }
        cache.storage().wait().await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The bytes the files under `dir` take on the device.
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in walk(dir) {
        total += entry.blocks() * 512;
    }
    total
}

fn walk(dir: &Path) -> Vec<std::fs::Metadata> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(meta);
        }
    }
    out
}

fn bench_memory_hit(p: &Params, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let foyer_dir = tempfile::tempdir().unwrap();
    let cache = ours(dir.path(), p.memory_keys * 2);
    let codec = cache.codec();
    let theirs = rt.block_on(foyer(foyer_dir.path(), 64 << 20, p.memory_keys));
    for i in 0..p.memory_keys {
        cache.set(&key(i), &user(i), None).unwrap();
        black_box(cache.get::<User>(&key(i)).unwrap());
    }
    rt.block_on(foyer_fill(&theirs, codec, p.memory_keys));
    let keys: Vec<String> = (0..p.memory_keys).map(key).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let order: Vec<usize> = (0..p.memory_reads)
        .map(|_| rng.random_range(0..keys.len()))
        .collect();
    let before = cache.stats().memory.misses;
    // foyer's line must time its memory cache too, not reads that fall through to its disk.
    let in_memory =
        |theirs: &HybridCache<String, Vec<u8>>| keys.iter().filter(|k| theirs.memory().contains(*k)).count();
    assert_eq!(
        in_memory(&theirs),
        keys.len(),
        "foyer's memory cache holds every key"
    );
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..p.rounds {
        let start = Instant::now();
        for &i in &order {
            black_box(cache.get::<User>(&keys[i]).unwrap());
        }
        a.push(start.elapsed().as_nanos() as f64 / order.len() as f64);
        let start = Instant::now();
        rt.block_on(async {
            for &i in &order {
                black_box(theirs.get(&keys[i]).await.unwrap());
            }
        });
        b.push(start.elapsed().as_nanos() as f64 / order.len() as f64);
    }
    assert_eq!(
        cache.stats().memory.misses,
        before,
        "every timed read was a memory-tier hit"
    );
    // foyer puts a disk hit back in memory, so this only says nothing was evicted meanwhile.
    assert_eq!(
        in_memory(&theirs),
        keys.len(),
        "foyer's memory cache still holds every key"
    );
    let (o, f) = (median(&a), median(&b));
    println!(
        "bench: hybrid_memory_hit[{} keys, random] ours={o:.1} ns foyer={f:.1} ns ratio={:.2} (medians of {} alternating rounds)",
        p.memory_keys,
        f / o,
        p.rounds
    );
    rt.block_on(theirs.close()).unwrap();
}

fn bench_disk_hit(p: &Params, rt: &tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let foyer_dir = tempfile::tempdir().unwrap();
    // A memory tier of a few entries: nearly every read is a file-tier hit.
    let cache = ours(dir.path(), 8);
    let codec = cache.codec();
    let theirs = rt.block_on(foyer(foyer_dir.path(), 64 << 10, p.disk_keys));
    for i in 0..p.disk_keys {
        cache.set(&key(i), &user(i), None).unwrap();
    }
    cache.flush().unwrap();
    rt.block_on(foyer_fill(&theirs, codec, p.disk_keys));
    let keys: Vec<String> = (0..p.disk_keys).map(key).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let order: Vec<usize> = (0..p.disk_reads)
        .map(|_| rng.random_range(0..keys.len()))
        .collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut found = (0u64, 0u64);
    let memory_hits = cache.stats().memory.hits;
    for _ in 0..p.rounds.min(5) {
        for &i in &order {
            let start = Instant::now();
            let got = cache.get::<User>(&keys[i]).unwrap();
            a.push(start.elapsed().as_nanos() as f64 / 1000.0);
            found.0 += u64::from(got.is_some());
        }
        rt.block_on(async {
            for &i in &order {
                let start = Instant::now();
                let got = theirs.get(&keys[i]).await.unwrap();
                let value = got.map(|entry| codec.decode::<User>(&keys[i], entry.value()).unwrap());
                b.push(start.elapsed().as_nanos() as f64 / 1000.0);
                found.1 += u64::from(value.is_some());
            }
        });
    }
    assert_eq!(found.0, a.len() as u64, "ours found every key");
    // The line is about file-tier hits: how many of ours the memory tier answered instead.
    let memory_hits = cache.stats().memory.hits - memory_hits;
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (o50, f50) = (percentile(&a, 0.5), percentile(&b, 0.5));
    let (o99, f99) = (percentile(&a, 0.99), percentile(&b, 0.99));
    println!(
        "bench: hybrid_disk_hit[{} keys, random] ours p50={o50:.2} µs p99={o99:.2} µs foyer p50={f50:.2} µs p99={f99:.2} µs ratio_p50={:.2} ratio_p99={:.2} (ours' memory tier answered {memory_hits} of {}; foyer found {} of {})",
        p.disk_keys,
        f50 / o50,
        f99 / o99,
        a.len(),
        found.1,
        b.len()
    );
    rt.block_on(theirs.close()).unwrap();
}

fn bench_insert(p: &Params, rt: &tokio::runtime::Runtime) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut bytes_ours, mut bytes_foyer) = (Vec::new(), Vec::new());
    for _ in 0..p.rounds.min(3) {
        let dir = tempfile::tempdir().unwrap();
        let cache = ours(dir.path(), 10_000);
        let codec = cache.codec();
        let start = Instant::now();
        for i in 0..p.inserts {
            cache.set(&key(i), &user(i), None).unwrap();
        }
        a.push(p.inserts as f64 / start.elapsed().as_secs_f64());
        // Closed, so the active segment gives back the tail it reserved (as a sealed one does).
        drop(cache);
        bytes_ours.push(allocated_bytes(dir.path()) as f64 / p.inserts as f64);

        let foyer_dir = tempfile::tempdir().unwrap();
        let theirs = rt.block_on(foyer(foyer_dir.path(), 1 << 20, p.inserts));
        let start = Instant::now();
        rt.block_on(foyer_fill(&theirs, codec, p.inserts));
        b.push(p.inserts as f64 / start.elapsed().as_secs_f64());
        rt.block_on(theirs.close()).unwrap();
        bytes_foyer.push(allocated_bytes(foyer_dir.path()) as f64 / p.inserts as f64);
    }
    let (o, f) = (median(&a), median(&b));
    println!(
        "bench: hybrid_insert_acked[{} inserts] ours={o:.3e} ops/s foyer={f:.3e} ops/s ratio={:.2} (medians of {} alternating rounds; ours in its file on return and fsynced every 1 s in the background, foyer waited for every 1000 and never fsynced)",
        p.inserts,
        o / f,
        a.len()
    );
    let (o, f) = (median(&bytes_ours), median(&bytes_foyer));
    println!(
        "bench: hybrid_disk_bytes_per_entry[{} entries] ours={o:.1} B foyer={f:.1} B ratio={:.2}",
        p.inserts,
        f / o
    );
}

fn main() {
    let p = params();
    let rt = runtime();
    if only("memory") {
        bench_memory_hit(&p, &rt);
    }
    if only("disk") {
        bench_disk_hit(&p, &rt);
    }
    if only("insert") {
        bench_insert(&p, &rt);
    }
}
