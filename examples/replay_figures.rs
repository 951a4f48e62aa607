//! Figures for the replay queue: what a push, a batch and an ack cost (each is `fdatasync`ed), and
//! how long opening a full queue and compacting it take.
//!
//! `cargo run --release --example replay_figures [-- <dir>]` (default: a temporary directory;
//! pass a directory on the disk you care about, since fsync cost is the disk's).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::PathBuf;
use std::time::Instant;

use uno_cache::replay::{Push, ReplayOptions, ReplayQueue};

fn rate(ops: usize, secs: f64) -> String {
    format!(
        "{:.0} ops/s ({:.1} µs/op)",
        ops as f64 / secs,
        secs * 1e6 / ops as f64
    )
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_owned(), PathBuf::from);
    let dir = dir.join("replay-figures");
    let _ = std::fs::remove_dir_all(&dir);
    let value = vec![7u8; 100];

    let q = ReplayQueue::open(&dir, ReplayOptions::default()).unwrap();
    let n = 2_000;
    let t = Instant::now();
    for i in 0..n {
        q.push_set(&format!("key:{i}"), &value, 0).unwrap();
    }
    println!(
        "replay: push_set one at a time (fdatasync each): {}",
        rate(n, t.elapsed().as_secs_f64())
    );

    for threads in [1usize, 4, 16] {
        concurrent_pushes(&dir.join(format!("threads-{threads}")), threads, &value);
    }

    let keys: Vec<String> = (0..200_000).map(|i| format!("batch:{i}")).collect();
    let t = Instant::now();
    for chunk in keys.chunks(100) {
        let batch: Vec<Push<'_>> = chunk
            .iter()
            .map(|k| Push::Set {
                key: k,
                value: &value,
                expires_at_ms: 0,
            })
            .collect();
        q.push_many(&batch).unwrap();
    }
    println!(
        "replay: push_many in batches of 100: {}",
        rate(keys.len(), t.elapsed().as_secs_f64())
    );
    let stats = q.stats();
    println!(
        "replay: {} pending, {} bytes pending, log {} bytes",
        stats.pending, stats.bytes, stats.log_bytes
    );
    drop(q);

    let t = Instant::now();
    let q = ReplayQueue::open(&dir, ReplayOptions::default()).unwrap();
    println!(
        "replay: open with {} pending ({} log bytes): {:.1} ms",
        q.len(),
        q.stats().log_bytes,
        t.elapsed().as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let mut acked = 0;
    loop {
        let ops = q.pending_up_to(100);
        if ops.is_empty() {
            break;
        }
        acked += q.ack_many(&ops).unwrap();
    }
    let stats = q.stats();
    println!(
        "replay: drain with pending_up_to(100) + ack_many: {} ({} compactions, log now {} bytes)",
        rate(acked, t.elapsed().as_secs_f64()),
        stats.compactions,
        stats.log_bytes
    );
}

/// `threads` threads each pushing sets one at a time for a second, as request threads do while
/// L2 is down: throughput, and the median and 99th percentile of a push's latency.
fn concurrent_pushes(dir: &std::path::Path, threads: usize, value: &[u8]) {
    let q = ReplayQueue::open(dir, ReplayOptions::default()).unwrap();
    let run_for = std::time::Duration::from_secs(1);
    let start = Instant::now();
    let mut latencies: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let q = &q;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    let mut i = 0u64;
                    while start.elapsed() < run_for {
                        let at = Instant::now();
                        q.push_set(&format!("t{t}:{i}"), value, 0).unwrap();
                        mine.push(at.elapsed().as_micros() as u64);
                        i += 1;
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "replay: push_set from {threads} threads at once: {:.0} ops/s, latency p50 {} µs, p99 {} µs",
        latencies.len() as f64 / secs,
        at(0.5),
        at(0.99)
    );
}
