//! A scripted in-memory `Storage` for the manager tests: it logs every call, can fail on demand,
//! can hold a call at a gate until the test releases it, and keeps TTLs on a shared clock.
#![allow(dead_code)]

pub mod gated;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use uno_cache::{
    BoxFuture, Clock, DistributedStorage, Entry, Error, Freshness, LocalStorage, ManualClock, Result,
    Storage, StorageCounters, StorageSize,
};

/// One call a level received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// "get", "get_many", "set", "set_many", "set_each", "delete", "delete_many", with "_async" when the
    /// async method was called; "holds_many" as an L1.
    pub op: String,
    pub keys: Vec<String>,
    pub ttl: Option<Duration>,
}

/// Holds the next call of one op until released.
struct Gate {
    op: &'static str,
    entered: Sender<()>,
    release: Receiver<()>,
}

/// The test's side of a gate.
pub struct GateHandle {
    entered: Receiver<()>,
    release: Sender<()>,
}

impl GateHandle {
    /// Blocks until the held call has started.
    pub fn wait_entered(&self) {
        self.entered
            .recv_timeout(Duration::from_secs(10))
            .expect("the gated call never started");
    }

    /// Whether the held call has started, without waiting.
    pub fn entered(&self) -> bool {
        self.entered.try_recv().is_ok()
    }

    /// Lets the held call go on.
    pub fn release(&self) {
        self.release.send(()).expect("the gated call is gone");
    }
}

pub struct ScriptedStore {
    name: &'static str,
    clock: ManualClock,
    map: Mutex<HashMap<String, (Vec<u8>, u64)>>,
    calls: Mutex<Vec<Call>>,
    failing: AtomicBool,
    /// Values longer than this are refused as too large (bad input).
    max_value: std::sync::atomic::AtomicUsize,
    gates: Mutex<Vec<Gate>>,
}

pub const START_MS: u64 = 1_700_000_000_000;

impl ScriptedStore {
    pub fn new(name: &'static str, clock: &ManualClock) -> Arc<ScriptedStore> {
        Arc::new(ScriptedStore {
            name,
            clock: clock.clone(),
            map: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            failing: AtomicBool::new(false),
            max_value: std::sync::atomic::AtomicUsize::new(usize::MAX),
            gates: Mutex::new(Vec::new()),
        })
    }

    /// Refuses values longer than `max` bytes, as a store with a value limit does (Memcached).
    pub fn set_max_value(&self, max: usize) {
        self.max_value.store(max, Ordering::SeqCst);
    }

    /// Every call fails with an I/O error while `on`.
    pub fn set_failing(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }

    /// Holds the next call of `op` ("get", "delete", …; sync or async) until released.
    pub fn gate(&self, op: &'static str) -> GateHandle {
        let (entered_tx, entered_rx) = channel();
        let (release_tx, release_rx) = channel();
        self.gates.lock().unwrap().push(Gate {
            op,
            entered: entered_tx,
            release: release_rx,
        });
        GateHandle {
            entered: entered_rx,
            release: release_tx,
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn ops(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.op).collect()
    }

    pub fn clear_calls(&self) {
        self.calls.lock().unwrap().clear();
    }

    /// Puts a value directly (not logged), expiring at `expires_at_ms` (0 = never).
    pub fn put_raw(&self, key: &str, value: &[u8], expires_at_ms: u64) {
        self.map
            .lock()
            .unwrap()
            .insert(key.to_owned(), (value.to_vec(), expires_at_ms));
    }

    /// The stored value and absolute expiry (ms), if live (not logged).
    pub fn peek(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let now = self.clock.now_ms();
        self.map
            .lock()
            .unwrap()
            .get(key)
            .filter(|(_, at)| *at == 0 || *at > now)
            .cloned()
    }

    fn log(&self, op: &str, keys: &[&str], ttl: Option<Duration>) {
        self.calls.lock().unwrap().push(Call {
            op: op.to_owned(),
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            ttl,
        });
    }

    /// Logs a call and fails it if the level is failing.
    fn enter(&self, op: &str, keys: &[&str], ttl: Option<Duration>) -> Result<()> {
        self.log(op, keys, ttl);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::Io {
                op: "scripted failure",
                path: self.name.into(),
                source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "level is down"),
            });
        }
        Ok(())
    }

    /// Holds the call at a gate, if the test set one for this op. Reads pass it after reading
    /// (their answer is on its way back), writes before writing (they are in progress).
    fn hold(&self, op: &str) {
        let base = op.trim_end_matches("_async");
        let gate = {
            let mut gates = self.gates.lock().unwrap();
            gates.iter().position(|g| g.op == base).map(|i| gates.remove(i))
        };
        if let Some(gate) = gate {
            let _ = gate.entered.send(());
            let _ = gate.release.recv_timeout(Duration::from_secs(10));
        }
    }

    fn read(&self, key: &str) -> Option<Entry> {
        self.peek(key).map(|(value, at)| Entry {
            value,
            expires_at: (at != 0).then(|| UNIX_EPOCH + Duration::from_millis(at)),
        })
    }

    fn write(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        if ttl.is_some_and(|t| t.is_zero()) {
            return Err(Error::ZeroTtl { key: key.into() });
        }
        let max = self.max_value.load(Ordering::SeqCst);
        if value.len() > max {
            return Err(Error::ValueTooLarge {
                key: key.into(),
                len: value.len(),
                max,
                store: self.name.into(),
            });
        }
        let at = ttl.map_or(0, |t| self.clock.now_ms() + t.as_millis() as u64);
        self.put_raw(key, value, at);
        Ok(())
    }

    /// Live items and their key + value bytes.
    fn count(&self) -> StorageSize {
        let now = self.clock.now_ms();
        let map = self.map.lock().unwrap();
        let live = map.iter().filter(|(_, (_, at))| *at == 0 || *at > now);
        let (items, bytes) = live.fold((0, 0), |(n, b), (k, (v, _))| {
            (n + 1, b + (k.len() + v.len()) as u64)
        });
        StorageSize { items, bytes }
    }

    /// Removes every key under `prefix`; how many were live.
    fn remove_prefix(&self, prefix: &str) -> u64 {
        let now = self.clock.now_ms();
        let mut map = self.map.lock().unwrap();
        let mut live = 0;
        map.retain(|k, (_, at)| {
            let gone = k.starts_with(prefix);
            live += u64::from(gone && (*at == 0 || *at > now));
            !gone
        });
        live
    }

    fn remove(&self, key: &str) -> bool {
        let now = self.clock.now_ms();
        self.map
            .lock()
            .unwrap()
            .remove(key)
            .is_some_and(|(_, at)| at == 0 || at > now)
    }
}

impl Storage for ScriptedStore {
    fn name(&self) -> &str {
        self.name
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.enter("get", &[key], None)?;
        let found = self.read(key);
        self.hold("get");
        Ok(found)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.enter("set", &[key], ttl)?;
        self.hold("set");
        self.write(key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.enter("delete", &[key], None)?;
        self.hold("delete");
        Ok(self.remove(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.enter("get_many", keys, None)?;
        let found = keys.iter().map(|k| self.read(k)).collect();
        self.hold("get_many");
        Ok(found)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
        self.enter("set_many", &keys, ttl)?;
        self.hold("set_many");
        for (k, v) in items {
            self.write(k, v, ttl)?;
        }
        Ok(())
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
        self.enter("set_each", &keys, None)?;
        self.hold("set_each");
        for (k, v, ttl) in items {
            self.write(k, v, *ttl)?;
        }
        Ok(())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.enter("delete_many", keys, None)?;
        self.hold("delete_many");
        Ok(keys.iter().filter(|k| self.remove(k)).count() as u64)
    }

    fn size(&self) -> Result<StorageSize> {
        self.log("size", &[], None);
        Ok(self.count())
    }

    fn clear(&self) -> Result<()> {
        self.map.lock().unwrap().clear();
        Ok(())
    }

    fn check_value(&self, _key: &str, _value_len: usize) -> Result<()> {
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn counters(&self) -> StorageCounters {
        StorageCounters::default()
    }
}

/// As an L1 (a broken one, in the rules tests): a level with no suspect marks, no stale
/// copies and no key listing.
impl LocalStorage for ScriptedStore {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        Ok(self.get(key)?.map(|entry| (entry, Freshness::Trusted)))
    }

    fn get_stale(&self, _key: &str) -> Result<Option<Entry>> {
        Ok(None)
    }

    fn mark_all_suspect(&self) -> Result<()> {
        self.clear()
    }

    fn suspect_epoch(&self) -> uno_cache::SuspectEpoch {
        uno_cache::SuspectEpoch::new(0)
    }

    fn confirm(&self, _key: &str, _checked_at: uno_cache::SuspectEpoch) -> Result<uno_cache::Confirmation> {
        Ok(uno_cache::Confirmation::Confirmed)
    }

    fn keys_with_prefix(&self, _prefix: &str) -> Result<Option<Vec<String>>> {
        Ok(None)
    }

    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        self.enter("holds_many", keys, None)?;
        Ok(keys.iter().map(|k| self.peek(k).is_some()).collect())
    }

    /// No admission policy: every fill is written.
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        let keys: Vec<&str> = items.iter().map(|(k, _, _)| *k).collect();
        self.enter("fill_each", &keys, None)?;
        self.hold("fill_each");
        for (k, v, ttl) in items {
            self.write(k, v, *ttl)?;
        }
        Ok(items.len())
    }
}

impl DistributedStorage for ScriptedStore {
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.enter("delete_prefix", &[prefix], None)?;
        self.hold("delete_prefix");
        Ok(Some(self.remove_prefix(prefix)))
    }

    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.enter("delete_prefix_async", &[prefix], None)?;
            self.hold("delete_prefix_async");
            Ok(Some(self.remove_prefix(prefix)))
        })
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.log("size_async", &[], None);
            Ok(self.count())
        })
    }

    /// The blocking call, logged as `set_each`: write-behind's batches read the same through
    /// either API.
    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.set_each(items)))
    }

    // Async methods: logged under their own names and genuinely asynchronous (they yield once
    // before answering), so a test can tell which API the manager used.

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.enter("get_async", &[key], None)?;
            let found = self.read(key);
            self.hold("get_async");
            Ok(found)
        })
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.enter("set_async", &[key], ttl)?;
            self.hold("set_async");
            self.write(key, value, ttl)
        })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.enter("delete_async", &[key], None)?;
            self.hold("delete_async");
            Ok(self.remove(key))
        })
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.enter("get_many_async", keys, None)?;
            let found = keys.iter().map(|k| self.read(k)).collect();
            self.hold("get_many_async");
            Ok(found)
        })
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            let keys: Vec<&str> = items.iter().map(|(k, _)| *k).collect();
            self.enter("set_many_async", &keys, ttl)?;
            self.hold("set_many_async");
            for (k, v) in items {
                self.write(k, v, ttl)?;
            }
            Ok(())
        })
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            tokio::task::yield_now().await;
            self.enter("delete_many_async", keys, None)?;
            self.hold("delete_many_async");
            Ok(keys.iter().filter(|k| self.remove(k)).count() as u64)
        })
    }
}

/// Absolute expiry of an entry in ms.
/// A manager over a memory L1 (1000 items) and a scripted L2, both on a manual clock at
/// [`START_MS`], built from `config`.
pub struct Scripted {
    pub cache: uno_cache::CacheManager,
    pub l1: Arc<uno_cache::MemoryStore>,
    pub l2: Arc<ScriptedStore>,
    pub clock: ManualClock,
}

pub fn scripted(config: uno_cache::CacheConfig) -> Scripted {
    let clock = ManualClock::new(START_MS);
    let l1 = Arc::new(uno_cache::MemoryStore::with_clock(1000, Arc::new(clock.clone())).unwrap());
    let l2 = ScriptedStore::new("scripted", &clock);
    let cache = uno_cache::CacheManager::builder()
        .config(config)
        .local(l1.clone())
        .distributed(l2.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Scripted { cache, l1, l2, clock }
}

pub fn expiry_ms(entry: &Entry) -> Option<u64> {
    entry
        .expires_at
        .map(|t| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_millis() as u64)
}
