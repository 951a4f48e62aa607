//! Deadlines for calls polled in the caller's task ([`IoRuntime::bind`](super::runtime::IoRuntime::bind)),
//! kept by one sweeper task on the I/O thread instead of one tokio timer entry per call.
//!
//! Why not `tokio::time::timeout_at` made inside the I/O runtime's context (what `bind` did):
//! every call then registers and removes an entry in the I/O runtime's timer wheel, whose lock
//! the I/O thread also takes each time it parks and wakes (that is, for every burst of replies
//! it reads). On a loaded two-core machine that cost about a fifth of `get_async` throughput
//! (figures in the module docs of `super::redis`). The caller's own timer
//! would be cheap, but a library cannot tell whether the caller's runtime has one (tokio
//! panics instead of answering), and the async API must work on a runtime without timers or
//! an executor that is not tokio at all.
//!
//! Here a call adds `(deadline, waker)` to a small table when it first has to wait, and takes
//! it out when it ends or is dropped: two short critical sections on a lock that only the
//! callers and the sweeper take. The sweeper sleeps until the earliest deadline in the table
//! and wakes the calls whose deadline has passed; a polled call compares the clock with its
//! deadline itself, so it never ends early and never waits past its deadline by more than
//! the I/O thread's timer resolution. The sweeper is told about a new call only when that
//! call's deadline comes before the sweeper's next look (or the sweeper has nothing to wait
//! for), which under steady load is rare: the deadlines of one level grow with time.

use std::future::Future;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// The calls waiting on one I/O thread, and their deadlines.
#[derive(Debug, Default)]
pub(crate) struct Deadlines {
    table: Mutex<Table>,
    /// Wakes the sweeper for a deadline earlier than its next look.
    sooner: Notify,
}

#[derive(Debug, Default)]
struct Table {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// When the sweeper looks next (`None`: only when told).
    next_look: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    deadline: Instant,
    /// Taken when the sweeper wakes the call.
    waker: Option<Waker>,
}

impl Deadlines {
    /// Runs on the I/O thread for as long as the runtime does: wakes every call whose deadline
    /// has passed, then sleeps until the earliest deadline left.
    pub(crate) async fn sweep(self: Arc<Self>) {
        let mut due = Vec::new();
        loop {
            let next = self.wake_due(Instant::now(), &mut due);
            let sooner = self.sooner.notified();
            match next {
                Some(at) => {
                    let mut sleep = std::pin::pin!(tokio::time::sleep_until(at.into()));
                    let mut sooner = std::pin::pin!(sooner);
                    std::future::poll_fn(|cx| {
                        if sleep.as_mut().poll(cx).is_ready() || sooner.as_mut().poll(cx).is_ready() {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                }
                None => sooner.await,
            }
        }
    }

    /// Wakes the calls due at `now` and returns when to look next.
    fn wake_due(&self, now: Instant, due: &mut Vec<Waker>) -> Option<Instant> {
        let next = {
            let mut table = self.table.lock();
            let mut earliest: Option<Instant> = None;
            for slot in table.slots.iter_mut().flatten() {
                if slot.deadline <= now {
                    due.extend(slot.waker.take());
                } else {
                    earliest = Some(earliest.map_or(slot.deadline, |e| e.min(slot.deadline)));
                }
            }
            // With nothing left to wait for, the sweeper sleeps until a call tells it.
            table.next_look = earliest;
            earliest
        };
        // Woken outside the lock: a waker may run the call's task right here.
        for waker in due.drain(..) {
            waker.wake();
        }
        next
    }
}

/// One call's place in [`Deadlines`]: added when the call first waits, removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    deadlines: Arc<Deadlines>,
    deadline: Instant,
    slot: Option<usize>,
}

impl Registration {
    pub(crate) fn new(deadlines: Arc<Deadlines>, deadline: Instant) -> Self {
        Registration {
            deadlines,
            deadline,
            slot: None,
        }
    }

    /// Whether the deadline has passed.
    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Makes sure `waker` is woken at the deadline.
    pub(crate) fn arm(&mut self, waker: &Waker) {
        let tell_sweeper = {
            let mut table = self.deadlines.table.lock();
            let table = &mut *table;
            match self
                .slot
                .and_then(|i| table.slots.get_mut(i))
                .and_then(Option::as_mut)
            {
                Some(slot) => {
                    if !slot.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                        slot.waker = Some(waker.clone());
                    }
                    false
                }
                None => {
                    let slot = Slot {
                        deadline: self.deadline,
                        waker: Some(waker.clone()),
                    };
                    let index = match table.free.pop() {
                        Some(index) => {
                            if let Some(free) = table.slots.get_mut(index) {
                                *free = Some(slot);
                            }
                            index
                        }
                        None => {
                            table.slots.push(Some(slot));
                            table.slots.len() - 1
                        }
                    };
                    self.slot = Some(index);
                    table.next_look.is_none_or(|next| self.deadline < next)
                }
            }
        };
        if tell_sweeper {
            self.deadlines.sooner.notify_one();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(index) = self.slot.take() {
            let mut table = self.deadlines.table.lock();
            if let Some(slot) = table.slots.get_mut(index) {
                *slot = None;
                table.free.push(index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;
    use std::time::Duration;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_sweep_wakes_only_calls_past_their_deadline_and_plans_the_next_look() {
        let deadlines = Arc::new(Deadlines::default());
        let now = Instant::now();
        let (early, late) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let mut a = Registration::new(Arc::clone(&deadlines), now + Duration::from_millis(10));
        let mut b = Registration::new(Arc::clone(&deadlines), now + Duration::from_secs(10));
        a.arm(&Waker::from(Arc::clone(&early)));
        b.arm(&Waker::from(Arc::clone(&late)));
        let mut due = Vec::new();
        assert_eq!(
            deadlines.wake_due(now, &mut due),
            Some(now + Duration::from_millis(10))
        );
        assert_eq!(early.0.load(Ordering::SeqCst), 0);
        let next = deadlines.wake_due(now + Duration::from_millis(10), &mut due);
        assert_eq!(early.0.load(Ordering::SeqCst), 1);
        assert_eq!(late.0.load(Ordering::SeqCst), 0);
        assert_eq!(next, Some(now + Duration::from_secs(10)));
        // A dropped call leaves the table; its slot is reused.
        drop(b);
        let mut c = Registration::new(Arc::clone(&deadlines), now + Duration::from_secs(20));
        c.arm(&Waker::from(Arc::clone(&late)));
        assert_eq!(deadlines.table.lock().slots.len(), 2);
        drop((a, c));
        assert!(deadlines.table.lock().slots.iter().all(Option::is_none));
    }

    #[test]
    fn a_call_due_before_the_next_look_tells_the_sweeper() {
        let deadlines = Arc::new(Deadlines::default());
        let now = Instant::now();
        deadlines.table.lock().next_look = Some(now + Duration::from_secs(5));
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut later = Registration::new(Arc::clone(&deadlines), now + Duration::from_secs(6));
        later.arm(&waker);
        {
            // `enable` is true only if a wake-up was stored for the sweeper.
            let mut told = std::pin::pin!(deadlines.sooner.notified());
            assert!(!told.as_mut().enable(), "a later call woke the sweeper");
        }
        let mut sooner = Registration::new(Arc::clone(&deadlines), now + Duration::from_secs(1));
        sooner.arm(&waker);
        let mut fresh = std::pin::pin!(deadlines.sooner.notified());
        assert!(
            fresh.as_mut().enable(),
            "an earlier call did not wake the sweeper"
        );
    }
}
