//! A sustained write stream into a small, bounded file store, beside redb doing the same stream:
//! what the files really take on the disk while it runs, how many files stay open, and the worst
//! set latency.
//!
//! The stream: 4 KiB values, keys cycling over a space twice the store's bound (so the store
//! evicts all the time), for a fixed time. Every 100 writes the bench samples:
//! - bytes on disk: the sizes of the files in the store's directory plus the files this process
//!   holds open after they were deleted (`/proc/self/fd`), which `du` does not see but the disk
//!   still holds;
//! - open files: descriptors of this process on files in that directory.
//!
//! Lines (ratio > 1 = uno-cache better; for bytes, files and times it is `redb / ours`):
//!
//! `bench: stream_disk_bytes_max_{durability} ours=… redb=… ratio=…` (bound: `max_size` + one segment)
//! `bench: stream_open_files_max_{durability} ours=… redb=… ratio=…`
//! `bench: stream_set_worst_{durability} ours=…µs redb=…µs ratio=…` (and `_p999`)
//!
//! redb has no size bound: it keeps every key of the stream (twice our bound), so its bytes are
//! the cost of holding the same key space without eviction. Neither side fsyncs every write (our
//! `Durability::None` and the default `Periodic(1 s)`; redb `Durability::None`, with one durable
//! commit in a thousand so that its data reaches its file at all, whose fsync is left out of its
//! latencies, as our flusher's is out of ours). The figures that matter are ours against the
//! bound; redb is there for scale (it holds twice our keys, so its bytes are at least twice).
//!
//! Run: `cargo bench --bench file_store_stream` (5 s per side) or with `UNO_BENCH_QUICK=1` (2 s).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_precision_loss
)]

use std::path::Path;
use std::time::{Duration, Instant};

use redb::{Database, TableDefinition};
use uno_cache::{Durability, FileStore, FileStoreOptions};

#[path = "shared/stats.rs"]
#[allow(dead_code)] // Its quick rule only.
mod stats;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("cache");
const MAX_MB: u64 = 8;
const SEGMENT: u64 = 256 * 1024;
const VALUE: usize = 4096;

#[derive(Default)]
struct Sampled {
    disk_bytes_max: u64,
    open_files_max: u64,
    latencies_ns: Vec<u64>,
    writes: u64,
}

/// Bytes the files under `dir` take, deleted-but-open ones of this process included.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        total += entry.metadata().map_or(0, |m| allocated(&m));
    }
    for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let text = target.to_string_lossy();
        if text.ends_with(" (deleted)") && target.starts_with(dir) {
            total += std::fs::metadata(fd.path()).map_or(0, |m| allocated(&m));
        }
    }
    total
}

/// Bytes allocated on the device (what `du` counts), not the apparent length.
fn allocated(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks() * 512
}

fn open_files(dir: &Path) -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
        .count() as u64
}

/// `set` returns whether its write synced the disk, a cost the other side's writes never pay
/// (redb's one durable commit in a thousand): its latency is not sampled.
fn stream(dir: &Path, run: Duration, mut set: impl FnMut(&str, &[u8]) -> bool) -> Sampled {
    let keys = (2 * MAX_MB * 1024 * 1024 / VALUE as u64) as usize;
    let value = vec![0x5Au8; VALUE];
    let mut sampled = Sampled::default();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < run {
        let key = format!("key-{:08}", i % keys);
        let t = Instant::now();
        if !set(&key, &value) {
            sampled.latencies_ns.push(t.elapsed().as_nanos() as u64);
        }
        i += 1;
        if i.is_multiple_of(100) {
            sampled.disk_bytes_max = sampled.disk_bytes_max.max(disk_bytes(dir));
            sampled.open_files_max = sampled.open_files_max.max(open_files(dir));
        }
    }
    sampled.writes = i as u64;
    sampled.latencies_ns.sort_unstable();
    sampled
}

fn ours(parent: &Path, durability: Durability, run: Duration) -> Sampled {
    let dir = parent.join("ours");
    let store = FileStore::open(
        &dir,
        FileStoreOptions::default()
            .max_size_mb(MAX_MB)
            .segment_size(SEGMENT)
            .durability(durability),
    )
    .unwrap();
    let sampled = stream(&dir, run, |k, v| {
        store.set(k, v, None).unwrap();
        false
    });
    store.close().unwrap();
    sampled
}

fn redb(parent: &Path, run: Duration) -> Sampled {
    let dir = parent.join("redb");
    std::fs::create_dir_all(&dir).unwrap();
    let db = Database::create(dir.join("cache.redb")).unwrap();
    let mut n = 0u64;
    let sampled = stream(&dir, run, |k, v| {
        let mut txn = db.begin_write().unwrap();
        // Non-durable commits stay in redb's memory; one durable commit in a thousand puts the
        // data in its file, as our periodic flush does.
        n += 1;
        let durable = n.is_multiple_of(1000);
        if !durable {
            txn.set_durability(redb::Durability::None).unwrap();
        }
        {
            let mut table = txn.open_table(TABLE).unwrap();
            table.insert(k, v).unwrap();
        }
        txn.commit().unwrap();
        durable
    });
    drop(db);
    sampled
}

/// What each side's latency lines leave out, said in the lines: the two sides sync differently.
const SYNCS: &str = "ours: no fsync in a set, `none` fsyncs sealed segments and `periodic` every 1 s too, in the background; redb: one durable commit in 1000, inline, not sampled";

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ratio(redb: u64, ours: u64) -> f64 {
    redb as f64 / ours.max(1) as f64
}

fn main() {
    let quick = stats::quick();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let run = Duration::from_secs(if quick { 2 } else { 5 });
    let bound = MAX_MB * 1024 * 1024 + SEGMENT;
    let root = tempfile::tempdir().unwrap();
    let theirs = redb(root.path(), run);
    println!(
        "# redb: {} writes in {run:?}, {} bytes on disk at most, {} open files",
        theirs.writes, theirs.disk_bytes_max, theirs.open_files_max
    );
    for (name, durability) in [
        ("none", Durability::None),
        ("periodic", Durability::Periodic(Duration::from_secs(1))),
    ] {
        let dir = root.path().join(name);
        let ours = ours(&dir, durability, run);
        println!(
            "# ours ({name}): {} writes in {run:?}; bound max_size + one segment = {bound} bytes",
            ours.writes
        );
        println!(
            "bench: stream_disk_bytes_max_{name} ours={} redb={} ratio={:.2} within_bound={}",
            ours.disk_bytes_max,
            theirs.disk_bytes_max,
            ratio(theirs.disk_bytes_max, ours.disk_bytes_max),
            ours.disk_bytes_max <= bound
        );
        println!(
            "bench: stream_open_files_max_{name} ours={} redb={} ratio={:.2}",
            ours.open_files_max,
            theirs.open_files_max,
            ratio(theirs.open_files_max, ours.open_files_max)
        );
        let (ow, tw) = (pct(&ours.latencies_ns, 1.0), pct(&theirs.latencies_ns, 1.0));
        println!(
            "bench: stream_set_worst_{name} ours={:.0}µs redb={:.0}µs ratio={:.2} ({SYNCS})",
            ow as f64 / 1e3,
            tw as f64 / 1e3,
            ratio(tw, ow)
        );
        let (op, tp) = (pct(&ours.latencies_ns, 0.999), pct(&theirs.latencies_ns, 0.999));
        println!(
            "bench: stream_set_p999_{name} ours={:.1}µs redb={:.1}µs ratio={:.2} ({SYNCS})",
            op as f64 / 1e3,
            tp as f64 / 1e3,
            ratio(tp, op)
        );
    }
}
