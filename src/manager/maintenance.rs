//! Maintenance calls of [`CacheManager`]: L1-only invalidation, the replay queue, the
//! backplane, prefix and tag invalidation, events and `flush`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::apart::Pass;
use super::l2_keys::InL2;
use super::offload::{offload, offload_unheard};
use super::policy::Shared;
use super::tags::TagStore;
use super::writes::L2Owed;
use super::CacheManager;
use super::InvalidationEvent;

use crate::error::{Error, Result};
#[cfg(feature = "redis")]
use crate::invalidation::Backplane;
use crate::invalidation::Invalidation;
use crate::replay::ReplayQueue;

impl CacheManager {
    /// Deletes a key from L1 only (for example on an invalidation message from another process:
    /// L2 already has the news). Guarded like any delete against a racing backfill. If L1
    /// cannot delete it (a full disk, a store latched read-only), every L1 entry becomes
    /// suspect, as when a received invalidation cannot be applied: the old value is checked
    /// against L2 before it is served again.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] for a key no write could store (empty, or over
    /// [`MAX_KEY_LEN`](crate::MAX_KEY_LEN)), before L1 is asked; otherwise the L1 error.
    pub fn invalidate_local(&self, key: &str) -> Result<bool> {
        // Refused as a delete's key is, before L1 counts a delete and an error of the caller's.
        crate::keys::check_key(key)?;
        let s = &self.shared;
        let result = {
            let _writing = s.guard.write([key]);
            s.l1.delete(key)
        };
        if let Err(e) = &result {
            if !e.is_bad_input() {
                tracing::warn!(error = %e, "an invalidation L1 could not apply; every L1 entry becomes suspect");
                s.left_behind.record(super::left_behind::Removal::Keys(&[key]));
                s.distrust_everything();
            }
        }
        Ok(s.count_delete_l1(1, result.map(u64::from))? > 0)
    }

    /// Async [`CacheManager::invalidate_local`] (L1 is local: called inline).
    ///
    /// # Errors
    /// As [`CacheManager::invalidate_local`].
    pub async fn invalidate_local_async(&self, key: &str) -> Result<bool> {
        self.invalidate_local(key)
    }

    /// Sends the queued L2 writes and deletes (offline mode, see
    /// [`OfflineConfig`](crate::OfflineConfig)) to L2 now, in order, deletes first; returns how
    /// many reached L2. The background thread does the same every `offline.replay_interval_ms`
    /// and right after an L2 call succeeds; this is for shutdown hooks and tests.
    ///
    /// # Errors
    /// The first L2 error (the rest stays queued), or the queue's I/O error.
    pub fn replay_now(&self) -> Result<u64> {
        self.shared.replay_now()
    }

    /// Async [`CacheManager::replay_now`]: the replay runs on a thread of its own (see
    /// `offload`); dropping the future does not stop it, dropping the manager's last handle does
    /// (before the next op; the rest stays queued for the next start).
    ///
    /// # Errors
    /// As [`CacheManager::replay_now`].
    pub async fn replay_now_async(&self) -> Result<u64> {
        let pass = self.pass()?;
        offload("replay", move || pass.shared().replay_now()).await
    }

    /// The replay queue of L2 writes that failed, if the manager has one.
    #[must_use]
    pub fn replay_queue(&self) -> Option<&Arc<ReplayQueue>> {
        self.shared.replay.as_ref()
    }

    /// Clears the replay queue's overflow flag, after an operator reconciled (or flushed) L2;
    /// `true` if it was set.
    ///
    /// # Errors
    /// The queue's I/O error. Without a queue, `Ok(false)`.
    pub fn clear_replay_overflow(&self) -> Result<bool> {
        match &self.shared.replay {
            Some(q) => q.clear_overflow(),
            None => Ok(false),
        }
    }

    /// Async [`CacheManager::clear_replay_overflow`] (the queue is local: called inline).
    ///
    /// # Errors
    /// As [`CacheManager::clear_replay_overflow`].
    pub async fn clear_replay_overflow_async(&self) -> Result<bool> {
        self.clear_replay_overflow()
    }

    /// The invalidation backplane, if `invalidation.enabled` (feature `redis`).
    #[cfg(feature = "redis")]
    #[must_use]
    pub fn backplane(&self) -> Option<&Backplane> {
        self.shared.backplane.get()
    }

    /// Drops every key that starts with `prefix`: from L1 here, from L2 where L2 can list its
    /// keys, and (through the backplane) from every other instance's L1. L1 keys are listed
    /// where the level can (the file store, redb); another L1 is cleared instead (a superset).
    /// L2 keys are deleted with `SCAN` + `UNLINK` on a Redis L2 that `[distributed]` describes,
    /// on every primary of a Redis Cluster, through a connection on the L2's own hosts and
    /// login (not the backplane's, whose Redis holds none of L2's values when `[invalidation]
    /// hosts` names one). Any other L2 given to the builder with
    /// [`CacheManagerBuilder::distributed`](crate::CacheManagerBuilder::distributed) deletes them
    /// itself, with
    /// [`DistributedStorage::delete_prefix`](crate::DistributedStorage::delete_prefix). One that
    /// cannot list its keys (Memcached, not asked, so the answer is the same while it is down
    /// or its breaker open; a level of your own that does not implement that
    /// method; an [`InProcess`](crate::InProcess) not made with
    /// [`listing`](crate::InProcess::listing)) keeps them until their TTL, and the call, having
    /// done the rest, returns [`Error::PrefixKeptInL2`] rather than `Ok`. Writes under the
    /// prefix that wait in the replay queue (made during an L2 outage) become deletes there, so
    /// their replay does not bring the keys back.
    ///
    /// Returns how many keys it dropped here, each counted once whether it was in L1, L2 or
    /// both: L1's keys listed and deleted, and the keys L2's scan deleted that L1 did not hold.
    /// An L1 that cannot list its keys counts every entry it cleared, L2's keys added to them
    /// (it names none to compare with). `UNLINK` says how many keys it deleted, not which: a
    /// key that expires or is deleted in L2 between the scan and the `UNLINK` may leave another
    /// one uncounted, so the count may fall short, never over. An L2 that deletes the keys
    /// itself says how many, not which: the call counts the larger of its count and L1's
    /// (exact when either level held every key of the other under the prefix, as L2 does when
    /// every write reaches it), short, never over. Other instances' drops are not counted.
    ///
    /// L1 is dropped before L2's scan and again after it: a set of a key under the prefix that
    /// this manager runs meanwhile ends either in both levels (it reached L2 after the scan) or
    /// in neither, never in L1 alone. A scan that timed out may still delete a moment later: for
    /// four L2 timeouts no read is then kept in L1, and L1 is dropped once more at their end.
    ///
    /// # Errors
    /// L1's error listing the keys; the replay queue's, if it cannot take the deletes of the
    /// writes under the prefix it holds (L2's scan and the message come all the same); or L2's
    /// (its scan or its deletes, or slots of a cluster whose primary it could not reach), also
    /// under `fallback_on_error` (a level given to the builder: its `delete_prefix`'s error);
    /// or, on an L2 that cannot list its keys and after everything else succeeded,
    /// [`Error::PrefixKeptInL2`], which names the keys dropped here. (An L1 that lists the keys
    /// and then fails to delete them is no error: every L1 entry becomes suspect instead, and
    /// only the keys it deleted before the failure count as dropped. Where the next start
    /// would serve the keys L1 kept without asking L2, [`Error::PrefixKeptInL1`]: with
    /// `restart_policy = "trust"`, and without an L2, where suspect means cleared, if that
    /// fails too.) After L2's error, L1 is dropped here and, through the backplane, elsewhere,
    /// but L2 keeps the values under the prefix it did not delete, and a read would bring them
    /// back into L1. Retry the call once L2 answers.
    pub fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let s = &self.shared;
        // Queued writes under the prefix must land before L2 is scanned, not after.
        s.drain_behind();
        let mut begun = s.prefix_before_l2(prefix)?;
        let in_l2 = l2_prefix_deleted(s.l2_keys.delete_prefix(
            s.l2.as_deref(),
            &s.l2_prefix,
            prefix,
            begun.take_l1_keys(),
        ));
        let answer = s.prefix_after_l2(prefix, begun, in_l2);
        // L1 has changed (and L2 may be half-deleted): the others hear of it even if L2, the
        // replay queue or the second L1 drop failed.
        s.publish(&Invalidation::Prefix(prefix.to_owned()));
        answer
    }

    /// Async [`CacheManager::invalidate_prefix`]: the write-behind queue is drained on a thread of
    /// its own, L1 inline, L2's scan and the message awaited.
    ///
    /// # Errors
    /// As [`CacheManager::invalidate_prefix`].
    pub async fn invalidate_prefix_async(&self, prefix: &str) -> Result<u64> {
        let s = &self.shared;
        if s.behind.is_some() {
            let pass = self.pass()?;
            offload("drain", move || {
                pass.shared().drain_behind();
                Ok(())
            })
            .await?;
        }
        let message = Invalidation::Prefix(prefix.to_owned());
        let mut begun = s.prefix_before_l2(prefix)?;
        // L1 has changed: the other instances hear of it even if this future is dropped (a
        // caller's timeout during L2's scan) or a step fails.
        let announcement = s.announce_one(&message);
        // Dropped during L2's scan, whose `UNLINK`s may have run or may still, this future owes
        // the second L1 drop all the same (see `Shared::prefix_cancelled`).
        let mut again = DropAgain {
            shared: s,
            prefix,
            armed: begun.drops_again(s),
        };
        let in_l2 = l2_prefix_deleted(
            s.l2_keys
                .delete_prefix_async(s.l2.as_deref(), &s.l2_prefix, prefix, begun.take_l1_keys())
                .await,
        );
        // L2 answered: the rest is the rules', as in `invalidate_prefix`.
        again.armed = false;
        let answer = s.prefix_after_l2(prefix, begun, in_l2);
        announcement.publish().await;
        answer
    }

    /// [`CacheManager::set_raw`], and records `key` as a member of each tag in a Redis set that
    /// every instance reaches (the backplane's Redis, or else the Redis L2), with a TTL no
    /// shorter than the entry's plus `loader.fail_safe_max_duration` (how long a copy may be
    /// served stale). Needs Redis 7 or later.
    ///
    /// The key joins its tags before the value is written and again after: once the value can
    /// be read anywhere, every invalidation of its tags that starts finds the key. Tagged only
    /// after, an invalidation that started once another instance had read the value missed
    /// it. Tagged only before, an invalidation in between would remove the key from the set
    /// before the value landed; the second tagging moves the key's score, so such an
    /// invalidation leaves it in the set (or it is put back). With write-behind the value can be
    /// read from L2 only once its batch lands, so the second tagging waits for that (at most
    /// four L2 timeouts): a tagged write costs its batch's round trip. Tagged before it landed,
    /// an invalidation between the tagging and the landing, heard here only after the landing,
    /// left the value in L2 listed by no tag.
    ///
    /// # Errors
    /// As [`CacheManager::set_raw`] (bad input, a key or value a level refuses, before the key
    /// joins any tag); [`Error::Config`] if there is no Redis for tags; the tag Redis's error:
    /// from the first tagging, before anything is written; from the second, the value is
    /// written and tagged by the first.
    pub fn set_raw_with_tags(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let s = &self.shared;
        let store = s.tags.as_ref().ok_or_else(no_tag_redis)?;
        check_tagged(s, key, value, ttl)?;
        store.add(&[key], tags, members_ttl(s, ttl))?;
        self.set_raw(key, value, ttl)?;
        s.wait_behind_sent(&[key]);
        // Before the second tagging: a replay that lands the value after that tagging tags it
        // again then (see `replayed_tags`); one that landed it before, found here not pending,
        // is followed by that tagging.
        s.owe_tags_after_replay(key, tags, members_ttl(s, ttl));
        store.add(&[key], tags, members_ttl(s, ttl))
    }

    /// Async [`CacheManager::set_raw_with_tags`].
    ///
    /// # Errors
    /// As [`CacheManager::set_raw_with_tags`].
    pub async fn set_raw_with_tags_async(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let s = &self.shared;
        let store = s.tags.as_ref().ok_or_else(no_tag_redis)?;
        check_tagged(s, key, value, ttl)?;
        // Tagged before and after the write, as in `set_raw_with_tags`.
        store.add_async(&[key], tags, members_ttl(s, ttl)).await?;
        // Dropped during the set (a caller's timeout) or the wait for its batch, the value may
        // still land: handed to a queue, or in flight. Then the key joins its tags again all
        // the same, or an invalidation meanwhile would have forgotten it; and, as here, once
        // the write can no longer land (see `Landing`).
        let mut owed = TagsOwed {
            shared: s,
            store,
            key,
            tags,
            ttl: members_ttl(s, ttl),
            armed: true,
        };
        let set = self.set_raw_async(key, value, ttl).await;
        if set.is_err() {
            owed.armed = false;
        }
        set?;
        s.wait_behind_sent_async(&[key]).await;
        owed.armed = false;
        s.owe_tags_after_replay(key, tags, members_ttl(s, ttl));
        store.add_async(&[key], tags, members_ttl(s, ttl)).await
    }

    /// [`CacheManager::set`] with tags; see [`CacheManager::set_raw_with_tags`].
    ///
    /// # Errors
    /// As [`CacheManager::set_raw_with_tags`], and [`Error::Encode`].
    pub fn set_with_tags<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw_with_tags(key, &bytes, ttl, tags)
    }

    /// Async [`CacheManager::set_with_tags`].
    ///
    /// # Errors
    /// As [`CacheManager::set_with_tags`].
    pub async fn set_with_tags_async<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let bytes = self.shared.codec.encode(key, value)?;
        self.set_raw_with_tags_async(key, &bytes, ttl, tags).await
    }

    /// Deletes every key written with `tag` from both levels here and, through the backplane,
    /// from every other instance's L1, a thousand keys per [`CacheManager::multi_delete`] (so
    /// each round trip stays within the timeout however large the tag). Returns the number of
    /// keys the tag held. A member that is no key (empty, or longer than
    /// [`crate::MAX_KEY_LEN`], put in the tag's set by hand) is logged, not counted, and removed
    /// from the set.
    ///
    /// # Errors
    /// [`Error::Config`] if there is no Redis for tags; the tag Redis's error; otherwise as
    /// [`CacheManager::multi_delete`], the first of its steps that failed (every step runs, so
    /// every member leaves L1 here and elsewhere even then). L2's failure to delete members is
    /// returned also under `fallback_on_error`, unless the replay queue takes the deletes:
    /// hidden, L2 kept the values while the tag forgot them, and no retry could reach them. The
    /// tag keeps its members until all are deleted, so a call that failed, or whose future was
    /// dropped, can be retried (once L2 answers): it deletes them all again.
    pub fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        let store = self.shared.tags.as_ref().ok_or_else(no_tag_redis)?;
        let members = store.members(tag)?;
        if members.keys.is_empty() {
            return Ok(0);
        }
        let deleted = deletable(&self.shared, tag, &members.keys);
        // Every step, whatever the others did: a failed one (L2 refused its delete) still
        // removed its keys from L1 and published them, and so must every step after it.
        let mut failed = None;
        for step in deleted.chunks(TAG_DELETE_STEP) {
            if let Err(e) = self.multi_delete_owing(step, L2Owed::Reported) {
                failed = failed.or(Some(e));
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = store.forget(tag, &members) {
            // Harmless: the next invalidation of the tag deletes them again.
            tracing::warn!(tag, error = %e, "deleted members stay in their tag's set");
        }
        Ok(deleted.len() as u64)
    }

    /// Async [`CacheManager::invalidate_tag`].
    ///
    /// # Errors
    /// As [`CacheManager::invalidate_tag`].
    pub async fn invalidate_tag_async(&self, tag: &str) -> Result<u64> {
        let store = self.shared.tags.as_ref().ok_or_else(no_tag_redis)?;
        let members = store.members_async(tag).await?;
        if members.keys.is_empty() {
            return Ok(0);
        }
        let deleted = deletable(&self.shared, tag, &members.keys);
        let mut failed = None;
        for step in deleted.chunks(TAG_DELETE_STEP) {
            if let Err(e) = self.multi_delete_owing_async(step, L2Owed::Reported).await {
                failed = failed.or(Some(e));
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if let Err(e) = store.forget_async(tag, &members).await {
            tracing::warn!(tag, error = %e, "deleted members stay in their tag's set");
        }
        Ok(deleted.len() as u64)
    }

    /// Invalidates what an application event names: deletes its keys from both levels and
    /// invalidates its tags, in every instance. See [`InvalidationEvent`]. Returns the number of
    /// keys deleted (tag members included).
    ///
    /// # Errors
    /// As [`CacheManager::multi_delete`] and [`CacheManager::invalidate_tag`]: the first of
    /// their errors. Every step runs, whatever the others did (as every step of a tag does): a
    /// failed one still took its keys out of L1 here and elsewhere, and so does each step after
    /// it. Stopped at the first failure (an L2 that refused the keys' delete), the event left
    /// every member of its tags readable in every L1. Retry the call once L2 answers.
    pub fn invalidate_event(&self, event: &(impl InvalidationEvent + ?Sized)) -> Result<u64> {
        let mut steps = Steps::default();
        let keys = event.keys();
        if !keys.is_empty() {
            steps.note(self.multi_delete(&keys).map(|_| keys.len() as u64));
        }
        for tag in event.tags() {
            steps.note(self.invalidate_tag(&tag));
        }
        steps.end()
    }

    /// Async [`CacheManager::invalidate_event`].
    ///
    /// # Errors
    /// As [`CacheManager::invalidate_event`].
    pub async fn invalidate_event_async(&self, event: &(impl InvalidationEvent + ?Sized)) -> Result<u64> {
        let mut steps = Steps::default();
        let keys = event.keys();
        if !keys.is_empty() {
            steps.note(self.multi_delete_async(&keys).await.map(|_| keys.len() as u64));
        }
        for tag in event.tags() {
            steps.note(self.invalidate_tag_async(&tag).await);
        }
        steps.end()
    }

    /// Finishes the background work and makes both levels' completed writes durable, where
    /// they have such a notion: waits for queued backfills of batch reads, sends queued
    /// write-behind writes, then flushes L1 (fsync for the file store) and L2.
    ///
    /// # Errors
    /// The first level's error (L2 is flushed whatever L1's flush said: a redb L1 reports a
    /// loss of commits once, through its flush, and that report must not cost L2 its flush).
    /// Then, if both flushed, [`Error::WriteBehindLost`] for the write-behind writes that will
    /// never reach L2 since the last flush reported any (this flush's sends included): L2
    /// refused them, or they failed with no replay queue to take them or one too full to (a
    /// set that found the write-behind queue full and wrote through counts, when L2 failed it
    /// and `fallback_on_error` hid that); not a write a newer write or delete of its key superseded. As
    /// `fsync` reports a writeback error, one flush reports a loss, on whichever handle calls it;
    /// a loss a level's error hid is reported by the next flush. Writes that failed and were
    /// queued for replay are not lost, and not reported: they land once L2 answers
    /// (`stats().consistency.write_behind_failures` counts every failure). Queued backfills
    /// are waited for at most 10 s: they are copies of L2's values, and one left behind loses
    /// nothing.
    pub fn flush(&self) -> Result<()> {
        if let Some(fills) = &self.shared.fills {
            fills.drain();
        }
        self.shared.drain_behind();
        let local = self.shared.l1.flush();
        let distributed = match &self.shared.l2 {
            Some(l2) => l2.flush(),
            None => Ok(()),
        };
        local.and(distributed)?;
        self.shared.take_behind_lost()
    }

    /// Async [`CacheManager::flush`]: runs on a thread of its own (see `offload`); dropping the
    /// future does not stop it, and dropping the manager's last handle waits for it. A loss of
    /// write-behind writes that a dropped future's flush found reached nobody: the next flush
    /// reports it.
    ///
    /// # Errors
    /// As [`CacheManager::flush`].
    pub async fn flush_async(&self) -> Result<()> {
        let pass = self.pass()?;
        offload_unheard(
            "flush",
            pass,
            |pass| pass.manager().flush(),
            |pass, unheard| pass.shared().restore_behind_lost(unheard),
        )
        .await
    }

    /// A pass for work run apart from this call (see `apart`): the last handle's drop waits
    /// for it rather than leave its shutdown to that work's thread.
    fn pass(&self) -> Result<Pass> {
        // While this handle lives the gate is open: only the last handle's drop closes it.
        Pass::enter(Arc::clone(&self.shared)).ok_or_else(|| Error::Backend {
            level: "manager",
            op: "offload",
            reason: "the manager is shutting down".into(),
        })
    }
}

/// How long a member a `set` with `ttl` adds stays in its tag's set: the member's TTL in either
/// level, and the fail-safe window past it. L1's may be the longer (`local.ttl` over
/// `distributed.ttl`), and a member dropped before an L1 copy, fresh or kept to be served
/// stale, would leave that copy out of the tag's invalidation.
fn members_ttl(s: &Shared, ttl: Option<Duration>) -> Duration {
    // A copy of the entry, in this L1 or backfilled into another instance's (with no more than
    // L2's time left), may be served stale for the fail-safe window past its TTL: an
    // invalidation of the tag until then must still find the key, or that copy outlives it.
    s.l1_ttl(ttl)
        .max(s.l2_ttl(ttl))
        .saturating_add(s.fail_safe.window())
}

/// Members of a tag deleted per [`CacheManager::multi_delete`] of an invalidation, so each
/// round trip to L2 stays within its timeout however large the tag. One `UNLINK` of a million
/// keys is a request of about 15 MB: Redis ran it in 10 ms, but the round trip took 120 ms over
/// loopback (`redis-cli --pipe`), past the default timeout of 100 ms, and such a tag could never
/// have been invalidated, as it could not be read in one command either (see `tags`).
const TAG_DELETE_STEP: usize = 1_000;

/// The members of `tag` that are keys: a member no level takes (empty, longer than
/// [`crate::MAX_KEY_LEN`], or in the namespace the Redis L2 keeps for tag sets: added to the
/// set by hand, or by a build with other limits or that tagged a key before checking it) holds
/// no value to delete. It is logged and left out, and goes from the set with the others:
/// refused, it failed the whole delete, and every later invalidation of the tag again, while
/// the values of the valid members stayed readable. One line per tag, not per member: a set
/// another program filled with a million such members logged a million.
fn deletable<'m>(s: &Shared, tag: &str, members: &'m [String]) -> Vec<&'m str> {
    let (keys, refused) = crate::keys::passing_keys(members, |key| s.check_delete_key(key));
    if let Some((e, skipped)) = refused {
        tracing::warn!(tag, error = %e, skipped, "members of the tag are not keys; removed from the tag's set");
    }
    keys
}

/// Refuses, before `key` joins any tag, a tagged write whose input a level refuses (see
/// [`Shared::check_l2_input`]): joined first, a refused key stayed in its tags, and one Redis
/// refuses (the tag sets' namespace) then failed every invalidation of them.
fn check_tagged(s: &Shared, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
    crate::keys::check_write(key, ttl)?;
    s.check_l2_input(&[(key, value)])
}

/// The steps of an event's invalidation: the keys they dropped, and the first error.
#[derive(Default)]
struct Steps {
    dropped: u64,
    failed: Option<Error>,
}

impl Steps {
    fn note(&mut self, step: Result<u64>) {
        match step {
            Ok(n) => self.dropped = self.dropped.saturating_add(n),
            Err(e) => {
                self.failed.get_or_insert(e);
            }
        }
    }

    fn end(self) -> Result<u64> {
        self.failed.map_or(Ok(self.dropped), Err)
    }
}

/// The error of a tag call on a manager without a Redis for tags (or built without one).
fn no_tag_redis() -> Error {
    if !cfg!(feature = "redis") {
        return Error::FeatureDisabled {
            field: "invalidation.enabled".to_owned(),
            what: "tags (kept in a Redis)".to_owned(),
            feature: "redis",
        };
    }
    Error::Config {
        field: "invalidation.enabled".to_owned(),
        reason: "tags need a Redis: enable the backplane or use a Redis L2".to_owned(),
    }
}

/// How many keys of a prefix L2 deleted. A failure is the caller's even under
/// `fallback_on_error`: nothing records the prefix for replay, so L2 keeps the values and a
/// read after L2's return would backfill them into L1 again. Hidden, the invalidation was lost
/// without a word; returned, the caller can retry it once L2 is back.
fn l2_prefix_deleted(deleted: Result<InL2>) -> Result<InL2> {
    deleted.inspect_err(|e| {
        tracing::warn!(error = %e, "deleting a prefix from L2 failed: L2 keeps its values under it until they expire or the invalidation is retried");
    })
}

/// The tagging a tagged async write owes if its future is dropped during its set (see
/// [`CacheManager::set_raw_with_tags_async`]).
struct TagsOwed<'a> {
    shared: &'a Shared,
    store: &'a TagStore,
    key: &'a str,
    tags: &'a [&'a str],
    ttl: Duration,
    armed: bool,
}

impl Drop for TagsOwed<'_> {
    fn drop(&mut self) {
        if self.armed {
            let landing = self.shared.landing(&[self.key], self.tags, self.ttl);
            self.store.add_later(&[self.key], self.tags, self.ttl, landing);
        }
    }
}

/// The second L1 drop a prefix invalidation owes once L2's scan has begun, run from `Drop` if
/// its future is dropped before L2 answers (see [`CacheManager::invalidate_prefix_async`]),
/// with the quiet window and the drop at its end of [`Shared::prefix_cancelled`].
struct DropAgain<'a> {
    shared: &'a Arc<Shared>,
    prefix: &'a str,
    armed: bool,
}

impl Drop for DropAgain<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.shared.prefix_cancelled(self.prefix) {
                tracing::warn!(prefix = self.prefix, error = %e, "a dropped prefix invalidation could not drop L1 again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    /// Counts the events logged while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Lines(Arc<AtomicUsize>);

    impl Subscriber for Lines {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[test]
    fn a_tag_of_many_members_that_are_not_keys_logs_one_line() {
        let mut members = vec![String::new(); 1000];
        members.push("k".repeat(crate::MAX_KEY_LEN + 1));
        members.push("key".to_owned());
        let mut config = crate::CacheConfig::default();
        config.local.kind = crate::LocalKind::Memory;
        let cache = crate::CacheManager::new(config).unwrap();
        let lines = Lines::default();
        let kept = tracing::subscriber::with_default(lines.clone(), || {
            super::deletable(&cache.shared, "tag", &members).len()
        });
        assert_eq!(kept, 1);
        assert_eq!(lines.0.load(Ordering::Relaxed), 1);
    }
}
