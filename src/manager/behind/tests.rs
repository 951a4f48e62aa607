//! Tests of the write-behind queue itself (`mod.rs`); the manager's behaviour with it is
//! in `tests/manager_write_behind.rs`.

use super::*;

/// Spins until the writer is (`true`) or is no longer (`false`) gathering a batch.
fn until_lingering(queue: &WriteQueue, lingering: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.state.lock().lingering != lingering {
        assert!(
            Instant::now() < deadline,
            "the writer never reached lingering = {lingering}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn a_batch_listing_a_key_twice_counts_it_once_against_the_bound() {
    let queue = WriteQueue::new(2, Duration::from_secs(1), Shutdown::default());
    let twice: [(&str, &[u8]); 3] = [("a", b"1"), ("b", b"1"), ("a", b"2")];
    assert_eq!(queue.push(&twice, u64::MAX, || false), Pushed::Queued);
    assert_eq!(
        queue.lookup("a", 0),
        Some(Some(b"2".to_vec())),
        "the last value is kept"
    );
    assert_eq!(queue.len(), 2);
    // Keys already queued are not new either; the bound still holds for those that are.
    let queued_again: [(&str, &[u8]); 4] = [("b", b"3"), ("a", b"3"), ("b", b"4"), ("a", b"4")];
    assert_eq!(queue.push(&queued_again, u64::MAX, || false), Pushed::Queued);
    let one_more: [(&str, &[u8]); 3] = [("c", b"1"), ("a", b"5"), ("c", b"2")];
    assert_eq!(queue.push(&one_more, u64::MAX, || false), Pushed::Full);
    assert_eq!(queue.lookup("c", 0), None);
    assert_eq!(queue.lookup("a", 0), Some(Some(b"4".to_vec())));
}

/// Batches were taken in the map's order: a key in a late bucket could wait as long as new
/// keys kept the queue over a batch, and a `flush` returned with it unsent.
#[test]
fn batches_are_taken_oldest_first_and_a_key_written_again_keeps_its_place() {
    let queue = WriteQueue::new(10 * BATCH, Duration::from_secs(1), Shutdown::default());
    let keys: Vec<String> = (0..BATCH + BATCH / 2).map(|i| format!("k{i}")).collect();
    for key in &keys {
        assert_eq!(queue.push(&[(key, b"1")], u64::MAX, || false), Pushed::Queued);
    }
    assert_eq!(queue.push(&[("k0", b"2")], u64::MAX, || false), Pushed::Queued);
    let mut first: Vec<String> = queue.take().into_iter().map(|(key, _)| key).collect();
    first.sort_unstable();
    let mut want = keys[..BATCH].to_vec();
    want.sort_unstable();
    assert_eq!(first, want);
}

#[test]
fn a_flush_while_the_writer_gathers_a_batch_does_not_stop_the_writer() {
    let shutdown = Shutdown::default();
    let mut queue = WriteQueue::new(100, Duration::from_secs(1), shutdown.clone());
    queue.linger = Duration::from_millis(50);
    let queue = Arc::new(queue);
    queue.wake_writer_on_shutdown();
    let (woke_tx, woke_rx) = std::sync::mpsc::channel();
    let writer = {
        let queue = Arc::clone(&queue);
        std::thread::spawn(move || loop {
            let work = queue.wait_for_work();
            let _ = woke_tx.send(work);
            if !work {
                return;
            }
            queue.land(&queue.take());
        })
    };
    assert_eq!(queue.push(&[("a", b"1")], u64::MAX, || false), Pushed::Queued);
    until_lingering(&queue, true);
    // What `flush` does: it sends the queued batch itself.
    let flushed = queue.take();
    assert_eq!(flushed.len(), 1);
    queue.land(&flushed);
    until_lingering(&queue, false);
    assert_eq!(queue.push(&[("b", b"2")], u64::MAX, || false), Pushed::Queued);
    let work = woke_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the writer never woke for the next write");
    assert!(
        work,
        "the writer stopped after a flush emptied the queue it was gathering"
    );
    shutdown.fire();
    writer.join().unwrap();
}

/// A read that missed L1 while a delete settled its key answered the in-flight batch's older
/// value, though the write the settle dropped had completed before the read began (seen in the
/// write-behind ordering stress test).
#[test]
fn a_write_a_settle_drops_stays_the_answer_over_the_older_one_in_flight_until_it_lands() {
    let queue = WriteQueue::new(100, Duration::from_secs(1), Shutdown::default());
    assert_eq!(queue.push(&[("k", b"old")], u64::MAX, || false), Pushed::Queued);
    let in_flight = queue.take();
    assert_eq!(queue.push(&[("k", b"new")], u64::MAX, || false), Pushed::Queued);
    // What a delete's settle does before it waits for the batch.
    queue.drop_queued(&mut queue.state.lock(), &["k"]);
    assert_eq!(queue.lookup("k", 0), Some(Some(b"new".to_vec())));
    assert_eq!(queue.len(), 1, "the dropped write is not sent");
    queue.land(&in_flight);
    assert_eq!(
        queue.lookup("k", 0),
        None,
        "once the batch landed, the settling op goes on and the read asks L2"
    );
    // A key with nothing in flight: its dropped write is gone at once.
    assert_eq!(queue.push(&[("j", b"1")], u64::MAX, || false), Pushed::Queued);
    queue.drop_queued(&mut queue.state.lock(), &["j"]);
    assert_eq!(queue.lookup("j", 0), None);
}

/// Records whether it was woken.
struct Woken(std::sync::atomic::AtomicBool);

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A wait for a key's writes to leave the queue (a tagged write's, before it tags its key
/// again) ends when a settle (a delete of the key) takes its queued write out: that write never
/// lands. Only a landing woke the wait, so the async one, which has no deadline of its own,
/// waited for the next batch of any key, for good on an idle queue.
#[test]
fn a_wait_for_a_keys_writes_to_leave_the_queue_ends_when_a_settle_takes_them_out() {
    use std::future::Future;
    let queue = WriteQueue::new(100, Duration::from_secs(3600), Shutdown::default());
    assert_eq!(queue.push(&[("k", b"v")], u64::MAX, || false), Pushed::Queued);
    let woken = Arc::new(Woken(std::sync::atomic::AtomicBool::new(false)));
    let waker = std::task::Waker::from(Arc::clone(&woken));
    let mut cx = std::task::Context::from_waker(&waker);
    let wait = queue.wait_sent_async(&["k"]);
    let mut wait = std::pin::pin!(wait);
    assert!(wait.as_mut().poll(&mut cx).is_pending(), "k is queued");
    // No batch is in flight: the settle takes k out and returns at once.
    assert!(!queue.settle(&["k"]));
    assert!(
        woken.0.load(std::sync::atomic::Ordering::SeqCst),
        "the wait was not woken when k's write left the queue"
    );
    assert!(wait.as_mut().poll(&mut cx).is_ready());
}

/// Bytes of keys and values the queue holds waiting (not in flight).
fn queued_bytes(queue: &WriteQueue) -> usize {
    let st = queue.state.lock();
    st.queued.iter().map(|(k, q)| k.len() + q.value.len()).sum()
}

/// The bound in keys alone let `write_behind_max_keys` large values wait: 10 000 keys of 1 MiB
/// (a slow L2 behind writers of images) held 10 GB of RAM. Past the bound in bytes a set finds
/// the queue full and writes through, as past the bound in keys.
#[test]
fn large_values_fill_the_queue_at_its_bound_in_bytes_not_at_its_keys() {
    let queue = WriteQueue::new(10_000, Duration::from_secs(1), Shutdown::default());
    let value = vec![7u8; 1 << 20];
    let keys: Vec<String> = (0..96).map(|i| format!("image{i}")).collect();
    let pushed: Vec<Pushed> = keys
        .iter()
        .map(|key| queue.push(&[(key.as_str(), &value[..])], u64::MAX, || false))
        .collect();
    assert!(
        queued_bytes(&queue) <= MAX_QUEUED_BYTES,
        "{} MiB wait for L2 in a queue bounded to 64 MiB",
        queued_bytes(&queue) >> 20
    );
    let full = pushed.iter().filter(|p| **p == Pushed::Full).count();
    assert!(full >= 32, "{full} of 96 sets wrote through");
    // A value written again in place of a queued one, and a small one, still fit.
    assert_eq!(
        queue.push(&[("image0", b"small")], u64::MAX, || false),
        Pushed::Queued
    );
    assert_eq!(queue.lookup("image0", 0), Some(Some(b"small".to_vec())));
    assert_eq!(queue.push(&[("tiny", b"1")], u64::MAX, || false), Pushed::Queued);
    // Once taken for sending, the room is free again.
    while !queue.take().is_empty() {}
    assert_eq!(queued_bytes(&queue), 0);
    assert_eq!(queue.state.lock().queued_bytes, 0, "the count follows the queue");
    assert_eq!(
        queue.push(&[("image95", &value[..])], u64::MAX, || false),
        Pushed::Queued
    );
    // A value over the bound on its own is taken while nothing else waits.
    while !queue.take().is_empty() {}
    let huge = vec![1u8; MAX_QUEUED_BYTES + 1];
    assert_eq!(
        queue.push(&[("huge", &huge[..])], u64::MAX, || false),
        Pushed::Queued
    );
}
