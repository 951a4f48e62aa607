//! The manager's background threads (replay, write-behind, backfill): named, stopped and joined
//! when the manager goes.

use std::thread::{JoinHandle, ThreadId};

use crate::error::{Error, Result};

/// Owns one background thread. Dropping it runs `stop` (which must make the thread's loop end)
/// and joins the thread, unless the drop runs on that thread itself: a thread that upgraded its
/// weak handle can end up holding the manager's last one.
pub(crate) struct Background {
    stop: Box<dyn Fn() + Send + Sync>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl Background {
    /// Starts `body` on a thread named `uno-cache-{name}`; `stop` is called on drop.
    pub(crate) fn spawn(
        name: &'static str,
        body: impl FnOnce() + Send + 'static,
        stop: impl Fn() + Send + Sync + 'static,
    ) -> Result<Background> {
        let thread = std::thread::Builder::new()
            .name(format!("uno-cache-{name}"))
            .spawn(body)
            .map_err(|e| Error::Backend {
                level: name,
                op: "start",
                reason: format!("cannot start the {name} thread: {e}"),
            })?;
        Ok(Background {
            stop: Box::new(stop),
            thread_id: thread.thread().id(),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        (self.stop)();
        if let Some(thread) = self.thread.take() {
            if std::thread::current().id() != self.thread_id && thread.join().is_err() {
                tracing::error!(thread = ?self.thread_id, "a cache background thread panicked");
            }
        }
    }
}
