//! Loads that end without a value: a caller's loader run so that its panic is a failed load,
//! and the errors the callers of such a load get.
//!
//! A panic is a failed load, as the README promises of every loading call: its callers get
//! fail-safe's stale copy or an error, the failure is counted and throttled, and the panic does
//! not unwind through the cache into the caller.
//!
//! Loads run apart from their caller (with a timeout, or on the async runtime) already see a
//! panic as a closed channel or a `JoinError`; these are for the loaders run on the caller's own
//! thread or inside its future.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::Poll;

use crate::error::{key_for_error, Error};

/// `load()`, or `None` if it panicked (logged).
pub(super) fn catching<R>(key: &str, load: impl FnOnce() -> R) -> Option<R> {
    // Unwind safety: a loader that panicked left nothing of the cache's half-done; its own
    // captured state is dropped with it.
    catch_unwind(AssertUnwindSafe(load))
        .inspect_err(|_| logged(key))
        .ok()
}

/// `load.await`, or `None` if a poll of it panicked (logged).
pub(super) async fn catching_async<R>(key: &str, load: impl Future<Output = R>) -> Option<R> {
    let mut load = pin!(load);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| load.as_mut().poll(cx))) {
            Ok(Poll::Ready(value)) => Poll::Ready(Some(value)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => {
                logged(key);
                Poll::Ready(None)
            }
        },
    )
    .await
}

fn logged(key: &str) {
    tracing::error!(key = %key_for_error(key), "a loader panicked; its callers get the stale copy or an error");
}

/// What the callers of a load that ended without an answer get when no stale copy is kept.
pub(super) fn no_answer(key: &str) -> Error {
    Error::Backend {
        level: "manager",
        op: "load",
        reason: format!(
            "the load of {:?} stopped without an answer (the loader panicked, or its runtime shut down)",
            key_for_error(key)
        ),
    }
}

/// A loading call made by a loader for its own key, or for a key whose load it runs inside: it
/// would wait for a load that waits for it.
pub(super) fn reentered(key: &str) -> Error {
    Error::Backend {
        level: "manager",
        op: "load",
        reason: format!(
            "a loading call for {:?} was made inside its own key's loader (directly, or through the loader of another key), and would wait for the load that waits for it; read the key with get, or load it outside the loader",
            key_for_error(key)
        ),
    }
}

/// A caller that would lead a second load: its loader, a `FnOnce`, was used by its first.
pub(super) fn spent_loader(key: &str) -> Error {
    Error::Backend {
        level: "manager",
        op: "load",
        reason: format!(
            "the loader of {:?} was already used by this call",
            key_for_error(key)
        ),
    }
}

/// Only reachable if a call that can have no "absent" answer got one: an error, not a panic.
pub(super) fn no_value(key: &str) -> Error {
    Error::Backend {
        level: "manager",
        op: "load",
        reason: format!("the load of {:?} answered no value", key_for_error(key)),
    }
}
