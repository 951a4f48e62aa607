//! The internal I/O thread of a distributed level: a current-thread tokio runtime on a named
//! thread of its own, so that
//! - the blocking API works from plain threads (no runtime needed) and does not panic when called
//!   from inside a runtime (it only waits on a channel);
//! - the async API never blocks the caller's executor (the I/O runs here, the caller awaits a
//!   oneshot channel, which works under any executor);
//! - every call has a deadline enforced here, around the client library's own retries and
//!   reconnects, and again on the waiting side for the blocking API.

use std::future::Future;
use std::sync::mpsc;
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::error::{Error, Result};

/// How long a blocking caller waits past the deadline for the I/O thread's own timeout to report
/// before giving up by itself (only matters if the I/O thread is starved).
const WAIT_GRACE: Duration = Duration::from_millis(20);

/// Owns the I/O thread; dropping it stops the runtime (cancelling in-flight calls) and joins the
/// thread.
#[derive(Debug)]
pub(crate) struct IoRuntime {
    level: &'static str,
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl IoRuntime {
    /// Starts the I/O thread `uno-cache-<level>`.
    pub(crate) fn start(level: &'static str) -> Result<Self> {
        let (handle_tx, handle_rx) = mpsc::sync_channel::<std::io::Result<Handle>>(1);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("uno-cache-{level}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(err) => {
                        let _ = handle_tx.send(Err(err));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stop_rx.await;
                });
                // Dropping the runtime here, on its own thread, cancels whatever is in flight.
            })
            .map_err(|err| start_error(level, &err))?;
        let thread_id = thread.thread().id();
        let handle = match handle_rx.recv() {
            Ok(Ok(handle)) => handle,
            Ok(Err(err)) => return Err(start_error(level, &err)),
            Err(_) => {
                return Err(Error::Backend {
                    level,
                    op: "start",
                    reason: "the I/O thread exited before its runtime started".to_owned(),
                })
            }
        };
        Ok(IoRuntime {
            level,
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
            thread_id,
        })
    }

    /// Runs `fut` on the I/O thread and waits for it, at most `timeout` (plus a small grace if the
    /// I/O thread is starved). Usable from any thread, inside a runtime or not.
    pub(crate) fn block_on<T, F>(&self, op: &'static str, timeout: Duration, fut: F) -> Result<T>
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let level = self.level;
        let deadline = deadline_after(timeout);
        let (tx, rx) = mpsc::sync_channel(1);
        let task = self.handle.spawn(async move {
            let out = tokio::time::timeout_at(deadline.into(), fut).await;
            let _ = tx.send(out);
        });
        match rx.recv_timeout(timeout.saturating_add(WAIT_GRACE)) {
            Ok(Ok(out)) => out,
            Ok(Err(_elapsed)) => Err(Error::Timeout {
                level,
                op,
                after: timeout,
            }),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                task.abort();
                Err(Error::Timeout {
                    level,
                    op,
                    after: timeout,
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped(level, op)),
        }
    }

    /// Starts `fut` on the I/O thread with no deadline (a long-lived task such as a subscriber
    /// loop); it is cancelled when the runtime stops.
    pub(crate) fn spawn<F>(&self, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut)
    }

    /// Returns a future that runs `fut` on the I/O thread with a deadline of `timeout` from the
    /// call. The work starts when the returned future is first polled; dropping the returned
    /// future cancels it.
    pub(crate) fn run<T, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: F,
    ) -> impl Future<Output = Result<T>> + Send + 'static
    where
        T: Send + 'static,
        F: Future<Output = Result<T>> + Send + 'static,
    {
        let level = self.level;
        let handle = self.handle.clone();
        let deadline = deadline_after(timeout);
        async move {
            let (tx, rx) = oneshot::channel();
            let task = handle.spawn(async move {
                let out = tokio::time::timeout_at(deadline.into(), fut).await;
                let _ = tx.send(out);
            });
            let _abort_if_dropped = AbortOnDrop(task);
            match rx.await {
                Ok(Ok(out)) => out,
                Ok(Err(_elapsed)) => Err(Error::Timeout {
                    level,
                    op,
                    after: timeout,
                }),
                Err(_) => Err(stopped(level, op)),
            }
        }
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The last owner can be a task on the I/O thread itself; joining would deadlock.
            if std::thread::current().id() != self.thread_id {
                let _ = thread.join();
            }
        }
    }
}

/// `now + timeout`, saturating at a century from now instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let now = Instant::now();
    now.checked_add(timeout.min(FAR)).unwrap_or(now)
}

/// Aborts the task when the awaiting future is dropped (aborting a finished task does nothing).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn start_error(level: &'static str, err: &std::io::Error) -> Error {
    Error::Backend {
        level,
        op: "start",
        reason: format!("cannot start the I/O thread: {err}"),
    }
}

fn stopped(level: &'static str, op: &'static str) -> Error {
    Error::Backend {
        level,
        op,
        reason: "the level's I/O thread has stopped (the store is being dropped)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_returns_the_value_from_a_plain_thread() {
        let rt = IoRuntime::start("test").unwrap();
        let out = rt.block_on("op", Duration::from_secs(5), async { Ok(41 + 1) });
        assert_eq!(out.unwrap(), 42);
    }

    #[test]
    fn block_on_times_out_a_hung_future_within_the_deadline() {
        let rt = IoRuntime::start("test").unwrap();
        let started = Instant::now();
        let out: Result<()> = rt.block_on("get", Duration::from_millis(50), std::future::pending());
        let took = started.elapsed();
        assert!(
            matches!(
                out,
                Err(Error::Timeout {
                    level: "test",
                    op: "get",
                    ..
                })
            ),
            "{out:?}"
        );
        assert!(
            took < Duration::from_millis(50) + WAIT_GRACE + Duration::from_millis(30),
            "{took:?}"
        );
    }

    #[test]
    fn block_on_inside_a_runtime_does_not_panic() {
        let io = IoRuntime::start("test").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = outer.block_on(async { io.block_on("op", Duration::from_secs(5), async { Ok(7) }) });
        assert_eq!(out.unwrap(), 7);
    }

    #[test]
    fn run_works_under_a_runtime_without_timers() {
        // The caller's runtime has no time driver: the deadline must be kept on the I/O thread.
        let io = IoRuntime::start("test").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out: Result<()> =
            outer.block_on(io.run("get", Duration::from_millis(20), std::future::pending()));
        assert!(matches!(out, Err(Error::Timeout { .. })), "{out:?}");
        let out = outer.block_on(io.run("get", Duration::from_secs(5), async { Ok("done") }));
        assert_eq!(out.unwrap(), "done");
    }

    #[test]
    fn dropping_the_runtime_inside_an_async_context_does_not_panic() {
        let io = IoRuntime::start("test").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        outer.block_on(async move { drop(io) });
    }

    #[test]
    fn calls_after_stop_fail_with_a_typed_error() {
        let io = IoRuntime::start("test").unwrap();
        let fut = io.run("get", Duration::from_secs(5), async { Ok(()) });
        drop(io);
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = outer.block_on(fut);
        assert!(matches!(out, Err(Error::Backend { op: "get", .. })), "{out:?}");
    }
}
