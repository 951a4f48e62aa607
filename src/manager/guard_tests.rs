//! Tests of the key stripes (`guard.rs`): ordering, backfill tickets, load watches.

use super::*;

#[test]
fn backfill_runs_when_nothing_intervened() {
    let g = KeyOrder::default();
    let t = g.ticket("k");
    assert!(g.backfill_if_current(t, || {}));
}

#[test]
fn a_load_stores_unless_a_write_delete_invalidation_or_newer_load_of_its_key_started() {
    let g = KeyOrder::default();
    let untouched = g.watch("k", Arc::default());
    drop(g.write(["other"]));
    assert!(g.order_watched("k", untouched).is_some(), "another key's write");
    for change in [
        |g: &KeyOrder| drop(g.order(["k"], false)),
        |g: &KeyOrder| drop(g.order(["k"], true)),
        |g: &KeyOrder| drop(g.write(["k"])),
        |g: &KeyOrder| drop(g.write_all()),
    ] {
        let watch = g.watch("k", Arc::default());
        change(&g);
        assert!(g.order_watched("k", watch).is_none());
    }
    // A load given up at its hard timeout, then a newer load that stored first.
    let (older, newer) = (g.watch("k", Arc::default()), g.watch("k", Arc::default()));
    drop(g.order_watched("k", newer));
    assert!(
        g.order_watched("k", older).is_none(),
        "the older load stored over the newer"
    );
    // The same two loads, the older one storing first: the newer one still stores after it.
    let (older, newer) = (g.watch("k", Arc::default()), g.watch("k", Arc::default()));
    drop(g.order_watched("k", older));
    assert!(
        g.order_watched("k", newer).is_some(),
        "the older load's store kept the newer one out"
    );
    assert_eq!(g.watching.load(Ordering::SeqCst), 0, "every watch ended");
}

#[test]
fn a_whole_cache_invalidation_blocks_backfills_of_every_key_read_before_it_ended() {
    let g = KeyOrder::default();
    let before = g.ticket("k");
    let all = g.write_all();
    let during = g.ticket("other");
    assert!(!g.backfill_if_current(g.ticket("k"), || panic!("must not run during it")));
    drop(all);
    assert!(!g.backfill_if_current(before, || panic!("read before it")));
    assert!(!g.backfill_if_current(during, || panic!("read during it")));
    assert!(g.backfill_if_current(g.ticket("k"), || {}), "read after it");
}

/// A failed reload's store puts back the entry it replaced, under its own ownership of the key:
/// only if no local invalidation or mark of every entry began since it took its ticket, which a
/// put-back after them would undo.
#[test]
fn a_reloads_put_back_runs_under_its_own_write_unless_another_writer_began() {
    let g = KeyOrder::default();
    let owned = g.order(["k"], false);
    let t = g.ticket("k");
    assert!(
        g.put_back_if_current(&t, || {}),
        "its own write is no other writer"
    );
    for change in [
        |g: &KeyOrder| drop(g.write(["k"])),
        |g: &KeyOrder| drop(g.write_all()),
    ] {
        let t = g.ticket("k");
        change(&g);
        assert!(!g.put_back_if_current(&t, || panic!("must not run")));
    }
    drop(owned);
}

#[test]
fn a_write_that_finished_after_the_ticket_blocks_the_backfill() {
    let g = KeyOrder::default();
    let t = g.ticket("k");
    drop(g.write(["k"]));
    assert!(!g.backfill_if_current(t, || panic!("must not run")));
}

#[test]
fn a_batch_backfill_admits_only_the_tickets_no_write_overtook() {
    let g = KeyOrder::default();
    let keys: Vec<String> = (0..64).map(|i| format!("k{i}")).collect();
    let tickets: Vec<Ticket> = keys.iter().map(|k| g.ticket(k)).collect();
    drop(g.write(["k7"]));
    let stale = g.stripe_of("k7");
    let mut seen = Vec::new();
    g.backfill_many_if_current(&tickets, |current| seen = current.to_vec());
    assert_eq!(seen.len(), 64);
    for (ticket, current) in tickets.iter().zip(&seen) {
        assert_eq!(*current, ticket.stripe != stale, "stripe {}", ticket.stripe);
    }
}

#[test]
fn a_write_in_progress_blocks_backfills_of_tickets_taken_during_it() {
    let g = KeyOrder::default();
    let w = g.write(["k", "k"]);
    let t = g.ticket("k");
    assert!(!g.backfill_if_current(t, || panic!("must not run")));
    drop(w);
    assert!(!g.backfill_if_current(t, || panic!("must not run")));
    let fresh = g.ticket("k");
    assert!(g.backfill_if_current(fresh, || {}));
}

#[test]
fn an_owner_makes_a_second_order_of_its_stripe_wait_until_it_drops() {
    let g = std::sync::Arc::new(KeyOrder::default());
    let first = g.order(["k"], false);
    let (tx, rx) = std::sync::mpsc::channel();
    let theirs = std::sync::Arc::clone(&g);
    let second = std::thread::spawn(move || {
        let _owned = theirs.order(["k"], true);
        tx.send(()).unwrap();
    });
    // Another key's stripe is free meanwhile (the keys differ in their stripe here).
    let other = (0..)
        .map(|i| format!("o{i}"))
        .find(|k| g.stripe_of(k) != g.stripe_of("k"))
        .unwrap();
    drop(g.order([other.as_str()], false));
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(),
        "did not wait"
    );
    drop(first);
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    second.join().unwrap();
}

/// A batch of many keys (several on each stripe) holds each of them until it drops, and
/// leaves no claim behind.
#[test]
fn a_batch_holds_each_of_its_keys_until_it_drops() {
    let g = std::sync::Arc::new(KeyOrder::default());
    let keys: Vec<String> = (0..3000).map(|i| format!("k{i}")).collect();
    let batch = g.order(keys.iter().map(String::as_str), true);
    assert!(keys.iter().all(|k| g.ticket(k).deleting()));
    let (tx, rx) = std::sync::mpsc::channel();
    let theirs = std::sync::Arc::clone(&g);
    let second = std::thread::spawn(move || {
        drop(theirs.order(["k1234", "not in the batch"], false));
        tx.send(()).unwrap();
    });
    assert!(
        rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(),
        "did not wait"
    );
    drop(batch);
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    second.join().unwrap();
    assert!(g.slots.iter().all(|s| s.state.lock().claims().next().is_none()));
    assert!(!keys.iter().any(|k| g.ticket(k).deleting()));
}

/// Two keys on one stripe: the second is taken while the first is owned (a set of one key
/// must not wait for another key's L2 round trip), for the blocking and the async API.
#[test]
fn a_key_sharing_the_stripe_of_an_owned_key_does_not_wait_for_it() {
    let g = std::sync::Arc::new(KeyOrder::default());
    let same: Vec<String> = (0..)
        .map(|i| format!("s{i}"))
        .filter(|k| g.stripe_of(k) == g.stripe_of("k"))
        .take(2)
        .collect();
    let first = g.order(["k"], true);
    let (tx, rx) = std::sync::mpsc::channel();
    let theirs = std::sync::Arc::clone(&g);
    let keys = same.clone();
    let second = std::thread::spawn(move || {
        drop(theirs.order([keys[0].as_str()], false));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        drop(rt.block_on(theirs.order_async([keys[1].as_str(), "other"], true)));
        tx.send(()).unwrap();
    });
    // Either the thread is done or it waits for "k", which this thread still owns.
    let took = rx.recv_timeout(std::time::Duration::from_secs(10));
    drop(first);
    second.join().unwrap();
    assert!(took.is_ok(), "a key of the same stripe waited for \"k\"");
    assert!(!g.ticket("k").deleting() && !g.ticket(&same[1]).deleting());
}

#[test]
fn a_ticket_says_whether_its_key_is_being_deleted() {
    let g = KeyOrder::default();
    let other = (0..)
        .map(|i| format!("o{i}"))
        .find(|k| g.stripe_of(k) != g.stripe_of("k"))
        .unwrap();
    let same = (0..)
        .map(|i| format!("s{i}"))
        .find(|k| g.stripe_of(k) == g.stripe_of("k"))
        .unwrap();
    let deleting = g.order(["k"], true);
    assert!(g.ticket("k").deleting());
    assert!(!g.ticket(&other).deleting());
    assert!(
        !g.ticket(&same).deleting(),
        "a key sharing the stripe is not being deleted"
    );
    drop(deleting);
    assert!(!g.ticket("k").deleting());
    let setting = g.order(["k"], false);
    assert!(!g.ticket("k").deleting());
    drop(setting);
    let batch = g.order(["k", same.as_str()], true);
    assert!(g.ticket("k").deleting() && g.ticket(&same).deleting());
    drop(batch);
}

#[test]
fn an_async_order_waits_without_blocking_and_a_cancelled_one_frees_what_it_took() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let g = KeyOrder::default();
    let held = g.order(["b"], false);
    rt.block_on(async {
        // Takes "a" (whichever stripe order), then waits for "b" on the one thread there is.
        let waiting = g.order_async(["a", "b"], false);
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(20), waiting).await;
        assert!(timed_out.is_err(), "took a stripe another guard owns");
    });
    drop(held);
    // The cancelled future freed "a": both can be taken at once now.
    let both = rt.block_on(g.order_async(["a", "b"], true));
    assert!(g.ticket("a").deleting());
    drop(both);
    assert!(!g.ticket("a").deleting());
}
