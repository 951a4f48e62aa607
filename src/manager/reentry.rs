//! A loader that makes a loading call for the key it loads: that call finds the key's flight
//! in progress and would wait for it, but the flight ends only when the loader returns, which
//! waits for the call. Such a call is refused instead (`caught::reentered`), naming the key.
//!
//! A loader knows itself by the flights it leads: a loader run on a thread (the caller's, or a
//! load thread of its own) lists its flight in a thread-local while it runs; a loader's future
//! carries its flight, and those of the loaders it runs inside, in a task-local, so it is known
//! on whichever thread polls it. A flight is known by its address, unique while its leader holds
//! it, as it does for as long as the loader runs.

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

/// Whether the caller runs inside the loader of `flight`.
pub(super) fn inside(flight: &Arc<Flight>) -> bool {
    let id = id(flight);
    ON_THREAD.with(|ids| ids.borrow().contains(&id))
        || IN_FUTURE.try_with(|ids| ids.contains(&id)).unwrap_or(false)
}

/// Runs `load`, the loader of `flight`, on this thread.
pub(super) fn running<R>(flight: &Arc<Flight>, load: impl FnOnce() -> R) -> R {
    /// Taken off the list however the loader ends, its unwinding included.
    struct Ends;
    impl Drop for Ends {
        fn drop(&mut self) {
            ON_THREAD.with(|ids| ids.borrow_mut().pop());
        }
    }
    ON_THREAD.with(|ids| ids.borrow_mut().push(id(flight)));
    let _ends = Ends;
    load()
}

/// `load`, the loader's future of `flight`, known as such wherever it is polled.
pub(super) fn running_async<F: Future>(flight: &Arc<Flight>, load: F) -> TaskLocalFuture<Vec<usize>, F> {
    let mut ids = IN_FUTURE.try_with(Clone::clone).unwrap_or_default();
    ids.push(id(flight));
    IN_FUTURE.scope(ids, load)
}
