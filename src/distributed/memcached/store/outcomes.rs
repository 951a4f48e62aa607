//! What a call's answers make for the caller: a write's, a delete's, and those of the calls
//! that need every host (a size's figures added up).

use super::{partial, Answers, MAX_BATCH};
use crate::error::{Error, Result, Served};
use crate::storage::StorageSize;

/// A write's answers: `Ok` if every item was stored. Items a host refused (too large: its `-I`
/// is below `max_item_size`; or out of memory) fail alone, like the items of a host that was not
/// reached: the others were stored, so the call is an [`Error::PartialBatch`] listing the failed
/// items and, apart, the refused ones. Its cause is the first refusal
/// ([`Error::ValueTooLarge`], [`Error::ItemRefused`]) if any item was refused, else the first
/// node failure: a refused item must read as bad input, or a caller
/// would take it for unreached and queue it for a replay that can only fail again. An unreached
/// item must not read as refused either, or a caller would drop a write that only waits for its
/// host: so a batch none of whose items was stored is the node failure alone only when every
/// item was unreached.
///
/// A batch of more than one item that a server refused in whole is a [`Error::PartialBatch`]
/// too, naming every item in `refused`: a bare [`Error::ValueTooLarge`] from a batch is the
/// level's own check, which refuses it before anything is sent and changes nothing, whereas a
/// server refused these after they were sent, and dropped their previous values. A write of one
/// item gets its refusal as is, as `set` does.
pub(super) fn written(answers: Answers<Vec<(usize, Error)>>) -> Result<()> {
    let (op, total) = (answers.op, answers.total);
    let split = answers.split()?;
    let (mut failed, unreached) = (split.failed, split.cause);
    let mut refused = Vec::new();
    let mut first_refusal = None;
    for (members, commands) in split.served {
        for (c, refusals) in commands.into_iter().enumerate() {
            for (i, e) in refusals {
                refused.extend(members.get(c * MAX_BATCH + i));
                first_refusal.get_or_insert(e);
            }
        }
    }
    failed.extend_from_slice(&refused);
    match (first_refusal, unreached) {
        (None, None) => Ok(()),
        (Some(cause), _) if total == 1 => Err(cause),
        (None, Some(cause)) if failed.len() >= total => Err(cause),
        (Some(cause), _) | (None, Some(cause)) => {
            Err(partial(op, total, failed, refused, cause, Served::Written))
        }
    }
}

/// A delete's answers: how many keys existed, on the hosts reached.
pub(super) fn removed(answers: Answers<u64>) -> Result<u64> {
    answers
        .all_or_partial(|counts| Served::Removed(counts.iter().sum()))
        .map(|counts| counts.into_iter().sum())
}

/// `size` and `clear` need every host: no partial answer.
pub(super) fn everywhere_result<O>(answers: Answers<O>) -> Result<Vec<O>> {
    answers.all_or_partial(|_| Served::Written).map_err(|e| match e {
        Error::PartialBatch(p) => p.cause,
        other => other,
    })
}

/// The hosts' sizes added up, saturating: a server's figures cannot overflow them.
pub(in crate::distributed::memcached) fn sum_sizes(sizes: Vec<StorageSize>) -> StorageSize {
    sizes
        .into_iter()
        .fold(StorageSize::default(), |a, s| StorageSize {
            items: a.items.saturating_add(s.items),
            bytes: a.bytes.saturating_add(s.bytes),
        })
}
