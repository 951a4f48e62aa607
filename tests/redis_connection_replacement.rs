//! `RedisStore` leaves a connection for a new one when it can no longer serve, against real
//! `redis-server`s: pooled blocking connections a restart closed; and, behind a TCP proxy
//! (`support/proxy.rs`), one that goes silent without a reset
//! (the async API, also when its caller gives up before our deadline; `size` / `clear`; the
//! blocking API over TLS), and one whose server a failover demoted to a replica while it stayed
//! up (`READONLY`), as a Service or DNS name that moved to the new primary leaves a client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::time::Duration;

use support::{
    async_gets_leave_a_silent_connection, each_timed_out_at_the_redis_deadline,
    impatient_gets_until_k_answers_v, until_ok, RedisServer,
};
use uno_cache::{DistributedStorage, Error, RedisOptions, RedisStore, Storage};

/// A connection that goes silent without a reset (a NAT or load balancer that dropped the flow as
/// idle, a host powered off, a failover to another address) gives the client no error, only
/// timeouts, until the kernel gives up on its retransmits (about 15 minutes). The async API
/// must leave it for a new connection once a call on it times out, and open one new connection
/// for a burst of such timeouts, not one each.
#[test]
fn async_calls_move_to_a_new_connection_when_theirs_goes_silent() {
    let server = RedisServer::start();
    let proxy = proxy::TcpProxy::start(&server.addr());
    let timeout = Duration::from_millis(200);
    let redis = RedisStore::connect(RedisOptions::new(proxy.addr()).timeout(timeout)).unwrap();
    let opened = async_gets_leave_a_silent_connection(
        &redis,
        "still on the silent connection",
        || proxy.accepted(),
        || proxy.freeze(),
    );
    assert_eq!(opened, 1, "one new connection for the whole burst of timeouts");
}

/// A caller with a timeout of its own shorter than ours drops every call before our deadline, so
/// no call of its ever times out at it; the connection must be judged all the same.
#[test]
fn async_calls_whose_callers_give_up_first_still_move_to_a_new_connection() {
    let server = RedisServer::start();
    let proxy = proxy::TcpProxy::start(&server.addr());
    let options = RedisOptions::new(proxy.addr()).timeout(Duration::from_millis(300));
    let redis = RedisStore::connect(options).unwrap();
    redis.set("k", b"v", None).unwrap();

    proxy.freeze();
    impatient_gets_until_k_answers_v("still on the silent connection", || redis.get_async("k"));
}

/// `size` and `clear` run on the level's connection too: one that times out on a silent
/// connection moves the level to a new one, as a key call does.
#[test]
fn size_and_clear_that_time_out_move_the_level_to_a_new_connection() {
    let server = RedisServer::start();
    let proxy = proxy::TcpProxy::start(&server.addr());
    let options = RedisOptions::new(proxy.addr()).admin_timeout(Duration::from_millis(300));
    let redis = RedisStore::connect(options).unwrap();
    redis.set("k", b"v", None).unwrap();

    proxy.freeze();
    each_timed_out_at_the_redis_deadline("size", &[redis.size()]);
    let size = until_ok("size still on the silent connection", || redis.size());
    assert_eq!(size.items, 1);

    proxy.freeze();
    each_timed_out_at_the_redis_deadline("clear", &[redis.clear()]);
    until_ok("clear still on the silent connection", || redis.clear());
    assert_eq!(redis.size().unwrap().items, 0);
}

/// Over TLS the blocking API runs on the async connection (the blocking pool is plain TCP only),
/// so a connection that goes silent there must be left for a new one too.
#[cfg(feature = "tls")]
#[test]
fn blocking_calls_over_tls_move_to_a_new_connection_when_theirs_goes_silent() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let proxy = proxy::TcpProxy::start(&server.addr());
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let timeout = Duration::from_millis(200);
    let redis = RedisStore::connect(
        RedisOptions::new(format!("rediss://{}", proxy.addr()))
            .tls_root_cert(ca)
            .timeout(timeout),
    )
    .unwrap();
    redis.set("k", b"v", None).unwrap();

    proxy.freeze();
    let result = redis.get("k");
    assert!(
        matches!(result, Err(Error::Timeout { level: "redis", .. })),
        "{result:?}"
    );
    support::until_k_answers_v("still on the silent connection", || redis.get("k"));
}

/// A failover that demotes the primary to a replica of the new one while it stays up, with the
/// name the level connects to moved to the new primary (a Kubernetes Service, a cloud endpoint):
/// the connection to the old primary is still alive, and answers every write with `READONLY`.
/// The client reconnects only when a connection breaks, so every write failed on it until the
/// process restarted. The level must leave it for a new connection, through the moved name.
#[test]
fn async_writes_move_to_the_new_primary_when_a_failover_demotes_theirs() {
    let (old, new) = (RedisServer::start(), RedisServer::start());
    let proxy = proxy::TcpProxy::start(&old.addr());
    let redis = RedisStore::connect(RedisOptions::new(proxy.addr())).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(redis.set_async("k", b"before", None)).unwrap();
    let connections = proxy.accepted();

    proxy.redirect(&new.addr());
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(new.port)
        .query(&mut old.raw())
        .unwrap();
    let demoted = rt.block_on(redis.set_async("k", b"v", None));
    assert!(
        matches!(&demoted, Err(Error::Backend { reason, .. }) if reason.to_lowercase().contains("read only")),
        "{demoted:?}"
    );
    until_ok("a write on the new primary", || {
        rt.block_on(redis.set_async("k", b"v", None))
    });
    let keys: u64 = redis::cmd("DBSIZE").query(&mut new.raw()).unwrap();
    assert_eq!(keys, 1, "the write went to the new primary");
    assert_eq!(proxy.accepted(), connections + 1, "one new connection");
}

/// Blocking calls run on the caller's thread over pooled connections; a pooled connection the
/// server closed (here by restarting) is replaced within the same call instead of failing it.
#[test]
fn blocking_calls_reconnect_transparently_after_a_server_restart() {
    let mut server = RedisServer::start();
    let redis = RedisStore::connect(RedisOptions::new(server.addr()).prefix("p:")).unwrap();
    redis.set("k", b"before", None).unwrap();
    // Several threads, so the pool holds several idle connections.
    std::thread::scope(|s| {
        for t in 0..4 {
            let redis = &redis;
            s.spawn(move || {
                for i in 0..50 {
                    redis.set(&format!("t{t}:{i}"), b"v", None).unwrap();
                }
            });
        }
    });
    server.restart();
    // Every idle connection is dead now; each call still succeeds at the first try.
    for round in 0..8 {
        redis.set("k", format!("after {round}").as_bytes(), None).unwrap();
        assert_eq!(
            redis.get("k").unwrap().unwrap().value,
            format!("after {round}").into_bytes()
        );
    }
    assert_eq!(redis.get_many(&["k", "missing"]).unwrap().len(), 2);
}
