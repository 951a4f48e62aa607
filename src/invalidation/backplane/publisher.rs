//! The publishing side: one multiplexed connection to one node at a time (the next node after a
//! failure), `PUBLISH` under the caller's deadline, and a bounded queue of failed messages that a
//! task re-sends with backoff once Redis answers again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;

use super::{
    jitter, keep_start_error, BackplaneOptions, Invalidation, InvalidationMessage, Node, Shared, LEVEL,
};
use crate::distributed::redis::errors::{connect_error_for, failure};
use crate::error::{Error, Result};

/// Failed messages waiting to be re-sent, oldest first.
#[derive(Default)]
struct Pending {
    /// Each message with its weight.
    messages: VecDeque<(Vec<u8>, usize)>,
    /// Sum of the messages' weights (keys or tags).
    weight: usize,
}

/// How far off a repeat whose delay an `Instant` cannot hold is put (about 30 years: an
/// `Instant` is the time since boot, so this much more fits); shutdown sends it.
const NEVER_SECS: u64 = 1 << 30;

/// Messages to send a second time once they are due (see
/// [`BackplaneOptions::repeat_later_after`](super::BackplaneOptions::repeat_later_after)), in the
/// order they were handed over, so the earliest due comes first.
#[derive(Default)]
struct Repeats {
    due: VecDeque<(Instant, Invalidation)>,
    /// Sum of their weights, bounded as the kept messages are.
    weight: usize,
}

pub(super) struct Publisher {
    nodes: Vec<Node>,
    shared: Arc<Shared>,
    conn: Mutex<Option<(usize, MultiplexedConnection)>>,
    connecting: tokio::sync::Mutex<()>,
    /// The node to connect to next.
    current: AtomicUsize,
    seq: AtomicU64,
    pending: Mutex<Pending>,
    repeats: Mutex<Repeats>,
    wake: tokio::sync::Notify,
    limit: usize,
    publish_timeout: Duration,
    connect_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
}

impl Publisher {
    pub(super) fn new(
        nodes: Vec<Node>,
        shared: Arc<Shared>,
        options: &BackplaneOptions,
        connect_timeout: Duration,
    ) -> Self {
        Publisher {
            nodes,
            shared,
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            current: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            repeats: Mutex::new(Repeats::default()),
            wake: tokio::sync::Notify::new(),
            limit: options.republish_limit,
            publish_timeout: options.publish_timeout,
            connect_timeout,
            reconnect_min: options.reconnect_min,
            reconnect_max: options.reconnect_max,
        }
    }

    pub(super) fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn config(&self, connect_timeout: Duration) -> AsyncConnectionConfig {
        // The client's own timeouts only clean up; our deadlines report.
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(
                self.publish_timeout.saturating_add(Duration::from_millis(50)),
            ))
    }

    /// At construction: connects to the first node that answers, trying them in order.
    pub(super) async fn connect_any(&self) -> Result<()> {
        let mut last = None;
        for (i, node) in self.nodes.iter().enumerate() {
            let attempt = async {
                let mut conn = node
                    .client
                    .get_multiplexed_async_connection_with_config(&self.config(self.connect_timeout))
                    .await?;
                redis::cmd("PING").query_async::<()>(&mut conn).await?;
                Ok::<_, redis::RedisError>(conn)
            };
            match attempt.await {
                Ok(conn) => {
                    *self.conn.lock() = Some((i, conn));
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(());
                }
                Err(err) => keep_start_error(&mut last, connect_error_for(LEVEL, &node.display, &err)),
            }
        }
        Err(last.unwrap_or_else(|| Error::Config {
            field: "redis.hosts".to_owned(),
            reason: "no host given".to_owned(),
        }))
    }

    /// The current connection, or a new one to the current node.
    async fn connection(&self) -> Result<(usize, MultiplexedConnection)> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let i = self.current.load(Ordering::Relaxed) % self.nodes.len().max(1);
        let node = self.nodes.get(i).ok_or_else(|| Error::Config {
            field: "redis.hosts".to_owned(),
            reason: "no host given".to_owned(),
        })?;
        match node
            .client
            .get_multiplexed_async_connection_with_config(&self.config(self.publish_timeout))
            .await
        {
            Ok(conn) => {
                *self.conn.lock() = Some((i, conn.clone()));
                Ok((i, conn))
            }
            Err(err) => {
                self.advance(i);
                Err(connect_error_for(LEVEL, &node.display, &err))
            }
        }
    }

    /// Moves on from node `i` (if nobody moved already) and drops its connection.
    fn advance(&self, i: usize) {
        let mut conn = self.conn.lock();
        if conn.as_ref().is_some_and(|(j, _)| *j == i) {
            *conn = None;
        }
        let next = (i + 1) % self.nodes.len().max(1);
        let _ = self
            .current
            .compare_exchange(i, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Drops the current connection (if any) and moves on to the next node.
    fn drop_connection(&self) {
        let current = self.conn.lock().as_ref().map(|(i, _)| *i);
        if let Some(i) = current {
            self.advance(i);
        }
    }

    /// `PUBLISH channel bytes`; the number of receivers Redis reports. A broken connection (the
    /// server restarted, or the node died) is replaced at once, moving through the nodes, each
    /// at most once per call; the caller's deadline bounds it all.
    pub(super) async fn send(&self, bytes: Vec<u8>) -> Result<u64> {
        let mut last = None;
        for _ in 0..=self.nodes.len() {
            let (i, mut conn) = match self.connection().await {
                Ok(pair) => pair,
                Err(err) => {
                    last = Some(err);
                    continue;
                }
            };
            let out = redis::cmd("PUBLISH")
                .arg(&self.shared.channel)
                .arg(bytes.as_slice())
                .query_async::<i64>(&mut conn)
                .await;
            match out {
                Ok(receivers) => {
                    Shared::bump(&self.shared.published);
                    return Ok(u64::try_from(receivers).unwrap_or(0));
                }
                Err(err) => {
                    self.advance(i);
                    let host = self.nodes.get(i).map_or("?", |n| n.display.as_str());
                    let broken =
                        err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal();
                    // PUBLISH renamed away, or refused by the user's ACL: kept for re-sending
                    // as any failed publish, but said as what only the operator can change.
                    let err = failure(LEVEL, "publish", host, &err);
                    if !broken {
                        return Err(err);
                    }
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::Backend {
            level: LEVEL,
            op: "publish",
            reason: "no host to publish to".to_owned(),
        }))
    }

    /// A publish failed (any error, the deadline included): drop the connection, which may be
    /// the one that hangs, and keep the message for re-sending.
    pub(super) fn failed(&self, bytes: Vec<u8>, weight: usize) {
        self.drop_connection();
        self.keep(bytes, weight);
    }

    /// Keeps a message for the re-send task, which sends it (after a short jittered wait) with
    /// any others kept.
    pub(super) fn keep(&self, bytes: Vec<u8>, weight: usize) {
        let mut pending = self.pending.lock();
        pending.messages.push_back((bytes, weight));
        pending.weight = pending.weight.saturating_add(weight);
        if pending.weight > self.limit {
            // Too much to re-send key by key: one `All` covers every one of them.
            let all = InvalidationMessage {
                origin: self.shared.id,
                seq: self.next_seq(),
                invalidation: Invalidation::All,
            };
            pending.messages.clear();
            pending.messages.push_back((all.encode(), 1));
            pending.weight = 1;
            Shared::bump(&self.shared.republish_overflows);
        }
        self.shared
            .republish_pending
            .store(pending.messages.len() as u64, Ordering::Relaxed);
        drop(pending);
        self.wake.notify_one();
    }

    /// Sends `invalidation` again at `at` (`None`: at shutdown), through the kept messages. Its
    /// sequence number is taken when it becomes due: one taken now would come after every number
    /// sent in between, and the subscribers would count each as a lost message. (A publish in
    /// the moments between due and sent still goes first, as for any kept message; a gap only
    /// feeds the stats.)
    pub(super) fn repeat(&self, invalidation: Invalidation, at: Option<Instant>) {
        let at = at
            .or_else(|| Instant::now().checked_add(Duration::from_secs(NEVER_SECS)))
            .unwrap_or_else(Instant::now);
        let mut repeats = self.repeats.lock();
        repeats.weight = repeats.weight.saturating_add(invalidation.weight());
        repeats.due.push_back((at, invalidation));
        if repeats.weight > self.limit {
            // As for the kept messages: one `All`, at the latest time any of them was due.
            let last = repeats.due.back().map_or(at, |(t, _)| *t);
            repeats.due.clear();
            repeats.due.push_back((last, Invalidation::All));
            repeats.weight = 1;
            Shared::bump(&self.shared.republish_overflows);
        }
        drop(repeats);
        self.wake.notify_one();
    }

    /// Moves the repeats due by `now` (all of them for `None`) to the kept messages.
    pub(super) fn release_repeats(&self, now: Option<Instant>) {
        loop {
            let due = {
                let mut repeats = self.repeats.lock();
                match repeats.due.front() {
                    Some((at, _)) if now.is_none_or(|now| *at <= now) => {
                        let due = repeats.due.pop_front();
                        if let Some((_, invalidation)) = &due {
                            repeats.weight = repeats.weight.saturating_sub(invalidation.weight());
                        }
                        due
                    }
                    _ => None,
                }
            };
            let Some((_, invalidation)) = due else {
                return;
            };
            let msg = InvalidationMessage {
                origin: self.shared.id,
                seq: self.next_seq(),
                invalidation,
            };
            self.keep(msg.encode(), msg.invalidation.weight());
        }
    }

    /// How many repeats wait to be due.
    pub(super) fn repeats_pending(&self) -> u64 {
        self.repeats.lock().due.len() as u64
    }

    /// When the next repeat is due.
    fn next_repeat(&self) -> Option<Instant> {
        self.repeats.lock().due.front().map(|(at, _)| *at)
    }

    /// Forgets the kept message `front`, just sent, unless an overflow replaced the queue.
    fn sent(&self, front: &[u8]) {
        let mut pending = self.pending.lock();
        if pending
            .messages
            .front()
            .is_some_and(|(bytes, _)| bytes.as_slice() == front)
        {
            if let Some((_, weight)) = pending.messages.pop_front() {
                pending.weight = pending.weight.saturating_sub(weight);
            }
        }
        self.shared
            .republish_pending
            .store(pending.messages.len() as u64, Ordering::Relaxed);
    }

    /// Sends the kept messages, oldest first, until one fails: the last attempt at shutdown,
    /// with no backoff (the caller's deadline bounds it). Whether none is left.
    pub(super) async fn send_kept(&self) -> bool {
        loop {
            let Some((front, _)) = self.pending.lock().messages.front().cloned() else {
                return true;
            };
            if let Err(err) = self.send(front.clone()).await {
                self.resend_failed(&err);
                return false;
            }
            self.sent(&front);
        }
    }

    /// Counts a failed re-send; a refusal of the configuration (an ACL user without PUBLISH)
    /// also as one, which nobody else hears of: no caller waits for a re-send.
    pub(super) fn resend_failed(&self, err: &Error) {
        Shared::bump(&self.shared.republish_failures);
        if err.is_misconfiguration() {
            self.shared.refused(err, true);
        }
    }

    /// Re-sends failed messages, oldest first, with a jittered backoff between failed attempts.
    pub(super) async fn resend_loop(self: Arc<Self>) {
        loop {
            let waiting = self.wake.notified();
            self.release_repeats(Some(Instant::now()));
            if self.pending.lock().messages.is_empty() {
                match self.next_repeat() {
                    Some(at) => {
                        let _ = tokio::time::timeout_at(at.into(), waiting).await;
                    }
                    None => waiting.await,
                }
                continue;
            }
            let mut delay = self.reconnect_min;
            tokio::time::sleep(jitter(delay)).await;
            loop {
                // While this instance's own subscription is down, the server is likely down for
                // the peers too: a message re-sent before they subscribe again reaches nobody
                // (their outage covers it, but a re-send after it is worth more). Wait for it,
                // at most the longest backoff.
                let mut waited = Duration::ZERO;
                while !self.shared.connected.load(Ordering::Acquire) && waited < self.reconnect_max {
                    tokio::time::sleep(self.reconnect_min).await;
                    waited = waited.saturating_add(self.reconnect_min);
                }
                self.release_repeats(Some(Instant::now()));
                let Some((front, _)) = self.pending.lock().messages.front().cloned() else {
                    break;
                };
                match tokio::time::timeout(self.publish_timeout, self.send(front.clone())).await {
                    Ok(Ok(_)) => {
                        delay = self.reconnect_min;
                        self.sent(&front);
                    }
                    failed => {
                        let err = match failed {
                            Ok(Err(err)) => err,
                            _ => Error::Timeout {
                                level: LEVEL,
                                op: "publish",
                                server: self.hosts(),
                                after: self.publish_timeout,
                            },
                        };
                        self.resend_failed(&err);
                        self.drop_connection();
                        // A refusal (an ACL user without PUBLISH) waits the longest backoff at
                        // once, as the subscriber's does: a sooner try cannot be taken.
                        delay = if err.is_misconfiguration() {
                            self.reconnect_max
                        } else {
                            delay.saturating_mul(2).min(self.reconnect_max)
                        };
                        tokio::time::sleep(jitter(delay)).await;
                    }
                }
            }
        }
    }
}
