//! A batch read's L2 hits reach the memory tier as well as the file tier, as a single read's do,
//! although the backfill thread copies them into L1 after the read has returned: the next read
//! of those keys is a memory-tier hit. A write, delete or invalidation of a key between the read
//! and that copy still wins in both tiers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use uno_cache::{CacheConfig, CacheManager, InProcess, MemoryStore, Storage};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
    age: u8,
}

fn user(age: u8) -> User {
    User {
        name: "Ada".to_owned(),
        age,
    }
}

/// A manager of a 100-value memory tier in front of a file tier in `dir`, with an in-process
/// L2 the test can also write to directly (what another instance's write leaves there).
fn two_tiers_and_l2(dir: &Path) -> (CacheManager, Arc<InProcess<MemoryStore>>) {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        durability = "none"
        memory_items = 100
        "#,
        dir.display()
    ))
    .unwrap();
    let l2 = Arc::new(InProcess::new(MemoryStore::new(10_000).unwrap()));
    let cache = CacheManager::builder()
        .config(config)
        .distributed(l2.clone())
        .build()
        .unwrap();
    (cache, l2)
}

/// Writes `user(i)` under `key{i}` for `0..n` into L2 alone, as encoded by `cache`'s codec.
fn in_l2_only(cache: &CacheManager, l2: &InProcess<MemoryStore>, n: u8) -> Vec<String> {
    (0..n)
        .map(|i| {
            let key = format!("key{i}");
            l2.set(&key, &cache.codec().encode(&key, &user(i)).unwrap(), None)
                .unwrap();
            key
        })
        .collect()
}

/// Reads `keys` again in one batch, once the backfill thread's copies are in, and checks it
/// answers `expected`; returns how many of them the memory tier answered and how many reads
/// reached the file tier.
fn read_again(cache: &CacheManager, keys: &[String], expected: &HashMap<String, User>) -> (u64, u64) {
    cache.flush().unwrap();
    let before = cache.stats();
    assert_eq!(&cache.multi_get::<User>(keys).unwrap(), expected);
    let after = cache.stats();
    let file_reads = |s: &uno_cache::CacheStats| s.file.hits + s.file.misses;
    (
        after.memory.hits - before.memory.hits,
        file_reads(&after) - file_reads(&before),
    )
}

#[test]
fn l2_hits_of_a_batch_read_are_memory_tier_hits_at_the_next_read() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = two_tiers_and_l2(dir.path());
    let keys = in_l2_only(&cache, &l2, 20);
    let found = cache.multi_get::<User>(&keys).unwrap();
    assert_eq!(found.len(), 20);
    assert_eq!(cache.stats().distributed.hits, 20, "all 20 came from L2");
    // The backfill thread's copy is in once the queue has drained.
    assert_eq!(
        read_again(&cache, &keys, &found),
        (20, 0),
        "the second batch read was answered by the memory tier alone"
    );
    let after = cache.stats();
    assert_eq!(after.distributed.hits, 20, "and L2 was not asked again");
    // The file tier holds them too: a restart empties the memory tier, not the file tier.
    assert_eq!(after.size.file.items, 20);
}

#[test]
fn single_reads_after_a_batch_read_of_l2_hits_come_from_the_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = two_tiers_and_l2(dir.path());
    let keys = in_l2_only(&cache, &l2, 5);
    cache.multi_get::<User>(&keys).unwrap();
    cache.flush().unwrap();
    let before = cache.stats().memory.hits;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(cache.get::<User>(key).unwrap(), Some(user(i as u8)));
    }
    assert_eq!(cache.stats().memory.hits - before, 5);
}

#[test]
fn a_write_delete_or_invalidation_between_a_batch_read_and_its_backfill_wins_in_both_tiers() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = two_tiers_and_l2(dir.path());
    for round in 0..50u8 {
        // The backfill thread lets batches gather for a moment before it writes them, so the
        // changes below usually land before it; the rule holds whichever comes first.
        let keys = in_l2_only(&cache, &l2, 4);
        cache.multi_get::<User>(&keys).unwrap();
        cache.set(&keys[0], &user(100 + round), None).unwrap();
        cache.delete(&keys[1]).unwrap();
        // Another instance's write: L2 has the new value, and the invalidation tells this one.
        l2.set(
            &keys[2],
            &cache.codec().encode(&keys[2], &user(200)).unwrap(),
            None,
        )
        .unwrap();
        cache.invalidate_local(&keys[2]).unwrap();
        cache.flush().unwrap();
        let read = |key: &String| cache.get::<User>(key).unwrap();
        assert_eq!(
            read(&keys[0]),
            Some(user(100 + round)),
            "round {round}: the write"
        );
        assert_eq!(read(&keys[1]), None, "round {round}: the delete");
        assert_eq!(read(&keys[2]), Some(user(200)), "round {round}: the invalidation");
        assert_eq!(read(&keys[3]), Some(user(3)), "round {round}: the untouched key");
        // Asked twice: the second read is a memory-tier hit if the first kept it.
        assert_eq!(
            read(&keys[0]),
            Some(user(100 + round)),
            "round {round}: the write, again"
        );
        assert_eq!(read(&keys[1]), None, "round {round}: the delete, again");
        assert_eq!(
            read(&keys[2]),
            Some(user(200)),
            "round {round}: the invalidation, again"
        );
        cache.delete(&keys[0]).unwrap();
        cache.delete(&keys[2]).unwrap();
        cache.delete(&keys[3]).unwrap();
    }
}

/// Decodes of [`Counted`] values, by any thread.
static DECODES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A value whose decodes are counted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Counted {
    #[serde(deserialize_with = "counted")]
    n: u32,
}

fn counted<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    DECODES.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    <u32 as serde::Deserialize>::deserialize(d)
}

/// The key the memory tier answered, dropped by another instance's write (its invalidation
/// leaves the key's place in the tier), is read again from L2 by a single read: the read keeps
/// what it decoded, once; the fill it made of L1 neither decodes the value again on the
/// reader's thread nor puts it a second time (`stats().memory.sets` counts one).
#[test]
fn a_single_reads_l2_hit_of_a_key_the_memory_tier_held_is_decoded_and_kept_once() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = two_tiers_and_l2(dir.path());
    cache.set("k", &Counted { n: 1 }, None).unwrap();
    assert_eq!(cache.get::<Counted>("k").unwrap(), Some(Counted { n: 1 }));
    assert_eq!(cache.get::<Counted>("k").unwrap(), Some(Counted { n: 1 }));
    assert_eq!(cache.stats().memory.hits, 1, "kept by the first read");
    // Another instance's write, and its invalidation here.
    l2.set("k", &cache.codec().encode("k", &Counted { n: 2 }).unwrap(), None)
        .unwrap();
    cache.invalidate_local("k").unwrap();
    let (sets, decodes) = (
        cache.stats().memory.sets,
        DECODES.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(cache.get::<Counted>("k").unwrap(), Some(Counted { n: 2 }));
    assert_eq!(
        (
            cache.stats().memory.sets - sets,
            DECODES.load(std::sync::atomic::Ordering::SeqCst) - decodes
        ),
        (1, 1),
        "one value kept, decoded once"
    );
    let hits = cache.stats().memory.hits;
    assert_eq!(cache.get::<Counted>("k").unwrap(), Some(Counted { n: 2 }));
    assert_eq!(
        cache.stats().memory.hits - hits,
        1,
        "and answered from memory next"
    );
}

/// Keys the memory tier answered, then dropped by another instance's writes (their places
/// stay in the tier), read again by a batch read from L2: the fill the backfill thread makes of
/// them puts the new values back in the memory tier, whose next batch read answers them.
#[test]
fn l2_hits_of_a_batch_read_of_keys_the_memory_tier_held_are_memory_tier_hits_next() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = two_tiers_and_l2(dir.path());
    let keys = in_l2_only(&cache, &l2, 3);
    cache.multi_get::<User>(&keys).unwrap();
    cache.flush().unwrap();
    let hits = cache.stats().memory.hits;
    assert_eq!(cache.multi_get::<User>(&keys).unwrap().len(), 3);
    assert_eq!(cache.stats().memory.hits - hits, 3, "held");
    for key in &keys {
        l2.set(key, &cache.codec().encode(key, &user(50)).unwrap(), None)
            .unwrap();
        cache.invalidate_local(key).unwrap();
    }
    let found = cache.multi_get::<User>(&keys).unwrap();
    assert!(found.values().all(|u| *u == user(50)), "{found:?}");
    assert_eq!(read_again(&cache, &keys, &found), (3, 0));
}

/// Two batch reads of the same L2 hits, one right after the other, each queue a fill of them
/// (the backfill thread lets batches gather for a moment first); the second fill finds the
/// values the first one put in the memory tier and refreshes them rather than drop them, so
/// the next read is a memory-tier hit, as after one batch read.
#[test]
fn two_batch_reads_of_the_same_l2_hits_leave_them_in_the_memory_tier() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = two_tiers_and_l2(dir.path());
    let keys = in_l2_only(&cache, &l2, 3);
    let first = cache.multi_get::<User>(&keys).unwrap();
    assert_eq!(cache.multi_get::<User>(&keys).unwrap(), first);
    assert_eq!(read_again(&cache, &keys, &first), (3, 0));
}
