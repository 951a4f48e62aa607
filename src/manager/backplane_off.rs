//! Without the `redis` feature there is no backplane: a manager has no other instances to tell,
//! so publishing an invalidation does nothing (a configuration that enables `[invalidation]` is
//! refused when it is validated). The `redis` build has `backplane.rs` here.

use super::policy::Shared;
use crate::invalidation::Invalidation;

impl Shared {
    /// No backplane tasks to stop.
    pub(crate) fn stop_backplane(&self) {}

    /// Nothing to publish to without a backplane.
    pub(crate) fn publish_keys(&self, _keys: &[&str]) {}

    /// No subscription to lose without a backplane.
    #[allow(clippy::unused_self)]
    pub(crate) fn subscription_up(&self) -> bool {
        true
    }

    /// Nothing to announce without a backplane.
    pub(crate) fn announce<'a>(&'a self, _keys: &'a [&'a str]) -> Announcement {
        Announcement
    }

    /// Nothing to announce without a backplane.
    pub(crate) fn announce_one(&self, _invalidation: &Invalidation) -> Announcement {
        Announcement
    }

    /// Nothing to publish to without a backplane.
    pub(crate) fn publish(&self, _invalidation: &Invalidation) {}

    /// No other instance to tell of a late write without a backplane.
    pub(crate) fn publish_late_write(&self, _key: &str) {}
}

/// Stands in for the `redis` build's announcement: nothing to publish.
pub(crate) struct Announcement;

impl Announcement {
    /// Nothing to publish to without a backplane.
    pub(crate) fn dismiss(self) {}

    /// Nothing to publish to without a backplane.
    pub(crate) async fn publish(self) {}
}
