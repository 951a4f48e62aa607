//! `MemcachedStore` against real `memcached` processes: round trips, TTLs (memcached's whole
//! seconds vs the millisecond expiry in the envelope), key mapping (spaces, a 300-byte key, and
//! weird keys that must never collide), sharding across two hosts, prefix
//! isolation and the `clear` refusal, construction errors, the async API, and an outage: the
//! server is killed mid-workload (every call returns within the deadline with an error, nothing
//! panics) and restarted on the same port (calls succeed again); a host whose connection went
//! silent does not cost the healthy host its pooled connections; a server at its connection
//! limit is named as such. The item size limit is in
//! `tests/memcached_item_limits.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/proxy.rs"]
mod proxy;
mod support;

#[path = "support/outage.rs"]
mod outage;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use outage::Workload;
use support::MemcachedServer;
use uno_cache::distributed::{envelope, map_memcached_key, NodeBreakers};
use uno_cache::{
    CircuitBreaker, DistributedStorage, Error, Guarded, ManualClock, MemcachedOptions, MemcachedStore,
    Served, Storage,
};

/// The op timeout of the tests whose subject is not a deadline: the default 100 ms failed their
/// calls on a loaded machine. The deadline tests set theirs.
const PATIENT: Duration = Duration::from_secs(5);

fn store(server: &MemcachedServer, prefix: &str) -> MemcachedStore {
    MemcachedStore::connect(
        MemcachedOptions::new(server.addr())
            .prefix(prefix)
            .timeout(PATIENT),
    )
    .unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// The raw bytes memcached holds for a store key.
fn raw_get(server: &MemcachedServer, store: &MemcachedStore, key: &str) -> Option<Vec<u8>> {
    let (mapped, _) = store.server_key(key);
    server.raw().get::<Vec<u8>>(&mapped).unwrap()
}

#[test]
fn round_trip_set_get_delete() {
    let server = MemcachedServer::start();
    let mc = store(&server, "t:");
    assert_eq!(mc.name(), "memcached");
    assert_eq!(mc.get("k").unwrap(), None);
    mc.set("k", b"value one", None).unwrap();
    let entry = mc.get("k").unwrap().unwrap();
    assert_eq!(entry.value, b"value one");
    assert_eq!(entry.expires_at, None);
    assert!(mc.delete("k").unwrap());
    assert!(!mc.delete("k").unwrap());
    assert_eq!(mc.get("k").unwrap(), None);
    mc.set("raw", b"abc", None).unwrap();
    let raw = server.raw().get::<Vec<u8>>("t:raw").unwrap().unwrap();
    assert_eq!(
        &raw[envelope::HEADER_LEN..],
        b"abc",
        "stored under prefix + key, enveloped"
    );
}

#[test]
fn ttl_in_the_envelope_is_exact_and_memcached_gets_whole_seconds() {
    let server = MemcachedServer::start();
    let mc = store(&server, "t:");
    let before = now_ms();
    mc.set("k", b"v", Some(Duration::from_millis(1_500))).unwrap();
    let after = now_ms();
    let expires = mc.get("k").unwrap().unwrap().expires_at.unwrap();
    let expires_ms = u64::try_from(expires.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert!((before + 1_500..=after + 1_500).contains(&expires_ms));

    // A sub-second TTL is not sent as 0 ("never"): the server drops the item by itself.
    mc.set("short", b"v", Some(Duration::from_millis(10))).unwrap();
    let started = Instant::now();
    while raw_get(&server, &mc, "short").is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "memcached kept a 10 ms item: sent as 'never'?"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mc.get("short").unwrap(), None);
    assert!(matches!(
        mc.set("z", b"v", Some(Duration::ZERO)),
        Err(Error::ZeroTtl { .. })
    ));
}

#[test]
fn envelope_expiry_hides_items_memcached_still_holds() {
    let server = MemcachedServer::start();
    let clock = ManualClock::new(now_ms());
    let mc =
        MemcachedStore::connect(MemcachedOptions::new(server.addr()).clock(Arc::new(clock.clone()))).unwrap();
    mc.set("k", b"v", Some(Duration::from_millis(200))).unwrap();
    assert!(mc.get("k").unwrap().is_some());
    clock.advance(Duration::from_millis(200));
    assert_eq!(mc.get("k").unwrap(), None);
    assert_eq!(mc.get_many(&["k"]).unwrap(), vec![None]);
    assert!(
        raw_get(&server, &mc, "k").is_some(),
        "memcached rounds up to seconds and still has it"
    );
}

#[test]
fn ttls_over_30_days_are_sent_as_absolute_times() {
    let server = MemcachedServer::start();
    let mc = store(&server, "");
    // Read as a relative 40-day TTL, memcached would treat ~3.4e6 as a Unix time in 1970 and
    // drop the item at once.
    mc.set("long", b"v", Some(Duration::from_secs(40 * 24 * 3600)))
        .unwrap();
    assert!(raw_get(&server, &mc, "long").is_some());
    assert!(mc.get("long").unwrap().is_some());
}

/// memcached reads an expiry over 30 days as a Unix time on its own clock, so that time is the
/// system's, not the store's clock (which stamps only the envelope): a store on a clock behind
/// the system's sent a time in 1970 for a 40-day TTL, and memcached dropped the item at once.
#[test]
fn a_ttl_over_30_days_is_an_absolute_time_on_the_system_clock_whatever_the_stores_clock() {
    let server = MemcachedServer::start();
    let clock = ManualClock::new(1_000);
    let mc = MemcachedStore::connect(
        MemcachedOptions::new(server.addr())
            .timeout(PATIENT)
            .clock(Arc::new(clock.clone())),
    )
    .unwrap();
    mc.set("long", b"v", Some(Duration::from_secs(40 * 24 * 3600)))
        .unwrap();
    assert!(raw_get(&server, &mc, "long").is_some(), "memcached kept the item");
    let entry = mc.get("long").unwrap().unwrap();
    assert_eq!(
        entry.expires_at,
        Some(UNIX_EPOCH + Duration::from_millis(1_000) + Duration::from_secs(40 * 24 * 3600)),
        "the envelope keeps the store's clock"
    );
}

#[test]
fn weird_keys_round_trip_and_never_collide() {
    let server = MemcachedServer::start();
    let mc = store(&server, "w:");
    let long_a = "a".repeat(300);
    let long_b = format!("{}b", "a".repeat(299));
    let keys = [
        "a key with spaces",
        "a%20key%20with%20spaces", // what a naive escaper would map the previous key to
        "tab\tand\nnewline",
        "ünïcødé",
        long_a.as_str(),
        long_b.as_str(),
        "plain",
    ];
    for (i, key) in keys.iter().enumerate() {
        mc.set(key, format!("value {i}").as_bytes(), None).unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            mc.get(key).unwrap().unwrap().value,
            format!("value {i}").as_bytes(),
            "{key:?}"
        );
    }
    let mapped: std::collections::HashSet<String> = keys.iter().map(|k| mc.server_key(k).0).collect();
    assert_eq!(mapped.len(), keys.len(), "two keys share a server key");
    // What memcached sees: the spaced key escaped, the long key hashed, the plain key as is.
    assert_eq!(mc.server_key("a key with spaces").0, "w:a%20key%20with%20spaces");
    assert!(mc.server_key(&long_a).0.starts_with("%#"));
    assert_eq!(map_memcached_key("w:plain"), "w:plain");
    assert!(server.raw().get::<Vec<u8>>("w:plain").unwrap().is_some());
    // Batch calls map the same way.
    let got = mc.get_many(&keys).unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(mc.delete_many(&keys).unwrap(), keys.len() as u64);
}

#[test]
fn keys_are_sharded_across_hosts_and_batches_find_them_all() {
    let a = MemcachedServer::start();
    let b = MemcachedServer::start();
    let mc =
        MemcachedStore::connect(MemcachedOptions::with_hosts([a.addr(), b.addr()]).prefix("s:")).unwrap();
    let keys: Vec<String> = (0..200).map(|i| format!("key {i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), k.as_bytes())).collect();
    mc.set_many(&items, Some(Duration::from_secs(60))).unwrap();
    let (on_a, on_b) = (a.stat("curr_items"), b.stat("curr_items"));
    assert_eq!(on_a + on_b, 200);
    assert!(on_a > 50 && on_b > 50, "unbalanced: {on_a} / {on_b}");
    // Every key sits where `server_key` says.
    for key in &keys {
        let (mapped, host) = mc.server_key(key);
        let server = if host == 0 { &a } else { &b };
        assert!(
            server.raw().get::<Vec<u8>>(&mapped).unwrap().is_some(),
            "{key} not on host {host}"
        );
    }
    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = mc.get_many(&refs).unwrap();
    for (key, entry) in keys.iter().zip(&got) {
        assert_eq!(entry.as_ref().unwrap().value, key.as_bytes());
    }
    let size = mc.size().unwrap();
    assert_eq!(size.items, 200);
    assert!(size.bytes > 200 * envelope::HEADER_LEN as u64);
    assert_eq!(mc.delete_many(&refs[..20]).unwrap(), 20);
    assert_eq!(mc.size().unwrap().items, 180);
}

/// Two processes that list the same hosts in another order put every key on the same host: a
/// delete by one leaves nothing the other can read (with a position in the list, each put every
/// key on the other host).
#[test]
fn the_same_hosts_listed_in_another_order_agree_on_where_every_key_lives() {
    let a = MemcachedServer::start();
    let b = MemcachedServer::start();
    let patient = |hosts: [String; 2]| {
        MemcachedStore::connect(MemcachedOptions::with_hosts(hosts).timeout(PATIENT)).unwrap()
    };
    let one = patient([a.addr(), b.addr()]);
    let two = patient([b.addr(), a.addr()]);
    let mut stale = Vec::new();
    for i in 0..40 {
        let key = format!("user:{i}");
        one.set(&key, b"old", None).unwrap();
        two.delete(&key).unwrap();
        if one.get(&key).unwrap().is_some() {
            stale.push(key);
        }
    }
    assert!(stale.is_empty(), "readable after a delete: {stale:?}");
    assert_eq!(a.stat("curr_items") + b.stat("curr_items"), 0);
}

#[test]
fn prefixes_isolate_stores_and_clear_is_refused_with_a_prefix() {
    let server = MemcachedServer::start();
    let a = store(&server, "a:");
    let b = store(&server, "b:");
    a.set("shared", b"from a", None).unwrap();
    b.set("shared", b"from b", None).unwrap();
    assert_eq!(a.get("shared").unwrap().unwrap().value, b"from a");
    assert_eq!(b.get("shared").unwrap().unwrap().value, b"from b");
    let err = a.clear().unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "memcached.prefix"),
        "{err}"
    );
    assert_eq!(
        b.get("shared").unwrap().unwrap().value,
        b"from b",
        "nothing was flushed"
    );
    // `size` counts the whole server, whatever the prefix (documented).
    assert_eq!(a.size().unwrap().items, 2);

    let whole = store(&server, "");
    whole.clear().unwrap();
    assert_eq!(a.get("shared").unwrap(), None);
    assert_eq!(
        b.get("shared").unwrap(),
        None,
        "flush_all wipes every prefix: why it needs no prefix"
    );
}

/// memcached run with `-F` refuses `flush_all` with an authentication error; `clear` says that
/// flush_all is disabled and what to do, not that a password is wanted, and the connection
/// serves on.
#[test]
fn clear_on_a_server_with_flush_all_disabled_says_so() {
    let server = MemcachedServer::start_with(&["-F"]);
    let mc = store(&server, "");
    mc.set("k", b"v", None).unwrap();
    let err = mc.clear().unwrap_err();
    let text = err.to_string();
    assert!(
        err.is_misconfiguration()
            && text.contains(&server.addr())
            && text.contains("-F")
            && text.contains("delete_many"),
        "{text}"
    );
    assert_eq!(mc.get("k").unwrap().unwrap().value, b"v", "nothing was flushed");
}

/// The refusal of flush_all concerns clear() alone: counted by the breaker, a few clears opened
/// it, and the reads and writes the server still served were skipped.
#[test]
fn clears_refused_by_a_server_with_flush_all_disabled_leave_the_breaker_closed() {
    let server = MemcachedServer::start_with(&["-F"]);
    let breaker = Arc::new(CircuitBreaker::new(2, Duration::from_secs(600)));
    let mc = Guarded::new("memcached", store(&server, ""), Arc::clone(&breaker));
    mc.set("k", b"v", None).unwrap();
    for _ in 0..4 {
        let err = mc.clear().unwrap_err();
        assert!(
            err.is_misconfiguration() && err.to_string().contains("-F"),
            "{err:?}"
        );
    }
    assert_eq!(mc.get("k").unwrap().unwrap().value, b"v");
    assert_eq!(breaker.stats().trips, 0);
}

#[test]
fn values_without_an_envelope_are_a_typed_error() {
    let server = MemcachedServer::start();
    server.raw().set("t:foreign", "plain text", 0).unwrap();
    let mc = store(&server, "t:");
    let err = mc.get("foreign").unwrap_err();
    assert!(
        matches!(err, Error::InvalidEnvelope { level: "memcached", ref key, .. } if key == "foreign"),
        "{err}"
    );
}

#[test]
fn one_unreadable_value_fails_only_its_key_of_a_get_many() {
    // It failed the whole batch: the keys read with it were lost to the caller.
    let server = MemcachedServer::start();
    server.raw().set("t:foreign", "plain text", 0).unwrap();
    let mc = store(&server, "t:");
    mc.set("a", b"1", None).unwrap();
    mc.set("c", b"3", None).unwrap();
    let keys = ["a", "foreign", "c", "missing"];
    let check = |result: uno_cache::Result<Vec<Option<uno_cache::Entry>>>| {
        let Err(Error::PartialBatch(partial)) = result else {
            panic!("expected a partial batch, got {result:?}");
        };
        assert_eq!((partial.total, &partial.failed[..]), (4, &[1][..]));
        assert!(
            matches!(partial.cause, Error::InvalidEnvelope { level: "memcached", ref key, .. } if key == "foreign"),
            "{:?}",
            partial.cause
        );
        let Served::Entries(entries) = &partial.served else {
            panic!("{:?}", partial.served)
        };
        let values: Vec<Option<&[u8]>> = entries.iter().map(|e| e.as_ref().map(|e| &e.value[..])).collect();
        assert_eq!(values, [Some(&b"1"[..]), None, Some(&b"3"[..]), None]);
    };
    check(mc.get_many(&keys));
    check(support::block_on(mc.get_many_async(&keys)));
    // One key: its own error, as `get`.
    assert!(matches!(
        mc.get_many(&["foreign"]),
        Err(Error::InvalidEnvelope { .. })
    ));
}

#[test]
fn unreachable_host_and_bad_urls_fail_at_construction() {
    let port = support::free_port();
    // Three attempts: the median must end within 50 ms of the connect timeout, and none a second
    // past it (one attempt may wait for a busy CI machine to schedule the test: the machine
    // stalled threads for up to 385 ms in the outage test below).
    let mut errors = Vec::new();
    let mut took: Vec<Duration> = (0..3)
        .map(|_| {
            let started = Instant::now();
            errors.push(
                MemcachedStore::connect(
                    MemcachedOptions::new(format!("127.0.0.1:{port}"))
                        .connect_timeout(Duration::from_millis(300)),
                )
                .unwrap_err(),
            );
            started.elapsed()
        })
        .collect();
    took.sort();
    assert!(took[1] < Duration::from_millis(350), "{took:?}");
    assert!(took[2] < Duration::from_millis(1300), "{took:?}");
    let err = errors.pop().unwrap();
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { op: "connect", .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("memcached runs there"), "{text}");

    // One good host and one bad one: the bad one is named.
    let good = MemcachedServer::start();
    let err = MemcachedStore::connect(
        MemcachedOptions::with_hosts([good.addr(), format!("127.0.0.1:{port}")])
            .connect_timeout(Duration::from_millis(300)),
    )
    .unwrap_err();
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");

    for bad in ["", "redis://127.0.0.1:1", "memcache://:1", "127.0.0.1:port"] {
        let err = MemcachedStore::connect(MemcachedOptions::new(bad)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{bad}: {err}");
    }
    let err = MemcachedStore::connect(MemcachedOptions::new(good.addr()).max_item_size(100)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

/// A memcached level whose host is a Redis (the port of the other level, or `type` set for the
/// wrong one) is a wrong configuration naming the type to set: Redis never answers the binary
/// `version`, so it was reported as a memcached that is slow or down ("no answer within 2s"),
/// and a manager started without its L2, retrying it for good (found by following the README
/// as a new user). It is still found only once the binary check has timed out.
#[test]
fn a_memcached_level_pointed_at_a_redis_is_misconfigured_naming_the_type_to_set() {
    let redis = support::RedisServer::start();
    let options = || MemcachedOptions::new(redis.addr()).connect_timeout(Duration::from_millis(300));
    let check = |err: Error| {
        let text = err.to_string();
        assert!(
            matches!(err, Error::Misconfigured { level: "memcached", ref hosts, .. } if *hosts == redis.addr()),
            "{text}"
        );
        assert!(
            text.contains("Redis protocol") && text.contains("distributed.type = \"redis\""),
            "{text}"
        );
    };
    check(MemcachedStore::connect(options()).unwrap_err());
    check(support::block_on(MemcachedStore::connect_async(options())).unwrap_err());
    // Through the configuration: the manager refuses to start, as for any misconfiguration.
    let config = uno_cache::CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"memory\"\n[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [{:?}]\n",
        redis.addr()
    ))
    .unwrap();
    check(uno_cache::CacheManager::new(config).unwrap_err());
}

/// A memcached that speaks only the text protocol (`-B ascii`) is a wrong configuration, said
/// as such at once: it waited out connect_timeout on the binary `version` and was reported as
/// not answering ("check that memcached runs there"), although memcached ran there. With
/// per-host breakers too: no probe of a breaker could bring such a host back.
#[test]
fn a_server_that_speaks_only_the_text_protocol_is_reported_as_misconfigured_at_once() {
    let server = MemcachedServer::start_with(&["-B", "ascii"]);
    let check = |err: Error, started: Instant| {
        let took = started.elapsed();
        let text = err.to_string();
        assert!(
            matches!(err, Error::Misconfigured { .. }),
            "after {took:?}: {text}"
        );
        assert!(err.is_misconfiguration());
        assert!(
            text.contains(&server.addr()) && text.contains("text protocol") && text.contains("-B binary"),
            "{text}"
        );
        assert!(took < Duration::from_secs(1), "took {took:?}: {text}");
    };
    let started = Instant::now();
    check(
        MemcachedStore::connect(MemcachedOptions::new(server.addr())).unwrap_err(),
        started,
    );
    let good = MemcachedServer::start();
    let started = Instant::now();
    let err = MemcachedStore::connect(
        MemcachedOptions::with_hosts([good.addr(), server.addr()]).node_breakers(Arc::new(
            NodeBreakers::new("memcached", 2, Duration::from_secs(60)),
        )),
    )
    .unwrap_err();
    check(err, started);
    let started = Instant::now();
    let err = support::block_on(MemcachedStore::connect_async(MemcachedOptions::new(
        server.addr(),
    )))
    .unwrap_err();
    check(err, started);
}

/// A host that lets the binary `version` time out but answers the text one may only be slow:
/// it is not called misconfigured (that would stop a manager from starting), but the error says
/// what to check.
#[test]
fn a_silent_binary_check_with_a_text_answer_is_an_outage_with_a_hint() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Answers a text `version`; stays silent on anything else until the client hangs up.
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let Ok(n) = stream.read(&mut buf) else { return };
                if buf[..n].starts_with(b"version") {
                    let _ = stream.write_all(b"VERSION 0.0-slow\r\n");
                }
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    let err =
        MemcachedStore::connect(MemcachedOptions::new(&addr).connect_timeout(Duration::from_millis(300)))
            .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { op: "connect", .. }), "{text}");
    assert!(
        text.contains(&addr) && text.contains("VERSION 0.0-slow") && text.contains("-B auto"),
        "{text}"
    );
}

#[test]
fn async_api_and_sync_api_inside_a_runtime() {
    let server = MemcachedServer::start();
    let addr = server.addr();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mc = MemcachedStore::connect_async(MemcachedOptions::new(addr).prefix("a:"))
            .await
            .unwrap();
        mc.set("sync", b"1", None).unwrap();
        mc.set_async("async", b"2", Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(mc.get_async("sync").await.unwrap().unwrap().value, b"1");
        let got = mc.get_many_async(&["sync", "async", "none"]).await.unwrap();
        assert_eq!(got.iter().filter(|e| e.is_some()).count(), 2);
        mc.set_many_async(&[("x", &b"x"[..]), ("y", &b"y"[..])], None)
            .await
            .unwrap();
        assert_eq!(mc.delete_many_async(&["x", "y", "none"]).await.unwrap(), 2);
        assert!(mc.delete_async("sync").await.unwrap());
        drop(mc);
    });
    // A runtime without timers is fine too: the deadline is kept on the store's own thread.
    let mc = store(&server, "a:");
    let bare = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(bare.block_on(mc.get_async("async")).unwrap().unwrap().value, b"2");
}

/// `workers` past what a semaphore counts (tokio's `MAX_PERMITS`, `usize::MAX >> 3`) is as good
/// as no bound: it was a panic in the store's construction.
#[test]
fn workers_past_any_need_are_no_panic() {
    let server = MemcachedServer::start();
    let mc = MemcachedStore::connect(
        MemcachedOptions::new(server.addr())
            .prefix("w:")
            .workers(usize::MAX),
    )
    .unwrap();
    mc.set("k", b"v", None).unwrap();
    let bare = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(bare.block_on(mc.get_async("k")).unwrap().unwrap().value, b"v");
}

#[test]
fn outage_calls_fail_within_the_deadline_and_recover_after_restart() {
    let mut server = MemcachedServer::start();
    let timeout = Duration::from_millis(100);
    let mc =
        Arc::new(MemcachedStore::connect(MemcachedOptions::new(server.addr()).timeout(timeout)).unwrap());
    mc.set("k", b"before", None).unwrap();

    let workload = Workload::start(mc.clone(), timeout);
    server.kill();
    workload.fails();

    server.restart();
    let started = Instant::now();
    while mc.set("k", b"after", None).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no recovery after restart"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(mc.get("k").unwrap().unwrap().value, b"after");
    workload.finish();
}

#[test]
fn hung_server_calls_time_out_at_the_deadline_and_recover_when_it_wakes() {
    let server = MemcachedServer::start();
    let timeout = Duration::from_millis(100);
    let mc = MemcachedStore::connect(MemcachedOptions::new(server.addr()).timeout(timeout)).unwrap();
    mc.set("k", b"v", None).unwrap();
    server.pause();
    let mut took: Vec<Duration> = (0..5)
        .map(|call| {
            let started = Instant::now();
            let result = if call % 2 == 0 {
                mc.get("k").map(|_| ())
            } else {
                mc.set("k", b"w", None)
            };
            assert!(result.is_err(), "{result:?}");
            started.elapsed()
        })
        .collect();
    took.sort();
    // Every call ends near its deadline: the median within 50 ms of it (a retry, or a deadline
    // per read rather than per call, would double it), and none hung (a test thread that the
    // busy CI machine does not schedule for a while may take longer once, never a second).
    assert!(took[2] <= timeout + Duration::from_millis(50), "{took:?}");
    assert!(took[4] <= timeout + Duration::from_secs(1), "{took:?}");
    server.resume();
    let started = Instant::now();
    loop {
        match mc.get("k") {
            Ok(Some(entry)) => {
                // Never a reply meant for another call: the value is one we wrote.
                assert!(entry.value == b"v" || entry.value == b"w", "{:?}", entry.value);
                break;
            }
            // The sets of "w" timed out, so they are in doubt: once they have run, the key is
            // deleted if it holds "w" (`memcached/doubt.rs`), and a miss answers for it.
            Ok(None) => break,
            Err(_) => {
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "no recovery after the server woke"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    support::wait_until("the sets in doubt to settle", || mc.writes_in_doubt() == 0);
    let settled = mc.get("k").unwrap();
    assert!(
        settled.as_ref().is_none_or(|entry| entry.value == b"v"),
        "a value written in doubt stayed: {settled:?}"
    );
}

#[test]
fn set_each_is_one_pipelined_batch_per_host_not_one_reply_per_key() {
    let server = MemcachedServer::start();
    let mc = store(&server, "each:");
    let values: Vec<(String, Vec<u8>)> = (0..1_000)
        .map(|i| (format!("k{i}"), format!("v{i}").into_bytes()))
        .collect();
    let items: Vec<(&str, &[u8], Option<Duration>)> = values
        .iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let ttl = (i % 2 == 0).then(|| Duration::from_secs(60 + i as u64));
            (k.as_str(), v.as_slice(), ttl)
        })
        .collect();
    // memcached counts what it writes back to clients: one key at a time, every `set` is
    // answered; in a batch only the closing `noop` is (24 bytes).
    let written = || server.stat("bytes_written");
    let sets = || server.stat("cmd_set");
    // What reading the stats writes by itself, to take off each figure.
    let stats_reply = {
        let before = written();
        written() - before
    };
    let (bytes_before, sets_before) = (written(), sets());
    mc.set_each(&items).unwrap();
    let batch_bytes = (written() - bytes_before).saturating_sub(2 * stats_reply);
    assert_eq!(sets() - sets_before, 1_000, "every item was sent");
    let bytes_before = written();
    for (key, value, ttl) in &items {
        mc.set(key, value, *ttl).unwrap();
    }
    let one_by_one_bytes = (written() - bytes_before).saturating_sub(stats_reply);
    assert!(
        batch_bytes < 1_000 && one_by_one_bytes >= 1_000 * 24,
        "set_each wrote {batch_bytes} reply bytes, 1 000 single sets {one_by_one_bytes}"
    );
    // Each item kept its own TTL and its value.
    let got = mc
        .get_many(&items.iter().map(|(k, _, _)| *k).collect::<Vec<_>>())
        .unwrap();
    for ((_, value, ttl), entry) in items.iter().zip(&got) {
        let entry = entry.as_ref().unwrap();
        assert_eq!(&entry.value, value);
        assert_eq!(entry.expires_at.is_some(), ttl.is_some());
    }
    // A refused item (over the item limit) is named, and the connection stays usable.
    let big = vec![0u8; 2 * 1024 * 1024];
    let err = mc
        .set_each(&[("ok", b"1", None), ("too-big", &big, None)])
        .unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, .. } if key == "too-big"),
        "{err}"
    );
    mc.set_each(&[("after", b"2", None)]).unwrap();
    assert_eq!(mc.get("after").unwrap().unwrap().value, b"2");
}

/// A write-behind flush goes through the breaker's `Guarded` to `set_each_async`: one pipelined
/// batch (a single reply, the closing `noop`), and each item expires at its own TTL on the server.
#[test]
fn set_each_async_through_the_breaker_is_one_batch_and_each_item_expires_at_its_own_ttl() {
    let server = MemcachedServer::start();
    let breaker = Arc::new(CircuitBreaker::new(5, Duration::from_secs(1)));
    let mc = Guarded::new("memcached", store(&server, "own-ttl:"), breaker);
    let values: Vec<(String, Option<Duration>)> = (0..300)
        .map(|i| {
            let ttl = match i % 3 {
                0 => Some(Duration::from_secs(1)),
                1 => Some(Duration::from_secs(120)),
                _ => None,
            };
            (format!("k{i}"), ttl)
        })
        .collect();
    let items: Vec<(&str, &[u8], Option<Duration>)> = values
        .iter()
        .map(|(k, ttl)| (k.as_str(), k.as_bytes(), *ttl))
        .collect();
    let written = || server.stat("bytes_written");
    let stats_reply = {
        let before = written();
        written() - before
    };
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let before = written();
    let writing = Instant::now();
    rt.block_on(mc.set_each_async(&items)).unwrap();
    let batch_bytes = (written() - before).saturating_sub(stats_reply);
    assert!(
        batch_bytes < 300 * 24,
        "set_each_async wrote {batch_bytes} reply bytes: one reply per key, not one batch"
    );
    // Every item is there, with an expiry only where it was given one. A 1 s item may be gone
    // once its second has passed since the write: reading 300 keys one by one outlasted it on a
    // loaded machine.
    for (key, _, ttl) in &items {
        let Some(entry) = mc.get(key).unwrap() else {
            assert!(
                *ttl == Some(Duration::from_secs(1)) && writing.elapsed() >= Duration::from_secs(1),
                "{key} missing ({ttl:?}, {:?} after the write began)",
                writing.elapsed()
            );
            continue;
        };
        assert_eq!(entry.value, key.as_bytes());
        assert_eq!(entry.expires_at.is_some(), ttl.is_some(), "{key}");
    }
    // The server drops the 1 s items by itself, and only them.
    let short: Vec<&str> = items
        .iter()
        .filter(|i| i.2 == Some(Duration::from_secs(1)))
        .map(|i| i.0)
        .collect();
    let started = Instant::now();
    while short.iter().any(|k| raw_get(&server, mc.inner(), k).is_some()) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "memcached kept 1 s items for 5 s: sent with another item's TTL?"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for (key, _, ttl) in &items {
        let held = raw_get(&server, mc.inner(), key).is_some();
        assert_eq!(held, *ttl != Some(Duration::from_secs(1)), "{key} ({ttl:?})");
    }
}

#[test]
fn many_caller_threads_reuse_their_connections_instead_of_opening_one_per_call() {
    let server = MemcachedServer::start();
    let mc = Arc::new(store(&server, "threads:"));
    mc.set("k", b"v", None).unwrap();
    let before = server.stat("total_connections");
    std::thread::scope(|s| {
        for _ in 0..16 {
            let mc = mc.clone();
            s.spawn(move || {
                for _ in 0..200 {
                    assert_eq!(mc.get("k").unwrap().unwrap().value, b"v");
                }
            });
        }
    });
    // At most one connection per thread (plus the `stat` client's own), not one per call.
    let opened = server.stat("total_connections") - before;
    assert!(
        opened <= 16 + 2,
        "{opened} connections opened for 3 200 calls from 16 threads"
    );
}

/// With several hosts and no node breakers (a direct user's default), a blocking call runs host
/// after host within one deadline. A host reached once it has passed (an earlier one hung) is not
/// asked: a pooled connection taken for it failed its first write at once and was closed, so the
/// healthy host lost a connection at every such call, and the next call connected anew.
#[test]
fn a_host_reached_after_the_deadline_keeps_its_pooled_connection() {
    let (hung, healthy) = (MemcachedServer::start(), MemcachedServer::start());
    let proxy = proxy::TcpProxy::start(&hung.addr());
    let store = MemcachedStore::connect(
        MemcachedOptions::with_hosts([proxy.addr(), healthy.addr()]).timeout(Duration::from_millis(100)),
    )
    .unwrap();
    let on = |host: usize| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| store.server_key(k).1 == host)
            .unwrap()
    };
    let (a, b) = (on(0), on(1));
    store.set(&a, b"v", None).unwrap();
    store.set(&b, b"v", None).unwrap();
    let before = healthy.stat("total_connections");

    // The hung host's connection goes silent (a new one would be served).
    proxy.freeze();
    assert!(store.get_many(&[a.as_str(), b.as_str()]).is_err());
    assert_eq!(store.get_many(&[a.as_str(), b.as_str()]).unwrap().len(), 2);
    assert_eq!(store.get(&b).unwrap().unwrap().value, b"v");
    assert_eq!(
        healthy.stat("total_connections"),
        before + 1,
        "the healthy host was connected to anew (one is `stat`'s own)"
    );
}

/// A memcached at its connection limit (`-c`) answers a new connection with a line of text and
/// closes it. The error named the host but said only "reply starts with byte 0x45": it now says
/// the host is at its connection limit and what to do.
#[test]
fn a_server_at_its_connection_limit_says_so_and_what_to_do() {
    use std::io::{Read, Write};
    let server = MemcachedServer::start_with(&["-c", "20"]);
    let mc = store(&server, "full:");
    // Connections held open until the server turns one away (it keeps some of `-c` for itself).
    let mut held = Vec::new();
    loop {
        assert!(held.len() < 20, "memcached -c 20 took {} connections", held.len());
        let mut conn = std::net::TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        conn.write_all(b"version\r\n").unwrap();
        let mut line = [0u8; 64];
        let n = conn.read(&mut line).unwrap();
        if line[..n].starts_with(b"ERROR Too many open connections") {
            break;
        }
        assert!(
            line[..n].starts_with(b"VERSION"),
            "{:?}",
            String::from_utf8_lossy(&line[..n])
        );
        held.push(conn);
    }
    // A blocking call opens a connection of its own (the start-up check's was an async one).
    let err = mc.get("k").unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Backend { .. })
            && text.contains(&server.addr())
            && text.contains("connection limit")
            && text.contains("-c"),
        "{text}"
    );
    drop(held);
}
