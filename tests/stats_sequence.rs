//! `stats()` after a known sequence of calls, as an operator's dashboard reads it: a file-store
//! L1 with its memory tier in front of a real `redis-server`, and every counter of every tier
//! checked for its exact value after each step (memory hits, file hits, L2 hits, misses
//! everywhere, batches, loads, async forms, deletes, L2 outages, expiries, evictions, a
//! restart), with the sums an alert relies on: each tier's hits and misses add up to the
//! lookups that reached it, overall hits are the local and L2 ones.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, CacheStats};

fn config(dir: &Path, redis: &RedisServer, restart_policy: &str) -> CacheConfig {
    config_with(dir, redis, restart_policy, "memory_items = 100", "")
}

/// [`config`] with more lines in `[local]` (`memory_items` among them) and `[distributed]`.
fn config_with(
    dir: &Path,
    redis: &RedisServer,
    restart_policy: &str,
    local: &str,
    distributed: &str,
) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = {:?}
        ttl = 600
        {local}
        [distributed]
        enabled = true
        type = "redis"
        hosts = [{:?}]
        key_prefix = "seq:"
        ttl = 600
        timeout_ms = 500
        {distributed}
        [consistency]
        restart_policy = "{restart_policy}"
        "#,
        dir.display().to_string(),
        redis.addr(),
    ))
    .unwrap()
}

/// Hits and misses of every tier: memory, file, local (both), L2, overall; and the backfills,
/// loads and L2 errors.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Counts {
    memory: (u64, u64),
    file: (u64, u64),
    local: (u64, u64),
    distributed: (u64, u64),
    overall: (u64, u64),
    backfills: u64,
    loads: u64,
    l2_errors: u64,
}

fn counts(s: &CacheStats) -> Counts {
    Counts {
        memory: (s.memory.hits, s.memory.misses),
        file: (s.file.hits, s.file.misses),
        local: (s.local.hits, s.local.misses),
        distributed: (s.distributed.hits, s.distributed.misses),
        overall: (s.overall.hits, s.overall.misses),
        backfills: s.overall.backfills,
        loads: s.overall.loads,
        l2_errors: s.distributed.errors,
    }
}

/// The sums a dashboard relies on, for typed reads alone (which all ask the memory tier first):
/// the file tier sees the memory tier's misses, L2 sees the local misses (less the reads L2
/// failed), overall is the local hits and L2's, and every rate is its own hits over its
/// lookups, in [0, 1].
fn check_sums(s: &CacheStats, what: &str) {
    assert_eq!(
        s.file.hits + s.file.misses,
        s.memory.misses,
        "{what}: file lookups"
    );
    assert_eq!(s.local.hits, s.memory.hits + s.file.hits, "{what}: local hits");
    assert_eq!(s.local.misses, s.file.misses, "{what}: local misses");
    // Each local miss is answered by L2 or is a miss overall (L2 did not have it, or failed:
    // `distributed.errors` counts failed calls, a batch's once, not keys).
    assert_eq!(
        s.distributed.hits + s.overall.misses,
        s.local.misses,
        "{what}: local misses"
    );
    assert!(s.distributed.misses <= s.overall.misses, "{what}: L2 misses");
    assert_eq!(
        s.overall.hits,
        s.local.hits + s.distributed.hits,
        "{what}: overall hits"
    );
    assert_eq!(
        s.overall.reads,
        s.overall.hits + s.overall.misses,
        "{what}: reads"
    );
    let rate = |hits: u64, misses: u64| {
        if hits + misses == 0 {
            0.0
        } else {
            hits as f64 / (hits + misses) as f64
        }
    };
    for (name, got, want) in [
        ("memory", s.hit_rate.memory, rate(s.memory.hits, s.memory.misses)),
        ("file", s.hit_rate.file, rate(s.file.hits, s.file.misses)),
        ("local", s.hit_rate.local, rate(s.local.hits, s.local.misses)),
        (
            "distributed",
            s.hit_rate.distributed,
            rate(s.distributed.hits, s.distributed.misses),
        ),
        (
            "overall",
            s.hit_rate.overall,
            rate(s.overall.hits, s.overall.misses),
        ),
    ] {
        assert!((0.0..=1.0).contains(&got), "{what}: hit_rate.{name} = {got}");
        assert!(
            (got - want).abs() < 1e-12,
            "{what}: hit_rate.{name} = {got}, want {want}"
        );
    }
}

/// Checks that the counts moved from `before` by exactly `delta` (and the sums hold), then
/// moves `before` on.
#[track_caller]
fn expect(cache: &CacheManager, what: &str, before: &mut Counts, delta: Counts) {
    let stats = cache.stats();
    let want = Counts {
        memory: (before.memory.0 + delta.memory.0, before.memory.1 + delta.memory.1),
        file: (before.file.0 + delta.file.0, before.file.1 + delta.file.1),
        local: (before.local.0 + delta.local.0, before.local.1 + delta.local.1),
        distributed: (
            before.distributed.0 + delta.distributed.0,
            before.distributed.1 + delta.distributed.1,
        ),
        overall: (
            before.overall.0 + delta.overall.0,
            before.overall.1 + delta.overall.1,
        ),
        backfills: before.backfills + delta.backfills,
        loads: before.loads + delta.loads,
        l2_errors: before.l2_errors + delta.l2_errors,
    };
    assert_eq!(counts(&stats), want, "{what}");
    check_sums(&stats, what);
    *before = want;
}

const NONE: Counts = Counts {
    memory: (0, 0),
    file: (0, 0),
    local: (0, 0),
    distributed: (0, 0),
    overall: (0, 0),
    backfills: 0,
    loads: 0,
    l2_errors: 0,
};

#[test]
fn a_manager_that_did_nothing_reports_zeros_and_no_nan() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis, "revalidate")).unwrap();
    let stats = cache.stats();
    assert_eq!(counts(&stats), NONE);
    check_sums(&stats, "nothing done");
    // 0 before any read, not NaN (0 / 0): an alert on a rate below a bound must not fire, nor
    // a JSON export write `null`.
    let rates = stats.hit_rate;
    for rate in [
        rates.local,
        rates.memory,
        rates.file,
        rates.distributed,
        rates.overall,
    ] {
        assert_eq!(rate, 0.0, "{rates:?}");
    }
    let json = serde_json::to_value(&stats).unwrap();
    for tier in ["local", "memory", "file", "distributed", "overall"] {
        assert_eq!(json["hit_rate"][tier], serde_json::json!(0.0), "{tier}");
    }
    assert_eq!(
        (
            stats.size.memory.items,
            stats.size.file.items,
            stats.size.local.items
        ),
        (0, 0, 0)
    );
}

/// Every kind of read, once each, moves every counter by exactly what it did.
#[test]
fn every_kind_of_read_moves_each_tiers_counters_by_exactly_its_lookups() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let writer_dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis, "revalidate")).unwrap();
    // Another instance on the same L2: what it writes is in L2 alone for `cache`.
    let writer = CacheManager::new(config(writer_dir.path(), &redis, "revalidate")).unwrap();
    let mut at = NONE;

    cache.set("m", &1u32, None).unwrap();
    assert_eq!(cache.get::<u32>("m").unwrap(), Some(1));
    #[rustfmt::skip]
    expect(&cache, "a file hit", &mut at, Counts { memory: (0, 1), file: (1, 0), local: (1, 0), overall: (1, 0), ..NONE });
    assert_eq!(cache.get::<u32>("m").unwrap(), Some(1));
    #[rustfmt::skip]
    expect(&cache, "a memory hit", &mut at, Counts { memory: (1, 0), local: (1, 0), overall: (1, 0), ..NONE });

    writer.set("r", &2u32, None).unwrap();
    assert_eq!(cache.get::<u32>("r").unwrap(), Some(2));
    #[rustfmt::skip]
    expect(&cache, "an L2 hit", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), distributed: (1, 0), overall: (1, 0), backfills: 1, ..NONE });
    assert_eq!(cache.get::<u32>("r").unwrap(), Some(2));
    #[rustfmt::skip]
    expect(&cache, "a backfilled key is a memory hit", &mut at, Counts { memory: (1, 0), local: (1, 0), overall: (1, 0), ..NONE });

    assert_eq!(cache.get::<u32>("x").unwrap(), None);
    #[rustfmt::skip]
    expect(&cache, "a miss everywhere", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), distributed: (0, 1), overall: (0, 1), ..NONE });

    writer.set("r2", &3u32, None).unwrap();
    cache.set("f", &4u32, None).unwrap();
    let found = cache
        .multi_get::<u32>(&["m", "r", "x", "y", "m", "r2", "f"])
        .unwrap();
    assert_eq!(found.len(), 4, "{found:?}");
    #[rustfmt::skip]
    expect(&cache, "a batch: 2 memory hits, a file hit, an L2 hit, 2 misses", &mut at, Counts { memory: (2, 4), file: (1, 3), local: (3, 3), distributed: (1, 2), overall: (4, 2), backfills: 1, ..NONE });

    let loaded = cache
        .get_or_load::<u32, uno_cache::Error, _>("z", None, || Ok(7))
        .unwrap();
    assert_eq!(loaded.into_value(), 7);
    #[rustfmt::skip]
    expect(&cache, "a load", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), distributed: (0, 1), overall: (0, 1), loads: 1, ..NONE });
    let loaded = cache
        .get_or_load::<u32, uno_cache::Error, _>("z", None, || Ok(8))
        .unwrap();
    assert_eq!(loaded.into_value(), 7);
    #[rustfmt::skip]
    expect(&cache, "a loading call the memory tier answers", &mut at, Counts { memory: (1, 0), local: (1, 0), overall: (1, 0), ..NONE });

    assert_eq!(support::block_on(cache.get_async::<u32>("z")).unwrap(), Some(7));
    #[rustfmt::skip]
    expect(&cache, "an async memory hit", &mut at, Counts { memory: (1, 0), local: (1, 0), overall: (1, 0), ..NONE });
    writer.set("ra", &5u32, None).unwrap();
    assert_eq!(support::block_on(cache.get_async::<u32>("ra")).unwrap(), Some(5));
    #[rustfmt::skip]
    expect(&cache, "an async L2 hit", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), distributed: (1, 0), overall: (1, 0), backfills: 1, ..NONE });
    let found = support::block_on(cache.multi_get_async::<u32>(&["ra", "nope"])).unwrap();
    assert_eq!(found.len(), 1);
    #[rustfmt::skip]
    expect(&cache, "an async batch", &mut at, Counts { memory: (1, 1), file: (0, 1), local: (1, 1), distributed: (0, 1), overall: (1, 1), ..NONE });
    let loaded =
        support::block_on(
            cache.get_or_load_async::<u32, uno_cache::Error, _, _>("za", None, || async { Ok(9) }),
        )
        .unwrap();
    assert_eq!(loaded.into_value(), 9);
    #[rustfmt::skip]
    expect(&cache, "an async load", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), distributed: (0, 1), overall: (0, 1), loads: 1, ..NONE });

    assert!(cache.delete("m").unwrap());
    assert_eq!(cache.get::<u32>("m").unwrap(), None);
    #[rustfmt::skip]
    expect(&cache, "a deleted key misses everywhere", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), distributed: (0, 1), overall: (0, 1), ..NONE });
    let stats = cache.stats();
    assert_eq!((stats.local.deletes, stats.distributed.deletes), (1, 1));
    assert_eq!(stats.memory.deletes, 0);
    // Written by this manager: m, f and the loaded z and za; L1 also took the 3 L2 hits.
    assert_eq!(
        (stats.local.sets, stats.file.sets, stats.distributed.sets),
        (7, 7, 4)
    );

    // What the levels hold: r, r2, f, z, ra, za in both L1 tiers and L2.
    assert_eq!(stats.size.file.items, 6, "{:?}", stats.size);
    assert_eq!(stats.size.local, stats.size.file);
    // L2's size is read afresh by a manager that never read it (this one reuses its readings).
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = CacheManager::new(config(fresh_dir.path(), &redis, "revalidate")).unwrap();
    assert_eq!(fresh.stats().size.distributed.items, 6);
}

/// An L2 that cannot be reached: each read it failed is one L2 error and one miss overall, for
/// single reads and batches alike, never also an L2 miss.
#[test]
fn reads_an_l2_failure_falls_back_on_count_one_error_per_call_and_one_miss_per_key() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis, "revalidate")).unwrap();
    let mut at = NONE;
    redis.kill();
    assert_eq!(cache.get::<u32>("a").unwrap(), None);
    #[rustfmt::skip]
    expect(&cache, "a single read L2 failed", &mut at, Counts { memory: (0, 1), file: (0, 1), local: (0, 1), overall: (0, 1), l2_errors: 1, ..NONE });
    let found = cache.multi_get::<u32>(&["b", "c", "d"]).unwrap();
    assert!(found.is_empty());
    #[rustfmt::skip]
    expect(&cache, "a batch L2 failed", &mut at, Counts { memory: (0, 3), file: (0, 3), local: (0, 3), overall: (0, 3), l2_errors: 1, ..NONE });
}

/// A restart empties the memory tier; with `restart_policy = "trust"` the file tier answers the
/// first read of each key (a file hit) and refills the memory tier, which answers the second.
#[test]
fn after_a_restart_the_memory_tier_is_empty_and_the_file_tier_counts_its_refills() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheManager::new(config(dir.path(), &redis, "trust")).unwrap();
        for i in 0..5u32 {
            cache.set(&format!("k{i}"), &i, None).unwrap();
            assert_eq!(cache.get::<u32>(&format!("k{i}")).unwrap(), Some(i));
        }
        assert_eq!(cache.stats().size.memory.items, 5);
        cache.flush().unwrap();
    }
    let cache = CacheManager::new(config(dir.path(), &redis, "trust")).unwrap();
    let stats = cache.stats();
    assert_eq!(counts(&stats), NONE, "counters start at zero in a new process");
    assert_eq!((stats.size.memory.items, stats.size.file.items), (0, 5));
    let mut at = NONE;
    for i in 0..5u32 {
        assert_eq!(cache.get::<u32>(&format!("k{i}")).unwrap(), Some(i));
    }
    #[rustfmt::skip]
    expect(&cache, "first reads after the restart", &mut at, Counts { memory: (0, 5), file: (5, 0), local: (5, 0), overall: (5, 0), ..NONE });
    for i in 0..5u32 {
        assert_eq!(cache.get::<u32>(&format!("k{i}")).unwrap(), Some(i));
    }
    #[rustfmt::skip]
    expect(&cache, "second reads after the restart", &mut at, Counts { memory: (5, 0), local: (5, 0), overall: (5, 0), ..NONE });
    let stats = cache.stats();
    assert_eq!((stats.size.memory.items, stats.memory.sets), (5, 5));

    assert_eq!(cache.invalidate_prefix("k").unwrap(), 5);
    let stats = cache.stats();
    // The memory tier keeps the place of each key dropped from it, empty, until evicted (as
    // `Sizes::memory` says): its items are its places, not values.
    assert_eq!(
        (stats.size.memory.items, stats.size.file.items),
        (5, 0),
        "{:?}",
        stats.size
    );
    for i in 0..5u32 {
        assert_eq!(cache.get::<u32>(&format!("k{i}")).unwrap(), None);
    }
    #[rustfmt::skip]
    expect(&cache, "reads after a prefix invalidation", &mut at, Counts { memory: (0, 5), file: (0, 5), local: (0, 5), distributed: (0, 5), overall: (0, 5), ..NONE });
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = CacheManager::new(config(fresh_dir.path(), &redis, "trust")).unwrap();
    assert_eq!(fresh.stats().size.distributed.items, 0);
}

/// Readers on more threads than the counters have stripes of their own lose no count.
#[test]
fn readers_on_many_threads_lose_no_count() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis, "revalidate")).unwrap();
    for i in 0..10u32 {
        cache.set(&format!("k{i}"), &i, None).unwrap();
        assert_eq!(cache.get::<u32>(&format!("k{i}")).unwrap(), Some(i));
    }
    let before = counts(&cache.stats());
    const THREADS: u64 = 20;
    const READS: u64 = 2_000;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let cache = &cache;
            s.spawn(move || {
                for n in 0..READS {
                    let key = format!("k{}", (n + t) % 10);
                    assert!(cache.get::<u32>(&key).unwrap().is_some());
                    // A raw read skips the memory tier: a file hit.
                    assert!(cache.get_raw(&key).unwrap().is_some());
                }
            });
        }
    });
    let stats = cache.stats();
    let n = THREADS * READS;
    assert_eq!(stats.memory.hits - before.memory.0, n);
    assert_eq!(stats.memory.misses, before.memory.1);
    assert_eq!(stats.file.hits - before.file.0, n);
    assert_eq!(stats.local.hits - before.local.0, 2 * n);
    assert_eq!(stats.overall.hits - before.overall.0, 2 * n);
    assert_eq!(stats.overall.reads, stats.overall.hits + stats.overall.misses);
}

/// Evictions: the memory tier holds its bound of values, the file tier what its bound in bytes
/// leaves, and each size is what the tier's own counters say it kept (sets less evictions), and
/// what reads find there.
#[test]
fn sizes_after_evictions_are_what_the_tiers_kept_and_what_reads_find() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let local = r#"memory_items = 3
        max_size = 1
        durability = "none""#;
    let cache = CacheManager::new(config_with(dir.path(), &redis, "revalidate", local, "")).unwrap();
    let value = vec![7u8; 20_000];
    const KEYS: u64 = 200;
    for i in 0..KEYS {
        cache.set(&format!("k{i}"), &value, None).unwrap();
    }
    cache.flush().unwrap();
    let stats = cache.stats();
    assert!(
        stats.file.evictions > 0,
        "4 MB into a 1 MiB store: {:?}",
        stats.file
    );
    assert_eq!(
        stats.size.file.items,
        stats.file.sets - stats.file.evictions - stats.file.expirations,
        "{:?} {:?}",
        stats.size,
        stats.file
    );
    // Reopened without L2 (no read is answered or backfilled from it), the file tier reports the
    // same items, and raw reads find exactly those.
    let items = stats.size.file.items;
    drop(cache);
    let alone = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = {:?}\nmax_size = 1\ndurability = \"none\"\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let cache = CacheManager::new(alone).unwrap();
    assert_eq!(cache.stats().size.file.items, items);
    let held = (0..KEYS)
        .filter(|i| cache.get_raw(&format!("k{i}")).unwrap().is_some())
        .count() as u64;
    assert!(held > 0 && held < KEYS, "{held}");
    assert_eq!(held, items);
    let stats = cache.stats();
    assert_eq!((stats.file.hits, stats.file.misses), (held, KEYS - held));
    assert_eq!((stats.overall.hits, stats.overall.misses), (held, KEYS - held));

    // Typed reads of 5 keys the file tier holds, twice: the memory tier keeps 3.
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config_with(
        dir.path(),
        &redis,
        "revalidate",
        "memory_items = 3",
        "",
    ))
    .unwrap();
    for i in 0..5u32 {
        cache.set(&format!("m{i}"), &i, None).unwrap();
    }
    for _ in 0..2 {
        for i in 0..5u32 {
            assert_eq!(cache.get::<u32>(&format!("m{i}")).unwrap(), Some(i));
        }
    }
    let stats = cache.stats();
    assert!(stats.size.memory.items <= 3, "{:?}", stats.size);
    assert_eq!(
        stats.size.memory.items,
        stats.memory.sets - stats.memory.evictions,
        "{:?}",
        stats.memory
    );
    assert_eq!(stats.memory.hits + stats.memory.misses, 10);
    assert_eq!(stats.file.hits, stats.memory.misses);
    check_sums(&stats, "memory tier of 3");
}

/// Callers of one missing key that wait on one load: each read counted once (a miss at every
/// level), one load, the others counted as waits.
#[test]
fn callers_waiting_on_one_load_count_one_read_each_and_one_load() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis, "revalidate")).unwrap();
    const CALLERS: u64 = 6;
    // The loader holds until every other caller waits on it.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    std::thread::scope(|s| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|_| {
                let gate = Arc::clone(&gate);
                let cache = &cache;
                s.spawn(move || {
                    cache
                        .get_or_load::<u32, uno_cache::Error, _>("k", None, move || {
                            let (open, opened) = &*gate;
                            let mut open = open.lock().unwrap();
                            while !*open {
                                open = opened.wait(open).unwrap();
                            }
                            Ok(42)
                        })
                        .unwrap()
                        .into_value()
                })
            })
            .collect();
        support::wait_until("every other caller waiting on the load", || {
            cache.stats().overall.load_waits == CALLERS - 1
        });
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        for caller in callers {
            assert_eq!(caller.join().unwrap(), 42);
        }
    });
    let stats = cache.stats();
    let n = CALLERS;
    #[rustfmt::skip]
    assert_eq!(counts(&stats), Counts { memory: (0, n), file: (0, n), local: (0, n), distributed: (0, n), overall: (0, n), loads: 1, ..NONE });
    assert_eq!(stats.overall.load_waits, n - 1);
    check_sums(&stats, "callers of one load");
}

/// An expired value: a miss in both local tiers (and overall, without an L2), each tier
/// counting it as an expiration once, and the rates moving accordingly.
#[test]
fn an_expired_value_is_a_miss_in_both_tiers_and_one_expiration_in_each() {
    let dir = tempfile::tempdir().unwrap();
    let clock = uno_cache::ManualClock::new(1_700_000_000_000);
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = {:?}\nmemory_items = 100\n",
        dir.path().display().to_string()
    ))
    .unwrap();
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    cache
        .set("e", &1u32, Some(std::time::Duration::from_secs(10)))
        .unwrap();
    cache.set("k", &2u32, None).unwrap();
    for key in ["e", "k", "e", "k"] {
        assert!(cache.get::<u32>(key).unwrap().is_some());
    }
    let mut at = NONE;
    #[rustfmt::skip]
    expect(&cache, "two file hits, two memory hits", &mut at, Counts { memory: (2, 2), file: (2, 0), local: (4, 0), overall: (4, 0), ..NONE });
    clock.advance(std::time::Duration::from_secs(11));
    assert_eq!(cache.get::<u32>("e").unwrap(), None);
    assert_eq!(cache.get::<u32>("k").unwrap(), Some(2));
    #[rustfmt::skip]
    expect(&cache, "an expired value and a live one", &mut at, Counts { memory: (1, 1), file: (0, 1), local: (1, 1), overall: (1, 1), ..NONE });
    let stats = cache.stats();
    assert_eq!(
        (
            stats.memory.expirations,
            stats.file.expirations,
            stats.memory.evictions
        ),
        (1, 1, 0),
        "{:?} {:?}",
        stats.memory,
        stats.file
    );
    assert_eq!(stats.size.file.items, 1, "{:?}", stats.size);
}
