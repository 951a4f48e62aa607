//! A pass-through `Storage` around a real level (a `FileStore` L1, a `RedisStore` L2) that can
//! hold one call of a chosen kind for a chosen key, before or after the real level ran it, until
//! the test releases it: it stops a manager between its L1 step and its L2 step, as the OS
//! scheduler may, so a race is a deterministic test.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::GateHandle;
use uno_cache::{
    BoxFuture, DistributedStorage, Entry, Freshness, LocalStorage, Result, Storage, StorageCounters,
    StorageSize,
};

/// Where a gated call is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// Before the real level sees the call (a write in progress, not yet applied).
    Before,
    /// After the real level answered (applied; the caller has not seen the answer yet).
    After,
}

struct Gate {
    /// "get" (also `get_checked`), "set", "set_many", "set_each", "delete", "delete_many",
    /// "get_many"; async calls match their blocking name.
    op: &'static str,
    key: String,
    point: Point,
    entered: Sender<()>,
    release: Receiver<()>,
}

pub struct GatedStore<L: ?Sized> {
    inner: Arc<L>,
    gates: Mutex<Vec<Gate>>,
    /// Every call as (op, keys), in arrival order.
    calls: Mutex<Vec<(String, Vec<String>)>>,
}

impl<L: Storage + ?Sized> GatedStore<L> {
    pub fn new(inner: Arc<L>) -> Arc<GatedStore<L>> {
        Arc::new(GatedStore {
            inner,
            gates: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
        })
    }

    /// Holds the next call of `op` whose keys include `key`, at `point`, until released.
    pub fn gate(&self, op: &'static str, key: &str, point: Point) -> GateHandle {
        let (entered_tx, entered_rx) = channel();
        let (release_tx, release_rx) = channel();
        self.gates.lock().unwrap().push(Gate {
            op,
            key: key.to_owned(),
            point,
            entered: entered_tx,
            release: release_rx,
        });
        GateHandle {
            entered: entered_rx,
            release: release_tx,
        }
    }

    /// How many calls of `op` (async included) for `key` the level received.
    pub fn count(&self, op: &str, key: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, keys)| o.trim_end_matches("_async") == op && keys.iter().any(|k| k == key))
            .count()
    }

    fn take_gate(&self, op: &str, keys: &[&str], point: Point) -> Option<Gate> {
        let base = op.trim_end_matches("_async");
        let mut gates = self.gates.lock().unwrap();
        let i = gates
            .iter()
            .position(|g| g.op == base && g.point == point && keys.contains(&g.key.as_str()))?;
        Some(gates.remove(i))
    }

    fn hold(&self, op: &str, keys: &[&str], point: Point) {
        if let Some(gate) = self.take_gate(op, keys, point) {
            let _ = gate.entered.send(());
            let _ = gate.release.recv_timeout(Duration::from_secs(20));
        }
    }

    /// Logs the call and runs the `Before` gate.
    fn enter(&self, op: &str, keys: &[&str]) {
        self.calls
            .lock()
            .unwrap()
            .push((op.to_owned(), keys.iter().map(|k| (*k).to_owned()).collect()));
        self.hold(op, keys, Point::Before);
    }

    fn around<T>(&self, op: &str, keys: &[&str], call: impl FnOnce() -> T) -> T {
        self.enter(op, keys);
        let out = call();
        self.hold(op, keys, Point::After);
        out
    }
}

fn keys_of<'a, V>(items: &'a [(&'a str, V)]) -> Vec<&'a str> {
    items.iter().map(|(k, _)| *k).collect()
}

impl<L: Storage + ?Sized> Storage for GatedStore<L> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.around("get", &[key], || self.inner.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.around("set", &[key], || self.inner.set(key, value, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.around("delete", &[key], || self.inner.delete(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.around("get_many", keys, || self.inner.get_many(keys))
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.around("set_many", &keys_of(items), || self.inner.set_many(items, ttl))
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
        self.around("set_each", &keys, || self.inner.set_each(items))
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.inner.check_value(key, value_len)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.around("delete_many", keys, || self.inner.delete_many(keys))
    }

    fn size(&self) -> Result<StorageSize> {
        self.inner.size()
    }

    fn clear(&self) -> Result<()> {
        self.inner.clear()
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn counters(&self) -> StorageCounters {
        self.inner.counters()
    }
}

impl<L: LocalStorage + ?Sized> LocalStorage for GatedStore<L> {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        self.around("get", &[key], || self.inner.get_checked(key))
    }

    fn mark_all_suspect(&self) -> Result<()> {
        self.inner.mark_all_suspect()
    }

    fn suspect_epoch(&self) -> uno_cache::SuspectEpoch {
        self.inner.suspect_epoch()
    }
    fn confirm(&self, key: &str, checked_at: uno_cache::SuspectEpoch) -> Result<uno_cache::Confirmation> {
        self.inner.confirm(key, checked_at)
    }

    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.get_stale(key)
    }

    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        self.inner.keys_with_prefix(prefix)
    }

    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        self.inner.holds_many(keys)
    }

    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
        self.around("fill_each", &keys, || self.inner.fill_each(items))
    }
}

impl<L: DistributedStorage + ?Sized> DistributedStorage for GatedStore<L> {
    // Async calls are held the same way (blocking the worker thread: run them on a
    // multi-threaded runtime).

    // Not held: passed on, as a wrapper does.
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.inner.delete_prefix(prefix)
    }

    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.inner.delete_prefix_async(prefix)
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move {
            self.enter("get_async", &[key]);
            let out = self.inner.get_async(key).await;
            self.hold("get_async", &[key], Point::After);
            out
        })
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.enter("set_async", &[key]);
            let out = self.inner.set_async(key, value, ttl).await;
            self.hold("set_async", &[key], Point::After);
            out
        })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            self.enter("delete_async", &[key]);
            let out = self.inner.delete_async(key).await;
            self.hold("delete_async", &[key], Point::After);
            out
        })
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        Box::pin(async move {
            self.enter("get_many_async", keys);
            let out = self.inner.get_many_async(keys).await;
            self.hold("get_many_async", keys, Point::After);
            out
        })
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let keys = keys_of(items);
            self.enter("set_many_async", &keys);
            let out = self.inner.set_many_async(items, ttl).await;
            self.hold("set_many_async", &keys, Point::After);
            out
        })
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
            self.enter("set_each_async", &keys);
            let out = self.inner.set_each_async(items).await;
            self.hold("set_each_async", &keys, Point::After);
            out
        })
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        self.inner.size_async()
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.enter("delete_many_async", keys);
            let out = self.inner.delete_many_async(keys).await;
            self.hold("delete_many_async", keys, Point::After);
            out
        })
    }
}
