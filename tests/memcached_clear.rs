//! `MemcachedStore::clear` over several hosts of which some do not flush, against real
//! `memcached` processes: the hosts that did are flushed, and the error names them and the
//! hosts that did not (each with why), and says to run `clear` again once those answer, whether
//! the hosts have breakers of their own or not, and whether the host refused `flush_all`
//! (`-F`) or was down. (A clear of one host, refused with `-F` or with a prefix, is in
//! `tests/memcached_level.rs`.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::MemcachedServer;
use uno_cache::distributed::{Guarded, NodeBreakers};
use uno_cache::{BreakerState, CircuitBreaker, Error, MemcachedOptions, MemcachedStore, Storage};

/// Calls wait long: nothing here is about time.
const UNHURRIED: Duration = Duration::from_secs(30);

fn connect(servers: &[MemcachedServer], breakers: Option<Arc<NodeBreakers>>) -> MemcachedStore {
    let mut options = MemcachedOptions::with_hosts(servers.iter().map(MemcachedServer::addr))
        .timeout(UNHURRIED)
        .admin_timeout(UNHURRIED);
    if let Some(breakers) = breakers {
        options = options.node_breakers(breakers);
    }
    MemcachedStore::connect(options).unwrap()
}

/// A key of each host, set.
fn a_key_on_each(mc: &MemcachedStore, hosts: usize) -> Vec<String> {
    let keys: Vec<String> = (0..hosts)
        .map(|h| {
            (0..)
                .map(|i| format!("k{i}"))
                .find(|k| mc.server_key(k).1 == h)
                .unwrap()
        })
        .collect();
    for key in &keys {
        mc.set(key, b"v", None).unwrap();
    }
    keys
}

/// The error names each flushed host as flushed and each other one as not, and says what to do.
fn assert_names(err: &Error, flushed: &[String], not: &[String]) {
    let text = err.to_string();
    let list = |hosts: &[String]| hosts.join(", ");
    assert!(
        text.contains(&format!("flush_all ran on {}", list(flushed)))
            && text.contains(&format!("not on {}", list(not)))
            && text.contains("run clear() again"),
        "{text}"
    );
}

/// One host of three down, the hosts with breakers of their own: the two others are flushed,
/// and the error, still that host's (`NodeUnavailable`, which the level's breaker does not
/// count), says so. It named the down host alone ("keys on the other nodes are still served"),
/// so the caller could not tell that the others had been flushed.
#[test]
fn a_clear_with_a_host_down_names_the_hosts_it_flushed_and_the_one_it_did_not() {
    let mut servers = [
        MemcachedServer::start(),
        MemcachedServer::start(),
        MemcachedServer::start(),
    ];
    let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let breakers = Arc::new(NodeBreakers::new("memcached", 5, Duration::from_secs(60)));
    let level = Arc::new(CircuitBreaker::new(1, Duration::from_secs(60)));
    let mc = Guarded::new("memcached", connect(&servers, Some(breakers)), Arc::clone(&level));
    let keys = a_key_on_each(mc.inner(), 3);
    servers[1].kill();
    let err = mc.clear().unwrap_err();
    assert!(
        matches!(err, Error::NodeUnavailable { ref node, .. } if *node == hosts[1]),
        "{err:?}"
    );
    assert_names(&err, &[hosts[0].clone(), hosts[2].clone()], &[hosts[1].clone()]);
    assert_eq!(
        level.state(),
        BreakerState::Closed,
        "one host down is no failure of the level"
    );
    assert_eq!(
        (mc.get(&keys[0]).unwrap(), mc.get(&keys[2]).unwrap()),
        (None, None)
    );
}

/// Without breakers of their own, as with them: a host that refuses the connection failed the
/// whole clear with its error alone, which read as if nothing had been flushed.
#[test]
fn a_clear_without_host_breakers_names_the_hosts_it_flushed_and_the_one_it_did_not() {
    let mut servers = [MemcachedServer::start(), MemcachedServer::start()];
    let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let mc = connect(&servers, None);
    let keys = a_key_on_each(&mc, 2);
    servers[0].kill();
    let err = mc.clear().unwrap_err();
    assert_names(&err, &hosts[1..], &hosts[..1]);
    assert_eq!(mc.get(&keys[1]).unwrap(), None);
}

/// A host that refuses `flush_all` (`-F`) while the others take it: still a misconfiguration of
/// that call alone, naming the hosts flushed; and the refusing host kept its items.
#[test]
fn a_clear_one_host_refuses_names_the_hosts_it_flushed() {
    let servers = [MemcachedServer::start(), MemcachedServer::start_with(&["-F"])];
    let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let mc = connect(
        &servers,
        Some(Arc::new(NodeBreakers::new(
            "memcached",
            1,
            Duration::from_secs(60),
        ))),
    );
    let keys = a_key_on_each(&mc, 2);
    let err = mc.clear().unwrap_err();
    assert!(
        matches!(err, Error::Misconfigured { call_only: true, .. }) && err.to_string().contains("-F"),
        "{err:?}"
    );
    assert_names(&err, &hosts[..1], &hosts[1..]);
    assert_eq!(mc.get(&keys[0]).unwrap(), None);
    assert_eq!(mc.get(&keys[1]).unwrap().unwrap().value, b"v");
}
