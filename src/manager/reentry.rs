//! A loader that makes a loading call for the key it loads, or for one whose loader it runs
//! inside (a loader of `a` loading `b`, whose loader loads `a`): that call finds the key's
//! flight in progress and would wait for it, but the flight ends only when its loader returns,
//! which waits for the call. Such a call is refused instead (`caught::reentered`), naming the
//! key.
//!
//! A loader knows itself by the flights it runs inside: the caller's own (those of the loaders
//! the call was made from) and its own. A loader run on a thread (the caller's, or a load thread
//! of its own) lists them in a thread-local while it runs; a loader's future carries them in a
//! task-local, so they are known on whichever thread polls it. They are taken where the load
//! starts, in the caller's context: a load spawned on a thread or task of its own inherits
//! nothing there. A flight is known by its address, unique while its leader holds it, as it
//! does for as long as its loader runs.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;

use tokio::task::futures::TaskLocalFuture;

use super::loader::Flight;

thread_local! {
    static ON_THREAD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

tokio::task_local! {
    static IN_FUTURE: Vec<usize>;
}

fn id(flight: &Arc<Flight>) -> usize {
    Arc::as_ptr(flight) as usize
}

/// The flights of the loaders the caller runs inside.
fn around() -> Vec<usize> {
    // `try_with`: a loading call made from a thread-local's destructor, after this one's, finds
    // none, where `with` panicked.
    let mut ids = ON_THREAD.try_with(|ids| ids.borrow().clone()).unwrap_or_default();
    // Outside a task-local's scope (a plain thread) there is none.
    let _ = IN_FUTURE.try_with(|more| ids.extend_from_slice(more));
    ids
}

/// Whether the caller runs inside the loader of `flight`.
pub(super) fn inside(flight: &Arc<Flight>) -> bool {
    around().contains(&id(flight))
}

/// The flights a loader of `flight`, started here, runs inside: the caller's, and `flight`.
pub(super) struct Loading(Vec<usize>);

impl Loading {
    pub(super) fn of(flight: &Arc<Flight>) -> Loading {
        let mut ids = around();
        ids.push(id(flight));
        Loading(ids)
    }

    /// Runs `load` on this thread, as the loader.
    pub(super) fn run<R>(self, load: impl FnOnce() -> R) -> R {
        /// Puts back the thread's list however the loader ends, its unwinding included.
        struct Restore(Vec<usize>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let _ = ON_THREAD.try_with(|ids| std::mem::swap(&mut *ids.borrow_mut(), &mut self.0));
            }
        }
        let mut ids = self.0;
        let _ = ON_THREAD.try_with(|current| std::mem::swap(&mut *current.borrow_mut(), &mut ids));
        let _restore = Restore(ids);
        load()
    }

    /// `load`, the loader's future, known as such wherever it is polled.
    pub(super) fn run_async<F: Future>(self, load: F) -> TaskLocalFuture<Vec<usize>, F> {
        IN_FUTURE.scope(self.0, load)
    }
}
