//! Background threads: the periodic flusher, the compactor and the eviction planner, and how
//! they are stopped.
//!
//! All three are optimisations, never correctness dependencies: an expired entry is never
//! returned without the compactor, `flush` works without the flusher, and an eviction without a
//! plan reads its segment itself. The first two sleep until their next deadline, the planner
//! until it is asked for a plan; each wakes when the store's [`Shutdown`] is fired, and dropping
//! [`Workers`] fires it and joins them.

use std::sync::Arc;
use std::thread::JoinHandle;

use super::Inner;
use crate::shutdown::Shutdown;

/// Latches the store if the flusher thread ends before the store is closed (a panic, or any
/// other way out of its loop): `Periodic` durability is then a promise nobody keeps, so writes
/// are refused, and the cause says why.
struct FlusherWatch<'a>(&'a Inner);

impl Drop for FlusherWatch<'_> {
    fn drop(&mut self) {
        if !self.0.shutdown.is_fired() {
            let _ = self.0.fail(crate::Error::io(
                "run the periodic fsync thread of",
                &self.0.dir.path,
                std::io::Error::other(
                    "it stopped, so writes could no longer be made durable at the configured interval",
                ),
            ));
        }
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
        // Threads already started must not outlive a store that failed to open: they hold its
        // state and its directory lock.
        if let Err(e) = workers.spawn_all(inner) {
            workers.stop(&inner.shutdown);
            return Err(e);
        }
        Ok(workers)
    }

    fn spawn_all(&mut self, inner: &Arc<Inner>) -> crate::Result<()> {
        let workers = self;
        if let super::Durability::Periodic(interval) = inner.durability {
            let inner2 = Arc::clone(inner);
            workers.spawn(
                "uno-cache-flush",
                move || {
                    let _watch = FlusherWatch(&inner2);
                    while !inner2.shutdown.sleep(interval) {
                        #[cfg(test)]
                        if inner2
                            .test_stop_flusher
                            .load(std::sync::atomic::Ordering::Relaxed)
                        {
                            return;
                        }
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
        // Woken by a request, or by the shutdown through the planner's lock (see `Shutdown`).
        let planner = Arc::clone(&inner.planner);
        inner.shutdown.on_fire(move || planner.wake());
        let inner2 = Arc::clone(inner);
        workers.spawn(
            "uno-cache-plan",
            move || {
                while let Some(segment) = inner2.planner.next(&inner2.shutdown) {
                    inner2.list_for_plan(segment);
                }
            },
            inner,
        )?;
        Ok(())
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
        shutdown.fire();
        for handle in self.handles.drain(..) {
            if handle.join().is_err() {
                tracing::error!("a background thread of the file store panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};

    use crate::{Durability, Error, FileStore, FileStoreOptions};

    #[test]
    fn a_flusher_that_stops_on_its_own_latches_the_store_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileStoreOptions::default().durability(Durability::Periodic(Duration::from_millis(5)));
        let store = FileStore::open(dir.path(), options).unwrap();
        store.set("k", b"v", None).unwrap();
        store.inner.test_stop_flusher.store(true, Ordering::Relaxed);
        // The thread notices within one interval; wait for the latch it leaves, bounded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let err = loop {
            match store.set("k", b"w", None) {
                Err(e) => break e,
                Ok(()) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Ok(()) => unreachable!("the store kept taking writes with its flusher gone"),
            }
        };
        assert!(matches!(err, Error::WritesDisabled { .. }), "{err:?}");
        assert!(err.to_string().contains("periodic fsync thread"), "{err}");
        // Reads go on.
        assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"w"[..]));
        assert!(store.close().is_err(), "close must report the latch");
    }
}
