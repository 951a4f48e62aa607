//! The subscribing side: one pub/sub connection to one node, a `PING` on it every third of the
//! staleness bound with a third of it to answer, and on any failure: tell the handler, reconnect
//! with our own backoff (first attempt at once, then doubling with jitter, moving through the
//! nodes), subscribe again, tell the handler. A skip in another instance's sequence that stays
//! unfilled for the staleness bound is told to the handler as a loss and a restore too (see
//! [`super::gaps`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::oneshot;

use super::gaps::Sequences;
use super::message::{decode, MAX_MESSAGE_LEN};
use super::{jitter, keep_start_error, now, InvalidationHandler, Node, OfflineStart, Outage, Shared, LEVEL};
use crate::distributed::redis::errors::{connect_error_for, error_text, failure};
use crate::error::{Error, Result};
use crate::log_limit::LogLimit;

/// A SUBSCRIBE the server answered with an error. The ACL's refusal (`NOPERM`: the user may not
/// run SUBSCRIBE, or not on this channel) names the channel and what to grant: the general
/// advice on ACLs lists every command of the cache, and did not say which channel. Anything
/// else is said as any failed call of the backplane is.
fn subscribe_error(host: &str, channel: &str, err: &redis::RedisError) -> Error {
    if err.code() == Some("NOPERM") {
        return Error::Misconfigured {
            level: LEVEL,
            hosts: host.to_owned(),
            reason: format!(
                "the server's ACL refuses this user SUBSCRIBE on the backplane channel {channel:?} \
                 (its password was accepted): grant it, e.g. ACL SETUSER <user> +subscribe +ping \
                 &{channel}; until then this instance hears no other instance's invalidations \
                 and its L1 entries stay suspect ({})",
                error_text(err)
            ),
            call_only: false,
        };
    }
    failure(LEVEL, "subscribe", host, err)
}

pub(super) struct Context {
    pub(super) nodes: Vec<Node>,
    pub(super) shared: Arc<Shared>,
    pub(super) handler: Arc<dyn InvalidationHandler>,
    pub(super) ping_every: Duration,
    pub(super) connect_timeout: Duration,
    pub(super) reconnect_min: Duration,
    pub(super) reconnect_max: Duration,
    /// The log lines about invalid messages on the channel: the first, then at most one a
    /// second. Anyone who may publish on the channel can send garbage as fast as Redis forwards
    /// it, and a line each flooded the log; every one is counted in `stats().invalid` whatever
    /// is logged. Kept across resubscriptions, which used to start the count again.
    pub(super) noise: LogLimit,
}

type PingFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

impl Context {
    /// Connects to node `i` and subscribes, within `timeout`.
    async fn subscribe(&self, i: usize, timeout: Duration) -> Result<(PubSubSink, PubSubStream)> {
        let node = self.nodes.get(i).ok_or_else(|| Error::Config {
            field: "redis.hosts".to_owned(),
            reason: "no host given".to_owned(),
        })?;
        let attempt = async {
            let mut pubsub = node
                .client
                .get_async_pubsub()
                .await
                .map_err(|err| connect_error_for(LEVEL, &node.display, &err))?;
            pubsub
                .subscribe(&self.shared.channel)
                .await
                .map_err(|err| subscribe_error(&node.display, &self.shared.channel, &err))?;
            Ok(pubsub.split())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Backend {
                level: LEVEL,
                op: "connect",
                reason: format!(
                    "{}: no answer within {timeout:?}; check the host and port and that redis-server is running and reachable (or raise connect_timeout)",
                    node.display
                ),
            }),
        }
    }

    fn mark_subscribed(&self, i: usize, at: SystemTime) {
        let name = self.nodes.get(i).map(|n| n.display.clone());
        *self.shared.subscribed.lock() = (name, Some(at));
        self.shared.connected.store(true, Ordering::Release);
    }

    /// Hands a call to the handler's thread (`delivery`), which catches and counts its panics;
    /// the handing over itself neither waits nor panics.
    fn call(&self, f: impl FnOnce(&dyn InvalidationHandler)) {
        f(&*self.handler);
    }

    /// One message; `alive` is the last moment the subscription was known to have delivered
    /// everything published before it.
    fn on_payload(&self, payload: &[u8], sequences: &mut Sequences, alive: SystemTime) {
        // No publisher of the format sends more (see `MAX_MESSAGE_LEN`); decoded, a message of
        // empty keys took about six times its size in RAM, and again on the handler's thread.
        if payload.len() > MAX_MESSAGE_LEN {
            Shared::bump(&self.shared.invalid);
            if let Some(unlogged) = self.noise.pass() {
                tracing::warn!(channel = %self.shared.channel, bytes = payload.len(), unlogged, "ignored a message on the backplane channel longer than any publisher sends");
            }
            return;
        }
        let msg = match decode(payload) {
            Ok(msg) => msg,
            Err(reason) => {
                Shared::bump(&self.shared.invalid);
                if let Some(unlogged) = self.noise.pass() {
                    tracing::warn!(channel = %self.shared.channel, %reason, unlogged, "ignored an invalid message on the backplane channel");
                }
                return;
            }
        };
        if msg.origin == self.shared.id {
            Shared::bump(&self.shared.ignored_own);
            return;
        }
        let skipped = sequences.note(msg.origin, msg.seq, Instant::now(), alive);
        if skipped > 0 {
            // Saturating: a number forged far ahead must not wrap the count.
            let _ = self
                .shared
                .sequence_gaps
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |gaps| {
                    Some(gaps.saturating_add(skipped))
                });
        }
        Shared::bump(&self.shared.received);
        self.call(|h| h.invalidate(&msg));
    }

    /// Serves one subscription until it fails; returns the last moment it was known to work.
    async fn serve(&self, sink: PubSubSink, mut stream: PubSubStream, since: SystemTime) -> SystemTime {
        let mut alive = since;
        let mut sequences = Sequences::default();
        let mut ticker = tokio::time::interval(self.ping_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate; we just subscribed
        let mut ping: Option<(SystemTime, PingFuture)> = None;
        loop {
            tokio::select! {
                msg = stream.next() => match msg {
                    Some(msg) => self.on_payload(msg.get_payload_bytes(), &mut sequences, alive),
                    None => return alive, // the connection ended
                },
                _ = ticker.tick(), if ping.is_none() => {
                    if let Some(since) = sequences.overdue(Instant::now(), self.ping_every.saturating_mul(3)) {
                        self.lost_a_message(since.min(alive));
                    }
                    let mut sink = sink.clone();
                    let deadline = self.ping_every;
                    ping = Some((now(), Box::pin(async move {
                        matches!(
                            tokio::time::timeout(deadline, sink.ping::<redis::Value>()).await,
                            Ok(Ok(_))
                        )
                    })));
                }
                answered = async { match ping.as_mut() { Some((_, fut)) => fut.await, None => std::future::pending().await } } => {
                    let sent = ping.take().map_or(alive, |(sent, _)| sent);
                    if !answered {
                        return alive; // no answer in time: the connection is dead or hung
                    }
                    // Everything published before the server answered this PING has arrived.
                    alive = alive.max(sent);
                }
            }
        }
    }
}

impl Context {
    /// A skip in a sender's sequence stayed open for the staleness bound: a message was lost
    /// while the subscription stayed up, published after `since`. The handler hears of it as of
    /// a loss and a restore at once, so that it distrusts what it holds as after any loss.
    fn lost_a_message(&self, since: SystemTime) {
        Shared::bump(&self.shared.gap_losses);
        tracing::warn!(channel = %self.shared.channel, "a message of another instance never arrived; L1 entries are suspect until revalidated");
        self.call(|h| h.subscription_lost(since));
        let at = now();
        let outage = Outage {
            since,
            detected_at: at,
            restored_at: at,
        };
        self.call(|h| h.subscription_restored(&outage));
    }
}

/// The subscriber task: first subscription (reported on `ready`), then serve, lose, reconnect,
/// for as long as the runtime runs. With `start_offline`, a first subscription that fails is
/// reported as a loss (since the start) instead of an error, and the reconnect loop takes over.
pub(super) async fn run(ctx: Context, ready: oneshot::Sender<Result<()>>, start_offline: OfflineStart) {
    let n = ctx.nodes.len().max(1);
    let started_at = now();
    // First subscription: each node in order, within connect_timeout overall.
    let started = tokio::time::Instant::now();
    let mut first = None;
    let mut last_err = None;
    for i in 0..n {
        let left = ctx.connect_timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match ctx.subscribe(i, left).await {
            Ok(pair) => {
                first = Some((i, pair));
                break;
            }
            Err(err) => keep_start_error(&mut last_err, err),
        }
    }
    let mut state = match first {
        Some((i, pair)) => {
            let since = now();
            ctx.mark_subscribed(i, since);
            Some((i, pair, since))
        }
        // A server that refuses the configuration (a wrong password, an ACL without the
        // channel) will not answer better later: that fails the start, offline or not, unless
        // the application asked to start regardless; then the refusal is reported as one met
        // later is.
        None if start_offline.after(last_err.as_ref()) => {
            match &last_err {
                Some(err) if err.is_misconfiguration() => ctx.shared.refused(err, true),
                Some(err) => {
                    tracing::warn!(%err, "backplane starts offline; L1 entries are suspect until it subscribes");
                }
                None => {}
            }
            None
        }
        None => {
            let _ = ready.send(Err(last_err.unwrap_or_else(|| Error::Backend {
                level: LEVEL,
                op: "connect",
                reason: format!("no answer within {:?}", ctx.connect_timeout),
            })));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    let mut node = 0;
    let mut alive = started_at;
    loop {
        if let Some((i, (sink, stream), since)) = state.take() {
            node = i;
            alive = ctx.serve(sink, stream, since).await;
        }
        // Lost (or never subscribed): say so before anything else.
        ctx.shared.connected.store(false, Ordering::Release);
        *ctx.shared.subscribed.lock() = (None, None);
        *ctx.shared.last_lost_at.lock() = Some(alive);
        Shared::bump(&ctx.shared.losses);
        let detected_at = now();
        tracing::warn!(channel = %ctx.shared.channel, "backplane subscription lost; L1 entries are suspect until it is restored");
        ctx.call(|h| h.subscription_lost(alive));

        let (i, pair) = ctx.reconnect(node, n).await;
        let restored_at = now();
        ctx.mark_subscribed(i, restored_at);
        Shared::bump(&ctx.shared.reconnects);
        let outage = Outage {
            since: alive,
            detected_at,
            restored_at,
        };
        tracing::info!(channel = %ctx.shared.channel, "backplane subscription restored");
        ctx.call(|h| h.subscription_restored(&outage));
        state = Some((i, pair, restored_at));
    }
}

impl Context {
    /// Subscribes again: at once to the same node (a killed connection on a healthy server),
    /// then through the other nodes, backing off (jittered, doubling up to the bound) after each
    /// full round. Returns only when subscribed.
    async fn reconnect(&self, mut node: usize, n: usize) -> (usize, (PubSubSink, PubSubStream)) {
        let mut delay = self.reconnect_min;
        let mut tried_in_round = 0;
        loop {
            match self.subscribe(node, self.connect_timeout).await {
                Ok(pair) => return (node, pair),
                Err(err) => {
                    node = (node + 1) % n;
                    tried_in_round += 1;
                    if err.is_misconfiguration() {
                        // A refusal, not an outage: counted where the operator looks, and the
                        // next round waits the longest backoff, since trying sooner cannot help
                        // and each try is a connection, an AUTH and a refused command.
                        self.shared.refused(&err, true);
                        delay = self.reconnect_max;
                    } else {
                        tracing::debug!(%err, "backplane resubscribe failed");
                    }
                    if tried_in_round >= n {
                        tried_in_round = 0;
                        tokio::time::sleep(jitter(delay)).await;
                        delay = delay.saturating_mul(2).min(self.reconnect_max);
                    }
                }
            }
        }
    }
}
