//! The one timer of a manager's flights (`uno-cache-load-timer`): it wakes the async waiters of
//! a flight at the flight's deadlines (the loader timeouts of `[loader]`).
//!
//! An async waiter with a deadline needs someone to wake it when the deadline passes, and the
//! caller's executor may have no timer (a runtime without tokio's time driver, or none at
//! all). A thread per flight did that, but a stampede of distinct keys (a cold start, a flush)
//! then started one thread per key in flight: thousands of stacks where an embedder expects a
//! fixed number. So every flight of a manager shares one thread, which sleeps on a condition
//! variable until the earliest deadline of a min-heap of `(deadline, Weak<Flight>)`, is woken
//! early when an earlier deadline is pushed, and at each deadline wakes the flight's waiters
//! if it is still loading. A flight that ended (or was dropped) is skipped; the heap holds it
//! only weakly, and is pruned of them when it grows.
//!
//! The thread starts with the first deadline pushed, and ends once it has no deadline left, so
//! a manager with no load in flight holds no thread for it once the last deadline queued has
//! passed (a flight that ended keeps its deadlines queued, up to the hard timeout: the thread
//! is not woken when a flight ends); the next deadline starts it again. The manager's
//! shutdown ([`LoadTimer::stop`], from `Workers`) ends and joins it, and no thread starts after
//! that. If the system refuses the thread, a warning is logged and the waiters notice their
//! deadline only when their flight ends; the deadlines stay queued for the next start.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use super::loader::Flight;

/// Heaps at most this long are never pruned: skipping a dead entry at its deadline is cheap.
const PRUNE_FLOOR: usize = 1024;

/// A flight's deadline in the heap, earliest first.
struct Due {
    at: Instant,
    flight: Weak<Flight>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}

impl Eq for Due {}

impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Due {
    // Reversed: `BinaryHeap` is a max-heap, and the earliest deadline comes first.
    fn cmp(&self, other: &Self) -> Ordering {
        other.at.cmp(&self.at)
    }
}

/// The timer's state, under one lock: the deadlines and the thread's life.
#[derive(Default)]
struct State {
    heap: BinaryHeap<Due>,
    /// Whether a thread runs the heap (it clears this, under the lock, as it ends).
    running: bool,
    /// Set at the manager's shutdown: the thread ends, and none starts again.
    stopped: bool,
    /// The heap is pruned of ended flights when it reaches this length.
    prune_at: usize,
    /// The threads started, joined at [`LoadTimer::stop`]; all but the last have ended or are
    /// ending (dropped once finished, at the next start).
    threads: Vec<JoinHandle<()>>,
    /// How many times the thread went to sleep until a deadline (seen under the lock, the thread
    /// is asleep).
    #[cfg(test)]
    sleeps: usize,
}

/// What the thread shares with [`LoadTimer`] (not the flights: it holds them weakly).
#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    /// The thread sleeps here until the earliest deadline, a push of an earlier one, or the stop.
    wake: Condvar,
}

/// The timer of a manager's flights; see the module docs.
#[derive(Default)]
pub(crate) struct LoadTimer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LoadTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("LoadTimer")
            .field("queued", &state.heap.len())
            .field("running", &state.running)
            .field("stopped", &state.stopped)
            .finish()
    }
}

impl LoadTimer {
    /// Wakes `flight`'s async waiters at each of `deadlines` while it is loading, starting the
    /// timer's thread if none runs.
    pub(crate) fn schedule(&self, flight: &Arc<Flight>, deadlines: Vec<Instant>) {
        if deadlines.is_empty() {
            return;
        }
        let mut state = self.inner.state.lock();
        if state.stopped {
            return;
        }
        let earliest = state.heap.peek().map(|due| due.at);
        for at in deadlines {
            state.heap.push(Due {
                at,
                flight: Arc::downgrade(flight),
            });
        }
        if state.heap.len() >= state.prune_at.max(PRUNE_FLOOR) {
            state.heap.retain(|due| due.flight.strong_count() > 0);
            state.prune_at = state.heap.len().saturating_mul(2);
        }
        if state.running {
            // Only an earlier deadline changes when the thread must wake.
            if state.heap.peek().map(|due| due.at) != earliest {
                self.inner.wake.notify_one();
            }
            return;
        }
        // A thread that ended still has its handle here: drop those that finished.
        state.threads.retain(|thread| !thread.is_finished());
        match spawn(Arc::clone(&self.inner)) {
            Ok(thread) => {
                state.running = true;
                state.threads.push(thread);
            }
            Err(e) => {
                // Waiters then notice their deadline only when the flight ends.
                tracing::warn!(error = %e, "cannot start the loader timer thread; async waiters with a loader timeout wait for their load to end");
            }
        }
    }

    /// Ends the timer's thread and waits for it (unless called on it); no thread starts after
    /// this. For the manager's shutdown.
    pub(crate) fn stop(&self) {
        let threads = {
            let mut state = self.inner.state.lock();
            state.stopped = true;
            state.heap.clear();
            std::mem::take(&mut state.threads)
        };
        self.inner.wake.notify_all();
        let here = std::thread::current().id();
        for thread in threads {
            // On the timer's own thread (a waker that polls its task there, and the task drops
            // the manager's last handle) a join of itself panics, and the rest of the shutdown
            // (the write-behind queue's drain) never ran: that thread ends at its next look at
            // the state, which now says stopped.
            if thread.thread().id() == here {
                continue;
            }
            if thread.join().is_err() {
                tracing::error!("the loader timer thread panicked");
            }
        }
    }
}

#[cfg(test)]
impl LoadTimer {
    /// How many times the thread went to sleep until a deadline.
    pub(crate) fn sleeps(&self) -> usize {
        self.inner.state.lock().sleeps
    }
}

impl Drop for LoadTimer {
    /// Without a shutdown (a manager that never got its `Workers`), the thread still ends,
    /// unjoined, rather than outlive its flights to the last deadline.
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        state.stopped = true;
        state.heap.clear();
        drop(state);
        self.inner.wake.notify_all();
    }
}

/// Starts the timer's thread (`uno-cache-load-timer`). A test can make it fail on its own
/// thread (`NO_TIMER_THREAD`), as when the system has no thread to give.
fn spawn(inner: Arc<Inner>) -> std::io::Result<JoinHandle<()>> {
    #[cfg(test)]
    if tests::NO_TIMER_THREAD.with(std::cell::Cell::get) {
        return Err(std::io::Error::other("no timer thread in this test"));
    }
    std::thread::Builder::new()
        .name("uno-cache-load-timer".into())
        .spawn(move || run(&inner))
}

/// The thread: wakes each flight due, sleeps until the next deadline, ends with none left.
fn run(inner: &Inner) {
    let mut state = inner.state.lock();
    let mut due = Vec::new();
    loop {
        if state.stopped {
            break;
        }
        let now = Instant::now();
        while state.heap.peek().is_some_and(|next| next.at <= now) {
            if let Some(next) = state.heap.pop() {
                due.push(next.flight);
            }
        }
        if !due.is_empty() {
            // Outside the lock: a waiter's waker is its executor's code, which may take its
            // time, or poll the task right here, and a task scheduling a deadline takes the lock.
            drop(state);
            for flight in due.drain(..) {
                if let Some(flight) = flight.upgrade() {
                    // A waker that panics (an executor's bug) ended the thread with `running`
                    // still set: no thread started again, and every later deadline of the
                    // manager passed unseen. The flight's state is untouched by the unwinding.
                    let wake = AssertUnwindSafe(|| flight.wake_if_loading());
                    if catch_unwind(wake).is_err() {
                        tracing::error!("a waker of a loading call's waiter panicked at its loader timeout; the timer goes on");
                    }
                }
            }
            state = inner.state.lock();
            continue;
        }
        match state.heap.peek().map(|next| next.at) {
            Some(at) => {
                #[cfg(test)]
                {
                    state.sleeps += 1;
                }
                let _ = inner.wake.wait_until(&mut state, at);
            }
            None => break,
        }
    }
    state.running = false;
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::Cell;
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::mpsc;
    use std::task::{Context, Poll, Wake, Waker};
    use std::time::Duration;

    use super::super::loader::{Flights, Role, Waited};
    use super::*;

    thread_local! {
        /// Set by a test on its thread: the timer's thread does not start, as when the system
        /// refuses it.
        pub(crate) static NO_TIMER_THREAD: Cell<bool> = const { Cell::new(false) };
    }

    /// A waker that reports each wake on a channel.
    struct Told(parking_lot::Mutex<mpsc::Sender<()>>);

    impl Wake for Told {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().send(());
        }
    }

    type Wait = Pin<Box<dyn Future<Output = Waited> + Send>>;

    /// A flight led by a leader the caller holds, and a waiter of it with `deadline`, polled
    /// once (pending) with a waker that tells `woken`.
    fn waiting(
        flights: &Arc<Flights>,
        key: &str,
        deadline: Instant,
    ) -> (Role, Arc<Flight>, Wait, mpsc::Receiver<()>) {
        let leader = flights.join(key);
        let Role::Waiter(flight) = flights.join(key) else {
            panic!("second caller must wait")
        };
        let waiter = Arc::clone(&flight);
        let mut wait: Wait = Box::pin(async move { waiter.wait_async_until(Some(deadline)).await });
        let (tx, woken) = mpsc::channel();
        let waker = Waker::from(Arc::new(Told(parking_lot::Mutex::new(tx))));
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        (leader, flight, wait, woken)
    }

    fn poll(wait: &mut Wait) -> Poll<Waited> {
        wait.as_mut().poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn an_earlier_deadline_wakes_the_timer_sleeping_until_a_later_one() {
        let flights = Arc::new(Flights::default());
        let later = Instant::now() + Duration::from_secs(600);
        let (_l1, far, _w1, _) = waiting(&flights, "far", later);
        flights.ensure_ticker(&far, vec![later]);
        let asleep = Instant::now() + Duration::from_secs(30);
        while flights.timer_sleeps() == 0 {
            assert!(Instant::now() < asleep, "the timer never went to sleep");
            std::thread::yield_now();
        }
        let soon = Instant::now() + Duration::from_millis(50);
        let (_l2, near, mut wait, woken) = waiting(&flights, "near", soon);
        flights.ensure_ticker(&near, vec![soon]);
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiter was not woken at its deadline");
        assert!(Instant::now() >= soon);
        assert_eq!(poll(&mut wait), Poll::Ready(Waited::TimedOut));
        flights.stop_timer();
    }

    #[test]
    fn a_refused_timer_thread_leaves_the_waiters_to_the_end_of_their_flight_and_the_next_start() {
        let flights = Arc::new(Flights::default());
        let at = Instant::now() + Duration::from_millis(20);
        let (leader, refused, mut wait, woken) = waiting(&flights, "refused", at);
        NO_TIMER_THREAD.with(|no| no.set(true));
        flights.ensure_ticker(&refused, vec![at]);
        NO_TIMER_THREAD.with(|no| no.set(false));
        // Past the deadline, nobody wakes the waiter (there is nothing to await here but time).
        assert_eq!(
            woken.recv_timeout(Duration::from_millis(200)),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        // The next flight with a deadline starts the thread, which finds the first one's due.
        let later = Instant::now() + Duration::from_secs(600);
        let (_l2, other, _w2, _) = waiting(&flights, "other", later);
        flights.ensure_ticker(&other, vec![later]);
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("the deadline queued while the thread was refused was lost");
        assert_eq!(poll(&mut wait), Poll::Ready(Waited::TimedOut));
        drop(leader);
        flights.stop_timer();
    }

    #[test]
    fn a_refused_timer_thread_still_lets_the_flights_end_wake_its_waiters() {
        let flights = Arc::new(Flights::default());
        let at = Instant::now() + Duration::from_millis(20);
        let (leader, refused, mut wait, woken) = waiting(&flights, "refused", at);
        NO_TIMER_THREAD.with(|no| no.set(true));
        flights.ensure_ticker(&refused, vec![at]);
        NO_TIMER_THREAD.with(|no| no.set(false));
        let Role::Leader(leader) = leader else {
            panic!("first caller must lead")
        };
        leader.finish(Arc::from(&b"v"[..]));
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("the end woke nobody");
        assert_eq!(poll(&mut wait), Poll::Ready(Waited::Done(Arc::from(&b"v"[..]))));
    }

    #[test]
    fn the_timer_thread_ends_with_no_deadline_left_and_starts_again_for_the_next() {
        let timer = LoadTimer::default();
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller must lead")
        };
        timer.schedule(leader.flight(), vec![Instant::now()]);
        let first = {
            let mut state = timer.inner.state.lock();
            assert_eq!(state.threads.len(), 1);
            state.threads.pop().expect("one thread started")
        };
        first.join().expect("the timer thread panicked");
        assert!(
            !timer.inner.state.lock().running,
            "ended, it still counts as running"
        );
        timer.schedule(leader.flight(), vec![Instant::now() + Duration::from_secs(600)]);
        assert!(timer.inner.state.lock().running);
        timer.stop();
        let state = timer.inner.state.lock();
        assert!(state.threads.is_empty() && state.heap.is_empty() && state.stopped);
        drop(state);
        timer.schedule(leader.flight(), vec![Instant::now()]);
        assert!(
            !timer.inner.state.lock().running,
            "a thread started after the stop"
        );
    }

    /// A waker that stops the timer, as one that polls its task on the timer's thread does when
    /// the task drops the manager's last handle (the manager's shutdown runs there), and then
    /// reports that the stop returned.
    struct Stops {
        timer: Arc<LoadTimer>,
        returned: parking_lot::Mutex<mpsc::Sender<()>>,
    }

    impl Wake for Stops {
        fn wake(self: Arc<Self>) {
            self.timer.stop();
            let _ = self.returned.lock().send(());
        }
    }

    #[test]
    fn a_stop_on_the_timer_thread_itself_returns_and_the_thread_ends() {
        let timer = Arc::new(LoadTimer::default());
        let flights = Arc::new(Flights::default());
        let _leader = flights.join("k");
        let Role::Waiter(flight) = flights.join("k") else {
            panic!("second caller must wait")
        };
        let at = Instant::now() + Duration::from_millis(20);
        let waiter = Arc::clone(&flight);
        let mut wait: Wait = Box::pin(async move { waiter.wait_async_until(Some(at)).await });
        let (tx, returned) = mpsc::channel();
        let waker = Waker::from(Arc::new(Stops {
            timer: Arc::clone(&timer),
            returned: parking_lot::Mutex::new(tx),
        }));
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        timer.schedule(&flight, vec![at]);
        returned
            .recv_timeout(Duration::from_secs(30))
            .expect("the stop made on the timer's own thread did not return (it joined itself)");
        let ended = Instant::now() + Duration::from_secs(30);
        while timer.inner.state.lock().running {
            assert!(Instant::now() < ended, "the timer thread went on after its stop");
            std::thread::yield_now();
        }
        assert!(timer.inner.state.lock().stopped);
    }

    /// A waker that reports its wake, then panics (an executor's bug).
    struct Panics(parking_lot::Mutex<mpsc::Sender<()>>);

    impl Wake for Panics {
        fn wake(self: Arc<Self>) {
            let _ = self.0.lock().send(());
            panic!("a waker that panics");
        }
    }

    #[test]
    fn a_waker_that_panics_on_the_timer_thread_leaves_the_later_deadlines_kept() {
        let flights = Arc::new(Flights::default());
        let _leader = flights.join("panics");
        let Role::Waiter(flight) = flights.join("panics") else {
            panic!("second caller must wait")
        };
        let at = Instant::now() + Duration::from_millis(20);
        let waiter = Arc::clone(&flight);
        let mut wait: Wait = Box::pin(async move { waiter.wait_async_until(Some(at)).await });
        let (tx, panicked) = mpsc::channel();
        let waker = Waker::from(Arc::new(Panics(parking_lot::Mutex::new(tx))));
        assert!(wait.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        flights.ensure_ticker(&flight, vec![at]);
        panicked
            .recv_timeout(Duration::from_secs(30))
            .expect("the panicking waker was not woken");
        let next = Instant::now() + Duration::from_millis(20);
        let (_l2, other, mut other_wait, woken) = waiting(&flights, "next", next);
        flights.ensure_ticker(&other, vec![next]);
        woken
            .recv_timeout(Duration::from_secs(30))
            .expect("after a waker's panic, no later deadline was kept");
        assert_eq!(poll(&mut other_wait), Poll::Ready(Waited::TimedOut));
        flights.stop_timer();
    }

    #[test]
    fn a_long_heap_is_pruned_of_ended_flights() {
        let timer = LoadTimer::default();
        let flights = Arc::new(Flights::default());
        let later = Instant::now() + Duration::from_secs(600);
        for i in 0..PRUNE_FLOOR {
            let Role::Leader(leader) = flights.join(&format!("k{i}")) else {
                panic!("first caller must lead")
            };
            timer.schedule(leader.flight(), vec![later]);
        }
        // Every flight above ended and was dropped: the heap reached the floor with them.
        assert!(timer.inner.state.lock().heap.len() <= 1);
        timer.stop();
    }
}
