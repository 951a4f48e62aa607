//! The one stop signal of a set of background threads and tasks: their owner fires it once, when
//! it is dropped, and every one of them hears it, however it sleeps.
//!
//! This is the shape of a drop guard: the owner (a manager's `Workers`, a file store, an I/O
//! thread) holds the work's handles, the workers hold clones of its [`Shutdown`], and the owner's
//! `Drop` fires it and then joins. Three ways of listening cover every sleeper in the crate:
//! - a thread with nothing else to wait for sleeps in [`Shutdown::sleep`];
//! - a thread that sleeps on a condition variable of its own (a work queue's) checks
//!   [`Shutdown::is_fired`] under its queue's lock before each wait, and registers with
//!   [`Shutdown::on_fire`] a wake-up that takes that lock to notify. Firing sets the flag before
//!   running the wake-ups, so a thread between its check and its wait cannot miss it;
//! - a task awaits [`Shutdown::fired`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// A wake-up registered with [`Shutdown::on_fire`].
type Wake = Box<dyn FnOnce() + Send>;

/// A stop signal, shared by clones; see the module docs.
#[derive(Clone, Default)]
pub(crate) struct Shutdown(Arc<Signal>);

#[derive(Default)]
struct Signal {
    /// Read without a lock on every loop turn of every listener.
    fired: AtomicBool,
    /// The wake-ups still to run; `None` once fired (a late registration runs at once).
    wakes: Mutex<Option<Vec<Wake>>>,
    /// [`Shutdown::sleep`] waits here, under `wakes`' lock.
    sleepers: Condvar,
    tasks: tokio::sync::Notify,
    /// Threads waiting in [`Shutdown::sleep`] now: a test's event for "the thread reached its
    /// sleep", where a sleep of the test's own would only hope it had.
    #[cfg(test)]
    asleep: std::sync::atomic::AtomicUsize,
}

impl Shutdown {
    /// Fires the signal: every listener is told, at once. Firing again does nothing.
    pub(crate) fn fire(&self) {
        let wakes = {
            let mut wakes = self.0.wakes.lock();
            // Under the lock, so that a sleeper that checked the flag is already waiting.
            if self.0.fired.swap(true, Ordering::SeqCst) {
                return;
            }
            self.0.sleepers.notify_all();
            wakes.take()
        };
        self.0.tasks.notify_waiters();
        // Outside our lock: each wake-up takes its own queue's lock.
        for wake in wakes.into_iter().flatten() {
            wake();
        }
    }

    /// Whether the signal was fired.
    pub(crate) fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// Sleeps for `timeout` or until the signal is fired; `true` if it was.
    pub(crate) fn sleep(&self, timeout: Duration) -> bool {
        let mut wakes = self.0.wakes.lock();
        if !self.is_fired() {
            #[cfg(test)]
            self.0.asleep.fetch_add(1, Ordering::SeqCst);
            let _ = self.0.sleepers.wait_for(&mut wakes, timeout);
            #[cfg(test)]
            self.0.asleep.fetch_sub(1, Ordering::SeqCst);
        }
        self.is_fired()
    }

    /// How many threads wait in [`Shutdown::sleep`] now.
    #[cfg(test)]
    pub(crate) fn asleep(&self) -> usize {
        self.0.asleep.load(Ordering::SeqCst)
    }

    /// Registers how to wake a thread that sleeps on a lock and condition variable of its own:
    /// `wake` runs once, when the signal is fired (at once if it already was). It must take the
    /// lock the thread checks [`Shutdown::is_fired`] under before it notifies.
    pub(crate) fn on_fire(&self, wake: impl FnOnce() + Send + 'static) {
        let mut wakes = self.0.wakes.lock();
        if self.is_fired() {
            drop(wakes);
            wake();
            return;
        }
        wakes.get_or_insert_with(Vec::new).push(Box::new(wake));
    }

    /// Completes once the signal is fired.
    // Awaited by the I/O thread, which only a network level starts.
    #[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
    pub(crate) async fn fired(&self) {
        let notified = self.0.tasks.notified();
        tokio::pin!(notified);
        // Registered before the check, so a firing in between is not missed.
        notified.as_mut().enable();
        if self.is_fired() {
            return;
        }
        notified.await;
    }
}

impl std::fmt::Debug for Shutdown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shutdown")
            .field("fired", &self.is_fired())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_sleeper_wakes_when_fired_not_at_its_timeout() {
        let shutdown = Shutdown::default();
        let theirs = shutdown.clone();
        let sleeper = std::thread::spawn(move || {
            let started = Instant::now();
            (theirs.sleep(Duration::from_secs(3600)), started.elapsed())
        });
        shutdown.fire();
        let (fired, slept) = sleeper.join().unwrap();
        assert!(fired);
        assert!(slept < Duration::from_secs(60), "slept {slept:?}");
    }

    /// The count tests wait on, where they would otherwise sleep and hope a thread got there.
    #[test]
    fn a_sleeper_is_counted_asleep_until_it_wakes() {
        let shutdown = Shutdown::default();
        let theirs = shutdown.clone();
        let sleeper = std::thread::spawn(move || theirs.sleep(Duration::from_secs(3600)));
        let deadline = Instant::now() + Duration::from_secs(10);
        while shutdown.asleep() == 0 {
            assert!(Instant::now() < deadline, "the sleeper was never counted");
            std::thread::yield_now();
        }
        assert_eq!(shutdown.asleep(), 1);
        shutdown.fire();
        assert!(sleeper.join().unwrap());
        assert_eq!(shutdown.asleep(), 0, "a woken sleeper is still counted");
    }

    #[test]
    fn a_sleep_that_times_out_says_the_signal_was_not_fired() {
        let shutdown = Shutdown::default();
        assert!(!shutdown.sleep(Duration::from_millis(1)));
        assert!(!shutdown.is_fired());
    }

    #[test]
    fn every_wake_up_runs_once_and_a_late_one_runs_at_once() {
        let shutdown = Shutdown::default();
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for _ in 0..3 {
            let runs = Arc::clone(&runs);
            shutdown.on_fire(move || {
                runs.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        shutdown.fire();
        shutdown.fire();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let late = Arc::clone(&runs);
        shutdown.on_fire(move || {
            late.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 13);
    }

    #[test]
    fn a_task_hears_a_firing_from_another_thread_and_one_before_it_awaited() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let shutdown = Shutdown::default();
        let theirs = shutdown.clone();
        let firer = std::thread::spawn(move || theirs.fire());
        rt.block_on(shutdown.fired());
        firer.join().unwrap();
        // Already fired: returns at once.
        rt.block_on(shutdown.fired());
        assert!(shutdown.is_fired());
    }
}
