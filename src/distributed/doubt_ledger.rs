//! The bookkeeping the network levels share for their writes in doubt (`redis::doubt`,
//! `memcached::doubt`, whose module docs say why a write is in doubt and how each level probes
//! and corrects it): which keys wait for which probes, the values written in doubt that a
//! correction compares against, and the counts and hook the stats and the manager read.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::storage::{LateWriteHook, StorageCounters};

/// The bytes of values in doubt kept for a conditional correction, across a store's keys; past
/// it, a key is corrected whatever it holds.
pub(crate) const KEEP_BYTES: usize = 32 << 20;

/// Values written in doubt: `None` once one was too large to keep (see [`KEEP_BYTES`]).
pub(crate) type Late = Option<Vec<Vec<u8>>>;

/// A store's keys in doubt, keyed by `K` (the key as the server sees it), each with the `X` its
/// correction needs (its host, say).
pub(crate) struct Ledger<K, X> {
    state: parking_lot::Mutex<State<K, X>>,
    /// Keys in doubt or being corrected.
    open: AtomicUsize,
    /// Keys a correction deleted.
    deleted: AtomicU64,
    /// Told each key a correction deleted, as the caller names it (see
    /// `DistributedStorage::on_late_write_deleted`).
    hook: parking_lot::Mutex<Option<LateWriteHook>>,
}

struct State<K, X> {
    keys: HashMap<K, Doubt<X>>,
    next: u64,
    /// Bytes of values kept in `keys`.
    kept: usize,
}

/// One key in doubt.
struct Doubt<X> {
    /// The probes it waits for.
    waits_on: Vec<u64>,
    /// The values written in doubt.
    late: Late,
    extra: X,
}

impl<K: Eq + Hash + Clone, X: Clone> Ledger<K, X> {
    pub(crate) fn new() -> Self {
        Ledger {
            state: parking_lot::Mutex::new(State {
                keys: HashMap::new(),
                next: 0,
                kept: 0,
            }),
            open: AtomicUsize::new(0),
            deleted: AtomicU64::new(0),
            hook: parking_lot::Mutex::new(None),
        }
    }

    /// Keys whose write may still land late, or whose correction has not ended yet.
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Keys a correction deleted: a value written in doubt was there.
    pub(crate) fn deleted(&self) -> u64 {
        self.deleted.load(Ordering::Relaxed)
    }

    /// Tells `hook` each key a correction deletes from now on.
    pub(crate) fn on_deleted(&self, hook: LateWriteHook) {
        *self.hook.lock() = Some(hook);
    }

    /// What a network level counts as its own (the server counts evictions and expirations for
    /// every client together, none per store): its writes in doubt, and the late values their
    /// corrections deleted.
    pub(crate) fn counters(&self) -> StorageCounters {
        StorageCounters {
            late_writes_deleted: self.deleted(),
            writes_in_doubt: u64::try_from(self.open()).unwrap_or(u64::MAX),
            ..StorageCounters::default()
        }
    }

    /// Puts each `(key, value sent)` of `writes` in doubt until a new probe ends (see
    /// [`settle`](Self::settle)); returns the probe's id. `extra` is what a key new to the
    /// ledger keeps for its correction.
    pub(crate) fn begin<'v>(
        &self,
        writes: impl IntoIterator<Item = (K, &'v [u8])>,
        extra: impl Fn() -> X,
    ) -> u64 {
        let mut state = self.state.lock();
        let id = state.next;
        state.next = state.next.wrapping_add(1);
        for (key, value) in writes {
            let kept = state.kept;
            let doubt = state.keys.entry(key).or_insert_with(|| {
                self.open.fetch_add(1, Ordering::AcqRel);
                Doubt {
                    waits_on: Vec::new(),
                    late: Some(Vec::new()),
                    extra: extra(),
                }
            });
            doubt.waits_on.push(id);
            let added = match &mut doubt.late {
                Some(late) if late.iter().any(|v| v == value) => 0,
                Some(late) if kept.saturating_add(value.len()) <= KEEP_BYTES => {
                    late.push(value.to_vec());
                    value.len()
                }
                Some(late) => {
                    let freed: usize = late.iter().map(Vec::len).sum();
                    doubt.late = None;
                    state.kept = state.kept.saturating_sub(freed);
                    0
                }
                None => 0,
            };
            state.kept = state.kept.saturating_add(added);
        }
        id
    }

    /// Probe `id` ended: the keys that wait for nothing else leave the ledger, each with its
    /// `extra` and values, to be corrected; each counts as open until [`corrected`](Self::corrected).
    pub(crate) fn settle(&self, id: u64) -> Vec<(K, X, Late)> {
        let mut state = self.state.lock();
        let mut done = Vec::new();
        state.keys.retain(|key, doubt| {
            doubt.waits_on.retain(|&w| w != id);
            if doubt.waits_on.is_empty() {
                done.push((key.clone(), doubt.extra.clone(), doubt.late.take()));
                false
            } else {
                true
            }
        });
        let freed: usize = done
            .iter()
            .flat_map(|(_, _, late)| late.iter().flatten())
            .map(Vec::len)
            .sum();
        state.kept = state.kept.saturating_sub(freed);
        done
    }

    /// A key's correction ended (answered, or given up): if it deleted the key, that is counted
    /// and told to the hook under `named`, the key as the caller names it (`None`: it cannot be
    /// named, and is not told).
    pub(crate) fn corrected(&self, deleted: bool, named: impl FnOnce() -> Option<String>) {
        if deleted {
            self.deleted.fetch_add(1, Ordering::Relaxed);
            let hook = self.hook.lock().clone();
            if let (Some(hook), Some(named)) = (hook, named()) {
                hook(&named);
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_key_leaves_once_every_probe_it_was_written_under_ended() {
        let ledger: Ledger<&str, u8> = Ledger::new();
        let first = ledger.begin([("k", &b"v1"[..]), ("j", b"w")], || 7);
        let second = ledger.begin([("k", &b"v2"[..]), ("k", b"v2")], || 9);
        assert_eq!(ledger.open(), 2);
        let done = ledger.settle(first);
        assert_eq!(done, vec![("j", 7, Some(vec![b"w".to_vec()]))]);
        let done = ledger.settle(second);
        // The extra of the write that brought the key in; each value once.
        assert_eq!(done, vec![("k", 7, Some(vec![b"v1".to_vec(), b"v2".to_vec()]))]);
        assert_eq!(ledger.open(), 2, "open until corrected");
        ledger.corrected(false, || None);
        ledger.corrected(false, || None);
        assert_eq!(ledger.open(), 0);
    }

    #[test]
    fn values_past_the_budget_leave_their_key_to_an_unconditional_correction() {
        let ledger: Ledger<&str, ()> = Ledger::new();
        let big = vec![0u8; KEEP_BYTES];
        let id = ledger.begin([("a", &big[..]), ("b", b"small")], || ());
        let mut done = ledger.settle(id);
        done.sort_by_key(|(key, _, _)| *key);
        assert_eq!(done, vec![("a", (), Some(vec![big.clone()])), ("b", (), None)]);
        // The budget is freed with the keys that left.
        let id = ledger.begin([("c", &b"small"[..])], || ());
        assert_eq!(ledger.settle(id), vec![("c", (), Some(vec![b"small".to_vec()]))]);
    }

    #[test]
    fn a_correction_that_deleted_is_counted_and_told_by_name() {
        let ledger: Ledger<&str, ()> = Ledger::new();
        let told = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let tell = Arc::clone(&told);
        ledger.on_deleted(Arc::new(move |key: &str| tell.lock().push(key.to_owned())));
        for _ in 0..3 {
            let id = ledger.begin([("k", &b"v"[..])], || ());
            assert_eq!(ledger.settle(id).len(), 1);
        }
        ledger.corrected(true, || Some("k".to_owned()));
        ledger.corrected(true, || None);
        ledger.corrected(false, || Some("never".to_owned()));
        assert_eq!((ledger.deleted(), ledger.open()), (2, 0));
        assert_eq!(*told.lock(), ["k"]);
    }
}
