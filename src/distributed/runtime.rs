//! The internal I/O thread of the distributed levels: a current-thread tokio runtime on a named
//! thread of its own, shareable (an [`IoRuntime`] is a cheap handle; the thread stops when the
//! last handle goes), so that one thread can serve the Redis L2, the backplane and tags:
//! - the blocking API works from plain threads (no runtime needed) and does not panic when called
//!   from inside a runtime (it only waits, on a channel or by parking);
//! - the async API never blocks the caller's executor, and needs no timers from it: a future
//!   made by [`IoRuntime::bind`] is polled in the caller's task (no hop to another thread) but
//!   inside this runtime's context, so anything the client library spawns (reconnects) belongs
//!   to the I/O thread; its deadline is kept by the I/O thread's sweeper (`super::deadline`:
//!   cheaper than a timer entry per call in this runtime's wheel). It works under a tokio
//!   runtime of any flavour, one without timers, or an executor that is not tokio at all;
//! - every call has a deadline, around the client library's own retries and reconnects, and
//!   again on the waiting side for the blocking API.

use std::future::Future;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{JoinHandle, Thread, ThreadId};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::deadline::{Deadlines, Registration};
use crate::error::{Error, Result};
use crate::log_limit::LogLimit;
use crate::shutdown::Shutdown;

/// How long a blocking caller waits past the deadline for the I/O thread's own timeout to report
/// before giving up by itself (only matters if the I/O thread is starved).
const WAIT_GRACE: Duration = Duration::from_millis(20);

/// How long dropping a [`Task`] waits for the task to end.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// A handle on an I/O thread. Clones share the thread; [`for_level`](Self::for_level) gives a
/// handle whose errors name another level and server. The last handle dropped stops the runtime
/// (cancelling whatever is in flight) and joins the thread.
#[derive(Debug, Clone)]
pub(crate) struct IoRuntime {
    level: &'static str,
    /// What a timeout names as the server waited for ([`Error::Timeout`]'s `server`).
    server: Arc<str>,
    thread: Arc<IoThread>,
}

#[derive(Debug)]
struct IoThread {
    handle: Handle,
    /// The deadlines of calls made by [`IoRuntime::bind`], swept by a task on this thread.
    deadlines: Arc<Deadlines>,
    /// Ends the runtime's `block_on`, so the thread drops the runtime and exits.
    shutdown: Shutdown,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
    /// Lines of calls nobody waits for any more that failed: while L2 hangs, every call given
    /// up on ends so. Held apart from the thread, by the tasks, which must not keep it alive.
    unwaited_lines: Arc<LogLimit>,
}

impl IoRuntime {
    /// Starts the I/O thread `uno-cache-<level>`, for calls to `server`.
    pub(crate) fn start(level: &'static str, server: &str) -> Result<Self> {
        let (handle_tx, handle_rx) = mpsc::sync_channel::<std::io::Result<Handle>>(1);
        let shutdown = Shutdown::default();
        let theirs = shutdown.clone();
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
                runtime.block_on(theirs.fired());
                // Shut down here, on its own thread: whatever is in flight is cancelled. Not
                // dropped, which waits for the blocking pool: a host name lookup there (the
                // `redis` crate's reconnects use tokio's) cannot be stopped, and with the name
                // server gone silent it held the last handle's drop for the resolver's timeouts.
                runtime.shutdown_background();
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
        let deadlines = Arc::new(Deadlines::default());
        // Ends with the runtime.
        drop(handle.spawn(Arc::clone(&deadlines).sweep()));
        Ok(IoRuntime {
            level,
            server: server.into(),
            thread: Arc::new(IoThread {
                handle,
                deadlines,
                shutdown,
                thread: Mutex::new(Some(thread)),
                thread_id,
                unwaited_lines: Arc::new(LogLimit::new()),
            }),
        })
    }

    /// The same thread, with errors that name `level` and `server`.
    pub(crate) fn for_level(&self, level: &'static str, server: &str) -> IoRuntime {
        IoRuntime {
            level,
            server: server.into(),
            thread: Arc::clone(&self.thread),
        }
    }

    /// The timeout of `op` after `after`, naming this handle's level and server.
    fn timed_out(&self, op: &'static str, after: Duration) -> Error {
        timed_out(self.level, &self.server, op, after)
    }

    /// The runtime's handle, for tasks that must end with it: a handle does not keep the
    /// thread alive, so what is spawned on it is cancelled when the last [`IoRuntime`] goes.
    #[cfg(feature = "memcached")]
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.thread.handle.clone()
    }

    /// Whether the caller is running on this I/O thread.
    fn on_io_thread(&self) -> bool {
        std::thread::current().id() == self.thread.thread_id
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
        let task = self.thread.handle.spawn(async move {
            let out = tokio::time::timeout_at(deadline.into(), fut).await;
            let _ = tx.send(out);
        });
        match rx.recv_timeout(timeout.saturating_add(WAIT_GRACE)) {
            Ok(Ok(out)) => out,
            Ok(Err(_elapsed)) => Err(self.timed_out(op, timeout)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                task.abort();
                Err(self.timed_out(op, timeout))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped(level, op)),
        }
    }

    /// Runs `fut` (made by [`bind`](Self::bind) or holding its own deadline) on the caller's
    /// thread, parking it between polls, and gives up `WAIT_GRACE` after `timeout` if nothing
    /// woke it (a starved or blocked I/O thread). Nothing is spawned, so `fut` may borrow.
    pub(crate) fn wait<T, F>(&self, op: &'static str, timeout: Duration, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        let give_up = deadline_after(timeout.saturating_add(WAIT_GRACE));
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
                return out;
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(self.timed_out(op, timeout));
            }
            std::thread::park_timeout(give_up - now);
        }
    }

    /// Starts `fut` on the I/O thread with no deadline (a long-lived task such as a subscriber
    /// loop). Dropping the returned [`Task`] cancels it and waits for it to end; so does
    /// stopping the runtime.
    pub(crate) fn spawn<F>(&self, fut: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let done = parking_lot::Mutex::new(done);
        let handle = self.thread.handle.spawn(async move {
            // Dropped when the task ends, however it ends (finished, aborted, runtime stopped).
            let _done = Finished(done_tx);
            fut.await;
        });
        Task {
            handle,
            done,
            stopped: std::sync::atomic::AtomicBool::new(false),
            runtime: self.clone(),
        }
    }

    /// Starts `fut` on the I/O thread with a deadline of `timeout` from the call, and returns at
    /// once: for what a caller that is gone still owes (from a `Drop`). A failure is logged.
    pub(crate) fn detach<F>(&self, op: &'static str, timeout: Duration, fut: F)
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let level = self.level;
        let deadline = deadline_after(timeout);
        let lines = Arc::clone(&self.thread.unwaited_lines);
        // Not waited for: the handle's task ends on its own, or with the runtime.
        drop(self.thread.handle.spawn(async move {
            let out = tokio::time::timeout_at(deadline.into(), fut).await;
            log_unwaited(level, op, out, &lines);
        }));
    }

    /// Returns a future that runs `fut` on the I/O thread with a deadline of `timeout` from its
    /// first poll, when the work starts (a future made and polled later, as in a batch of calls
    /// made first and awaited together, gets its whole deadline, not a timeout counted against
    /// L2 for the time it waited to be polled); dropping the returned future cancels it.
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
        let (level, server) = (self.level, Arc::clone(&self.server));
        let handle = self.thread.handle.clone();
        async move {
            let deadline = deadline_after(timeout);
            let (tx, rx) = oneshot::channel();
            let task = handle.spawn(async move {
                let out = tokio::time::timeout_at(deadline.into(), fut).await;
                let _ = tx.send(out);
            });
            let _abort_if_dropped = AbortOnDrop(task);
            match rx.await {
                Ok(Ok(out)) => out,
                Ok(Err(_elapsed)) => Err(timed_out(level, &server, op, timeout)),
                Err(_) => Err(stopped(level, op)),
            }
        }
    }

    /// [`run`](Self::run), except that dropping the returned future once it was first polled
    /// does not cancel the work: it goes on to its end (or its deadline) on the I/O thread, and
    /// a failure nobody waits for any more is logged. For the part of a write its caller must
    /// not lose by giving up on it (a timeout) after the rest was done.
    pub(crate) fn run_to_end<F>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: F,
    ) -> impl Future<Output = Result<()>> + Send + 'static
    where
        F: Future<Output = Result<()>> + Send + 'static,
    {
        let (level, server) = (self.level, Arc::clone(&self.server));
        let handle = self.thread.handle.clone();
        let lines = Arc::clone(&self.thread.unwaited_lines);
        let deadline = deadline_after(timeout);
        async move {
            let (tx, rx) = oneshot::channel();
            handle.spawn(async move {
                let out = tokio::time::timeout_at(deadline.into(), fut).await;
                if let Err(out) = tx.send(out) {
                    log_unwaited(level, op, out, &lines);
                }
            });
            match rx.await {
                Ok(Ok(out)) => out,
                Ok(Err(_elapsed)) => Err(timed_out(level, &server, op, timeout)),
                Err(_) => Err(stopped(level, op)),
            }
        }
    }

    /// Returns a future that runs `fut` in the caller's own task (no hop to the I/O thread),
    /// with a deadline of `timeout` from its first poll (as [`run`](Self::run)'s), every poll made inside this runtime's
    /// context: whatever `fut` spawns or times belongs to the I/O thread, and the deadline is
    /// kept by the I/O thread's sweeper, so the caller's executor needs neither timers nor to
    /// be tokio. Dropping the future cancels the call.
    pub(crate) fn bind<'a, T, F>(
        &self,
        op: &'static str,
        timeout: Duration,
        fut: F,
    ) -> impl Future<Output = Result<T>> + Send + 'a
    where
        T: 'a,
        F: Future<Output = Result<T>> + Send + 'a,
    {
        let (level, server) = (self.level, Arc::clone(&self.server));
        let handle = self.thread.handle.clone();
        let deadlines = Arc::clone(&self.thread.deadlines);
        async move {
            let mut deadline = Registration::new(deadlines, deadline_after(timeout));
            let mut fut = std::pin::pin!(fut);
            std::future::poll_fn(move |cx| {
                let _context = handle.enter();
                if let Poll::Ready(out) = fut.as_mut().poll(cx) {
                    return Poll::Ready(out);
                }
                if deadline.expired() {
                    return Poll::Ready(Err(timed_out(level, &server, op, timeout)));
                }
                deadline.arm(cx.waker());
                Poll::Pending
            })
            .await
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.shutdown.fire();
        if let Some(thread) = self.thread.lock().take() {
            // The last owner can be a task on the I/O thread itself: a blocking call that timed
            // out leaves its future running there, and that future may hold the level. A manager
            // never gets here (its shutdown waits for its tasks), but a level used on its own can,
            // and joining its own thread would deadlock.
            if std::thread::current().id() != self.thread_id {
                let _ = thread.join();
            }
        }
    }
}

/// A task spawned on an I/O thread; dropping it cancels the task and waits (at most
/// `STOP_WAIT`) until it has ended, so that what the task held (a subscription, a connection)
/// is gone once the owner is, even though the thread may live on for other owners.
#[derive(Debug)]
#[must_use = "dropping a Task cancels it"]
pub(crate) struct Task {
    handle: tokio::task::JoinHandle<()>,
    /// A `Mutex` only to make the task `Sync` (it is received from once, when stopped).
    done: parking_lot::Mutex<std::sync::mpsc::Receiver<()>>,
    stopped: std::sync::atomic::AtomicBool,
    runtime: IoRuntime,
}

impl Task {
    /// Cancels the task and waits (at most `STOP_WAIT`) until it has ended; what it held is gone
    /// then. Once is enough: a second call (or the drop after it) returns at once.
    pub(crate) fn stop(&self) {
        self.handle.abort();
        if self.stopped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // On the I/O thread itself the task cannot end while we wait: it ends at the next poll.
        if !self.runtime.on_io_thread() {
            let _ = self.done.lock().recv_timeout(STOP_WAIT);
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Signals a [`Task`]'s end when dropped.
struct Finished(std::sync::mpsc::SyncSender<()>);

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.0.try_send(());
    }
}

/// Wakes a thread parked in [`IoRuntime::wait`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Logs the failure of a call nobody waits for any more (its caller gave up on it, or is gone),
/// if `lines` lets it.
fn log_unwaited(
    level: &'static str,
    op: &'static str,
    out: std::result::Result<Result<()>, tokio::time::error::Elapsed>,
    lines: &LogLimit,
) {
    let failed = match out {
        Ok(Ok(())) => return,
        Ok(Err(e)) => Some(e),
        Err(_elapsed) => None,
    };
    let Some(unlogged) = lines.pass() else {
        return;
    };
    match failed {
        Some(e) => tracing::warn!(level, op, error = %e, unlogged,
            "a call whose caller gave up on it failed (unlogged: such calls since the last line)"),
        None => tracing::warn!(
            level,
            op,
            unlogged,
            "a call whose caller gave up on it timed out (unlogged: such calls since the last line)"
        ),
    }
}

/// `now + timeout`, saturating at a century from now instead of overflowing.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    crate::clock::instant_after(Instant::now(), timeout)
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

fn timed_out(level: &'static str, server: &str, op: &'static str, after: Duration) -> Error {
    Error::Timeout {
        level,
        op,
        server: server.to_owned(),
        after,
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

    /// That `out` is the deadline error of call `op` on the test level.
    fn assert_timed_out<T: std::fmt::Debug>(out: &Result<T>, op: &str) {
        assert!(
            matches!(out, Err(Error::Timeout { level: "test", op: o, .. }) if *o == op),
            "{out:?}"
        );
    }

    #[test]
    fn block_on_returns_the_value_from_a_plain_thread() {
        let rt = IoRuntime::start("test", "test-server").unwrap();
        let out = rt.block_on("op", Duration::from_secs(5), async { Ok(41 + 1) });
        assert_eq!(out.unwrap(), 42);
    }

    #[test]
    fn block_on_times_out_a_hung_future_within_the_deadline() {
        let rt = IoRuntime::start("test", "test-server").unwrap();
        let started = Instant::now();
        let out: Result<()> = rt.block_on("get", Duration::from_millis(50), std::future::pending());
        let took = started.elapsed();
        assert_timed_out(&out, "get");
        assert!(
            took < Duration::from_millis(50) + WAIT_GRACE + Duration::from_millis(30),
            "{took:?}"
        );
    }

    #[test]
    fn block_on_inside_a_runtime_does_not_panic() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = outer.block_on(async { io.block_on("op", Duration::from_secs(5), async { Ok(7) }) });
        assert_eq!(out.unwrap(), 7);
    }

    #[test]
    fn run_works_under_a_runtime_without_timers() {
        // The caller's runtime has no time driver: the deadline must be kept on the I/O thread.
        let io = IoRuntime::start("test", "test-server").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out: Result<()> =
            outer.block_on(io.run("get", Duration::from_millis(20), std::future::pending()));
        assert_timed_out(&out, "get");
        let out = outer.block_on(io.run("get", Duration::from_secs(5), async { Ok("done") }));
        assert_eq!(out.unwrap(), "done");
    }

    #[test]
    fn dropping_the_runtime_inside_an_async_context_does_not_panic() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        outer.block_on(async move { drop(io) });
    }

    /// The `redis` crate's reconnects look the host's name up with tokio's `lookup_host`: a
    /// `getaddrinfo` on the runtime's blocking pool, which nothing can stop. With the name
    /// server gone silent it blocks for the resolver's timeouts (five seconds and more), and a
    /// runtime dropped the default way waits for its blocking tasks: the last handle's drop (a
    /// manager's, its L2 down) hung that long. Here the lookup is held until the drop returned.
    #[test]
    fn the_last_handles_drop_does_not_wait_for_a_blocking_lookup_on_the_io_thread() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let (started_tx, started) = mpsc::channel();
        let (release, held) = mpsc::channel::<()>();
        let task = io.spawn(async move {
            let _ = tokio::task::spawn_blocking(move || {
                let _ = started_tx.send(());
                // Bounded, so that a drop that waits fails the test rather than hang it.
                let _ = held.recv_timeout(Duration::from_secs(20));
            })
            .await;
        });
        started.recv().unwrap();
        let dropping = Instant::now();
        drop(task);
        drop(io);
        let took = dropping.elapsed();
        let _ = release.send(());
        assert!(
            took < Duration::from_secs(10),
            "the drop waited {took:?} for a blocking task of the I/O runtime"
        );
    }

    #[test]
    fn calls_after_stop_fail_with_a_typed_error() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let fut = io.run("get", Duration::from_secs(5), async { Ok(()) });
        drop(io);
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out = outer.block_on(fut);
        assert!(matches!(out, Err(Error::Backend { op: "get", .. })), "{out:?}");
    }

    #[test]
    fn bind_polls_in_the_callers_task_with_the_io_threads_timer() {
        // The caller's runtime has no time driver, and the future runs on the caller's thread.
        let io = IoRuntime::start("test", "test-server").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let caller = std::thread::current().id();
        let ran_on = outer
            .block_on(io.bind("get", Duration::from_secs(5), async {
                Ok(std::thread::current().id())
            }))
            .unwrap();
        assert_eq!(ran_on, caller);
        let started = Instant::now();
        let out: Result<()> =
            outer.block_on(io.bind("get", Duration::from_millis(30), std::future::pending()));
        assert_timed_out(&out, "get");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    /// The bound deadline fires the same whatever drives the call: a runtime with timers of
    /// its own, one without, or a plain thread parked in `wait` (no tokio at all); never early,
    /// and no later than the I/O thread's timer allows.
    #[test]
    fn a_bound_deadline_fires_with_timers_without_timers_and_without_tokio() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let after = Duration::from_millis(40);
        let check = |out: Result<()>, took: Duration| {
            assert_timed_out(&out, "get");
            assert!(took >= after, "fired early: {took:?}");
            assert!(took < after + Duration::from_millis(500), "fired late: {took:?}");
        };
        let timed = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let untimed = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for rt in [&timed, &untimed] {
            let started = Instant::now();
            let out = rt.block_on(io.bind("get", after, std::future::pending()));
            check(out, started.elapsed());
        }
        let started = Instant::now();
        let out = io.wait(
            "get",
            Duration::from_secs(10),
            io.bind("get", after, std::future::pending()),
        );
        check(out, started.elapsed());
    }

    /// A call whose deadline comes before every other waiting call's still fires on time (the
    /// sweeper is told to look sooner), and the later one is not ended by it.
    #[test]
    fn an_earlier_deadline_behind_a_later_one_fires_on_time() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let long = io.bind::<(), _>("long", Duration::from_secs(30), std::future::pending());
        let short = io.bind::<(), _>("short", Duration::from_millis(40), std::future::pending());
        let started = Instant::now();
        let (long_done, short_out) = outer.block_on(async {
            let mut long = std::pin::pin!(long);
            // Armed first, so the sweeper plans its look 30 s out.
            let first = std::future::poll_fn(|cx| Poll::Ready(long.as_mut().poll(cx).is_ready())).await;
            let short_out = short.await;
            let second = std::future::poll_fn(|cx| Poll::Ready(long.as_mut().poll(cx).is_ready())).await;
            (first || second, short_out)
        });
        let took = started.elapsed();
        assert!(
            matches!(short_out, Err(Error::Timeout { op: "short", .. })),
            "{short_out:?}"
        );
        assert!(
            took >= Duration::from_millis(40) && took < Duration::from_millis(540),
            "{took:?}"
        );
        assert!(!long_done, "the 30 s call ended with the 40 ms one");
    }

    #[test]
    fn wait_drives_a_bound_future_from_a_plain_thread_and_inside_a_runtime() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let sleepy = async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(5)
        };
        assert_eq!(
            io.wait(
                "op",
                Duration::from_secs(5),
                io.bind("op", Duration::from_secs(5), sleepy)
            )
            .unwrap(),
            5
        );
        let outer = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let out = outer.block_on(async {
            io.wait(
                "op",
                Duration::from_secs(5),
                io.bind("op", Duration::from_secs(5), async { Ok(6) }),
            )
        });
        assert_eq!(out.unwrap(), 6);
        let out: Result<()> = io.wait("op", Duration::from_millis(20), std::future::pending());
        assert_timed_out(&out, "op");
    }

    #[test]
    fn one_thread_serves_every_handle_and_stops_with_the_last() {
        let io = IoRuntime::start("test", "test-server").unwrap();
        let other = io.for_level("other", "other-server");
        let thread_of = |rt: &IoRuntime| {
            rt.block_on("op", Duration::from_secs(5), async {
                Ok(std::thread::current().id())
            })
            .unwrap()
        };
        assert_eq!(thread_of(&io), thread_of(&other));
        let err = other
            .block_on::<(), _>("op", Duration::from_millis(10), std::future::pending())
            .unwrap_err();
        assert!(
            matches!(&err, Error::Timeout { level: "other", server, .. } if server == "other-server"),
            "{err}"
        );
        drop(io);
        assert_eq!(
            other
                .block_on("op", Duration::from_secs(5), async { Ok(1) })
                .unwrap(),
            1
        );
        let fut = other.run("op", Duration::from_secs(5), async { Ok(()) });
        drop(other);
        let outer = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(matches!(outer.block_on(fut), Err(Error::Backend { .. })));
    }

    #[test]
    fn dropping_a_task_cancels_it_before_drop_returns() {
        struct Flag(std::sync::Arc<std::sync::atomic::AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let io = IoRuntime::start("test", "test-server").unwrap();
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Flag(dropped.clone());
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let task = io.spawn(async move {
            let _flag = flag;
            let _ = started_tx.send(());
            std::future::pending::<()>().await;
        });
        started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(task);
        assert!(
            dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the task outlived its Task"
        );
        // The thread still serves the runtime's other users.
        assert_eq!(
            io.block_on("op", Duration::from_secs(5), async { Ok(2) })
                .unwrap(),
            2
        );
    }
}
