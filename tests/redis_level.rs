//! `RedisStore` against a real standalone `redis-server`: round trips, TTLs (PX on the server and
//! the expiry in the envelope), batch calls (one `MGET` for `get_many`), prefix isolation, the
//! envelope layout written by hand, construction errors (unreachable host, wrong password, bad
//! URL), and the sync API inside a runtime and the async API. A server that is killed or hangs:
//! `tests/redis_outages.rs`. A connection that goes silent, whose server is demoted, or that a
//! restart closed, is left for a new one: `tests/redis_connection_replacement.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::RedisServer;
use uno_cache::distributed::envelope;
use uno_cache::{DistributedStorage, Error, ManualClock, RedisOptions, RedisStore, Served, Storage};

fn store(server: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::connect(RedisOptions::new(server.addr()).prefix(prefix)).unwrap()
}

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

#[test]
fn round_trip_set_get_delete() {
    let server = RedisServer::start();
    let redis = store(&server, "t:");
    assert_eq!(redis.name(), "redis");
    assert_eq!(redis.get("k").unwrap(), None);
    redis.set("k", b"value one", None).unwrap();
    let entry = redis.get("k").unwrap().unwrap();
    assert_eq!(entry.value, b"value one");
    assert_eq!(entry.expires_at, None);
    redis.set("k", b"", None).unwrap();
    assert_eq!(
        redis.get("k").unwrap().unwrap().value,
        b"",
        "empty values are values"
    );
    assert!(redis.delete("k").unwrap());
    assert!(!redis.delete("k").unwrap());
    assert_eq!(redis.get("k").unwrap(), None);
    // Stored under the prefix, inside an envelope.
    redis.set("raw", b"abc", None).unwrap();
    let raw: Vec<u8> = redis::cmd("GET").arg("t:raw").query(&mut server.raw()).unwrap();
    assert_eq!(raw.len(), envelope::HEADER_LEN + 3);
    assert_eq!(&raw[envelope::HEADER_LEN..], b"abc");
}

#[test]
fn ttl_is_sent_as_px_and_returned_from_the_envelope() {
    let server = RedisServer::start();
    let redis = store(&server, "t:");
    let before = now_ms();
    redis.set("k", b"v", Some(Duration::from_secs(60))).unwrap();
    let after = now_ms();
    let pttl: i64 = redis::cmd("PTTL").arg("t:k").query(&mut server.raw()).unwrap();
    assert!((59_000..=60_000).contains(&pttl), "PTTL {pttl}");
    let expires = redis.get("k").unwrap().unwrap().expires_at.unwrap();
    let expires_ms = u64::try_from(expires.duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    assert!((before + 60_000..=after + 60_000).contains(&expires_ms));

    // No TTL: no PX, and no expiry in the envelope.
    redis.set("forever", b"v", None).unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("t:forever")
        .query(&mut server.raw())
        .unwrap();
    assert_eq!(pttl, -1);

    // A zero TTL is refused before anything is sent.
    assert!(matches!(
        redis.set("z", b"v", Some(Duration::ZERO)),
        Err(Error::ZeroTtl { .. })
    ));
    assert_eq!(redis.get("z").unwrap(), None);
}

#[test]
fn server_expires_the_key_when_px_runs_out() {
    let server = RedisServer::start();
    let redis = store(&server, "t:");
    // Timed from before the set: the server's 80 ms start when it runs the SET, after this, and
    // a thread descheduled between the set's return and a later start (a loaded machine) saw
    // the key go "too early".
    let started = Instant::now();
    redis.set("short", b"v", Some(Duration::from_millis(80))).unwrap();
    // Wait for the event itself: the server no longer has the key.
    loop {
        let exists: i64 = redis::cmd("EXISTS")
            .arg("t:short")
            .query(&mut server.raw())
            .unwrap();
        if exists == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "PX was not honoured");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        started.elapsed() >= Duration::from_millis(60),
        "expired too early"
    );
    assert_eq!(redis.get("short").unwrap(), None);
}

#[test]
fn envelope_expiry_is_honoured_even_while_the_server_still_holds_the_key() {
    let server = RedisServer::start();
    let clock = ManualClock::new(now_ms());
    let redis = RedisStore::connect(
        RedisOptions::new(server.addr())
            .prefix("t:")
            .clock(Arc::new(clock.clone())),
    )
    .unwrap();
    redis.set("k", b"v", Some(Duration::from_secs(3600))).unwrap();
    assert!(redis.get("k").unwrap().is_some());
    clock.advance(Duration::from_secs(3600));
    assert_eq!(redis.get("k").unwrap(), None, "expired by the envelope");
    assert_eq!(redis.get_many(&["k"]).unwrap(), vec![None]);
    let exists: i64 = redis::cmd("EXISTS").arg("t:k").query(&mut server.raw()).unwrap();
    assert_eq!(exists, 1, "the server still has it (its clock did not move)");
}

#[test]
fn default_ttl_applies_when_set_has_none() {
    let server = RedisServer::start();
    let redis =
        RedisStore::connect(RedisOptions::new(server.addr()).default_ttl(Some(Duration::from_secs(30))))
            .unwrap();
    redis.set("k", b"v", None).unwrap();
    let pttl: i64 = redis::cmd("PTTL").arg("k").query(&mut server.raw()).unwrap();
    assert!((29_000..=30_000).contains(&pttl), "PTTL {pttl}");
    assert!(redis.get("k").unwrap().unwrap().expires_at.is_some());
}

#[test]
fn hand_built_envelope_decodes_to_value_and_expiry() {
    // Built from the documented layout, not with `envelope::encode`.
    let expires_at_ms: u64 = now_ms() + 120_000;
    let mut bytes = vec![0xF5, 0x75, 1, 0b0000_0001];
    bytes.extend_from_slice(&expires_at_ms.to_le_bytes());
    bytes.extend_from_slice(b"hand made");
    let server = RedisServer::start();
    redis::cmd("SET")
        .arg("t:hand")
        .arg(&bytes)
        .exec(&mut server.raw())
        .unwrap();
    let redis = store(&server, "t:");
    let entry = redis.get("hand").unwrap().unwrap();
    assert_eq!(entry.value, b"hand made");
    assert_eq!(
        entry.expires_at,
        Some(UNIX_EPOCH + Duration::from_millis(expires_at_ms))
    );

    // No expiry: flags 0, expiry field 0.
    let mut bytes = vec![0xF5, 0x75, 1, 0];
    bytes.extend_from_slice(&0u64.to_le_bytes());
    bytes.extend_from_slice(b"forever");
    redis::cmd("SET")
        .arg("t:hand")
        .arg(&bytes)
        .exec(&mut server.raw())
        .unwrap();
    assert_eq!(redis.get("hand").unwrap().unwrap().expires_at, None);
}

#[test]
fn values_without_an_envelope_are_a_typed_error_never_garbage() {
    let server = RedisServer::start();
    redis::cmd("SET")
        .arg("t:foreign")
        .arg("written by another program")
        .exec(&mut server.raw())
        .unwrap();
    let redis = store(&server, "t:");
    let err = redis.get("foreign").unwrap_err();
    assert!(
        matches!(err, Error::InvalidEnvelope { level: "redis", ref key, .. } if key == "foreign"),
        "{err}"
    );
    assert!(matches!(
        redis.get_many(&["foreign"]),
        Err(Error::InvalidEnvelope { .. })
    ));
}

/// A `get_many` of `["a", "foreign", "c", "missing"]` where `foreign` holds bytes without our
/// envelope: only that key fails; the others are in the error.
fn only_the_unreadable_key_fails(level: &str, result: uno_cache::Result<Vec<Option<uno_cache::Entry>>>) {
    let Err(Error::PartialBatch(partial)) = result else {
        panic!("expected a partial batch, got {result:?}");
    };
    assert_eq!(
        (partial.op, partial.total, &partial.failed[..]),
        ("get_many", 4, &[1][..])
    );
    assert!(
        matches!(partial.cause, Error::InvalidEnvelope { level: l, ref key, .. } if l == level && key == "foreign"),
        "{:?}",
        partial.cause
    );
    let Served::Entries(entries) = &partial.served else {
        panic!("{:?}", partial.served)
    };
    let values: Vec<Option<&[u8]>> = entries.iter().map(|e| e.as_ref().map(|e| &e.value[..])).collect();
    assert_eq!(values, [Some(&b"1"[..]), None, Some(&b"3"[..]), None]);
}

#[test]
fn one_unreadable_value_fails_only_its_key_of_a_get_many() {
    // It failed the whole MGET: the keys read with it were lost to the caller.
    let server = RedisServer::start();
    redis::cmd("SET")
        .arg("t:foreign")
        .arg("written by another program")
        .exec(&mut server.raw())
        .unwrap();
    let redis = store(&server, "t:");
    redis.set("a", b"1", None).unwrap();
    redis.set("c", b"3", None).unwrap();
    let keys = ["a", "foreign", "c", "missing"];
    only_the_unreadable_key_fails("redis", redis.get_many(&keys));
    only_the_unreadable_key_fails("redis", support::block_on(redis.get_many_async(&keys)));
}

#[test]
fn a_key_of_another_redis_type_is_a_bad_value_not_a_failed_server() {
    // WRONGTYPE: the server answered. As a failure (Backend) it counted against the breaker,
    // and a few reads of one such key opened it for every key.
    let server = RedisServer::start();
    redis::cmd("HSET")
        .arg("t:hash")
        .arg("field")
        .arg("value")
        .exec(&mut server.raw())
        .unwrap();
    let redis = store(&server, "t:");
    let err = redis.get("hash").unwrap_err();
    assert!(
        matches!(err, Error::InvalidEnvelope { level: "redis", ref key, .. } if key == "hash"),
        "{err}"
    );
    let err = support::block_on(redis.get_async("hash")).unwrap_err();
    assert!(
        matches!(err, Error::InvalidEnvelope { level: "redis", ref key, .. } if key == "hash"),
        "{err}"
    );
}

#[test]
fn batch_calls_keep_order_and_count_deletes() {
    let server = RedisServer::start();
    let redis = store(&server, "b:");
    let keys: Vec<String> = (0..100).map(|i| format!("key:{i}")).collect();
    let values: Vec<Vec<u8>> = (0..100).map(|i| format!("value {i}").into_bytes()).collect();
    let items: Vec<(&str, &[u8])> = keys
        .iter()
        .map(String::as_str)
        .zip(values.iter().map(Vec::as_slice))
        .collect();
    redis.set_many(&items, Some(Duration::from_secs(60))).unwrap();

    let mut wanted: Vec<&str> = keys.iter().map(String::as_str).collect();
    wanted.insert(50, "missing");
    let got = redis.get_many(&wanted).unwrap();
    assert_eq!(got.len(), 101);
    assert_eq!(got[50], None);
    for (i, entry) in got.iter().enumerate().filter(|(i, _)| *i != 50) {
        let n = if i < 50 { i } else { i - 1 };
        let entry = entry.as_ref().unwrap();
        assert_eq!(entry.value, values[n]);
        assert!(entry.expires_at.is_some());
    }
    assert_eq!(redis.get_many(&[]).unwrap(), vec![]);

    let to_delete: Vec<&str> = keys[..10].iter().map(String::as_str).chain(["missing"]).collect();
    assert_eq!(redis.delete_many(&to_delete).unwrap(), 10);
    assert_eq!(redis.get("key:0").unwrap(), None);
    assert!(redis.get("key:10").unwrap().is_some());
    assert_eq!(redis.delete_many(&[]).unwrap(), 0);
}

#[test]
fn set_each_gives_every_key_its_own_ttl() {
    let server = RedisServer::start();
    let redis = store(&server, "e:");
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8], Option<Duration>)> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            (
                k.as_str(),
                &b"v"[..],
                Some(Duration::from_secs(100 + i as u64 * 100)),
            )
        })
        .collect();
    redis.set_each(&items).unwrap();
    let mut raw = server.raw();
    for (i, key) in keys.iter().enumerate() {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("e:{key}"))
            .query(&mut raw)
            .unwrap();
        let want = (100 + i as i64 * 100) * 1000;
        assert!(
            pttl > want - 5_000 && pttl <= want,
            "{key}: PTTL {pttl}, want about {want}"
        );
        let entry = redis.get(key).unwrap().unwrap();
        assert_eq!(entry.value, b"v");
    }
}

#[test]
fn get_many_of_100_keys_is_one_mget() {
    let server = RedisServer::start();
    let redis = store(&server, "m:");
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    let sets_before = server.command_calls("set");
    redis.set_many(&items, None).unwrap();
    assert_eq!(
        server.command_calls("set") - sets_before,
        100,
        "one SET per item, pipelined"
    );

    let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
    let mget_before = server.command_calls("mget");
    let get_before = server.command_calls("get");
    let got = redis.get_many(&refs).unwrap();
    assert!(got.iter().all(Option::is_some));
    assert_eq!(server.command_calls("mget") - mget_before, 1);
    assert_eq!(server.command_calls("get") - get_before, 0);
}

#[test]
fn prefixes_isolate_stores_on_one_server() {
    let server = RedisServer::start();
    let a = store(&server, "app-a:");
    let b = store(&server, "app-b:");
    // Glob characters in a prefix match only themselves.
    let c = store(&server, "app-*:");
    a.set("shared", b"from a", None).unwrap();
    b.set("shared", b"from b", None).unwrap();
    c.set("shared", b"from c", None).unwrap();
    a.set("only-a", b"x", None).unwrap();
    redis::cmd("SET")
        .arg("unrelated")
        .arg("other program")
        .exec(&mut server.raw())
        .unwrap();

    assert_eq!(a.get("shared").unwrap().unwrap().value, b"from a");
    assert_eq!(b.get("shared").unwrap().unwrap().value, b"from b");
    assert_eq!(b.get("only-a").unwrap(), None);

    let size = a.size().unwrap();
    assert_eq!(size.items, 2);
    let expected_bytes =
        ("app-a:shared".len() + envelope::HEADER_LEN + 6 + "app-a:only-a".len() + envelope::HEADER_LEN + 1)
            as u64;
    assert_eq!(size.bytes, expected_bytes);
    assert_eq!(c.size().unwrap().items, 1, "`app-*:` must not match `app-a:`");

    c.clear().unwrap();
    assert_eq!(
        a.size().unwrap().items,
        2,
        "clear of `app-*:` left `app-a:` alone"
    );
    a.clear().unwrap();
    assert_eq!(a.size().unwrap().items, 0);
    assert_eq!(a.get("shared").unwrap(), None);
    assert_eq!(b.get("shared").unwrap().unwrap().value, b"from b");
    let unrelated: String = redis::cmd("GET")
        .arg("unrelated")
        .query(&mut server.raw())
        .unwrap();
    assert_eq!(unrelated, "other program");
}

#[test]
fn size_and_clear_walk_more_than_one_scan_batch() {
    let server = RedisServer::start();
    let redis = store(&server, "many:");
    let keys: Vec<String> = (0..2_500).map(|i| format!("{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"12345"[..])).collect();
    redis.set_many(&items, None).unwrap();
    assert_eq!(redis.size().unwrap().items, 2_500);
    redis.clear().unwrap();
    assert_eq!(redis.size().unwrap().items, 0);
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut server.raw()).unwrap();
    assert_eq!(dbsize, 0);
}

#[test]
fn empty_keys_are_refused() {
    let server = RedisServer::start();
    let redis = store(&server, "");
    assert!(matches!(redis.get(""), Err(Error::InvalidKey { .. })));
    assert!(matches!(redis.set("", b"v", None), Err(Error::InvalidKey { .. })));
    assert!(matches!(
        redis.get_many(&["a", ""]),
        Err(Error::InvalidKey { .. })
    ));
}

#[test]
fn keys_in_the_tag_sets_namespace_are_refused_by_every_call_naming_the_key() {
    let server = RedisServer::start();
    let redis = store(&server, "app:");
    let reserved = "uno-cache:tag:orders";
    let refused = |result: uno_cache::Result<()>, call: &str| match result {
        Err(e @ Error::InvalidKey { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(reserved) && text.contains("tag sets"),
                "{call}: {text}"
            );
            assert!(e.is_bad_input(), "{call}: {e:?}");
        }
        other => panic!("{call} of a reserved key: {other:?}"),
    };
    refused(redis.set(reserved, b"v", None), "set");
    refused(redis.get(reserved).map(drop), "get");
    refused(redis.delete(reserved).map(drop), "delete");
    refused(
        redis.set_many(&[("ok", &b"v"[..]), (reserved, b"v")], None),
        "set_many",
    );
    refused(redis.get_many(&["ok", reserved]).map(drop), "get_many");
    refused(redis.delete_many(&["ok", reserved]).map(drop), "delete_many");
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut server.raw()).unwrap();
    assert_eq!(dbsize, 0, "nothing of a refused batch was written");
    // Only the namespace itself is kept: keys that merely start alike are values.
    for key in ["uno-cache:tags", "uno-cache:tag", "uno-cache:taG:x"] {
        redis.set(key, b"v", None).unwrap();
        assert_eq!(redis.get(key).unwrap().unwrap().value, b"v", "{key}");
    }
}

#[test]
fn size_counts_the_values_and_not_keys_of_other_types_under_the_prefix() {
    let server = RedisServer::start();
    let redis = store(&server, "app:");
    redis.set("a", b"12345", None).unwrap();
    // A tag's set, as the manager writes it, and another program's list, under the prefix.
    redis::cmd("ZADD")
        .arg("app:uno-cache:tag:t")
        .arg(1)
        .arg("a")
        .exec(&mut server.raw())
        .unwrap();
    redis::cmd("RPUSH")
        .arg("app:list")
        .arg("x")
        .exec(&mut server.raw())
        .unwrap();
    let size = redis.size().unwrap();
    assert_eq!(size.items, 1, "{size:?}");
    assert_eq!(size.bytes, ("app:a".len() + envelope::HEADER_LEN + 5) as u64);
}

#[test]
fn unreachable_host_fails_at_construction_within_the_connect_timeout() {
    // Each kind of host three times: the median attempt must end before twice the connect
    // timeout (a retry would take twice as long each time), and none a second past it (one
    // attempt may wait for a busy CI machine to schedule the test; a bound of 50 ms on a single
    // attempt failed there, and so did 50 ms on the median, at 255 ms of a 200 ms timeout, with
    // the machine loaded).
    let attempts = |timeout: Duration, connect: &dyn Fn() -> Error| {
        let mut errors = Vec::new();
        let mut took: Vec<Duration> = (0..3)
            .map(|_| {
                let started = Instant::now();
                errors.push(connect());
                started.elapsed()
            })
            .collect();
        took.sort();
        assert!(took[1] < timeout * 2, "{took:?}");
        assert!(took[2] < timeout + Duration::from_secs(1), "{took:?}");
        errors.pop().unwrap()
    };
    // A port nobody listens on: refused at once.
    let port = support::free_port();
    let timeout = Duration::from_millis(300);
    let err = attempts(timeout, &|| {
        RedisStore::connect(RedisOptions::new(format!("127.0.0.1:{port}")).connect_timeout(timeout))
            .unwrap_err()
    });
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { op: "connect", .. }), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "names the host: {text}"
    );
    assert!(
        text.contains("redis-server is running"),
        "says what to do: {text}"
    );

    // A host that never answers (a listener that is never accepted from and never replies).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let timeout = Duration::from_millis(200);
    let err = attempts(timeout, &|| {
        RedisStore::connect(RedisOptions::new(addr.to_string()).connect_timeout(timeout)).unwrap_err()
    });
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[test]
fn wrong_or_missing_password_fails_at_construction() {
    let server = RedisServer::with_password("right-pass");
    let err = RedisStore::connect(RedisOptions::new(server.addr()).password("wrong-pass")).unwrap_err();
    let text = err.to_string();
    // A refused password is a misconfiguration, not an outage: no retry can fix it.
    assert!(
        matches!(err, Error::Misconfigured { level: "redis", .. }),
        "{text}"
    );
    assert!(text.contains("authentication failed"), "{text}");
    assert!(text.contains(&server.addr()), "{text}");
    assert!(!text.contains("wrong-pass"), "never print the password: {text}");

    let err = RedisStore::connect(RedisOptions::new(server.addr())).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");

    let ok = RedisStore::connect(RedisOptions::new(server.addr()).password("right-pass")).unwrap();
    ok.set("k", b"v", None).unwrap();
    let ok = RedisStore::connect(RedisOptions::new(format!(
        "redis://:right-pass@{}/",
        server.addr()
    )))
    .unwrap();
    assert_eq!(ok.get("k").unwrap().unwrap().value, b"v");
}

#[test]
fn bad_urls_and_options_are_config_errors() {
    for bad in [
        "redis://",
        "http://127.0.0.1:6379",
        "127.0.0.1:notaport",
        "redis://127.0.0.1:6379/x",
    ] {
        let err = RedisStore::connect(RedisOptions::new(bad)).unwrap_err();
        assert!(matches!(err, Error::Config { .. }), "{bad}: {err}");
    }
    let err = RedisStore::connect(RedisOptions::with_hosts(["127.0.0.1:1", "127.0.0.1:2"])).unwrap_err();
    assert!(err.to_string().contains("cluster = true"), "{err}");
    let err = RedisStore::connect(RedisOptions::with_hosts(Vec::<String>::new())).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
    let err = RedisStore::connect(RedisOptions::new("127.0.0.1:1").timeout(Duration::ZERO)).unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err}");
}

#[test]
fn sync_api_inside_a_runtime_and_async_api_both_work() {
    let server = RedisServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let addr = server.addr();
    rt.block_on(async move {
        let redis = RedisStore::connect_async(RedisOptions::new(addr).prefix("a:"))
            .await
            .unwrap();
        // Blocking calls from inside the runtime: no panic.
        redis.set("sync", b"1", None).unwrap();
        assert_eq!(redis.get("sync").unwrap().unwrap().value, b"1");
        // Async calls.
        redis
            .set_async("async", b"2", Some(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(redis.get_async("async").await.unwrap().unwrap().value, b"2");
        let got = redis.get_many_async(&["sync", "async", "none"]).await.unwrap();
        assert_eq!(got.iter().filter(|e| e.is_some()).count(), 2);
        redis
            .set_many_async(&[("x", &b"x"[..]), ("y", &b"y"[..])], None)
            .await
            .unwrap();
        assert_eq!(redis.delete_many_async(&["x", "y", "none"]).await.unwrap(), 2);
        assert!(redis.delete_async("sync").await.unwrap());
        // Dropped inside the runtime: no panic either.
        drop(redis);
    });
}

#[test]
fn async_calls_do_not_need_the_callers_runtime_to_have_timers() {
    let server = RedisServer::start();
    let redis = store(&server, "");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        redis.set_async("k", b"v", None).await.unwrap();
        assert!(redis.get_async("k").await.unwrap().is_some());
    });
}

#[cfg(feature = "tls")]
#[test]
fn rediss_with_a_private_ca_round_trips_and_an_unknown_ca_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let ca = std::fs::read(certs.path().join("ca.crt")).unwrap();
    let redis = RedisStore::connect(RedisOptions::new(url.clone()).tls_root_cert(ca)).unwrap();
    redis.set("k", b"over tls", Some(Duration::from_secs(5))).unwrap();
    assert_eq!(redis.get("k").unwrap().unwrap().value, b"over tls");
    // Without our CA the server's certificate is not trusted: a clear error at construction,
    // a misconfiguration (retrying cannot fix it), not an outage.
    let err =
        RedisStore::connect(RedisOptions::new(url).connect_timeout(Duration::from_secs(1))).unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("rediss://127.0.0.1:{}", server.port)),
        "{err}"
    );
}

/// A key call's deadline too long to add to an instant (`Duration::MAX`, "no deadline"): a call
/// that connects anew to a host given by name computed `started + timeout` and panicked in the
/// caller's thread.
#[test]
fn a_timeout_too_long_to_add_to_an_instant_is_no_panic_for_a_host_given_by_name() {
    let server = RedisServer::start();
    let redis = RedisStore::connect(
        RedisOptions::new(format!("localhost:{}", server.port))
            .timeout(Duration::MAX)
            .connect_timeout(Duration::MAX)
            .admin_timeout(Duration::MAX),
    )
    .unwrap();
    redis.set("k", b"v", Some(Duration::from_secs(5))).unwrap();
    assert_eq!(redis.get("k").unwrap().unwrap().value, b"v");
    assert!(redis.delete("k").unwrap());
}
