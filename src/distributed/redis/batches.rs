//! A batch split per hash slot of a cluster, and how the parts of a batch split per primary (or
//! per slot) make the batch's answer: the keys at each index, and the written or removed count of
//! a batch whose parts failed in part ([`Error::PartialBatch`](crate::Error::PartialBatch)).

use std::future::Future;
use std::time::Duration;

use futures_util::future::join_all;

use super::errors::LEVEL;
use crate::distributed::nodes::{partial, settle};
use crate::error::{Error, Result, Served};
use crate::storage::BoxFuture;

/// Per primary (or slot) of a batch: the caller's indices it carried, and its answer.
pub(super) type Parts<T> = Vec<(Vec<usize>, Result<T>)>;

/// The hash slots of a batch: each slot and the caller's indices of its keys.
pub(super) type SlotGroups = Vec<(usize, Vec<usize>)>;

/// One call per hash slot at once (`run` makes the call for the caller's indices it is given):
/// the split the client makes of a multi-key command anyway, made here so that a slot the
/// cluster does not serve (`CLUSTERDOWN`) fails its own keys only, as its slot's
/// [`Error::NodeUnavailable`]. In the client's split it failed the whole batch (with a
/// "Mismatch in the number of multi-slot results" once the client's map dropped the slot).
/// A slot whose primary is out of memory for writes ([`Error::ServerFull`]) fails its own keys
/// the same way, as a node's breaker makes it (`Node::record`): passed on as it was, it failed
/// the whole batch, read as nothing written while the other primaries held their items.
pub(super) fn each_slot<'a, T, F>(groups: SlotGroups, run: F) -> impl Future<Output = Parts<T>> + Send + 'a
where
    T: Send + 'a,
    F: Fn(Vec<usize>) -> BoxFuture<'a, Result<T>> + Send + 'a,
{
    let parts = groups.into_iter().map(move |(slot, members)| {
        let call = run(members.clone());
        async move {
            let result = call.await.map_err(|e| match e {
                e @ (Error::Timeout { .. } | Error::Backend { .. } | Error::ServerFull { .. }) => {
                    Error::NodeUnavailable {
                        level: LEVEL,
                        node: format!("of hash slot {slot}"),
                        cause: Box::new(e),
                    }
                }
                other => other,
            });
            (members, result)
        }
    });
    join_all(parts.collect::<Vec<_>>())
}

/// The key at an index of a batch of keys.
pub(super) fn key_in<'a>(keys: &'a [&'a str]) -> impl Fn(usize) -> Option<&'a str> + Copy + Send + 'a {
    move |i| keys.get(i).copied()
}

/// The key at an index of a batch of items.
pub(super) fn key_of_item<'a>(
    items: &'a [(&'a str, &'a [u8], Option<Duration>)],
) -> impl Fn(usize) -> Option<&'a str> + Copy + Send + 'a {
    move |i| items.get(i).map(|(key, _, _)| *key)
}

/// A write batch's answer: `Ok` if every part wrote, else the [`Error::PartialBatch`](crate::Error::PartialBatch)
/// naming the items not written.
pub(super) fn written_parts(op: &'static str, total: usize, parts: Parts<()>) -> Result<()> {
    let settled = settle(parts)?;
    match settled.cause {
        None => Ok(()),
        Some(cause) => Err(partial(LEVEL, op, total, settled.failed, cause, Served::Written)),
    }
}

/// A `delete_many`'s answer: the keys removed, with the keys not reached named in a partial
/// batch if some part failed.
pub(super) fn removed_parts(total: usize, parts: Parts<u64>) -> Result<u64> {
    let settled = settle(parts)?;
    let removed = settled
        .served
        .iter()
        .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
    match settled.cause {
        None => Ok(removed),
        Some(cause) => Err(partial(
            LEVEL,
            "delete_many",
            total,
            settled.failed,
            cause,
            Served::Removed(removed),
        )),
    }
}

/// Items with a TTL each, from items with one TTL.
pub(super) fn with_ttl<'a>(
    items: &[(&'a str, &'a [u8])],
    ttl: Option<Duration>,
) -> Vec<(&'a str, &'a [u8], Option<Duration>)> {
    items.iter().map(|&(k, v)| (k, v, ttl)).collect()
}
