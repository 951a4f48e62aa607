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
//! landed, before it publishes the key.
//!
//! Held in memory only: the replay queue is durable, these are not. After a restart, a write
//! the queue still holds lands without the third tagging, as it did before this existed.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;

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
    pub(crate) fn owe(&self, queue: &ReplayQueue, key: &str, tags: &[&str], ttl: Duration) {
        let mut owed = self.owed.lock();
        if !queue.is_pending(key) {
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
}

impl Shared {
    /// [`ReplayedTags::owe`], where there are a replay queue and a tag store.
    pub(crate) fn owe_tags_after_replay(&self, key: &str, tags: &[&str], ttl: Duration) {
        if let (Some(q), Some(_)) = (&self.replay, &self.tags) {
            self.replayed_tags.owe(q, key, tags, ttl);
        }
    }

    /// Tags again the keys whose tagged writes left the replay queue (called by the replay
    /// after its acks, before it publishes them): landed in L2, or dropped by a newer op of
    /// their key, whose tagging is then harmless (one more member for an invalidation to
    /// delete). A key still pending (a newer op queued since) keeps what it owes.
    pub(crate) fn tag_replayed(&self) {
        let (Some(q), Some(store)) = (&self.replay, &self.tags) else {
            return;
        };
        let due: Vec<(String, Owed)> = {
            let mut owed = self.replayed_tags.owed.lock();
            if owed.is_empty() {
                return;
            }
            let keys: Vec<String> = owed.keys().filter(|k| !q.is_pending(k)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| owed.remove(&k).map(|o| (k, o)))
                .collect()
        };
        for (key, owed) in due {
            let tags: Vec<&str> = owed.tags.iter().map(String::as_str).collect();
            if let Err(e) = store.add(&[key.as_str()], &tags, owed.ttl) {
                tracing::warn!(key = %key_for_error(&key), error = %e,
                    "a replayed tagged write could not be tagged again; an invalidation of its tags that ran while it waited may have left it listed by none");
            }
        }
    }
}
