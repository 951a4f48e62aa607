//! Acks: an op L2 confirmed leaves the queue, durably, or in memory only while the log cannot
//! be written.

use std::collections::HashSet;

use super::format::{self, Kind, RecordRef};
use super::{state, ReplayAction, ReplayOp, ReplayQueue};
use crate::error::Result;

/// Whether `slot` still holds `op`: the same seq, and of the same kind too: a set turned into a
/// delete in memory keeps its seq (a newer op of the key was refused: L2 must lose the key), and
/// the set taken before must neither be sent nor ack the delete that has not been sent.
fn is_op(slot: &state::Slot, op: &ReplayOp) -> bool {
    slot.seq == op.seq
        && matches!(
            (&slot.action, &op.action),
            (ReplayAction::Delete, ReplayAction::Delete)
                | (ReplayAction::Set { .. }, ReplayAction::Set { .. })
        )
}

impl ReplayQueue {
    /// Whether `op`, read from [`pending`](Self::pending), is still its key's pending op (see
    /// `is_op`): not acked, superseded by a newer push, or turned into a delete since. A set
    /// taken before its key's newer op and sent after it would put the value that op replaced
    /// back in L2. Waits for a push's fsync, as [`pending_seq`](Self::pending_seq) does.
    pub(crate) fn still_pending(&self, op: &ReplayOp) -> bool {
        self.inner
            .lock()
            .pending
            .get(&op.key)
            .is_some_and(|s| is_op(s, op))
    }

    /// Marks several ops as replayed with one append and one `fdatasync`. Returns how many were
    /// still pending (the others were acked already or superseded, and are left alone).
    ///
    /// While the log cannot be written (latched by a failed write, see the [module
    /// docs](super)), or when this ack's own write fails and latches it, the acks are **held**:
    /// the ops leave the pending ops in memory, so [`pending`](Self::pending) goes on to the
    /// next ones, and [`recover`](Self::recover) writes the new log without them; until then
    /// the log still holds them, and a reopen replays them again (as after a crash between an
    /// L2 write and its ack). So their keys stay [`is_pending`](Self::is_pending) until that
    /// recovery: a direct L2 write of such a key, replayed over by that reopen, would be lost.
    /// Counted in [`ReplayStats::acks_held`](super::ReplayStats::acks_held).
    ///
    /// # Errors
    /// None from the log's writes (a failure is held as above, and shown by
    /// [`stats`](Self::stats)); the `Result` is kept for the API's sake.
    pub fn ack_many(&self, ops: &[ReplayOp]) -> Result<usize> {
        let mut inner = self.inner.lock();
        let inner = &mut *inner;
        let log_id = inner.log.log_id();
        // Per key and seq: a log's CRCs do not make its seqs unique (see `Pending`), and two
        // keys on one seq each have their op to ack.
        let mut seen = HashSet::new();
        let mut buf = Vec::new();
        let mut acked = Vec::new();
        for op in ops {
            if inner.pending.get(&op.key).is_some_and(|s| is_op(s, op))
                && seen.insert((op.key.as_str(), op.seq))
            {
                format::encode_record(
                    &mut buf,
                    log_id,
                    &RecordRef {
                        kind: Kind::Ack,
                        seq: op.seq,
                        expires_at_ms: 0,
                        key: &op.key,
                        value: &[],
                    },
                );
                acked.push(op);
            }
        }
        if acked.is_empty() {
            return Ok(0);
        }
        let was_latched = inner.log.failure().is_some();
        if let Err(e) = inner.log.append(&buf) {
            // L2 has these ops: sent again and again until a recovery, they kept every op
            // behind them (deletes among them) from L2 for as long as the device stayed full.
            if !was_latched {
                tracing::warn!(error = %e, path = %inner.log.path().display(),
                    "replay log write failed; acks are held in memory until the log is rewritten (a restart before that replays those ops again)");
            }
            for op in &acked {
                inner.pending.hold(&op.key, op.seq);
            }
            inner.stats.acked += acked.len() as u64;
            return Ok(acked.len());
        }
        for op in &acked {
            inner.pending.remove_if_seq(&op.key, op.seq);
        }
        inner.stats.acked += acked.len() as u64;
        self.maybe_compact(inner);
        Ok(acked.len())
    }
}
