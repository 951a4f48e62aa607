//! The [`Backplane`] itself (feature `redis`): its options, its statistics, and the publisher
//! and subscriber tasks on the Redis I/O thread. See the [parent module](super).

mod delivery;
mod gaps;
mod publisher;
mod subscriber;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use self::delivery::Delivery;
use self::publisher::Publisher;
use super::message;
use super::{
    InstanceId, Invalidation, InvalidationHandler, InvalidationMessage, Outage, DEFAULT_CHANNEL,
    DEFAULT_PUBLISH_TIMEOUT, DEFAULT_REPUBLISH_LIMIT, DEFAULT_STALENESS_BOUND, MIN_STALENESS_BOUND,
};
use crate::distributed::redis::connection::Target;
use crate::distributed::runtime::{IoRuntime, Task};
use crate::distributed::RedisOptions;
use crate::error::{key_for_error, Error, Result};
use crate::log_limit::LogLimit;

const LEVEL: &str = "backplane";

/// How to reach the backplane's Redis and how strict to be.
///
/// ```
/// use std::time::Duration;
/// use uno_cache::RedisOptions;
/// use uno_cache::invalidation::BackplaneOptions;
///
/// let options = BackplaneOptions::new(RedisOptions::with_hosts(["10.0.0.1:7000", "10.0.0.2:7000"]).cluster(true))
///     .channel("shop:invalidate")
///     .staleness_bound(Duration::from_millis(500));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct BackplaneOptions {
    redis: RedisOptions,
    channel: String,
    publish_timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    staleness_bound: Duration,
    instance_id: Option<InstanceId>,
    republish_limit: usize,
    start_offline: OfflineStart,
    repeat_after: Duration,
    on_refusal: Option<RefusalHook>,
}

/// Which failures of the first connection [`Backplane::connect`] starts offline after instead of
/// failing (see [`BackplaneOptions::start_offline`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OfflineStart {
    outage: bool,
    refusal: bool,
}

impl OfflineStart {
    /// Whether a first connection that failed with `error` (`None`: no answer in time) starts
    /// offline.
    pub(super) fn after(self, error: Option<&Error>) -> bool {
        match error {
            Some(e) if e.is_misconfiguration() => self.outage && self.refusal,
            _ => self.outage,
        }
    }
}

/// Told of each refusal the backplane meets on its own, with no caller to hand it to: a
/// SUBSCRIBE or a re-send the server refuses as a wrong setting (see
/// [`BackplaneStats::config_errors`]). A manager counts them with L2's configuration errors.
#[derive(Clone)]
pub(crate) struct RefusalHook(pub(crate) Arc<dyn Fn(&Error) + Send + Sync>);

impl std::fmt::Debug for RefusalHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefusalHook")
    }
}

impl BackplaneOptions {
    /// Hands each refusal met by the subscriber or the re-send task to `hook` (which logs it)
    /// instead of logging it here.
    pub(crate) fn on_refusal(mut self, hook: RefusalHook) -> Self {
        self.on_refusal = Some(hook);
        self
    }

    /// Runs publishing and subscribing on this I/O thread (shared with the L2 and tags)
    /// instead of one of the backplane's own.
    pub(crate) fn io_runtime(mut self, runtime: Option<IoRuntime>) -> Self {
        self.redis = self.redis.io_runtime(runtime);
        self
    }

    /// The backplane on this Redis (standalone, or a Cluster's seed nodes). Of the Redis options,
    /// the hosts, credentials, TLS settings and `connect_timeout` are used; the key prefix is not
    /// (name the channel instead).
    pub fn new(redis: RedisOptions) -> Self {
        BackplaneOptions {
            redis,
            channel: DEFAULT_CHANNEL.to_owned(),
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            staleness_bound: DEFAULT_STALENESS_BOUND,
            instance_id: None,
            republish_limit: DEFAULT_REPUBLISH_LIMIT,
            start_offline: OfflineStart::default(),
            repeat_after: Duration::ZERO,
            on_refusal: None,
        }
    }

    /// The backplane on one Redis host or URL (see [`RedisOptions::new`]).
    pub fn url(url: impl Into<String>) -> Self {
        Self::new(RedisOptions::new(url))
    }

    /// The pub/sub channel (default `uno-cache:invalidate`). Instances that share an L2 share a
    /// channel; separate caches on one Redis use separate channels.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Deadline of one publish, connecting included (default 100 ms).
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Bounds of the reconnect backoff (default 50 ms doubling up to 2 s, with jitter). The
    /// first attempt after a loss is immediate.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max;
        self
    }

    /// The longest time the subscription may be dead before the handler is told (default 1 s,
    /// at least 30 ms). The subscriber sends a `PING` every third of it and gives each a third
    /// to be answered, so a silently dead connection is noticed within two thirds of the bound.
    pub fn staleness_bound(mut self, bound: Duration) -> Self {
        self.staleness_bound = bound;
        self
    }

    /// This instance's id (default: [`InstanceId::random`]). Two instances must never share one,
    /// nor two runs of one (see [`InstanceId::from_u128`]): the manager takes a new random id
    /// for each run.
    pub fn instance_id(mut self, id: InstanceId) -> Self {
        self.instance_id = Some(id);
        self
    }

    /// How many keys (or tags) of failed publishes are kept for re-sending (default 10 000). Past
    /// it, they are replaced by one [`Invalidation::All`].
    pub fn republish_limit(mut self, limit: usize) -> Self {
        self.republish_limit = limit;
        self
    }

    /// Sends each message handed to [`Backplane::publish_later`] a second time, this long after
    /// (default zero: once). Set it to the L2's timeout when the messages come from writes
    /// cancelled while their L2 command was in flight: that command may still run after the
    /// first message, and an instance that read the key from L2 in between keeps the old value;
    /// the second message, sent once the command has usually run or failed, drops it. A command
    /// that Redis runs later still (a stall longer than the timeout: a fork, a slow script)
    /// leaves the old value to its TTL, as before. A cache manager sets it so.
    pub fn repeat_later_after(mut self, delay: Duration) -> Self {
        self.repeat_after = delay;
        self
    }

    /// What [`Backplane::connect`] does when Redis cannot be reached: fail (`false`, the
    /// default), or start anyway (`true`) — for an L1 that must keep working offline. Started
    /// offline, the handler is told [`subscription_lost`](InvalidationHandler::subscription_lost)
    /// (since the start) at once, the subscriber keeps trying with its backoff, and
    /// [`subscription_restored`](InvalidationHandler::subscription_restored) follows when Redis
    /// answers; publishes fail (and are kept for re-sending) until then. Invalid options are an
    /// error either way, and so is a server that refuses the configuration, unless
    /// [`start_offline_when_refused`](Self::start_offline_when_refused) is set too.
    pub fn start_offline(mut self, on: bool) -> Self {
        self.start_offline.outage = on;
        self
    }

    /// With [`start_offline`](Self::start_offline), starts offline also when the server answers
    /// that the configuration is wrong (a refused password, an ACL user without `SUBSCRIBE` or
    /// the channel), instead of failing with [`Error::Misconfigured`] (default `false`: waiting
    /// cannot fix a wrong setting, so failing the start is the clearer answer). The refusal is
    /// then counted in [`BackplaneStats::config_errors`] and reported as one met later would be,
    /// and the subscriber retries at its longest backoff until the server takes the setting
    /// (a password rotated back, a user granted the channel). For an application that must start
    /// whatever the distributed side says; a cache manager sets it with
    /// `distributed.start_degraded_on_config_error`.
    pub fn start_offline_when_refused(mut self, on: bool) -> Self {
        self.start_offline.refusal = on;
        self
    }

    fn check(&self) -> Result<()> {
        let config = |field: &str, reason: &str| {
            Err(Error::Config {
                field: format!("backplane.{field}"),
                reason: reason.to_owned(),
            })
        };
        if self.channel.is_empty() {
            return config("channel", "the channel name is empty");
        }
        if self.publish_timeout.is_zero() {
            return config("publish_timeout", "must be above zero");
        }
        if self.reconnect_min.is_zero() || self.reconnect_max < self.reconnect_min {
            return config("reconnect_backoff", "need 0 < min <= max");
        }
        if self.staleness_bound < MIN_STALENESS_BOUND {
            return config("staleness_bound", "must be at least 30 ms");
        }
        Ok(())
    }

    fn ping_every(&self) -> Duration {
        self.staleness_bound / 3
    }
}

/// Counters and state of a [`Backplane`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BackplaneStats {
    /// Whether the subscription works now.
    pub connected: bool,
    /// The node the subscriber listens on (`host:port`), while connected.
    pub subscribed_to: Option<String>,
    /// Since when the current subscription works.
    pub subscribed_since: Option<SystemTime>,
    /// Messages Redis accepted from this instance (re-sent ones included).
    pub published: u64,
    /// Publish calls that failed (timeout, connection or server error).
    pub publish_failures: u64,
    /// Re-sends of kept messages that failed (by the re-send task, or the last attempt at
    /// shutdown); the message stays kept and is tried again with the reconnect backoff.
    pub republish_failures: u64,
    /// Refusals the server answered because a setting is wrong, which no retry fixes: a
    /// publish or re-send refused (an ACL user without PUBLISH on the channel), or a SUBSCRIBE
    /// refused (an ACL user without SUBSCRIBE or without the channel: this instance then hears
    /// no other instance's invalidations). The subscriber and the re-send task each try again
    /// only after the longest reconnect backoff (jittered: half of
    /// [`reconnect_backoff`](BackplaneOptions::reconnect_backoff)'s `max` at least).
    pub config_errors: u64,
    /// The last of those refusals: the host, the channel, and what to grant the user.
    pub last_config_error: Option<String>,
    /// Messages from other instances handed to the handler.
    pub received: u64,
    /// Messages from this instance, ignored.
    pub ignored_own: u64,
    /// Payloads on the channel that were not valid messages, ignored.
    pub invalid: u64,
    /// Sequence numbers skipped by other instances' messages (a missed or late message each).
    pub sequence_gaps: u64,
    /// Skips in another instance's sequence that no late message filled within the staleness
    /// bound, while the subscription stayed up: a lost message each time, told to the handler
    /// as a loss and a restore (not counted in `subscription_losses`).
    pub gap_losses: u64,
    /// Times the handler fell behind (events waited and none was handled for the staleness
    /// bound, too many waited or they held too much memory, or one waited for it that long):
    /// what arrived meanwhile, or waited too long, was dropped, and the handler was told of a
    /// loss (and a restore, if the subscription was up) before its next event (not counted in
    /// `subscription_losses`).
    pub handler_lags: u64,
    /// Subscriptions lost (each one told to the handler).
    pub subscription_losses: u64,
    /// Subscriptions restored after a loss.
    pub reconnects: u64,
    /// The `since` of the last loss.
    pub last_lost_at: Option<SystemTime>,
    /// Failed messages waiting to be re-sent.
    pub republish_pending: u64,
    /// Messages waiting to be sent a second time (see
    /// [`BackplaneOptions::repeat_later_after`]).
    pub repeats_pending: u64,
    /// Times the pending messages (or the repeats waiting to be due, see
    /// [`BackplaneOptions::repeat_later_after`]) overflowed the republish limit and became one
    /// `All`.
    pub republish_overflows: u64,
    /// Handler calls that panicked.
    pub handler_panics: u64,
}

/// State shared by the handle, the publisher and the subscriber.
#[derive(Debug)]
struct Shared {
    id: InstanceId,
    channel: String,
    connected: AtomicBool,
    subscribed: Mutex<(Option<String>, Option<SystemTime>)>,
    last_lost_at: Mutex<Option<SystemTime>>,
    published: AtomicU64,
    publish_failures: AtomicU64,
    republish_failures: AtomicU64,
    config_errors: AtomicU64,
    last_config_error: Mutex<Option<String>>,
    on_refusal: Option<RefusalHook>,
    received: AtomicU64,
    ignored_own: AtomicU64,
    invalid: AtomicU64,
    sequence_gaps: AtomicU64,
    gap_losses: AtomicU64,
    handler_lags: AtomicU64,
    losses: AtomicU64,
    reconnects: AtomicU64,
    republish_pending: AtomicU64,
    republish_overflows: AtomicU64,
    handler_panics: AtomicU64,
}

impl Shared {
    fn new(id: InstanceId, channel: String, on_refusal: Option<RefusalHook>) -> Self {
        Shared {
            id,
            channel,
            connected: AtomicBool::new(false),
            subscribed: Mutex::new((None, None)),
            last_lost_at: Mutex::new(None),
            published: AtomicU64::new(0),
            publish_failures: AtomicU64::new(0),
            republish_failures: AtomicU64::new(0),
            config_errors: AtomicU64::new(0),
            last_config_error: Mutex::new(None),
            on_refusal,
            received: AtomicU64::new(0),
            ignored_own: AtomicU64::new(0),
            invalid: AtomicU64::new(0),
            sequence_gaps: AtomicU64::new(0),
            gap_losses: AtomicU64::new(0),
            handler_lags: AtomicU64::new(0),
            losses: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            republish_pending: AtomicU64::new(0),
            republish_overflows: AtomicU64::new(0),
            handler_panics: AtomicU64::new(0),
        }
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a refusal of the configuration and keeps it as the last. `unheard`: no caller
    /// gets it (the subscriber's, the re-send task's), so the hook is told, or, without one,
    /// it is logged at error level once per distinct message (it repeats at every retry).
    fn refused(&self, error: &Error, unheard: bool) {
        Self::bump(&self.config_errors);
        let text = error.to_string();
        let new = {
            let mut last = self.last_config_error.lock();
            let new = last.as_deref() != Some(text.as_str());
            *last = Some(text);
            new
        };
        if !unheard {
            return;
        }
        match &self.on_refusal {
            Some(hook) => (hook.0)(error),
            None if new => tracing::error!(channel = %self.channel, %error,
                "the backplane's server refuses this configuration; fix it (retrying cannot help)"),
            None => {}
        }
    }
}

/// What Redis said to a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The message's sequence number.
    pub seq: u64,
    /// Subscribers that received it, as `PUBLISH` reports it: on a standalone server every
    /// subscriber of the channel (this instance's own included); on a cluster only those on the
    /// node that took the publish (the other nodes get it too, but do not report a count).
    pub receivers: u64,
}

/// The invalidation backplane: publishes this instance's invalidations and hands every other
/// instance's to an [`InvalidationHandler`]. See the docs of `src/invalidation/backplane/mod.rs`.
pub struct Backplane {
    shared: Arc<Shared>,
    publisher: Arc<Publisher>,
    publish_timeout: Duration,
    repeat_after: Duration,
    // Field order is drop order: the subscriber task stops, then the handler's thread handles
    // what the subscriber handed it, then the resend task stops, then the handle on the I/O
    // thread (shared by publishing and subscribing, and perhaps with the L2) goes.
    subscriber: Task,
    delivery: Delivery,
    resend: Task,
    rt: IoRuntime,
}

impl std::fmt::Debug for Backplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backplane")
            .field("id", &self.shared.id)
            .field("channel", &self.shared.channel)
            .field("hosts", &self.publisher.hosts())
            .finish_non_exhaustive()
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl Backplane {
    /// Stops receiving and re-sending, and waits until both tasks have ended and the handler has
    /// handled what it was handed (what they held, a manager's state through the handler, is
    /// released then); publishing still works.
    /// Messages kept for re-sending get one last attempt in between, within the publish
    /// timeout: an instance that stops must not take the news of its last writes with it. A
    /// manager's shutdown calls it so that its state is never released last on the I/O thread.
    ///
    /// Not from a task of this backplane's own I/O runtime (it would wait on itself until the
    /// publish timeout).
    pub fn shutdown(&self) {
        self.resend.stop();
        // Repeats not yet due go now: later, nobody would send them.
        self.publisher.release_repeats(None);
        if self.stats().republish_pending > 0 {
            let publisher = self.publisher.clone();
            let sent = self.rt.block_on("publish", self.publish_timeout, async move {
                Ok(publisher.send_kept().await)
            });
            if let Err(err) = &sent {
                // Cut short by the deadline: a failed re-send, as one that timed out in the
                // re-send task is (a failure that returned was counted where it was met).
                self.publisher.resend_failed(err);
            }
            if !matches!(sent, Ok(true)) {
                tracing::warn!(
                    pending = self.stats().republish_pending,
                    "invalidations kept for re-sending could not be sent before shutdown; other instances learn of them only through their TTLs or a lost subscription"
                );
            }
        }
        self.subscriber.stop();
        self.delivery.finish();
    }

    /// Connects the publisher, subscribes to the channel (within the Redis options'
    /// `connect_timeout`, trying the hosts in order) and starts the subscriber task.
    ///
    /// Works from any thread, inside a tokio runtime or not (inside one it blocks that thread
    /// while it connects). Entries the L1 held before this call were not covered by any
    /// subscription: treat them as suspect, as after [`InvalidationHandler::subscription_restored`].
    ///
    /// # Errors
    /// [`Error::Config`] for invalid options or hosts; [`Error::Backend`] (level `"backplane"`, op
    /// `"connect"`) naming the hosts if none can be reached, refuses the credentials or does not answer
    /// within `connect_timeout` — unless [`start_offline`](BackplaneOptions::start_offline) is
    /// set, which starts disconnected instead; [`Error::Misconfigured`] if a server refuses the
    /// configuration (a wrong password), with or without `start_offline` (waiting cannot fix
    /// it), unless [`start_offline_when_refused`](BackplaneOptions::start_offline_when_refused)
    /// is set as well.
    pub fn connect(options: BackplaneOptions, handler: Arc<dyn InvalidationHandler>) -> Result<Self> {
        options.check()?;
        let (targets, _cluster) = options.redis.resolve_targets()?;
        let clients = targets
            .iter()
            .map(|t| {
                options.redis.client_for(t).map_err(|err| {
                    crate::distributed::redis::errors::connect_error_for(LEVEL, &t.display, &err)
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let nodes: Vec<Node> = targets
            .into_iter()
            .zip(clients)
            .map(|(target, client)| Node::new(&target, client))
            .collect();
        let id = options.instance_id.unwrap_or_else(InstanceId::random);
        let shared = Arc::new(Shared::new(
            id,
            options.channel.clone(),
            options.on_refusal.clone(),
        ));
        let connect_timeout = options.redis.connect_deadline();

        let rt = options.redis.runtime_for(LEVEL)?;
        let publisher = Arc::new(Publisher::new(
            nodes.clone(),
            shared.clone(),
            &options,
            connect_timeout,
        ));
        let first = publisher.clone();
        let connected = rt
            .block_on(
                "connect",
                connect_timeout,
                async move { first.connect_any().await },
            )
            .map_err(|err| no_answer(err, &publisher.hosts(), connect_timeout));
        match connected {
            Ok(()) => {}
            // Offline start: publishes fail (and are kept) until Redis answers. A server that
            // refuses the configuration (a wrong password) will not answer better later, so
            // that fails the start unless the application asked to start regardless. The
            // subscriber, refused the same way, reports the refusal.
            Err(err) if options.start_offline.after(Some(&err)) => {
                tracing::warn!(%err, "backplane publisher starts offline");
            }
            Err(err) => return Err(err),
        }
        let resend = rt.spawn(Publisher::resend_loop(publisher.clone()));

        let (delivery, handler) = Delivery::start(handler, shared.clone(), options.staleness_bound)?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let subscriber = rt.spawn(subscriber::run(
            subscriber::Context {
                nodes,
                shared: shared.clone(),
                handler,
                ping_every: options.ping_every(),
                connect_timeout,
                reconnect_min: options.reconnect_min,
                reconnect_max: options.reconnect_max,
                noise: LogLimit::new(),
            },
            ready_tx,
            options.start_offline,
        ));
        rt.block_on(
            "connect",
            connect_timeout.saturating_add(Duration::from_millis(100)),
            async move {
                ready_rx.await.unwrap_or_else(|_| {
                    Err(Error::Backend {
                        level: LEVEL,
                        op: "connect",
                        reason: "the subscriber task stopped before it subscribed".to_owned(),
                    })
                })
            },
        )
        .map_err(|err| no_answer(err, &publisher.hosts(), connect_timeout))?;
        Ok(Backplane {
            shared,
            publisher,
            publish_timeout: options.publish_timeout,
            repeat_after: options.repeat_after,
            subscriber,
            delivery,
            resend,
            rt,
        })
    }

    /// This instance's id (carried by every message it publishes).
    #[must_use]
    pub fn instance_id(&self) -> InstanceId {
        self.shared.id
    }

    /// The channel.
    #[must_use]
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Publishes `invalidation` and waits for Redis to take it, at most the publish timeout.
    /// Works from any thread, inside a runtime or not.
    ///
    /// A failed message is not forgotten: the backplane keeps it (up to the republish limit) and
    /// re-sends it when Redis answers again, so the error means "late", not "lost". Receivers
    /// treat invalidations as idempotent, so a late or repeated one only costs a miss.
    ///
    /// # Errors
    /// [`Error::Timeout`] or [`Error::Backend`] (level `"backplane"`) if Redis did not take it in
    /// time; [`Error::ValueTooLarge`] if the message would exceed
    /// [`MAX_MESSAGE_LEN`](message::MAX_MESSAGE_LEN) (nothing is sent or kept: split it).
    pub fn publish(&self, invalidation: &Invalidation) -> Result<Published> {
        let (seq, bytes) = self.prepare(invalidation)?;
        let publisher = self.publisher.clone();
        let weight = invalidation.weight();
        let send = bytes.clone();
        let out = self.rt.block_on("publish", self.publish_timeout, async move {
            publisher.send(send).await
        });
        self.finish(seq, bytes, weight, out)
    }

    /// [`publish`](Self::publish) without blocking the caller's executor. A future dropped
    /// before Redis answered (a caller's timeout) leaves its message to the re-send task, as a
    /// failed publish does: the send is cancelled with it, and Redis may never have had it.
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_async(&self, invalidation: &Invalidation) -> Result<Published> {
        let (seq, bytes) = self.prepare(invalidation)?;
        let publisher = self.publisher.clone();
        let weight = invalidation.weight();
        let send = bytes.clone();
        let mut unanswered = Unanswered {
            publisher: &self.publisher,
            message: Some((bytes, weight)),
        };
        let out = self
            .rt
            .run("publish", self.publish_timeout, async move {
                publisher.send(send).await
            })
            .await;
        let (bytes, weight) = unanswered.message.take().unwrap_or_default();
        self.finish(seq, bytes, weight, out)
    }

    /// Hands `invalidation` to the re-send task instead of sending it now: for a caller that
    /// cannot wait (a write whose future was dropped before it published, from `Drop`). It is
    /// sent within moments, or kept and re-sent as a failed publish is; and once more after
    /// [`repeat_later_after`](BackplaneOptions::repeat_later_after), if set.
    ///
    /// # Errors
    /// [`Error::ValueTooLarge`] as for [`publish`](Self::publish); nothing is kept then.
    pub fn publish_later(&self, invalidation: &Invalidation) -> Result<()> {
        self.publish_later_repeated(invalidation, true)
    }

    /// [`publish_later`](Self::publish_later), with the repeat only if `repeat`: a caller whose
    /// L2 command has answered has nothing left in flight that could run after the message.
    pub(crate) fn publish_later_repeated(&self, invalidation: &Invalidation, repeat: bool) -> Result<()> {
        let (_, bytes) = self.prepare(invalidation)?;
        self.publisher.keep(bytes, invalidation.weight());
        // A delay past what an `Instant` holds would never come: such a repeat goes at shutdown.
        if repeat && !self.repeat_after.is_zero() {
            let at = Instant::now().checked_add(self.repeat_after);
            self.publisher.repeat(invalidation.clone(), at);
        }
        Ok(())
    }

    fn prepare(&self, invalidation: &Invalidation) -> Result<(u64, Vec<u8>)> {
        let msg = InvalidationMessage {
            origin: self.shared.id,
            seq: 0,
            invalidation: invalidation.clone(),
        };
        let len = msg.encoded_len();
        if len > message::MAX_MESSAGE_LEN {
            let first = match invalidation {
                Invalidation::Keys(items) | Invalidation::Tags(items) => items.first().cloned(),
                Invalidation::Prefix(prefix) => Some(prefix.clone()),
                Invalidation::All => None,
            };
            return Err(Error::ValueTooLarge {
                key: key_for_error(&first.unwrap_or_default()),
                len,
                max: message::MAX_MESSAGE_LEN,
                store: "a backplane message (split the key list)".to_owned(),
            });
        }
        let seq = self.publisher.next_seq();
        Ok((seq, InvalidationMessage { seq, ..msg }.encode()))
    }

    fn finish(&self, seq: u64, bytes: Vec<u8>, weight: usize, out: Result<u64>) -> Result<Published> {
        match out {
            Ok(receivers) => Ok(Published { seq, receivers }),
            Err(err) => {
                Shared::bump(&self.shared.publish_failures);
                if err.is_misconfiguration() {
                    // The caller gets it (a manager counts it with its own).
                    self.shared.refused(&err, false);
                }
                self.publisher.failed(bytes, weight);
                Err(match err {
                    Error::Timeout { server, after, .. } => Error::Timeout {
                        level: LEVEL,
                        op: "publish",
                        server,
                        after,
                    },
                    other => other,
                })
            }
        }
    }

    /// Counters and state.
    #[must_use]
    pub fn stats(&self) -> BackplaneStats {
        let s = &self.shared;
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (subscribed_to, subscribed_since) = s.subscribed.lock().clone();
        BackplaneStats {
            connected: s.connected.load(Ordering::Acquire),
            subscribed_to,
            subscribed_since,
            published: load(&s.published),
            publish_failures: load(&s.publish_failures),
            republish_failures: load(&s.republish_failures),
            config_errors: load(&s.config_errors),
            last_config_error: s.last_config_error.lock().clone(),
            received: load(&s.received),
            ignored_own: load(&s.ignored_own),
            invalid: load(&s.invalid),
            sequence_gaps: load(&s.sequence_gaps),
            gap_losses: load(&s.gap_losses),
            handler_lags: load(&s.handler_lags),
            subscription_losses: load(&s.losses),
            reconnects: load(&s.reconnects),
            last_lost_at: *s.last_lost_at.lock(),
            republish_pending: load(&s.republish_pending),
            repeats_pending: self.publisher.repeats_pending(),
            republish_overflows: load(&s.republish_overflows),
            handler_panics: load(&s.handler_panics),
        }
    }
}

/// A message [`Backplane::publish_async`] sends, kept for re-sending if its future is dropped
/// before Redis answered. Sent twice at worst (Redis took it before the drop): an invalidation
/// repeated costs a miss, one lost a stale value.
struct Unanswered<'a> {
    publisher: &'a Publisher,
    message: Option<(Vec<u8>, usize)>,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some((bytes, weight)) = self.message.take() {
            self.publisher.keep(bytes, weight);
        }
    }
}

/// A connect deadline that passed, said as what to check (as the L2 levels say it).
fn no_answer(err: Error, hosts: &str, timeout: Duration) -> Error {
    match err {
        Error::Timeout { .. } => Error::Backend {
            level: LEVEL,
            op: "connect",
            reason: format!(
                "{hosts}: no answer within {timeout:?}; check the host and port and that redis-server is running and reachable (or raise connect_timeout)"
            ),
        },
        other => other,
    }
}

/// One Redis host: its client (not connected) and its name for messages.
#[derive(Clone)]
struct Node {
    client: redis::Client,
    display: String,
}

impl Node {
    fn new(target: &Target, client: redis::Client) -> Self {
        Node {
            client,
            display: target.display.clone(),
        }
    }
}

/// Keeps `err` as the error the start reports, unless the one kept already is a refusal of the
/// configuration: that is what to fix, and it fails the start, offline or not, whatever the
/// order of the nodes. Kept last-wins, a node that was down listed after the refusing one stood
/// for it, as an outage.
fn keep_start_error(kept: &mut Option<Error>, err: Error) {
    if !kept.as_ref().is_some_and(Error::is_misconfiguration) {
        *kept = Some(err);
    }
}

/// A jittered delay in `[d/2, d]`, so instances do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_nanos()),
    );
    let frac = hasher.finish() % 1024;
    let half = d / 2;
    half + half.mul_f64(frac as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backplane_and_its_parts_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Backplane>();
        check::<BackplaneOptions>();
        check::<BackplaneStats>();
        check::<InvalidationMessage>();
    }

    #[test]
    fn the_ping_period_keeps_detection_within_the_bound() {
        let options = BackplaneOptions::url("h:1").staleness_bound(Duration::from_millis(900));
        // A PING every third, each with a third to answer: a silent death is noticed within two
        // thirds of the bound.
        assert_eq!(options.ping_every(), Duration::from_millis(300));
        assert!(options.ping_every() * 2 < options.staleness_bound);
    }

    #[test]
    fn jitter_stays_within_half_and_whole() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_millis(100));
            assert!(
                d >= Duration::from_millis(50) && d <= Duration::from_millis(100),
                "{d:?}"
            );
        }
    }
}
