//! Per-key ordering inside one manager (issue 14): the writes and deletes of one key reach L1
//! and L2 in the same order, so once the calls returned and the queue is flushed the manager's
//! answer, its L1 and its L2 agree, and a read never returns a value a completed write replaced.
//!
//! Each schedule of the issue is forced through the public API with a [`GatedStore`] around the
//! real levels (a `FileStore` L1, a `RedisStore` L2 on a real `redis-server`) that holds one call
//! at a chosen point, in both write modes ("through" and "behind"). Also: writes of other keys
//! do not wait for a held one; batches; the async API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;
#[path = "support/mod.rs"]
mod support;

use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use manager_support::gated::{GatedStore, Point};
use support::RedisServer;
use uno_cache::{
    CacheConfig, CacheManager, FileStore, FileStoreOptions, RedisOptions, RedisStore, Storage, WriteMode,
};

/// How long a call that should be able to run whole is given to do so. Only the "does it wait"
/// assertions depend on it; the end states are checked after every call has returned.
const RUNS_WHOLE: Duration = Duration::from_millis(300);

/// A key's value in L1, in L2 and through the manager.
type Seen = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>);

struct Rig {
    cache: CacheManager,
    l1: Arc<GatedStore<FileStore>>,
    l2: Arc<GatedStore<RedisStore>>,
    file: Arc<FileStore>,
    redis: Arc<RedisStore>,
    _dir: tempfile::TempDir,
}

fn rig(server: &RedisServer, mode: WriteMode) -> Rig {
    rig_with(server, mode, |_| {})
}

fn rig_with(server: &RedisServer, mode: WriteMode, tune: impl FnOnce(&mut CacheConfig)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(FileStore::open(dir.path(), FileStoreOptions::default()).unwrap());
    let redis = Arc::new(
        RedisStore::connect(
            RedisOptions::new(server.addr())
                .prefix("ord:")
                .timeout(Duration::from_secs(5)),
        )
        .unwrap(),
    );
    let l1 = GatedStore::new(file.clone());
    let l2 = GatedStore::new(redis.clone());
    let mut config = CacheConfig::default();
    config.distributed.write_mode = mode;
    config.distributed.timeout_ms = 5000;
    tune(&mut config);
    let cache = CacheManager::builder()
        .config(config)
        .local(l1.clone())
        .distributed(l2.clone())
        .build()
        .unwrap();
    Rig {
        cache,
        l1,
        l2,
        file,
        redis,
        _dir: dir,
    }
}

impl Rig {
    /// The key's value in L1, in L2 and through the manager, after flushing the queue.
    fn state(&self, key: &str) -> Seen {
        self.cache.flush().unwrap();
        let l1 = Storage::get(&*self.file, key).unwrap().map(|e| e.value);
        let l2 = Storage::get(&*self.redis, key).unwrap().map(|e| e.value);
        let answer = self.cache.get_raw(key).unwrap();
        (l1, l2, answer)
    }

    /// Asserts that L1 (when it holds the key), L2 and the manager all say `expected`.
    fn assert_agree(&self, key: &str, expected: Option<&[u8]>, schedule: &str) {
        let (l1, l2, answer) = self.state(key);
        let show = |v: &Option<Vec<u8>>| v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
        let msg = format!(
            "{schedule}: L1={:?} L2={:?} manager={:?}, expected {:?}",
            show(&l1),
            show(&l2),
            show(&answer),
            expected.map(|v| String::from_utf8_lossy(v).into_owned())
        );
        assert!(l1.is_none() || l1.as_deref() == expected, "{msg}");
        assert_eq!(l2.as_deref(), expected, "{msg}");
        assert_eq!(answer.as_deref(), expected, "{msg}");
    }
}

/// Runs `call` on its own thread; the receiver gets a message when it returned.
fn spawn<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> (JoinHandle<T>, Receiver<()>) {
    let (done_tx, done_rx) = channel();
    let handle = std::thread::spawn(move || {
        let out = call();
        let _ = done_tx.send(());
        out
    });
    (handle, done_rx)
}

fn modes() -> [(WriteMode, &'static str); 2] {
    [(WriteMode::Through, "through"), (WriteMode::Behind, "behind")]
}

/// Rows 1 and 3: `delete(k)` does its L1 step; `set(k, a)` is called, and waits for it (were it
/// to run whole, the delete's L2 step would then take `a` out of L2 alone); then the delete's
/// L2 step (write-through) or its settling of the queue (write-behind).
fn delete_held_after_l1_then_set(mode: WriteMode, name: &str) {
    let server = RedisServer::start();
    let r = rig(&server, mode);
    r.cache.set_raw("k", b"old", None).unwrap();
    r.cache.flush().unwrap();
    let gate = r.l1.gate("delete", "k", Point::After);
    let cache = r.cache.clone();
    let (deleting, _) = spawn(move || cache.delete("k").unwrap());
    gate.wait_entered();
    let cache = r.cache.clone();
    let (setting, set_done) = spawn(move || cache.set_raw("k", b"a", None).unwrap());
    assert!(
        set_done.recv_timeout(RUNS_WHOLE).is_err(),
        "{name}: the set of k ran whole while the delete was between its levels"
    );
    gate.release();
    deleting.join().unwrap();
    setting.join().unwrap();
    r.assert_agree(
        "k",
        Some(b"a"),
        &format!("{name}: delete held after L1, set ran whole"),
    );
}

#[test]
fn write_through_a_set_during_a_delete_between_its_levels_leaves_both_levels_with_the_set() {
    delete_held_after_l1_then_set(WriteMode::Through, "write-through");
}

#[test]
fn write_behind_a_set_during_a_delete_between_its_levels_leaves_both_levels_with_the_set() {
    delete_held_after_l1_then_set(WriteMode::Behind, "write-behind");
}

/// Rows 2 and 4: `set(k, a)` does its L1 step; `set(k, b)` is called, and waits for it; then
/// a's L2 step (or a is queued), then b.
fn set_held_after_l1_then_set(mode: WriteMode, name: &str) {
    let server = RedisServer::start();
    let r = rig(&server, mode);
    let gate = r.l1.gate("set", "k", Point::After);
    let cache = r.cache.clone();
    let (first, _) = spawn(move || cache.set_raw("k", b"a", None).unwrap());
    gate.wait_entered();
    let cache = r.cache.clone();
    let (second, second_done) = spawn(move || cache.set_raw("k", b"b", None).unwrap());
    assert!(
        second_done.recv_timeout(RUNS_WHOLE).is_err(),
        "{name}: set b ran whole while set a was between its levels"
    );
    gate.release();
    first.join().unwrap();
    second.join().unwrap();
    r.assert_agree(
        "k",
        Some(b"b"),
        &format!("{name}: set a held after L1, then set b"),
    );
}

#[test]
fn write_through_two_sets_of_a_key_reach_both_levels_in_the_same_order() {
    set_held_after_l1_then_set(WriteMode::Through, "write-through");
}

#[test]
fn write_behind_two_sets_of_a_key_reach_both_levels_in_the_same_order() {
    set_held_after_l1_then_set(WriteMode::Behind, "write-behind");
}

/// Tags and prefixes: `invalidate_prefix` drops L1's keys, then deletes L2's with a scan. A set
/// of a key under the prefix that runs whole between the two steps loses its L2 copy to the
/// scan; its L1 copy must go too (write-through: both gone). With write-behind the set's queued
/// L2 write may land before the scan or after it, so either answer is right, as long as the
/// levels agree.
fn set_during_a_prefix_invalidation_between_its_levels(mode: WriteMode, name: &str) {
    let server = RedisServer::start();
    let r = rig_with(&server, mode, |config| {
        // Prefix deletion in L2 runs on the tag Redis, which is the L2's here.
        config.distributed.enabled = true;
        config.distributed.hosts = vec![server.addr()];
        config.distributed.key_prefix = "ord:".to_owned();
    });
    r.cache.set_raw("p:k", b"old", None).unwrap();
    r.cache.flush().unwrap();
    let gate = r.l1.gate("delete_many", "p:k", Point::After);
    let cache = r.cache.clone();
    let (invalidating, _) = spawn(move || cache.invalidate_prefix("p:").unwrap());
    gate.wait_entered();
    let cache = r.cache.clone();
    let (setting, set_done) = spawn(move || cache.set_raw("p:k", b"a", None).unwrap());
    assert!(
        set_done.recv_timeout(Duration::from_secs(10)).is_ok(),
        "{name}: a set waited for an L1-only drop of its key"
    );
    gate.release();
    invalidating.join().unwrap();
    setting.join().unwrap();
    let (l1, l2, answer) = r.state("p:k");
    let msg = format!(
        "{name}: prefix invalidation held after L1, set ran whole: L1={l1:?} L2={l2:?} manager={answer:?}"
    );
    assert!(l1.is_none() || l1 == l2, "{msg}");
    assert_eq!(answer, l2, "{msg}");
    match mode {
        WriteMode::Through => assert_eq!(l2, None, "{msg}"),
        WriteMode::Behind => assert!(l2.is_none() || l2.as_deref() == Some(&b"a"[..]), "{msg}"),
    }
}

#[test]
fn write_through_a_set_during_a_prefix_invalidation_never_stays_in_l1_alone() {
    set_during_a_prefix_invalidation_between_its_levels(WriteMode::Through, "write-through");
}

#[test]
fn write_behind_a_set_during_a_prefix_invalidation_never_stays_in_l1_alone() {
    set_during_a_prefix_invalidation_between_its_levels(WriteMode::Behind, "write-behind");
}

/// Row 5: L2 holds `old`; `set(k, new)` returns; a `delete(k)` is in flight (its L2 call held);
/// `get(k)` must not answer `old`. In write-behind, `new` is kept in the queue (not in flight)
/// by holding the writer on another key's batch first.
fn read_during_a_delete_in_flight(mode: WriteMode, name: &str) {
    let server = RedisServer::start();
    let r = rig(&server, mode);
    r.cache.set_raw("k", b"old", None).unwrap();
    r.cache.flush().unwrap();
    let writer = (mode == WriteMode::Behind).then(|| {
        let gate = r.l2.gate("set_each", "other", Point::Before);
        r.cache.set_raw("other", b"x", None).unwrap();
        gate.wait_entered();
        gate
    });
    r.cache.set_raw("k", b"new", None).unwrap();
    let l2_delete = r.l2.gate("delete", "k", Point::Before);
    let cache = r.cache.clone();
    let (deleting, _) = spawn(move || cache.delete("k").unwrap());
    l2_delete.wait_entered();
    let during = r.cache.get_raw("k").unwrap();
    let during_many = r.cache.multi_get_raw(&["k", "absent"]).unwrap().remove("k");
    l2_delete.release();
    if let Some(gate) = writer {
        gate.release();
    }
    assert!(deleting.join().unwrap(), "{name}: the delete found the key");
    for (what, answer) in [("get", during), ("multi_get", during_many)] {
        assert_ne!(
            answer.as_deref(),
            Some(&b"old"[..]),
            "{name}: {what} during the delete answered a value a completed set had replaced"
        );
    }
    r.assert_agree("k", None, &format!("{name}: after the delete"));
}

#[test]
fn write_behind_a_read_during_a_delete_never_answers_the_value_a_completed_set_replaced() {
    read_during_a_delete_in_flight(WriteMode::Behind, "write-behind");
}

#[test]
fn write_through_a_read_during_a_delete_never_answers_the_value_a_completed_set_replaced() {
    read_during_a_delete_in_flight(WriteMode::Through, "write-through");
}

/// Batches: `multi_delete([k, j])` does its L1 step; `multi_set` of k and `set` of j are called,
/// and wait for it; then the batch's L2 step.
#[test]
fn batches_keep_per_key_order_across_both_levels() {
    for (mode, name) in modes() {
        let server = RedisServer::start();
        let r = rig(&server, mode);
        r.cache
            .multi_set_raw(&[("k", b"old"), ("j", b"old")], None)
            .unwrap();
        r.cache.flush().unwrap();
        let gate = r.l1.gate("delete_many", "k", Point::After);
        let cache = r.cache.clone();
        let (deleting, _) = spawn(move || cache.multi_delete(&["k", "j"]).unwrap());
        gate.wait_entered();
        let cache = r.cache.clone();
        let (setting, set_done) = spawn(move || {
            cache.multi_set_raw(&[("k", b"a"), ("z", b"z")], None).unwrap();
            cache.set_raw("j", b"b", None).unwrap();
        });
        assert!(
            set_done.recv_timeout(RUNS_WHOLE).is_err(),
            "{name}: the multi_set of k ran whole while the multi_delete was between its levels"
        );
        gate.release();
        assert_eq!(deleting.join().unwrap(), 2);
        setting.join().unwrap();
        r.assert_agree(
            "k",
            Some(b"a"),
            &format!("{name}: multi_delete held, multi_set ran"),
        );
        r.assert_agree("j", Some(b"b"), &format!("{name}: multi_delete held, set ran"));
        r.assert_agree(
            "z",
            Some(b"z"),
            &format!("{name}: multi_delete held, multi_set ran"),
        );
    }
}

/// The async API: `delete_async(k)` does its L1 step; `set_async(k, a)` is called, and waits
/// for it; then the delete's L2 step.
#[test]
fn async_a_set_during_a_delete_between_its_levels_leaves_both_levels_with_the_set() {
    for (mode, name) in modes() {
        let server = RedisServer::start();
        let r = rig(&server, mode);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(3)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(r.cache.set_raw_async("k", b"old", None)).unwrap();
        r.cache.flush().unwrap();
        let gate = r.l1.gate("delete", "k", Point::After);
        let cache = r.cache.clone();
        let deleting = rt.spawn(async move { cache.delete_async("k").await.unwrap() });
        gate.wait_entered();
        let cache = r.cache.clone();
        let (done_tx, done_rx) = channel();
        let setting = rt.spawn(async move {
            cache.set_raw_async("k", b"a", None).await.unwrap();
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(RUNS_WHOLE).is_err(),
            "async {name}: the set of k ran whole while the delete was between its levels"
        );
        gate.release();
        rt.block_on(async {
            deleting.await.unwrap();
            setting.await.unwrap();
        });
        r.assert_agree(
            "k",
            Some(b"a"),
            &format!("async {name}: delete held after L1, set ran whole"),
        );
    }
}

/// The price of the ordering is paid only by writes of the same key: while a set of `k` is held
/// between its levels, a second set of `k` waits for it, and sets of other keys run whole.
#[test]
fn a_write_waits_for_an_earlier_write_of_its_key_and_not_for_writes_of_other_keys() {
    for (mode, name) in modes() {
        let server = RedisServer::start();
        let r = rig(&server, mode);
        let gate = r.l1.gate("set", "k", Point::After);
        let cache = r.cache.clone();
        let (first, _) = spawn(move || cache.set_raw("k", b"a", None).unwrap());
        gate.wait_entered();
        let cache = r.cache.clone();
        let (second, second_done) = spawn(move || cache.set_raw("k", b"b", None).unwrap());
        // Some of them may share "k"'s stripe; none shares its key, so none waits.
        let others: Vec<_> = (0..8)
            .map(|i| {
                let cache = r.cache.clone();
                spawn(move || cache.set_raw(&format!("other{i}"), b"x", None).unwrap())
            })
            .collect();
        let ran_whole = others
            .iter()
            .filter(|(_, done)| done.recv_timeout(Duration::from_secs(10)).is_ok())
            .count();
        assert_eq!(
            ran_whole, 8,
            "{name}: only {ran_whole} of 8 sets of other keys ran while k was held"
        );
        assert!(
            second_done.recv_timeout(RUNS_WHOLE).is_err(),
            "{name}: a second set of k ran whole while the first was between its levels"
        );
        gate.release();
        first.join().unwrap();
        second.join().unwrap();
        for (handle, _) in others {
            handle.join().unwrap();
        }
        r.assert_agree("k", Some(b"b"), name);
    }
}

/// The replay queue: with L2 down, `set(k, a)` is held after its failed L2 call, before it
/// queues the op; `set(k, b)` waits for it, so the queue replays `a` then `b` and, once L2 is
/// back, L1 and L2 both hold `b`. (Without per-key order `b` runs whole, is queued first, and
/// the replay leaves `a` in L2.)
#[test]
fn with_l2_down_the_replay_queue_takes_the_writes_of_a_key_in_their_order() {
    let mut server = RedisServer::start();
    let replay_dir = tempfile::tempdir().unwrap();
    let r = rig_with(&server, WriteMode::Through, |config| {
        config.offline.replay_dir = Some(replay_dir.path().to_path_buf());
        config.distributed.timeout_ms = 1000;
        // Replayed only when the test asks, once L2 is back.
        config.offline.replay_interval_ms = 3_600_000;
    });
    server.kill();
    let gate = r.l2.gate("set", "k", Point::After);
    let cache = r.cache.clone();
    let (first, _) = spawn(move || cache.set_raw("k", b"a", None).unwrap());
    gate.wait_entered();
    let cache = r.cache.clone();
    let (second, second_done) = spawn(move || cache.set_raw("k", b"b", None).unwrap());
    assert!(
        second_done.recv_timeout(RUNS_WHOLE).is_err(),
        "a second set of k ran whole while the first was between L2's failure and the queue"
    );
    gate.release();
    first.join().unwrap();
    second.join().unwrap();
    assert_eq!(
        r.cache.stats().consistency.replay_pending,
        1,
        "k is queued once, its last op kept"
    );
    server.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while r.cache.stats().consistency.replay_pending > 0 {
        if let Err(e) = r.cache.replay_now() {
            assert!(
                std::time::Instant::now() < deadline,
                "L2 never took the replay: {e}"
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    r.assert_agree("k", Some(b"b"), "replay queue");
}
