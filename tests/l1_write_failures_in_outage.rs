//! Writes and deletes a file L1 refuses (its segment made immutable on a real ext4 mount, so
//! every write fails with EPERM, as a failing device's do) while Redis is killed and the replay
//! queue is on, and then Redis comes back (with its data: append-only file) and the queue is
//! replayed. A failed write is reported, and must then have happened nowhere: neither queued for
//! replay (through or behind, sync or async) nor sent, so once L2 is back this instance and a
//! fresh one read the value from before it (not the refused one, which the caller was told was
//! not written), also where L1 had stored part of a batch before failing. A failed delete is
//! reported too, but its L2 part is queued all the same (docs/design.md: L2 is tried also when
//! L1 failed): it reads as a miss during the outage (and fail-safe serves no stale copy of it),
//! and once replayed no instance serves the value this L1 still holds. A suspect entry L1 could
//! neither replace with L2's other bytes nor drop is not served unverified once Redis is dead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mount::Mount;
use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, RedisOptions, RedisStore, Storage};

const PREFIX: &str = "app:";

fn config(redis: &RedisServer, replay_dir: Option<&Path>, write_mode: &str) -> CacheConfig {
    let offline = replay_dir.map_or(String::new(), |dir| {
        format!(
            "[offline]\nreplay_dir = \"{}\"\nreplay_interval_ms = 3600000\n[loader]\nfail_safe_max_duration = 3600\n",
            dir.display()
        )
    });
    CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "memory"
        [distributed]
        enabled = true
        type = "redis"
        write_mode = "{write_mode}"
        hosts = ["{}"]
        key_prefix = "{PREFIX}"
        timeout_ms = 300
        breaker_failures = 1
        breaker_cooldown_ms = 100
        {offline}
        "#,
        redis.addr(),
    ))
    .unwrap()
}

/// This instance: a file store L1 on an ext4 mount (the replay queue elsewhere, on a disk that
/// works), Redis L2 with a replay queue, fail-safe on.
struct Instance {
    cache: CacheManager,
    disk: Mount,
    dir: PathBuf,
    _queue: tempfile::TempDir,
}

impl Instance {
    /// `write_mode`: "through" or "behind".
    fn start(redis: &RedisServer, write_mode: &str) -> Instance {
        Instance::start_with(redis, write_mode, true)
    }

    /// `queue`: with the replay queue and fail-safe, or with neither.
    fn start_with(redis: &RedisServer, write_mode: &str, queue: bool) -> Instance {
        let disk = Mount::ext4(16);
        let dir = disk.path().join("store");
        let queue_dir = tempfile::tempdir().unwrap();
        let cache = Instance::manager(redis, &dir, queue.then_some(queue_dir.path()), write_mode);
        Instance {
            cache,
            disk,
            dir,
            _queue: queue_dir,
        }
    }

    fn manager(redis: &RedisServer, dir: &Path, queue_dir: Option<&Path>, write_mode: &str) -> CacheManager {
        let options = uno_cache::FileStoreOptions::default().max_size_mb(8);
        let store = Arc::new(uno_cache::FileStore::open(dir, options).unwrap());
        CacheManager::builder()
            .config(config(redis, queue_dir, write_mode))
            .local(store)
            .build()
            .unwrap()
    }

    /// The same L1 in a new run of a write-through instance without a replay queue: its
    /// entries are suspect until L2 confirms them (`restart_policy = "revalidate"`).
    fn restarted(self, redis: &RedisServer) -> Instance {
        let Instance {
            cache,
            disk,
            dir,
            _queue,
        } = self;
        drop(cache);
        let cache = Instance::manager(redis, &dir, None, "through");
        Instance {
            cache,
            disk,
            dir,
            _queue,
        }
    }

    /// Every write to L1's segments fails (`on`), or works again.
    fn refuse_writes(&self, on: bool) {
        for entry in std::fs::read_dir(&self.dir).unwrap() {
            let path = entry.unwrap().path();
            if path
                .extension()
                .is_some_and(|e| e == uno_cache::files::SEGMENT_EXT)
            {
                self.disk.set_immutable(&path, on);
            }
        }
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.cache.get_raw(key).unwrap()
    }

    /// Replays until the queue is empty (L2 reconnects in the background after its restart).
    fn replay_until_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let replayed = self.cache.replay_now();
            if replayed.is_ok() && self.cache.stats().consistency.replay_pending == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "L2 never took the replay: {replayed:?}, {:?}",
                self.cache.stats().consistency
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Redis that keeps its data across a kill (append-only file, fsync always).
fn persistent_redis() -> RedisServer {
    RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"], None)
}

fn l2_value(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let l2 = RedisStore::connect(RedisOptions::new(redis.addr()).prefix(PREFIX)).unwrap();
    l2.get(key).unwrap().map(|e| e.value)
}

/// A fresh instance with nothing in its L1 and no queue: it reads what L2 holds.
fn fresh_read(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let other = CacheManager::builder()
        .config(config(redis, None, "through"))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        // Connected in the background: a hidden failure reads as a miss, so ask until L2
        // answers a read without an error counted.
        let failures = other.stats().distributed.errors;
        let value = other.get_raw(key).unwrap();
        if other.stats().distributed.errors == failures {
            return value;
        }
        assert!(Instant::now() < deadline, "the fresh instance never reached L2");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loader's error.
#[derive(Debug)]
enum Load {
    SourceDown,
    #[allow(dead_code)]
    Cache(uno_cache::Error),
}

impl From<uno_cache::Error> for Load {
    fn from(e: uno_cache::Error) -> Self {
        Load::Cache(e)
    }
}

fn b(s: &str) -> Option<Vec<u8>> {
    Some(s.as_bytes().to_vec())
}

/// `write` fails at L1 while Redis is dead: "k" had "old" everywhere, "p" had a write queued
/// for replay ("queued") during the outage. Keep L1's segments immutable until after the
/// replay (`writable_before_return = false`), or make them writable again first.
/// `write_mode`: "through" or "behind".
fn a_refused_write_in_an_outage(
    write: impl Fn(&CacheManager) -> uno_cache::Result<()>,
    writable_before_return: bool,
    write_mode: &str,
) {
    let mut redis = persistent_redis();
    let a = Instance::start(&redis, write_mode);
    a.cache.set_raw("k", b"old", None).unwrap();
    a.cache.set_raw("p", b"before", None).unwrap();
    a.cache.flush().unwrap();
    redis.kill();
    a.cache.set_raw("p", b"queued", None).unwrap();
    // With write-behind, once its batch failed and went to the replay queue.
    a.cache.flush().unwrap();
    let queued = a.cache.stats().consistency.queued;
    assert_eq!(queued, 1, "the write of \"p\" during the outage was not queued");

    a.refuse_writes(true);
    assert!(write(&a.cache).is_err(), "L1's write did not fail: no fault");
    let stats = a.cache.stats();
    assert_eq!(
        stats.consistency.queued, queued,
        "a write L1 refused was queued for replay: {stats:?}"
    );
    assert_eq!(stats.consistency.replay_pending, 1, "{stats:?}");
    // Told the write failed, the caller may go on as if it had not been made.
    assert_ne!(
        a.get("k"),
        b("new"),
        "a refused write is served during the outage"
    );
    assert_eq!(
        a.get("p"),
        b("queued"),
        "the older queued write of \"p\" is not what is served"
    );

    if writable_before_return {
        a.refuse_writes(false);
    }
    redis.restart();
    a.replay_until_empty();
    assert_eq!(
        l2_value(&redis, "k"),
        b("old"),
        "L2 took a write the caller was told failed"
    );
    assert_eq!(
        l2_value(&redis, "p"),
        b("queued"),
        "L2 took a write the caller was told failed"
    );
    assert_eq!(a.get("k"), b("old"));
    assert_eq!(a.get("p"), b("queued"));
    assert_eq!(fresh_read(&redis, "k"), b("old"));
    assert_eq!(fresh_read(&redis, "p"), b("queued"));
    a.refuse_writes(false);
}

#[test]
fn a_set_l1_refused_while_redis_was_dead_is_neither_queued_nor_sent_once_redis_returns() {
    a_refused_write_in_an_outage(|c| c.set_raw("k", b"new", None), false, "through");
}

#[test]
fn a_write_behind_set_l1_refused_while_redis_was_dead_is_neither_queued_nor_sent_once_redis_returns() {
    a_refused_write_in_an_outage(|c| c.set_raw("k", b"new", None), false, "behind");
}

#[test]
fn a_set_l1_refused_while_redis_was_dead_is_not_sent_once_l1_and_redis_return() {
    a_refused_write_in_an_outage(|c| c.set_raw("k", b"new", None), true, "through");
}

#[test]
fn a_multi_set_l1_refused_while_redis_was_dead_is_neither_queued_nor_sent_once_redis_returns() {
    a_refused_write_in_an_outage(
        |c| c.multi_set_raw(&[("k", &b"new"[..]), ("p", &b"new"[..])], None),
        false,
        "through",
    );
}

#[test]
fn an_async_set_l1_refused_while_redis_was_dead_is_neither_queued_nor_sent_once_redis_returns() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    a_refused_write_in_an_outage(
        |c| rt.block_on(c.multi_set_raw_async(&[("k", &b"new"[..]), ("p", &b"new"[..])], None)),
        false,
        "through",
    );
}

/// `delete` of "k" (and "p", whose write waits in the queue) fails at L1 while Redis is dead:
/// L1 keeps their values. The delete is queued all the same, so they read as misses during
/// the outage, and once it is replayed no instance serves them, this one included.
fn a_refused_delete_in_an_outage(delete: impl Fn(&CacheManager) -> Vec<uno_cache::Result<u64>>) {
    let mut redis = persistent_redis();
    let a = Instance::start(&redis, "through");
    a.cache.set_raw("k", b"old", None).unwrap();
    a.cache.set_raw("p", b"before", None).unwrap();
    redis.kill();
    a.cache.set_raw("p", b"queued", None).unwrap();

    a.refuse_writes(true);
    for result in delete(&a.cache) {
        assert!(result.is_err(), "L1's delete did not fail: no fault");
    }
    assert_eq!(a.get("k"), None, "a deleted value is served during the outage");
    assert_eq!(a.get("p"), None, "a deleted value is served during the outage");
    let load_failed = a
        .cache
        .get_or_set_with::<Vec<u8>, Load, _>("k", None, || Err(Load::SourceDown));
    assert!(
        matches!(load_failed, Err(Load::SourceDown)),
        "a deleted value is served as a stale copy: {load_failed:?}"
    );

    redis.restart();
    a.replay_until_empty();
    assert_eq!(l2_value(&redis, "k"), None);
    assert_eq!(l2_value(&redis, "p"), None);
    assert_eq!(
        a.get("k"),
        None,
        "L1's copy, which the delete could not remove, is served"
    );
    assert_eq!(
        a.get("p"),
        None,
        "L1's copy, which the delete could not remove, is served"
    );
    assert_eq!(fresh_read(&redis, "k"), None);
    assert_eq!(fresh_read(&redis, "p"), None);
    a.refuse_writes(false);
}

#[test]
fn a_delete_l1_refused_while_redis_was_dead_is_replayed_and_no_instance_serves_the_value() {
    a_refused_delete_in_an_outage(|c| ["k", "p"].map(|key| c.delete(key).map(u64::from)).into());
}

#[test]
fn a_multi_delete_l1_refused_while_redis_was_dead_is_replayed_and_no_instance_serves_the_value() {
    a_refused_delete_in_an_outage(|c| vec![c.multi_delete(&["k", "p"])]);
}

/// A batch L1 stored the first part of before it failed (its directory made immutable, so the
/// roll to a new segment fails after the first run of records was written): the caller is told
/// the batch failed, and nothing of it is queued or sent. During the outage, the part L1 kept
/// is not served: L2, which never got it, cannot be asked, and the caller was told it was not
/// written; an entry the failure only made suspect still is. Once Redis is back, the part L1
/// kept gives way to L2's value, in this instance as in a fresh one. `queue`: with the replay
/// queue and fail-safe, or with neither.
fn a_partly_stored_batch_in_an_outage(queue: bool) {
    let mut redis = persistent_redis();
    let a = Instance::start_with(&redis, "through", queue);
    a.cache.set_raw("k", b"old", None).unwrap();
    a.cache.set_raw("other", b"kept", None).unwrap();
    redis.kill();
    a.disk.set_immutable(&a.dir, true);
    // "k" and the first large value fill the active segment; the second needs a new one.
    let large = vec![7u8; 600 * 1024];
    let written = a.cache.multi_set_raw(
        &[("k", &b"new"[..]), ("large", &large[..]), ("larger", &large[..])],
        None,
    );
    assert!(written.is_err(), "L1's write did not fail: no fault");
    assert_eq!(
        a.cache.stats().consistency.queued,
        0,
        "a write L1 refused was queued"
    );
    a.disk.set_immutable(&a.dir, false);

    assert_eq!(
        a.get("k"),
        None,
        "the part of a failed write L1 kept is served while L2 cannot be asked"
    );
    assert_eq!(
        a.get("large"),
        None,
        "the part of a failed write L1 kept is served while L2 cannot be asked"
    );
    let batch = a.cache.multi_get_raw(&["k", "large", "other"]).unwrap();
    assert_eq!(
        batch.keys().collect::<Vec<_>>(),
        vec!["other"],
        "a batch read serves the part of a failed write L1 kept, or not the entry the failure \
         only made suspect"
    );
    assert_eq!(
        a.get("other"),
        b("kept"),
        "an entry the failure only made suspect is not served while L2 is down"
    );
    let withheld = a.cache.stats().consistency.withheld_unverified;
    assert_eq!(withheld, 4, "{:?}", a.cache.stats().consistency);

    redis.restart();
    assert_eq!(fresh_read(&redis, "k"), b("old"));
    assert_eq!(fresh_read(&redis, "large"), None);
    assert_eq!(
        l2_value(&redis, "k"),
        b("old"),
        "L2 took a write the caller was told failed"
    );
    // Once this instance reaches L2 again (reconnected in the background).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let failures = a.cache.stats().distributed.errors;
        let value = a.get("k");
        if a.cache.stats().distributed.errors == failures {
            assert_eq!(value, b("old"), "the part of a failed write L1 kept is served");
            break;
        }
        assert!(Instant::now() < deadline, "this instance never reached L2 again");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        a.get("large"),
        None,
        "the part of a failed write L1 kept is served"
    );
}

#[test]
fn a_multi_set_l1_stored_part_of_while_redis_was_dead_is_not_served_until_redis_returns() {
    a_partly_stored_batch_in_an_outage(true);
}

#[test]
fn a_multi_set_l1_stored_part_of_without_a_replay_queue_is_not_served_until_redis_returns() {
    a_partly_stored_batch_in_an_outage(false);
}

/// A suspect entry (restored by a restart) whose revalidation finds other bytes in L2, where L1
/// refuses both the copy of them and the removal of the entry, is not served unverified once
/// Redis is dead: it holds a value L2 replaced. (It was: the failed copy was only counted.)
#[test]
fn a_suspect_entry_l1_could_not_replace_with_l2s_bytes_is_not_served_once_redis_is_dead() {
    let mut redis = RedisServer::start();
    let a = Instance::start_with(&redis, "through", false);
    a.cache.set_raw("k", b"old", None).unwrap();
    a.cache.flush().unwrap();
    let a = a.restarted(&redis);
    let l2 = RedisStore::connect(RedisOptions::new(redis.addr()).prefix(PREFIX)).unwrap();
    l2.set("k", b"new", None).unwrap();
    // So that the run has a segment of its own, which is made immutable too.
    a.cache.set_raw("other", b"x", None).unwrap();

    a.refuse_writes(true);
    assert_eq!(a.get("k"), b("new"), "the revalidation did not answer L2's bytes");
    let stats = a.cache.stats();
    assert_eq!(stats.consistency.revalidated_replaced, 1, "{stats:?}");
    assert!(
        stats.local.errors >= 1,
        "L1's copy did not fail: no fault; {stats:?}"
    );

    redis.kill();
    assert_eq!(
        a.get("k"),
        None,
        "the suspect entry L2 had replaced is served unverified in the outage"
    );
    assert_eq!(a.cache.stats().consistency.withheld_unverified, 1);
    a.refuse_writes(false);
}
