//! An L2 call's deadline runs from its first poll, when its work starts: an async call made and
//! awaited later (a batch of calls made first and awaited together, a future held across other
//! work) gets its whole timeout. Counted from its creation, it timed out at once, and the
//! timeout was held against L2's breaker as an outage. Real Redis and Memcached servers; the
//! wait between making the future and awaiting it is the time the test is about.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::{MemcachedServer, RedisServer};
use uno_cache::{DistributedStorage, MemcachedOptions, MemcachedStore, RedisOptions, RedisStore};

const TIMEOUT: Duration = Duration::from_millis(100);

/// Makes `level`'s async get of a key it holds, waits three timeouts, then awaits it.
fn awaited_late(level: &dyn DistributedStorage) {
    level.set("k", b"v", None).unwrap();
    let later = level.get_async("k");
    std::thread::sleep(3 * TIMEOUT);
    let got = support::block_on(later).unwrap();
    assert_eq!(got.map(|e| e.value).as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_redis_call_awaited_later_gets_its_whole_deadline() {
    let redis = RedisServer::start();
    let store = RedisStore::connect(RedisOptions::new(redis.addr()).timeout(TIMEOUT)).unwrap();
    awaited_late(&store);
}

#[test]
fn a_memcached_call_awaited_later_gets_its_whole_deadline() {
    let server = MemcachedServer::start();
    let store = MemcachedStore::connect(MemcachedOptions::new(server.addr()).timeout(TIMEOUT)).unwrap();
    awaited_late(&store);
}
