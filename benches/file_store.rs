//! File-store benchmarks: uno-cache's `FileStore` against redb, in the same process and run.
//!
//! The scenario is a cache user: one key per operation, no batching unless a line says so. Each
//! comparison prints one line (the shape docs/design.md, "Measuring", fixes):
//!
//! `bench: file_get_hit ours=2.1e6 ops/s redb=9.0e5 ops/s ratio=2.33`
//!
//! Higher `ratio` is better for uno-cache whatever the unit (for times it is `redb / ours`).
//! Every figure is the median over several repetitions; ours and redb alternate within each
//! repetition so that noise from other processes hits both. Lines starting with `#` give every
//! repetition, to judge the noise, and a summary of the aims (set >= 5x, get >= 2x, reopen < 1 s).
//!
//! | line                                 | what                                                                 |
//! |--------------------------------------|----------------------------------------------------------------------|
//! | `file_set_seq_1k`                    | 100k sequential keys, 1 KiB values, fresh store; one `set` / one redb write transaction each |
//! | `file_set_seq_1k_batch1000`          | the same, 1000 keys per `set_many` / per redb write transaction       |
//! | `file_get_hit`                       | random reads of those keys; redb opens a read transaction per read     |
//! | `file_get_hit_vs_redb_one_read_txn`  | the same reads; redb's best case, one read transaction for the run     |
//! | `file_get_hit_2threads`              | the random reads split over two threads (wall time)                   |
//! | `file_get_hit_full`                  | random reads of a store held at its bound (80 MiB) after fills were checked, so each read is also counted for fill admission; against redb and against our unbounded store |
//! | `file_mixed_90_10`                   | 90% reads, 10% overwrites (one write transaction each), same keys      |
//! | `file_get_cold`                      | 10k of those random reads with each side reopened and its files dropped from the page cache |
//! | `file_reopen_1m_hints`               | open + first read of 1M entries (16-byte keys, 32-byte values), closed cleanly |
//! | `file_reopen_1m_scan`                | the same with every hint file deleted, so every segment is scanned     |
//! | `file_rss_per_entry_16b`, `_64b`     | RSS per entry of 1M entries (16-/64-byte keys), redb and foyer beside us (`rss_reopen.rs`) |
//! | `file_reopen_1m_after_kill`          | open + first read of 1M entries after SIGKILL, redb and foyer beside us |
//! | `file_get_larger_than_memory`        | random reads of a cold 800 MB store from a process in a 128 MiB memory cgroup (`larger_than_memory.rs`; root) |
//!
//! Values are copied out on both sides (`Vec<u8>`). Durability is comparable, and weak on both
//! sides: writes use `Durability::None` for the `FileStore` and `redb::Durability::None` on every
//! write transaction. The `FileStore` fsyncs a sealed segment later, from its compactor or at
//! `close`, outside the timed writes (as redb's `None` commits leave their data unsynced): neither
//! side's `file_set_*` figure holds an fsync. Before reads, both are made
//! durable (`flush`, an `Immediate` commit). Everything runs against a warm page cache in a
//! temporary directory on the current disk (`UNO_BENCH_DIR` picks another parent directory).
//!
//! `UNO_BENCH_CLOCK=cpu` measures the benchmarking thread's on-CPU time instead of wall time,
//! which other processes on a busy machine disturb much less (the two-thread line stays wall
//! time).
//!
//! Run: `cargo bench --bench file_store` (full: 7 repetitions, a few minutes) or
//! `UNO_BENCH_QUICK=1 cargo bench --bench file_store` / `cargo bench --bench file_store -- --quick`
//! (3 repetitions, well under a minute). Further arguments after `--` that do not start with `-`
//! select lines by substring (`set`, `get`, `mixed`, `reopen`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss
)]

use std::error::Error;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::{Database, ReadableDatabase, TableDefinition};
use uno_cache::{Durability, FileStore, FileStoreOptions, RecoveryReport};

#[path = "shared/stats.rs"]
mod stats;
use stats::median;

#[path = "file_store/rss_reopen.rs"]
mod rss_reopen;

#[path = "file_store/larger_than_memory.rs"]
mod larger_than_memory;

#[path = "../tests/support/cgroup.rs"]
mod cgroup;

type BenchResult<T = ()> = Result<T, Box<dyn Error>>;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
/// Keys per redb write transaction in the "batched" lines (and per `set_many` on our side).
const BATCH: usize = 1000;

struct Config {
    /// Repetitions per comparison; the median is reported.
    reps: usize,
    /// Keys written and then read (1 KiB values).
    keys: usize,
    /// Operations per repetition of the read and mixed tests.
    ops: usize,
    /// Entries in the reopen test (16-byte keys, 32-byte values).
    reopen_entries: usize,
    /// Repetitions of each reopen measurement.
    reopen_reps: usize,
    filters: Vec<String>,
    parent: Option<PathBuf>,
    /// Measure the benchmarking thread's on-CPU time instead of wall time (`UNO_BENCH_CLOCK=cpu`).
    cpu_clock: bool,
}

/// Wall time, or the calling thread's on-CPU time (user + system, from
/// `/proc/thread-self/schedstat`), which a busy machine disturbs much less: time spent waiting
/// for a core does not count. It leaves out time blocked in I/O (fsync), so write figures
/// measured this way are CPU costs, not latencies.
enum Stopwatch {
    Wall(Instant),
    Cpu(u64),
}

impl Stopwatch {
    fn secs(&self) -> f64 {
        match self {
            Stopwatch::Wall(start) => start.elapsed().as_secs_f64(),
            Stopwatch::Cpu(start) => (thread_cpu_ns() - start) as f64 / 1e9,
        }
    }
}

fn thread_cpu_ns() -> u64 {
    let stat =
        std::fs::read_to_string("/proc/thread-self/schedstat").expect("read /proc/thread-self/schedstat");
    stat.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .expect("parse /proc/thread-self/schedstat")
}

impl Config {
    fn from_env() -> Config {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let quick = stats::quick();
        let filters = args.into_iter().filter(|a| !a.starts_with('-')).collect();
        let parent = std::env::var_os("UNO_BENCH_DIR").map(PathBuf::from);
        let cpu_clock = std::env::var("UNO_BENCH_CLOCK").is_ok_and(|v| v == "cpu");
        if quick {
            Config {
                reps: 3,
                keys: 100_000,
                ops: 100_000,
                reopen_entries: 1_000_000,
                reopen_reps: 3,
                filters,
                parent,
                cpu_clock,
            }
        } else {
            Config {
                reps: 7,
                keys: 100_000,
                ops: 300_000,
                reopen_entries: 1_000_000,
                reopen_reps: 7,
                filters,
                parent,
                cpu_clock,
            }
        }
    }

    fn selected(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    fn stopwatch(&self) -> Stopwatch {
        if self.cpu_clock {
            Stopwatch::Cpu(thread_cpu_ns())
        } else {
            Stopwatch::Wall(Instant::now())
        }
    }

    fn any_selected(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.selected(n))
    }

    fn tempdir(&self) -> BenchResult<tempfile::TempDir> {
        let dir = match &self.parent {
            Some(parent) => tempfile::Builder::new().prefix("uno-bench").tempdir_in(parent)?,
            None => tempfile::Builder::new().prefix("uno-bench").tempdir()?,
        };
        Ok(dir)
    }
}

fn list(values: &[f64], fmt: fn(f64) -> String) -> String {
    values.iter().map(|&v| fmt(v)).collect::<Vec<_>>().join(" ")
}

/// Two decimals, or two significant digits below 0.1 (so a tiny ratio does not print as 0.00).
fn ratio(v: f64) -> String {
    if v >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.1e}")
    }
}

fn sci(v: f64) -> String {
    format!("{v:.2e}")
}

fn ms(v: f64) -> String {
    format!("{:.1}", v * 1e3)
}

/// Medians of every comparison run so far (name, ours, ratio), for the summary of aims.
static RESULTS: Mutex<Vec<(String, f64, f64)>> = Mutex::new(Vec::new());

fn record(name: &str, ours: f64, ratio: f64) {
    RESULTS.lock().unwrap().push((name.to_owned(), ours, ratio));
}

/// Prints how the medians compare with the aims of the benchmark issues: set >= 5x redb,
/// get >= 2x redb, reopen of 1M entries < 1 s; RSS per entry <= 64 B and reopen after SIGKILL
/// <= 250 ms (issue 10).
fn print_aims() {
    let results = RESULTS.lock().unwrap();
    let find = |name: &str| results.iter().find(|(n, ..)| n == name);
    let verdict = |met: bool| if met { "met" } else { "MISSED" };
    if let Some((_, _, r)) = find("file_set_seq_1k") {
        println!(
            "# aim file_set_seq_1k ratio >= 5: {} ({})",
            ratio(*r),
            verdict(*r >= 5.0)
        );
    }
    if let Some((_, _, r)) = find("file_get_hit") {
        println!(
            "# aim file_get_hit ratio >= 2: {} ({})",
            ratio(*r),
            verdict(*r >= 2.0)
        );
    }
    for name in ["file_rss_per_entry_16b", "file_rss_per_entry_64b"] {
        if let Some((_, bytes, _)) = find(name) {
            println!("# aim {name} <= 64 B: {bytes:.1} B ({})", verdict(*bytes <= 64.0));
        }
    }
    if let Some((_, secs, _)) = find("file_reopen_1m_after_kill") {
        println!(
            "# aim file_reopen_1m_after_kill <= 250 ms: {:.1} ms ({})",
            secs * 1e3,
            verdict(*secs <= 0.25)
        );
    }
    for name in ["file_reopen_1m_hints", "file_reopen_1m_scan"] {
        if let Some((_, secs, _)) = find(name) {
            println!(
                "# aim {name} < 1000 ms: {:.1} ms ({})",
                secs * 1e3,
                verdict(*secs < 1.0)
            );
        }
    }
}

/// Prints a throughput comparison (ops/s, higher is better).
fn report_rate(name: &str, ours: &[f64], redb: &[f64]) {
    println!(
        "# {name}: ours ops/s [{}] redb ops/s [{}]",
        list(ours, sci),
        list(redb, sci)
    );
    let (o, r) = (median(ours), median(redb));
    println!(
        "bench: {name} ours={o:.1e} ops/s redb={r:.1e} ops/s ratio={}",
        ratio(o / r)
    );
    record(name, o, o / r);
}

/// Prints a time comparison (seconds in, ms out; lower is better, so ratio = redb / ours).
fn report_time(name: &str, ours: &[f64], redb: &[f64]) {
    println!(
        "# {name}: ours ms [{}] redb ms [{}]",
        list(ours, ms),
        list(redb, ms)
    );
    let (o, r) = (median(ours), median(redb));
    println!(
        "bench: {name} ours={:.1} ms redb={:.1} ms ratio={}",
        o * 1e3,
        r * 1e3,
        ratio(r / o)
    );
    record(name, o, r / o);
}

fn key(i: usize) -> String {
    // 16 bytes: "k" + 15 digits.
    format!("k{i:015}")
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i.wrapping_mul(31).wrapping_add(j) % 251) as u8)
        .collect()
}

fn our_options() -> FileStoreOptions {
    FileStoreOptions::default().durability(Durability::None)
}

fn open_ours(dir: &Path) -> BenchResult<FileStore> {
    Ok(FileStore::open(dir, our_options())?)
}

fn redb_path(dir: &Path) -> PathBuf {
    dir.join("bench.redb")
}

fn redb_insert_one(db: &Database, key: &str, value: &[u8]) -> BenchResult {
    let mut txn = db.begin_write()?;
    txn.set_durability(redb::Durability::None)?;
    {
        let mut table = txn.open_table(TABLE)?;
        table.insert(key, value)?;
    }
    txn.commit()?;
    Ok(())
}

fn redb_insert_batch(
    db: &Database,
    items: &[(String, Vec<u8>)],
    durability: redb::Durability,
) -> BenchResult {
    let mut txn = db.begin_write()?;
    txn.set_durability(durability)?;
    {
        let mut table = txn.open_table(TABLE)?;
        for (k, v) in items {
            table.insert(k.as_str(), v.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// An empty durable commit: makes every earlier non-durable commit durable.
fn redb_make_durable(db: &Database) -> BenchResult {
    let txn = db.begin_write()?;
    txn.commit()?;
    Ok(())
}

/// What a cache user does per read: one read transaction, one lookup, an owned copy.
fn redb_get(db: &Database, key: &str) -> BenchResult<Option<Vec<u8>>> {
    let txn = db.begin_read()?;
    let table = txn.open_table(TABLE)?;
    Ok(table.get(key)?.map(|v| v.value().to_vec()))
}

fn items(n: usize, value_len: usize) -> Vec<(String, Vec<u8>)> {
    (0..n).map(|i| (key(i), value(i, value_len))).collect()
}

/// Sequential set of `keys` 1 KiB values into a fresh store, one write per call/transaction,
/// then the same with batches of `BATCH`.
fn bench_set(cfg: &Config) -> BenchResult {
    let data = items(cfg.keys, 1024);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let (mut ours_batch, mut theirs_batch) = (Vec::new(), Vec::new());
    let (single, batched) = (
        cfg.selected("file_set_seq_1k"),
        cfg.selected("file_set_seq_1k_batch1000"),
    );
    for _ in 0..cfg.reps {
        if single {
            ours.push(set_ours(cfg, &data, 1)?);
            theirs.push(set_redb(cfg, &data, 1)?);
        }
        if batched {
            ours_batch.push(set_ours(cfg, &data, BATCH)?);
            theirs_batch.push(set_redb(cfg, &data, BATCH)?);
        }
    }
    if single {
        report_rate("file_set_seq_1k", &ours, &theirs);
    }
    if batched {
        report_rate("file_set_seq_1k_batch1000", &ours_batch, &theirs_batch);
    }
    Ok(())
}

/// Writes `data` into a fresh `FileStore`, `batch` keys per call (`set` for 1, else `set_many`);
/// returns ops/s.
fn set_ours(cfg: &Config, data: &[(String, Vec<u8>)], batch: usize) -> BenchResult<f64> {
    let dir = cfg.tempdir()?;
    let store = open_ours(dir.path())?;
    let start = cfg.stopwatch();
    if batch == 1 {
        for (k, v) in data {
            store.set(k, v, None)?;
        }
    } else {
        for chunk in data.chunks(batch) {
            let refs: Vec<(&str, &[u8])> = chunk.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            store.set_many(&refs, None)?;
        }
    }
    let rate = data.len() as f64 / start.secs();
    assert_eq!(store.stats().live_items, data.len() as u64);
    store.close()?;
    Ok(rate)
}

/// Writes `data` into a fresh redb database, `batch` keys per write transaction (durability
/// `None`); returns ops/s.
fn set_redb(cfg: &Config, data: &[(String, Vec<u8>)], batch: usize) -> BenchResult<f64> {
    let dir = cfg.tempdir()?;
    let db = Database::create(redb_path(dir.path()))?;
    let start = cfg.stopwatch();
    if batch == 1 {
        for (k, v) in data {
            redb_insert_one(&db, k, v)?;
        }
    } else {
        for chunk in data.chunks(batch) {
            redb_insert_batch(&db, chunk, redb::Durability::None)?;
        }
    }
    let rate = data.len() as f64 / start.secs();
    assert!(redb_get(&db, &data[data.len() / 2].0)?.is_some());
    Ok(rate)
}

/// Random reads of existing keys, single thread and two threads, then a 90/10 get/set mix, on
/// one store of `keys` 1 KiB values per side.
fn bench_get_and_mixed(cfg: &Config) -> BenchResult {
    let data = items(cfg.keys, 1024);
    let our_dir = cfg.tempdir()?;
    let their_dir = cfg.tempdir()?;
    let store = open_ours(our_dir.path())?;
    let db = Database::create(redb_path(their_dir.path()))?;
    for chunk in data.chunks(BATCH) {
        let refs: Vec<(&str, &[u8])> = chunk.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        store.set_many(&refs, None)?;
        redb_insert_batch(&db, chunk, redb::Durability::None)?;
    }
    store.flush()?;
    redb_make_durable(&db)?;

    let mut rng = StdRng::seed_from_u64(0x5eed);
    let picks: Vec<usize> = (0..cfg.ops).map(|_| rng.random_range(0..cfg.keys)).collect();
    // Copies laid out in pick order: a caller's key is usually hot in its CPU cache (it was just
    // built), so the lookup key itself should not cost a cache miss on either side.
    let owned: Vec<String> = picks.iter().map(|&i| data[i].0.clone()).collect();
    let keys: Vec<&str> = owned.iter().map(String::as_str).collect();

    if cfg.selected("file_get_hit") {
        let (mut ours, mut theirs, mut theirs_txn) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cfg.reps {
            let start = cfg.stopwatch();
            for k in &keys {
                let v = store.get(k)?;
                assert!(black_box(v).is_some());
            }
            ours.push(keys.len() as f64 / start.secs());

            let start = cfg.stopwatch();
            for k in &keys {
                let v = redb_get(&db, k)?;
                assert!(black_box(v).is_some());
            }
            theirs.push(keys.len() as f64 / start.secs());

            // redb's best case: one read transaction for the whole run (a cache cannot do this
            // for long: it would not see later writes and would pin old pages).
            let start = cfg.stopwatch();
            {
                let txn = db.begin_read()?;
                let table = txn.open_table(TABLE)?;
                for k in &keys {
                    let v = table.get(*k)?.map(|v| v.value().to_vec());
                    assert!(black_box(v).is_some());
                }
            }
            theirs_txn.push(keys.len() as f64 / start.secs());
        }
        report_rate("file_get_hit", &ours, &theirs);
        report_rate("file_get_hit_vs_redb_one_read_txn", &ours, &theirs_txn);
    }

    if cfg.selected("file_get_hit_2threads") {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let halves: Vec<&[&str]> = keys.chunks(keys.len().div_ceil(2)).collect();
        for _ in 0..cfg.reps {
            ours.push(two_threads(&halves, |k| Ok(store.get(k)?))?);
            theirs.push(two_threads(&halves, |k| redb_get(&db, k))?);
        }
        report_rate("file_get_hit_2threads", &ours, &theirs);
    }

    if cfg.selected("file_get_hit_full") {
        bench_get_full(cfg, &data, &store, &db)?;
    }

    if cfg.selected("file_mixed_90_10") {
        let new_value = value(7, 1024);
        let writes: Vec<bool> = (0..cfg.ops).map(|_| rng.random_bool(0.1)).collect();
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..cfg.reps {
            let start = cfg.stopwatch();
            for (k, &write) in keys.iter().zip(&writes) {
                if write {
                    store.set(k, &new_value, None)?;
                } else {
                    assert!(black_box(store.get(k)?).is_some());
                }
            }
            ours.push(keys.len() as f64 / start.secs());

            let start = cfg.stopwatch();
            for (k, &write) in keys.iter().zip(&writes) {
                if write {
                    redb_insert_one(&db, k, &new_value)?;
                } else {
                    assert!(black_box(redb_get(&db, k)?).is_some());
                }
            }
            theirs.push(keys.len() as f64 / start.secs());
        }
        report_rate("file_mixed_90_10", &ours, &theirs);
    }
    store.close()?;
    drop(db);
    if cfg.selected("file_get_cold") {
        bench_get_cold(cfg, our_dir.path(), their_dir.path(), &keys)?;
    }
    Ok(())
}

/// Random gets of stores whose files are out of the page cache (each side reopened, its files
/// dropped from the cache with `POSIX_FADV_DONTNEED`: a restart after other work pushed them out,
/// a store larger than RAM). What a get costs here is mostly the pages it reads: ours the
/// kernel's read-around of the record's page through the segment's map (the device's readahead
/// window, which warms the rest of a store this small as it goes), redb its B-tree path's
/// through its own reads and cache. Wall time whatever `UNO_BENCH_CLOCK` says: the reads' waits
/// are the figure.
fn bench_get_cold(cfg: &Config, our_dir: &Path, their_dir: &Path, keys: &[&str]) -> BenchResult {
    let keys = &keys[..keys.len().min(COLD_OPS)];
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..cfg.reps {
        drop_from_page_cache(our_dir)?;
        let store = open_ours(our_dir)?;
        let start = Stopwatch::Wall(Instant::now());
        for k in keys {
            assert!(black_box(store.get(k)?).is_some());
        }
        ours.push(keys.len() as f64 / start.secs());
        store.close()?;

        drop_from_page_cache(their_dir)?;
        let db = Database::open(redb_path(their_dir))?;
        let start = Stopwatch::Wall(Instant::now());
        for k in keys {
            assert!(black_box(redb_get(&db, k)?).is_some());
        }
        theirs.push(keys.len() as f64 / start.secs());
    }
    report_rate("file_get_cold", &ours, &theirs);
    Ok(())
}

/// Gets per repetition of `file_get_cold`: a tenth of the keys, so that most find their page
/// still on the disk.
const COLD_OPS: usize = 10_000;

/// Drops every file under `dir` from the page cache (clean pages no process maps).
fn drop_from_page_cache(dir: &Path) -> BenchResult {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            let file = std::fs::File::open(&path)?;
            file.sync_all()?;
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)?;
        }
    }
    Ok(())
}

/// Reads of a store at its bound, whose fill admission counts every read once it is full (one
/// compare-and-swap in a sketch), against the same reads of `unbounded` (which never counts)
/// and of redb: what admission costs a hit.
fn bench_get_full(
    cfg: &Config,
    data: &[(String, Vec<u8>)],
    unbounded: &FileStore,
    db: &Database,
) -> BenchResult {
    const MAX_MB: u64 = 80;
    let dir = cfg.tempdir()?;
    let full = FileStore::open(dir.path(), our_options().max_size_mb(MAX_MB))?;
    for chunk in data.chunks(BATCH) {
        let refs: Vec<(&str, &[u8])> = chunk.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
        full.set_many(&refs, None)?;
    }
    assert!(full.stats().evictions > 0, "the data is larger than {MAX_MB} MiB");
    // Fills into the full store until one makes it evict: a fill evicts only after admission
    // weighed it against a victim, which starts the read counts (see `admission.rs`).
    let fresh = value(1, 1024);
    let evictions = full.stats().evictions;
    let mut fills = 0;
    while full.stats().evictions == evictions {
        assert!(fills < 100_000, "a fill into a store at its bound evicts");
        full.fill(&format!("fill{fills}"), &fresh, None)?;
        fills += 1;
    }
    full.flush()?;
    let mut resident = full.keys();
    resident.retain(|k| !k.starts_with("fill"));
    resident.sort();
    let mut rng = StdRng::seed_from_u64(0xf111);
    let owned: Vec<String> = (0..cfg.ops)
        .map(|_| resident[rng.random_range(0..resident.len())].clone())
        .collect();
    let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
    let (mut ours, mut ours_unbounded, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cfg.reps {
        let start = cfg.stopwatch();
        for k in &keys {
            assert!(black_box(full.get(k)?).is_some());
        }
        ours.push(keys.len() as f64 / start.secs());

        let start = cfg.stopwatch();
        for k in &keys {
            assert!(black_box(unbounded.get(k)?).is_some());
        }
        ours_unbounded.push(keys.len() as f64 / start.secs());

        let start = cfg.stopwatch();
        for k in &keys {
            assert!(black_box(redb_get(db, k)?).is_some());
        }
        theirs.push(keys.len() as f64 / start.secs());
    }
    report_rate("file_get_hit_full", &ours, &theirs);
    let (o, u) = (median(&ours), median(&ours_unbounded));
    println!(
        "# file_get_hit_full: {} resident of {} keys; full store {o:.2e} ops/s, unbounded store {u:.2e} ops/s: counting costs a hit {:.1}%",
        resident.len(),
        data.len(),
        (u / o - 1.0) * 100.0
    );
    full.close()?;
    Ok(())
}

/// Runs `get` over both halves on two threads started together; returns total ops/s.
fn two_threads<F>(halves: &[&[&str]], get: F) -> BenchResult<f64>
where
    F: Fn(&str) -> BenchResult<Option<Vec<u8>>> + Sync,
{
    let barrier = Barrier::new(halves.len() + 1);
    let (get, barrier_ref) = (&get, &barrier);
    let elapsed = std::thread::scope(|s| -> BenchResult<Duration> {
        let handles: Vec<_> = halves
            .iter()
            .map(|half| {
                s.spawn(move || -> Result<(), String> {
                    barrier_ref.wait();
                    for k in *half {
                        let v = get(k).map_err(|e| e.to_string())?;
                        if black_box(v).is_none() {
                            return Err(format!("key {k} missing"));
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for h in handles {
            h.join().map_err(|_| "reader thread panicked")??;
        }
        Ok(start.elapsed())
    })?;
    let total: usize = halves.iter().map(|h| h.len()).sum();
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Time to open a store of `reopen_entries` small entries and serve the first read: after a clean
/// close (hint files), after the hint files were deleted (scan path), and redb's open.
fn bench_reopen(cfg: &Config) -> BenchResult {
    let n = cfg.reopen_entries;
    let our_dir = cfg.tempdir()?;
    let their_dir = cfg.tempdir()?;
    {
        let store = open_ours(our_dir.path())?;
        let db = Database::create(redb_path(their_dir.path()))?;
        let mut chunk = Vec::with_capacity(BATCH * 10);
        for start in (0..n).step_by(BATCH * 10) {
            chunk.clear();
            chunk.extend((start..(start + BATCH * 10).min(n)).map(|i| (key(i), value(i, 32))));
            let refs: Vec<(&str, &[u8])> = chunk.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            store.set_many(&refs, None)?;
            redb_insert_batch(&db, &chunk, redb::Durability::None)?;
        }
        redb_make_durable(&db)?;
        store.close()?;
    }
    let probe = key(n / 2);
    // Times open + one read; checks that the store came back whole and by the expected path
    // (every segment from its hint, or every segment scanned).
    let open_ours_timed = |from_hints: bool| -> BenchResult<(f64, RecoveryReport)> {
        let start = cfg.stopwatch();
        let store = open_ours(our_dir.path())?;
        assert!(black_box(store.get(&probe)?).is_some());
        let elapsed = start.secs();
        assert_eq!(store.stats().live_items, n as u64);
        let report = store.recovery_report().clone();
        let expected = if from_hints {
            report.from_hints
        } else {
            report.scanned
        };
        assert_eq!(expected, report.segments, "{report:?}");
        store.close()?;
        Ok((elapsed, report))
    };
    let open_redb_timed = || -> BenchResult<f64> {
        let start = cfg.stopwatch();
        let db = Database::open(redb_path(their_dir.path()))?;
        assert!(black_box(redb_get(&db, &probe)?).is_some());
        let elapsed = start.secs();
        drop(db);
        Ok(elapsed)
    };
    let (mut hints, mut scan, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let mut reports = Vec::new();
    for rep in 0..cfg.reopen_reps {
        let (secs, hint_report) = open_ours_timed(true)?;
        hints.push(secs);
        theirs.push(open_redb_timed()?);
        remove_hints(our_dir.path())?;
        let (secs, scan_report) = open_ours_timed(false)?;
        scan.push(secs);
        if rep == 0 {
            reports = vec![("hints", hint_report), ("scan", scan_report)];
        }
    }
    for (name, r) in reports {
        println!(
            "# file_reopen_1m_{name}: {} segments, {} from hints, {} scanned, {} records",
            r.segments, r.from_hints, r.scanned, r.records
        );
    }
    report_time("file_reopen_1m_hints", &hints, &theirs);
    report_time("file_reopen_1m_scan", &scan, &theirs);
    Ok(())
}

fn remove_hints(dir: &Path) -> BenchResult {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "hint") {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    assert!(removed > 0, "no hint files to remove in {}", dir.display());
    Ok(())
}

fn main() -> BenchResult {
    if rss_reopen::run_child()? || larger_than_memory::run_child()? {
        return Ok(());
    }
    let cfg = Config::from_env();
    let start = Instant::now();
    println!(
        "# uno-cache FileStore vs redb {}: {} reps, {} keys x 1 KiB, {} ops/rep, reopen of {} entries x {} reps, {} time",
        if cfg.reps <= 3 { "(quick)" } else { "(full)" },
        cfg.reps,
        cfg.keys,
        cfg.ops,
        cfg.reopen_entries,
        cfg.reopen_reps,
        if cfg.cpu_clock {
            "on-CPU (2-thread line: wall)"
        } else {
            "wall"
        }
    );
    if cfg.any_selected(&["file_set_seq_1k", "file_set_seq_1k_batch1000"]) {
        bench_set(&cfg)?;
    }
    if cfg.any_selected(&[
        "file_get_hit",
        "file_get_hit_2threads",
        "file_get_hit_full",
        "file_mixed_90_10",
        "file_get_cold",
    ]) {
        bench_get_and_mixed(&cfg)?;
    }
    if cfg.any_selected(&["file_reopen_1m_hints", "file_reopen_1m_scan"]) {
        bench_reopen(&cfg)?;
    }
    if cfg.any_selected(&["file_rss_per_entry_16b", "file_rss_per_entry_64b"]) {
        rss_reopen::bench_rss(&cfg)?;
    }
    if cfg.selected("file_reopen_1m_after_kill") {
        rss_reopen::bench_reopen_after_kill(&cfg)?;
    }
    if cfg.selected("file_get_larger_than_memory") {
        larger_than_memory::bench(&cfg)?;
    }
    print_aims();
    println!("# total {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
