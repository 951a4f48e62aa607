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
//! Hidden in memory; the purge (`Inner::purge_expired`, the background thread's every minute)
//! also removes those entries from the file, so that once its commit is durable a restart does
//! not bring them back either.

use std::collections::{HashMap, HashSet};

use parking_lot::Mutex;

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

    /// Whether the entry of `key` with `seq` is an older version a reopen brought back.
    pub(super) fn hides(&self, key: &str, seq: u64) -> bool {
        if !self.any.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let hidden = self.hidden.lock();
        seq < hidden.below_seq || hidden.keys.get(key).is_some_and(|&below| seq < below)
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
