//! Stampede protection for `get_or_set_with`: one loader per key at a time, across threads and
//! tasks alike.
//!
//! The first caller that misses becomes the leader of a [`Flight`] for the key; later callers
//! wait on it, blocking threads on a condition variable and async tasks on a
//! [`tokio::sync::Notify`], so sync and async callers of one key share one load. The leader
//! publishes the encoded value, which waiters decode (no `Clone` bound on the value type). If the
//! leader's loader fails, or the leader panics or its future is dropped, the flight ends as
//! abandoned and waiters start over: one of them becomes the next leader. Loader errors are
//! therefore not shared (they need not be `Clone`); each caller sees its own.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
enum State {
    Loading,
    Done(Arc<[u8]>),
    Abandoned,
}

/// One key's load in progress.
#[derive(Debug)]
pub(crate) struct Flight {
    state: Mutex<State>,
    cond: Condvar,
    notify: Notify,
}

impl Flight {
    fn finished(&self) -> Option<Option<Arc<[u8]>>> {
        match &*self.state.lock() {
            State::Loading => None,
            State::Done(bytes) => Some(Some(Arc::clone(bytes))),
            State::Abandoned => Some(None),
        }
    }

    /// Blocks until the leader finishes: `Some(bytes)` or `None` if it gave up.
    pub(crate) fn wait_blocking(&self) -> Option<Arc<[u8]>> {
        let mut state = self.state.lock();
        loop {
            match &*state {
                State::Loading => self.cond.wait(&mut state),
                State::Done(bytes) => return Some(Arc::clone(bytes)),
                State::Abandoned => return None,
            }
        }
    }

    /// Waits (without blocking the executor) until the leader finishes.
    pub(crate) async fn wait_async(&self) -> Option<Arc<[u8]>> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a finish between the check and the await is not lost.
            notified.as_mut().enable();
            if let Some(outcome) = self.finished() {
                return outcome;
            }
            notified.await;
        }
    }

    fn publish(&self, state: State) {
        *self.state.lock() = state;
        self.cond.notify_all();
        self.notify.notify_waiters();
    }
}

/// The flights in progress, by key.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
}

/// What a caller of `get_or_set_with` does after a miss.
pub(crate) enum Role<'a> {
    /// Run the loader, then [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for this flight.
    Waiter(Arc<Flight>),
}

/// The leader's duty to end its flight; ends it as abandoned if dropped unfinished.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    flight: Arc<Flight>,
    done: bool,
}

impl Flights {
    /// Joins the key's flight, or starts one and leads it.
    pub(crate) fn join(&self, key: &str) -> Role<'_> {
        let mut map = self.map.lock();
        if let Some(flight) = map.get(key) {
            return Role::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Loading),
            cond: Condvar::new(),
            notify: Notify::new(),
        });
        map.insert(key.to_owned(), Arc::clone(&flight));
        Role::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            flight,
            done: false,
        })
    }

    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.map.lock().len()
    }
}

impl Leader<'_> {
    /// Hands the encoded value to every waiter.
    pub(crate) fn finish(mut self, bytes: Arc<[u8]>) {
        self.end(State::Done(bytes));
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
        }
        self.flight.publish(state);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.end(State::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_get_the_leaders_bytes_and_the_flight_is_forgotten() {
        let flights = Flights::default();
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
    fn a_dropped_leader_abandons_and_frees_the_key() {
        let flights = Flights::default();
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
        let flights = Flights::default();
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
