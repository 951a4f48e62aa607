//! What each kind of L1 counts in `stats().file.expirations` of the values that expired in it:
//! the same scripted sequence through a manager gives the same count whatever stores L1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use uno_cache::{CacheConfig, CacheManager, FileStore, FileStoreOptions, ManualClock};

/// A manager without a memory tier whose L1 is of `kind`, on a manual clock.
fn on_manual_clock(dir: &Path, kind: &str) -> (CacheManager, ManualClock) {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "{kind}"
        path = "{}"
        memory_items = 0
        "#,
        dir.join("l1").display()
    ))
    .unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (cache, clock)
}

/// A value that expired before a write or delete of its key came is counted as expired when
/// that change drops it, by every kind of L1, as the memory tier counts it: it was neither
/// evicted nor found by the delete, and it left the store. The redb L1 counted all three; the
/// file store none (its entry was replaced in the index, no read or sweep could count it after),
/// and the memory L1 not the one a write replaced.
#[test]
fn an_expired_value_a_write_or_delete_drops_counts_as_one_expiration_in_every_l1() {
    for kind in ["file", "memory", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let (cache, clock) = on_manual_clock(dir.path(), kind);
        for key in ["w", "d", "m"] {
            cache.set(key, &1u32, Some(Duration::from_secs(5))).unwrap();
        }
        cache.set("live", &1u32, Some(Duration::from_secs(60))).unwrap();
        cache.set("kept", &1u32, None).unwrap();
        clock.advance(Duration::from_millis(5001));
        cache.set("w", &2u32, None).unwrap();
        assert_eq!(
            cache.stats().file.expirations,
            1,
            "{kind}: the write dropped an expired value"
        );
        assert!(
            !cache.delete("d").unwrap(),
            "{kind}: an expired value is not found"
        );
        assert_eq!(
            cache.stats().file.expirations,
            2,
            "{kind}: the delete dropped an expired value"
        );
        assert_eq!(cache.multi_delete(&["m", "kept"]).unwrap(), 1, "{kind}");
        let stats = cache.stats();
        assert_eq!(
            stats.file.expirations, 3,
            "{kind}: the batch delete dropped one expired value and one live one"
        );
        assert_eq!(stats.local.expirations, 3, "{kind}");
        assert_eq!(stats.file.evictions, 0, "{kind}: nothing was evicted for room");
        assert_eq!(cache.get::<u32>("w").unwrap(), Some(2), "{kind}");
        // The live key, rewritten before it expires, is no expiration.
        clock.advance(Duration::from_secs(1));
        cache.set("live", &3u32, None).unwrap();
        assert_eq!(cache.stats().file.expirations, 3, "{kind}");
    }
}

/// A value that expired less than a second before a write replaced it counts as an expiration
/// too, in every kind of L1. The file store's index keeps expiries in whole seconds, rounded up,
/// and counted only what that coarse expiry said had passed: a value of a 5.5 s TTL rewritten
/// at 5.6 s was in no count, where a read at that moment would have found it expired (and
/// counted it), and the memory and redb L1s counted it.
#[test]
fn a_value_that_expired_within_the_last_second_before_a_write_counts_as_an_expiration_in_every_l1() {
    for kind in ["file", "memory", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let (cache, clock) = on_manual_clock(dir.path(), kind);
        cache.set("w", &1u32, Some(Duration::from_millis(5500))).unwrap();
        cache
            .set("live", &1u32, Some(Duration::from_millis(5700)))
            .unwrap();
        clock.advance(Duration::from_millis(5600));
        cache.set("w", &2u32, None).unwrap();
        cache.set("live", &2u32, None).unwrap();
        assert_eq!(
            cache.stats().file.expirations,
            1,
            "{kind}: the write dropped a value expired 100 ms before, and one still live"
        );
    }
}

/// The same in the keep window of fail-safe: a value that expired less than a second before a
/// delete or write took it is counted once, as one that expired longer ago is.
#[test]
fn a_file_store_counts_a_kept_value_expired_within_the_last_second_that_a_delete_or_write_takes() {
    kept_expired_taken(Duration::from_millis(5500), Duration::from_millis(5600));
}

/// A file store that keeps expired values for fail-safe reads counts one a delete takes in
/// that window, once: it never counted it when it lapsed, and a later read or sweep cannot.
#[test]
fn a_file_store_counts_a_kept_expired_value_a_delete_or_write_takes_once() {
    kept_expired_taken(Duration::from_secs(5), Duration::from_secs(6));
}

/// Two values of `ttl` in a file store that keeps expired values for 60 s, `after` later (past
/// the TTL) one deleted and one written over, each kept for fail-safe until then: each counted
/// once as an expiration, and not again by a read or the sweep once the window is over.
fn kept_expired_taken(ttl: Duration, after: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .clock(Arc::new(clock.clone()))
            .keep_expired(Duration::from_secs(60)),
    )
    .unwrap();
    store.set("d", b"1", Some(ttl)).unwrap();
    store.set("w", b"1", Some(ttl)).unwrap();
    clock.advance(after);
    assert_eq!(store.get("d").unwrap(), None);
    assert!(store.get_stale("d").unwrap().is_some(), "kept for fail-safe");
    store.delete("d").unwrap();
    store.set("w", b"2", None).unwrap();
    assert_eq!(store.stats().expirations, 2);
    clock.advance(Duration::from_secs(120));
    store.compact().unwrap();
    assert_eq!(store.get("d").unwrap(), None);
    assert_eq!(store.stats().expirations, 2, "nothing counted twice");
}

/// A prefix invalidation counts the keys it dropped that a read could still have found,
/// whatever stores L1: the redb L1 listed every row under the prefix, expired ones included, so
/// `invalidate_prefix` answered 2 where the file store (and the memory tier in front of either)
/// answered 1 for the same keys.
#[test]
fn a_prefix_invalidation_does_not_count_a_value_that_expired_in_any_l1() {
    for kind in ["file", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let (cache, clock) = on_manual_clock(dir.path(), kind);
        cache.set("p:gone", &1u32, Some(Duration::from_secs(5))).unwrap();
        cache.set("p:live", &2u32, None).unwrap();
        cache.set("q:other", &3u32, None).unwrap();
        clock.advance(Duration::from_millis(5001));
        assert_eq!(
            cache.invalidate_prefix("p:").unwrap(),
            1,
            "{kind}: the live key alone"
        );
        assert_eq!(cache.get::<u32>("p:live").unwrap(), None, "{kind}");
        assert_eq!(cache.get::<u32>("p:gone").unwrap(), None, "{kind}");
        assert_eq!(cache.get::<u32>("q:other").unwrap(), Some(3), "{kind}");
    }
}

/// An entry whose TTL had passed when it was pushed out for room counts as an expiration, not
/// an eviction, by every kind of L1: redb (and the file store) counted it so, the memory L1 as
/// an eviction. Each expired value is counted once, pushed out or found expired by a read.
#[test]
fn an_expired_entry_pushed_out_for_room_counts_as_an_expiration_in_every_l1() {
    for (kind, max_size, value_len) in [("memory", 10, 8), ("redb", 1, 200_000)] {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(1_700_000_000_000);
        let config = CacheConfig::from_toml_str(&format!(
            r#"
            [local]
            type = "{kind}"
            path = "{}"
            max_size = {max_size}
            memory_items = 0
            "#,
            dir.path().join("l1").display()
        ))
        .unwrap();
        let cache = CacheManager::builder()
            .config(config)
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        let value = vec![7u8; value_len];
        let old: Vec<String> = (0..5).map(|i| format!("old{i}")).collect();
        for key in &old {
            cache.set_raw(key, &value, Some(Duration::from_secs(5))).unwrap();
        }
        clock.advance(Duration::from_secs(6));
        let new = 40;
        // Each new key read twice: the memory L1 (S3-FIFO) keeps such keys over the old ones,
        // never read, which it pushes out.
        for i in 0..new {
            let key = format!("new{i}");
            cache.set_raw(&key, &value, None).unwrap();
            for _ in 0..2 {
                cache.get_raw(&key).unwrap();
            }
        }
        for key in &old {
            assert_eq!(cache.get_raw(key).unwrap(), None, "{kind}");
        }
        let stats = cache.stats();
        assert_eq!(stats.file.expirations, 5, "{kind}: {:?}", stats.file);
        assert_eq!(
            stats.file.evictions + stats.size.file.items,
            new,
            "{kind}: only new keys, all live, were evicted: {:?}",
            stats.file
        );
    }
}
