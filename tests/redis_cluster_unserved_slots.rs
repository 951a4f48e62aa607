//! `RedisStore` against a real three-primary Redis Cluster that does not serve every slot: a slot
//! the cluster does not serve (`CLUSTERDOWN`) fails its own keys only, soon, saying so, and a
//! batch over it serves the other slots; a one-key call's error names the key and its slot, also
//! when a dead primary stops a cluster that requires full coverage.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::time::{Duration, Instant};

use support::RedisCluster;
use uno_cache::{DistributedStorage, Error, RedisOptions, RedisStore, Storage};

/// A slot the cluster does not serve (CLUSTER DELSLOTS on every node, with
/// `cluster-require-full-coverage no` so that the other slots stay served): its key's call fails
/// soon with an error that says the cluster does not serve the key's slot (naming both), where it waited out
/// the whole deadline (the client retried CLUSTERDOWN after more than a second) and said
/// `Timeout`; a batch (read, write or delete) serves its other keys and names the failed one's
/// position, where the client's own split across slots failed the whole batch; a batch of that
/// slot's keys alone fails naming the slot as well.
#[test]
fn a_key_of_a_slot_the_cluster_does_not_serve_fails_saying_so_and_its_batch_serves_the_others() {
    let cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let redis = cluster.store("down:");
    let (served, lost) = ("served", "lost");
    let slot = cluster.keyslot("down:lost");
    assert_ne!(cluster.keyslot("down:served"), slot);
    redis.set(served, b"v", None).unwrap();
    redis.set(lost, b"w", None).unwrap();
    for node in &cluster.nodes {
        let _: () = redis::cmd("CLUSTER")
            .arg("DELSLOTS")
            .arg(slot)
            .query(&mut node.raw())
            .unwrap();
    }

    let started = Instant::now();
    let err = redis.get(lost).unwrap_err();
    let took = started.elapsed();
    let text = err.to_string();
    assert!(
        !matches!(err, Error::Timeout { .. })
            && text.contains(&format!("does not serve hash slot {slot} (of key \"lost\")")),
        "{err:?}"
    );
    assert!(took < redis.timeout(), "answered in {took:?}");
    let err = redis.set(lost, b"x", None).unwrap_err();
    assert!(err.to_string().contains("does not serve"), "{err:?}");
    // A batch of that slot's keys alone goes whole, and its error names the slot too.
    let named = format!("does not serve hash slot {slot} (of the batch's one key, \"lost\")");
    let errors = [
        redis.get_many(&[lost]).map(drop).unwrap_err(),
        support::block_on(redis.get_many_async(&[lost]))
            .map(drop)
            .unwrap_err(),
        redis.set_many(&[(lost, b"x")], None).unwrap_err(),
        support::block_on(redis.set_many_async(&[(lost, b"x")], None)).unwrap_err(),
        redis.delete_many(&[lost]).map(drop).unwrap_err(),
        support::block_on(redis.delete_many_async(&[lost]))
            .map(drop)
            .unwrap_err(),
    ];
    for err in errors {
        assert!(err.to_string().contains(&named), "{err:?}");
    }

    for round in 0..2 {
        match redis.get_many(&[served, lost]) {
            Err(Error::PartialBatch(partial)) => {
                assert_eq!(partial.failed, [1], "round {round}");
                let text = partial.cause.to_string();
                assert!(
                    text.contains("does not serve") && text.contains(&format!("slot {slot}")),
                    "round {round}: {text}"
                );
                match &partial.served {
                    uno_cache::Served::Entries(entries) => {
                        assert_eq!(entries[0].as_ref().map(|e| e.value.as_slice()), Some(&b"v"[..]));
                        assert!(entries[1].is_none());
                    }
                    other => panic!("{other:?}"),
                }
            }
            other => panic!("round {round}: {other:?}"),
        }
    }
    let got = support::block_on(redis.get_many_async(&[served, lost]));
    assert!(
        matches!(&got, Err(Error::PartialBatch(partial)) if partial.failed == [1]),
        "{got:?}"
    );

    match redis.set_many(&[(served, b"v2"), (lost, b"w2")], None) {
        Err(Error::PartialBatch(partial)) => assert_eq!(partial.failed, [1]),
        other => panic!("{other:?}"),
    }
    assert_eq!(redis.get(served).unwrap().unwrap().value, b"v2");
    match redis.delete_many(&[served, lost]) {
        Err(Error::PartialBatch(partial)) => {
            assert_eq!(partial.failed, [1]);
            assert!(
                matches!(partial.served, uno_cache::Served::Removed(1)),
                "{partial:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(redis.get(served).unwrap().is_none());
}

/// With per-node breakers: once the level's slot map (re-read after the first failure) names no
/// owner for the unserved slot, a batch of that slot's key and a key of another slot of the same
/// primary (which went whole behind the primary's breaker) is split per slot as well, and the
/// primary's other slots stay served.
#[test]
fn with_node_breakers_a_batch_over_an_unserved_slot_serves_the_same_primarys_other_slots() {
    let cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let breakers = std::sync::Arc::new(uno_cache::NodeBreakers::new("redis", 3, Duration::from_secs(60)));
    let redis = RedisStore::connect(
        RedisOptions::with_hosts(cluster.addrs())
            .cluster(true)
            .prefix("bd:")
            .timeout(Duration::from_millis(500))
            .node_breakers(std::sync::Arc::clone(&breakers)),
    )
    .unwrap();
    let lost = "lost";
    let slot = cluster.keyslot("bd:lost");
    let owner = cluster.node_of_slot(slot);
    let served = cluster.key_on(owner, "s");
    assert_ne!(cluster.keyslot(&format!("bd:{served}")), slot);
    redis.set(&served, b"v", None).unwrap();
    redis.set(lost, b"w", None).unwrap();
    for node in &cluster.nodes {
        let _: () = redis::cmd("CLUSTER")
            .arg("DELSLOTS")
            .arg(slot)
            .query(&mut node.raw())
            .unwrap();
    }

    let err = redis.get(lost).unwrap_err();
    assert!(err.to_string().contains("does not serve"), "{err:?}");
    support::wait_until("a batch over the unserved slot serves the other key", || {
        matches!(
            redis.get_many(&[served.as_str(), lost]),
            Err(Error::PartialBatch(partial)) if partial.failed == [1]
        )
    });
    assert_eq!(redis.get(&served).unwrap().unwrap().value, b"v");
}

/// `CLUSTER INFO` of a node.
fn cluster_info(node: &support::RedisServer) -> String {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query(&mut node.raw())
        .unwrap_or_default()
}

/// With `cluster-require-full-coverage yes`, a primary killed (no replica to take over) leaves
/// its slots unserved, and once the others mark it failed they answer CLUSTERDOWN for every key.
/// A one-key call's error then names the key and its hash slot and says what to check, as a
/// batch's failed parts name their slots; it said only "this key's hash slot".
#[test]
fn a_one_key_call_the_cluster_does_not_serve_names_the_key_and_its_slot() {
    let mut cluster = RedisCluster::start_with(&[
        "--cluster-require-full-coverage",
        "yes",
        "--cluster-node-timeout",
        "1000",
    ]);
    let redis = cluster.store("cd:");
    let (lost, kept) = (cluster.key_on(2, "lost"), cluster.key_on(0, "kept"));
    let slots = [
        cluster.keyslot(&format!("cd:{lost}")),
        cluster.keyslot(&format!("cd:{kept}")),
    ];
    redis.set(&kept, b"v", None).unwrap();
    cluster.nodes[2].kill();
    support::wait_until("the live primaries take the cluster down", || {
        cluster.nodes[..2]
            .iter()
            .all(|node| cluster_info(node).contains("cluster_state:fail"))
    });

    for (key, slot) in [(&lost, slots[0]), (&kept, slots[1])] {
        let results = [
            ("get", redis.get(key).map(drop)),
            ("set", redis.set(key, b"w", None)),
            ("delete", redis.delete(key).map(drop)),
            ("get", support::block_on(redis.get_async(key)).map(drop)),
            ("set", support::block_on(redis.set_async(key, b"w", None))),
            ("delete", support::block_on(redis.delete_async(key)).map(drop)),
        ];
        for (called, result) in results {
            match result {
                Err(Error::Backend { op, reason, .. }) => {
                    assert_eq!(op, called);
                    let named = format!("does not serve hash slot {slot} (of key {key:?})");
                    assert!(
                        reason.contains(&named) && reason.contains("CLUSTER INFO"),
                        "{called} {key}: {reason}"
                    );
                }
                other => panic!("{called} {key}: {other:?}"),
            }
        }
    }
}
