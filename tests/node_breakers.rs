//! Per-node circuit breakers against real servers: one of three Memcached hosts (or one primary
//! of a three-primary Redis Cluster) dies while the cache is in use, or is down when it starts.
//! Keys on the other nodes keep hitting L2 (reads, writes, deletes, batches); keys on the dead
//! node fail fast (their node's breaker opens, the level's does not) and their writes wait in
//! the replay queue; once the node is back a probe closes its breaker and the queue drains into
//! it. Waits are bounded polls on the breaker state or the server's contents, never sleeps.
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

use support::{MemcachedServer, RedisCluster};
use uno_cache::distributed::{MemcachedOptions, MemcachedStore, NodeBreakers};
use uno_cache::{BreakerState, CacheConfig, CacheManager, Codec, Error, NodeStats, Storage};

const TIMEOUT_MS: u64 = 100;
const COOL_DOWN_MS: u64 = 200;
const PREFIX: &str = "nb:";

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One test at a time: latency bounds are about the cache, not about servers starting on two
/// vCPUs at once.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn manager(kind: &str, cluster: bool, hosts: &[String], dir: &std::path::Path) -> CacheManager {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "file"
            path = {:?}
            durability = "none"
            ttl = 300
            [distributed]
            enabled = true
            type = "{kind}"
            cluster = {cluster}
            hosts = [{}]
            key_prefix = "{PREFIX}"
            timeout_ms = {TIMEOUT_MS}
            breaker_failures = 2
            breaker_cooldown_ms = {COOL_DOWN_MS}
            "#,
            dir.display().to_string(),
            hosts.join(", ")
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Polls `ready` until it holds or `deadline` passes.
fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn node(cache: &CacheManager, name: &str) -> NodeStats {
    let stats = cache.stats().distributed;
    stats
        .nodes
        .iter()
        .find(|n| n.node == name)
        .cloned()
        .unwrap_or_else(|| panic!("no node {name} in {:?}", stats.nodes))
}

/// Checks that the calls since `before` (a snapshot of node `name`) were skipped by its open
/// breaker. Counted, not timed: a loaded machine can stall any call past a latency bound, and a
/// dead node refuses a connection at once, so a call sent to it is fast too. A call that reached
/// the node and failed counts in its `errors`, a skip does not; the cool-down may let a probe
/// through meanwhile, but each failed probe opens the breaker again, so the errors may grow by
/// the trips and no more.
fn assert_skipped(cache: &CacheManager, name: &str, before: &NodeStats) {
    let after = node(cache, name);
    assert!(
        after.errors - before.errors <= after.trips - before.trips,
        "a call reached the open node {name} other than as its probe: {before:?} → {after:?}"
    );
}

fn encoded(key: &str, value: u64) -> Vec<u8> {
    Codec::bincode().encode(key, &value).unwrap()
}

/// Where the keys of a Memcached L2 live: a store with the same hosts and prefix (built while
/// every host is up) tells each key's host.
struct Placement {
    store: MemcachedStore,
}

impl Placement {
    fn new(hosts: &[String]) -> Self {
        Placement {
            store: MemcachedStore::connect(
                MemcachedOptions::with_hosts(hosts.iter().cloned()).prefix(PREFIX),
            )
            .unwrap(),
        }
    }

    /// `n` keys named `{stem}{i}` that live on host `host`.
    fn keys_on(&self, host: usize, stem: &str, n: usize) -> Vec<String> {
        (0..)
            .map(|i| format!("{stem}{i}"))
            .filter(|k| self.store.server_key(k).1 == host)
            .take(n)
            .collect()
    }

    fn server_key(&self, key: &str) -> String {
        self.store.server_key(key).0
    }
}

fn raw_get(server: &MemcachedServer, server_key: &str) -> Option<Vec<u8>> {
    server.raw().get::<Vec<u8>>(server_key).unwrap()
}

/// What the tests check once host `dead` of `servers` is down: the other hosts serve their keys
/// (single and batch reads hit L2, writes and deletes reach them), the dead host's keys fail
/// fast and their writes are queued, and only the dead host's breaker is open.
fn check_one_host_down(cache: &CacheManager, place: &Placement, servers: &[MemcachedServer], dead: usize) {
    let live = (dead + 1) % servers.len();
    let dead_name = servers[dead].addr();
    let l2 = cache.distributed().unwrap();
    // Values put into L2 behind L1's back, so reads through the manager must ask L2.
    let live_keys = place.keys_on(live, "cold-live:", 4);
    let dead_keys = place.keys_on(dead, "cold-dead:", 4);
    for (i, key) in live_keys.iter().enumerate() {
        l2.set(key, &encoded(key, i as u64), None).unwrap();
    }

    // Drive the dead host's breaker open (two failures), then every read of its keys is fast.
    wait_for("the dead host's breaker opened", Duration::from_secs(5), || {
        assert_eq!(cache.get::<u64>(&dead_keys[0]).unwrap(), None);
        node(cache, &dead_name).state == BreakerState::Open
    });
    let before = cache.stats().distributed;
    let dead_before = node(cache, &dead_name);
    for key in &dead_keys {
        assert_eq!(cache.get::<u64>(key).unwrap(), None, "a miss, not an error");
    }
    // Fast: the open host was not called.
    assert_skipped(cache, &dead_name, &dead_before);
    let after = cache.stats().distributed;
    assert!(
        after.errors >= before.errors + dead_keys.len() as u64,
        "each read of a dead host's key is an L2 error: {} → {}",
        before.errors,
        after.errors
    );

    // Single reads of the live hosts' keys still hit L2.
    assert_eq!(cache.get::<u64>(&live_keys[0]).unwrap(), Some(0));
    // A batch across both: the live keys hit, the dead ones are misses.
    let mut batch: Vec<&str> = live_keys[1..].iter().map(String::as_str).collect();
    batch.extend(dead_keys.iter().map(String::as_str));
    let hits_before = cache.stats().distributed.hits;
    let got = cache.multi_get::<u64>(&batch).unwrap();
    for (i, key) in live_keys.iter().enumerate().skip(1) {
        assert_eq!(got.get(key), Some(&(i as u64)), "{key} on a live host: {got:?}");
    }
    for key in &dead_keys {
        assert!(!got.contains_key(key), "{key} on the dead host");
    }
    assert_eq!(
        cache.stats().distributed.hits,
        hits_before + live_keys.len() as u64 - 1,
        "every live key of the batch hit L2"
    );

    // Writes: a batch across both hosts reaches the live one; the dead one's items are queued.
    let queued_before = cache.stats().consistency.queued;
    let items: Vec<(String, u64)> = live_keys
        .iter()
        .chain(&dead_keys)
        .enumerate()
        .map(|(i, k)| (k.clone(), 100 + i as u64))
        .collect();
    let refs: Vec<(&str, u64)> = items.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    cache.multi_set(refs.iter().copied(), None).unwrap();
    for (key, value) in items.iter().take(live_keys.len()) {
        assert_eq!(
            raw_get(&servers[live], &place.server_key(key))
                .map(|b| b.len() > 12 && b.ends_with(&encoded(key, *value))),
            Some(true),
            "{key} reached its live host"
        );
    }
    assert!(
        cache.stats().consistency.queued >= queued_before + dead_keys.len() as u64,
        "the dead host's writes wait in the replay queue"
    );
    // A delete of a live key reaches its host; so does the live half of a batch delete, while
    // the dead half waits in the queue.
    assert!(cache.delete(&live_keys[0]).unwrap());
    assert_eq!(raw_get(&servers[live], &place.server_key(&live_keys[0])), None);
    let queued_before = cache.stats().consistency.queued;
    // (A key without a queued op: a batch with one goes to the queue whole, to keep its order.)
    let fresh_dead = &place.keys_on(dead, "del-dead:", 1)[0];
    assert!(cache.multi_delete(&[&live_keys[1], fresh_dead]).unwrap() >= 1);
    assert_eq!(raw_get(&servers[live], &place.server_key(&live_keys[1])), None);
    assert!(
        cache.stats().consistency.queued > queued_before,
        "the dead key's delete is queued"
    );

    let stats = cache.stats().distributed;
    assert!(
        stats
            .breaker
            .is_none_or(|b| b.state == BreakerState::Closed && b.trips == 0),
        "the level's breaker never opened: {:?}",
        stats.breaker
    );
    for n in &stats.nodes {
        let expected = if n.node == dead_name {
            BreakerState::Open
        } else {
            BreakerState::Closed
        };
        assert_eq!(n.state, expected, "{n:?}");
    }
}

/// The async API the same way: a dead host's keys are fast misses and queued writes, the live
/// hosts' keys hit and are written.
fn check_async_one_host_down(cache: &CacheManager, place: &Placement, dead: usize, dead_name: &str) {
    let live = (dead + 1) % 3;
    let l2 = cache.distributed().unwrap();
    let live_keys = place.keys_on(live, "async-live:", 2);
    let dead_keys = place.keys_on(dead, "async-dead:", 2);
    for (i, key) in live_keys.iter().enumerate() {
        l2.set(key, &encoded(key, i as u64), None).unwrap();
    }
    support::block_on(async {
        let dead_before = node(cache, dead_name);
        assert_eq!(cache.get_async::<u64>(&dead_keys[0]).await.unwrap(), None);
        assert_skipped(cache, dead_name, &dead_before);
        assert_eq!(cache.get_async::<u64>(&live_keys[0]).await.unwrap(), Some(0));
        let batch = [live_keys[1].as_str(), dead_keys[1].as_str()];
        let got = cache.multi_get_async::<u64>(&batch).await.unwrap();
        assert_eq!(got.get(&live_keys[1]), Some(&1), "{got:?}");
        assert!(!got.contains_key(&dead_keys[1]));
        let queued = cache.stats().consistency.queued;
        cache
            .multi_set_async(
                [(live_keys[0].as_str(), 9u64), (dead_keys[0].as_str(), 9u64)],
                None,
            )
            .await
            .unwrap();
        assert!(
            cache.stats().consistency.queued > queued,
            "the dead key's write is queued"
        );
    });
    assert_eq!(
        l2.get(&live_keys[0]).unwrap().map(|e| e.value),
        Some(encoded(&live_keys[0], 9)),
        "the live key's write reached its host"
    );
}

/// After `restart`, a probe closes the dead host's breaker and the replay queue drains into it.
fn check_rejoins(cache: &CacheManager, place: &Placement, server: &MemcachedServer, dead: usize) {
    let name = server.addr();
    let key = &place.keys_on(dead, "rejoin:", 1)[0];
    wait_for("the host's breaker closed", Duration::from_secs(10), || {
        let _ = cache.get::<u64>(key).unwrap();
        node(cache, &name).state == BreakerState::Closed
    });
    cache.set(key, &7u64, None).unwrap();
    assert!(
        raw_get(server, &place.server_key(key)).is_some(),
        "writes reach the host again"
    );
    wait_for("the replay queue drained", Duration::from_secs(10), || {
        let _ = cache.replay_now();
        cache.stats().consistency.replay_pending == 0
    });
}

#[test]
fn memcached_host_killed_mid_workload_fails_fast_for_its_keys_only_and_rejoins() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let place = Placement::new(&hosts);
    let cache = manager("memcached", false, &hosts, &dir.path().join("l1"));
    // A workload before the kill: every host serves.
    for i in 0..60u64 {
        cache.set(&format!("warm:{i}"), &i, None).unwrap();
    }
    assert!(cache
        .stats()
        .distributed
        .nodes
        .iter()
        .all(|n| n.state == BreakerState::Closed));
    assert_eq!(cache.stats().distributed.nodes.len(), 3);

    servers[1].kill();
    check_one_host_down(&cache, &place, &servers, 1);
    servers[1].restart();
    check_rejoins(&cache, &place, &servers[1], 1);
}

#[test]
fn multi_host_memcached_starts_with_a_host_down_serves_the_others_and_the_host_rejoins() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let place = Placement::new(&hosts);
    servers[2].kill();

    // The store alone: without per-host breakers every host must answer; with them one is
    // enough and the dead host starts open.
    let err = MemcachedStore::connect(MemcachedOptions::with_hosts(hosts.iter().cloned())).unwrap_err();
    assert!(matches!(err, Error::Backend { op: "connect", .. }), "{err:?}");
    let breakers = Arc::new(NodeBreakers::new(
        "memcached",
        2,
        Duration::from_millis(COOL_DOWN_MS),
    ));
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts(hosts.iter().cloned())
            .prefix(PREFIX)
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    let down = breakers
        .stats()
        .into_iter()
        .find(|n| n.node == servers[2].addr())
        .unwrap();
    assert_eq!(down.state, BreakerState::Open, "{down:?}");
    let dead_key = &place.keys_on(2, "direct-dead:", 1)[0];
    let err = store.get(dead_key).unwrap_err();
    assert!(
        matches!(&err, Error::NodeUnavailable { node, .. } if *node == servers[2].addr()),
        "{err:?}"
    );
    let live_key = &place.keys_on(0, "direct-live:", 1)[0];
    store.set(live_key, b"v", None).unwrap();
    assert_eq!(store.get(live_key).unwrap().unwrap().value, b"v");
    drop(store);

    // Through the manager: it starts connected (not deferred) and serves the live hosts.
    let cache = manager("memcached", false, &hosts, &dir.path().join("l1"));
    let stats = cache.stats().distributed;
    assert_eq!(stats.nodes.len(), 3, "{:?}", stats.nodes);
    assert_eq!(node(&cache, &servers[2].addr()).state, BreakerState::Open);
    check_one_host_down(&cache, &place, &servers, 2);
    check_async_one_host_down(&cache, &place, 2, &servers[2].addr());
    servers[2].restart();
    check_rejoins(&cache, &place, &servers[2], 2);
}

#[test]
fn cluster_primary_killed_mid_workload_fails_fast_for_its_keys_only_and_rejoins() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let hosts = cluster.addrs();
    let cache = manager("redis", true, &hosts, &dir.path().join("l1"));
    let l2 = cache.distributed().unwrap();
    let live: Vec<String> = (0..3).map(|i| cluster.key_on(0, &format!("live{i}-"))).collect();
    let dead: Vec<String> = (0..3).map(|i| cluster.key_on(1, &format!("dead{i}-"))).collect();
    for (i, key) in live.iter().chain(&dead).enumerate() {
        l2.set(key, &encoded(key, i as u64), None).unwrap();
    }
    let stats = cache.stats().distributed;
    assert_eq!(stats.nodes.len(), 3, "{:?}", stats.nodes);
    let dead_name = cluster.nodes[1].addr();

    cluster.nodes[1].kill();
    wait_for(
        "the dead primary's breaker opened",
        Duration::from_secs(5),
        || {
            assert_eq!(cache.get::<u64>(&dead[0]).unwrap(), None);
            node(&cache, &dead_name).state == BreakerState::Open
        },
    );
    let dead_before = node(&cache, &dead_name);
    for key in &dead[1..] {
        assert_eq!(cache.get::<u64>(key).unwrap(), None);
    }
    // Fast: the open primary was not called.
    assert_skipped(&cache, &dead_name, &dead_before);
    // The other primaries keep serving: a single read, and a batch across live and dead keys.
    assert_eq!(cache.get::<u64>(&live[0]).unwrap(), Some(0));
    let batch: Vec<&str> = live[1..].iter().chain(&dead).map(String::as_str).collect();
    let got = cache.multi_get::<u64>(&batch).unwrap();
    assert_eq!(got.get(&live[1]), Some(&1));
    assert_eq!(got.get(&live[2]), Some(&2));
    assert!(dead.iter().all(|k| !got.contains_key(k)), "{got:?}");
    // Writes: the live key reaches its primary, the dead one waits in the replay queue.
    let queued_before = cache.stats().consistency.queued;
    cache
        .multi_set([(live[0].as_str(), 50u64), (dead[0].as_str(), 51u64)], None)
        .unwrap();
    assert_eq!(
        l2.get(&live[0]).unwrap().map(|e| e.value),
        Some(encoded(&live[0], 50))
    );
    assert!(cache.stats().consistency.queued > queued_before);
    let stats = cache.stats().distributed;
    assert!(
        stats.breaker.is_some_and(|b| b.trips == 0),
        "the level's breaker never opened: {:?}",
        stats.breaker
    );
    for n in &stats.nodes {
        let open = n.node == dead_name;
        assert_eq!(n.state == BreakerState::Open, open, "{n:?}");
    }

    cluster.nodes[1].restart();
    wait_for("the primary's breaker closed", Duration::from_secs(20), || {
        let _ = cache.get::<u64>(&dead[1]).unwrap();
        node(&cache, &dead_name).state == BreakerState::Closed
    });
    wait_for("the replay queue drained", Duration::from_secs(20), || {
        let _ = cache.replay_now();
        cache.stats().consistency.replay_pending == 0
    });
    assert_eq!(
        l2.get(&dead[0]).unwrap().map(|e| e.value),
        Some(encoded(&dead[0], 51)),
        "the queued write reached the restarted primary"
    );
}
