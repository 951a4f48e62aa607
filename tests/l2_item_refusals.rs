//! An item a healthy L2 server will not take is that item's error, never a failure held against
//! the server: its circuit breaker stays closed, so the other keys keep being read and written.
//! Against real servers: a Redis whose `proto-max-bulk-len` is below a value (refused before it
//! is sent, naming the key and the server's limit, where Redis would answer `invalid bulk
//! length` and close the connection), and a Memcached out of memory (`-M`: it refuses items
//! rather than evicting), whose refusal names the key and leaves a miss where its old value was.
//! A Redis out of memory for writes (`maxmemory`, `noeviction`) is an outage of writes only: its
//! reads go on, and no breaker counts the refusals; on a Cluster it is its node's refusal, so a
//! batch's other primaries' items land and a replay goes on past its keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{MemcachedServer, RedisCluster, RedisServer};
use uno_cache::distributed::envelope;
use uno_cache::{
    BreakerState, CacheConfig, CacheManager, CircuitBreaker, Error, Guarded, MemcachedOptions,
    MemcachedStore, RedisOptions, RedisStore, Storage,
};

/// A breaker that opens at the first failure, so that any failure held against the server shows.
fn touchy() -> Arc<CircuitBreaker> {
    Arc::new(CircuitBreaker::new(1, Duration::from_secs(60)))
}

#[test]
fn a_value_over_redis_proto_max_bulk_len_is_refused_before_sending_naming_the_limit() {
    let server = RedisServer::start_with(&["--proto-max-bulk-len", "1mb"], None);
    let breaker = touchy();
    let store = RedisStore::connect(RedisOptions::new(server.addr()).prefix("r:")).unwrap();
    let redis = Guarded::new("redis", store, breaker.clone());
    redis.set("photo", b"old", None).unwrap();

    let limit = 1024 * 1024 - envelope::HEADER_LEN;
    let err = redis.set("photo", &vec![1u8; limit + 1], None).unwrap_err();
    let Error::ValueTooLarge { key, len, max, store } = &err else {
        panic!("not ValueTooLarge: {err}")
    };
    assert_eq!((key.as_str(), *len, *max), ("photo", limit + 1, limit));
    assert!(store.contains("proto-max-bulk-len is 1048576"), "{err}");
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the refusal was held against Redis"
    );
    // Nothing was sent: the old value stands, and the connection still serves.
    assert_eq!(redis.get("photo").unwrap().unwrap().value, b"old");

    // A batch holding one such value is refused whole, before any of it is sent.
    let big = vec![2u8; limit + 1];
    let batch: [(&str, &[u8], Option<Duration>); 2] = [("a", b"1", None), ("photo", &big, None)];
    let err = redis.set_each(&batch).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, .. } if key == "photo"),
        "{err}"
    );
    assert_eq!(redis.get("a").unwrap(), None, "part of a refused batch was sent");

    // The largest value the server takes is accepted.
    redis.set("photo", &vec![3u8; limit], None).unwrap();
    assert_eq!(redis.get("photo").unwrap().unwrap().value.len(), limit);
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[test]
fn a_redis_cluster_value_over_its_nodes_proto_max_bulk_len_is_refused_before_sending() {
    let cluster = RedisCluster::start_with(&["--proto-max-bulk-len", "1mb"]);
    let breaker = touchy();
    let store = RedisStore::connect(RedisOptions::with_hosts(cluster.addrs()).cluster(true)).unwrap();
    let redis = Guarded::new("redis", store, breaker.clone());
    let limit = 1024 * 1024 - envelope::HEADER_LEN;
    let err = redis.set("photo", &vec![1u8; limit + 1], None).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, max, .. } if key == "photo" && *max == limit),
        "{err}"
    );
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the refusal was held against the cluster"
    );
    redis.set("photo", &vec![3u8; limit], None).unwrap();
    assert_eq!(redis.get("photo").unwrap().unwrap().value.len(), limit);
}

/// A Redis at `maxmemory` with `noeviction` (its default policy) refuses writes and still
/// serves reads and deletes: its writes fail with `ServerFull`, saying what to set, and its
/// breaker stays closed, so the reads go on.
#[test]
fn a_redis_out_of_memory_refuses_writes_and_keeps_serving_reads_with_its_breaker_closed() {
    let server = RedisServer::start_with(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"], None);
    let breaker = touchy();
    let store = RedisStore::connect(RedisOptions::new(server.addr()).prefix("o:")).unwrap();
    let redis = Guarded::new("redis", store, breaker.clone());
    redis.set("kept", b"v", None).unwrap();
    let value = vec![6u8; 100_000];
    let full = (0..200).find_map(|i| redis.set(&format!("fill{i}"), &value, None).err());
    let err = full.expect("redis --maxmemory 4mb took 20 MB of values");
    assert!(matches!(&err, Error::ServerFull { .. }), "{err}");
    assert!(err.to_string().contains("maxmemory-policy"), "{err}");
    assert!(
        !err.is_bad_input(),
        "a write refused for memory must wait for a replay: {err}"
    );
    for _ in 0..3 {
        assert!(matches!(
            redis.set("kept", &value, None),
            Err(Error::ServerFull { .. })
        ));
    }
    // A batch is one pipeline, whose failure carries the server's code only per command: it was
    // taken for an outage, which opened the breaker and stopped the reads.
    let batch = redis.set_many(&[("kept", value.as_slice()), ("other", value.as_slice())], None);
    assert!(
        matches!(batch, Err(Error::ServerFull { op: "set_many", .. })),
        "{batch:?}"
    );
    let batch = redis.set_each(&[
        ("kept", value.as_slice(), None),
        ("other", value.as_slice(), None),
    ]);
    assert!(
        matches!(batch, Err(Error::ServerFull { op: "set_each", .. })),
        "{batch:?}"
    );
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "the refusals were held against Redis"
    );
    assert_eq!(redis.get("kept").unwrap().unwrap().value, b"v", "reads go on");
    assert!(redis.delete("fill0").unwrap(), "deletes go on");
}

#[test]
fn a_redis_that_does_not_say_its_proto_max_bulk_len_gets_the_512_mib_limit() {
    // CONFIG renamed away, as managed services do: the level still connects.
    let server = RedisServer::start_with(&["--rename-command", "CONFIG", "\"\""], None);
    let store = RedisStore::connect(RedisOptions::new(server.addr())).unwrap();
    let err = store
        .check_value("k", 512 * 1024 * 1024)
        .expect_err("a value of 512 MiB does not fit with its envelope");
    assert!(err.to_string().contains("512 MiB per string value"), "{err}");
    store
        .check_value("k", 512 * 1024 * 1024 - envelope::HEADER_LEN)
        .unwrap();
    store.set("k", b"v", None).unwrap();
}

/// Memcached run with `-M` refuses a value it has no room for instead of evicting: that item
/// fails alone (naming its key), the server's breaker stays closed, the key's old value is gone
/// rather than left stale, and the server goes on serving every other key.
#[test]
fn a_memcached_out_of_memory_refuses_the_item_alone_and_leaves_a_miss() {
    let server = MemcachedServer::start_with(&["-M", "-m", "2"]);
    let breaker = touchy();
    let store = MemcachedStore::connect(MemcachedOptions::new(server.addr()).prefix("m:")).unwrap();
    let mc = Guarded::new("memcached", store, breaker.clone());
    mc.set("small", b"kept", None).unwrap();
    mc.set("photo", b"old", None).unwrap();
    // Values of one size fill their slab class until the server has no page left to give.
    let value = vec![5u8; 100_000];
    let full = (0..200).find_map(|i| mc.set(&format!("fill{i}"), &value, None).err());
    let err = full.expect("memcached -m 2 -M took 20 MB of values");
    assert!(
        matches!(&err, Error::ItemRefused { key, .. } if key.starts_with("fill")),
        "{err}"
    );
    assert!(err.to_string().contains("out of memory"), "{err}");
    assert!(err.is_bad_input(), "{err}");

    let err = mc.set("photo", &value, None).unwrap_err();
    assert!(
        matches!(&err, Error::ItemRefused { key, .. } if key == "photo"),
        "{err}"
    );
    assert_eq!(
        mc.get("photo").unwrap(),
        None,
        "the refused key kept its old value"
    );
    assert_eq!(mc.get("small").unwrap().unwrap().value, b"kept");

    // In a batch, the refused item fails alone and the others are stored.
    let batch: [(&str, &[u8], Option<Duration>); 2] = [("tiny", b"t", None), ("photo", &value, None)];
    let err = mc.set_each(&batch).unwrap_err();
    let Error::PartialBatch(partial) = &err else {
        panic!("not a PartialBatch: {err}")
    };
    assert_eq!(
        (partial.failed.as_slice(), partial.refused.as_slice()),
        (&[1][..], &[1][..])
    );
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(mc.get("tiny").unwrap().unwrap().value, b"t");
    assert_eq!(
        breaker.state(),
        BreakerState::Closed,
        "a refusal was held against the server"
    );
}

const PREFIX: &str = "rv:";

/// A manager on `cluster` (node breakers on, replay run by hand) with its L1 in `dir`.
fn cluster_cache(cluster: &RedisCluster, dir: &std::path::Path) -> CacheManager {
    let hosts: Vec<String> = cluster.addrs().iter().map(|h| format!("{h:?}")).collect();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = {:?}
        durability = "none"
        [distributed]
        enabled = true
        type = "redis"
        cluster = true
        hosts = [{}]
        key_prefix = "{PREFIX}"
        timeout_ms = 200
        breaker_failures = 5
        breaker_cooldown_ms = 200
        [offline]
        replay_interval_ms = 3600000
        "#,
        dir.join("l1").display().to_string(),
        hosts.join(", ")
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// Runs primary 0 out of memory for writes (3 MB held, `maxmemory` 1 MB, `noeviction`); a
/// connection to it.
fn fill_primary_0(cluster: &RedisCluster) -> redis::Connection {
    let mut raw = cluster.nodes[0].raw();
    let value = vec![7u8; 100_000];
    for i in 0..30 {
        let k = cluster.key_on(0, &format!("fill{i}-"));
        let _: () = redis::cmd("SET").arg(&k).arg(&value).query(&mut raw).unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1mb")
        .query(&mut raw)
        .unwrap();
    raw
}

/// Runs primary 0 out of memory, then writes one batch through `level` of a key there and a key
/// on primary 1: the answer must be a `PartialBatch` naming the first item alone. The two keys
/// (full primary's, healthy one's) and that partial batch.
fn batch_across_a_full_primary(
    cluster: &RedisCluster,
    level: &dyn Storage,
) -> (String, String, Box<uno_cache::PartialBatch>) {
    let full_key = cluster.key_on(0, "full");
    let ok_key = cluster.key_on(1, "ok");
    fill_primary_0(cluster);
    let direct = level.set_each(&[
        (full_key.as_str(), b"x".as_slice(), None),
        (ok_key.as_str(), b"y".as_slice(), None),
    ]);
    let Err(Error::PartialBatch(partial)) = direct else {
        panic!("not a PartialBatch naming the full primary's item: {direct:?}")
    };
    assert_eq!(partial.failed, [0], "{partial:?}");
    (full_key, ok_key, partial)
}

/// One primary of a Cluster out of memory (noeviction) must not hold up the whole replay queue. It
/// did: the replay stopped at its ServerFull, and a queued write of a key on a healthy primary never
/// reaches L2 while the full one stays full (which, for a cache at maxmemory, is for good).
/// Its refusal is now its node's (NodeUnavailable over ServerFull, not held by its breaker), and
/// the replay goes on past its keys, as it does past a node that is down.
#[test]
fn a_full_cluster_primary_does_not_hold_up_the_replay_of_other_primaries_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let cache = cluster_cache(&cluster, dir.path());
    let l2 = cache.distributed().unwrap();
    let full_key = cluster.key_on(0, "full");
    let ok_key = cluster.key_on(1, "ok");

    // Primary 0 runs out of memory for writes: it holds more than its maxmemory.
    let mut raw = fill_primary_0(&cluster);
    let probe = cluster.key_on(0, "probe");
    let r: redis::RedisResult<()> = redis::cmd("SET").arg(&probe).arg("x").query(&mut raw);
    assert_eq!(r.unwrap_err().code(), Some("OOM"));

    // A write of a key on the full primary: hidden, and queued.
    cache.set(&full_key, &1u64, None).unwrap();
    let direct = l2.set(&full_key, b"x", None);
    assert!(
        matches!(&direct, Err(Error::NodeUnavailable { cause, .. }) if matches!(cause.as_ref(), Error::ServerFull { .. })),
        "{direct:?}"
    );
    assert_eq!(
        cache.stats().consistency.replay_pending,
        1,
        "direct: {direct:?}; {:?}",
        cache.stats().distributed
    );

    // A write of a key on another primary that did not reach it (the primary was down a
    // moment): queued too.
    let mut cluster = cluster;
    cluster.nodes[1].kill();
    cache.set(&ok_key, &2u64, None).unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 2);
    cluster.nodes[1].restart();
    support::wait_until("primary 1 serves again", || l2.get(&ok_key).is_ok());
    assert_eq!(l2.get(&ok_key).unwrap(), None);

    // The healthy primary is back: its key's write must be replayed, whatever primary 0 says.
    let mut last = None;
    for _ in 0..40 {
        last = Some(cache.replay_now());
        if l2.get(&ok_key).unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        l2.get(&ok_key).unwrap().is_some(),
        "the queued write of a key on a healthy primary never reached it; replay_now: {last:?}, pending {}",
        cache.stats().consistency.replay_pending
    );
}

/// A batch across a full primary and a healthy one is a PartialBatch naming the full primary's
/// items. It failed whole with ServerFull although the healthy primary stored its items, so the
/// manager queued every item for replay, the replay stopped at the full primary's key, and every
/// later write of the healthy key went to the blocked queue: L2 (and every other instance) kept
/// its older value.
#[test]
fn a_batch_across_a_full_primary_and_a_healthy_one_lands_on_the_healthy_one() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let cache = cluster_cache(&cluster, dir.path());
    let l2 = cache.distributed().unwrap();
    assert_eq!(cache.stats().distributed.nodes.len(), 3, "node breakers are on");
    // What the level answers to the batch: the healthy primary stored its item.
    let (full_key, ok_key, _) = batch_across_a_full_primary(&cluster, l2.as_ref());
    assert!(l2.get(&ok_key).unwrap().is_some());

    cache
        .multi_set([(full_key.as_str(), 1u64), (ok_key.as_str(), 1u64)], None)
        .unwrap();
    cache.set(&ok_key, &2u64, None).unwrap();
    for _ in 0..10 {
        let _ = cache.replay_now();
    }
    let other_instance_reads = l2.get(&ok_key).unwrap().map(|e| e.value);
    let two = uno_cache::Codec::bincode().encode(&ok_key, &2u64).unwrap();
    assert_eq!(
        other_instance_reads,
        Some(two),
        "L2 kept the healthy key's older value; pending {}",
        cache.stats().consistency.replay_pending
    );
}

/// A batch write a Memcached out of memory refuses is one failed L2 call, counted once in
/// `distributed.errors` and shown as `last_error`, whether it was written through or behind:
/// write-behind counted an error per refused key and left `last_error` as it was, so the same
/// refusal read as two failures with none shown.
#[test]
fn a_refused_batch_is_one_l2_error_shown_whether_written_through_or_behind() {
    let server = MemcachedServer::start_with(&["-M", "-m", "2"]);
    let value = vec![5u8; 100_000];
    let filler = MemcachedStore::connect(MemcachedOptions::new(server.addr()).prefix("wb:")).unwrap();
    let full = (0..200).find_map(|i| filler.set(&format!("fill{i}"), &value, None).err());
    assert!(matches!(full, Some(Error::ItemRefused { .. })), "{full:?}");
    for mode in ["through", "behind"] {
        let dir = tempfile::tempdir().unwrap();
        let config = CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "file"
            path = {:?}
            [distributed]
            enabled = true
            type = "memcached"
            hosts = ["{}"]
            key_prefix = "wb:"
            write_mode = "{mode}"
            [offline]
            replay = false
            "#,
            dir.path().display().to_string(),
            server.addr()
        ))
        .unwrap();
        let cache = CacheManager::new(config).unwrap();
        let written = cache.multi_set_raw(&[("a", &value[..]), ("b", &value[..])], None);
        let flushed = cache.flush();
        if mode == "behind" {
            // No caller heard of the refusal: the flush reports it.
            assert!(
                matches!(&flushed, Err(uno_cache::Error::WriteBehindLost { writes: 2, .. })),
                "{flushed:?}"
            );
        } else {
            flushed.unwrap();
        }
        let stats = cache.stats().distributed;
        assert_eq!(stats.errors, 1, "{mode}: {written:?}");
        let shown = stats.last_error.unwrap_or_default();
        assert!(shown.contains("out of memory"), "{mode}: {shown}");
        assert_eq!(cache.get_raw("a").unwrap(), None, "{mode}: out of L1 too");
    }
}

/// The same batch on a `RedisStore` of a Cluster without node breakers (its batches split per
/// hash slot, as they are with breakers for a slot the map does not know): the full primary's
/// slot fails its own items, and the error says the healthy primary's were written. It failed
/// whole with ServerFull, which reads as nothing written, while the healthy primary held its
/// item.
#[test]
fn a_batch_split_per_slot_across_a_full_primary_names_only_the_full_primarys_items() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(RedisOptions::with_hosts(cluster.addrs()).cluster(true)).unwrap();
    let (full_key, ok_key, partial) = batch_across_a_full_primary(&cluster, &store);
    assert!(
        matches!(&partial.cause, Error::NodeUnavailable { cause, .. } if matches!(cause.as_ref(), Error::ServerFull { .. })),
        "{partial:?}"
    );
    assert_eq!(store.get(&ok_key).unwrap().unwrap().value, b"y");
    assert_eq!(store.get(&full_key).unwrap(), None);

    // set_many, and the async calls, split the same way.
    let other = cluster.key_on(1, "other");
    let direct = store.set_many(
        &[
            (full_key.as_str(), b"x".as_slice()),
            (other.as_str(), b"z".as_slice()),
        ],
        None,
    );
    assert!(
        matches!(&direct, Err(Error::PartialBatch(p)) if p.failed == [0]),
        "{direct:?}"
    );
    assert_eq!(store.get(&other).unwrap().unwrap().value, b"z");
}
