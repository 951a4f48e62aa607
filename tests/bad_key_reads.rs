//! A key no write can store (empty, or over 4096 bytes) is refused by every read of the manager
//! with `Error::InvalidKey` naming the problem, whatever levels are configured: a file L1
//! alone, a memory L1 alone, and a file L1 with a Redis L2 (a real `redis-server` started by
//! the shared harness) give the same answer, blocking, async and batch alike, and a loading
//! call refuses before its loader runs. With a Redis L2, `get("")` was refused while an L1 alone
//! answered `Ok(None)`, and an over-long key read as a miss everywhere though `set` refused it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use support::{block_on, RedisServer};
use uno_cache::{CacheConfig, CacheManager, Error, Fetched, KeyProblem, MAX_KEY_LEN};

// Loader timeouts make a loading call run its loader on a thread of its own, where a value it
// could not store was handed to the caller anyway.
const LOADER: &str = "[loader]\nhard_timeout_ms = 5000\nfail_safe_max_duration = 60\n";

fn managers(dir: &std::path::Path, redis: &RedisServer) -> Vec<(&'static str, CacheManager)> {
    let file = |sub: &str| format!("[local]\ntype = \"file\"\npath = {:?}\n", dir.join(sub));
    let build = |toml: String| CacheManager::new(CacheConfig::from_toml_str(&toml).unwrap()).unwrap();
    vec![
        ("file L1", build(format!("{}{LOADER}", file("alone")))),
        (
            "memory L1",
            build(format!("[local]\ntype = \"memory\"\n{LOADER}")),
        ),
        (
            "file L1 + Redis L2",
            build(format!(
                "{}[distributed]\nenabled = true\ntype = \"redis\"\nhosts = [\"{}\"]\n{LOADER}",
                file("with-l2"),
                redis.addr()
            )),
        ),
    ]
}

fn refused<T: std::fmt::Debug>(levels: &str, call: &str, key: &str, result: Result<T, Error>) -> String {
    match result {
        Err(Error::InvalidKey { problem, .. }) => format!("{problem:?}"),
        other => panic!("{levels}: {call} of a {}-byte key answered {other:?}", key.len()),
    }
}

fn answers(levels: &str, m: &CacheManager, key: &str, loads: &Arc<AtomicUsize>) -> Vec<String> {
    let batch = ["good", key];
    let loader = || {
        let loads = Arc::clone(loads);
        move || {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<String, Error>("loaded".to_owned())
        }
    };
    let optional = || {
        let loads = Arc::clone(loads);
        move || {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<Option<String>, Error>(Some("loaded".to_owned()))
        }
    };
    let r = |call: &str, result: Result<String, Error>| refused(levels, call, key, result);
    let debug = |v: &dyn std::fmt::Debug| format!("{v:?}");
    vec![
        r("get", m.get::<String>(key).map(|v| debug(&v))),
        r("get_arc", m.get_arc::<String>(key).map(|v| debug(&v))),
        r("get_raw", m.get_raw(key).map(|v| debug(&v))),
        r("multi_get", m.multi_get::<String>(&batch).map(|v| debug(&v))),
        r("multi_get_raw", m.multi_get_raw(&batch).map(|v| debug(&v))),
        r(
            "get_with_state",
            m.get_with_state::<String>(key).map(|v| debug(&v)),
        ),
        r(
            "get_or_load",
            m.get_or_load(key, None, loader()).map(|v| debug(&v)),
        ),
        r(
            "get_or_load_optional",
            m.get_or_load_optional(key, None, optional()).map(|v| debug(&v)),
        ),
        r(
            "get_or_set_with",
            m.get_or_set_with(key, None, loader()).map(|v| debug(&v)),
        ),
        r(
            "get_async",
            block_on(m.get_async::<String>(key)).map(|v| debug(&v)),
        ),
        r(
            "get_arc_async",
            block_on(m.get_arc_async::<String>(key)).map(|v| debug(&v)),
        ),
        r("get_raw_async", block_on(m.get_raw_async(key)).map(|v| debug(&v))),
        r(
            "multi_get_async",
            block_on(m.multi_get_async::<String>(&batch)).map(|v| debug(&v)),
        ),
        r(
            "multi_get_raw_async",
            block_on(m.multi_get_raw_async(&batch)).map(|v| debug(&v)),
        ),
        r(
            "get_with_state_async",
            block_on(m.get_with_state_async::<String>(key)).map(|v| debug(&v)),
        ),
        r(
            "get_or_load_async",
            block_on(m.get_or_load_async(key, None, {
                let load = loader();
                move || async move { load() }
            }))
            .map(|v: Fetched<String>| debug(&v)),
        ),
        r(
            "get_or_load_optional_async",
            block_on(m.get_or_load_optional_async(key, None, {
                let load = optional();
                move || async move { load() }
            }))
            .map(|v: Option<Fetched<String>>| debug(&v)),
        ),
        r(
            "get_or_set_with_async",
            block_on(m.get_or_set_with_async(key, None, {
                let load = loader();
                move || async move { load() }
            }))
            .map(|v| debug(&v)),
        ),
    ]
}

#[test]
fn a_key_no_write_can_store_is_refused_by_every_read_whatever_the_levels() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let long = "k".repeat(MAX_KEY_LEN + 1);
    for (key, problem) in [
        ("", KeyProblem::Empty),
        (
            long.as_str(),
            KeyProblem::TooLong {
                len: MAX_KEY_LEN + 1,
                max: MAX_KEY_LEN,
            },
        ),
    ] {
        for (levels, m) in managers(dir.path(), &redis) {
            m.set("good", &"v".to_owned(), None).unwrap();
            let loads = Arc::new(AtomicUsize::new(0));
            let got = answers(levels, &m, key, &loads);
            assert!(
                got.iter().all(|p| *p == format!("{problem:?}")),
                "{levels}: {got:?}"
            );
            assert_eq!(loads.load(Ordering::SeqCst), 0, "{levels}: a loader ran");
            assert_eq!(
                m.stats().overall.misses,
                0,
                "{levels}: a refused read counted as a miss"
            );
            // A memory-tier hit is answered before the key is checked (only checked keys
            // are in the tier); a refused key must not count as the tier's miss either.
            let memory = m.stats().memory;
            assert_eq!(
                (memory.misses, memory.enabled),
                (0, levels.starts_with("file")),
                "{levels}: a refused read counted as a memory-tier miss, or no memory tier"
            );
        }
    }
}

/// The writes and deletes of such a key, which the manager refuses as it refuses the reads:
/// `InvalidKey`, and no level's count moves, whatever the levels. A set's key went to L1
/// unchecked, so an L1 alone counted the caller's bad key as an L1 failure (`local.errors`, the
/// storage's health in the stats) where a Redis L2 refused it first and nothing counted; and
/// `invalidate_local` counted an L1 delete and an L1 error for it (found by review).
#[test]
fn a_key_no_write_can_store_is_refused_by_every_write_and_delete_and_counts_as_no_levels_failure() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let long = "k".repeat(MAX_KEY_LEN + 1);
    for key in ["", long.as_str()] {
        for (levels, m) in managers(dir.path(), &redis) {
            m.set("good", &"v".to_owned(), None).unwrap();
            let before = m.stats();
            let value = b"v".as_slice();
            let results: Vec<(&str, Result<(), Error>)> = vec![
                ("set", m.set(key, &"v".to_owned(), None)),
                ("set_raw", m.set_raw(key, value, None)),
                ("multi_set", m.multi_set([(key, 1u32)], None)),
                ("multi_set_raw", m.multi_set_raw(&[(key, value)], None)),
                ("set_async", block_on(m.set_async(key, &1u32, None))),
                ("set_raw_async", block_on(m.set_raw_async(key, value, None))),
                (
                    "multi_set_raw_async",
                    block_on(m.multi_set_raw_async(&[(key, value)], None)),
                ),
                ("delete", m.delete(key).map(drop)),
                ("multi_delete", m.multi_delete(&[key]).map(drop)),
                ("delete_async", block_on(m.delete_async(key)).map(drop)),
                ("invalidate_local", m.invalidate_local(key).map(drop)),
                (
                    "invalidate_local_async",
                    block_on(m.invalidate_local_async(key)).map(drop),
                ),
            ];
            for (call, result) in results {
                assert!(
                    matches!(result, Err(Error::InvalidKey { .. })),
                    "{levels}: {call} of a {}-byte key answered {result:?}",
                    key.len()
                );
            }
            let after = m.stats();
            for (level, b, a) in [
                ("local", &before.local, &after.local),
                ("distributed", &before.distributed, &after.distributed),
            ] {
                assert_eq!(
                    (a.errors, a.sets, a.deletes),
                    (b.errors, b.sets, b.deletes),
                    "{levels}: a refused {}-byte key counted at {level}",
                    key.len()
                );
            }
        }
    }
}
