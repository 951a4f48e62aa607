//! A `SET` that timed out may still run later (it waits in the socket of a server that stalled, or
//! behind a silent link), after a newer write of its key went out on another connection: the
//! older value must not be left in Redis. Against a real `redis-server` behind a TCP proxy
//! (`support/proxy.rs`) that holds one connection's bytes from the older `SET` on, as a stalled
//! server or link does, while new connections go through: the blocking API (the caller's pool),
//! the async API (the multiplexed connection, which is replaced), and an async caller that stops
//! waiting before the deadline. Each test fails without the level's doubt (`doubt.rs`): the held
//! write lands last and stays.

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

use std::sync::Arc;
use std::time::Duration;

use support::{block_on, wait_until, RedisServer};
use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, Error, LocalKind, RedisOptions, RedisStore, Storage,
};

/// The level's deadline. The held write waits it out; every other call must answer within it,
/// or it is in doubt too and its correction counts: a loaded machine overran 200 ms.
const TIMEOUT: Duration = Duration::from_millis(500);

struct Rig {
    server: RedisServer,
    proxy: proxy::TcpProxy,
    redis: RedisStore,
}

fn rig() -> Rig {
    rig_as(&[], "")
}

/// A rig whose server is started with `extra` arguments (an ACL user, say), and whose level logs
/// in as `user` (`name:password@`, or empty for the default user).
fn rig_as(extra: &[&str], user: &str) -> Rig {
    let server = RedisServer::start_with(extra, None);
    let proxy = proxy::TcpProxy::start(&server.addr());
    let url = format!("redis://{user}{}/", proxy.addr());
    let redis = RedisStore::connect(RedisOptions::new(url).prefix("late:").timeout(TIMEOUT)).unwrap();
    Rig { server, proxy, redis }
}

/// A manager with a memory L1 in front of `l2`, its L2 failures hidden by `fallback_on_error`
/// (a write that times out still returns Ok, as the late writes under test need).
fn memory_l1_over(l2: &Arc<RedisStore>) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config.fallback_on_error = true;
    CacheManager::builder()
        .config(config)
        .distributed(Arc::clone(l2) as Arc<dyn DistributedStorage>)
        .build()
        .unwrap()
}

impl Rig {
    /// What the server itself holds under `key`, past the proxy and the level.
    fn raw(&self, key: &str) -> Option<Vec<u8>> {
        let client = redis::Client::open(format!("redis://{}/", self.server.addr())).unwrap();
        let mut conn = client.get_connection().unwrap();
        redis::cmd("GET")
            .arg(format!("late:{key}"))
            .query(&mut conn)
            .unwrap()
    }

    /// Whether the server holds `value` (enveloped) under `key`.
    fn holds(&self, key: &str, value: &[u8]) -> bool {
        self.raw(key)
            .is_some_and(|bytes| bytes.windows(value.len()).any(|w| w == value))
    }

    /// A blocking `SET` of `key` whose bytes the proxy holds from the start, so that it times
    /// out and waits in its connection's socket, in doubt.
    fn held_set(&self, key: &str, value: &[u8]) {
        self.proxy.hold_on(&set_of(key, value.len()));
        timed_out("the held set", self.redis.set(key, value, None));
    }

    /// The opening of most tests here: "older value" held ([`Rig::held_set`]), then "the newer
    /// value" written past it on another connection.
    fn overtaken(&self, key: &str) {
        self.held_set(key, b"older value");
        self.redis.set(key, b"the newer value", None).unwrap();
    }

    /// The held bytes go on to the server, and every doubt settles.
    fn landed(&self) {
        self.proxy.release();
        self.settled();
    }

    fn settled(&self) {
        wait_until("the writes in doubt to settle", || {
            self.redis.writes_in_doubt() == 0
        });
    }
}

/// The bytes of a `SET` of `key` with a value of `len` bytes, up to the value: what the proxy
/// holds. Not the value itself, which the correction's `EVAL` sends too.
fn set_of(key: &str, len: usize) -> Vec<u8> {
    // The key with the prefix, and the envelope's 12-byte header (storage-format.md).
    format!("SET\r\n${}\r\nlate:{key}\r\n${}\r\n", key.len() + 5, len + 12).into_bytes()
}

fn timed_out<T: std::fmt::Debug>(what: &str, result: Result<T, Error>) {
    assert!(matches!(result, Err(Error::Timeout { .. })), "{what}: {result:?}");
}

#[test]
fn a_blocking_set_that_lands_after_a_newer_one_is_taken_out_of_redis() {
    let rig = rig();
    rig.held_set("k", b"older value");
    assert_eq!(rig.redis.writes_in_doubt(), 1);
    rig.redis.set("k", b"the newer value", None).unwrap();
    assert!(rig.holds("k", b"the newer value"));

    rig.landed();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
    assert_eq!(rig.redis.get("k").unwrap(), None);
    let counters = rig.redis.counters();
    assert_eq!((counters.late_writes_deleted, counters.writes_in_doubt), (1, 0));
}

#[test]
fn an_async_set_that_lands_after_a_newer_one_is_taken_out_of_redis() {
    let rig = rig();
    let accepted = rig.proxy.accepted();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    block_on(async {
        timed_out(
            "the held set",
            rig.redis.set_async("k", b"older value", None).await,
        );
    });
    assert_eq!(rig.redis.writes_in_doubt(), 1);
    // The timeout replaces the connection; the newer write goes out on the new one.
    wait_until("a new connection", || rig.proxy.accepted() > accepted);
    support::until_ok("the newer set", || {
        block_on(rig.redis.set_async("k", b"the newer value", None))
    });
    assert!(rig.holds("k", b"the newer value"));

    rig.landed();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

#[test]
fn an_async_set_whose_caller_stopped_waiting_is_in_doubt_too() {
    let rig = rig();
    let accepted = rig.proxy.accepted();
    rig.proxy.hold_on(&set_of("k", b"older value".len()));
    block_on(async {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            rig.redis.set_async("k", b"older value", None),
        )
        .await;
        assert!(gave_up.is_err(), "the held set was answered: {gave_up:?}");
    });
    assert_eq!(rig.redis.writes_in_doubt(), 1);
    // The connection is checked with a PING, which is held too, and replaced.
    wait_until("a new connection", || rig.proxy.accepted() > accepted);
    support::until_ok("the newer set", || {
        block_on(rig.redis.set_async("k", b"the newer value", None))
    });

    rig.landed();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

/// A batch's `SET`s are each in doubt, and each key is judged on its own.
#[test]
fn a_batch_that_timed_out_is_corrected_key_by_key() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("a", b"older a".len()));
    timed_out(
        "the held batch",
        rig.redis.set_many(
            &[("a", b"older a".as_slice()), ("b", b"older b".as_slice())],
            None,
        ),
    );
    assert_eq!(rig.redis.writes_in_doubt(), 2);
    rig.redis.set("a", b"the newer a", None).unwrap();

    rig.landed();
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
    assert_eq!(rig.redis.counters().late_writes_deleted, 2);
}

/// Through a manager: a write-through whose L2 part timed out (hidden by `fallback_on_error`),
/// then a newer one; the older lands late and is deleted, from L2 and from the writer's own L1
/// (which holds the newer value, but may have read the older one), and the stats say so.
#[test]
fn a_managers_write_through_that_lands_late_is_deleted_from_both_levels_and_counted() {
    let Rig { server, proxy, redis } = rig();
    let l2 = Arc::new(redis);
    let cache = memory_l1_over(&l2);
    proxy.hold_on(&set_of("k", b"older value".len()));
    cache.set_raw("k", b"older value", None).unwrap();
    assert_eq!(cache.stats().distributed.writes_in_doubt, 1);
    cache.set_raw("k", b"the newer value", None).unwrap();
    assert_eq!(
        cache.get_raw("k").unwrap().as_deref(),
        Some(&b"the newer value"[..])
    );

    proxy.release();
    wait_until("the writes in doubt to settle", || l2.writes_in_doubt() == 0);
    let client = redis::Client::open(format!("redis://{}/", server.addr())).unwrap();
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg("late:k")
        .query(&mut client.get_connection().unwrap())
        .unwrap();
    assert_eq!(raw, None, "the older value landed last and was left");
    let stats = cache.stats().distributed;
    assert_eq!((stats.late_writes_deleted, stats.writes_in_doubt), (1, 0));
    // The writer's own L1 drops the key as well: it held the newer value here, and a miss
    // in the moment the older one was in L2 would have read that one.
    wait_until("the writer's own L1 to drop the key", || {
        cache.get_raw("k").unwrap().is_none()
    });
}

/// Every key of a batch that landed late leaves the writer's L1. Their corrections reach the
/// manager's hook one after another on the I/O thread, while the thread that drops them from
/// L1 starts, drains and ends: a key handed over just as that thread ended, with none started
/// for it, would stay in L1, holding a value L2 no longer has, until its TTL.
#[test]
fn every_key_of_a_batch_that_landed_late_leaves_the_writers_l1() {
    let Rig {
        server: _server,
        proxy,
        redis,
    } = rig();
    let l2 = Arc::new(redis);
    let cache = memory_l1_over(&l2);
    let keys: Vec<String> = (0..64).map(|i| format!("k{i:02}")).collect();
    let with =
        |value: &'static [u8]| -> Vec<(&str, &[u8])> { keys.iter().map(|k| (k.as_str(), value)).collect() };
    proxy.hold_on(&set_of(&keys[0], b"older value".len()));
    cache.multi_set_raw(&with(b"older value"), None).unwrap();
    assert_eq!(cache.stats().distributed.writes_in_doubt, 64);
    cache.multi_set_raw(&with(b"the newer value"), None).unwrap();
    for key in &keys {
        assert_eq!(
            cache.get_raw(key).unwrap().as_deref(),
            Some(&b"the newer value"[..]),
            "{key}"
        );
    }

    proxy.release();
    wait_until("the writes in doubt to settle", || l2.writes_in_doubt() == 0);
    assert_eq!(cache.stats().distributed.late_writes_deleted, 64);
    // L2 no longer holds any of them: a key read as a value is one L1 kept.
    wait_until("the writer's L1 to drop every key", || {
        keys.iter().all(|key| cache.get_raw(key).unwrap().is_none())
    });
}

/// An instance over `l2` (the level's Redis, through the proxy or not) whose backplane is on
/// `bus`, with a memory L1.
fn instance(l2: &str, bus: &str) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "memory"
        [distributed]
        enabled = true
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
/// deletion: the deletion is published, so every instance drops the key from its L1.
#[test]
fn a_late_write_deleted_from_redis_is_published_to_the_other_instances() {
    let Rig { server, proxy, redis } = rig();
    drop(redis);
    let a = instance(&proxy.addr(), &server.addr());
    let b = instance(&server.addr(), &server.addr());
    late_write_publication::a_late_write_deleted_from_l2_reaches_the_other_instance(
        &proxy,
        &a,
        &b,
        &set_of("k", b"older value".len()),
    );
}

/// A user without `EVAL` (no `@scripting`) is answered `NOPERM` to the conditional correction:
/// the key is deleted with `UNLINK` instead.
#[test]
fn a_user_refused_scripts_has_the_key_unlinked_instead() {
    let rig = rig_as(
        &["--user", "app", "on", ">pw", "~*", "+@all", "-@scripting"],
        "app:pw@",
    );
    rig.overtaken("k");

    rig.landed();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

/// An ACL user `app` (password `pw`) that may run every command but `EVAL` and `UNLINK`: no
/// correction of a write in doubt can be sent as it.
const NO_CORRECTION_USER: &[&str] = &[
    "--user",
    "app",
    "on",
    ">pw",
    "~*",
    "+@all",
    "-@scripting",
    "-unlink",
];

/// A user refused both `EVAL` and `UNLINK` cannot correct the key: the correction is given up
/// (with a warning) rather than retried for ever, and the writes in doubt return to 0.
#[test]
fn a_user_refused_every_correction_gives_it_up() {
    let rig = rig_as(NO_CORRECTION_USER, "app:pw@");
    rig.held_set("k", b"older value");
    assert_eq!(rig.redis.writes_in_doubt(), 1);

    rig.landed();
    assert!(
        rig.holds("k", b"older value"),
        "nothing could delete it: {:?}",
        rig.raw("k")
    );
}

/// The keys of the lines that say a correction was given up, as logged (see
/// [`a_correction_given_up_names_its_key_as_errors_do`]).
fn given_up_keys() -> &'static given_up_lines::Keys {
    static KEYS: std::sync::OnceLock<given_up_lines::Keys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let keys = given_up_lines::Keys::default();
        tracing::subscriber::set_global_default(keys.clone()).unwrap();
        keys
    })
}

/// A subscriber that keeps the `key` field of the "could not delete a Redis key" lines (on the
/// level's I/O thread, so a global one).
mod given_up_lines {
    use std::fmt::Debug;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Keys(pub Arc<Mutex<Vec<String>>>);

    #[derive(Default)]
    struct Fields {
        message: String,
        key: Option<String>,
    }

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            match field.name() {
                "message" => self.message = format!("{value:?}"),
                "key" => self.key = Some(format!("{value:?}")),
                _ => {}
            }
        }
    }

    impl Subscriber for Keys {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            if fields.message.starts_with("could not delete a Redis key") {
                self.0.lock().unwrap().extend(fields.key);
            }
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

/// The line of a correction given up named the key whole, 4 KiB of it and the level's prefix,
/// where every other line and error names a key by its first 64 characters (`key_for_error`).
#[test]
fn a_correction_given_up_names_its_key_as_errors_do() {
    let keys = given_up_keys();
    let rig = rig_as(NO_CORRECTION_USER, "app:pw@");
    let key = "x".repeat(uno_cache::MAX_KEY_LEN);
    rig.held_set(&key, b"older value");
    rig.landed();
    let logged = keys.0.lock().unwrap().clone();
    let short = format!("{}…", "x".repeat(64));
    assert!(logged.contains(&short), "{logged:?}");
    assert!(logged.iter().all(|k| k.chars().count() <= 65), "{logged:?}");
}

/// A pooled connection that went silent for good (a flow that a NAT dropped: no answer, no reset,
/// until the kernel gives up on it minutes later) must not hold up the doubt of another one: a
/// write that lands late on a connection that answers is corrected meanwhile.
#[test]
fn a_silent_connection_in_doubt_does_not_hold_up_the_others() {
    let rig = rig();
    rig.proxy.hold_on(&set_of("lost", b"lost value".len()));
    timed_out(
        "the set on the connection that goes silent",
        rig.redis.set("lost", b"lost value", None),
    );
    rig.proxy.freeze();
    rig.proxy.release();
    rig.overtaken("k");
    assert_eq!(rig.redis.writes_in_doubt(), 2);

    rig.proxy.release();
    // The correction's delete shows on the server before the level counts the write settled:
    // both are awaited (read at the delete alone, the count was 2 on a loaded machine).
    wait_until("the late write to be corrected and settled", || {
        rig.raw("k").is_none() && rig.redis.writes_in_doubt() <= 1
    });
    assert_eq!(
        rig.raw("lost"),
        None,
        "the silent connection's write never reached the server"
    );
    assert_eq!(
        rig.redis.writes_in_doubt(),
        1,
        "the silent connection's write is in doubt still"
    );
}

/// A store dropped while its writes are in doubt on a stopped server (a pooled connection read
/// back, an async one asked `PING`s) drops at once, and leaves no connection open once the
/// server answers again: what waits for the answers holds the store weakly.
#[test]
fn a_store_dropped_with_writes_in_doubt_leaves_nothing_behind() {
    let server = RedisServer::start();
    let redis =
        RedisStore::connect(RedisOptions::new(server.addr()).prefix("late:").timeout(TIMEOUT)).unwrap();
    let mut admin = server.raw();
    let connected = |admin: &mut redis::Connection| -> u64 {
        let info: String = redis::cmd("INFO").arg("clients").query(admin).unwrap();
        let line = info.lines().find_map(|l| l.strip_prefix("connected_clients:"));
        line.unwrap().trim().parse().unwrap()
    };
    server.pause();
    timed_out("the blocking set", redis.set("a", b"older a", None));
    block_on(async { timed_out("the async set", redis.set_async("b", b"older b", None).await) });
    assert_eq!(redis.writes_in_doubt(), 2);

    let dropping = std::time::Instant::now();
    drop(redis);
    let took = dropping.elapsed();
    server.resume();
    assert!(took < Duration::from_secs(1), "dropping the store took {took:?}");
    wait_until("the store's connections to close", || connected(&mut admin) == 1);
}

/// A user refused `ECHO` (an ACL for a cache's commands grants `@read` and `@write`, not
/// `@connection`) answers the probe of a pooled connection with `NOPERM`: that answer still
/// says the write before it ran.
#[test]
fn a_user_refused_the_probe_still_has_the_late_write_corrected() {
    let rig = rig_as(&["--user", "app", "on", ">pw", "~*", "+@all", "-echo"], "app:pw@");
    rig.overtaken("k");

    rig.landed();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

/// A server busy with another client's long script answers every command `BUSY` for a while:
/// the correction is tried again once it is done, not given up as refused.
#[test]
fn a_correction_answered_busy_is_tried_again() {
    let rig = rig();
    let mut admin = rig.server.raw();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg("10")
        .query(&mut admin)
        .unwrap();
    rig.overtaken("k");
    // The held set lands, and the correction that follows it is held in turn.
    rig.proxy.release();
    rig.proxy.hold_on(b"EVAL");
    wait_until("the held set to land", || rig.holds("k", b"older value"));
    wait_until("the correction to be held", || rig.proxy.waiting() > 0);

    // A script that keeps the server busy for 2 s, then ends.
    let mut script = rig.server.raw();
    let busy = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg(
                "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] \
                 while true do local n = redis.call('TIME') \
                 if n[1] * 1000000 + n[2] - s > 2000000 then return 1 end end",
            )
            .arg(0)
            .query::<i64>(&mut script)
    });
    wait_until("the server to answer BUSY", || {
        redis::cmd("PING")
            .query::<String>(&mut admin)
            .is_err_and(|e| e.code() == Some("BUSY"))
    });
    rig.proxy.release();
    assert_eq!(busy.join().unwrap().unwrap(), 1);

    rig.settled();
    assert_eq!(rig.raw("k"), None, "the older value landed last and was left");
}

/// A store dropped while its server stays stopped leaves no connection open to it: what waits
/// for the answers sees the store gone within a second and closes its connection, rather than
/// waiting (a thread and a socket) for a server that may never read again.
#[test]
fn a_store_dropped_while_its_server_stays_stopped_closes_its_connections_in_doubt() {
    let server = RedisServer::start();
    let redis =
        RedisStore::connect(RedisOptions::new(server.addr()).prefix("late:").timeout(TIMEOUT)).unwrap();
    server.pause();
    timed_out("the blocking set", redis.set("a", b"older a", None));
    block_on(async { timed_out("the async set", redis.set_async("b", b"older b", None).await) });
    assert!(connected_to(server.port) > 0);

    drop(redis);
    wait_until("the connections to the stopped server to close", || {
        connected_to(server.port) == 0
    });
    server.resume();
}

/// A server stopped for longer than the probe's wait (1 s, after which the pooled connection is
/// asked again) still has the write that timed out corrected once it runs it.
#[test]
fn a_blocking_set_on_a_server_stopped_past_the_probes_wait_is_taken_out_once_it_lands() {
    let rig = rig();
    rig.server.pause();
    timed_out(
        "the set on the stopped server",
        rig.redis.set("k", b"older value", None),
    );
    // The stop itself, not a synchronisation: it outlasts the probe's wait.
    std::thread::sleep(Duration::from_millis(1500));
    rig.server.resume();
    rig.settled();
    assert_eq!(rig.raw("k"), None, "the value written in doubt was left");
}

/// Our connections to `port` on the loopback that are still established (`/proc/net/tcp`: the
/// remote port, state `01`); a stopped server's kernel still takes a close.
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

/// Over TLS the blocking API runs on the async connection (the caller's pool is plain TCP
/// only): a `SET` that timed out on a stopped server is in doubt there too, and the value it
/// wrote once the server runs it is taken out.
#[cfg(feature = "tls")]
#[test]
fn a_blocking_set_that_timed_out_over_tls_is_taken_out_once_it_lands() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let redis = RedisStore::connect(
        RedisOptions::new(format!("rediss://{}", server.addr()))
            .tls_root_cert(ca)
            .prefix("late:")
            .timeout(TIMEOUT),
    )
    .unwrap();
    redis.set("other", b"v", None).unwrap();

    server.pause();
    timed_out(
        "the set on the stopped server",
        redis.set("k", b"older value", None),
    );
    assert_eq!(redis.writes_in_doubt(), 1);
    server.resume();
    wait_until("the writes in doubt to settle", || redis.writes_in_doubt() == 0);
    let entry = support::until_ok("a read", || redis.get("k"));
    assert!(entry.is_none(), "the value written in doubt was left: {entry:?}");
}
