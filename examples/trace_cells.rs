//! Hit ratios of the file tier against `quick_cache` and LRU on real traces, each cell (a trace
//! at a share of its keys) run in several processes.
//!
//! ```text
//! cargo run --release --example trace_cells -- [--processes N] [--pcts 0.1,1,5,10,25] [--limit N] TRACE...
//! ```
//!
//! The file tier's policy hashes keys with a per-process seed (its sketch, filters and sampled
//! probes), and on a small trace the draw moves its hit ratio by up to 3 points: one process per
//! cell cannot tell a change of policy from the seed. So each cell runs in `--processes`
//! processes (default 5), and the line gives the median and range of the file tier and of its
//! difference to `quick_cache`. `quick_cache` and LRU do not depend on the seed.
//!
//! A `TRACE` is read by its name:
//! - `*.lis`: an ARC trace (start block, block count, ...; each request is read as its blocks);
//! - `*.txt`: one decimal key per line (the text traces of libCacheSim);
//! - anything else: a cache2k trace (4-byte big-endian keys).
//!
//! `--limit N` keeps the first `N` accesses. Each cell is demand-filled (a miss inserts the key)
//! as in `examples/hit_ratios.rs`, at the capacity the file tier really holds. The file tier
//! writes its files under `TMPDIR`; a tmpfs there makes the run several times faster.
#![allow(clippy::indexing_slicing, missing_docs)]

#[path = "../tests/policy_sim/mod.rs"]
mod policy_sim;

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;

use policy_sim::{compare, distinct, read_cache2k_trace};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

struct Options {
    processes: usize,
    pcts: Vec<f64>,
    limit: usize,
    traces: Vec<PathBuf>,
}

fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
    let mut opts = Options {
        processes: 5,
        pcts: vec![1.0, 5.0, 10.0, 25.0],
        limit: usize::MAX,
        traces: Vec::new(),
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--processes" => opts.processes = value("--processes")?.parse()?,
            "--limit" => opts.limit = value("--limit")?.parse()?,
            "--pcts" => {
                opts.pcts = value("--pcts")?
                    .split(',')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?;
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option {flag}").into()),
            path => opts.traces.push(PathBuf::from(path)),
        }
    }
    if opts.traces.is_empty() {
        return Err("give at least one trace (see the example's docs for the formats)".into());
    }
    if opts.processes == 0 {
        return Err("--processes must be at least 1".into());
    }
    Ok(opts)
}

/// The trace's keys in access order, read by the format its name says.
fn read_trace(path: &Path, limit: usize) -> Result<Vec<u32>> {
    let named = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut keys = Vec::new();
    match path.extension().and_then(|e| e.to_str()) {
        Some("lis") | Some("txt") => {
            let text = std::fs::read_to_string(path).map_err(|e| named(&e))?;
            let mut ids = std::collections::HashMap::new();
            let lis = path.extension().is_some_and(|e| e == "lis");
            for (n, line) in text.lines().enumerate() {
                let mut fields = line.split_whitespace();
                let Some(first) = fields.next() else { continue };
                let start: u64 = first
                    .parse()
                    .map_err(|e| named(&format!("line {}: {e}", n + 1)))?;
                let count: u64 = if lis {
                    let field = fields
                        .next()
                        .ok_or_else(|| named(&format!("line {}: no block count", n + 1)))?;
                    field
                        .parse()
                        .map_err(|e| named(&format!("line {}: {e}", n + 1)))?
                } else {
                    1
                };
                for block in start..start.saturating_add(count) {
                    if keys.len() >= limit {
                        return Ok(keys);
                    }
                    let next = u32::try_from(ids.len()).map_err(|e| named(&e))?;
                    keys.push(*ids.entry(block).or_insert(next));
                }
            }
        }
        _ => {
            keys = read_cache2k_trace(path).map_err(|e| named(&e))?;
            keys.truncate(limit);
        }
    }
    Ok(keys)
}

/// One cell in this process: `capacity file quick_cache lru copies` on one line.
fn child(path: &Path, pct: f64, limit: usize) -> Result<()> {
    let trace = read_trace(path, limit)?;
    // Shares below 1% reach the stores of a few dozen entries a small `max_size_mb` gives.
    let capacity = ((distinct(&trace) as f64 * pct / 100.0) as usize).max(8);
    // 1 MiB, as `examples/hit_ratios.rs` gives the file tier, up to 6,990 entries; past that
    // about 300 bytes per entry, so that the values of a large store stay a few dozen bytes.
    let max_size_mb = ((capacity as u64 * 300) >> 20).max(1);
    let row = compare(&trace, capacity, max_size_mb, false, None);
    println!(
        "{} {} {} {} {}",
        row.capacity, row.file, row.quick_cache, row.lru, row.file_copies
    );
    Ok(())
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--child") {
        let mut next = || args.next().ok_or("--child needs a trace, a share and a limit");
        let _flag = next()?;
        let path = PathBuf::from(next()?);
        let pct = next()?.parse()?;
        let limit = next()?.parse()?;
        if let Err(e) = child(&path, pct, limit) {
            // Printed plain: the parent passes it on as its own error.
            eprintln!("{e}");
            std::process::exit(1);
        }
        return Ok(());
    }
    let opts = parse(args)?;
    let exe = std::env::current_exe()?;
    println!(
        "| trace | cap % | cap | file (median, range) | quick_cache | LRU | file - quick_cache (median, range) | copies |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for path in &opts.traces {
        let name = path
            .file_stem()
            .map_or_else(|| path.display().to_string(), |s| s.to_string_lossy().into());
        for &pct in &opts.pcts {
            let mut rows = Vec::with_capacity(opts.processes);
            for _ in 0..opts.processes {
                let out = Command::new(&exe)
                    .arg("--child")
                    .arg(path)
                    .arg(pct.to_string())
                    .arg(opts.limit.to_string())
                    .output()?;
                if !out.status.success() {
                    let why = String::from_utf8_lossy(&out.stderr);
                    return Err(format!("{name} at {pct}%: {}", why.trim()).into());
                }
                let fields: Vec<f64> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?;
                if fields.len() != 5 {
                    return Err(format!("a child printed {} fields, not 5", fields.len()).into());
                }
                rows.push(fields);
            }
            let mut file: Vec<f64> = rows.iter().map(|r| r[1]).collect();
            let mut diff: Vec<f64> = rows.iter().map(|r| r[1] - r[2]).collect();
            let mut copies: Vec<f64> = rows.iter().map(|r| r[4]).collect();
            for v in [&mut file, &mut diff, &mut copies] {
                v.sort_by(f64::total_cmp);
            }
            let (first, last) = (0, rows.len() - 1);
            println!(
                "| {name} | {pct} | {} | {:.2} ({:.2} to {:.2}) | {:.2} | {:.2} | {:+.2} ({:+.2} to {:+.2}) | {:.2} |",
                rows[0][0],
                median(&file),
                file[first],
                file[last],
                rows[0][2],
                rows[0][3],
                median(&diff),
                diff[first],
                diff[last],
                median(&copies),
            );
        }
    }
    Ok(())
}
