//! Stampede protection for the loading calls (`get_or_set_with`, `get_or_load`): one loader per
//! key at a time, across threads and tasks alike.
//!
//! The first caller that misses becomes the leader of a [`Flight`] for the key; later callers
//! wait on it, blocking threads on a condition variable and async tasks on a
//! [`tokio::sync::Notify`], so sync and async callers of one key share one load. The leader
//! publishes the encoded value, which waiters decode (no `Clone` bound on the value type). If the
//! leader's loader fails, or the leader panics or its future is dropped, the flight ends as
//! abandoned and waiters start over: one of them becomes the next leader. Loader errors are
//! therefore not shared (they need not be `Clone`); each caller sees its own.
//!
//! Waits can have a deadline (the loader timeouts of `[loader]`), counted from the flight's
//! start. Async waiters are woken at those deadlines by the manager's one timer thread
//! (`load_timer`, scheduled by [`Flights::ensure_ticker`]), since a waker needs someone to call
//! it and the caller's executor may have no timer; one thread for every flight, however many
//! keys load at once. A flight past its hard deadline is [given up](Flights::give_up): the
//! next caller starts a new load instead of waiting on one that hangs.
//!
//! A write, delete or invalidation of the key while its load runs marks the load's watch
//! (`guard::KeyOrder::watch`), and with it the flight: the load's value, read before the change,
//! still goes to the callers already waiting, but a caller arriving after the change starts a
//! new load instead of joining that one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

use super::load_timer::LoadTimer;

#[derive(Debug, Clone)]
enum State {
    Loading,
    Done(Arc<[u8]>),
    Abandoned,
}

/// How a wait on a flight ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The leader published the encoded value.
    Done(Arc<[u8]>),
    /// The leader gave up (its loader failed, it panicked or was cancelled) or the flight was
    /// given up at its hard deadline.
    Abandoned,
    /// The deadline passed first; the flight goes on.
    TimedOut,
}

/// One key's load in progress.
#[derive(Debug)]
pub(crate) struct Flight {
    state: Mutex<State>,
    cond: Condvar,
    notify: Notify,
    started: Instant,
    /// Whether the flight's deadlines were handed to the timer.
    ticking: AtomicBool,
    /// Set by the leader's watch when a write, delete or invalidation of the key started during
    /// the load: see [`Flights::join`].
    overtaken: Arc<AtomicBool>,
    /// Given up at its hard deadline while its leader still ran: counted in [`Flights::hung`]
    /// until the leader ends. Both flags change under the flights' map lock.
    hung: AtomicBool,
    /// The leader ended it.
    ended: AtomicBool,
}

impl Flight {
    fn finished(&self) -> Option<Waited> {
        match &*self.state.lock() {
            State::Loading => None,
            State::Done(bytes) => Some(Waited::Done(Arc::clone(bytes))),
            State::Abandoned => Some(Waited::Abandoned),
        }
    }

    /// When the load began: timeouts count from here.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Blocks until the leader finishes: `Some(bytes)` or `None` if it gave up.
    #[cfg(test)]
    pub(crate) fn wait_blocking(&self) -> Option<Arc<[u8]>> {
        match self.wait_blocking_until(None) {
            Waited::Done(bytes) => Some(bytes),
            Waited::Abandoned | Waited::TimedOut => None,
        }
    }

    /// Blocks until the leader finishes or `deadline` passes.
    pub(crate) fn wait_blocking_until(&self, deadline: Option<Instant>) -> Waited {
        let mut state = self.state.lock();
        loop {
            match &*state {
                State::Loading => match deadline {
                    None => self.cond.wait(&mut state),
                    Some(at) => {
                        if self.cond.wait_until(&mut state, at).timed_out()
                            && matches!(*state, State::Loading)
                        {
                            return Waited::TimedOut;
                        }
                    }
                },
                State::Done(bytes) => return Waited::Done(Arc::clone(bytes)),
                State::Abandoned => return Waited::Abandoned,
            }
        }
    }

    /// Waits (without blocking the executor) until the leader finishes.
    #[cfg(test)]
    pub(crate) async fn wait_async(&self) -> Option<Arc<[u8]>> {
        match self.wait_async_until(None).await {
            Waited::Done(bytes) => Some(bytes),
            Waited::Abandoned | Waited::TimedOut => None,
        }
    }

    /// Waits (without blocking the executor) until the leader finishes or `deadline` passes.
    /// A deadline needs the flight scheduled with the timer ([`Flights::ensure_ticker`]) to
    /// wake the task.
    pub(crate) async fn wait_async_until(&self, deadline: Option<Instant>) -> Waited {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a finish between the check and the await is not lost.
            notified.as_mut().enable();
            if let Some(outcome) = self.finished() {
                return outcome;
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                return Waited::TimedOut;
            }
            notified.await;
        }
    }

    /// Wakes the async waiters if the flight is still loading: one of their deadlines passed,
    /// and they look at the clock. (An ended flight woke them as it ended.)
    pub(crate) fn wake_if_loading(&self) {
        if matches!(*self.state.lock(), State::Loading) {
            self.notify.notify_waiters();
        }
    }

    fn publish(&self, state: State) {
        {
            let mut current = self.state.lock();
            // A flight ends once. Given up at its deadline, it stays given up for its waiters (a
            // value that arrives later is stored by the leader, not handed to them); finished,
            // it stays finished (a deadline passing just after does not send them to load again).
            if !matches!(*current, State::Loading) {
                return;
            }
            *current = state;
        }
        self.cond.notify_all();
        self.notify.notify_waiters();
    }
}

/// How many loads given up at the hard timeout may still run (see [`Flights::hung`]).
pub(crate) const MAX_HUNG: usize = 256;

/// The flights in progress, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
    /// Flights given up at their hard deadline whose leader still runs: a loader that hangs (a
    /// source whose packets are dropped, with no timeout of its own) holds its thread or task
    /// for as long as it hangs, and the key's next caller starts another load. Unbounded, a key
    /// asked every hard timeout left a thread behind each time, for as long as the source
    /// hung, until the process ran out of memory or threads; at [`MAX_HUNG`] no load is started
    /// (see [`too_many_hung`](Self::too_many_hung)).
    hung: std::sync::atomic::AtomicUsize,
    /// Wakes async waiters at their flight's deadlines.
    timer: LoadTimer,
}

/// What a caller of a loading call does after a miss.
pub(crate) enum Role {
    /// Run the loader, then [`Leader::finish`].
    Leader(Leader),
    /// Wait for this flight.
    Waiter(Arc<Flight>),
}

/// The leader's duty to end its flight; ends it as abandoned if dropped unfinished. Owned, so a
/// load can go on on a thread or task of its own after its caller stopped waiting.
pub(crate) struct Leader {
    flights: Arc<Flights>,
    key: String,
    flight: Arc<Flight>,
    done: bool,
}

impl Flights {
    /// Joins the key's flight, or starts one and leads it.
    ///
    /// A flight whose key was written, deleted or invalidated since its load began is not
    /// joined but replaced: its value may be older than the change, and a caller that starts
    /// after a delete returned must not get what was read before it. Its waiters still get its
    /// value; its leader's end removes only its own flight from the map.
    pub(crate) fn join(self: &Arc<Self>, key: &str) -> Role {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            if !flight.overtaken.load(Ordering::SeqCst) {
                return Role::Waiter(Arc::clone(flight));
            }
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Loading),
            cond: Condvar::new(),
            notify: Notify::new(),
            started: Instant::now(),
            ticking: AtomicBool::new(false),
            overtaken: Arc::default(),
            hung: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        });
        map.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(Leader {
            flights: Arc::clone(self),
            key: key.to_owned(),
            flight,
            done: false,
        })
    }

    /// Gives up a flight that passed its hard deadline: the next caller of the key starts a new
    /// load, and the flight's waiters see it abandoned. Its leader may still finish and store a
    /// value, unless the key was written since it began (the newer load's store is a write).
    pub(crate) fn give_up(&self, key: &str, flight: &Arc<Flight>) {
        {
            let mut map = self.map.lock();
            if map.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
                map.remove(key);
            }
            if !flight.ended.load(Ordering::Relaxed) && !flight.hung.swap(true, Ordering::Relaxed) {
                let hung = self.hung.fetch_add(1, Ordering::Relaxed) + 1;
                if hung == MAX_HUNG {
                    tracing::warn!(loads = hung, "loads given up at the hard timeout still run; until one returns, callers are answered as at the hard timeout and no load starts (loader.hard_timeout_ms; the loader hangs: give its source a timeout)");
                }
            }
        }
        flight.publish(State::Abandoned);
    }

    /// Whether [`MAX_HUNG`] loads given up at the hard timeout still run: a leader then starts
    /// no load and answers as at the hard timeout, so a source that hangs costs a bounded
    /// number of threads (or tasks), not one more per hard timeout per key.
    pub(crate) fn too_many_hung(&self) -> bool {
        self.hung.load(Ordering::Relaxed) >= MAX_HUNG
    }

    /// Has the async waiters of `flight` woken at each of `deadlines` while it is loading (once
    /// per flight: every waiter's deadline is among them). The timer's thread starts if none
    /// runs; if the system refuses it, the waiters notice their deadline when the flight ends,
    /// or once a later flight's deadline gets the thread started.
    pub(crate) fn ensure_ticker(&self, flight: &Arc<Flight>, deadlines: Vec<Instant>) {
        if deadlines.is_empty() || flight.ticking.swap(true, Ordering::AcqRel) {
            return;
        }
        self.timer.schedule(flight, deadlines);
    }

    /// Ends and joins the timer's thread, for the manager's shutdown; no deadline is kept after
    /// this.
    pub(crate) fn stop_timer(&self) {
        self.timer.stop();
    }

    /// How many times the timer's thread went to sleep until a deadline.
    #[cfg(test)]
    pub(crate) fn timer_sleeps(&self) -> usize {
        self.timer.sleeps()
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.map.lock().len()
    }
}

impl Leader {
    /// Hands the encoded value to every waiter.
    pub(crate) fn finish(mut self, bytes: Arc<[u8]>) {
        self.end(State::Done(bytes));
    }

    /// The flight this leader ends.
    pub(crate) fn flight(&self) -> &Arc<Flight> {
        &self.flight
    }

    /// For the load's watch of its key (`KeyOrder::watch`), which sets it when the key is
    /// written, deleted or invalidated during the load.
    pub(crate) fn overtaken(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flight.overtaken)
    }

    fn end(&mut self, state: State) {
        if self.done {
            return;
        }
        self.done = true;
        // Forget the flight first: a caller arriving from now on starts afresh (and finds the
        // value in the cache) instead of joining a finished flight.
        {
            let mut map = self.flights.map.lock();
            if map.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight)) {
                map.remove(&self.key);
            }
            self.flight.ended.store(true, Ordering::Relaxed);
            if self.flight.hung.load(Ordering::Relaxed) {
                self.flights.hung.fetch_sub(1, Ordering::Relaxed);
            }
        }
        self.flight.publish(state);
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        self.end(State::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_get_the_leaders_bytes_and_the_flight_is_forgotten() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let Role::Waiter(flight) = flights.join("k") else {
            panic!("second caller must wait")
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(|| flight.wait_blocking());
            leader.finish(Arc::from(&b"v"[..]));
            assert_eq!(waiter.join().unwrap().as_deref(), Some(&b"v"[..]));
        });
        assert_eq!(flights.in_flight(), 0);
        assert!(matches!(flights.join("k"), Role::Leader(_)));
    }

    #[test]
    fn a_flight_given_up_just_after_it_finished_stays_finished() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let flight = Arc::clone(leader.flight());
        leader.finish(Arc::from(&b"v"[..]));
        flights.give_up("k", &flight);
        assert_eq!(flight.wait_blocking().as_deref(), Some(&b"v"[..]));
    }

    #[test]
    fn an_overtaken_flight_takes_no_new_waiters_and_its_waiters_still_get_its_value() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(old) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let Role::Waiter(waiting) = flights.join("k") else {
            panic!("second caller must wait")
        };
        old.overtaken().store(true, Ordering::SeqCst);
        let Role::Leader(new) = flights.join("k") else {
            panic!("a caller after the change must lead a new load")
        };
        old.finish(Arc::from(&b"old"[..]));
        assert_eq!(waiting.wait_blocking().as_deref(), Some(&b"old"[..]));
        assert!(
            matches!(flights.join("k"), Role::Waiter(f) if Arc::ptr_eq(&f, new.flight())),
            "the old leader's end removed the new flight"
        );
    }

    #[test]
    fn a_dropped_leader_abandons_and_frees_the_key() {
        let flights = Arc::new(Flights::default());
        let leader = flights.join("k");
        let Role::Waiter(flight) = flights.join("k") else {
            panic!("second caller must wait")
        };
        drop(leader);
        assert_eq!(flight.wait_blocking(), None);
        assert_eq!(flights.in_flight(), 0);
    }

    #[test]
    fn async_waiters_wake_on_a_sync_finish() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(leader) = flights.join("k") else {
            panic!("first caller must lead")
        };
        let Role::Waiter(flight) = flights.join("k") else {
            panic!("second caller must wait")
        };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(async {
            let wait = flight.wait_async();
            tokio::pin!(wait);
            // Not finished yet: the wait must still be pending after a poll.
            assert!(futures_poll_once(wait.as_mut()).await.is_none());
            leader.finish(Arc::from(&b"x"[..]));
            wait.await
        });
        assert_eq!(got.as_deref(), Some(&b"x"[..]));
    }

    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        let mut f = f;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
                std::task::Poll::Ready(v) => Some(v),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
