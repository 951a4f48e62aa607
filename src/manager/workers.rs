//! The owner of a manager's background threads — the write-behind writer, the backfill thread,
//! the replay thread and the connector of an L2 that was down at start-up — and the one place
//! they stop, with the loader timer (`load_timer`, which its flights start on demand).
//!
//! [`CacheManager`](super::CacheManager) holds the [`Workers`] next to, not inside, the shared
//! state the threads work on (they reach it through a `Weak`). So the owner is dropped only with
//! the last manager handle, on the caller's thread, never by one of its own threads but the
//! loader timer's (a waker it calls may poll a task there that drops the last handle; its stop
//! then leaves that thread to end by itself rather than join it), and its drop is the whole
//! shutdown, in one order:
//! 1. work run apart from its caller (`super::apart`: a load that outlived its caller, an
//!    async flush or replay) begins no more, the one [`Shutdown`] signal every thread listens to
//!    is fired (a thread that sleeps on its queue registered how it is woken, see
//!    `crate::shutdown`), and the work apart in progress is waited for;
//! 2. every thread is joined (a send in progress finishes, and a replay its op in progress, each
//!    bounded by the L2 timeout; the ops not replayed wait in the durable queue), the loader
//!    timer's too;
//! 3. the writes still queued for write-behind are sent, once, on the caller's thread;
//! 4. the backplane's receiving and re-sending tasks on the I/O thread are stopped and waited
//!    for, so the shared state is released on the caller's thread, never on the I/O thread.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::policy::Shared;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// Owns the manager's background threads; see the module docs.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    shutdown: Shutdown,
    threads: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    /// The owner of the threads working on `shared`; `shutdown` is the signal their queues were
    /// made with, fired when this is dropped.
    pub(crate) fn new(shared: Arc<Shared>, shutdown: Shutdown) -> Workers {
        Workers {
            shared,
            shutdown,
            threads: Vec::new(),
        }
    }

    /// The signal every thread listens to.
    pub(crate) fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Starts `body` on a thread named `uno-cache-{name}`; its loop must end once
    /// [`shutdown`](Workers::shutdown) is fired.
    pub(crate) fn spawn(&mut self, name: &'static str, body: impl FnOnce() + Send + 'static) -> Result<()> {
        let thread = std::thread::Builder::new()
            .name(format!("uno-cache-{name}"))
            .spawn(body)
            .map_err(|e| Error::Backend {
                level: name,
                op: "start",
                reason: format!("cannot start the {name} thread: {e}"),
            })?;
        self.threads.push((name, thread));
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Work apart from a caller (see `apart`) begins no more; the stop signal reaches it
        // too (a replay stops at its next op); what is in progress ends before the threads are
        // joined and the queue is sent, so its writes are among those sent.
        self.shared.apart.close();
        self.shutdown.fire();
        self.shared.apart.wait();
        for (name, thread) in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!(thread = name, "a cache background thread panicked");
            }
        }
        // The loader timer, started on demand by async waiters (none is left: every call
        // holds a handle, and the work apart is over).
        self.shared.flights.stop_timer();
        // Queued L2 writes are sent before the levels go (each send bounded by the L2 timeout).
        self.shared.drain_behind();
        // Keys L2 deleted after late writes, reported since the work apart stopped starting:
        // published (before the backplane's last send, below) and dropped from L1.
        self.shared.drop_late_writes_left();
        // A replay queue a failed write latched holds its overflow flag, and the sets it made
        // deletes for the ops it refused, in memory only: one last try to write them, so that
        // the next run reads them rather than the log from before the failure.
        if let Some(queue) = &self.shared.replay {
            if let Err(e) = queue.recover() {
                tracing::warn!(error = %e, "the latched replay queue could not be written anew at shutdown; the next run reads the log from before its write failure");
            }
        }
        // Last, the backplane's tasks on the I/O thread (their messages were still applied
        // while the queue drained): once they have ended, nothing on that thread holds the
        // shared state, so it is released here, on the caller's thread.
        self.shared.stop_backplane();
    }
}
