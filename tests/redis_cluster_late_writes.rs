//! Writes in doubt on a real three-primary Redis Cluster whose every node announces a
//! `support/proxy.rs` proxy of its own as its address: a `SET` that timed out on a stalled node
//! (its proxy holds the connection from the `SET` on) and lands after a newer write of its key is
//! taken out once that node answers the old connection again; the doubt asks the key's own node,
//! not every primary (another node whose flow went silent does not hold it up); and a batch in
//! doubt on a stalled node asks it one `PING` at a time, not one per hash slot each round.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use proxy::TcpProxy;
use support::RedisCluster;
use uno_cache::{Error, RedisOptions, RedisStore, Storage};

/// A cluster whose every node announces a proxy of its own as its address
/// (`--cluster-announce-port`), so that a client's every connection to a node goes through that
/// node's proxy; the cluster bus stays direct, so the nodes never see each other fail. Node `i`
/// announces `proxies[i]`.
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

/// A `SET` that timed out on a node that stalled (its proxy holds the connection from the `SET`
/// on) while a newer write of the key lands on a new cluster connection, and that the node runs
/// last once it reads again, is taken out: the `PING` of every primary on the old connection
/// comes back after it, and then the key goes.
#[test]
fn a_cluster_set_that_lands_after_a_newer_one_is_taken_out() {
    let (cluster, proxies) = cluster_behind_proxies();
    let redis = RedisStore::connect(
        RedisOptions::with_hosts(proxies.iter().map(TcpProxy::addr))
            .cluster(true)
            .prefix("late:")
            .timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let slot = cluster.keyslot("late:k");
    // Node `i` announces `proxies[i]`.
    let owner = proxies
        .iter()
        .position(|p| p.port() == cluster.port_of_slot(slot))
        .unwrap();
    let raw = || -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg("late:k")
            .query(&mut cluster.nodes[owner].raw())
            .unwrap()
    };
    // The `SET` of the key with the prefix and the envelope's 12-byte header, up to the value.
    let held = format!("SET\r\n$6\r\nlate:k\r\n${}\r\n", b"older value".len() + 12);
    proxies[owner].hold_on(held.as_bytes());
    let result = redis.set("k", b"older value", None);
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert_eq!(redis.writes_in_doubt(), 1);
    support::until_ok("the newer set", || redis.set("k", b"the newer value", None));
    assert!(raw().is_some_and(|v| v.ends_with(b"the newer value")));

    proxies[owner].release();
    support::wait_until("the writes in doubt to settle", || redis.writes_in_doubt() == 0);
    assert_eq!(raw(), None, "the older value landed last and was left");
}

/// The doubt of a `SET` asks the node it went to, not every primary: another node whose flow
/// went silent for good (its proxy frozen) says nothing of the write, and must not keep its
/// correction waiting for the minutes the kernel takes to give that flow up.
#[test]
fn a_cluster_set_in_doubt_waits_for_its_own_node_only() {
    let (cluster, proxies) = cluster_behind_proxies();
    let redis = RedisStore::connect(
        RedisOptions::with_hosts(proxies.iter().map(TcpProxy::addr))
            .cluster(true)
            .prefix("late:")
            .timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let slot = cluster.keyslot("late:k");
    let owner = proxies
        .iter()
        .position(|p| p.port() == cluster.port_of_slot(slot))
        .unwrap();
    let raw = || -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg("late:k")
            .query(&mut cluster.nodes[owner].raw())
            .unwrap()
    };
    let held = format!("SET\r\n$6\r\nlate:k\r\n${}\r\n", b"older value".len() + 12);
    proxies[owner].hold_on(held.as_bytes());
    let result = redis.set("k", b"older value", None);
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    proxies[(owner + 1) % proxies.len()].freeze();
    support::until_ok("the newer set", || redis.set("k", b"the newer value", None));

    proxies[owner].release();
    // The doubt ends once the correction's reply is in, a moment after the key is gone: the two
    // are waited for together (asserted one after the other, the count was once read as 1).
    support::wait_until("the late write to be corrected and its doubt to end", || {
        raw().is_none() && redis.writes_in_doubt() == 0
    });
}

/// A batch in doubt on one stalled primary asks it one `PING` at a time while it is silent, not
/// one per hash slot of the batch each round: those would pile up in the stalled server's socket.
#[test]
fn a_cluster_batch_in_doubt_asks_its_stalled_node_once_per_round() {
    let (cluster, proxies) = cluster_behind_proxies();
    let breakers = std::sync::Arc::new(uno_cache::NodeBreakers::new(
        "redis",
        1000,
        Duration::from_secs(60),
    ));
    let redis = RedisStore::connect(
        RedisOptions::with_hosts(proxies.iter().map(TcpProxy::addr))
            .cluster(true)
            .prefix("late:")
            .timeout(Duration::from_millis(200))
            .node_breakers(breakers),
    )
    .unwrap();
    let owner_of = |key: &str| {
        let port = cluster.port_of_slot(cluster.keyslot(&format!("late:{key}")));
        proxies.iter().position(|p| p.port() == port).unwrap()
    };
    // 40 keys of node 0, in 40 slots.
    let mut slots = BTreeSet::new();
    let keys: Vec<String> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|key| owner_of(key) == 0 && slots.insert(cluster.keyslot(&format!("late:{key}"))))
        .take(40)
        .collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), b"older".as_slice())).collect();
    let pings_before = cluster.nodes[0].command_calls("ping");

    proxies[0].hold_on(b"SET");
    let result = redis.set_many(&items, None);
    assert!(result.is_err(), "{result:?}");
    assert_eq!(redis.writes_in_doubt(), keys.len());
    // The stall itself, not a synchronisation: several rounds of the probe.
    std::thread::sleep(Duration::from_secs(2));
    proxies[0].release();
    support::wait_until("the writes in doubt to settle", || redis.writes_in_doubt() == 0);

    // Each slot asked at the start and once more at the end, the crate retrying some of those
    // once (a timeout is a retry to it): up to about 4 a slot. One round a slot each wait (the
    // crate's timeout, a quarter of a second) would be 8 or more a slot in 2 s.
    let pings = cluster.nodes[0].command_calls("ping") - pings_before;
    assert!(
        pings <= 5 * keys.len() as u64,
        "{pings} PINGs for {} slots",
        keys.len()
    );
}
