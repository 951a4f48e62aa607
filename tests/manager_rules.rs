//! The multi-level rules of docs/design.md, one test per rule, against a memory L1 and a scripted L2
//! that logs every call, fails on demand and can hold a call at a gate:
//! read-through with backfill (TTL bounded by the L2 entry and by `local.ttl`), per-level TTL
//! caps on write, delete from both levels, batch calls (one L1 pass, one L2 batch), fallback on
//! and off with a failing L2 (and a failing L1 read), L1 alone without multi-level, the backfill
//! guard against a racing delete or write (the "stale value after delete" bug of peer caches),
//! codec mismatches reported as errors, and exact stats on a scripted sequence.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;

#[path = "support/mount.rs"]
mod mount;

#[path = "support/delegate.rs"]
mod delegate;

use std::sync::Arc;
use std::time::Duration;

use delegate::{Delegate, Wrap};
use manager_support::{expiry_ms, Scripted, ScriptedStore, START_MS};
use uno_cache::{CacheConfig, CacheManager, Codec, Error, ManualClock, MemoryStore, Storage, StorageSize};

const LOCAL_TTL: Duration = Duration::from_secs(60);
const DISTRIBUTED_TTL: Duration = Duration::from_secs(600);

fn config(fallback: bool) -> CacheConfig {
    let mut config = CacheConfig {
        fallback_on_error: fallback,
        ..CacheConfig::default()
    };
    config.local.ttl = LOCAL_TTL;
    config.distributed.ttl = DISTRIBUTED_TTL;
    config
}

fn setup(fallback: bool) -> Scripted {
    manager_support::scripted(config(fallback))
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    Codec::bincode().encode("k", value).unwrap()
}

const SECOND_MS: u64 = 1000;

// ---- get ----

#[test]
fn l1_hit_is_answered_without_calling_l2() {
    let s = setup(true);
    s.l1.set("k", &encoded(&7u32), None).unwrap();
    assert_eq!(s.cache.get::<u32>("k").unwrap(), Some(7));
    assert!(s.l2.calls().is_empty(), "{:?}", s.l2.calls());
}

#[test]
fn l2_hit_is_returned_and_backfilled_with_the_remaining_l2_ttl() {
    let s = setup(true);
    s.l2.put_raw("k", &encoded(&"from l2"), START_MS + 10 * SECOND_MS);
    assert_eq!(s.cache.get::<String>("k").unwrap().as_deref(), Some("from l2"));
    assert_eq!(s.l2.ops(), ["get"]);
    let backfilled = s.l1.get("k").unwrap().expect("backfilled into L1");
    assert_eq!(expiry_ms(&backfilled), Some(START_MS + 10 * SECOND_MS));
    // The L1 copy dies with the L2 entry, well before local.ttl.
    s.clock.advance(Duration::from_secs(10));
    assert_eq!(s.l1.get("k").unwrap(), None);
    assert_eq!(s.cache.get::<String>("k").unwrap(), None);
}

#[test]
fn backfill_never_exceeds_local_ttl() {
    let s = setup(true);
    s.l2.put_raw("k", &encoded(&1u8), START_MS + 3600 * SECOND_MS);
    assert_eq!(s.cache.get::<u8>("k").unwrap(), Some(1));
    let backfilled = s.l1.get("k").unwrap().unwrap();
    assert_eq!(expiry_ms(&backfilled), Some(START_MS + 60 * SECOND_MS));
}

#[test]
fn backfill_of_an_l2_entry_without_expiry_uses_local_ttl() {
    let s = setup(true);
    s.l2.put_raw("k", &encoded(&1u8), 0);
    assert_eq!(s.cache.get::<u8>("k").unwrap(), Some(1));
    let backfilled = s.l1.get("k").unwrap().unwrap();
    assert_eq!(expiry_ms(&backfilled), Some(START_MS + 60 * SECOND_MS));
}

#[test]
fn miss_in_both_levels_is_none_and_backfills_nothing() {
    let s = setup(true);
    assert_eq!(s.cache.get::<u8>("nope").unwrap(), None);
    assert_eq!(s.l2.ops(), ["get"]);
    assert_eq!(s.l1.size().unwrap().items, 0);
}

// ---- set ----

#[test]
fn set_caps_each_levels_ttl_separately() {
    let s = setup(true);
    s.cache
        .set("long", &1u8, Some(Duration::from_secs(3600)))
        .unwrap();
    s.cache.set("short", &2u8, Some(Duration::from_secs(30))).unwrap();
    let l1_long = s.l1.get("long").unwrap().unwrap();
    assert_eq!(expiry_ms(&l1_long), Some(START_MS + 60 * SECOND_MS));
    let l1_short = s.l1.get("short").unwrap().unwrap();
    assert_eq!(expiry_ms(&l1_short), Some(START_MS + 30 * SECOND_MS));
    let ttls: Vec<_> = s.l2.calls().into_iter().map(|c| (c.op, c.keys, c.ttl)).collect();
    assert_eq!(
        ttls,
        [
            ("set".to_owned(), vec!["long".to_owned()], Some(DISTRIBUTED_TTL)),
            (
                "set".to_owned(),
                vec!["short".to_owned()],
                Some(Duration::from_secs(30))
            ),
        ]
    );
}

#[test]
fn set_without_ttl_gives_each_level_its_configured_ttl() {
    let s = setup(true);
    s.cache.set("k", &1u8, None).unwrap();
    assert_eq!(
        expiry_ms(&s.l1.get("k").unwrap().unwrap()),
        Some(START_MS + 60 * SECOND_MS)
    );
    assert_eq!(s.l2.calls()[0].ttl, Some(DISTRIBUTED_TTL));
    assert_eq!(s.l2.peek("k").unwrap().1, START_MS + 600 * SECOND_MS);
}

#[test]
fn zero_ttl_is_refused_before_any_level_is_written() {
    let s = setup(true);
    let err = s.cache.set("k", &1u8, Some(Duration::ZERO)).unwrap_err();
    assert!(matches!(err, Error::ZeroTtl { .. }), "{err:?}");
    assert_eq!(s.l1.size().unwrap().items, 0);
    assert!(s.l2.calls().is_empty());
}

// ---- delete ----

#[test]
fn delete_removes_the_key_from_both_levels() {
    let s = setup(true);
    s.cache.set("k", &1u8, None).unwrap();
    assert!(s.cache.delete("k").unwrap());
    assert_eq!(s.l1.get("k").unwrap(), None);
    assert_eq!(s.l2.peek("k"), None);
    assert!(!s.cache.delete("k").unwrap());
    // A key only L2 has is deleted there too.
    s.l2.put_raw("only-l2", b"x", 0);
    assert!(s.cache.delete("only-l2").unwrap());
    assert_eq!(s.l2.peek("only-l2"), None);
}

// ---- fallback ----

#[test]
fn with_fallback_a_failing_l2_is_a_miss_on_read_and_l1_only_on_write() {
    let s = setup(true);
    s.l2.set_failing(true);
    s.cache.set("k", &5u16, None).unwrap();
    assert_eq!(s.cache.get::<u16>("k").unwrap(), Some(5), "L1 still serves");
    assert_eq!(s.cache.get::<u16>("absent").unwrap(), None);
    assert!(s.cache.delete("k").unwrap());
    s.cache.multi_set([("a", 1u8), ("b", 2u8)], None).unwrap();
    let got = s.cache.multi_get::<u8>(&["a", "b", "c"]).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(s.cache.multi_delete(&["a", "b"]).unwrap(), 2);
    // set, get(absent), delete, set_many, get_many([c]), delete_many.
    assert_eq!(
        s.l2.ops(),
        ["set", "get", "delete", "set_many", "get_many", "delete_many"]
    );
    assert_eq!(s.cache.stats().distributed.errors, 6);
}

#[test]
fn without_fallback_l2_errors_reach_the_caller() {
    let s = setup(false);
    s.cache.set("held", &7u8, None).unwrap();
    s.l2.set_failing(true);
    assert!(matches!(s.cache.set("k", &1u8, None), Err(Error::Io { .. })));
    // The L1 write happened before L2 failed, and was taken out again: the caller was told the
    // write failed, and nothing replays it, so no instance may serve it.
    assert!(s.l1.get("k").unwrap().is_none());
    assert!(matches!(s.cache.get::<u8>("k"), Err(Error::Io { .. })));
    assert_eq!(
        s.cache.get::<u8>("held").unwrap(),
        Some(7),
        "an L1 hit does not need L2"
    );
    assert!(matches!(s.cache.get::<u8>("absent"), Err(Error::Io { .. })));
    assert!(matches!(s.cache.delete("k"), Err(Error::Io { .. })));
    assert_eq!(
        s.l1.get("k").unwrap(),
        None,
        "L1 was deleted even though L2 failed"
    );
    assert!(matches!(s.cache.multi_get::<u8>(&["x"]), Err(Error::Io { .. })));
    assert!(matches!(
        s.cache.multi_set([("x", 1u8)], None),
        Err(Error::Io { .. })
    ));
    assert!(matches!(s.cache.multi_delete(&["x"]), Err(Error::Io { .. })));
    assert_eq!(s.cache.stats().distributed.errors, 7);
}

#[test]
fn l1_read_error_goes_to_l2_with_fallback_and_reaches_the_caller_without() {
    for fallback in [true, false] {
        let clock = ManualClock::new(START_MS);
        let l1 = ScriptedStore::new("broken-l1", &clock);
        let l2 = ScriptedStore::new("scripted", &clock);
        let cache = CacheManager::builder()
            .config(config(fallback))
            .local(l1.clone())
            .distributed(l2.clone())
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap();
        l2.put_raw("k", &encoded(&9u8), 0);
        l1.set_failing(true);
        let got = cache.get::<u8>("k");
        if fallback {
            assert_eq!(got.unwrap(), Some(9));
            assert_eq!(l2.ops(), ["get"]);
        } else {
            assert!(matches!(got, Err(Error::Io { .. })), "{got:?}");
            assert!(l2.calls().is_empty());
        }
        assert_eq!(
            cache.stats().local.errors,
            if fallback { 2 } else { 1 },
            "the read, and the failed backfill"
        );
    }
}

#[test]
fn failed_l1_write_reaches_the_caller_and_skips_l2() {
    let clock = ManualClock::new(START_MS);
    let l1 = ScriptedStore::new("broken-l1", &clock);
    let l2 = ScriptedStore::new("scripted", &clock);
    let cache = CacheManager::builder()
        .config(config(true))
        .local(l1.clone())
        .distributed(l2.clone())
        .build()
        .unwrap();
    l1.set_failing(true);
    assert!(matches!(cache.set("k", &1u8, None), Err(Error::Io { .. })));
    assert!(l2.calls().is_empty());
}

// ---- batches ----

#[test]
fn multi_get_makes_one_l1_pass_and_one_l2_batch_for_the_misses() {
    let s = setup(true);
    s.l1.set("a", &encoded(&1u32), None).unwrap();
    s.l2.put_raw("b", &encoded(&2u32), START_MS + 5 * SECOND_MS);
    s.l2.put_raw("c", &encoded(&3u32), 0);
    let got = s.cache.multi_get::<u32>(&["a", "b", "c", "d"]).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!((got["a"], got["b"], got["c"]), (1, 2, 3));
    let calls = s.l2.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].op, "get_many");
    assert_eq!(calls[0].keys, ["b", "c", "d"]);
    // Both L2 hits were backfilled (by the backfill thread; flush waits for it), each with its
    // own TTL bound.
    s.cache.flush().unwrap();
    assert_eq!(
        expiry_ms(&s.l1.get("b").unwrap().unwrap()),
        Some(START_MS + 5 * SECOND_MS)
    );
    assert_eq!(
        expiry_ms(&s.l1.get("c").unwrap().unwrap()),
        Some(START_MS + 60 * SECOND_MS)
    );
}

#[test]
fn multi_get_answered_by_l1_does_not_call_l2() {
    let s = setup(true);
    s.cache.multi_set([("a", 1u8), ("b", 2u8)], None).unwrap();
    s.l2.clear_calls();
    assert_eq!(s.cache.multi_get::<u8>(&["a", "b"]).unwrap().len(), 2);
    assert!(s.l2.calls().is_empty());
}

#[test]
fn multi_set_and_multi_delete_make_one_call_per_level() {
    let s = setup(true);
    let items = vec![("a".to_owned(), 1u64), ("b".to_owned(), 2), ("c".to_owned(), 3)];
    s.cache.multi_set(items, Some(Duration::from_secs(3600))).unwrap();
    assert_eq!(s.l1.size().unwrap().items, 3);
    assert_eq!(
        expiry_ms(&s.l1.get("b").unwrap().unwrap()),
        Some(START_MS + 60 * SECOND_MS)
    );
    let calls = s.l2.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].op.as_str(), calls[0].ttl),
        ("set_many", Some(DISTRIBUTED_TTL))
    );
    assert_eq!(calls[0].keys, ["a", "b", "c"]);
    s.l2.clear_calls();
    assert_eq!(s.cache.multi_delete(&["a", "b", "zz"]).unwrap(), 2);
    assert_eq!(s.l2.ops(), ["delete_many"]);
    assert_eq!(s.l1.size().unwrap().items, 1);
    assert_eq!(s.l2.peek("a"), None);
    assert!(s.l2.peek("c").is_some());
}

// ---- single level ----

#[test]
fn without_multi_level_the_manager_is_l1_alone() {
    let mut config = config(true);
    config.use_multi_level = false;
    let s = manager_support::scripted(config);
    s.l2.put_raw("k", &encoded(&1u8), 0);
    assert_eq!(s.cache.get::<u8>("k").unwrap(), None);
    s.cache.set("a", &1u8, None).unwrap();
    s.cache.delete("a").unwrap();
    assert_eq!(s.cache.multi_get::<u8>(&["k"]).unwrap().len(), 0);
    assert!(s.l2.calls().is_empty());
    assert!(s.cache.distributed().is_none());
    assert!(!s.cache.stats().distributed.enabled);
}

// ---- the backfill guard ----

#[test]
fn backfill_does_not_resurrect_a_key_deleted_during_the_l2_read() {
    let s = setup(true);
    s.l2.put_raw("k", &encoded(&"old"), 0);
    let gate = s.l2.gate("get");
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| s.cache.get::<String>("k").unwrap());
        gate.wait_entered(); // the read is inside L2 and has the old value coming
        assert!(s.cache.delete("k").unwrap());
        gate.release();
        // The read returns what it read, but must not leave it in L1.
        assert!(reader.join().unwrap().is_some());
    });
    assert_eq!(
        s.l1.get("k").unwrap(),
        None,
        "a stale value landed in L1 after the delete"
    );
    assert_eq!(s.cache.get::<String>("k").unwrap(), None);
    assert_eq!(s.cache.stats().overall.backfills_skipped, 1);
}

#[test]
fn a_read_while_a_delete_is_still_reaching_l2_is_a_miss_and_backfills_nothing() {
    let s = setup(true);
    s.l2.put_raw("k", &encoded(&"old"), 0);
    let gate = s.l2.gate("delete");
    std::thread::scope(|scope| {
        let deleter = scope.spawn(|| s.cache.delete("k").unwrap());
        gate.wait_entered(); // L1 is deleted, L2 still has the value
                             // The delete has begun: L2's value may be older than what the delete replaced (issue
                             // 14), so L2 is not asked.
        assert_eq!(s.cache.get::<String>("k").unwrap(), None);
        assert!(
            !s.l2.ops().contains(&"get".to_owned()),
            "L2 was asked: {:?}",
            s.l2.ops()
        );
        assert_eq!(s.cache.stats().consistency.deleting_misses, 1);
        assert_eq!(
            s.l1.get("k").unwrap(),
            None,
            "backfilled while the delete was in progress"
        );
        gate.release();
        assert!(deleter.join().unwrap());
    });
    assert_eq!(s.cache.get::<String>("k").unwrap(), None);
}

#[test]
fn a_batch_backfill_skips_only_the_key_deleted_during_the_l2_read() {
    let s = setup(true);
    s.l2.put_raw("a", &encoded(&1u32), 0);
    s.l2.put_raw("b", &encoded(&2u32), 0);
    let gate = s.l2.gate("get_many");
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| s.cache.multi_get::<u32>(&["a", "b"]).unwrap());
        gate.wait_entered();
        assert!(s.cache.delete("b").unwrap());
        gate.release();
        assert_eq!(reader.join().unwrap().len(), 2);
    });
    s.cache.flush().unwrap();
    assert_eq!(s.l1.get("b").unwrap(), None, "a deleted key was backfilled");
    // "a" and "b" share a guard stripe with probability 1/1024 (the hasher is seeded per
    // manager), and then the delete skips the backfill of "a" too; never the other way round.
    let st = s.cache.stats().overall;
    assert_eq!(st.backfills + st.backfills_skipped, 2);
    let a = s.l1.get("a").unwrap().map(|e| e.value);
    if st.backfills == 1 {
        assert_eq!(a, Some(encoded(&1u32)));
    } else {
        assert_eq!((st.backfills_skipped, a), (2, None));
    }
}

#[test]
fn backfill_does_not_overwrite_a_newer_set() {
    let s = setup(true);
    s.l2.put_raw("k", &encoded(&"old"), 0);
    let gate = s.l2.gate("get");
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| s.cache.get::<String>("k").unwrap());
        gate.wait_entered();
        s.cache.set("k", &"new", None).unwrap();
        gate.release();
        reader.join().unwrap();
    });
    assert_eq!(s.cache.get::<String>("k").unwrap().as_deref(), Some("new"));
    assert_eq!(s.l1.get("k").unwrap().unwrap().value, encoded(&"new"));
}

#[test]
fn an_l2_value_read_before_a_prefix_invalidation_is_not_backfilled_after_it() {
    // The key is not in L1 when the prefix is dropped, so no write of it is listed; the read
    // that began before must still not put the value it read into L1 after.
    let s = setup(true);
    s.l2.put_raw("p:k", &encoded(&"old"), 0);
    let gate = s.l2.gate("get");
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| s.cache.get::<String>("p:k").unwrap());
        gate.wait_entered();
        // The prefix is invalidated (L2's copy deleted with it), and another instance writes
        // the key again.
        s.cache.invalidate_prefix("p:").unwrap();
        s.l2.put_raw("p:k", &encoded(&"new"), 0);
        gate.release();
        assert_eq!(
            reader.join().unwrap().as_deref(),
            Some("old"),
            "read before the write"
        );
    });
    s.cache.flush().unwrap();
    assert_eq!(
        s.l1.get("p:k").unwrap(),
        None,
        "the value read before the invalidation came back"
    );
    assert_eq!(s.cache.get::<String>("p:k").unwrap().as_deref(), Some("new"));
}

#[test]
fn invalidate_local_drops_only_the_l1_copy() {
    let s = setup(true);
    s.cache.set("k", &1u8, None).unwrap();
    assert!(s.cache.invalidate_local("k").unwrap());
    assert_eq!(s.l1.get("k").unwrap(), None);
    assert!(s.l2.peek("k").is_some());
    assert!(!s.l2.ops().contains(&"delete".to_owned()));
}

// ---- codec ----

/// `keys_invalidated` counts keys dropped by invalidations received from other instances: a
/// prefix invalidated here (a file L1, which lists the prefix's keys) is not one of them.
#[test]
fn a_prefix_invalidated_here_is_not_counted_as_keys_invalidated_by_other_instances() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = \"{}\"\ndurability = \"none\"\n",
        dir.path().display()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set("p:1", &1u8, None).unwrap();
    cache.set("p:2", &2u8, None).unwrap();
    assert_eq!(cache.invalidate_prefix("p:").unwrap(), 2);
    assert_eq!(cache.get::<u8>("p:1").unwrap(), None);
    assert_eq!(cache.stats().consistency.keys_invalidated, 0);
}

#[test]
fn a_value_written_by_another_codec_is_an_error_naming_the_key_and_both_codecs() {
    let clock = ManualClock::new(START_MS);
    let l1: Arc<MemoryStore> = Arc::new(MemoryStore::with_clock(100, Arc::new(clock.clone())).unwrap());
    let json = CacheManager::builder()
        .config(config(true))
        .local(l1.clone())
        .codec(Codec::json())
        .build()
        .unwrap();
    let bincode = CacheManager::builder()
        .config(config(true))
        .local(l1.clone())
        .build()
        .unwrap();
    json.set("user:1", &vec![1u8, 2, 3], None).unwrap();
    let err = bincode.get::<Vec<u8>>("user:1").unwrap_err();
    match &err {
        Error::CodecMismatch {
            key,
            stored,
            expected,
        } => {
            assert_eq!(
                (key.as_str(), stored.as_str(), *expected),
                ("user:1", "json", "bincode")
            );
        }
        other => panic!("expected a codec mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains("user:1"));
    assert_eq!(json.get::<Vec<u8>>("user:1").unwrap(), Some(vec![1, 2, 3]));
    // Same codec, wrong type: a decode error, not garbage.
    assert!(matches!(json.get::<u64>("user:1"), Err(Error::Decode { .. })));
}

/// A level's hit whose bytes do not decode is counted in `overall.decode_errors`, by every kind
/// of read, so that a change of codec does not look like a perfect hit rate.
#[test]
fn values_that_do_not_decode_are_counted_as_decode_errors_beside_their_hits() {
    let clock = ManualClock::new(START_MS);
    let l1: Arc<MemoryStore> = Arc::new(MemoryStore::with_clock(100, Arc::new(clock.clone())).unwrap());
    let cache = CacheManager::builder()
        .config(config(true))
        .local(l1.clone())
        .build()
        .unwrap();
    cache.set("n", &7u64, None).unwrap();
    cache.set_raw("raw", b"\xff\xff not bincode", None).unwrap();
    assert_eq!(cache.get::<u64>("n").unwrap(), Some(7));
    assert_eq!(
        cache.stats().overall.decode_errors,
        0,
        "a value that decodes is no error"
    );
    assert!(cache.get::<Vec<String>>("raw").is_err());
    assert!(cache.multi_get::<Vec<String>>(&["raw", "n"]).is_err());
    let loaded = cache
        .get_or_load("raw", None, || Ok::<_, Error>(vec!["fresh".to_owned()]))
        .unwrap();
    assert_eq!(
        loaded.into_value(),
        vec!["fresh".to_owned()],
        "loaded anew over bytes that do not decode"
    );
    let overall = cache.stats().overall;
    assert_eq!(overall.decode_errors, 3, "{overall:?}");
    assert_eq!(overall.hits, 5, "the level had the bytes each time: {overall:?}");
    assert_eq!(
        cache.get::<Vec<String>>("raw").unwrap(),
        Some(vec!["fresh".to_owned()])
    );
    assert_eq!(cache.stats().overall.decode_errors, 3);
}

#[test]
fn raw_bytes_bypass_the_codec_and_typed_reads_of_them_fail_cleanly() {
    let s = setup(true);
    s.cache.set_raw("raw", b"\x01\x02plain", None).unwrap();
    assert_eq!(s.l1.get("raw").unwrap().unwrap().value, b"\x01\x02plain");
    assert_eq!(s.l2.peek("raw").unwrap().0, b"\x01\x02plain");
    assert_eq!(
        s.cache.get_raw("raw").unwrap().as_deref(),
        Some(&b"\x01\x02plain"[..])
    );
    assert!(matches!(
        s.cache.get::<u8>("raw"),
        Err(Error::CodecMismatch { .. })
    ));
    s.cache
        .multi_set_raw(&[("r1", b"1"), ("r2", b"2")], None)
        .unwrap();
    let got = s.cache.multi_get_raw(&["r1", "r2"]).unwrap();
    assert_eq!(got["r2"], b"2");
}

// ---- stats ----

#[test]
fn stats_are_exact_on_a_scripted_sequence() {
    let s = setup(true);
    s.cache.set("a", &1u8, None).unwrap(); // sets: L1 1, L2 1
    assert_eq!(s.cache.get::<u8>("a").unwrap(), Some(1)); // L1 hit
    assert_eq!(s.cache.get::<u8>("a").unwrap(), Some(1)); // L1 hit
    assert_eq!(s.cache.get::<u8>("b").unwrap(), None); // L1 miss, L2 miss
    s.l2.put_raw("c", &encoded(&3u8), 0);
    assert_eq!(s.cache.get::<u8>("c").unwrap(), Some(3)); // L1 miss, L2 hit, backfill (L1 set 2)
    assert_eq!(s.cache.get::<u8>("c").unwrap(), Some(3)); // L1 hit
    s.cache.set("e", &5u8, Some(Duration::from_secs(1))).unwrap(); // sets: L1 3, L2 2
    s.clock.advance(Duration::from_secs(1));
    assert_eq!(s.cache.get::<u8>("e").unwrap(), None); // L1 miss (expired), L2 miss
    assert!(s.cache.delete("a").unwrap()); // deletes: L1 1, L2 1
    s.l2.set_failing(true);
    assert_eq!(s.cache.get::<u8>("d").unwrap(), None); // L1 miss, L2 error (hidden)

    let st = s.cache.monitor().get_stats();
    assert_eq!((st.local.hits, st.local.misses), (3, 4));
    assert_eq!((st.local.sets, st.local.deletes, st.local.errors), (3, 1, 0));
    assert_eq!((st.local.expirations, st.local.evictions), (1, 0));
    assert_eq!(
        (st.distributed.hits, st.distributed.misses, st.distributed.errors),
        (1, 2, 1)
    );
    assert_eq!((st.distributed.sets, st.distributed.deletes), (2, 1));
    assert_eq!((st.overall.reads, st.overall.hits, st.overall.misses), (7, 4, 3));
    assert_eq!((st.overall.backfills, st.overall.backfills_skipped), (1, 0));
    assert_eq!(st.hit_rate.local, 3.0 / 7.0);
    assert_eq!(st.hit_rate.distributed, 1.0 / 3.0);
    assert_eq!(st.hit_rate.overall, 4.0 / 7.0);
    assert_eq!(st.local.name, "memory");
    assert_eq!(st.distributed.name, "scripted");
    // Live: "c" in L1 (a deleted, e expired); "c" in L2.
    assert_eq!(st.size.local.items, 1);
    assert_eq!(
        st.size.distributed,
        StorageSize {
            items: 1,
            bytes: 1 + 2
        }
    );
    // Every L2 call is timed: b, c, e, d.
    assert_eq!(st.distributed.get_latency.samples, 4);
    assert!(st.distributed.get_latency.p50_ns > 0);

    let json = serde_json::to_value(&st).unwrap();
    assert_eq!(json["hit_rate"]["local"], 3.0 / 7.0);
    assert_eq!(json["size"]["local"]["items"], 1);
    assert_eq!(json["size"]["distributed"]["bytes"], 3);
    assert_eq!(json["local"]["hits"], 3);
    assert_eq!(json["distributed"]["errors"], 1);
    assert!(json["local"]["get_latency"]["p99_ns"].is_u64());

    // L1 calls are sampled (one in 16 per thread): 32 more hits are timed at least once.
    for _ in 0..32 {
        s.cache.get::<u8>("c").unwrap();
    }
    let st = s.cache.stats();
    assert_eq!(st.local.hits, 3 + 32);
    assert!(st.local.get_latency.samples >= 1);
    assert!(st.local.get_latency.p99_ns >= st.local.get_latency.p50_ns);
}

/// L1 reads and L1 writes are sampled one in 16 each: a thread that alternates them (a miss,
/// then the set that fills it) times both kinds, where one countdown for both would land on
/// the same kind every time.
#[test]
fn alternating_l1_reads_and_writes_are_both_timed() {
    let s = setup(true);
    // A thread of its own: the countdowns are per thread and start with its first call.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in 0..64 {
                let key = format!("k{i}");
                assert_eq!(s.cache.get::<u32>(&key).unwrap(), None);
                s.cache.set(&key, &1u32, None).unwrap();
            }
        });
    });
    let st = s.cache.stats();
    assert_eq!((st.local.misses, st.local.sets), (64, 64));
    assert!(st.local.get_latency.samples >= 4, "{:?}", st.local.get_latency);
    assert!(st.local.set_latency.samples >= 4, "{:?}", st.local.set_latency);
}

#[test]
fn stats_reuse_a_recent_reading_of_the_l2_size() {
    let s = setup(true);
    s.cache.set("a", &1u8, None).unwrap();
    assert_eq!(s.cache.stats().size.distributed.items, 1);
    s.cache.set("b", &2u8, None).unwrap();
    // Within L2_SIZE_MAX_AGE the first reading is reused: counting L2 can walk every key.
    assert_eq!(s.cache.stats().size.distributed.items, 1);
    assert_eq!(s.l2.ops().iter().filter(|op| *op == "size").count(), 1);
    assert_eq!(s.cache.stats().size.local.items, 2, "L1 is read every time");
}

#[test]
fn an_l2_write_lost_to_a_full_replay_queue_is_not_counted_as_queued() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(true);
    config.offline.replay_dir = Some(dir.path().to_path_buf());
    config.offline.replay_max_entries = 1;
    let s = manager_support::scripted(config);
    s.l2.set_failing(true);
    s.cache.set("a", &1u32, None).unwrap();
    s.cache.set("b", &2u32, None).unwrap();
    let c = s.cache.stats().consistency;
    assert!(c.replay_overflowed, "{c:?}");
    assert_eq!(c.replay_pending, 1, "{c:?}");
    assert_eq!(c.queued, 1, "{c:?}");
}

/// A manager over a scripted L1 and L2 whose replay queue lives on a small tmpfs, with `k`
/// pending there (its write failed to reach L2) and the tmpfs full, so that queueing the next
/// op of `k` fails. The replay log is padded to a whole page first: on tmpfs an append that
/// stays within an allocated page needs no space and would not fail.
fn with_k_pending_and_the_replay_disk_full(
) -> (CacheManager, Arc<ScriptedStore>, Arc<ScriptedStore>, mount::Mount) {
    let disk = mount::Mount::tmpfs(64);
    let replay_dir = disk.path().join("q");
    let mut config = config(true);
    config.offline.replay_dir = Some(replay_dir.clone());
    config.offline.replay_interval_ms = 3_600_000;
    let clock = ManualClock::new(START_MS);
    let l1 = ScriptedStore::new("broken-l1", &clock);
    let l2 = ScriptedStore::new("scripted", &clock);
    let cache = CacheManager::builder()
        .config(config)
        .local(l1.clone())
        .distributed(l2.clone())
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    cache.set_raw("k", b"v0", None).unwrap();
    l2.set_failing(true);
    cache.set_raw("k", b"v1", None).unwrap();
    let log = replay_dir.join("replay.log");
    let log_len = std::fs::metadata(&log).unwrap().len() as usize;
    // A set record is 28 bytes besides its key and value.
    let pad = 4096 - log_len - (28 + 3);
    cache.set_raw("pad", &vec![7u8; pad], None).unwrap();
    assert_eq!(
        std::fs::metadata(&log).unwrap().len(),
        4096,
        "the log ends on a page"
    );
    disk.fill("ballast");
    l2.set_failing(false);
    assert_eq!(cache.stats().consistency.replay_pending, 2);
    (cache, l1, l2, disk)
}

/// A delete whose L1 call fails and whose op cannot be queued behind `k`'s pending write (the
/// replay queue's disk is full) reports L1's error and still makes every L1 entry suspect: L1
/// may hold what the delete meant to take out. Before, the queueing's error returned at once
/// and L1 went on serving its entries as fresh (found by review).
#[test]
fn a_delete_that_l1_and_the_replay_queue_both_fail_reports_l1s_error_and_distrusts_l1() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for (how, batch, sync) in [
        ("delete", false, true),
        ("multi_delete", true, true),
        ("delete_async", false, false),
        ("multi_delete_async", true, false),
    ] {
        let (cache, l1, l2, _disk) = with_k_pending_and_the_replay_disk_full();
        l1.set_failing(true);
        let deleted = match (batch, sync) {
            (false, true) => cache.delete("k"),
            (true, true) => cache.multi_delete(&["k"]).map(|n| n > 0),
            (false, false) => rt.block_on(cache.delete_async("k")),
            (true, false) => rt.block_on(cache.multi_delete_async(&["k"])).map(|n| n > 0),
        };
        assert!(
            matches!(
                &deleted,
                Err(Error::Io {
                    op: "scripted failure",
                    ..
                })
            ),
            "{how}: L1's error first: {deleted:?}"
        );
        l1.set_failing(false);
        assert_eq!(
            l1.peek("k"),
            None,
            "{how}: L1 still vouches for the value the delete meant to take out"
        );
        assert!(l2
            .calls()
            .iter()
            .all(|c| c.op != "delete" && c.op != "delete_many"));
    }
}

/// A level of an application's own written before `PartialBatch::refused` existed: it names
/// the items it refused in `failed` alone, with the refusal as the cause.
struct RefusesBWithoutNamingIt(MemoryStore);

impl Wrap for RefusesBWithoutNamingIt {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.0
    }
    fn name(&self) -> &str {
        "refuses-b"
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> uno_cache::Result<()> {
        let mut failed = Vec::new();
        for (i, (key, value)) in items.iter().enumerate() {
            if *key == "b" {
                failed.push(i);
            } else {
                self.0.set(key, value, ttl)?;
            }
        }
        let cause = Error::ValueTooLarge {
            key: "b".into(),
            len: 1,
            max: 0,
            store: "refuses-b".into(),
        };
        Err(Error::PartialBatch(Box::new(uno_cache::PartialBatch::new(
            "refuses-b",
            "set_many",
            items.len(),
            failed,
            Vec::new(),
            cause,
            uno_cache::Served::Written,
        ))))
    }
}

/// Such a level's refused items are taken out of L1, as before `refused` existed: not kept as
/// if their node had not been reached.
#[test]
fn a_partial_refusal_named_in_failed_alone_takes_the_refused_items_out_of_l1() {
    let l2 = Arc::new(Delegate(RefusesBWithoutNamingIt(MemoryStore::new(100).unwrap())));
    let cache = CacheManager::builder()
        .config(config(true))
        .local(Arc::new(MemoryStore::new(100).unwrap()))
        .distributed(Arc::new(uno_cache::InProcess::shared(l2)))
        .build()
        .unwrap();
    let err = cache
        .multi_set_raw(&[("a", b"1"), ("b", b"2")], None)
        .unwrap_err();
    assert!(err.is_bad_input(), "{err}");
    assert_eq!(cache.get_raw("a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(
        cache.get_raw("b").unwrap(),
        None,
        "the refused value stayed in L1"
    );
    assert_eq!(cache.stats().consistency.queued, 0);
}
