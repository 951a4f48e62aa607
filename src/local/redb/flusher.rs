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
//! written later stay. The purge reads in read transactions, which writers do not wait for, in
//! rounds of a bounded number of entries, each removal its own transaction. The two share this
//! thread, and a scan of a large store takes far longer than a typical `d`: when a durable
//! commit falls due, the purge stops between rounds, the commit is made, and the purge resumes
//! after the last key it read. So the loss window stays `d`, plus at most one round.
//!
//! The thread holds the store's state weakly: a store its user dropped is not kept alive by its
//! own thread. The store owns the thread; dropping the [`Flusher`] fires its [`Shutdown`] and
//! joins it, so no commit runs after the store is gone.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::inner::Inner;
use crate::clock::instant_after;
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
                let mut next_flush = flush_every.map(|d| instant_after(start, d));
                let mut next_purge = purge_every.map(|d| instant_after(start, d));
                // A purge stopped for a durable commit, resumed at once after it.
                let mut resume: Option<Resume> = None;
                loop {
                    let wake = match (next_flush, next_purge) {
                        _ if resume.is_some() => Instant::now(),
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
                            next_flush = Some(instant_after(Instant::now(), every));
                        }
                    }
                    if let (Some(at), Some(every)) = (next_purge, purge_every) {
                        if resume.is_some() || at <= now {
                            let flush_due = || next_flush.is_some_and(|at| Instant::now() >= at);
                            resume = purge(&inner, resume.take(), || stop.is_fired() || flush_due());
                            if resume.is_none() {
                                next_purge = Some(instant_after(Instant::now(), every));
                            }
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

/// Where a purge stopped for a durable commit, and what it removed so far.
#[derive(Debug)]
struct Resume {
    after: String,
    removed: u64,
}

/// Removes the expired entries, a round at a time, from where `resume` says (the start for
/// `None`) until none are left or `stop` says so; returns where to resume if it stopped.
fn purge(inner: &Inner, resume: Option<Resume>, stop: impl Fn() -> bool) -> Option<Resume> {
    let (after, before) = resume.map_or((None, 0), |r| (Some(r.after), r.removed));
    match inner.purge_until(after, stop) {
        Ok((removed, Some(after))) => Some(Resume {
            after,
            removed: before + removed,
        }),
        Ok((removed, None)) => {
            let removed = before + removed;
            tracing::debug!(removed, path = %inner.path.display(), "purged expired entries of the redb store");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, path = %inner.path.display(), "purging the expired entries of the redb store failed; the next turn tries again");
            None
        }
    }
}

#[cfg(test)]
impl Flusher {
    /// Whether the thread is still running.
    pub(super) fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Whether the thread waits in its sleep until the next turn (it got past its start).
    pub(super) fn is_asleep(&self) -> bool {
        self.shutdown.asleep() > 0
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
