//! The keys whose newest write a reopen lost, read as misses from then on.
//!
//! A commit that was not durable yet is lost when an I/O error (a full disk) latches redb and
//! the store reopens its database: the file rolls back to the last durable commit. A key that a
//! lost commit overwrote or deleted then holds its older value again, which must not be served
//! as current (a delete would come back to life while the process runs). So every write
//! transaction that commits without fsync notes the keys it changed, a durable commit forgets
//! them, and a reopen that lost commits hides the restored entries of those keys: each entry
//! whose seq is below the next seq of the reopened database, which is exactly what the rollback
//! restored (later writes take that seq and up, so they are served). More than [`MAX_KEYS`]
//! keys since the last durable commit are not listed: then every restored entry is hidden.
//!
//! Hidden in memory, and removed from the file by [`Inner::purge_hidden`] in a durable commit
//! before the next durable commit a caller or the flusher asks for (a flush, a close, a
//! `Periodic` turn), so that none of them is acknowledged while the file still holds an entry
//! the next open would restore (as suspect, which a manager without L2 serves): a lost delete
//! stays deleted across a clean close. The purge of expired entries removes them too.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;
use redb::ReadableTable;

use super::inner::{Inner, PURGE_ROUND};
use super::tables::{Record, Tables};
use crate::error::Result;

/// Keys noted between two durable commits, at most (about 6 MiB of 32-byte keys).
pub(super) const MAX_KEYS: usize = 100_000;

/// What the commits since the last durable one changed.
#[derive(Debug, Default)]
struct Changed {
    keys: HashSet<String>,
    /// Too many keys to list.
    all: bool,
}

/// What reopens lost: entries to hide.
#[derive(Debug, Default)]
struct Hidden {
    /// Key → the next seq of the database the reopen restored: its entries below it are hidden.
    keys: HashMap<String, u64>,
    /// Every entry below this seq is hidden.
    below_seq: u64,
    /// Reopens that lost commits so far.
    reopens: u64,
    /// Of those, how many a durable [`Inner::purge_hidden`] covered: while fewer, the file may
    /// still hold entries this hides.
    purged: u64,
}

/// What [`Inner::purge_hidden`] removes: the hidden entries as of `reopens` reopens.
#[derive(Debug)]
pub(super) struct Unpurged {
    reopens: u64,
    keys: Vec<(String, u64)>,
    below_seq: u64,
}

/// The keys changed since the last durable commit, and those a reopen lost.
#[derive(Debug, Default)]
pub(super) struct Lost {
    changed: Mutex<Changed>,
    hidden: Mutex<Hidden>,
    /// Whether `hidden` holds anything: the reads' fast path.
    any: std::sync::atomic::AtomicBool,
}

impl Lost {
    /// A commit without fsync changed `keys`.
    pub(super) fn changed<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        let mut changed = self.changed.lock();
        if changed.all {
            return;
        }
        for key in keys {
            if changed.keys.len() >= MAX_KEYS {
                changed.all = true;
                changed.keys = HashSet::new();
                return;
            }
            if !changed.keys.contains(key) {
                changed.keys.insert(key.to_owned());
            }
        }
    }

    /// A durable commit: everything before it is safe.
    pub(super) fn durable(&self) {
        *self.changed.lock() = Changed::default();
    }

    /// A reopen lost the commits since the last durable one; `next_seq`: the reopened database's.
    pub(super) fn reopened_after_loss(&self, next_seq: u64) {
        let changed = std::mem::take(&mut *self.changed.lock());
        let mut hidden = self.hidden.lock();
        hidden.reopens += 1;
        if changed.all || hidden.keys.len() + changed.keys.len() > MAX_KEYS {
            // Hiding everything restored covers the keys listed before as well.
            hidden.keys = HashMap::new();
            hidden.below_seq = hidden.below_seq.max(next_seq);
        } else {
            for key in changed.keys {
                let below = hidden.keys.entry(key).or_insert(next_seq);
                *below = (*below).max(next_seq);
            }
        }
        self.any.store(
            hidden.below_seq > 0 || !hidden.keys.is_empty(),
            std::sync::atomic::Ordering::Release,
        );
    }

    /// The hidden entries, if a reopen may have left some in the file that no durable purge
    /// removed since.
    fn unpurged(&self) -> Option<Unpurged> {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let hidden = self.hidden.lock();
        (hidden.purged < hidden.reopens).then(|| Unpurged {
            reopens: hidden.reopens,
            keys: hidden.keys.iter().map(|(k, &below)| (k.clone(), below)).collect(),
            below_seq: hidden.below_seq,
        })
    }

    /// A durable commit removed every entry hidden as of `reopens` reopens. (Still hidden:
    /// nothing written since the reopen has a seq below theirs, so hiding costs nothing.)
    fn purged(&self, reopens: u64) {
        let mut hidden = self.hidden.lock();
        hidden.purged = hidden.purged.max(reopens);
    }

    /// Whether the entry of `key` with `seq` is an older version a reopen brought back.
    pub(super) fn hides(&self, key: &str, seq: u64) -> bool {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let hidden = self.hidden.lock();
        seq < hidden.below_seq || hidden.keys.get(key).is_some_and(|&below| seq < below)
    }
}

impl Inner {
    /// Removes from the file, in durable commits, every entry a reopen's rollback brought back
    /// (see the module docs); nothing if a purge since the last reopen that lost commits did.
    /// Returns how many. The listed keys are looked up one by one; the entries below the seq
    /// that hides everything restored are found in `order` (seq → key), a round at a time.
    ///
    /// # Errors
    /// [`Error::Redb`](crate::Error::Redb) or [`Error::DiskFull`](crate::Error::DiskFull) if a
    /// transaction fails: the entries left stay hidden, and the next call tries again.
    pub(super) fn purge_hidden(&self) -> Result<u64> {
        let Some(unpurged) = self.lost.unpurged() else {
            return Ok(0);
        };
        let now = self.clock.now_ms();
        let restored = |t: &Tables<'_>, key: &str, below: u64| -> Result<bool> {
            let found = t.entries.get(key).map_err(|e| self.err("get", e))?;
            Ok(found.is_some_and(|v| Record::decode(v.value()).is_none_or(|r| r.seq < below)))
        };
        let mut removed = 0;
        if !unpurged.keys.is_empty() {
            // Durable: a crash after it must not bring them back either.
            removed += self.write(true, None, |txn, counts| {
                let mut t = Tables::open(self, txn)?;
                let mut removed = 0;
                for (key, below) in &unpurged.keys {
                    if restored(&t, key, *below)? && t.remove(self, key, now)?.is_some() {
                        removed += 1;
                    }
                }
                t.save(self, counts)?;
                Ok(removed)
            })?;
        }
        let below = unpurged.below_seq;
        let mut more = below > 0;
        while more {
            let round;
            (round, more) = self.write(true, None, |txn, counts| {
                let mut t = Tables::open(self, txn)?;
                let rows = t
                    .order
                    .range(..below)
                    .map_err(|e| self.err("scan", e))?
                    .take(PURGE_ROUND)
                    .map(|row| {
                        let (seq, key) = row.map_err(|e| self.err("scan", e))?;
                        Ok((seq.value(), key.value().to_owned()))
                    })
                    .collect::<Result<Vec<(u64, String)>>>()?;
                let mut removed = 0;
                for (seq, key) in &rows {
                    // Each row listed goes, also one whose entry has another seq (none
                    // should), so that the next round starts past it and the loop ends.
                    t.order.remove(*seq).map_err(|e| self.err("remove", e))?;
                    if restored(&t, key, below)? && t.remove(self, key, now)?.is_some() {
                        removed += 1;
                    }
                }
                t.save(self, counts)?;
                Ok((removed, rows.len() == PURGE_ROUND))
            })?;
            removed += round;
        }
        self.lost.purged(unpurged.reopens);
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopen_after_loss_hides_the_restored_entries_of_the_keys_changed_since_the_last_durable_commit() {
        let lost = Lost::default();
        lost.changed(["durable-then-flushed"]);
        lost.durable();
        lost.changed(["a", "b"]);
        assert!(!lost.hides("a", 3), "nothing is hidden before a reopen");
        lost.reopened_after_loss(10);
        assert!(lost.hides("a", 9) && lost.hides("b", 0));
        assert!(!lost.hides("a", 10), "a write after the reopen is served");
        assert!(!lost.hides("durable-then-flushed", 5));
        assert!(!lost.hides("c", 5));
        // A later reopen that lost nothing new keeps hiding what the first one lost.
        lost.reopened_after_loss(12);
        assert!(lost.hides("a", 9) && !lost.hides("a", 10));
    }

    #[test]
    fn too_many_keys_to_list_hide_every_restored_entry() {
        let lost = Lost::default();
        let keys: Vec<String> = (0..=MAX_KEYS).map(|i| format!("k{i}")).collect();
        lost.changed(keys.iter().map(String::as_str));
        lost.reopened_after_loss(7);
        assert!(lost.hides("never-written-since", 6));
        assert!(!lost.hides("k0", 7));
    }
}
