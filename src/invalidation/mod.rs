//! The cross-process invalidation backplane on Redis pub/sub (the [`Backplane`] needs the
//! `redis` feature; the message format and the handler trait are always there).
//!
//! Every instance of the cache (a process, or a manager inside one) keeps a local L1 and shares
//! an L2. When one instance sets or deletes a key, every other instance must drop that key from
//! its L1. The [`Backplane`] carries those [`Invalidation`]s over one Redis pub/sub channel
//! (`uno-cache:invalidate` by default):
//!
//! - [`Backplane::publish`] sends one message (`PUBLISH channel bytes`), stamped with this
//!   instance's [`InstanceId`] and the next number of its sequence, within a deadline, and says
//!   whether Redis took it. A message that could not be sent (or whose
//!   [`publish_async`](Backplane::publish_async) future was dropped before Redis answered) is
//!   kept (bounded) and re-sent by the backplane once Redis answers again; if too many pile up
//!   they are replaced by one [`Invalidation::All`].
//! - A subscriber task hands every other instance's message to an [`InvalidationHandler`]. It
//!   ignores messages from its own instance and counts (never panics on) bytes that are not a
//!   message.
//! - **Losing the stream means losing certainty.** The subscriber sees a dropped connection at
//!   once (the connection ends) and a silently dead one by a `PING` on the subscribed connection
//!   that must be answered within a deadline. Either way it calls
//!   [`InvalidationHandler::subscription_lost`] before the [staleness
//!   bound](BackplaneOptions::staleness_bound) has passed, reconnects with its own bounded backoff
//!   (never the client library's), subscribes again and calls
//!   [`InvalidationHandler::subscription_restored`]. Entries the L1 held before the restore may
//!   have missed an invalidation: the manager revalidates or drops them.
//! - Receivers touch L1 only: a handler must never re-apply a peer's message to L2 (that would
//!   multiply L2 writes by the number of instances).
//!
//! The L2 itself can be anything (Memcached included): the backplane is its own Redis connection
//! and can point at a separate Redis.
//!
//! # Redis Cluster
//! A classic `PUBLISH` on any node of a Redis Cluster is forwarded to every node, so the
//! subscriber listens on one node and the publisher sends to one node. Each keeps a position in
//! the host list: when its node fails it moves to the next one.
//!
//! # Threads
//! Publishing, re-sending and the subscriber run as tasks on one I/O thread with a
//! current-thread tokio runtime (`uno-cache-backplane`, or, inside a manager, the thread its
//! Redis L2 and tags share). The handler is called on a thread of its own,
//! `uno-cache-invalidate`, in the order messages and losses arrived: a handler that does
//! disk work (a manager's L1 deletes) then holds neither L2 calls, publishes nor the
//! subscriber's health checks. Nothing is applied later than the staleness bound: what arrives
//! while the handler is behind by the bound, and what waited for it that long, is dropped, and
//! the handler told of a loss (and a restore, if the subscription is up) instead
//! (`BackplaneStats::handler_lags`). Dropping the [`Backplane`], or [`Backplane::shutdown`],
//! stops the tasks and waits for the handler to have handled (or dropped) what it was handed.
//!
//! # Wire format
//! A 36-byte header (magic `UNOI`, version, kind, origin, sequence, string count), the strings
//! with a length in front, and a CRC-32: see `storage-format.md` ("Invalidation backplane messages") and [`message`].
//!
//! ```no_run
//! # #[cfg(feature = "redis")] {
//! use std::sync::Arc;
//! use std::time::SystemTime;
//! use uno_cache::invalidation::{Backplane, BackplaneOptions, Invalidation, InvalidationHandler, InvalidationMessage};
//!
//! struct DropFromL1;
//! impl InvalidationHandler for DropFromL1 {
//!     fn invalidate(&self, msg: &InvalidationMessage) { /* drop the keys from L1 */ }
//!     fn subscription_lost(&self, since: SystemTime) { /* stop trusting L1 */ }
//! }
//!
//! let backplane = Backplane::connect(BackplaneOptions::url("127.0.0.1:6379"), Arc::new(DropFromL1))?;
//! backplane.publish(&Invalidation::Keys(vec!["user:42".to_owned()]))?;
//! # }
//! # Ok::<(), uno_cache::Error>(())
//! ```

#[cfg(feature = "redis")]
mod backplane;
pub mod message;

use std::time::{Duration, SystemTime};

#[cfg(feature = "redis")]
pub(crate) use self::backplane::RefusalHook;
#[cfg(feature = "redis")]
pub use self::backplane::{Backplane, BackplaneOptions, BackplaneStats, Published};
pub use self::message::{InstanceId, Invalidation, InvalidationMessage, MessageError, KEYS_MESSAGE_BUDGET};

/// The default channel.
pub const DEFAULT_CHANNEL: &str = "uno-cache:invalidate";
/// The default publish deadline.
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_millis(100);
/// The default staleness bound.
pub const DEFAULT_STALENESS_BOUND: Duration = Duration::from_secs(1);
/// The smallest staleness bound accepted.
pub const MIN_STALENESS_BOUND: Duration = Duration::from_millis(30);
/// The default number of keys kept for re-sending after failed publishes.
pub const DEFAULT_REPUBLISH_LIMIT: usize = 10_000;

/// Receives what the backplane hears. Called on the backplane's own handler thread
/// (`uno-cache-invalidate`), one call at a time, in the order the messages arrived.
///
/// The subscriber never waits for the handler, so a slow handler does not make a healthy
/// subscription look lost. But an invalidation is applied within the staleness bound or not at
/// all: while the handler is behind by the bound, or once a message has waited for it that
/// long, messages are dropped, and before the handler's next call (or before the backplane
/// stops) it is told of a loss (`since`: when the first dropped one was handed over) and, if
/// the subscription is up, of a restore, so that it distrusts what it did not apply
/// ([`BackplaneStats::handler_lags`]). A panic in a handler is caught, counted
/// ([`BackplaneStats::handler_panics`]) and does not stop the thread. A handler that owns the
/// [`Backplane`] (directly or through the manager) should hold it through a `Weak`, or the two
/// keep each other alive.
pub trait InvalidationHandler: Send + Sync {
    /// Another instance invalidated something: drop it from L1 (never touch L2 here).
    fn invalidate(&self, message: &InvalidationMessage);

    /// The subscription dropped (or stopped answering). Messages published after `since` (the
    /// last moment the subscription was known to work) may be lost: from now on, until
    /// [`subscription_restored`](Self::subscription_restored), L1 entries are not kept up to
    /// date. Called within the staleness bound of the drop.
    fn subscription_lost(&self, since: SystemTime);

    /// The subscription works again. Entries the L1 held (or wrote) before
    /// [`Outage::restored_at`] may have missed an invalidation: revalidate or drop them.
    fn subscription_restored(&self, outage: &Outage) {
        let _ = outage;
    }
}

/// One period without a working subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Outage {
    /// The last moment the subscription was known to work (what `subscription_lost` got).
    pub since: SystemTime,
    /// When the loss was noticed (`subscription_lost` was called).
    pub detected_at: SystemTime,
    /// When the new subscription was confirmed; every message published after this arrives.
    pub restored_at: SystemTime,
}
