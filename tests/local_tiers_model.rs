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
//! Knobs: `UNO_MODEL_SEED=n` runs that seed alone; `UNO_MODEL_OPS` the operations per seed (default
//! 2000). A failure names the seed, the operation's index and the operations before it (in the
//! concurrent run, the seed replays each thread's operations but not how they interleaved).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use uno_cache::{CacheConfig, CacheManager, CacheStats, FileStore, FileStoreOptions, ManualClock};

/// The typed value: it names its key and the write that made it, so a wrong answer says whose
/// value it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Item {
    write: u64,
    key: String,
    blob: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Val {
    Typed(Item),
    Raw(Vec<u8>),
}

impl Val {
    /// The write that made the value (raw values start with it in decimal).
    fn origin(&self) -> String {
        match self {
            Val::Typed(item) => format!("write {} of {:?}", item.write, item.key),
            Val::Raw(bytes) => {
                let head: Vec<u8> = bytes.iter().take(40).copied().collect();
                format!("raw {:?}", String::from_utf8_lossy(&head))
            }
        }
    }
}

/// What the cache may answer for each key.
#[derive(Default)]
struct Model {
    /// key → (value, expiry in Unix ms). An expired entry stays until it is deleted, so that the
    /// counts of deletes can be bounded.
    map: BTreeMap<String, (Val, u64)>,
}

impl Model {
    fn live(&self, key: &str, now: u64) -> Option<&Val> {
        match self.map.get(key) {
            Some((v, exp)) if now < *exp => Some(v),
            _ => None,
        }
    }

    fn check(&self, key: &str, now: u64, got: Option<&Val>) -> Result<(), String> {
        let Some(got) = got else { return Ok(()) };
        match self.live(key, now) {
            Some(want) if want == got => Ok(()),
            Some(want) => Err(format!(
                "{key:?} answered {}, but holds {}",
                got.origin(),
                want.origin()
            )),
            None => Err(match self.map.get(key) {
                Some((v, exp)) if v == got => {
                    format!("{key:?} answered its value expired at {exp} (now {now})")
                }
                _ => format!("{key:?} answered {}, but holds nothing", got.origin()),
            }),
        }
    }
}

/// Seconds every L1 entry's TTL is capped at (and the TTL of a set without one).
const LOCAL_TTL_S: u64 = 600;
const MEMORY_ITEMS: u64 = 16;

/// `periodic`: the default durability (fsyncs, most of a run's time) rather than none.
fn config(dir: &Path, fail_safe: bool, periodic: bool, max_mb: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        max_size = {max_mb}
        ttl = {LOCAL_TTL_S}
        memory_items = {MEMORY_ITEMS}
        memory_max_mb = 1
        durability = "{}"
        [loader]
        fail_safe_max_duration = {}
        "#,
        dir.display(),
        if periodic { "periodic" } else { "none" },
        if fail_safe { 30 } else { 0 }
    ))
    .unwrap()
}

fn open(dir: &Path, fail_safe: bool, periodic: bool, max_mb: u64, clock: &ManualClock) -> CacheManager {
    CacheManager::builder()
        .config(config(dir, fail_safe, periodic, max_mb))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

/// The TTL a set asks for: none (the cap), sub-millisecond and fractional ones, a few seconds,
/// minutes, or more than the cap.
fn random_ttl(rng: &mut StdRng) -> Option<Duration> {
    match rng.random_range(0..20) {
        0..=7 => None,
        8 => Some(Duration::from_micros(rng.random_range(1..5000))),
        9..=13 => Some(Duration::from_millis(rng.random_range(1..4000))),
        14..=17 => Some(Duration::from_secs(rng.random_range(5..120))),
        _ => Some(Duration::from_secs(rng.random_range(500..2000))),
    }
}

/// The moment from which a value written at `now` must no longer be read: its TTL capped at the
/// local one, in whole milliseconds rounded up (a cache may drop a value earlier, never later).
fn expiry(now: u64, ttl: Option<Duration>) -> u64 {
    let cap = LOCAL_TTL_S * 1000;
    let ms = ttl.map_or(cap, |t| {
        u64::try_from(t.as_nanos().div_ceil(1_000_000))
            .unwrap()
            .clamp(1, cap)
    });
    now + ms
}

fn blob(rng: &mut StdRng) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0..=4 => rng.random_range(0..512),
        5..=8 => rng.random_range(1024..8192),
        _ => rng.random_range(16 * 1024..40 * 1024),
    };
    let mut out = vec![0u8; len];
    rng.fill(&mut out[..]);
    out
}

/// Keys `{prefix}{group}/t{n}` hold typed values, `{prefix}{group}/r{n}` raw ones.
struct Keys {
    prefix: String,
    groups: u32,
    per_kind: u32,
}

impl Keys {
    fn pick(&self, rng: &mut StdRng, typed: bool) -> String {
        let g = rng.random_range(0..self.groups);
        let n = rng.random_range(0..self.per_kind);
        let kind = if typed { 't' } else { 'r' };
        format!("{}g{g}/{kind}{n:02}", self.prefix)
    }

    fn all(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for g in 0..self.groups {
            for n in 0..self.per_kind {
                out.push((format!("{}g{g}/t{n:02}", self.prefix), true));
                out.push((format!("{}g{g}/r{n:02}", self.prefix), false));
            }
        }
        out
    }

    fn random_prefix(&self, rng: &mut StdRng) -> String {
        let g = rng.random_range(0..self.groups);
        match rng.random_range(0..8) {
            0 => format!("{}g{g}/", self.prefix),
            1 => format!("{}g{g}/t", self.prefix),
            2 => format!("{}g{g}/r{}", self.prefix, rng.random_range(0..3)),
            3..=6 => format!(
                "{}g{g}/r{}{}",
                self.prefix,
                rng.random_range(0..4),
                rng.random_range(0..10)
            ),
            _ => format!("{}g{g}/t0", self.prefix),
        }
    }
}

/// One thread's operations against a manager, checked against its own model; it moves the clock
/// only when `advances`.
struct Runner<'a> {
    rng: StdRng,
    seed: u64,
    keys: Keys,
    model: Model,
    writes: u64,
    clock: &'a ManualClock,
    advances: bool,
    history: VecDeque<String>,
    index: usize,
}

impl<'a> Runner<'a> {
    /// A runner seeded with `rng_seed` (`seed` is the one a failure prints) on `keys`.
    fn new(seed: u64, rng_seed: u64, keys: Keys, clock: &'a ManualClock, advances: bool) -> Self {
        Runner {
            rng: StdRng::seed_from_u64(rng_seed),
            seed,
            keys,
            model: Model::default(),
            writes: 0,
            clock,
            advances,
            history: VecDeque::new(),
            index: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        let recent: Vec<&String> = self.history.iter().collect();
        panic!(
            "UNO_MODEL_SEED={} op {}: {what}\nlast operations (oldest first):\n{recent:#?}",
            self.seed, self.index
        )
    }

    fn log(&mut self, op: String) {
        if self.history.len() == 40 {
            self.history.pop_front();
        }
        self.history
            .push_back(format!("#{} t={} {op}", self.index, self.clock_now()));
    }

    fn clock_now(&self) -> u64 {
        use uno_cache::Clock;
        self.clock.now_ms()
    }

    fn new_val(&mut self, key: &str, typed: bool) -> Val {
        self.writes += 1;
        let write = self.writes;
        let blob = blob(&mut self.rng);
        if typed {
            Val::Typed(Item {
                write,
                key: key.to_owned(),
                blob,
            })
        } else {
            let mut bytes = format!("{write}|{key}|").into_bytes();
            bytes.extend_from_slice(&blob);
            Val::Raw(bytes)
        }
    }

    /// Checks a read that began at `began` (the cache's clock read no earlier).
    fn check(&self, key: &str, began: u64, got: Option<&Val>) {
        if let Err(e) = self.model.check(key, began, got) {
            self.fail(e)
        }
    }

    /// The entries a delete of `keys` may count: those the model still has, expired or not.
    fn held(&self, keys: &[String]) -> u64 {
        let mut seen: Vec<&String> = keys.iter().filter(|k| self.model.map.contains_key(*k)).collect();
        seen.sort();
        seen.dedup();
        seen.len() as u64
    }

    fn batch(&mut self, typed: bool) -> Vec<String> {
        let n = self.rng.random_range(1..8);
        (0..n).map(|_| self.keys.pick(&mut self.rng, typed)).collect()
    }

    /// Invalidates a random prefix of this runner's keys.
    fn invalidate_prefix(&mut self, cache: &CacheManager) {
        let prefix = self.keys.random_prefix(&mut self.rng);
        self.log(format!("invalidate_prefix {prefix}"));
        let n = cache
            .invalidate_prefix(&prefix)
            .unwrap_or_else(|e| self.fail(format!("invalidate_prefix {prefix}: {e}")));
        let under: Vec<String> = self
            .model
            .map
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        if n > under.len() as u64 {
            self.fail(format!(
                "invalidate_prefix {prefix:?} counted {n} keys, the model held {}",
                under.len()
            ));
        }
        for k in under {
            self.model.map.remove(&k);
        }
    }

    /// Moves the clock to the last millisecond of a live entry that expires within ten seconds,
    /// or to its expiry, and reads it: the edges a random clock seldom lands on.
    fn read_at_an_expiry(&mut self, cache: &CacheManager) {
        let now = self.clock_now();
        let soon: Vec<(String, u64)> = self
            .model
            .map
            .iter()
            .filter(|(_, (_, exp))| *exp > now && *exp - now < 10_000)
            .map(|(k, (_, exp))| (k.clone(), *exp))
            .collect();
        if soon.is_empty() {
            return;
        }
        let (key, exp) = soon[self.rng.random_range(0..soon.len())].clone();
        let at = exp - u64::from(self.rng.random_bool(0.5));
        self.log(format!("clock to {at} (expiry of {key} at {exp}), then read it"));
        self.clock.set(at);
        let got = if key.contains("/t") {
            cache.get::<Item>(&key).map(|v| v.map(Val::Typed))
        } else {
            cache.get_raw(&key).map(|v| v.map(Val::Raw))
        };
        let got = got.unwrap_or_else(|e| self.fail(format!("get {key}: {e}")));
        self.check(&key, at, got.as_ref());
    }

    /// One random operation.
    ///
    /// Where another thread moves the clock, a read is checked at the time it began (a value
    /// expired by then must be gone), and a write's expiry counts from the time it returned (its
    /// value may live until then).
    fn step(&mut self, cache: &CacheManager) {
        let typed = self.rng.random_bool(0.5);
        let began = self.clock_now();
        let mut roll = self.rng.random_range(0..100);
        // The clock's share of the operations are writes when this runner does not move it.
        if (88..=98).contains(&roll) && (!self.advances || roll > 93) {
            roll = 25;
        }
        match roll {
            0..=24 => {
                let key = self.keys.pick(&mut self.rng, typed);
                let got = if typed {
                    let how = self.rng.random_range(0..2);
                    self.log(format!("get{} {key}", if how == 0 { "" } else { "_arc" }));
                    let r = if how == 0 {
                        cache.get::<Item>(&key)
                    } else {
                        cache.get_arc::<Item>(&key).map(|a| a.map(|a| (*a).clone()))
                    };
                    r.unwrap_or_else(|e| self.fail(format!("get {key}: {e}")))
                        .map(Val::Typed)
                } else {
                    self.log(format!("get_raw {key}"));
                    cache
                        .get_raw(&key)
                        .unwrap_or_else(|e| self.fail(format!("get_raw {key}: {e}")))
                        .map(Val::Raw)
                };
                self.check(&key, began, got.as_ref());
            }
            25..=49 => {
                let key = self.keys.pick(&mut self.rng, typed);
                let ttl = random_ttl(&mut self.rng);
                let val = self.new_val(&key, typed);
                self.log(format!("set {key} ttl {ttl:?} = {}", val.origin()));
                let r = match &val {
                    Val::Typed(item) => cache.set(&key, item, ttl),
                    Val::Raw(bytes) => cache.set_raw(&key, bytes, ttl),
                };
                r.unwrap_or_else(|e| self.fail(format!("set {key}: {e}")));
                self.model.map.insert(key, (val, expiry(self.clock_now(), ttl)));
            }
            50..=57 => {
                let key = self.keys.pick(&mut self.rng, typed);
                let local = self.rng.random_bool(0.3);
                self.log(format!(
                    "{} {key}",
                    if local { "invalidate_local" } else { "delete" }
                ));
                let r = if local {
                    cache.invalidate_local(&key)
                } else {
                    cache.delete(&key)
                };
                let removed = r.unwrap_or_else(|e| self.fail(format!("delete {key}: {e}")));
                if removed && !self.model.map.contains_key(&key) {
                    self.fail(format!("delete of {key:?} removed a value, but it held none"));
                }
                self.model.map.remove(&key);
            }
            58..=65 => {
                let keys = self.batch(typed);
                self.log(format!("multi_get{} {keys:?}", if typed { "" } else { "_raw" }));
                let got: HashMap<String, Val> = if typed {
                    let r = cache.multi_get::<Item>(&keys);
                    let r = r.unwrap_or_else(|e| self.fail(format!("multi_get: {e}")));
                    r.into_iter().map(|(k, v)| (k, Val::Typed(v))).collect()
                } else {
                    let r = cache.multi_get_raw(&keys);
                    let r = r.unwrap_or_else(|e| self.fail(format!("multi_get_raw: {e}")));
                    r.into_iter().map(|(k, v)| (k, Val::Raw(v))).collect()
                };
                for (k, v) in &got {
                    if !keys.contains(k) {
                        self.fail(format!("multi_get answered {k:?}, which it was not asked"));
                    }
                    self.check(k, began, Some(v));
                }
            }
            66..=73 => {
                let keys = self.batch(typed);
                let ttl = random_ttl(&mut self.rng);
                let vals: Vec<(String, Val)> =
                    keys.iter().map(|k| (k.clone(), self.new_val(k, typed))).collect();
                let names: Vec<String> = vals.iter().map(|(k, v)| format!("{k}={}", v.origin())).collect();
                self.log(format!("multi_set ttl {ttl:?} {names:?}"));
                let r = if typed {
                    let items: Vec<(&str, &Item)> = vals
                        .iter()
                        .map(|(k, v)| match v {
                            Val::Typed(item) => (k.as_str(), item),
                            Val::Raw(_) => unreachable!(),
                        })
                        .collect();
                    cache.multi_set(items, ttl)
                } else {
                    let items: Vec<(&str, &[u8])> = vals
                        .iter()
                        .map(|(k, v)| match v {
                            Val::Raw(bytes) => (k.as_str(), bytes.as_slice()),
                            Val::Typed(_) => unreachable!(),
                        })
                        .collect();
                    cache.multi_set_raw(&items, ttl)
                };
                r.unwrap_or_else(|e| self.fail(format!("multi_set: {e}")));
                // A key listed twice keeps its last value.
                for (k, v) in vals {
                    self.model.map.insert(k, (v, expiry(self.clock_now(), ttl)));
                }
            }
            74..=78 => {
                let keys = self.batch(typed);
                self.log(format!("multi_delete {keys:?}"));
                let n = cache
                    .multi_delete(&keys)
                    .unwrap_or_else(|e| self.fail(format!("multi_delete: {e}")));
                let held = self.held(&keys);
                if n > held {
                    self.fail(format!(
                        "multi_delete counted {n} keys removed, the model held {held}"
                    ));
                }
                for k in &keys {
                    self.model.map.remove(k);
                }
            }
            79..=80 => self.invalidate_prefix(cache),
            81..=87 => {
                let key = self.keys.pick(&mut self.rng, true);
                let ttl = random_ttl(&mut self.rng);
                let fresh = self.new_val(&key, true);
                let Val::Typed(item) = fresh else { unreachable!() };
                self.log(format!(
                    "get_or_set_with {key} ttl {ttl:?} (loader: write {})",
                    item.write
                ));
                let mut loaded = false;
                let got = cache
                    .get_or_set_with::<Item, uno_cache::Error, _>(&key, ttl, || {
                        loaded = true;
                        Ok(item.clone())
                    })
                    .unwrap_or_else(|e| self.fail(format!("get_or_set_with {key}: {e}")));
                if loaded {
                    if got != item {
                        self.fail(format!(
                            "get_or_set_with {key:?} ran its loader and answered another value"
                        ));
                    }
                    self.model
                        .map
                        .insert(key, (Val::Typed(item), expiry(self.clock_now(), ttl)));
                } else if self.model.live(&key, began) != Some(&Val::Typed(got.clone())) {
                    self.check(&key, began, Some(&Val::Typed(got)));
                    self.fail(format!(
                        "get_or_set_with {key:?} answered a cached value without a live one"
                    ));
                }
            }
            88..=90 => self.read_at_an_expiry(cache),
            91..=98 => {
                let by = match self.rng.random_range(0..100) {
                    0..=79 => self.rng.random_range(0..1500),
                    80..=98 => self.rng.random_range(1000..10_000),
                    _ => self.rng.random_range(60_000..700_000),
                };
                self.log(format!("advance clock {by} ms"));
                self.clock.advance(Duration::from_millis(by));
            }
            _ => {
                // A read of every key: what the random reads may have missed.
                self.log("read every key".to_owned());
                for (key, typed) in self.keys.all() {
                    let got = if typed {
                        cache.get::<Item>(&key).map(|v| v.map(Val::Typed))
                    } else {
                        cache.get_raw(&key).map(|v| v.map(Val::Raw))
                    };
                    let got = got.unwrap_or_else(|e| self.fail(format!("get {key}: {e}")));
                    self.check(&key, began, got.as_ref());
                }
            }
        }
    }
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

/// Stats within one manager's life: counters never go back, the file store stays in its bounds.
fn check_stats(
    runner: &Runner<'_>,
    cache: &CacheManager,
    max_mb: u64,
    before: &mut Option<Vec<(String, u64)>>,
) {
    let stats = cache.stats();
    // Two value types go through the memory tier (`get`'s and `get_arc`'s), each bounded apart.
    let memory = stats.size.memory;
    if memory.items > 2 * MEMORY_ITEMS || memory.bytes > 2 * (1 << 20) {
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

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is no number")))
}

fn ops() -> usize {
    env_u64("UNO_MODEL_OPS").map_or(2000, |n| n as usize)
}

/// One seed's run: random operations, a restart every 200-ish of them.
fn run_seed(seed: u64, ops: usize) {
    let dir = tempfile::tempdir().unwrap();
    let fail_safe = seed % 2 == 1;
    let periodic = seed.is_multiple_of(4);
    // Half the seeds make the directory with the smallest segments first (the manager keeps the
    // segment size a directory recorded): twice the evictions.
    if seed % 4 < 2 {
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
    let mut max_mb = 1;
    let mut cache = Some(open(dir.path(), fail_safe, periodic, max_mb, &clock));
    let mut stats = None;
    let mut totals = Totals::default();
    for i in 0..ops {
        runner.index = i;
        if runner.rng.random_range(0..200) == 0 {
            let compact = runner.rng.random_bool(0.5);
            // Now and then the bound changes between runs, as an application's setting does: a
            // store that shrinks evicts at its open.
            max_mb = if runner.rng.random_bool(0.3) { 2 } else { 1 };
            runner.log(format!(
                "restart{} with max_size {max_mb}",
                if compact { " (compacted)" } else { "" }
            ));
            totals.add(cache.as_ref().unwrap());
            drop(cache.take());
            if compact {
                let options = FileStoreOptions::default()
                    .clock(Arc::new(clock.clone()))
                    .keep_expired(Duration::from_secs(if fail_safe { 30 } else { 0 }));
                let store = FileStore::open(dir.path(), options).unwrap();
                store
                    .compact()
                    .unwrap_or_else(|e| runner.fail(format!("compact: {e}")));
                store.close().unwrap();
            }
            cache = Some(open(dir.path(), fail_safe, periodic, max_mb, &clock));
            stats = None;
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
            check_stats(&runner, c, max_mb, &mut stats);
        }
    }
    // What the run made the tiers do, to see that it reached evictions.
    totals.add(cache.as_ref().unwrap());
    eprintln!("seed {seed}: {totals:?}");
}

/// Counters summed over the managers of a run (each one's start at zero).
#[derive(Debug, Default)]
struct Totals {
    file_evictions: u64,
    second_chances: u64,
    compactions: u64,
    file_expirations: u64,
    memory_hits: u64,
    memory_evictions: u64,
    hits: u64,
    misses: u64,
}

impl Totals {
    fn add(&mut self, cache: &CacheManager) {
        let (s, file) = (cache.stats(), cache.monitor().local_file_stats().unwrap());
        self.file_evictions += file.evictions;
        self.second_chances += file.second_chances;
        self.compactions += file.compactions;
        self.file_expirations += file.expirations;
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
        run_seed(seed, ops());
    }
}

#[test]
fn threads_on_disjoint_keys_never_read_a_value_their_own_model_does_not_hold() {
    for seed in seeds(&[101]) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let cache = open(dir.path(), false, false, 1, &clock);
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
