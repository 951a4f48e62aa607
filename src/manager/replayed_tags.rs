//! The taggings a tagged write owes once its value, waiting in the replay queue, lands in L2.
//!
//! Why: a tagged write tags its key again once its value can be read from L2 (see
//! `CacheManager::set_raw_with_tags`), but a write whose L2 part went to the replay queue (its
//! write-behind batch failed, its write-through failed, or its key had an op queued there)
//! returns, tagged the second time, before its value lands. Another instance's invalidation of
//! the tag in between (it reads the key, deletes it from L2, then forgets it) whose message
//! comes here only after the replay has sent the write finds nothing left to withdraw: the
//! value landed in L2 listed by no tag, out of reach of every later invalidation of the tag.
//! So such a write leaves its tags here, and the replay tags the key again once its op has
//! landed, before it publishes the key. Likewise a write that gave up waiting for its
//! write-behind batch (still queued or in flight when it looked): tagged again once the key has
//! left both queues, landed directly or by the replay.
//!
//! Held in memory only (the tags are in no replay record, and adding them would change the
//! queue's format): after a restart, a write the queue still holds lands without the third
//! tagging, open to the race above. An entry is taken out by the first replay batch (or the end
//! of a replay pass) that finds its key in neither queue, and owed again if its tagging fails
//! (the tag Redis down: retried by the next pass), so there are never more than keys the queues
//! held; a tagged write whose first tagging fails writes nothing, so a tag store that stays
//! down adds none.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

use super::behind::WriteQueue;
use super::policy::Shared;
use crate::error::key_for_error;
use crate::replay::ReplayQueue;

/// What a key's replayed write owes its tags.
#[derive(Debug)]
struct Owed {
    tags: Vec<String>,
    /// The members' time to live, as the write computed it (from the landing it is longer
    /// than the value's time left: a member kept too long costs a delete, never a miss).
    ttl: Duration,
}

/// Keys whose tagged write waits in the replay queue, with their tags.
#[derive(Debug, Default)]
pub(crate) struct ReplayedTags {
    owed: Mutex<HashMap<String, Owed>>,
}

impl ReplayedTags {
    /// After a tagged write of `key` returned (or, given up, can no longer land elsewhere):
    /// if its op waits in `queue`, the replay tags the key with `tags` again once that op has
    /// landed. Checked under the lock that [`Shared::tag_replayed`] takes after its acks, so an
    /// op acked before the check leaves nothing here (the caller's own tagging comes after
    /// that landing).
    ///
    /// Also while a write of `key` is still in `behind`, queued or in flight: a tagged write
    /// gives up waiting for its batch after four L2 timeouts, and a batch queued behind one
    /// that is failing takes longer than that to fail in turn, then to go to the replay queue
    /// after the write's second tagging. Such an entry is taken once the key has left both
    /// queues: its batch landed (the tagging then comes after that landing) or its replay did.
    pub(crate) fn owe(
        &self,
        queue: &ReplayQueue,
        behind: Option<&WriteQueue>,
        key: &str,
        tags: &[&str],
        ttl: Duration,
    ) {
        let mut owed = self.owed.lock();
        if !waits(queue, behind, key) {
            return;
        }
        let entry = owed.entry(key.to_owned()).or_insert_with(|| Owed {
            tags: Vec::new(),
            ttl,
        });
        entry.ttl = entry.ttl.max(ttl);
        for tag in tags {
            if !entry.tags.iter().any(|t| t == tag) {
                entry.tags.push((*tag).to_owned());
            }
        }
    }

    /// Takes out what the keys no longer pending in `queue` nor held by `behind` owe.
    fn take_due(&self, queue: &ReplayQueue, behind: Option<&WriteQueue>) -> Vec<(String, Owed)> {
        let mut owed = self.owed.lock();
        if owed.is_empty() {
            return Vec::new();
        }
        let keys: Vec<String> = owed
            .keys()
            .filter(|k| !waits(queue, behind, k))
            .cloned()
            .collect();
        keys.into_iter()
            .filter_map(|k| owed.remove(&k).map(|o| (k, o)))
            .collect()
    }

    /// Owes again what a replay took out but could not tag (the tag store failed, or the
    /// manager is shutting down), merged with what the key was owed since: taken again by the
    /// next replay pass, as its key is no longer pending.
    fn put_back(&self, due: impl IntoIterator<Item = (String, Owed)>) {
        let mut owed = self.owed.lock();
        for (key, back) in due {
            let entry = owed.entry(key).or_insert_with(|| Owed {
                tags: Vec::new(),
                ttl: back.ttl,
            });
            entry.ttl = entry.ttl.max(back.ttl);
            for tag in back.tags {
                if !entry.tags.contains(&tag) {
                    entry.tags.push(tag);
                }
            }
        }
    }

    /// Whether some key is owed its tags: the replay thread then runs a pass even when the
    /// queue is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.owed.lock().is_empty()
    }

    /// How many keys are owed their tags (`stats().consistency.tags_owed`).
    pub(crate) fn len(&self) -> usize {
        self.owed.lock().len()
    }
}

/// Whether a write of `key` has yet to land: in `behind`, or pending in `queue`. Asked of
/// `behind` first: a failed batch's write goes to the replay queue before it leaves `behind`,
/// so the key is found in one or the other.
fn waits(queue: &ReplayQueue, behind: Option<&WriteQueue>, key: &str) -> bool {
    behind.is_some_and(|b| b.holds(key)) || queue.is_pending(key)
}

impl Shared {
    /// [`ReplayedTags::owe`], where there are a replay queue and a tag store.
    pub(crate) fn owe_tags_after_replay(&self, key: &str, tags: &[&str], ttl: Duration) {
        if let (Some(q), Some(_)) = (&self.replay, &self.tags) {
            self.replayed_tags.owe(q, self.behind.as_deref(), key, tags, ttl);
        }
    }

    /// Tags again the keys whose tagged writes left the replay queue (called by the replay
    /// after its acks, before it publishes them, and at the end of every pass): landed in L2,
    /// or dropped by a newer op of their key, whose tagging is then harmless (one more member
    /// for an invalidation to delete). A key still pending (a newer op queued since, or its
    /// ack held in memory by a latched queue) keeps what it owes.
    ///
    /// Why the end of every pass too: a key can leave the queue without an ack of this
    /// replay (a held ack released when the latched queue is written anew), and a tagging that
    /// failed is owed again. Why it stops at the first failure, or once `stop()` holds, and
    /// owes the rest again: the tag store has no breaker, so with its Redis unreachable each
    /// key would wait out its own timeout, hundreds of them in one batch, holding back the
    /// replay's message to the other instances and the manager's drop, which joins this
    /// thread; and a tagging given up, with the value in L2, left the key listed by no tag for
    /// good where an invalidation ran meanwhile.
    ///
    /// Returns whether the tag store answered every tagging it was asked (a pass that found
    /// it failing asks no more until the next pass).
    pub(crate) fn tag_replayed(&self, stop: &dyn Fn() -> bool) -> bool {
        let (Some(q), Some(store)) = (&self.replay, &self.tags) else {
            return true;
        };
        let mut due = self.replayed_tags.take_due(q, self.behind.as_deref()).into_iter();
        while let Some((key, owed)) = due.next() {
            if stop() {
                self.replayed_tags
                    .put_back(std::iter::once((key, owed)).chain(due));
                return true;
            }
            let tags: Vec<&str> = owed.tags.iter().map(String::as_str).collect();
            if let Err(e) = store.add(&[key.as_str()], &tags, owed.ttl) {
                self.metrics.consistency.retag_failures.incr();
                tracing::warn!(key = %key_for_error(&key), error = %e,
                    "a replayed tagged write could not be tagged again; retried by the next replay pass (until then an invalidation of its tags that ran while it waited may have left it listed by none)");
                self.replayed_tags
                    .put_back(std::iter::once((key, owed)).chain(due));
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::replay::{Push, ReplayOptions};

    fn push_set(queue: &ReplayQueue, key: &str) {
        let set = Push::Set {
            key,
            value: b"v",
            expires_at_ms: 0,
        };
        queue.push_many(&[set]).unwrap();
    }

    /// A write whose op was acked before it looked owes nothing: its own second tagging came
    /// after the landing. Left there, the entry would wait for a replay of a key that may
    /// never be written again.
    #[test]
    fn a_key_not_pending_owes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
        let owed = ReplayedTags::default();
        owed.owe(&queue, None, "k", &["t"], Duration::from_secs(1));
        assert!(owed.owed.lock().is_empty());
    }

    /// A key still pending after a replay's acks (a newer tagged write of it queued behind the
    /// op the replay sent) keeps its tags for the landing of that newer op: tagged at the
    /// first ack, before that newer value landed, an invalidation in between could still
    /// leave it listed by no tag.
    #[test]
    fn a_key_still_pending_keeps_its_tags_until_its_op_leaves_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
        let owed = ReplayedTags::default();
        push_set(&queue, "k");
        owed.owe(&queue, None, "k", &["t", "u"], Duration::from_secs(5));
        owed.owe(&queue, None, "k", &["t"], Duration::from_secs(1));
        assert!(owed.take_due(&queue, None).is_empty(), "k's op is still pending");
        let ops = queue.pending();
        assert_eq!(queue.ack_many(&ops).unwrap(), 1);
        let due = owed.take_due(&queue, None);
        let [(key, what)] = due.as_slice() else {
            panic!("one key due: {due:?}");
        };
        assert_eq!(key, "k");
        assert_eq!(what.tags, ["t", "u"], "each tag once");
        assert_eq!(what.ttl, Duration::from_secs(5), "the longest members' TTL");
        assert!(owed.take_due(&queue, None).is_empty(), "owed once");
    }
}
