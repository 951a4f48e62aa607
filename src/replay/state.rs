//! The pending ops in memory: one slot per key, indexed by replay group and sequence number.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use dashmap::DashSet;

use super::format::record_len;
use super::{ReplayAction, ReplayOp};

/// The newest op of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) seq: u64,
    pub(crate) action: ReplayAction,
    /// Length of the record in the log that holds this op (a set turned into a delete in memory
    /// keeps the length of its set record until the log is rewritten).
    pub(crate) disk_len: u64,
}

impl Slot {
    pub(crate) fn new(key: &str, seq: u64, action: ReplayAction) -> Slot {
        let disk_len = encoded_len(key, &action);
        Slot {
            seq,
            action,
            disk_len,
        }
    }
}

/// Length of the record that stores `action` for `key`.
pub(crate) fn encoded_len(key: &str, action: &ReplayAction) -> u64 {
    let value_len = match action {
        ReplayAction::Set { value, .. } => value.len(),
        ReplayAction::Delete => 0,
    };
    record_len(key.len(), value_len) as u64
}

/// The pending ops, coalesced per key.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    slots: HashMap<Arc<str>, Slot>,
    /// Replay group 1, by seq. The key is part of the entry, not its value: a log's CRCs do not
    /// make its seqs unique (a crafted or carried-over record can repeat one), and two keys on
    /// one seq kept only one in the index, so the other's op was never replayed, nor acked.
    deletes: BTreeSet<(u64, Arc<str>)>,
    /// Replay group 2, by seq, likewise.
    sets: BTreeSet<(u64, Arc<str>)>,
    /// Sets with an expiry, by (expires_at_ms, seq), likewise.
    expiring: BTreeSet<(u64, u64, Arc<str>)>,
    /// Sum of the slots' `disk_len`.
    bytes: u64,
    /// The keys of `slots`, readable without the queue's lock (which is held across fsyncs), so a
    /// cache read asking "is this key pending?" never waits for the disk; and the `held` keys.
    keys: Arc<DashSet<Arc<str>>>,
    /// Keys whose op L2 confirmed while the log could not take the ack: out of `slots`, so the
    /// replay goes on past them, but still in `keys` until the log is rewritten without their
    /// records (see `ReplayQueue::ack_many`). With the seq of the op held.
    held: HashMap<Arc<str>, u64>,
}

impl Pending {
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn delete_count(&self) -> usize {
        self.deletes.len()
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Slot> {
        self.slots.get(key)
    }

    /// The set of pending keys, kept in step with every insert and remove.
    pub(crate) fn key_set(&self) -> Arc<DashSet<Arc<str>>> {
        Arc::clone(&self.keys)
    }

    /// Makes `slot` the op of `key`, replacing any older one.
    pub(crate) fn insert(&mut self, key: &str, slot: Slot) {
        let key: Arc<str> = Arc::from(key);
        // Into `keys` before the old op leaves: a lock-free `is_pending` of a key whose op is
        // being replaced must never read false in between.
        self.keys.insert(Arc::clone(&key));
        self.held.remove(&key);
        if let Some(old) = self.slots.remove(&key) {
            self.unindex(&key, &old);
            self.bytes -= old.disk_len;
        }
        self.index(&key, &slot);
        self.bytes += slot.disk_len;
        self.slots.insert(key, slot);
    }

    /// Removes the op of `key`, whatever its seq.
    pub(crate) fn remove(&mut self, key: &str) -> Option<Slot> {
        let (key, slot) = self.slots.remove_entry(key)?;
        self.keys.remove(&key);
        self.unindex(&key, &slot);
        self.bytes -= slot.disk_len;
        Some(slot)
    }

    /// Removes the op of `key` only if it is the one numbered `seq` (an ack of a superseded op
    /// must leave the newer op alone).
    pub(crate) fn remove_if_seq(&mut self, key: &str, seq: u64) -> bool {
        if self.slots.get(key).is_some_and(|s| s.seq == seq) {
            self.remove(key);
            true
        } else {
            false
        }
    }

    /// Takes the op of `key` numbered `seq` out of the pending ops but leaves the key in the key
    /// set, until [`release_held`](Self::release_held): its ack is in memory only, and the log
    /// still holds the op, which a reopen replays again. Whether it was the pending op.
    pub(crate) fn hold(&mut self, key: &str, seq: u64) -> bool {
        if self.slots.get(key).is_none_or(|s| s.seq != seq) {
            return false;
        }
        let Some((key, slot)) = self.slots.remove_entry(key) else {
            return false;
        };
        self.unindex(&key, &slot);
        self.bytes -= slot.disk_len;
        self.held.insert(key, seq);
        true
    }

    /// A push of `key` refused by the latched log, while its op is held: L2 has that op, older
    /// than the refused one, and no replay would take it out of L2 any more. So a delete of the
    /// key becomes pending again, under the held op's seq, in memory (as `downgrade_key` does
    /// to a pending set). Whether it did.
    pub(crate) fn requeue_held_as_delete(&mut self, key: &str) -> bool {
        if self.slots.contains_key(key) {
            return false;
        }
        let Some((key, seq)) = self.held.remove_entry(key) else {
            return false;
        };
        let slot = Slot::new(&key, seq, ReplayAction::Delete);
        self.insert(&key, slot);
        true
    }

    /// Ops acked in memory only (see [`hold`](Self::hold)).
    pub(crate) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// After the log was written anew from `slots`: the held ops are in it no more, so their
    /// keys leave the key set.
    pub(crate) fn release_held(&mut self) {
        for (key, _) in self.held.drain() {
            if !self.slots.contains_key(&key) {
                self.keys.remove(&key);
            }
        }
    }

    fn index(&mut self, key: &Arc<str>, slot: &Slot) {
        match &slot.action {
            ReplayAction::Delete => {
                self.deletes.insert((slot.seq, Arc::clone(key)));
            }
            ReplayAction::Set { expires_at_ms, .. } => {
                self.sets.insert((slot.seq, Arc::clone(key)));
                if *expires_at_ms != 0 {
                    self.expiring.insert((*expires_at_ms, slot.seq, Arc::clone(key)));
                }
            }
        }
    }

    fn unindex(&mut self, key: &Arc<str>, slot: &Slot) {
        match &slot.action {
            ReplayAction::Delete => {
                self.deletes.remove(&(slot.seq, Arc::clone(key)));
            }
            ReplayAction::Set { expires_at_ms, .. } => {
                self.sets.remove(&(slot.seq, Arc::clone(key)));
                self.expiring.remove(&(*expires_at_ms, slot.seq, Arc::clone(key)));
            }
        }
    }

    /// Turns `key`'s pending set into a delete of the key (same seq, so an ack still matches).
    fn downgrade(&mut self, key: &Arc<str>) -> bool {
        let Some(slot) = self.slots.get_mut(key) else {
            return false;
        };
        let ReplayAction::Set { expires_at_ms, .. } =
            std::mem::replace(&mut slot.action, ReplayAction::Delete)
        else {
            return false;
        };
        let seq = slot.seq;
        self.expiring.remove(&(expires_at_ms, seq, Arc::clone(key)));
        self.sets.remove(&(seq, Arc::clone(key)));
        self.deletes.insert((seq, Arc::clone(key)));
        true
    }

    /// Turns every set that has expired by `now_ms` into a delete. Returns how many.
    pub(crate) fn expire_due(&mut self, now_ms: u64) -> usize {
        let due: Vec<Arc<str>> = self
            .expiring
            .iter()
            .take_while(|(at, _, _)| *at <= now_ms)
            .map(|(_, _, key)| Arc::clone(key))
            .collect();
        due.iter().filter(|key| self.downgrade(key)).count()
    }

    /// Makes `key`'s pending op, if it is a set, a delete of the key (same seq). Whether it was.
    pub(crate) fn downgrade_key(&mut self, key: &str) -> bool {
        let Some(key) = self.slots.get_key_value(key).map(|(k, _)| Arc::clone(k)) else {
            return false;
        };
        self.downgrade(&key)
    }

    /// The pending sets, oldest first, with their keys.
    pub(crate) fn sets_oldest_first(&self) -> impl Iterator<Item = (&Arc<str>, &Slot)> {
        self.sets
            .iter()
            .filter_map(|(_, key)| self.slots.get(key).map(|slot| (key, slot)))
    }

    /// Turns every pending set into a delete. Returns how many.
    pub(crate) fn downgrade_all_sets(&mut self) -> usize {
        let all: Vec<Arc<str>> = self.sets.iter().map(|(_, key)| Arc::clone(key)).collect();
        all.iter().filter(|key| self.downgrade(key)).count()
    }

    /// Up to `max` ops in replay order: deletes by seq, then sets by seq.
    pub(crate) fn ops(&self, max: usize) -> Vec<ReplayOp> {
        self.deletes
            .iter()
            .chain(self.sets.iter())
            .take(max)
            .filter_map(|(_, key)| {
                self.slots.get(key).map(|slot| ReplayOp {
                    seq: slot.seq,
                    key: key.to_string(),
                    action: slot.action.clone(),
                })
            })
            .collect()
    }

    /// The op of `key` as `ReplayQueue::pending` returns it at `now_ms`: a set expired by then
    /// is a delete (not turned into one here: a look must not change what is pending).
    pub(crate) fn op(&self, key: &str, now_ms: u64) -> Option<ReplayOp> {
        let slot = self.slots.get(key)?;
        let action = match &slot.action {
            ReplayAction::Set { expires_at_ms, .. } if *expires_at_ms != 0 && *expires_at_ms <= now_ms => {
                ReplayAction::Delete
            }
            action => action.clone(),
        };
        Some(ReplayOp {
            seq: slot.seq,
            key: key.to_owned(),
            action,
        })
    }

    /// Every op in seq order (the order a rewritten log stores them in).
    pub(crate) fn by_seq(&self) -> Vec<(&str, &Slot)> {
        let mut all: Vec<(&str, &Slot)> = self.slots.iter().map(|(k, s)| (&**k, s)).collect();
        all.sort_unstable_by_key(|(_, s)| s.seq);
        all
    }

    /// After a rewrite: every slot's record now has the length of its current action.
    pub(crate) fn recompute_disk_lens(&mut self) {
        let mut bytes = 0;
        for (key, slot) in &mut self.slots {
            slot.disk_len = encoded_len(key, &slot.action);
            bytes += slot.disk_len;
        }
        self.bytes = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(value: &[u8], expires_at_ms: u64) -> ReplayAction {
        ReplayAction::Set {
            value: value.to_vec(),
            expires_at_ms,
        }
    }

    #[test]
    fn replacing_an_op_keeps_one_slot_per_key_and_exact_byte_accounting() {
        let mut p = Pending::default();
        p.insert("a", Slot::new("a", 1, set(b"12345", 0)));
        p.insert("a", Slot::new("a", 2, ReplayAction::Delete));
        p.insert("b", Slot::new("b", 3, set(b"x", 0)));
        assert_eq!(p.len(), 2);
        assert_eq!(p.bytes(), (record_len(1, 0) + record_len(1, 1)) as u64);
        assert!(!p.remove_if_seq("a", 1));
        assert!(p.remove_if_seq("a", 2));
        assert!(p.remove_if_seq("b", 3));
        assert_eq!((p.len(), p.bytes()), (0, 0));
        assert!(p.deletes.is_empty() && p.sets.is_empty() && p.expiring.is_empty());
    }

    #[test]
    fn a_key_whose_op_is_replaced_never_reads_as_not_pending() {
        let mut p = Pending::default();
        p.insert("k", Slot::new("k", 1, ReplayAction::Delete));
        let keys = p.key_set();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut misses = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    misses += u64::from(!keys.contains("k"));
                }
                misses
            });
            for seq in 2..200_000 {
                p.insert("k", Slot::new("k", seq, ReplayAction::Delete));
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            assert_eq!(
                reader.join().unwrap(),
                0,
                "is_pending read false while the op was replaced"
            );
        });
    }

    #[test]
    fn a_keys_op_reads_as_replayed_an_expired_set_as_a_delete_and_stays_as_queued() {
        let mut p = Pending::default();
        p.insert("k", Slot::new("k", 7, set(b"v", 500)));
        assert_eq!(
            p.op("k", 499).map(|o| (o.seq, o.action)),
            Some((7, set(b"v", 500)))
        );
        assert_eq!(
            p.op("k", 500).map(|o| (o.seq, o.action)),
            Some((7, ReplayAction::Delete))
        );
        assert_eq!(p.get("k").map(|s| &s.action), Some(&set(b"v", 500)));
        assert_eq!(p.op("other", 0), None);
    }

    #[test]
    fn expired_sets_move_to_the_delete_group_keeping_their_seq() {
        let mut p = Pending::default();
        p.insert("late", Slot::new("late", 1, set(b"v", 500)));
        p.insert("del", Slot::new("del", 2, ReplayAction::Delete));
        p.insert("forever", Slot::new("forever", 3, set(b"v", 0)));
        assert_eq!(p.expire_due(499), 0);
        assert_eq!(p.expire_due(500), 1);
        let ops = p.ops(usize::MAX);
        let order: Vec<(&str, u64, bool)> = ops
            .iter()
            .map(|o| (o.key.as_str(), o.seq, o.action == ReplayAction::Delete))
            .collect();
        assert_eq!(
            order,
            vec![("late", 1, true), ("del", 2, true), ("forever", 3, false)]
        );
        assert!(p.expiring.is_empty());
    }

    #[test]
    fn two_keys_on_one_seq_are_both_listed_expired_and_acked_apart() {
        // A log's CRCs do not make its seqs unique: a crafted or carried-over record can give a
        // second key a seq already used. Each key's op must still be replayed, and acked alone.
        let mut p = Pending::default();
        p.insert("a", Slot::new("a", 3, ReplayAction::Delete));
        p.insert("b", Slot::new("b", 3, ReplayAction::Delete));
        p.insert("c", Slot::new("c", 4, set(b"v", 500)));
        p.insert("d", Slot::new("d", 4, set(b"w", 500)));
        let listed = |p: &Pending| -> Vec<(String, u64, bool)> {
            p.ops(usize::MAX)
                .into_iter()
                .map(|o| (o.key, o.seq, o.action == ReplayAction::Delete))
                .collect()
        };
        assert_eq!(
            listed(&p),
            [
                ("a".into(), 3, true),
                ("b".into(), 3, true),
                ("c".into(), 4, false),
                ("d".into(), 4, false)
            ]
        );
        assert_eq!(p.expire_due(500), 2);
        assert_eq!(p.delete_count(), 4);
        assert!(p.remove_if_seq("a", 3));
        assert!(p.remove_if_seq("c", 4));
        assert_eq!(listed(&p), [("b".into(), 3, true), ("d".into(), 4, true)]);
        assert_eq!(p.downgrade_all_sets(), 0);
        assert!(p.remove_if_seq("b", 3) && p.remove_if_seq("d", 4));
        assert!(p.deletes.is_empty() && p.sets.is_empty() && p.expiring.is_empty());
    }
}
