//! What the backplane tests share: a handler that records every call and lets a test wait for
//! one, the instances they connect, and a server that stops answering writes.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::{Condvar, Mutex};
use uno_cache::invalidation::{
    Backplane, BackplaneOptions, Invalidation, InvalidationHandler, InvalidationMessage, Outage,
};

use super::support::RedisServer;

/// What a handler saw, in order.
#[derive(Debug, Clone)]
pub enum Event {
    Message(InvalidationMessage),
    Lost { since: SystemTime, at: Instant },
    Restored { outage: Outage },
}

/// A handler that records every call and lets a test wait for one.
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
    changed: Condvar,
}

impl Recorder {
    fn push(&self, event: Event) {
        self.events.lock().push(event);
        self.changed.notify_all();
    }

    /// Waits until `pred` holds for the events (at most `timeout`), then returns them.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + timeout;
        let mut events = self.events.lock();
        while !pred(&events) {
            assert!(
                !self.changed.wait_until(&mut events, deadline).timed_out() || pred(&events),
                "timed out after {timeout:?} waiting for {what}; events: {:?}",
                *events
            );
        }
        events.clone()
    }

    pub fn messages(&self) -> Vec<InvalidationMessage> {
        self.events
            .lock()
            .iter()
            .filter_map(|e| match e {
                Event::Message(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

impl InvalidationHandler for Recorder {
    fn invalidate(&self, message: &InvalidationMessage) {
        self.push(Event::Message(message.clone()));
    }

    fn subscription_lost(&self, since: SystemTime) {
        self.push(Event::Lost {
            since,
            at: Instant::now(),
        });
    }

    fn subscription_restored(&self, outage: &Outage) {
        self.push(Event::Restored { outage: *outage });
    }
}

pub fn count_messages(events: &[Event]) -> usize {
    events.iter().filter(|e| matches!(e, Event::Message(_))).count()
}

pub fn has_lost(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Lost { .. }))
}

pub fn has_restored(events: &[Event]) -> bool {
    events.iter().any(|e| matches!(e, Event::Restored { .. }))
}

pub const WAIT: Duration = Duration::from_secs(10);

pub fn options(server: &RedisServer) -> BackplaneOptions {
    BackplaneOptions::url(server.addr())
}

pub fn instance(options: BackplaneOptions) -> (Backplane, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let backplane = Backplane::connect(options, recorder.clone()).unwrap();
    (backplane, recorder)
}

pub fn keys(list: &[&str]) -> Invalidation {
    Invalidation::Keys(list.iter().map(|k| (*k).to_owned()).collect())
}

/// Pauses writes (`PUBLISH` included) on the server: publishes time out while the subscribers
/// stay connected, as when only the publisher's path to Redis is broken.
pub fn pause_writes(server: &RedisServer) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(10_000)
        .arg("WRITE")
        .query(&mut server.raw())
        .unwrap();
}

pub fn unpause(server: &RedisServer) {
    let _: () = redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query(&mut server.raw())
        .unwrap();
}
