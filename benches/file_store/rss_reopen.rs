//! RSS per entry and reopen after SIGKILL: uno-cache's `FileStore`, redb and foyer (the Rust
//! hybrid memory+disk cache, its block disk engine) side by side in one run.
//!
//! Each measurement runs in a child process (this bench binary, re-run with `UNO_BENCH_CHILD`),
//! so one engine's allocations never count against another's:
//! - `file_rss_per_entry_{16,64}b`: VmRSS after `open` versus after 1M entries (16- or 64-byte
//!   keys, 32-byte values) were written and flushed (redb: committed durably; foyer: written to its
//!   disk cache, a 1 MiB memory cache in front, and its flushers waited for), divided by the
//!   entries. For foyer that is its disk index plus its buffers (a 16 MiB buffer pool, the 1 MiB
//!   memory cache weighed in bytes); a `#` line gives the growth over the second 0.5M entries,
//!   which leaves such fixed costs out (foyer's index alone). Every foyer entry takes a 4 KiB
//!   page on disk, so its device holds 1M entries in 4 GiB (one foyer run per key length).
//!   Measured on 2026-11-30, 2 shared cores: ours 56.1 B (16-byte keys) and 57.2 B (64-byte),
//!   redb 60.9 / 115.9 B, foyer 134.8 / 133.3 B (growth 91 / 88 B); before the hash index ours
//!   was 191.0 / 250.2 B.
//! - A `#` line under `file_rss_per_entry_16b`: anonymous RSS per entry held of a store at its
//!   bound (48 MiB), after 200k reads and fills, so fill admission's sketch and filters count.
//!   Measured on 2026-12-01: 89.6–89.7 B against foyer's 98–132 B (140.6–142.8 B before
//!   evictions read the oldest segment's records one at a time instead of decoding all of them
//!   at once; see docs/benchmarks.md). Of it, about 42 B per entry before the fills (337k
//!   entries held); then the sketch (4 MiB at that size), the recent-fills filters, and the
//!   index's tables, which a churning table doubles once it is more than half full.
//! - `file_reopen_1m_after_kill`: a child writes 1M entries (16-byte keys, 32-byte values), makes
//!   them durable as each engine allows without closing (ours: `flush`, which writes the hints of
//!   full segments; the active segment never has one after a crash, so it is scanned), says
//!   "ready" and is SIGKILLed. Then the time to open and serve one read. Each repetition writes
//!   a fresh directory (foyer: at most three). Measured the same day, back to back, load 4–5 on 2
//!   cores: ours 265 ms (734 ms before this change), redb 81 ms, foyer 474 ms; a quieter run gave
//!   214 ms against 700 ms. redb opens a B-tree in place and rebuilds nothing. Later figures
//!   (98–103 ms since the shards of the index are applied on one thread per core) are in
//!   docs/benchmarks.md.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy,
};
use redb::{Database, ReadableDatabase};
use uno_cache::{FileStore, FileStoreOptions};

use super::{
    list, median, ms, ratio, record, redb_insert_batch, redb_make_durable, redb_path, BenchResult, Config,
    BATCH, TABLE,
};

/// Environment variable that makes the bench binary run one child task.
pub const CHILD: &str = "UNO_BENCH_CHILD";
const ENTRIES: usize = 1_000_000;
const VALUE_LEN: usize = 32;
/// The bound of the store measured at its bound (`rss-ours-full`): room for about 400k of the
/// entries.
const FULL_STORE_MB: u64 = 48;
/// foyer's device: every entry takes at least one 4 KiB page.
const FOYER_DEVICE: usize = 4608 << 20;

fn key_of_len(i: usize, len: usize) -> String {
    let mut k = format!("k{i:0width$}", width = len - 1);
    k.truncate(len);
    k
}

fn value_of(i: usize) -> Vec<u8> {
    super::value(i, VALUE_LEN)
}

/// Resident set size of this process, bytes.
fn rss() -> u64 {
    status_kb("VmRSS:") * 1024
}

/// Anonymous resident memory of this process, bytes: RSS without the file pages a read through
/// a segment's mapping brings in (page cache the kernel can drop, not the store's own memory).
fn rss_anon() -> u64 {
    status_kb("RssAnon:") * 1024
}

fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn foyer_open(dir: &Path) -> BenchResult<HybridCache<String, Vec<u8>>> {
    let device = FsDeviceBuilder::new(dir).with_capacity(FOYER_DEVICE).build()?;
    Ok(HybridCacheBuilder::new()
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(1 << 20)
        // Weigh entries by their bytes: the default weight is 1 per entry, which would make the
        // "1 MiB" memory cache hold a million entries.
        .with_weighter(|k: &String, v: &Vec<u8>| k.len() + v.len())
        .storage()
        .with_engine_config(BlockEngineConfig::new(device))
        .build()
        .await?)
}

/// Inserts keys `0..n` into foyer and waits until its disk cache has them, in steps so its
/// submit queue never drops entries.
async fn foyer_fill(cache: &HybridCache<String, Vec<u8>>, n: usize, key_len: usize) -> u64 {
    let mut half = 0;
    for start in (0..n).step_by(10_000) {
        if start == n / 2 {
            half = rss();
        }
        for i in start..(start + 10_000).min(n) {
            cache.insert(key_of_len(i, key_len), value_of(i));
        }
        cache.storage().wait().await;
    }
    cache.storage().wait().await;
    half
}

/// Runs the child task named by `CHILD`, if any. Returns false in the parent.
pub fn run_child() -> BenchResult<bool> {
    let Ok(task) = std::env::var(CHILD) else {
        return Ok(false);
    };
    let dir = std::path::PathBuf::from(std::env::var("UNO_BENCH_CHILD_DIR")?);
    let key_len: usize = std::env::var("UNO_BENCH_CHILD_KEY_LEN")?.parse()?;
    let keys = |start: usize| {
        (start..(start + BATCH).min(ENTRIES)).map(move |i| (key_of_len(i, key_len), value_of(i)))
    };
    match task.as_str() {
        "rss-ours" | "fill-ours" => {
            let store = FileStore::open(&dir, FileStoreOptions::default())?;
            let (before, mut half) = (rss(), 0);
            for start in (0..ENTRIES).step_by(BATCH) {
                if start == ENTRIES / 2 {
                    half = rss();
                }
                let chunk: Vec<(String, Vec<u8>)> = keys(start).collect();
                let refs: Vec<(&str, &[u8])> =
                    chunk.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                store.set_many(&refs, None)?;
            }
            store.flush()?;
            report_child(&task, before, half, &store);
        }
        "rss-ours-full" => {
            // A store at its bound: entries written until it evicts, then 200k keys read (a
            // miss) and filled, as a cache's backfills do, so fill admission's sketch and
            // filters are allocated and counted in.
            let store = FileStore::open(&dir, FileStoreOptions::default().max_size_mb(FULL_STORE_MB))?;
            let before = rss_anon();
            for start in (0..ENTRIES).step_by(BATCH) {
                if store.stats().evictions > 0 {
                    break;
                }
                let chunk: Vec<(String, Vec<u8>)> = keys(start).collect();
                let refs: Vec<(&str, &[u8])> =
                    chunk.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
                store.set_many(&refs, None)?;
            }
            for i in ENTRIES..ENTRIES + ENTRIES / 5 {
                let key = key_of_len(i, key_len);
                if store.get(&key)?.is_none() {
                    store.fill(&key, &value_of(i), None)?;
                }
            }
            store.flush()?;
            let after = rss_anon();
            let live = store.stats().live_items.max(1);
            println!(
                "rss_per_entry {} {}",
                after.saturating_sub(before) as f64 / live as f64,
                live
            );
        }
        "rss-redb" | "fill-redb" => {
            let db = Database::create(redb_path(&dir))?;
            let (before, mut half) = (rss(), 0);
            for start in (0..ENTRIES).step_by(BATCH) {
                if start == ENTRIES / 2 {
                    half = rss();
                }
                let chunk: Vec<(String, Vec<u8>)> = keys(start).collect();
                redb_insert_batch(&db, &chunk, redb::Durability::None)?;
            }
            redb_make_durable(&db)?;
            report_child(&task, before, half, &db);
        }
        "rss-foyer" | "fill-foyer" => {
            let rt = runtime();
            rt.block_on(async {
                let cache = foyer_open(&dir).await?;
                let before = rss();
                let half = foyer_fill(&cache, ENTRIES, key_len).await;
                report_child(&task, before, half, &cache);
                BenchResult::Ok(())
            })?;
        }
        // For profiling a reopen by hand: `UNO_BENCH_CHILD=open-ours … perf record …`.
        "open-ours" => {
            let start = std::time::Instant::now();
            let store = FileStore::open(&dir, FileStoreOptions::default())?;
            println!(
                "open {:.1} ms, {:?}",
                start.elapsed().as_secs_f64() * 1e3,
                store.recovery_report()
            );
            std::mem::forget(store);
        }
        other => return Err(format!("unknown child task {other}").into()),
    }
    Ok(true)
}

/// Prints the RSS figures (rss tasks) or "ready" and waits to be killed (fill tasks), keeping
/// `_engine` alive. `half` is the RSS when half the entries were written: the growth from there
/// leaves out fixed costs (buffers, caches of a set size).
fn report_child<T>(task: &str, before: u64, half: u64, _engine: &T) {
    if task.starts_with("rss") {
        let after = rss();
        println!(
            "rss_per_entry {} {}",
            (after.saturating_sub(before)) as f64 / ENTRIES as f64,
            (after.saturating_sub(half)) as f64 / (ENTRIES - ENTRIES / 2) as f64
        );
    } else {
        println!("ready");
        // Until the parent kills it; a parent gone first closes the pipe, and this ends too.
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    }
}

/// Runs child `task` on `dir` and returns its stdout lines; for fill tasks, SIGKILLs it once it
/// says "ready". The child runs under `setpriv --pdeathsig KILL` (util-linux), as the harness's
/// servers do: if this bench is killed, the child dies with it instead of finishing its fill
/// (4 GiB of writes for foyer) beside whatever runs next.
fn child(task: &str, dir: &Path, key_len: usize) -> BenchResult<Vec<String>> {
    let mut proc = Command::new("setpriv")
        .args(["--pdeathsig", "KILL", "--"])
        .arg(std::env::current_exe()?)
        .env(CHILD, task)
        .env("UNO_BENCH_CHILD_DIR", dir)
        .env("UNO_BENCH_CHILD_KEY_LEN", key_len.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    // Held open while the child runs: it waits on it, and ends when this process does.
    let _stdin = proc.stdin.take();
    let stdout = proc.stdout.take().ok_or("child stdout")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        let ready = line == "ready";
        lines.push(line);
        if ready {
            proc.kill()?;
            break;
        }
    }
    let status = proc.wait()?;
    if !task.starts_with("fill") && !status.success() {
        return Err(format!("child {task} failed: {status}").into());
    }
    Ok(lines)
}

/// RSS growth per entry over all the entries, and over the second half of them.
fn rss_child(task: &str, cfg: &Config, key_len: usize) -> BenchResult<(f64, f64)> {
    let dir = cfg.tempdir()?;
    let lines = child(task, dir.path(), key_len)?;
    let figures = lines
        .iter()
        .find_map(|l| l.strip_prefix("rss_per_entry "))
        .and_then(|v| v.split_once(' '))
        .and_then(|(all, second)| Some((all.parse().ok()?, second.parse().ok()?)));
    figures.ok_or_else(|| format!("child {task} printed no figure: {lines:?}").into())
}

fn b(v: f64) -> String {
    format!("{v:.1}")
}

/// RSS per entry with 16- and 64-byte keys. Lower is better: ratio = theirs / ours.
pub fn bench_rss(cfg: &Config) -> BenchResult {
    for key_len in [16, 64] {
        let name = format!("file_rss_per_entry_{key_len}b");
        if !cfg.selected(&name) {
            continue;
        }
        let (mut ours, mut redb, mut foyer) = (Vec::new(), Vec::new(), Vec::new());
        // RSS is a count, not a time: a few repetitions show it is stable.
        for _ in 0..cfg.reps.min(3) {
            ours.push(rss_child("rss-ours", cfg, key_len)?);
            redb.push(rss_child("rss-redb", cfg, key_len)?);
        }
        // One foyer run per key length: it writes 4 GiB.
        foyer.push(rss_child("rss-foyer", cfg, key_len)?);
        let all = |v: &[(f64, f64)]| v.iter().map(|f| f.0).collect::<Vec<_>>();
        let second = |v: &[(f64, f64)]| v.iter().map(|f| f.1).collect::<Vec<_>>();
        println!(
            "# {name}: ours B [{}] redb B [{}] foyer B [{}]",
            list(&all(&ours), b),
            list(&all(&redb), b),
            list(&all(&foyer), b)
        );
        println!(
            "# {name} growth per entry over the second 0.5M (fixed costs left out): ours B [{}] redb B [{}] foyer B [{}]",
            list(&second(&ours), b),
            list(&second(&redb), b),
            list(&second(&foyer), b)
        );
        let (o, r, f) = (median(&all(&ours)), median(&all(&redb)), median(&all(&foyer)));
        println!(
            "bench: {name} ours={o:.1} B redb={r:.1} B foyer={f:.1} B ratio={} ratio_foyer={}",
            ratio(r / o),
            ratio(f / o)
        );
        record(&name, o, r / o);
        if key_len == 16 {
            // Once full, a store also holds fill admission's sketch and filters (see
            // `admission.rs`): anonymous RSS per entry it holds then (its reads map segment
            // pages, which count in RSS but are page cache).
            let full: Vec<(f64, f64)> = (0..cfg.reps.min(3))
                .map(|_| rss_child("rss-ours-full", cfg, key_len))
                .collect::<BenchResult<_>>()?;
            println!(
                "# {name} with the store at its bound ({FULL_STORE_MB} MiB, {:.0} entries held, after 200k reads and fills), anonymous RSS: ours B [{}] (foyer, always bounded: {f:.1} B)",
                full.first().map_or(0.0, |f| f.1),
                list(&full.iter().map(|f| f.0).collect::<Vec<_>>(), b)
            );
        }
    }
    Ok(())
}

/// Reopen of 1M entries after SIGKILL. Lower is better: ratio = theirs / ours.
pub fn bench_reopen_after_kill(cfg: &Config) -> BenchResult {
    let name = "file_reopen_1m_after_kill";
    let probe = key_of_len(ENTRIES / 2, 16);
    let (mut ours, mut redb, mut foyer) = (Vec::new(), Vec::new(), Vec::new());
    let mut report = None;
    for rep in 0..cfg.reopen_reps {
        let dir = cfg.tempdir()?;
        child("fill-ours", dir.path(), 16)?;
        let start = cfg.stopwatch();
        let store = FileStore::open(dir.path(), FileStoreOptions::default())?;
        assert!(store.get(&probe)?.is_some());
        ours.push(start.secs());
        assert_eq!(store.stats().live_items, ENTRIES as u64);
        report.get_or_insert_with(|| store.recovery_report().clone());
        drop(store);

        let dir = cfg.tempdir()?;
        child("fill-redb", dir.path(), 16)?;
        let start = cfg.stopwatch();
        let db = Database::open(redb_path(dir.path()))?;
        let txn = db.begin_read()?;
        assert!(txn.open_table(TABLE)?.get(probe.as_str())?.is_some());
        redb.push(start.secs());
        drop(txn);
        drop(db);

        // foyer writes 4 GiB per fill: at most three repetitions.
        if rep < 3 {
            let dir = cfg.tempdir()?;
            child("fill-foyer", dir.path(), 16)?;
            let rt = runtime();
            let secs = rt.block_on(async {
                let start = cfg.stopwatch();
                let cache = foyer_open(dir.path()).await?;
                let hit = cache.get(&probe).await?.is_some();
                let secs = start.secs();
                assert!(hit, "foyer lost the probe key after the kill");
                cache.close().await?;
                BenchResult::Ok(secs)
            })?;
            foyer.push(secs);
        }
    }
    if let Some(r) = report {
        println!(
            "# {name}: ours {} segments, {} from hints, {} scanned, {} records",
            r.segments, r.from_hints, r.scanned, r.records
        );
    }
    println!(
        "# {name}: ours ms [{}] redb ms [{}] foyer ms [{}]",
        list(&ours, ms),
        list(&redb, ms),
        list(&foyer, ms)
    );
    let (o, r, f) = (median(&ours), median(&redb), median(&foyer));
    println!(
        "bench: {name} ours={:.1} ms redb={:.1} ms foyer={:.1} ms ratio={} ratio_foyer={}",
        o * 1e3,
        r * 1e3,
        f * 1e3,
        ratio(r / o),
        ratio(f / o)
    );
    record(name, o, r / o);
    Ok(())
}
