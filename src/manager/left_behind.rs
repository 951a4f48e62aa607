//! [`LeftBehind`]: the L1 entries that a removal L1 could not apply (a delete, an invalidation,
//! a revalidation's drop, the drop of a suspect entry a queued replay op settled, a write
//! undone), or a write L1 failed part way, may have left in L1.
//!
//! Such an entry is made suspect (or every entry is, see `distrust`), so a read checks it
//! against L2 before serving it. But two answers are given without L2's word, and neither may
//! be such an entry: a stale copy (fail-safe: nothing fresher could be had) and a suspect entry
//! served unverified while L2 cannot be reached (offline mode). It may be the very value a
//! delete removed from L2 and every other instance, or one the caller was told was not written
//! and that L2 never got. These keys read as misses instead, until the key is written again,
//! or dropped (a prefix or everything: until a drop of it succeeds).
//!
//! Kept in memory, and bounded: past [`KEYS_MAX`] keys (or [`PREFIXES_MAX`] prefixes) every key
//! counts as left behind. Only a failure of L1 adds to it, and a suspect entry that L2 has
//! settled is no longer served unverified whatever this holds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::policy::Shared;
use crate::error::Result;

/// Bound on the keys remembered; beyond it, every key counts as left behind.
const KEYS_MAX: usize = 4096;
/// Bound on the prefixes remembered; beyond it, every key counts as left behind.
const PREFIXES_MAX: usize = 64;

/// What an L1 removal did not get to (see [`LeftBehind::record`]).
pub(crate) enum Removal<'a> {
    Keys(&'a [&'a str]),
    Prefix(&'a str),
    All,
}

/// The keys, prefixes or everything recorded.
#[derive(Debug, Default)]
struct Recorded {
    keys: HashSet<String>,
    prefixes: Vec<String>,
    all: bool,
}

impl Recorded {
    fn covers(&self, key: &str) -> bool {
        self.all || self.keys.contains(key) || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
    }

    fn is_empty(&self) -> bool {
        !self.all && self.keys.is_empty() && self.prefixes.is_empty()
    }
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct LeftBehind {
    recorded: Mutex<Recorded>,
    /// Whether `recorded` holds anything: the one load a write or a check pays while it is
    /// empty.
    held: AtomicBool,
    /// Moved by every record, so that a write that began before one does not forget it (see
    /// [`LeftBehind::mark`]).
    generation: AtomicU64,
}

impl LeftBehind {
    /// `removal`'s entries may have been left in L1: none is served without L2's word until
    /// the key is written again (a prefix or everything: until a drop of it succeeds).
    pub(crate) fn record(&self, removal: Removal<'_>) {
        let mut recorded = self.recorded.lock();
        match removal {
            Removal::Keys(keys) => recorded.keys.extend(keys.iter().map(|k| (*k).to_owned())),
            Removal::Prefix(prefix) => recorded.prefixes.push(prefix.to_owned()),
            Removal::All => recorded.all = true,
        }
        if recorded.keys.len() > KEYS_MAX || recorded.prefixes.len() > PREFIXES_MAX {
            *recorded = Recorded {
                all: true,
                ..Recorded::default()
            };
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.held.store(true, Ordering::Release);
    }

    /// Taken before an L1 write or drop that, if it succeeds, replaces what a failure left:
    /// handed back to [`forget`](Self::forget).
    pub(crate) fn mark(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// L1 now holds a new entry for each of `keys` (`prefix`: none of the keys under it), by a
    /// write or drop that took `mark` before it began: what a failure left of them is gone.
    /// Unless a failure was recorded since `mark`: it may have come after this write and
    /// missed it.
    pub(crate) fn forget<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        prefix: Option<&str>,
        mark: u64,
    ) {
        if !self.held.load(Ordering::Acquire) {
            return;
        }
        let mut recorded = self.recorded.lock();
        if self.generation.load(Ordering::Acquire) != mark {
            return;
        }
        for key in keys {
            recorded.keys.remove(key);
        }
        if let Some(prefix) = prefix {
            if prefix.is_empty() {
                recorded.all = false;
            }
            recorded.keys.retain(|k| !k.starts_with(prefix));
            recorded.prefixes.retain(|p| !p.starts_with(prefix));
        }
        if recorded.is_empty() {
            self.held.store(false, Ordering::Release);
        }
    }

    /// Whether a failure may have left `key`'s entry in L1.
    pub(crate) fn covers(&self, key: &str) -> bool {
        self.held.load(Ordering::Acquire) && self.recorded.lock().covers(key)
    }
}

impl Shared {
    /// Takes out of L1 a suspect entry of `key` that no read will serve (L2 no longer holds it,
    /// or `restart_policy = "drop"`). If L1 refuses (a full disk, a store latched read-only),
    /// the entry stays, suspect, so reads go on asking L2, and it is recorded as left behind.
    pub(crate) fn drop_suspect(&self, key: &str) -> Result<bool> {
        let dropped = self.l1.delete(key);
        if dropped.is_err() {
            self.left_behind.record(Removal::Keys(&[key]));
        }
        dropped
    }

    /// A suspect entry of `key` read while L2 cannot be reached: whether it may be served as it
    /// is (offline mode), which an entry a failure left behind may not (see the
    /// [module docs](self)); it is then a miss, counted in `withheld_unverified`.
    pub(crate) fn serves_unverified(&self, key: &str) -> bool {
        if self.left_behind.covers(key) {
            self.metrics.consistency.withheld_unverified.incr();
            tracing::debug!(key = %crate::error::key_for_error(key), "a suspect entry a failed write or removal may have left is not served unverified");
            return false;
        }
        self.metrics.consistency.served_unverified.incr();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_covered_until_a_write_that_began_after_its_failure_forgets_it() {
        let left = LeftBehind::default();
        assert!(!left.covers("k"));
        let before = left.mark();
        left.record(Removal::Keys(&["k"]));
        left.forget(["k"], None, before);
        assert!(left.covers("k"), "a write older than the failure forgot it");
        left.forget(["k"], None, left.mark());
        assert!(!left.covers("k"));
    }

    #[test]
    fn a_prefix_covers_its_keys_until_a_drop_of_it() {
        let left = LeftBehind::default();
        left.record(Removal::Prefix("user:"));
        assert!(left.covers("user:1"));
        assert!(!left.covers("order:1"));
        left.forget(["user:1"], None, left.mark());
        assert!(left.covers("user:1"), "a write of one key forgot the prefix");
        left.forget([], Some("user:"), left.mark());
        assert!(!left.covers("user:1"));
    }

    #[test]
    fn past_its_bound_every_key_is_covered_until_everything_is_dropped() {
        let left = LeftBehind::default();
        let keys: Vec<String> = (0..=KEYS_MAX).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        left.record(Removal::Keys(&refs));
        assert!(left.covers("never-recorded"));
        left.forget(["never-recorded"], Some("k"), left.mark());
        assert!(
            left.covers("never-recorded"),
            "a drop of a prefix forgot everything"
        );
        left.forget([], Some(""), left.mark());
        assert!(!left.covers("never-recorded"));
        assert!(!left.covers("k0"));
    }
}
