//! A manager whose Redis L2 went down is dropped at once, even while a reconnect is stuck in a
//! host name lookup: the `redis` crate looks the name up with tokio's `lookup_host`, a
//! `getaddrinfo` on the I/O thread's blocking pool that nothing can stop, and a runtime dropped
//! the default way waits for it. With the name server gone silent (as it goes with the network)
//! the drop hung for the resolver's timeouts.
//!
//! Real parts, as in `l2_name_lookups.rs`: the system resolver, a real Redis, and a name server
//! that never answers (a UDP socket on a loopback address, read here to see the lookup under
//! way), with `/etc/hosts` and `/etc/resolv.conf` replaced by bind mounts in a mount namespace of
//! the test's own (`unshare`, util-linux; needs root): the test runs itself again there.
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
use uno_cache::{CacheConfig, CacheManager};

/// Set in the run inside the namespace.
const CHILD: &str = "UNO_DNS_DROP_TEST_CHILD";
const NAME: &str = "redis.uno-dns-drop-test";
/// Where the silent name server listens.
const SILENT_NS: &str = "127.83.0.2";
const TEST: &str = "dropping_a_manager_does_not_wait_for_a_reconnects_stuck_name_lookup";
/// The resolver's own timeout for one query.
const RESOLVER_TIMEOUT: Duration = Duration::from_secs(8);

#[test]
fn dropping_a_manager_does_not_wait_for_a_reconnects_stuck_name_lookup() {
    let dns = SilentDns {
        child_env: CHILD,
        name: NAME,
        server: SILENT_NS,
        resolver_timeout: RESOLVER_TIMEOUT,
        test: TEST,
    };
    if dns.inside() {
        return in_the_namespace();
    }
    dns.run_inside();
}

fn in_the_namespace() {
    // The name server that never answers: bound, read only to see a query come.
    let silent = std::net::UdpSocket::bind((SILENT_NS, 53)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut redis_server = support::RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "memory"
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{NAME}:{}"]
        timeout_ms = 300
        "#,
        redis_server.port
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cache.set_async("k", &1u32, None)).unwrap();
    // From now on the name is only in the DNS, which does not answer, and the server is gone:
    // the async connection's next call fails and has it reconnect, looking the name up.
    assert!(std::process::Command::new("umount")
        .arg("/etc/hosts")
        .status()
        .unwrap()
        .success());
    redis_server.kill();
    let mut query = [0u8; 512];
    let asked = std::thread::scope(|s| {
        let waiting = s.spawn(|| silent.recv_from(&mut query).is_ok());
        while !waiting.is_finished() {
            // A key L1 misses: the call goes to L2.
            let _ = rt.block_on(cache.get_async::<u32>("absent"));
        }
        waiting.join().unwrap()
    });
    assert!(asked, "no reconnect looked the name up");
    let started = Instant::now();
    drop(cache);
    let took = started.elapsed();
    assert!(
        took < RESOLVER_TIMEOUT / 2,
        "the drop took {took:?}, waiting for the lookup (the resolver gives up after {RESOLVER_TIMEOUT:?})"
    );
}
