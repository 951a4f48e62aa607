//! Backfills of batch reads, applied by a background thread (`uno-cache-backfill`).
//!
//! A `multi_get` that misses L1 would otherwise copy every L2 hit into L1 before it returns: for
//! the file store about half a microsecond per entry (record, index entry, one `pwrite` per
//! batch), so a batch of 100 misses spent a third of its time writing L1. Here the caller gets
//! its answer after the L2 round trip, and the thread writes the batch (one `set_each`) a moment
//! later, under the same guard as an inline backfill: the tickets were taken before the L2 read,
//! so a write, delete or invalidation of a key in between still wins.
//!
//! Backfills are an optimisation, so the queue never blocks a reader: beyond [`MAX_QUEUED`]
//! entries or [`MAX_QUEUED_BYTES`] bytes a batch is dropped (counted in `backfills_skipped`) and
//! the next read of those keys goes to L2 again.
//! [`CacheManager::flush`](super::CacheManager::flush) waits for the queue.
//! Single-key reads backfill inline: one record costs less than the hand-off.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::guard::Ticket;
use super::policy::Shared;
use super::workers::Workers;
use crate::error::Result;
use crate::shutdown::Shutdown;

/// Entries waiting at most; beyond it a batch is dropped.
pub(crate) const MAX_QUEUED: usize = 100_000;
/// Bytes of keys and values waiting at most; beyond it a batch is dropped, unless the queue is
/// empty: a count of entries alone let 100 000 large values (a slow L1 disk behind readers of
/// megabyte values) hold gigabytes. A batch larger than this on its own is still taken when
/// nothing waits, so the values of large batch reads are backfilled at all; the queue then
/// holds about what its reader already holds in its answer.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;
/// How long the thread lets batches gather after being woken: it keeps the thread from running
/// (and on a small machine, from taking the CPU) the instant a reader queued its batch.
const LINGER: Duration = Duration::from_millis(1);
/// How long `flush` waits for the queue at most (a stuck L1 write must not hang it).
const MAX_DRAIN: Duration = Duration::from_secs(10);

/// The L2 hits of one batch read to copy into L1: keys and values in one buffer, so queueing a
/// batch costs two allocations rather than two per entry. Each entry carries the instant its L1
/// copy expires rather than a TTL: the thread writes it later, and a TTL counted from then
/// would keep the L1 copy longer than L2 keeps its own.
#[derive(Debug, Default)]
pub(crate) struct FillBatch {
    bytes: Vec<u8>,
    /// Per entry: where its key and value end in `bytes`, its expiry (Unix ms), its ticket.
    entries: Vec<(usize, usize, u64, Ticket)>,
}

impl FillBatch {
    pub(crate) fn with_capacity(entries: usize, bytes: usize) -> FillBatch {
        FillBatch {
            bytes: Vec::with_capacity(bytes),
            entries: Vec::with_capacity(entries),
        }
    }

    /// Adds `key` = `value`, to expire in L1 at `expires_at_ms` (Unix ms).
    pub(crate) fn push(&mut self, key: &str, value: &[u8], expires_at_ms: u64, ticket: Ticket) {
        self.bytes.extend_from_slice(key.as_bytes());
        let key_end = self.bytes.len();
        self.bytes.extend_from_slice(value);
        self.entries
            .push((key_end, self.bytes.len(), expires_at_ms, ticket));
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of keys and values held.
    pub(crate) fn size(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Each entry as (key, value, expiry in Unix ms, ticket).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &[u8], u64, Ticket)> + '_ {
        let mut start = 0;
        self.entries
            .iter()
            .map(move |&(key_end, value_end, expires_at_ms, ticket)| {
                let key = self
                    .bytes
                    .get(start..key_end)
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .unwrap_or("");
                let value = self.bytes.get(key_end..value_end).unwrap_or(&[]);
                start = value_end;
                (key, value, expires_at_ms, ticket)
            })
    }
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<FillBatch>,
    entries: usize,
    /// Bytes of keys and values in `batches`.
    bytes: usize,
    /// The thread is writing batches it took.
    busy: bool,
    /// Batches queued since the queue was made, and of those, the ones written or dropped: a
    /// wait for the batches queued before it ends when `settled` reaches `pushed` as it was,
    /// whatever was queued since (a stats poll under a steady flow of batch reads would
    /// otherwise wait out its bound every time).
    pushed: u64,
    settled: u64,
    /// `pushed` when the thread took the batches it is writing.
    taken: u64,
}

/// The batches waiting for the backfill thread.
#[derive(Debug)]
pub(crate) struct FillQueue {
    state: Mutex<State>,
    work: Condvar,
    idle: Condvar,
    /// The manager's stop signal: once fired, nothing is queued or taken any more.
    shutdown: Shutdown,
}

impl FillQueue {
    /// An empty queue whose thread ends when `shutdown` is fired.
    pub(crate) fn new(shutdown: Shutdown) -> FillQueue {
        FillQueue {
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            idle: Condvar::new(),
            shutdown,
        }
    }

    /// Queues a batch; `false` (and the batch is dropped) if the queue is full or shut down.
    pub(crate) fn push(&self, batch: FillBatch) -> bool {
        let mut st = self.state.lock();
        let too_many = st.entries.saturating_add(batch.len()) > MAX_QUEUED;
        let too_large = st.bytes > 0 && st.bytes.saturating_add(batch.size()) > MAX_QUEUED_BYTES;
        if self.shutdown.is_fired() || too_many || too_large {
            return false;
        }
        let was_empty = st.batches.is_empty();
        st.entries += batch.len();
        st.bytes += batch.size();
        st.pushed += 1;
        st.batches.push_back(batch);
        if was_empty {
            self.work.notify_one();
        }
        true
    }

    /// Waits until every batch queued before the call is written (at most [`MAX_DRAIN`]).
    pub(crate) fn drain(&self) {
        if !self.drain_within(MAX_DRAIN) {
            tracing::warn!("backfills still queued after {MAX_DRAIN:?}; flush goes on");
        }
    }

    /// Waits until every batch queued before the call is written (or dropped), at most
    /// `limit`; whether it was. Batches queued meanwhile are not waited for.
    pub(crate) fn drain_within(&self, limit: Duration) -> bool {
        let mark = self.mark();
        self.wait_for(mark, limit)
    }

    /// The batches queued so far, for [`wait_for`](Self::wait_for).
    fn mark(&self) -> u64 {
        self.state.lock().pushed
    }

    /// Waits until the first `mark` batches queued are written or dropped, at most `limit`.
    fn wait_for(&self, mark: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut st = self.state.lock();
        while st.settled < mark {
            if self.idle.wait_until(&mut st, deadline).timed_out() {
                return false;
            }
        }
        true
    }

    /// Whether no batch is queued or being written.
    pub(crate) fn is_idle(&self) -> bool {
        let st = self.state.lock();
        !st.busy && st.batches.is_empty()
    }

    /// Waits for work (then [`LINGER`] more) and takes every queued batch; `None` once stopped.
    pub(super) fn take(&self) -> Option<Vec<FillBatch>> {
        let mut st = self.state.lock();
        while st.batches.is_empty() && !self.shutdown.is_fired() {
            self.work.wait(&mut st);
        }
        if self.shutdown.is_fired() {
            return None;
        }
        let deadline = Instant::now() + LINGER;
        while !self.shutdown.is_fired() && !self.work.wait_until(&mut st, deadline).timed_out() {}
        st.busy = true;
        st.taken = st.pushed;
        st.entries = 0;
        st.bytes = 0;
        Some(st.batches.drain(..).collect())
    }

    /// Ends the writing of the batches [`take`](Self::take) gave.
    pub(super) fn done(&self) {
        let mut st = self.state.lock();
        st.busy = false;
        st.settled = st.taken;
        self.idle.notify_all();
    }

    /// Run when the shutdown signal is fired (under the lock the thread checks it under): drops
    /// what is queued and wakes the thread and any `drain`.
    ///
    /// What it drops is not counted in `backfills_skipped`: the signal fires only when the last
    /// manager handle is dropped, so no one is left to read the count.
    fn shut(&self) {
        let mut st = self.state.lock();
        st.busy = false;
        st.settled = st.pushed;
        st.batches.clear();
        self.work.notify_all();
        self.idle.notify_all();
    }
}

/// Starts the backfill thread (`uno-cache-backfill`), owned by `workers` (at shutdown, queued
/// backfills are dropped: they are only an optimisation).
pub(crate) fn start_filler(workers: &mut Workers, shared: Weak<Shared>, queue: Arc<FillQueue>) -> Result<()> {
    let weak = Arc::downgrade(&queue);
    workers.shutdown().on_fire(move || {
        if let Some(queue) = weak.upgrade() {
            queue.shut();
        }
    });
    workers.spawn("backfill", move || {
        while let Some(batches) = queue.take() {
            if let Some(shared) = shared.upgrade() {
                for batch in &batches {
                    // A panic in L1's fill (a store of the caller's own) must not end the
                    // thread: with it gone, no batch read would backfill again and every
                    // `flush` would wait [`MAX_DRAIN`] for a queue nobody empties.
                    let fill = AssertUnwindSafe(|| shared.apply_fills(batch));
                    if catch_unwind(fill).is_err() {
                        shared.metrics.local.errors.incr();
                        shared.metrics.backfills_skipped.add(batch.len() as u64);
                        tracing::error!(entries = batch.len(),
                            "L1 panicked while backfilling a batch read; its entries were skipped and the backfill thread goes on");
                    }
                }
            }
            queue.done();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::guard::KeyOrder;

    fn batch(n: usize) -> FillBatch {
        let guard = KeyOrder::default();
        let mut batch = FillBatch::default();
        for i in 0..n {
            batch.push(&format!("k{i}"), &[1], 1_000, guard.ticket("k"));
        }
        batch
    }

    /// One entry whose key and value take `bytes` bytes.
    fn large(bytes: usize) -> FillBatch {
        let guard = KeyOrder::default();
        let mut batch = FillBatch::default();
        batch.push("k", &vec![7; bytes - 1], 1_000, guard.ticket("k"));
        batch
    }

    #[test]
    fn a_queue_full_of_bytes_drops_the_batch_however_few_entries_it_holds() {
        let queue = FillQueue::new(Shutdown::default());
        assert!(queue.push(large(MAX_QUEUED_BYTES - 10)));
        assert!(
            !queue.push(large(11)),
            "over the bound in bytes, with two entries"
        );
        assert!(queue.push(large(10)), "up to the bound");
        assert_eq!(queue.state.lock().bytes, MAX_QUEUED_BYTES);
    }

    #[test]
    fn an_empty_queue_takes_a_batch_larger_than_its_bound_in_bytes() {
        let queue = FillQueue::new(Shutdown::default());
        assert!(queue.push(large(MAX_QUEUED_BYTES + 1)), "nothing waits: taken");
        assert!(!queue.push(large(1)), "but nothing after it");
    }

    #[test]
    fn a_batch_gives_back_every_key_and_value_it_was_given() {
        let guard = KeyOrder::default();
        let mut batch = FillBatch::with_capacity(3, 16);
        batch.push("a", b"one", 1_000, guard.ticket("a"));
        batch.push("", b"", 2_000, guard.ticket(""));
        batch.push("ccc", b"three", 3_000, guard.ticket("ccc"));
        let got: Vec<(&str, &[u8], u64)> = batch.iter().map(|(k, v, at, _)| (k, v, at)).collect();
        assert_eq!(
            got,
            [
                ("a", &b"one"[..], 1_000),
                ("", &b""[..], 2_000),
                ("ccc", &b"three"[..], 3_000),
            ]
        );
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn a_full_queue_drops_the_batch_instead_of_blocking_the_reader() {
        let queue = FillQueue::new(Shutdown::default());
        assert!(queue.push(batch(MAX_QUEUED - 10)));
        assert!(!queue.push(batch(11)), "over the bound");
        assert!(queue.push(batch(10)), "up to the bound");
        assert_eq!(queue.state.lock().entries, MAX_QUEUED);
    }

    /// The stats wait so for the queue: an L1 that stalls its writes must not stall them.
    #[test]
    fn drain_within_gives_up_at_its_limit_when_nothing_writes_the_queue() {
        let queue = FillQueue::new(Shutdown::default());
        assert!(queue.is_idle());
        assert!(queue.drain_within(Duration::ZERO), "nothing queued: drained");
        assert!(queue.push(batch(1)));
        assert!(!queue.is_idle());
        let started = Instant::now();
        assert!(!queue.drain_within(Duration::from_millis(20)));
        assert!(started.elapsed() >= Duration::from_millis(20));
    }

    /// A stats poll under a steady flow of batch reads waits for those queued before it only.
    #[test]
    fn drain_within_waits_not_for_batches_queued_after_it_began() {
        let queue = FillQueue::new(Shutdown::default());
        assert!(queue.push(batch(1)));
        let mark = queue.mark();
        let taken = queue.take().map(|b| b.len());
        assert!(queue.push(batch(2)), "queued while the first is written");
        assert!(!queue.wait_for(mark, Duration::ZERO), "the first not written yet");
        queue.done();
        assert_eq!(taken, Some(1));
        assert!(queue.wait_for(mark, Duration::ZERO), "the first written");
        assert!(!queue.is_idle(), "the second still queued");
        assert!(!queue.drain_within(Duration::ZERO), "a new wait waits for it");
    }

    #[test]
    fn drain_returns_once_the_thread_has_written_everything() {
        let queue = Arc::new(FillQueue::new(Shutdown::default()));
        queue.drain(); // nothing queued: at once
        assert!(queue.push(batch(3)));
        let theirs = Arc::clone(&queue);
        let thread = std::thread::spawn(move || {
            let taken = theirs.take().map(|b| b.iter().map(FillBatch::len).sum::<usize>());
            theirs.done();
            taken
        });
        queue.drain();
        assert!(queue.state.lock().batches.is_empty());
        assert_eq!(thread.join().unwrap(), Some(3));
    }
}
