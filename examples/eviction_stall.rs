//! How long a write waits when it makes the file store evict, on the default segment size:
//!
//! ```text
//! cargo run --release --example eviction_stall -- [MAX_MB] [VALUE_BYTES] [DIR]
//! ```
//!
//! Writes distinct keys (values of `VALUE_BYTES`, default 4096) into a store of `MAX_MB` (default
//! 256, so 32 MiB segments) under `Durability::None` until three times the bound went in, and
//! prints the latency percentiles of the writes, the mean of the 20 slowest and how many took
//! over 2 ms. Once the store is full, one write per segment's worth of writes evicts the oldest
//! segment while holding the writer lock: that write waits for the eviction's pass over every
//! entry of the segment and for the kernel to free the file. `DIR` (default a directory under
//! the system's temporary one) should be on the disk being measured, not a tmpfs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_precision_loss,
    clippy::indexing_slicing
)]

use std::time::Instant;

use uno_cache::{Durability, FileStore, FileStoreOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let max_mb: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(256);
    let value_len: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4096);
    let parent = args
        .next()
        .map_or_else(std::env::temp_dir, std::path::PathBuf::from);
    let dir = tempfile::tempdir_in(parent).expect("a temporary directory");
    let options = FileStoreOptions::default()
        .max_size_mb(max_mb)
        .durability(Durability::None);
    let store = FileStore::open(dir.path(), options).expect("open the store");
    let value = vec![7u8; value_len];
    // About 40 bytes of record header and key per value.
    let writes = ((max_mb as usize * 3) << 20) / (value_len + 40);
    let mut latencies_us = Vec::with_capacity(writes);
    for i in 0..writes {
        let key = format!("key-{i}");
        let started = Instant::now();
        store.set(&key, &value, None).expect("set");
        latencies_us.push(started.elapsed().as_micros() as u64);
    }
    let stats = store.stats();
    latencies_us.sort_unstable();
    let at = |q: f64| latencies_us[((latencies_us.len() - 1) as f64 * q) as usize];
    let top20 = latencies_us.iter().rev().take(20).sum::<u64>() / 20;
    let over_2ms = latencies_us.iter().filter(|&&l| l > 2_000).count();
    println!(
        "bench: eviction_stall[{max_mb} MiB, {value_len} B values, {writes} writes, {} entries evicted, {} segment evictions planned ahead] \
         p50={}µs p99={}µs p999={}µs p9999={}µs max={}µs top20_mean={top20}µs over_2ms={over_2ms}",
        stats.evictions,
        stats.planned_evictions,
        at(0.5),
        at(0.99),
        at(0.999),
        at(0.9999),
        at(1.0)
    );
}
