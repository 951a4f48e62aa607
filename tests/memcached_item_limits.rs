//! `MemcachedStore` and the item size limit, against real `memcached` processes: a value over
//! `max_item_size` is refused before it is sent (`ValueTooLarge`), the largest accepted one
//! really fits, and a server whose own limit (`-I`) is smaller refuses it: alone, with the limit
//! that server gave and a miss left where its old value was; in a batch, as a `PartialBatch`
//! naming every refused item, and apart from the items of a host that was not reached.

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
use uno_cache::distributed::{envelope, NodeBreakers};
use uno_cache::{DistributedStorage, Error, ManualClock, MemcachedOptions, MemcachedStore, Served, Storage};

/// Every call's deadline here, for calls that move megabytes: these tests are about what the
/// servers refuse, not about time, and the default 100 ms ran out on a loaded machine (a call
/// that times out is an outage, not the refusal asserted).
const UNHURRIED: Duration = Duration::from_secs(30);

/// `hosts` with [`UNHURRIED`] calls.
fn options<I: IntoIterator<Item = String>>(hosts: I) -> MemcachedOptions {
    MemcachedOptions::with_hosts(hosts).timeout(UNHURRIED)
}

fn store(server: &MemcachedServer, prefix: &str) -> MemcachedStore {
    MemcachedStore::connect(options([server.addr()]).prefix(prefix)).unwrap()
}

#[test]
fn oversized_values_are_refused_naming_the_key_and_the_largest_accepted_fits() {
    let server = MemcachedServer::start();
    let mc = store(&server, "big:");
    let err = mc.set("photo", &vec![7u8; 1024 * 1024 + 1], None).unwrap_err();
    let Error::ValueTooLarge { key, len, max, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(key, "photo");
    assert_eq!(*len, 1024 * 1024 + 1);
    assert!(err.to_string().contains("photo"));
    // The largest value we accept for this key must really fit on a default (-I 1m) server.
    let largest = vec![9u8; *max];
    mc.set("photo", &largest, None).unwrap();
    assert_eq!(mc.get("photo").unwrap().unwrap().value.len(), *max);
    assert!(matches!(
        mc.set("photo", &vec![0u8; max + 1], None),
        Err(Error::ValueTooLarge { .. })
    ));
    // And the limit is tight: one byte more really is refused by the server.
    let (mapped, _) = mc.server_key("photo");
    let one_more = vec![0u8; envelope::HEADER_LEN + max + 1];
    assert!(
        server.raw().set(&mapped, one_more.as_slice(), 0).is_err(),
        "our limit is stricter than the server's"
    );
    // A batch with one oversized value sends nothing.
    let items: Vec<(&str, &[u8])> = vec![
        ("small", b"s"),
        ("huge", &largest[..]),
        ("huge2", &[0u8; 2 * 1024 * 1024][..]),
    ];
    assert!(matches!(mc.set_many(&items, None), Err(Error::ValueTooLarge { ref key, .. }) if key == "huge2"));
    assert_eq!(mc.get("small").unwrap(), None);
}

#[test]
fn a_server_with_a_smaller_item_limit_is_reported_as_value_too_large() {
    let server = MemcachedServer::start_with(&["-I", "512k"]);
    let mc = store(&server, "");
    // Our limit says 1 MiB; the server's says 512 KiB.
    let err = mc.set("k", &vec![1u8; 700 * 1024], None).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, .. } if key == "k"),
        "{err}"
    );
    // The connection is still usable afterwards.
    mc.set("k", b"small", None).unwrap();
    assert_eq!(mc.get("k").unwrap().unwrap().value, b"small");
}

/// A value the server refuses itself (its `-I` below `max_item_size`, so our own check passes)
/// is reported with that server's limit (from the `item_size_max` it reported at connect), not
/// a figure just under the value; and memcached dropped the key's previous value when it
/// refused the set, so the key reads as a miss, never as the older value.
#[test]
fn a_value_the_server_refuses_reports_its_true_limit_and_leaves_no_old_value() {
    let server = MemcachedServer::start_with(&["-I", "1m"]);
    let mc = MemcachedStore::connect(options([server.addr()]).max_item_size(4 << 20)).unwrap();
    mc.set("k", b"previous", None).unwrap();
    let err = mc.set("k", &vec![7u8; 1_500_000], None).unwrap_err();
    let Error::ValueTooLarge {
        ref key, len, max, ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!((key.as_str(), len), ("k", 1_500_000));
    // -I 1m, less memcached's item header (59 bytes, see ITEM_OVERHEAD), the envelope and the key.
    let (mapped, _) = mc.server_key("k");
    assert_eq!(max, (1 << 20) - 59 - envelope::HEADER_LEN - mapped.len(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&server.addr()) && text.contains("-I") && text.contains("previous value"),
        "{text}"
    );
    assert_eq!(
        mc.get("k").unwrap(),
        None,
        "the refused set left the older value readable"
    );
    // The limit is the true one: the largest value fits, one byte more is refused.
    mc.set("k", &vec![1u8; max], None).unwrap();
    assert!(matches!(
        mc.set("k", &vec![1u8; max + 1], None),
        Err(Error::ValueTooLarge { max: m, .. }) if m == max
    ));
}

/// An item the server refuses as too large (its `-I` below the store's `max_item_size`, so our
/// own check passes) fails alone: the other items of the batch were stored, and the error says
/// which item was not. It failed the whole call, and the caller took the stored items for lost.
#[test]
fn an_item_the_server_refuses_as_too_large_fails_alone_in_a_batch() {
    let server = MemcachedServer::start_with(&["-I", "1m"]);
    let mc = MemcachedStore::connect(options([server.addr()]).prefix("big:").max_item_size(4 << 20)).unwrap();
    let big = vec![7u8; 1_500_000];
    let check = |result: uno_cache::Result<()>, op: &str| {
        let Err(Error::PartialBatch(partial)) = &result else {
            panic!("{op}: expected a partial batch, got {result:?}");
        };
        assert_eq!(
            (partial.op, partial.total, &partial.failed[..]),
            (op, 3, &[1][..])
        );
        assert!(
            matches!(partial.cause, Error::ValueTooLarge { ref key, .. } if key == "big"),
            "{:?}",
            partial.cause
        );
        assert!(result.as_ref().unwrap_err().is_bad_input());
    };
    check(
        mc.set_many(&[("a", &b"1"[..]), ("big", &big), ("c", b"3")], None),
        "set_many",
    );
    let got = mc.get_many(&["a", "big", "c"]).unwrap();
    let values: Vec<Option<&[u8]>> = got.iter().map(|e| e.as_ref().map(|e| &e.value[..])).collect();
    assert_eq!(values, [Some(&b"1"[..]), None, Some(&b"3"[..])]);
    let items = [
        ("a", &b"4"[..], None),
        ("big", &big[..], None),
        ("c", &b"6"[..], None),
    ];
    check(support::block_on(mc.set_each_async(&items)), "set_each");
    assert_eq!(mc.get("c").unwrap().unwrap().value, b"6");
    // Alone, the item is refused as before.
    let err = mc.set("big", &big, None).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, .. } if key == "big"),
        "{err}"
    );
}

/// A batch the server refuses in whole is a partial batch naming every item, as one it refuses
/// in part: its items were sent, and memcached dropped their previous values. A bare
/// `ValueTooLarge` from a batch is our own check, which refuses it before anything is sent; the
/// server's whole refusal read the same, although it had changed the keys.
#[test]
fn a_batch_the_server_refuses_whole_is_a_partial_batch_naming_every_item() {
    let server = MemcachedServer::start_with(&["-I", "1m"]);
    let mc = MemcachedStore::connect(options([server.addr()]).max_item_size(4 << 20)).unwrap();
    let big = vec![7u8; 1_500_000];
    let check = |result: uno_cache::Result<()>, op: &str| {
        let err = result.unwrap_err();
        assert!(err.is_bad_input(), "{err}");
        let Error::PartialBatch(partial) = &err else {
            panic!("{op}: expected a partial batch naming both items, got {err:?}");
        };
        assert_eq!(
            (
                partial.op,
                partial.total,
                &partial.failed[..],
                &partial.refused[..]
            ),
            (op, 2, &[0, 1][..], &[0, 1][..])
        );
        assert!(partial.unreached().is_empty());
        assert!(
            matches!(partial.cause, Error::ValueTooLarge { ref key, .. } if key == "big1"),
            "{:?}",
            partial.cause
        );
        assert!(err.to_string().contains("2 refused as bad input"), "{err}");
    };
    mc.set_many(&[("big1", &b"old1"[..]), ("big2", b"old2")], None)
        .unwrap();
    check(
        mc.set_many(&[("big1", &big[..]), ("big2", &big[..])], None),
        "set_many",
    );
    assert_eq!(mc.get_many(&["big1", "big2"]).unwrap(), [None, None]);
    let items = [("big1", &big[..], None), ("big2", &big[..], None)];
    check(support::block_on(mc.set_each_async(&items)), "set_each");
}

/// A batch with an item a server refuses as too large and an item whose host is down tells the
/// two apart: `refused` names the refused item, `unreached()` the other, which may be sent again
/// once its host is back. Both read as refused (the cause is bad input), so a caller dropped the
/// unreached write; and a batch that stored nothing was the refusal alone.
#[test]
fn a_batch_with_a_refused_item_and_an_unreached_host_names_each_kind() {
    let live = MemcachedServer::start_with(&["-I", "1m"]);
    // A port with no server behind it: its host is never reached.
    let hosts = [live.addr(), format!("127.0.0.1:{}", support::free_port())];
    let mc = MemcachedStore::connect(
        options(hosts.iter().cloned())
            .prefix("mixed:")
            .max_item_size(4 << 20)
            .node_breakers(Arc::new(NodeBreakers::new(
                "memcached",
                2,
                Duration::from_secs(60),
            ))),
    )
    .unwrap();
    let on = |host: usize, stem: &str| {
        (0..)
            .map(|i| format!("{stem}{i}"))
            .find(|k| mc.server_key(k).1 == host)
            .unwrap()
    };
    let (ok, big, gone) = (on(0, "ok"), on(0, "big"), on(1, "gone"));
    let value = vec![7u8; 1_500_000];
    let check = |result: uno_cache::Result<()>, op: &str, refused: &[usize], unreached: &[usize]| {
        let err = result.unwrap_err();
        assert!(err.is_bad_input(), "a refused item is bad input: {err}");
        let Error::PartialBatch(partial) = &err else {
            panic!("{op}: expected a partial batch, got {err:?}");
        };
        let mut failed = [refused, unreached].concat();
        failed.sort_unstable();
        assert_eq!((partial.op, &partial.failed), (op, &failed));
        assert_eq!(partial.refused, refused, "{op}: the refused items");
        assert_eq!(partial.unreached(), unreached, "{op}: the unreached items");
        assert!(
            matches!(partial.cause, Error::ValueTooLarge { ref key, .. } if *key == big),
            "{:?}",
            partial.cause
        );
        assert!(matches!(partial.served, Served::Written), "{:?}", partial.served);
        assert!(
            err.to_string().contains("1 refused as bad input, 1 not reached"),
            "{err}"
        );
    };
    check(
        mc.set_many(&[(&ok, &b"1"[..]), (&big, &value), (&gone, b"3")], None),
        "set_many",
        &[1],
        &[2],
    );
    assert_eq!(mc.get(&ok).unwrap().unwrap().value, b"1");
    // Nothing stored: still both kinds, not the refusal alone.
    check(
        mc.set_many(&[(&gone, &b"3"[..]), (&big, &value)], None),
        "set_many",
        &[1],
        &[0],
    );
    let items = [
        (gone.as_str(), &b"4"[..], None),
        (ok.as_str(), &b"5"[..], None),
        (big.as_str(), &value[..], None),
    ];
    check(
        support::block_on(mc.set_each_async(&items)),
        "set_each",
        &[2],
        &[0],
    );
    assert_eq!(mc.get(&ok).unwrap().unwrap().value, b"5");
    // A batch of one refused item: the refusal itself, as for a single `set`.
    let err = mc.set_many(&[(&big, &value[..])], None).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, .. } if *key == big),
        "{err:?}"
    );
}

/// A host that was down when the store started, and joins once its breaker's probe (`probe`,
/// a read of one of its keys) reaches it, reports its item limit as a host up at start does: a
/// value it refuses as too large gives its true limit. Its limit was asked at start only, so the
/// error said "item limit unknown" with `max` 0 for as long as the store ran.
fn a_host_down_at_start_reports_its_item_limit_once_probed(probe: impl Fn(&MemcachedStore, &str)) {
    let live = MemcachedServer::start_with(&["-I", "1m"]);
    let late_port = support::free_port();
    let hosts = [live.addr(), format!("127.0.0.1:{late_port}")];
    let clock = ManualClock::new(1_000_000);
    let cool_down = Duration::from_secs(5);
    let breakers = NodeBreakers::with_clock("memcached", 1, cool_down, Arc::new(clock.clone()));
    let mc = MemcachedStore::connect(
        options(hosts.iter().cloned())
            .prefix("rejoin:")
            .max_item_size(4 << 20)
            .node_breakers(Arc::new(breakers)),
    )
    .unwrap();
    let key = (0..)
        .map(|i| format!("late{i}"))
        .find(|k| mc.server_key(k).1 == 1)
        .unwrap();
    assert!(mc.get(&key).is_err(), "the host is down: its key fails fast");
    // memcached's default -I is 1m, as the live host's.
    let _late = MemcachedServer::start_on(late_port);
    clock.advance(cool_down);
    probe(&mc, &key);
    let err = mc.set(&key, &vec![7u8; 1_500_000], None).unwrap_err();
    let Error::ValueTooLarge { key: k, max, .. } = &err else {
        panic!("{err:?}")
    };
    let (mapped, _) = mc.server_key(&key);
    assert_eq!(
        (k.as_str(), *max),
        (key.as_str(), (1 << 20) - 59 - envelope::HEADER_LEN - mapped.len()),
        "{err}"
    );
    assert!(err.to_string().contains("item_size_max 1048576"), "{err}");
}

#[test]
fn a_host_down_at_start_reports_its_item_limit_once_a_blocking_probe_reaches_it() {
    a_host_down_at_start_reports_its_item_limit_once_probed(|mc, key| {
        assert_eq!(mc.get(key).unwrap(), None);
    });
}

#[test]
fn a_host_down_at_start_reports_its_item_limit_once_an_async_probe_reaches_it() {
    a_host_down_at_start_reports_its_item_limit_once_probed(|mc, key| {
        assert_eq!(support::block_on(mc.get_async(key)).unwrap(), None);
    });
}

/// `distributed.max_item_size` in the configuration: a server started with a larger `-I` takes
/// the larger values the key allows; without it, the level keeps memcached's default of 1 MiB
/// and refuses them before sending, naming the key.
#[test]
fn the_configured_item_limit_lets_a_server_with_a_larger_limit_take_larger_values() {
    let server = MemcachedServer::start_with(&["-I", "4m"]);
    let manager = |limit: &str| {
        let toml = format!(
            "fallback_on_error = false\n[local]\ntype = \"memory\"\n\
             [distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"{}\"]\n\
             key_prefix = \"limit:\"\ntimeout_ms = {}\n{limit}",
            server.addr(),
            UNHURRIED.as_millis()
        );
        uno_cache::CacheManager::new(uno_cache::CacheConfig::from_toml_str(&toml).unwrap()).unwrap()
    };
    let big = vec![5u8; 2 << 20];
    let configured = manager("max_item_size = 4194304\n");
    configured.set_raw("big", &big, None).unwrap();
    let l2 = configured.distributed().unwrap();
    assert_eq!(l2.get("big").unwrap().map(|e| e.value.len()), Some(big.len()));

    let default = manager("");
    let err = default.set_raw("big2", &big, None).unwrap_err();
    assert!(
        matches!(err, Error::ValueTooLarge { ref key, .. } if key == "big2"),
        "{err}"
    );
    assert_eq!(l2.get("big2").unwrap(), None);
}
