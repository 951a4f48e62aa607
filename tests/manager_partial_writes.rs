//! Through `CacheManager` against two real `memcached` hosts: a write batch of which one host
//! refuses an item as too large (a value over its `-I`, below the store's `max_item_size`) while
//! the other host is down. The refused item is reported as bad input and leaves both levels; the
//! unreached one stays in L1, waits in the replay queue, and reaches L2 once its host is back.
//! Waits are bounded polls on the replay queue, never sleeps alone.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::MemcachedServer;
use uno_cache::distributed::NodeBreakers;
use uno_cache::{CacheConfig, CacheManager, Error, LocalKind, MemcachedOptions, MemcachedStore, Served};

/// Over the servers' `-I 1m`, under the store's `max_item_size`: only a server refuses it.
const BIG: usize = 1_500_000;

/// Two hosts whose items are limited to 1 MiB.
fn two_hosts() -> [MemcachedServer; 2] {
    [
        MemcachedServer::start_with(&["-I", "1m"]),
        MemcachedServer::start_with(&["-I", "1m"]),
    ]
}

/// A store over `servers` that lets values up to 4 MiB through its own check, with a breaker per
/// host (so a down host fails its own keys only), and keys `ok`, `big` on host 0 and `gone`,
/// `gone_too` on host 1.
fn store_and_keys(servers: &[MemcachedServer], prefix: &str) -> (MemcachedStore, [String; 4]) {
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts(servers.iter().map(MemcachedServer::addr))
            .prefix(prefix)
            .timeout(Duration::from_millis(200))
            .max_item_size(4 << 20)
            .node_breakers(Arc::new(NodeBreakers::new(
                "memcached",
                2,
                Duration::from_millis(100),
            ))),
    )
    .unwrap();
    let on = |host: usize, stem: &str| {
        (0..)
            .map(|i| format!("{stem}{i}"))
            .find(|k| store.server_key(k).1 == host)
            .unwrap()
    };
    let keys = [on(0, "ok"), on(0, "big"), on(1, "gone"), on(1, "gone-too")];
    (store, keys)
}

/// A memory L1 in front of `store`, with `fallback_on_error` (the default) and a replay queue in
/// `dir` that only `replay_now` replays; `extra` edits the configuration.
fn manager(
    dir: &tempfile::TempDir,
    store: MemcachedStore,
    extra: impl FnOnce(&mut CacheConfig),
) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    extra(&mut config);
    CacheManager::builder()
        .config(config)
        .distributed(Arc::new(store))
        .build()
        .unwrap()
}

/// Replays until the queue is empty (the host's breaker may wait for its cool-down first).
fn replay_until_empty(cache: &CacheManager) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().consistency.replay_pending > 0 {
        assert!(
            Instant::now() < deadline,
            "the replay queue did not drain: {:?}",
            cache.stats().consistency
        );
        // Fails while the host's breaker waits for its cool-down; the queue is what is checked.
        let _ = cache.replay_now();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What both levels hold once the host is back and the queue replayed: each of `written` in L2
/// (the unreached writes among them), the refused `big` in neither level.
fn check_after_replay(cache: &CacheManager, big: &str, written: &[(&str, &[u8])]) {
    let l2 = cache.distributed().unwrap();
    for (key, value) in written {
        assert_eq!(
            l2.get(key).unwrap().map(|e| e.value),
            Some(value.to_vec()),
            "{key} reached L2 (a write whose host was down, once it was back)"
        );
    }
    assert!(l2.get(big).unwrap().is_none());
    assert!(
        cache.local().get(big).unwrap().is_none(),
        "the refused value left L1"
    );
}

/// A write-through `multi_set` whose batch has an item one host refuses and an item of a host
/// that is down: the caller hears of the refused item (bad input is never hidden), and the
/// unreached item is queued and lands in L2 when its host returns. The unreached item was
/// taken for refused: dropped from L1 and never queued, so the write was lost.
#[test]
fn a_multi_set_with_a_refused_item_and_a_down_host_replays_the_unreached_item() {
    let mut servers = two_hosts();
    let (store, [ok, big, gone, gone_too]) = store_and_keys(&servers, "mixed-through:");
    let replay = tempfile::tempdir().unwrap();
    let cache = manager(&replay, store, |_| {});
    servers[1].kill();
    let value = vec![7u8; BIG];
    let err = cache
        .multi_set_raw(&[(&ok, &b"1"[..]), (&big, &value), (&gone, b"new")], None)
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    let Error::PartialBatch(partial) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (&partial.refused[..], &partial.unreached()[..]),
        (&[1][..], &[2][..])
    );
    let l1 = cache.local();
    assert!(l1.get(&ok).unwrap().is_some());
    assert!(l1.get(&big).unwrap().is_none(), "the refused value left L1");
    assert_eq!(
        l1.get(&gone).unwrap().map(|e| e.value),
        Some(b"new".to_vec()),
        "the unreached write stays in L1"
    );
    let stats = cache.stats();
    assert_eq!(
        stats.consistency.replay_pending, 1,
        "only the unreached write waits for replay: {:?}",
        stats.consistency
    );
    assert_eq!(stats.distributed.sets, 1, "one item reached L2");

    // The async API follows the same rule (a key without a queued op: a batch with one goes to
    // the replay queue whole, to keep its order).
    let err = support::block_on(cache.multi_set_raw_async(&[(&gone_too, &b"too"[..]), (&big, &value)], None))
        .unwrap_err();
    let Error::PartialBatch(partial) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (&partial.refused[..], &partial.unreached()[..]),
        (&[1][..], &[0][..])
    );
    assert_eq!(cache.stats().consistency.replay_pending, 2);

    servers[1].restart();
    replay_until_empty(&cache);
    check_after_replay(&cache, &big, &[(&ok, b"1"), (&gone, b"new"), (&gone_too, b"too")]);
}

/// With `write_mode = "behind"` the same batch reaches L2 from the writer thread: the refused
/// item leaves L1, the unreached one is queued for replay and lands once its host is back. The
/// batch was sent again one item at a time, each unreached item to its down host once more.
#[test]
fn a_write_behind_batch_with_a_refused_item_and_a_down_host_replays_the_unreached_item() {
    let mut servers = two_hosts();
    let (store, [ok, big, gone, _]) = store_and_keys(&servers, "mixed-behind:");
    let replay = tempfile::tempdir().unwrap();
    let cache = manager(&replay, store, |config| {
        config.distributed.write_mode = uno_cache::WriteMode::Behind;
    });
    servers[1].kill();
    let value = vec![7u8; BIG];
    let sets_before = servers[0].stat("cmd_set");
    cache
        .multi_set_raw(&[(&ok, &b"1"[..]), (&big, &value), (&gone, b"new")], None)
        .unwrap();
    // The refused write is lost, and reported; the unreached one waits for replay, and is not.
    let flushed = cache.flush();
    assert!(
        matches!(&flushed, Err(uno_cache::Error::WriteBehindLost { writes: 1, key, .. }) if *key == big),
        "{flushed:?}"
    );
    // memcached counts the stored set only, not the one it refused as too large.
    assert_eq!(
        servers[0].stat("cmd_set") - sets_before,
        1,
        "the stored item was sent once, not again one by one"
    );
    assert!(
        cache.local().get(&big).unwrap().is_none(),
        "the refused value left L1"
    );
    assert_eq!(
        cache.stats().consistency.replay_pending,
        1,
        "only the unreached write waits for replay: {:?}",
        cache.stats().consistency
    );
    servers[1].restart();
    replay_until_empty(&cache);
    check_after_replay(&cache, &big, &[(&ok, b"1"), (&gone, b"new")]);
}

/// A `multi_set` that lists a key twice writes it once, with its last value; when that key's
/// host is down, the partial error names each position the caller listed it at, over the
/// caller's batch (its length, its indices), not over the batch sent with the key once.
#[test]
fn a_multi_set_listing_a_key_twice_whose_host_is_down_names_both_of_its_positions() {
    let mut servers = two_hosts();
    let (store, [ok, _, gone, _]) = store_and_keys(&servers, "twice:");
    let replay = tempfile::tempdir().unwrap();
    let cache = manager(&replay, store, |config| config.fallback_on_error = false);
    servers[1].kill();
    let err = cache
        .multi_set_raw(&[(&gone, &b"old"[..]), (&ok, b"1"), (&gone, b"new")], None)
        .unwrap_err();
    let Error::PartialBatch(partial) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (partial.total, &partial.failed[..], &partial.refused[..]),
        (3, &[0, 2][..], &[][..])
    );
    let l2 = cache.distributed().unwrap();
    assert_eq!(l2.get(&ok).unwrap().map(|e| e.value), Some(b"1".to_vec()));
}

/// A `multi_delete` that lists a key twice deletes it once; when that key's host is down, the
/// partial error names each position the caller listed it at, over the caller's batch, and
/// carries how many of the reached keys existed. Sync and async.
#[test]
fn a_multi_delete_listing_a_key_twice_whose_host_is_down_names_both_of_its_positions() {
    type BatchDelete = (&'static str, fn(&CacheManager, &[&str]) -> uno_cache::Result<u64>);
    let deletes: [BatchDelete; 2] = [
        ("multi_delete", |c, keys| c.multi_delete(keys)),
        ("multi_delete_async", |c, keys| {
            support::block_on(c.multi_delete_async(keys))
        }),
    ];
    let mut servers = two_hosts();
    let (store, [ok, _, gone, _]) = store_and_keys(&servers, "deleted-twice:");
    let replay = tempfile::tempdir().unwrap();
    let cache = manager(&replay, store, |config| config.fallback_on_error = false);
    servers[1].kill();
    for (name, delete) in deletes {
        cache.set_raw(&ok, b"1", None).unwrap();
        let err = delete(&cache, &[&gone, &ok, &gone]).unwrap_err();
        let Error::PartialBatch(partial) = &err else {
            panic!("{name}: {err:?}")
        };
        assert_eq!(
            (partial.total, &partial.failed[..], &partial.refused[..]),
            (3, &[0, 2][..], &[][..]),
            "{name}"
        );
        assert!(
            matches!(partial.served, Served::Removed(1)),
            "{name}: the reached node's count: {:?}",
            partial.served
        );
        let l2 = cache.distributed().unwrap();
        assert_eq!(l2.get(&ok).unwrap(), None, "{name}: the reached key was deleted");
    }
}

/// A write batch some of whose items' host is down stores the others: they count as L2 sets
/// whether `fallback_on_error` hides the failure or the caller is told of it. Told of it, the
/// caller's stats said no item reached L2 though the live host stored its item.
#[test]
fn the_items_a_partial_write_batch_stored_count_as_sets_with_or_without_fallback() {
    let mut servers = two_hosts();
    let queues = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let caches = [("lenient", true), ("strict", false)].map(|(name, fallback)| {
        let (store, [ok, _, gone, _]) = store_and_keys(&servers, &format!("counted-{name}:"));
        let queue = &queues[usize::from(!fallback)];
        let cache = manager(queue, store, |config| config.fallback_on_error = fallback);
        (name, cache, ok, gone, !fallback)
    });
    servers[1].kill();
    for (name, cache, ok, gone, told) in &caches {
        let result = cache.multi_set_raw(&[(ok, &b"1"[..]), (gone, b"2")], None);
        assert_eq!(result.is_err(), *told, "{name}: {result:?}");
        assert_eq!(cache.stats().distributed.sets, 1, "{name}: one item reached L2");
    }
}
