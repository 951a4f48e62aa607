//! Reading a log whose header checked out, at open: its records applied in order, damage and a
//! torn tail counted (see "Recovery (open)" in storage-format.md).

use super::format::{self, Header, Item, Kind, RecordRef};
use super::state::{Pending, Slot};
use super::{ReplayAction, ReplayRecovery};

/// The state read from a log.
pub(super) struct Loaded {
    pub(super) pending: Pending,
    pub(super) overflowed: bool,
    pub(super) next_seq: u64,
    /// Where appends continue, if the log can be used as it is (no damage, no torn tail).
    pub(super) clean_end: Option<u64>,
    /// Where the last valid record ends.
    pub(super) end: u64,
    /// Nothing but a torn tail is wrong: cutting it leaves a clean log.
    pub(super) only_torn: bool,
}

/// Reads the records of a log whose header checked out, counting what it finds in `recovery`.
pub(super) fn load(bytes: &[u8], header: Header, recovery: &mut ReplayRecovery) -> Loaded {
    let mut pending = Pending::default();
    let mut max_seq = 0;
    let mut flagged = false;
    let scan = format::scan_log_with(bytes, header.log_id, |item| match item {
        Item::Record(record) => {
            recovery.records += 1;
            max_seq = max_seq.max(record.seq);
            apply(&mut pending, &mut flagged, &record);
        }
        Item::Damage(range) => {
            // The lost bytes may have held a newer op of any key pending so far.
            recovery.damaged_ranges += 1;
            recovery.damaged_bytes += range.end - range.start;
            recovery.sets_downgraded += pending.downgrade_all_sets() as u64;
        }
    });
    if let Some(tail) = &scan.torn_tail {
        recovery.torn_tail_bytes = tail.end - tail.start;
    }
    let damaged = recovery.damaged_ranges > 0;
    Loaded {
        pending,
        // A clear record read after the damage does not clear what the damage implies.
        overflowed: flagged || damaged,
        next_seq: header.next_seq.max(max_seq.saturating_add(1)).max(1),
        clean_end: (!damaged && scan.torn_tail.is_none()).then_some(scan.data_end),
        end: scan.data_end,
        only_torn: !damaged && scan.torn_tail.is_some(),
    }
}

/// Reads the records of a log whose header is damaged, under the log id the header still holds
/// (see [`format::damaged_header_log_id`]), if at least one record checks out under it: a CRC
/// seeded by the id proves the id, and every record that checks out is this log's, so a flipped
/// byte in the magic, `next_seq` or the CRC does not lose every queued op. The header's
/// `next_seq` is not trusted: numbering resumes after the highest seq read (the log is written
/// anew under a new id, so no older record can meet a reused seq). `None` (and `recovery`
/// untouched) if nothing checks out: the id itself is damaged, or the file is not a log.
pub(super) fn rescue(bytes: &[u8], recovery: &mut ReplayRecovery) -> Option<Loaded> {
    let log_id = format::damaged_header_log_id(bytes)?;
    let mut found = ReplayRecovery::default();
    let loaded = load(bytes, Header { log_id, next_seq: 0 }, &mut found);
    if found.records == 0 {
        return None;
    }
    *recovery = found;
    Some(loaded)
}

/// Applies one record read at open.
fn apply(pending: &mut Pending, overflowed: &mut bool, record: &RecordRef<'_>) {
    match record.kind {
        Kind::Set | Kind::Delete => {
            // Highest seq wins (file order agrees in a well-formed log).
            if pending.get(record.key).is_some_and(|s| s.seq >= record.seq) {
                return;
            }
            let action = if record.kind == Kind::Set {
                ReplayAction::Set {
                    value: record.value.to_vec(),
                    expires_at_ms: record.expires_at_ms,
                }
            } else {
                ReplayAction::Delete
            };
            pending.insert(record.key, Slot::new(record.key, record.seq, action));
        }
        Kind::Ack => {
            pending.remove_if_seq(record.key, record.seq);
        }
        Kind::Overflow => *overflowed = true,
        Kind::OverflowCleared => *overflowed = false,
    }
}
