//! How the store's calls meet a cluster's per-node breakers: which primary a key's call answers
//! to, batches split by primary or by slot, and the parts put back together.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::super::batches::{each_slot, Parts, SlotGroups};
use super::super::commands::Read;
use super::super::connection::Conn;
use super::super::errors::{is_slot_moving, LEVEL};
use super::super::slots::{by_slot, Answerable};
use super::{Groups, RedisStore};
use crate::distributed::nodes::{entries_or_partial, part_grace, settle, Node};
use crate::error::{Error, Result};
use crate::storage::{BoxFuture, Entry};

/// Per-node breakers on a cluster: which primary a key's call answers to, batches split by
/// primary. Without a slot map (standalone, or no breakers) every call goes as it is.
impl RedisStore {
    /// The breaker of the primary that owns `key`.
    pub(super) fn node_of(&self, key: &str) -> Option<Arc<Node>> {
        self.slots.as_ref()?.node_of(&self.full_key(key))
    }

    /// `key` as the server knows it: prefix included.
    pub(super) fn full_key(&self, key: &str) -> Vec<u8> {
        let prefix = self.commands.prefix();
        let mut full = Vec::with_capacity(prefix.len() + key.len());
        full.extend_from_slice(prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// After a failure that a breaker counts: the slot map may be stale (slots moved), so a
    /// re-read is started, or the one under way awaited (see `Slots::reread`). Nothing for
    /// other outcomes.
    pub(super) fn after_failure<T>(
        &self,
        result: &Result<T>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        match result {
            Err(e @ Error::Backend { .. }) if is_slot_moving(e) => return None,
            Err(Error::Timeout { .. } | Error::Backend { .. }) => {}
            _ => return None,
        }
        let slots = self.slots.as_ref()?;
        match self.conn.current().0 {
            Conn::Cluster(conn) => Some(slots.reread(conn, &self.rt, self.timeout)),
            Conn::Single(_) => None,
        }
    }

    /// Feeds the outcome of a call on `keys`, admitted by `node`'s breaker, to that breaker,
    /// unless the slot map (re-read after a failure) says `node` owns none of the keys any
    /// more: the crate followed the slots to their new owner, whose failure is not `node`'s.
    /// A single key's failure is then held against its new owner.
    pub(super) fn hold<'k, T>(
        &self,
        node: &Arc<Node>,
        probe: bool,
        keys: impl Iterator<Item = &'k str>,
        result: Result<T>,
    ) -> Result<T> {
        // A slot being moved: the node answered (as for a server out of memory, `Node::record`).
        if let Err(e) = &result {
            if is_slot_moving(e) {
                node.breaker().record_success();
                return result.map_err(|e| node.unavailable(e));
            }
        }
        let failed = matches!(result, Err(Error::Timeout { .. } | Error::Backend { .. }));
        let Some(slots) = self.slots.as_ref().filter(|_| failed) else {
            return node.record(probe, result);
        };
        // The failure path only: the keys' full names, to ask the current map.
        let keys: Vec<Vec<u8>> = keys.map(|key| self.full_key(key)).collect();
        match slots.answerable(node, probe, &keys) {
            Answerable::Admitter => node.record(probe, result),
            Answerable::Owner(owner) => owner.record(false, result),
            Answerable::Nobody => result.map_err(|e| node.not_sent(false, e)),
        }
    }

    /// A one-key call behind its primary's breaker. A failure is held against a breaker only
    /// once the slot map it has re-read (or the re-read under way; at most one a second,
    /// bounded by the level's timeout, one `CLUSTER SLOTS` asked of the seeds at once) says who
    /// owns the key, so that a slot just moved is judged by its new owner: see
    /// [`hold_after_reread`](Self::hold_after_reread).
    pub(super) fn keyed<T>(&self, key: &str, run: impl FnOnce() -> Result<T>) -> Result<T> {
        let Some(node) = self.node_of(key) else {
            return run();
        };
        let probe = node.admit()?;
        let result = run();
        match self.after_failure(&result) {
            Some(reread) => self.hold_after_reread(&node, probe, key, result, reread),
            None => self.hold(&node, probe, std::iter::once(key), result),
        }
    }

    /// A one-key call's failure: the caller has its error at once, naming `node` (the owner in
    /// the map it was sent by), so that the call ends by its own deadline; the failure is held
    /// against the key's owner in the map as re-read, on the I/O thread once `reread` ends.
    /// Waiting for the re-read in the call made a call that timed out take up to twice the
    /// level's timeout.
    pub(super) fn hold_after_reread<T>(
        &self,
        node: &Arc<Node>,
        probe: bool,
        key: &str,
        result: Result<T>,
        reread: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<T> {
        let (slots, cause) = match (self.slots.clone(), result) {
            (Some(slots), Err(cause)) => (slots, cause),
            (_, result) => return self.hold(node, probe, std::iter::once(key), result),
        };
        let (judged, full) = (Arc::clone(node), [self.full_key(key)]);
        // The re-read ends within the timeout; twice that is a bound only.
        self.rt
            .detach("slots", self.timeout.saturating_mul(2), async move {
                reread.await;
                match slots.answerable(&judged, probe, &full) {
                    Answerable::Admitter => judged.count_failure(probe),
                    Answerable::Owner(owner) => owner.count_failure(false),
                    Answerable::Nobody => {}
                }
                Ok(())
            });
        Err(node.unavailable(cause))
    }

    /// [`keyed`](Self::keyed) for the async API.
    pub(super) fn keyed_async<'a, T: Send + 'a>(
        &'a self,
        key: &'a str,
        call: BoxFuture<'a, Result<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        let Some(node) = self.node_of(key) else {
            return call;
        };
        Box::pin(async move {
            let probe = node.admit()?;
            let result = call.await;
            match self.after_failure(&result) {
                Some(reread) => self.hold_after_reread(&node, probe, key, result, reread),
                None => self.hold(&node, probe, std::iter::once(key), result),
            }
        })
    }

    /// The primaries a batch touches, if it touches more than one (one primary: the batch goes
    /// whole, behind [`keyed`](Self::keyed) of its first key).
    pub(super) fn groups<'k>(&self, keys: impl Iterator<Item = &'k str>) -> Option<Groups> {
        self.slots.as_ref()?;
        let mut groups: Groups = Vec::new();
        for (i, key) in keys.enumerate() {
            let node = self.node_of(key)?;
            match groups.iter_mut().find(|(n, _)| Arc::ptr_eq(n, &node)) {
                Some((_, members)) => members.push(i),
                None => groups.push((node, vec![i])),
            }
        }
        (groups.len() > 1).then_some(groups)
    }

    /// Runs one call per primary at once, each behind its breaker; `run` makes the call for the
    /// caller's indices it is given, `key` names the caller's key at an index. A part's failure
    /// starts a re-read of the slot map without waiting for it (the batch keeps its deadline),
    /// and is held against its primary if the map still says that primary owns one of its keys.
    pub(super) fn per_node<'a, T, F, K>(
        &'a self,
        op: &'static str,
        groups: Groups,
        key: K,
        run: F,
    ) -> BoxFuture<'a, Result<Parts<T>>>
    where
        T: Send + 'a,
        F: Fn(Vec<usize>) -> BoxFuture<'a, Result<T>> + Send + 'a,
        K: Fn(usize) -> Option<&'a str> + Copy + Send + 'a,
    {
        let parts = groups.into_iter().map(move |(node, members)| {
            let call = run(members.clone());
            async move {
                let result = match node.admit() {
                    Ok(probe) => {
                        let result = call.await;
                        // Started on the I/O thread; not awaited.
                        drop(self.after_failure(&result));
                        self.hold(&node, probe, members.iter().filter_map(|&i| key(i)), result)
                    }
                    Err(e) => Err(e),
                };
                (members, result)
            }
        });
        let all = join_all(parts.collect::<Vec<_>>());
        Box::pin(
            self.rt
                .bind(op, self.batch_deadline(), async move { Ok(all.await) }),
        )
    }

    /// On a cluster, a batch not split per primary by hash slot, if it spans several (see
    /// [`per_slot`](Self::per_slot)); one whose keys' primary is mapped goes behind its breaker.
    pub(super) fn slot_groups<'k>(&self, keys: impl Iterator<Item = &'k str> + Clone) -> Option<SlotGroups> {
        if !self.is_cluster() {
            return None;
        }
        if self.slots.is_some() && keys.clone().all(|key| self.node_of(key).is_some()) {
            return None;
        }
        by_slot(keys.map(|key| self.full_key(key)))
    }

    /// A split batch's deadline: the level's, and a grace for its parts' answers to settle.
    pub(super) fn batch_deadline(&self) -> Duration {
        self.timeout.saturating_add(part_grace(self.timeout))
    }

    /// [`each_slot`] under the batch's deadline.
    pub(super) fn per_slot<'a, T, F>(
        &'a self,
        op: &'static str,
        groups: SlotGroups,
        run: F,
    ) -> BoxFuture<'a, Result<Parts<T>>>
    where
        T: Send + 'a,
        F: Fn(Vec<usize>) -> BoxFuture<'a, Result<T>> + Send + 'a,
    {
        let all = each_slot(groups, run);
        Box::pin(
            self.rt
                .bind(op, self.batch_deadline(), async move { Ok(all.await) }),
        )
    }

    /// [`per_node`](Self::per_node) for the blocking API.
    pub(super) fn per_node_blocking<'a, T, F, K>(
        &'a self,
        op: &'static str,
        groups: Groups,
        key: K,
        run: F,
    ) -> Result<Parts<T>>
    where
        T: Send + 'a,
        F: Fn(Vec<usize>) -> BoxFuture<'a, Result<T>> + Send + 'a,
        K: Fn(usize) -> Option<&'a str> + Copy + Send + 'a,
    {
        let fut = self.per_node(op, groups, key, run);
        self.rt.wait(op, self.batch_deadline(), fut)
    }

    /// The entries of a `get_many`, in key order. Keys whose node was not reached, and keys
    /// whose value could not be read (no valid envelope), make an [`Error::PartialBatch`] that
    /// carries the others.
    pub(super) fn get_many_parts(
        &self,
        keys: &[&str],
        parts: Parts<Vec<Read>>,
    ) -> Result<Vec<Option<Entry>>> {
        let settled = settle(parts)?;
        let mut out = vec![None; keys.len()];
        let (mut failed, mut cause) = (settled.failed, settled.cause);
        for (members, reads) in settled.served {
            for (i, read) in members.into_iter().zip(reads) {
                match read {
                    Ok(entry) => {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = entry;
                        }
                    }
                    Err(e) => {
                        failed.push(i);
                        cause.get_or_insert(e);
                    }
                }
            }
        }
        entries_or_partial(LEVEL, "get_many", out, failed, cause)
    }

    /// [`get_many_parts`](Self::get_many_parts) of one call that carried every key.
    pub(super) fn get_many_whole(&self, keys: &[&str], reads: Vec<Read>) -> Result<Vec<Option<Entry>>> {
        self.get_many_parts(keys, vec![((0..keys.len()).collect(), Ok(reads))])
    }

    pub(super) fn get_many_part<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> impl Fn(Vec<usize>) -> BoxFuture<'a, Result<Vec<Read>>> + Send + 'a {
        move |members: Vec<usize>| -> BoxFuture<'a, Result<Vec<Read>>> {
            Box::pin(async move {
                let sub: Vec<&str> = members.iter().filter_map(|&i| keys.get(i).copied()).collect();
                self.call_async(self.commands.get_many(&sub)).await
            })
        }
    }

    pub(super) fn set_each_part<'a>(
        &'a self,
        op: &'static str,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> impl Fn(Vec<usize>) -> BoxFuture<'a, Result<()>> + Send + 'a {
        move |members: Vec<usize>| -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                let sub: Vec<(&str, &[u8], Option<Duration>)> =
                    members.iter().filter_map(|&i| items.get(i).copied()).collect();
                let mut command = self.commands.set_each(&sub, self.clock.now_ms());
                if let Ok(command) = &mut command {
                    command.op = op;
                }
                self.call_async(command).await
            })
        }
    }

    pub(super) fn delete_many_part<'a>(
        &'a self,
        keys: &'a [&'a str],
    ) -> impl Fn(Vec<usize>) -> BoxFuture<'a, Result<u64>> + Send + 'a {
        move |members: Vec<usize>| -> BoxFuture<'a, Result<u64>> {
            Box::pin(async move {
                let sub: Vec<&str> = members.iter().filter_map(|&i| keys.get(i).copied()).collect();
                self.call_async(self.commands.delete_many(&sub)).await
            })
        }
    }
}
