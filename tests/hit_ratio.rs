//! Hit ratios of the file tier and the memory tier, pinned so that a policy regression fails CI:
//! a slice of a real trace (cache2k web12, Copyright headissue GmbH, Jens Wilke, CC BY 4.0; see
//! `tests/traces/README.md`), a loop over more keys than fit, and a one-pass scan mixed into a hot
//! set, each against `quick_cache` and LRU at the same capacity. Every cache is demand-filled (a
//! miss inserts the key). The full table, with moka and more patterns:
//! `cargo run --release --example hit_ratios`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod policy_sim;

use policy_sim::{compare, distinct, loop_pattern, scan_pattern, web12_slice, Row};

fn run(name: &str, trace: &[u32], capacity: usize) -> Row {
    let row = compare(trace, capacity, 1, false);
    eprintln!(
        "{name}: capacity {} file {:.2} memory {:.2} quick_cache {:.2} lru {:.2}",
        row.capacity, row.file, row.memory, row.quick_cache, row.lru
    );
    row
}

/// The memory tier is `quick_cache` inserted as the crate intends: the same hit ratio, give or
/// take the noise of its randomly seeded shard hashing.
fn assert_memory_tier_matches_quick_cache(name: &str, row: &Row) {
    assert!(
        row.memory >= row.quick_cache - 1.0,
        "{name}: memory tier {:.2}% fell behind quick_cache {:.2}%",
        row.memory,
        row.quick_cache
    );
}

fn assert_near(name: &str, what: &str, got: f64, pinned: f64, tolerance: f64) {
    assert!(
        (got - pinned).abs() <= tolerance,
        "{name}: {what} hit ratio {got:.2}% moved from the pinned {pinned:.2}% by more than {tolerance} points"
    );
}

#[test]
fn web12_slice_file_and_memory_tiers_hold_their_hit_ratios() {
    let trace = web12_slice();
    let keys = distinct(&trace);
    assert_eq!((trace.len(), keys), (30_000, 7_508));
    for (pct, file_pinned) in [(10, FILE_WEB12_10), (25, FILE_WEB12_25)] {
        let name = format!("web12 slice at {pct}%");
        let row = run(&name, &trace, keys * pct / 100);
        assert_near(&name, "file tier", row.file, file_pinned, 1.5);
        assert!(
            row.file >= row.quick_cache - 2.0 && row.file >= row.lru - 2.0,
            "{name}: file tier {:.2}% more than 2 points below quick_cache {:.2}% or LRU {:.2}%",
            row.file,
            row.quick_cache,
            row.lru
        );
        assert_memory_tier_matches_quick_cache(&name, &row);
    }
}

#[test]
fn a_loop_over_twice_the_capacity_keeps_a_fixed_part_in_both_tiers() {
    let trace = loop_pattern(2_000, 8);
    let row = run("loop 2000", &trace, 1_000);
    // LRU (and the file tier before it had a protected class) hit nothing.
    assert!(row.lru < 1.0, "LRU {:.2}%", row.lru);
    assert_near("loop 2000", "file tier", row.file, FILE_LOOP, 2.0);
    assert!(row.file >= FILE_LOOP_FLOOR, "file tier {:.2}%", row.file);
    assert_memory_tier_matches_quick_cache("loop 2000", &row);
}

#[test]
fn a_scan_mixed_into_a_hot_set_does_not_flush_it_from_either_tier() {
    let trace = scan_pattern(500, 2.0 / 3.0, 30_000, 7);
    let row = run("scan", &trace, 1_000);
    // The hot third of the accesses is what a policy can hit; LRU lets the scan flush it.
    assert!(row.lru < 20.0, "LRU {:.2}%", row.lru);
    assert_near("scan", "file tier", row.file, FILE_SCAN, 2.0);
    // Before the protected class the file tier was at LRU's level; quick_cache is about 3 above.
    assert!(
        row.file >= row.lru + 6.0,
        "file tier {:.2}% vs LRU {:.2}%",
        row.file,
        row.lru
    );
    assert_memory_tier_matches_quick_cache("scan", &row);
}

// Pinned file-tier figures (the same in debug and release: the policy does not depend on timing,
// only on the ghost filter's per-process hash seed, a few hundredths of a point).
const FILE_WEB12_10: f64 = 57.92;
const FILE_WEB12_25: f64 = 66.21;
/// quick_cache: 42.7; LRU and the file tier before the protected class: 0.
const FILE_LOOP: f64 = 22.65;
const FILE_LOOP_FLOOR: f64 = 15.0;
/// quick_cache: 29.0; LRU: 17.1.
const FILE_SCAN: f64 = 26.25;
