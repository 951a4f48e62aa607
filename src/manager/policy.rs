//! The multi-level rules: read-through with backfill, write-through with TTL caps, delete from
//! both levels, fallback on L2 failure. The only place where levels meet.
//!
//! Each operation is split into a sync part shared by both APIs (the L1 step, and what to do with
//! the L2 result) and a thin shell per API that makes the L2 call: the blocking trait method for
//! the sync API, the `*_async` one for the async API. L1 is always called directly on the
//! caller's thread or task, so an L1 hit never crosses a thread, channel or runtime.
//!
//! Rules (docs/design.md, "Read, write and delete"):
//! - get: L1 first. Hit → return. Miss, or an L1 error with `fallback_on_error` → L2. L2 hit →
//!   return and backfill L1 with `min(remaining L2 TTL, local.ttl)` (`local.ttl` if the L2 entry
//!   has no expiry; no backfill if it has none left), unless a write or delete of the key raced
//!   the L2 read (see `guard`), or L1 was made suspect since the L2 read began, by this manager
//!   or anyone else holding it (see `fill_in`).
//! - set: L1 with `min(ttl, local.ttl)`, L2 with `min(ttl, distributed.ttl)`; no TTL → each
//!   level's TTL from the configuration. With `write_mode = "behind"` the L2 write is queued
//!   for a writer thread instead (see `behind`). An L2 failure `fallback_on_error` does not
//!   hide takes the write out of L1 again (see `finish_write`); a refresh-ahead reload's puts
//!   back the entry it replaced, and goes through, not behind (see `reload_keep`).
//! - delete: both levels (L2 is tried even when L1 failed; with an L2, an L1 failure makes every
//!   L1 entry suspect before L2 is asked, so an async delete dropped on its way to L2 leaves it
//!   so too, see `delete_l1_done`). A read that misses L1 while this manager is deleting the key
//!   answers a miss without asking L2 (see `before_l2`). A prefix invalidation drops L1's keys
//!   before L2's scan and again after it, the replay queue's writes under the prefix turned
//!   into deletes before the scan (see `prefix`); one whose scan is left unanswered (an async
//!   one dropped during it, or a timeout) drops them again at once, keeps every backfill out for
//!   four L2 timeouts and drops them once more at their end, as a set meanwhile may lose its L2
//!   copy to a late `UNLINK` (see `prefix_cancelled`).
//! - ordering: the shells take the keys' stripes (`guard`, `KeyOrder::order`) before the L1
//!   step of a set, delete or batch and hold them until L2 (or a queue) has it, so one key's
//!   writes reach both levels in one order; reads take no stripe.
//! - tags: a tagged write tags its key before its L1 step and again once its value can be read
//!   from L2 (with write-behind, once its batch has landed; from the replay queue, by the
//!   replay, see `replayed_tags`); an async one dropped after its
//!   first tagging owes the second, made from its drop once the write can no longer land (its
//!   batch landed, or without write-behind four L2 timeouts passed: see `requeue::Landing`),
//!   or an invalidation of the tag before the landing would forget the key whose value then
//!   lands.
//! - batches: one L1 call, then one L2 call for the keys L1 did not answer; the L2 hits of a
//!   batch are backfilled by the backfill thread after the call returns (see `batch_read` and
//!   `fill`). A key whose own L1 read fails is answered as a single read of it would be; the
//!   batch goes on with the others (see `batch_read::L1Failed`).
//! - `fallback_on_error = true`: an L2 failure is counted, logged and hidden (a miss on read,
//!   L1-only on write); `false`: it reaches the caller. A failed L1 *write* always reaches the
//!   caller (L1 might still serve the old value otherwise); L2 is then not written.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
#[cfg(feature = "redis")]
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::apart::Apart;
use super::behind::WriteQueue;
use super::distrust::Distrust;
use super::failsafe::FailSafe;
use super::fill::FillQueue;
use super::guard::{KeyOrder, Ticket};
use super::l2_keys::L2Keys;
use super::l2_size::L2Size;
use super::left_behind::LeftBehind;
use super::loader::Flights;
use super::offline::Replayer;
use super::prefix::LateDrops;
use super::replayed_tags::ReplayedTags;
use super::tags::TagStore;
use crate::clock::{self, Clock};
use crate::codec::Codec;
use crate::config::RestartPolicy;
use crate::distributed::{CircuitBreaker, NodeBreakers};
use crate::error::{key_for_error, Error, Result, Served};
#[cfg(feature = "redis")]
use crate::invalidation::Backplane;
use crate::local::hot::HotTier;
use crate::replay::ReplayQueue;
use crate::shutdown::Shutdown;
use crate::stats::{self, Histogram, LevelMetrics, Metrics};
use crate::storage::{Confirmation, DistributedStorage, Entry, Freshness, LocalStorage, SuspectEpoch};
use parking_lot::Mutex;

/// Everything a manager handle shares.
pub(crate) struct Shared {
    pub(crate) l1: Arc<dyn LocalStorage>,
    /// The file-store L1, when the manager opened it, for what only the store can tell (see
    /// [`Monitor::local_recovery`](crate::Monitor::local_recovery) and
    /// [`Monitor::local_file_stats`](crate::Monitor::local_file_stats)). Right after `l1`:
    /// fields drop in order, and this is the store's last handle, so here its final fsync and
    /// hint are written and its directory lock let go, before L2 (whose drop can wait on its
    /// I/O thread) and the rest are torn down.
    pub(crate) local_file: Option<Arc<crate::FileStore>>,
    pub(crate) l2: Option<Arc<dyn DistributedStorage>>,
    /// The breaker in front of L2, when known (for stats).
    pub(crate) breaker: Option<Arc<CircuitBreaker>>,
    /// The breakers of L2's nodes, when L2 spreads keys over nodes (for stats).
    pub(crate) nodes: Option<Arc<NodeBreakers>>,
    /// The last reading of L2's size, reused for a while (see [`L2Size`]).
    pub(crate) l2_size: L2Size,
    pub(crate) local_ttl: Duration,
    pub(crate) distributed_ttl: Duration,
    pub(crate) fallback_on_error: bool,
    pub(crate) codec: Codec,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) metrics: Metrics,
    pub(crate) guard: KeyOrder,
    /// How long after an async write or delete is cancelled with nowhere to hand its L2 part to
    /// its keys are not backfilled (see [`KeyOrder::quiet`]): four L2 timeouts, the longest a
    /// settle waits for a command in flight.
    pub(crate) cancel_quiet: Duration,
    /// The L1 drops that cancelled prefix invalidations owe at the end of their quiet window
    /// (see `prefix`).
    pub(crate) late_drops: LateDrops,
    pub(crate) flights: Arc<Flights>,
    /// Fail-safe and loader timeouts (`[loader]`).
    pub(crate) fail_safe: FailSafe,
    /// What failed L1 writes and removals may have left in L1, served by nothing that cannot
    /// ask L2 (see `left_behind`).
    pub(crate) left_behind: LeftBehind,
    /// The durable queue of L2 writes that failed (offline mode), or one an earlier run left
    /// that this run only drains.
    pub(crate) replay: Option<Arc<ReplayQueue>>,
    /// Whether L2 writes that fail go to `replay` (`offline.replay` and `fallback_on_error`).
    /// Without it the queue, if any, takes only the writes of keys it still has ops for, to keep
    /// them after those ops.
    pub(crate) replays_failures: bool,
    /// Wakes the background thread that replays the queue (owned by `Workers`).
    pub(crate) replayer: Option<Replayer>,
    /// The invalidation backplane, set once after the `Shared` exists (its handler holds a
    /// `Weak` to it).
    #[cfg(feature = "redis")]
    pub(crate) backplane: OnceLock<Backplane>,
    /// One replay at a time.
    pub(crate) replay_lock: Mutex<()>,
    /// Taggings owed once replayed tagged writes land (see `replayed_tags`).
    pub(crate) replayed_tags: Arc<ReplayedTags>,
    /// Work run apart from its caller, waited for at shutdown (see `apart`).
    pub(crate) apart: Arc<Apart>,
    /// Keys L2 deleted after a late write, on their way out of L1 (see `late_writes`).
    pub(crate) late_writes: Arc<super::late_writes::LateWrites>,
    /// The stop signal the last handle's drop fires (owned by `Workers`): work run for a caller
    /// on a thread of its own (see `offload`) listens to it too.
    pub(crate) stop: Shutdown,
    /// Tag sets on a Redis every instance reaches.
    pub(crate) tags: Option<TagStore>,
    /// How a prefix invalidation deletes L2's keys.
    pub(crate) l2_keys: L2Keys,
    /// `distributed.key_prefix`.
    pub(crate) l2_prefix: String,
    /// The memory tier of decoded values, when L1 is [`Tiered`](crate::local::tiered::Tiered).
    pub(crate) hot: Option<Arc<HotTier>>,
    pub(crate) restart_policy: RestartPolicy,
    /// Ask L1 whether an entry is suspect (off without an L2, and with `restart_policy = "trust"`
    /// until the first subscription loss or until L1 refuses the replay queue's ops at
    /// start-up, see `settle_queued_in_l1`): one relaxed load on the hit path.
    pub(crate) check_freshness: AtomicBool,
    /// The backplane subscription is down, or L1 could not mark its entries suspect: every L1
    /// hit is checked against L2.
    pub(crate) distrust_l1: Distrust,
    /// When a read may next try to mark L1's entries suspect again (Unix ms; see
    /// [`Shared::retry_trust`]).
    pub(crate) trust_retry_at_ms: AtomicU64,
    /// How long after a try the next one may come (doubled by each failed try).
    pub(crate) trust_retry_wait_ms: AtomicU64,
    /// Held by the subscription's loss and return and by a retry of the marking.
    pub(crate) trust_lock: Mutex<()>,
    /// L2 writes waiting for the writer thread (`write_mode = "behind"`).
    pub(crate) behind: Option<Arc<WriteQueue>>,
    /// Backfills of batch reads waiting for the backfill thread (with an L2).
    pub(crate) fills: Option<Arc<FillQueue>>,
}

/// What L1 said to a read.
pub(crate) enum L1Read {
    Hit(Vec<u8>),
    Miss,
    /// Present but possibly stale.
    Suspect(Suspect),
}

/// A suspect L1 entry, with L1's suspect epoch read before it: the one a confirm of the entry
/// hands L1, which refuses it if L1 was made suspect since (the check may predate that).
pub(crate) struct Suspect {
    pub(crate) entry: Entry,
    pub(crate) epoch: SuspectEpoch,
}

/// Where the L2 part of a write goes, once L1 has it.
pub(crate) enum Route<'a> {
    /// Nothing to send now (no L2, or queued for replay); publish now.
    Done(Result<()>),
    /// Queued for the write-behind writer, which publishes once L2 has it.
    Behind,
    /// Write through now; with `settle`, settle the keys' write-behind writes first (the queue
    /// was full, or a key waits in the replay queue), and go to the replay queue instead if a
    /// key is pending there then.
    Through {
        l2: &'a Arc<dyn DistributedStorage>,
        settle: bool,
    },
}

/// What a single read does after L1.
pub(crate) enum Plan {
    /// Answered without L2.
    Done(Option<Vec<u8>>),
    /// Ask L2; with the L1 entry to revalidate, if it was suspect.
    AskL2(Option<Suspect>),
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Level {
    Local,
    Distributed,
}

impl Level {
    pub(super) fn name(self) -> &'static str {
        match self {
            Level::Local => "L1",
            Level::Distributed => "L2",
        }
    }
}

/// An L2 call's result with the moment it started (for latency).
pub(crate) type Timed<T> = (Instant, Result<T>);

/// Times an L2 call, unless none of it was sent: skipped by an open breaker, or refused at once
/// by a level not connected yet ([`Error::NotConnected`]). Such an answer takes no time and says
/// nothing of L2's latency, and timed it pulled the percentiles to well under a microsecond
/// during the outage they are read for. A batch some of whose nodes answered is timed.
pub(crate) fn time_l2<T>(histogram: &Histogram, started: Instant, result: &Result<T>) {
    let unsent = |e: &Error| {
        !matches!(e, Error::PartialBatch(_))
            && (e.is_breaker_skip() || matches!(e, Error::NotConnected { .. }))
    };
    if !result.as_ref().is_err_and(unsent) {
        histogram.record(started.elapsed());
    }
}

/// A batch some of whose keys did not reach their node: which (`failed`, indices into the
/// batch) and what the reached nodes answered.
pub(super) fn unreached(error: Error) -> std::result::Result<(Vec<usize>, Served, Error), Error> {
    match error {
        Error::PartialBatch(mut partial) => {
            // A count stays in the error too: a caller of a batch delete told of it reads there
            // how many of the reached keys existed.
            let served = match partial.served {
                Served::Removed(n) => Served::Removed(n),
                _ => std::mem::replace(&mut partial.served, Served::Written),
            };
            // Copied, not taken: the error may reach the caller, whose `failed` must name them.
            let failed = partial.failed.clone();
            Ok((failed, served, Error::PartialBatch(partial)))
        }
        other => Err(other),
    }
}

/// Every position in `batch` of a key of `keys`, ascending: a key the caller listed twice is
/// named at both places.
pub(super) fn positions_of(batch: &[&str], keys: &std::collections::HashSet<&str>) -> Vec<usize> {
    batch
        .iter()
        .enumerate()
        .filter(|(_, key)| keys.contains(*key))
        .map(|(j, _)| j)
        .collect()
}

/// `error`, a partial batch over `inner` (keys of `outer`, a read's keys that went on to the
/// level below), with its indices re-expressed over `outer`, the caller's batch: every position
/// of a key not served (a key given twice is not served at either), and `outer`'s length.
pub(super) fn partial_over(error: Error, inner: &[&str], outer: &[&str]) -> Error {
    let Error::PartialBatch(mut partial) = error else {
        return error;
    };
    let over = |indices: &[usize]| -> Vec<usize> {
        positions_of(
            outer,
            &indices.iter().filter_map(|&i| inner.get(i).copied()).collect(),
        )
    };
    partial.failed = over(&partial.failed);
    partial.refused = over(&partial.refused);
    partial.total = outer.len();
    Error::PartialBatch(partial)
}

/// `error`, if a partial batch of a manager's batch read, carrying the values the read found,
/// `found` ([`Served::Found`]): the caller's keys that were served are read there rather than
/// read again.
pub(super) fn with_found(error: Error, found: std::collections::HashMap<String, Vec<u8>>) -> Error {
    match error {
        Error::PartialBatch(mut partial) => {
            partial.served = Served::Found(found);
            Error::PartialBatch(partial)
        }
        other => other,
    }
}

/// Whether the L2 read `ticket` guards began in L1's suspect epoch `now` (a ticket with none
/// recorded guards no L2 read): a backfill of a value read before L1 was made suspect must not
/// be trusted after it (see [`Shared::fill_in`]).
pub(super) fn taken_in(ticket: &Ticket, now: SuspectEpoch) -> bool {
    ticket.l1_epoch().is_none_or(|read| read == now)
}

pub(super) fn check_ttl(key: &str, ttl: Option<Duration>) -> Result<()> {
    if ttl.is_some_and(|t| t.is_zero()) {
        return Err(Error::ZeroTtl {
            key: key_for_error(key),
        });
    }
    Ok(())
}

impl Shared {
    pub(super) fn level(&self, level: Level) -> &LevelMetrics {
        match level {
            Level::Local => &self.metrics.local,
            Level::Distributed => &self.metrics.distributed,
        }
    }

    /// Counts a failed call; hides it (`Ok`) if `fallback_on_error`, else passes it on. Bad input
    /// (a value too large for L2, say) is never hidden: it is not an outage, and replaying it
    /// later would fail the same way.
    pub(super) fn failed(&self, level: Level, op: &'static str, key: &str, error: Error) -> Result<()> {
        if self.hidden(level, op, key, &error) {
            Ok(())
        } else {
            Err(error)
        }
    }

    /// [`failed`](Self::failed) by reference: counts and logs `error`, and says whether
    /// `fallback_on_error` hides it.
    pub(super) fn hidden(&self, level: Level, op: &'static str, key: &str, error: &Error) -> bool {
        self.level(level).failure(level.name(), error);
        if !self.fallback_on_error || error.is_bad_input() {
            return false;
        }
        if error.is_misconfiguration() {
            // Logged once (at error level) by `failure`; every call repeats it.
            tracing::debug!(level = level.name(), op, key = %key_for_error(key), error = %error, "cache level refuses the configuration; hidden by fallback_on_error");
        } else if error.is_breaker_skip() {
            // Skipped by an open breaker: expected until the probe, so not a warning each time.
            tracing::debug!(level = level.name(), op, key = %key_for_error(key), error = %error, "skipped by an open circuit breaker");
        } else if let Some(unlogged) = self.level(level).hidden_lines.pass() {
            tracing::warn!(level = level.name(), op, key = %key_for_error(key), error = %error, unlogged, "cache level failed; hidden by fallback_on_error (unlogged: failures since the last line)");
        }
        true
    }

    /// The TTL a `set` gives L1.
    pub(crate) fn l1_ttl(&self, ttl: Option<Duration>) -> Duration {
        ttl.map_or(self.local_ttl, |t| t.min(self.local_ttl))
    }

    /// The TTL a `set` gives L2.
    pub(crate) fn l2_ttl(&self, ttl: Option<Duration>) -> Duration {
        ttl.map_or(self.distributed_ttl, |t| t.min(self.distributed_ttl))
    }

    /// The TTL of a backfill from an L2 entry; `None` if it has no time left.
    pub(crate) fn backfill_ttl(&self, entry: &Entry) -> Option<Duration> {
        self.backfill_ttl_at(entry, clock::ms_to_system_time(self.clock.now_ms()))
    }

    /// [`backfill_ttl`](Self::backfill_ttl) at `now` (one clock reading for a batch).
    pub(super) fn backfill_ttl_at(&self, entry: &Entry, now: std::time::SystemTime) -> Option<Duration> {
        match entry.remaining_ttl(now) {
            None => Some(self.local_ttl),
            Some(left) if left.is_zero() => None,
            Some(left) => Some(left.min(self.local_ttl)),
        }
    }

    // ---- reads ----

    /// The L1 step of a read.
    pub(crate) fn read_l1(&self, key: &str) -> Result<L1Read> {
        let m = &self.metrics.local;
        let start = stats::sample_l1();
        let result = self.look_l1(key);
        m.get_latency.record_since(start);
        match result {
            Ok(L1Read::Hit(value)) => {
                m.hits.incr();
                Ok(L1Read::Hit(value))
            }
            Ok(L1Read::Miss) => {
                m.misses.incr();
                Ok(L1Read::Miss)
            }
            Ok(suspect @ L1Read::Suspect(_)) => Ok(suspect),
            Err(e) => self.failed(Level::Local, "get", key, e).map(|()| L1Read::Miss),
        }
    }

    /// What L1 holds for `key`, and whether it may vouch for it (see `check_freshness` and
    /// `distrust_l1`); neither counted nor timed.
    pub(super) fn look_l1(&self, key: &str) -> Result<L1Read> {
        if !self.check_freshness.load(Ordering::Acquire) {
            return Ok(match self.l1.get(key)? {
                Some(entry) => L1Read::Hit(entry.value),
                None => L1Read::Miss,
            });
        }
        // Read before the entry, so before any check of it: see `Suspect`.
        let epoch = self.l1.suspect_epoch();
        Ok(match self.l1.get_checked(key)? {
            Some((entry, freshness)) if freshness == Freshness::Suspect || self.distrust_l1.is_on() => {
                L1Read::Suspect(Suspect { entry, epoch })
            }
            Some((entry, _)) => L1Read::Hit(entry.value),
            None => L1Read::Miss,
        })
    }

    /// The part of a single read before L2: L1, then the suspect-entry and pending-replay rules.
    pub(crate) fn plan_read(&self, key: &str) -> Result<Plan> {
        self.retry_trust();
        let c = &self.metrics.consistency;
        match self.read_l1(key)? {
            L1Read::Hit(value) => Ok(Plan::Done(Some(value))),
            L1Read::Suspect(suspect) => Ok(match self.suspect_before_l2(key, suspect, true) {
                Ok(answer) => Plan::Done(answer),
                Err(suspect) => Plan::AskL2(suspect),
            }),
            L1Read::Miss => {
                if self.l2.is_none() {
                    self.miss(1);
                    return Ok(Plan::Done(None));
                }
                if self.is_pending(key) {
                    // L2 holds an older value than the queued op: never serve or backfill it.
                    c.pending_misses.incr();
                    self.miss(1);
                    return Ok(Plan::Done(None));
                }
                Ok(Plan::AskL2(None))
            }
        }
    }

    /// The rules for a suspect L1 entry before L2 is asked: `Ok`, the answer without L2 (there
    /// is none, or the key has a queued replay op); `Err`, ask L2 with the entry to check
    /// against it, or with none if `restart_policy = "drop"` dropped it. `counted`: a read's
    /// (an L1 hit or miss, and a miss overall where it answers one); a loading call's look
    /// again is not (see `reread`).
    pub(super) fn suspect_before_l2(
        &self,
        key: &str,
        suspect: Suspect,
        counted: bool,
    ) -> Result<Option<Vec<u8>>, Option<Suspect>> {
        let count = |counter: &crate::stats::Counter| {
            if counted {
                counter.incr();
            }
        };
        if self.l2.is_none() && self.distrust_l1.is_on() {
            // Without an L2 to check it against, a distrusted L1 (an invalidation it
            // could not apply) answers nothing until a clear succeeds.
            count(&self.metrics.local.misses);
            count(&self.metrics.misses);
            return Ok(None);
        }
        if self.l2.is_none() {
            // Nothing to check it against.
            let _ = self.l1.confirm(key, suspect.epoch);
            count(&self.metrics.local.hits);
            return Ok(Some(suspect.entry.value));
        }
        if let Some(answer) = self.settle_pending(key, suspect.epoch, counted) {
            return Ok(answer);
        }
        if self.restart_policy == RestartPolicy::Drop {
            count(&self.metrics.local.misses);
            let _writing = self.guard.write([key]);
            // One L1 failed to drop is still there (suspect): not counted as dropped.
            match self.drop_suspect(key) {
                Ok(_) => self.metrics.consistency.dropped.incr(),
                Err(_) => self.metrics.local.errors.incr(),
            }
            return Err(None);
        }
        Err(Some(suspect))
    }

    /// The part of a single read between L1 and L2: takes the backfill ticket, then answers
    /// without L2 if this manager is deleting the key (L2 may still hold a value the delete
    /// replaced: the read is a miss, as it will be once the delete returns) or if the
    /// write-behind queue holds a newer value than L2. `suspect`: the read found an L1 entry it
    /// was to check against L2; answered here instead, it is an L1 miss, as it is when L2
    /// answers it (see `settle_suspect`).
    pub(crate) fn before_l2(&self, key: &str, suspect: bool) -> Result<Ticket, Option<Vec<u8>>> {
        let answered = self.before_l2_with(key, self.ticket(key));
        if suspect && answered.is_err() {
            self.metrics.local.misses.incr();
        }
        answered
    }

    /// The backfill ticket of a read about to ask L2, with the write-behind queue's settle
    /// epoch of the key read just before it (see [`overtaken`](Self::overtaken)) and L1's
    /// suspect epoch (see [`fill_in`](Self::fill_in)).
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        self.ticket_in(key, self.l1.suspect_epoch())
    }

    /// [`ticket`](Self::ticket), L1's suspect epoch read by the caller (once for a batch).
    pub(crate) fn ticket_in(&self, key: &str, l1_epoch: SuspectEpoch) -> Ticket {
        let settled = self.behind.as_ref().map_or(0, |q| q.settle_epoch(key));
        self.guard
            .ticket(key)
            .with_settled(settled)
            .with_l1_epoch(l1_epoch)
    }

    /// [`before_l2`](Self::before_l2) once the ticket is taken (a test stops a read here).
    pub(crate) fn before_l2_with(&self, key: &str, ticket: Ticket) -> Result<Ticket, Option<Vec<u8>>> {
        if ticket.deleting() {
            self.metrics.consistency.deleting_misses.incr();
            self.miss(1);
            return Err(None);
        }
        match self.read_behind(key) {
            Some(found) => Err(found),
            // A write of the key whose L2 step failed after `plan_read` looked (a write-through,
            // or a write-behind batch, queued before it left the write-behind queue) is in the
            // replay queue now: L2 holds an older value. The ticket does not tell, as the write
            // ended before it was taken.
            None if self.is_pending(key) => {
                self.metrics.consistency.pending_misses.incr();
                self.miss(1);
                Err(None)
            }
            None => Ok(ticket),
        }
    }

    /// Whether `key` has a queued replay op.
    pub(crate) fn is_pending(&self, key: &str) -> bool {
        self.replay.as_ref().is_some_and(|q| q.is_pending(key))
    }

    /// A read that L1 did not answer and there is no L2 to ask.
    pub(crate) fn miss(&self, n: usize) {
        self.metrics.misses.add(n as u64);
    }

    /// What to do with L2's answer to a single read.
    pub(crate) fn finish_read(
        &self,
        key: &str,
        ticket: Ticket,
        (started, result): Timed<Option<Entry>>,
    ) -> Result<Option<Vec<u8>>> {
        let m = &self.metrics.distributed;
        time_l2(&m.get_latency, started, &result);
        match result {
            Ok(Some(entry)) => {
                if let Some(answer) = self.overtaken(key, ticket) {
                    return Ok(answer);
                }
                m.hits.incr();
                self.backfill(key, ticket, &entry);
                Ok(Some(entry.value))
            }
            Ok(None) => {
                m.misses.incr();
                self.miss(1);
                Ok(None)
            }
            Err(e) => {
                self.failed(Level::Distributed, "get", key, e)?;
                self.miss(1);
                Ok(None)
            }
        }
    }

    /// With write-behind, L2 may be older than a completed write, so a read looks into the
    /// queue before it asks L2 ([`before_l2`](Self::before_l2)). What it saw there only holds if
    /// no settle (a delete, or a set that found the queue full) took the key's queued write out
    /// between the read's ticket and its look: L2's answer could then be a value that write,
    /// completed before the read began, replaced. The queue's settle epoch of the key (recorded
    /// with the ticket) tells; such a read is answered again from the queue (a newer set), or as
    /// a miss (the settling op overlaps the read). `None`: L2's answer stands.
    pub(super) fn overtaken(&self, key: &str, ticket: Ticket) -> Option<Option<Vec<u8>>> {
        let answer = self.overtaken_answer(key, ticket)?;
        self.metrics.consistency.overtaken_reads.incr();
        if answer.is_some() {
            self.metrics.consistency.behind_reads.incr();
            self.metrics.distributed.hits.incr();
        } else {
            self.metrics.distributed.misses.incr();
            self.miss(1);
        }
        Some(answer)
    }

    /// [`overtaken`](Self::overtaken)'s answer, not counted.
    pub(super) fn overtaken_answer(&self, key: &str, ticket: Ticket) -> Option<Option<Vec<u8>>> {
        let behind = self.behind.as_ref()?;
        if behind.settle_epoch(key) == ticket.settled() {
            return None;
        }
        Some(behind.lookup(key, self.clock.now_ms()).flatten())
    }

    /// Copies an L2 hit into L1, unless a write raced it or L1's admission policy refuses it
    /// (a fill, see [`LocalStorage::fill_each`]). Never fails the read; returns whether L1
    /// failed the copy (an error, not a refusal), which leaves whatever entry it held.
    pub(super) fn backfill(&self, key: &str, ticket: Ticket, entry: &Entry) -> bool {
        let Some(ttl) = self.backfill_ttl(entry) else {
            return false;
        };
        let mut result = Ok(0);
        let ran = self.guard.backfill_if_current(ticket, || {
            let epoch = self.l1.suspect_epoch();
            if taken_in(&ticket, epoch) {
                result = self.fill_in(epoch, &[(key, &entry.value, Some(ttl))]);
            }
        });
        if !ran {
            self.metrics.backfills_skipped.incr();
            return false;
        }
        match result {
            Ok(0) => self.metrics.backfills_skipped.incr(),
            Ok(_) => {
                self.metrics.local.sets.incr();
                self.metrics.backfills.incr();
            }
            Err(e) => {
                // Not copied, as a batch read's failed fills are counted.
                self.metrics.backfills_skipped.incr();
                self.metrics.local.errors.incr();
                if let Some(unlogged) = self.metrics.local.backfill_lines.pass() {
                    tracing::warn!(key = %key_for_error(key), error = %e, unlogged, "backfilling L1 failed; the read goes on (unlogged: fills since the last line)");
                }
                return true;
            }
        }
        false
    }

    /// Writes `items`, backfills each read from L2 under a ticket taken in L1's suspect epoch
    /// `epoch` (read under the tickets' stripes, see [`taken_in`]); returns how many L1 wrote.
    ///
    /// The stripes keep out this manager's writes and marks, not a `mark_all_suspect` by anyone
    /// else holding the store (another manager over it, a direct user): a value read from L2
    /// before such a loss of certainty, written after it, would be trusted in the new epoch,
    /// the very values the loss was meant to distrust. A mark that lands during the write
    /// leaves the fill suspect if it came after, trusted if it came before, and nothing tells
    /// which: the fills are taken out again (a fill is only an optimisation; so is any other
    /// entry of those keys). Also when L1 wrote none, or failed part-way: a refused fill may be
    /// held and served all the same (the file store's `stash`). If L1 cannot take them out, it
    /// is distrusted, as after a delete it could not apply, until a marking succeeds.
    pub(super) fn fill_in(
        &self,
        epoch: SuspectEpoch,
        items: &[(&str, &[u8], Option<Duration>)],
    ) -> Result<usize> {
        let filled = self.l1.fill_each(items);
        if self.l1.suspect_epoch() == epoch {
            if filled.is_ok() {
                // L1's copy is now L2's value, not the stale one a failed load's throttle
                // period serves, as after a write of the key (see `end_throttles`).
                self.end_throttles(items.iter().map(|(key, _, _)| *key));
            }
            return filled;
        }
        let keys: Vec<&str> = items.iter().map(|(key, _, _)| *key).collect();
        if let Err(e) = self.l1.delete_many(&keys) {
            // Checks on first: a reader sees `distrust_l1` only while they are on. Not
            // `distrust_everything`, whose `write_all` waits for the stripes held here.
            self.check_freshness.store(true, Ordering::Release);
            self.distrust_l1.turn_on();
            return Err(e);
        }
        filled.map(|_| 0)
    }

    /// What to do with L2's answer to the revalidation of a suspect L1 entry.
    pub(crate) fn finish_revalidate(
        &self,
        key: &str,
        l1: Suspect,
        ticket: Ticket,
        (started, result): Timed<Option<Entry>>,
    ) -> Result<Option<Vec<u8>>> {
        time_l2(&self.metrics.distributed.get_latency, started, &result);
        self.settle_suspect(key, l1, ticket, result, true)
    }

    /// Revalidation (docs/design.md, "Failure handling"): L2 has the same bytes → confirm
    /// the L1 entry; other bytes → replace it; nothing → drop it; L2 unreachable → serve it.
    /// `counted`: a read's; a loading call's look again is not (see `reread`).
    pub(super) fn settle_suspect(
        &self,
        key: &str,
        suspect: Suspect,
        ticket: Ticket,
        result: Result<Option<Entry>>,
        counted: bool,
    ) -> Result<Option<Vec<u8>>> {
        match result {
            Ok(answer) => Ok(self.settled_by_l2(key, suspect, ticket, answer, counted)),
            Err(e) => {
                self.failed(Level::Distributed, "get", key, e)?;
                if !self.serves_unverified(key) {
                    if counted {
                        self.metrics.local.misses.incr();
                        self.miss(1);
                    }
                    return Ok(None);
                }
                if counted {
                    self.metrics.local.hits.incr();
                }
                Ok(Some(suspect.entry.value))
            }
        }
    }

    /// [`settle_suspect`](Self::settle_suspect) once L2 answered. It cannot fail: an L1 error
    /// confirming, replacing or dropping the entry is counted and logged, and the answer is
    /// L2's, as a single read's is (a failed backfill never fails a read). So a batch settles
    /// each key with nothing to fail its other keys, or the L2 hits it has yet to backfill.
    pub(super) fn settled_by_l2(
        &self,
        key: &str,
        Suspect {
            entry: l1_entry,
            epoch,
        }: Suspect,
        ticket: Ticket,
        answer: Option<Entry>,
        counted: bool,
    ) -> Option<Vec<u8>> {
        let m = &self.metrics.distributed;
        let c = &self.metrics.consistency;
        let count = |counter: &crate::stats::Counter| {
            if counted {
                counter.incr();
            }
        };
        // L1 could not vouch for its entry and L2 answers the read: an L1 miss, as every read
        // L2 answers is (`hit_rate.distributed` is over the reads that missed L1). One served
        // unverified is an L1 hit (`settle_suspect`).
        count(&self.metrics.local.misses);
        let Some(entry) = answer else {
            count(&m.misses);
            count(&self.metrics.misses);
            // Not if a write raced the L2 read: L1 then holds the newer value. Counted only once
            // done, as a confirm is.
            self.guard
                .backfill_if_current(ticket, || match self.drop_suspect(key) {
                    Ok(_) => c.dropped.incr(),
                    Err(_) => self.metrics.local.errors.incr(),
                });
            return None;
        };
        let overtaken = if counted {
            self.overtaken(key, ticket)
        } else {
            self.overtaken_answer(key, ticket)
        };
        if let Some(answer) = overtaken {
            return answer;
        }
        count(&m.hits);
        // Same bytes, but L2's copy expires first (set again elsewhere with a shorter TTL while
        // this L1 missed it): confirmed, the entry would be served past L2's expiry, so it is
        // written again as a backfill, under L2's expiry. A second's slack: a backfill's expiry,
        // computed on two clocks, can come out a millisecond past L2's, and a fill in place of
        // every such confirm costs a write.
        let outlives_l2 = match (l1_entry.expires_at, entry.expires_at) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(l1), Some(l2)) => l1 > l2 + Duration::from_secs(1),
        };
        if entry.value == l1_entry.value && !outlives_l2 {
            // Only if nothing wrote the key or made L1 suspect again since the ticket: L2's
            // answer may be older than the loss of certainty (the entry then stays suspect and
            // is asked about again). L1 refuses the confirm too if it was made suspect since
            // `epoch`, by this manager or by anyone else holding it. And only if L1 still holds
            // the bytes compared: a confirm vouches for whatever entry L1 holds, and a write
            // that landed between the L1 read and the ticket left one that L2 does not hold.
            // Under the stripe's lock with no writer in progress, L1 cannot change between
            // this look and the confirm.
            let mut confirmed = Ok(false);
            self.guard.backfill_if_current(ticket, || {
                confirmed = match self.l1.get_checked(key) {
                    Ok(Some((now, _))) if now.value == l1_entry.value => self
                        .l1
                        .confirm(key, epoch)
                        .map(|done| done == Confirmation::Confirmed),
                    Ok(_) => Ok(false),
                    Err(e) => Err(e),
                };
            });
            if matches!(confirmed, Ok(true)) {
                c.confirmed.incr();
            }
            if let Err(e) = confirmed {
                self.metrics.local.errors.incr();
                tracing::warn!(key = %key_for_error(key), error = %e, "confirming an L1 entry failed");
            }
        } else {
            let replaces = entry.value != l1_entry.value;
            if replaces {
                c.replaced.incr();
            } else {
                c.confirmed.incr();
            }
            if self.backfill(key, ticket, &entry) && replaces {
                // The suspect entry stayed, with bytes L2 no longer holds: taken out as one L2
                // dropped is, or recorded as left behind if L1 refuses that too, so that no
                // outage serves it unverified.
                if self.drop_suspect(key).is_err() {
                    self.metrics.local.errors.incr();
                }
            }
        }
        Some(entry.value)
    }
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "replay_tests.rs"]
mod replay_tests;

#[cfg(test)]
#[path = "pending_tests.rs"]
mod pending_tests;

#[cfg(test)]
#[path = "cancel_tests.rs"]
mod cancel_tests;

#[cfg(test)]
#[cfg(feature = "redis")]
#[path = "revalidation_tests.rs"]
mod revalidation_tests;

#[cfg(test)]
#[path = "behind_undo_tests.rs"]
mod behind_undo_tests;
