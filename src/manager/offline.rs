//! The replay thread (`uno-cache-replay`): replays the manager's queue of L2 writes that failed,
//! every `offline.replay_interval_ms` and at once when nudged (after an L2 call succeeded while
//! something was queued). It holds the manager weakly; the manager's `Workers` own, stop and join
//! it (a replay under way stops before its next op; the rest waits in the durable queue).
//! Background work is an optimisation: [`CacheManager::replay_now`] does the same step on the
//! caller's thread.
//!
//! [`CacheManager::replay_now`]: super::CacheManager::replay_now

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::policy::Shared;
use super::workers::Workers;
use crate::error::Result;
use crate::shutdown::Shutdown;

#[derive(Default)]
struct State {
    nudged: bool,
}

#[derive(Default)]
struct Signal {
    state: Mutex<State>,
    wake: Condvar,
}

/// Wakes the replay thread; held by the shared state (the thread itself is owned by
/// [`Workers`]).
#[derive(Default)]
pub(crate) struct Replayer {
    signal: Arc<Signal>,
}

impl Replayer {
    /// Starts the replay thread, owned by `workers`; it tries every `every`, and when nudged.
    pub(crate) fn start(&self, workers: &mut Workers, shared: Weak<Shared>, every: Duration) -> Result<()> {
        let weak = Arc::downgrade(&self.signal);
        workers.shutdown().on_fire(move || {
            if let Some(signal) = weak.upgrade() {
                let _state = signal.state.lock();
                signal.wake.notify_all();
            }
        });
        let (signal, shutdown) = (Arc::clone(&self.signal), workers.shutdown().clone());
        workers.spawn("replay", move || run(&shared, &signal, every, &shutdown))
    }

    /// Makes the thread try now.
    pub(crate) fn nudge(&self) {
        let mut state = self.signal.state.lock();
        if !state.nudged {
            state.nudged = true;
            self.signal.wake.notify_one();
        }
    }
}

fn run(shared: &Weak<Shared>, signal: &Signal, every: Duration, shutdown: &Shutdown) {
    loop {
        {
            let mut state = signal.state.lock();
            if !shutdown.is_fired() && !state.nudged {
                let _ = signal.wake.wait_for(&mut state, every);
            }
            if shutdown.is_fired() {
                return;
            }
            state.nudged = false;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // A queue a write failure latched, empty or not: until it is written anew, every push
        // of a failed L2 write is refused, and the write lost.
        if let Some(Err(e)) = shared.replay.as_ref().map(|q| q.recover_if_due()) {
            tracing::debug!(error = %e, "the replay queue is still latched by a write failure");
        }
        // Or a tagging a replay owes still (see `replayed_tags`), with the queue empty.
        if shared.replay.as_ref().is_some_and(|q| !q.is_empty()) || !shared.replayed_tags.is_empty() {
            // A failure is counted and logged inside; the next tick tries again.
            let _ = shared.replay_until(&|| shutdown.is_fired());
        }
    }
}
