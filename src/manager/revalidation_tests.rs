//! Tests of the revalidation of suspect L1 entries (after a restart or a lost backplane
//! subscription): what L2's answer may confirm, and for how long.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::tests::HeldL2;
use super::Plan;
use super::Suspect;
use crate::storage::Storage;

/// A manager on a file store L1 and a [`HeldL2`] (the directory lives as long as the first).
fn file_l1_with_held_l2() -> (tempfile::TempDir, crate::CacheManager, Arc<HeldL2>) {
    let dir = tempfile::tempdir().unwrap();
    let file = Arc::new(crate::FileStore::open(dir.path(), crate::FileStoreOptions::default()).unwrap());
    let l2 = HeldL2::new();
    let cache = crate::CacheManager::builder()
        .config(crate::CacheConfig::default())
        .local(file)
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    (dir, cache, l2)
}

/// The backplane subscription comes back: every L1 entry is made suspect again.
fn restore_subscription(receiver: &super::super::backplane::Receiver) {
    use crate::invalidation::{InvalidationHandler, Outage};
    let now = std::time::SystemTime::now();
    receiver.subscription_restored(&Outage {
        since: now,
        detected_at: now,
        restored_at: now,
    });
}

/// A read of `k` in the middle of a revalidation: `k` = v1 was written to both levels, the
/// backplane's subscription was lost (every L1 entry suspect), and the read found v1 in L1 and
/// is about to ask L2.
struct SuspectRead {
    _dir: tempfile::TempDir,
    cache: crate::CacheManager,
    l2: Arc<HeldL2>,
    receiver: super::super::backplane::Receiver,
    entry: Suspect,
}

fn suspect_read_of_v1() -> SuspectRead {
    use crate::invalidation::InvalidationHandler;
    let (_dir, cache, l2) = file_l1_with_held_l2();
    let receiver = super::super::backplane::Receiver {
        shared: Arc::downgrade(&cache.shared),
    };
    cache.set_raw("k", b"v1", None).unwrap();
    receiver.subscription_lost(std::time::SystemTime::now());
    let Plan::AskL2(Some(entry)) = cache.shared.plan_read("k").unwrap() else {
        panic!("k was not suspect");
    };
    SuspectRead {
        _dir,
        cache,
        l2,
        receiver,
        entry,
    }
}

/// A revalidation vouches for an entry only under its read's ticket: if every L1 entry was made
/// suspect again between L2's answer and the confirm (here the backplane subscription is
/// restored, after another instance changed the key while it was down), a confirm would vouch
/// for the entry in the new epoch, and serve the old value as fresh from then on.
#[test]
fn a_revalidation_that_read_l2_before_l1_was_made_suspect_again_does_not_confirm_the_entry() {
    let SuspectRead {
        _dir,
        cache,
        l2,
        receiver,
        entry,
    } = suspect_read_of_v1();
    let s = &cache.shared;
    // A read of k: L1 holds v1, suspect; it asks L2, which still says v1 ...
    let ticket = s.before_l2("k", true).unwrap();
    let answer = l2.get("k");
    // ... then another instance writes v2 (its message is lost: we are not subscribed) and the
    // subscription comes back, which makes every L1 entry suspect again ...
    l2.inner.set("k", b"v2", None).unwrap();
    restore_subscription(&receiver);
    // ... and only then does the read settle its suspect entry.
    let _ = s
        .finish_revalidate("k", entry, ticket, (Instant::now(), answer))
        .unwrap();
    assert_eq!(
        cache.get_raw("k").unwrap().as_deref(),
        Some(&b"v2"[..]),
        "L1's v1, confirmed by an L2 answer older than the last loss of certainty, was served as fresh"
    );
}

/// A revalidation compares L2's answer with the L1 bytes it read, and a confirm vouches for
/// whatever entry L1 holds when it runs. If L1 took another value between that read and the
/// read's ticket (a local write, then a restored subscription), a matching L2 answer must not
/// confirm the newer entry, which L2 does not hold.
#[test]
fn a_revalidation_confirms_only_the_bytes_it_compared() {
    let SuspectRead {
        _dir,
        cache,
        l2,
        receiver,
        entry,
    } = suspect_read_of_v1();
    let s = &cache.shared;
    // A read finds v1 in L1, suspect ...
    // ... then this instance writes v2, another instance writes v1 over it in L2 (its message
    // lost), and the subscription comes back; only then does the read take its ticket.
    cache.set_raw("k", b"v2", None).unwrap();
    l2.inner.set("k", b"v1", None).unwrap();
    restore_subscription(&receiver);
    let ticket = s.before_l2("k", true).unwrap();
    let answer = l2.get("k");
    let _ = s
        .finish_revalidate("k", entry, ticket, (Instant::now(), answer))
        .unwrap();
    assert_eq!(
        cache.get_raw("k").unwrap().as_deref(),
        Some(&b"v1"[..]),
        "L1's v2 was confirmed by an L2 answer that matched the v1 read before it"
    );
}

/// Another instance set `k` again with the same bytes and a shorter TTL while this L1 missed
/// it: L2's answer matches, but a confirm kept L1's own expiry, and the entry was served for the
/// rest of it, past the moment L2 dropped its copy.
#[test]
fn a_revalidation_that_finds_the_same_bytes_never_keeps_the_entry_past_l2s_expiry() {
    let SuspectRead { _dir, cache, l2, .. } = suspect_read_of_v1();
    l2.inner.set("k", b"v1", Some(Duration::from_secs(5))).unwrap();
    let asked_at = std::time::SystemTime::now();
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"v1"[..]));
    let (held, _) = cache.shared.l1.get_checked("k").unwrap().expect("k stays in L1");
    let expires_at = held.expires_at.expect("L1's copy expires");
    assert!(
        expires_at <= asked_at + Duration::from_secs(6),
        "L1 keeps v1 until {expires_at:?}, past L2's expiry about 5 s after {asked_at:?}"
    );
}

/// A suspect read that a delete in progress answers before it reaches L2 (a miss, as the read
/// will be once the delete returns) missed L1, as one L2 answers does: single and batch reads
/// alike count it once, as an L1 miss. Before, neither counted it in L1 at all.
#[test]
fn a_suspect_read_answered_between_the_levels_is_one_l1_miss() {
    for batch in [false, true] {
        let SuspectRead {
            _dir, cache, entry, ..
        } = suspect_read_of_v1();
        let s = &cache.shared;
        let deleting = s.guard.order(["k"], true);
        let answer = if batch {
            let mut out = std::collections::HashMap::new();
            let mut suspects = std::collections::HashMap::from([("k", entry)]);
            let (left, _) = s.read_many_behind(vec!["k"], &mut out, &mut suspects);
            assert!(
                left.is_empty() && suspects.is_empty(),
                "batch: answered without L2"
            );
            out.remove("k")
        } else {
            s.before_l2("k", true).err().flatten()
        };
        drop(deleting);
        assert_eq!(
            answer, None,
            "batch {batch}: a miss while the key is being deleted"
        );
        let stats = cache.stats();
        assert_eq!(stats.consistency.deleting_misses, 1, "batch {batch}");
        assert_eq!(
            (stats.local.hits, stats.local.misses, stats.overall.misses),
            (0, 1, 1),
            "batch {batch}"
        );
    }
}

/// `revalidated_dropped` counts the suspect entries a read took out of L1 and nothing else: a
/// drop that a write of the key made moot (the write came after the read's ticket, and L1 keeps
/// its value) and a drop L1 failed (counted in `local.errors`) were counted as drops.
#[test]
fn revalidated_dropped_counts_only_the_suspect_entries_taken_out_of_l1() {
    let SuspectRead {
        _dir,
        cache,
        l2,
        entry,
        ..
    } = suspect_read_of_v1();
    let s = &cache.shared;
    l2.inner.delete("k").unwrap();
    let ticket = s.before_l2("k", true).unwrap();
    let answer = l2.get("k");
    // A write of k lands between L2's answer and the drop: the drop is skipped.
    cache.set_raw("k", b"v2", None).unwrap();
    let _ = s
        .finish_revalidate("k", entry, ticket, (Instant::now(), answer))
        .unwrap();
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(cache.stats().consistency.revalidated_dropped, 0, "the write won");
    // Another suspect entry L2 no longer holds is dropped, and counted.
    cache.set_raw("j", b"v1", None).unwrap();
    l2.inner.delete("j").unwrap();
    s.l1.mark_all_suspect().unwrap();
    assert_eq!(cache.get_raw("j").unwrap(), None);
    assert_eq!(cache.stats().consistency.revalidated_dropped, 1);
    assert_eq!(cache.stats().local.errors, 0);

    for policy in [super::RestartPolicy::Revalidate, super::RestartPolicy::Drop] {
        let mut config = crate::CacheConfig::default();
        config.consistency.restart_policy = policy;
        let cache = super::tests::suspect_l1_that_cannot_delete(config);
        assert_eq!(cache.get_raw("k").unwrap(), None, "{policy:?}");
        let stats = cache.stats();
        assert_eq!(
            stats.consistency.revalidated_dropped, 0,
            "{policy:?}: L1 failed the drop"
        );
        assert_eq!(stats.local.errors, 1, "{policy:?}");
    }
}
