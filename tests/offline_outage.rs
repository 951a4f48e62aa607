//! The offline mode across an L2 outage and a restart: Redis is killed; the service keeps
//! setting and deleting (L1 answers, the L2 ops go to the durable replay queue in the L1
//! directory); the process stops while Redis is still down — once by a clean exit, once killed
//! with SIGKILL right after its last acknowledged write — and a new process starts on the same
//! L1 directory; Redis comes back *with its old data* (append-only file), so every key it held
//! is stale. The bug this guards against: a delete made during the outage is forgotten and the
//! deleted value comes back from L2 — in this instance (backfill) or in a fresh one — or a later
//! set is overwritten by an earlier one, or a killed process's acknowledged queue entries are
//! lost. After the replay, L2 holds exactly what the instance holds, and no deleted value is
//! served anywhere, not even between L2's return and the replay.
//!
//! "The process" is a real child process (this test binary run again with the ignored entry
//! point below, driven over stdin/stdout, see `tests/support/cache_process.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/cache_process.rs"]
mod cache_process;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use cache_process::CacheProcess;
use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, RedisOptions, RedisStore, Storage};

const CHILD: &str = "outage_child_process_entry_point";

fn config_toml(dir: &Path, redis: &str, replay_interval_ms: u64) -> String {
    format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        ttl = 600
        durability = "every_write"
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{redis}"]
        ttl = 600
        key_prefix = "app:"
        timeout_ms = 200
        breaker_failures = 1
        breaker_cooldown_ms = 100
        [offline]
        replay_interval_ms = {replay_interval_ms}
        "#,
        dir.display()
    )
}

fn config(dir: &Path, redis: &str, replay_interval_ms: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&config_toml(dir, redis, replay_interval_ms)).unwrap()
}

/// "The process": a manager on the L1 directory in its config, driven by the parent.
#[test]
#[ignore = "child process of the outage test; does nothing alone"]
fn outage_child_process_entry_point() {
    cache_process::serve();
}

/// Redis that keeps its data across a kill (append-only file, fsync always).
fn persistent_redis() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"], None)
}

fn l2_view(redis: &RedisServer) -> RedisStore {
    RedisStore::connect(RedisOptions::new(redis.addr()).prefix("app:")).unwrap()
}

fn l2_value(l2: &RedisStore, key: &str) -> Option<Vec<u8>> {
    l2.get(key).unwrap().map(|e| e.value)
}

fn get(cache: &CacheManager, key: &str) -> Option<Vec<u8>> {
    cache.get_raw(key).unwrap()
}

/// Retries `replay_now` in the child until L2 (connected in the background after the restart)
/// takes the whole queue.
fn replay_until_empty(process: &mut CacheProcess) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut replayed = 0;
    loop {
        match process.replay() {
            Ok(n) => {
                replayed += n;
                if process.stats().consistency.replay_pending == 0 {
                    return replayed;
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "L2 never took the replay: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the first process ends while L2 is down.
#[derive(Clone, Copy, Debug)]
enum Exit {
    /// stdin closed: the manager is dropped, L1 and the queue are closed.
    Clean,
    /// SIGKILL right after the last acknowledged write: nothing is closed or flushed.
    Killed,
}

/// `behind`: `write_mode = "behind"`, so the sets made during the outage return before their
/// L2 writes fail, and reach the replay queue from the writer thread.
fn deletes_and_sets_made_while_l2_was_dead_survive_a_restart(exit: Exit, behind: bool) {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    // A long replay interval: this test drives the replay itself, to look at the gap before it.
    let mut toml = config_toml(dir.path(), &redis.addr(), 60_000);
    if behind {
        toml = toml.replace(
            "timeout_ms = 200",
            "timeout_ms = 200\n        write_mode = \"behind\"",
        );
    }

    // 1. Before the outage: every key is in both levels.
    let mut first = CacheProcess::start(CHILD, &toml);
    for key in ["a", "b", "c", "e"] {
        first.set_raw(key, "old");
    }
    first.flush();
    let l2 = l2_view(&redis);
    assert_eq!(l2_value(&l2, "b").as_deref(), Some(&b"old"[..]));

    // 2. L2 dies; the service goes on.
    redis.kill();
    first.set_raw("a", "new"); // set over an old value
    assert!(first.delete("b")); // delete of an old value
    first.delete("c");
    first.set_raw("c", "again"); // delete, then set: the set wins
    first.set_raw("d", "fresh"); // a new key
    first.set_raw("e", "mid");
    first.delete("e"); // set, then delete: the delete wins
    if behind {
        // The writer thread queues the failed batches for replay after the sets returned (a
        // crash before that loses them, as documented); the test kills the process once they
        // are in the queue.
        support::wait_until("the write-behind batches queued for replay", || {
            first.stats().consistency.replay_pending == 5
        });
    }
    let stats = first.stats().consistency;
    assert!(stats.replay_enabled);
    assert_eq!(stats.replay_pending, 5, "{stats:?}");
    assert_eq!(first.get_raw("b"), None);
    assert_eq!(first.get_raw("e"), None);
    assert_eq!(first.get_raw("a").as_deref(), Some("new"));

    // 3. The process stops while L2 is still down.
    match exit {
        Exit::Clean => first.stop(),
        Exit::Killed => first.kill(),
    }

    // 4. A new process starts on the same directory, L2 still down: it starts from L1 and the
    //    queue on disk.
    let mut cache = CacheProcess::start(CHILD, &toml);
    assert_eq!(cache.stats().consistency.replay_pending, 5, "{exit:?}");
    assert_eq!(cache.get_raw("a").as_deref(), Some("new"), "offline: L1 served");
    assert_eq!(cache.get_raw("c").as_deref(), Some("again"));
    assert_eq!(cache.get_raw("b"), None);

    // 5. L2 returns with its old data: b, c and e are stale there.
    redis.restart();
    let l2 = l2_view(&redis);
    assert_eq!(
        l2_value(&l2, "b").as_deref(),
        Some(&b"old"[..]),
        "L2 came back stale"
    );
    // Before the replay, a read of a key with a queued delete must not take L2's old value.
    assert_eq!(
        cache.get_raw("b"),
        None,
        "deleted value came back from L2 before the replay"
    );
    assert_eq!(cache.get_raw("e"), None);
    assert_eq!(cache.stats().overall.backfills, 0, "no stale backfill");

    // 6. Replay: L2 ends in the instance's state.
    assert_eq!(replay_until_empty(&mut cache), 5);
    assert_eq!(l2_value(&l2, "a").as_deref(), Some(&b"new"[..]));
    assert_eq!(l2_value(&l2, "b"), None);
    assert_eq!(l2_value(&l2, "c").as_deref(), Some(&b"again"[..]));
    assert_eq!(l2_value(&l2, "d").as_deref(), Some(&b"fresh"[..]));
    assert_eq!(l2_value(&l2, "e"), None);
    assert!(!cache.stats().consistency.replay_overflowed);

    // 7. Nowhere does a deleted value come back: there, nor in a fresh instance with an empty
    //    L1.
    assert_eq!(cache.get_raw("b"), None);
    assert_eq!(cache.get_raw("a").as_deref(), Some("new"));
    cache.stop();
    let other_dir = tempfile::tempdir().unwrap();
    let other = CacheManager::new(config(other_dir.path(), &redis.addr(), 60_000)).unwrap();
    for (key, want) in [
        ("a", Some(&b"new"[..])),
        ("b", None),
        ("c", Some(&b"again"[..])),
        ("d", Some(&b"fresh"[..])),
        ("e", None),
    ] {
        assert_eq!(get(&other, key).as_deref(), want, "fresh instance, key {key}");
    }
}

#[test]
fn deletes_and_sets_made_while_l2_was_dead_reach_it_in_order_after_a_clean_restart_and_no_deleted_value_returns(
) {
    deletes_and_sets_made_while_l2_was_dead_survive_a_restart(Exit::Clean, false);
}

#[test]
fn deletes_and_sets_acknowledged_before_a_sigkill_while_l2_was_dead_reach_it_after_the_restart_and_no_deleted_value_returns(
) {
    deletes_and_sets_made_while_l2_was_dead_survive_a_restart(Exit::Killed, false);
}

#[test]
fn write_behind_sets_queued_for_replay_before_a_sigkill_while_l2_was_dead_reach_it_after_the_restart() {
    deletes_and_sets_made_while_l2_was_dead_survive_a_restart(Exit::Killed, true);
}

#[test]
fn the_background_thread_replays_a_delete_once_l2_is_back() {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis.addr(), 50)).unwrap();
    cache.set_raw("k", b"v", None).unwrap();
    redis.kill();
    cache.delete("k").unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 1);
    redis.restart();
    let l2 = l2_view(&redis);
    // Nobody calls replay_now: the replay thread's tick (50 ms, after the breaker's cool-down)
    // must do it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while cache.stats().consistency.replay_pending > 0 {
        assert!(Instant::now() < deadline, "the queue was never replayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(l2_value(&l2, "k"), None);
    assert_eq!(cache.stats().consistency.replayed, 1);
}

/// A run started with the queue turned off (`offline.replay = false`, or `fallback_on_error =
/// false`) still drains the ops an earlier run queued: they were acknowledged, and left on disk
/// they would be replayed by a later run, over what this one wrote to L2 since.
fn a_queue_left_by_an_earlier_run_is_drained_by_a_run_that_queues_nothing(replay_off: fn(&mut CacheConfig)) {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    let l2 = l2_view(&redis);
    {
        let cache = CacheManager::new(config(dir.path(), &redis.addr(), 60_000)).unwrap();
        cache.set_raw("k", b"v0", None).unwrap();
        assert_eq!(l2_value(&l2, "k").as_deref(), Some(&b"v0"[..]));
        redis.kill();
        cache.set_raw("k", b"v1", None).unwrap();
        assert_eq!(cache.stats().consistency.replay_pending, 1);
    }
    redis.restart();
    let l2 = l2_view(&redis);
    {
        let mut quiet = config(dir.path(), &redis.addr(), 60_000);
        replay_off(&mut quiet);
        let cache = CacheManager::new(quiet).unwrap();
        let stats = cache.stats().consistency;
        assert!(!stats.replay_enabled, "this run queues no failure: {stats:?}");
        // If the earlier op is still pending (the replay thread may have drained it already),
        // the key's write waits behind it, as in a run that queues.
        cache.set_raw("k", b"v2", None).unwrap();
        drain(&cache);
        assert_eq!(l2_value(&l2, "k").as_deref(), Some(&b"v2"[..]));
    }
    // A later run that queues again finds nothing old to replay over v2.
    let cache = CacheManager::new(config(dir.path(), &redis.addr(), 60_000)).unwrap();
    drain(&cache);
    assert_eq!(l2_value(&l2, "k").as_deref(), Some(&b"v2"[..]));
    assert_eq!(get(&cache, "k").as_deref(), Some(&b"v2"[..]));
}

/// Replays until the queue is empty (L2 is connected in the background after a start).
fn drain(cache: &CacheManager) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.stats().consistency.replay_pending > 0 {
        if let Err(e) = cache.replay_now() {
            assert!(Instant::now() < deadline, "L2 never took the replay: {e}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_queue_left_by_an_earlier_run_is_drained_by_a_run_with_replay_off() {
    a_queue_left_by_an_earlier_run_is_drained_by_a_run_that_queues_nothing(|c| c.offline.replay = false);
}

#[test]
fn a_queue_left_by_an_earlier_run_is_drained_by_a_run_without_fallback_on_error() {
    a_queue_left_by_an_earlier_run_is_drained_by_a_run_that_queues_nothing(|c| c.fallback_on_error = false);
}

/// A run with replay off queues none of its own failures, even while it drains an earlier run's
/// queue.
#[test]
fn a_run_with_replay_off_queues_none_of_its_own_failures() {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    {
        let cache = CacheManager::new(config(dir.path(), &redis.addr(), 60_000)).unwrap();
        cache.set_raw("a", b"v0", None).unwrap();
        redis.kill();
        cache.set_raw("a", b"v1", None).unwrap();
    }
    let mut quiet = config(dir.path(), &redis.addr(), 60_000);
    quiet.offline.replay = false;
    let cache = CacheManager::new(quiet).unwrap();
    cache.set_raw("b", b"v1", None).unwrap();
    cache.delete("c").unwrap();
    let stats = cache.stats().consistency;
    assert!(!stats.replay_enabled, "{stats:?}");
    assert_eq!(stats.replay_pending, 1, "only the earlier run's op: {stats:?}");
    // A key the earlier run queued still waits behind its op.
    cache.set_raw("a", b"v2", None).unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 1);
    redis.restart();
    drain(&cache);
    assert_eq!(l2_value(&l2_view(&redis), "a").as_deref(), Some(&b"v2"[..]));
    assert_eq!(
        l2_value(&l2_view(&redis), "b"),
        None,
        "b's failed write was not queued"
    );
}

/// A run with replay off on a directory no queue was left in makes no queue file.
#[test]
fn a_run_with_replay_off_makes_no_queue_file() {
    let mut redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    let mut quiet = config(dir.path(), &redis.addr(), 60_000);
    quiet.offline.replay = false;
    let cache = CacheManager::new(quiet).unwrap();
    redis.kill();
    cache.set_raw("k", b"v1", None).unwrap();
    assert_eq!(cache.stats().consistency.replay_pending, 0);
    assert!(!dir.path().join("replay.log").exists());
}

/// A queued delete of a key Redis refuses (the tag sets' namespace) is done once L2 answers:
/// L2 can hold no value for such a key. Retried, it stopped every replay pass at its op, and
/// the ops behind it (deletes first, then sets) never reached L2, in this run or any later one.
/// The manager refuses such a delete now, as L2 does, so the op is one a build that took it
/// (while the breaker was open) left in the queue, queued here through the queue's own API.
#[test]
fn a_queued_delete_of_a_key_l2_refuses_does_not_stop_the_replay() {
    let redis = persistent_redis();
    let dir = tempfile::tempdir().unwrap();
    {
        let queue =
            uno_cache::replay::ReplayQueue::open(dir.path(), uno_cache::replay::ReplayOptions::default())
                .unwrap();
        queue.push_set("k", b"v", 0).unwrap();
        queue.push_delete("uno-cache:tag:x").unwrap();
    }
    let cache = CacheManager::new(config(dir.path(), &redis.addr(), 60_000)).unwrap();
    let l2 = l2_view(&redis);
    drain(&cache);
    assert_eq!(
        l2_value(&l2, "k").as_deref(),
        Some(&b"v"[..]),
        "the set behind it was replayed"
    );
}

/// A prefix invalidation that cannot reach L2 fails, even under `fallback_on_error`: nothing
/// records the prefix for replay, so L2 keeps the values, and a read after L2's return would
/// backfill them (the call said `Ok` and the invalidated value came back). L1 is dropped all the
/// same, and the call retried once L2 answers removes them from L2.
#[test]
fn a_prefix_invalidation_that_cannot_reach_l2_fails_and_its_retry_removes_the_values() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis.addr(), 60_000)).unwrap();
    cache.set_raw("p:1", b"old", None).unwrap();
    cache.set_raw("q:1", b"kept", None).unwrap();
    redis.pause();
    let failed = cache.invalidate_prefix("p:");
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(get(&cache, "p:1"), None, "L1 dropped its copy");
    redis.resume();
    // Until the breaker's cooldown has passed, the retry is refused as the first call was.
    let deadline = Instant::now() + Duration::from_secs(10);
    let retried = loop {
        match cache.invalidate_prefix("p:") {
            Ok(n) => break n,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("the retry still fails once Redis answers: {e}"),
        }
    };
    assert!(retried >= 1, "L2 still held the key: {retried}");
    assert_eq!(l2_value(&l2_view(&redis), "p:1"), None);
    assert_eq!(get(&cache, "p:1"), None, "the invalidated value came back");
    assert_eq!(get(&cache, "q:1").as_deref(), Some(&b"kept"[..]));
}
