//! Where a prefix invalidation deletes L2's keys under the prefix (see
//! `CacheManager::invalidate_prefix`): a Redis or Redis Cluster L2 is walked through a connection
//! of its own, on the L2's hosts and credentials; a Memcached L2 cannot list its keys.
//!
//! The walk used to go through the tag store, on the tag sets' Redis: with `[invalidation]
//! hosts` set that is the backplane's Redis, which holds no value of L2, and on a cluster it was
//! not made at all. Either way L2 kept the values until their TTL, the call returned `Ok`, and
//! the next `get` read the old value from L2 and filled L1 with it again.

use super::tags::TagStore;
use crate::error::{Error, Result};

/// How L2's keys under a prefix are deleted.
pub(crate) enum L2Keys {
    /// There is no L2, or it is one given to the builder that `[distributed]` does not
    /// describe: nothing here knows how to list its keys, and they stay (documented on
    /// `CacheManager::invalidate_prefix`).
    NoL2,
    /// A Redis or Redis Cluster L2, walked (`SCAN` + `UNLINK`, each primary of a cluster)
    /// through this store, on the L2's hosts and credentials.
    // Without the `redis` feature there is no Redis L2 (and `TagStore` has no values).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Walked(Box<TagStore>),
    /// An L2 that cannot list its keys (Memcached): they stay until their TTL, and the call
    /// says so (`Error::PrefixKeptInL2`).
    Unlisted {
        /// The level, as errors name it.
        level: &'static str,
    },
}

impl L2Keys {
    /// Whether L2 is walked, so keys may leave it during the call (and L1 must then be dropped
    /// again after it; see `PrefixBegun::drops_again`).
    pub(crate) fn walked(&self) -> bool {
        matches!(self, L2Keys::Walked(_))
    }

    /// The L2 that cannot list its keys, if it is one.
    pub(crate) fn unlisted(&self) -> Option<&'static str> {
        match self {
            L2Keys::Unlisted { level } => Some(level),
            _ => None,
        }
    }

    /// Deletes L2's keys `{l2_prefix}{prefix}*`; how many, less those in `in_l1` (counted by
    /// the caller). `Ok(0)` where there is nothing to walk.
    pub(crate) fn delete_prefix(&self, l2_prefix: &str, prefix: &str, in_l1: Vec<String>) -> Result<u64> {
        match self {
            L2Keys::Walked(store) => store.delete_prefix(l2_prefix, prefix, in_l1).map_err(as_l2),
            L2Keys::NoL2 | L2Keys::Unlisted { .. } => Ok(0),
        }
    }

    /// Async [`delete_prefix`](Self::delete_prefix).
    pub(crate) async fn delete_prefix_async(
        &self,
        l2_prefix: &str,
        prefix: &str,
        in_l1: Vec<String>,
    ) -> Result<u64> {
        match self {
            L2Keys::Walked(store) => store
                .delete_prefix_async(l2_prefix, prefix, in_l1)
                .await
                .map_err(as_l2),
            L2Keys::NoL2 | L2Keys::Unlisted { .. } => Ok(0),
        }
    }
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
