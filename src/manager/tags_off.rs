//! Tags without the `redis` feature: tag sets live in a Redis, so a build without one never has
//! a tag store, and every tag call reports the missing feature. [`TagStore`] has no values: the
//! manager's tag paths compile unchanged and cannot be reached. The `redis` build has `tags.rs`
//! here.

use std::time::Duration;

use super::requeue::Landing;
use crate::error::Result;

/// No tag store can exist without the `redis` feature.
pub(crate) enum TagStore {}

/// A tag's members as one read saw them; never read here.
pub(crate) struct Members {
    /// The cache keys.
    pub(crate) keys: Vec<String>,
}

impl TagStore {
    /// Unreachable: there is no tag store.
    pub(crate) fn add(&self, _keys: &[&str], _tags: &[&str], _ttl: Duration) -> Result<()> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) fn add_later<F>(&self, _keys: &[&str], _tags: &[&str], _ttl: Duration, _landing: Landing<F>) {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) async fn add_async(&self, _keys: &[&str], _tags: &[&str], _ttl: Duration) -> Result<()> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) fn members(&self, _tag: &str) -> Result<Members> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) async fn members_async(&self, _tag: &str) -> Result<Members> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) fn forget(&self, _tag: &str, _members: &Members) -> Result<()> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) async fn forget_async(&self, _tag: &str, _members: &Members) -> Result<()> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) fn delete_prefix(&self, _l2_prefix: &str, _prefix: &str, _in_l1: Vec<String>) -> Result<u64> {
        match *self {}
    }

    /// Unreachable: there is no tag store.
    pub(crate) async fn delete_prefix_async(
        &self,
        _l2_prefix: &str,
        _prefix: &str,
        _in_l1: Vec<String>,
    ) -> Result<u64> {
        match *self {}
    }
}
