//! Hit ratios of the file tier and the memory tier, pinned so that a policy regression fails CI:
//! slices of three real traces (cache2k web12, web07 and orm-busy, Copyright headissue GmbH, Jens
//! Wilke, CC BY 4.0; see `tests/traces/README.md`), loops over 4/3, twice and five times more
//! keys than fit, a hundred passes of one over four times more, a loop mixed with a hot set, a
//! loop met from an empty store, a one-pass scan mixed into a hot set,
//! zipf with its one-hit wonders, working sets that move or slide, popular keys that drift and
//! the extents of a block device among scans, each against `quick_cache` and LRU at the same
//! capacity. Every cache is demand-filled (a miss
//! inserts the key; in the file tier the insert is a fill, which its admission check may
//! refuse). Also the memory tier in front of the file tier, through the manager, with writes.
//! The full table, with moka and more patterns:
//! `cargo run --release --example hit_ratios`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod policy_sim;

use policy_sim::{
    burst_pattern, compare, distinct, drifting_pattern, loop_mix_pattern, loop_pattern, orm_busy_slice,
    scan_pattern, shifting_pattern, sliding_loop_pattern, two_loops_pattern, two_pools_pattern, web07_slice,
    web12_slice, zipf_pattern, Row,
};

fn run(name: &str, trace: &[u32], capacity: usize, seed: u64) -> Row {
    let row = compare(trace, capacity, 1, false, Some(seed));
    eprintln!(
        "{name}: seed {seed} capacity {} file {:.2} memory {:.2} quick_cache {:.2} lru {:.2}",
        row.capacity, row.file, row.memory, row.quick_cache, row.lru
    );
    row
}

/// The hash seeds of the three stores [`run_median`] runs, and of their `quick_cache`s. The
/// same seeds give the same ratios in every run (the file store's
/// [`hash_seed`](uno_cache::FileStoreOptions::hash_seed)), so a failure is the policy's, not the
/// draw's: with random seeds, one CI run in about twenty failed a bound that the median of
/// twenty runs had kept (the sliding window: 68.67 against quick_cache's 72.75). The figures
/// pinned below are those of builds without AES target features (the default on x86-64 and
/// aarch64): with them, aHash hashes otherwise, and the seeds are three other draws.
const SEEDS: [u64; 3] = [1, 2, 3];

/// [`run`] on three stores, one per seed of [`SEEDS`], keeping the row whose file tier is the
/// median. On some patterns a seed in about a hundred costs the file tier a few points (a
/// working set that moves to new keys got 57.2% once in 80 runs, where the others got 61.6 to
/// 62.3, at 500 entries; and before the gate on new keys 72.4 once in 60, where the others got
/// 74.2 to 74.7, at 1,000): the median pins the policy, not one seed. The spread over random
/// seeds is what `examples/hit_ratios.rs` shows, one draw a process.
fn run_median(name: &str, trace: &[u32], capacity: usize) -> Row {
    let mut rows: Vec<Row> = SEEDS
        .iter()
        .map(|&seed| run(name, trace, capacity, seed))
        .collect();
    rows.sort_by(|a, b| a.file.total_cmp(&b.file));
    rows[1]
}

#[test]
fn a_fixed_hash_seed_gives_the_same_ratios_in_every_run() {
    // The loop over 4/3 of the capacity is the pattern the seed moves most: 56.9, 60.1 and 59.0
    // for the three seeds of `SEEDS`.
    let trace = loop_pattern(2_000, 8);
    let first = run("loop 2000 in 1500", &trace, 1_500, 2);
    let again = run("loop 2000 in 1500", &trace, 1_500, 2);
    let other = run("loop 2000 in 1500", &trace, 1_500, 1);
    assert_eq!(
        (first.file.to_bits(), first.quick_cache.to_bits()),
        (again.file.to_bits(), again.quick_cache.to_bits()),
        "one seed, two ratios: file {} and {}, quick_cache {} and {}",
        first.file,
        again.file,
        first.quick_cache,
        again.quick_cache
    );
    assert_ne!(
        first.file.to_bits(),
        other.file.to_bits(),
        "two seeds gave the file tier the same {}: is the seed used?",
        first.file
    );
}

/// The memory tier is `quick_cache` inserted as the crate intends: the same hit ratio, give or
/// take the noise of its randomly seeded shard hashing.
fn assert_memory_tier_matches_quick_cache(name: &str, row: &Row) {
    assert!(
        row.memory >= row.quick_cache_like_memory - 1.0,
        "{name}: memory tier {:.2}% fell behind quick_cache {:.2}%",
        row.memory,
        row.quick_cache_like_memory
    );
}

fn assert_near(name: &str, what: &str, got: f64, pinned: f64, tolerance: f64) {
    assert!(
        (got - pinned).abs() <= tolerance,
        "{name}: {what} hit ratio {got:.2}% moved from the pinned {pinned:.2}% by more than {tolerance} points"
    );
}

/// The file tier is at most `points` below `quick_cache` at the same capacity.
fn assert_file_tier_within(name: &str, row: &Row, points: f64) {
    assert!(
        row.file >= row.quick_cache - points,
        "{name}: file tier {:.2}% more than {points} points below quick_cache {:.2}%",
        row.file,
        row.quick_cache
    );
}

#[test]
fn web12_slice_file_and_memory_tiers_hold_their_hit_ratios() {
    let trace = web12_slice();
    let keys = distinct(&trace);
    assert_eq!((trace.len(), keys), (30_000, 7_508));
    for (pct, file_pinned) in [(10, FILE_WEB12_10), (25, FILE_WEB12_25)] {
        let name = format!("web12 slice at {pct}%");
        // The median of three stores: at 10%, one store in sixteen got 56.4, 1.8 points below
        // quick_cache (per-process hash seeds).
        let row = run_median(&name, &trace, keys * pct / 100);
        assert_near(&name, "file tier", row.file, file_pinned, 2.0);
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

/// Each cell of a trace slice, `(share of its distinct keys in percent, the file tier's pinned
/// ratio)`: the file tier within 2 points of its pinned ratio and of `quick_cache`, and the memory
/// tier level with `quick_cache`.
fn slice_holds(trace_name: &str, trace: &[u32], cells: &[(usize, f64)]) {
    let keys = distinct(trace);
    for &(pct, file_pinned) in cells {
        let name = format!("{trace_name} slice at {pct}%");
        let row = run_median(&name, trace, keys * pct / 100);
        assert_near(&name, "file tier", row.file, file_pinned, 2.0);
        assert_file_tier_within(&name, &row, 2.0);
        assert_memory_tier_matches_quick_cache(&name, &row);
    }
}

/// web07 and orm-busy are the traces on which the memory tier once lost up to 7 points to the
/// `quick_cache` it is built on, inserting through `entry()` and its vacant guard (web07 at 1%
/// of its keys, orm-busy at 1%, full traces). The slices keep that loss: through the guard,
/// `quick_cache` got 25.7 instead of 31.0 on web07's at 1%, and 56.2, 61.6 and 64.1 instead
/// of 61.4, 69.2 and 72.4 on orm-busy's at 2%, 5% and 10%.
#[test]
fn web07_slice_file_and_memory_tiers_hold_their_hit_ratios() {
    let trace = web07_slice();
    assert_eq!((trace.len(), distinct(&trace)), (30_000, 12_549));
    slice_holds("web07", &trace, &[(1, FILE_WEB07_1), (10, FILE_WEB07_10)]);
}

/// See [`web07_slice_file_and_memory_tiers_hold_their_hit_ratios`]. The slice is database
/// objects read by an application under load: recency matters more than on the web traces (LRU
/// is ahead of both at these shares). At 1% (107 entries, thirteen of its records to a segment)
/// the file tier's ratio turns on whether the bound holds one record more or less: 50.8 with keys
/// as long as the ones the simulation sizes its values with, 45.8 with the slice's shorter keys
/// (`quick_cache` 51.1), where from 95 to 120 entries the shorter keys do better by up to 1.9
/// points: that cell measures where the bound falls in a segment, and is not pinned.
#[test]
fn orm_busy_slice_file_and_memory_tiers_hold_their_hit_ratios() {
    let trace = orm_busy_slice();
    assert_eq!((trace.len(), distinct(&trace)), (60_000, 10_736));
    slice_holds(
        "orm-busy",
        &trace,
        &[(2, FILE_ORM_BUSY_2), (5, FILE_ORM_BUSY_5), (10, FILE_ORM_BUSY_10)],
    );
}

#[test]
fn a_loop_over_twice_the_capacity_keeps_a_fixed_part_in_both_tiers() {
    let trace = loop_pattern(2_000, 8);
    let row = run_median("loop 2000", &trace, 1_000);
    // LRU hits nothing: every key is evicted just before it comes back.
    assert!(row.lru < 1.0, "LRU {:.2}%", row.lru);
    // With admission the figure depends on the hash seed (see the pins): the median of three.
    assert!(row.file >= FILE_LOOP_FLOOR, "file tier {:.2}%", row.file);
    assert_file_tier_within("loop 2000", &row, 2.0);
    assert_memory_tier_matches_quick_cache("loop 2000", &row);
}

#[test]
fn fills_refused_by_admission_keep_most_of_a_loop_over_four_thirds_of_the_capacity() {
    // Every key of the loop comes back after 2000 accesses, when 1500 fit: each fill that would
    // evict an entry read as often as itself is refused, so the log stops turning and the
    // entries it holds are read on every pass. Writing every fill got 50%. A refused key comes
    // back after 4/3 of the entries of reads, within the window in which a refused fill read
    // again is let in (`src/local/file/refused.rs`), so some of them turn the log: 66 to 68
    // before that rule, 56.7 to 64.2 since (one store each).
    let trace = loop_pattern(2_000, 8);
    let row = run_median("loop 2000 in 1500", &trace, 1_500);
    assert!(row.lru < 1.0, "LRU {:.2}%", row.lru);
    assert!(row.file >= FILE_LOOP_4_3_FLOOR, "file tier {:.2}%", row.file);
    assert!(
        row.file >= row.quick_cache + 1.0,
        "file tier {:.2}% vs quick_cache {:.2}%",
        row.file,
        row.quick_cache
    );
}

#[test]
fn a_loop_over_five_times_the_capacity_keeps_the_file_tier_within_two_points_of_quick_cache() {
    // Longer than the ghosts remember. Admission stops the log once it holds entries the loop
    // reads: a fill whose key was asked for a pass ago is refused against an unread victim, and
    // one the sketch overcounts by a collision needs a second witness against a read one. Before,
    // the log kept turning and only the share of it an eviction copies stayed (11).
    let trace = loop_pattern(5_000, 5);
    let row = run_median("loop 5000", &trace, 1_000);
    assert!(row.lru < 1.0, "LRU {:.2}%", row.lru);
    // From below only: how soon the log stops depends on the hash seed (see the pins).
    assert!(row.file >= FILE_LOOP_5X_FLOOR, "file tier {:.2}%", row.file);
    assert_file_tier_within("loop 5000", &row, 2.0);
}

#[test]
fn a_long_loop_over_four_times_the_capacity_keeps_a_store_full_of_its_keys() {
    // A hundred passes: a key the sketch counts two above its victim now and then (a collision
    // in its word) no longer gets in and turns the log, which would keep only the share of it
    // an eviction copies (see `admission::MARGIN`).
    let trace = loop_pattern(1_000, 100);
    let row = run_median("loop 1000 x100", &trace, 250);
    assert!(row.lru < 1.0, "LRU {:.2}%", row.lru);
    assert!(row.file >= FILE_LONG_LOOP_FLOOR, "file tier {:.2}%", row.file);
}

#[test]
fn a_loop_mixed_with_a_hot_set_keeps_the_hot_set_and_part_of_the_loop() {
    let trace = loop_mix_pattern(3_000, 300, 0.3, 30_000, 11);
    // The median of three stores: one store got 39.5 in sixteen processes, near the floor.
    let row = run_median("loop 3000 + hot 300", &trace, 1_000);
    assert!(
        row.file >= FILE_LOOP_MIX_FLOOR,
        "loop 3000 + hot 300: file tier {:.2}% below {FILE_LOOP_MIX_FLOOR}%",
        row.file
    );
    // 2.25 points behind at the median while an eviction copied three quarters of a segment.
    assert_file_tier_within("loop 3000 + hot 300", &row, 2.0);
    // The hot set alone is 30% of the accesses: the file tier gets it and a part of the loop.
    assert!(
        row.file >= row.lru + 10.0,
        "file tier {:.2}% vs LRU {:.2}%",
        row.file,
        row.lru
    );
    assert_memory_tier_matches_quick_cache("loop 3000 + hot 300", &row);
}

#[test]
fn a_scan_mixed_into_a_hot_set_does_not_flush_it_from_either_tier() {
    let trace = scan_pattern(500, 2.0 / 3.0, 30_000, 7);
    // The median of three stores: one store in ten or so gets 28.4-28.7 (per-process hash seeds).
    let row = run_median("scan", &trace, 1_000);
    // The hot third of the accesses is what a policy can hit; LRU lets the scan flush it.
    assert!(row.lru < 20.0, "LRU {:.2}%", row.lru);
    assert_near("scan", "file tier", row.file, FILE_SCAN, 2.0);
    assert_file_tier_within("scan", &row, 2.0);
    assert_memory_tier_matches_quick_cache("scan", &row);
}

#[test]
fn a_scan_into_a_hot_set_larger_than_the_capacity_is_kept_out_by_the_gate_on_new_keys() {
    // The hot set does not fit: its misses keep the log turning, and the room each eviction
    // frees went to the scan's one-off keys (46.5% before the gate on new keys, see
    // `src/local/file/fillgate.rs`; 51.3-51.6 while the filters of recent fills took 8.6% of the
    // scan's keys as seen, see `RecentFills`).
    let trace = scan_pattern(1_200, 1.0 / 3.0, 60_000, 15);
    let row = run_median("scan 1/3 + hot 1200", &trace, 1_000);
    assert!(row.lru < 35.0, "LRU {:.2}%", row.lru);
    assert!(
        row.file >= FILE_SCAN_LARGE_HOT_FLOOR,
        "file tier {:.2}%",
        row.file
    );
    assert_file_tier_within("scan 1/3 + hot 1200", &row, 2.0);
    assert_memory_tier_matches_quick_cache("scan 1/3 + hot 1200", &row);
}

#[test]
fn a_hot_pool_as_large_as_a_store_of_a_dozen_records_a_segment_stays_in_it() {
    // 99 entries of 10 KiB, twelve to a segment: an eviction that kept three quarters of a
    // segment (its thirteen sixteenths rounded down to whole records) dropped three hot entries
    // each time, and the file tier fell 4 points behind quick_cache.
    let trace = two_pools_pattern(100, 9_900, 50_000, 21);
    // quick_cache's ratio moves with its seed here (by 4.6 points), the file tier's does not:
    // a floor pins the file tier, where a bound on the difference would pin the seed.
    let row = run_median("two pools", &trace, 99);
    assert!(
        row.file >= FILE_TWO_POOLS_FLOOR,
        "file tier {:.2}% (quick_cache {:.2}%, LRU {:.2}%)",
        row.file,
        row.quick_cache,
        row.lru
    );
}

#[test]
fn zipf_with_one_hit_wonders_keeps_the_file_tier_near_quick_cache() {
    let trace = zipf_pattern(10_000, 0.99, 30_000, 9);
    // One store in twenty got 62.2, 1.9 points below quick_cache: the median pins the policy.
    let row = run_median("zipf 0.99", &trace, 500);
    assert_near("zipf 0.99", "file tier", row.file, FILE_ZIPF, 2.0);
    assert!(
        row.file >= row.quick_cache - 2.0 && row.file >= row.lru + 3.0,
        "file tier {:.2}% vs quick_cache {:.2}% and LRU {:.2}%",
        row.file,
        row.quick_cache,
        row.lru
    );
    assert_memory_tier_matches_quick_cache("zipf 0.99", &row);
}

#[test]
fn a_working_set_that_moves_to_new_keys_keeps_the_file_tier_within_two_points_of_quick_cache() {
    // Each phase reads a new set of keys: the old hot set must give way. Entries kept unread
    // twice in a row lose their protection, and a new key takes the place of one kept unread
    // once (see `policy`); before, the old set stayed for five to six windows of a phase and
    // the file tier was 1.8 to 2.1 points below quick_cache at 1,000 entries.
    let trace = shifting_pattern(2_000, 0.8, 25_000, 4, 12);
    for capacity in [500, 1_000] {
        let name = format!("shifting zipf at {capacity}");
        let row = run_median(&name, &trace, capacity);
        assert_file_tier_within(&name, &row, 2.0);
        assert!(
            row.file >= FILE_SHIFTING_FLOOR[usize::from(capacity > 500)],
            "{name}: file tier {:.2}%",
            row.file
        );
    }
}

#[test]
fn popular_keys_that_drift_are_dropped_once_they_stop_being_read() {
    // The key of each rank changes a little all the time, and a key read most is never read
    // again: entries read three times would stay pass after pass of the log. Kept entries that
    // stopped being read spend their reads while the watched ones are not read again (see
    // `decay`); before, the file tier was 1.6 to 2.1 points below quick_cache and held 63% of
    // keys never read again, where LRU held 7%.
    let trace = drifting_pattern(10_000, 0.9, 100_000, 20, 13);
    let row = run_median("drifting zipf at 500", &trace, 500);
    assert!(
        row.file >= row.quick_cache && row.file >= FILE_DRIFTING_FLOOR,
        "drifting zipf at 500: file tier {:.2}% below quick_cache {:.2}% or the floor",
        row.file,
        row.quick_cache
    );
}

#[test]
fn two_loops_mixed_with_zipf_reads_keep_the_file_tier_within_two_points_of_quick_cache() {
    // Both loops are longer than the capacity: the fills of their keys into the room evictions
    // free go unread before they are evicted, and while they do the gate on seen keys' fills
    // weighs them against the next victim, so a fixed part of the short loop stays (see
    // `src/local/file/fillgate.rs`; before, 1.0 to 2.4 points below quick_cache).
    let trace = two_loops_pattern(1_500, 4_000, 5_000, 100_000, 14);
    let row = run_median("2 loops + zipf at 1000", &trace, 1_000);
    assert!(row.lru < 20.0, "LRU {:.2}%", row.lru);
    assert!(row.file >= FILE_TWO_LOOPS_FLOOR, "file tier {:.2}%", row.file);
    assert_file_tier_within("2 loops + zipf at 1000", &row, 2.0);
}

#[test]
fn bursts_of_reads_to_keys_never_read_again_do_not_keep_them_in_the_file_tier() {
    // Keys read three times within about 20 accesses, then never again, among zipf reads. Reads
    // of a new entry still in the young part of the log do not count (`src/local/file/policy.rs`,
    // correlated reads), so such keys give way at the first eviction that meets them, and the
    // file tier gets more than quick_cache, whose small queue keeps them a little longer. When
    // those reads counted, the file tier trailed quick_cache by 1.6 to 2.7 points here.
    let trace = burst_pattern(10_000, 0.8, 0.6, 3, 20, 60_000, 21);
    let row = run_median("bursts + zipf at 1000", &trace, 1_000);
    assert_memory_tier_matches_quick_cache("bursts + zipf at 1000", &row);
    assert!(row.file >= FILE_BURSTS_FLOOR, "file tier {:.2}%", row.file);
    assert!(
        row.file >= row.quick_cache,
        "file tier {:.2}% below quick_cache {:.2}%",
        row.file,
        row.quick_cache
    );
}

#[test]
fn a_loop_shuffled_every_pass_does_not_turn_the_file_tier_through_keys_that_come_back_early() {
    // Ten passes over 2,000 keys, each pass in a lightly shuffled order, at 1,000 entries. Some
    // keys come back within about what the store holds after their fill was refused, which lets
    // a working set's keys in past every check (`src/local/file/refused.rs`); here each one let
    // in pushed out a kept key of the loop and went unread. The gate on such fills
    // (`src/local/file/fillgate.rs`) closes while they go unread. Before, 36.1 to 36.9 where
    // quick_cache gets 40.3.
    let trace = sliding_loop_pattern(2_000, 0, 10, 5);
    let row = run_median("loop 2000 x10 shuffled", &trace, 1_000);
    assert!(row.lru < 10.0, "LRU {:.2}%", row.lru);
    assert!(row.file >= FILE_SHUFFLED_LOOP_FLOOR, "file tier {:.2}%", row.file);
    assert_file_tier_within("loop 2000 x10 shuffled", &row, 2.0);
}

#[test]
fn a_loop_met_from_an_empty_store_keeps_its_first_keys() {
    // Three passes of a loop over 1.5 times the capacity, from an empty store. What is written
    // while the store fills up starts protected (`src/local/file/policy.rs`, filling up), so
    // the first keys stay and the next passes hit them, as quick_cache's do. When they started
    // probationary, the log turned through the first passes: 38.0 where quick_cache gets 43.7.
    let trace = loop_pattern(1_500, 3);
    let row = run_median("loop 1500 x3 from empty", &trace, 1_000);
    assert!(row.lru < 1.0, "LRU {:.2}%", row.lru);
    assert!(row.file >= FILE_COLD_LOOP_FLOOR, "file tier {:.2}%", row.file);
    assert_file_tier_within("loop 1500 x3 from empty", &row, 2.0);
}

#[test]
fn a_working_set_that_slides_gets_in_and_keeps_the_file_tier_near_quick_cache() {
    // A window of 900 keys (the capacity holds 1,000) read pass after pass, moving on by 100
    // keys a pass. The entries leaving it were read every pass, so a new key's fill loses to
    // them by the sketch; it is let in when it is read again within about what the store holds
    // (`src/local/file/refused.rs`). Before, one store 54.6 to 57.9 (quick_cache 72.2 to 72.4).
    // The log turns faster than the window is read again, so an entry read every pass was met
    // unread at every other eviction and dropped; the sketch's reads now keep it (see
    // `src/local/file/policy.rs`, working sets read less often than the log turns). Before
    // that, the median of three randomly seeded stores 4.1 to 8.2 points below quick_cache (20
    // runs); now 0 to 3.1, 1.7 on average, and 4.1 once in CI. With the fixed seeds, 0.4, and
    // 0.5 ahead since an eviction copies thirteen sixteenths of a segment.
    let trace = sliding_loop_pattern(900, 100, 60, 3);
    let row = run_median("sliding window 900/100", &trace, 1_000);
    assert!(row.lru > 85.0, "LRU {:.2}%", row.lru);
    assert!(row.file >= FILE_SLIDING_FLOOR, "file tier {:.2}%", row.file);
    assert_file_tier_within("sliding window 900/100", &row, 2.0);
}

#[test]
fn a_block_device_keeps_its_read_extents_through_scans_of_new_blocks() {
    // The pattern of the ARC set's block traces (P3, P6 and P12 are not in the repository):
    // extents of 1 to 16 blocks read whole, zipf(0.8) over 1,000 extents, and one request in
    // twenty a scan of 128 blocks never read before. An extent's blocks come and go together,
    // and the scans are one-offs that must not push the working set out.
    let trace = policy_sim::block_pattern(1_000, 16, 0.8, 0.05, 128, 60_000, 11);
    let keys = distinct(&trace);
    for (pct, floor) in [(5, FILE_BLOCKS_FLOOR[0]), (10, FILE_BLOCKS_FLOOR[1])] {
        let name = format!("blocks at {pct}%");
        let row = run_median(&name, &trace, keys * pct / 100);
        assert!(row.file >= floor, "{name}: file tier {:.2}%", row.file);
        assert!(
            row.file >= row.lru + 5.0,
            "{name}: file tier {:.2}% not clearly above LRU {:.2}%",
            row.file,
            row.lru
        );
        assert_file_tier_within(&name, &row, 2.0);
        assert_memory_tier_matches_quick_cache(&name, &row);
    }
}

// Pinned file-tier figures (the same in debug and release, and on any number of cores: the
// policy does not depend on timing, only on the store's hash seed). Since 2026-12-03 the test
// runs the fixed seeds of `SEEDS` and gets the same figures every run (`cargo test --release
// --test hit_ratio -- --nocapture` prints them); the spreads below were measured with random
// seeds, one draw a store, and say how far a seed alone moves a figure. Before the
// policy of `src/local/file/policy.rs` (half a segment of copies, one read bit): web12 57.92 and
// 66.21, loop 22.65, scan 26.25. Before the fillers (unread probationary entries kept in spare
// copy room): loop 29.41; loop over 5x about 5 and the loop with a hot set about 35 (the
// `hit_ratios` example's longer versions of these two traces). Before fills were checked for
// admission (`src/local/file/admission.rs`): web12 59.25 and 67.09, loop 31.89, loop over 4/3
// of the capacity 50.1, loop with a hot set 37.6. With it some figures depend a little on the
// per-process hash seed (its sketch's collisions): over runs, the loop over twice the capacity
// 40.4 to 41.5, over 4/3 of it 62.2 to 62.9, with a hot set 37.6 to 41.2 (21 processes, one of
// them a CI run), web12 at 10% 57.6 to 58.0; the loops are checked from below. With recent
// fills (10 processes): web12 57.3 to 58.0 and 66.5 to 66.6, loop 41.4 to 43.4, over 4/3
// 64.2 to 66.1, scan 30.3 to 30.4, zipf 62.6 to 63.1. With correlated reads not counted (7
// processes, 21 stores): web12 57.3 to 59.0 and 66.2 to 67.4, zipf 62.0 to 63.8.
/// quick_cache: 58.3 and 66.6; LRU: 56.3 and 65.8.
const FILE_WEB12_10: f64 = 58.4;
const FILE_WEB12_25: f64 = 66.9;
/// quick_cache: 30.9 and 45.2; LRU: 29.8 and 43.8. With the seeds of [`SEEDS`] 32.92, 32.97 and
/// 33.00, and 45.34, 45.33 and 45.42 (2026-12-07; at 1%, 30.87, 31.18 and 30.49 while a store
/// of 125 entries held one refused fill in RAM rather than four).
const FILE_WEB07_1: f64 = 33.0;
const FILE_WEB07_10: f64 = 45.3;
/// quick_cache: 61.1 to 61.6, 69.1 to 69.3 and 72.4 to 72.6; LRU: 67.7, 74.1 and 76.4. With the
/// seeds of [`SEEDS`] 62.65, 62.66 and 63.06; 71.20, 71.52 and 71.48; 74.11, 74.36 and 74.46
/// (2026-12-07).
const FILE_ORM_BUSY_2: f64 = 62.7;
const FILE_ORM_BUSY_5: f64 = 71.5;
const FILE_ORM_BUSY_10: f64 = 74.4;
/// quick_cache: 42.7 to 43.9; LRU: 0. The file tier keeps at most thirteen sixteenths of its
/// capacity across an eviction (three quarters when these figures were taken), so a loop over
/// twice the capacity is bound to about that share of quick_cache's if every miss is written; refused fills get it further: the median of
/// three stores 42.8 to 44.2 (15 runs), one store 40.4 to 43.4.
const FILE_LOOP_FLOOR: f64 = 41.5;
/// quick_cache: about 54; LRU: 0. One store 62.2 to 66.1 before refused fills that come back
/// were let in (`src/local/file/refused.rs`), 56.7 to 64.2 since (16 stores), so the test takes
/// the median of three and asks for a point above quick_cache where it asked for three. The
/// median of three 57.7 to 62.1 (15 runs).
const FILE_LOOP_4_3_FLOOR: f64 = 56.5;
/// quick_cache: 15.6; LRU: 0. 11.2 before fills were weighed against recent fills
/// (`admission::RecentFills`); with them 15.4 to 16.1 by the seed (10 processes); since what
/// is written while the store fills up starts protected and refused fills that come back are
/// let in, one store 13.4 to 15.5 (12 stores), so the test takes the median of three.
const FILE_LOOP_5X_FLOOR: f64 = 13.8;
/// quick_cache: 24.55 (a store full of the loop's keys: 25.2); LRU: 0. With the seeds of
/// [`SEEDS`] 22.65, 22.08 and 22.49 while a fill needed two reads more than its victim, 24.54,
/// 24.34 and 24.54 since it needs three.
const FILE_LONG_LOOP_FLOOR: f64 = 24.0;
/// quick_cache: 42.9; LRU: 20.7. Without admission 37.6; with it 37.6 to 41.2 by the seed;
/// with recent fills 40.2 to 41.0 (10 processes); on `8a30da1` one store 39.5 to 42.0 (16).
/// With the seeds of [`SEEDS`], 40.09, 40.80 and 41.46 while an eviction copied three quarters
/// of a segment; 41.15, 42.08 and 41.65 since it copies thirteen sixteenths (quick_cache 43.10,
/// 43.01 and 43.05).
const FILE_LOOP_MIX_FLOOR: f64 = 41.0;
/// quick_cache: 29.0; LRU: 17.1. One store 30.4 to 30.6 mostly, 28.4 to 28.7 in about one
/// process in ten (32 processes and a CI run, 2026-12-01), so the test takes the median of three.
const FILE_SCAN: f64 = 30.45;
/// quick_cache: 53.3 to 53.9; LRU: 33.2. 46.3 to 46.6 before the gate on new keys; with it
/// 51.6 to 51.7 (3 processes of the example); with two bytes per key in the filters of recent
/// fills 52.5 to 52.7 (the median of three stores here 52.4 to 52.7).
const FILE_SCAN_LARGE_HOT_FLOOR: f64 = 51.8;
/// quick_cache: 64.0; LRU: 56.6.
const FILE_ZIPF: f64 = 63.2;
/// quick_cache: 43.6 to 48.2 over [`SEEDS`] (46.4 the median); LRU: 21.7; the best possible
/// about 49.5. The file tier 45.7 to 45.8, and 43.4 to 43.6 while an eviction rounded its copy
/// limit down to whole records (99 entries, twelve to a segment).
const FILE_TWO_POOLS_FLOOR: f64 = 45.0;
/// quick_cache: 63.1 and 75.6; LRU: 58.8 and 76.2. Before entries kept unread lost their
/// protection: 61.2-61.5 and 73.4-73.7; with it 61.9-62.2 and 74.3-74.6 (11 processes). With
/// the decay of reads of entries that stopped being read (see `decay`), one store 61.0-62.1 and
/// 74.4-76.5, the median of three 61.65-61.94 and 75.25-76.08 (6 processes).
const FILE_SHIFTING_FLOOR: [f64; 2] = [61.2, 73.8];
/// quick_cache: 38.3-38.4; LRU: 42.2. Median of three stores 41.3-41.5 (one process); before
/// `decay`, 36.9-37.1.
const FILE_DRIFTING_FLOOR: f64 = 40.0;
/// quick_cache: 31.6 to 31.8; LRU: 18.2. One store 29.5 to 32.1, the median of three 30.6 to 32.0
/// (35 processes), and 30.00 once in CI (2026-12-01: 29.67, 30.00 and 31.59, failing a floor of
/// 30.0); without the gate on seen keys' fills the median 29.6 to 30.4 (3). The floor sits below
/// the single stores seen, so that the median falls under it only on a regression; the check
/// within 2 points of quick_cache binds first.
const FILE_TWO_LOOPS_FLOOR: f64 = 29.5;
/// quick_cache: 49.3-49.5; LRU: 50.8. One store 46.7 to 47.7 (10 processes) while reads in the
/// young part of the log counted; since, 51.2 to 52.7 (7 processes, 21 stores).
const FILE_BURSTS_FLOOR: f64 = 50.5;
/// quick_cache: 43.7; LRU: 0. 45.1 (one process).
const FILE_COLD_LOOP_FLOOR: f64 = 43.0;
/// A loop over twice the capacity shuffled a little every pass: quick_cache about 40.3, LRU
/// 7.3. With the seeds of [`SEEDS`]: 38.68, 39.66 and 39.41 (quick_cache 40.42, 40.47 and
/// 40.36); before refused fills that come back had their gate, 36.1 to 36.9 (one store).
const FILE_SHUFFLED_LOOP_FLOOR: f64 = 38.5;
/// quick_cache: about 72.3; LRU: 87.4. One store 67.6 to 72.6 (60 stores, 70.6 on average),
/// the median of three 69.4 to 72.4 (20 runs). Before unread protected entries were weighed by
/// the sketch's reads, one store 62.2 to 70.7 (60 stores) and the median 64.3 to 68.3 (20
/// runs); 54.6 to 57.9 before refused fills that come back were let in (6 stores). With the
/// seeds of [`SEEDS`]: 72.25, 71.88 and 70.46 (quick_cache 72.44, 72.32 and 72.33); since an
/// eviction copies thirteen sixteenths of a segment rather than three quarters, 72.65, 73.04
/// and 72.87.
const FILE_SLIDING_FLOOR: f64 = 72.0;

/// Hit ratios of the memory tier in front of the file tier, driven through the manager's typed
/// calls, and of what a user would write by hand instead, a `quick_cache` of the same capacity
/// that a read missing it fills and a write updates, on zipf(0.99) reads with one access in ten
/// a write. `prefilled`: the file tier holds every key first, so a read the memory tier misses
/// is a file-tier hit; otherwise the store starts empty and a read that misses everywhere is
/// followed by the caller's own `set` of the value (cache-aside).
fn memory_tier_against_quick_cache(prefilled: bool) -> (f64, f64) {
    let (keys, capacity) = (20_000u32, 1_000usize);
    let trace = zipf_pattern(keys, 0.99, 60_000, 31);
    let dir = tempfile::tempdir().unwrap();
    let config = uno_cache::CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = {:?}\nmemory_items = {capacity}\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let cache = uno_cache::CacheManager::new(config).unwrap();
    if prefilled {
        for key in 0..keys {
            cache.set(&format!("k{key}"), &u64::from(key), None).unwrap();
        }
    }
    let reference = quick_cache::sync::Cache::<u32, u64>::new(capacity);
    let (mut reads, mut reference_hits) = (0u32, 0u32);
    let before = cache.stats().memory.hits;
    for (i, &key) in trace.iter().enumerate() {
        let name = format!("k{key}");
        let value = i as u64;
        if i % 10 == 3 {
            cache.set(&name, &value, None).unwrap();
            reference.insert(key, value);
            continue;
        }
        reads += 1;
        let found = cache.get::<u64>(&name).unwrap().is_some();
        if !found {
            assert!(!prefilled, "{name} is in the file tier");
            cache.set(&name, &value, None).unwrap();
        }
        if reference.get(&key).is_some() {
            reference_hits += 1;
        } else {
            reference.insert(key, value);
        }
    }
    let memory = (cache.stats().memory.hits - before) as f64 * 100.0 / f64::from(reads);
    let quick_cache = f64::from(reference_hits) * 100.0 / f64::from(reads);
    eprintln!(
        "prefilled {prefilled}: memory tier {memory:.2}% quick_cache {quick_cache:.2}% of {reads} reads"
    );
    (memory, quick_cache)
}

/// A write of a key the memory tier holds puts the new value there. When a write only dropped
/// the key, the tier hit 66.1% of reads against quick_cache's 73.2%
/// (`manager_zipf099_90_10_vs_hand_made` in `benches/manager_redis.rs`): a hot key missed once
/// after each write.
#[test]
fn with_writes_the_memory_tier_hits_as_often_as_a_quick_cache_updated_by_writes() {
    let (memory, quick_cache) = memory_tier_against_quick_cache(true);
    assert!(
        memory >= quick_cache - 1.0,
        "memory tier {memory:.2}% fell behind quick_cache updated by writes {quick_cache:.2}%"
    );
}

/// Cache-aside (a read that misses everywhere, then the caller's `set`): the memory tier hits as
/// often as quick_cache filled on misses (66.1% and 66.4%). Noting the miss, so that the `set`
/// leaves its value in the tier, changes the next read's latency, not this ratio (66.2% without:
/// a key read once more soon after entering is rare under zipf); `tests/memory_tier.rs` pins it.
#[test]
fn filled_by_the_callers_set_after_a_miss_the_memory_tier_hits_as_often_as_quick_cache() {
    let (memory, quick_cache) = memory_tier_against_quick_cache(false);
    assert!(
        memory >= quick_cache - 1.0,
        "memory tier {memory:.2}% fell behind quick_cache filled on misses {quick_cache:.2}%"
    );
}
/// Blocks at 5% and 10% of their keys: quick_cache 27.5-27.7 and 32.8-32.9, LRU 19.4 and 27.4.
/// One store 30.0 to 30.9 and 34.4 to 35.8 (12 stores, 2026-12-02).
const FILE_BLOCKS_FLOOR: [f64; 2] = [29.3, 33.8];
