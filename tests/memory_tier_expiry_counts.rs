//! What the memory tier counts of the values that expired in it: an expired value a write or
//! delete drops is an expiration, and a prefix invalidation does not count a key whose value
//! had expired, as the file tier alone does not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use uno_cache::{CacheConfig, CacheManager, ManualClock};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
    age: u8,
}

fn ada(age: u8) -> User {
    User {
        name: "Ada".to_owned(),
        age,
    }
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

/// A manager of `memory_items` memory-tier values (0: none) on a manual clock.
fn on_manual_clock(dir: &Path, memory_items: u64) -> (CacheManager, ManualClock) {
    let clock = ManualClock::new(1_700_000_000_000);
    let cache = CacheManager::builder()
        .config(config(dir, memory_items))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (cache, clock)
}

/// A value the memory tier kept that expired before a write or delete of its key came is
/// counted as expired when that change drops it, as a read that found it expired counts it
/// (and as the memory L1 counts an expired entry a delete takes): it was neither evicted nor
/// found by the delete (`false`), and it left the tier. Uncounted, such a value was in no count.
#[test]
fn an_expired_value_a_write_or_delete_drops_from_the_memory_tier_counts_as_an_expiration() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = on_manual_clock(dir.path(), 100);
    for key in ["w", "d", "m"] {
        cache.set(key, &ada(1), Some(Duration::from_secs(5))).unwrap();
        assert_eq!(cache.get::<User>(key).unwrap(), Some(ada(1)), "kept in memory");
    }
    let before = cache.stats().memory;
    assert_eq!(before.expirations, 0);
    clock.advance(Duration::from_millis(5001));
    cache.set("w", &ada(2), None).unwrap();
    assert_eq!(
        cache.stats().memory.expirations,
        1,
        "the write dropped an expired value"
    );
    assert!(!cache.delete("d").unwrap(), "an expired value is not found");
    assert_eq!(
        cache.stats().memory.expirations,
        2,
        "the delete dropped an expired value"
    );
    assert_eq!(cache.multi_delete(&["m"]).unwrap(), 0);
    let after = cache.stats().memory;
    assert_eq!(after.expirations, 3, "the batch delete dropped an expired value");
    assert_eq!(after.evictions, before.evictions, "nothing was evicted for room");
    assert_eq!(cache.get::<User>("w").unwrap(), Some(ada(2)));
}

/// A prefix invalidation counts the keys it dropped that could still be read: the file tier lists
/// only unexpired keys, and so must the memory tier, whose expired values no read answers. It
/// listed every value it held, expired or not, and `invalidate_prefix` answered 1 for a key
/// that had expired in both tiers, where it answered 0 with the memory tier off.
#[test]
fn a_prefix_invalidation_does_not_count_a_value_that_expired_in_the_memory_tier() {
    for memory_items in [0, 100] {
        let dir = tempfile::tempdir().unwrap();
        let (cache, clock) = on_manual_clock(dir.path(), memory_items);
        cache
            .set("p:gone", &ada(1), Some(Duration::from_secs(5)))
            .unwrap();
        cache.set("p:live", &ada(2), None).unwrap();
        assert_eq!(cache.get::<User>("p:gone").unwrap(), Some(ada(1)));
        assert_eq!(cache.get::<User>("p:live").unwrap(), Some(ada(2)));
        clock.advance(Duration::from_millis(5001));
        assert_eq!(
            cache.invalidate_prefix("p:").unwrap(),
            1,
            "the live key alone, memory_items = {memory_items}"
        );
        assert_eq!(cache.get::<User>("p:live").unwrap(), None);
    }
}

/// A value of the memory tier whose TTL had passed when it was pushed out for room counts as an
/// expiration, as the file tier and redb count one, not as an eviction: each expired value is
/// counted once, pushed out or found expired by a read.
#[test]
fn an_expired_value_pushed_out_of_the_memory_tier_for_room_counts_as_an_expiration() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, clock) = on_manual_clock(dir.path(), 4);
    let old: Vec<String> = (0..3).map(|i| format!("old{i}")).collect();
    for key in &old {
        cache.set(key, &ada(1), Some(Duration::from_secs(5))).unwrap();
        assert_eq!(cache.get::<User>(key).unwrap(), Some(ada(1)));
    }
    clock.advance(Duration::from_secs(6));
    for i in 0..40 {
        let key = format!("new{i}");
        cache.set(&key, &ada(2), None).unwrap();
        // Read twice: the tier (S3-FIFO) keeps such keys over the old ones, read once.
        for _ in 0..2 {
            assert_eq!(cache.get::<User>(&key).unwrap(), Some(ada(2)));
        }
    }
    for key in &old {
        assert_eq!(cache.get::<User>(key).unwrap(), None);
    }
    let memory = cache.stats().memory;
    assert_eq!(memory.expirations, 3, "{memory:?}");
    assert!(memory.evictions > 0, "{memory:?}");
}
