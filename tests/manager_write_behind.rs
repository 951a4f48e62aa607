//! Write-behind (`distributed.write_mode = "behind"`), one test per rule of `manager::behind`,
//! against a memory L1 and a scripted L2 that logs every call and can hold one at a gate: a set
//! returns before L2 is written; a read that misses L1 is answered by a value still on its way;
//! only the newest value of a key is sent; a delete is ordered after the key's in-flight write; a
//! failed batch goes to the replay queue and later writes of its keys follow it there; a full
//! queue writes through; dropping the manager sends what is queued. Two tests run against a real
//! `memcached` behind a gate: one refuses a value over its `-I`, one is killed between a batch's
//! two calls.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;
#[cfg(feature = "memcached")]
#[path = "support/mod.rs"]
mod support;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use manager_support::gated::{GatedStore, Point};
use manager_support::{Scripted, ScriptedStore, START_MS};
use uno_cache::{CacheConfig, Codec, Error, ManualClock, Storage, WriteMode};

const DISTRIBUTED_TTL: Duration = Duration::from_secs(600);

fn config(max_keys: usize, replay_dir: Option<&Path>) -> CacheConfig {
    let mut config = CacheConfig::default();
    config.distributed.ttl = DISTRIBUTED_TTL;
    config.distributed.write_mode = WriteMode::Behind;
    config.distributed.write_behind_max_keys = max_keys;
    config.offline.replay_dir = replay_dir.map(Path::to_path_buf);
    config
}

fn setup_with(config: CacheConfig) -> Scripted {
    manager_support::scripted(config)
}

fn setup() -> Scripted {
    setup_with(config(10_000, None))
}

fn encoded(value: u32) -> Vec<u8> {
    Codec::bincode().encode("k", &value).unwrap()
}

fn l2_value(s: &Scripted, key: &str) -> Option<Vec<u8>> {
    s.l2.peek(key).map(|(value, _)| value)
}

#[test]
fn a_set_returns_before_l2_is_written_and_lands_with_the_l2_ttl_cap() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache
        .set("k", &1u32, Some(Duration::from_secs(36_000)))
        .unwrap();
    gate.wait_entered();
    // The writer is inside L2 now, after the caller got its answer.
    assert_eq!(l2_value(&s, "k"), None, "the set waited for L2");
    assert_eq!(s.cache.get::<u32>("k").unwrap(), Some(1));
    gate.release();
    s.cache.flush().unwrap();
    let (value, expires_at_ms) = s.l2.peek("k").unwrap();
    assert_eq!(value, encoded(1));
    assert_eq!(expires_at_ms, START_MS + DISTRIBUTED_TTL.as_millis() as u64);
    assert_eq!(s.l2.ops(), ["set_each"]);
    let stats = s.cache.stats();
    assert!(stats.consistency.write_behind);
    assert_eq!(stats.consistency.write_behind_flushes, 1);
    assert_eq!(stats.consistency.write_behind_pending, 0);
    assert_eq!(stats.distributed.sets, 1);
}

/// A write that expired while it waited in the queue reaches L2 as a delete of its key, and
/// counts as one in `distributed.deletes`, not as a set (it was counted in `sets`).
#[test]
fn a_write_that_expired_while_queued_counts_as_the_l2_delete_it_is_sent_as() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("first", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("gone", &1u32, Some(Duration::from_secs(1))).unwrap();
    s.cache.set("live", &1u32, None).unwrap();
    s.clock.advance(Duration::from_secs(2));
    gate.release();
    s.cache.flush().unwrap();
    assert_eq!(s.l2.ops(), ["set_each", "set_each", "delete_many"]);
    let stats = s.cache.stats();
    assert_eq!(
        (stats.distributed.sets, stats.distributed.deletes),
        (2, 1),
        "first and live were written, gone deleted"
    );
}

/// A wall clock stepped back while a write waits in the queue does not stretch its L2 TTL past
/// `distributed.ttl`: L2 counts a TTL from its own receipt, so the time left to the queued
/// expiry, an hour longer after the step, would keep the value in L2 an hour past the cap
/// (the replay queue caps the same way).
#[test]
fn a_wall_clock_stepped_back_while_a_write_is_queued_does_not_stretch_its_l2_ttl() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("first", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("k", &2u32, None).unwrap();
    let stepped_to = START_MS - 3_600_000;
    s.clock.set(stepped_to);
    gate.release();
    s.cache.flush().unwrap();
    let (value, expires_at_ms) = s.l2.peek("k").unwrap();
    assert_eq!(value, encoded(2));
    assert_eq!(
        expires_at_ms,
        stepped_to + DISTRIBUTED_TTL.as_millis() as u64,
        "L2 was sent a TTL longer than distributed.ttl"
    );
}

#[test]
fn a_read_that_misses_l1_is_answered_by_a_write_still_on_its_way() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("in-flight", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("queued", &2u32, None).unwrap();
    // L1 lost both (evicted, say); L2 holds neither yet.
    s.l1.delete("in-flight").unwrap();
    s.l1.delete("queued").unwrap();
    assert_eq!(s.cache.get::<u32>("in-flight").unwrap(), Some(1));
    assert_eq!(s.cache.get::<u32>("queued").unwrap(), Some(2));
    let both = s.cache.multi_get::<u32>(&["in-flight", "queued"]).unwrap();
    assert_eq!((both["in-flight"], both["queued"]), (1, 2));
    assert_eq!(s.cache.stats().consistency.write_behind_pending, 2);
    gate.release();
    s.cache.flush().unwrap();
    assert!(
        !s.l2.ops().iter().any(|op| op.starts_with("get")),
        "L2 was asked for a value it did not have yet: {:?}",
        s.l2.ops()
    );
    let stats = s.cache.stats();
    assert_eq!(stats.consistency.write_behind_reads, 4);
    // The queue answers for L2 until the values land: L2 hits, as documented.
    assert_eq!((stats.distributed.hits, stats.distributed.misses), (4, 0));
    assert_eq!(l2_value(&s, "queued"), Some(encoded(2)));
}

#[test]
fn a_read_the_queue_answers_as_a_miss_is_not_counted_as_answered_by_a_value() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("in-flight", &1u32, None).unwrap();
    gate.wait_entered();
    // Queued behind the gated batch; its L2 expiry passes while it waits.
    s.cache
        .set("expiring", &2u32, Some(Duration::from_secs(1)))
        .unwrap();
    s.clock.advance(Duration::from_secs(2));
    s.l1.delete("expiring").unwrap();
    assert_eq!(s.cache.get::<u32>("expiring").unwrap(), None);
    let stats = s.cache.stats();
    assert_eq!(
        stats.consistency.write_behind_reads, 0,
        "a miss was counted as a read answered by a waiting value"
    );
    assert_eq!(stats.overall.misses, 1);
    gate.release();
    s.cache.flush().unwrap();
}

#[test]
fn only_the_newest_value_of_a_key_is_sent() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &1u32, None).unwrap();
    gate.wait_entered();
    for v in 2..=5u32 {
        s.cache.set("k", &v, None).unwrap();
    }
    gate.release();
    s.cache.flush().unwrap();
    let calls = s.l2.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(l2_value(&s, "k"), Some(encoded(5)));
}

/// `write_behind_pending` counts keys: one written again while its older write is on its way
/// is still one key waiting for L2.
#[test]
fn a_key_written_again_while_its_write_is_in_flight_is_one_pending_key() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("k", &2u32, None).unwrap();
    s.cache.set("other", &3u32, None).unwrap();
    assert_eq!(s.cache.stats().consistency.write_behind_pending, 2);
    gate.release();
    s.cache.flush().unwrap();
    assert_eq!(s.cache.stats().consistency.write_behind_pending, 0);
    assert_eq!(l2_value(&s, "k"), Some(encoded(2)));
}

#[test]
fn a_delete_is_ordered_after_the_in_flight_write_of_its_key() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &1u32, None).unwrap();
    gate.wait_entered();
    std::thread::scope(|scope| {
        let deleter = scope.spawn(|| s.cache.delete("k").unwrap());
        gate.release();
        assert!(deleter.join().unwrap());
    });
    assert_eq!(l2_value(&s, "k"), None, "the write landed after the delete");
    assert_eq!(s.l2.ops(), ["set_each", "delete"]);
    assert_eq!(s.cache.get::<u32>("k").unwrap(), None);
}

/// An async delete dropped while its settle waits for the key's in-flight batch (a caller's
/// timeout) has already dropped the key's newer queued write, acknowledged to its caller: the
/// delete is handed back to the queue, so L2 never keeps the in-flight older value for readers.
/// It kept it, and a read after L1 lost the key returned a value older than the last write.
#[test]
fn an_async_delete_dropped_while_it_settles_is_still_sent_to_l2() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &1u32, None).unwrap();
    gate.wait_entered();
    // "k" = 1 is in flight; "k" = 2 waits in the queue, acknowledged.
    s.cache.set("k", &2u32, None).unwrap();
    let mut delete = Box::pin(s.cache.delete_async("k"));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        delete.as_mut().poll(&mut cx).is_pending(),
        "the delete waits for the batch in flight"
    );
    drop(delete);
    assert_eq!(
        s.cache.get::<u32>("k").unwrap(),
        None,
        "read while the batch is in flight"
    );
    gate.release();
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "k"), None, "L2 kept the in-flight value");
    assert_eq!(s.cache.get::<u32>("k").unwrap(), None);
}

/// A write-through that found the queue full, dropped while its settle waits, hands its value
/// back to the queue: the settle dropped the key's queued write, and L2 would otherwise keep
/// the older value in flight.
#[test]
fn an_async_write_through_dropped_while_it_settles_is_still_sent_to_l2() {
    let s = setup_with(config(1, None));
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("other", &2u32, None).unwrap();
    // The queue is full ("other"): this set writes through, after the batch holding "k".
    let mut write = Box::pin(s.cache.set_async("k", &3u32, None));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(write.as_mut().poll(&mut cx).is_pending());
    drop(write);
    gate.release();
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "k"), Some(encoded(3)), "L2 kept the in-flight value");
    assert_eq!(l2_value(&s, "other"), Some(encoded(2)));
}

/// A write-through that found the queue full settled the key's queued write ("k" = 2, acknowledged)
/// out of the queue; once the batch holding "k" = 1 landed and until the write-through reached L2,
/// a read that missed L1 found nothing queued and served L2's 1, older than the completed 2.
#[test]
fn a_read_during_a_settling_write_through_never_serves_the_value_its_settle_replaced() {
    for asynchronous in [false, true] {
        a_read_during_a_settling_write_through(asynchronous);
    }
}

fn a_read_during_a_settling_write_through(asynchronous: bool) {
    let s = setup_with(config(1, None));
    let batch = s.l2.gate("set_each");
    s.cache.set("k", &1u32, None).unwrap();
    batch.wait_entered();
    s.cache.set("k", &2u32, None).unwrap();
    let through = s.l2.gate("set_many");
    std::thread::scope(|scope| {
        // Full ("k" waits in the queue): written through, after a settle.
        let writer = scope.spawn(|| {
            let items = [("k", &3u32), ("n", &4u32)];
            if asynchronous {
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                rt.block_on(s.cache.multi_set_async(items, None)).unwrap();
            } else {
                s.cache.multi_set(items, None).unwrap();
            }
        });
        batch.release();
        through.wait_entered();
        // L2 holds 1 now; L1 loses "k", as an eviction does.
        s.l1.delete("k").unwrap();
        assert_ne!(
            s.cache.get::<u32>("k").unwrap(),
            Some(1),
            "a value older than a completed write (async: {asynchronous})"
        );
        through.release();
        writer.join().unwrap();
    });
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "k"), Some(encoded(3)));
}

#[test]
fn a_delete_drops_the_queued_write_of_its_key() {
    let s = setup();
    let gate = s.l2.gate("set_each");
    s.cache.set("other", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("k", &2u32, None).unwrap();
    std::thread::scope(|scope| {
        let deleter = scope.spawn(|| s.cache.delete("k").unwrap());
        assert!(deleter.join().unwrap());
        gate.release();
    });
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "k"), None);
    assert_eq!(l2_value(&s, "other"), Some(encoded(1)));
}

#[test]
fn a_failed_batch_is_replayed_and_later_writes_of_its_keys_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = setup_with(config(10_000, Some(dir.path())));
    s.l2.set_failing(true);
    s.cache.set("k", &1u32, None).unwrap();
    s.cache.flush().unwrap();
    let stats = s.cache.stats().consistency;
    assert_eq!(stats.write_behind_failures, 1);
    assert_eq!(stats.replay_pending, 1);
    // While "k" waits in the replay queue, a new write of it goes there too, never ahead of it.
    s.cache.set("k", &2u32, None).unwrap();
    s.cache.flush().unwrap();
    assert_eq!(s.cache.stats().consistency.queued, 2);
    s.l2.set_failing(false);
    s.cache.replay_now().unwrap();
    assert_eq!(l2_value(&s, "k"), Some(encoded(2)));
    assert_eq!(s.cache.stats().consistency.replay_pending, 0);
}

/// A write-behind write that will never reach L2 (it failed, and there is no replay queue to
/// take it) is reported by the next flush, once, with the number of such writes and the first
/// one's key, as `fsync` reports a writeback error; the flush after it starts afresh.
#[test]
fn a_flush_reports_once_the_write_behind_writes_that_will_never_reach_l2() {
    let s = setup();
    s.l2.set_failing(true);
    s.cache.set("k", &1u32, None).unwrap();
    s.cache.set("j", &1u32, None).unwrap();
    match s.cache.flush() {
        Err(Error::WriteBehindLost { writes, key, reason }) => {
            assert_eq!(writes, 2, "both writes were lost");
            assert!(key == "k" || key == "j", "names a lost key, not {key:?}");
            assert!(reason.contains("no replay queue"), "says why: {reason}");
        }
        other => panic!("the flush must report the lost writes, got {other:?}"),
    }
    s.cache.flush().unwrap();
    s.l2.set_failing(false);
    s.cache.set("k", &2u32, None).unwrap();
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "k"), Some(encoded(2)));
}

/// A value L2 refuses (over its item size) is lost to L2 for good and leaves L1 too: the next
/// flush reports it, saying L2 refused it; the other write of the batch is not counted.
#[test]
fn a_flush_reports_a_write_behind_value_l2_refused() {
    let s = setup();
    s.l2.set_max_value(64);
    s.cache.set("small", &1u32, None).unwrap();
    s.cache.set("large", &vec![7u8; 1000], None).unwrap();
    match s.cache.flush() {
        Err(Error::WriteBehindLost { writes, key, reason }) => {
            assert_eq!((writes, key.as_str()), (1, "large"));
            assert!(reason.contains("refused"), "says why: {reason}");
        }
        other => panic!("the flush must report the refused write, got {other:?}"),
    }
    assert_eq!(l2_value(&s, "small"), Some(encoded(1)));
    assert_eq!(
        s.cache.get::<Vec<u8>>("large").unwrap(),
        None,
        "the refused value left L1"
    );
}

/// With `fallback_on_error = false` a write L2 failed leaves L1 too (README, `fallback_on_error`):
/// the other instances, told of the batch, read L2's older value, and this one must not serve
/// the lost write alone until its TTL. A newer write of the key, queued while the failing batch
/// was on its way, is not the failed one and stays.
#[test]
fn without_fallback_a_failed_batch_leaves_l1_too_but_not_a_newer_queued_write() {
    let mut config = config(10_000, None);
    config.fallback_on_error = false;
    let s = gated_behind(config);
    s.l2.put_raw("k", &encoded(0), START_MS + 600_000);
    s.l2.put_raw("j", &encoded(0), START_MS + 600_000);
    let first = s.gated.gate("set_each", "k", Point::Before);
    s.cache.set("k", &1u32, None).unwrap();
    first.wait_entered();
    // "j" waits for the next batch, held too; "k" is written again behind the failing batch.
    let second = s.gated.gate("set_each", "j", Point::Before);
    s.cache.set("j", &1u32, None).unwrap();
    s.cache.set("k", &2u32, None).unwrap();
    s.l2.set_failing(true);
    first.release();
    second.wait_entered();
    // The first batch has landed (failed); the second ("j" = 1 and "k" = 2) fails too.
    assert_eq!(
        s.l1.get("k").unwrap().map(|e| e.value),
        Some(encoded(2)),
        "the newer write queued behind the failed batch left L1"
    );
    second.release();
    // "k" = 1 is not lost: its newer write went on. The flush reports the other two.
    assert!(
        matches!(s.cache.flush(), Err(Error::WriteBehindLost { writes: 2, .. })),
        "the flush reports the two writes lost"
    );
    let stats = s.cache.stats().consistency;
    assert_eq!(stats.write_behind_failures, 3, "{stats:?}");
    s.l2.set_failing(false);
    for key in ["k", "j"] {
        assert_eq!(
            s.cache.get::<u32>(key).unwrap(),
            Some(0),
            "{key}: a write L2 failed stayed in this L1 alone"
        );
    }
}

#[test]
fn a_full_queue_makes_the_caller_write_through() {
    let s = setup_with(config(1, None));
    let gate = s.l2.gate("set_each");
    s.cache.set("a", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("b", &2u32, None).unwrap(); // queued: "a" is in flight, not queued
    s.cache.set("c", &3u32, None).unwrap(); // full: written through
    assert_eq!(l2_value(&s, "c"), Some(encoded(3)));
    assert_eq!(s.cache.stats().consistency.write_behind_overflows, 1);
    gate.release();
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "a"), Some(encoded(1)));
    assert_eq!(l2_value(&s, "b"), Some(encoded(2)));
}

#[test]
fn a_multi_set_listing_a_key_twice_fits_a_queue_with_room_for_one_key() {
    let s = setup_with(config(1, None));
    s.cache.multi_set([("k", 1u32), ("k", 2u32)], None).unwrap();
    s.cache.flush().unwrap();
    // The writer's batch, not a write-through by the caller (`set_many`).
    assert_eq!(s.l2.ops(), ["set_each"], "the multi_set was written through");
    assert_eq!(s.cache.stats().consistency.write_behind_overflows, 0);
    assert_eq!(l2_value(&s, "k"), Some(encoded(2)));
}

#[test]
fn dropping_the_manager_sends_what_is_queued() {
    let s = setup();
    let items: Vec<(String, u32)> = (0..50).map(|i| (format!("k{i}"), i)).collect();
    s.cache.multi_set(items, None).unwrap();
    let Scripted { cache, l2, .. } = s;
    drop(cache);
    for i in 0..50u32 {
        assert_eq!(
            l2.peek(&format!("k{i}")).map(|(v, _)| v),
            Some(encoded(i)),
            "k{i}"
        );
    }
}

#[test]
fn async_writes_and_deletes_follow_the_same_rules() {
    let s = setup();
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let gate = s.l2.gate("set_each");
        s.cache.set_async("k", &1u32, None).await.unwrap();
        gate.wait_entered();
        s.l1.delete("k").unwrap();
        assert_eq!(s.cache.get_async::<u32>("k").await.unwrap(), Some(1));
        gate.release();
        assert!(s.cache.delete_async("k").await.unwrap());
    });
    assert_eq!(l2_value(&s, "k"), None);
    assert_eq!(s.l2.ops(), ["set_each", "delete_async"]);
}

#[test]
#[cfg(feature = "redis")] // the configuration names a Redis L2
fn an_empty_write_behind_queue_is_a_config_error_naming_the_field() {
    let mut config = config(0, None);
    config.distributed.enabled = true;
    config.distributed.hosts = vec!["127.0.0.1:6379".into()];
    let err = config.validate().unwrap_err();
    assert!(
        matches!(&err, uno_cache::Error::Config { field, .. } if field == "distributed.write_behind_max_keys"),
        "{err}"
    );
}

/// A manager like [`setup_with`]'s whose scripted L2 sits behind a [`GatedStore`], which holds
/// one chosen call of one key.
struct GatedBehind {
    cache: uno_cache::CacheManager,
    l1: Arc<uno_cache::MemoryStore>,
    l2: Arc<ScriptedStore>,
    gated: Arc<GatedStore<ScriptedStore>>,
}

fn gated_behind(config: CacheConfig) -> GatedBehind {
    let clock = ManualClock::new(START_MS);
    let l1 = Arc::new(uno_cache::MemoryStore::with_clock(1000, Arc::new(clock.clone())).unwrap());
    let l2 = ScriptedStore::new("scripted", &clock);
    let gated = GatedStore::new(Arc::clone(&l2));
    let cache = uno_cache::CacheManager::builder()
        .config(config)
        .local(l1.clone())
        .distributed(gated.clone())
        .clock(Arc::new(clock))
        .build()
        .unwrap();
    GatedBehind { cache, l1, l2, gated }
}

#[test]
fn a_write_through_after_a_failed_batch_of_its_key_is_replayed_after_that_batch() {
    // The queue is full, so the set writes through once the in-flight batch holding an older
    // value of its key has landed; that batch failed and queued the older value for replay,
    // and the set must follow it there rather than reach L2 first and be overwritten.
    let dir = tempfile::tempdir().unwrap();
    let s = gated_behind(config(1, Some(dir.path())));
    let batch = s.gated.gate("set_each", "k", Point::Before);
    s.cache.set("k", &1u32, None).unwrap();
    batch.wait_entered();
    s.cache.set("x", &9u32, None).unwrap(); // the queue is full now
    s.l2.set_failing(true);
    // If the set went to L2 (as it did), hold it there until the batch's failure is queued.
    let direct = s.gated.gate("set", "k", Point::Before);
    std::thread::scope(|scope| {
        let setter = scope.spawn(|| s.cache.set("k", &2u32, None));
        batch.release();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the set neither returned nor reached L2"
            );
            if setter.is_finished() {
                // Not sent to L2: let the replay's write of the key through the gate.
                direct.release();
                break;
            }
            if direct.entered() {
                s.l2.set_failing(false);
                direct.release();
                break;
            }
            std::thread::yield_now();
        }
        setter.join().unwrap().unwrap();
    });
    s.cache.flush().unwrap();
    s.l2.set_failing(false);
    s.cache.replay_now().unwrap();
    assert_eq!(
        s.l2.peek("k").map(|(v, _)| v),
        Some(encoded(2)),
        "an older value was replayed over the newer one"
    );
}

#[test]
fn a_delete_that_gave_up_waiting_for_a_batch_is_not_undone_by_that_batchs_replay() {
    // The delete waits for the in-flight batch holding the key at most four L2 timeouts, then
    // goes on; if the batch then fails, its older write must not be queued for replay.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(10_000, Some(dir.path()));
    config.distributed.timeout_ms = 25;
    let s = gated_behind(config);
    let batch = s.gated.gate("set_each", "k", Point::Before);
    s.cache.set("k", &1u32, None).unwrap();
    batch.wait_entered();
    s.cache.delete("k").unwrap();
    assert_eq!(s.l2.peek("k"), None);
    s.l2.set_failing(true);
    batch.release();
    s.cache.flush().unwrap();
    // The batch failed, and so did the delete queued behind it; only the delete is pending.
    let stats = s.cache.stats().consistency;
    assert_eq!(stats.write_behind_failures, 2, "{stats:?}");
    assert_eq!(stats.replay_pending, 1, "{stats:?}");
    s.l2.set_failing(false);
    s.cache.replay_now().unwrap();
    assert_eq!(s.l2.peek("k"), None, "the deleted value came back");
    assert_eq!(s.cache.get::<u32>("k").unwrap(), None);
}

#[test]
fn a_batch_with_a_refused_value_still_deletes_the_writes_that_expired_while_queued() {
    // L2 refuses one value of the batch (too large): the others are sent one by one, and a
    // write that expired while queued must still replace the older value L2 holds.
    let s = setup();
    s.l2.set_max_value(1000);
    s.l2.put_raw("gone", &encoded(0), 0);
    let first = s.l2.gate("set_each");
    s.cache.set("first", &1u32, None).unwrap();
    first.wait_entered();
    s.cache.set("gone", &1u32, Some(Duration::from_secs(1))).unwrap();
    s.cache.set("big", &vec![7u8; 5000], None).unwrap();
    s.cache.set("ok", &2u32, None).unwrap();
    s.clock.advance(Duration::from_secs(2));
    first.release();
    assert!(
        matches!(s.cache.flush(), Err(Error::WriteBehindLost { writes: 1, key, .. }) if key == "big"),
        "the flush reports the refused value"
    );
    assert_eq!(l2_value(&s, "ok"), Some(encoded(2)));
    assert_eq!(l2_value(&s, "big"), None);
    assert_eq!(
        l2_value(&s, "gone"),
        None,
        "the older value outlived a write that replaced it"
    );
}

/// A write-behind manager in front of a real memcached (`options`), behind a gate, with a
/// memory L1; both on the returned manual clock.
#[cfg(feature = "memcached")]
fn behind_memcached(
    options: uno_cache::MemcachedOptions,
    config: CacheConfig,
) -> (
    Arc<GatedStore<uno_cache::MemcachedStore>>,
    uno_cache::CacheManager,
    ManualClock,
) {
    let store = uno_cache::MemcachedStore::connect(options).unwrap();
    let gated = GatedStore::new(Arc::new(store));
    let clock = ManualClock::new(START_MS);
    let cache = uno_cache::CacheManager::builder()
        .config(config)
        .local(Arc::new(
            uno_cache::MemoryStore::with_clock(1000, Arc::new(clock.clone())).unwrap(),
        ))
        .distributed(gated.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    (gated, cache, clock)
}

#[test]
#[cfg(feature = "memcached")] // a real server that refuses a value the store's limit allows
fn a_write_made_after_a_settle_gave_up_on_a_slow_batch_is_not_undone_by_that_batch() {
    // A batch whose values L2 refuses whole is sent again one key at a time, one L2 round trip
    // each, so it can outlast a settle's wait (four L2 timeouts). The set that gave up waiting
    // wrote through; the batch's later calls must not then undo it with the older write of its
    // key (here: the delete of that write, which expired while queued). (A batch of which L2
    // stored some items names the refused ones, and is not sent again.)
    let server = support::MemcachedServer::start_with(&["-I", "1m"]);
    let mut config = config(3, None);
    config.distributed.timeout_ms = 25;
    let (gated, cache, clock) = behind_memcached(
        uno_cache::MemcachedOptions::new(server.addr())
            .prefix("wb:")
            .max_item_size(4 << 20),
        config,
    );
    let first = gated.gate("set_each", "first", Point::Before);
    cache.set("first", &1u32, None).unwrap();
    first.wait_entered();
    cache.set("gone", &1u32, Some(Duration::from_secs(1))).unwrap();
    cache.set_raw("big", &vec![7u8; 1_500_000], None).unwrap();
    clock.advance(Duration::from_secs(2));
    // The batch of "gone" and "big" is sent one by one once the server refused "big", its one
    // live write.
    let one_by_one = gated.gate("set", "big", Point::Before);
    first.release();
    one_by_one.wait_entered();
    for key in ["y1", "y2", "y3"] {
        cache.set(key, &1u32, None).unwrap();
    }
    // The queue is full: this set settles "gone", gives up waiting and writes through.
    cache.set("gone", &2u32, None).unwrap();
    assert_eq!(cache.stats().consistency.write_behind_overflows, 1);
    one_by_one.release();
    assert!(
        matches!(cache.flush(), Err(Error::WriteBehindLost { writes: 1, key, .. }) if key == "big"),
        "the flush reports the refused value"
    );
    let l2 = cache.distributed().unwrap();
    assert_eq!(
        l2.get("gone").unwrap().map(|e| e.value),
        Some(encoded(2)),
        "the batch undid a later write of its key"
    );
    assert_eq!(cache.get::<u32>("gone").unwrap(), Some(2));
}

#[test]
#[cfg(feature = "memcached")] // a real server, killed between the batch's two calls
fn a_batch_whose_expired_writes_could_not_be_deleted_counts_and_replays_only_those() {
    // L2 took the batch's live writes, then went down before the deletes of the writes that
    // expired while queued: only those deletes are unsent.
    let mut server = support::MemcachedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(10_000, Some(dir.path()));
    config.offline.replay_interval_ms = 3_600_000;
    let (gated, cache, clock) = behind_memcached(
        uno_cache::MemcachedOptions::new(server.addr()).prefix("wb:"),
        config,
    );
    let first = gated.gate("set_each", "first", Point::Before);
    cache.set("first", &1u32, None).unwrap();
    first.wait_entered();
    cache.set("gone", &1u32, Some(Duration::from_secs(1))).unwrap();
    cache.set("live", &1u32, None).unwrap();
    clock.advance(Duration::from_secs(2));
    let deletes = gated.gate("delete_many", "gone", Point::Before);
    first.release();
    deletes.wait_entered();
    server.kill();
    deletes.release();
    cache.flush().unwrap();
    let stats = cache.stats();
    assert_eq!(
        stats.consistency.write_behind_failures, 1,
        "L2 took the live write"
    );
    assert_eq!(stats.consistency.replay_pending, 1);
    let replay = cache.replay_queue().unwrap();
    assert!(replay.is_pending("gone"));
    assert!(
        !replay.is_pending("live"),
        "a write L2 took waits for replay, and so do the key's later writes"
    );
}

/// L2 fails; "a" = 1 waits in the replay queue and "b" = 1 is in flight, held before its
/// batch's L2 call (released, it fails): the start of the two tests below.
fn a_pending_and_b_in_flight(s: &GatedBehind) -> manager_support::GateHandle {
    s.l2.set_failing(true);
    s.cache.set("a", &1u32, None).unwrap();
    s.cache.flush().unwrap();
    assert_eq!(s.cache.stats().consistency.replay_pending, 1);
    let batch = s.gated.gate("set_each", "b", Point::Before);
    s.cache.set("b", &1u32, None).unwrap();
    batch.wait_entered();
    batch
}

/// Lets the held batch fail, brings L2 back and replays: both keys must end at 2.
fn replayed_newer_values(s: &GatedBehind, batch: manager_support::GateHandle) {
    batch.release();
    s.cache.flush().unwrap();
    s.l2.set_failing(false);
    s.cache.replay_now().unwrap();
    assert_eq!(s.l2.peek("a").map(|(v, _)| v), Some(encoded(2)));
    assert_eq!(
        s.l2.peek("b").map(|(v, _)| v),
        Some(encoded(2)),
        "an older write-behind value was replayed over the newer one"
    );
    assert_eq!(s.cache.get::<u32>("b").unwrap(), Some(2));
}

#[test]
fn a_batch_sent_to_replay_for_one_key_is_not_overtaken_by_an_older_write_behind_write_of_another() {
    // "a" waits in the replay queue, and "b" has an older write in flight that will fail. A
    // multi_set of both must go to the replay queue (for "a") after "b"'s older write: queued
    // before it, the failed batch then replayed that older value over the newer one.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(10_000, Some(dir.path()));
    config.distributed.timeout_ms = 25;
    let s = gated_behind(config);
    let batch = a_pending_and_b_in_flight(&s);
    s.cache.multi_set([("a", 2u32), ("b", 2u32)], None).unwrap();
    replayed_newer_values(&s, batch);
}

#[test]
fn an_async_batch_for_the_replay_queue_dropped_while_it_settles_still_follows_the_older_write() {
    // As `a_batch_sent_to_replay_for_one_key_…`, with the async multi_set dropped while it
    // waits for "b"'s batch: its values go to the replay queue from the drop, and "b"'s older
    // write, whose batch then fails, must not be replayed after them.
    let dir = tempfile::tempdir().unwrap();
    let s = gated_behind(config(10_000, Some(dir.path())));
    let batch = a_pending_and_b_in_flight(&s);
    let mut write = Box::pin(s.cache.multi_set_async([("a", 2u32), ("b", 2u32)], None));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        write.as_mut().poll(&mut cx).is_pending(),
        "the batch waits for the write of \"b\" in flight"
    );
    drop(write);
    replayed_newer_values(&s, batch);
}

/// A delete whose settle gave up waiting for the in-flight batch holding its key (a slow L2
/// call) is handed to the queue, behind that batch, rather than sent to L2 at once: sent at
/// once, it reached L2 first, and the batch's older write then landed over it.
#[test]
fn a_delete_that_gave_up_waiting_for_a_slow_batch_is_not_overtaken_by_that_batch() {
    let mut config = config(10_000, None);
    config.distributed.timeout_ms = 25;
    let s = gated_behind(config);
    let batch = s.gated.gate("set_each", "k", Point::Before);
    s.cache.set("k", &1u32, None).unwrap();
    batch.wait_entered();
    s.cache.delete("k").unwrap();
    assert_eq!(s.cache.get::<u32>("k").unwrap(), None);
    // A second delete takes the first one's op out of the queue: it too must follow the batch,
    // which still holds the older write.
    s.cache.delete("k").unwrap();
    batch.release();
    s.cache.flush().unwrap();
    assert_eq!(
        s.l2.peek("k"),
        None,
        "the slow batch's older write landed after the delete"
    );
    assert_eq!(s.cache.get::<u32>("k").unwrap(), None);
}

/// An async delete dropped while it settles, of a key pending in the replay queue together
/// with a key whose older write is in flight: its op goes to the replay queue from the drop,
/// and a replay run must not send it before the in-flight batch has landed (it did, and the
/// batch's older write then landed over the replayed delete).
#[test]
fn a_replayed_op_waits_for_the_write_behind_batch_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let s = gated_behind(config(10_000, Some(dir.path())));
    let batch = a_pending_and_b_in_flight(&s);
    // The held batch will land this time.
    s.l2.set_failing(false);
    let mut delete = Box::pin(s.cache.multi_delete_async(&["a", "b"]));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        delete.as_mut().poll(&mut cx).is_pending(),
        "the delete waits for the batch in flight"
    );
    drop(delete);
    let replayed = s.gated.gate("delete", "b", Point::Before);
    std::thread::scope(|scope| {
        let replay = scope.spawn(|| s.cache.replay_now());
        // The replay either waits for the batch (it must) or sends the delete now: it gets
        // 200 ms to show which (the gate says if it did).
        let deadline = std::time::Instant::now() + Duration::from_millis(200);
        let mut sent_early = false;
        while !sent_early && std::time::Instant::now() < deadline {
            sent_early = replayed.entered();
            std::thread::yield_now();
        }
        assert!(
            !sent_early,
            "the replay sent its delete while the batch with the older write was in flight"
        );
        batch.release();
        replayed.wait_entered();
        replayed.release();
        replay.join().unwrap().unwrap();
    });
    s.cache.flush().unwrap();
    s.cache.replay_now().unwrap();
    assert_eq!(s.l2.peek("a"), None);
    assert_eq!(
        s.l2.peek("b"),
        None,
        "the batch's older write landed after the replayed delete"
    );
}
