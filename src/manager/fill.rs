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
//! entries a batch is dropped (counted in `backfills_skipped`) and the next read of those keys
//! goes to L2 again. [`CacheManager::flush`](super::CacheManager::flush) waits for the queue.
//! Single-key reads backfill inline: one record costs less than the hand-off.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::background::Background;
use super::guard::Ticket;
use super::policy::Shared;
use crate::error::Result;

/// Entries waiting at most; beyond it a batch is dropped.
pub(crate) const MAX_QUEUED: usize = 100_000;
/// How long the thread lets batches gather after being woken: it keeps the thread from running
/// (and on a small machine, from taking the CPU) the instant a reader queued its batch.
const LINGER: Duration = Duration::from_millis(1);
/// How long `flush` waits for the queue at most (a stuck L1 write must not hang it).
const MAX_DRAIN: Duration = Duration::from_secs(10);

/// One L2 hit to copy into L1.
#[derive(Debug)]
pub(crate) struct Fill {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) ttl: Duration,
    pub(crate) ticket: Ticket,
}

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<Vec<Fill>>,
    entries: usize,
    /// The thread is writing batches it took.
    busy: bool,
    stop: bool,
}

/// The batches waiting for the backfill thread.
#[derive(Debug, Default)]
pub(crate) struct FillQueue {
    state: Mutex<State>,
    work: Condvar,
    idle: Condvar,
}

impl FillQueue {
    /// Queues a batch; `false` (and the batch is dropped) if the queue is full.
    pub(crate) fn push(&self, batch: Vec<Fill>) -> bool {
        let mut st = self.state.lock();
        if st.stop || st.entries + batch.len() > MAX_QUEUED {
            return false;
        }
        let was_empty = st.batches.is_empty();
        st.entries += batch.len();
        st.batches.push_back(batch);
        if was_empty {
            self.work.notify_one();
        }
        true
    }

    /// Waits until every queued batch is written (at most [`MAX_DRAIN`]).
    pub(crate) fn drain(&self) {
        let deadline = Instant::now() + MAX_DRAIN;
        let mut st = self.state.lock();
        while st.busy || !st.batches.is_empty() {
            if self.idle.wait_until(&mut st, deadline).timed_out() {
                tracing::warn!("backfills still queued after {MAX_DRAIN:?}; flush goes on");
                return;
            }
        }
    }

    /// Waits for work (then [`LINGER`] more) and takes every queued batch; `None` once stopped.
    fn take(&self) -> Option<Vec<Vec<Fill>>> {
        let mut st = self.state.lock();
        while st.batches.is_empty() && !st.stop {
            self.work.wait(&mut st);
        }
        if st.stop {
            return None;
        }
        let deadline = Instant::now() + LINGER;
        while !st.stop && !self.work.wait_until(&mut st, deadline).timed_out() {}
        st.busy = true;
        st.entries = 0;
        Some(st.batches.drain(..).collect())
    }

    fn done(&self) {
        let mut st = self.state.lock();
        st.busy = false;
        if st.batches.is_empty() {
            self.idle.notify_all();
        }
    }

    fn stop(&self) {
        let mut st = self.state.lock();
        st.stop = true;
        st.busy = false;
        st.batches.clear();
        self.work.notify_all();
        self.idle.notify_all();
    }
}

/// Starts the backfill thread (`uno-cache-backfill`); dropping the handle stops and joins it
/// (queued backfills are dropped: they are only an optimisation).
pub(crate) fn start_filler(shared: Weak<Shared>, queue: Arc<FillQueue>) -> Result<Background> {
    let theirs = Arc::clone(&queue);
    Background::spawn(
        "backfill",
        move || {
            while let Some(batches) = theirs.take() {
                if let Some(shared) = shared.upgrade() {
                    for batch in &batches {
                        shared.apply_fills(batch);
                    }
                }
                theirs.done();
            }
        },
        move || queue.stop(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::guard::BackfillGuard;

    fn batch(n: usize) -> Vec<Fill> {
        let guard = BackfillGuard::default();
        (0..n)
            .map(|i| Fill {
                key: format!("k{i}"),
                value: vec![1],
                ttl: Duration::from_secs(1),
                ticket: guard.ticket("k"),
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_batch_instead_of_blocking_the_reader() {
        let queue = FillQueue::default();
        assert!(queue.push(batch(MAX_QUEUED - 10)));
        assert!(!queue.push(batch(11)), "over the bound");
        assert!(queue.push(batch(10)), "up to the bound");
        assert_eq!(queue.state.lock().entries, MAX_QUEUED);
    }

    #[test]
    fn drain_returns_once_the_thread_has_written_everything() {
        let queue = Arc::new(FillQueue::default());
        queue.drain(); // nothing queued: at once
        assert!(queue.push(batch(3)));
        let theirs = Arc::clone(&queue);
        let thread = std::thread::spawn(move || {
            let taken = theirs.take().map(|b| b.iter().map(Vec::len).sum::<usize>());
            theirs.done();
            taken
        });
        queue.drain();
        assert!(queue.state.lock().batches.is_empty());
        assert_eq!(thread.join().unwrap(), Some(3));
    }
}
