//! The end of a load that ran apart from its caller (on a load thread or a spawned task): its
//! value stored and its flight ended, or its failure or panic counted and reported.

use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::super::apart::Pass;
use super::super::guard::Watch;
use super::super::loader::Leader;
use super::{Outcome, Report, WatchEnds, WeakManager};
use crate::error::key_for_error;

/// The end of a load that ran apart from its caller: store the value and end the flight with
/// it, or report the error and abandon the flight. The report goes first.
///
/// A store that panics is a failed load, counted here (`store_panicked`). The watch ends
/// however this ends (`WatchEnds`), and the report goes before the flight ends: the watch
/// stayed for the manager's life, and a caller that saw the flight end before its report
/// answered `LoaderTimeout` and gave the load up at a hard timeout that had not passed.
pub(super) fn finish_load<T, E>(
    manager: &WeakManager,
    key: &str,
    ttl: (Option<Duration>, bool),
    (leader, watch): (Leader, Watch),
    outcome: Outcome<T, E>,
    report: mpsc::Sender<Report<T, E>>,
) where
    T: Serialize + DeserializeOwned,
{
    let _watch_ends = WatchEnds {
        manager: WeakManager {
            shared: Weak::clone(&manager.shared),
            apart: Arc::clone(&manager.apart),
        },
        watch,
    };
    let value = match outcome {
        Ok(value) => value,
        Err(e) => {
            if let Some(m) = manager.upgrade() {
                m.shared().guard.unwatch(watch);
                // Before the flight ends, so its other waiters find the throttle.
                m.shared().failed_apart::<T>(key);
            }
            let _ = report.send(Report::Loaded(Err(e)));
            drop(leader);
            return;
        }
    };
    let Some(m) = manager.upgrade() else {
        let _ = report.send(Report::Loaded(Ok(value)));
        return;
    };
    // The manager is a temporary of this statement (of the closure in it), so it goes here: in
    // the tail expression it outlived `m`, holding the shared state past the count-out the last
    // drop waits for.
    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.manager().store_loaded(key, ttl, value.as_ref(), watch)
    }));
    let Ok(stored) = stored else {
        return store_panicked(&m, key, watch, (leader, report));
    };
    match stored {
        Ok((bytes, stored)) => {
            let line = stored
                .as_ref()
                .err()
                .and_then(|e| Some((e, m.shared().metrics.loader.not_stored_lines.pass()?)));
            if let Some((e, unlogged)) = line {
                tracing::warn!(key = %key_for_error(key), error = %e, unlogged, "a loaded value could not be stored (unlogged: loads since the last line)");
            }
            leader.finish(Arc::from(bytes));
        }
        Err(e) => {
            tracing::warn!(key = %key_for_error(key), error = %e, "a loaded value does not encode or read back; not stored");
            let _ = report.send(Report::NotStored(e));
        }
    }
}

/// The store of a load that ran apart from its caller panicked (a value whose `Serialize` or
/// `Deserialize` panics; a level's panic is already its call's error, see `level_panics`): a
/// failed load, counted and
/// throttled here, then reported, as a panicking loader is (`load_panicked`). Left to unwind,
/// the flight ended abandoned and the caller counted it, if one still waited: a refresh-ahead
/// reload, whose caller was answered at once, or a load whose caller left at the soft timeout,
/// was counted nowhere.
fn store_panicked<T: DeserializeOwned, E>(
    m: &Pass,
    key: &str,
    watch: Watch,
    (leader, report): (Leader, mpsc::Sender<Report<T, E>>),
) {
    tracing::error!(key = %key_for_error(key), "storing a loaded value panicked; its callers get the stale copy or an error");
    m.shared().guard.unwatch(watch);
    m.shared().failed_apart::<T>(key);
    let _ = report.send(Report::Panicked);
    drop(leader);
}

/// A loader that ran apart from its caller panicked: a failed load, counted and throttled here
/// as `finish_load` does an error (the caller that would have counted it may have left with the
/// stale copy at the soft timeout, or been cancelled). The report goes first, so its caller
/// takes it for a failed load (fail-safe's stale copy, or an error) when the flight then ends
/// abandoned, rather than for a flight given up at the hard timeout.
pub(super) fn load_panicked<T: DeserializeOwned, E>(
    manager: &WeakManager,
    key: &str,
    (leader, watch): (Leader, Watch),
    report: mpsc::Sender<Report<T, E>>,
) {
    tracing::error!(key = %key_for_error(key), "a loader panicked; its callers get the stale copy or an error");
    if let Some(m) = manager.upgrade() {
        m.shared().guard.unwatch(watch);
        // Before the flight ends, so its other waiters find the throttle.
        m.shared().failed_apart::<T>(key);
    }
    let _ = report.send(Report::Panicked);
    drop(leader);
}
