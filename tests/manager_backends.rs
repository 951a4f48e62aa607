//! The multi-level rules of docs/design.md through `CacheManager` against every real L2 backend —
//! a `redis-server`, a `memcached` and a three-node Redis Cluster — not only against the
//! scripted stand-in of `manager_rules.rs`: per-level TTL caps on write, backfill with the
//! remaining L2 TTL (read from the envelope) bounded by `local.ttl`, delete from both levels,
//! batch calls, one `MGET` per node (per slot in a cluster) for a `multi_get` of 100 keys, and
//! fallback on and off with the server down. One body per rule, run against each backend from a
//! table; each rule gets its own key prefix and its own managers on a shared manual clock (so
//! expiries are exact and no test sleeps). A failing rule is reported with its backend and the
//! remaining rules still run.
//!
//! Also bad input through `CacheManager::new` from configuration: unreachable hosts, a wrong
//! password, a bad URL, and an oversized value through the manager's `set` — each a clear error
//! naming what is wrong; and a `unix://` socket host, which takes the password and database
//! another way than a TCP URL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use support::{free_port, MemcachedServer, RedisCluster, RedisServer};
use uno_cache::{CacheConfig, CacheManager, Codec, DistributedStorage, Entry, Error, ManualClock};

const LOCAL_TTL_S: u64 = 60;
const DISTRIBUTED_TTL_S: u64 = 600;
const SECOND_MS: u64 = 1000;

enum Server {
    Redis(RedisServer),
    Memcached(MemcachedServer),
    Cluster(RedisCluster),
}

struct Backend {
    name: &'static str,
    server: Server,
}

impl Backend {
    fn redis() -> Self {
        Backend {
            name: "redis",
            server: Server::Redis(RedisServer::start()),
        }
    }

    fn memcached() -> Self {
        Backend {
            name: "memcached",
            server: Server::Memcached(MemcachedServer::start()),
        }
    }

    fn cluster() -> Self {
        Backend {
            name: "cluster",
            server: Server::Cluster(RedisCluster::start()),
        }
    }

    fn hosts(&self) -> Vec<String> {
        match &self.server {
            Server::Redis(s) => vec![s.addr()],
            Server::Memcached(s) => vec![s.addr()],
            Server::Cluster(c) => c.addrs(),
        }
    }

    fn config(&self, prefix: &str, fallback: bool) -> CacheConfig {
        let (kind, cluster) = match self.server {
            Server::Redis(_) => ("redis", false),
            Server::Memcached(_) => ("memcached", false),
            Server::Cluster(_) => ("redis", true),
        };
        let hosts: Vec<String> = self.hosts().iter().map(|h| format!("{h:?}")).collect();
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = {fallback}
            [local]
            type = "memory"
            ttl = {LOCAL_TTL_S}
            [distributed]
            enabled = true
            type = "{kind}"
            cluster = {cluster}
            hosts = [{}]
            ttl = {DISTRIBUTED_TTL_S}
            key_prefix = "{prefix}"
            timeout_ms = 300
            breaker_failures = 1000
            "#,
            hosts.join(", ")
        ))
        .unwrap()
    }

    /// A manager (memory L1, this backend as L2) on `clock`, keys under `prefix`.
    fn manager(&self, prefix: &str, fallback: bool, clock: &ManualClock) -> CacheManager {
        CacheManager::builder()
            .config(self.config(prefix, fallback))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap()
    }

    /// The Redis nodes (one for standalone, three for a cluster); none for Memcached.
    fn redis_nodes(&self) -> Vec<&RedisServer> {
        match &self.server {
            Server::Redis(s) => vec![s],
            Server::Memcached(_) => Vec::new(),
            Server::Cluster(c) => c.nodes.iter().collect(),
        }
    }

    /// The Redis node holding `full_key` (prefix included); `None` for Memcached.
    fn redis_node_of(&self, full_key: &str) -> Option<&RedisServer> {
        match &self.server {
            Server::Redis(s) => Some(s),
            Server::Memcached(_) => None,
            Server::Cluster(c) => c.nodes.get(c.node_of_slot(c.keyslot(full_key))),
        }
    }

    /// Kills every server of the backend.
    fn kill(&mut self) {
        match &mut self.server {
            Server::Redis(s) => s.kill(),
            Server::Memcached(s) => s.kill(),
            Server::Cluster(c) => c.nodes.iter_mut().for_each(RedisServer::kill),
        }
    }
}

/// A manual clock at the real time now (the servers keep real TTLs beside the envelopes).
fn clock_now() -> ManualClock {
    ManualClock::new(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
}

fn now_ms(clock: &ManualClock) -> u64 {
    uno_cache::Clock::now_ms(clock)
}

fn expiry_ms(entry: &Entry) -> Option<u64> {
    entry
        .expires_at
        .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64)
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    Codec::bincode().encode("k", value).unwrap()
}

fn l1_expiry(cache: &CacheManager, key: &str) -> Option<u64> {
    expiry_ms(&cache.local().get(key).unwrap().expect("in L1"))
}

fn l2(cache: &CacheManager) -> &Arc<dyn DistributedStorage> {
    cache.distributed().expect("an L2")
}

fn l2_expiry(cache: &CacheManager, key: &str) -> Option<u64> {
    expiry_ms(&l2(cache).get(key).unwrap().expect("in L2"))
}

// ---- the rules, one body each ----

type Rule = fn(&mut Backend, &str);

fn set_caps_each_levels_ttl_separately(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    let t0 = now_ms(&clock);
    cache.set("long", &1u8, Some(Duration::from_secs(3600))).unwrap();
    cache.set("short", &2u8, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(l1_expiry(&cache, "long"), Some(t0 + LOCAL_TTL_S * SECOND_MS));
    assert_eq!(
        l2_expiry(&cache, "long"),
        Some(t0 + DISTRIBUTED_TTL_S * SECOND_MS)
    );
    assert_eq!(l1_expiry(&cache, "short"), Some(t0 + 30 * SECOND_MS));
    assert_eq!(l2_expiry(&cache, "short"), Some(t0 + 30 * SECOND_MS));
    // The server's own TTL matches the envelope (Redis reports it; Memcached cannot).
    if let Some(node) = b.redis_node_of(&format!("{prefix}long")) {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}long"))
            .query(&mut node.raw())
            .unwrap();
        assert!((590_000..=600_000).contains(&pttl), "PTTL {pttl}");
    }
}

fn set_without_ttl_gives_each_level_its_configured_ttl(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    let t0 = now_ms(&clock);
    cache.set("k", &"v", None).unwrap();
    assert_eq!(l1_expiry(&cache, "k"), Some(t0 + LOCAL_TTL_S * SECOND_MS));
    assert_eq!(l2_expiry(&cache, "k"), Some(t0 + DISTRIBUTED_TTL_S * SECOND_MS));
}

fn l2_hit_is_backfilled_with_the_remaining_l2_ttl(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let writer = b.manager(prefix, true, &clock);
    let reader = b.manager(prefix, true, &clock);
    let t0 = now_ms(&clock);
    writer
        .set("k", &"from l2", Some(Duration::from_secs(10)))
        .unwrap();
    clock.advance(Duration::from_secs(4));
    assert_eq!(reader.get::<String>("k").unwrap().as_deref(), Some("from l2"));
    assert_eq!(
        l1_expiry(&reader, "k"),
        Some(t0 + 10 * SECOND_MS),
        "the L1 copy dies with the L2 entry"
    );
    let stats = reader.stats();
    assert_eq!((stats.distributed.hits, stats.overall.backfills), (1, 1));
    clock.advance(Duration::from_secs(6));
    assert_eq!(reader.local().get("k").unwrap(), None);
    assert_eq!(
        reader.get::<String>("k").unwrap(),
        None,
        "expired by its envelope"
    );
}

fn backfill_never_exceeds_local_ttl(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    let t0 = now_ms(&clock);
    l2(&cache)
        .set("k", &encoded(&1u8), Some(Duration::from_secs(3600)))
        .unwrap();
    assert_eq!(cache.get::<u8>("k").unwrap(), Some(1));
    assert_eq!(l1_expiry(&cache, "k"), Some(t0 + LOCAL_TTL_S * SECOND_MS));
}

fn miss_in_both_levels_backfills_nothing(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    assert_eq!(cache.get::<u8>("nope").unwrap(), None);
    let stats = cache.stats();
    assert_eq!((stats.distributed.misses, stats.overall.backfills), (1, 0));
    assert_eq!(cache.local().size().unwrap().items, 0);
}

fn delete_removes_the_key_from_both_levels(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    cache.set("k", &1u8, None).unwrap();
    assert!(cache.delete("k").unwrap());
    assert_eq!(cache.local().get("k").unwrap(), None);
    assert_eq!(l2(&cache).get("k").unwrap(), None);
    assert!(!cache.delete("k").unwrap());
    // A key only L2 has is deleted there too.
    l2(&cache).set("only-l2", &encoded(&2u8), None).unwrap();
    assert!(cache.delete("only-l2").unwrap());
    assert_eq!(l2(&cache).get("only-l2").unwrap(), None);
}

fn multi_get_asks_l2_for_the_l1_misses_and_backfills_each(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    let t0 = now_ms(&clock);
    cache.local().set("a", &encoded(&1u32), None).unwrap();
    l2(&cache)
        .set("b", &encoded(&2u32), Some(Duration::from_secs(5)))
        .unwrap();
    l2(&cache).set("c", &encoded(&3u32), None).unwrap();
    let got = cache.multi_get::<u32>(&["a", "b", "c", "d"]).unwrap();
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!((got["a"], got["b"], got["c"]), (1, 2, 3));
    // A batch's backfill is written by the backfill thread; flush waits for it.
    cache.flush().unwrap();
    assert_eq!(l1_expiry(&cache, "b"), Some(t0 + 5 * SECOND_MS));
    assert_eq!(l1_expiry(&cache, "c"), Some(t0 + LOCAL_TTL_S * SECOND_MS));
    let stats = cache.stats();
    assert_eq!((stats.distributed.hits, stats.distributed.misses), (2, 1));
    assert_eq!(stats.distributed.errors, 0);
}

fn multi_set_and_multi_delete_cover_both_levels(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let cache = b.manager(prefix, true, &clock);
    let t0 = now_ms(&clock);
    let items = vec![("a".to_owned(), 1u64), ("b".to_owned(), 2), ("c".to_owned(), 3)];
    cache.multi_set(items, Some(Duration::from_secs(3600))).unwrap();
    assert_eq!(cache.local().size().unwrap().items, 3);
    assert_eq!(l1_expiry(&cache, "b"), Some(t0 + LOCAL_TTL_S * SECOND_MS));
    let in_l2 = l2(&cache).get_many(&["a", "b", "c"]).unwrap();
    for entry in &in_l2 {
        let entry = entry.as_ref().expect("written to L2");
        assert_eq!(expiry_ms(entry), Some(t0 + DISTRIBUTED_TTL_S * SECOND_MS));
    }
    assert_eq!(in_l2[1].as_ref().unwrap().value, encoded(&2u64));
    assert_eq!(cache.multi_delete(&["a", "b", "zz"]).unwrap(), 2);
    assert_eq!(cache.local().size().unwrap().items, 1);
    assert_eq!(l2(&cache).get("a").unwrap(), None);
    assert!(l2(&cache).get("c").unwrap().is_some());
}

/// Redis only: a `multi_get` of 100 L1 misses is one `MGET` on a standalone server, and in a
/// cluster one `MGET` per hash slot, each on the node owning it (100 keys with one hash tag:
/// one `MGET` in the whole cluster). No `GET` is sent.
fn multi_get_of_100_keys_is_one_mget_per_node_or_slot(b: &mut Backend, prefix: &str) {
    let nodes = b.redis_nodes();
    if nodes.is_empty() {
        return; // Memcached: no per-command counters.
    }
    let clock = clock_now();
    let writer = b.manager(prefix, true, &clock);
    let reader = b.manager(prefix, true, &clock);
    for keys in [
        (0..100).map(|i| format!("k{i}")).collect::<Vec<_>>(),
        (0..100).map(|i| format!("{{user:7}}:f{i}")).collect(),
    ] {
        let items: Vec<(&str, u32)> = keys.iter().zip(0u32..).map(|(k, i)| (k.as_str(), i)).collect();
        writer.multi_set(items, None).unwrap();
        let expected: Vec<u64> = match &b.server {
            Server::Cluster(cluster) => {
                let mut slots: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
                for key in &keys {
                    let slot = cluster.keyslot(&format!("{prefix}{key}"));
                    slots.entry(cluster.node_of_slot(slot)).or_default().insert(slot);
                }
                (0..nodes.len())
                    .map(|n| slots.get(&n).map_or(0, BTreeSet::len) as u64)
                    .collect()
            }
            _ => vec![1],
        };
        let calls = |cmd: &str| -> Vec<u64> { nodes.iter().map(|n| n.command_calls(cmd)).collect() };
        let (mget_before, get_before) = (calls("mget"), calls("get"));
        let got = reader.multi_get::<u32>(&keys).unwrap();
        assert_eq!(got.len(), 100);
        let sent: Vec<u64> = calls("mget")
            .iter()
            .zip(&mget_before)
            .map(|(a, b)| a - b)
            .collect();
        assert_eq!(sent, expected, "MGETs per node for {}…", keys[0]);
        assert_eq!(calls("get"), get_before, "no single GETs");
        if keys[0].starts_with('{') {
            assert_eq!(sent.iter().sum::<u64>(), 1, "one slot, one MGET");
        }
        // The keys are in L1 once the backfill thread wrote them: the same multi_get does not
        // reach L2.
        reader.flush().unwrap();
        let mget_before = calls("mget");
        assert_eq!(reader.multi_get::<u32>(&keys).unwrap().len(), 100);
        assert_eq!(calls("mget"), mget_before);
    }
}

/// Runs last: kills the backend. With fallback a dead L2 is a miss on read and L1-only on
/// write; without, every L2 error reaches the caller (after L1 was written or deleted).
fn fallback_on_and_off_with_the_server_down(b: &mut Backend, prefix: &str) {
    let clock = clock_now();
    let on = b.manager(&format!("{prefix}on:"), true, &clock);
    let off = b.manager(&format!("{prefix}off:"), false, &clock);
    on.set("kept", &1u8, None).unwrap();
    off.set("kept", &1u8, None).unwrap();
    b.kill();

    on.set("k", &5u16, None).unwrap();
    assert_eq!(on.get::<u16>("k").unwrap(), Some(5), "L1 still serves");
    assert_eq!(on.get::<u8>("kept").unwrap(), Some(1));
    assert_eq!(on.get::<u16>("absent").unwrap(), None);
    assert!(on.delete("k").unwrap());
    on.multi_set([("a", 1u8), ("b", 2u8)], None).unwrap();
    assert_eq!(on.multi_get::<u8>(&["a", "b", "c"]).unwrap().len(), 2);
    assert_eq!(on.multi_delete(&["a", "b"]).unwrap(), 2);
    assert_eq!(
        on.stats().distributed.errors,
        6,
        "set, get, delete and the three batches"
    );

    // A Memcached host or a Cluster primary fails as that node (its own breaker counts it).
    let is_l2_error = |e: &Error| {
        matches!(
            e,
            Error::Backend { .. } | Error::Timeout { .. } | Error::NodeUnavailable { .. }
        )
    };
    let err = off.set("k", &1u8, None).unwrap_err();
    assert!(is_l2_error(&err), "{err:?}");
    assert!(
        off.local().get("k").unwrap().is_none(),
        "L1 was written first, and then taken out again: the caller was told the set failed"
    );
    assert_eq!(off.get::<u8>("kept").unwrap(), Some(1), "an L1 hit needs no L2");
    let err = off.get::<u8>("absent").unwrap_err();
    assert!(is_l2_error(&err), "{err:?}");
    let err = off.delete("k").unwrap_err();
    assert!(is_l2_error(&err), "{err:?}");
    assert_eq!(off.local().get("k").unwrap(), None, "L1 was deleted anyway");
    assert!(off.multi_get::<u8>(&["x"]).is_err());
    assert!(off.multi_set([("x", 1u8)], None).is_err());
    assert!(off.multi_delete(&["x"]).is_err());
    assert_eq!(off.stats().distributed.errors, 6);
}

const RULES: &[(&str, Rule)] = &[
    (
        "set_caps_each_levels_ttl_separately",
        set_caps_each_levels_ttl_separately,
    ),
    (
        "set_without_ttl_gives_each_level_its_configured_ttl",
        set_without_ttl_gives_each_level_its_configured_ttl,
    ),
    (
        "l2_hit_is_backfilled_with_the_remaining_l2_ttl",
        l2_hit_is_backfilled_with_the_remaining_l2_ttl,
    ),
    (
        "backfill_never_exceeds_local_ttl",
        backfill_never_exceeds_local_ttl,
    ),
    (
        "miss_in_both_levels_backfills_nothing",
        miss_in_both_levels_backfills_nothing,
    ),
    (
        "delete_removes_the_key_from_both_levels",
        delete_removes_the_key_from_both_levels,
    ),
    (
        "multi_get_asks_l2_for_the_l1_misses_and_backfills_each",
        multi_get_asks_l2_for_the_l1_misses_and_backfills_each,
    ),
    (
        "multi_set_and_multi_delete_cover_both_levels",
        multi_set_and_multi_delete_cover_both_levels,
    ),
    (
        "multi_get_of_100_keys_is_one_mget_per_node_or_slot",
        multi_get_of_100_keys_is_one_mget_per_node_or_slot,
    ),
    // Must stay last: it kills the servers.
    (
        "fallback_on_and_off_with_the_server_down",
        fallback_on_and_off_with_the_server_down,
    ),
];

/// Runs every rule against `backend`, each under its own key prefix; fails listing every rule
/// that failed.
fn run_rules(mut backend: Backend) {
    let mut failed = Vec::new();
    for (name, rule) in RULES {
        let prefix = format!("{name}:");
        if catch_unwind(AssertUnwindSafe(|| rule(&mut backend, &prefix))).is_err() {
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{}: rules failed (see the panics above): {failed:?}",
        backend.name
    );
}

#[test]
fn every_rule_holds_with_a_redis_l2() {
    run_rules(Backend::redis());
}

#[test]
fn every_rule_holds_with_a_memcached_l2() {
    run_rules(Backend::memcached());
}

#[test]
fn every_rule_holds_with_a_redis_cluster_l2() {
    run_rules(Backend::cluster());
}

// ---- bad input through CacheManager::new and set ----

fn config_for(kind: &str, hosts: &[String], extra: &str) -> CacheConfig {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = false
        [local]
        type = "memory"
        [distributed]
        enabled = true
        type = "{kind}"
        hosts = [{}]
        timeout_ms = 300
        {extra}
        "#,
        hosts.join(", ")
    ))
    .unwrap()
}

#[test]
fn unreachable_hosts_fail_construction_naming_the_host() {
    for (kind, extra) in [("memcached", ""), ("redis", "cluster = true")] {
        let host = format!("127.0.0.1:{}", free_port());
        let err = CacheManager::new(config_for(kind, std::slice::from_ref(&host), extra)).unwrap_err();
        assert!(
            matches!(err, Error::Backend { .. } | Error::Timeout { .. }),
            "{kind}: {err:?}"
        );
        assert!(err.to_string().contains(&host), "{kind}: {err}");
    }
}

#[test]
fn a_wrong_password_fails_construction_saying_so_without_printing_it() {
    let server = RedisServer::with_password("right-one");
    let err =
        CacheManager::new(config_for("redis", &[server.addr()], r#"password = "wrong-one""#)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
    assert!(
        text.to_lowercase().contains("auth") || text.contains("WRONGPASS"),
        "{text}"
    );
    assert!(text.contains(&server.port.to_string()), "{text}");
    assert!(!text.contains("wrong-one"), "the password leaked: {text}");
}

/// A `redis-server` that requires `password`, on a free port and on `redis.sock` in the returned
/// directory.
fn redis_on_a_socket(password: &str) -> (RedisServer, tempfile::TempDir) {
    let sockets = tempfile::tempdir().unwrap();
    let socket = sockets.path().join("redis.sock");
    let server = RedisServer::start_with(&["--unixsocket", socket.to_str().unwrap()], Some(password));
    (server, sockets)
}

#[test]
fn a_unix_socket_host_logs_in_with_the_configured_password_and_selects_its_database() {
    let (server, sockets) = redis_on_a_socket("sock-pass");
    let socket_arg = sockets.path().join("redis.sock").display().to_string();
    let over_socket = CacheManager::new(config_for(
        "redis",
        &[format!("unix://{socket_arg}?db=3")],
        r#"password = "sock-pass""#,
    ))
    .unwrap();
    over_socket.set_raw("by-socket", b"v", None).unwrap();
    // The same server over TCP: the value is in database 3, written with the password.
    let db = |n: u8| {
        CacheManager::new(config_for(
            "redis",
            &[format!("redis://127.0.0.1:{}/{n}", server.port)],
            r#"password = "sock-pass""#,
        ))
        .unwrap()
    };
    assert_eq!(db(3).get_raw("by-socket").unwrap(), Some(b"v".to_vec()));
    assert_eq!(db(0).get_raw("by-socket").unwrap(), None);
}

#[test]
fn a_missing_password_is_a_misconfiguration_also_when_a_database_is_selected_first() {
    let (server, sockets) = redis_on_a_socket("sock-pass");
    let socket_arg = sockets.path().join("redis.sock").display().to_string();
    // Without the password, over either transport and with a database to select first (the
    // client's SELECT hid the server's NOAUTH), the server's refusal is a misconfiguration.
    for host in [
        format!("unix://{socket_arg}?db=3"),
        format!("redis://127.0.0.1:{}/3", server.port),
    ] {
        let err = CacheManager::new(config_for("redis", std::slice::from_ref(&host), "")).unwrap_err();
        assert!(matches!(err, Error::Misconfigured { .. }), "{host}: {err:?}");
        assert!(err.to_string().contains("password"), "{host}: {err}");
    }
}

#[test]
fn a_bad_url_fails_construction_naming_it() {
    // (what the error must name, the host)
    for (named, host) in [
        ("redis://127.0.0.1:notaport", "redis://127.0.0.1:notaport"),
        ("\"ftp\"", "ftp://127.0.0.1:6379"),
    ] {
        // With fallback on too: a configuration mistake is not an outage to wait out.
        for fallback in [false, true] {
            let mut config = config_for("redis", &[host.to_owned()], "");
            config.fallback_on_error = fallback;
            let err = CacheManager::new(config).unwrap_err();
            assert!(
                matches!(err, Error::Config { .. } | Error::Backend { .. }),
                "{host}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(named), "{host}: {text}");
            assert!(
                text.contains("distributed.hosts[0]"),
                "names the configuration entry: {text}"
            );
        }
    }
}

#[test]
fn an_oversized_value_through_set_is_an_error_naming_the_key_and_the_limit() {
    let server = MemcachedServer::start();
    let cache = CacheManager::new(config_for("memcached", &[server.addr()], "")).unwrap();
    let big = vec![7u8; 2 << 20];
    let err = cache.set_raw("big-one", &big, None).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, len, .. } if key == "big-one" && *len == big.len()),
        "{err:?}"
    );
    assert!(err.to_string().contains("big-one"), "{err}");
    // The breaker did not count the caller's mistake: L2 still takes normal values.
    cache.set("small", &1u8, None).unwrap();
    assert_eq!(
        cache
            .distributed()
            .unwrap()
            .get("small")
            .unwrap()
            .map(|e| e.value),
        Some(encoded(&1u8))
    );
}

/// `fallback_on_error` hides outages, not bad input: a value memcached refuses is an error even
/// with fallback on, it is refused before L1 is written (so both levels, and every instance, keep
/// the same older value), and it is not queued for a replay that could only fail again.
#[test]
fn with_fallback_an_oversized_value_is_still_an_error_and_leaves_no_trace() {
    let server = MemcachedServer::start();
    let mut config = config_for("memcached", &[server.addr()], "");
    config.fallback_on_error = true;
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw("big-one", b"small old value", None).unwrap();
    let err = cache.set_raw("big-one", &vec![7u8; 2 << 20], None).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, .. } if key == "big-one"),
        "{err:?}"
    );
    assert_eq!(
        cache.local().get("big-one").unwrap().map(|e| e.value).as_deref(),
        Some(&b"small old value"[..]),
        "the refused value reached L1"
    );
    assert_eq!(
        cache.get_raw("big-one").unwrap().as_deref(),
        Some(&b"small old value"[..])
    );
    assert_eq!(cache.stats().consistency.queued, 0);
}

// ---- write-behind against real servers ----

/// Write-behind against each real backend: writes land in L2 after `flush` (one pipelined
/// batch, seen by a second instance), a delete issued right after a write wins, and a value the
/// backend could never take is refused before anything is written.
#[test]
fn write_behind_lands_in_every_backend_and_deletes_win() {
    let redis = RedisServer::start();
    let memcached = MemcachedServer::start();
    let cluster = RedisCluster::start();
    let backends: [(&str, Vec<String>, &str); 3] = [
        ("redis", vec![redis.addr()], ""),
        ("memcached", vec![memcached.addr()], ""),
        ("redis", cluster.addrs(), "cluster = true"),
    ];
    for (kind, hosts, extra) in backends {
        let extra = format!("{extra}\nkey_prefix = \"wb:\"");
        let behind = format!("{extra}\nwrite_mode = \"behind\"");
        let writer = CacheManager::new(config_for(kind, &hosts, &behind)).unwrap();
        let reader = CacheManager::new(config_for(kind, &hosts, &extra)).unwrap();
        let items: Vec<(String, u32)> = (0..200).map(|i| (format!("k{i}"), i)).collect();
        for (key, value) in &items {
            writer.set(key, value, None).unwrap();
        }
        writer.delete("k7").unwrap();
        writer.flush().unwrap();
        let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        let seen = reader.multi_get::<u32>(&keys).unwrap();
        assert_eq!(
            seen.len(),
            199,
            "{kind} {extra}: the reader saw {} keys",
            seen.len()
        );
        assert!(
            !seen.contains_key("k7"),
            "{kind} {extra}: a write landed after its delete"
        );
        assert_eq!(seen["k199"], 199);
        let stats = writer.stats();
        assert_eq!(stats.distributed.errors, 0, "{kind} {extra}");
        assert!(stats.consistency.write_behind_flushes >= 1, "{kind} {extra}");
        assert_eq!(stats.consistency.write_behind_pending, 0, "{kind} {extra}");
    }
    // Bad input still reaches the caller, and neither level took the value.
    let cache = CacheManager::new(config_for(
        "memcached",
        &[memcached.addr()],
        "write_mode = \"behind\"",
    ))
    .unwrap();
    let err = cache.set_raw("too-big", &vec![7u8; 2 << 20], None).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, .. } if key == "too-big"),
        "{err:?}"
    );
    assert_eq!(cache.local().get("too-big").unwrap(), None);
    assert_eq!(cache.stats().consistency.write_behind_pending, 0);
}

/// A multi_set with one item a Memcached server refuses as too large (its `-I` below the store's
/// `max_item_size`): the other items are in L2 and stay in L1, and the error names the refused
/// one, which neither level keeps. The whole call failed, and every item left L1.
#[test]
fn a_multi_set_with_one_item_memcached_refuses_keeps_the_others() {
    let server = MemcachedServer::start_with(&["-I", "1m"]);
    let store = uno_cache::MemcachedStore::connect(
        uno_cache::MemcachedOptions::new(server.addr())
            .prefix("ms:")
            .max_item_size(4 << 20),
    )
    .unwrap();
    let mut config = CacheConfig::default();
    config.local.kind = uno_cache::LocalKind::Memory;
    let cache = CacheManager::builder()
        .config(config)
        .distributed(Arc::new(store))
        .build()
        .unwrap();
    let big = vec![7u8; 1_500_000];
    let err = cache
        .multi_set_raw(&[("a", &b"1"[..]), ("big", &big), ("c", b"3")], None)
        .unwrap_err();
    let Error::PartialBatch(partial) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(partial.failed, [1]);
    assert!(
        matches!(partial.cause, Error::ValueTooLarge { ref key, .. } if key == "big"),
        "{err}"
    );
    let l1 = cache.local();
    assert!(l1.get("a").unwrap().is_some());
    assert!(l1.get("c").unwrap().is_some());
    assert!(l1.get("big").unwrap().is_none());
    let l2 = cache.distributed().unwrap();
    assert!(l2.get("a").unwrap().is_some());
    assert!(l2.get("big").unwrap().is_none());
    assert_eq!(cache.stats().distributed.sets, 2);
}

/// A memory L1 in front of `store`, with `fallback_on_error` (the default) and a replay queue in
/// `dir` that only `replay_now` replays.
fn memory_l1_replaying_into(dir: &tempfile::TempDir, store: uno_cache::MemcachedStore) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.kind = uno_cache::LocalKind::Memory;
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_interval_ms = 3_600_000;
    CacheManager::builder()
        .config(config)
        .distributed(Arc::new(store))
        .build()
        .unwrap()
}

/// A value queued for replay during an outage that the Memcached server then refuses as too
/// large (its `-I` is below `max_item_size`) must not stop the replay queue for good: its key is
/// dropped from both levels and the ops behind it are replayed.
#[test]
fn a_replayed_value_memcached_refuses_as_too_large_does_not_stop_the_replay_queue() {
    let mut server = MemcachedServer::start_with(&["-I", "1m"]);
    let store = uno_cache::MemcachedStore::connect(
        uno_cache::MemcachedOptions::new(server.addr())
            .prefix("rq:")
            .max_item_size(4 << 20),
    )
    .unwrap();
    let replay = tempfile::tempdir().unwrap();
    let cache = memory_l1_replaying_into(&replay, store);
    server.kill();
    let big = vec![7u8; 1_500_000];
    cache.set_raw("big", &big, None).unwrap();
    cache.set_raw("small", b"s", None).unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 2);
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().consistency.replay_pending > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the replay queue is stuck: {:?}",
            cache.stats().consistency
        );
        // Fails while the breaker waits for its cool-down; the queue is what is checked.
        let _ = cache.replay_now();
        std::thread::sleep(Duration::from_millis(20));
    }
    let l2 = cache.distributed().unwrap();
    assert_eq!(l2.get("small").unwrap().map(|e| e.value), Some(b"s".to_vec()));
    assert!(l2.get("big").unwrap().is_none());
    assert!(
        cache.local().get("big").unwrap().is_none(),
        "L1 keeps a value no other instance can read"
    );
    assert_eq!(cache.get_raw("big").unwrap(), None);
}

/// A multi_set of two Memcached hosts where one host is down and the other refuses an item as
/// too large (its `-I` below the store's `max_item_size`): the refused item must not be queued
/// for replay, where it can only fail again. It was (the partial batch's cause is the node
/// failure, so the manager took every failed item for unreached), and the replay then failed on
/// it at every attempt, never reaching the ops queued behind it.
#[test]
fn a_refused_item_in_a_batch_with_an_unreached_host_is_not_queued_for_replay() {
    let live = MemcachedServer::start_with(&["-I", "1m"]);
    let mut down = MemcachedServer::start();
    let options = || {
        uno_cache::MemcachedOptions::new(live.addr())
            .host(down.addr())
            .prefix("mix:")
            .max_item_size(4 << 20)
            .node_breakers(Arc::new(uno_cache::NodeBreakers::new(
                "memcached",
                5,
                Duration::from_secs(1),
            )))
    };
    // A key of each host.
    let probe = uno_cache::MemcachedStore::connect(options()).unwrap();
    let on = |server: &MemcachedServer| {
        (0..200)
            .map(|i| format!("k{i}"))
            .find(|k| {
                uno_cache::Storage::set(&probe, k, b"x", None).unwrap();
                server
                    .raw()
                    .get::<Vec<u8>>(&format!("mix:{k}"))
                    .unwrap()
                    .is_some()
            })
            .unwrap()
    };
    let (big_key, other_key) = (on(&live), on(&down));
    let store = uno_cache::MemcachedStore::connect(options()).unwrap();
    let replay = tempfile::tempdir().unwrap();
    let cache = memory_l1_replaying_into(&replay, store);
    down.kill();
    let big = vec![7u8; 1_500_000];
    let set = cache.multi_set_raw(&[(big_key.as_str(), &big[..]), (other_key.as_str(), b"v")], None);
    assert!(
        set.as_ref().is_err_and(Error::is_bad_input),
        "a refused item is bad input, which fallback_on_error does not hide: {set:?}"
    );
    down.restart();
    let replayed = cache.replay_now();
    assert!(
        replayed.is_ok(),
        "the replay fails on the refused item: {replayed:?}"
    );
    assert_eq!(cache.replay_queue().unwrap().len(), 0);
    assert!(
        cache.local().get(&big_key).unwrap().is_none(),
        "the refused value stayed in L1"
    );
}
