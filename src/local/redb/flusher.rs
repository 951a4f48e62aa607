//! The flusher thread of `Periodic(d)` durability (`uno-cache-redb`): every `d` it makes the
//! commits still held only in process memory durable, as [`flush`](crate::Storage::flush) does.
//!
//! Without it a write is made durable only by a later write that finds the last durable commit
//! older than `d`, so the tail of a burst stays in memory until the next flush or close, however
//! long that takes, and a killed process loses it. With it the loss window is `d` (plus the
//! commit's own time) whether or not writes continue.
//!
//! The thread holds the store's state weakly: a store its user dropped is not kept alive by its
//! own thread. The store owns the thread; dropping the [`Flusher`] fires its [`Shutdown`] and
//! joins it, so no commit runs after the store is gone.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::inner::Inner;
use crate::error::{Error, Result};
use crate::shutdown::Shutdown;

/// The running flusher thread of one store.
#[derive(Debug)]
pub(super) struct Flusher {
    shutdown: Shutdown,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    pub(super) fn start(inner: &Arc<Inner>, every: Duration) -> Result<Flusher> {
        let shutdown = Shutdown::default();
        let stop = shutdown.clone();
        let state: Weak<Inner> = Arc::downgrade(inner);
        let handle = std::thread::Builder::new()
            .name("uno-cache-redb".into())
            .spawn(move || {
                while !stop.sleep(every) {
                    let Some(inner) = state.upgrade() else {
                        return;
                    };
                    if let Err(e) = inner.make_durable() {
                        // The next turn tries again (after a full disk, with a reopened database).
                        tracing::warn!(error = %e, path = %inner.path.display(), "periodic durable commit of the redb store failed");
                    }
                }
            })
            .map_err(|e| Error::io("spawn the flusher thread of", &inner.path, e))?;
        Ok(Flusher {
            shutdown,
            handle: Some(handle),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shutdown.fire();
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("the flusher thread of the redb store panicked");
            }
        }
    }
}
