//! A host's breaker's judgement of its part of a call, and what follows a probe that found the
//! host back: its item limit asked again.
//!
//! The limit is asked at start-up ([`startup`](super::super::startup)), of the hosts that answer
//! then. A host down then (its breaker opened at once), or down since and restarted, perhaps
//! with another `-I`, joins through its breaker's probe; asked at start only, its refusals of a
//! value as too large said "item limit unknown" (`max` 0) for as long as the store ran, or gave
//! the limit it had before its restart.

use std::time::Instant;

use tokio::sync::SemaphorePermit;

use super::super::super::nodes::Node;
use super::super::commands::{Settings, Written};
use super::super::conn::{Host, Ran, Unanswered};
use crate::error::Error;

/// The `op` of the question, for the errors nobody sees (it is best effort).
const OP: &str = "stats settings";

/// Feeds what a host's commands gave to its breaker, if it has one (see [`Node::record`]); the
/// outputs of the commands that completed stand either way. The timeout of a `late` host (the
/// deadline had passed before it was asked) is not held against it.
pub(super) fn judged<O>(node: Option<&Node>, probe: bool, mut ran: Ran<O>, late: bool) -> Ran<O> {
    let Some(node) = node else {
        return ran;
    };
    ran.failure = match ran.failure.take() {
        Some(e @ Error::Timeout { .. }) if late => Some(node.not_sent(probe, e)),
        failure => node.record(probe, failure.map_or(Ok(()), Err)).err(),
    };
    ran
}

/// Whether `ran` was its breaker's probe, answered: the host is back.
pub(super) fn rejoined<O>(probe: bool, ran: &Ran<O>) -> bool {
    probe && ran.failure.is_none()
}

/// Asks a host that rejoined for its item limit, on the caller's thread, by `deadline` (the
/// probing call's: one round trip more, once per rejoin). A host that does not say, or not in
/// time, leaves its limit unknown rather than the one it had before.
pub(super) fn ask_item_limit(host: &Host, deadline: Instant) {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let none = |_: &[Written<'_>], _: Unanswered| {};
    let started = host.start(OP, timeout, deadline, Some(&Settings), &none);
    let ran = host.finish(OP, timeout, deadline, &[Settings], started, &none);
    learn(host, ran);
}

/// [`ask_item_limit`] on the I/O thread, on the probing call's `slot`: waited for anew, a
/// slot taken by the calls that queued while the host was down would hold the probing call up
/// to its deadline.
pub(super) async fn ask_item_limit_async(host: &Host, deadline: Instant, slot: &SemaphorePermit<'_>) {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let none = |_: &[Written<'_>], _: Unanswered| {};
    let ran = host
        .run_on_slot(OP, timeout, deadline, slot, (&[Settings], &none))
        .await;
    learn(host, ran);
}

fn learn(host: &Host, ran: Ran<Option<usize>>) {
    let bytes = ran
        .into_result()
        .ok()
        .and_then(|sizes| sizes.into_iter().next().flatten());
    host.learn_item_size_max(bytes.unwrap_or(0));
}
