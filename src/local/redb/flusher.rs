//! The store's background thread (`uno-cache-redb`): with `Periodic(d)` durability it makes the
//! commits still held only in process memory durable every `d`, as
//! [`flush`](crate::Storage::flush) does; in every mode it removes the expired entries every
//! [`RedbOptions::purge_every`](super::RedbOptions::purge_every).
//!
//! Without the durable commits a write is made durable only by a later write that finds the
//! last durable commit older than `d`, so the tail of a burst stays in memory until the next
//! flush or close, however long that takes, and a killed process loses it. With them the loss
//! window is `d` (plus the commit's own time) whether or not writes continue.
//!
//! Without the purge, reads skip expired entries but nothing removes them, so they hold their
//! share of the size bound, and the oldest-first eviction drops live entries while expired ones
//! written later stay. The purge reads in a read transaction, which writers do not wait for,
//! and removes in rounds of bounded transactions.
//!
//! The thread holds the store's state weakly: a store its user dropped is not kept alive by its
//! own thread. The store owns the thread; dropping the [`Flusher`] fires its [`Shutdown`] and
//! joins it, so no commit runs after the store is gone.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::inner::Inner;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// The running background thread of one store.
#[derive(Debug)]
pub(super) struct Flusher {
    shutdown: Shutdown,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread: a durable commit every `flush_every` (`Periodic`), a purge every
    /// `purge_every` (`None`: never). `None` for both starts nothing.
    pub(super) fn start(
        inner: &Arc<Inner>,
        flush_every: Option<Duration>,
        purge_every: Option<Duration>,
    ) -> Result<Option<Flusher>> {
        if flush_every.is_none() && purge_every.is_none() {
            return Ok(None);
        }
        let shutdown = Shutdown::default();
        let stop = shutdown.clone();
        let state: Weak<Inner> = Arc::downgrade(inner);
        let handle = std::thread::Builder::new()
            .name("uno-cache-redb".into())
            .spawn(move || {
                let start = Instant::now();
                let mut next_flush = flush_every.map(|d| start + d);
                let mut next_purge = purge_every.map(|d| start + d);
                loop {
                    let wake = match (next_flush, next_purge) {
                        (Some(f), Some(p)) => f.min(p),
                        (Some(at), None) | (None, Some(at)) => at,
                        (None, None) => return,
                    };
                    if stop.sleep(wake.saturating_duration_since(Instant::now())) {
                        return;
                    }
                    let Some(inner) = state.upgrade() else {
                        return;
                    };
                    let now = Instant::now();
                    if let (Some(at), Some(every)) = (next_flush, flush_every) {
                        if at <= now {
                            if let Err(e) = inner.make_durable() {
                                // The next turn tries again (after a full disk, with a reopened database).
                                tracing::warn!(error = %e, path = %inner.path.display(), "periodic durable commit of the redb store failed");
                            }
                            next_flush = Some(Instant::now() + every);
                        }
                    }
                    if let (Some(at), Some(every)) = (next_purge, purge_every) {
                        if at <= now {
                            purge(&inner, &stop);
                            next_purge = Some(Instant::now() + every);
                        }
                    }
                }
            })
            .map_err(|e| Error::io("spawn the background thread of", &inner.path, e))?;
        Ok(Some(Flusher {
            shutdown,
            handle: Some(handle),
        }))
    }
}

/// Removes the expired entries, a round at a time, until none are left or the store closes.
fn purge(inner: &Inner, stop: &Shutdown) {
    match inner.purge_until(|| stop.is_fired()) {
        Ok(removed) => {
            tracing::debug!(removed, path = %inner.path.display(), "purged expired entries of the redb store");
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %inner.path.display(), "purging the expired entries of the redb store failed; the next turn tries again");
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shutdown.fire();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("the background thread of the redb store panicked");
            }
        }
    }
}
