//! `file_get_larger_than_memory`: random gets of a cold store four times larger than the memory
//! its process may use, ours and redb's, each in a child process (this bench binary, re-run with
//! `UNO_BENCH_MEMORY_CHILD`) inside a real memory cgroup of 128 MiB: a container, or a small
//! machine, whose page cache cannot hold the store.
//!
//! Ours opens with the default `MapReads::Auto`, which advises the segment maps for random
//! reads there (the bound is more than half the limit): a get that misses the page cache reads
//! its record's pages. A `#` line gives the same gets with the kernel's read-around
//! (`MapReads::Around`), which reads the device's read-ahead window around each such page (8 MiB
//! on this machine's virtual disk) and loses it to the limit before it is used, and what each
//! side read from the device per get. redb reads its B-tree pages through its own cache, given
//! 16 MiB of the limit (its default is larger than the whole limit).
//!
//! Making a cgroup needs root; without it the line says so and is not printed.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use redb::ReadableDatabase;
use uno_cache::{FileStore, FileStoreOptions, MapReads};

use super::cgroup::MemoryCgroup;
use super::{
    drop_from_page_cache, key, list, median, ratio, record, redb_insert_batch, redb_make_durable, redb_path,
    sci, value, BenchResult, Config, BATCH, TABLE,
};

/// Environment variable that makes the bench binary run one child task of this bench.
const CHILD: &str = "UNO_BENCH_MEMORY_CHILD";
const LIMIT: u64 = 128 << 20;
/// 200k values of 4000 bytes: about 800 MB on each side.
const ENTRIES: usize = 200_000;
const VALUE_LEN: usize = 4000;
const STORE_MB: u64 = 1024;
/// Random gets per child, and with the read-around (about 6 ms each on this machine).
const GETS: usize = 5_000;
const GETS_AROUND: usize = 1_000;
const REDB_CACHE: usize = 16 << 20;

/// Runs the child task named by [`CHILD`], if set: `Ok(true)` when this process was one.
pub fn run_child() -> BenchResult<bool> {
    let Ok(task) = std::env::var(CHILD) else {
        return Ok(false);
    };
    let dir = std::path::PathBuf::from(std::env::var("UNO_BENCH_CHILD_DIR")?);
    let gets = if task == "ours-around" { GETS_AROUND } else { GETS };
    let keys: Vec<String> = random_indices(gets).map(key).collect();
    let (start, read_before) = (Instant::now(), bytes_read()?);
    match task.as_str() {
        "ours" | "ours-around" => {
            let options = FileStoreOptions::default();
            let options = if task == "ours" {
                options
            } else {
                options.map_reads(MapReads::Around)
            };
            let store = FileStore::open(&dir, options)?;
            if store.stats().random_map_reads != (task == "ours") {
                return Err(format!("{task}: random map reads {}", store.stats().random_map_reads).into());
            }
            for k in &keys {
                if store.get(k)?.is_none() {
                    return Err(format!("{task}: {k} missing").into());
                }
            }
        }
        "redb" => {
            let db = redb::Builder::new()
                .set_cache_size(REDB_CACHE)
                .open(redb_path(&dir))?;
            for k in &keys {
                // Copied out as ours is (a `get` returns an owned value), as in the other lines.
                let txn = db.begin_read()?;
                let table = txn.open_table(TABLE)?;
                let value = table.get(k.as_str())?.map(|v| v.value().to_vec());
                if std::hint::black_box(value).is_none() {
                    return Err(format!("redb: {k} missing").into());
                }
            }
        }
        other => return Err(format!("unknown {CHILD} task {other}").into()),
    }
    let secs = start.elapsed().as_secs_f64();
    let read = bytes_read()? - read_before;
    println!("result {} {}", gets as f64 / secs, read / gets as u64);
    Ok(true)
}

/// `n` indices of the stores' keys, spread at random (xorshift: the same in every child).
fn random_indices(n: usize) -> impl Iterator<Item = usize> {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    (0..n).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % ENTRIES as u64) as usize
    })
}

/// Bytes this process read from the device (`read_bytes` of `/proc/self/io`).
fn bytes_read() -> BenchResult<u64> {
    let io = std::fs::read_to_string("/proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("read_bytes:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| "no read_bytes in /proc/self/io".into())
}

/// One child run in a fresh cgroup, the store's files out of the page cache first: (gets per
/// second, bytes read per get).
fn child(task: &str, dir: &Path) -> BenchResult<(f64, f64)> {
    drop_from_page_cache(dir)?;
    let group = MemoryCgroup::new(LIMIT);
    let mut child = group
        .command(&std::env::current_exe()?, &[])
        .env(CHILD, task)
        .env("UNO_BENCH_CHILD_DIR", dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut result = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("result ") {
            let mut parts = rest.split_whitespace().map(str::parse::<f64>);
            if let (Some(Ok(rate)), Some(Ok(per_get))) = (parts.next(), parts.next()) {
                result = Some((rate, per_get));
            }
        }
    }
    let status = child.wait()?;
    if group.oom_kills() > 0 {
        return Err(format!("{task}: killed for memory in a {} MiB cgroup", LIMIT >> 20).into());
    }
    match result {
        Some(result) if status.success() => Ok(result),
        _ => Err(format!("{task}: the child failed ({status})").into()),
    }
}

pub fn bench(cfg: &Config) -> BenchResult {
    if !rustix::process::geteuid().is_root() {
        println!("# file_get_larger_than_memory: not measured: making a memory cgroup needs root");
        return Ok(());
    }
    let ours_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let their_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    {
        let store = FileStore::open(
            ours_dir.path(),
            FileStoreOptions::default()
                .max_size_mb(STORE_MB)
                .durability(uno_cache::Durability::None),
        )?;
        let db = redb::Database::create(redb_path(their_dir.path()))?;
        for start in (0..ENTRIES).step_by(BATCH) {
            let items: Vec<(String, Vec<u8>)> = (start..(start + BATCH).min(ENTRIES))
                .map(|i| (key(i), value(i, VALUE_LEN)))
                .collect();
            let refs: Vec<(&str, &[u8])> = items.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            store.set_many(&refs, None)?;
            redb_insert_batch(&db, &items, redb::Durability::None)?;
        }
        redb_make_durable(&db)?;
        store.close()?;
    }
    let (mut ours, mut around, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_read, mut around_read, mut their_read) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..cfg.reps {
        let (rate, read) = child("ours", ours_dir.path())?;
        ours.push(rate);
        ours_read.push(read);
        let (rate, read) = child("ours-around", ours_dir.path())?;
        around.push(rate);
        around_read.push(read);
        let (rate, read) = child("redb", their_dir.path())?;
        theirs.push(rate);
        their_read.push(read);
    }
    let name = "file_get_larger_than_memory";
    println!(
        "# {name}: ours ops/s [{}] redb ops/s [{}]; ours with the read-around [{}] ops/s",
        list(&ours, sci),
        list(&theirs, sci),
        list(&around, sci)
    );
    println!(
        "# {name}: KiB read from the device per get: ours {:.1}, ours with the read-around {:.1}, redb {:.1}",
        median(&ours_read) / 1024.0,
        median(&around_read) / 1024.0,
        median(&their_read) / 1024.0
    );
    let (o, r) = (median(&ours), median(&theirs));
    println!(
        "bench: {name} ours={o:.1e} ops/s redb={r:.1e} ops/s ratio={} (read-around: {:.1e} ops/s, {} of ours)",
        ratio(o / r),
        median(&around),
        ratio(median(&around) / o)
    );
    record(name, o, o / r);
    Ok(())
}
