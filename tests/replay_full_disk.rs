//! The replay queue on a real device that fills while L2 is away: the push that finds no room
//! fails with a typed `DiskFull` naming the log, every push that returned is still pending after
//! a reopen on the still-full device, the loss of what was refused is reported, and once room
//! comes back `recover()` makes the queue take writes again, a rewrite that cannot fit yet
//! saying how many bytes it needs. And through a manager whose L2 is a real Redis: while the
//! device stays full, the replay gets every queued op to L2 once L2 is back (acks held in
//! memory), and the recovery once there is room leaves them out of the log; a write the full
//! queue refused leaves L1 again.
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

use std::collections::BTreeMap;
use std::path::Path;

use mount::Mount;
use support::{wait_until, RedisServer};
use uno_cache::distributed::envelope;
use uno_cache::replay::{ReplayAction, ReplayOptions, ReplayQueue, LOG_FILE};
use uno_cache::{CacheConfig, CacheManager, Error};

const KIB: u64 = 1024;

fn open(dir: &Path) -> ReplayQueue {
    ReplayQueue::open(dir, ReplayOptions::default()).unwrap()
}

fn value(i: usize) -> Vec<u8> {
    (0..1500).map(|j| (i.wrapping_mul(31) + j) as u8).collect()
}

/// key → (seq, action) of every push that returned.
type Model = BTreeMap<String, (u64, ReplayAction)>;

fn pending(q: &ReplayQueue) -> Model {
    q.pending()
        .into_iter()
        .map(|o| (o.key, (o.seq, o.action)))
        .collect()
}

#[test]
fn pushes_that_returned_on_a_filling_device_survive_and_the_queue_recovers_once_there_is_room() {
    let fs = Mount::tmpfs(2048);
    let dir = fs.path();
    let q = open(dir);
    // Leave about 300 KiB: room for the queue's pushes, then none.
    let ballast = fs.fill("ballast");
    let full = std::fs::metadata(&ballast).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .unwrap()
        .set_len(full - 300 * KIB)
        .unwrap();

    let mut model = Model::new();
    let mut i = 0usize;
    let failure = loop {
        i += 1;
        assert!(i < 10_000, "the device never filled");
        // Every third op deletes an earlier key: a delete that returned must never be lost.
        let (key, result) = if i.is_multiple_of(3) {
            let key = format!("k{}", i / 2);
            (
                key.clone(),
                q.push_delete(&key).map(|o| (o, ReplayAction::Delete)),
            )
        } else {
            let key = format!("k{i}");
            let v = value(i);
            let action = ReplayAction::Set {
                value: v.clone(),
                expires_at_ms: 0,
            };
            (key.clone(), q.push_set(&key, &v, 0).map(|o| (o, action)))
        };
        match result {
            Ok((outcome, action)) => {
                model.insert(key, (outcome.seq().unwrap(), action));
            }
            Err(e) => break e,
        }
    };
    match &failure {
        Error::DiskFull { path, .. } => assert_eq!(path, &dir.join(LOG_FILE), "{failure}"),
        other => panic!("expected DiskFull naming the log, got {other:?}"),
    }
    assert!(failure.to_string().contains("no space left"), "{failure}");
    assert!(
        q.is_overflowed(),
        "the failed push may be lost: the queue must say so"
    );
    // Refused now, and counted.
    assert!(q.push_delete("refused").is_err());
    assert!(q.stats().lost >= 1, "{:?}", q.stats());
    // Still full: the rewrite cannot be written, and the error says how much it needs.
    let needed = match q.recover() {
        Err(Error::DiskFull { needed, .. }) => needed,
        other => panic!("expected DiskFull from recover on a full device, got {other:?}"),
    };
    assert!(needed >= q.bytes(), "{needed}");
    // And the stats say so, for an operator who sees only them.
    let stats = q.stats();
    assert!(stats.write_failure.is_some(), "{stats:?}");
    assert_eq!(stats.recovery_needs_bytes, needed, "{stats:?}");
    assert!(
        stats
            .recovery_failure
            .as_deref()
            .is_some_and(|e| e.contains("no space left")),
        "{stats:?}"
    );
    drop(q);

    // The process ends on the full device; the next one opens there all the same.
    let q = open(dir);
    let found = pending(&q);
    for (key, op) in &model {
        assert_eq!(found.get(key), Some(op), "{key}: a push that returned was lost");
    }
    assert!(q.is_overflowed(), "the loss of the refused ops was forgotten");

    // Still full: this process's first push fails and latches the queue too.
    assert!(q.push_set("again", &value(0), 0).is_err());
    assert!(q.push_delete("after").is_err(), "a latched queue took a push");

    assert!(q.recover().is_err(), "the new log fit on the full device");
    assert!(q.stats().recovery_needs_bytes >= q.bytes(), "{:?}", q.stats());
    // Room comes back: recover() writes the log anew from memory without a reopen, the queue
    // takes writes again, and they survive a reopen.
    fs.remove(&ballast);
    assert!(q.recover().unwrap(), "the queue was latched");
    let stats = q.stats();
    assert_eq!(
        (
            stats.write_failure,
            stats.recovery_failure,
            stats.recovery_needs_bytes
        ),
        (None, None, 0)
    );
    q.push_delete("after").unwrap();
    drop(q);
    let q = open(dir);
    let found = pending(&q);
    for (key, op) in &model {
        assert_eq!(found.get(key), Some(op), "{key}");
    }
    assert!(q.is_pending("after"));
    assert!(q.is_overflowed());
}

/// Keys deleted and keys set while L2 was away: more than one replay batch of each.
const OPS: usize = 300;

fn l2_value(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(format!("full:{key}"))
        .query(&mut redis.raw())
        .unwrap();
    raw.map(|raw| raw.get(envelope::HEADER_LEN..).unwrap().to_vec())
}

#[test]
fn while_the_device_stays_full_every_queued_op_reaches_l2_and_the_recovery_drops_them_from_the_log() {
    let redis = RedisServer::start();
    let fs = Mount::tmpfs(4096);
    let dir = fs.path();
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "memory"
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "full:"
            timeout_ms = 200
            breaker_failures = 1
            breaker_cooldown_ms = 100
            [offline]
            replay_dir = {:?}
            "#,
            redis.addr(),
            dir.display().to_string()
        ))
        .unwrap(),
    )
    .unwrap();
    let q = std::sync::Arc::clone(cache.replay_queue().unwrap());
    for i in 0..OPS {
        cache.set_raw(&format!("d{i}"), b"old", None).unwrap();
        cache.set_raw(&format!("s{i}"), b"old", None).unwrap();
    }
    // L2 away: the deletes and sets are queued.
    redis.pause();
    for i in 0..OPS {
        cache.delete(&format!("d{i}")).unwrap();
        cache
            .set_raw(&format!("s{i}"), format!("new-{i}").as_bytes(), None)
            .unwrap();
    }
    assert_eq!(q.len(), 2 * OPS, "every op was queued");
    // The device fills and the queue's next write latches it.
    let ballast = fs.fill("ballast");
    assert!(q.push_set("latch", &[7u8; 64 * 1024], 0).is_err());
    assert!(q.stats().write_failure.is_some(), "{:?}", q.stats());

    // L2 is back, the device still full: every op reaches L2, deletes and sets.
    redis.resume();
    let missing = |redis: &RedisServer| {
        (0..OPS)
            .filter(|i| {
                l2_value(redis, &format!("d{i}")).is_some()
                    || l2_value(redis, &format!("s{i}")) != Some(format!("new-{i}").into_bytes())
            })
            .count()
    };
    wait_until("every queued op reaches L2 while the device is full", || {
        let _ = cache.replay_now();
        missing(&redis) == 0
    });
    let stats = q.stats();
    assert!(stats.write_failure.is_some(), "the device had room: {stats:?}");
    assert_eq!(
        (stats.pending, stats.acks_held),
        (0, 2 * OPS as u64 + 1),
        "{stats:?}"
    );
    let consistency = cache.stats().consistency;
    assert_eq!(
        (consistency.replay_pending, consistency.replay_acks_held),
        (0, 2 * OPS as u64 + 1),
        "{consistency:?}"
    );
    // Their keys still read as pending: the log holds their ops until it is written anew.
    assert!(q.is_pending("d0") && q.is_pending(&format!("s{}", OPS - 1)));

    // Room back: the recovery writes the log without them, and a reopen replays none of them.
    fs.remove(&ballast);
    q.recover().unwrap();
    let stats = q.stats();
    assert_eq!((stats.write_failure, stats.acks_held), (None, 0));
    assert!(!q.is_pending("d0"));
    drop(q);
    drop(cache);
    let reopened = open(dir);
    assert_eq!(reopened.pending(), Vec::new(), "the log still held replayed ops");
    assert!(reopened.is_empty());
}

/// A latched queue on a device that stays full: the replay thread's automatic recovery, which
/// writes every pending op to `replay.log.new` before it meets the full device, is tried once
/// and then skipped while the device has no more room (it took space from the L1 store on that
/// device once a second); once room comes back, the next tick recovers.
#[test]
fn on_a_device_that_stays_full_a_failed_recovery_is_not_retried_until_room_comes_back() {
    let mut redis = RedisServer::start();
    let fs = Mount::tmpfs(4096);
    let dir = fs.path();
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "memory"
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "full:"
            timeout_ms = 200
            breaker_failures = 1
            [offline]
            replay_dir = {:?}
            replay_interval_ms = 10
            "#,
            redis.addr(),
            dir.display().to_string()
        ))
        .unwrap(),
    )
    .unwrap();
    let q = std::sync::Arc::clone(cache.replay_queue().unwrap());
    redis.kill();
    for i in 0..50 {
        cache.set_raw(&format!("k{i}"), &value(i), None).unwrap();
    }
    assert_eq!(q.len(), 50);
    let ballast = fs.fill("ballast");
    assert!(q.push_set("latch", &[7u8; 64 * 1024], 0).is_err());
    // Each skip or try is a tick at least a second after the last: three seconds or more.
    wait_until("three automatic recoveries skipped or four tried", || {
        let stats = q.stats();
        stats.recoveries_skipped >= 3 || stats.recovery_attempts >= 4
    });
    let stats = q.stats();
    assert_eq!(stats.recovery_attempts, 1, "{stats:?}");
    assert!(stats.recovery_needs_bytes >= q.bytes(), "{stats:?}");
    assert!(stats.write_failure.is_some(), "{stats:?}");

    fs.remove(&ballast);
    wait_until("the replay thread recovers once there is room", || {
        q.stats().write_failure.is_none()
    });
    assert_eq!(q.stats().recovery_attempts, 2, "{:?}", q.stats());
    assert_eq!(q.len(), 51, "every op kept, the latching one included");
}

/// A write whose L2 step failed (hidden by `fallback_on_error`) and whose op the replay queue
/// then refused (its device full) reaches the caller as that error, and nothing will send it to
/// L2: L1 must not keep it either, as after any write L2 failed that nothing replays. Two ways
/// in: an L2 call that failed, and a key that already waits in the queue (the write goes
/// straight there). Kept, L1 served the failed write until its TTL while L2 (and every other
/// instance) held, and after the replay got, the older value.
#[test]
fn a_write_the_full_replay_queue_refused_is_not_kept_in_l1_alone() {
    let mut redis = RedisServer::start();
    let fs = Mount::tmpfs(4096);
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "memory"
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "full:"
            timeout_ms = 200
            [offline]
            replay_dir = {:?}
            replay_interval_ms = 3600000
            "#,
            redis.addr(),
            fs.path().display().to_string()
        ))
        .unwrap(),
    )
    .unwrap();
    let q = std::sync::Arc::clone(cache.replay_queue().unwrap());
    cache.set_raw("failed", b"old", None).unwrap();
    cache.set_raw("waiting", b"old", None).unwrap();
    redis.kill();
    // Queued while there is room: "waiting" has an op in the queue.
    cache.set_raw("waiting", b"queued", None).unwrap();
    assert!(q.is_pending("waiting"));
    let ballast = fs.fill("ballast");
    assert!(q.push_set("latch", &[7u8; 64 * 1024], 0).is_err());

    let failed = cache.set_raw("failed", b"new", None);
    assert!(failed.is_err(), "the queue took the op: {failed:?}");
    let waiting = cache.set_raw("waiting", b"new", None);
    assert!(waiting.is_err(), "the queue took the op: {waiting:?}");

    // L2 comes back empty and takes what the queue holds; the queue is written anew once there
    // is room, so no key reads as pending any more.
    redis.restart();
    wait_until("the queue is replayed", || {
        let _ = cache.replay_now();
        q.stats().pending == 0
    });
    fs.remove(&ballast);
    q.recover().unwrap();
    assert!(!q.is_pending("waiting"));
    for key in ["waiting", "failed"] {
        let in_l2 = l2_value(&redis, key);
        assert_ne!(
            in_l2.as_deref(),
            Some(&b"new"[..]),
            "{key}: L2 took the refused write"
        );
        assert_eq!(
            cache.local().get(key).unwrap().map(|e| e.value),
            None,
            "{key}: L1 kept the write the caller was told failed (L2 holds {in_l2:?})"
        );
        assert_eq!(
            cache.get_raw(key).unwrap(),
            in_l2,
            "{key}: the manager answered the failed write, not what L2 holds"
        );
    }
}
