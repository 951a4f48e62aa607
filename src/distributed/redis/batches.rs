//! How the parts of a batch split per primary (or per hash slot) of a cluster make the batch's
//! answer: the keys at each index, and the written or removed count of a batch whose parts
//! failed in part ([`Error::PartialBatch`](crate::Error::PartialBatch)).

use std::time::Duration;

use super::errors::LEVEL;
use crate::distributed::nodes::{partial, settle};
use crate::error::{Result, Served};

/// Per primary (or slot) of a batch: the caller's indices it carried, and its answer.
pub(super) type Parts<T> = Vec<(Vec<usize>, Result<T>)>;

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
