//! Background threads: the periodic flusher and the compactor, and how they are stopped.
//!
//! Both are optimisations, never correctness dependencies: an expired entry is never returned
//! without the compactor, and `flush` works without the flusher. Each sleeps until its next
//! deadline or until it is told to stop; dropping [`Workers`] stops and joins them.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Inner;

/// A stop signal that sleeping threads wait on.
#[derive(Debug, Default)]
pub(crate) struct Shutdown {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl Shutdown {
    pub(crate) fn stop(&self) {
        *self.stopped.lock() = true;
        self.cv.notify_all();
    }

    pub(crate) fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    /// Sleeps for `timeout` or until stopped; returns `true` if stopped.
    fn sleep(&self, timeout: Duration) -> bool {
        let mut stopped = self.stopped.lock();
        if !*stopped {
            let _ = self.cv.wait_for(&mut stopped, timeout);
        }
        *stopped
    }
}

/// The running background threads of one store.
#[derive(Debug, Default)]
pub(crate) struct Workers {
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    pub(crate) fn start(inner: &Arc<Inner>) -> crate::Result<Workers> {
        let mut workers = Workers::default();
        if let super::Durability::Periodic(interval) = inner.durability {
            let inner2 = Arc::clone(inner);
            workers.spawn(
                "uno-cache-flush",
                move || {
                    while !inner2.shutdown.sleep(interval) {
                        if let Err(e) = inner2.flush_if_dirty() {
                            tracing::error!(error = %e, "periodic flush failed; writes are now refused");
                        }
                    }
                },
                inner,
            )?;
        }
        let inner2 = Arc::clone(inner);
        let interval = inner.compaction_interval;
        workers.spawn(
            "uno-cache-compact",
            move || {
                while !inner2.shutdown.sleep(interval) {
                    // Sealed segments get their fsync and hint here too when no flusher runs
                    // (durability None).
                    if let Err(e) = inner2.sync_sealed_pending() {
                        tracing::error!(error = %e, "fsync of a sealed segment failed; writes are now refused");
                    }
                    if let Err(e) = inner2.compact(&inner2.shutdown) {
                        tracing::warn!(error = %e, "background compaction failed");
                    }
                }
            },
            inner,
        )?;
        Ok(workers)
    }

    fn spawn(&mut self, name: &str, f: impl FnOnce() + Send + 'static, inner: &Inner) -> crate::Result<()> {
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(f)
            .map_err(|e| crate::Error::io("spawn background thread", &inner.dir.path, e))?;
        self.handles.push(handle);
        Ok(())
    }

    /// Signals the threads and waits for them to finish their current step.
    pub(crate) fn stop(&mut self, shutdown: &Shutdown) {
        shutdown.stop();
        for handle in self.handles.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a background thread of the file store panicked");
            }
        }
    }
}
