//! The error of a batch call that served some of its keys ([`Error::PartialBatch`]): which
//! keys failed, which of them were refused, and what the reached nodes answered.

use super::Error;

/// What a batch call did when some of its keys were not served; see [`Error::PartialBatch`].
///
/// A failed key was either refused (`refused`: a server answered that it will never take the
/// item, so sending it again cannot help) or not reached (the rest of `failed`, see
/// [`unreached`](PartialBatch::unreached): its node was down, so it may be sent again once the
/// node is back). One batch can hold both.
///
/// A level of the caller's own builds one with [`PartialBatch::new`]: the struct is
/// `#[non_exhaustive]`, so that a field added later (as `refused` was) breaks no level.
#[derive(thiserror::Error)]
#[error("{level} {op}: {} of {total} keys were not served ({}{cause}); the others were", failed.len(), refused_text(refused.len(), failed.len()))]
#[non_exhaustive]
pub struct PartialBatch {
    /// The level ("redis", "memcached", "file", ...; "L1" for a manager's batch read whose only
    /// failures were L1's reads of some keys).
    pub level: &'static str,
    /// The batch call ("get_many", "set_each", ...; "get" for those L1 reads).
    pub op: &'static str,
    /// Keys (or items) in the batch.
    pub total: usize,
    /// Indices into the batch of the keys that were not served, ascending: the refused ones
    /// and the unreached ones together.
    pub failed: Vec<usize>,
    /// Indices into the batch, ascending, of the items in `failed` that a server refused as bad
    /// input (a value over a Memcached server's item size limit, its `-I`): no level keeps them,
    /// and sending them again would be refused again. Only writes refuse items; the other
    /// indices of `failed` are [`unreached`](PartialBatch::unreached).
    pub refused: Vec<usize>,
    /// The first failure: a node's ([`Error::NodeUnavailable`]) if a node was not reached, else
    /// the first key's ([`Error::InvalidEnvelope`] for a value that could not be read). In a
    /// write, an item a Memcached server refused as too large ([`Error::ValueTooLarge`]) comes
    /// first whatever else failed, so that the batch reads as bad input
    /// ([`Error::is_bad_input`]) and is never hidden as an outage; `refused` then says which
    /// items that covers.
    pub cause: Error,
    /// What the reached nodes answered.
    pub served: Served,
}

impl PartialBatch {
    /// A batch call `op` of `level` over `total` keys or items, of which those at the indices
    /// `failed` were not served, those at `refused` (a subset of `failed`) refused as bad input;
    /// `cause` is the first failure and `served` what the reached nodes answered (see the
    /// fields). The indices may come in any order, and more than once: they are sorted and
    /// deduplicated, as the fields promise.
    #[must_use]
    pub fn new(
        level: &'static str,
        op: &'static str,
        total: usize,
        mut failed: Vec<usize>,
        mut refused: Vec<usize>,
        cause: Error,
        served: Served,
    ) -> PartialBatch {
        for indices in [&mut failed, &mut refused] {
            indices.sort_unstable();
            indices.dedup();
        }
        PartialBatch {
            level,
            op,
            total,
            failed,
            refused,
            cause,
            served,
        }
    }

    /// Indices into the batch, ascending, of the failed keys that were not refused: their node
    /// was not reached (or, in a `get_many`, their value could not be read). A write or delete
    /// of these may succeed when sent again once the node is back; the manager queues them for
    /// replay when it has a replay queue and the queue takes them (one that fails is logged and
    /// counted in `stats().consistency.queue_failures`).
    #[must_use]
    pub fn unreached(&self) -> Vec<usize> {
        self.failed
            .iter()
            .copied()
            .filter(|i| self.refused.binary_search(i).is_err())
            .collect()
    }
}

/// `R refused as bad input, U not reached; ` for a [`PartialBatch`] that refused items, so the
/// message does not read as all refused; nothing for one that did not (every failed key was
/// then unreached or unreadable, as the cause says).
fn refused_text(refused: usize, failed: usize) -> String {
    if refused == 0 {
        String::new()
    } else {
        format!(
            "{refused} refused as bad input, {} not reached; ",
            failed.saturating_sub(refused)
        )
    }
}

impl std::fmt::Debug for PartialBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialBatch")
            .field("level", &self.level)
            .field("op", &self.op)
            .field("total", &self.total)
            .field("failed", &self.failed)
            .field("refused", &self.refused)
            .field("cause", &self.cause)
            .field("served", &self.served)
            .finish()
    }
}

/// The answers of the nodes a [`PartialBatch`] reached. Its `Debug` form shows counts, never
/// values, so the error stays safe to log.
#[non_exhaustive]
pub enum Served {
    /// A `get_many`: one slot per key of the batch, `None` for a miss and for every failed key.
    Entries(Vec<Option<crate::entry::Entry>>),
    /// A `delete_many`: how many of the reached keys existed (of a level that deletes key by
    /// key, how many it removed before it failed).
    Removed(u64),
    /// A write: the reached items were written.
    Written,
    /// A manager's batch read (`CacheManager::multi_get_raw`, `multi_get` and their async
    /// forms) with `fallback_on_error = false`: the values it found, by key, as stored (encoded
    /// by the manager's codec), from L1 and from the L2 nodes it reached; `failed` names the
    /// keys it could not read. `multi_get` leaves out the keys its memory tier answered.
    Found(std::collections::HashMap<String, Vec<u8>>),
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Entries(entries) => {
                let found = entries.iter().filter(|e| e.is_some()).count();
                write!(f, "Entries({found} of {} found)", entries.len())
            }
            Served::Removed(n) => write!(f, "Removed({n})"),
            Served::Written => f.write_str("Written"),
            Served::Found(found) => write!(f, "Found({} keys)", found.len()),
        }
    }
}
