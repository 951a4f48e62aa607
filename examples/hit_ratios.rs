//! Hit ratios of the file tier and the memory tier against `quick_cache`, moka and LRU at the same
//! capacity, on a real trace and on synthetic loops, scans and zipf:
//!
//! ```text
//! cargo run --release --example hit_ratios [TRACE...]
//! ```
//!
//! Each `TRACE` is a decompressed cache2k trace (4-byte big-endian keys, e.g.
//! `xz -dc cache2k_web12.trace.xz > web12.trace`); without one, the web12, web07 and orm-busy
//! slices in `tests/traces/` are used. cache2k traces: Copyright headissue GmbH, Jens Wilke, CC BY 4.0 (see
//! `tests/traces/README.md`). Capacities of a trace are 1%, 10% and 25% of its distinct keys.
//! Every cache is demand-filled (a miss inserts the key); the file tier holds 1 MiB with values
//! sized for the capacity, and the others get the number of entries it really holds. `copies` is
//! the file tier's write amplification: records its evictions re-appended per record written on
//! a miss. `UNO_HIT_RATIO_ONLY=<text>` runs only the rows whose pattern name contains it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "../tests/policy_sim/mod.rs"]
mod policy_sim;

use policy_sim::{
    burst_pattern, compare, distinct, drifting_pattern, loop_mix_pattern, loop_pattern, orm_busy_slice,
    read_cache2k_trace, scan_pattern, shifting_pattern, sliding_loop_pattern, two_loops_pattern, web07_slice,
    web12_slice, zipf_pattern, Row,
};

fn print_row(name: &str, share: &str, row: &Row) {
    println!(
        "| {name:<22} | {share:>5} | {:>6} | {:>6.2} | {:>6.2} | {:>11.2} | {:>6.2} | {:>6.2} | {:>6.2} |",
        row.capacity, row.file, row.memory, row.quick_cache, row.moka, row.lru, row.file_copies
    );
}

fn main() {
    let mut traces: Vec<(String, Vec<u32>)> = std::env::args()
        .skip(1)
        .map(|path| {
            let p = std::path::Path::new(&path);
            let name = p
                .file_stem()
                .map_or(path.clone(), |s| s.to_string_lossy().into_owned());
            (name, read_cache2k_trace(p).expect("readable trace"))
        })
        .collect();
    if traces.is_empty() {
        traces.push(("web12 (slice 30k)".into(), web12_slice()));
        traces.push(("web07 (slice 30k)".into(), web07_slice()));
        traces.push(("orm-busy (slice 60k)".into(), orm_busy_slice()));
    }
    println!(
        "| pattern                | cap % | cap    | file   | memory | quick_cache | moka   | LRU    | copies |"
    );
    println!(
        "|------------------------|-------|--------|--------|--------|-------------|--------|--------|--------|"
    );
    let mut sums = [0.0f64; 5];
    let mut n = 0.0;
    let mut add = |row: &Row| {
        for (s, v) in sums
            .iter_mut()
            .zip([row.file, row.memory, row.quick_cache, row.moka, row.lru])
        {
            *s += v;
        }
        n += 1.0;
    };
    let only = std::env::var("UNO_HIT_RATIO_ONLY").unwrap_or_default();
    traces.retain(|(name, _)| name.contains(&only));
    for (name, trace) in &traces {
        let keys = distinct(trace);
        for pct in [1, 10, 25] {
            let row = compare(trace, (keys * pct / 100).max(8), 1, true, None);
            print_row(name, &format!("{pct}%"), &row);
            add(&row);
        }
    }
    let synthetic: Vec<(&str, Vec<u32>, Vec<usize>)> = vec![
        ("loop 2000 x10", loop_pattern(2_000, 10), vec![1_000, 1_500]),
        ("loop 5000 x6", loop_pattern(5_000, 6), vec![1_000]),
        // The same keys every pass, each pass in a lightly shuffled order: some keys come back
        // sooner than a loop's, and a policy that lets them in turns the log.
        (
            "loop 2000 x10 shuffled",
            sliding_loop_pattern(2_000, 0, 10, 5),
            vec![1_000],
        ),
        (
            "scan 2/3 + hot 500",
            scan_pattern(500, 2.0 / 3.0, 60_000, 7),
            vec![1_000],
        ),
        (
            "scan 1/2 + hot 800",
            scan_pattern(800, 0.5, 60_000, 8),
            vec![1_000],
        ),
        (
            "zipf 0.99 10k keys",
            zipf_pattern(10_000, 0.99, 100_000, 9),
            vec![500, 2_000],
        ),
        (
            "zipf 0.7 10k keys",
            zipf_pattern(10_000, 0.7, 100_000, 10),
            vec![1_000],
        ),
        (
            "loop 3000 + hot 300",
            loop_mix_pattern(3_000, 300, 0.3, 100_000, 11),
            vec![1_000],
        ),
        // Nothing to hit: what the policy costs in copies when nothing pays them back.
        ("one-off keys only", (0..60_000).collect(), vec![1_000]),
        (
            "shifting zipf 2000 x4",
            shifting_pattern(2_000, 0.8, 25_000, 4, 12),
            vec![500, 1_000],
        ),
        (
            "drifting zipf 10k",
            drifting_pattern(10_000, 0.9, 200_000, 20, 13),
            vec![500, 1_000],
        ),
        (
            "2 loops + zipf 5k",
            two_loops_pattern(1_500, 4_000, 5_000, 150_000, 14),
            vec![1_000, 3_000],
        ),
        // A hot set a little larger than the capacity, under a scan.
        (
            "scan 1/3 + hot 1200",
            scan_pattern(1_200, 1.0 / 3.0, 60_000, 15),
            vec![1_000],
        ),
        // Keys read three times within about 20 accesses, then never again (60% of the accesses),
        // among zipf reads: correlated references.
        (
            "bursts 3/20 + zipf 10k",
            burst_pattern(10_000, 0.8, 0.6, 3, 20, 150_000, 21),
            vec![1_000, 2_000],
        ),
        // Three passes from an empty store: what is kept while it fills up.
        ("loop 1500 x3 (cold)", loop_pattern(1_500, 3), vec![1_000]),
        // A working set that slides: every pass 100 of its 900 keys are new.
        (
            "sliding 900 by 100",
            sliding_loop_pattern(900, 100, 60, 3),
            vec![1_000],
        ),
    ];
    for (name, trace, capacities) in synthetic.iter().filter(|(name, ..)| name.contains(&only)) {
        let keys = distinct(trace);
        for &cap in capacities {
            let row = compare(trace, cap, 1, true, None);
            print_row(name, &format!("{}%", cap * 100 / keys), &row);
            add(&row);
        }
    }
    println!(
        "| {:<22} | {:>5} | {:>6} | {:>6.2} | {:>6.2} | {:>11.2} | {:>6.2} | {:>6.2} |        |",
        "average",
        "",
        "",
        sums[0] / n,
        sums[1] / n,
        sums[2] / n,
        sums[3] / n,
        sums[4] / n
    );
}
