//! Invalidations that must reach the other instances' L1: a write or delete that reaches L2 only
//! through the replay queue, a tag invalidation retried after it failed, and a key list longer
//! than one message carries; and what a received one counts as dropped (`keys_invalidated`),
//! also when this L1 cannot delete (a file store on a real ext4 mount). Two managers in one
//! process share an in-process L2 that can be made to fail, and a backplane on a real
//! `redis-server`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/mount.rs"]
mod mount;

#[path = "support/delegate.rs"]
mod delegate;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use delegate::{Delegate, Wrap, WrapLocal};
use support::{wait_until, RedisServer};
use uno_cache::invalidation::Invalidation;
use uno_cache::{
    CacheConfig, CacheManager, Entry, Error, Freshness, InProcess, LocalStorage, MemoryStore, RedisOptions,
    RedisStore, Result, Storage,
};

/// A shared in-process L2 whose calls fail (as an outage) while `down` is set.
struct Flaky {
    inner: Arc<MemoryStore>,
    down: AtomicBool,
}

impl Flaky {
    fn check(&self, op: &'static str) -> Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Backend {
                level: "L2",
                op,
                reason: "down (test)".to_owned(),
            });
        }
        Ok(())
    }
}

impl Wrap for Flaky {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn name(&self) -> &str {
        "flaky"
    }
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.check("get")?;
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.check("set")?;
        self.inner.set(key, value, ttl)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.check("delete")?;
        self.inner.delete(key)
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.check("get_many")?;
        self.inner.get_many(keys)
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.check("set_many")?;
        self.inner.set_many(items, ttl)
    }
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.check("set_each")?;
        self.inner.set_each(items)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.check("delete_many")?;
        self.inner.delete_many(keys)
    }
}

fn instance(
    redis: &RedisServer,
    l2: &Arc<MemoryStore>,
    tune: impl FnOnce(&mut CacheConfig),
) -> (CacheManager, Arc<Delegate<Flaky>>) {
    let flaky = Arc::new(Delegate(Flaky {
        inner: Arc::clone(l2),
        down: AtomicBool::new(false),
    }));
    let mut config = CacheConfig::default();
    config.invalidation.enabled = true;
    config.invalidation.hosts = vec![redis.addr()];
    tune(&mut config);
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(20_000).unwrap()))
        .distributed(Arc::new(InProcess::shared(Arc::clone(&flaky))))
        .build()
        .unwrap();
    (cache, flaky)
}

/// A sets `key` to `value` and B reads it into its L1, once A's message for the set has arrived
/// (so that it cannot be mistaken for a later one).
fn b_holds_what_a_set(a: &CacheManager, b: &CacheManager, key: &str, value: &[u8]) {
    a.set_raw(key, value, None).unwrap();
    wait_until("B to hear of A's first set", || {
        b.stats().consistency.invalidations_received >= 1
    });
    assert_eq!(
        b.get_raw(key).unwrap().as_deref(),
        Some(value),
        "B holds {key} in L1"
    );
}

/// A write or delete whose L2 call failed is queued for replay, and its message goes out at
/// once, before L2 has the change: another instance drops its copy and reads L2's old value back
/// into its L1. `change` makes that change in A; once the replay has delivered it, B must read
/// `after`, so the replay must publish again.
fn a_replayed_change_reaches_the_other_instance(change: impl Fn(&CacheManager), after: Option<&[u8]>) {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let replay_dir = tempfile::tempdir().unwrap();
    let (a, a_l2) = instance(&redis, &l2, |c| {
        c.offline.replay_dir = Some(replay_dir.path().to_path_buf());
        c.offline.replay_interval_ms = 3_600_000;
    });
    let (b, _) = instance(&redis, &l2, |_| {});
    b_holds_what_a_set(&a, &b, "k", b"v0");

    a_l2.down.store(true, Ordering::SeqCst);
    let before = b.stats().consistency.invalidations_received;
    change(&a);
    assert_eq!(
        a.stats().consistency.replay_pending,
        1,
        "the change is queued for replay"
    );
    wait_until("B to hear of A's change", || {
        b.stats().consistency.invalidations_received > before
    });
    // B reads while A's change is still queued: L2's v0 goes back into B's L1.
    assert_eq!(b.get_raw("k").unwrap().as_deref(), Some(&b"v0"[..]));
    let queued = b.stats().consistency.invalidations_received;

    a_l2.down.store(false, Ordering::SeqCst);
    assert_eq!(a.replay_now().unwrap(), 1);
    assert_eq!(l2.get("k").unwrap().map(|e| e.value).as_deref(), after);
    wait_until("B to hear of the replayed change", || {
        b.stats().consistency.invalidations_received > queued
    });
    assert_eq!(
        b.get_raw("k").unwrap().as_deref(),
        after,
        "B serves v0 after L2 changed"
    );
}

#[test]
fn a_replayed_write_reaches_the_other_instances_l1() {
    a_replayed_change_reaches_the_other_instance(|a| a.set_raw("k", b"v1", None).unwrap(), Some(b"v1"));
}

#[test]
fn a_replayed_delete_reaches_the_other_instances_l1() {
    a_replayed_change_reaches_the_other_instance(
        |a| {
            a.delete("k").unwrap();
        },
        None,
    );
}

/// A change still queued for replay when its instance stopped is replayed when it starts again;
/// the message of that replay must reach the other instances too, even though the replay
/// thread starts while the new instance is still connecting its backplane.
#[test]
fn a_change_replayed_at_start_up_reaches_the_other_instances_l1() {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let replay_dir = tempfile::tempdir().unwrap();
    let with_queue = |c: &mut CacheConfig| {
        c.offline.replay_dir = Some(replay_dir.path().to_path_buf());
        c.offline.replay_interval_ms = 3_600_000;
    };
    let (a, a_l2) = instance(&redis, &l2, with_queue);
    let (b, _) = instance(&redis, &l2, |_| {});
    b_holds_what_a_set(&a, &b, "k", b"v0");
    a_l2.down.store(true, Ordering::SeqCst);
    let before = b.stats().consistency.invalidations_received;
    a.set_raw("k", b"v1", None).unwrap();
    wait_until("B to hear of A's change", || {
        b.stats().consistency.invalidations_received > before
    });
    // B reads while the change is still queued: L2's v0 goes back into B's L1.
    assert_eq!(b.get_raw("k").unwrap().as_deref(), Some(&b"v0"[..]));
    drop(a);
    let queued = b.stats().consistency.invalidations_received;

    // A starts again with L2 up: its replay thread delivers the change at once.
    let (a, _) = instance(&redis, &l2, with_queue);
    wait_until("A's replay at start-up", || {
        l2.get("k").unwrap().map(|e| e.value).as_deref() == Some(&b"v1"[..])
    });
    // L2 has the value before the replay's ack is written.
    wait_until("A's replay to be acked", || {
        a.stats().consistency.replay_pending == 0
    });
    wait_until("B to hear of the change replayed at start-up", || {
        b.stats().consistency.invalidations_received > queued
    });
    assert_eq!(b.get_raw("k").unwrap().as_deref(), Some(&b"v1"[..]));
}

/// `invalidate_tag` takes (reads and deletes) the tag's set before it deletes the members. When
/// that delete fails (here L2 is down and `fallback_on_error = false`, so the caller gets the
/// error), the members are gone from the set: a retry finds nothing to do and returns Ok(0),
/// and the tagged value stays in L2 (and in every L1 that reads it again).
#[test]
fn a_tag_invalidation_that_failed_can_be_retried() {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let (a, a_l2) = instance(&redis, &l2, |c| c.fallback_on_error = false);
    a.set_raw_with_tags("k", b"v", None, &["t"]).unwrap();

    a_l2.down.store(true, Ordering::SeqCst);
    assert!(
        a.invalidate_tag("t").is_err(),
        "L2 is down: the invalidation fails"
    );
    a_l2.down.store(false, Ordering::SeqCst);

    let retried = a.invalidate_tag("t").unwrap();
    assert_eq!(
        (retried, a.get_raw("k").unwrap()),
        (1, None),
        "the retried tag invalidation did nothing: k is still readable (L2 holds {:?})",
        l2.get("k").unwrap().map(|e| e.value)
    );
}

/// A batch delete of more keys than one message carries (9,000 keys of 4,000 bytes: 36 MB, past
/// the backplane's 32 MiB limit) still drops every one of them from the other instance's L1.
#[test]
fn a_delete_of_more_keys_than_one_message_carries_reaches_the_other_instances_l1() {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(20_000).unwrap());
    // A publishes 36 MB: within the default 100 ms, some of its messages timed out on a loaded
    // machine (and were re-sent), which this test counts as failures.
    let (a, _) = instance(&redis, &l2, |c| c.invalidation.publish_timeout_ms = 10_000);
    let (b, _) = instance(&redis, &l2, |_| {});
    let keys: Vec<String> = (0..9_000).map(|i| format!("{i:0>4000}")).collect();
    for key in &keys {
        l2.set(key, b"v", None).unwrap();
        assert_eq!(
            b.get_raw(key).unwrap().as_deref(),
            Some(&b"v"[..]),
            "B holds every key in L1"
        );
    }
    let before = b.stats().consistency.keys_invalidated;
    a.multi_delete(&keys).unwrap();
    assert_eq!(a.stats().consistency.publish_failures, 0);
    wait_until("B to drop the 9,000 keys", || {
        b.stats().consistency.keys_invalidated >= before + 9_000
    });
    let held = keys.iter().filter(|k| b.get_raw(k).unwrap().is_some()).count();
    assert_eq!(held, 0, "B still serves {held} deleted keys");
}

/// `keys_invalidated` counts the keys that invalidations from other instances dropped from this
/// L1, not every key they named: B holds one of the two keys A deletes.
#[test]
fn only_keys_an_invalidation_dropped_from_l1_count_as_invalidated() {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let (a, _) = instance(&redis, &l2, |_| {});
    let (b, _) = instance(&redis, &l2, |_| {});
    b_holds_what_a_set(&a, &b, "held", b"v");
    let before = b.stats().consistency;
    assert_eq!(
        before.keys_invalidated, 0,
        "A's set reached B before B held the key"
    );
    a.multi_delete(&["held", "absent"]).unwrap();
    wait_until("B to hear of A's delete", || {
        b.stats().consistency.invalidations_received > before.invalidations_received
    });
    assert_eq!(b.stats().consistency.keys_invalidated, 1);
    assert_eq!(b.get_raw("held").unwrap(), None);
}

/// A prefix invalidation received while this L1 cannot delete (a file store whose segment was
/// made immutable: the tombstone's write fails with EPERM, a real write error, and latches the
/// store read-only) drops nothing: the keys the store listed are still in it (suspect), so
/// `keys_invalidated` must not count them. It counted every key listed.
#[test]
fn a_prefix_whose_delete_from_l1_failed_counts_no_key_as_invalidated() {
    let redis = RedisServer::start();
    let disk = mount::Mount::ext4(16);
    let store = disk.path().join("store");
    let a = redis_instance(&redis, 10_000, "", "");
    let b = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            [local]
            type = "file"
            path = "{}"
            max_size = 8
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "app:"
            [invalidation]
            enabled = true
            "#,
            store.display(),
            redis.addr(),
        ))
        .unwrap(),
    )
    .unwrap();
    // B is subscribed once it has heard of A's set.
    b_holds_what_a_set(&a, &b, "other", b"o");
    for key in ["session:1", "user:1", "user:2"] {
        b.set_raw(key, b"v", None).unwrap();
    }
    // A invalidates `prefix`; B's stats once B has applied the message.
    let b_drops = |prefix: &str| {
        let heard = b.stats().consistency.invalidations_received;
        let message = Invalidation::Prefix(prefix.to_owned());
        a.backplane().unwrap().publish(&message).unwrap();
        wait_until("B to hear of the prefix", || {
            b.stats().consistency.invalidations_received > heard
        });
        b.stats()
    };
    // While B's L1 can delete, each key it drops counts.
    let before = b.stats();
    let dropped = b_drops("session:");
    assert_eq!(
        dropped.consistency.keys_invalidated,
        before.consistency.keys_invalidated + 1
    );
    assert_eq!(dropped.local.errors, before.local.errors);

    // The tombstones would go into the newest segment, the active one.
    let active = disk.freeze_active_segment(&store);
    let before = b.stats();
    let after = b_drops("user:");
    assert!(
        after.local.errors > before.local.errors,
        "B's L1 deleted the prefix: the test did not make its delete fail"
    );
    assert!(
        b.local().get("user:1").unwrap().is_some(),
        "B's L1 no longer holds user:1"
    );
    assert_eq!(
        after.consistency.keys_invalidated, before.consistency.keys_invalidated,
        "keys L1 still holds were counted as invalidated"
    );
    disk.set_immutable(&active, false);
}

/// A memory L1 in front of a real Redis L2, with a per-call deadline of `timeout_ms`; `top`
/// goes before the tables and `invalidation` into `[invalidation]` (the backplane is on the L2's
/// Redis unless it names other `hosts`).
fn redis_instance(l2: &RedisServer, timeout_ms: u64, top: &str, invalidation: &str) -> CacheManager {
    CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            {top}
            [local]
            type = "memory"
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "app:"
            timeout_ms = {timeout_ms}
            [invalidation]
            enabled = true
            {invalidation}
            "#,
            l2.addr(),
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Starts an async `set` of `key` on `cache` and drops it after `after` (a caller's timeout);
/// whether it was still running then.
fn set_cancelled_after(cache: &CacheManager, key: &str, value: &[u8], after: Duration) -> bool {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(after, cache.set_raw_async(key, value, None))
            .await
            .is_err()
    })
}

/// [`redis_instance`] with the backplane on another Redis (`bus`), so that the L2 can be frozen
/// while the backplane stays up.
fn instance_on(l2: &RedisServer, bus: &RedisServer) -> CacheManager {
    redis_instance(l2, 10_000, "", &format!("hosts = [\"{}\"]", bus.addr()))
}

/// An async write dropped while it waits for L2 (a caller's timeout) has changed this L1, and
/// the command it sent still runs on L2, where the level then takes it out as a write in doubt
/// that landed late (`RedisStore::writes_in_doubt`): the other instances must drop their copies
/// all the same, and read the miss rather than the old value.
#[test]
fn an_async_write_dropped_at_its_l2_call_still_reaches_the_other_instances_l1() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let (a, b) = (instance_on(&l2, &bus), instance_on(&l2, &bus));
    b_holds_what_a_set(&a, &b, "k", b"v0");
    let before = b.stats().consistency.invalidations_received;

    l2.pause();
    let cancelled = set_cancelled_after(&a, "k", b"v1", Duration::from_millis(300));
    assert!(cancelled, "the set finished while L2 was frozen");
    l2.resume();

    wait_until(
        "L2 to run the cancelled write's SET and the level to take it out",
        || {
            let l2 = a.stats().distributed;
            l2.writes_in_doubt == 0 && l2.late_writes_deleted == 1
        },
    );
    let view = RedisStore::connect(RedisOptions::new(l2.addr()).prefix("app:")).unwrap();
    assert_eq!(view.get("k").unwrap(), None);
    wait_until("B to hear of the cancelled set", || {
        b.stats().consistency.invalidations_received > before
    });
    wait_until("B to drop its copy", || b.get_raw("k").unwrap().is_none());
}

/// An async write dropped while its SET waits on L2 sends its invalidation at once, so another
/// instance can hear of it before L2 has run the SET: if that instance reads the key from L2
/// then, it caches the old value again. A second message, once the L2 timeout has passed (the
/// SET has run or failed by then), drops it; before, the old value stayed until its TTL. (With a
/// Redis L2 the level now also takes the late SET's value out and publishes the key as soon as
/// the SET has run, before the repeat; the repeat stays for levels that take nothing out.)
#[test]
fn an_async_write_dropped_at_its_l2_call_is_announced_again_after_the_l2_timeout() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let on_bus = format!("hosts = [\"{}\"]", bus.addr());
    // The L2 timeout leaves the steps between the cancel and the repeat seconds to spare; the
    // L1 TTL (300 s) outlasts the test.
    let timeout = Duration::from_secs(5);
    let instance = || redis_instance(&l2, timeout.as_millis() as u64, "", &on_bus);
    let (a, b) = (instance(), instance());
    b_holds_what_a_set(&a, &b, "k", b"v0");
    let before = b.stats().consistency.invalidations_received;

    // Writes wait, reads go on: A's SET stays queued on L2 while B reads the old value. The
    // pause is lifted by hand below, once B has.
    let mut admin = l2.raw();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut admin)
        .unwrap();
    let cancelled_at = Instant::now();
    // Long enough for the SET to reach L2 (where the pause holds it) on a loaded machine.
    let cancelled = set_cancelled_after(&a, "k", b"v1", Duration::from_millis(500));
    assert!(cancelled, "the set finished while L2 held writes");
    assert_eq!(a.backplane().unwrap().stats().repeats_pending, 1);
    wait_until("B to hear of the cancelled set", || {
        b.stats().consistency.invalidations_received > before
    });
    // The race this test is about: L2 still has v0, and B caches it again.
    assert_eq!(b.get_raw("k").unwrap().as_deref(), Some(&b"v0"[..]));
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut admin).unwrap();

    // The SET runs, and the level takes its value out as a write in doubt that landed late,
    // and publishes the key: B drops v0 now, before the repeat.
    wait_until(
        "L2 to run the cancelled write's SET and the level to take it out",
        || {
            let l2 = a.stats().distributed;
            l2.writes_in_doubt == 0 && l2.late_writes_deleted == 1
        },
    );
    let view = RedisStore::connect(RedisOptions::new(l2.addr()).prefix("app:")).unwrap();
    assert_eq!(view.get("k").unwrap(), None);
    wait_until("B to hear of the deleted key", || {
        b.stats().consistency.invalidations_received > before + 1
    });
    assert!(
        cancelled_at.elapsed() < timeout,
        "too slow to tell the repeat from the first messages"
    );
    assert_eq!(b.get_raw("k").unwrap(), None, "B keeps v0 though L2 has nothing");
    // The repeat still comes, for a level that takes nothing out.
    wait_until("B to hear of the cancelled set once more", || {
        b.stats().consistency.invalidations_received > before + 2
    });
    assert!(
        cancelled_at.elapsed() >= timeout,
        "the repeat came before the L2 timeout"
    );
    assert_eq!(b.get_raw("k").unwrap(), None);
}

/// An async write dropped at its publish (a caller's timeout while the backplane is slow) has
/// had L2's answer: nothing of it can run later, so its message goes once, with no repeat.
#[test]
fn an_async_write_dropped_at_its_publish_is_announced_once() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let invalidation = format!("hosts = [\"{}\"]\npublish_timeout_ms = 5000", bus.addr());
    let (a, b) = (
        redis_instance(&l2, 10_000, "", &invalidation),
        redis_instance(&l2, 10_000, "", &invalidation),
    );
    b_holds_what_a_set(&a, &b, "k", b"v0");
    let before = b.stats().consistency.invalidations_received;

    bus.pause();
    let cancelled = set_cancelled_after(&a, "k", b"v1", Duration::from_millis(300));
    assert!(cancelled, "the set finished while the backplane was frozen");
    let view = RedisStore::connect(RedisOptions::new(l2.addr()).prefix("app:")).unwrap();
    assert_eq!(
        view.get("k").unwrap().map(|e| e.value).as_deref(),
        Some(&b"v1"[..]),
        "L2 answered before the publish began"
    );
    let stats = a.backplane().unwrap().stats();
    assert_eq!(stats.republish_pending, 1, "the message was handed over");
    assert_eq!(stats.repeats_pending, 0, "and needs no repeat");
    bus.resume();
    wait_until("B to hear of the cancelled set", || {
        b.stats().consistency.invalidations_received > before
    });
    assert_eq!(b.get_raw("k").unwrap().as_deref(), Some(&b"v1"[..]));
}

/// An async prefix invalidation dropped during L2's scan (a caller's timeout) has dropped the
/// prefix from this L1: the other instances must hear of it anyway. The `Prefix` message was
/// published only at the end, so nobody did.
#[test]
fn an_async_prefix_invalidation_dropped_during_the_l2_scan_still_reaches_the_other_instances() {
    let redis = RedisServer::start();
    // L2 and the backplane on one Redis: the prefix is also deleted from L2 (SCAN + UNLINK).
    let instance = || redis_instance(&redis, 10_000, "", "");
    let (a, b) = (instance(), instance());
    b_holds_what_a_set(&a, &b, "p:k", b"v0");
    let before = b.stats().consistency.invalidations_received;

    redis.pause();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cancelled = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(300), a.invalidate_prefix_async("p:")).await
    });
    assert!(
        cancelled.is_err(),
        "the invalidation finished while Redis was frozen: {cancelled:?}"
    );
    redis.resume();
    wait_until("B to hear of the cancelled prefix invalidation", || {
        b.stats().consistency.invalidations_received > before
    });
}

/// A prefix invalidation whose L2 step fails (Redis is frozen, and `fallback_on_error` is off,
/// so the caller gets the error) has already dropped the prefix from this L1: the other
/// instances must drop it too, once the message (kept by the backplane) can be sent.
#[test]
fn a_prefix_invalidation_whose_l2_step_failed_still_reaches_the_other_instances_l1() {
    let redis = RedisServer::start();
    // L2 and the backplane on one Redis: the prefix is also deleted from L2 (SCAN + UNLINK). A
    // staleness bound longer than the freeze: the subscribers do not count it as a loss.
    let instance = |top: &str| redis_instance(&redis, 200, top, "staleness_bound_ms = 10000");
    let (a, b) = (instance("fallback_on_error = false"), instance(""));
    b_holds_what_a_set(&a, &b, "user:1", b"v");
    let before = b.stats().consistency.invalidations_received;
    redis.pause();
    let result = a.invalidate_prefix("user:");
    redis.resume();
    assert!(result.is_err(), "Redis was frozen: the caller is told");
    wait_until("B to hear of the prefix", || {
        b.stats().consistency.invalidations_received > before
    });
    assert!(b.local().get("user:1").unwrap().is_none(), "B still holds user:1");
}

/// A memory L1 whose key listing fails from its `fail_from`-th call on (1-based), as a file
/// store whose read of a segment fails does.
struct ListingFails {
    inner: MemoryStore,
    listings: AtomicUsize,
    fail_from: usize,
}

impl Wrap for ListingFails {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn name(&self) -> &str {
        "listing-fails"
    }
}

impl WrapLocal for ListingFails {
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        if self.listings.fetch_add(1, Ordering::SeqCst) + 1 >= self.fail_from {
            return Err(Error::Backend {
                level: "L1",
                op: "keys_with_prefix",
                reason: "listing failed (test)".to_owned(),
            });
        }
        self.inner.keys_with_prefix(prefix)
    }
}

/// A prefix invalidation drops the prefix from this L1, deletes it from L2, and drops it from
/// this L1 once more (for a set that ran meanwhile). When that second drop fails, L2 has
/// already lost the keys: the other instances must still hear of it, or they serve the prefix
/// from their L1 until its TTL. The error went back to the caller before the publish.
#[test]
fn a_prefix_invalidation_whose_second_l1_drop_failed_still_reaches_the_other_instances() {
    let redis = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "app:"
        [invalidation]
        enabled = true
        "#,
        redis.addr(),
    ))
    .unwrap();
    let local = Delegate(ListingFails {
        inner: MemoryStore::new(1000).unwrap(),
        listings: AtomicUsize::new(0),
        fail_from: 2,
    });
    let a = CacheManager::builder()
        .config(config)
        .local(Arc::new(local))
        .build()
        .unwrap();
    let b = redis_instance(&redis, 10_000, "", "");
    b_holds_what_a_set(&a, &b, "user:1", b"v");
    let before = b.stats().consistency.invalidations_received;

    let result = a.invalidate_prefix("user:");
    assert!(result.is_err(), "the second L1 drop failed: the caller is told");
    let view = RedisStore::connect(RedisOptions::new(redis.addr()).prefix("app:")).unwrap();
    assert!(view.get("user:1").unwrap().is_none(), "L2 lost the prefix");
    wait_until("B to hear of the prefix", || {
        b.stats().consistency.invalidations_received > before
    });
    assert!(b.local().get("user:1").unwrap().is_none(), "B still holds user:1");
}

/// A received `Keys` message that names a key no L1 can hold (empty here; a publisher with other
/// key rules can send one) drops the other keys it names, and leaves the rest of L1 trusted.
/// Passed to L1 whole, that key failed the delete: the keys after it stayed readable, and every
/// L1 entry was made suspect, at every such message.
#[test]
fn a_received_key_no_l1_can_hold_is_skipped_and_the_other_keys_are_dropped() {
    let redis = RedisServer::start();
    let (a, b) = (
        redis_instance(&redis, 10_000, "", ""),
        redis_instance(&redis, 10_000, "", ""),
    );
    b_holds_what_a_set(&a, &b, "user:1", b"v");
    b.set_raw("other", b"o", None).unwrap();
    let before = b.stats().consistency.invalidations_received;
    let errors = b.stats().local.errors;

    let message = Invalidation::Keys(vec![String::new(), "user:1".to_owned()]);
    a.backplane().unwrap().publish(&message).unwrap();
    wait_until("B to hear of the keys", || {
        b.stats().consistency.invalidations_received > before
    });
    assert!(b.local().get("user:1").unwrap().is_none(), "B still holds user:1");
    assert_eq!(b.stats().local.errors, errors, "the empty key failed L1's delete");
    assert!(
        matches!(
            b.local().get_checked("other").unwrap(),
            Some((_, Freshness::Trusted))
        ),
        "B's other entries were made suspect"
    );
}

/// A replay whose ack fails (the replay queue's disk is full; the ack is held in memory) has
/// already written the ops to L2: it still publishes them. It returned before, and the other
/// instance kept the value it had read back from L2 during the outage, while L2 held the
/// replayed one.
#[test]
fn a_replay_whose_ack_fails_still_publishes_what_reached_l2() {
    let redis = RedisServer::start();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let disk = mount::Mount::tmpfs(64);
    let replay_dir = disk.path().join("q");
    let (a, a_l2) = instance(&redis, &l2, |c| {
        c.offline.replay_dir = Some(replay_dir.clone());
        c.offline.replay_interval_ms = 3_600_000;
    });
    let (b, _) = instance(&redis, &l2, |_| {});
    b_holds_what_a_set(&a, &b, "k", b"v0");

    a_l2.down.store(true, Ordering::SeqCst);
    let before = b.stats().consistency.invalidations_received;
    a.set_raw("k", b"v1", None).unwrap();
    // Pad the log to just under one page, so the acks need a new page.
    let log_len = std::fs::metadata(replay_dir.join("replay.log")).unwrap().len();
    let pad = 4096 - 5 - log_len as usize - (28 + 3);
    a.set_raw("pad", &vec![7u8; pad], None).unwrap();
    assert_eq!(
        std::fs::metadata(replay_dir.join("replay.log")).unwrap().len(),
        4091
    );
    // Both sets' messages (k's and pad's): counted after k's alone, pad's arriving late was
    // taken below for the replay's, and B was read before the replay's had come.
    wait_until("B to hear of A's two changes", || {
        b.stats().consistency.invalidations_received >= before + 2
    });
    assert_eq!(b.get_raw("k").unwrap().as_deref(), Some(&b"v0"[..]));
    let queued = b.stats().consistency.invalidations_received;

    // Fill the disk.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(disk.path().join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    a_l2.down.store(false, Ordering::SeqCst);
    let replayed = a.replay_now();
    assert_eq!(replayed.ok(), Some(2), "both ops reached L2");
    let stats = a.stats().consistency;
    assert!(
        stats
            .replay_write_failure
            .as_deref()
            .is_some_and(|e| e.contains("no space left")),
        "the ack found the disk full: {stats:?}"
    );
    assert_eq!(stats.replay_acks_held, 2, "{stats:?}");
    assert_eq!(
        l2.get("k").unwrap().map(|e| e.value).as_deref(),
        Some(&b"v1"[..]),
        "L2 has v1"
    );
    wait_until("B to hear of the replay", || {
        b.stats().consistency.invalidations_received > queued
    });
    assert_eq!(
        b.get_raw("k").unwrap().as_deref(),
        Some(&b"v1"[..]),
        "B serves v0 from L1 though L2 holds v1"
    );
}
