//! What a call's answers make for the caller: the hosts reached and not, a write's, a delete's,
//! a clear's, and those of the other calls that need every host (a size's figures added up).

use std::sync::Arc;

use super::{Answers, Host, LEVEL, MAX_BATCH};
use crate::distributed::nodes::{settle, Settled};
use crate::error::{Error, PartialBatch, Result, Served};
use crate::storage::StorageSize;

impl<O> Answers<O> {
    /// The hosts' outputs (one per command), and the caller's indices they did not serve,
    /// settled as the parts of any batch split over nodes are (see [`settle`]). A host that
    /// failed after some of its commands (one per [`MAX_BATCH`] of its keys) keeps what those
    /// settled: only the keys of the commands that did not complete fail. Any failure that is
    /// not a host's ([`Error::NodeUnavailable`]: a refusal, bad input) fails the whole call, as
    /// do host failures when no host answered.
    pub(super) fn split(self) -> Result<Settled<Vec<O>>> {
        let mut parts = Vec::with_capacity(self.parts.len());
        for (mut members, ran) in self.parts {
            match ran.failure {
                None => parts.push((members, Ok(ran.outputs))),
                Some(e @ Error::NodeUnavailable { .. }) => {
                    let settled = ran.outputs.len().saturating_mul(MAX_BATCH);
                    let unserved = members.split_off(settled.min(members.len()));
                    if !ran.outputs.is_empty() {
                        parts.push((members, Ok(ran.outputs)));
                    }
                    parts.push((unserved, Err(e)));
                }
                Some(e) => parts.push((members, Err(e))),
            }
        }
        settle(parts)
    }

    /// A call whose outputs only count (`set`, `delete`, `size`, `clear`): every host's
    /// outputs, or the partial failure with `served` made from the outputs that came back.
    pub(super) fn all_or_partial(self, served: impl FnOnce(Vec<O>) -> Served) -> Result<Vec<O>> {
        let (op, total) = (self.op, self.total);
        let mut split = self.split()?;
        let outputs: Vec<O> = split.served.drain(..).flat_map(|(_, o)| o).collect();
        match split.cause {
            None => Ok(outputs),
            Some(cause) => Err(partial(
                op,
                total,
                split.failed,
                Vec::new(),
                cause,
                served(outputs),
            )),
        }
    }
}

/// The [`Error::PartialBatch`] of a call that did not serve `failed`, of which `refused` were
/// refused by a server (the others were not reached).
pub(super) fn partial(
    op: &'static str,
    total: usize,
    failed: Vec<usize>,
    refused: Vec<usize>,
    cause: Error,
    served: Served,
) -> Error {
    Error::PartialBatch(Box::new(PartialBatch::new(
        LEVEL, op, total, failed, refused, cause, served,
    )))
}

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

/// A clear's answers, one per host of `hosts` in order: `Ok` if every host flushed. Otherwise
/// the error names the hosts `flush_all` ran on and those it did not (each with why), and says
/// to run `clear` again, for a caller that cannot otherwise tell a clear that flushed nothing
/// from one that flushed every host but one (and it did the latter most often). A single host's
/// failure, or a call nothing was sent for, is its error as it is.
///
/// The error keeps the kind of the hosts' failures, which decides who counts it: a refusal of
/// `flush_all` (`-F`) stays [`Error::Misconfigured`] of this call alone, a host's outage with
/// breakers per host [`Error::NodeUnavailable`] naming that host (the first), which no level
/// breaker counts; without them, [`Error::Backend`].
pub(super) fn cleared<O>(answers: Answers<O>, hosts: &[Arc<Host>]) -> Result<()> {
    let mut flushed = Vec::new();
    let mut failed = Vec::new();
    for ((_, ran), host) in answers.parts.into_iter().zip(hosts) {
        match ran.failure {
            None => flushed.push(host.spec.display.as_str()),
            Some(e) => failed.push((host.spec.display.as_str(), e)),
        }
    }
    if failed.is_empty() || (flushed.is_empty() && failed.len() == 1) {
        return failed.into_iter().next().map_or(Ok(()), |(_, e)| Err(e));
    }
    let ran_on = if flushed.is_empty() {
        "no host".to_owned()
    } else {
        flushed.join(", ")
    };
    let not: Vec<&str> = failed.iter().map(|(host, _)| *host).collect();
    let why: Vec<String> = failed
        .iter()
        .map(|(host, e)| {
            // A node's own words speak of keys served elsewhere; its cause is the failure.
            let text = match e {
                Error::NodeUnavailable { cause, .. } => cause.to_string(),
                e => e.to_string(),
            };
            if text.contains(host) {
                text
            } else {
                format!("{host}: {text}")
            }
        })
        .collect();
    let reason = format!(
        "flush_all ran on {ran_on} but not on {} ({}), which still hold their items: run clear() \
         again once they take it (a host flushed twice loses nothing more)",
        not.join(", "),
        why.join("; ")
    );
    let call_only = failed.iter().find_map(|(_, e)| match e {
        Error::Misconfigured { call_only, .. } => Some(*call_only),
        Error::NodeUnavailable { cause, .. } => match **cause {
            Error::Misconfigured { call_only, .. } => Some(call_only),
            _ => None,
        },
        _ => None,
    });
    let error = match call_only {
        Some(call_only) => Error::Misconfigured {
            level: LEVEL,
            hosts: not.join(", "),
            reason,
            call_only,
        },
        None => Error::Backend {
            level: LEVEL,
            op: "clear",
            reason,
        },
    };
    let down = failed.iter().find_map(|(_, e)| match e {
        Error::NodeUnavailable { node, .. } => Some(node.clone()),
        _ => None,
    });
    Err(match (down, call_only) {
        (Some(node), None | Some(false)) => Error::NodeUnavailable {
            level: LEVEL,
            node,
            cause: Box::new(error),
        },
        _ => error,
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
