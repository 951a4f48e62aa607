//! Write-behind writes that will never reach L2 are reported by the next `flush` as
//! `Error::WriteBehindLost` (README, write-behind): every way such a write is lost is reported,
//! with the right count, and a write that is not lost (a newer write of its key goes on) is not.
//! Against a memory L1 and the scripted L2 of `manager_support`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;
#[path = "manager_support/threads.rs"]
mod threads;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use manager_support::Scripted;
use uno_cache::{CacheConfig, Codec, Error, Storage, WriteMode};

fn config(max_keys: usize, replay_dir: Option<&Path>) -> CacheConfig {
    let mut config = CacheConfig::default();
    config.distributed.ttl = Duration::from_secs(600);
    config.distributed.write_mode = WriteMode::Behind;
    config.distributed.write_behind_max_keys = max_keys;
    config.offline.replay_dir = replay_dir.map(Path::to_path_buf);
    config
}

fn encoded<T: serde::Serialize>(value: &T) -> Vec<u8> {
    Codec::bincode().encode("k", value).unwrap()
}

fn l2_value(s: &Scripted, key: &str) -> Option<Vec<u8>> {
    s.l2.peek(key).map(|(value, _)| value)
}

fn lost(flushed: uno_cache::Result<()>) -> (u64, String, String) {
    match flushed {
        Err(Error::WriteBehindLost { writes, key, reason }) => (writes, key, reason),
        other => panic!("the flush must report the lost writes, got {other:?}"),
    }
}

/// A value L2 refused while a newer write of its key waited in the queue is not lost: the newer
/// write goes on and lands, so the flush reports nothing, and L1 keeps the newer value.
#[test]
fn a_refused_write_whose_key_was_written_again_since_is_not_reported_lost() {
    let s = manager_support::scripted(config(10_000, None));
    s.l2.set_max_value(64);
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &vec![7u8; 1000], None).unwrap();
    gate.wait_entered();
    s.cache.set("k", &1u32, None).unwrap();
    gate.release();
    s.cache.flush().unwrap();
    assert_eq!(l2_value(&s, "k"), Some(encoded(&1u32)));
    assert_eq!(
        s.l1.get("k").unwrap().map(|e| e.value),
        Some(encoded(&1u32)),
        "the refusal of the older write took the newer one out of L1"
    );
}

/// A failed batch that the replay queue could not take because it is full (overflowed: the op
/// is lost) will never reach L2: the flush reports it, and only it (the write the queue took is
/// not lost).
#[test]
fn write_behind_writes_a_full_replay_queue_lost_are_reported_by_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(10_000, Some(dir.path()));
    config.offline.replay_max_entries = 1;
    let s = manager_support::scripted(config);
    s.l2.set_failing(true);
    s.cache.set("a", &1u32, None).unwrap();
    s.cache.flush().unwrap();
    assert_eq!(s.cache.stats().consistency.replay_pending, 1);
    s.cache.set("b", &1u32, None).unwrap();
    let (writes, key, reason) = lost(s.cache.flush());
    assert_eq!((writes, key.as_str()), (1, "b"));
    assert!(reason.contains("replay queue"), "says why: {reason}");
    assert!(s.cache.stats().consistency.replay_overflowed);
}

/// A set that found the queue full writes through; L2 failed it, hidden by
/// `fallback_on_error`, with no replay queue to take it: the caller was told it succeeded, as
/// for any write-behind write, and the flush reports it.
#[test]
fn a_full_queues_write_through_l2_failed_with_no_replay_queue_is_reported_by_the_flush() {
    let s = manager_support::scripted(config(1, None));
    let gate = s.l2.gate("set_each");
    s.cache.set("a", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("b", &2u32, None).unwrap(); // queued: "a" is in flight
    s.l2.set_failing(true);
    s.cache.set("c", &3u32, None).unwrap(); // full: written through, failed, hidden
    s.l2.set_failing(false);
    assert_eq!(s.cache.stats().consistency.write_behind_overflows, 1);
    gate.release();
    let (writes, key, _) = lost(s.cache.flush());
    assert_eq!((writes, key.as_str()), (1, "c"));
    assert_eq!(l2_value(&s, "b"), Some(encoded(&2u32)));
    assert_eq!(l2_value(&s, "c"), None);
    s.cache.flush().unwrap();
}

/// A full queue's write-through that L2 failed and the caller was told of
/// (`fallback_on_error = false`) is not reported again by the flush.
#[test]
fn a_full_queues_write_through_whose_caller_got_the_error_is_not_reported_lost() {
    let mut config = config(1, None);
    config.fallback_on_error = false;
    let s = manager_support::scripted(config);
    let gate = s.l2.gate("set_each");
    s.cache.set("a", &1u32, None).unwrap();
    gate.wait_entered();
    s.cache.set("b", &2u32, None).unwrap();
    s.l2.set_failing(true);
    assert!(s.cache.set("c", &3u32, None).is_err());
    s.l2.set_failing(false);
    gate.release();
    s.cache.flush().unwrap();
}

/// A `flush_async` dropped before it answered (a caller's timeout) still runs its flush on a
/// thread of its own; the loss that flush took to report reached nobody, so the next flush
/// reports it.
#[test]
fn a_loss_a_dropped_flush_async_never_delivered_is_reported_by_the_next_flush() {
    let s = manager_support::scripted(config(10_000, None));
    s.l2.set_max_value(64);
    let gate = s.l2.gate("set_each");
    s.cache.set("k", &vec![7u8; 1000], None).unwrap();
    gate.wait_entered();
    let mut flushing = Box::pin(s.cache.flush_async());
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(flushing.as_mut().poll(&mut cx).is_pending());
    threads::until_thread("uno-cache-call-", true);
    drop(flushing);
    gate.release();
    threads::until_thread("uno-cache-call-", false);
    let (writes, key, _) = lost(s.cache.flush());
    assert_eq!((writes, key.as_str()), (1, "k"));
    s.cache.flush().unwrap();
}

/// A write whose batch failed (no replay queue) while a delete of its key waited for that batch
/// is not lost: the delete, issued after it, goes on and reaches L2, which then holds what it
/// would have held had the write landed. The flush reports nothing.
#[test]
fn an_in_flight_write_a_waiting_delete_settles_is_not_reported_lost_when_its_batch_fails() {
    let clock = uno_cache::ManualClock::new(manager_support::START_MS);
    let l1 = std::sync::Arc::new(
        uno_cache::MemoryStore::with_clock(1000, std::sync::Arc::new(clock.clone())).unwrap(),
    );
    let l2 = manager_support::ScriptedStore::new("scripted", &clock);
    let gated = manager_support::gated::GatedStore::new(std::sync::Arc::clone(&l2));
    let cache = uno_cache::CacheManager::builder()
        .config(config(10_000, None))
        .local(l1)
        .distributed(gated.clone())
        .clock(std::sync::Arc::new(clock))
        .build()
        .unwrap();
    l2.put_raw("k", &encoded(&0u32), manager_support::START_MS + 600_000);
    let batch = gated.gate("set_each", "k", manager_support::gated::Point::Before);
    cache.set("k", &1u32, None).unwrap();
    batch.wait_entered();
    let mut delete = Box::pin(cache.delete_async("k"));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        delete.as_mut().poll(&mut cx).is_pending(),
        "the delete waits for the batch in flight"
    );
    l2.set_failing(true);
    batch.release();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cache.stats().consistency.write_behind_failures == 0 {
        assert!(std::time::Instant::now() < deadline, "the batch never failed");
        std::thread::yield_now();
    }
    l2.set_failing(false);
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(delete).unwrap();
    assert_eq!(l2.peek("k"), None, "the delete reached L2");
    cache.flush().unwrap();
}
