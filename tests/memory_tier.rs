//! The memory tier of decoded values in front of the file store (`local.memory_items`): a typed
//! hit comes from it; its entries expire with the file entry they came from; every write,
//! delete and invalidation — from this manager, from threads racing it, from another instance
//! through the backplane — leaves it unable to answer an older value; it is empty after a
//! restart and refills from the file tier.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;
mod policy_sim;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "redis")]
use std::time::Instant;

#[cfg(feature = "redis")]
use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, ManualClock};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
    age: u8,
}

fn config(dir: &Path, memory_items: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        memory_items = {memory_items}
        "#,
        dir.display()
    ))
    .unwrap()
}

/// A memory tier of `memory_items` values in front of a file tier of 1 MiB, small enough for a
/// test to make it evict many times, without fsyncs.
fn churning_file_tier(dir: &Path, memory_items: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        max_size = 1
        durability = "none"
        memory_items = {memory_items}
        "#,
        dir.display()
    ))
    .unwrap()
}

/// A manager of 100 memory-tier values on a manual clock.
fn on_manual_clock(dir: &Path) -> (CacheManager, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let cache = CacheManager::builder()
        .config(config(dir, 100))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (cache, clock)
}

fn ada(age: u8) -> User {
    User {
        name: "Ada".to_owned(),
        age,
    }
}

#[test]
fn a_second_typed_read_is_a_memory_tier_hit_counted_as_a_local_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    cache.set("u", &ada(36), None).unwrap();
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(36)));
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(36)));
    // `get_arc` keeps the value as an `Arc<User>`, beside the `User` of `get`.
    assert_eq!(cache.get_arc::<User>("u").unwrap().as_deref(), Some(&ada(36)));
    assert_eq!(cache.get_arc::<User>("u").unwrap().as_deref(), Some(&ada(36)));
    let stats = cache.stats();
    assert_eq!(
        (stats.memory.hits, stats.memory.misses, stats.memory.sets),
        (2, 2, 2),
        "{:?}",
        stats.memory
    );
    assert_eq!(stats.local.hits, 4, "both tiers' hits are local hits");
    assert_eq!(
        (stats.file.hits, stats.file.misses),
        (2, 0),
        "the file tier alone: the two reads the memory tier missed"
    );
    assert_eq!(stats.hit_rate.file, 1.0);
    assert_eq!(stats.size.file, stats.size.local);
    assert_eq!(stats.size.file.items, 1);
    assert!(stats.memory.enabled);
    assert_eq!(stats.size.memory.items, 2);
}

#[test]
fn latencies_are_reported_per_tier_and_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    cache.set("u", &ada(36), None).unwrap();
    // Typed reads are timed one in 64 per thread and L1 calls one in 16, the first of each
    // thread included: 64 memory-tier hits, then 64 file-tier reads (raw reads skip the memory
    // tier), give each histogram samples.
    for _ in 0..64 {
        assert!(cache.get::<User>("u").unwrap().is_some());
    }
    for _ in 0..64 {
        assert!(cache.get_raw("u").unwrap().is_some());
    }
    let stats = cache.stats();
    assert!(stats.memory.get_latency.samples > 0, "{:?}", stats.memory);
    assert!(stats.local.get_latency.samples > 0, "{:?}", stats.local);
    assert!(stats.overall.get_latency.samples > 0, "{:?}", stats.overall);
    assert!(stats.overall.get_latency.p99_ns >= stats.overall.get_latency.p50_ns);
    assert!(stats.memory.get_latency.p50_ns > 0);
}

#[test]
fn a_batch_read_is_answered_by_the_memory_tier_first_and_fills_it() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    cache.multi_set([("a", ada(1)), ("b", ada(2))], None).unwrap();
    assert!(cache.get::<User>("a").unwrap().is_some());
    let before = cache.stats().memory;
    let found = cache.multi_get::<User>(&["a", "b", "missing"]).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["b"], ada(2));
    let after = cache.stats().memory;
    assert_eq!(after.hits - before.hits, 1, "a came from the memory tier");
    assert_eq!(after.sets - before.sets, 1, "b was decoded once and kept");
    let again = cache.multi_get::<User>(&["a", "b"]).unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(
        cache.stats().memory.hits - after.hits,
        2,
        "both from the memory tier now"
    );
    // A write reaches the tier: the batch sees the new value.
    cache.set("b", &ada(3), None).unwrap();
    assert_eq!(cache.multi_get::<User>(&["b"]).unwrap()["b"], ada(3));
}

#[test]
fn without_a_bound_there_is_no_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 0)).unwrap();
    cache.set("u", &ada(1), None).unwrap();
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(1)));
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(1)));
    let stats = cache.stats();
    assert!(!stats.memory.enabled);
    assert_eq!(stats.memory.hits + stats.memory.misses, 0);
    assert_eq!(stats.local.hits, 2);
}

#[test]
fn a_memory_tier_entry_expires_with_the_file_entry_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = on_manual_clock(dir.path());
    cache.set("u", &ada(1), Some(Duration::from_secs(5))).unwrap();
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(1)));
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(1)), "a memory-tier hit");
    clock.advance(Duration::from_millis(5001));
    assert_eq!(cache.get::<User>("u").unwrap(), None, "expired in both tiers");
    assert_eq!(cache.stats().memory.hits, 1);
}

/// The memory tier reports the values it evicted for room and those a read found expired, as
/// the other levels do (it reported 0 for both): every value it took is either still there or
/// counted as evicted.
#[test]
fn the_memory_tier_counts_the_values_it_evicts_and_finds_expired() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = on_manual_clock(dir.path());
    for i in 0..300 {
        cache.set(&format!("k{i}"), &ada(1), None).unwrap();
    }
    for i in 0..300 {
        assert_eq!(cache.get::<User>(&format!("k{i}")).unwrap(), Some(ada(1)));
    }
    let stats = cache.stats();
    assert_eq!(stats.memory.sets, 300, "each read kept its value");
    assert!(stats.size.memory.items <= 100, "{:?}", stats.size.memory);
    assert_eq!(
        stats.memory.evictions + stats.size.memory.items,
        300,
        "{:?}",
        stats.memory
    );
    assert_eq!(stats.memory.expirations, 0);
    cache.set("t", &ada(2), Some(Duration::from_secs(5))).unwrap();
    assert_eq!(cache.get::<User>("t").unwrap(), Some(ada(2)));
    assert_eq!(cache.get::<User>("t").unwrap(), Some(ada(2)), "a memory-tier hit");
    clock.advance(Duration::from_millis(5001));
    assert_eq!(cache.get::<User>("t").unwrap(), None);
    assert_eq!(cache.stats().memory.expirations, 1);
}

/// A write goes to both tiers: a key the memory tier holds is answered from there right after a
/// write, with the new value, until the write's TTL ends in both tiers.
#[test]
fn a_write_of_a_key_the_memory_tier_holds_is_answered_from_it_until_the_writes_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = on_manual_clock(dir.path());
    cache.set("u", &ada(1), None).unwrap();
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(1)), "kept as a `User`");
    let sets = cache.stats().memory.sets;
    cache.set("u", &ada(2), Some(Duration::from_secs(5))).unwrap();
    let before = cache.stats();
    assert_eq!(
        before.memory.sets,
        sets + 1,
        "the write's value is a set of the memory tier"
    );
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(2)));
    let after = cache.stats();
    assert_eq!(
        after.memory.hits,
        before.memory.hits + 1,
        "answered by the memory tier: {:?}",
        after.memory
    );
    // A type the key was not read as is not filled by the write.
    assert_eq!(cache.get_arc::<User>("u").unwrap().as_deref(), Some(&ada(2)));
    assert_eq!(cache.stats().memory.misses, after.memory.misses + 1);
    clock.advance(Duration::from_millis(5001));
    assert_eq!(cache.get::<User>("u").unwrap(), None, "expired in both tiers");
    // A value of another type under the key: the tier drops the key rather than keep garbage.
    cache.set("n", &ada(1), None).unwrap();
    assert_eq!(cache.get::<User>("n").unwrap(), Some(ada(1)));
    cache.set("n", &7u64, None).unwrap();
    assert!(
        cache.get::<User>("n").is_err(),
        "decoding 7u64 as a User fails, as without the tier"
    );
    assert_eq!(cache.get::<u64>("n").unwrap(), Some(7));
}

/// A read that found nothing is noted by the memory tier: the value a loader then stores, or
/// the caller's own `set`, is answered from the memory tier at the next read.
#[test]
fn a_value_loaded_or_set_after_a_miss_is_answered_by_the_memory_tier_at_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    let loaded = cache
        .get_or_load("u", None, || Ok::<_, uno_cache::Error>(ada(5)))
        .unwrap();
    assert_eq!(loaded, uno_cache::Fetched::Fresh(ada(5)));
    assert_eq!(cache.get::<User>("v").unwrap(), None);
    cache.set("v", &ada(6), None).unwrap();
    let before = cache.stats().memory.hits;
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(5)));
    assert_eq!(cache.get::<User>("v").unwrap(), Some(ada(6)));
    assert_eq!(cache.stats().memory.hits, before + 2, "both from the memory tier");
    // A key read but never written takes no room in the tier.
    let items = cache.stats().size.memory.items;
    for i in 0..50 {
        assert_eq!(cache.get::<User>(&format!("w{i}")).unwrap(), None);
    }
    assert_eq!(cache.stats().size.memory.items, items);
}

/// Writes and deletes of one key from several threads straight to the local level (no per-key
/// order between them, unlike the manager's calls), with the key held in the memory tier
/// before each round: once they are done, the memory tier answers what the file tier holds.
#[test]
fn racing_writes_and_deletes_leave_the_memory_tier_agreeing_with_the_file_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    let encode = |age: u8| cache.codec().encode("k", &ada(age)).unwrap();
    let ttl = Some(Duration::from_secs(60));
    let (mut refreshed, mut dropped) = (0u32, 0u32);
    for round in 0..1000u32 {
        cache.local().set("k", &encode(0), ttl).unwrap();
        assert_eq!(
            cache.get::<User>("k").unwrap(),
            Some(ada(0)),
            "round {round}: held"
        );
        let start = Arc::new(std::sync::Barrier::new(3));
        // The thread started last is the one the barrier lets go on running: where the three
        // do not overlap (one core free), it goes first. Always the delete's, the delete ran
        // first in every round of a loaded machine, and no round ended without the key.
        let mut ops = [1u8, 2, 0];
        ops.rotate_left(usize::try_from(round % 3).unwrap());
        let threads: Vec<_> = ops
            .into_iter()
            .map(|age| {
                let (cache, start) = (cache.clone(), Arc::clone(&start));
                let bytes = encode(age);
                std::thread::spawn(move || {
                    start.wait();
                    if age == 0 {
                        cache.local().delete("k").unwrap();
                    } else {
                        cache.local().set("k", &bytes, ttl).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let file = cache
            .local()
            .get("k")
            .unwrap()
            .map(|e| cache.codec().decode::<User>("k", &e.value).unwrap());
        let hits = cache.stats().memory.hits;
        assert_eq!(cache.get::<User>("k").unwrap(), file, "round {round}");
        if cache.stats().memory.hits > hits {
            refreshed += 1;
        } else {
            dropped += 1;
        }
    }
    // Both outcomes happen: the refresh is not simply off, nor always on.
    assert!(
        refreshed > 0 && dropped > 0,
        "refreshed {refreshed}, dropped {dropped}"
    );
}

#[test]
fn every_write_delete_and_invalidation_reaches_the_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    let warm = |key: &str, age: u8| {
        cache.set(key, &ada(age), None).unwrap();
        assert_eq!(cache.get::<User>(key).unwrap(), Some(ada(age)));
        assert_eq!(
            cache.get::<User>(key).unwrap(),
            Some(ada(age)),
            "{key} from the memory tier"
        );
    };
    warm("a", 1);
    cache.set("a", &ada(2), None).unwrap();
    assert_eq!(cache.get::<User>("a").unwrap(), Some(ada(2)), "set");
    warm("b", 1);
    cache
        .set_raw("b", &cache.codec().encode("b", &ada(3)).unwrap(), None)
        .unwrap();
    assert_eq!(cache.get::<User>("b").unwrap(), Some(ada(3)), "set_raw");
    warm("c", 1);
    cache.multi_set([("c", ada(4))], None).unwrap();
    assert_eq!(cache.get::<User>("c").unwrap(), Some(ada(4)), "multi_set");
    warm("d", 1);
    assert!(cache.delete("d").unwrap());
    assert_eq!(cache.get::<User>("d").unwrap(), None, "delete");
    warm("e", 1);
    assert_eq!(cache.multi_delete(&["e"]).unwrap(), 1);
    assert_eq!(cache.get::<User>("e").unwrap(), None, "multi_delete");
    warm("f", 1);
    assert!(cache.invalidate_local("f").unwrap());
    assert_eq!(cache.get::<User>("f").unwrap(), None, "invalidate_local");
    warm("p:1", 1);
    assert!(cache.invalidate_prefix("p:").unwrap() >= 1);
    assert_eq!(cache.get::<User>("p:1").unwrap(), None, "invalidate_prefix");
    warm("g", 1);
    cache.local().clear().unwrap();
    assert_eq!(cache.get::<User>("g").unwrap(), None, "clear");
}

/// One thread writes ever larger ages to one key (each set completes before the next), others
/// read it through the memory tier: no reader ever sees an age go down, and at the end every
/// tier answers the last one.
#[test]
fn readers_writers_and_deleters_on_a_churning_file_tier_leave_both_tiers_agreeing() {
    // Every few writes evict, and every eviction asks the memory tier which keys it holds while
    // other threads read, write and delete those keys through it: no deadlock, and no value the
    // file tier no longer holds is left readable.
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(churning_file_tier(dir.path(), 50)).unwrap();
    let hot: Arc<Vec<String>> = Arc::new((0..20).map(|i| format!("hot-{i}")).collect());
    for key in hot.iter() {
        cache.set(key, &ada(0), None).unwrap();
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::new();
    for worker in 0..4u32 {
        let (cache, hot, done) = (cache.clone(), Arc::clone(&hot), done_tx.clone());
        threads.push(std::thread::spawn(move || {
            let cold = vec![1u8; 1000];
            for i in 0..5_000u32 {
                let key = &hot[(i as usize * 7 + worker as usize) % hot.len()];
                match worker {
                    0 | 1 => {
                        cache.get::<User>(key).unwrap();
                    }
                    2 if i % 5 == 0 => {
                        cache.delete(key).unwrap();
                    }
                    2 => cache.set(key, &ada((i % 200) as u8), None).unwrap(),
                    _ => cache.set(&format!("cold-{i}"), &cold, None).unwrap(),
                }
            }
            done.send(()).unwrap();
        }));
    }
    for _ in 0..threads.len() {
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a worker is stuck: eviction and the memory tier deadlocked?");
    }
    for t in threads {
        t.join().unwrap();
    }
    let stats = cache.stats();
    assert!(stats.file.evictions > 0, "{:?}", stats.file);
    assert!(stats.memory.hits > 0, "{:?}", stats.memory);
    for key in hot.iter() {
        let file = cache
            .local()
            .get(key)
            .unwrap()
            .map(|e| cache.codec().decode::<User>(key, &e.value).unwrap());
        assert_eq!(cache.get::<User>(key).unwrap(), file, "{key}");
    }
}

#[test]
fn readers_racing_writes_never_see_a_value_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    cache.set("k", &ada(0), None).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut last = 0u8;
                let mut reads = 0u64;
                loop {
                    let finished = done.load(Ordering::SeqCst);
                    let seen = cache.get::<User>("k").unwrap().expect("never deleted").age;
                    assert!(seen >= last, "read {seen} after {last}");
                    last = seen;
                    reads += 1;
                    if finished {
                        // Read after every set completed: the last value, whatever tier answers.
                        assert_eq!(seen, 250, "a read after the last set");
                        return reads;
                    }
                }
            })
        })
        .collect();
    for age in 1..=250u8 {
        cache.set("k", &ada(age), None).unwrap();
        std::thread::yield_now();
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        assert!(reader.join().unwrap() > 0);
    }
    assert_eq!(cache.get::<User>("k").unwrap(), Some(ada(250)));
    assert_eq!(cache.get_arc::<User>("k").unwrap().as_deref(), Some(&ada(250)));
    assert!(cache.stats().memory.hits > 0, "the readers used the memory tier");
}

#[test]
fn after_a_restart_the_memory_tier_is_empty_and_refills_from_the_file_tier() {
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
        cache.set("u", &ada(9), None).unwrap();
        assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(9)));
    }
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    assert_eq!(cache.stats().size.memory.items, 0);
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(9)));
    assert_eq!(cache.get::<User>("u").unwrap(), Some(ada(9)));
    let stats = cache.stats();
    assert_eq!((stats.memory.misses, stats.memory.hits), (1, 1));
}

#[test]
fn keys_served_by_the_memory_tier_stay_in_the_file_tier_while_it_churns_and_after_a_restart() {
    // The file tier sees no read of a key the memory tier serves; without asking that tier, its
    // eviction took the keys read most for unread ones, and a restart found them gone.
    let dir = tempfile::tempdir().unwrap();
    let config = || churning_file_tier(dir.path(), 100);
    let hot: Vec<String> = (0..10).map(|i| format!("hot-{i}")).collect();
    let cold = vec![3u8; 1000];
    {
        let cache = CacheManager::new(config()).unwrap();
        for key in &hot {
            cache.set(key, &ada(1), None).unwrap();
        }
        // About ten passes of the 1 MiB log, the hot keys read all along.
        for i in 0..10_000 {
            cache.set(&format!("cold-{i}"), &cold, None).unwrap();
            let key = &hot[i % hot.len()];
            assert_eq!(cache.get::<User>(key).unwrap(), Some(ada(1)));
        }
        let stats = cache.stats();
        assert!(stats.file.hits <= hot.len() as u64, "{:?}", stats.file);
        assert!(stats.memory.hits >= 9_990, "{:?}", stats.memory);
    }
    // No L2: after the restart only the file tier can answer.
    let cache = CacheManager::new(config()).unwrap();
    for key in &hot {
        assert_eq!(
            cache.get::<User>(key).unwrap(),
            Some(ada(1)),
            "{key} left the file tier"
        );
    }
}

#[test]
fn the_keys_read_most_survive_a_restart_even_in_a_file_tier_a_few_times_the_memory_tier() {
    // Zipf reads: the memory tier serves the keys read most, the file tier (about 1,000 values
    // of 900 bytes, three times the memory tier) turns on the misses of the rest. A sample of
    // the memory tier's hits told to the file tier left 11 to 17 of the 50 keys read most
    // there: keys read a few times per pass of its log were sampled too seldom.
    let dir = tempfile::tempdir().unwrap();
    let config = || churning_file_tier(dir.path(), 300);
    let trace = policy_sim::zipf_pattern(10_000, 0.99, 60_000, 9);
    let value = vec![5u8; 900];
    {
        let cache = CacheManager::new(config()).unwrap();
        for &k in &trace {
            let key = format!("k{k}");
            if cache.get::<Vec<u8>>(&key).unwrap().is_none() {
                cache.set(&key, &value, None).unwrap();
            }
        }
        assert!(cache.stats().file.evictions > 0, "the file tier never turned");
    }
    let mut reads = std::collections::HashMap::<u32, u32>::new();
    for &k in &trace {
        *reads.entry(k).or_default() += 1;
    }
    let mut by_reads: Vec<(u32, u32)> = reads.into_iter().map(|(k, n)| (n, k)).collect();
    by_reads.sort_unstable_by(|a, b| b.cmp(a));
    // No L2: after the restart only the file tier can answer.
    let cache = CacheManager::new(config()).unwrap();
    let kept = by_reads[..50]
        .iter()
        .filter(|(_, k)| cache.get::<Vec<u8>>(&format!("k{k}")).unwrap().is_some())
        .count();
    assert!(
        kept >= 45,
        "only {kept} of the 50 keys read most are left in the file tier"
    );
}

#[test]
fn large_values_fill_the_memory_tier_up_to_its_bound_in_bytes_not_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            [local]
            type = "file"
            path = "{}"
            memory_items = 1000
            memory_max_mb = 1
            "#,
            dir.path().display()
        ))
        .unwrap(),
    )
    .unwrap();
    // 100 values of 100 KiB, each read twice: 1,000 places, but room for about ten in 1 MiB.
    let value = vec![7u8; 100 << 10];
    for i in 0..100 {
        cache.set(&format!("blob-{i}"), &value, None).unwrap();
    }
    for _ in 0..2 {
        for i in 0..100 {
            let key = format!("blob-{i}");
            assert_eq!(
                cache.get::<Vec<u8>>(&key).unwrap().as_deref(),
                Some(&value[..]),
                "{key}"
            );
        }
    }
    let stats = cache.stats();
    assert!(stats.memory.sets >= 100, "{:?}", stats.memory);
    let memory = stats.size.memory;
    assert!((1..=10).contains(&memory.items), "{memory:?}");
    // What they count against the bound: their bytes, within the bound.
    assert!(memory.bytes >= memory.items * (100 << 10), "{memory:?}");
    assert!(memory.bytes <= 1 << 20, "{memory:?}");
}

#[test]
fn an_async_read_counts_one_memory_tier_miss_then_one_hit() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    cache.set("u", &ada(3), None).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        assert_eq!(cache.get_async::<User>("u").await.unwrap(), Some(ada(3)));
        assert_eq!(cache.get_async::<User>("u").await.unwrap(), Some(ada(3)));
        assert_eq!(cache.get_async::<User>("none").await.unwrap(), None);
    });
    let stats = cache.stats();
    assert_eq!((stats.memory.misses, stats.memory.hits), (2, 1));
}

/// Two instances share a Redis L2 and the backplane: a write in one drops the key from the
/// other's memory tier as well as its file tier.
#[test]
#[cfg(feature = "redis")]
fn another_instances_write_drops_the_key_from_this_memory_tier() {
    let redis = RedisServer::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_redis = |dir: &Path| {
        CacheConfig::from_toml_str(&format!(
            r#"
            [local]
            type = "file"
            path = "{}"
            memory_items = 100
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "tier:"
            [invalidation]
            enabled = true
            "#,
            dir.display(),
            redis.addr()
        ))
        .unwrap()
    };
    let a = CacheManager::new(with_redis(da.path())).unwrap();
    let b = CacheManager::new(with_redis(db.path())).unwrap();
    // Each of a's sets reaches b as a message; b reads only once the message of the first one
    // has come (else it would drop what b is about to read).
    let messages_at_b = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.stats().consistency.invalidations_received < n {
            assert!(Instant::now() < deadline, "message {n} never reached b");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    a.set("u", &ada(1), None).unwrap();
    messages_at_b(1);
    assert_eq!(b.get::<User>("u").unwrap(), Some(ada(1)));
    assert_eq!(b.get::<User>("u").unwrap(), Some(ada(1)));
    assert_eq!(b.stats().memory.hits, 1, "b answers from its memory tier");
    a.set("u", &ada(2), None).unwrap();
    messages_at_b(2);
    assert_eq!(
        b.get::<User>("u").unwrap(),
        Some(ada(2)),
        "not the value a replaced"
    );
}

#[test]
fn a_prefix_invalidation_drops_values_the_memory_tier_kept_after_the_file_tier_evicted_them() {
    // The memory tier keeps what it decoded until its own eviction, so it can hold a value the
    // churning file tier has evicted: listing the prefix in the file tier alone left those
    // readable after `invalidate_prefix` returned.
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(churning_file_tier(dir.path(), 5_000)).unwrap();
    let user = |i: usize| User {
        name: format!("{i:0>900}"),
        age: 1,
    };
    for i in 0..3_000 {
        let key = format!("p:{i}");
        cache.set(&key, &user(i), None).unwrap();
        assert_eq!(cache.get::<User>(&key).unwrap(), Some(user(i)));
    }
    let in_memory_only = (0..3_000)
        .filter(|i| cache.local().get(&format!("p:{i}")).unwrap().is_none())
        .count();
    assert!(
        in_memory_only > 0,
        "the file tier evicted nothing: the test proves nothing"
    );
    cache.invalidate_prefix("p:").unwrap();
    for i in 0..3_000 {
        assert_eq!(cache.get::<User>(&format!("p:{i}")).unwrap(), None, "p:{i}");
    }
}

#[test]
fn a_delete_finds_a_value_the_memory_tier_kept_after_the_file_tier_evicted_it() {
    // Without an L2, the local level's answer is the delete's: it said "not there" of a key
    // whose value a typed read had just answered from the memory tier.
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(churning_file_tier(dir.path(), 5_000)).unwrap();
    let user = |i: usize| User {
        name: format!("{i:0>900}"),
        age: 1,
    };
    for i in 0..3_000 {
        let key = format!("k{i}");
        cache.set(&key, &user(i), None).unwrap();
        assert_eq!(cache.get::<User>(&key).unwrap(), Some(user(i)));
    }
    let in_memory_only: Vec<String> = (0..3_000)
        .map(|i| format!("k{i}"))
        .filter(|key| cache.local().get(key).unwrap().is_none())
        .take(4)
        .collect();
    assert_eq!(
        in_memory_only.len(),
        4,
        "the file tier evicted too little: the test proves nothing"
    );
    for key in &in_memory_only {
        assert!(
            cache.get::<User>(key).unwrap().is_some(),
            "{key} answered from memory"
        );
    }
    assert!(cache.delete(&in_memory_only[0]).unwrap(), "delete");
    assert_eq!(
        cache
            .multi_delete(&[&in_memory_only[1], &in_memory_only[2], "never-set"])
            .unwrap(),
        2,
        "multi_delete"
    );
    assert!(
        cache.invalidate_local(&in_memory_only[3]).unwrap(),
        "invalidate_local"
    );
    for key in &in_memory_only {
        assert_eq!(cache.get::<User>(key).unwrap(), None, "{key}");
    }
    // A key neither tier holds is still not found.
    assert!(!cache.delete(&in_memory_only[0]).unwrap());
    assert_eq!(cache.multi_delete(&[&in_memory_only[1]]).unwrap(), 0);
}

/// The two tiers' batch delete counts a key whose value only the memory tier still held by
/// asking the level below which keys it holds (`holds_many`, which the file store answers from
/// its index), not by reading their values: a read copied each value out, and counted in the
/// file store's eviction policy as a use of a key about to be deleted.
#[test]
fn a_batch_delete_through_the_two_tiers_asks_the_level_below_what_it_holds_without_reading_it() {
    use manager_support::{ScriptedStore, START_MS};
    use uno_cache::local::hot::HotTier;
    use uno_cache::local::tiered::Tiered;
    use uno_cache::{LocalStorage, Storage};

    let clock = ManualClock::new(START_MS);
    let below = ScriptedStore::new("below", &clock);
    let hot = Arc::new(HotTier::new(100, 1 << 20, Arc::new(clock.clone())));
    let tiers = Tiered::new(Arc::clone(&hot), Arc::clone(&below) as Arc<dyn LocalStorage>);
    below.put_raw("both", b"1", 0);
    hot.insert("both", 1u32, 0, 1);
    hot.insert("memory-only", 2u32, 0, 1);
    below.put_raw("below-only", b"3", 0);
    below.clear_calls();
    assert_eq!(
        tiers
            .delete_many(&["both", "memory-only", "below-only", "neither"])
            .unwrap(),
        3,
        "every key either tier held, once"
    );
    let calls = below.calls();
    assert!(
        !calls.iter().any(|call| call.op.starts_with("get")),
        "the level below was read: {calls:?}"
    );
    let asked: Vec<&[String]> = calls
        .iter()
        .filter(|call| call.op == "holds_many")
        .map(|call| call.keys.as_slice())
        .collect();
    assert_eq!(asked, [["both", "memory-only"]], "{calls:?}");
}

/// A bound of one item holds one item: quick_cache keeps no entry heavier than 97% of a shard,
/// and a one-item cache weighed its one entry at all of it, so the memory tier kept nothing and
/// a memory L1 of `max_size = 1` lost every write (it succeeded, the next read missed).
#[test]
fn a_memory_tier_or_memory_l1_of_one_item_keeps_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 1)).unwrap();
    cache.set("k", &5u32, None).unwrap();
    assert_eq!(cache.get::<u32>("k").unwrap(), Some(5));
    assert_eq!(cache.get::<u32>("k").unwrap(), Some(5));
    let stats = cache.stats();
    assert_eq!(
        stats.memory.hits, 1,
        "the second read was no memory-tier hit: {:?}",
        stats.memory
    );

    let memory = CacheConfig::from_toml_str("[local]\ntype = \"memory\"\nmax_size = 1\n").unwrap();
    let cache = CacheManager::new(memory).unwrap();
    cache.set("k", &5u32, Some(Duration::from_secs(60))).unwrap();
    assert_eq!(
        cache.get::<u32>("k").unwrap(),
        Some(5),
        "a memory L1 of one item kept nothing"
    );
    cache.set("j", &6u32, Some(Duration::from_secs(60))).unwrap();
    assert_eq!(cache.get::<u32>("j").unwrap(), Some(6));
}

/// A value whose `Deserialize` or `Drop` panics while one of these is set: the memory tier
/// decodes a write's bytes into the values it holds, and drops the value a write replaces.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
struct Touchy(u32);

static PANIC_ON_DECODE: AtomicBool = AtomicBool::new(false);
static PANIC_ON_DROP: AtomicBool = AtomicBool::new(false);

impl<'de> serde::Deserialize<'de> for Touchy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Touchy, D::Error> {
        let n = u32::deserialize(d)?;
        assert!(
            !PANIC_ON_DECODE.load(Ordering::SeqCst),
            "Touchy::deserialize panics (test)"
        );
        Ok(Touchy(n))
    }
}

impl Drop for Touchy {
    fn drop(&mut self) {
        if PANIC_ON_DROP.load(Ordering::SeqCst) && !std::thread::panicking() {
            panic!("Touchy::drop panics (test)");
        }
    }
}

/// A write of a key the memory tier holds decodes the new bytes into the tier's value, with the
/// type's own `Deserialize`, and drops the value it replaces: a panic in either unwound out of
/// the write (`set` of another type, or of raw bytes, too), with the file tier written and the
/// tier's entry left to whatever the unwinding left. The tier drops its entry instead; the
/// write succeeds and the file tier answers the next read (found by review).
#[test]
fn a_panic_in_a_held_types_deserialize_or_drop_does_not_unwind_out_of_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), 100)).unwrap();
    let write = |value: &Touchy, flag: &AtomicBool| {
        cache.set("t", &Touchy(0), None).unwrap();
        assert_eq!(cache.get::<Touchy>("t").unwrap(), Some(Touchy(0)));
        assert_eq!(
            cache.get::<Touchy>("t").unwrap(),
            Some(Touchy(0)),
            "kept in the tier"
        );
        flag.store(true, Ordering::SeqCst);
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cache.set("t", value, None)));
        flag.store(false, Ordering::SeqCst);
        written
    };
    let decoded = Touchy(1);
    let written = write(&decoded, &PANIC_ON_DECODE);
    assert!(
        matches!(written, Ok(Ok(()))),
        "a panicking decode unwound out of set"
    );
    assert_eq!(cache.get::<Touchy>("t").unwrap(), Some(Touchy(1)));
    let dropped = Touchy(2);
    let written = write(&dropped, &PANIC_ON_DROP);
    assert!(
        matches!(written, Ok(Ok(()))),
        "a panicking drop unwound out of set"
    );
    assert_eq!(cache.get::<Touchy>("t").unwrap(), Some(Touchy(2)));
}
