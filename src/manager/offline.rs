//! The replay thread (`uno-cache-replay`): replays the manager's queue of L2 writes that failed,
//! every `offline.replay_interval_ms` and at once when nudged (after an L2 call succeeded while
//! something was queued). It holds the manager weakly and is stopped and joined when the manager
//! is dropped. Background work is an optimisation: [`CacheManager::replay_now`] does the same
//! step on the caller's thread.
//!
//! [`CacheManager::replay_now`]: super::CacheManager::replay_now

use std::sync::{Arc, Weak};
use std::thread::{JoinHandle, ThreadId};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::policy::Shared;
use crate::error::{Error, Result};

#[derive(Default)]
struct State {
    stop: bool,
    nudged: bool,
}

#[derive(Default)]
struct Signal {
    state: Mutex<State>,
    wake: Condvar,
}

/// Owns the replay thread; dropping it stops the thread.
pub(crate) struct Replayer {
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
    thread_id: ThreadId,
}

impl Replayer {
    pub(crate) fn start(shared: Weak<Shared>, every: Duration) -> Result<Replayer> {
        let signal = Arc::new(Signal::default());
        let theirs = Arc::clone(&signal);
        let thread = std::thread::Builder::new()
            .name("uno-cache-replay".into())
            .spawn(move || run(&shared, &theirs, every))
            .map_err(|e| Error::Backend {
                level: "replay",
                op: "start",
                reason: format!("cannot start the replay thread: {e}"),
            })?;
        Ok(Replayer {
            signal,
            thread_id: thread.thread().id(),
            thread: Some(thread),
        })
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

fn run(shared: &Weak<Shared>, signal: &Signal, every: Duration) {
    loop {
        {
            let mut state = signal.state.lock();
            if !state.stop && !state.nudged {
                let _ = signal.wake.wait_for(&mut state, every);
            }
            if state.stop {
                return;
            }
            state.nudged = false;
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.replay.as_ref().is_some_and(|q| !q.is_empty()) {
            // A failure is counted and logged inside; the next tick tries again.
            let _ = shared.replay_now();
        }
    }
}

impl Drop for Replayer {
    fn drop(&mut self) {
        self.signal.state.lock().stop = true;
        self.signal.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            // The manager's last handle can be the one this thread upgraded; never join itself.
            if std::thread::current().id() != self.thread_id {
                let _ = thread.join();
            }
        }
    }
}
