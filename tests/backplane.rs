//! The invalidation backplane's messages against real `redis-server` processes, two `Backplane`
//! instances in one process: round trips of every kind of invalidation, own messages ignored,
//! garbage on the channel counted and never a panic, messages sent again after the repeat delay
//! and at shutdown, a handler that panics or is busy, and a skip in a sender's sequence told as a
//! loss. When the server fails (a subscription lost, found out, restored, and the handler told
//! within the staleness bound): `tests/backplane_outages.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "backplane_common/mod.rs"]
mod backplane_common;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backplane_common::*;
use support::RedisServer;
use uno_cache::invalidation::{
    Backplane, InstanceId, Invalidation, InvalidationHandler, InvalidationMessage,
};

#[test]
fn every_kind_of_invalidation_reaches_the_other_instance_with_origin_and_sequence() {
    let server = RedisServer::start();
    let (a, _a_seen) = instance(options(&server));
    let (_b, b_seen) = instance(options(&server));
    let sent = [
        keys(&["user:1", "user:2"]),
        Invalidation::Tags(vec!["team:7".to_owned()]),
        Invalidation::Prefix("session:".to_owned()),
        Invalidation::All,
    ];
    for (i, inv) in sent.iter().enumerate() {
        let published = a.publish(inv).unwrap();
        assert_eq!(published.seq, i as u64 + 1);
        assert_eq!(published.receivers, 2, "both subscribers are on the one server");
    }
    b_seen.wait_for("4 messages", WAIT, |e| count_messages(e) == 4);
    let got = b_seen.messages();
    for (i, (msg, inv)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(&msg.invalidation, inv);
        assert_eq!(msg.origin, a.instance_id());
        assert_eq!(msg.seq, i as u64 + 1);
    }
    let stats = a.stats();
    assert_eq!((stats.published, stats.publish_failures), (4, 0));
    assert!(stats.connected);
    assert_eq!(stats.subscribed_to, Some(server.addr()));
}

#[test]
fn own_messages_are_ignored_and_counted() {
    let server = RedisServer::start();
    let (a, a_seen) = instance(options(&server));
    let (b, b_seen) = instance(options(&server));
    a.publish(&keys(&["k"])).unwrap();
    b.publish(&keys(&["from-b"])).unwrap();
    // Each sees exactly the other's message; by then its own has passed through too (same
    // connection order on one server).
    a_seen.wait_for("b's message", WAIT, |e| count_messages(e) == 1);
    b_seen.wait_for("a's message", WAIT, |e| count_messages(e) == 1);
    assert_eq!(a_seen.messages()[0].invalidation, keys(&["from-b"]));
    assert_eq!(b_seen.messages()[0].invalidation, keys(&["k"]));
    let deadline = Instant::now() + WAIT;
    while a.stats().ignored_own < 1 || b.stats().ignored_own < 1 {
        assert!(Instant::now() < deadline, "own messages were not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!((a.stats().received, a.stats().ignored_own), (1, 1));
    assert_eq!((b.stats().received, b.stats().ignored_own), (1, 1));
}

#[test]
fn garbage_on_the_channel_is_counted_and_ignored() {
    let server = RedisServer::start();
    let (a, _) = instance(options(&server));
    let (b, b_seen) = instance(options(&server));
    let valid = InvalidationMessage {
        origin: InstanceId::from_u128(99),
        seq: 1,
        invalidation: keys(&["k"]),
    }
    .encode();
    let mut flipped = valid.clone();
    flipped[40] ^= 0x20;
    let mut newer = valid.clone();
    newer[4] = 2;
    let garbage: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"hello".to_vec(),
        b"UNOI".to_vec(),
        vec![0xff; 4096],
        flipped,
        newer,
        valid[..valid.len() - 1].to_vec(),
    ];
    let mut raw = server.raw();
    for payload in &garbage {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(b.channel())
            .arg(payload.as_slice())
            .query(&mut raw)
            .unwrap();
    }
    // A real message after the garbage still arrives, and only it.
    a.publish(&keys(&["after"])).unwrap();
    b_seen.wait_for("the real message", WAIT, |e| count_messages(e) == 1);
    assert_eq!(b_seen.messages()[0].invalidation, keys(&["after"]));
    let stats = b.stats();
    assert_eq!(stats.invalid, garbage.len() as u64);
    assert!(stats.connected, "garbage must not drop the subscription");
    assert_eq!(stats.subscription_losses, 0);
}

/// No publisher of the format sends a message over 32 MiB (`MAX_MESSAGE_LEN`). One found on the
/// channel (another program; a Redis whose pub/sub output limit was raised lets it through) is
/// ignored and counted before it is decoded: decoded, its keys took several times its size in
/// RAM and were handed on.
#[test]
fn a_message_longer_than_any_publisher_sends_is_counted_and_ignored() {
    let server = RedisServer::start();
    // Both instances' I/O threads read the 34 MB message (a debug build, on a loaded machine:
    // a second or more), and B's health-check PING is answered after it on the same
    // connection: with the default publish timeout (100 ms) A's publish timed out, and with the
    // default staleness bound (a PING deadline of 333 ms) B took its subscription for lost and
    // missed the message, 4 runs in 6 on a loaded 2-core machine. Neither deadline is what this
    // test is about.
    let opts = || {
        options(&server)
            .publish_timeout(Duration::from_secs(10))
            .staleness_bound(Duration::from_secs(30))
    };
    let (a, _) = instance(opts());
    let (b, b_seen) = instance(opts());
    let mut raw = server.raw();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("client-output-buffer-limit")
        .arg("pubsub 0 0 0")
        .query(&mut raw)
        .unwrap();
    let key = "k".repeat(1_000);
    let oversize = InvalidationMessage {
        origin: InstanceId::from_u128(99),
        seq: 1,
        invalidation: Invalidation::Keys(vec![key; 34_000]),
    }
    .encode();
    assert!(oversize.len() > uno_cache::invalidation::message::MAX_MESSAGE_LEN);
    let _: i64 = redis::cmd("PUBLISH")
        .arg(b.channel())
        .arg(oversize.as_slice())
        .query(&mut raw)
        .unwrap();
    a.publish(&keys(&["after"])).unwrap();
    b_seen.wait_for("the real message", WAIT, |e| count_messages(e) >= 1);
    // Compared, not printed: the oversized message would fill the log.
    assert!(
        b_seen.messages()[0].invalidation == keys(&["after"]),
        "the oversized message was delivered"
    );
    assert_eq!(b.stats().invalid, 1);
    assert_eq!(b.stats().subscription_losses, 0, "{:?}", b.stats());
}

/// A message handed to `publish_later` goes at once and, with `repeat_later_after`, once more
/// when that delay has passed (what a cancelled write needs: its L2 command may run after the
/// first). The repeat takes its sequence number when it is sent, so the messages published in
/// between leave no gap for the subscribers to count.
#[test]
fn a_message_published_later_is_sent_again_after_the_repeat_delay_without_a_sequence_gap() {
    let server = RedisServer::start();
    // Long beside the moments a message takes, so that "other" goes between the two on a
    // loaded machine too.
    let repeat = Duration::from_secs(3);
    let (a, _) = instance(options(&server).repeat_later_after(repeat));
    let (b, b_seen) = instance(options(&server));
    let handed = Instant::now();
    a.publish_later(&keys(&["cancelled"])).unwrap();
    b_seen.wait_for("the first message", WAIT, |e| count_messages(e) >= 1);
    assert!(
        handed.elapsed() < repeat,
        "the first message waited for the repeat"
    );
    a.publish(&keys(&["other"])).unwrap();
    b_seen.wait_for("the repeat", WAIT, |e| count_messages(e) >= 3);
    assert!(handed.elapsed() >= repeat, "the repeat came early");
    let got: Vec<(Invalidation, u64)> = b_seen
        .messages()
        .into_iter()
        .map(|m| (m.invalidation, m.seq))
        .collect();
    assert_eq!(
        got,
        [
            (keys(&["cancelled"]), 1),
            (keys(&["other"]), 2),
            (keys(&["cancelled"]), 3)
        ]
    );
    assert_eq!(b.stats().sequence_gaps, 0);
}

/// Without `repeat_later_after`, `publish_later` sends once, and shutdown sends a repeat that is
/// not yet due rather than losing it, even one whose delay no clock can reach.
#[test]
fn a_repeat_not_yet_due_at_shutdown_is_sent_then() {
    let server = RedisServer::start();
    let (once, _) = instance(options(&server));
    let (a, _) = instance(options(&server).repeat_later_after(Duration::MAX));
    let (_b, b_seen) = instance(options(&server));
    once.publish_later(&keys(&["once"])).unwrap();
    a.publish_later(&keys(&["twice"])).unwrap();
    b_seen.wait_for("both first messages", WAIT, |e| count_messages(e) >= 2);
    // Once the re-send task has forgotten A's first message: a shutdown during its send would
    // send it again (at least once, as kept messages are), which is not the repeat.
    support::wait_until("A's first message to be marked sent", || {
        a.stats().republish_pending == 0
    });
    let first = b_seen
        .messages()
        .iter()
        .find(|m| m.invalidation == keys(&["twice"]))
        .map(|m| m.seq)
        .expect("the first 'twice' was received");
    a.shutdown();
    b_seen.wait_for("the repeat sent at shutdown", WAIT, |e| count_messages(e) >= 3);
    let got = b_seen.messages();
    let mut kinds: Vec<&Invalidation> = got.iter().map(|m| &m.invalidation).collect();
    kinds.sort_by_key(|inv| format!("{inv:?}"));
    assert_eq!(kinds, [&keys(&["once"]), &keys(&["twice"]), &keys(&["twice"])]);
    let repeat = got
        .iter()
        .rev()
        .find(|m| m.invalidation == keys(&["twice"]))
        .map(|m| m.seq)
        .expect("a 'twice' was received");
    assert!(
        repeat > first,
        "the repeat carries a sequence number of its own: {got:?}"
    );
}

/// A message kept for re-sending when the instance shuts down is sent then, not lost with it
/// (here the re-send task would wait a minute first).
#[test]
fn shutdown_sends_the_messages_kept_for_re_sending() {
    let server = RedisServer::start();
    // Long enough for the last attempt to reconnect and publish on a loaded machine.
    let (a, _) = instance(
        options(&server)
            .publish_timeout(Duration::from_millis(500))
            .reconnect_backoff(Duration::from_secs(60), Duration::from_secs(120)),
    );
    let (_b, b_seen) = instance(options(&server));
    pause_writes(&server);
    assert!(
        a.publish(&keys(&["last"])).is_err(),
        "the publish went through a paused server"
    );
    assert_eq!(a.stats().republish_pending, 1);
    unpause(&server);
    a.shutdown();
    assert_eq!(a.stats().republish_pending, 0, "{:?}", a.stats());
    b_seen.wait_for("the message sent at shutdown", WAIT, |e| count_messages(e) >= 1);
    assert_eq!(b_seen.messages()[0].invalidation, keys(&["last"]));
}

/// A last attempt at shutdown that the publish timeout cuts short is a failed re-send, counted as
/// one that times out in the re-send task is (it was not counted at all), and the message is
/// still reported pending.
#[test]
fn a_re_send_cut_short_at_shutdown_is_counted_as_failed() {
    let server = RedisServer::start();
    let (a, _) = instance(
        options(&server)
            .publish_timeout(Duration::from_millis(200))
            .reconnect_backoff(Duration::from_secs(60), Duration::from_secs(120)),
    );
    pause_writes(&server);
    assert!(a.publish(&keys(&["last"])).is_err());
    let before = a.stats();
    assert_eq!(before.republish_pending, 1, "{before:?}");
    a.shutdown();
    unpause(&server);
    let after = a.stats();
    assert_eq!(
        after.republish_failures,
        before.republish_failures + 1,
        "{after:?}"
    );
    assert_eq!(after.republish_pending, 1, "{after:?}");
}

#[test]
fn publish_async_works_under_any_executor() {
    let server = RedisServer::start();
    let (a, _) = instance(options(&server));
    let (_b, b_seen) = instance(options(&server));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let published = rt.block_on(a.publish_async(&keys(&["async"]))).unwrap();
    assert_eq!(published.seq, 1);
    b_seen.wait_for("async message", WAIT, |e| count_messages(e) == 1);
}

/// A handler that panics on every message.
struct Panicky;

impl InvalidationHandler for Panicky {
    fn invalidate(&self, _: &InvalidationMessage) {
        panic!("handler bug");
    }
    fn subscription_lost(&self, _: SystemTime) {}
}

#[test]
fn a_panicking_handler_is_counted_and_the_subscriber_goes_on() {
    let server = RedisServer::start();
    let (a, _) = instance(options(&server));
    // A staleness bound longer than a panic can take: with RUST_BACKTRACE=1 the first panic's
    // backtrace took the handler's thread past the default bound (1 s) on a loaded 2-core
    // machine, and the second message, late by then, was dropped as a lag instead of handled.
    let b = Backplane::connect(
        options(&server).staleness_bound(Duration::from_secs(30)),
        Arc::new(Panicky),
    )
    .unwrap();
    a.publish(&keys(&["x"])).unwrap();
    a.publish(&keys(&["y"])).unwrap();
    let deadline = Instant::now() + WAIT;
    while b.stats().handler_panics < 2 {
        assert!(Instant::now() < deadline, "{:?}", b.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(b.stats().connected);
    assert_eq!(b.stats().received, 2);
    assert_eq!(b.stats().handler_lags, 0);
}

/// A handler that waits in `invalidate` until the test lets it go, as one doing disk work does.
struct Held {
    entered: std::sync::mpsc::SyncSender<()>,
    release: parking_lot::Mutex<std::sync::mpsc::Receiver<()>>,
    /// Calls of `invalidate` that returned.
    handled: std::sync::atomic::AtomicU64,
}

/// Lets the held handler go when dropped: before the backplane, whatever the test's outcome.
struct Release(std::sync::mpsc::Sender<()>);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

impl InvalidationHandler for Held {
    fn invalidate(&self, _message: &InvalidationMessage) {
        let _ = self.entered.try_send(());
        let _ = self.release.lock().recv();
        self.handled.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn subscription_lost(&self, _since: SystemTime) {}
}

/// The handler runs on a thread of its own: while it is busy (a manager's handler fsyncs L1
/// deletes), the instance's I/O thread still publishes, and answers the subscription's health
/// checks. Called on that thread, it held both: publishes timed out, and a healthy subscription
/// was declared lost. A shutdown still waits for the event under way: what the handler holds (a
/// manager's state) is released before it returns.
#[test]
fn a_busy_handler_holds_neither_publishing_nor_the_subscriptions_health_checks() {
    let server = RedisServer::start();
    let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let handler = Arc::new(Held {
        entered: entered_tx,
        release: parking_lot::Mutex::new(release_rx),
        handled: std::sync::atomic::AtomicU64::new(0),
    });
    let bound = Duration::from_millis(1500);
    let b = Backplane::connect(
        options(&server)
            .publish_timeout(Duration::from_millis(500))
            .staleness_bound(bound),
        handler.clone(),
    )
    .unwrap();
    let release = Release(release_tx);
    let (a, _) = instance(options(&server));
    a.publish(&keys(&["k"])).unwrap();
    entered.recv_timeout(WAIT).expect("the handler was never called");

    // Held for twice the staleness bound: six health checks are due meanwhile.
    let held_until = Instant::now() + bound * 2;
    while Instant::now() < held_until {
        b.publish(&keys(&["mine"])).unwrap();
        assert_eq!(b.stats().subscription_losses, 0, "{:?}", b.stats());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(b.stats().connected);
    let handled = std::thread::scope(|s| {
        let stopping = s.spawn(|| {
            b.shutdown();
            handler.handled.load(std::sync::atomic::Ordering::SeqCst)
        });
        // Time for a shutdown that does not wait to return.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !stopping.is_finished(),
            "the shutdown did not wait for the handler"
        );
        drop(release);
        stopping.join().unwrap()
    });
    assert_eq!(handled, 1, "the shutdown returned before the handler did");
}

/// Publishes a message of `origin` numbered `seq` by hand, as another instance would.
fn publish_as(redis: &mut redis::Connection, channel: &str, origin: InstanceId, seq: u64) {
    let message = InvalidationMessage {
        origin,
        seq,
        invalidation: keys(&[&format!("k{seq}")]),
    };
    let _: () = redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message.encode())
        .query(redis)
        .unwrap();
}

/// A message lost while the subscription stays up (a cluster bus link that failed, a node that
/// died right after taking the `PUBLISH`) shows only as a skip in its sender's sequence. Left
/// unfilled for the staleness bound, it is told to the handler as a loss and a restore; it was
/// only counted. A skip that a late message fills (a re-send) is no loss.
#[test]
fn a_skip_in_a_senders_sequence_left_unfilled_is_told_as_a_loss_and_one_filled_late_is_not() {
    let server = RedisServer::start();
    let bound = Duration::from_millis(300);
    let (b, seen) = instance(options(&server).staleness_bound(bound));
    let mut raw = server.raw();

    let late = InstanceId::random();
    for seq in [1, 3, 2] {
        publish_as(&mut raw, b.channel(), late, seq);
    }
    seen.wait_for("the three messages", WAIT, |e| count_messages(e) >= 3);
    // Three staleness bounds, for a loss that should not come.
    std::thread::sleep(bound * 3);
    assert!(
        !has_lost(&seen.events.lock()),
        "a filled skip was taken for a loss"
    );
    assert_eq!(b.stats().sequence_gaps, 1);

    let lossy = InstanceId::random();
    for seq in [1, 3] {
        publish_as(&mut raw, b.channel(), lossy, seq);
    }
    let events = seen.wait_for("the loss of message 2", WAIT, has_restored);
    assert!(has_lost(&events));
    let stats = b.stats();
    assert_eq!(stats.gap_losses, 1, "{stats:?}");
    assert_eq!(stats.subscription_losses, 0, "the subscription itself stayed up");
    assert!(stats.connected);
}

/// A loss found from a skip in a sender's sequence is reported `since` no later than the lost
/// message was published ("messages published after `since` may be lost"): it was the last
/// `PING` answered before the check, later than the lost message, so a handler that distrusts
/// only what changed since kept what it should have dropped.
#[test]
fn the_since_of_a_loss_found_from_a_skip_is_before_the_lost_message() {
    let server = RedisServer::start();
    let bound = Duration::from_millis(300);
    let (b, seen) = instance(options(&server).staleness_bound(bound));
    let mut raw = server.raw();
    let sender = InstanceId::random();
    publish_as(&mut raw, b.channel(), sender, 1);
    seen.wait_for("message 1", WAIT, |events| {
        events.iter().any(|e| matches!(e, Event::Message(_)))
    });
    // Message 2 is published (and lost) now; several PINGs are answered before message 3.
    let lost_published_at = SystemTime::now();
    std::thread::sleep(bound * 2);
    publish_as(&mut raw, b.channel(), sender, 3);
    let events = seen.wait_for("the loss of message 2", WAIT, has_restored);
    let since = events
        .iter()
        .find_map(|e| match e {
            Event::Lost { since, .. } => Some(*since),
            _ => None,
        })
        .unwrap();
    assert!(
        since <= lost_published_at,
        "subscription_lost(since) is {:?} after the lost message was published",
        since.duration_since(lost_published_at).unwrap_or_default()
    );
}
