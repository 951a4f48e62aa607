//! A blocking L2 call (Memcached, or a standalone Redis) that must open a connection keeps its
//! deadline while host name lookups hang, as they do when the name server went away with the
//! network: the system's resolver cannot be given a deadline, and such a call waited for the
//! resolver's own timeouts (five seconds here) instead of its L2 timeout. An async Memcached call
//! kept its deadline, but left a thread of tokio's blocking pool stuck in the lookup each time.
//!
//! Real parts: the system resolver, a real memcached and Redis, and a name server that never answers (a UDP
//! socket on a loopback address). `/etc/hosts` and `/etc/resolv.conf` are replaced by bind mounts
//! in a mount namespace of the test's own (`unshare`, util-linux; needs root), so the machine's
//! files are never touched: the test runs itself again in that namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/silent_dns.rs"]
mod silent_dns;
mod support;

use std::time::{Duration, Instant};

use silent_dns::SilentDns;
use uno_cache::{
    DistributedStorage, Error, MemcachedOptions, MemcachedStore, RedisOptions, RedisStore, Storage,
};

/// Set in the run inside the namespace.
const CHILD: &str = "UNO_DNS_TEST_CHILD";
const NAME: &str = "memcached.uno-dns-test";
/// Where the silent name server listens.
const SILENT_NS: &str = "127.83.0.1";
const TEST: &str = "a_blocking_call_that_must_connect_keeps_its_deadline_while_name_lookups_hang";
const TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn a_blocking_call_that_must_connect_keeps_its_deadline_while_name_lookups_hang() {
    let dns = SilentDns {
        child_env: CHILD,
        name: NAME,
        server: SILENT_NS,
        resolver_timeout: Duration::from_secs(5),
        test: TEST,
    };
    if dns.inside() {
        return in_the_namespace();
    }
    dns.run_inside();
}

fn in_the_namespace() {
    // The name server that never answers: bound, never read.
    let _silent = std::net::UdpSocket::bind((SILENT_NS, 53)).unwrap();
    let port = |addr: String| addr.rsplit(':').next().unwrap().to_owned();
    let memcached_server = support::MemcachedServer::start();
    let redis_server = support::RedisServer::start();
    // Opening checks the host on an async connection: the name is in /etc/hosts still.
    let memcached = MemcachedStore::connect(
        MemcachedOptions::new(format!("{NAME}:{}", port(memcached_server.addr())))
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    let redis = RedisStore::connect(
        RedisOptions::new(format!("{NAME}:{}", port(redis_server.addr())))
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(2)),
    )
    .unwrap();
    // From now on the name is only in the DNS, which does not answer.
    let umount = std::process::Command::new("umount")
        .arg("/etc/hosts")
        .status()
        .unwrap();
    assert!(umount.success());

    // The first blocking call has no connection of its own. Redis's blocking pool must look the
    // name up (its open connected through the `redis` crate's own lookup), and times out.
    let started = Instant::now();
    let got = redis.get("k");
    let took = started.elapsed();
    assert!(matches!(got, Err(Error::Timeout { .. })), "redis: {got:?}");
    assert!(
        took < TIMEOUT + Duration::from_secs(1),
        "redis: the call took {took:?}, past its {TIMEOUT:?} timeout"
    );
    // Memcached's blocking and async connects share the addresses its open looked up: it
    // connects without a lookup (another is due only after 30 s, in the background): a call
    // that looked the name up would end in a timeout, not a miss. Timed with the margin the
    // other calls get for a loaded machine: a lookup would hang for the resolver's 5 s.
    let started = Instant::now();
    assert_eq!(memcached.get("k").unwrap(), None);
    assert!(
        started.elapsed() < TIMEOUT + Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    async_calls_connect_with_no_lookup_thread(&memcached);
}

/// Waves of async calls, more at once than the store keeps connections: all but one of each wave
/// must connect. Before, each such connect looked the name up through tokio, on a thread of its
/// blocking pool that the call's deadline abandoned but that stayed stuck for the resolver's five
/// seconds, and the call timed out.
fn async_calls_connect_with_no_lookup_thread(store: &MemcachedStore) {
    let threads = || std::fs::read_dir("/proc/self/task").unwrap().count();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = threads();
    for wave in 0..6 {
        let started = Instant::now();
        let calls = (0..8).map(|_| store.get_async("k"));
        for got in rt.block_on(futures_util::future::join_all(calls)) {
            assert!(matches!(got, Ok(None)), "wave {wave}: {got:?}");
        }
        let took = started.elapsed();
        assert!(
            took < TIMEOUT + Duration::from_secs(1),
            "wave {wave} took {took:?}, past its {TIMEOUT:?} timeout"
        );
    }
    let grown = threads().saturating_sub(before);
    assert!(grown <= 2, "{grown} more threads after the async connects");
}
