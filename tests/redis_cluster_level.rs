//! `RedisStore` against a real three-primary Redis Cluster: single-key calls are routed by
//! slot; `get_many` sends one `MGET` per hash slot (Redis refuses `MGET` across slots) and the
//! `MGET`s for one node go out together, so each node sees exactly the `MGET`s for its own slots
//! (counted with `INFO commandstats`); batches, `size` and `clear` cover every node and only the
//! prefix; and a slot moved to another node after the store cached the slot map is still read
//! and written correctly (the `MOVED` fallback and map refresh); a batch split per primary (per-node
//! breakers) with one bad item changes nothing on any node. A cluster whose nodes name themselves
//! with a NULL host in `CLUSTER SLOTS` (`unknown-endpoint`) is sized, cleared and broken per node.
//! After a resharding, a moved slot's new owner's failures are held against it, not against the
//! healthy old owner the level's map still named (the map is re-read after a failure). Tags on a cluster L2: a key tagged
//! twice, the two tag sets in different slots. And a node whose connection goes silent without
//! a reset (each node announces a `support/proxy.rs` proxy as its address): calls move to a new
//! cluster connection, also when their caller gives up before our deadline. Slots the cluster
//! does not serve are in `redis_cluster_unserved_slots.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use proxy::TcpProxy;
use support::{
    async_gets_leave_a_silent_connection, impatient_gets_until_k_answers_v, until_k_answers_v, RedisCluster,
};
use uno_cache::{CacheConfig, CacheManager, DistributedStorage, Error, RedisOptions, RedisStore, Storage};

fn mget_calls(cluster: &RedisCluster) -> Vec<u64> {
    cluster.nodes.iter().map(|n| n.command_calls("mget")).collect()
}

#[test]
fn cluster_round_trips_batches_size_and_clear_across_nodes() {
    let cluster = RedisCluster::start();
    let redis = cluster.store("c:");
    assert!(redis.is_cluster());
    redis.set("one", b"1", Some(Duration::from_secs(60))).unwrap();
    let entry = redis.get("one").unwrap().unwrap();
    assert_eq!(entry.value, b"1");
    assert!(entry.expires_at.is_some());
    assert!(redis.delete("one").unwrap());
    assert_eq!(redis.get("one").unwrap(), None);

    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    redis.set_many(&items, None).unwrap();
    // The keys really are spread over all three nodes.
    let nodes: BTreeSet<usize> = keys
        .iter()
        .map(|k| cluster.node_of_slot(cluster.keyslot(&format!("c:{k}"))))
        .collect();
    assert_eq!(nodes.len(), 3);

    let mut wanted: Vec<&str> = keys.iter().map(String::as_str).collect();
    wanted.push("missing");
    let got = redis.get_many(&wanted).unwrap();
    for (key, entry) in keys.iter().zip(&got) {
        assert_eq!(entry.as_ref().unwrap().value, key.as_bytes(), "{key}");
    }
    assert_eq!(got[300], None);

    let other = cluster.store("other:");
    other.set("key:1", b"not ours", None).unwrap();
    assert_eq!(redis.size().unwrap().items, 300);
    assert_eq!(redis.delete_many(&wanted[..100]).unwrap(), 100);
    assert_eq!(redis.size().unwrap().items, 200);
    redis.clear().unwrap();
    assert_eq!(redis.size().unwrap().items, 0);
    assert_eq!(redis.get("key:150").unwrap(), None);
    assert_eq!(
        other.get("key:1").unwrap().unwrap().value,
        b"not ours",
        "clear kept other prefixes"
    );
}

#[test]
fn get_many_sends_one_mget_per_slot_and_each_node_only_its_own() {
    let cluster = RedisCluster::start();
    let redis = cluster.store("m:");
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    redis.set_many(&items, None).unwrap();

    // Expected: per node, the number of distinct slots among the keys it owns.
    let mut slots_per_node: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
    for key in &keys {
        let slot = cluster.keyslot(&format!("m:{key}"));
        slots_per_node
            .entry(cluster.node_of_slot(slot))
            .or_default()
            .insert(slot);
    }
    let before = mget_calls(&cluster);
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    assert!(redis.get_many(&refs).unwrap().iter().all(Option::is_some));
    let after = mget_calls(&cluster);
    for (node, (b, a)) in before.iter().zip(&after).enumerate() {
        let expected = slots_per_node.get(&node).map_or(0, BTreeSet::len) as u64;
        assert_eq!(
            a - b,
            expected,
            "node {node}: MGETs sent vs distinct slots it owns"
        );
    }

    // Keys sharing a hash tag share a slot: one MGET in the whole cluster.
    let tagged: Vec<String> = (0..100).map(|i| format!("{{user:7}}:field{i}")).collect();
    let items: Vec<(&str, &[u8])> = tagged.iter().map(|k| (k.as_str(), &b"t"[..])).collect();
    redis.set_many(&items, None).unwrap();
    let before = mget_calls(&cluster);
    let refs: Vec<&str> = tagged.iter().map(String::as_str).collect();
    assert!(redis.get_many(&refs).unwrap().iter().all(Option::is_some));
    let after = mget_calls(&cluster);
    let total: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    assert_eq!(total, 1);
}

#[test]
fn a_cluster_url_turns_on_cluster_mode_from_one_seed() {
    let cluster = RedisCluster::start();
    let seed = format!("redis+cluster://{}", cluster.addrs()[1]);
    let redis = RedisStore::connect(RedisOptions::new(seed).prefix("u:")).unwrap();
    assert!(redis.is_cluster());
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    redis.set_many(&items, None).unwrap();
    assert_eq!(redis.size().unwrap().items, 50);
    // A standalone client pointed at one cluster node would hit MOVED errors on some keys.
    let err = RedisStore::connect(RedisOptions::new("redis+cluster://127.0.0.1:1/3")).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

/// Moves `slot` with its keys from node `from` to node `to`, the way redis-cli --cluster
/// reshard does; the number of keys moved.
fn move_slot(cluster: &RedisCluster, slot: u16, from: usize, to: usize) -> usize {
    let id = |n: usize| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.nodes[n].raw())
            .unwrap()
    };
    let (from_id, to_id) = (id(from), id(to));
    let mut src = cluster.nodes[from].raw();
    let mut dst = cluster.nodes[to].raw();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&from_id)
        .exec(&mut dst)
        .unwrap();
    redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&to_id)
        .exec(&mut src)
        .unwrap();
    let in_slot: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(1000)
        .query(&mut src)
        .unwrap();
    if !in_slot.is_empty() {
        redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(cluster.nodes[to].port)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&in_slot)
            .exec(&mut src)
            .unwrap();
    }
    for node in &cluster.nodes {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&to_id)
            .exec(&mut node.raw())
            .unwrap();
    }
    in_slot.len()
}

#[test]
fn a_slot_moved_after_the_map_was_cached_is_still_served() {
    let cluster = RedisCluster::start();
    let redis = cluster.store("mv:");
    // Keys that share one slot, so we can move exactly that slot.
    let keys: Vec<String> = (0..20).map(|i| format!("{{moving}}:{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    redis.set_many(&items, None).unwrap();
    let slot = cluster.keyslot("mv:{moving}:0");
    let from = cluster.node_of_slot(slot);
    let to = (from + 1) % 3;

    assert_eq!(move_slot(&cluster, slot, from, to), 20);
    assert_eq!(cluster.node_of_slot(slot), to);
    assert_eq!(cluster.node_of_slot(slot), to);

    // Our cached map still says `from`: the batch must follow the redirect, not fail.
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = redis.get_many(&refs).unwrap();
    for (key, entry) in keys.iter().zip(&got) {
        assert_eq!(entry.as_ref().unwrap().value, key.as_bytes());
    }
    redis.set_many(&items, Some(Duration::from_secs(60))).unwrap();
    assert!(redis
        .get_many(&refs)
        .unwrap()
        .iter()
        .all(|e| e.as_ref().unwrap().expires_at.is_some()));
    // After the refresh the node that owns the slot now gets the MGET directly.
    let before = cluster.nodes[to].command_calls("mget");
    redis.get_many(&refs).unwrap();
    assert_eq!(cluster.nodes[to].command_calls("mget") - before, 1);
    assert_eq!(redis.delete_many(&refs).unwrap(), 20);
}

/// Nodes that answer `CLUSTER SLOTS` with a NULL host ("the address you asked",
/// `cluster-preferred-endpoint-type unknown-endpoint`): `size` and `clear` walk every primary,
/// and the per-node breakers know every primary by the seeds' host.
#[test]
fn a_cluster_that_reports_unknown_endpoints_is_sized_cleared_and_broken_per_node() {
    let cluster = RedisCluster::start_with(&["--cluster-preferred-endpoint-type", "unknown-endpoint"]);
    let redis = cluster.store("ue:");
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    redis.set_many(&items, None).unwrap();
    assert_eq!(redis.size().unwrap().items, 30);
    redis.clear().unwrap();
    for key in &keys {
        assert_eq!(redis.get(key).unwrap(), None, "{key} survived clear");
    }
    assert_eq!(redis.size().unwrap().items, 0);

    let breakers = std::sync::Arc::new(uno_cache::NodeBreakers::new("redis", 3, Duration::from_secs(1)));
    let per_node = RedisStore::connect(
        RedisOptions::with_hosts(cluster.addrs())
            .cluster(true)
            .prefix("ue:")
            .node_breakers(std::sync::Arc::clone(&breakers)),
    )
    .unwrap();
    per_node.set_many(&items, None).unwrap();
    let mut named: Vec<String> = breakers.stats().into_iter().map(|n| n.node).collect();
    named.sort();
    let mut addrs = cluster.addrs();
    addrs.sort();
    assert_eq!(named, addrs, "one breaker per primary, by its address");
}

#[test]
fn a_key_repeated_in_a_batch_is_written_once_with_its_last_value() {
    let cluster = RedisCluster::start();
    let redis = cluster.store("dup:");
    let node = cluster.node_of_slot(cluster.keyslot("dup:k"));
    let sets = || cluster.nodes[node].command_calls("set");

    // On a cluster each SET of a batch is its own command, and a MOVED or ASK retry sends one
    // again after the others: two SETs of one key could land in either order. Only the last is
    // sent, so the batch's last value is the one left.
    let before = sets();
    redis.set_many(&[("k", &b"v1"[..]), ("k", b"v2")], None).unwrap();
    assert_eq!(sets() - before, 1, "one SET for the repeated key");
    assert_eq!(redis.get("k").unwrap().unwrap().value, b"v2");

    let before = sets();
    redis
        .set_each(&[
            ("k", &b"v3"[..], None),
            ("other", b"o", None),
            ("k", b"v4", Some(Duration::from_secs(60))),
        ])
        .unwrap();
    let other = cluster.node_of_slot(cluster.keyslot("dup:other"));
    let expected = if other == node { 2 } else { 1 };
    assert_eq!(sets() - before, expected);
    let entry = redis.get("k").unwrap().unwrap();
    assert_eq!(entry.value, b"v4");
    assert!(entry.expires_at.is_some());
    assert_eq!(redis.get("other").unwrap().unwrap().value, b"o");
}

#[test]
fn a_batch_split_per_primary_with_one_bad_item_writes_and_deletes_nothing() {
    let cluster = RedisCluster::start();
    let store = RedisStore::connect(
        RedisOptions::with_hosts(cluster.addrs())
            .cluster(true)
            .prefix("bad:")
            .timeout(Duration::from_millis(500))
            .node_breakers(std::sync::Arc::new(uno_cache::NodeBreakers::new(
                "redis",
                5,
                Duration::from_secs(1),
            ))),
    )
    .unwrap();
    // Two keys on different primaries, so the batch is split in two parts.
    let a = "a".to_owned();
    let b = (0..)
        .map(|i| format!("b{i}"))
        .find(|b| {
            cluster.node_of_slot(cluster.keyslot(&format!("bad:{b}")))
                != cluster.node_of_slot(cluster.keyslot(&format!("bad:{a}")))
        })
        .unwrap();
    let raw_get = |key: &str| -> Option<Vec<u8>> {
        let node = cluster.node_of_slot(cluster.keyslot(&format!("bad:{key}")));
        redis::cmd("GET")
            .arg(format!("bad:{key}"))
            .query(&mut cluster.nodes[node].raw())
            .unwrap()
    };
    let zero = store.set_each(&[(&a, &b"v"[..], None), (&b, b"v", Some(Duration::ZERO))]);
    assert!(matches!(zero, Err(Error::ZeroTtl { .. })), "{zero:?}");
    let reserved = store.set_many(&[(&a, &b"v"[..]), ("uno-cache:tag:t", b"v")], None);
    assert!(matches!(reserved, Err(Error::InvalidKey { .. })), "{reserved:?}");
    assert_eq!(raw_get(&a), None, "a part of a refused batch was written");

    store.set(&a, b"kept", None).unwrap();
    let deleted = store.delete_many(&[&a, ""]);
    assert!(matches!(deleted, Err(Error::InvalidKey { .. })), "{deleted:?}");
    assert!(raw_get(&a).is_some(), "a part of a refused delete was sent");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let zero = rt.block_on(store.set_each_async(&[(&b, &b"v"[..], None), (&a, b"v", Some(Duration::ZERO))]));
    assert!(matches!(zero, Err(Error::ZeroTtl { .. })), "{zero:?}");
    assert_eq!(raw_get(&b), None, "a part of a refused async batch was written");
    let deleted = rt.block_on(store.delete_many_async(&[&a, ""]));
    assert!(matches!(deleted, Err(Error::InvalidKey { .. })), "{deleted:?}");
    assert!(raw_get(&a).is_some(), "a part of a refused async delete was sent");
}

/// A manager with a memory L1 over `cluster`, named as `named` says: `"cluster = true"` with
/// every node's address, or `"url"` for a `redis+cluster://` URL of the first node alone;
/// `distributed` adds lines to the `[distributed]` table.
fn memory_l1_over(cluster: &RedisCluster, named: &str, distributed: &str) -> CacheManager {
    let hosts = if named == "url" {
        format!("hosts = [\"redis+cluster://{}\"]", cluster.addrs()[0])
    } else {
        let hosts: Vec<String> = cluster.addrs().iter().map(|h| format!("{h:?}")).collect();
        format!("{named}\nhosts = [{}]", hosts.join(", "))
    };
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"memory\"\n[distributed]\nenabled = true\ntimeout_ms = 500\n{hosts}\n{distributed}\n"
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// Without a backplane of their own, tag sets live on the cluster L2. Each set is one key, and
/// two tags' sets rarely share a slot: a write that tags a key twice must not send them as one
/// pipeline (the cluster client refuses one across slots, CROSSSLOT).
#[test]
fn a_key_with_two_tags_in_different_slots_is_tagged_and_each_tag_invalidates_it() {
    let cluster = RedisCluster::start();
    let cache = memory_l1_over(&cluster, "cluster = true", "key_prefix = \"c:\"");
    assert_ne!(
        cluster.keyslot("c:uno-cache:tag:red"),
        cluster.keyslot("c:uno-cache:tag:blue"),
        "the two tags' sets must be in different slots for this test to mean anything"
    );

    cache.set_with_tags("k", "v", None, &["red", "blue"]).unwrap();
    assert_eq!(cache.invalidate_tag("red").unwrap(), 1);
    assert_eq!(cache.get::<String>("k").unwrap(), None);
    assert_eq!(cache.invalidate_tag("blue").unwrap(), 1);
    assert_eq!(
        cache.invalidate_tag("red").unwrap(),
        0,
        "the members were forgotten"
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cache.set_with_tags_async("k", "w", None, &["red", "blue"]))
        .unwrap();
    assert_eq!(rt.block_on(cache.invalidate_tag_async("blue")).unwrap(), 1);
    assert_eq!(cache.get::<String>("k").unwrap(), None);
}

/// A cluster whose every node announces a proxy of its own as its address
/// (`--cluster-announce-port`), so that a client's every connection to a node goes through that
/// node's proxy; the cluster bus stays direct, so the nodes never see each other fail.
fn cluster_behind_proxies() -> (RedisCluster, Vec<TcpProxy>) {
    let mut proxies = Vec::new();
    let cluster = RedisCluster::start_each(|port| {
        let proxy = TcpProxy::start(&format!("127.0.0.1:{port}"));
        let args = [
            "--cluster-announce-ip".to_owned(),
            "127.0.0.1".to_owned(),
            "--cluster-announce-port".to_owned(),
            proxy.port().to_string(),
            "--cluster-announce-bus-port".to_owned(),
            (port + 10_000).to_string(),
        ];
        proxies.push(proxy);
        args.into()
    });
    (cluster, proxies)
}

/// The proxy in front of the node that owns `key`.
fn proxy_of<'p>(cluster: &RedisCluster, proxies: &'p [TcpProxy], key: &str) -> &'p TcpProxy {
    let port = cluster.port_of_slot(cluster.keyslot(key));
    proxies.iter().find(|p| p.port() == port).unwrap()
}

#[test]
fn async_calls_move_to_a_new_cluster_connection_when_a_node_goes_silent() {
    let (cluster, proxies) = cluster_behind_proxies();
    let seeds: Vec<String> = proxies.iter().map(TcpProxy::addr).collect();
    let silent = proxy_of(&cluster, &proxies, "k");
    let before_connect = silent.accepted();
    let timeout = Duration::from_millis(200);
    let redis = RedisStore::connect(RedisOptions::with_hosts(seeds).cluster(true).timeout(timeout)).unwrap();
    let one_connect = silent.accepted() - before_connect;
    let opened = async_gets_leave_a_silent_connection(
        &redis,
        "still on the silent node connection",
        || silent.accepted(),
        || silent.freeze(),
    );
    assert_eq!(
        opened, one_connect,
        "one new cluster connection for the whole burst of timeouts"
    );
}

#[test]
fn blocking_calls_move_to_a_new_cluster_connection_when_a_node_goes_silent() {
    let (cluster, proxies) = cluster_behind_proxies();
    let seeds: Vec<String> = proxies.iter().map(TcpProxy::addr).collect();
    let redis = RedisStore::connect(
        RedisOptions::with_hosts(seeds)
            .cluster(true)
            .timeout(Duration::from_millis(200)),
    )
    .unwrap();
    redis.set("k", b"v", None).unwrap();

    proxy_of(&cluster, &proxies, "k").freeze();
    let result = redis.get("k");
    assert!(
        matches!(result, Err(Error::Timeout { level: "redis", .. })),
        "{result:?}"
    );
    until_k_answers_v("still on the silent node connection", || redis.get("k"));
}

/// A caller that gives up before our deadline: the check of the connection after its dropped
/// call asks every primary, so the silent node is found whichever node the call was for.
#[test]
fn async_calls_whose_callers_give_up_first_move_to_a_new_cluster_connection() {
    let (cluster, proxies) = cluster_behind_proxies();
    let seeds: Vec<String> = proxies.iter().map(TcpProxy::addr).collect();
    let options = RedisOptions::with_hosts(seeds)
        .cluster(true)
        .timeout(Duration::from_millis(300));
    let redis = RedisStore::connect(options).unwrap();
    redis.set("k", b"v", None).unwrap();

    proxy_of(&cluster, &proxies, "k").freeze();
    impatient_gets_until_k_answers_v("still on the silent connection", || redis.get_async("k"));
}

/// After a resharding, the level's slot map still names the old owner of a moved slot. The
/// failures of the new owner (its connection gone silent) for that slot's keys are held against
/// the new owner once the map is re-read, not against the old one: the old owner, healthy,
/// keeps serving its own keys.
#[test]
fn failures_of_a_moved_slots_new_owner_leave_the_old_owners_breaker_closed() {
    let (cluster, proxies) = cluster_behind_proxies();
    let seeds: Vec<String> = proxies.iter().map(TcpProxy::addr).collect();
    let breakers = std::sync::Arc::new(uno_cache::NodeBreakers::new("redis", 3, Duration::from_secs(60)));
    let redis = RedisStore::connect(
        RedisOptions::with_hosts(seeds)
            .cluster(true)
            .prefix("mv:")
            .timeout(Duration::from_millis(200))
            .node_breakers(std::sync::Arc::clone(&breakers)),
    )
    .unwrap();
    // Node `i` announces `proxies[i]`.
    let node_of_slot = |slot: u16| {
        proxies
            .iter()
            .position(|p| p.port() == cluster.port_of_slot(slot))
            .unwrap()
    };
    let node_of = |key: &str| node_of_slot(cluster.keyslot(&format!("mv:{key}")));
    let moved = "{moving}:0";
    redis.set(moved, b"v", None).unwrap();
    let slot = cluster.keyslot(&format!("mv:{moved}"));
    let from = node_of(moved);
    let to = (from + 1) % 3;
    let stays = (0..)
        .map(|i| format!("stay{i}"))
        .find(|k| node_of(k) == from)
        .unwrap();
    redis.set(&stays, b"a", None).unwrap();

    assert_eq!(move_slot(&cluster, slot, from, to), 1);
    assert_eq!(node_of_slot(slot), to);
    // The crate follows the MOVED.
    assert_eq!(redis.get(moved).unwrap().unwrap().value, b"v");

    proxies[to].freeze();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let burst = rt.block_on(futures_util::future::join_all(
        (0..8).map(|_| redis.get_async(moved)),
    ));
    assert!(burst.iter().all(Result::is_err), "{burst:?}");

    let errors_of = |n: usize| {
        let name = proxies[n].addr();
        breakers
            .stats()
            .into_iter()
            .find(|s| s.node == name)
            .map_or(0, |s| s.errors)
    };
    // Each failure is held on the I/O thread once the map is re-read, after its call returned.
    let held = Instant::now();
    while errors_of(from) + errors_of(to) < 8 && held.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        errors_of(from),
        0,
        "the old owner was held to the new owner's failures"
    );
    assert!(errors_of(to) > 0, "the new owner's failures were counted nowhere");
    let got = redis.get(&stays);
    assert!(
        matches!(&got, Ok(Some(e)) if e.value == b"a"),
        "a key of the healthy old owner was refused: {got:?}"
    );
}

/// With per-node breakers, a failed call of a mapped node has the slot map re-read before its
/// failure is held against a breaker; the call itself still ends by its own deadline. It waited
/// for the re-read, which asks the seeds (here the one node, frozen) within another timeout: a
/// call took twice `timeout`.
#[test]
fn a_failed_call_of_a_mapped_node_returns_by_its_deadline_while_the_map_is_re_read() {
    let cluster = RedisCluster::start();
    // One seed, as many deployments give: the node that will hang.
    let seed = cluster.nodes[0].addr();
    let timeout = Duration::from_millis(400);
    let breakers = std::sync::Arc::new(uno_cache::NodeBreakers::new("redis", 5, Duration::from_secs(5)));
    let store = RedisStore::connect(
        RedisOptions::with_hosts([seed])
            .cluster(true)
            .prefix("rr:")
            .timeout(timeout)
            .node_breakers(std::sync::Arc::clone(&breakers)),
    )
    .unwrap();
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| cluster.node_of_slot(cluster.keyslot(&format!("rr:{k}"))) == 0)
        .unwrap();
    store.set(&key, b"v", None).unwrap();

    cluster.nodes[0].pause();
    let started = Instant::now();
    let result = store.get(&key);
    let took = started.elapsed();
    cluster.nodes[0].resume();

    assert!(result.is_err(), "{result:?}");
    assert!(
        took < timeout + Duration::from_millis(200),
        "a call with timeout {timeout:?} took {took:?} ({result:?})"
    );
    // The failure is still held against the node, once the re-read has ended.
    let held = Instant::now();
    while breakers.stats().iter().map(|s| s.errors).sum::<u64>() == 0
        && held.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(breakers.stats().iter().map(|s| s.errors).sum::<u64>(), 1);
}

/// A NOPERM names the commands to grant, CLUSTER SLOTS among them for a cluster (the client
/// reads the slots' owners with it at connect), and CLUSTER NODES and INFO (a walk of every
/// primary reads them): a cluster's user granted those and nothing else
/// runs the cache, or the advice sends the operator round again (without CLUSTER SLOTS, as it
/// did, the connect is refused; now the refusal names it).
#[test]
fn an_acl_user_granted_only_the_commands_a_noperm_names_runs_a_cluster_cache() {
    let cluster = RedisCluster::start_with(&[
        "--user",
        "app",
        "on",
        ">pw",
        "~*",
        "-@all",
        "+get",
        "+mget",
        "+set",
        "+unlink",
        "+scan",
        "+strlen",
        "+ping",
        "+cluster|slots",
        "+cluster|nodes",
        "+info",
        "--user",
        "noslots",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-cluster|slots",
        "--user",
        "nonodes",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-cluster|nodes",
        "--user",
        "noinfo",
        "on",
        ">pw",
        "~*",
        "+@all",
        "-info",
    ]);
    let refused = RedisStore::connect(RedisOptions::new(format!(
        "redis+cluster://noslots:pw@{}",
        cluster.addrs()[0]
    )));
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("ACL") && err.contains("CLUSTER SLOTS"), "{err}");
    // A walk of every primary (`size`, `clear`) reads each one's own line of CLUSTER NODES, to
    // tell whether slots moved while it ran: refused it, the error names it as well.
    let no_nodes = RedisStore::connect(RedisOptions::new(format!(
        "redis+cluster://nonodes:pw@{}",
        cluster.addrs()[0]
    )))
    .unwrap();
    let err = no_nodes.size().unwrap_err();
    assert!(
        matches!(err, Error::Misconfigured { .. }) && err.to_string().contains("CLUSTER NODES"),
        "{err}"
    );
    // And each one's INFO commandstats, to tell whether a move was begun and undone meanwhile.
    let no_info = RedisStore::connect(RedisOptions::new(format!(
        "redis+cluster://noinfo:pw@{}",
        cluster.addrs()[0]
    )))
    .unwrap();
    let err = no_info.clear().unwrap_err();
    assert!(
        matches!(err, Error::Misconfigured { .. }) && err.to_string().contains("+info"),
        "{err}"
    );
    let url = format!("redis+cluster://app:pw@{}", cluster.addrs()[0]);
    let connected = RedisStore::connect(RedisOptions::new(url).prefix("acl:"));
    // What each node's ACL refused, for the failure's message.
    let acl_log: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| {
            let log: redis::Value = redis::cmd("ACL").arg("LOG").query(&mut node.raw()).unwrap();
            format!("{log:?}")
        })
        .collect();
    let store = connected.unwrap_or_else(|e| panic!("{e}; ACL LOG: {acl_log:?}"));
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    store.set_many(&items, None).unwrap();
    assert_eq!(store.get_many(&["k1", "k2"]).unwrap().len(), 2);
    assert_eq!(store.size().unwrap().items, 50);
    store.delete("k1").unwrap();
    store.clear().unwrap();
    assert_eq!(store.size().unwrap().items, 0);
}

/// A manager whose L2 hosts name a cluster by URL (`redis+cluster://`), `cluster` left unset, as
/// `RedisStore` takes it (cluster mode from the scheme): the tag sets' Redis and the node
/// breakers take it for a cluster too. The tag store took it for a standalone server, so
/// `invalidate_prefix` walked the keyspace with a `SCAN` the cluster client sent to one node and
/// unlinked each page of keys as one command across slots; and no node breakers were made.
#[test]
fn a_cluster_named_by_url_alone_is_a_cluster_to_prefix_invalidation_and_the_node_breakers() {
    let cluster = RedisCluster::start();
    let cache = memory_l1_over(&cluster, "url", "key_prefix = \"u:\"");
    let keys: Vec<String> = (0..40).map(|i| format!("user:{i}")).collect();
    for key in &keys {
        cache.set(key, &1u32, None).unwrap();
    }
    let invalidated = cache.invalidate_prefix("user:");
    assert!(invalidated.is_ok(), "{invalidated:?}");
    for key in &keys {
        assert_eq!(cache.local().get(key).unwrap(), None, "{key} still in L1");
    }
    assert_eq!(cache.stats().distributed.nodes.len(), 3, "node breakers are on");
}

/// A batch read of two keys of a slot being moved (one key moved, the other not yet) is refused
/// with `TRYAGAIN` by a healthy primary: it fails those keys, saying the slot is being moved, and
/// no breaker counts it. Counted as the node's failure, two such reads opened the primary's
/// breaker, and every key of its other slots failed fast for the cool-down.
#[test]
fn a_batch_read_during_a_slots_migration_leaves_the_primarys_breaker_closed() {
    let cluster = RedisCluster::start();
    let cache = memory_l1_over(
        &cluster,
        "cluster = true",
        "key_prefix = \"uno:\"\nbreaker_failures = 2\nbreaker_cooldown_ms = 60000",
    );
    let l2 = cache.distributed().unwrap();
    // Two keys of one slot on primary 0, whatever the key prefix: hashed by their tag.
    let tag = cluster.key_on(0, "t");
    let (moved, staying) = (format!("{tag}x"), format!("{tag}y"));
    let elsewhere = cluster.key_on(1, "e");
    let other_slot = cluster.key_on(0, "o");
    for key in [&moved, &staying, &elsewhere, &other_slot] {
        l2.set(key, b"v", None).unwrap();
    }
    let full = |key: &str| format!("uno:{key}");
    let slot = cluster.keyslot(&full(&moved));
    let id = |n: usize| -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut cluster.nodes[n].raw())
            .unwrap()
    };
    let setslot = |node: usize, state: &str, peer: &str| {
        redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg(state)
            .arg(peer)
            .exec(&mut cluster.nodes[node].raw())
            .unwrap();
    };
    setslot(1, "IMPORTING", &id(0));
    setslot(0, "MIGRATING", &id(1));
    redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(cluster.nodes[1].port)
        .arg(full(&moved))
        .arg(0)
        .arg(5000)
        .exec(&mut cluster.nodes[0].raw())
        .unwrap();

    // Sent whole (one primary's keys), and split per primary with a key of another.
    for _ in 0..3 {
        let whole = l2.get_many(&[moved.as_str(), staying.as_str()]);
        assert!(
            matches!(&whole, Err(Error::NodeUnavailable { cause, .. }) if cause.to_string().contains("being moved")),
            "{whole:?}"
        );
        let split = l2.get_many(&[moved.as_str(), staying.as_str(), elsewhere.as_str()]);
        assert!(
            matches!(&split, Err(Error::PartialBatch(p)) if p.failed == [0, 1]),
            "{split:?}"
        );
    }
    let nodes = cache.stats().distributed.nodes;
    assert!(
        nodes.iter().all(|n| n.errors == 0 && n.trips == 0),
        "a refusal during a resharding was held against a node: {nodes:?}"
    );
    assert_eq!(
        l2.get(&other_slot).unwrap().map(|e| e.value),
        Some(b"v".to_vec()),
        "the primary's other slots are served"
    );
}
