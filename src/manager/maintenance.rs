//! Maintenance calls of [`CacheManager`]: L1-only invalidation, the replay queue, the
//! backplane, prefix and tag invalidation, events and `flush`.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::CacheManager;
use super::InvalidationEvent;

use crate::error::{Error, Result};
use crate::invalidation::{Backplane, Invalidation};
use crate::replay::ReplayQueue;

impl CacheManager {
    /// Deletes a key from L1 only (for example on an invalidation message from another process:
    /// L2 already has the news). Guarded like any delete against a racing backfill.
    ///
    /// # Errors
    /// The L1 error.
    pub fn invalidate_local(&self, key: &str) -> Result<bool> {
        let s = &self.shared;
        let _writing = s.guard.write([key]);
        Ok(s.count_delete_l1(1, s.l1.delete(key).map(u64::from))? > 0)
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

    /// The invalidation backplane, if `invalidation.enabled`.
    #[must_use]
    pub fn backplane(&self) -> Option<&Backplane> {
        self.shared.backplane.get()
    }

    /// Drops every key that starts with `prefix`: from L1 here, from L2 where the backend can
    /// list keys, and (through the backplane) from every other instance's L1. L1 keys are listed
    /// where the level can (the file store, redb); another L1 is cleared instead (a superset).
    /// L2 keys are deleted with `SCAN` + `UNLINK` on a standalone Redis L2 (when the backplane,
    /// if any, is that same Redis); a Redis Cluster or Memcached L2 keeps them until their TTL
    /// (Memcached cannot list keys). Returns the number of keys dropped from L1 and L2.
    ///
    /// # Errors
    /// The L1 error, or the L2 scan's error unless hidden by `fallback_on_error`.
    pub fn invalidate_prefix(&self, prefix: &str) -> Result<u64> {
        let s = &self.shared;
        // Queued writes under the prefix must land before L2 is scanned, not after.
        s.drain_behind();
        let dropped = s.drop_local_prefix(prefix)?;
        let in_l2 = match &s.tags {
            Some(tags) => match tags.delete_prefix(&s.l2_prefix, prefix) {
                Ok(n) => n,
                Err(e) if s.fallback_on_error => {
                    tracing::warn!(error = %e, "deleting a prefix from L2 failed; hidden by fallback_on_error");
                    0
                }
                Err(e) => return Err(e),
            },
            None => 0,
        };
        s.publish(&Invalidation::Prefix(prefix.to_owned()));
        Ok(dropped + in_l2)
    }

    /// [`CacheManager::set_raw`], and records `key` as a member of each tag in a Redis set that
    /// every instance reaches (the backplane's Redis, or else the Redis L2), with a TTL no
    /// shorter than the entry's. Needs Redis 7 or later.
    ///
    /// # Errors
    /// As [`CacheManager::set_raw`]; [`Error::Config`] if there is no Redis for tags; the tag
    /// Redis's error (the value is then written but not tagged).
    pub fn set_raw_with_tags(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        tags: &[&str],
    ) -> Result<()> {
        let s = &self.shared;
        let Some(store) = &s.tags else {
            return Err(Error::Config {
                field: "invalidation.enabled".to_owned(),
                reason: "tags need a Redis: enable the backplane or use a Redis L2".to_owned(),
            });
        };
        self.set_raw(key, value, ttl)?;
        store.add(&[key], tags, s.l2_ttl(ttl))
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

    /// Deletes every key written with `tag` from both levels here and, through the backplane
    /// (as one message of keys), from every other instance's L1. Returns the number of keys
    /// the tag held.
    ///
    /// # Errors
    /// [`Error::Config`] if there is no Redis for tags; the tag Redis's error; otherwise as
    /// [`CacheManager::multi_delete`].
    pub fn invalidate_tag(&self, tag: &str) -> Result<u64> {
        let Some(store) = &self.shared.tags else {
            return Err(Error::Config {
                field: "invalidation.enabled".to_owned(),
                reason: "tags need a Redis: enable the backplane or use a Redis L2".to_owned(),
            });
        };
        let members = store.take(tag)?;
        if members.is_empty() {
            return Ok(0);
        }
        self.multi_delete(&members)?;
        Ok(members.len() as u64)
    }

    /// Invalidates what an application event names: deletes its keys from both levels and
    /// invalidates its tags, in every instance. See [`InvalidationEvent`]. Returns the number of
    /// keys deleted (tag members included).
    ///
    /// # Errors
    /// As [`CacheManager::multi_delete`] and [`CacheManager::invalidate_tag`].
    pub fn invalidate_event(&self, event: &(impl InvalidationEvent + ?Sized)) -> Result<u64> {
        let keys = event.keys();
        let mut dropped = if keys.is_empty() {
            0
        } else {
            self.multi_delete(&keys)?;
            keys.len() as u64
        };
        for tag in event.tags() {
            dropped += self.invalidate_tag(&tag)?;
        }
        Ok(dropped)
    }

    /// Finishes the background work and makes both levels' completed writes durable, where
    /// they have such a notion: waits for queued backfills of batch reads, sends queued
    /// write-behind writes, then flushes L1 (fsync for the file store) and L2.
    ///
    /// # Errors
    /// The first level's error.
    pub fn flush(&self) -> Result<()> {
        if let Some(fills) = &self.shared.fills {
            fills.drain();
        }
        self.shared.drain_behind();
        self.shared.l1.flush()?;
        match &self.shared.l2 {
            Some(l2) => l2.flush(),
            None => Ok(()),
        }
    }
}
