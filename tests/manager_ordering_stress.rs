//! Randomized stress of per-key ordering (issue 14), bounded in time: threads share one manager
//! (a real `FileStore` L1, a real `RedisStore` L2 on a `redis-server`) and do get, set, delete,
//! multi_get, multi_set, multi_delete, async calls and L1 evictions on a few keys, in both write
//! modes. Every
//! call is recorded with the moments it started and returned; the checker then requires that
//! - every read answered a value some write of the key wrote (or nothing, after a delete or
//!   before any write) that had started before the read returned and that no write which
//!   completed before the read began had replaced (a read never goes back);
//! - once the calls returned and the queue was flushed, L1 (when it holds the key), L2 and the
//!   manager's answer agree, on a value no completed write replaced.
//!
//! A deliberately broken level (it acknowledges some deletes without doing them) is the
//! control: the checker must catch it. The seed is in every failure message; `UNO_STRESS_SEED` replays
//! the same operation sequences, `UNO_STRESS_MS` sets how long each run lasts (default 1200).
//!
//! The same runs with the two local tiers (a memory tier of decoded values in front of the file
//! store) use typed calls, which the memory tier answers; it holds fewer values than there are
//! keys, so it evicts and refills from the file tier all through the run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

#[path = "support/delegate.rs"]
mod delegate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate::{Delegate, Wrap, WrapDistributed, WrapLocal};
use rand::{Rng, SeedableRng};
use support::RedisServer;
use uno_cache::{
    BoxFuture, CacheConfig, CacheManager, Codec, DistributedStorage, FileStore, FileStoreOptions,
    LocalStorage, RedisOptions, RedisStore, Result, Storage, WriteMode,
};

const KEYS: [&str; 3] = ["s:a", "s:b", "s:c"];
const THREADS: usize = 4;

/// A level that acknowledges every `DROP_EVERY`-th delete call without deleting: the control.
struct DropsDeletes<L> {
    inner: Arc<L>,
    calls: AtomicUsize,
}

const DROP_EVERY: usize = 3;

impl<L> DropsDeletes<L> {
    fn drop_this_one(&self) -> bool {
        self.calls.fetch_add(1, Ordering::SeqCst) % DROP_EVERY == DROP_EVERY - 1
    }
}

impl<L: Storage> Wrap for DropsDeletes<L> {
    type Inner = L;
    fn inner(&self) -> &L {
        &self.inner
    }
    fn name(&self) -> &str {
        "drops-deletes"
    }
    fn delete(&self, key: &str) -> Result<bool> {
        if self.drop_this_one() {
            return Ok(true);
        }
        self.inner.delete(key)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if self.drop_this_one() {
            return Ok(keys.len() as u64);
        }
        self.inner.delete_many(keys)
    }
}

impl<L: LocalStorage> WrapLocal for DropsDeletes<L> {}

impl<L: DistributedStorage> WrapDistributed for DropsDeletes<L> {
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        if self.drop_this_one() {
            return Box::pin(std::future::ready(Ok(true)));
        }
        self.inner.delete_async(key)
    }
    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        if self.drop_this_one() {
            return Box::pin(std::future::ready(Ok(keys.len() as u64)));
        }
        self.inner.delete_many_async(keys)
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Write(Option<Vec<u8>>),
    Read(Option<Vec<u8>>),
}

#[derive(Debug, Clone)]
struct Event {
    key: &'static str,
    start: u64,
    end: u64,
    kind: Kind,
    op: &'static str,
}

struct Rig {
    cache: CacheManager,
    /// The real local level, without the control's breakage: the file store, or both local
    /// tiers (whose reads of bytes go to the file tier, and whose deletes reach both).
    l1: Arc<dyn LocalStorage>,
    redis: Arc<RedisStore>,
    /// Typed calls (through the memory tier) rather than raw ones.
    typed: bool,
    _dir: tempfile::TempDir,
}

/// The local level of a run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Local {
    File,
    /// A memory tier of [`MEMORY_ITEMS`] decoded values in front of the file store.
    Tiers,
}

/// Fewer than [`KEYS`]: the memory tier evicts all through a run.
const MEMORY_ITEMS: u64 = 2;

/// Which level of the rig is the broken one, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Broken {
    Neither,
    L1,
    L2,
}

fn drops_deletes<L>(inner: Arc<L>) -> Arc<Delegate<DropsDeletes<L>>> {
    Arc::new(Delegate(DropsDeletes {
        inner,
        calls: AtomicUsize::new(0),
    }))
}

fn rig(server: &RedisServer, mode: WriteMode, broken: Broken, local: Local, prefix: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let redis = Arc::new(
        RedisStore::connect(
            RedisOptions::new(server.addr())
                .prefix(prefix)
                .timeout(Duration::from_secs(10)),
        )
        .unwrap(),
    );
    let mut config = CacheConfig {
        // Errors must surface: a hidden L2 timeout would read as a miss.
        fallback_on_error: false,
        ..CacheConfig::default()
    };
    config.distributed.write_mode = mode;
    config.distributed.timeout_ms = 10_000;
    let builder = CacheManager::builder().config(config.clone());
    let (cache, file) = match local {
        Local::File => {
            let file = Arc::new(FileStore::open(dir.path(), FileStoreOptions::default()).unwrap());
            let (l1, l2): (Arc<dyn LocalStorage>, Arc<dyn DistributedStorage>) = match broken {
                Broken::Neither => (file.clone(), redis.clone()),
                Broken::L1 => (drops_deletes(file.clone()), redis.clone()),
                Broken::L2 => (file.clone(), drops_deletes(redis.clone())),
            };
            let file: Arc<dyn LocalStorage> = file;
            (builder.local(l1).distributed(l2).build().unwrap(), file)
        }
        Local::Tiers => {
            assert!(broken == Broken::Neither, "the control runs on the file level");
            // The manager builds the tiers from `[local]`.
            config.local.path = Some(dir.path().to_path_buf());
            config.local.memory_items = MEMORY_ITEMS;
            let cache = CacheManager::builder()
                .config(config)
                .distributed(redis.clone())
                .build()
                .unwrap();
            let tiers = cache.local().clone();
            (cache, tiers)
        }
    };
    Rig {
        l1: file,
        cache,
        redis,
        typed: local == Local::Tiers,
        _dir: dir,
    }
}

/// Runs the threads for `run_for`; returns every recorded call.
fn run(rig: &Rig, seed: u64, run_for: Duration) -> Vec<Event> {
    let clock = Arc::new(AtomicU64::new(1));
    let deadline = Instant::now() + run_for;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let cache = rig.cache.clone();
            let l1 = Arc::clone(&rig.l1);
            let typed = rig.typed;
            let codec = rig.cache.codec();
            let clock = Arc::clone(&clock);
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(t as u64));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let tick = || clock.fetch_add(1, Ordering::SeqCst);
                let mut events = Vec::new();
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let key = KEYS[rng.random_range(0..KEYS.len())];
                    let other = KEYS[rng.random_range(0..KEYS.len())];
                    n += 1;
                    let text = format!("t{t}-{n}");
                    let value = rig_value(&codec, typed, key, &text);
                    let roll = rng.random_range(0..100);
                    let start = tick();
                    let (op, recorded): (&'static str, Vec<(&'static str, Kind)>) = match roll {
                        0..=21 => ("get", vec![(key, Kind::Read(read(&cache, typed, key)))]),
                        // L1 drops the key behind the manager's back, as its eviction does: the
                        // next read asks the write-behind queue and L2.
                        22..=24 => {
                            Storage::delete(&*l1, key).unwrap();
                            ("evict", Vec::new())
                        }
                        25..=31 => {
                            let got = if typed {
                                rt.block_on(cache.get_async::<String>(key))
                                    .unwrap()
                                    .map(|v| rig_value(&codec, true, key, &v))
                            } else {
                                rt.block_on(cache.get_raw_async(key)).unwrap()
                            };
                            ("get_async", vec![(key, Kind::Read(got))])
                        }
                        32..=51 => {
                            if typed {
                                cache.set(key, &text, None).unwrap();
                            } else {
                                cache.set_raw(key, &value, None).unwrap();
                            }
                            ("set", vec![(key, Kind::Write(Some(value)))])
                        }
                        52..=57 => {
                            if typed {
                                rt.block_on(cache.set_async(key, &text, None)).unwrap();
                            } else {
                                rt.block_on(cache.set_raw_async(key, &value, None)).unwrap();
                            }
                            ("set_async", vec![(key, Kind::Write(Some(value)))])
                        }
                        58..=69 => {
                            cache.delete(key).unwrap();
                            ("delete", vec![(key, Kind::Write(None))])
                        }
                        70..=73 => {
                            rt.block_on(cache.delete_async(key)).unwrap();
                            ("delete_async", vec![(key, Kind::Write(None))])
                        }
                        74..=85 => {
                            let mut found: HashMap<String, Vec<u8>> = if typed {
                                cache
                                    .multi_get::<String>(&KEYS)
                                    .unwrap()
                                    .into_iter()
                                    .map(|(k, v)| {
                                        let bytes = rig_value(&codec, true, &k, &v);
                                        (k, bytes)
                                    })
                                    .collect()
                            } else {
                                cache.multi_get_raw(&KEYS).unwrap()
                            };
                            let reads = KEYS.iter().map(|k| (*k, Kind::Read(found.remove(*k)))).collect();
                            ("multi_get", reads)
                        }
                        86..=93 => {
                            let second_text = format!("{text}'");
                            let second = rig_value(&codec, typed, other, &second_text);
                            let n = if key == other { 1 } else { 2 };
                            let texts = [(key, text.as_str()), (other, second_text.as_str())];
                            let items = [(key, value.as_slice()), (other, second.as_slice())];
                            if typed {
                                cache.multi_set(texts[..n].iter().copied(), None).unwrap();
                            } else {
                                cache.multi_set_raw(&items[..n], None).unwrap();
                            }
                            let mut writes = vec![(key, Kind::Write(Some(value.clone())))];
                            if key != other {
                                writes.push((other, Kind::Write(Some(second.clone()))));
                            }
                            ("multi_set", writes)
                        }
                        _ => {
                            let keys: Vec<&'static str> =
                                if key == other { vec![key] } else { vec![key, other] };
                            cache.multi_delete(&keys).unwrap();
                            (
                                "multi_delete",
                                keys.into_iter().map(|k| (k, Kind::Write(None))).collect(),
                            )
                        }
                    };
                    let end = tick();
                    for (key, kind) in recorded {
                        events.push(Event {
                            key,
                            start,
                            end,
                            kind,
                            op,
                        });
                    }
                }
                events
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

/// The bytes a write of `text` leaves in the levels: the codec's encoding for typed calls.
fn rig_value(codec: &Codec, typed: bool, key: &str, text: &str) -> Vec<u8> {
    if typed {
        codec.encode(key, text).unwrap()
    } else {
        text.as_bytes().to_vec()
    }
}

/// The manager's answer for `key`, as the bytes of the value: typed reads go through the memory
/// tier.
fn read(cache: &CacheManager, typed: bool, key: &str) -> Option<Vec<u8>> {
    if typed {
        let codec = cache.codec();
        cache
            .get::<String>(key)
            .unwrap()
            .map(|v| rig_value(&codec, true, key, &v))
    } else {
        cache.get_raw(key).unwrap()
    }
}

fn show(v: &Option<Vec<u8>>) -> String {
    match v {
        Some(v) => String::from_utf8_lossy(v).into_owned(),
        None => "nothing".to_owned(),
    }
}

/// The writes of one key, indexed for the checks.
struct Writes {
    by_value: HashMap<Vec<u8>, (u64, u64)>,
    /// (end, start) sorted by end, with the largest start so far.
    by_end: Vec<(u64, u64)>,
    prefix_max_start: Vec<u64>,
    /// Deletes (and the state before any write, as (0, 0)) sorted by start, with the largest end
    /// so far.
    none_by_start: Vec<(u64, u64)>,
    none_prefix_max_end: Vec<u64>,
    max_start: u64,
}

impl Writes {
    fn new(events: &[&Event]) -> Writes {
        let mut by_value = HashMap::new();
        let mut by_end = Vec::new();
        let mut none_by_start = vec![(0, 0)];
        for e in events {
            if let Kind::Write(v) = &e.kind {
                by_end.push((e.end, e.start));
                match v {
                    Some(v) => {
                        by_value.insert(v.clone(), (e.start, e.end));
                    }
                    None => none_by_start.push((e.start, e.end)),
                }
            }
        }
        by_end.sort_unstable();
        none_by_start.sort_unstable();
        let prefix_max_start = by_end
            .iter()
            .scan(0, |m, (_, s)| {
                *m = (*m).max(*s);
                Some(*m)
            })
            .collect();
        let none_prefix_max_end = none_by_start
            .iter()
            .scan(0, |m, (_, e)| {
                *m = (*m).max(*e);
                Some(*m)
            })
            .collect();
        let max_start = by_end.iter().map(|(_, s)| *s).max().unwrap_or(0);
        Writes {
            by_value,
            by_end,
            prefix_max_start,
            none_by_start,
            none_prefix_max_end,
            max_start,
        }
    }

    /// The latest end of a write of `value` that started before `before`.
    fn writer_end(&self, value: &Option<Vec<u8>>, before: u64) -> Option<u64> {
        match value {
            Some(v) => self.by_value.get(v).filter(|(s, _)| *s < before).map(|(_, e)| *e),
            None => {
                let n = self.none_by_start.partition_point(|(s, _)| *s < before);
                n.checked_sub(1).map(|i| self.none_prefix_max_end[i])
            }
        }
    }

    /// The largest start of a write that ended before `at`.
    fn latest_start_of_a_write_done_before(&self, at: u64) -> u64 {
        let n = self.by_end.partition_point(|(e, _)| *e < at);
        n.checked_sub(1).map_or(0, |i| self.prefix_max_start[i])
    }
}

/// Every violation of the history rules, as readable lines.
fn check(rig: &Rig, events: &[Event]) -> Vec<String> {
    rig.cache.flush().unwrap();
    let mut problems = Vec::new();
    for key in KEYS {
        let mine: Vec<&Event> = events.iter().filter(|e| e.key == key).collect();
        let writes = Writes::new(&mine);
        for e in &mine {
            let Kind::Read(v) = &e.kind else { continue };
            match writes.writer_end(v, e.end) {
                None => problems.push(format!(
                    "{key}: {} [{}..{}] answered {}, which no write that started before it wrote",
                    e.op,
                    e.start,
                    e.end,
                    show(v)
                )),
                Some(end) => {
                    let replaced_by = writes.latest_start_of_a_write_done_before(e.start);
                    if replaced_by > end {
                        problems.push(format!(
                            "{key}: {} [{}..{}] answered {} (written by [..{end}]), replaced by a write that started at {replaced_by} and completed before the read began",
                            e.op, e.start, e.end, show(v)
                        ));
                    }
                }
            }
        }
        let l1 = Storage::get(&*rig.l1, key).unwrap().map(|e| e.value);
        let l2 = Storage::get(&*rig.redis, key).unwrap().map(|e| e.value);
        let answer = read(&rig.cache, rig.typed, key);
        if l1.is_some() && l1 != l2 || answer != l2 {
            problems.push(format!(
                "{key}: at the end L1={} L2={} manager={}",
                l1.as_ref()
                    .map_or("(none)".to_owned(), |v| show(&Some(v.clone()))),
                show(&l2),
                show(&answer)
            ));
        }
        match writes.writer_end(&l2, u64::MAX) {
            Some(end) if writes.max_start <= end => {}
            _ => problems.push(format!(
                "{key}: at the end L2 holds {}, which a later completed write replaced",
                show(&l2)
            )),
        }
    }
    problems
}

fn seed() -> u64 {
    std::env::var("UNO_STRESS_SEED")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("UNO_STRESS_SEED={s:?} is not a number"))
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

fn run_for() -> Duration {
    Duration::from_millis(
        std::env::var("UNO_STRESS_MS")
            .ok()
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| panic!("UNO_STRESS_MS={s:?} is not a number"))
            })
            .unwrap_or(1200),
    )
}

/// Runs one stress: (seed, calls recorded, violations, memory-tier hits).
fn stress(mode: WriteMode, name: &str, broken: Broken, local: Local) -> (u64, usize, Vec<String>, u64) {
    let server = RedisServer::start();
    let seed = seed();
    let prefix: String = name.chars().filter(char::is_ascii_alphanumeric).collect();
    let rig = rig(&server, mode, broken, local, &format!("{prefix}:"));
    let events = run(&rig, seed, run_for());
    let problems = check(&rig, &events);
    if std::env::var_os("UNO_STRESS_DEBUG").is_some() {
        eprintln!("{name}: {:#?}", rig.cache.stats());
    }
    let memory_hits = rig.cache.stats().memory.hits;
    (seed, events.len(), problems, memory_hits)
}

fn assert_clean(mode: WriteMode, name: &str, local: Local) {
    let (seed, n, problems, memory_hits) = stress(mode, name, Broken::Neither, local);
    assert!(n > 200, "only {n} calls ran (seed {seed})");
    if local == Local::Tiers {
        assert!(
            memory_hits > 0,
            "{name}: the memory tier answered nothing (seed {seed})"
        );
    }
    assert!(
        problems.is_empty(),
        "{name}: {} violations in {n} recorded calls (seed {seed}; rerun with UNO_STRESS_SEED={seed}):\n{}",
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn write_through_random_concurrent_calls_never_read_backwards_and_end_with_the_levels_agreeing() {
    assert_clean(WriteMode::Through, "through", Local::File);
}

#[test]
fn write_behind_random_concurrent_calls_never_read_backwards_and_end_with_the_levels_agreeing() {
    assert_clean(WriteMode::Behind, "behind", Local::File);
}

#[test]
fn write_through_with_both_local_tiers_random_typed_calls_never_read_backwards_and_end_agreeing() {
    assert_clean(WriteMode::Through, "through, tiers", Local::Tiers);
}

#[test]
fn write_behind_with_both_local_tiers_random_typed_calls_never_read_backwards_and_end_agreeing() {
    assert_clean(WriteMode::Behind, "behind, tiers", Local::Tiers);
}

/// The control. With write-behind, deletes settle the queue so often that L2 rarely holds a
/// value for a dropped delete to leave behind, so the broken level there is L1.
#[test]
fn the_checker_catches_a_level_that_acknowledges_deletes_it_did_not_do() {
    for (mode, broken, name) in [
        (WriteMode::Through, Broken::L2, "through, broken L2"),
        (WriteMode::Through, Broken::L1, "through, broken L1"),
        (WriteMode::Behind, Broken::L1, "behind, broken L1"),
    ] {
        let (seed, n, problems, _) = stress(mode, name, broken, Local::File);
        assert!(
            !problems.is_empty(),
            "{name}: the checker found nothing in {n} calls against a level that drops every {DROP_EVERY}rd delete (seed {seed})"
        );
    }
}
