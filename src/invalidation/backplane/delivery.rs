//! The handler's own thread (`uno-cache-invalidate`): what the subscriber receives is handed
//! over in the order it came, and the handler is called there.
//!
//! The subscriber runs on an I/O thread it shares with the publisher and, inside a manager, with
//! the L2 and the tag store. A manager's handler does disk work: one message of 2,000 keys is
//! 2,000 tombstones, each fsynced under `durability = "every_write"`, and a prefix lists every
//! key of the store. Called there, it held every L2 call and publish of the process, and the
//! subscriber's own `PING`s, whose answers are due within a third of the staleness bound: a
//! healthy subscription was declared lost, and the whole L1 made suspect.
//!
//! The I/O thread never waits for the handler. While the handler is behind by more than the
//! staleness bound (it has had events waiting and handled none for that long), or [`QUEUE`]
//! events wait, what arrives is dropped instead, and before its next event the handler is told
//! of a loss and a restore: its L1 is distrusted, as after a lost subscription, so what it did
//! not apply in time is never served unchecked for longer than the bound (and one event's
//! handling). Counted in [`BackplaneStats::handler_lags`](super::BackplaneStats::handler_lags).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::{now, InvalidationHandler, InvalidationMessage, Outage, Shared};
use crate::error::{Error, Result};

/// Events waiting for the handler at most.
const QUEUE: usize = 1024;

/// How often the thread looks whether it is asked to stop while no event comes.
const STOP_POLL: Duration = Duration::from_millis(20);

/// What the subscriber hands over, in its order.
enum Event {
    Invalidate(InvalidationMessage),
    Lost(SystemTime),
    Restored(Outage),
}

/// What the subscriber's side and the thread share.
struct State {
    /// Events handed over and not yet handled.
    pending: AtomicUsize,
    /// When the handler last finished an event, or was handed one while none waited, in ms
    /// since `epoch`.
    progress_ms: AtomicU64,
    epoch: Instant,
    /// Events were dropped: the handler is to be told of a loss and a restore first.
    behind: AtomicBool,
    /// The last moment every event was handed over (what the loss reports as `since`).
    all_handed_at: Mutex<SystemTime>,
    /// The backplane is stopping: the thread ends once nothing waits.
    stopping: AtomicBool,
    staleness_bound: Duration,
}

impl State {
    fn millis_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the handler has had events waiting and finished none for the staleness bound.
    fn lagging(&self) -> bool {
        let bound = u64::try_from(self.staleness_bound.as_millis()).unwrap_or(u64::MAX);
        self.pending.load(Ordering::Acquire) > 0
            && self
                .millis_since_epoch()
                .saturating_sub(self.progress_ms.load(Ordering::Acquire))
                >= bound
    }
}

/// The handler the subscriber calls: hands each call to the thread, never waiting.
struct Forwarder {
    tx: SyncSender<Event>,
    state: Arc<State>,
    shared: Arc<Shared>,
}

impl Forwarder {
    fn hand_over(&self, event: Event) {
        let s = &self.state;
        if !s.behind.load(Ordering::Acquire) && !s.lagging() {
            let waiting = s.pending.fetch_add(1, Ordering::AcqRel);
            match self.tx.try_send(event) {
                Ok(()) => {
                    if waiting == 0 {
                        // The handler owes an event from now on: its lag counts from here.
                        s.progress_ms.store(s.millis_since_epoch(), Ordering::Release);
                    }
                    *s.all_handed_at.lock() = now();
                    return;
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    s.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        if !s.behind.swap(true, Ordering::AcqRel) {
            Shared::bump(&self.shared.handler_lags);
            tracing::warn!(channel = %self.shared.channel, "the invalidation handler fell behind the staleness bound; what arrives meanwhile is dropped, and L1 is distrusted before its next event");
        }
    }
}

impl InvalidationHandler for Forwarder {
    fn invalidate(&self, message: &InvalidationMessage) {
        self.hand_over(Event::Invalidate(message.clone()));
    }

    fn subscription_lost(&self, since: SystemTime) {
        self.hand_over(Event::Lost(since));
    }

    fn subscription_restored(&self, outage: &Outage) {
        self.hand_over(Event::Restored(*outage));
    }
}

/// The running thread.
pub(super) struct Delivery {
    thread: Mutex<Option<JoinHandle<()>>>,
    state: Arc<State>,
}

impl Delivery {
    /// Starts the thread calling `handler`; returns it and the handler the subscriber is to call.
    pub(super) fn start(
        handler: Arc<dyn InvalidationHandler>,
        shared: Arc<Shared>,
        staleness_bound: Duration,
    ) -> Result<(Delivery, Arc<dyn InvalidationHandler>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let state = Arc::new(State {
            pending: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            behind: AtomicBool::new(false),
            all_handed_at: Mutex::new(now()),
            stopping: AtomicBool::new(false),
            staleness_bound,
        });
        let (thread_state, thread_shared) = (Arc::clone(&state), Arc::clone(&shared));
        let thread = std::thread::Builder::new()
            .name("uno-cache-invalidate".into())
            .spawn(move || deliver(&rx, &*handler, &thread_state, &thread_shared))
            .map_err(|e| Error::Backend {
                level: super::LEVEL,
                op: "connect",
                reason: format!("could not start the thread of the invalidation handler: {e}"),
            })?;
        let forwarder = Forwarder {
            tx,
            state: Arc::clone(&state),
            shared,
        };
        Ok((
            Delivery {
                thread: Mutex::new(Some(thread)),
                state,
            },
            Arc::new(forwarder),
        ))
    }

    /// Waits until the handler has handled what it was handed, then ends the thread. Once the
    /// subscriber has stopped: a manager's state, held by the handler while it handles an
    /// event, is then released before this returns, never later on the thread.
    pub(super) fn finish(&self) {
        self.state.stopping.store(true, Ordering::Release);
        let Some(thread) = self.thread.lock().take() else {
            return;
        };
        // The handler may hold the last handle on what owns the backplane (a manager it
        // upgraded a weak reference to), so this can run on the thread itself: it ends on its
        // own once the events are handled.
        if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
            tracing::error!("the thread of the backplane's invalidation handler panicked");
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Calls the handler for each event, catching (and counting) a panic so that the next event is
/// still handled, until the subscriber is gone or the backplane stops with nothing waiting.
fn deliver(rx: &Receiver<Event>, handler: &dyn InvalidationHandler, state: &State, shared: &Shared) {
    loop {
        let event = match rx.recv_timeout(STOP_POLL) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) if state.stopping.load(Ordering::Acquire) => return,
            Err(RecvTimeoutError::Timeout) => {
                catch_up(handler, state, shared);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        catch_up(handler, state, shared);
        match &event {
            Event::Invalidate(message) => call(shared, "invalidate", || handler.invalidate(message)),
            Event::Lost(since) => call(shared, "subscription_lost", || handler.subscription_lost(*since)),
            Event::Restored(outage) => call(shared, "subscription_restored", || {
                handler.subscription_restored(outage);
            }),
        }
        state.pending.fetch_sub(1, Ordering::AcqRel);
        state
            .progress_ms
            .store(state.millis_since_epoch(), Ordering::Release);
    }
}

/// If events were dropped, tells the handler of a loss and a restore, as for a subscription
/// lost and found again at once: what it did not apply is distrusted.
fn catch_up(handler: &dyn InvalidationHandler, state: &State, shared: &Shared) {
    if !state.behind.swap(false, Ordering::AcqRel) {
        return;
    }
    let since = *state.all_handed_at.lock();
    call(shared, "subscription_lost", || handler.subscription_lost(since));
    let at = now();
    let outage = Outage {
        since,
        detected_at: at,
        restored_at: at,
    };
    call(shared, "subscription_restored", || {
        handler.subscription_restored(&outage)
    });
}

fn call(shared: &Shared, what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        Shared::bump(&shared.handler_panics);
        tracing::error!(
            call = what,
            "the backplane's invalidation handler panicked; continuing"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::invalidation::{InstanceId, Invalidation};
    use std::sync::mpsc::{channel, Sender};

    #[derive(Debug, PartialEq)]
    enum Seen {
        Message(u64),
        Lost,
        Restored,
    }

    /// Records every call; the first `invalidate` waits until the test lets it go.
    struct Recording {
        seen: Mutex<Vec<Seen>>,
        entered: Mutex<Option<Sender<()>>>,
        release: Mutex<Option<Receiver<()>>>,
    }

    impl InvalidationHandler for Recording {
        fn invalidate(&self, message: &InvalidationMessage) {
            if let Some(entered) = self.entered.lock().take() {
                let _ = entered.send(());
                if let Some(release) = self.release.lock().take() {
                    let _ = release.recv();
                }
            }
            self.seen.lock().push(Seen::Message(message.seq));
        }

        fn subscription_lost(&self, _since: SystemTime) {
            self.seen.lock().push(Seen::Lost);
        }

        fn subscription_restored(&self, _outage: &Outage) {
            self.seen.lock().push(Seen::Restored);
        }
    }

    struct Rig {
        handler: Arc<Recording>,
        forwarder: Arc<dyn InvalidationHandler>,
        delivery: Delivery,
        shared: Arc<Shared>,
        entered: Receiver<()>,
        release: Sender<()>,
    }

    fn rig(bound: Duration) -> Rig {
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel();
        let handler = Arc::new(Recording {
            seen: Mutex::new(Vec::new()),
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(Some(release_rx)),
        });
        let shared = Arc::new(Shared::new(InstanceId::random(), "test".to_owned()));
        let (delivery, forwarder) = Delivery::start(handler.clone(), Arc::clone(&shared), bound).unwrap();
        Rig {
            handler,
            forwarder,
            delivery,
            shared,
            entered,
            release,
        }
    }

    fn message(seq: u64) -> InvalidationMessage {
        InvalidationMessage {
            origin: InstanceId::random(),
            seq,
            invalidation: Invalidation::Keys(vec![format!("k{seq}")]),
        }
    }

    /// Handles what was handed over, then returns what the handler saw.
    fn seen_after_finish(rig: Rig) -> Vec<Seen> {
        drop(rig.release);
        rig.delivery.finish();
        std::mem::take(&mut *rig.handler.seen.lock())
    }

    #[test]
    fn a_handler_behind_the_staleness_bound_is_told_of_a_loss_and_a_restore_before_its_next_event() {
        let rig = rig(Duration::from_millis(50));
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        // Held past the bound: what arrives now is dropped, and L1 distrusted instead.
        std::thread::sleep(Duration::from_millis(80));
        rig.forwarder.invalidate(&message(2));
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 1);
        rig.release.send(()).unwrap();
        // Handed over once the handler has caught up.
        while rig.handler.seen.lock().len() < 3 {
            std::thread::yield_now();
        }
        rig.forwarder.invalidate(&message(3));
        assert_eq!(
            seen_after_finish(rig),
            [Seen::Message(1), Seen::Lost, Seen::Restored, Seen::Message(3)]
        );
    }

    #[test]
    fn a_full_queue_drops_what_arrives_instead_of_making_the_subscriber_wait() {
        let rig = rig(Duration::from_secs(3600));
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        let (done_tx, done) = channel();
        let forwarder = Arc::clone(&rig.forwarder);
        std::thread::spawn(move || {
            for seq in 2..(QUEUE as u64 + 10) {
                forwarder.invalidate(&message(seq));
            }
            let _ = done_tx.send(());
        });
        done.recv_timeout(Duration::from_secs(10))
            .expect("the subscriber waited for the handler");
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 1);
        let seen = seen_after_finish(rig);
        assert_eq!(seen.len(), QUEUE + 3, "{} events", seen.len());
        assert_eq!(
            seen.get(1),
            Some(&Seen::Lost),
            "distrusted before the queued events"
        );
        assert_eq!(seen.get(2), Some(&Seen::Restored));
    }

    #[test]
    fn finish_returns_once_the_event_under_way_is_handled() {
        let rig = rig(Duration::from_secs(3600));
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        let handler = Arc::clone(&rig.handler);
        let Rig {
            delivery, release, ..
        } = rig;
        let finishing = std::thread::spawn(move || {
            delivery.finish();
            handler.seen.lock().len()
        });
        release.send(()).unwrap();
        assert_eq!(
            finishing.join().unwrap(),
            1,
            "finish returned before the handler did"
        );
    }
}
