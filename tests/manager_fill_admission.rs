//! Fill admission seen through the manager: once a file L1 is full, an L2 hit whose key was
//! read less often than the entries its backfill would evict is answered from L2 but not copied
//! into L1. The refusal is counted in `backfills_skipped`, keeps the entries read more often, and
//! never holds back a user's write of the same key. (The last few refused values wait in RAM for
//! a second read; see `src/local/file/stash.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::Duration;

use uno_cache::{CacheConfig, CacheManager, DistributedStorage, InProcess, LocalKind, MemoryStore, Storage};

const VALUE_BYTES: usize = 4_000;

/// A manager over a 1 MiB file L1 with no memory tier (so every read reaches the file store and
/// its read counts) and an in-process L2 large enough for every key.
fn manager(dir: &std::path::Path) -> (CacheManager, Arc<MemoryStore>) {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::File;
    config.local.path = Some(dir.to_path_buf());
    config.local.max_size = Some(1);
    config.local.memory_items = 0;
    config.local.ttl = Duration::from_secs(3600);
    let l2 = Arc::new(MemoryStore::new(100_000).unwrap());
    let cache = CacheManager::builder()
        .config(config)
        .distributed(Arc::new(InProcess::shared(Arc::clone(&l2))) as Arc<dyn DistributedStorage>)
        .build()
        .unwrap();
    (cache, l2)
}

fn value(tag: u8) -> Vec<u8> {
    vec![tag; VALUE_BYTES]
}

fn l1_keys(cache: &CacheManager, prefix: &str) -> Vec<String> {
    let mut keys = cache
        .local()
        .keys_with_prefix(prefix)
        .unwrap()
        .expect("the file store lists keys");
    keys.sort();
    keys
}

#[test]
fn a_full_file_l1_refuses_the_backfill_of_a_key_read_less_than_what_it_holds_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = manager(dir.path());
    // Write-through past L1's bound: L1 evicts (a user's set is always written).
    for i in 0..400 {
        cache.set_raw(&format!("held{i}"), &value(1), None).unwrap();
    }
    let held = l1_keys(&cache, "held");
    assert!(
        !held.is_empty() && held.len() < 400,
        "L1 holds {} of 400",
        held.len()
    );

    // The first backfill that would make L1 evict starts its read counts.
    l2.set("starter", &value(2), None).unwrap();
    assert_eq!(cache.get_raw("starter").unwrap(), Some(value(2)));
    // Then every entry L1 holds is read three times: each is worth more than a key read once.
    let held = l1_keys(&cache, "held");
    for key in &held {
        for _ in 0..3 {
            assert_eq!(cache.get_raw(key).unwrap(), Some(value(1)), "{key}");
        }
    }

    let before = cache.stats();
    // Sixty keys read once each: the first few fit in the room the last eviction left (a fill
    // that needs no eviction is never checked), the rest would each evict an entry read thrice.
    let fresh: Vec<String> = (0..60).map(|i| format!("fresh{i}")).collect();
    for key in &fresh {
        l2.set(key, &value(3), None).unwrap();
        assert_eq!(
            cache.get_raw(key).unwrap(),
            Some(value(3)),
            "{key} is answered from L2"
        );
    }
    let after = cache.stats();
    let refused = after.overall.backfills_skipped - before.overall.backfills_skipped;
    let copied = after.overall.backfills - before.overall.backfills;
    assert_eq!(
        refused + copied,
        60,
        "each L2 hit is either backfilled or counted as skipped"
    );
    assert!(
        refused >= 30,
        "{refused} of 60 fills refused against entries read three times"
    );
    // A refused fill writes nothing to L1's log; L1 lists, besides the fills copied, only the
    // last few refused ones, held in RAM for a second read (one per 64 entries it holds).
    let listed = l1_keys(&cache, "fresh").len() as u64;
    let held_at_most = (held.len() as u64 + copied) / 64 + 1;
    assert!(
        listed >= copied && listed - copied <= held_at_most,
        "L1 lists {listed} fresh keys: {copied} copied, at most {held_at_most} held"
    );
    let kept = l1_keys(&cache, "held");
    assert_eq!(kept, held, "no entry read three times was evicted for a fill");

    // A refused key is read from L2 again (it is not in L1), and a user's set of it is written.
    let refused_key = fresh
        .iter()
        .find(|k| !l1_keys(&cache, k).contains(k))
        .expect("a refused key");
    let l2_hits = cache.stats().distributed.hits;
    assert_eq!(cache.get_raw(refused_key).unwrap(), Some(value(3)));
    assert_eq!(cache.stats().distributed.hits, l2_hits + 1);
    cache.set_raw(refused_key, &value(4), None).unwrap();
    assert!(
        l1_keys(&cache, refused_key).contains(refused_key),
        "a set is never refused"
    );
    assert_eq!(cache.get_raw(refused_key).unwrap(), Some(value(4)));
}

#[test]
fn a_revalidation_that_finds_other_bytes_in_l2_leaves_them_in_a_full_file_l1() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, l2) = manager(dir.path());
    for i in 0..400 {
        cache.set_raw(&format!("held{i}"), &value(1), None).unwrap();
    }
    l2.set("starter", &value(2), None).unwrap();
    assert_eq!(cache.get_raw("starter").unwrap(), Some(value(2)));
    // Every entry L1 holds is read three times: a fill would have to evict one of them.
    let held = l1_keys(&cache, "held");
    for key in &held {
        for _ in 0..3 {
            assert_eq!(cache.get_raw(key).unwrap(), Some(value(1)), "{key}");
        }
    }
    // Changed in L2 by a writer this instance did not hear of, and L1 made suspect (its
    // invalidation stream lost): each read asks L2, which has other bytes.
    for key in &held {
        l2.set(key, &value(5), None).unwrap();
    }
    cache.local().mark_all_suspect().unwrap();
    let replaced_before = cache.stats().consistency.revalidated_replaced;
    for key in &held {
        assert_eq!(
            cache.get_raw(key).unwrap(),
            Some(value(5)),
            "{key}: L2's bytes served"
        );
    }
    // Each was replaced, but for those the replacements' writes evicted before their read.
    let replaced = cache.stats().consistency.revalidated_replaced - replaced_before;
    assert!(
        replaced > held.len() as u64 / 2,
        "{replaced} of {} replaced",
        held.len()
    );
    // Replaced in L1 too: an L1 left with the older bytes serves them unverified once L2 is out
    // of reach, and asks L2 again at every read until then.
    let kept_older: Vec<&String> = held
        .iter()
        .filter(|key| {
            cache
                .local()
                .get(key)
                .unwrap()
                .is_some_and(|e| e.value != value(5))
        })
        .collect();
    assert!(
        kept_older.is_empty(),
        "{} of {} L1 entries kept the bytes a revalidation replaced, e.g. {:?}",
        kept_older.len(),
        held.len(),
        kept_older.first()
    );
}
