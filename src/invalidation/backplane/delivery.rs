//! The handler's own thread (`uno-cache-invalidate`): what the subscriber receives is
//! handed over in the order it came, and the handler is called there.
//!
//! The subscriber runs on an I/O thread it shares with the publisher and, inside a manager, with
//! the L2 and the tag store. A manager's handler does disk work: one message of 2,000 keys is
//! 2,000 tombstones, each fsynced under `durability = "every_write"`, and a prefix lists every
//! key of the store. Called there, it held every L2 call and publish of the process, and the
//! subscriber's own `PING`s, whose answers are due within a third of the staleness bound: a
//! healthy subscription was declared lost, and the whole L1 made suspect.
//!
//! At most [`QUEUE`] events wait; past that the subscriber waits for room, as it waited for the
//! handler before.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;

use super::{InvalidationHandler, InvalidationMessage, Outage, Shared};
use crate::error::{Error, Result};

/// Events waiting for the handler at most.
const QUEUE: usize = 4096;

/// What the subscriber hands over, in its order.
enum Event {
    Invalidate(InvalidationMessage),
    Lost(SystemTime),
    Restored(Outage),
}

/// The handler the subscriber calls: hands each call to the thread.
struct Forwarder {
    tx: SyncSender<Event>,
}

impl InvalidationHandler for Forwarder {
    fn invalidate(&self, message: &InvalidationMessage) {
        // Fails only once the thread is gone (the backplane is being dropped).
        let _ = self.tx.send(Event::Invalidate(message.clone()));
    }

    fn subscription_lost(&self, since: SystemTime) {
        let _ = self.tx.send(Event::Lost(since));
    }

    fn subscription_restored(&self, outage: &Outage) {
        let _ = self.tx.send(Event::Restored(*outage));
    }
}

/// The running thread. Dropped after the subscriber has stopped (which drops the sending end),
/// it waits for the events already handed over to be handled.
pub(super) struct Delivery {
    thread: Option<JoinHandle<()>>,
}

impl Delivery {
    /// Starts the thread calling `handler`; returns it and the handler the subscriber is to call.
    pub(super) fn start(
        handler: Arc<dyn InvalidationHandler>,
        shared: Arc<Shared>,
    ) -> Result<(Delivery, Arc<dyn InvalidationHandler>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("uno-cache-invalidate".into())
            .spawn(move || deliver(&rx, &*handler, &shared))
            .map_err(|e| Error::Backend {
                level: super::LEVEL,
                op: "connect",
                reason: format!("could not start the thread of the invalidation handler: {e}"),
            })?;
        Ok((Delivery { thread: Some(thread) }, Arc::new(Forwarder { tx })))
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        // The handler may hold the last handle on what owns the backplane (a manager it
        // upgraded a weak reference to), so this can run on the thread itself: it ends on its
        // own once the events are handled.
        if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
            tracing::error!("the thread of the backplane's invalidation handler panicked");
        }
    }
}

/// Calls the handler for each event until the subscriber is gone, catching (and counting) a
/// panic so that the next event is still handled.
fn deliver(rx: &Receiver<Event>, handler: &dyn InvalidationHandler, shared: &Shared) {
    for event in rx {
        let (what, called) = match &event {
            Event::Invalidate(message) => (
                "invalidate",
                catch_unwind(AssertUnwindSafe(|| handler.invalidate(message))),
            ),
            Event::Lost(since) => (
                "subscription_lost",
                catch_unwind(AssertUnwindSafe(|| handler.subscription_lost(*since))),
            ),
            Event::Restored(outage) => (
                "subscription_restored",
                catch_unwind(AssertUnwindSafe(|| handler.subscription_restored(outage))),
            ),
        };
        if called.is_err() {
            Shared::bump(&shared.handler_panics);
            tracing::error!(
                call = what,
                "the backplane's invalidation handler panicked; continuing"
            );
        }
    }
}
