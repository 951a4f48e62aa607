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
//! joins the threads and sends the write-behind queue, on the caller's thread, in order. Work
//! that reaches the state through a weak handle (a load) passes the gate before it takes the
//! state ([`Pass::enter_weak`]), so that it never holds it uncounted.

use std::sync::{Arc, Weak};

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
        #[cfg(test)]
        tests::hold_before_entering();
        let mut state = self.state.lock();
        if state.closed {
            return false;
        }
        state.running += 1;
        true
    }

    fn leave(&self) {
        {
            let mut state = self.state.lock();
            state.running = state.running.saturating_sub(1);
            if state.running == 0 {
                self.ended.notify_all();
            }
        }
        #[cfg(test)]
        tests::hold_if_asked();
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

    /// [`enter`](Self::enter) for work that holds the shared state weakly (a load apart from its
    /// caller): counted in before it takes the state, so that it never holds it uncounted. Taken
    /// first and then refused by a closing gate, the state was held, uncounted, while the last
    /// handle's drop went on without waiting for it, and released afterwards on the work's
    /// thread if the drop ended meanwhile (the file store L1 with it, still locked for a
    /// moment after the drop had returned).
    pub(crate) fn enter_weak(apart: &Arc<Apart>, shared: &Weak<Shared>) -> Option<Pass> {
        if !apart.enter() {
            return None;
        }
        let counted = Counted(Arc::clone(apart));
        Some(Pass {
            shared: shared.upgrade()?,
            _counted: counted,
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
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::sync::Barrier;

    use super::*;

    thread_local! {
        /// Set by a piece of work on its own thread: once counted out, it meets this barrier
        /// twice, and so stays at that point (the shutdown no longer waits for it) until the
        /// test lets it go. Whatever it still held there would outlive the shutdown: the window
        /// is forced open, where the scheduler opened it only now and then.
        static HOLD_WHEN_COUNTED_OUT: RefCell<Option<Arc<Barrier>>> = const { RefCell::new(None) };
        /// The same, for a piece of work about to be counted in: it stays there, holding what
        /// it took before it asked, until the test lets it go.
        static HOLD_BEFORE_ENTERING: RefCell<Option<Arc<Barrier>>> = const { RefCell::new(None) };
    }

    /// The hook [`Apart::enter`] calls before it looks at the gate.
    pub(super) fn hold_before_entering() {
        if let Some(hold) = HOLD_BEFORE_ENTERING.with(|h| h.borrow_mut().take()) {
            hold.wait();
            hold.wait();
        }
    }

    /// Makes this thread's next count-in hold at `hold`, before it looks at the gate (see
    /// [`hold_before_entering`]).
    pub(crate) fn hold_this_thread_before_entering(hold: Arc<Barrier>) {
        HOLD_BEFORE_ENTERING.with(|h| *h.borrow_mut() = Some(hold));
    }

    /// Makes this thread's next count-out hold at `hold` (see [`hold_if_asked`]).
    pub(crate) fn hold_this_thread_when_counted_out(hold: Arc<Barrier>) {
        HOLD_WHEN_COUNTED_OUT.with(|h| *h.borrow_mut() = Some(hold));
    }

    /// The hook [`Apart::leave`] calls once it has counted a piece of work out.
    pub(super) fn hold_if_asked() {
        if let Some(hold) = HOLD_WHEN_COUNTED_OUT.with(|h| h.borrow_mut().take()) {
            hold.wait();
            hold.wait();
        }
    }

    /// A manager over the file store `open` opens: the tests below reopen it right after the
    /// manager's drop, which finds it locked if anything still holds the manager.
    fn over_a_file_store(open: impl Fn() -> crate::Result<crate::FileStore>) -> CacheManager {
        CacheManager::builder()
            .local(Arc::new(open().unwrap()))
            .build()
            .unwrap()
    }

    /// A load apart from its caller reaches the manager through a weak handle (its store, and
    /// the end of its watch after it). A load whose store ended while the last handle was being
    /// dropped took the shared state first and only then asked the gate, which refused it: for
    /// that moment it held the state, uncounted, so the drop did not wait for it, and if the
    /// drop ended meanwhile the state (the file store L1 with it) was released afterwards, on
    /// the load's thread; a program that reopened the store right after the drop found it
    /// locked, now and then. Held here just before the gate, such a load holds nothing yet:
    /// the drop releases the store, and a reopen at once finds it free.
    #[test]
    fn a_load_asking_the_gate_during_the_drop_holds_nothing_of_the_manager() {
        let dir = tempfile::tempdir().unwrap();
        let open = || crate::FileStore::open(dir.path(), crate::FileStoreOptions::default());
        let cache = over_a_file_store(open);
        let weak = cache.downgrade_for_test();
        let hold = Arc::new(Barrier::new(2));
        let load = {
            let hold = Arc::clone(&hold);
            std::thread::spawn(move || {
                HOLD_BEFORE_ENTERING.with(|h| *h.borrow_mut() = Some(hold));
                weak.upgrade_for_test()
            })
        };
        // The load is at the gate, and held there until the second meeting.
        hold.wait();
        drop(cache);
        let reopened = open();
        hold.wait();
        let entered = load.join().unwrap();
        assert!(!entered, "a load entered after the manager's drop");
        reopened.unwrap_or_else(|e| {
            panic!("the store could not be reopened right after the manager's drop: {e}")
        });
    }

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

    /// The shutdown waits for the work apart from its caller to be counted out; a piece of work
    /// that still held the shared state then (counted out first, as an early build did) let go of
    /// it after the manager's drop had returned, and the file store L1 it held stayed locked: a
    /// program that reopened the store right after the drop failed now and then. Held right after
    /// it is counted out, the work here holds nothing of the manager's any more, so the drop
    /// releases the store, and a reopen at once finds it free.
    #[test]
    fn a_dropped_manager_lets_go_of_its_store_before_the_drop_returns() {
        let dir = tempfile::tempdir().unwrap();
        let open = || crate::FileStore::open(dir.path(), crate::FileStoreOptions::default());
        let cache = over_a_file_store(open);
        cache.set_raw("k", b"v", None).unwrap();
        let shared = Arc::downgrade(&cache.shared);
        let pass = Pass::enter(Arc::clone(&cache.shared)).unwrap();
        let hold = Arc::new(Barrier::new(2));
        let work = {
            let hold = Arc::clone(&hold);
            std::thread::spawn(move || {
                HOLD_WHEN_COUNTED_OUT.with(|h| *h.borrow_mut() = Some(hold));
                drop(pass);
            })
        };
        // The work is counted out, and held there until the second meeting.
        hold.wait();
        drop(cache);
        let reopened = open();
        let still_held = shared.upgrade().is_some();
        hold.wait();
        work.join().unwrap();
        let store = reopened.unwrap_or_else(|e| {
            panic!("the store could not be reopened right after the manager's drop: {e}")
        });
        assert!(
            !still_held,
            "the manager's shared state outlived its drop, held by work counted out"
        );
        assert_eq!(store.stats().live_items, 1, "{:?}", store.stats());
    }
}
