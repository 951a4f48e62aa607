//! A Memcached host's circuit breaker counts that host's failures only, against real servers:
//! a slow host does not spend the time of the other hosts of a blocking batch (nor, hung, the
//! time of their later commands of a batch over 1 024 keys per host, nor their replies larger
//! than the sockets hold, nor, gone with its address
//! dropping what is sent to it, the time its connect hangs for), and an async call
//! that waits for one of the store's own connection slots is not the host's failure. Latency is
//! made by a proxy in front of a server ([`TcpProxy::delay`]); a call held on its way is awaited
//! through the proxy's count of held reads, never by sleeping.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use proxy::TcpProxy;
use support::{block_on, wait_until, MemcachedServer};
use uno_cache::distributed::{MemcachedOptions, MemcachedStore, NodeBreakers};
use uno_cache::{BreakerState, DistributedStorage, Error, NodeStats, Served, Storage};

const TIMEOUT: Duration = Duration::from_millis(400);

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One test at a time: the latencies below are fractions of the timeout, not of two servers
/// starting on two vCPUs at once.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Breakers that open at the first failure they count: one misplaced count shows.
fn breakers() -> Arc<NodeBreakers> {
    Arc::new(NodeBreakers::new("memcached", 1, Duration::from_secs(60)))
}

fn node(breakers: &NodeBreakers, name: &str) -> NodeStats {
    let stats = breakers.stats();
    stats
        .iter()
        .find(|n| n.node == name)
        .cloned()
        .unwrap_or_else(|| panic!("no node {name} in {stats:?}"))
}

fn assert_untouched(breakers: &NodeBreakers, name: &str) {
    let stats = node(breakers, name);
    assert_eq!(
        (stats.state, stats.errors),
        (BreakerState::Closed, 0),
        "{name}'s breaker was charged with failures that were not its own: {stats:?}"
    );
}

/// `n` keys named `{stem}{i}` that live on host `host` of `store`.
fn keys_on(store: &MemcachedStore, host: usize, stem: &str, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{stem}{i}"))
        .filter(|k| store.server_key(k).1 == host)
        .take(n)
        .collect()
}

#[test]
fn a_slow_host_leaves_the_other_hosts_of_a_blocking_batch_their_whole_timeout() {
    let _serial = serial();
    let (a, b) = (MemcachedServer::start(), MemcachedServer::start());
    let (slow, lagging) = (TcpProxy::start(&a.addr()), TcpProxy::start(&b.addr()));
    let breakers = breakers();
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts([slow.addr(), lagging.addr()])
            .timeout(TIMEOUT)
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    let mut keys = keys_on(&store, 0, "slow:", 3);
    keys.extend(keys_on(&store, 1, "lagging:", 3));
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    store.set_many(&items, None).unwrap();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();

    // Round trips of 70% and 35% of the timeout: each host answers in time, but not both one
    // after the other.
    slow.delay(TIMEOUT * 35 / 100);
    lagging.delay(TIMEOUT * 175 / 1000);
    let got = store.get_many(&keys).unwrap();
    let values: Vec<Option<&[u8]>> = got
        .iter()
        .map(|e| e.as_ref().map(|e| e.value.as_slice()))
        .collect();
    let expected: Vec<Option<&[u8]>> = keys.iter().map(|k| Some(k.as_bytes())).collect();
    assert_eq!(values, expected);
    assert_untouched(&breakers, &lagging.addr());
    assert_untouched(&breakers, &slow.addr());

    // A host that does not answer in time fails alone, by name; the other's keys are served.
    a.pause();
    let err = store.get_many(&keys).unwrap_err();
    a.resume();
    let Error::PartialBatch(partial) = err else {
        panic!("expected the slow host's keys to fail alone, got {err:?}");
    };
    assert_eq!(partial.failed, vec![0, 1, 2], "{partial:?}");
    match &partial.cause {
        Error::NodeUnavailable { node, cause, .. } => {
            assert_eq!(node, &slow.addr());
            assert!(
                matches!(&**cause, Error::Timeout { server, .. } if *server == slow.addr()),
                "the timeout names the host: {cause:?}"
            );
        }
        other => panic!("the cause should name the slow host: {other:?}"),
    }
    let Served::Entries(served) = &partial.served else {
        panic!("a get_many serves entries: {partial:?}");
    };
    let served: Vec<Option<&[u8]>> = served
        .iter()
        .map(|e| e.as_ref().map(|e| e.value.as_slice()))
        .collect();
    assert_eq!(&served[3..], &expected[3..]);
    assert_untouched(&breakers, &lagging.addr());
    assert_eq!(node(&breakers, &slow.addr()).state, BreakerState::Open);
}

#[test]
fn async_calls_that_wait_for_a_free_connection_slot_are_not_held_against_the_host() {
    let _serial = serial();
    let server = MemcachedServer::start();
    let proxy = TcpProxy::start(&server.addr());
    let breakers = breakers();
    let store = MemcachedStore::connect(
        MemcachedOptions::new(proxy.addr())
            .timeout(Duration::from_millis(200))
            .admin_timeout(Duration::from_secs(30))
            .workers(1)
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    store.set("k", b"v", None).unwrap();

    // A `size` takes the one slot and is held on its way; the gets behind it wait for the
    // slot, here, and time out before it is free.
    proxy.hold();
    std::thread::scope(|scope| {
        let size = scope.spawn(|| block_on(store.size_async()));
        wait_until("the size call held at the proxy", || proxy.waiting() >= 1);
        let gets = block_on(futures_util::future::join_all(
            (0..4).map(|_| store.get_async("k")),
        ));
        proxy.release();
        for got in gets {
            match got {
                Err(Error::NodeUnavailable { cause, .. }) => {
                    assert!(matches!(*cause, Error::Timeout { .. }), "{cause:?}");
                }
                other => panic!("a get that waited for a slot past its deadline times out: {other:?}"),
            }
        }
        assert!(size.join().unwrap().unwrap().items >= 1);
    });
    assert_untouched(&breakers, &proxy.addr());
    let got = block_on(store.get_async("k")).unwrap().map(|e| e.value);
    assert_eq!(got.as_deref(), Some(&b"v"[..]));
}

/// What a `get_many` of `keys` (the first `early` of them read before the host stopped
/// answering) must fail with: the later keys only, the earlier ones served.
fn check_later_chunk_failed(
    got: uno_cache::Result<Vec<Option<uno_cache::Entry>>>,
    keys: &[&str],
    early: usize,
) {
    let err = got.expect_err("the held chunk must time out");
    let Error::PartialBatch(partial) = err else {
        panic!("the keys read before the failure must be served: {err:?}");
    };
    assert_eq!(partial.failed, (early..keys.len()).collect::<Vec<_>>());
    assert!(
        matches!(partial.cause, Error::NodeUnavailable { .. }),
        "{:?}",
        partial.cause
    );
    let Served::Entries(served) = &partial.served else {
        panic!("a get_many serves entries: {partial:?}");
    };
    for (i, key) in keys.iter().enumerate().take(early) {
        let value = served[i].as_ref().map(|e| e.value.as_slice());
        assert_eq!(
            value,
            Some(key.as_bytes()),
            "key #{i} was read before the failure"
        );
    }
}

#[test]
fn a_later_chunk_of_a_large_batch_that_fails_keeps_what_the_earlier_chunks_settled() {
    let _serial = serial();
    // `-I 1m` under a 4 MiB `max_item_size`: the server itself refuses a 1.5 MiB value.
    let server = MemcachedServer::start_with(&["-I", "1m"]);
    let proxy = TcpProxy::start(&server.addr());
    let breakers = Arc::new(NodeBreakers::new("memcached", 10, Duration::from_secs(60)));
    let store = MemcachedStore::connect(
        MemcachedOptions::new(proxy.addr())
            .timeout(Duration::from_secs(1))
            .max_item_size(4 << 20)
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    // 1 024 keys make the host's first command; the `LATE` ones its second, which the proxy
    // holds until the call timed out.
    const EARLY: usize = 1024;
    let mut keys: Vec<String> = (0..EARLY).map(|i| format!("early:{i}")).collect();
    keys.extend((0..100).map(|i| format!("LATE:{i}")));
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, k.as_bytes())).collect();
    store.set_many(&items, None).unwrap();

    proxy.hold_on(b"LATE");
    check_later_chunk_failed(store.get_many(&keys), &keys, EARLY);
    proxy.release();
    proxy.hold_on(b"LATE");
    check_later_chunk_failed(block_on(store.get_many_async(&keys)), &keys, EARLY);
    proxy.release();

    // A write: the first command's items were stored, one of them refused as too large; the
    // second's were not reached. The refusal must stay a refusal, or it is queued for a replay
    // that can only be refused again.
    let big = vec![7u8; 1536 << 10];
    let mut items: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, &b"new"[..])).collect();
    items[5].1 = &big;
    proxy.hold_on(b"LATE");
    let err = store.set_many(&items, None).unwrap_err();
    proxy.release();
    let Error::PartialBatch(partial) = err else {
        panic!("a write whose later chunk failed is a partial batch: {err:?}");
    };
    assert_eq!(partial.refused, vec![5]);
    let mut failed = vec![5];
    failed.extend(EARLY..keys.len());
    assert_eq!(partial.failed, failed);
    assert!(
        matches!(partial.cause, Error::ValueTooLarge { .. }),
        "{:?}",
        partial.cause
    );
    assert_eq!(
        store.get(keys[0]).unwrap().map(|e| e.value),
        Some(b"new".to_vec())
    );
}

/// The entries' values, for comparing a batch's answer with what was written.
fn values(entries: &[Option<uno_cache::Entry>]) -> Vec<Option<&[u8]>> {
    entries
        .iter()
        .map(|e| e.as_ref().map(|e| e.value.as_slice()))
        .collect()
}

/// What a batch over `keys` that `hung` (the host of `keys[..hung_keys]`) did not answer must
/// fail with: that host's keys, by its name, and nothing else.
fn only_the_hung_hosts_keys_failed(err: Error, hung: &str, hung_keys: usize) -> Box<uno_cache::PartialBatch> {
    let Error::PartialBatch(partial) = err else {
        panic!("the other hosts' keys must be served: {err:?}");
    };
    let others: Vec<usize> = partial
        .failed
        .iter()
        .copied()
        .filter(|&i| i >= hung_keys)
        .collect();
    assert!(
        others.is_empty(),
        "{} keys of the answering hosts failed too, the first #{:?}",
        others.len(),
        others.first()
    );
    assert_eq!(
        partial.failed,
        (0..hung_keys).collect::<Vec<_>>(),
        "every key of the hung host fails"
    );
    match &partial.cause {
        Error::NodeUnavailable { node, cause, .. } => {
            assert_eq!(node, hung);
            assert!(matches!(**cause, Error::Timeout { .. }), "{cause:?}");
        }
        other => panic!("the cause should name the hung host: {other:?}"),
    }
    partial
}

#[test]
fn a_hung_host_of_a_batch_over_several_commands_per_host_fails_only_its_own_keys() {
    let _serial = serial();
    let servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
    let breakers = Arc::new(NodeBreakers::new("memcached", 10, Duration::from_secs(60)));
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts(servers.iter().map(MemcachedServer::addr))
            .timeout(Duration::from_secs(2))
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    // 1 500 keys per host: two commands each (1 024 keys, then 476), host 0's keys first.
    const PER_HOST: usize = 1500;
    let keys: Vec<String> = (0..3)
        .flat_map(|host| keys_on(&store, host, &format!("h{host}:"), PER_HOST))
        .collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, k.as_bytes())).collect();
    store.set_many(&items, None).unwrap();
    let expected: Vec<Option<&[u8]>> = keys.iter().map(|k| Some(k.as_bytes())).collect();
    assert_eq!(values(&store.get_many(&keys).unwrap()), expected);

    // Host 0 takes its first command and never answers. The other hosts' second commands are
    // sent after their first was answered: run after host 0's part, they found the deadline
    // gone and failed too, and were held against their hosts.
    let hung = servers[0].addr();
    servers[0].pause();
    let blocking = store.get_many(&keys).unwrap_err();
    let asynchronous = block_on(store.get_many_async(&keys)).unwrap_err();
    let renamed: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, &b"new"[..])).collect();
    let written = store.set_many(&renamed, None).unwrap_err();
    servers[0].resume();

    for err in [blocking, asynchronous] {
        let partial = only_the_hung_hosts_keys_failed(err, &hung, PER_HOST);
        let Served::Entries(served) = &partial.served else {
            panic!("a get_many serves entries: {partial:?}");
        };
        assert_eq!(&values(served)[PER_HOST..], &expected[PER_HOST..]);
    }
    let partial = only_the_hung_hosts_keys_failed(written, &hung, PER_HOST);
    assert!(partial.refused.is_empty(), "{partial:?}");
    let now = store.get_many(&keys[PER_HOST..]).unwrap();
    assert!(
        values(&now).iter().all(|v| *v == Some(&b"new"[..])),
        "every item of the answering hosts was written"
    );
    for server in &servers[1..] {
        assert_untouched(&breakers, &server.addr());
    }
    assert_eq!(node(&breakers, &hung).errors, 3);
}

/// A listener on `port` that accepts nothing, its one-place backlog taken: a connect to it
/// waits until its deadline, as one to a host that went away while its address drops what is
/// sent to it (powered off, a firewall's DROP). Kept open while the pair lives.
fn silent_port(port: u16) -> (std::net::TcpListener, std::net::TcpStream) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let listener = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket.bind(([127, 0, 0, 1], port).into()).unwrap();
        socket.listen(0).unwrap().into_std().unwrap()
    });
    let filler = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    (listener, filler)
}

#[test]
fn a_host_whose_connect_hangs_leaves_the_other_hosts_of_a_blocking_batch_their_whole_timeout() {
    let _serial = serial();
    let (mut gone, live) = (MemcachedServer::start(), MemcachedServer::start());
    let breakers = Arc::new(NodeBreakers::new("memcached", 10, Duration::from_secs(60)));
    // The host that goes away is listed first: its part of a call starts first.
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts([gone.addr(), live.addr()])
            .timeout(TIMEOUT)
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    let mut keys = keys_on(&store, 0, "gone:", 3);
    keys.extend(keys_on(&store, 1, "live:", 3));
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, k.as_bytes())).collect();
    store.set_many(&items, None).unwrap();

    gone.kill();
    let _silent = silent_port(gone.port);
    // Twice: the first call finds the gone host's pooled connection closed and connects anew
    // after the live host was sent its command; the second has no pooled connection left for
    // the gone host and connects before the live host is asked, for as long as the deadline.
    for call in 0..2 {
        let err = store.get_many(&keys).unwrap_err();
        let Error::PartialBatch(partial) = err else {
            panic!("call {call}: the live host's keys must be served: {err:?}");
        };
        assert_eq!(partial.failed, vec![0, 1, 2], "call {call}: {partial:?}");
        let Served::Entries(served) = &partial.served else {
            panic!("a get_many serves entries: {partial:?}");
        };
        let expected: Vec<Option<&[u8]>> = keys[3..].iter().map(|k| Some(k.as_bytes())).collect();
        assert_eq!(&values(served)[3..], &expected[..], "call {call}");
    }
    let written: Vec<(&str, &[u8])> = keys.iter().map(|k| (*k, &b"new"[..])).collect();
    let err = store.set_many(&written, None).unwrap_err();
    let Error::PartialBatch(partial) = err else {
        panic!("the live host's items must be written: {err:?}");
    };
    assert_eq!(partial.failed, vec![0, 1, 2], "{partial:?}");
    let now = store.get_many(&keys[3..]).unwrap();
    assert!(values(&now).iter().all(|v| *v == Some(&b"new"[..])));
    assert_untouched(&breakers, &live.addr());
}

#[test]
fn a_hung_host_leaves_a_live_host_of_a_blocking_batch_room_for_a_reply_larger_than_the_socket_buffers() {
    let _serial = serial();
    let (hung, live) = (MemcachedServer::start(), MemcachedServer::start());
    // The live host is across a link of its own pace (16 KiB a millisecond at most), as a host
    // on the network is: its reply comes only as fast as the link carries it.
    let link = TcpProxy::start(&live.addr());
    let breakers = Arc::new(NodeBreakers::new("memcached", 10, Duration::from_secs(60)));
    // The hung host is listed first: its reply is the one read first.
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts([hung.addr(), link.addr()])
            .timeout(Duration::from_secs(2))
            .node_breakers(Arc::clone(&breakers)),
    )
    .unwrap();
    let mut keys = keys_on(&store, 0, "hung:", 3);
    keys.extend(keys_on(&store, 1, "large:", 12));
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // 12 values of 700 000 bytes: 8 MB in one reply, twice what the sockets on the client's
    // side of the link hold (4 MiB to send, 128 KiB to receive), so the rest crosses the link
    // only as the reply is read.
    let large = vec![b'v'; 700_000];
    let items: Vec<(&str, &[u8])> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, if i < 3 { k.as_bytes() } else { &large[..] }))
        .collect();
    store.set_many(&items, None).unwrap();
    let expected: Vec<Option<&[u8]>> = items.iter().map(|&(_, v)| Some(v)).collect();
    // The write left each host an idle connection, so the call runs from the caller's thread.

    link.delay(Duration::from_millis(1));
    hung.pause();
    let err = store.get_many(&keys).unwrap_err();
    hung.resume();
    // Read one host after the other, the hung host's read took the whole timeout while the
    // live host's reply waited in the link, and what was left of it after the deadline
    // failed the live host's keys too, held against its breaker.
    let partial = only_the_hung_hosts_keys_failed(err, &hung.addr(), 3);
    let Served::Entries(served) = &partial.served else {
        panic!("a get_many serves entries: {partial:?}");
    };
    assert!(
        values(served)[3..] == expected[3..],
        "the live host's large values were served"
    );
    assert_untouched(&breakers, &link.addr());
}
