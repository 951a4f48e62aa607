//! What an invalidation received from another instance counts as dropped from L1
//! (`keys_invalidated`) when L1's delete fails partway through the batch: the keys it removed
//! before the failure, no more and no fewer. L1 is a file store on a real ext4 mount whose
//! directory is made immutable (`chattr +i`): tombstones still land in the active segment while
//! it has room, and the one that needs a new segment fails with EPERM, a real write error. The
//! backplane runs on a real `redis-server`. With the memory tier in front of the file store, a key
//! only the memory tier still held counts too when the file tier's delete of a later key fails
//! (its active segment made immutable).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/mount.rs"]
mod mount;

use std::path::Path;
use std::sync::Arc;

use support::{wait_until, RedisServer};
use uno_cache::invalidation::Invalidation;
use uno_cache::{CacheConfig, CacheManager, FileStore, FileStoreOptions};

/// The file store's smallest segment.
const SEGMENT: u64 = 64 * 1024;
/// Bytes of a record's header (storage-format.md, "Record").
const RECORD_HEADER: usize = 28;
/// The keys B holds and A invalidates, all of one length.
const KEYS: [&str; 10] = [
    "k:00", "k:01", "k:02", "k:03", "k:04", "k:05", "k:06", "k:07", "k:08", "k:09",
];
/// Tombstones of `KEYS` that fit in what is left of B's active segment.
const FIT: usize = 5;

/// A manager with a memory L1 in front of `redis`, on its backplane.
fn memory_instance(redis: &RedisServer) -> CacheManager {
    CacheManager::new(config(redis)).unwrap()
}

/// A manager whose L1 is a file store in `dir` with the smallest segments and no background
/// threads (nothing writes to it but the test), in front of `redis`, on its backplane.
fn file_instance(redis: &RedisServer, dir: &Path) -> CacheManager {
    let store = FileStore::open(
        dir,
        FileStoreOptions::default()
            .segment_size(SEGMENT)
            .max_size_mb(4)
            .background_threads(false),
    )
    .unwrap();
    CacheManager::builder()
        .config(config(redis))
        .local(Arc::new(store))
        .build()
        .unwrap()
}

fn config(redis: &RedisServer) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "memory"
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "app:"
        [invalidation]
        enabled = true
        "#,
        redis.addr(),
    ))
    .unwrap()
}

/// Where the records of the active segment end: the active segment is reserved at its full
/// size and zero past its records, and every record written here ends with a non-zero byte
/// (its key or value).
fn data_end(segment: &Path) -> usize {
    let bytes = std::fs::read(segment).unwrap();
    assert_eq!(
        bytes.len() as u64,
        SEGMENT,
        "the active segment is reserved whole"
    );
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// A in front of a memory L1, B in front of a file store on ext4, both on one Redis; B holds
/// `KEYS`, and its active segment has room for `FIT` of their tombstones (and a half) once the
/// store's directory is made immutable. Runs `invalidate` in A, waits until B applied the
/// message, and returns how many keys B's L1 counted as invalidated and how many it no longer
/// holds.
fn b_invalidates_partway(invalidate: impl FnOnce(&CacheManager)) -> (u64, usize) {
    let redis = RedisServer::start();
    let disk = mount::Mount::ext4(16);
    let dir = disk.path().join("store");
    let a = memory_instance(&redis);
    let b = file_instance(&redis, &dir);
    // B is subscribed once it has heard of A's set.
    a.set_raw("other", b"o", None).unwrap();
    wait_until("B to hear of A's first set", || {
        b.stats().consistency.invalidations_received >= 1
    });
    for key in KEYS {
        b.set_raw(key, b"v", None).unwrap();
    }
    // A filler value leaves room for FIT tombstones and half of one more.
    let segment = mount::active_segment(&dir);
    let tombstone = RECORD_HEADER + KEYS[0].len();
    let room = SEGMENT as usize - data_end(&segment);
    let left = FIT * tombstone + tombstone / 2;
    let filler = room - left - RECORD_HEADER - "filler".len();
    b.local().set("filler", &vec![0xAB; filler], None).unwrap();
    assert_eq!(
        SEGMENT as usize - data_end(&segment),
        left,
        "the filler did not leave the room planned"
    );

    // The next segment cannot be created: the tombstone that needs it fails.
    disk.set_immutable(&dir, true);
    let before = b.stats();
    invalidate(&a);
    wait_until("B to apply A's invalidation", || {
        b.stats().consistency.invalidations_received > before.consistency.invalidations_received
    });
    let after = b.stats();
    let still_held = KEYS
        .iter()
        .filter(|key| b.local().get(key).unwrap().is_some())
        .count();
    disk.set_immutable(&dir, false);
    assert!(
        after.local.errors > before.local.errors,
        "B's L1 deleted every key: the test did not make its delete fail"
    );
    (
        after.consistency.keys_invalidated - before.consistency.keys_invalidated,
        KEYS.len() - still_held,
    )
}

/// A `Keys` invalidation whose L1 delete failed after some keys were gone counts those keys.
/// It counted none: the keys L1 had removed went uncounted.
#[test]
fn a_keys_invalidation_whose_l1_delete_failed_partway_counts_the_keys_it_removed() {
    let (counted, removed) = b_invalidates_partway(|a| {
        let keys = KEYS.iter().map(|k| (*k).to_owned()).collect();
        a.backplane().unwrap().publish(&Invalidation::Keys(keys)).unwrap();
    });
    assert_eq!(removed, FIT, "B's L1 removed as many keys as tombstones fit");
    assert_eq!(
        counted, removed as u64,
        "keys_invalidated counts the keys L1 removed"
    );
}

/// A prefix invalidation whose L1 delete of the listed keys failed after some were gone counts
/// those keys. It counted none.
#[test]
fn a_prefix_invalidation_whose_l1_delete_failed_partway_counts_the_keys_it_removed() {
    let (counted, removed) = b_invalidates_partway(|a| {
        a.backplane()
            .unwrap()
            .publish(&Invalidation::Prefix("k:".to_owned()))
            .unwrap();
    });
    assert_eq!(removed, FIT, "B's L1 removed as many keys as tombstones fit");
    assert_eq!(
        counted, removed as u64,
        "keys_invalidated counts the keys L1 removed"
    );
}

/// B with its L1 built from the configuration: the memory tier of decoded values in front of a
/// file store of 1 MiB in `dir` (so that a few megabytes written make it evict), without fsyncs.
fn tiered_instance(redis: &RedisServer, dir: &Path) -> CacheManager {
    let mut config = config(redis);
    config.local = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = \"{}\"\nmax_size = 1\ndurability = \"none\"\nmemory_items = 5000\n",
        dir.display()
    ))
    .unwrap()
    .local;
    CacheManager::new(config).unwrap()
}

/// A `Keys` invalidation counts a key whose value only the memory tier still held (the file
/// tier had evicted it) when the file tier's delete of a later key of the message failed: the
/// memory tier's value is gone, as it is when every delete succeeds (then it is counted). The
/// count of a delete that failed partway was the file tier's alone, so that key went uncounted.
#[test]
fn a_keys_invalidation_failing_partway_counts_a_key_only_the_memory_tier_held() {
    let redis = RedisServer::start();
    let disk = mount::Mount::ext4(16);
    let dir = disk.path().join("store");
    let a = memory_instance(&redis);
    let b = tiered_instance(&redis, &dir);
    a.set_raw("other", b"o", None).unwrap();
    wait_until("B to hear of A's first set", || {
        b.stats().consistency.invalidations_received >= 1
    });
    let value = |i: usize| format!("{i:0>900}");
    let keys: Vec<String> = (0..3_000).map(|i| format!("m:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        b.set(key, &value(i), None).unwrap();
        assert_eq!(b.get::<String>(key).unwrap(), Some(value(i)));
    }
    let memory_only = keys
        .iter()
        .find(|key| b.local().get(key).unwrap().is_none())
        .expect("the file tier evicted nothing: the test proves nothing");
    let in_file = keys.last().unwrap();
    assert!(b.local().get(in_file).unwrap().is_some());

    // The file tier's next write fails (EPERM): the tombstone of `in_file`, after the delete of
    // `memory_only`, which writes nothing to the file tier.
    let segment = disk.freeze_active_segment(&dir);
    let before = b.stats();
    let message = Invalidation::Keys(vec![memory_only.clone(), in_file.clone()]);
    a.backplane().unwrap().publish(&message).unwrap();
    wait_until("B to apply A's invalidation", || {
        b.stats().consistency.invalidations_received > before.consistency.invalidations_received
    });
    let after = b.stats();
    let still_in_file = b.local().get(in_file).unwrap().is_some();
    disk.set_immutable(&segment, false);
    assert!(
        after.local.errors > before.local.errors && still_in_file,
        "B's L1 deleted every key: the test did not make its delete fail"
    );
    assert_eq!(
        after.consistency.keys_invalidated - before.consistency.keys_invalidated,
        1,
        "the key only the memory tier held was removed from L1, and counts"
    );
}
