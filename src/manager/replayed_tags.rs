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
//!
//! A key's tags are the union of those of every write of it that owed them, but at most
//! [`MAX_OWED_TAGS`] of them, the newest kept (and every tag of the newest write, however many
//! it had). Unbounded, a key rewritten through an L2 outage with tags that change (a version,
//! a day) owed one more tag per write for as long as the outage lasted, and its replay's
//! tagging, one script per tag sent at once within the tag store's deadline, grew past what
//! the deadline allows: it failed on every pass, was owed again, and, as a pass stops at its
//! first failure, held back the taggings of other keys too. The value that lands is the newest
//! write's (the queue keeps one op per key): a tag dropped is one that at least
//! [`MAX_OWED_TAGS`] tags owed since have pushed out, a write long superseded, whose key is
//! then in that tag's set only while an invalidation of it has yet to run. Each tag dropped is
//! counted (`stats().consistency.retags_dropped`) and logged.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::behind::WriteQueue;
use super::policy::Shared;
use crate::error::key_for_error;
use crate::log_limit::LogLimit;
use crate::replay::ReplayQueue;

/// How many tags a key owes at most (see the module docs); a write with more owes them all.
/// Far past the tags one write of a key has as a rule, and few enough for one tagging to send
/// them within the tag store's deadline.
pub(crate) const MAX_OWED_TAGS: usize = 64;

/// What a key's replayed write owes its tags.
#[derive(Debug)]
struct Owed {
    /// Each tag once, the oldest owed first.
    tags: Vec<String>,
    /// How many of the last `tags` are the newest write's: kept whatever the bound.
    newest: usize,
    /// The members' time to live, as the write computed it (from the landing it is longer
    /// than the value's time left: a member kept too long costs a delete, never a miss).
    ttl: Duration,
}

impl Owed {
    fn new(ttl: Duration) -> Owed {
        Owed {
            tags: Vec::new(),
            newest: 0,
            ttl,
        }
    }

    /// Owes `newer` (a newer write's tags, or, put back, those owed since), of which the last
    /// `newest` are the newest write's: each moves to the end. Returns how many older tags the
    /// bound then dropped.
    fn owe_newer<S: AsRef<str>>(&mut self, newer: &[S], newest: usize) -> usize {
        let mut seen = HashSet::with_capacity(newer.len());
        let newer: Vec<&str> = newer
            .iter()
            .map(AsRef::as_ref)
            .filter(|t| seen.insert(*t))
            .collect();
        self.tags.retain(|t| !seen.contains(t.as_str()));
        self.tags.extend(newer.iter().map(|t| (*t).to_owned()));
        self.newest = newest.min(newer.len());
        let over = self.tags.len().saturating_sub(MAX_OWED_TAGS.max(self.newest));
        self.tags.drain(..over);
        over
    }
}

/// Keys whose tagged write waits in the replay queue, with their tags.
#[derive(Debug, Default)]
pub(crate) struct ReplayedTags {
    owed: Mutex<HashMap<String, Owed>>,
    /// Tags the bound dropped (see the module docs).
    dropped: AtomicU64,
    dropped_lines: LogLimit,
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
        let entry = owed.entry(key.to_owned()).or_insert_with(|| Owed::new(ttl));
        entry.ttl = entry.ttl.max(ttl);
        let dropped = entry.owe_newer(tags, tags.len());
        drop(owed);
        self.note_dropped(key, dropped);
    }

    /// Counts and logs the tags the bound dropped from `key`'s.
    fn note_dropped(&self, key: &str, dropped: usize) {
        if dropped == 0 {
            return;
        }
        self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        if let Some(unlogged) = self.dropped_lines.pass() {
            tracing::warn!(key = %key_for_error(key), dropped, max = MAX_OWED_TAGS, unlogged,
                "a key rewritten with other tags while its writes waited for L2 owes more tags than are kept; the oldest are not tagged again when its value lands (an invalidation of one of them meanwhile may miss the key)");
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
        let mut dropped = Vec::new();
        let mut owed = self.owed.lock();
        for (key, mut back) in due {
            let Some(since) = owed.remove(&key) else {
                owed.insert(key, back);
                continue;
            };
            // What was owed since is newer than what comes back.
            back.ttl = back.ttl.max(since.ttl);
            let n = back.owe_newer(&since.tags, since.newest);
            if n > 0 {
                dropped.push((key.clone(), n));
            }
            owed.insert(key, back);
        }
        drop(owed);
        for (key, n) in dropped {
            self.note_dropped(&key, n);
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

    /// How many owed tags the bound dropped (`stats().consistency.retags_dropped`).
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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
        let mut tags = what.tags.clone();
        tags.sort_unstable();
        assert_eq!(tags, ["t", "u"], "each tag once");
        assert_eq!(what.ttl, Duration::from_secs(5), "the longest members' TTL");
        assert!(owed.take_due(&queue, None).is_empty(), "owed once");
    }

    fn owed_tags(owed: &ReplayedTags, key: &str) -> Vec<String> {
        owed.owed
            .lock()
            .get(key)
            .map(|o| o.tags.clone())
            .unwrap_or_default()
    }

    /// A key rewritten through an outage with a tag that changes each time (a version) owes
    /// the newest [`MAX_OWED_TAGS`], not one more per write: unbounded, its replay's tagging
    /// (a script per tag, all within one deadline) outgrew the deadline, failed on every pass
    /// and held back every other key's. The tags dropped are counted.
    #[test]
    fn a_key_rewritten_with_new_tags_owes_only_the_newest_up_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
        let owed = ReplayedTags::default();
        push_set(&queue, "k");
        for version in 0..1_000 {
            let tag = format!("v{version}");
            owed.owe(&queue, None, "k", &["user", &tag], Duration::from_secs(1));
        }
        let tags = owed_tags(&owed, "k");
        assert_eq!(tags.len(), MAX_OWED_TAGS, "{tags:?}");
        // The tag every write had, owed again by each, is among the newest.
        let mut expected: Vec<String> = (1_000 - (MAX_OWED_TAGS - 1)..999)
            .map(|v| format!("v{v}"))
            .collect();
        expected.extend(["user".to_owned(), "v999".to_owned()]);
        assert_eq!(tags, expected);
        assert_eq!(owed.dropped(), (1_000 - (MAX_OWED_TAGS - 1)) as u64);
    }

    /// The newest write's tags are all owed, however many: its value is the one that lands.
    #[test]
    fn the_newest_writes_tags_are_owed_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
        let owed = ReplayedTags::default();
        push_set(&queue, "k");
        owed.owe(&queue, None, "k", &["old"], Duration::from_secs(1));
        let many: Vec<String> = (0..MAX_OWED_TAGS * 2).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        owed.owe(&queue, None, "k", &many, Duration::from_secs(1));
        assert_eq!(
            owed_tags(&owed, "k"),
            many,
            "every tag of the newest write, the older one dropped"
        );
        owed.owe(&queue, None, "k", &["last"], Duration::from_secs(1));
        let tags = owed_tags(&owed, "k");
        assert_eq!(tags.len(), MAX_OWED_TAGS);
        assert_eq!(tags.last().map(String::as_str), Some("last"));
    }

    /// What a failed tagging puts back is older than what the key was owed since: the bound
    /// drops it first, and keeps all of the newest write's tags.
    #[test]
    fn a_tagging_put_back_is_older_than_what_was_owed_since() {
        let dir = tempfile::tempdir().unwrap();
        let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
        let owed = ReplayedTags::default();
        push_set(&queue, "k");
        let back: Vec<String> = (0..MAX_OWED_TAGS).map(|i| format!("back{i}")).collect();
        let back: Vec<&str> = back.iter().map(String::as_str).collect();
        owed.owe(&queue, None, "k", &back, Duration::from_secs(1));
        assert_eq!(queue.ack_many(&queue.pending()).unwrap(), 1);
        let due = owed.take_due(&queue, None);
        assert_eq!(due.len(), 1);
        push_set(&queue, "k");
        owed.owe(&queue, None, "k", &["since"], Duration::from_secs(9));
        owed.put_back(due);
        let tags = owed_tags(&owed, "k");
        assert_eq!(tags.len(), MAX_OWED_TAGS);
        assert_eq!(tags.last().map(String::as_str), Some("since"));
        assert_eq!(
            tags.first().map(String::as_str),
            Some("back1"),
            "the oldest dropped"
        );
        assert_eq!(owed.owed.lock()["k"].ttl, Duration::from_secs(9));
        assert_eq!(owed.dropped(), 1);
    }
}
