//! An L2 that could not be reached at start-up, connected in the background.
//!
//! With `fallback_on_error = true` a service must start (and serve from L1) while Redis or
//! Memcached is down. [`Deferred`] stands in for the level: until a connection succeeds every
//! call fails at once with [`Error::NotConnected`] (naming why the last attempt failed), which
//! the breaker in front of it counts, the manager hides and the stats do not time (no round
//! trip was made); a named thread (`uno-cache-l2-connect`) retries the
//! connection every `retry` until it succeeds or the manager is dropped, then every call goes to
//! the connected level. The thread belongs to the manager's `Workers`, which stop and join it
//! with the others at shutdown (waiting at most for one connection attempt, bounded by the
//! level's connect timeout).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::shutdown::Shutdown;
use crate::stats::LevelMetrics;
use crate::storage::{
    BoxFuture, DistributedStorage, Entry, LateWriteHook, Storage, StorageCounters, StorageSize,
};

/// Opens the level; called until it succeeds.
pub(crate) type Connect = Box<dyn Fn() -> Result<Arc<dyn DistributedStorage>> + Send + Sync>;

/// The level's [`check_value`](Storage::check_value) as far as its configuration tells it
/// without a connection (Memcached's item limit, Redis's 512 MiB): what a not yet connected
/// level refuses.
pub(crate) type ValueCheck = Box<dyn Fn(&str, usize) -> Result<()> + Send + Sync>;

struct Slot {
    level: RwLock<Option<Arc<dyn DistributedStorage>>>,
    /// The last failed attempt: calls that fail because it failed carry it as their cause, so
    /// they name the host and say whether the configuration is wrong (the counters' `last_error`
    /// and `config_errors` are all a caller such as the CLI sees).
    last_failure: Mutex<Arc<Error>>,
    /// The hook given before the level connected, handed to it when it does.
    late_write_hook: Mutex<Option<LateWriteHook>>,
}

/// A level that connects in the background; see the module docs.
pub(crate) struct Deferred {
    name: &'static str,
    slot: Arc<Slot>,
    check: ValueCheck,
}

/// The background half of a [`Deferred`]: its connect loop, which the manager's
/// [`Workers`](super::workers::Workers) run on a thread of their own (`uno-cache-l2-connect`)
/// and stop with the rest when their shutdown signal is fired.
pub(crate) struct Connector {
    name: &'static str,
    retry: Duration,
    connect: Connect,
    slot: Arc<Slot>,
}

impl Connector {
    /// Tries to connect every `retry` until it succeeds or `shutdown` is fired (it returns at
    /// once if it is waiting; after the attempt in progress, bounded by the level's connect
    /// timeout, otherwise).
    pub(crate) fn run(self, shutdown: &Shutdown) {
        connect_until_stopped(self.name, self.retry, &self.connect, &self.slot, shutdown);
    }

    /// Counts in `metrics` (and logs) the refusal the level started without a connection on
    /// (`start_degraded_on_config_error`), so that the stats show it from the start rather than
    /// from the first call that meets it; an outage is not counted there.
    pub(crate) fn report_refusal(&self, metrics: &LevelMetrics) {
        let failure = Arc::clone(&self.slot.last_failure.lock());
        if failure.is_misconfiguration() {
            metrics.config_error(self.name, &failure);
        }
    }
}

impl Deferred {
    /// The level, not connected yet, and the connect loop to run; `first_error` is the failure
    /// that made the level deferred; `check` refuses values until it is connected.
    pub(crate) fn new(
        name: &'static str,
        retry: Duration,
        connect: Connect,
        check: ValueCheck,
        first_error: Error,
    ) -> (Deferred, Connector) {
        // A refusal is logged where it is counted (`Connector::report_refusal`).
        if !first_error.is_misconfiguration() {
            tracing::error!(level = name, error = %first_error, retry_ms = retry.as_millis() as u64,
                "L2 unreachable at start-up; serving from L1 and connecting in the background");
        }
        let slot = Arc::new(Slot {
            level: RwLock::new(None),
            last_failure: Mutex::new(Arc::new(first_error)),
            late_write_hook: Mutex::new(None),
        });
        let connector = Connector {
            name,
            retry,
            connect,
            slot: Arc::clone(&slot),
        };
        (Deferred { name, slot, check }, connector)
    }

    fn level(&self, op: &'static str) -> Result<Arc<dyn DistributedStorage>> {
        if let Some(level) = self.slot.level.read().clone() {
            return Ok(level);
        }
        Err(Error::NotConnected {
            level: self.name,
            op,
            cause: Arc::clone(&self.slot.last_failure.lock()),
        })
    }

    /// Whether the connection has been made.
    #[cfg(test)]
    pub(crate) fn is_connected(&self) -> bool {
        self.slot.level.read().is_some()
    }
}

fn connect_until_stopped(
    name: &'static str,
    retry: Duration,
    connect: &Connect,
    slot: &Slot,
    shutdown: &Shutdown,
) {
    loop {
        // Sleep until the next attempt or until the manager shuts down.
        if shutdown.sleep(retry) {
            return;
        }
        match connect() {
            Ok(level) => {
                tracing::info!(level = name, "L2 connected");
                // Under the hook's lock, so that a hook given meanwhile reaches the level
                // either here or in `on_late_write_deleted`.
                let hook = slot.late_write_hook.lock();
                if let Some(hook) = hook.as_ref() {
                    level.on_late_write_deleted(Arc::clone(hook));
                }
                *slot.level.write() = Some(level);
                return;
            }
            Err(e) => {
                let mut last = slot.last_failure.lock();
                let now = misconfiguration(&e);
                if now.is_some() && misconfiguration(&last) != now {
                    // Logged once per distinct refusal: it repeats on every attempt.
                    tracing::error!(level = name, error = %e,
                        "L2 refuses this configuration; fix it (retrying cannot help); serving from L1 meanwhile");
                } else {
                    tracing::debug!(level = name, error = %e, "L2 still unreachable");
                }
                *last = Arc::new(e);
            }
        }
    }
}

/// The hosts and reason of an [`Error::Misconfigured`].
fn misconfiguration(error: &Error) -> Option<(&str, &str)> {
    match error {
        Error::Misconfigured { hosts, reason, .. } => Some((hosts, reason)),
        _ => None,
    }
}

impl Storage for Deferred {
    fn name(&self) -> &str {
        self.name
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.level("get")?.get(key)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.level("set")?.set(key, value, ttl)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.level("delete")?.delete(key)
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.level("get_many")?.get_many(keys)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.level("set_many")?.set_many(items, ttl)
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        // Not connected yet: what the configuration tells, so that a value the level will refuse
        // is not taken into L1 and the replay queue first. A limit only the server knows (a
        // Redis `proto-max-bulk-len` under 512 MiB) is checked once connected.
        match self.slot.level.read().clone() {
            Some(level) => level.check_value(key, value_len),
            None => (self.check)(key, value_len),
        }
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.level("set_each")?.set_each(items)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.level("delete_many")?.delete_many(keys)
    }

    fn size(&self) -> Result<StorageSize> {
        self.level("size")?.size()
    }

    fn clear(&self) -> Result<()> {
        self.level("clear")?.clear()
    }

    fn flush(&self) -> Result<()> {
        match self.slot.level.read().clone() {
            Some(level) => level.flush(),
            None => Ok(()),
        }
    }

    fn counters(&self) -> StorageCounters {
        self.slot
            .level
            .read()
            .as_ref()
            .map_or_else(StorageCounters::default, |l| l.counters())
    }
}

/// Each async call goes to the connected level's own async call.
impl DistributedStorage for Deferred {
    fn on_late_write_deleted(&self, hook: LateWriteHook) {
        let mut kept = self.slot.late_write_hook.lock();
        if let Some(level) = self.slot.level.read().as_ref() {
            level.on_late_write_deleted(Arc::clone(&hook));
        }
        *kept = Some(hook);
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        Box::pin(async move { self.level("size")?.size_async().await })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.level("delete_prefix")?.delete_prefix(prefix)
    }

    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move { self.level("delete_prefix")?.delete_prefix_async(prefix).await })
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move { self.level("get")?.get_async(key).await })
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.level("set")?.set_async(key, value, ttl).await })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { self.level("delete")?.delete_async(key).await })
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        Box::pin(async move { self.level("get_many")?.get_many_async(keys).await })
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.level("set_many")?.set_many_async(items, ttl).await })
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.level("set_each")?.set_each_async(items).await })
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { self.level("delete_many")?.delete_many_async(keys).await })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::local::memory::MemoryStore;
    use crate::storage::delegate::{Delegate, Hooked, Wrap, WrapDistributed};
    use crate::storage::InProcess;

    fn down() -> Error {
        Error::Backend {
            level: "test",
            op: "connect",
            reason: "down".into(),
        }
    }

    /// A deferred level with its connector running on a thread of its own (the manager's
    /// `Workers` run it in a real manager); the thread ends once connected.
    fn started(name: &'static str, retry: Duration, connect: Connect) -> Deferred {
        let (level, connector) = Deferred::new(name, retry, connect, Box::new(|_, _| Ok(())), down());
        std::thread::spawn(move || connector.run(&Shutdown::default()));
        level
    }

    #[test]
    fn calls_fail_fast_until_the_background_connect_succeeds() {
        let attempts = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&attempts);
        let connect: Connect = Box::new(move || {
            // Up on the third attempt.
            if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(down())
            } else {
                Ok(Arc::new(InProcess::new(MemoryStore::new(10)?)) as Arc<dyn DistributedStorage>)
            }
        });
        let level = started("test", Duration::from_millis(5), connect);
        assert!(matches!(level.get("k"), Err(Error::NotConnected { op: "get", .. })) || level.is_connected());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !level.is_connected() {
            assert!(Instant::now() < deadline, "never connected");
            std::thread::yield_now();
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 3);
        level.set("k", b"v", None).unwrap();
        assert_eq!(level.get("k").unwrap().unwrap().value, b"v");
    }

    /// A level not connected yet because its server refused the configuration fails each call
    /// with that refusal as its cause: a configuration error, shown (and logged) as the refusal
    /// itself whatever call met it, not once per kind of call.
    #[test]
    fn a_refusal_met_by_calls_of_every_kind_is_shown_as_one_configuration_error() {
        let refused = || Error::Misconfigured {
            level: "test",
            hosts: "h:1".into(),
            reason: "WRONGPASS".into(),
            call_only: false,
        };
        let connect: Connect = Box::new(move || Err(refused()));
        let (level, _connector) = Deferred::new(
            "test",
            Duration::from_secs(3600),
            connect,
            Box::new(|_, _| Ok(())),
            refused(),
        );
        let metrics = crate::stats::LevelMetrics::default();
        for e in [
            level.get("k").unwrap_err(),
            level.set("k", b"v", None).unwrap_err(),
        ] {
            assert!(
                matches!(e, Error::NotConnected { .. }) && e.is_misconfiguration(),
                "{e}"
            );
            metrics.failure("test", &e);
        }
        assert_eq!(metrics.config_errors.get(), 2);
        assert_eq!(metrics.last_config_error(), Some(refused().to_string()));
    }

    #[test]
    fn the_shutdown_signal_ends_a_waiting_connector_promptly() {
        let connect: Connect = Box::new(|| Err(down()));
        let (_level, connector) = Deferred::new(
            "test",
            Duration::from_secs(3600),
            connect,
            Box::new(|_, _| Ok(())),
            down(),
        );
        let shutdown = Shutdown::default();
        let theirs = shutdown.clone();
        let thread = std::thread::spawn(move || connector.run(&theirs));
        let start = Instant::now();
        shutdown.fire();
        thread.join().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    /// A connected level whose blocking calls are counted (and fail) and whose async calls run
    /// on an in-process store: it shows which of the two a caller reached.
    struct AsyncOnly {
        store: InProcess<MemoryStore>,
        blocking: AtomicU32,
    }

    impl AsyncOnly {
        fn refuse<T>(&self) -> Result<T> {
            self.blocking.fetch_add(1, Ordering::SeqCst);
            Err(down())
        }
    }

    impl Wrap for AsyncOnly {
        type Inner = InProcess<MemoryStore>;
        fn inner(&self) -> &InProcess<MemoryStore> {
            &self.store
        }
        fn name(&self) -> &str {
            "async-only"
        }
        fn get(&self, _: &str) -> Result<Option<Entry>> {
            self.refuse()
        }
        fn set(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> {
            self.refuse()
        }
        fn delete(&self, _: &str) -> Result<bool> {
            self.refuse()
        }
        fn get_many(&self, _: &[&str]) -> Result<Vec<Option<Entry>>> {
            self.refuse()
        }
        fn set_many(&self, _: &[(&str, &[u8])], _: Option<Duration>) -> Result<()> {
            self.refuse()
        }
        fn set_each(&self, _: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
            self.refuse()
        }
        fn delete_many(&self, _: &[&str]) -> Result<u64> {
            self.refuse()
        }
        fn check_value(&self, _: &str, _: usize) -> Result<()> {
            Ok(())
        }
        fn size(&self) -> Result<StorageSize> {
            self.refuse()
        }
        fn clear(&self) -> Result<()> {
            self.refuse()
        }
        fn flush(&self) -> Result<()> {
            self.refuse()
        }
        fn counters(&self) -> StorageCounters {
            StorageCounters::default()
        }
    }

    impl WrapDistributed for AsyncOnly {}

    /// The manager hands its hook over at start-up, while a deferred level is not connected:
    /// the level gets it when it connects, and a hook given after that reaches it at once.
    #[test]
    fn a_late_write_hook_given_before_the_connect_reaches_the_level_once_connected() {
        let level = Arc::new(Delegate(Hooked::new(InProcess::new(
            MemoryStore::new(100).unwrap(),
        ))));
        let connected = Arc::clone(&level);
        let go = Arc::new(AtomicU32::new(0));
        let open = Arc::clone(&go);
        let connect: Connect = Box::new(move || {
            if open.load(Ordering::SeqCst) == 0 {
                return Err(down());
            }
            Ok(Arc::clone(&connected) as Arc<dyn DistributedStorage>)
        });
        let deferred = started("test", Duration::from_millis(1), connect);
        let told = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let tell = Arc::clone(&told);
        deferred.on_late_write_deleted(Arc::new(move |key: &str| tell.lock().push(key.to_owned())));
        assert!(
            level.0.hook.lock().is_none(),
            "handed over before the level connected"
        );

        go.store(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        while level.0.hook.lock().is_none() {
            assert!(Instant::now() < deadline, "the level connected without the hook");
            std::thread::yield_now();
        }
        let hook = level.0.hook.lock().clone().unwrap();
        hook("k");
        assert_eq!(*told.lock(), ["k"]);

        deferred.on_late_write_deleted(Arc::new(|_: &str| {}));
        let again = level.0.hook.lock().clone().unwrap();
        again("other");
        assert_eq!(*told.lock(), ["k"], "a later hook did not replace the first");
    }

    #[test]
    fn every_async_call_goes_to_the_connected_levels_async_call_never_its_blocking_one() {
        let level = Arc::new(Delegate(AsyncOnly {
            store: InProcess::new(MemoryStore::new(100).unwrap()),
            blocking: AtomicU32::new(0),
        }));
        let connected = Arc::clone(&level);
        let connect: Connect = Box::new(move || Ok(Arc::clone(&connected) as Arc<dyn DistributedStorage>));
        let deferred = started("test", Duration::from_millis(1), connect);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !deferred.is_connected() {
            assert!(Instant::now() < deadline, "never connected");
            std::thread::yield_now();
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let ttl = Some(Duration::from_secs(60));
            deferred
                .set_each_async(&[("a", b"1", ttl), ("b", b"2", None)])
                .await
                .unwrap();
            deferred.set_many_async(&[("c", &b"3"[..])], None).await.unwrap();
            deferred.set_async("d", b"4", None).await.unwrap();
            assert_eq!(deferred.get_async("a").await.unwrap().unwrap().value, b"1");
            assert_eq!(
                deferred
                    .get_many_async(&["b", "c", "x"])
                    .await
                    .unwrap()
                    .iter()
                    .flatten()
                    .count(),
                2
            );
            assert!(deferred.delete_async("d").await.unwrap());
            assert_eq!(deferred.delete_many_async(&["b", "c"]).await.unwrap(), 2);
            assert_eq!(deferred.size_async().await.unwrap().items, 1);
        });
        assert_eq!(
            level.blocking.load(Ordering::SeqCst),
            0,
            "a blocking call was made"
        );
    }
}
