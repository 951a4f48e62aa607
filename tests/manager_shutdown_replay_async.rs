//! Shutdown during a replay that `replay_now_async` began and its caller gave up on (a shutdown
//! hook's timeout): the drop's stop signal stops it at the next op, as it stops the replay
//! thread, and the rest stays queued for the next start. It went on with the whole queue, one L2
//! round trip per op, on its own thread, holding the queue and the level after the drop. One
//! test in this binary, so no other test's threads are counted. A real memcached, down while the
//! queue fills.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;
#[path = "manager_support/queued_replay.rs"]
mod queued_replay;
#[path = "support/mod.rs"]
mod support;
#[path = "manager_support/threads.rs"]
mod threads;

use std::time::{Duration, Instant};

use manager_support::gated::Point;
use queued_replay::{ten_writes_queued, Queued};
use threads::until_thread;
use uno_cache::replay::{ReplayOptions, ReplayQueue};
use uno_cache::Error;

#[test]
fn dropping_the_manager_stops_a_replay_that_an_abandoned_replay_now_async_began() {
    let Queued {
        server: _server,
        l2: gated,
        dir,
        cache,
    } = ten_writes_queued("sra:");
    // The replay goes in queue order: "k0" first.
    let first = gated.gate("set", "k0", Point::Before);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let given_up = tokio::time::timeout(Duration::from_millis(50), cache.replay_now_async()).await;
        assert!(given_up.is_err(), "the replay ended while its first op was held");
    });
    first.wait_entered();
    let dropper = std::thread::spawn(move || drop(cache));
    // The backfill thread ends once the drop fired the stop signal.
    until_thread("uno-cache-backf", false);
    first.release();
    dropper.join().unwrap();
    // The abandoned replay's thread holds the queue until it ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    let queue = loop {
        match ReplayQueue::open(dir.path(), ReplayOptions::default()) {
            Ok(queue) => break queue,
            Err(Error::Locked { .. }) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("the queue did not come free: {e}"),
        }
    };
    assert_eq!(
        queue.len(),
        9,
        "the abandoned replay went on with the queue after the drop"
    );
    assert!(!queue.is_pending("k0"), "the op in progress was not acked");
}
