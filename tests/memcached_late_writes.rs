//! A `set` that timed out may still run later (it waits in the socket of a server that stalled,
//! or behind a silent link), after a newer write of its key went out on another connection: the
//! older value must not be left in memcached. Against a real `memcached` behind a TCP proxy
//! (`support/proxy.rs`) that holds one connection's bytes from the older `set` on, as a stalled
//! server or link does, while new connections go through: the blocking API, the async API, an
//! async caller that stops waiting before the deadline, a batch (one pipelined request), a batch
//! over two hosts of which one is held, a batch too large to be sent whole by its deadline, and
//! a connection that fails while its server is away; and a newer value that a correction must
//! leave, the held set having been reset unsent, or its reply cut in the middle by the deadline.
//! Each test fails without the level's doubt (`memcached/doubt.rs`): the held write lands last
//! and stays, or the doubt ends before it can.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/late_write_publication.rs"]
mod late_write_publication;
#[path = "support/proxy.rs"]
mod proxy;
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{block_on, wait_until, MemcachedServer};
use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, Error, LocalKind, MemcachedOptions, MemcachedStore,
    Storage,
};

/// The level's deadline. The held write waits it out; every other call must answer within it,
/// or it is in doubt too and its correction counts: a loaded machine overran 200 ms.
const TIMEOUT: Duration = Duration::from_millis(500);

struct Rig {
    server: MemcachedServer,
    proxy: proxy::TcpProxy,
    mc: MemcachedStore,
}

fn rig() -> Rig {
    let server = MemcachedServer::start();
    let proxy = proxy::TcpProxy::start(&server.addr());
    let mc = MemcachedStore::connect(
        MemcachedOptions::new(proxy.addr())
            .prefix("late:")
            .timeout(TIMEOUT),
    )
    .unwrap();
    Rig { server, proxy, mc }
}

impl Rig {
    /// What the server itself holds under `key`, past the proxy and the level.
    fn raw(&self, key: &str) -> Option<Vec<u8>> {
        self.server.raw().get::<Vec<u8>>(&format!("late:{key}")).unwrap()
    }

    /// Whether the server holds `value` (enveloped) under `key`.
    fn holds(&self, key: &str, value: &[u8]) -> bool {
        self.raw(key)
            .is_some_and(|bytes| bytes.windows(value.len()).any(|w| w == value))
    }

    fn settled(&self) {
        wait_until("the writes in doubt to settle", || self.mc.writes_in_doubt() == 0);
    }
}

/// The bytes of a binary `setq` of `key` (no expiry) with a value of `len` bytes, up to the
/// value: what the proxy holds. The body length tells it from a set of a value of another
/// length; the correction sends a `get` and a `delete`, never these bytes.
fn set_of(key: &str, len: usize) -> Vec<u8> {
    set_of_server_key(&format!("late:{key}"), len)
}

/// [`set_of`] by the key memcached sees (prefix included, mapped).
fn set_of_server_key(key: &str, len: usize) -> Vec<u8> {
    // The envelope's 12-byte header (storage-format.md).
    let key_len = u16::try_from(key.len()).unwrap();
    let body = u32::try_from(8 + key.len() + len + 12).unwrap();
    let mut bytes = vec![0x80, 0x11];
    bytes.extend_from_slice(&key_len.to_be_bytes());
    bytes.extend_from_slice(&[8, 0, 0, 0]); // extras length, data type, vbucket
    bytes.extend_from_slice(&body.to_be_bytes());
    bytes.extend_from_slice(&[0; 4]); // opaque: the item's index in its command
    bytes.extend_from_slice(&[0; 8]); // cas
    bytes.extend_from_slice(&[0; 8]); // flags, expiry (none)
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn timed_out<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    assert!(matches!(result, Err(Error::Timeout { .. })), "{what}: {result:?}");
}

#[test]
fn a_blocking_set_that_lands_after_a_newer_one_is_taken_out_of_memcached() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    timed_out("the held set", rig.mc.set("k", b"older value", None));
    assert_eq!(rig.mc.writes_in_doubt(), 1);
    // The timed-out connection is not reused: the newer set goes out on a new one.
    rig.mc.set("k", b"the newer value", None).unwrap();
    assert!(rig.holds("k", b"the newer value"));

    rig.proxy.release();
    rig.settled();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
    assert_eq!(rig.mc.get("k").unwrap(), None);
    let counters = rig.mc.counters();
    assert_eq!((counters.late_writes_deleted, counters.writes_in_doubt), (1, 0));
}

/// The manager publishes each key the level deleted after a late write (see
/// `DistributedStorage::on_late_write_deleted`): the level names it as the caller did, prefix
/// taken off and escaping undone, and only when it deleted something.
#[test]
fn a_key_deleted_after_a_late_write_is_told_to_the_hook_by_its_own_name() {
    let rig = rig();
    let told = Arc::new(Mutex::new(Vec::<String>::new()));
    let tell = Arc::clone(&told);
    rig.mc.on_late_write_deleted(Arc::new(move |key: &str| {
        tell.lock().unwrap().push(key.to_owned())
    }));
    for key in ["a key", "plain"] {
        rig.proxy.hold_on(&set_of(&escaped(key), b"older value".len()));
        timed_out("the held set", rig.mc.set(key, b"older value", None));
        rig.mc.set(key, b"the newer value", None).unwrap();
        rig.proxy.release();
        rig.settled();
    }
    assert_eq!(*told.lock().unwrap(), ["a key", "plain"]);
    assert_eq!(rig.mc.counters().late_writes_deleted, 2);
}

/// Through a manager: a write-through whose L2 part timed out (hidden by `fallback_on_error`),
/// then a newer one; the older lands late and is deleted, from L2 and from the writer's own L1
/// (which holds the newer value, but may have read the older one), and the stats say so.
#[test]
fn a_managers_write_through_that_lands_late_is_deleted_from_both_levels_and_counted() {
    let Rig { server, proxy, mc } = rig();
    let l2 = Arc::new(mc);
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.fallback_on_error = true;
    let cache = CacheManager::builder()
        .config(config)
        .distributed(Arc::clone(&l2) as Arc<dyn DistributedStorage>)
        .build()
        .unwrap();
    // The request's header: the manager's write has an expiry (`distributed.ttl`).
    proxy.hold_on(&set_of("k", b"older value".len())[..24]);
    cache.set_raw("k", b"older value", None).unwrap();
    assert_eq!(cache.stats().distributed.writes_in_doubt, 1);
    cache.set_raw("k", b"the newer value", None).unwrap();
    assert_eq!(
        cache.get_raw("k").unwrap().as_deref(),
        Some(&b"the newer value"[..])
    );

    proxy.release();
    wait_until("the writes in doubt to settle", || l2.writes_in_doubt() == 0);
    assert_eq!(server.raw().get::<Vec<u8>>("late:k").unwrap(), None);
    let stats = cache.stats().distributed;
    assert_eq!((stats.late_writes_deleted, stats.writes_in_doubt), (1, 0));
    // The writer's own L1 drops the key as well: it held the newer value here, and a miss
    // in the moment the older one was in L2 would have read that one.
    wait_until("the writer's own L1 to drop the key", || {
        cache.get_raw("k").unwrap().is_none()
    });
}

/// An instance over the memcached at `l2` (through the proxy or not) whose backplane is the
/// Redis at `bus`, with a memory L1.
#[cfg(feature = "redis")]
fn instance(l2: &str, bus: &str) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "memory"
        [distributed]
        enabled = true
        type = "memcached"
        hosts = ["{l2}"]
        key_prefix = "late:"
        timeout_ms = {}
        breaker_failures = 1000
        [invalidation]
        enabled = true
        hosts = ["{bus}"]
        "#,
        TIMEOUT.as_millis()
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// Another instance may read the older value into its L1 between its late landing and its
/// deletion: the deletion is published (through the level wrappers a configuration builds), so
/// every other instance drops the key from its L1 (the case `support/late_write_publication.rs`
/// holds for the Redis test too).
#[cfg(feature = "redis")]
#[test]
fn a_late_write_deleted_from_memcached_is_published_to_the_other_instances() {
    let Rig { server, proxy, mc } = rig();
    drop(mc);
    let bus = support::RedisServer::start();
    let a = instance(&proxy.addr(), &bus.addr());
    let b = instance(&server.addr(), &bus.addr());
    // The request's header: the manager's write has an expiry (`distributed.ttl`).
    late_write_publication::a_late_write_deleted_from_l2_reaches_the_other_instance(
        &proxy,
        &a,
        &b,
        &set_of("k", b"older value".len())[..24],
    );
}

/// A key over memcached's 250 bytes reaches the server as a hash, which cannot be turned back
/// into the key: it is told by the name the caller gave it all the same, or another instance
/// that read the late value into its L1 would keep it.
#[test]
fn a_long_key_deleted_after_a_late_write_is_told_to_the_hook_too() {
    let rig = rig();
    let told = Arc::new(Mutex::new(Vec::<String>::new()));
    let tell = Arc::clone(&told);
    rig.mc.on_late_write_deleted(Arc::new(move |key: &str| {
        tell.lock().unwrap().push(key.to_owned())
    }));
    let key = "long:".repeat(60);
    let (hashed, _) = rig.mc.server_key(&key);
    assert!(hashed.starts_with("%#"), "not hashed: {hashed}");
    rig.proxy
        .hold_on(&set_of_server_key(&hashed, b"older value".len()));
    timed_out("the held set", rig.mc.set(&key, b"older value", None));
    rig.mc.set(&key, b"the newer value", None).unwrap();
    rig.proxy.release();
    rig.settled();
    assert_eq!(rig.server.raw().get::<Vec<u8>>(&hashed).unwrap(), None);
    assert_eq!(rig.mc.counters().late_writes_deleted, 1);
    assert_eq!(*told.lock().unwrap(), [key]);
}

/// `key` as memcached sees it after the prefix (the test's keys are short).
fn escaped(key: &str) -> String {
    key.replace(' ', "%20")
}

#[test]
fn an_async_set_that_lands_after_a_newer_one_is_taken_out_of_memcached() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    block_on(async {
        timed_out("the held set", rig.mc.set_async("k", b"older value", None).await);
    });
    assert_eq!(rig.mc.writes_in_doubt(), 1);
    block_on(rig.mc.set_async("k", b"the newer value", None)).unwrap();
    assert!(rig.holds("k", b"the newer value"));

    rig.proxy.release();
    rig.settled();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

#[test]
fn an_async_set_whose_caller_stopped_waiting_is_in_doubt_too() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    block_on(async {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            rig.mc.set_async("k", b"older value", None),
        )
        .await;
        assert!(gave_up.is_err(), "the held set was answered: {gave_up:?}");
    });
    // The call ran on the store's I/O thread, which drops it there after the caller did.
    wait_until("the dropped set to be in doubt", || rig.mc.writes_in_doubt() == 1);
    block_on(rig.mc.set_async("k", b"the newer value", None)).unwrap();
    assert!(rig.holds("k", b"the newer value"));

    rig.proxy.release();
    rig.settled();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

/// A reply the deadline cut in the middle (the server ran the set; half its reply arrived) is
/// read on by the probe from the byte the call stopped at: the doubt ends at the probe's answer,
/// well within the unprobed grace (30 s) that ended it while the call's half was lost and the
/// probe read the rest out of step, and the newer value stands.
#[test]
fn a_set_whose_reply_the_deadline_cut_is_settled_by_its_probe() {
    reply_cut(|mc| mc.set("k", b"older value", None));
}

/// As above, on the async path: the call's read is dropped with the half it had taken.
#[test]
fn an_async_set_whose_reply_the_deadline_cut_is_settled_by_its_probe() {
    reply_cut(|mc| block_on(mc.set_async("k", b"older value", None)));
}

fn reply_cut(write: impl FnOnce(&MemcachedStore) -> Result<(), Error>) {
    let rig = rig();
    rig.proxy.cut_reply(10);
    timed_out("the set whose reply was cut", write(&rig.mc));
    assert!(rig.proxy.cut(), "the reply was not cut: the test tried nothing");
    assert_eq!(rig.mc.writes_in_doubt(), 1);
    rig.mc.set("k", b"the newer value", None).unwrap();

    rig.proxy.release();
    // Bounded by `wait_until`'s 15 s, half the grace.
    rig.settled();
    assert!(rig.holds("k", b"the newer value"));
    let counters = rig.mc.counters();
    assert_eq!((counters.late_writes_deleted, counters.writes_in_doubt), (0, 0));
}

/// A batch's sets (one pipelined request on the host) are each in doubt, and each key is judged
/// on its own.
#[test]
fn a_batch_that_timed_out_is_corrected_key_by_key() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("a", b"older a".len()));
    timed_out(
        "the held batch",
        rig.mc.set_many(
            &[("a", b"older a".as_slice()), ("b", b"older b".as_slice())],
            None,
        ),
    );
    assert_eq!(rig.mc.writes_in_doubt(), 2);
    rig.mc.set("a", b"the newer a", None).unwrap();

    rig.proxy.release();
    rig.settled();
    assert_eq!(
        rig.raw("a"),
        None,
        "the older value of a landed last and was left"
    );
    assert_eq!(
        rig.raw("b"),
        None,
        "b's only value was written in doubt, and goes too"
    );
}

/// A connection that fails (here: the server goes away) can no longer run the write: its doubt
/// ends, and the correction waits, retrying, until the server answers again.
#[test]
fn a_set_whose_connection_failed_is_corrected_once_the_server_is_back() {
    let mut rig = rig();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    timed_out("the held set", rig.mc.set("k", b"older value", None));
    assert_eq!(rig.mc.writes_in_doubt(), 1);
    rig.server.kill();
    rig.proxy.release();
    let accepted = rig.proxy.accepted();
    // The correction's tries reach the proxy, which finds no server behind it.
    wait_until("the correction to be tried", || {
        rig.proxy.accepted() > accepted + 1
    });
    assert_eq!(rig.mc.writes_in_doubt(), 1, "settled while the server was away");
    rig.server.restart();
    rig.settled();
    assert_eq!(rig.raw("k"), None);
}

/// With several hosts, only the items sent to the host that did not answer are in doubt, and
/// the probe and the correction go to that host: the key's, not the first listed.
#[test]
fn a_batch_over_two_hosts_is_corrected_on_the_host_that_did_not_answer() {
    let direct = MemcachedServer::start();
    let behind = MemcachedServer::start();
    let proxy = proxy::TcpProxy::start(&behind.addr());
    let mc = MemcachedStore::connect(
        MemcachedOptions::with_hosts([direct.addr(), proxy.addr()])
            .prefix("late:")
            .timeout(TIMEOUT),
    )
    .unwrap();
    let on = |host: usize| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|key| mc.server_key(key).1 == host)
            .unwrap()
    };
    let (here, there) = (on(0), on(1));
    let raw =
        |server: &MemcachedServer, key: &str| server.raw().get::<Vec<u8>>(&format!("late:{key}")).unwrap();
    proxy.hold_on(&set_of(&there, b"older there".len()));
    let batch = mc.set_many(
        &[
            (here.as_str(), b"only here".as_slice()),
            (there.as_str(), b"older there".as_slice()),
        ],
        None,
    );
    assert!(batch.is_err(), "the held host answered: {batch:?}");
    assert_eq!(mc.writes_in_doubt(), 1, "only the held host's item is in doubt");
    mc.set(&there, b"the newer value there", None).unwrap();

    proxy.release();
    wait_until("the writes in doubt to settle", || mc.writes_in_doubt() == 0);
    assert_eq!(
        raw(&behind, &there),
        None,
        "the older value landed last on its host and was left"
    );
    assert!(
        raw(&direct, &here).is_some(),
        "an item its host answered is not touched"
    );
}

/// The correction deletes only a value written in doubt: here the held set never reaches the
/// server (its connection is reset), and the newer value it finds stands.
#[test]
fn a_newer_value_stands_when_the_set_in_doubt_never_landed() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    timed_out("the held set", rig.mc.set("k", b"older value", None));
    assert_eq!(rig.mc.writes_in_doubt(), 1);
    rig.mc.set("k", b"the newer value", None).unwrap();

    rig.proxy.sever();
    rig.settled();
    assert!(
        rig.holds("k", b"the newer value"),
        "a value not written in doubt was deleted: {:?}",
        rig.raw("k")
    );
}

/// A batch too large for the socket's buffers, held from its first item on, cannot be sent
/// whole by its deadline: part of it waits in the socket, and the server runs that part's
/// complete items whenever it reads again, however long it stalled. Its doubt must last until
/// then: ended after a fixed grace (30 s, `UNPROBED_GRACE`), the correction ran while the items
/// were still held, found the newer value, and the older one landed after it, for good.
#[test]
fn a_batch_half_sent_when_it_timed_out_is_corrected_once_it_lands_however_late() {
    half_sent_batch(|mc, items| mc.set_many(items, None));
}

/// As above, on the async path (the request's sending counted as the call is dropped).
#[test]
fn an_async_batch_half_sent_when_it_timed_out_is_corrected_once_it_lands_however_late() {
    half_sent_batch(|mc, items| block_on(mc.set_many_async(items, None)));
}

fn half_sent_batch(write: impl FnOnce(&MemcachedStore, &[(&str, &[u8])]) -> Result<(), Error>) {
    let rig = rig();
    let value = vec![b'o'; 512 << 10];
    let keys: Vec<String> = (0..48).map(|i| format!("big{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
    rig.proxy.hold_on(&set_of("big0", value.len()));
    timed_out("the held batch", write(&rig.mc, &items));
    assert!(rig.mc.writes_in_doubt() > 0);
    rig.mc.set("big0", b"the newer value", None).unwrap();
    // The server stalls for longer than the grace that ended such a doubt.
    std::thread::sleep(Duration::from_secs(31));

    let sets = rig.server.stat("cmd_set");
    rig.proxy.release();
    wait_until("the held items to land", || rig.server.stat("cmd_set") > sets);
    rig.settled();
    let left = rig.raw("big0").map(|bytes| bytes.len());
    assert_eq!(left, None, "the older value landed last and was left");
}

/// A server stalled under many callers has each call time out on a connection of its own: the
/// connections kept open to be probed are bounded (64), the others closed (their doubt ends
/// as an unprobed one's), rather than a socket kept for each call for as long as it stalls.
#[test]
fn the_connections_kept_to_be_probed_are_bounded() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    let callers: u64 = 100;
    std::thread::scope(|s| {
        for _ in 0..callers {
            s.spawn(|| timed_out("a held set", rig.mc.set("k", b"older value", None)));
        }
    });
    assert!(rig.proxy.accepted() >= callers, "the sets shared connections");
    assert_eq!(rig.mc.writes_in_doubt(), 1);
    // A kernel takes the close of a connection at once, even from a stalled server.
    let open = connected_to(rig.proxy.port());
    assert!(
        open <= 64 + 1,
        "{open} connections kept open to {callers} held sets"
    );

    // Probes that ended make room again.
    rig.proxy.release();
    wait_until("the probes to end", || connected_to(rig.proxy.port()) <= 1);
    let before = connected_to(rig.proxy.port());
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    timed_out("the held set", rig.mc.set("k", b"older value", None));
    assert_eq!(
        connected_to(rig.proxy.port()),
        before + 1,
        "not kept to be probed"
    );
}

/// The rest of a half-sent request is kept with its connection, to be sent once the server
/// reads again: bounded (32 MiB for the store), past which the connection is closed.
#[test]
fn the_bytes_kept_to_finish_half_sent_requests_are_bounded() {
    let rig = rig();
    let value = vec![b'o'; 512 << 10];
    let keys: Vec<String> = (0..64).map(|i| format!("big{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
    rig.proxy.hold_on(&set_of("big0", value.len()));
    let before = connected_to(rig.proxy.port());
    // Each 32 MiB, of which the socket's buffers took a few.
    for _ in 0..2 {
        timed_out("a held batch", rig.mc.set_many(&items, None));
    }
    let kept = connected_to(rig.proxy.port()) - before;
    assert_eq!(kept, 1, "connections kept with the rest of their batch");
}

/// A store dropped while its writes are in doubt on a server that does not answer (a set held
/// whole, a batch held half-sent) drops at once, and leaves no connection open: the probes end
/// with its I/O thread.
#[test]
fn a_store_dropped_with_writes_in_doubt_leaves_nothing_behind() {
    let Rig {
        server: _server,
        proxy,
        mc,
    } = rig();
    let value = vec![b'o'; 512 << 10];
    proxy.hold_on(&set_of("big0", value.len()));
    timed_out("the held set", mc.set("big0", &value, None));
    let keys: Vec<String> = (0..48).map(|i| format!("big{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), value.as_slice())).collect();
    timed_out("the held batch", mc.set_many(&items, None));
    assert!(mc.writes_in_doubt() > 1);
    assert!(connected_to(proxy.port()) >= 2);

    let dropping = std::time::Instant::now();
    drop(mc);
    assert!(
        dropping.elapsed() < Duration::from_secs(2),
        "the drop took {:?}",
        dropping.elapsed()
    );
    assert_eq!(connected_to(proxy.port()), 0, "a connection outlived its store");
}

/// Our connections to `port` on the loopback that are still established (`/proc/net/tcp`: the
/// remote port, state `01`).
fn connected_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let remote = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(2).is_some_and(|r| r.ends_with(&remote)) && fields.get(3) == Some(&"01")
        })
        .count()
}
