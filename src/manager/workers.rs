//! The owner of a manager's background threads — the write-behind writer, the backfill thread,
//! the replay thread and the connector of an L2 that was down at start-up — and the one place
//! they stop.
//!
//! [`CacheManager`](super::CacheManager) holds the [`Workers`] next to, not inside, the shared
//! state the threads work on (they reach it through a `Weak`). So the owner is dropped only with
//! the last manager handle, on the caller's thread, never by one of its own threads, and its
//! drop is the whole shutdown, in one order:
//! 1. every thread is told to stop (each registered how it is woken);
//! 2. every thread is joined (a send or replay in progress finishes, bounded by the L2 timeout);
//! 3. the writes still queued for write-behind are sent, once, on the caller's thread;
//! 4. the backplane's receiving and re-sending tasks on the I/O thread are stopped and waited
//!    for, so the shared state is released on the caller's thread, never on the I/O thread.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::policy::Shared;
use crate::error::{Error, Result};

/// A thread of the manager and what makes its loop end.
struct Worker {
    name: &'static str,
    stop: Box<dyn Fn() + Send + Sync>,
    thread: JoinHandle<()>,
}

/// Owns the manager's background threads; see the module docs.
pub(crate) struct Workers {
    shared: Arc<Shared>,
    workers: Vec<Worker>,
}

impl Workers {
    pub(crate) fn new(shared: Arc<Shared>) -> Workers {
        Workers {
            shared,
            workers: Vec::new(),
        }
    }

    /// Starts `body` on a thread named `uno-cache-{name}`; `stop` must make its loop end (it is
    /// called once, at shutdown, before the thread is joined).
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        body: impl FnOnce() + Send + 'static,
        stop: impl Fn() + Send + Sync + 'static,
    ) -> Result<()> {
        let thread = std::thread::Builder::new()
            .name(format!("uno-cache-{name}"))
            .spawn(body)
            .map_err(|e| Error::Backend {
                level: name,
                op: "start",
                reason: format!("cannot start the {name} thread: {e}"),
            })?;
        self.workers.push(Worker {
            name,
            stop: Box::new(stop),
            thread,
        });
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in &self.workers {
            (worker.stop)();
        }
        for worker in self.workers.drain(..) {
            if worker.thread.join().is_err() {
                tracing::error!(thread = worker.name, "a cache background thread panicked");
            }
        }
        // Queued L2 writes are sent before the levels go (each send bounded by the L2 timeout).
        self.shared.drain_behind();
        // Last, the backplane's tasks on the I/O thread (their messages were still applied
        // while the queue drained): once they have ended, nothing on that thread holds the
        // shared state, so it is released here, on the caller's thread.
        self.shared.stop_backplane();
    }
}
