//! Shutdown during a replay: the replay thread stops at the next op once the manager's drop has
//! fired the stop signal, and what it has not replayed stays in the durable queue for the next
//! start. It replayed the whole queue first (up to a million ops, one L2 round trip each), and
//! the drop, with the write-behind drain that comes after the join, waited for all of it. One
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

use manager_support::gated::Point;
use queued_replay::{ten_writes_queued, Queued};
use threads::until_thread;
use uno_cache::replay::{ReplayOptions, ReplayQueue};

#[test]
fn dropping_the_manager_during_a_replay_leaves_the_rest_queued_instead_of_replaying_it() {
    let Queued {
        server: _server,
        l2: gated,
        dir,
        cache,
    } = ten_writes_queued("sr:");
    // The replay goes in queue order: "k0" first.
    let first = gated.gate("set", "k0", Point::Before);
    cache.set("go", &1u32, None).unwrap();
    first.wait_entered();
    let dropper = std::thread::spawn(move || drop(cache));
    // The backfill thread ends once the drop fired the stop signal.
    until_thread("uno-cache-backf", false);
    first.release();
    dropper.join().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert_eq!(
        queue.len(),
        9,
        "the drop replayed the rest of the queue before it returned"
    );
    assert!(!queue.is_pending("k0"), "the op in progress was not acked");
}
