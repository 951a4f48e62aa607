//! Work run for a caller on a thread of its own, which may outlive the caller's handle: a load
//! that goes on after its caller gave up waiting (then stores its value), and the async forms of
//! `flush`, `replay_now` and the write-behind drain of `invalidate_prefix`.
//!
//! Such work holds the shared state, not the manager's background threads: held as a handle, they
//! would make the work, not the caller, the last one to let go, and the whole shutdown (the
//! threads joined, the write-behind queue sent) would run later on that thread, or never if the
//! process exited first. Instead the last handle's drop closes this gate (work not begun yet does
//! not begin: a load's value is then not stored), fires the stop signal (a replay stops at its
//! next op), and waits for the work in progress, each piece bounded by the L2 timeout, before it
//! joins the threads and sends the write-behind queue, on the caller's thread, in order.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::policy::Shared;
use super::CacheManager;

#[derive(Debug, Default)]
struct State {
    running: usize,
    closed: bool,
}

/// The gate of the work apart from its caller; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Apart {
    state: Mutex<State>,
    ended: Condvar,
}

impl Apart {
    /// Counts one piece of work in; `false` once the manager is shutting down.
    fn enter(&self) -> bool {
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.running += 1;
        true
    }

    fn leave(&self) {
        let mut state = self.state.lock();
        state.running = state.running.saturating_sub(1);
        if state.running == 0 {
            self.ended.notify_all();
        }
    }

    /// No work begins from now on.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
    }

    /// Waits for the work in progress to end.
    pub(crate) fn wait(&self) {
        let mut state = self.state.lock();
        while state.running > 0 {
            self.ended.wait(&mut state);
        }
    }
}

/// One piece of work apart from its caller, with the shared state it works on, counted in
/// while it lives.
pub(crate) struct Pass {
    /// Declared first, so let go of first: the work ends only once it holds none of the shared
    /// state, and the shutdown that waits for it lets go of the last of it on the caller's
    /// thread. Counted out first, the work let go of it a moment after the shutdown had
    /// returned, and a store the caller reopened right after the drop could still be locked.
    shared: Arc<Shared>,
    _counted: Counted,
}

/// A piece of work counted in by [`Apart`]; counted out on drop.
struct Counted(Arc<Apart>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl Pass {
    /// A pass for work on `shared`, or `None` once its manager is shutting down.
    pub(crate) fn enter(shared: Arc<Shared>) -> Option<Pass> {
        let apart = Arc::clone(&shared.apart);
        apart.enter().then(|| Pass {
            shared,
            _counted: Counted(apart),
        })
    }

    /// The manager the work runs on: its shared state, not its background threads (see the
    /// module docs), so it never runs their shutdown.
    pub(crate) fn manager(&self) -> CacheManager {
        CacheManager {
            shared: Arc::clone(&self.shared),
            _workers: None,
        }
    }

    /// The shared state.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_refuses_new_work_and_waiting_ends_with_the_last_piece() {
        let apart = std::sync::Arc::new(Apart::default());
        assert!(apart.enter());
        apart.close();
        assert!(!apart.enter(), "work began after the gate closed");
        let other = std::sync::Arc::clone(&apart);
        let waiter = std::thread::spawn(move || other.wait());
        apart.leave();
        waiter.join().unwrap_or_else(|_| panic!("the wait panicked"));
        apart.wait();
    }
}
