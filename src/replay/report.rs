//! What a replay queue reports: what its open found in the log, and its sizes and counters.

/// What opening the queue found in its log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ReplayRecovery {
    /// Valid records read.
    pub records: u64,
    /// Ops pending after open.
    pub pending: u64,
    /// Bad byte ranges followed by valid records (real damage; skipped).
    pub damaged_ranges: u64,
    /// Bytes in those ranges.
    pub damaged_bytes: u64,
    /// Bytes of a torn tail that was cut (a push interrupted by a crash).
    pub torn_tail_bytes: u64,
    /// Sets turned into deletes because damage followed them.
    pub sets_downgraded: u64,
    /// Set if the header was damaged: what was wrong. The log was kept as `replay.log.damaged`
    /// and the queue started overflowed, with the ops of the records that checked out under the
    /// log id the header still held (counted in the fields above; none if that id was damaged).
    pub header_damage: Option<String>,
    /// Whether the log was rewritten at open (after damage or a damaged header; a torn tail
    /// alone is cut in place, and rewritten only if that fails).
    pub rewritten: bool,
    /// Whether `replay.overflowed` was found with the log's flag clear: a write of the log
    /// failed before the queue was last closed, and the queue was marked overflowed.
    #[serde(default)]
    pub marked_overflowed: bool,
    /// Set if the log had to be rewritten at open (damage) and could not be (a full device):
    /// why. The queue opened with what it read, latched, as after a failed write:
    /// [`ReplayQueue::recover`](super::ReplayQueue::recover) writes the new log once there is room (the manager tries every
    /// second), and pushes are refused, and counted as lost, until then.
    #[serde(default)]
    pub rewrite_failed: Option<String>,
}

/// Sizes and counters of a queue.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ReplayStats {
    /// Pending ops (one per key).
    pub pending: u64,
    /// Of which deletes (expired sets included once [`ReplayQueue::pending`](super::ReplayQueue::pending) has seen them).
    pub pending_deletes: u64,
    /// Encoded bytes of the pending ops; what `max_bytes` bounds.
    pub bytes: u64,
    /// Length of the log file.
    pub log_bytes: u64,
    /// Whether an op was lost (see [`ReplayQueue::is_overflowed`](super::ReplayQueue::is_overflowed)).
    pub overflowed: bool,
    /// Ops queued since open (downgraded ones included).
    pub pushed: u64,
    /// Sets queued as deletes since open (too big, or already expired), and pending sets made
    /// deletes to make room for a delete.
    pub downgraded: u64,
    /// Ops lost since open: not even a delete fit, or a write failure had latched the log.
    pub lost: u64,
    /// Ops acknowledged since open (held ones included).
    pub acked: u64,
    /// Ops acked while the log could not be written (latched): out of the pending ops, acked
    /// in memory only. The log still holds them, so a reopen before
    /// [`ReplayQueue::recover`](super::ReplayQueue::recover) replays them again; a recovery
    /// writes the new log without them and brings this back to 0. Their keys still read as
    /// [`is_pending`](super::ReplayQueue::is_pending) until then.
    #[serde(default)]
    pub acks_held: u64,
    /// Log rewrites since open.
    pub compactions: u64,
    /// Automatic compactions that failed (the log stays as it was; see the logs).
    pub compaction_failures: u64,
    /// The failure that disabled writes, if any.
    pub write_failure: Option<String>,
    /// Why the last [`ReplayQueue::recover`](super::ReplayQueue::recover) failed, while the
    /// queue stays latched (cleared once one succeeds).
    #[serde(default)]
    pub recovery_failure: Option<String>,
    /// When that failure was a full device: the bytes the new log needs free on it (it is
    /// written beside the old log, which goes only once the new one is in place). 0 otherwise.
    #[serde(default)]
    pub recovery_needs_bytes: u64,
    /// [`ReplayQueue::recover`](super::ReplayQueue::recover) calls since open that tried to
    /// write the log anew (the queue was latched), the manager's automatic ones included.
    #[serde(default)]
    pub recovery_attempts: u64,
    /// Automatic recoveries skipped since open: the last one failed for lack of space, and
    /// since then neither has the device's free space grown nor the pending bytes shrunk.
    #[serde(default)]
    pub recoveries_skipped: u64,
}
