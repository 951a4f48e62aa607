//! Another instance's invalidation against this instance's writes still on their way to L2:
//! a write-behind write queued or in flight, or an op waiting in the replay queue. Two
//! managers (own file L1s, one Redis as L2, another as backplane and tag store); instance A's
//! L2 connection runs through a proxy that can hold or freeze it. The bug this guards against:
//! A's write, acknowledged before B's delete, tag or prefix invalidation, landed in L2 after it
//! (B's op had already reached L2 when its message came), so the value came back for every
//! instance, and a tagged one came back listed by no tag. And a tagged write-behind set returns
//! only once its value is in L2 and its key tagged again; one whose batch failed into the
//! replay queue is tagged again by the replay once it lands.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/proxy.rs"]
mod proxy;

use std::path::Path;
use std::time::{Duration, Instant};

use proxy::TcpProxy;
use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager};

/// An instance with its L2 at `l2` and its backplane and tags at `bus`; `extra` is TOML added
/// to `[distributed]`. Its replay thread waits an hour between tries: replays are the test's.
fn instance(dir: &Path, l2: &str, bus: &str, extra: &str) -> CacheManager {
    instance_replaying_every(dir, l2, bus, extra, 3_600_000)
}

/// [`instance`] whose replay thread tries every `replay_ms`.
fn instance_replaying_every(dir: &Path, l2: &str, bus: &str, extra: &str, replay_ms: u64) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        [distributed]
        enabled = true
        hosts = ["{l2}"]
        key_prefix = "app:"
        breaker_failures = 1000
        {extra}
        [invalidation]
        enabled = true
        hosts = ["{bus}"]
        [offline]
        replay_interval_ms = {replay_ms}
        "#,
        dir.display()
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

struct Rig {
    l2: RedisServer,
    bus: RedisServer,
    to_l2: TcpProxy,
    /// A's way to the backplane and tag Redis.
    to_bus: TcpProxy,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    /// Write-behind, its L2 through `to_l2`.
    a: CacheManager,
    /// Write-through, straight to L2.
    b: CacheManager,
}

fn rig(a_extra: &str) -> Rig {
    rig_replaying_every(a_extra, 3_600_000)
}

/// [`rig`] whose A's replay thread tries every `replay_ms`.
fn rig_replaying_every(a_extra: &str, replay_ms: u64) -> Rig {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let (to_l2, to_bus) = (TcpProxy::start(&l2.addr()), TcpProxy::start(&bus.addr()));
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = instance_replaying_every(dirs.0.path(), &to_l2.addr(), &to_bus.addr(), a_extra, replay_ms);
    let b = instance(dirs.1.path(), &l2.addr(), &bus.addr(), "timeout_ms = 10000");
    // A's writer has its L2 connection open, so that a hold keeps a batch rather than a connect.
    a.set_raw("warm", b"w", None).unwrap();
    a.flush().unwrap();
    Rig {
        l2,
        bus,
        to_l2,
        to_bus,
        _dirs: dirs,
        a,
        b,
    }
}

fn behind_rig() -> Rig {
    rig("timeout_ms = 10000\nwrite_mode = \"behind\"")
}

/// What L2 holds for `key`, read straight from Redis.
fn in_l2(rig: &Rig, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(format!("app:{key}"))
        .query(&mut rig.l2.raw())
        .unwrap()
}

/// Waits until A's batch is held on its way to L2.
fn wait_held(rig: &Rig) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.to_l2.waiting() == 0 {
        assert!(Instant::now() < deadline, "A's batch never reached the proxy");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `op` on B and waits until A has applied the message it published: A's L1 copy of
/// `key` is dropped last, after A's writes of it on their way to L2 were dealt with.
fn on_b_heard_by_a(rig: &Rig, key: &str, op: impl FnOnce(&CacheManager)) {
    assert!(rig.a.local().get(key).unwrap().is_some(), "A's L1 holds {key}");
    op(&rig.b);
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.a.local().get(key).unwrap().is_some() {
        assert!(Instant::now() < deadline, "A never heard of B's invalidation");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Asserts that `key` is gone from L2 and reads as a miss on both instances.
fn assert_gone_everywhere(rig: &Rig, key: &str) {
    assert_eq!(in_l2(rig, key), None, "A's older write landed in L2 after B's op");
    assert_eq!(rig.b.get_raw(key).unwrap(), None, "B reads {key} back");
    assert_eq!(rig.a.get_raw(key).unwrap(), None, "A reads {key} back");
}

#[test]
fn a_write_behind_in_flight_when_another_instance_deletes_its_key_does_not_stay_in_l2() {
    let rig = behind_rig();
    rig.to_l2.hold();
    rig.a.set_raw("k", b"from a", None).unwrap();
    wait_held(&rig);
    on_b_heard_by_a(&rig, "k", |b| {
        b.delete("k").unwrap();
    });
    rig.to_l2.release();
    rig.a.flush().unwrap();
    assert_gone_everywhere(&rig, "k");
    assert_eq!(rig.a.stats().consistency.write_behind_withdrawn, 1);
}

#[test]
fn a_tagged_write_behind_in_flight_when_another_instance_invalidates_the_tag_does_not_come_back() {
    let rig = behind_rig();
    rig.to_l2.hold();
    std::thread::scope(|scope| {
        // It returns once its value has landed (see below).
        let writer = scope.spawn(|| rig.a.set_raw_with_tags("k", b"from a", None, &["t"]));
        wait_held(&rig);
        on_b_heard_by_a(&rig, "k", |b| {
            assert_eq!(b.invalidate_tag("t").unwrap(), 1, "the tag lists the key");
        });
        rig.to_l2.release();
        writer.join().unwrap().unwrap();
    });
    rig.a.flush().unwrap();
    assert_gone_everywhere(&rig, "k");
}

/// With write-behind, a tagged set returns once its value is in L2 and its key tagged again.
/// Tagged again before the value landed, an invalidation of the tag between the two, heard
/// here only after the landing, left the value in L2 listed by no tag.
#[test]
fn a_tagged_write_behind_returns_once_its_value_is_in_l2() {
    tagged_write_behind_waits_for_l2(false);
}

#[test]
fn async_a_tagged_write_behind_returns_once_its_value_is_in_l2() {
    tagged_write_behind_waits_for_l2(true);
}

fn tagged_write_behind_waits_for_l2(async_api: bool) {
    let rig = behind_rig();
    rig.to_l2.hold();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            if async_api {
                support::block_on(rig.a.set_raw_with_tags_async("k", b"from a", None, &["t"])).unwrap();
            } else {
                rig.a.set_raw_with_tags("k", b"from a", None, &["t"]).unwrap();
            }
            in_l2(&rig, "k")
        });
        wait_held(&rig);
        rig.to_l2.release();
        assert!(
            writer.join().unwrap().is_some(),
            "the tagged set returned before its value was in L2"
        );
    });
}

/// The write waits in the queue (not yet sent) behind another batch that L2 has not answered.
#[test]
fn a_queued_write_behind_under_a_prefix_another_instance_invalidates_never_lands() {
    let rig = behind_rig();
    rig.to_l2.hold();
    rig.a.set_raw("first", b"1", None).unwrap();
    wait_held(&rig);
    rig.a.set_raw("sess:1", b"from a", None).unwrap();
    on_b_heard_by_a(&rig, "sess:1", |b| {
        b.invalidate_prefix("sess:").unwrap();
    });
    rig.to_l2.release();
    rig.a.flush().unwrap();
    assert_gone_everywhere(&rig, "sess:1");
    assert!(
        in_l2(&rig, "first").is_some(),
        "a key the prefix does not cover landed"
    );
}

/// A write of A's own after the message is not touched: only what waited when it came gives way.
#[test]
fn a_write_behind_made_after_another_instances_delete_was_heard_lands() {
    let rig = behind_rig();
    rig.to_l2.hold();
    rig.a.set_raw("k", b"older", None).unwrap();
    wait_held(&rig);
    on_b_heard_by_a(&rig, "k", |b| {
        b.delete("k").unwrap();
    });
    rig.a.set_raw("k", b"newer", None).unwrap();
    rig.to_l2.release();
    rig.a.flush().unwrap();
    assert_eq!(rig.b.get_raw("k").unwrap().as_deref(), Some(&b"newer"[..]));
    assert_eq!(rig.a.get_raw("k").unwrap().as_deref(), Some(&b"newer"[..]));
}

/// A's write-through failed (its L2 connection went silent) and waits in the replay queue;
/// B, which reaches L2, deletes the key. The replay sends a delete, not A's older value.
#[test]
fn a_write_waiting_for_replay_when_another_instance_deletes_its_key_is_replayed_as_a_delete() {
    let rig = rig("timeout_ms = 300");
    rig.a.set_raw("k", b"before", None).unwrap();
    rig.to_l2.freeze();
    rig.a.set_raw("k", b"from a", None).unwrap();
    let queue = rig.a.replay_queue().unwrap();
    assert!(queue.is_pending("k"), "A's failed write waits for replay");
    on_b_heard_by_a(&rig, "k", |b| {
        assert!(b.delete("k").unwrap());
    });
    assert_eq!(rig.a.replay_now().unwrap(), 1);
    assert!(queue.is_empty());
    assert_gone_everywhere(&rig, "k");
}

/// A tagged write-behind set whose batch failed waits in the replay queue; it is tagged again
/// once it left the write-behind queue, before it can reach L2. B then invalidates the tag
/// (finds the key, deletes it from L2, forgets it), and A replays the write before it hears
/// B's message, so nothing withdraws it. The value landed in L2 listed by no tag, out of
/// reach of every later invalidation of the tag; the replay tags it again once it has landed.
#[test]
fn a_tagged_write_replayed_after_another_instance_invalidated_the_tag_stays_tagged() {
    tagged_write_replayed_after_the_tag_was_invalidated(Tagged::Blocking);
}

#[test]
fn async_a_tagged_write_replayed_after_another_instance_invalidated_the_tag_stays_tagged() {
    tagged_write_replayed_after_the_tag_was_invalidated(Tagged::Async);
}

/// The caller gives up while the write's batch is on its way; the tagging its future owes
/// runs once the batch failed (see `Landing`), and the replay owes the key its tags again.
#[test]
fn a_tagged_async_write_given_up_and_replayed_after_another_instance_invalidated_the_tag_stays_tagged() {
    tagged_write_replayed_after_the_tag_was_invalidated(Tagged::AsyncGivenUp);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tagged {
    Blocking,
    Async,
    AsyncGivenUp,
}

fn tagged_write_replayed_after_the_tag_was_invalidated(how: Tagged) {
    let rig = rig("timeout_ms = 300\nwrite_mode = \"behind\"");
    rig.to_l2.freeze();
    let queue = rig.a.replay_queue().unwrap();
    match how {
        Tagged::Blocking => rig.a.set_raw_with_tags("k", b"from a", None, &["t"]).unwrap(),
        Tagged::Async => {
            support::block_on(rig.a.set_raw_with_tags_async("k", b"from a", None, &["t"])).unwrap();
        }
        Tagged::AsyncGivenUp => give_up_once_replay_has_it(&rig, queue),
    }
    assert!(queue.is_pending("k"), "A's failed batch waits for replay");
    // B's message reaches A only once A's replay is done.
    rig.to_bus.hold_on(b"message");
    assert_eq!(rig.b.invalidate_tag("t").unwrap(), 1, "the tag lists the key");
    assert_eq!(rig.a.replay_now().unwrap(), 1);
    assert!(
        in_l2(&rig, "k").is_some(),
        "A's write landed before A heard of B's invalidation"
    );
    rig.to_bus.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    while rig.a.local().get("k").unwrap().is_some() {
        assert!(Instant::now() < deadline, "A never heard of B's invalidation");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(
        rig.b.invalidate_tag("t").unwrap(),
        1,
        "the replayed value in L2 is listed by no tag"
    );
    assert_gone_everywhere(&rig, "k");
}

/// As above, but the tag Redis does not answer A when the replay tags the key again: the
/// tagging is owed again, and the next replay pass, the queue empty by then, makes it. Given
/// up instead (only logged), the value B's invalidation missed stayed in L2 listed by no tag.
#[test]
fn a_replayed_tagged_write_whose_third_tagging_failed_is_tagged_by_the_next_replay_pass() {
    let rig = rig("timeout_ms = 300\nwrite_mode = \"behind\"");
    rig.to_l2.freeze();
    let queue = rig.a.replay_queue().unwrap();
    rig.a.set_raw_with_tags("k", b"from a", None, &["t"]).unwrap();
    assert!(queue.is_pending("k"), "A's failed batch waits for replay");
    // B's message does not reach A before A's replay (then A's connections to the tag Redis
    // and the backplane go silent, new ones get through).
    rig.to_bus.hold_on(b"message");
    assert_eq!(rig.b.invalidate_tag("t").unwrap(), 1, "the tag lists the key");
    let owed = |rig: &Rig| rig.a.stats().consistency.tags_owed;
    assert_eq!(owed(&rig), 1, "the queued tagged write owes its tags");
    rig.to_bus.freeze();
    assert_eq!(rig.a.replay_now().unwrap(), 1);
    assert!(
        in_l2(&rig, "k").is_some(),
        "A's write landed after B's invalidation"
    );
    let stats = rig.a.stats().consistency;
    assert!(stats.retag_failures >= 1, "{stats:?}");
    assert_eq!(stats.tags_owed, 1, "the failed tagging is owed again");
    assert_eq!(rig.a.replay_now().unwrap(), 0, "nothing left to replay");
    assert_eq!(owed(&rig), 0, "the next pass tagged it");
    assert_eq!(
        rig.b.invalidate_tag("t").unwrap(),
        1,
        "the replayed value whose tagging failed is listed by no tag"
    );
    assert_eq!(in_l2(&rig, "k"), None, "the invalidation left the value in L2");
}

/// The tagging a replay owes, failed, is retried by the replay thread with the queue empty by
/// then: it replayed only a queue with ops in it, so the key waited for the next outage.
#[test]
fn the_replay_thread_retries_a_failed_third_tagging_once_the_queue_is_empty() {
    let rig = rig_replaying_every("timeout_ms = 300\nwrite_mode = \"behind\"", 50);
    // Held, not frozen: the replay thread's new connections wait too.
    rig.to_l2.hold();
    let queue = rig.a.replay_queue().unwrap();
    rig.a.set_raw_with_tags("k", b"from a", None, &["t"]).unwrap();
    assert!(queue.is_pending("k"), "A's failed batch waits for replay");
    rig.to_bus.hold_on(b"message");
    assert_eq!(rig.b.invalidate_tag("t").unwrap(), 1, "the tag lists the key");
    // A's tag connection goes silent; the thread's replay lands the value, fails to tag it.
    rig.to_bus.freeze();
    rig.to_l2.freeze();
    rig.to_l2.release();
    let score = || -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg("app:uno-cache:tag:t")
            .arg("k")
            .query(&mut rig.bus.raw())
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while score().is_none() {
        assert!(
            Instant::now() < deadline,
            "the replayed value was never tagged again (in L2: {:?}, pending: {})",
            in_l2(&rig, "k"),
            queue.is_pending("k")
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(queue.is_empty());
    assert_eq!(rig.b.invalidate_tag("t").unwrap(), 1);
    assert_eq!(in_l2(&rig, "k"), None, "the invalidation left the value in L2");
}

/// With the tag Redis not answering A, a replay of many tagged writes waits out one tagging's
/// timeout, not one per key (the rest are owed to the next pass): tried key by key, they held
/// back the replay's message to the other instances, and the manager's drop, which joins the
/// replay thread, for all their timeouts in a row (a batch holds 256).
#[test]
fn a_replay_whose_tagging_times_out_waits_for_one_tag_timeout_not_one_per_key() {
    const KEYS: u32 = 16;
    // A tagging that fails waits at least the tag deadline, here the L2's 300 ms.
    let per_tagging = Duration::from_millis(300);
    let rig = rig("timeout_ms = 300\nwrite_mode = \"behind\"");
    // Held, not frozen: a new connection would get through, and a write's L2 call that
    // succeeds wakes the replay thread. Then dropped, for the replay's new connection. One
    // write at a time, so that each waits for its own batch to fail.
    rig.to_l2.hold();
    for i in 0..KEYS {
        rig.a
            .set_raw_with_tags(&format!("k{i}"), b"v", None, &["t"])
            .unwrap();
    }
    rig.to_l2.freeze();
    rig.to_l2.release();
    let queue = rig.a.replay_queue().unwrap();
    assert_eq!(queue.len(), KEYS as usize, "A's failed batches wait for replay");
    rig.to_bus.hold();
    let began = Instant::now();
    assert_eq!(rig.a.replay_now().unwrap(), u64::from(KEYS));
    let took = began.elapsed();
    rig.to_bus.release();
    assert!(
        took < per_tagging * KEYS / 2,
        "the replay waited {took:?}, a tag timeout per key"
    );
}

/// Tagged writes made together while L2 does not answer: the batch queued behind the one
/// failing fails after it, past the four L2 timeouts a tagged write waits for its batch. Those
/// writes returned, tagged the second time, with their batch still on its way, and were owed
/// nothing once it went to the replay queue (they were not pending yet when they looked): B's
/// invalidation meanwhile left their replayed values listed by no tag.
#[test]
fn tagged_writes_that_gave_up_on_their_failing_batch_are_tagged_by_its_replay() {
    const KEYS: usize = 8;
    let rig = rig("timeout_ms = 300\nwrite_mode = \"behind\"");
    // Held, not frozen, as above.
    rig.to_l2.hold();
    std::thread::scope(|s| {
        for i in 0..KEYS {
            let a = &rig.a;
            s.spawn(move || {
                a.set_raw_with_tags(&format!("k{i}"), b"v", None, &["t"]).unwrap();
            });
        }
    });
    let queue = rig.a.replay_queue().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.len() < KEYS {
        assert!(
            Instant::now() < deadline,
            "A's failed batches never all went to the replay queue"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    rig.to_l2.freeze();
    rig.to_l2.release();
    rig.to_bus.hold_on(b"message");
    assert_eq!(
        rig.b.invalidate_tag("t").unwrap(),
        KEYS as u64,
        "the tag lists the keys"
    );
    assert_eq!(rig.a.replay_now().unwrap(), KEYS as u64);
    rig.to_bus.release();
    assert_eq!(
        rig.b.invalidate_tag("t").unwrap(),
        KEYS as u64,
        "replayed values are listed by no tag"
    );
    for i in 0..KEYS {
        assert_eq!(in_l2(&rig, &format!("k{i}")), None, "k{i} stayed in L2");
    }
}

/// Drives an async tagged write of `k` until its failed batch is in A's replay queue (the
/// future then waits for the batch to leave the write-behind queue), drops it there, and waits
/// for the tagging the dropped future owes.
fn give_up_once_replay_has_it(rig: &Rig, queue: &uno_cache::replay::ReplayQueue) {
    let score = || -> Option<f64> {
        redis::cmd("ZSCORE")
            .arg("app:uno-cache:tag:t")
            .arg("k")
            .query(&mut rig.bus.raw())
            .unwrap()
    };
    // The first tagging's score: the batch fails an L2 timeout after it.
    let mut first = None;
    {
        let write = rig.a.set_raw_with_tags_async("k", b"from a", None, &["t"]);
        let mut write = std::pin::pin!(write);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !queue.is_pending("k") {
            assert!(
                std::future::Future::poll(write.as_mut(), &mut cx).is_pending(),
                "the tagged write finished before its batch failed"
            );
            first = first.or_else(score);
            assert!(
                Instant::now() < deadline,
                "A's batch never went to the replay queue"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let first = first.expect("the key joined its tag before its value was written");
    let deadline = Instant::now() + Duration::from_secs(10);
    while score() <= Some(first) {
        assert!(
            Instant::now() < deadline,
            "the given-up write never tagged its key again"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
