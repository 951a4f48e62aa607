//! Where a prefix invalidation deletes L2's keys under the prefix (see
//! `CacheManager::invalidate_prefix`): a Redis or Redis Cluster L2 that `[distributed]`
//! describes is walked through a connection of its own, on the L2's hosts and credentials;
//! any other L2 given to the builder is asked to delete them itself
//! (`DistributedStorage::delete_prefix`), and one that cannot list its keys says so, as a
//! Memcached L2 built from `[distributed]` does without being asked.
//!
//! The walk used to go through the tag store, on the tag sets' Redis: with `[invalidation]
//! hosts` set that is the backplane's Redis, which holds no value of L2, and on a cluster it was
//! not made at all. Either way L2 kept the values until their TTL, the call returned `Ok`, and
//! the next `get` read the old value from L2 and filled L1 with it again. An L2 given to the
//! builder kept them the same way, and the call returned `Ok`, until it was asked.
//!
//! The built-in levels do not implement `delete_prefix`: the walk needs what only the manager
//! knows (the tag sets' namespace, left in place; the L2 key prefix, to compare the keys
//! deleted with L1's and count each key once), so it stays here, in one place, and a Redis
//! level given to the builder that `[distributed]` does not describe reports its keys kept.

use super::tags::TagStore;
use crate::error::{Error, Result};
use crate::storage::DistributedStorage;

/// How L2's keys under a prefix are deleted.
pub(crate) enum L2Keys {
    /// There is no L2.
    NoL2,
    /// A Redis or Redis Cluster L2 that `[distributed]` describes, walked (`SCAN` + `UNLINK`,
    /// each primary of a cluster) through this store, on the L2's hosts and credentials.
    // Without the `redis` feature there is no Redis L2 (and `TagStore` has no values).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Walked(Box<TagStore>),
    /// An L2 given to the builder that `[distributed]` does not describe as a Redis, asked to
    /// delete the keys itself (`DistributedStorage::delete_prefix`), which may say it cannot.
    Asked {
        /// The level, as `Error::PrefixKeptInL2` names it: `memcached` where `[distributed]`
        /// says so, else `L2` (the name a level given to the builder has in errors).
        level: &'static str,
    },
    /// A Memcached L2 the manager built from `[distributed]`: it cannot list its keys, so it is
    /// not asked. Asked, its answer went through its breaker and its background connection,
    /// and while those refused the call (Memcached down, not reached since start-up) it failed
    /// with `CircuitOpen` or `NotConnected`, which say to retry once L2 answers, where no retry
    /// can delete the keys.
    Unlisted {
        /// The level, as errors name it (`memcached`).
        level: &'static str,
    },
}

/// What L2's part of a prefix invalidation deleted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InL2 {
    /// The keys the walk deleted that L1 had not counted (it compares their names).
    Uncounted(u64),
    /// The keys the level deleted, which may include keys L1 counted too: the call counts the
    /// larger of the two counts (as `multi_delete` does), short of the truth, never over it.
    Deleted(u64),
    /// None: the level cannot list its keys, and keeps them until their TTL.
    Kept {
        /// The level, as errors name it.
        level: &'static str,
    },
}

impl InL2 {
    /// The call's count of keys dropped, each once, given the `l1` keys L1 dropped.
    pub(crate) fn with_l1(self, l1: u64) -> u64 {
        match self {
            InL2::Uncounted(n) => l1.saturating_add(n),
            InL2::Deleted(n) => l1.max(n),
            InL2::Kept { .. } => l1,
        }
    }
}

impl L2Keys {
    /// Whether L2 may delete keys during the call (and L1 must then be dropped again after it;
    /// see `PrefixBegun::drops_again`).
    pub(crate) fn deletes(&self) -> bool {
        matches!(self, L2Keys::Walked(_) | L2Keys::Asked { .. })
    }

    /// Deletes L2's keys `{prefix}*` (`{l2_prefix}{prefix}*` in a walked Redis): `in_l1` are
    /// the keys L1 dropped, which the walk does not count again.
    pub(crate) fn delete_prefix(
        &self,
        l2: Option<&dyn DistributedStorage>,
        l2_prefix: &str,
        prefix: &str,
        in_l1: Vec<String>,
    ) -> Result<InL2> {
        match (self, l2) {
            (L2Keys::Walked(store), _) => store
                .delete_prefix(l2_prefix, prefix, in_l1)
                .map(InL2::Uncounted)
                .map_err(as_l2),
            (L2Keys::Asked { level }, Some(l2)) => Ok(asked(level, l2.delete_prefix(prefix)?)),
            (L2Keys::Unlisted { level }, _) => Ok(InL2::Kept { level }),
            (L2Keys::NoL2, _) | (L2Keys::Asked { .. }, None) => Ok(InL2::Uncounted(0)),
        }
    }

    /// Async [`delete_prefix`](Self::delete_prefix).
    pub(crate) async fn delete_prefix_async(
        &self,
        l2: Option<&dyn DistributedStorage>,
        l2_prefix: &str,
        prefix: &str,
        in_l1: Vec<String>,
    ) -> Result<InL2> {
        match (self, l2) {
            (L2Keys::Walked(store), _) => store
                .delete_prefix_async(l2_prefix, prefix, in_l1)
                .await
                .map(InL2::Uncounted)
                .map_err(as_l2),
            (L2Keys::Asked { level }, Some(l2)) => Ok(asked(level, l2.delete_prefix_async(prefix).await?)),
            (L2Keys::Unlisted { level }, _) => Ok(InL2::Kept { level }),
            (L2Keys::NoL2, _) | (L2Keys::Asked { .. }, None) => Ok(InL2::Uncounted(0)),
        }
    }
}

/// A level's answer to `delete_prefix`: its count, or, if it cannot list its keys, that it
/// keeps them.
fn asked(level: &'static str, deleted: Option<u64>) -> InL2 {
    deleted.map_or(InL2::Kept { level }, InL2::Deleted)
}

/// An error of the walk in L2's terms: the store is a tag store's kind, whose errors name the
/// `tags` level, and an operator who read that looked at the backplane's Redis, not at L2.
fn as_l2(err: Error) -> Error {
    const L2: &str = "redis";
    match err {
        Error::Backend {
            level: "tags",
            op,
            reason,
        } => Error::Backend {
            level: L2,
            op,
            reason,
        },
        Error::Timeout {
            level: "tags",
            op,
            server,
            after,
        } => Error::Timeout {
            level: L2,
            op,
            server,
            after,
        },
        Error::Misconfigured {
            level: "tags",
            hosts,
            reason,
            call_only,
        } => Error::Misconfigured {
            level: L2,
            hosts,
            reason,
            call_only,
        },
        other => other,
    }
}
