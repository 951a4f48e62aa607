//! Write-behind (`distributed.write_mode = "behind"`): a set returns once L1 has the value; its
//! L2 write waits in a [`WriteQueue`] that a writer thread (`uno-cache-l2-writer`) sends in
//! batches, one `set_each` call (one pipeline on Redis) per batch, newest value per key only.
//!
//! Why: with write-through every set pays an L2 round trip, so a workload with 10% sets can never
//! run more than 10× faster than L2 alone however well L1 answers the reads. Behind, a set costs
//! an L1 append and a map insert.
//!
//! The rules that keep the levels and the instances consistent:
//! - **Reads.** A read that misses L1 takes its backfill ticket, then asks the queue before L2: a
//!   queued or in-flight value is newer than anything L2 holds, so it is the answer (nothing is
//!   backfilled). Taking the ticket first means a set that lands in between makes the backfill
//!   of an older L2 value stale, so it is skipped. A queued write that a settle (below) dropped
//!   while an older write of its key was in flight stays the answer until that batch lands: the
//!   in-flight value is older than a write that may have completed before the read began, and
//!   the settling op cannot go on before the batch lands. After that, until its own L2 step,
//!   a settling delete's or write-through's keys read as misses (`WriteGuard::reads_miss`):
//!   L2 holds the batch's older value then.
//! - **Deletes** still wait for L2 (unless their settle gives up, below), after *settling*
//!   their keys: their queued writes are dropped and an in-flight batch holding one of them is
//!   waited for, so a write issued before a delete never lands after it. A set and a delete
//!   of one key never interleave (both own the key's
//!   stripe in `guard` from their L1 step until their queue or L2 step is done), and a read that
//!   misses L1 while the delete is on its way to L2 is a miss: L2 may still hold a value older
//!   than the queued write the delete dropped. A settle waits four L2 timeouts at most, 100 ms
//!   at the least (a batch resent one key at a time, or a stuck sender, can take longer): one
//!   that gives up hands its delete or write to this queue, behind the batch, since sent to L2
//!   at once it could land first and the batch's older write after it; a later op of the key
//!   waits for that batch too. And the replay waits for the batch in flight before it reads its ops
//!   ([`WriteQueue::fence`]), so an op queued there while an older write of its key was in
//!   flight reaches L2 after that write. An async delete (or write-through) dropped
//!   between its settle and L2's answer (a caller's timeout) hands its part back to the queue
//!   ([`Requeue`]): the writes its settle dropped were acknowledged to their callers, and L2
//!   would otherwise keep a value older than them. A delete is queued as a write that has
//!   already expired, which the writer sends as a delete and a read takes as a miss. (Without
//!   write-behind, such a dropped op goes to the replay queue, if there is one; if there is
//!   none, its keys are not backfilled for four L2 timeouts, see [`KeyOrder::quiet`], since
//!   its L2 command may still land after a read got L2's older value.)
//! - **Invalidations** of a queued write are published by the writer once L2 has the value, so
//!   an instance that re-reads on the message finds it. Another instance's invalidation of a
//!   key whose write waits here (queued or in flight) turns it into a delete sent after the
//!   batch in flight (`withdraw_behind` in `backplane`): the other's op was in L2 before its
//!   message came, and the waiting write would land after it.
//! - **Failures.** A batch L2 refused (timeout, outage, open breaker) is counted and, in offline
//!   mode, pushed to the durable replay queue, under the queue lock, skipping keys that have a
//!   newer queued value (a set checks "must this key go to the replay queue?" under the same
//!   lock, so replay keeps per-key order; a batch that goes there for one pending key first
//!   settles its other keys, whose older writes here would otherwise follow it into the replay
//!   queue when their batch fails). Without a replay queue, under `fallback_on_error = false`,
//!   the batch's writes leave L1 instead, as a write-through L2 failed does (not a key queued
//!   again since). A value L2 refuses when it is sent (a Memcached whose `-I`
//!   is below `max_item_size`) is removed from L1, so every instance reads what L2 holds, and
//!   logged; a value L2's own checks refuse (over `max_item_size`) is refused to the caller of
//!   the set, before L1 is written, and never queued.
//! - **Bounded.** At most `write_behind_max_keys` keys wait, and [`MAX_QUEUED_BYTES`] of keys
//!   and values (one larger write is taken when nothing waits); a set that finds the queue full
//!   settles its keys and writes through itself (backpressure).
//! - **Shutdown.** Dropping the manager (and [`CacheManager::flush`](super::CacheManager::flush))
//!   sends what is queued before returning; each send is bounded by the L2 timeout.
//!
//! The price, written in the README: L2 (and so other instances) lags this instance by about one
//! batch; L2 errors never reach the caller; a crash loses the queued L2 writes (L1's copies
//! too, once the restart's revalidation checks them against L2, under the default policy).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

#[cfg(doc)]
use super::guard::KeyOrder;
use super::guard::Ticket;
use super::policy::{Shared, Suspect};
#[cfg(doc)]
use super::requeue::Requeue;
use super::requeue::Sets;
use crate::error::{key_for_error, Result};
use crate::shutdown::Shutdown;

mod lost;
mod send;
pub(crate) use send::start_writer;

/// Keys per L2 call of the writer.
const BATCH: usize = 1_000;
/// Bytes of keys and values that may wait, besides `write_behind_max_keys`: bounded in keys
/// alone, a slow L2 behind writers of large values (images of a MiB) let 10 000 of them, 10 GB,
/// wait in RAM. Past it a set finds the queue full and writes through, as past the bound in
/// keys, unless nothing waits: a value larger than this on its own still goes behind. The batch
/// in flight, taken from the queue, holds at most as much again.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;
/// How long the writer lets writes gather after the first one before it sends them. Waking the
/// writer (and L2) for every set would cost the callers more than the batching saves: on a
/// 2-vCPU machine a wake-up per set put the writer's round trip into the sets' p99. One
/// millisecond bounds the extra L2 lag and keeps the writer to at most ~1000 batches a second.
const LINGER: Duration = Duration::from_millis(1);

/// A value waiting for L2.
#[derive(Debug, Clone)]
struct Queued {
    value: Arc<[u8]>,
    /// Absolute L2 expiry, Unix ms.
    expires_at_ms: u64,
    /// When the key was queued (a count; a newer value of a queued key keeps it): batches are
    /// taken oldest first.
    order: u64,
}

#[derive(Debug, Default)]
struct State {
    /// Not taken by a sender yet.
    queued: HashMap<String, Queued>,
    /// Bytes of the keys and values in `queued` (see [`MAX_QUEUED_BYTES`]).
    queued_bytes: usize,
    /// Taken by the sender whose batch is on its way to L2.
    in_flight: HashMap<String, Queued>,
    /// Queued writes a settle dropped while an older write of their key was in flight: the
    /// newest completed write of the key until that batch lands (the settling op waits for it),
    /// so a read answers this, not the older in-flight value.
    dropped: HashMap<String, Queued>,
    /// Keys of the batch on its way whose write there a newer op superseded (a settle that gave
    /// up, see [`WriteQueue::settle`]): out of `in_flight`, so that the batch neither replays
    /// nor resends them, but a later settle of one of them still waits for the batch to land,
    /// as its older write may land after anything sent before.
    superseded: HashSet<String>,
    /// Keys of the batch on its way that a settle waits for (how many settles): the settling
    /// op, issued after the batch's write, goes on once it lands, so that write failing loses
    /// nothing (see [`WriteQueue::current_writes`]).
    settling: HashMap<String, usize>,
    /// The writer is gathering a batch (a test waits for this state).
    lingering: bool,
    /// The next [`Queued::order`].
    next_order: u64,
    /// Per slot of keys ([`epoch_slot`]): how many times a settle took a queued write of a key
    /// of the slot out of the queue. See [`WriteQueue::settle_epoch`].
    settled: Vec<u64>,
}

/// Slots of the settle epochs (a power of two): 8 KiB, and two keys share one with
/// probability 1/1024.
const EPOCH_SLOTS: usize = 1024;

/// What a queued write of `key` counts against [`MAX_QUEUED_BYTES`].
fn held(key: &str, value: &[u8]) -> usize {
    key.len().saturating_add(value.len())
}

fn epoch_slot(key: &str) -> usize {
    // Fixed keys: the slot only spreads keys, nobody chooses them to collide here.
    let h = ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(key);
    // Truncation is fine: only the low bits pick the slot.
    #[allow(clippy::cast_possible_truncation)]
    let h = h as usize;
    h & (EPOCH_SLOTS - 1)
}

/// An async settle's wait for the batch in flight ([`State::settling`]), ended when dropped.
struct Settling<'q> {
    queue: &'q WriteQueue,
    keys: &'q [&'q str],
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        WriteQueue::waited(&mut self.queue.state.lock(), self.keys);
    }
}

/// What [`WriteQueue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The writer will send it.
    Queued,
    /// The queue is full: settle the keys and write through.
    Full,
    /// A key has an op in the replay queue: queue this write there too.
    Replay,
}

/// The L2 writes waiting to be sent; shared by callers and the writer thread.
#[derive(Debug)]
pub(crate) struct WriteQueue {
    state: Mutex<State>,
    /// The writer waits here for work.
    work: Condvar,
    /// Settling callers wait here for an in-flight batch to land.
    landed: Condvar,
    landed_async: tokio::sync::Notify,
    /// One batch on its way at a time (writer thread, `flush`, the final drain), so two
    /// batches never hold the same key.
    sending: Mutex<()>,
    max_keys: usize,
    /// How long a settling delete waits for an in-flight batch (the batch's own L2 call is
    /// bounded by the L2 timeout; this guards against a stuck sender, and against a batch sent
    /// again one key at a time, which skips the keys a settle gave up on).
    max_wait: Duration,
    /// How long the writer waits for a batch to gather ([`LINGER`]; longer in a test).
    linger: Duration,
    /// The manager's stop signal: once fired, the writer stops waiting for work.
    shutdown: Shutdown,
    /// Writes L2 will never have, until a `flush` reports them.
    pub(super) lost: lost::LostWrites,
}

impl WriteQueue {
    /// An empty queue whose writer stops when `shutdown` is fired.
    pub(crate) fn new(max_keys: usize, l2_timeout: Duration, shutdown: Shutdown) -> WriteQueue {
        WriteQueue {
            state: Mutex::new(State {
                settled: vec![0; EPOCH_SLOTS],
                ..State::default()
            }),
            work: Condvar::new(),
            landed: Condvar::new(),
            landed_async: tokio::sync::Notify::new(),
            sending: Mutex::new(()),
            max_keys: max_keys.max(1),
            max_wait: l2_timeout.saturating_mul(4).max(Duration::from_millis(100)),
            linger: LINGER,
            shutdown,
            lost: lost::LostWrites::default(),
        }
    }

    /// Makes the queue's shutdown signal wake the writer (under the lock it checks it under).
    fn wake_writer_on_shutdown(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        self.shutdown.on_fire(move || {
            if let Some(queue) = weak.upgrade() {
                let _st = queue.state.lock();
                queue.work.notify_all();
            }
        });
    }

    /// Queues `items` (absolute L2 expiry `expires_at_ms`) unless `to_replay()` says a key
    /// belongs in the replay queue, checked under the queue lock (see the module docs).
    pub(crate) fn push(
        &self,
        items: &[(&str, &[u8])],
        expires_at_ms: u64,
        to_replay: impl FnOnce() -> bool,
    ) -> Pushed {
        self.push_with(items, expires_at_ms, to_replay, true)
    }

    /// [`push`](Self::push), past the bound unless `bounded`: for what a dropped future owes
    /// ([`Requeue`]), which has no caller left to write through.
    pub(super) fn push_with(
        &self,
        items: &[(&str, &[u8])],
        expires_at_ms: u64,
        to_replay: impl FnOnce() -> bool,
        bounded: bool,
    ) -> Pushed {
        let mut st = self.state.lock();
        if to_replay() {
            if !bounded {
                // No caller is left to settle the keys (see `Requeue`): their older writes here
                // give way now, as to a settle that gave up waiting, so that a batch of them that
                // fails is not queued for replay after this newer write.
                let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
                self.drop_queued(&mut st, &keys);
                Self::supersede(&mut st, &keys);
            }
            return Pushed::Replay;
        }
        // Counting the distinct new keys costs a set, so only when the batch's length alone
        // would not fit.
        if bounded
            && st.queued.len() + items.len() > self.max_keys
            && st.queued.len() + Self::new_keys(&st.queued, items) > self.max_keys
        {
            return Pushed::Full;
        }
        // The values a batch replaces are counted as staying: a set near the bound writes
        // through a little early rather than a lookup per key.
        let incoming = items
            .iter()
            .fold(0usize, |sum, (key, value)| sum.saturating_add(held(key, value)));
        if bounded && st.queued_bytes > 0 && st.queued_bytes.saturating_add(incoming) > MAX_QUEUED_BYTES {
            return Pushed::Full;
        }
        let was_empty = st.queued.is_empty();
        let was_below = st.queued.len() < BATCH;
        for (key, value) in items {
            Self::enqueue(&mut st, key, value, expires_at_ms);
        }
        // The writer sleeps on an empty queue; a full batch need not wait for the linger.
        if was_empty || (was_below && st.queued.len() >= BATCH) {
            self.work.notify_one();
        }
        Pushed::Queued
    }

    /// Queues `value` as `key`'s newest write; a key already queued keeps its place.
    fn enqueue(st: &mut State, key: &str, value: &[u8], expires_at_ms: u64) {
        let order = match st.queued.get(key) {
            Some(older) => older.order,
            None => {
                st.next_order += 1;
                st.next_order
            }
        };
        let queued = Queued {
            value: Arc::from(value),
            expires_at_ms,
            order,
        };
        st.queued_bytes = st.queued_bytes.saturating_add(held(key, value));
        if let Some(older) = st.queued.insert(key.to_owned(), queued) {
            st.queued_bytes = st.queued_bytes.saturating_sub(held(key, &older.value));
        }
    }

    /// How many keys of `items` are not in `queued`, each counted once: a batch may list a key
    /// twice (its last value is the one kept), and counting every listing would refuse a batch
    /// that fits.
    fn new_keys(queued: &HashMap<String, Queued>, items: &[(&str, &[u8])]) -> usize {
        let mut new: HashSet<&str> = HashSet::with_capacity(items.len());
        new.extend(items.iter().map(|(k, _)| *k).filter(|k| !queued.contains_key(*k)));
        new.len()
    }

    /// The newest write of `key` not yet confirmed by L2, if there is one: its value, or
    /// `None` if it expired by `now_ms` (a delete handed back to the queue is such a write, see
    /// [`Requeue`]): a miss, as L2 may still hold an older value that write replaced.
    pub(crate) fn lookup(&self, key: &str, now_ms: u64) -> Option<Option<Vec<u8>>> {
        let st = self.state.lock();
        st.queued
            .get(key)
            .or_else(|| st.dropped.get(key))
            .or_else(|| st.in_flight.get(key))
            .map(|q| (q.expires_at_ms > now_ms).then(|| q.value.to_vec()))
    }

    /// Keys queued or in flight.
    pub(crate) fn len(&self) -> usize {
        let st = self.state.lock();
        // A key written again while its older write is in flight is in both maps.
        let only_in_flight = st
            .in_flight
            .keys()
            .filter(|k| !st.queued.contains_key(*k))
            .count();
        st.queued.len() + only_in_flight
    }

    /// Turns the writes of `keys` (or, with `prefix`, of every key under it) that are queued or
    /// on their way into deletes queued behind them (see `withdraw_behind` in `backplane`), and
    /// returns those keys. Under one lock, so a write pushed meanwhile is either withdrawn (it
    /// overlapped the message) or queued after the delete. If `to_replay` says the keys belong
    /// in the replay queue (one has an op pending there), their queued writes are dropped
    /// instead and the second value is `true`: the caller queues the deletes there.
    #[cfg(feature = "redis")]
    pub(crate) fn withdraw(
        &self,
        keys: &[&str],
        prefix: Option<&str>,
        to_replay: impl FnOnce(&[&str]) -> bool,
    ) -> (Vec<String>, bool) {
        let mut st = self.state.lock();
        let found = Self::waiting_among(&st, keys, prefix);
        if found.is_empty() {
            return (found, false);
        }
        let refs: Vec<&str> = found.iter().map(String::as_str).collect();
        if to_replay(&refs) {
            self.drop_queued(&mut st, &refs);
            Self::supersede(&mut st, &refs);
            return (found, true);
        }
        let was_empty = st.queued.is_empty();
        for key in &refs {
            // A delete is a write that has already expired (see `Requeue`).
            Self::enqueue(&mut st, key, &[], 1);
        }
        if was_empty {
            self.work.notify_one();
        }
        (found, false)
    }

    /// The keys among `keys` (or, with `prefix`, those starting with it) whose write is queued
    /// or on its way, each once.
    #[cfg(feature = "redis")]
    fn waiting_among(st: &State, keys: &[&str], prefix: Option<&str>) -> Vec<String> {
        let Some(prefix) = prefix else {
            // Looked up one by one: a message names a few keys, the queue may hold thousands.
            let mut found: Vec<String> = keys
                .iter()
                .filter(|k| Self::waits(st, &[k]))
                .map(|k| (*k).to_owned())
                .collect();
            found.sort_unstable();
            found.dedup();
            return found;
        };
        let found: HashSet<&String> = st
            .queued
            .keys()
            .chain(st.in_flight.keys())
            .chain(st.dropped.keys())
            .chain(st.superseded.iter())
            .filter(|k| k.starts_with(prefix))
            .collect();
        found.into_iter().cloned().collect()
    }

    /// A read that asks L2 takes this before its ticket and compares it once L2 answered: if a
    /// settle took a queued write of the key out of the queue in between, L2's answer may be
    /// older than that write, which may have completed before the read began.
    pub(crate) fn settle_epoch(&self, key: &str) -> u64 {
        let st = self.state.lock();
        st.settled.get(epoch_slot(key)).copied().unwrap_or(0)
    }

    /// Takes the queued writes of `keys` out of the queue, bumping their settle epochs; one whose
    /// key has an older write in flight is kept aside for reads ([`State::dropped`]).
    ///
    /// Wakes the callers waiting for writes to leave the queue ([`wait_sent`](Self::wait_sent)):
    /// a write taken out here never lands, and only a landing woke them, so a tagged write whose
    /// queued value a delete took out before the writer did waited for the next batch of any
    /// key: the blocking wait its four L2 timeouts, the async one (no deadline of its own) for
    /// as long as the queue stayed idle.
    fn drop_queued(&self, st: &mut State, keys: &[&str]) {
        let mut took = false;
        for key in keys {
            if let Some(queued) = st.queued.remove(*key) {
                st.queued_bytes = st.queued_bytes.saturating_sub(held(key, &queued.value));
                took = true;
                if let Some(epoch) = st.settled.get_mut(epoch_slot(key)) {
                    *epoch = epoch.wrapping_add(1);
                }
                if st.in_flight.contains_key(*key) {
                    st.dropped.insert((*key).to_owned(), queued);
                }
            }
        }
        if took {
            self.landed.notify_all();
            self.landed_async.notify_waiters();
        }
    }

    /// Drops the queued writes of `keys` and waits until no in-flight batch holds one of them.
    /// Returns whether it had to give up waiting.
    pub(crate) fn settle(&self, keys: &[&str]) -> bool {
        let deadline = Instant::now() + self.max_wait;
        let mut st = self.state.lock();
        self.drop_queued(&mut st, keys);
        if !Self::on_the_way(&st, keys) {
            return false;
        }
        Self::wait_on(&mut st, keys);
        let gave_up = loop {
            if self.landed.wait_until(&mut st, deadline).timed_out() {
                // The caller's write or delete goes on and supersedes the batch's writes of
                // these keys: if the batch fails, they must not be queued for replay after it.
                Self::supersede(&mut st, keys);
                break true;
            }
            // A delete queued meanwhile behind the batch (another instance's invalidation,
            // see `withdraw`) is older than the caller's op, which holds the keys: as
            // `settle_async` does, drop it rather than send it after the op.
            self.drop_queued(&mut st, keys);
            if !Self::on_the_way(&st, keys) {
                break false;
            }
        };
        Self::waited(&mut st, keys);
        gave_up
    }

    /// Marks `keys` as waited for by a settle ([`State::settling`]).
    fn wait_on(st: &mut State, keys: &[&str]) {
        for key in keys {
            *st.settling.entry((*key).to_owned()).or_default() += 1;
        }
    }

    /// Undoes [`wait_on`](Self::wait_on).
    fn waited(st: &mut State, keys: &[&str]) {
        for key in keys {
            if let Some(n) = st.settling.get_mut(*key) {
                *n -= 1;
                if *n == 0 {
                    st.settling.remove(*key);
                }
            }
        }
    }

    /// Whether the batch on its way holds a write of one of `keys`, superseded or not.
    fn on_the_way(st: &State, keys: &[&str]) -> bool {
        keys.iter()
            .any(|k| st.in_flight.contains_key(*k) || st.superseded.contains(*k))
    }

    /// Takes `keys` out of the batch on its way (see [`State::superseded`]).
    fn supersede(st: &mut State, keys: &[&str]) {
        for key in keys {
            st.dropped.remove(*key);
            if st.in_flight.remove(*key).is_some() {
                st.superseded.insert((*key).to_owned());
            }
        }
    }

    /// Waits, taking nothing out of the queue, until no write of `keys` is queued or on its
    /// way (each landed in L2, went to the replay queue, or was dropped); `false` if it gave
    /// up after the settle's wait.
    pub(crate) fn wait_sent(&self, keys: &[&str]) -> bool {
        let deadline = Instant::now() + self.max_wait;
        let mut st = self.state.lock();
        while Self::waits(&st, keys) {
            if self.landed.wait_until(&mut st, deadline).timed_out() {
                return false;
            }
        }
        true
    }

    /// [`wait_sent`](Self::wait_sent) without blocking an executor, and without a deadline of
    /// its own, as [`settle_async`](Self::settle_async).
    pub(crate) async fn wait_sent_async(&self, keys: &[&str]) {
        loop {
            let landed = self.landed_async.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            if !Self::waits(&self.state.lock(), keys) {
                return;
            }
            landed.await;
        }
    }

    /// Whether a write of `key` is queued or on its way (see `replayed_tags`: one that fails
    /// goes to the replay queue, under this queue's lock, before it leaves this one).
    pub(crate) fn holds(&self, key: &str) -> bool {
        Self::waits(&self.state.lock(), &[key])
    }

    /// Whether a write of one of `keys` is queued or on its way.
    fn waits(st: &State, keys: &[&str]) -> bool {
        keys.iter().any(|k| st.queued.contains_key(*k)) || Self::on_the_way(st, keys)
    }

    /// [`settle`](Self::settle) without blocking an executor, and without a deadline of its own
    /// (the default build has no timer): it waits as long as the in-flight batch's L2 calls
    /// take, each bounded by the L2 timeout: one call, or one per key when L2 refused a value
    /// of the batch as bad input and the rest are sent again key by key.
    pub(crate) async fn settle_async(&self, keys: &[&str]) {
        // Ends the wait whether the settle returns or its future is dropped.
        let mut settling = None;
        loop {
            let landed = self.landed_async.notified();
            tokio::pin!(landed);
            landed.as_mut().enable();
            {
                let mut st = self.state.lock();
                self.drop_queued(&mut st, keys);
                if !Self::on_the_way(&st, keys) {
                    return;
                }
                if settling.is_none() {
                    Self::wait_on(&mut st, keys);
                    settling = Some(Settling { queue: self, keys });
                }
            }
            landed.await;
        }
    }

    /// Waits until the batch in flight (if any) has landed, and keeps the next one from being
    /// taken until the guard is dropped. The replay holds it while it reads the ops to send: an
    /// op a settle that gave up (or a dropped future, see [`Requeue`]) put in the replay queue
    /// while an older write of its key was in flight must reach L2 after that write.
    pub(crate) fn fence(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.sending.lock()
    }

    /// How long a settle or a wait for writes to leave the queue waits for a batch in flight.
    pub(super) fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Whether `key` is still in flight: a settle that gave up waiting took it out, and the
    /// caller's write or delete that went on supersedes the batch's write of it.
    fn in_flight(&self, key: &str) -> bool {
        self.state.lock().in_flight.contains_key(key)
    }

    /// The keys of `keys` (of the batch in flight) whose write there no newer op supersedes:
    /// not a key written again since (queued), nor one a settle took over (no longer in
    /// flight) or waits for (a delete or write issued after it). L2 not taking their write
    /// loses it; the others' newer op goes on.
    fn current_writes<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Vec<&'k str> {
        let st = self.state.lock();
        keys.filter(|key| {
            !st.queued.contains_key(*key)
                && st.in_flight.contains_key(*key)
                && !st.settling.contains_key(*key)
        })
        .collect()
    }

    /// Moves up to [`BATCH`] queued writes in flight and returns them.
    fn take(&self) -> Vec<(String, Queued)> {
        let mut st = self.state.lock();
        let batch: Vec<(String, Queued)> = if st.queued.len() <= BATCH {
            std::mem::take(&mut st.queued).into_iter().collect()
        } else {
            // The oldest first: taken in the map's order, keys in its late buckets could wait
            // as long as new ones kept the queue over a batch, and a `flush` (which sends as
            // many batches as were queued when it began) returned with older writes unsent.
            let mut oldest: Vec<(u64, &String)> = st.queued.iter().map(|(k, q)| (q.order, k)).collect();
            oldest.select_nth_unstable(BATCH - 1);
            let keys: Vec<String> = oldest.into_iter().take(BATCH).map(|(_, k)| k.clone()).collect();
            keys.into_iter()
                .filter_map(|k| st.queued.remove(&k).map(|q| (k, q)))
                .collect()
        };
        for (key, queued) in &batch {
            st.queued_bytes = st.queued_bytes.saturating_sub(held(key, &queued.value));
            st.in_flight.insert(key.clone(), queued.clone());
        }
        batch
    }

    /// The batch is settled (sent, queued for replay or dropped): wakes the settling callers.
    fn land(&self, batch: &[(String, Queued)]) {
        let mut st = self.state.lock();
        for (key, _) in batch {
            st.in_flight.remove(key);
            st.dropped.remove(key);
            st.superseded.remove(key);
        }
        drop(st);
        self.landed.notify_all();
        self.landed_async.notify_waiters();
    }

    /// Waits for work, then up to [`LINGER`] more for a batch to gather; `false` once stopped
    /// (what is still queued then is sent by the owner of the threads, once, on the thread that
    /// drops the manager).
    fn wait_for_work(&self) -> bool {
        let mut st = self.state.lock();
        loop {
            while st.queued.is_empty() && !self.shutdown.is_fired() {
                self.work.wait(&mut st);
            }
            let deadline = Instant::now() + self.linger;
            st.lingering = true;
            while !self.shutdown.is_fired() && st.queued.len() < BATCH {
                if self.work.wait_until(&mut st, deadline).timed_out() {
                    break;
                }
            }
            st.lingering = false;
            // Empty and not stopped: a `flush` sent the batch while the writer lingered. The
            // writer must wait again, not stop (it once did, and later writes waited for the
            // next flush).
            if self.shutdown.is_fired() {
                return false;
            }
            if !st.queued.is_empty() {
                return true;
            }
        }
    }
}

impl Shared {
    /// The write-behind writes lost since the last call, as an error (see [`lost`]); `Ok`
    /// without write-behind or without a loss.
    pub(crate) fn take_behind_lost(&self) -> Result<()> {
        self.behind.as_ref().map_or(Ok(()), |queue| queue.lost.take())
    }

    /// Keeps for the next flush a loss a flush took from [`take_behind_lost`](Self::take_behind_lost)
    /// and could not deliver (its async caller went away); any other result is dropped.
    pub(crate) fn restore_behind_lost(&self, unheard: Result<()>) {
        if let (Some(queue), Err(crate::Error::WriteBehindLost { writes, key, reason })) =
            (&self.behind, unheard)
        {
            queue.lost.restore(writes, key, reason);
        }
    }

    /// Queues a write for the writer thread, if write-behind is on.
    pub(crate) fn push_behind(
        &self,
        keys: &[&str],
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
    ) -> Option<Pushed> {
        let queue = self.behind.as_ref()?;
        let expires_at_ms = self.replay_expiry_ms(ttl);
        Some(queue.push(items, expires_at_ms, || self.must_queue(keys)))
    }

    /// Queues deletes of `keys` for the writer, past the queue's bound and behind any batch in
    /// flight: each as a write that has already expired, which the writer sends as a delete and
    /// a read takes as a miss. To the replay queue instead if a key is pending there.
    pub(crate) fn queue_behind_deletes(&self, keys: &[&str]) -> Result<()> {
        let Some(queue) = &self.behind else {
            return Ok(());
        };
        let tombstones: Vec<(&str, &[u8])> = keys.iter().map(|key| (*key, &[][..])).collect();
        match queue.push_with(&tombstones, 1, || self.must_queue(keys), false) {
            Pushed::Replay => self.queue_deletes(keys),
            _ => Ok(()),
        }
    }

    /// A write waiting for L2 answers a read that missed L1 (call after taking the ticket):
    /// with its value, or as a miss if it expired or is a delete.
    pub(crate) fn read_behind(&self, key: &str) -> Option<Option<Vec<u8>>> {
        let found = self.behind.as_ref()?.lookup(key, self.clock.now_ms())?;
        // Counted only when a value answers, as `overtaken` counts it: a queued delete or an
        // expired write answers a miss.
        if found.is_some() {
            self.metrics.consistency.behind_reads.incr();
            self.metrics.distributed.hits.incr();
        } else {
            self.metrics.distributed.misses.incr();
            self.miss(1);
        }
        Some(found)
    }

    /// Takes the backfill tickets of the keys a batch read must ask L2 for, then answers each
    /// as [`before_l2_with`](Self::before_l2_with) does a single read's (from the write-behind
    /// queue, or as a miss); returns the rest with their tickets.
    pub(crate) fn read_many_behind<'k>(
        &self,
        missed: Vec<&'k str>,
        out: &mut HashMap<String, Vec<u8>>,
        suspects: &mut HashMap<&'k str, Suspect>,
    ) -> (Vec<&'k str>, Vec<Ticket>) {
        let tickets = self.tickets(&missed);
        let none_pending = self.replay.as_ref().is_none_or(|q| q.is_empty());
        if self.behind.is_none() && none_pending && !tickets.iter().any(Ticket::deleting) {
            return (missed, tickets);
        }
        let mut left = Vec::with_capacity(missed.len());
        let mut left_tickets = Vec::with_capacity(missed.len());
        for (key, ticket) in missed.into_iter().zip(tickets) {
            // Each key as a single read's: L2 is asked only if nothing between L1 and L2 answers.
            match self.before_l2_with(key, ticket) {
                Ok(ticket) => {
                    left.push(key);
                    left_tickets.push(ticket);
                }
                Err(found) => {
                    if suspects.remove(key).is_some() {
                        // As a single read's (see `before_l2`): an L1 miss.
                        self.metrics.local.misses.incr();
                    }
                    if let Some(value) = found {
                        out.insert(key.to_owned(), value);
                    }
                }
            }
        }
        (left, left_tickets)
    }

    /// Orders a delete (`sets`: `None`) or a write-through of `keys` after their queued
    /// writes. `Ok(true)`: the caller sends its op to L2 now. `Ok(false)`: a batch in flight
    /// with one of the keys did not land within the settle's wait (a slow or stuck L2 call),
    /// and the op was handed to the write-behind queue behind it (or to the replay queue, if a
    /// key is pending there): sent now, it could reach L2 first and the batch's older write
    /// land over it. The error: the replay queue could not take the op.
    pub(crate) fn settle_behind(&self, keys: &[&str], sets: Option<Sets<'_>>) -> Result<bool> {
        let Some(queue) = &self.behind else {
            return Ok(true);
        };
        if !queue.settle(keys) {
            return Ok(true);
        }
        tracing::warn!(key = %key_for_error(keys.first().copied().unwrap_or("")),
            "an in-flight write-behind batch did not land in time; this op is queued behind it");
        self.owe(keys, sets).hand_back()?;
        Ok(false)
    }

    /// Async [`settle_behind`](Self::settle_behind).
    pub(crate) async fn settle_behind_async(&self, keys: &[&str]) {
        if let Some(queue) = &self.behind {
            queue.settle_async(keys).await;
        }
    }

    /// Waits until the writes of `keys` queued now have left the write-behind queue (landed in
    /// L2, most often), at most four L2 timeouts: a tagged write tags its key again only once
    /// its value can be read from L2 (see `CacheManager::set_raw_with_tags`).
    pub(crate) fn wait_behind_sent(&self, keys: &[&str]) {
        if let Some(queue) = &self.behind {
            if !queue.wait_sent(keys) {
                tracing::warn!(key = %key_for_error(keys.first().copied().unwrap_or("")),
                    "a tagged write's batch did not land in time; its key is tagged again before");
            }
        }
    }

    /// Async [`wait_behind_sent`](Self::wait_behind_sent), without a deadline of its own.
    pub(crate) async fn wait_behind_sent_async(&self, keys: &[&str]) {
        if let Some(queue) = &self.behind {
            queue.wait_sent_async(keys).await;
        }
    }
}

#[cfg(test)]
mod tests;
