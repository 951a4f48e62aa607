//! `invalidate_prefix` removes the matching keys from L2 too, wherever L2 can list them: a
//! standalone Redis L2 reached with its own hosts and credentials even when the backplane has
//! hosts of its own, and a Redis Cluster L2 on every primary. Before, both kept their values
//! until their TTL while the call returned `Ok`, and the next `get` read the old value from L2
//! and filled L1 with it again. A Memcached L2 cannot list its keys: the call says so with
//! `Error::PrefixKeptInL2` rather than a silent `Ok`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::{MemcachedServer, RedisCluster, RedisServer};
use uno_cache::{BreakerState, CacheConfig, CacheManager, Error};

/// A file store L1 in `dir`: it lists its keys, so the call's count is exact.
fn file_l1(dir: &tempfile::TempDir) -> String {
    format!(
        "[local]\ntype = \"file\"\npath = {:?}\ndurability = \"none\"\n",
        dir.path()
    )
}

/// Writes `user:0..n` and `other:0..n`, invalidates `user:`, and checks that no `user:` key is
/// left in L2 or read back through the manager, that every `other:` key is, and that the call
/// counted each `user:` key once.
fn invalidates_the_prefix_in_l2(cache: &CacheManager, n: usize) {
    let users: Vec<String> = (0..n).map(|i| format!("user:{i}")).collect();
    let others: Vec<String> = (0..n).map(|i| format!("other:{i}")).collect();
    for key in users.iter().chain(&others) {
        cache.set(key, &7u32, None).unwrap();
    }
    let l2 = cache.distributed().unwrap();
    // Half the keys only in L2 (as another instance's writes are), half in both levels.
    for key in users.iter().step_by(2) {
        cache.invalidate_local(key).unwrap();
    }
    assert_eq!(cache.invalidate_prefix("user:").unwrap(), n as u64);
    for key in &users {
        assert_eq!(l2.get(key).unwrap().map(|e| e.value), None, "{key} still in L2");
        assert_eq!(
            cache.get::<u32>(key).unwrap(),
            None,
            "{key} read back after its prefix's invalidation"
        );
    }
    for key in &others {
        assert!(
            l2.get(key).unwrap().is_some(),
            "{key}, outside the prefix, left L2"
        );
    }
}

/// A Redis L2 with a password, and a backplane on another Redis: the L2's keys are deleted
/// through a connection with the L2's hosts and password (the backplane's would find none).
#[test]
fn a_prefix_leaves_a_redis_l2_whose_backplane_has_hosts_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = RedisServer::with_password("l2-secret");
    let backplane = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\nhosts = [\"{}\"]\npassword = \"l2-secret\"\n\
         key_prefix = \"app:\"\n[invalidation]\nenabled = true\nhosts = [\"{}\"]\n",
        file_l1(&dir),
        l2.addr(),
        backplane.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    invalidates_the_prefix_in_l2(&cache, 40);
    // The backplane's Redis held no value of L2, and was left as it was.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*user*")
        .query(&mut backplane.raw())
        .unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

/// The same when `[invalidation] hosts` names the L2's own server again.
#[test]
fn a_prefix_leaves_a_redis_l2_that_the_backplane_names_again() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\nhosts = [\"{1}\"]\n\
         [invalidation]\nenabled = true\nhosts = [\"{1}\"]\n",
        file_l1(&dir),
        l2.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    invalidates_the_prefix_in_l2(&cache, 20);
}

/// A Redis Cluster L2: every primary is walked, so keys of every slot go.
#[test]
fn a_prefix_leaves_every_primary_of_a_redis_cluster_l2() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let hosts: Vec<String> = cluster.addrs().iter().map(|h| format!("{h:?}")).collect();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\ncluster = true\ntimeout_ms = 500\n\
         key_prefix = \"c:\"\nhosts = [{}]\n",
        file_l1(&dir),
        hosts.join(", ")
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    // Enough keys that each primary holds some, and more than one SCAN page on one of them.
    invalidates_the_prefix_in_l2(&cache, 3_000);
    let on_each: Vec<u64> = cluster
        .nodes
        .iter()
        .map(|node| redis::cmd("DBSIZE").query(&mut node.raw()).unwrap())
        .collect();
    assert!(
        on_each.iter().all(|&n| n > 0),
        "the other: keys are on every primary: {on_each:?}"
    );
}

/// A Redis Cluster L2 with a backplane on a Redis of its own.
#[test]
fn a_prefix_leaves_a_redis_cluster_l2_whose_backplane_has_hosts_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let backplane = RedisServer::start();
    let hosts: Vec<String> = cluster.addrs().iter().map(|h| format!("{h:?}")).collect();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\ncluster = true\ntimeout_ms = 500\n\
         hosts = [{}]\n[invalidation]\nenabled = true\nhosts = [\"{}\"]\n",
        file_l1(&dir),
        hosts.join(", "),
        backplane.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    invalidates_the_prefix_in_l2(&cache, 100);
}

/// A Memcached L2 cannot list its keys: the call drops L1 (and would tell the other instances)
/// but returns `Error::PrefixKeptInL2`, naming what it dropped, not `Ok`: the old values are
/// still in L2, and the next read brings one back.
#[test]
fn a_prefix_on_a_memcached_l2_is_reported_kept_there_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let memcached = MemcachedServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"{}\"]\n",
        file_l1(&dir),
        memcached.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    for i in 0..10 {
        cache.set(&format!("user:{i}"), &7u32, None).unwrap();
        cache.set(&format!("other:{i}"), &7u32, None).unwrap();
    }
    match cache.invalidate_prefix("user:") {
        Err(Error::PrefixKeptInL2 {
            level,
            prefix,
            dropped,
        }) => {
            assert_eq!((level, prefix.as_str(), dropped), ("memcached", "user:", 10));
        }
        other => panic!("a prefix Memcached keeps was not reported: {other:?}"),
    }
    for i in 0..10 {
        assert_eq!(
            cache.local().get(&format!("user:{i}")).unwrap(),
            None,
            "user:{i} still in L1"
        );
        assert!(cache.local().get(&format!("other:{i}")).unwrap().is_some());
    }
    // What the error warns of: L2 still serves the old value.
    assert_eq!(cache.get::<u32>("user:3").unwrap(), Some(7));
}

/// A Memcached L2 cannot list its keys whether or not it answers: one not reached yet (down
/// at start-up, connected in the background), its breaker open once its calls have failed,
/// still has the call report the keys kept there, as when Memcached is up, not
/// `NotConnected` or `CircuitOpen`, which say to retry once L2 answers, where no retry ever
/// deletes them. The call asks no server, so the breaker stays as it was.
#[test]
fn a_prefix_on_a_memcached_l2_not_reached_yet_is_still_reported_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut memcached = MemcachedServer::start();
    let addr = memcached.addr();
    memcached.kill();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"{addr}\"]\n\
         breaker_failures = 1\nbreaker_cooldown_ms = 600000\ntimeout_ms = 200\n",
        file_l1(&dir),
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    for i in 0..4 {
        cache.set(&format!("user:{i}"), &7u32, None).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for answer in [
        cache.invalidate_prefix("user:"),
        rt.block_on(cache.invalidate_prefix_async("user:")),
    ] {
        assert!(
            matches!(
                answer,
                Err(Error::PrefixKeptInL2 {
                    level: "memcached",
                    ..
                })
            ),
            "a prefix Memcached keeps, reported as {answer:?}"
        );
    }
    let breaker = cache.stats().distributed.breaker.unwrap();
    assert_eq!(breaker.state, BreakerState::Open, "{breaker:?}");
    for answer in [
        cache.invalidate_prefix("user:"),
        rt.block_on(cache.invalidate_prefix_async("user:")),
    ] {
        assert!(
            matches!(
                answer,
                Err(Error::PrefixKeptInL2 {
                    level: "memcached",
                    ..
                })
            ),
            "a prefix Memcached keeps, with its breaker open, reported as {answer:?}"
        );
    }
    for i in 0..4 {
        assert_eq!(cache.local().get(&format!("user:{i}")).unwrap(), None);
    }
    assert_eq!(cache.stats().distributed.breaker.unwrap().trips, breaker.trips);
}

/// The async form walks every primary of a cluster too.
#[test]
fn an_async_prefix_invalidation_leaves_every_primary_of_a_redis_cluster_l2() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start();
    let hosts: Vec<String> = cluster.addrs().iter().map(|h| format!("{h:?}")).collect();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\ncluster = true\ntimeout_ms = 500\nhosts = [{}]\n",
        file_l1(&dir),
        hosts.join(", ")
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("user:{i}")).collect();
    for key in &keys {
        cache.set(key, &7u32, None).unwrap();
        cache.invalidate_local(key).unwrap();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(cache.invalidate_prefix_async("user:")).unwrap(), 300);
    let l2 = cache.distributed().unwrap();
    for key in &keys {
        assert_eq!(l2.get(key).unwrap().map(|e| e.value), None, "{key} still in L2");
    }
}

/// A walk that L2 does not answer fails the call naming L2 (`redis`), its op and its server:
/// the walk's connection is a tag store's kind, and its errors named the `tags` level, which
/// sent an operator to the backplane's Redis.
#[test]
fn a_prefix_walk_that_l2_does_not_answer_is_l2s_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = RedisServer::start();
    let backplane = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        "{}[distributed]\nenabled = true\ntimeout_ms = 200\nhosts = [\"{}\"]\n\
         [invalidation]\nenabled = true\nhosts = [\"{}\"]\n",
        file_l1(&dir),
        l2.addr(),
        backplane.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set("user:1", &7u32, None).unwrap();
    // The walk's connection is opened by a first walk (a connect that L2 does not answer fails
    // as a connect error, named `redis` too).
    assert_eq!(cache.invalidate_prefix("none:").unwrap(), 0);
    l2.pause();
    let result = cache.invalidate_prefix("user:");
    l2.resume();
    match result {
        Err(Error::Timeout {
            level, op, server, ..
        }) => {
            assert_eq!((level, op), ("redis", "invalidate_prefix"));
            assert!(server.contains(&l2.port.to_string()), "{server}");
        }
        other => panic!("L2's silence was not its timeout: {other:?}"),
    }
}
