//! Writing pushes: the ops of every push waiting for the log are planned in order against the
//! pending state, appended with one write, made durable with one `fdatasync`, and only then
//! applied in memory (see [`super::group`] for how pushes wait for their turn).
//!
//! A push is answered after the `fdatasync` that covers it, so "durable when it returns" holds
//! for each push as before; what the group changes is that pushes made at the same time share
//! that `fdatasync` instead of each waiting for all the earlier ones in turn.

use std::collections::HashMap;
use std::io;
use std::path::Path;

use super::format;
use super::state::{encoded_len, Slot};
use super::{overflow_record, record_of, Inner, Push, PushOutcome, ReplayAction};
use crate::error::{key_for_error, Error, Result};
use crate::log_limit::LogLimit;
use format::Kind;

/// One op of a push, owned, since it waits in the group's queue for whichever caller writes it.
#[derive(Debug)]
pub(super) enum Op {
    Set {
        key: String,
        value: Vec<u8>,
        expires_at_ms: u64,
    },
    Delete {
        key: String,
    },
}

impl Op {
    pub(super) fn from_push(push: &Push<'_>) -> Op {
        match *push {
            Push::Set {
                key,
                value,
                expires_at_ms,
            } => Op::Set {
                key: key.to_owned(),
                value: value.to_vec(),
                expires_at_ms,
            },
            Push::Delete { key } => Op::Delete { key: key.to_owned() },
        }
    }

    fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// Ops a latched log refused: lost, so the queue is marked overflowed. A set still pending for
/// one of their keys is older than the refused op (a newer value, or a delete that took the
/// key out of L1): replayed after [`recover`](super::ReplayQueue::recover), it would put that
/// older value back in L2. So it becomes a delete of the key, in memory, where `recover`
/// writes the new log from. (A reopen before `recover` reads the old log, which still holds the
/// set: the refusal was never written anywhere.) Likewise for a key whose op L2 has but whose
/// ack is held (see [`ReplayQueue::ack_many`](super::ReplayQueue::ack_many)): a delete of it is
/// pending again.
fn refused(inner: &mut Inner, pushes: &[Vec<Op>]) {
    let mut first = None;
    for op in pushes.iter().flatten() {
        inner.overflowed = true;
        inner.stats.lost += 1;
        if inner.pending.downgrade_key(op.key()) || inner.pending.requeue_held_as_delete(op.key()) {
            first = first.or(Some(op.key()));
        }
    }
    // Every push refused while the log stays latched gets here: one line a second at most.
    if let Some(key) = first {
        if let Some(unlogged) = inner.flood_lines.latched.pass() {
            tracing::warn!(key = %key_for_error(key), unlogged, "replay queue latched: the key whose newer op it refused replays as a delete (unlogged: keys since the last line)");
        }
    }
}

/// The lines a full or latched queue logs, each at most once a second: while L2 is away every
/// write is pushed, and each one refused had a line.
#[derive(Debug, Default)]
pub(super) struct FloodLines {
    lost: LogLimit,
    made_deletes: LogLimit,
    latched: LogLimit,
}

/// Pending sets a delete short of bytes weighs at most to make room (see [`write`]): the push
/// holds the queue's lock, and a queue full of small sets that cannot make the room would
/// otherwise be walked whole by every delete it loses.
const ROOM_SETS_WEIGHED: usize = 4096;

/// The queue's bounds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) max_bytes: u64,
    pub(super) max_entries: usize,
}

/// Writes the ops of `pushes`, in order, as one append; returns one answer per push.
///
/// If the append or its `fdatasync` fails, every push gets the error and the log is latched,
/// but the ops are applied in memory all the same, and the queue is marked overflowed (in
/// memory: the log takes no more writes). Their records may be on disk anyway (a failed fsync
/// says nothing of what reached the disk), and a reopen would replay them: kept pending, their
/// keys are not written to L2 directly meanwhile (the manager pushes them, and is refused), so
/// no newer value of theirs can be overwritten by that replay. And the ops may be lost too, so
/// L2 may be stale. Pushes refused by a latched log are lost: they mark the queue the same way,
/// and a key of theirs with a set pending gets it made a delete, in memory (see [`refused`]).
pub(super) fn write(
    inner: &mut Inner,
    pushes: Vec<Vec<Op>>,
    now_ms: u64,
    bounds: Bounds,
) -> Vec<Result<Vec<PushOutcome>>> {
    let count = pushes.len();
    if let Err(e) = inner.log.check_writable() {
        refused(inner, &pushes);
        return answer_all_with(&e, inner.log.path(), count);
    }
    let log_id = inner.log.log_id();

    // Plan against the current state plus the ops planned so far, then write, then apply.
    let mut staged: HashMap<String, u64> = HashMap::new();
    let mut entries = inner.pending.len();
    let mut bytes = inner.pending.bytes();
    let mut next_seq = inner.next_seq;
    let mut buf = Vec::new();
    let mut planned: Vec<(String, Slot)> = Vec::new();
    let mut outcomes: Vec<Vec<PushOutcome>> = Vec::with_capacity(count);
    let mut lost = 0u64;
    let mut downgraded = 0u64;
    // Pending sets made deletes for room: in `planned`, but no push of their own.
    let mut room_made = 0usize;
    // Logged once for the whole write, and then at most once a second (see `full_lines`).
    let (mut first_lost, mut first_made_delete) = (None, None);
    for push in pushes {
        let mut these = Vec::with_capacity(push.len());
        for op in push {
            let current = staged
                .get(op.key())
                .copied()
                .or_else(|| inner.pending.get(op.key()).map(|s| s.disk_len));
            let base_entries = entries - usize::from(current.is_some());
            let mut base_bytes = bytes - current.unwrap_or(0);
            let fits = |len: u64| base_entries < bounds.max_entries && base_bytes + len <= bounds.max_bytes;
            let (key, action, was_set) = match op {
                Op::Set {
                    key,
                    value,
                    expires_at_ms,
                } => {
                    let expired = expires_at_ms != 0 && expires_at_ms <= now_ms;
                    if !expired && fits(format::record_len(key.len(), value.len()) as u64) {
                        (key, ReplayAction::Set { value, expires_at_ms }, true)
                    } else {
                        (key, ReplayAction::Delete, true)
                    }
                }
                Op::Delete { key } => (key, ReplayAction::Delete, false),
            };
            let len = encoded_len(&key, &action);
            // A delete of a key that is already pending replaces its op and never grows the queue.
            let replaces = current.is_some() && action == ReplayAction::Delete;
            if !replaces && !fits(len) && action == ReplayAction::Delete && base_entries < bounds.max_entries
            {
                // Only bytes are short: the oldest pending sets of other keys become deletes of
                // their keys, which frees their values' bytes, before the delete is lost.
                let room = bounds.max_bytes.saturating_sub(len);
                let (bytes_before, seq_before) = (bytes, next_seq);
                let mut made = Vec::new();
                for (other, slot) in inner.pending.sets_oldest_first().take(ROOM_SETS_WEIGHED) {
                    if base_bytes <= room {
                        break;
                    }
                    if **other == *key || staged.contains_key(&**other) {
                        continue;
                    }
                    let Some(after) = next_seq.checked_add(1) else {
                        break;
                    };
                    let delete_len = encoded_len(other, &ReplayAction::Delete);
                    made.push((other.to_string(), next_seq, delete_len));
                    next_seq = after;
                    bytes = bytes.saturating_sub(slot.disk_len) + delete_len;
                    base_bytes = bytes - current.unwrap_or(0);
                }
                if base_bytes > room || next_seq.checked_add(1).is_none() {
                    // Not enough even so (or no sequence number left for the delete itself): the
                    // delete is lost, and no set is given up for it.
                    (bytes, next_seq) = (bytes_before, seq_before);
                    base_bytes = bytes - current.unwrap_or(0);
                    made.clear();
                }
                for (other, seq, delete_len) in made {
                    first_made_delete.get_or_insert_with(|| other.clone());
                    format::encode_record(&mut buf, log_id, &record_of(&other, seq, &ReplayAction::Delete));
                    staged.insert(other.clone(), delete_len);
                    downgraded += 1;
                    room_made += 1;
                    planned.push((
                        other,
                        Slot {
                            seq,
                            action: ReplayAction::Delete,
                            disk_len: delete_len,
                        },
                    ));
                }
            }
            let fits = |len: u64| base_entries < bounds.max_entries && base_bytes + len <= bounds.max_bytes;
            if !replaces && !fits(len) {
                first_lost.get_or_insert_with(|| key.clone());
                lost += 1;
                these.push(PushOutcome::Overflowed);
                continue;
            }
            // Only a log that says it used the last sequence number gets here (a crafted one: a
            // damaged record fails its CRC). Lost as a full queue's op, never a wrap to a seq
            // that would lose to older records at the next open.
            let Some(after) = next_seq.checked_add(1) else {
                tracing::error!(key = %key_for_error(&key), "replay log out of sequence numbers; op lost, queue marked overflowed (clear the queue's directory once L2 is reconciled)");
                lost += 1;
                these.push(PushOutcome::Overflowed);
                continue;
            };
            let seq = next_seq;
            next_seq = after;
            let downgrade = was_set && action == ReplayAction::Delete;
            if downgrade {
                downgraded += 1;
            }
            these.push(if downgrade {
                PushOutcome::Downgraded { seq }
            } else {
                PushOutcome::Queued { seq }
            });
            format::encode_record(&mut buf, log_id, &record_of(&key, seq, &action));
            staged.insert(key.clone(), len);
            entries = base_entries + 1;
            bytes = base_bytes + len;
            planned.push((
                key,
                Slot {
                    seq,
                    action,
                    disk_len: len,
                },
            ));
        }
        outcomes.push(these);
    }
    full_lines(inner, first_lost, first_made_delete);
    let newly_overflowed = lost > 0 && !inner.overflowed;
    if newly_overflowed {
        format::encode_record(&mut buf, log_id, &overflow_record(Kind::Overflow));
    }
    let appended = if buf.is_empty() {
        Ok(())
    } else {
        inner.log.append(&buf)
    };
    inner.next_seq = next_seq;
    inner.overflowed |= lost > 0 || appended.is_err();
    inner.stats.pushed += planned.len().saturating_sub(room_made) as u64;
    inner.stats.downgraded += downgraded;
    inner.stats.lost += lost;
    for (key, slot) in planned {
        inner.pending.insert(&key, slot);
    }
    match appended {
        Ok(()) => outcomes.into_iter().map(Ok).collect(),
        Err(e) => answer_all_with(&e, inner.log.path(), count),
    }
}

/// The lines of a full queue, which every write refuses while L2 stays away: the first key
/// lost (or made a delete) names the write, `unlogged` counts those not logged since the last.
fn full_lines(inner: &Inner, lost: Option<String>, made_delete: Option<String>) {
    let lines = &inner.flood_lines;
    if let Some(key) = made_delete {
        if let Some(unlogged) = lines.made_deletes.pass() {
            tracing::warn!(key = %key_for_error(&key), unlogged, "replay queue full; a pending set of the key replays as a delete, to make room for a delete (unlogged: writes since the last line)");
        }
    }
    if let Some(key) = lost {
        if let Some(unlogged) = lines.lost.pass() {
            tracing::warn!(key = %key_for_error(&key), unlogged, "replay queue full; op lost, queue marked overflowed (unlogged: writes since the last line)");
        }
    }
}

/// `count` answers of `error`, each naming the same file, operation and cause (errors are not
/// `Clone`).
fn answer_all_with(error: &Error, path: &Path, count: usize) -> Vec<Result<Vec<PushOutcome>>> {
    (0..count).map(|_| Err(copy_of(error, path))).collect()
}

/// A copy of one of the errors the log's writes return (in `path`).
pub(super) fn copy_of(error: &Error, path: &Path) -> Error {
    match error {
        Error::Io { op, path, source } => Error::io(
            op,
            path.clone(),
            io::Error::new(source.kind(), source.to_string()),
        ),
        Error::WritesDisabled { path, cause } => Error::WritesDisabled {
            path: path.clone(),
            cause: cause.clone(),
        },
        Error::DiskFull { path, op, needed } => Error::DiskFull {
            path: path.clone(),
            op,
            needed: *needed,
        },
        // The log's writes fail only with the three above; anything else still says what failed.
        other => Error::WritesDisabled {
            path: path.to_owned(),
            cause: other.to_string(),
        },
    }
}
