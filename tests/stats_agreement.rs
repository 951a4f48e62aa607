//! `stats()` where an operator compares figures that must agree: a file-store L1 with its
//! memory tier in front of a real `redis-server`. The same keys read one by one and in one
//! batch move the counters alike (once the reads returned, whoever backfills L1), and a failed
//! L2 call counts once in `distributed.errors`, whichever form it took and however many keys it
//! named, on an L2 whose server was killed. And what the sizes of the in-memory levels count
//! after removals and expiries: the memory tier's places, a memory L1's entries.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, CacheStats};

fn cache(dir: &Path, redis: &RedisServer) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = {:?}
        ttl = 600
        memory_items = 1000
        [distributed]
        enabled = true
        type = "redis"
        hosts = [{:?}]
        key_prefix = "agree:"
        ttl = 600
        timeout_ms = 500
        "#,
        dir.display().to_string(),
        redis.addr(),
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// What a read of keys through the levels moves, whichever form the reads took: each tier's
/// hits and misses, the backfills and the writes they made in L1, what the file tier holds.
#[derive(Debug, PartialEq, Eq)]
struct Reads {
    memory: (u64, u64),
    file: (u64, u64),
    local: (u64, u64),
    distributed: (u64, u64),
    overall: (u64, u64),
    backfills: (u64, u64),
    local_sets: u64,
    file_sets: u64,
    file_items: u64,
}

fn reads(s: &CacheStats) -> Reads {
    Reads {
        memory: (s.memory.hits, s.memory.misses),
        file: (s.file.hits, s.file.misses),
        local: (s.local.hits, s.local.misses),
        distributed: (s.distributed.hits, s.distributed.misses),
        overall: (s.overall.hits, s.overall.misses),
        backfills: (s.overall.backfills, s.overall.backfills_skipped),
        local_sets: s.local.sets,
        file_sets: s.file.sets,
        file_items: s.size.file.items,
    }
}

const KEYS: u32 = 20;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("k{i}")).collect()
}

/// Two managers on L2 keys another instance wrote (in L2 alone for them).
fn two_readers(redis: &RedisServer) -> (Vec<tempfile::TempDir>, CacheManager, CacheManager) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let writer = cache(dirs[0].path(), redis);
    for (i, key) in keys().iter().enumerate() {
        writer.set(key, &(i as u32), None).unwrap();
    }
    let single = cache(dirs[1].path(), redis);
    let batch = cache(dirs[2].path(), redis);
    (dirs, single, batch)
}

/// L2 hits read in one batch are copied into L1 by a background thread a moment after the
/// batch returns; stats read then counted none of those backfills (nor L1's writes, nor its
/// size) where the same reads one by one had counted every one.
#[test]
fn a_batch_reads_backfills_are_counted_as_single_reads_are_once_it_returned() {
    let redis = RedisServer::start();
    let (_dirs, single, batch) = two_readers(&redis);
    let keys = keys();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(single.get::<u32>(key).unwrap(), Some(i as u32));
    }
    assert_eq!(batch.multi_get::<u32>(&keys).unwrap().len(), KEYS as usize);
    let (one_by_one, batched) = (reads(&single.stats()), reads(&batch.stats()));
    let n = u64::from(KEYS);
    assert_eq!(one_by_one.backfills, (n, 0), "{one_by_one:?}");
    assert_eq!(batched, one_by_one);
    assert_eq!(batched.file_items, n);
}

/// [`a_batch_reads_backfills_are_counted_as_single_reads_are_once_it_returned`] through the
/// async forms, the stats read with `get_stats_async`.
#[test]
fn an_async_batch_reads_backfills_are_counted_as_async_single_reads_are_once_it_returned() {
    let redis = RedisServer::start();
    let (_dirs, single, batch) = two_readers(&redis);
    let keys = keys();
    let (one_by_one, batched) = support::block_on(async {
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(single.get_async::<u32>(key).await.unwrap(), Some(i as u32));
        }
        let found = batch.multi_get_async::<u32>(&keys).await.unwrap();
        assert_eq!(found.len(), KEYS as usize);
        (
            reads(&single.monitor().get_stats_async().await),
            reads(&batch.monitor().get_stats_async().await),
        )
    });
    assert_eq!(one_by_one.backfills, (u64::from(KEYS), 0), "{one_by_one:?}");
    assert_eq!(batched, one_by_one);
}

/// `distributed.errors` counts failed L2 calls, not keys: a batch of 500 keys L2 failed is one
/// error, as one single read is; 50 single reads are 50. Every form of read, write and delete,
/// blocking and async, on a server that was killed.
#[test]
fn each_failed_l2_call_counts_one_error_whatever_its_form_and_however_many_keys_it_names() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = cache(dir.path(), &redis);
    redis.kill();
    let errors = |cache: &CacheManager| cache.stats().distributed.errors;
    let batch = |name: &str| (0..500).map(|i| format!("{name}{i}")).collect::<Vec<_>>();
    let mut at = errors(&cache);
    let mut expect = |what: &str, calls: u64| {
        let now = errors(&cache);
        assert_eq!(now - at, calls, "{what}");
        at = now;
    };

    assert!(cache.multi_get::<u32>(&batch("g")).unwrap().is_empty());
    expect("a batch read of 500 keys", 1);
    for i in 0..50 {
        assert_eq!(cache.get::<u32>(&format!("s{i}")).unwrap(), None);
    }
    expect("50 single reads", 50);
    cache
        .multi_set(batch("w").iter().map(|k| (k.as_str(), 1u32)), None)
        .unwrap();
    expect("a batch write of 500 keys", 1);
    cache.set("w-one", &1u32, None).unwrap();
    expect("a single write", 1);
    cache.multi_delete(&batch("d")).unwrap();
    expect("a batch delete of 500 keys", 1);
    cache.delete("d-one").unwrap();
    expect("a single delete", 1);

    support::block_on(async {
        assert!(cache
            .multi_get_async::<u32>(&batch("ag"))
            .await
            .unwrap()
            .is_empty());
        expect("an async batch read of 500 keys", 1);
        assert_eq!(cache.get_async::<u32>("ag-one").await.unwrap(), None);
        expect("an async single read", 1);
        cache
            .multi_set_async(batch("aw").iter().map(|k| (k.as_str(), 1u32)), None)
            .await
            .unwrap();
        expect("an async batch write of 500 keys", 1);
        cache.set_async("aw-one", &1u32, None).await.unwrap();
        expect("an async single write", 1);
        cache.multi_delete_async(&batch("ad")).await.unwrap();
        expect("an async batch delete of 500 keys", 1);
        cache.delete_async("ad-one").await.unwrap();
        expect("an async single delete", 1);
    });
    let stats = cache.stats();
    // Each key the failed reads named is one miss overall, the form of the read aside.
    assert_eq!(stats.overall.misses, 500 + 50 + 500 + 1, "{:?}", stats.overall);
    assert_eq!(stats.distributed.hits + stats.distributed.misses, 0);
}

/// A manager whose L1 is `local` (TOML lines of `[local]`) in front of `redis`.
fn with_local(local: &str, redis: &RedisServer) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        ttl = 600
        {local}
        [distributed]
        enabled = true
        type = "redis"
        hosts = [{:?}]
        key_prefix = "sizes:"
        ttl = 600
        timeout_ms = 500
        "#,
        redis.addr(),
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// Writes and reads (typed) 5 keys of each kind of removal: `d*` deleted, `t*` invalidated by
/// tag, `p:*` by prefix, in that order; `k*` stay. `after` sees the manager after each removal.
fn removals(cache: &CacheManager, mut after: impl FnMut(&str, &CacheManager)) -> Vec<String> {
    let mut removed = Vec::new();
    for i in 0..5u32 {
        for key in [format!("d{i}"), format!("p:{i}"), format!("k{i}")] {
            cache.set(&key, &i, None).unwrap();
        }
        cache.set_with_tags(&format!("t{i}"), &i, None, &["grp"]).unwrap();
        for key in [
            format!("d{i}"),
            format!("p:{i}"),
            format!("t{i}"),
            format!("k{i}"),
        ] {
            assert_eq!(cache.get::<u32>(&key).unwrap(), Some(i));
            if !key.starts_with('k') {
                removed.push(key);
            }
        }
    }
    after("written and read", cache);
    for i in 0..5 {
        assert!(cache.delete(&format!("d{i}")).unwrap());
    }
    after("deleted", cache);
    assert_eq!(cache.invalidate_tag("grp").unwrap(), 5);
    after("tag invalidated", cache);
    assert!(cache.invalidate_prefix("p:").unwrap() >= 5);
    after("prefix invalidated", cache);
    for key in &removed {
        assert_eq!(cache.get::<u32>(key).unwrap(), None, "{key}");
    }
    removed
}

/// `size.memory` of the memory tier counts places, not readable values, as `Sizes::memory`
/// says: a key deleted, or dropped by a tag or prefix invalidation, keeps its place, empty
/// (weighing the least a value weighs), until the tier's eviction takes it, so that the value
/// written or read back next goes where the old one was. Those places count against the
/// tier's bounds as values do; the file tier's size drops at once.
#[test]
fn the_memory_tiers_size_keeps_the_places_of_removed_keys_as_documented() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let local = format!(
        "type = \"file\"\npath = {:?}\nmemory_items = 100",
        dir.path().display().to_string()
    );
    let cache = with_local(&local, &redis);
    let mut seen = Vec::new();
    let removed = removals(&cache, |what, cache| {
        let size = cache.stats().size;
        seen.push((what.to_owned(), size.memory.items, size.file.items));
    });
    let want = |what: &str, memory, file| (what.to_owned(), memory, file);
    assert_eq!(
        seen,
        [
            want("written and read", 20, 20),
            want("deleted", 20, 15),
            want("tag invalidated", 20, 10),
            want("prefix invalidated", 20, 5),
        ]
    );
    let size = cache.stats().size;
    let unit = size.memory.bytes / size.memory.items;
    assert_eq!(
        size.memory.bytes,
        20 * unit,
        "places weigh what a small value does: {size:?}"
    );
    // A removed key read back (written again, then read) takes its old place: no new one.
    cache.set(&removed[0], &9u32, None).unwrap();
    assert_eq!(cache.get::<u32>(&removed[0]).unwrap(), Some(9));
    assert_eq!(cache.stats().size.memory.items, 20);
}

/// A memory L1 (`type = "memory"`) holds no places: a delete and a tag invalidation take the
/// entries out, and its size drops at once; a prefix invalidation clears all of it (it cannot
/// list a prefix's keys, as `invalidate_prefix` says).
#[test]
fn a_memory_l1s_size_drops_at_once_with_every_removal() {
    let redis = RedisServer::start();
    let cache = with_local("type = \"memory\"", &redis);
    let mut seen = Vec::new();
    removals(&cache, |what, cache| {
        let s = cache.stats();
        assert!(!s.memory.enabled, "no memory tier in front of a memory L1");
        seen.push((what.to_owned(), s.size.local.items));
    });
    let want = |what: &str, items| (what.to_owned(), items);
    assert_eq!(
        seen,
        [
            want("written and read", 20),
            want("deleted", 15),
            want("tag invalidated", 10),
            want("prefix invalidated", 0),
        ]
    );
}

/// Expired values: counted in `size` until a read finds them expired (as `StorageSize::items`
/// says for the memory store and the README for the memory tier), then dropped at once.
#[test]
fn expired_values_are_counted_in_memory_sizes_until_a_read_finds_them() {
    for local in ["type = \"memory\"", "type = \"file\"\nmemory_items = 100"] {
        let dir = tempfile::tempdir().unwrap();
        let clock = uno_cache::ManualClock::new(1_700_000_000_000);
        let config = CacheConfig::from_toml_str(&format!(
            "[local]\n{local}\npath = {:?}\n",
            dir.path().display().to_string()
        ))
        .unwrap();
        let cache = CacheManager::builder()
            .config(config)
            .clock(std::sync::Arc::new(clock.clone()))
            .build()
            .unwrap();
        let ttl = Some(std::time::Duration::from_secs(10));
        for i in 0..5u32 {
            cache.set(&format!("e{i}"), &i, ttl).unwrap();
            cache.set(&format!("k{i}"), &i, None).unwrap();
        }
        for i in 0..5u32 {
            for key in [format!("e{i}"), format!("k{i}")] {
                assert_eq!(cache.get::<u32>(&key).unwrap(), Some(i));
            }
        }
        let memory = |s: &CacheStats| {
            if s.memory.enabled {
                s.size.memory.items
            } else {
                s.size.local.items
            }
        };
        assert_eq!(memory(&cache.stats()), 10, "{local}");
        clock.advance(std::time::Duration::from_secs(11));
        assert_eq!(memory(&cache.stats()), 10, "{local}: not read since they expired");
        for i in 0..5u32 {
            assert_eq!(cache.get::<u32>(&format!("e{i}")).unwrap(), None);
        }
        assert_eq!(memory(&cache.stats()), 5, "{local}: read expired, dropped");
    }
}
