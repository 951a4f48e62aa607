//! [`Monitor`]: the manager's statistics, assembled from the counters and the levels' sizes.

use std::time::Duration;

use super::offload::offload;
use super::CacheManager;

use crate::error::Result;
use crate::stats::{CacheStats, ConsistencyStats, HitRates, Sizes};
use crate::storage::StorageSize;

/// How long a reading of L2's size is reused by the stats, unless `distributed.size_max_age_secs`
/// says otherwise: counting a Redis level walks every key under its prefix (`SCAN` and a
/// `STRLEN` per key), seconds of the server's time on a large one, and every instance that polls
/// its stats walks it.
pub const L2_SIZE_MAX_AGE: Duration = Duration::from_secs(crate::config::DEFAULT_SIZE_MAX_AGE_SECS);

/// How long the stats wait at most for the backfills batch reads queued (see `fill`) to be
/// written, before they read the counters: the copies a batch read's L2 hits owe L1 are made by
/// a background thread a moment after the read returns, and a snapshot taken meanwhile
/// counted a single read's backfill and not a batch's (`overall.backfills`, `local.sets`, the
/// file tier's size). Bounded, so that a poll of the stats during a stall of L1's disk still
/// answers: what is still queued then is counted by a later snapshot.
pub(crate) const STATS_FILL_WAIT: Duration = Duration::from_millis(100);

/// What [`Monitor::l2_failures`] reads: cumulative counters, compared between two readings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct L2Failures {
    /// Failed L2 calls, hidden by `fallback_on_error` or not, skips by an open breaker included
    /// (`stats().distributed.errors`): a batch's once, however many keys it named.
    pub errors: u64,
    /// The last failure (the host, what happened, what to do; never a password), skips by an
    /// open breaker aside (`stats().distributed.last_error`).
    pub last_error: Option<String>,
    /// L2 writes and deletes queued for replay: failed, waiting behind an earlier op of their
    /// key, or deletes owed to L2 (see `stats().consistency.queued`).
    pub queued: u64,
    /// Of `queued`, writes queued as deletes of their keys: the queue was full
    /// (`offline.replay_max_bytes` or `replay_max_entries`) or the value had expired, so replay
    /// takes the key out of L2 rather than leave its older value there.
    pub queued_as_deletes: u64,
}

/// Reads the manager's statistics; see [`CacheManager::monitor`].
#[derive(Debug, Clone, Copy)]
pub struct Monitor<'a> {
    pub(super) manager: &'a CacheManager,
}

impl<'a> Monitor<'a> {
    /// A snapshot of the counters, with each level's size. Reading L2's size is a blocking call
    /// to L2; in async code use [`Monitor::get_stats_async`].
    ///
    /// L2's size is read at most every `distributed.size_max_age_secs` (default
    /// [`L2_SIZE_MAX_AGE`]) and reused in between, because counting a Redis level walks every
    /// key; a failed reading is reused the same way (its error in `distributed.size_error`), and
    /// calls at the same time wait for one walk. With `size_max_age_secs = 0` it is never read
    /// (`size_error` says so). L1's is read every time.
    ///
    /// The backfills that batch reads returned before this call queued for L1 are waited for
    /// first (at most 100 ms), so that they are counted as a single read's are, once it
    /// returned.
    #[must_use]
    pub fn get_stats(&self) -> CacheStats {
        let s = &self.manager.shared;
        if let Some(fills) = &s.fills {
            fills.drain_within(STATS_FILL_WAIT);
        }
        let l1_size = s.l1.size();
        let l2_size = s.l2.as_ref().map(|l2| s.l2_size.read(|| l2.size()));
        self.assemble(l1_size, l2_size)
    }

    /// The last error by which L2 (or the backplane, publishing or subscribing) said the
    /// configuration is wrong (a refused password, no such database, an untrusted certificate,
    /// an ACL without the backplane's channel; see
    /// [`Error::Misconfigured`](crate::Error::Misconfigured)), if any call saw one; also in
    /// `stats().distributed.last_config_error`. It reads only the
    /// counters, never a level, so it is cheap enough to check after every call.
    #[must_use]
    pub fn config_error(&self) -> Option<String> {
        self.manager.shared.metrics.distributed.last_config_error()
    }

    /// What opening the file-store L1 found: damage it skipped or removed (segments, records,
    /// a torn tail) and what it scanned. `None` when L1 is no file store the manager opened
    /// from its configuration (memory, redb, or a level given to the builder). A damaged
    /// segment is removed by the open that finds it, so the next open cannot see it any more:
    /// this report, or the log of this open, is the only account of what was lost.
    #[must_use]
    pub fn local_recovery(&self) -> Option<&'a crate::RecoveryReport> {
        self.manager
            .shared
            .local_file
            .as_deref()
            .map(crate::FileStore::recovery_report)
    }

    /// The file-store L1's own sizes and counters (segments, compactions, records copied by
    /// evictions, damaged ranges that compactions dropped, ...), which [`Monitor::get_stats`]
    /// does not break down. `None` when L1 is no file store the manager opened from its
    /// configuration, as for [`Monitor::local_recovery`]. Asks the store alone, never L2.
    #[must_use]
    pub fn local_file_stats(&self) -> Option<crate::FileStoreStats> {
        self.manager
            .shared
            .local_file
            .as_deref()
            .map(crate::FileStore::stats)
    }

    /// The size bound in bytes of the file-store L1: `local.max_size`, or where that is unset the
    /// bound its directory recorded (see
    /// [`FileStoreOptions::max_size_mb`](crate::FileStoreOptions::max_size_mb)), which the
    /// configuration alone cannot tell. `None` when L1 is no file store the manager opened from
    /// its configuration, as for [`Monitor::local_recovery`].
    #[must_use]
    pub fn local_file_max_size(&self) -> Option<u64> {
        self.manager
            .shared
            .local_file
            .as_deref()
            .map(crate::FileStore::max_size)
    }

    /// L1's [`corrupt_reads`](crate::LevelStats::corrupt_reads), read from its counters alone
    /// (never L2, unlike [`Monitor::get_stats`]). Compare two readings to learn whether a miss
    /// between them was a damaged record rather than an absent key.
    #[must_use]
    pub fn local_corrupt_reads(&self) -> u64 {
        self.manager.shared.l1.counters().corrupt_reads
    }

    /// The L2 failures and the queued writes counted so far, read from the counters alone
    /// (never a level, unlike [`Monitor::get_stats`]). Compare two readings to learn whether L2
    /// failed during the calls between them, even where `fallback_on_error` hid it from them.
    #[must_use]
    pub fn l2_failures(&self) -> L2Failures {
        let metrics = &self.manager.shared.metrics;
        L2Failures {
            errors: metrics.distributed.errors.get(),
            last_error: metrics.distributed.last_error(),
            queued: metrics.consistency.queued.get(),
            queued_as_deletes: metrics.consistency.queued_as_deletes.get(),
        }
    }

    /// [`Monitor::get_stats`] reading L2's size without blocking the executor; queued
    /// backfills of batch reads are waited for (as there) on a thread of its own.
    pub async fn get_stats_async(self) -> CacheStats {
        let s = &self.manager.shared;
        if let Some(fills) = s.fills.as_ref().filter(|fills| !fills.is_idle()) {
            let fills = std::sync::Arc::clone(fills);
            // A thread that cannot be started leaves them uncounted until a later snapshot.
            let _ = offload("stats", move || Ok(fills.drain_within(STATS_FILL_WAIT))).await;
        }
        let l1_size = s.l1.size();
        let l2_size = match &s.l2 {
            Some(l2) => Some(s.l2_size.read_async(|| l2.size_async()).await),
            None => None,
        };
        self.assemble(l1_size, l2_size)
    }

    fn assemble(
        &self,
        l1_size: Result<StorageSize>,
        l2_size: Option<std::result::Result<StorageSize, String>>,
    ) -> CacheStats {
        let s = &self.manager.shared;
        let split = |r: std::result::Result<StorageSize, String>| match r {
            Ok(size) => (size, None),
            Err(e) => (StorageSize::default(), Some(e)),
        };
        let (local_size, local_err) = split(l1_size.map_err(|e| e.to_string()));
        let mut local = s
            .metrics
            .local
            .snapshot(s.l1.name(), true, s.l1.counters(), local_err);
        // What reached the tier behind the memory tier: the L1 calls, before the memory tier's
        // hits are added.
        let file = local.clone();
        // A memory-tier hit is an L1 hit (the two local tiers together), counted once.
        local.hits += s.metrics.memory.hits.get();
        #[allow(clippy::cast_precision_loss)]
        let local_reads = (local.hits + local.misses) as f64;
        #[allow(clippy::cast_precision_loss)]
        if local_reads > 0.0 {
            local.hit_rate = local.hits as f64 / local_reads;
        }
        let (distributed_size, distributed) = match (&s.l2, l2_size) {
            (Some(l2), Some(size)) => {
                let (size, err) = split(size);
                let mut stats = s
                    .metrics
                    .distributed
                    .snapshot(l2.name(), true, l2.counters(), err);
                stats.breaker = s.breaker.as_ref().map(|b| b.stats());
                stats.nodes = s.nodes.as_ref().map(|n| n.stats()).unwrap_or_default();
                (size, stats)
            }
            _ => (
                StorageSize::default(),
                s.metrics.distributed.snapshot(
                    "none",
                    false,
                    crate::storage::StorageCounters::default(),
                    None,
                ),
            ),
        };
        let (memory_size, memory) = match &s.hot {
            Some(hot) => {
                let mut stats = s.metrics.memory.snapshot("memory", true, hot.counters(), None);
                // The values writes left in the tier are sets of it too.
                stats.sets += hot.written();
                let size = StorageSize {
                    items: hot.len(),
                    bytes: hot.weight(),
                };
                (size, stats)
            }
            None => (
                StorageSize::default(),
                s.metrics
                    .memory
                    .snapshot("none", false, crate::storage::StorageCounters::default(), None),
            ),
        };
        let overall = s.metrics.overall();
        #[allow(clippy::cast_precision_loss)]
        let overall_rate = if overall.reads == 0 {
            0.0
        } else {
            overall.hits as f64 / overall.reads as f64
        };
        CacheStats {
            hit_rate: HitRates {
                local: local.hit_rate,
                memory: memory.hit_rate,
                file: file.hit_rate,
                distributed: distributed.hit_rate,
                overall: overall_rate,
            },
            size: Sizes {
                local: local_size,
                memory: memory_size,
                file: local_size,
                distributed: distributed_size,
            },
            local,
            memory,
            file,
            distributed,
            overall,
            consistency: self.consistency(),
            loader: s.metrics.loader.snapshot(s.fail_safe.enabled()),
        }
    }

    fn consistency(&self) -> ConsistencyStats {
        let s = &self.manager.shared;
        let mut stats = ConsistencyStats::default();
        s.metrics.consistency.fill(&mut stats);
        stats.replay_enabled = s.replays_failures && s.replay.is_some();
        if let Some(q) = &s.replay {
            stats.replay_overflowed = q.is_overflowed();
            let queue = q.stats();
            stats.replay_pending = queue.pending;
            stats.replay_bytes = queue.bytes;
            stats.replay_acks_held = queue.acks_held;
            stats.replay_write_failure = queue.write_failure;
            stats.replay_recovery_needs_bytes = queue.recovery_needs_bytes;
            stats.tags_owed = s.replayed_tags.len() as u64;
            stats.retags_dropped = s.replayed_tags.dropped();
        }
        if let Some(queue) = &s.behind {
            stats.write_behind = true;
            stats.write_behind_pending = queue.len() as u64;
        }
        #[cfg(feature = "redis")]
        if let Some(bp) = s.backplane.get() {
            let bp = bp.stats();
            stats.backplane_enabled = true;
            stats.backplane_connected = bp.connected;
            stats.republish_pending = bp.republish_pending;
            stats.republish_failures = bp.republish_failures;
            stats.republish_overflows = bp.republish_overflows;
        }
        stats
    }
}
