//! The manager's counters and latency histograms, and the serializable snapshot users read.
//!
//! The hot path (an L1 hit) pays one increment of a counter striped over [`STRIPES`](counter::STRIPES) cache
//! lines: each of the first [`OWNED`](counter::OWNED) threads alive owns a stripe and adds with a plain load and
//! store (no locked instruction); further threads share the other stripes with `fetch_add`. Plus
//! a thread-local countdown. Latency is sampled: one L1 read and one L1 write in
//! [`L1_SAMPLE_EVERY`](counter::L1_SAMPLE_EVERY) per thread are timed (each kind counted down apart), and one typed read
//! in [`READ_SAMPLE_EVERY`](counter::READ_SAMPLE_EVERY) (its memory-tier step and the read end to end, three clock reads),
//! while L2 calls, which cost microseconds, are all timed.
//! A clock read costs more than its own 40 ns on a VM: it keeps the CPU from starting the loads
//! of the next lookups, 100 to 200 ns of a memory-tier hit on 100 000 random keys. The latency
//! figures are those of the calls timed, the first call of each thread among them; the counts
//! of hits and misses are exact. Histograms ([`counter`]) have four sub-buckets per power of
//! two, so a percentile is exact to within 25 %; the reported value is the bucket's upper bound.

mod counter;

use serde::{Deserialize, Serialize};

pub(crate) use counter::{sample_l1, sample_l1_write, sample_read, Counter, Histogram};

use crate::distributed::{BreakerStats, NodeStats};
use crate::error::Error;
use crate::log_limit::LogLimit;
use crate::storage::{StorageCounters, StorageSize};

/// Counters of one level, kept by the manager.
#[derive(Debug, Default)]
pub(crate) struct LevelMetrics {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) sets: Counter,
    pub(crate) deletes: Counter,
    pub(crate) errors: Counter,
    /// Errors that said the configuration is wrong ([`Error::Misconfigured`]); also in `errors`,
    /// but for the backplane's (see [`LevelMetrics::config_error`]).
    pub(crate) config_errors: Counter,
    /// The last failure (breaker skips aside) and the last configuration error, as text.
    pub(crate) last_errors: parking_lot::Mutex<LastErrors>,
    pub(crate) get_latency: Histogram,
    pub(crate) set_latency: Histogram,
    /// Lines of failures that repeat per call while the level is down or full: those
    /// `fallback_on_error` hides, and (L1) failed backfills of single and of batch reads; at
    /// most one a second each.
    pub(crate) hidden_lines: LogLimit,
    pub(crate) backfill_lines: LogLimit,
    pub(crate) batch_backfill_lines: LogLimit,
}

/// The last failure of a level, and its last configuration error.
#[derive(Debug, Default)]
pub(crate) struct LastErrors {
    any: Option<String>,
    config: Option<String>,
}

impl LevelMetrics {
    /// Counts a failed call of the level named `level` and keeps it as the last error. A
    /// configuration error is also counted apart, and logged at error level once per distinct
    /// message (it repeats on every call until someone fixes the settings); other errors are
    /// left to the caller to log.
    pub(crate) fn failure(&self, level: &str, error: &Error) {
        self.errors.incr();
        if error.is_breaker_skip() {
            // A skip (the level's breaker, or one node's), not a failure of its own: the error
            // that opened the breaker stays shown.
            return;
        }
        if error.is_misconfiguration() {
            self.config_error(level, error);
        }
        self.last_errors.lock().any = Some(error.to_string());
    }

    /// Counts a configuration error of `level` in `config_errors` alone (not in `errors`), keeps
    /// it as the last one, and logs it at error level once per distinct message. The backplane's
    /// refusals come here: not failures of L2, yet settings to fix, shown where those are.
    pub(crate) fn config_error(&self, level: &str, error: &Error) {
        self.config_errors.incr();
        // A level not connected yet fails each call with its last refusal, naming the call:
        // the refusal alone is logged once and shown, not once per kind of call.
        let refusal = match error {
            Error::NotConnected { cause, .. } => cause.to_string(),
            _ => error.to_string(),
        };
        let mut last = self.last_errors.lock();
        if last.config.as_deref() != Some(refusal.as_str()) {
            tracing::error!(level, error = %refusal,
                "the level refuses this configuration; fix it (retrying cannot help); meanwhile the cache serves without it");
            last.config = Some(refusal);
        }
    }

    /// Counts a failure the caller logs itself (no error to keep: `failure` does that), and
    /// says whether its line is written now, with how many were not (see [`LogLimit::pass`]).
    pub(crate) fn error_line(&self, lines: &LogLimit) -> Option<u64> {
        self.errors.incr();
        lines.pass()
    }

    /// The last failure seen (skips by an open breaker aside), if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_errors.lock().any.clone()
    }

    /// The last configuration error seen, if any.
    pub(crate) fn last_config_error(&self) -> Option<String> {
        self.last_errors.lock().config.clone()
    }
}

/// Everything the manager counts.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) local: LevelMetrics,
    /// The memory tier of decoded values in front of L1 (its hits are L1 hits too).
    pub(crate) memory: LevelMetrics,
    pub(crate) distributed: LevelMetrics,
    /// Keys read that neither level had.
    pub(crate) misses: Counter,
    pub(crate) backfills: Counter,
    pub(crate) backfills_skipped: Counter,
    pub(crate) loads: Counter,
    pub(crate) load_waits: Counter,
    /// Cached values that did not decode as the type asked for (see [`OverallStats`]).
    pub(crate) decode_errors: Counter,
    /// Typed single-key reads through the whole manager, end to end (sampled).
    pub(crate) get_latency: Histogram,
    pub(crate) consistency: ConsistencyMetrics,
    pub(crate) loader: LoaderMetrics,
}

/// Counters of fail-safe and the loader timeouts.
#[derive(Debug, Default)]
pub(crate) struct LoaderMetrics {
    /// Lines of loaded values a load run apart could not store (no caller to tell), at most
    /// one a second: every load fails so while L1's device is full.
    pub(crate) not_stored_lines: LogLimit,
    /// Lines of cached values that do not decode as the type loaded (each key once after a
    /// change of codec), at most one a second.
    pub(crate) unreadable_lines: LogLimit,
    /// Lines of stale copies that do not decode, at most one a second: while the source is down
    /// after a change of codec, every read of such a key finds one.
    pub(crate) stale_unreadable_lines: LogLimit,
    pub(crate) failures: Counter,
    pub(crate) stale_served: Counter,
    pub(crate) throttled: Counter,
    pub(crate) soft_timeouts: Counter,
    pub(crate) hard_timeouts: Counter,
    pub(crate) absent_stored: Counter,
    pub(crate) absent_hits: Counter,
    pub(crate) refreshes: Counter,
}

impl LoaderMetrics {
    pub(crate) fn snapshot(&self, fail_safe: bool) -> LoaderStats {
        LoaderStats {
            fail_safe,
            failures: self.failures.get(),
            stale_served: self.stale_served.get(),
            throttled: self.throttled.get(),
            soft_timeouts: self.soft_timeouts.get(),
            hard_timeouts: self.hard_timeouts.get(),
            absent_stored: self.absent_stored.get(),
            absent_hits: self.absent_hits.get(),
            refreshes: self.refreshes.get(),
        }
    }
}

/// Fail-safe and the loader timeouts (`[loader]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct LoaderStats {
    /// Whether expired entries are kept to be served stale (`fail_safe_max_duration > 0`).
    pub fail_safe: bool,
    /// Loader calls that returned an error or panicked, and loads whose store of the value
    /// panicked (a refresh-ahead reload's included).
    pub failures: u64,
    /// Values served stale: after a failed or timed-out load, or by `get_with_state` when no
    /// level had a fresh one. Each counts once more in `throttled` if it was throttled.
    pub stale_served: u64,
    /// Of `stale_served`, those served without asking the source, inside the throttle period of
    /// an earlier failure.
    pub throttled: u64,
    /// Callers served a stale value at the soft timeout while the load went on.
    pub soft_timeouts: u64,
    /// Callers that gave up at the hard timeout, and those answered so at once, without a load,
    /// while 256 loads given up at it still ran (a loader that hangs).
    pub hard_timeouts: u64,
    /// "Absent" answers of loaders cached (`get_or_load_optional`). One not stored, because its
    /// key was written, deleted or invalidated while the loader ran, is not counted.
    pub absent_stored: u64,
    /// Loading calls answered "absent" from the cache, without asking the source.
    pub absent_hits: u64,
    /// Background reloads started by refresh-ahead (each is a loader call, counted in
    /// `overall.loads` too).
    pub refreshes: u64,
}

/// Counters of the offline mode and the invalidation backplane, kept by the manager.
#[derive(Debug, Default)]
pub(crate) struct ConsistencyMetrics {
    /// Lines of writes a full or failing replay queue lost, at most one a second each.
    pub(crate) queue_full_lines: LogLimit,
    pub(crate) queue_failure_lines: LogLimit,
    /// Lines of write-behind batches lost to L2 (no replay queue, or none that took them).
    pub(crate) behind_lost_lines: LogLimit,
    /// Lines of reads answered by a queued op that L1 could not take (its drop, or its value):
    /// every read of the key fails so while L1 refuses writes.
    pub(crate) pending_drop_lines: LogLimit,
    pub(crate) pending_fill_lines: LogLimit,
    /// Lines of keys L1 could not take out: those received invalidations name (every message
    /// fails so while L1 refuses writes), and those of writes L2 did not take.
    pub(crate) undropped_lines: LogLimit,
    pub(crate) undone_lines: LogLimit,
    /// Lines of received invalidations naming keys no L1 holds (a publisher with other rules
    /// sends them as fast as Redis forwards them).
    #[cfg(feature = "redis")]
    pub(crate) unheld_lines: LogLimit,
    pub(crate) queued: Counter,
    /// Of `queued`, sets queued as deletes of their keys (see `PushOutcome::Downgraded`).
    pub(crate) queued_as_deletes: Counter,
    pub(crate) queue_failures: Counter,
    pub(crate) replayed: Counter,
    pub(crate) replay_failures: Counter,
    /// Taggings a replay owed that the tag store failed (see `replayed_tags`).
    pub(crate) retag_failures: Counter,
    pub(crate) pending_misses: Counter,
    pub(crate) deleting_misses: Counter,
    pub(crate) overtaken_reads: Counter,
    pub(crate) published: Counter,
    pub(crate) publish_failures: Counter,
    pub(crate) invalidations_received: Counter,
    pub(crate) keys_invalidated: Counter,
    pub(crate) subscription_losses: Counter,
    pub(crate) confirmed: Counter,
    pub(crate) replaced: Counter,
    pub(crate) dropped: Counter,
    pub(crate) served_unverified: Counter,
    pub(crate) withheld_unverified: Counter,
    pub(crate) behind_flushes: Counter,
    pub(crate) behind_failures: Counter,
    pub(crate) behind_reads: Counter,
    pub(crate) behind_overflows: Counter,
    pub(crate) behind_withdrawn: Counter,
}

impl LevelMetrics {
    pub(crate) fn snapshot(
        &self,
        name: &str,
        enabled: bool,
        counters: StorageCounters,
        size_error: Option<String>,
    ) -> LevelStats {
        let hits = self.hits.get();
        let misses = self.misses.get();
        let (last_error, last_config_error) = {
            let last = self.last_errors.lock();
            (last.any.clone(), last.config.clone())
        };
        LevelStats {
            name: name.to_owned(),
            enabled,
            hits,
            misses,
            hit_rate: ratio(hits, hits + misses),
            sets: self.sets.get(),
            deletes: self.deletes.get(),
            errors: self.errors.get(),
            evictions: counters.evictions,
            expirations: counters.expirations,
            corrupt_reads: counters.corrupt_reads,
            late_writes_deleted: counters.late_writes_deleted,
            writes_in_doubt: counters.writes_in_doubt,
            get_latency: self.get_latency.snapshot(),
            set_latency: self.set_latency.snapshot(),
            size_error,
            breaker: None,
            nodes: Vec::new(),
            config_errors: self.config_errors.get(),
            last_error,
            last_config_error,
        }
    }
}

#[allow(clippy::cast_precision_loss)] // counters far below 2^52 in practice; a rate is approximate anyway
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// Latency percentiles of one kind of call to one level, from sampled calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LatencyStats {
    /// Calls timed.
    pub samples: u64,
    /// Median, in nanoseconds (upper bound of its histogram bucket; 0 without samples).
    pub p50_ns: u64,
    /// 99th percentile, in nanoseconds (upper bound of its histogram bucket).
    pub p99_ns: u64,
}

/// What the manager saw of one level.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LevelStats {
    /// The level's name ("file", "memory", "redb", "redis", …; "none" when there is no L2).
    pub name: String,
    /// Whether the manager uses this level.
    pub enabled: bool,
    /// Reads this level answered, a cached "absent" (a loader's answer kept for
    /// `loader.absent_ttl`, also counted in `loader.absent_hits`) included: the level answered
    /// without asking the source, though the caller gets `None`. A loading call that waited on
    /// another call's load, which ended without a value for it, and then found an "absent"
    /// counts it in `loader.absent_hits` alone: its read was counted once, before it waited. With write-behind, L2's
    /// include the reads a value still queued for it answered (`consistency.write_behind_reads`).
    pub hits: u64,
    /// Reads this level did not have. An L1 entry L2 was asked about before it is served
    /// (restored after a restart, or held while the backplane's subscription was down) counts
    /// as an L1 miss, L2 answering the read; one served unverified while L2 is down, as an L1
    /// hit.
    pub misses: u64,
    /// `hits / (hits + misses)`; 0 before any read.
    pub hit_rate: f64,
    /// Keys written to this level (backfills included). For `distributed`, the writes that
    /// reached it: the callers' written through, and write-behind's when the writer sent them.
    /// Ops of the replay queue count in `consistency.replayed` alone: the write a replayed set
    /// stands for was counted nowhere when L2 failed it, nor is it counted here when it lands.
    pub sets: u64,
    /// Keys the callers' deletes asked this level to delete (attempts: `delete`,
    /// `delete_many` and their async forms; for `local`, `invalidate_local` too). Not the keys
    /// that other removals drop: a prefix or tag invalidation (its answer says how many), an
    /// invalidation received from another instance (`consistency.keys_invalidated`), a suspect
    /// entry dropped (`consistency.revalidated_dropped`), a value taken out of L1 because L2
    /// refused it, or an op replayed from the queue (`consistency.replayed`). For
    /// `distributed`, with write-behind, the writer's deletes when it sends them: a delete
    /// queued behind a batch in flight, and a write that expired while it waited, which reaches
    /// L2 as a delete of its key. Always 0 for `memory`, which counts none of its own: every
    /// delete of L1 drops the key from the memory tier too, and `local.deletes` counts them
    /// (`uno_cache_deletes_total` is not published for the memory tier).
    pub deletes: u64,
    /// Calls to this level that failed (hidden by fallback or not), write-behind's sends
    /// included: one per call, however many keys it named, so a `get_many` (`multi_get`,
    /// `multi_set`, `multi_delete`, their async forms) of 500 keys that L2 failed counts 1,
    /// and 500 single `get`s that it failed count 500 (with `fallback_on_error`, the keys such
    /// reads answered as misses are in `overall.misses`, one each). A failed call counts so whether it was sent or
    /// skipped (an open breaker, an L2 not connected yet), as the breaker counts it. The
    /// replay's calls are not counted: a replay pass stopped by an L2 failure counts once in
    /// `consistency.replay_failures`, and is retried. Always 0 for `memory`, whose values are
    /// decoded and in RAM (`uno_cache_errors_total` is not published for it).
    pub errors: u64,
    /// Entries the level dropped to respect its size bound (as it reports them): live ones
    /// only, by every kind of L1; an expired entry pushed out for room is an expiration.
    pub evictions: u64,
    /// Entries the level removed because their TTL passed (as it reports them), an expired
    /// value a write or delete of its key dropped or an eviction pushed out included, by every
    /// kind of L1.
    pub expirations: u64,
    /// Reads that found a record damaged and answered a miss (the file store; zero for the
    /// other levels; not published for `memory`): data lost, not an absent key. `verify` on the
    /// directory finds the rest.
    #[serde(default)]
    pub corrupt_reads: u64,
    /// Keys L2 deleted because a write of theirs that timed out landed late, possibly after a
    /// newer one (Redis and Memcached; zero for the local levels): see
    /// [`StorageCounters::late_writes_deleted`](crate::StorageCounters::late_writes_deleted).
    #[serde(default)]
    pub late_writes_deleted: u64,
    /// Keys whose L2 write timed out and may still land late, now (Redis and Memcached).
    #[serde(default)]
    pub writes_in_doubt: u64,
    /// Latency of read calls (`get`, `get_many`), from the calls timed: one local read in 16
    /// per thread, one memory-tier read in 64 (the first of each thread among them), every
    /// distributed call but those not sent (skipped by its open breaker, or answered at once by
    /// a level not connected yet: [`Error::NotConnected`]).
    pub get_latency: LatencyStats,
    /// Latency of write calls (`set`, `set_many`, backfills excluded; deletes are not timed),
    /// from the calls timed: one local write in 16 per thread (counted apart from the reads),
    /// every distributed call but those not sent (as for `get_latency`).
    pub set_latency: LatencyStats,
    /// Why the level's size could not be read, if it could not.
    pub size_error: Option<String>,
    /// The circuit breaker in front of the level (L2 only, when the manager knows it).
    pub breaker: Option<BreakerStats>,
    /// The breaker of each node, for an L2 that spreads keys over nodes (each Memcached host,
    /// each Redis Cluster primary): a dead node fails fast for its own keys only. Empty
    /// otherwise. A primary gone from the Cluster's slot map drops out once its breaker is
    /// closed; of those gone while open, the last 64 stay.
    #[serde(default)]
    pub nodes: Vec<NodeStats>,
    /// Failed calls whose answer said the configuration is wrong (a refused password, no such
    /// database, an untrusted certificate): retrying cannot fix them. Included in `errors`. For
    /// `distributed`, the invalidation backplane's refusals are counted here too, but not in
    /// `errors` (L2's calls): its publishes and re-sends refused so (an ACL user without
    /// PUBLISH; also in `consistency.publish_failures` or `consistency.republish_failures`),
    /// and each SUBSCRIBE refused so (an ACL user without SUBSCRIBE or without the channel: the
    /// subscriber tries again every 1 to 2 s, and this instance hears no invalidations meanwhile).
    #[serde(default)]
    pub config_errors: u64,
    /// The last failure seen (skips by an open breaker aside): the host, what happened, what to
    /// do (never a password).
    #[serde(default)]
    pub last_error: Option<String>,
    /// The last configuration error seen (see `config_errors`; for `distributed`, the
    /// backplane's too), kept when outage errors follow.
    #[serde(default)]
    pub last_config_error: Option<String>,
}

/// Hit rates: each level's own, and overall (reads answered by any level / all reads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HitRates {
    /// L1 hits / L1 reads (both local tiers: a memory-tier hit is an L1 hit).
    pub local: f64,
    /// Memory-tier hits / typed reads that asked it.
    #[serde(default)]
    pub memory: f64,
    /// Hits / reads of the tier behind the memory tier (the file store, or redb): the reads the
    /// memory tier did not answer. Without a memory tier, the same as `local`.
    #[serde(default)]
    pub file: f64,
    /// L2 hits / L2 reads (reads that missed L1).
    pub distributed: f64,
    /// (L1 hits + L2 hits) / reads.
    pub overall: f64,
}

/// What each level holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Sizes {
    /// L1 items and bytes: the tier behind the memory tier (which holds most of the values the
    /// memory tier does; a value the file tier evicted may stay in memory until it is read or
    /// evicted there); the memory tier's own are in `memory`. Expired entries the store has not
    /// removed yet are counted (see `StorageSize::items`): with redb, until its purge, once a
    /// minute.
    pub local: StorageSize,
    /// Entries of the memory tier, and what they count against `local.memory_max_mb`: its
    /// values (expired ones not read since included) and the keys written, deleted or dropped
    /// by an invalidation (of keys, a prefix or a tag) since their value was kept, which keep
    /// their place, empty, until evicted: places, not readable values, and what the tier's
    /// bounds count (each value type has bounds of its own, so with several types `items` may
    /// pass `memory_items`). A value counts the bytes it was decoded from, its key and about 64
    /// bytes, and at least `memory_max_mb / memory_items` (an estimate, as they are decoded
    /// values); an empty place counts that least.
    #[serde(default)]
    pub memory: StorageSize,
    /// Items and bytes of the tier behind the memory tier: the same as `local`, as the memory
    /// tier holds copies of its entries.
    #[serde(default)]
    pub file: StorageSize,
    /// L2 items and bytes (zero without an L2).
    pub distributed: StorageSize,
}

/// Reads through the whole manager, and the work its policy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OverallStats {
    /// Keys read and answered: `hits + misses` (each key of a batch counts; a key a batch
    /// lists twice counts once). A key whose read ends in an error the caller gets (without
    /// `fallback_on_error`, and the keys a partial batch error names as not reached) is in
    /// neither: the failed call counts once in the level's `errors`, however many keys it
    /// named.
    pub reads: u64,
    /// Keys some level had.
    pub hits: u64,
    /// Keys no level had, and keys a failed level could not read that `fallback_on_error`
    /// answered as misses.
    pub misses: u64,
    /// L2 hits copied into L1 (also in `local.sets`). A batch read's are written, and counted,
    /// by a background thread a moment after the read returns; a snapshot waits for those of
    /// the reads that returned before it (at most 100 ms, for an L1 disk that stalls), so
    /// that batch and single reads are counted alike.
    pub backfills: u64,
    /// L2 hits not copied into L1: a write or delete of the key raced the read, the backfill
    /// queue was full, L1's admission policy refused the fill (the file tier, when it is
    /// full and the key is read no more often than what it would push out), or L1 failed to
    /// write it (also in `local.errors`, once per failed call).
    pub backfills_skipped: u64,
    /// Loader calls made by the loading calls (`get_or_set_with`, `get_or_load` and their
    /// variants), refresh-ahead's background reloads included; a load whose thread could not be
    /// started is not counted.
    pub loads: u64,
    /// `get_or_set_with` callers that waited for another caller's loader instead of loading.
    pub load_waits: u64,
    /// Values a level had (counted in `hits`) whose bytes did not decode as the type asked for:
    /// the codec changed between runs, another type was stored under the key, or a value was
    /// written raw. A read then fails with [`Error::CodecMismatch`](crate::Error::CodecMismatch)
    /// or [`Error::Decode`](crate::Error::Decode), and a loading call loads anew. At most
    /// `hits`; above zero after a deploy, `hits` overstates what was served.
    #[serde(default)]
    pub decode_errors: u64,
    /// Latency of typed single-key reads (`get`, `get_arc` and their async forms) end to end,
    /// whichever tier answered: memory, file, L2 or none. Sampled: one read in 64 per thread.
    #[serde(default)]
    pub get_latency: LatencyStats,
}

/// The offline mode (replay queue) and cross-process consistency (backplane, revalidation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ConsistencyStats {
    /// Whether the manager queues the L2 writes that fail, for replay.
    pub replay_enabled: bool,
    /// Ops waiting in the replay queue (one per key), not those whose acks are held (see
    /// `replay_acks_held`). A manager that queues nothing
    /// still drains, and counts here, what an earlier run on its directory left queued.
    pub replay_pending: u64,
    /// Bytes of the queued ops.
    pub replay_bytes: u64,
    /// Whether an op was lost because the queue was full or damaged (L2 may be stale).
    pub replay_overflowed: bool,
    /// Set while the replay queue's log takes no writes after a failed write or fsync (a full
    /// device): why. Every L2 write that fails meanwhile is lost (`queue_failures`); the acks of
    /// the ops replayed meanwhile are held in memory (`replay_acks_held`). The manager writes the
    /// log anew by itself (every second at most) once the device has room for it.
    pub replay_write_failure: Option<String>,
    /// While that lasts, the bytes the new log needs free on a full device (from the last
    /// attempt to write it; 0 if unknown): the room to make for the queue to take writes again.
    pub replay_recovery_needs_bytes: u64,
    /// While that lasts, the ops the replay got to L2 whose acks the log could not take: out of
    /// `replay_pending`, acked in memory only. The log still holds them, so a restart before the
    /// log is written anew replays them again; their keys still wait as queued ones do (a read
    /// does not ask L2, a write is queued) until then.
    pub replay_acks_held: u64,
    /// Keys whose L2 write or delete was queued for replay: it failed, or it went to the queue
    /// without trying L2 because an earlier op of the key waits there (per-key order), or it is
    /// a delete the manager owed L2 (an invalidation from another instance of a write waiting
    /// here, a prefix delete during an outage). Not those a full queue lost: see
    /// `replay_overflowed`.
    pub queued: u64,
    /// Failed L2 writes that could not be queued either: the caller got the error, or, for a
    /// write-behind batch (no caller left), the log did, and L2 keeps the older values.
    pub queue_failures: u64,
    /// Queued ops that reached L2; a set whose value L2 refuses (too large for it) reaches it
    /// as a delete of its key (logged), and counts here.
    pub replayed: u64,
    /// Replay attempts stopped by an L2 failure (retried later).
    pub replay_failures: u64,
    /// Keys whose tagged write went to the replay queue and still owes its tags: tagged again
    /// once its value lands in L2 (an invalidation of a tag made while it waited may otherwise
    /// have left it listed by no tag). Above 0 while the queue or the tag Redis is unreachable;
    /// held in memory only, so a restart loses them.
    pub tags_owed: u64,
    /// Taggings of replayed writes that the tag Redis failed; each is owed again and retried by
    /// the next replay pass (every `offline.replay_interval_ms`).
    pub retag_failures: u64,
    /// Tags that keys owing their tags (`tags_owed`) had past the bound of 64 a key: a key
    /// rewritten with other tags while its writes waited for L2 is tagged again with the newest
    /// 64 (and every tag of its newest write) once its value lands; the older ones dropped
    /// count here, and are logged.
    pub retags_dropped: u64,
    /// Reads that missed L1 and did not ask L2 because the key had a queued op, and reads of a
    /// suspect L1 entry dropped because the key's queued op is a delete (or an expired set).
    pub pending_misses: u64,
    /// Reads that missed L1 while this manager was deleting the key (or writing it through
    /// after taking its queued write out of the write-behind queue): answered as misses
    /// without asking L2, which may still hold an older value.
    pub deleting_misses: u64,
    /// Reads (with write-behind) during which a delete of the key (or a set that found the
    /// queue full) took the key's queued write out of the queue, so that L2's answer may be
    /// older than that write: answered again from the queue, or as misses.
    pub overtaken_reads: u64,
    /// Whether the manager has an invalidation backplane.
    pub backplane_enabled: bool,
    /// Whether the backplane's subscription works now.
    pub backplane_connected: bool,
    /// Invalidations published.
    pub published: u64,
    /// Publishes that failed (the backplane keeps and re-sends them). Those the backplane's
    /// server refused as a wrong setting are also in `distributed.config_errors`.
    pub publish_failures: u64,
    /// Messages of failed publishes the backplane keeps, waiting to be re-sent (at most
    /// `republish_limit` keys' worth; see `republish_overflows`).
    pub republish_pending: u64,
    /// Re-sends of those messages that failed again (each is kept and tried again with the
    /// reconnect backoff). Those the server refused as a wrong setting are also in
    /// `distributed.config_errors`, as for `publish_failures`.
    pub republish_failures: u64,
    /// Times the kept messages outgrew `republish_limit` and were replaced by one invalidation
    /// of everything (every other instance drops its whole L1 when it arrives).
    pub republish_overflows: u64,
    /// Invalidations received from other instances, counted once applied to L1.
    pub invalidations_received: u64,
    /// Keys dropped from L1 by invalidations of keys or prefixes received from other instances:
    /// only keys L1 held (all of L1 when a prefix clears it, as an L1 that cannot list a
    /// prefix's keys does), and, when L1 failed to delete them, only those it deleted before
    /// the failure (every L1 entry is made suspect instead). This instance's own invalidations
    /// are not counted, nor are invalidations of tags or of the whole cache.
    pub keys_invalidated: u64,
    /// Times every L1 entry became suspect because invalidations may have been missed: the
    /// subscription was lost, a message of another instance never arrived, or the handler fell
    /// behind the staleness bound (the backplane's own stats tell these apart).
    pub subscription_losses: u64,
    /// Suspect L1 entries that L2 confirmed.
    pub revalidated_confirmed: u64,
    /// Suspect L1 entries replaced by L2's different value.
    pub revalidated_replaced: u64,
    /// Suspect L1 entries dropped (missing in L2, or `restart_policy = "drop"`). Not one L1
    /// failed to drop (in `local.errors`), nor one a write of its key replaced while L2 was
    /// asked about it, which is left as the write made it.
    pub revalidated_dropped: u64,
    /// Suspect L1 entries served without a check because L2 could not be reached (offline).
    pub served_unverified: u64,
    /// Suspect L1 entries read while L2 could not be reached and answered as misses, not
    /// served unverified: a write or removal L1 failed may have left them (a value the caller
    /// was told was not written, or one a delete removed everywhere else).
    pub withheld_unverified: u64,
    /// `distributed.write_mode = "behind"` is on.
    pub write_behind: bool,
    /// Keys whose L2 write is queued or being sent now.
    pub write_behind_pending: u64,
    /// Batches the write-behind writer sent.
    pub write_behind_flushes: u64,
    /// Keys whose write-behind L2 write failed (queued for replay in offline mode).
    pub write_behind_failures: u64,
    /// Reads that missed L1 and were answered by a value still waiting for L2 (counted as L2
    /// hits too: the queue answers for L2 until the value lands).
    pub write_behind_reads: u64,
    /// Sets that found the queue full and wrote through instead.
    pub write_behind_overflows: u64,
    /// Writes still on their way to L2 (queued or in flight) that another instance's
    /// invalidation of their keys turned into deletes.
    pub write_behind_withdrawn: u64,
}

impl ConsistencyMetrics {
    pub(crate) fn fill(&self, stats: &mut ConsistencyStats) {
        stats.queued = self.queued.get();
        stats.queue_failures = self.queue_failures.get();
        stats.replayed = self.replayed.get();
        stats.replay_failures = self.replay_failures.get();
        stats.retag_failures = self.retag_failures.get();
        stats.pending_misses = self.pending_misses.get();
        stats.deleting_misses = self.deleting_misses.get();
        stats.overtaken_reads = self.overtaken_reads.get();
        stats.published = self.published.get();
        stats.publish_failures = self.publish_failures.get();
        stats.invalidations_received = self.invalidations_received.get();
        stats.keys_invalidated = self.keys_invalidated.get();
        stats.subscription_losses = self.subscription_losses.get();
        stats.revalidated_confirmed = self.confirmed.get();
        stats.revalidated_replaced = self.replaced.get();
        stats.revalidated_dropped = self.dropped.get();
        stats.served_unverified = self.served_unverified.get();
        stats.withheld_unverified = self.withheld_unverified.get();
        stats.write_behind_flushes = self.behind_flushes.get();
        stats.write_behind_failures = self.behind_failures.get();
        stats.write_behind_reads = self.behind_reads.get();
        stats.write_behind_overflows = self.behind_overflows.get();
        stats.write_behind_withdrawn = self.behind_withdrawn.get();
    }
}

/// A snapshot of the manager's statistics; `serde_json::to_string(&stats)` gives JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CacheStats {
    /// Hit rates per level and overall.
    pub hit_rate: HitRates,
    /// Items and bytes per level.
    pub size: Sizes,
    /// The local level (L1), both tiers: a memory-tier hit counts in its hits and hit rate too.
    /// Its latencies are the tier behind's (as in `file`): the memory tier's are in `memory`.
    pub local: LevelStats,
    /// The memory tier of decoded values in front of a persistent L1 (`enabled: false` without
    /// one): typed reads it answered or not, values it took in.
    #[serde(default)]
    pub memory: LevelStats,
    /// The tier behind the memory tier (the file store, or redb; the whole L1 without a memory
    /// tier): the reads that reached it and its own hits, writes, evictions and latencies.
    #[serde(default)]
    pub file: LevelStats,
    /// The distributed level (L2).
    pub distributed: LevelStats,
    /// The manager as a whole.
    pub overall: OverallStats,
    /// The offline mode and cross-process consistency.
    #[serde(default)]
    pub consistency: ConsistencyStats,
    /// Fail-safe and the loader timeouts.
    #[serde(default)]
    pub loader: LoaderStats,
}

impl Metrics {
    pub(crate) fn overall(&self) -> OverallStats {
        let hits = self.local.hits.get() + self.memory.hits.get() + self.distributed.hits.get();
        let misses = self.misses.get();
        OverallStats {
            reads: hits + misses,
            hits,
            misses,
            backfills: self.backfills.get(),
            backfills_skipped: self.backfills_skipped.get(),
            loads: self.loads.get(),
            load_waits: self.load_waits.get(),
            decode_errors: self.decode_errors.get(),
            get_latency: self.get_latency.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_by_a_nodes_open_breaker_leaves_the_failure_that_opened_it_shown() {
        let node = |cause: Error| Error::NodeUnavailable {
            level: "memcached",
            node: "h1:11211".into(),
            cause: Box::new(cause),
        };
        let m = LevelMetrics::default();
        m.failure(
            "memcached",
            &node(Error::Backend {
                level: "memcached",
                op: "get",
                reason: "h1:11211: connection refused".into(),
            }),
        );
        m.failure("memcached", &node(Error::CircuitOpen { level: "memcached" }));
        m.failure("memcached", &Error::CircuitOpen { level: "memcached" });
        let last = m.last_error().unwrap_or_default();
        assert!(last.contains("connection refused"), "{last}");
        assert_eq!(m.errors.get(), 3, "every failed call is counted");
    }
}
