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
//! The I/O thread never waits for the handler, and no event is applied later than the
//! staleness bound after it was handed over. An event is dropped instead when
//! - the handler is behind by more than the bound as it arrives (it has had events waiting and
//!   handled none for that long), or [`QUEUE`] events wait, or it would take what they hold in
//!   memory past [`QUEUE_BYTES`];
//! - or it has waited in the queue for the bound (a handler that keeps up with each event, but
//!   not with the rate they come at).
//!
//! Before its next event (or before the thread ends), the handler is then told of a loss and,
//! if the subscription is up, of a restore: its L1 is distrusted, as after a lost subscription,
//! so what it did not apply in time is not served unchecked for longer than the bound and the
//! handling of the event under way (a handler stuck in one call hears of nothing until it
//! returns). A restore is made up only while
//! the subscriber's last word was that the subscription works: while it is down, the real
//! restore follows. Counted in [`BackplaneStats::handler_lags`](super::BackplaneStats::handler_lags).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

use super::{now, Invalidation, InvalidationHandler, InvalidationMessage, Outage, Shared};
use crate::error::{Error, Result};

/// Events waiting for the handler at most.
const QUEUE: usize = 1024;

/// Memory the events waiting for the handler (the one it handles included) may hold, at most;
/// one event is taken whatever its size while none waits. Counted in events alone, the queue
/// could hold 1024 messages of 32 MiB of empty keys (each about 200 MB decoded): a publisher
/// sending them faster than the handler got through them (a handler that finishes one now and
/// then is never lagging) piled up gigabytes within one staleness bound. The manager's own
/// messages hold at most [`KEYS_MESSAGE_BUDGET`](crate::invalidation::KEYS_MESSAGE_BUDGET) of
/// keys (a few MB decoded): dozens of those fit, and the thousand 1,000-key messages of a large
/// tag invalidation.
const QUEUE_BYTES: usize = 256 * 1024 * 1024;

/// How often the thread looks whether it is asked to stop while no event comes.
const STOP_POLL: Duration = Duration::from_millis(20);

/// What the subscriber hands over, in its order.
enum Event {
    Invalidate(InvalidationMessage),
    Lost(SystemTime),
    Restored(Outage),
}

impl Event {
    /// About what the event holds in memory while it waits: its strings and their headers.
    fn held_bytes(&self) -> usize {
        let strings = match self {
            Event::Invalidate(message) => match &message.invalidation {
                Invalidation::Keys(items) | Invalidation::Tags(items) => items.as_slice(),
                Invalidation::Prefix(prefix) => std::slice::from_ref(prefix),
                Invalidation::All => &[],
            },
            Event::Lost(_) | Event::Restored(_) => &[],
        };
        strings
            .iter()
            .map(|s| size_of::<String>().saturating_add(s.capacity()))
            .fold(size_of::<Handed>(), usize::saturating_add)
    }

    /// The `since` of a loss reported in place of this event, dropped after being handed over
    /// (or not) at `handed`: no later than the loss or outage it tells of itself, so that what
    /// the handler hears still covers every message that event said may be lost.
    fn lost_since(&self, handed: SystemTime) -> SystemTime {
        match self {
            Event::Invalidate(_) => handed,
            Event::Lost(since) => handed.min(*since),
            Event::Restored(outage) => handed.min(outage.since),
        }
    }
}

/// An event and when it was handed over.
struct Handed {
    event: Event,
    /// In ms since [`State::epoch`]: its age decides whether it is still applied.
    at_ms: u64,
    /// The same moment on the wall clock: the `since` of the loss it is reported as if dropped.
    at: SystemTime,
    /// [`Event::held_bytes`], counted in [`State::pending_bytes`] until it is handled.
    bytes: usize,
}

/// What the subscriber's side and the thread decide together. Under one lock, so that a drop
/// and the catch-up that reports it never cross.
struct Handover {
    /// Events were dropped: the handler is to be told of a loss (and a restore) first.
    behind: bool,
    /// The `since` of that loss: every event handed over before it was applied or still waits.
    lost_since: SystemTime,
    /// The last moment every event was handed over.
    all_handed_at: SystemTime,
    /// Whether the subscriber's last word, handed over or dropped, was that the subscription
    /// works.
    subscribed: bool,
}

impl Handover {
    /// Notes that an event handed over at `since` or later is lost.
    fn drop_from(&mut self, since: SystemTime, shared: &Shared) {
        if self.behind {
            self.lost_since = self.lost_since.min(since);
            return;
        }
        self.behind = true;
        self.lost_since = since;
        Shared::bump(&shared.handler_lags);
        tracing::warn!(channel = %shared.channel, "the invalidation handler fell behind the staleness bound; what it could not apply in time is dropped, and L1 is distrusted before its next event");
    }
}

/// What the subscriber's side and the thread share.
struct State {
    /// Events handed over and not yet handled.
    pending: AtomicUsize,
    /// What they hold in memory ([`Event::held_bytes`]).
    pending_bytes: AtomicUsize,
    /// The most `pending_bytes` may reach: [`QUEUE_BYTES`].
    max_bytes: usize,
    /// When the handler last finished an event, or was handed one while none waited, in ms
    /// since `epoch`.
    progress_ms: AtomicU64,
    epoch: Instant,
    handover: Mutex<Handover>,
    /// The backplane is stopping: the thread ends once nothing waits.
    stopping: AtomicBool,
    staleness_bound: Duration,
}

impl State {
    fn millis_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn bound_ms(&self) -> u64 {
        u64::try_from(self.staleness_bound.as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether an event holding `bytes` fits beside those waiting (it does if none waits).
    fn has_room_for(&self, bytes: usize) -> bool {
        let waiting = self.pending_bytes.load(Ordering::Acquire);
        waiting == 0 || waiting.saturating_add(bytes) <= self.max_bytes
    }

    /// Whether the handler has had events waiting and finished none for the staleness bound.
    fn lagging(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
            && self
                .millis_since_epoch()
                .saturating_sub(self.progress_ms.load(Ordering::Acquire))
                >= self.bound_ms()
    }
}

/// The handler the subscriber calls: hands each call to the thread, never waiting.
struct Forwarder {
    tx: SyncSender<Handed>,
    state: Arc<State>,
    shared: Arc<Shared>,
}

impl Forwarder {
    fn hand_over(&self, event: Event) {
        let s = &self.state;
        let mut handover = s.handover.lock();
        match event {
            Event::Lost(_) => handover.subscribed = false,
            Event::Restored(_) => handover.subscribed = true,
            Event::Invalidate(_) => {}
        }
        // The `since` of the loss it is reported as, if it is dropped.
        let since = event.lost_since(handover.all_handed_at);
        let bytes = event.held_bytes();
        if !handover.behind && !s.lagging() && s.has_room_for(bytes) {
            let waiting = s.pending.fetch_add(1, Ordering::AcqRel);
            s.pending_bytes.fetch_add(bytes, Ordering::AcqRel);
            let (at_ms, at) = (s.millis_since_epoch(), now());
            let handed = Handed {
                event,
                at_ms,
                at,
                bytes,
            };
            match self.tx.try_send(handed) {
                Ok(()) => {
                    if waiting == 0 {
                        // The handler owes an event from now on: its lag counts from here.
                        s.progress_ms.store(at_ms, Ordering::Release);
                    }
                    handover.all_handed_at = at;
                    return;
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    s.pending.fetch_sub(1, Ordering::AcqRel);
                    s.pending_bytes.fetch_sub(bytes, Ordering::AcqRel);
                }
            }
        }
        handover.drop_from(since, &self.shared);
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
        Self::start_with(handler, shared, staleness_bound, QUEUE_BYTES)
    }

    /// [`start`](Self::start) with `max_bytes` in place of [`QUEUE_BYTES`].
    fn start_with(
        handler: Arc<dyn InvalidationHandler>,
        shared: Arc<Shared>,
        staleness_bound: Duration,
        max_bytes: usize,
    ) -> Result<(Delivery, Arc<dyn InvalidationHandler>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let started = now();
        let state = Arc::new(State {
            pending: AtomicUsize::new(0),
            pending_bytes: AtomicUsize::new(0),
            max_bytes,
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            handover: Mutex::new(Handover {
                behind: false,
                lost_since: started,
                all_handed_at: started,
                // A first subscription that fails is reported as a loss.
                subscribed: true,
            }),
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

    /// Waits until the handler has handled what it was handed (or dropped what waited past the
    /// staleness bound, and been told so), then ends the thread: at most about the bound plus
    /// one event's handling. Once the subscriber has stopped: a manager's state, held by the
    /// handler while it handles an event, is then released before this returns, never later on
    /// the thread.
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

/// Calls the handler for each event that has not waited for the staleness bound, catching (and
/// counting) a panic so that the next event is still handled, until the subscriber is gone or
/// the backplane stops with nothing waiting. The handler hears of what was dropped before its
/// next event, and before the thread ends.
fn deliver(rx: &Receiver<Handed>, handler: &dyn InvalidationHandler, state: &State, shared: &Shared) {
    loop {
        let handed = match rx.recv_timeout(STOP_POLL) {
            Ok(handed) => handed,
            Err(RecvTimeoutError::Timeout) => {
                catch_up(handler, state, shared);
                if state.stopping.load(Ordering::Acquire) {
                    return;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                catch_up(handler, state, shared);
                return;
            }
        };
        let waited_ms = state.millis_since_epoch().saturating_sub(handed.at_ms);
        if waited_ms >= state.bound_ms() {
            // Applied now, it would come later than the bound: L1 is distrusted instead.
            let since = handed.event.lost_since(handed.at);
            state.handover.lock().drop_from(since, shared);
        } else {
            catch_up(handler, state, shared);
            match &handed.event {
                Event::Invalidate(message) => call(shared, "invalidate", || handler.invalidate(message)),
                Event::Lost(since) => call(shared, "subscription_lost", || handler.subscription_lost(*since)),
                Event::Restored(outage) => call(shared, "subscription_restored", || {
                    handler.subscription_restored(outage);
                }),
            }
        }
        state.pending_bytes.fetch_sub(handed.bytes, Ordering::AcqRel);
        state.pending.fetch_sub(1, Ordering::AcqRel);
        state
            .progress_ms
            .store(state.millis_since_epoch(), Ordering::Release);
    }
}

/// If events were dropped, tells the handler of a loss, and of a restore at once if the
/// subscription is up (while it is down, the subscriber's own restore follows): what it did not
/// apply is distrusted.
fn catch_up(handler: &dyn InvalidationHandler, state: &State, shared: &Shared) {
    let (since, subscribed) = {
        let mut handover = state.handover.lock();
        if !handover.behind {
            return;
        }
        handover.behind = false;
        (handover.lost_since, handover.subscribed)
    };
    call(shared, "subscription_lost", || handler.subscription_lost(since));
    if !subscribed {
        return;
    }
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

    /// The staleness bound of the tests that pass it on purpose. Not much shorter: an event
    /// handed over after the handler caught up must not wait that long for the thread to be
    /// scheduled, even on a loaded machine, or it is dropped as late.
    const BOUND: Duration = Duration::from_millis(300);
    const PAST_BOUND: Duration = Duration::from_millis(400);

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

    /// Field order is drop order: a test that fails with the handler held lets it go before
    /// `delivery` waits for it, and fails instead of hanging.
    struct Rig {
        handler: Arc<Recording>,
        forwarder: Arc<dyn InvalidationHandler>,
        release: Sender<()>,
        delivery: Delivery,
        shared: Arc<Shared>,
        entered: Receiver<()>,
    }

    fn rig(bound: Duration) -> Rig {
        rig_with(bound, QUEUE_BYTES)
    }

    fn rig_with(bound: Duration, max_bytes: usize) -> Rig {
        let (entered_tx, entered) = channel();
        let (release, release_rx) = channel();
        let handler = Arc::new(Recording {
            seen: Mutex::new(Vec::new()),
            entered: Mutex::new(Some(entered_tx)),
            release: Mutex::new(Some(release_rx)),
        });
        let shared = Arc::new(Shared::new(InstanceId::random(), "test".to_owned(), None));
        let (delivery, forwarder) =
            Delivery::start_with(handler.clone(), Arc::clone(&shared), bound, max_bytes).unwrap();
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

    /// Waits (for 10 s at most) until the handler has seen `n` calls.
    fn wait_until_seen(rig: &Rig, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while rig.handler.seen.lock().len() < n {
            assert!(Instant::now() < deadline, "the handler never saw {n} calls");
            std::thread::yield_now();
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
        let rig = rig(BOUND);
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        // Held past the bound: what arrives now is dropped, and L1 distrusted instead.
        std::thread::sleep(PAST_BOUND);
        rig.forwarder.invalidate(&message(2));
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 1);
        rig.release.send(()).unwrap();
        // Handed over once the handler has caught up.
        wait_until_seen(&rig, 3);
        rig.forwarder.invalidate(&message(3));
        assert_eq!(
            seen_after_finish(rig),
            [Seen::Message(1), Seen::Lost, Seen::Restored, Seen::Message(3)]
        );
    }

    #[test]
    fn events_that_waited_in_the_queue_for_the_staleness_bound_are_dropped_and_the_handler_told() {
        let rig = rig(BOUND);
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        // Queued while the handler is within the bound...
        for seq in 2..20 {
            rig.forwarder.invalidate(&message(seq));
        }
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 0);
        // ...then held past it: applied now, they would come late.
        std::thread::sleep(PAST_BOUND);
        assert_eq!(
            seen_after_finish(rig),
            [Seen::Message(1), Seen::Lost, Seen::Restored],
            "finish tells of the loss before the thread ends"
        );
    }

    #[test]
    fn no_restore_is_made_up_while_the_subscription_is_down() {
        let rig = rig(BOUND);
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        rig.forwarder.subscription_lost(now());
        std::thread::sleep(PAST_BOUND);
        rig.forwarder.invalidate(&message(2));
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 1);
        rig.release.send(()).unwrap();
        wait_until_seen(&rig, 2);
        let at = now();
        rig.forwarder.subscription_restored(&Outage {
            since: at,
            detected_at: at,
            restored_at: at,
        });
        assert_eq!(
            seen_after_finish(rig),
            [Seen::Message(1), Seen::Lost, Seen::Restored],
            "the only restore is the subscriber's"
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

    /// Counted in events alone, 1024 messages of 32 MiB of empty keys (about 200 MB each once
    /// decoded) could wait for a handler that kept up with one a second.
    #[test]
    fn messages_past_the_memory_budget_are_dropped_and_the_handler_told() {
        let key = "k".repeat(16 * 1024);
        let big = |seq: u64| InvalidationMessage {
            origin: InstanceId::random(),
            seq,
            invalidation: Invalidation::Keys(vec![key.clone()]),
        };
        let rig = rig_with(Duration::from_secs(3600), 64 * 1024);
        rig.forwarder.invalidate(&message(1));
        rig.entered.recv().unwrap();
        for seq in 2..=4 {
            rig.forwarder.invalidate(&big(seq));
        }
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 0, "48 KiB fit");
        rig.forwarder.invalidate(&big(5));
        assert_eq!(
            rig.shared.handler_lags.load(Ordering::Relaxed),
            1,
            "64 KiB do not"
        );
        assert_eq!(
            seen_after_finish(rig),
            [
                Seen::Message(1),
                Seen::Lost,
                Seen::Restored,
                Seen::Message(2),
                Seen::Message(3),
                Seen::Message(4)
            ]
        );
    }

    #[test]
    fn a_message_larger_than_the_budget_is_taken_while_none_waits() {
        let rig = rig_with(Duration::from_secs(3600), 1024);
        let huge = InvalidationMessage {
            origin: InstanceId::random(),
            seq: 1,
            invalidation: Invalidation::Prefix("p".repeat(4096)),
        };
        rig.forwarder.invalidate(&huge);
        rig.entered.recv().unwrap();
        assert_eq!(rig.shared.handler_lags.load(Ordering::Relaxed), 0);
        assert_eq!(seen_after_finish(rig), [Seen::Message(1)]);
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
