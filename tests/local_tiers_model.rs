//! A model-based random test of the two local tiers (the memory tier of decoded values in front of
//! the file store) through the manager, with no L2: seeded random sequences of the calls users
//! make — typed and raw reads, writes with and without TTLs, deletes, batches, prefix
//! invalidation, `get_or_set_with`, clears, a manual clock moving on, and restarts on the same
//! directory (now and then compacted in between, as `uno-cache compact` would) — checked against a
//! map of what each key holds. The store is small (1 MiB, segments of 64 or 128 KiB) and the memory
//! tier holds 16 values, so evictions, second chances and memory-tier evictions run all the time.
//!
//! A cache may forget but never lie:
//! - a read answers a miss or exactly the key's current value: never an older value, a deleted or
//!   expired one, nor another key's — across restarts too;
//! - a delete, batch delete or prefix invalidation counts no more keys than were there;
//! - within one manager the stats' counters never go backwards, and the file store keeps its
//!   documented bounds (`disk_bytes` ≤ `max_size`, `allocated_bytes` ≤ `max_size` + a segment),
//!   the memory tier its own (`memory_items` values and `memory_max_mb` per value type).
//!
//! A concurrent run gives threads disjoint key ranges (so each one's model is exact) against one
//! manager, while another invalidates prefixes of its own range and now and then clears L1 (which
//! may only make the others miss), and the clock moves under all of them: a read is checked at
//! the time it began, a write's expiry counted from the time it returned.
//!
//! Odd seeds keep expired entries for fail-safe (`loader.fail_safe_max_duration`), which must not
//! make a plain read answer them. Every fourth seed runs with the default durability (periodic
//! fsyncs); the others with none, which clean restarts do not need (power loss is tested
//! elsewhere) and which would take most of the run's time.
//!
//! Checked by breaking the tiers, each caught by the first seed within a few hundred operations: a
//! memory tier that leaves a deleted key in place; a file store that writes no tombstones (the key
//! is back after a restart); one whose index keeps an overwritten value's place now and then; a
//! memory tier, or a file store, that serves a value in the millisecond its TTL ends.
//!
//! With feature `redb` the same run goes through a redb L1, alone and behind the memory tier,
//! with values three times larger (its bound counts only its entries' bytes, and would seldom
//! evict otherwise), the redb store's own bound checked (its entries' bytes, within a bound
//! lowered between runs from the open on) and, between some restarts, a purge of the
//! expired entries by a `RedbStore` opened on the same file in the manager's absence. Every
//! run's reads right after its restarts must find some value (a store that forgot everything
//! at its open would pass the model otherwise). Checked by breaking the redb store, each caught
//! by the first seed, alone or behind the memory tier, within a few hundred operations: a batch
//! delete that skips its last key; a read that serves a value in the millisecond its TTL ends;
//! a prefix listing cut short; eviction that lets the entries pass the bound by a quarter; a
//! store that forgets its entries at open. (A close that skips its durable commit is not: redb
//! makes a pending commit durable when the database is dropped, so a clean restart keeps it.)
//!
//! Knobs: `UNO_MODEL_SEED=n` runs that seed alone; `UNO_MODEL_OPS` the operations per seed (default
//! 2000). A failure names the seed, the operation's index and the operations before it (in the
//! concurrent run, the seed replays each thread's operations but not how they interleaved).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod model;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use model::{env_u64, Keys, Runner, LOCAL_TTL_S, MEMORY_ITEMS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uno_cache::{CacheConfig, CacheManager, CacheStats, FileStore, FileStoreOptions, ManualClock};

/// The L1 a run goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// The file store, behind the memory tier.
    File,
    /// A redb store, behind the memory tier or (`memory: false`) alone.
    #[cfg(feature = "redb")]
    Redb { memory: bool },
}

impl Backend {
    fn kind(self) -> &'static str {
        match self {
            Backend::File => "file",
            #[cfg(feature = "redb")]
            Backend::Redb { .. } => "redb",
        }
    }

    fn memory_items(self) -> u64 {
        match self {
            #[cfg(feature = "redb")]
            Backend::Redb { memory: false } => 0,
            _ => MEMORY_ITEMS,
        }
    }
}

/// `periodic`: the default durability (fsyncs, most of a run's time) rather than none.
fn config(dir: &Path, backend: Backend, fail_safe: bool, periodic: bool, max_mb: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "{}"
        path = "{}"
        max_size = {max_mb}
        ttl = {LOCAL_TTL_S}
        memory_items = {}
        memory_max_mb = 1
        durability = "{}"
        [loader]
        fail_safe_max_duration = {}
        "#,
        backend.kind(),
        dir.display(),
        backend.memory_items(),
        if periodic { "periodic" } else { "none" },
        if fail_safe { 30 } else { 0 }
    ))
    .unwrap()
}

fn open(
    dir: &Path,
    backend: Backend,
    fail_safe: bool,
    periodic: bool,
    max_mb: u64,
    clock: &ManualClock,
) -> CacheManager {
    CacheManager::builder()
        .config(config(dir, backend, fail_safe, periodic, max_mb))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

/// The counters of one manager's stats that only go up.
fn counters(s: &CacheStats) -> Vec<(String, u64)> {
    let mut out = vec![
        ("overall.reads".to_owned(), s.overall.reads),
        ("overall.hits".to_owned(), s.overall.hits),
        ("overall.misses".to_owned(), s.overall.misses),
    ];
    for (name, level) in [("local", &s.local), ("memory", &s.memory), ("file", &s.file)] {
        let fields = [
            ("hits", level.hits),
            ("misses", level.misses),
            ("sets", level.sets),
            ("deletes", level.deletes),
            ("evictions", level.evictions),
            ("expirations", level.expirations),
            ("corrupt_reads", level.corrupt_reads),
            ("errors", level.errors),
        ];
        for (field, v) in fields {
            out.push((format!("{name}.{field}"), v));
        }
    }
    out
}

/// Stats within one manager's life: counters never go back, the L1 stays in its bounds (a
/// bound lowered between runs holds from the open on, for both stores).
fn check_stats(
    runner: &Runner<'_>,
    cache: &CacheManager,
    backend: Backend,
    max_mb: u64,
    before: &mut Option<Vec<(String, u64)>>,
) {
    let stats = cache.stats();
    // Two value types go through the memory tier (`get`'s and `get_arc`'s), each bounded apart.
    let memory = stats.size.memory;
    if memory.items > 2 * backend.memory_items() || memory.bytes > 2 * (1 << 20) {
        runner.fail(format!("memory tier past its bounds: {memory:?}"));
    }
    let now = counters(&stats);
    if let Some(prev) = before.as_ref() {
        for ((name, was), (_, is)) in prev.iter().zip(&now) {
            if is < was {
                runner.fail(format!("stats: {name} went back from {was} to {is}"));
            }
        }
    }
    *before = Some(now);
    let bound = max_mb << 20;
    if backend != Backend::File {
        let bytes = cache.local().size().unwrap().bytes;
        if bytes > bound {
            runner.fail(format!("redb store: {bytes} bytes of entries, bound {bound}"));
        }
        return;
    }
    if cache.monitor().local_file_max_size() != Some(bound) {
        runner.fail(format!(
            "file store: bound {:?}, configured {bound}",
            cache.monitor().local_file_max_size()
        ));
    }
    let file = cache.monitor().local_file_stats().unwrap();
    if file.disk_bytes > bound {
        runner.fail(format!(
            "file store: disk_bytes {} > max_size {bound}",
            file.disk_bytes
        ));
    }
    if file.allocated_bytes > bound + 128 * 1024 {
        runner.fail(format!(
            "file store: allocated_bytes {} > max_size + a segment",
            file.allocated_bytes
        ));
    }
    if file.corrupt_reads + file.recovery_skipped_records != 0 {
        runner.fail(format!("file store found damage: {file:?}"));
    }
}

fn ops() -> usize {
    env_u64("UNO_MODEL_OPS").map_or(2000, |n| n as usize)
}

/// Between runs, what an operator's tool does to the store in the manager's absence: the file
/// store compacted, as `uno-cache compact` does; the redb store's expired entries purged.
fn tidy_between_runs(
    runner: &Runner<'_>,
    dir: &Path,
    backend: Backend,
    fail_safe: bool,
    clock: &ManualClock,
) {
    match backend {
        Backend::File => {
            let options = FileStoreOptions::default()
                .clock(Arc::new(clock.clone()))
                .keep_expired(Duration::from_secs(if fail_safe { 30 } else { 0 }));
            let store = FileStore::open(dir, options).unwrap();
            store
                .compact()
                .unwrap_or_else(|e| runner.fail(format!("compact: {e}")));
            store.close().unwrap();
        }
        #[cfg(feature = "redb")]
        Backend::Redb { .. } => {
            let options = uno_cache::RedbOptions::default().clock(Arc::new(clock.clone()));
            let store = uno_cache::RedbStore::open(dir.join(uno_cache::REDB_FILE_NAME), options).unwrap();
            store
                .purge_expired()
                .unwrap_or_else(|e| runner.fail(format!("purge_expired: {e}")));
        }
    }
}

/// Reads every key, checked against the model; how many answered a value.
fn read_every_key(runner: &Runner<'_>, cache: &CacheManager) -> u64 {
    use model::{Item, Val};
    let began = runner.clock_now();
    let mut hits = 0;
    for (key, typed) in runner.keys.all() {
        let got = if typed {
            cache.get::<Item>(&key).map(|v| v.map(Val::Typed))
        } else {
            cache.get_raw(&key).map(|v| v.map(Val::Raw))
        };
        let got = got.unwrap_or_else(|e| runner.fail(format!("get {key}: {e}")));
        runner.check(&key, began, got.as_ref());
        hits += u64::from(got.is_some());
    }
    hits
}

/// One seed's run: random operations, a restart every 200-ish of them.
fn run_seed(seed: u64, ops: usize, backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // The redb level keeps no expired entries, and so refuses fail-safe's setting.
    let fail_safe = backend == Backend::File && seed % 2 == 1;
    let periodic = seed.is_multiple_of(4);
    // Half the seeds make the directory with the smallest segments first (the manager keeps the
    // segment size a directory recorded): twice the evictions.
    if backend == Backend::File && seed % 4 < 2 {
        let store = FileStore::open(
            dir.path(),
            FileStoreOptions::default().max_size_mb(1).segment_size(64 * 1024),
        )
        .unwrap();
        store.close().unwrap();
    }
    let clock = ManualClock::new(1_700_000_000_000);
    let keys = Keys {
        prefix: String::new(),
        groups: 4,
        per_kind: 40,
    };
    let mut runner = Runner::new(seed, seed, keys, &clock, true);
    if backend != Backend::File {
        // The redb store counts only its entries' bytes against its bound (the file store its
        // segments' too): with values of the usual sizes its bound would seldom evict.
        runner.value_scale = 3;
    }
    let mut max_mb = 1;
    let mut cache = Some(open(dir.path(), backend, fail_safe, periodic, max_mb, &clock));
    let mut stats = None;
    let mut totals = Totals::default();
    for i in 0..ops {
        runner.index = i;
        if runner.rng.random_range(0..200) == 0 {
            let tidy = runner.rng.random_bool(0.5);
            // Now and then the bound changes between runs, as an application's setting does: a
            // store that shrinks evicts at its open.
            max_mb = if runner.rng.random_bool(0.3) { 2 } else { 1 };
            runner.log(format!(
                "restart{} with max_size {max_mb}",
                if tidy { " (compacted or purged)" } else { "" }
            ));
            totals.add(cache.as_ref().unwrap());
            totals.restarts += 1;
            drop(cache.take());
            if tidy {
                tidy_between_runs(&runner, dir.path(), backend, fail_safe, &clock);
            }
            let c = open(dir.path(), backend, fail_safe, periodic, max_mb, &clock);
            // Before any write: a lowered bound holds from the open.
            stats = None;
            check_stats(&runner, &c, backend, max_mb, &mut stats);
            runner.log("read every key after the restart".to_owned());
            totals.restored_hits += read_every_key(&runner, &c);
            cache = Some(c);
            continue;
        }
        if runner.rng.random_range(0..300) == 0 {
            runner.log("clear L1".to_owned());
            cache.as_ref().unwrap().local().clear().unwrap();
            runner.model.map.clear();
            continue;
        }
        let c = cache.as_ref().unwrap();
        runner.step(c);
        if i % 50 == 0 {
            check_stats(&runner, c, backend, max_mb, &mut stats);
        }
    }
    // What the run made the tiers do, to see that it reached evictions.
    totals.add(cache.as_ref().unwrap());
    eprintln!("seed {seed} ({backend:?}): {totals:?}");
    if totals.restarts > 0 && totals.restored_hits == 0 {
        runner.fail(format!(
            "{} restarts, and no value read back after any of them: the L1 forgets at its open",
            totals.restarts
        ));
    }
}

/// Counters summed over the managers of a run (each one's start at zero).
#[derive(Debug, Default)]
struct Totals {
    restarts: u64,
    /// Values read back right after a restart.
    restored_hits: u64,
    l1_evictions: u64,
    l1_expirations: u64,
    second_chances: u64,
    compactions: u64,
    memory_hits: u64,
    memory_evictions: u64,
    hits: u64,
    misses: u64,
}

impl Totals {
    fn add(&mut self, cache: &CacheManager) {
        let s = cache.stats();
        if let Some(file) = cache.monitor().local_file_stats() {
            self.l1_evictions += file.evictions;
            self.l1_expirations += file.expirations;
            self.second_chances += file.second_chances;
            self.compactions += file.compactions;
        } else {
            self.l1_evictions += s.local.evictions;
            self.l1_expirations += s.local.expirations;
        }
        self.memory_hits += s.memory.hits;
        self.memory_evictions += s.memory.evictions;
        self.hits += s.overall.hits;
        self.misses += s.overall.misses;
    }
}

/// Fixed seeds, or `UNO_MODEL_SEED` alone.
fn seeds(fixed: &[u64]) -> Vec<u64> {
    match env_u64("UNO_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => fixed.to_vec(),
    }
}

#[test]
fn random_calls_with_restarts_never_answer_a_value_the_model_does_not_hold() {
    for seed in seeds(&[1, 2, 3, 4]) {
        run_seed(seed, ops(), Backend::File);
    }
}

/// The run above through a redb L1, alone (seed 12, with periodic fsyncs) and behind the memory
/// tier (11 and 13).
#[cfg(feature = "redb")]
#[test]
fn random_calls_with_restarts_through_a_redb_l1_never_answer_a_value_the_model_does_not_hold() {
    // Half the operations of the file store's run: redb's transactions take most of its time.
    let ops = env_u64("UNO_MODEL_OPS").map_or(1000, |n| n as usize);
    for seed in seeds(&[11, 12, 13]) {
        run_seed(
            seed,
            ops,
            Backend::Redb {
                memory: seed % 2 == 1,
            },
        );
    }
}

#[test]
fn threads_on_disjoint_keys_never_read_a_value_their_own_model_does_not_hold() {
    for seed in seeds(&[101]) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let cache = open(dir.path(), Backend::File, false, false, 1, &clock);
        let threads = 3;
        let ops = ops() / 2;
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            let mut workers = Vec::new();
            for t in 0..threads {
                let cache = &cache;
                let clock = &clock;
                workers.push(s.spawn(move || {
                    let keys = Keys {
                        prefix: format!("w{t}:"),
                        groups: 2,
                        per_kind: 16,
                    };
                    // The clock thread below moves the clock.
                    let mut runner = Runner::new(seed, seed * 1000 + t, keys, clock, false);
                    for i in 0..ops {
                        runner.index = i;
                        runner.step(cache);
                    }
                }));
            }
            let cache = &cache;
            let clock = &clock;
            workers.push(s.spawn(move || {
                let keys = Keys {
                    prefix: "p:".to_owned(),
                    groups: 2,
                    per_kind: 16,
                };
                let mut runner = Runner::new(seed, seed * 1000 + 999, keys, clock, false);
                for i in 0..ops {
                    runner.index = i;
                    if runner.rng.random_range(0..400) == 0 {
                        // Makes every thread's keys miss, which their models allow.
                        runner.log("clear L1".to_owned());
                        cache.local().clear().unwrap();
                        runner.model.map.clear();
                        continue;
                    }
                    // This thread invalidates prefixes of its range far more often than the others.
                    if runner.rng.random_bool(0.2) {
                        runner.invalidate_prefix(cache);
                    } else {
                        runner.step(cache);
                    }
                }
            }));
            // The clock moves on under the workers' calls, as a real one does: TTLs of a few
            // milliseconds to minutes run out in the middle of reads and writes.
            let done = &done;
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed * 1000 + 998);
                while !done.load(Ordering::Relaxed) {
                    clock.advance(Duration::from_millis(rng.random_range(0..100)));
                    // Pacing only: a few hundred steps a second.
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            for worker in workers {
                if let Err(panic) = worker.join() {
                    done.store(true, Ordering::Relaxed);
                    std::panic::resume_unwind(panic);
                }
            }
            done.store(true, Ordering::Relaxed);
        });
    }
}
