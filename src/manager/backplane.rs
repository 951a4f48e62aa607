//! The manager's side of the invalidation backplane (feature `redis`; without it,
//! `backplane_off.rs` stands in and publishing does nothing): every set and delete publishes
//! one `Keys` invalidation after both levels, and another instance's invalidation drops keys
//! from L1 only. When the subscription is lost every L1 entry becomes suspect, as
//! `consistency.rs` describes (docs/design.md, section 5).

use std::sync::atomic::Ordering;
use std::sync::Weak;
use std::time::SystemTime;

use super::policy::Shared;
use crate::error::Result;
use crate::invalidation::{Invalidation, InvalidationHandler, InvalidationMessage, Outage};

impl Shared {
    /// Stops the backplane's receiving and re-sending tasks (at shutdown, by `Workers`).
    pub(crate) fn stop_backplane(&self) {
        if let Some(bp) = self.backplane.get() {
            bp.stop_tasks();
        }
    }

    /// Publishes that `keys` changed (one message), if there is a backplane.
    pub(crate) fn publish_keys(&self, keys: &[&str]) {
        if let Some(bp) = self.backplane.get() {
            let result = bp.publish(&Invalidation::Keys(
                keys.iter().map(|k| (*k).to_owned()).collect(),
            ));
            self.count_publish(result.map(drop));
        }
    }

    /// Async [`Shared::publish_keys`].
    pub(crate) async fn publish_keys_async(&self, keys: &[&str]) {
        if let Some(bp) = self.backplane.get() {
            let message = Invalidation::Keys(keys.iter().map(|k| (*k).to_owned()).collect());
            let result = bp.publish_async(&message).await;
            self.count_publish(result.map(drop));
        }
    }

    /// Publishes any invalidation, if there is a backplane.
    pub(crate) fn publish(&self, invalidation: &Invalidation) {
        if let Some(bp) = self.backplane.get() {
            self.count_publish(bp.publish(invalidation).map(drop));
        }
    }

    /// Async [`Shared::publish`].
    pub(crate) async fn publish_async(&self, invalidation: &Invalidation) {
        if let Some(bp) = self.backplane.get() {
            let result = bp.publish_async(invalidation).await;
            self.count_publish(result.map(drop));
        }
    }

    fn count_publish(&self, result: Result<()>) {
        let c = &self.metrics.consistency;
        match result {
            Ok(()) => c.published.incr(),
            Err(e) => {
                c.publish_failures.incr();
                tracing::debug!(error = %e, "publishing an invalidation failed; the backplane re-sends it");
            }
        }
    }

    /// Every L1 entry becomes suspect (or, without an L2 to check them against, is dropped).
    fn distrust_everything(&self) {
        // An L2 read begun before must not backfill a value that a write we missed replaced.
        let _all = self.guard.write_all();
        let result = if self.l2.is_some() {
            self.check_freshness.store(true, Ordering::Relaxed);
            self.l1.mark_all_suspect()
        } else {
            self.l1.clear()
        };
        if let Err(e) = result {
            self.metrics.local.errors.incr();
            tracing::warn!(error = %e, "marking L1 suspect failed");
        }
    }

    fn on_invalidation(&self, message: &InvalidationMessage) {
        self.metrics.consistency.invalidations_received.incr();
        match &message.invalidation {
            Invalidation::Keys(keys) => {
                let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
                self.drop_local(&refs);
            }
            Invalidation::Prefix(prefix) => {
                if let Err(e) = self.drop_local_prefix(prefix) {
                    tracing::warn!(error = %e, "dropping a prefix from L1 failed");
                }
            }
            // This manager publishes a tag's members as keys; a bare tag (from another
            // publisher) cannot be resolved without a network call, so L1 is re-checked instead.
            Invalidation::Tags(_) => self.distrust_everything(),
            Invalidation::All => {
                if let Err(e) = self.clear_local() {
                    tracing::warn!(error = %e, "clearing L1 on an invalidation failed");
                }
            }
        }
    }

    fn on_subscription_lost(&self) {
        self.metrics.consistency.subscription_losses.incr();
        if self.l2.is_some() {
            self.distrust_l1.store(true, Ordering::Relaxed);
        }
        self.distrust_everything();
    }

    fn on_subscription_restored(&self) {
        // Entries written during the outage may have missed a message too.
        self.distrust_everything();
        self.distrust_l1.store(false, Ordering::Relaxed);
    }
}

/// The manager's backplane handler: holds the manager weakly (the manager owns the backplane).
pub(crate) struct Receiver {
    pub(crate) shared: Weak<Shared>,
}

impl InvalidationHandler for Receiver {
    fn invalidate(&self, message: &InvalidationMessage) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_invalidation(message);
        }
    }

    fn subscription_lost(&self, _since: SystemTime) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_subscription_lost();
        }
    }

    fn subscription_restored(&self, _outage: &Outage) {
        if let Some(shared) = self.shared.upgrade() {
            shared.on_subscription_restored();
        }
    }
}
