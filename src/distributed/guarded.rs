//! [`Guarded`]: any [`Storage`] behind a [`CircuitBreaker`]; a [`DistributedStorage`] stays
//! one, each async call forwarded to the level's own async call.
//!
//! The levels in this module already keep their own deadline on every call; `Guarded` adds the
//! breaker: while it is open, calls fail at once with [`Error::CircuitOpen`] without touching
//! the network. Timeouts, backend failures (a panic of the level's is one: [`Error::Backend`]
//! naming the call and key) and misconfigurations the server reports
//! ([`Error::Misconfigured`]) count as failures; caller errors (bad key, zero
//! TTL, value too large, configuration refusals) and a server's refusal of one command or key
//! (`call_only`: a command renamed away, an ACL user refused it) count as neither (a half-open
//! probe that ends in one frees the probe slot, so the next call probes), and any other answer from the
//! server (including a value without a valid envelope) counts as a success. `check_value` and
//! `flush` make no call to the server (a flush has nothing to make durable on an L2): the breaker
//! neither gates nor counts them.

use std::sync::Arc;
use std::time::Duration;

use crate::distributed::breaker::{BreakerState, BreakerStats, CircuitBreaker};
use crate::error::{Error, Result};
use crate::level_panics::{caught, caught_future, About};
use crate::storage::{BoxFuture, DistributedStorage, Entry, Storage, StorageCounters, StorageSize};

/// A level behind a circuit breaker. Share the breaker (`Arc`) to read its state for stats.
///
/// A manager puts its L2 behind one by itself; wrap a level yourself (a `RedisStore`, a
/// `MemcachedStore`, any [`Storage`]) to use it on its own with the same protection. While the
/// breaker is open, calls fail at once with [`Error::CircuitOpen`] instead of waiting on a dead
/// server:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use uno_cache::distributed::{CircuitBreaker, Guarded};
/// use uno_cache::{Error, MemoryStore, Storage};
///
/// let breaker = Arc::new(CircuitBreaker::new(5, Duration::from_secs(2)));
/// let l2 = Guarded::new("mine", MemoryStore::new(1000)?, Arc::clone(&breaker));
/// l2.set("k", b"v", None)?;
/// breaker.trip(); // as five failures in a row would
/// assert!(matches!(l2.get("k"), Err(Error::CircuitOpen { level: "mine" })));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug)]
pub struct Guarded<L> {
    level: &'static str,
    inner: L,
    breaker: Arc<CircuitBreaker>,
}

impl<L: Storage> Guarded<L> {
    /// Wraps `inner`; `level` names it in [`Error::CircuitOpen`].
    pub fn new(level: &'static str, inner: L, breaker: Arc<CircuitBreaker>) -> Self {
        Guarded {
            level,
            inner,
            breaker,
        }
    }

    /// The wrapped level.
    pub fn inner(&self) -> &L {
        &self.inner
    }

    /// The breaker.
    pub fn breaker(&self) -> &Arc<CircuitBreaker> {
        &self.breaker
    }

    /// The breaker's state and trip count.
    pub fn breaker_stats(&self) -> BreakerStats {
        self.breaker.stats()
    }

    /// Asks the breaker; `Ok(true)` when this call is the half-open probe.
    fn admit(&self) -> Result<bool> {
        self.breaker
            .admit()
            .ok_or(Error::CircuitOpen { level: self.level })
    }

    /// A call of the inner level whose panic is its failure (see `level_panics`), which the
    /// breaker counts as any: unwound past `record`, it was counted nowhere, and a panicking
    /// level never opened the breaker.
    fn caught<T>(&self, op: &'static str, about: About<'_>, call: impl FnOnce() -> Result<T>) -> Result<T> {
        caught(self.level, self.inner.name(), op, about, call)
    }

    /// [`caught`](Self::caught) for an async call.
    fn caught_future<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        about: About<'a>,
        make: impl FnOnce() -> BoxFuture<'a, Result<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        caught_future(self.level, self.inner.name(), op, about, make)
    }

    /// A call the breaker gates and counts: asks it (failing at once with
    /// [`Error::CircuitOpen`] while it is open), makes the call with its panic caught, and
    /// feeds the outcome back. Every counted call of this wrapper but the prefix deletion
    /// (see [`record_listed`](Self::record_listed)) goes this way.
    fn guarded<T>(&self, op: &'static str, about: About<'_>, call: impl FnOnce() -> Result<T>) -> Result<T> {
        let probe = self.admit()?;
        self.record(probe, self.caught(op, about, call))
    }

    /// [`guarded`](Self::guarded) for an async call: the breaker is asked when the future is
    /// first polled, not when it is made.
    fn guarded_async<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        about: About<'a>,
        make: impl FnOnce() -> BoxFuture<'a, Result<T>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T>> {
        Box::pin(async move {
            let probe = self.admit()?;
            self.record(probe, self.caught_future(op, about, make).await)
        })
    }

    fn record<T>(&self, probe: bool, result: Result<T>) -> Result<T> {
        record(&self.breaker, probe, &result);
        result
    }

    /// [`record`](Self::record) for a prefix deletion: an inner level that cannot list its keys
    /// (`Ok(None)`) answered without a server, so it says nothing of the level and frees the
    /// probe slot, as a caller error does.
    fn record_listed(&self, probe: bool, result: Result<Option<u64>>) -> Result<Option<u64>> {
        if matches!(result, Ok(None)) {
            if probe {
                self.breaker.release_probe();
            }
            return result;
        }
        self.record(probe, result)
    }

    /// For a call made only to report on the level (its size): allowed while the breaker is
    /// closed, without taking a probe slot or feeding the breaker.
    fn admit_diagnostic(&self) -> Result<()> {
        if self.breaker.state() == BreakerState::Closed {
            Ok(())
        } else {
            Err(Error::CircuitOpen { level: self.level })
        }
    }
}

/// Feeds a call's outcome to the breaker. A probe that ends in a caller error says nothing about
/// the level: it frees the probe slot so that the next call probes.
///
/// A multi-node level keeps a breaker per node ([`NodeBreakers`](super::NodeBreakers)): the failure
/// of one node ([`Error::NodeUnavailable`]) says nothing about the others, so it counts as neither
/// here; a batch that some nodes served ([`Error::PartialBatch`]) shows the level answers.
fn record<T>(breaker: &CircuitBreaker, probe: bool, result: &Result<T>) {
    match result {
        // A server that refused an item or a write for want of memory answered, and so did
        // every node of a walk that a resharding made incomplete.
        Ok(_)
        | Err(
            Error::InvalidEnvelope { .. }
            | Error::ItemRefused { .. }
            | Error::ServerFull { .. }
            | Error::PartialBatch(_)
            | Error::WalkIncomplete { .. },
        ) => breaker.record_success(),
        // A refusal of one command or key (UNLINK renamed away, an ACL user refused it) says
        // nothing of the other calls: counted, each failed delete opened the breaker, and the
        // reads that the server still served were skipped with them. It counts as a caller
        // error does (the stats still count and show it).
        Err(Error::Misconfigured { call_only: true, .. }) => {
            if probe {
                breaker.release_probe();
            }
        }
        // A configuration the server refuses (a rotated password) opens the breaker too: the
        // level is probed once per cool-down instead of failing every call on the network. A
        // level not connected yet fails every call at once; open, the breaker skips them.
        Err(
            Error::Timeout { .. }
            | Error::Backend { .. }
            | Error::Misconfigured { .. }
            | Error::NotConnected { .. },
        ) => breaker.record_failure_of(probe),
        Err(_) if probe => breaker.release_probe(),
        Err(_) => {}
    }
}

impl<L: Storage> Storage for Guarded<L> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.guarded("get", About::Key(key), || self.inner.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.guarded("set", About::Key(key), || self.inner.set(key, value, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.guarded("delete", About::Key(key), || self.inner.delete(key))
    }

    /// An empty batch (here and in the other batch calls) asks no server, so the breaker
    /// neither gates nor counts it: its `Ok` would close a half-open breaker, or break a failure
    /// streak, with no word from the level.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.guarded("get_many", About::keys(keys), || self.inner.get_many(keys))
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.guarded("set_many", About::items(items), || {
            self.inner.set_many(items, ttl)
        })
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        // Local arithmetic, not a call: the breaker neither gates nor counts it.
        self.inner.check_value(key, value_len)
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.guarded("set_each", About::each(items), || self.inner.set_each(items))
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.guarded("delete_many", About::keys(keys), || self.inner.delete_many(keys))
    }

    /// Stats read it: skipped unless the breaker is closed (a walk of every key of a level
    /// that is failing is not worth it), and its outcome is not counted: stats polled while a
    /// node of a cluster is down would otherwise open the breaker of the whole level, whose
    /// other nodes answer the traffic. The traffic alone decides.
    fn size(&self) -> Result<StorageSize> {
        self.admit_diagnostic()?;
        self.caught("size", About::Level, || self.inner.size())
    }

    fn clear(&self) -> Result<()> {
        self.guarded("clear", About::Level, || self.inner.clear())
    }

    /// Neither gated nor counted by the breaker, as `check_value`: the distributed levels have
    /// nothing to make durable from here, and their flush returns at once without a call. As a
    /// call it would fail with [`Error::CircuitOpen`] during every cool-down (the CLI ends each
    /// command with a flush), and its `Ok` would close an open breaker, or reset the failure
    /// count, with no word from the server.
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn counters(&self) -> StorageCounters {
        self.inner.counters()
    }
}

impl<L: DistributedStorage> DistributedStorage for Guarded<L> {
    fn on_late_write_deleted(&self, hook: crate::storage::LateWriteHook) {
        self.inner.on_late_write_deleted(hook);
    }

    /// Gated and counted as a call, but for the inner level's `Ok(None)` (it cannot list its
    /// keys): that asked no server, and counted, it would close a half-open breaker.
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        let probe = self.admit()?;
        let result = self.caught("delete_prefix", About::Key(prefix), || {
            self.inner.delete_prefix(prefix)
        });
        self.record_listed(probe, result)
    }

    /// As [`delete_prefix`](DistributedStorage::delete_prefix) on [`Guarded`].
    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        Box::pin(async move {
            let probe = self.admit()?;
            let result = self
                .caught_future("delete_prefix", About::Key(prefix), || {
                    self.inner.delete_prefix_async(prefix)
                })
                .await;
            self.record_listed(probe, result)
        })
    }

    /// As [`Storage::size`] on [`Guarded`]: not counted by the breaker.
    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        Box::pin(async move {
            self.admit_diagnostic()?;
            self.caught_future("size", About::Level, || self.inner.size_async())
                .await
        })
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        self.guarded_async("get", About::Key(key), || self.inner.get_async(key))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.guarded_async("set", About::Key(key), move || {
            self.inner.set_async(key, value, ttl)
        })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.guarded_async("delete", About::Key(key), || self.inner.delete_async(key))
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        self.guarded_async("get_many", About::keys(keys), || self.inner.get_many_async(keys))
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        if items.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.guarded_async("set_many", About::items(items), move || {
            self.inner.set_many_async(items, ttl)
        })
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        if items.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        self.guarded_async("set_each", About::each(items), || {
            self.inner.set_each_async(items)
        })
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(0)));
        }
        self.guarded_async("delete_many", About::keys(keys), || {
            self.inner.delete_many_async(keys)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    /// A level that fails with a backend error while `down` is set, and counts calls.
    #[derive(Default)]
    struct Flaky {
        down: AtomicBool,
        calls: AtomicU32,
        blocking_calls: AtomicU32,
        async_calls: AtomicU32,
    }

    impl Storage for Flaky {
        fn get(&self, key: &str) -> Result<Option<Entry>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.read(key)
        }
        fn name(&self) -> &str {
            "flaky"
        }
        fn set(&self, _: &str, _: &[u8], _: Option<Duration>) -> Result<()> {
            self.blocking()
        }
        fn delete(&self, _: &str) -> Result<bool> {
            self.blocking().map(|()| false)
        }
        fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
            self.blocking().map(|()| vec![None; keys.len()])
        }
        fn set_many(&self, _: &[(&str, &[u8])], _: Option<Duration>) -> Result<()> {
            self.blocking()
        }
        fn set_each(&self, _: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
            self.blocking()
        }
        fn delete_many(&self, _: &[&str]) -> Result<u64> {
            self.blocking().map(|()| 0)
        }
        fn check_value(&self, _: &str, _: usize) -> Result<()> {
            Ok(())
        }
        fn size(&self) -> Result<StorageSize> {
            self.blocking()?;
            if self.down.load(Ordering::SeqCst) {
                return Err(Error::Backend {
                    level: "flaky",
                    op: "size",
                    reason: "down".into(),
                });
            }
            Ok(StorageSize::default())
        }
        fn clear(&self) -> Result<()> {
            self.blocking()
        }
        fn flush(&self) -> Result<()> {
            self.blocking()
        }
        fn counters(&self) -> StorageCounters {
            StorageCounters::default()
        }
    }

    impl Flaky {
        /// `get`'s answer: a caller error for the empty key, a backend error while down.
        fn read(&self, key: &str) -> Result<Option<Entry>> {
            if key.is_empty() {
                return Err(Error::InvalidKey {
                    key: String::new(),
                    problem: crate::KeyProblem::Empty,
                });
            }
            if self.down.load(Ordering::SeqCst) {
                Err(Error::Backend {
                    level: "flaky",
                    op: "get",
                    reason: "down".into(),
                })
            } else {
                Ok(None)
            }
        }

        /// A blocking call other than `get` (the breaker tests use `get` only).
        fn blocking(&self) -> Result<()> {
            self.blocking_calls.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }

        fn answer<'a, T: Send + 'a>(&'a self, value: T) -> BoxFuture<'a, Result<T>> {
            self.async_calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(Ok(value)))
        }
    }

    /// The async calls answer without touching the blocking ones, so a test can tell which ran.
    impl DistributedStorage for Flaky {
        fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
            self.async_calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(std::future::ready(self.read(key)))
        }
        fn set_async<'a>(
            &'a self,
            _: &'a str,
            _: &'a [u8],
            _: Option<Duration>,
        ) -> BoxFuture<'a, Result<()>> {
            self.answer(())
        }
        fn delete_async<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<bool>> {
            self.answer(false)
        }
        fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
            self.answer(vec![None; keys.len()])
        }
        fn set_many_async<'a>(
            &'a self,
            _: &'a [(&'a str, &'a [u8])],
            _: Option<Duration>,
        ) -> BoxFuture<'a, Result<()>> {
            self.answer(())
        }
        fn set_each_async<'a>(
            &'a self,
            _: &'a [(&'a str, &'a [u8], Option<Duration>)],
        ) -> BoxFuture<'a, Result<()>> {
            self.answer(())
        }
        fn delete_many_async<'a>(&'a self, _: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
            self.answer(0)
        }
        fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
            self.answer(StorageSize::default())
        }
    }

    #[test]
    fn every_async_call_goes_to_the_levels_async_call_never_its_blocking_one() {
        let breaker = Arc::new(CircuitBreaker::new(5, Duration::from_secs(1)));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            guarded.get_async("k").await.unwrap();
            guarded.set_async("k", b"v", None).await.unwrap();
            guarded.delete_async("k").await.unwrap();
            guarded.get_many_async(&["a", "b"]).await.unwrap();
            guarded.set_many_async(&[("a", &b"1"[..])], None).await.unwrap();
            guarded
                .set_each_async(&[("a", &b"1"[..], Some(Duration::from_secs(1)))])
                .await
                .unwrap();
            guarded.delete_many_async(&["a"]).await.unwrap();
            guarded.size_async().await.unwrap();
        });
        assert_eq!(guarded.inner().async_calls.load(Ordering::SeqCst), 8);
        assert_eq!(guarded.inner().blocking_calls.load(Ordering::SeqCst), 0);
        assert_eq!(guarded.inner().calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn open_breaker_skips_the_level_and_a_probe_closes_it() {
        let clock = ManualClock::new(0);
        let breaker = Arc::new(CircuitBreaker::with_clock(
            2,
            Duration::from_secs(1),
            Arc::new(clock.clone()),
        ));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker.clone());
        guarded.inner().down.store(true, Ordering::SeqCst);
        assert!(guarded.get("a").is_err());
        assert!(guarded.get("a").is_err());
        assert_eq!(breaker.state(), BreakerState::Open);
        let calls = guarded.inner().calls.load(Ordering::SeqCst);
        assert!(matches!(
            guarded.get("a"),
            Err(Error::CircuitOpen { level: "flaky" })
        ));
        assert_eq!(
            guarded.inner().calls.load(Ordering::SeqCst),
            calls,
            "skipped without a call"
        );

        guarded.inner().down.store(false, Ordering::SeqCst);
        clock.advance(Duration::from_secs(1));
        assert_eq!(guarded.get("a").unwrap(), None, "the probe goes through");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    /// An empty batch asks no server: its `Ok` closed a half-open breaker, and reset a
    /// failure streak, with no word from the level.
    #[test]
    fn an_empty_batch_neither_closes_a_half_open_breaker_nor_breaks_a_failure_streak() {
        let clock = ManualClock::new(0);
        let breaker = Arc::new(CircuitBreaker::with_clock(
            3,
            Duration::from_secs(1),
            Arc::new(clock.clone()),
        ));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker.clone());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let empty_batches = || {
            assert!(guarded.get_many(&[]).unwrap().is_empty());
            guarded.set_many(&[], None).unwrap();
            guarded.set_each(&[]).unwrap();
            assert_eq!(guarded.delete_many(&[]).unwrap(), 0);
            rt.block_on(async {
                assert!(guarded.get_many_async(&[]).await.unwrap().is_empty());
                guarded.set_many_async(&[], None).await.unwrap();
                guarded.set_each_async(&[]).await.unwrap();
                assert_eq!(guarded.delete_many_async(&[]).await.unwrap(), 0);
            });
        };
        guarded.inner().down.store(true, Ordering::SeqCst);
        assert!(guarded.get("a").is_err());
        assert!(guarded.get("a").is_err());
        empty_batches();
        assert!(guarded.get("a").is_err());
        assert_eq!(breaker.state(), BreakerState::Open, "the streak was broken");
        clock.advance(Duration::from_secs(1));
        empty_batches();
        assert_ne!(
            breaker.state(),
            BreakerState::Closed,
            "closed with no word from the level"
        );
        assert_eq!(
            guarded.inner().calls.load(Ordering::SeqCst),
            3,
            "an empty batch made a call"
        );
    }

    /// A breaker of one failure, opened and cooled down (its next call probes), in front of a
    /// [`Flaky`] level.
    fn half_open() -> (Arc<CircuitBreaker>, Guarded<Flaky>) {
        let clock = ManualClock::new(0);
        let breaker = Arc::new(CircuitBreaker::with_clock(
            1,
            Duration::from_secs(1),
            Arc::new(clock.clone()),
        ));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker.clone());
        breaker.record_failure();
        clock.advance(Duration::from_secs(1));
        (breaker, guarded)
    }

    /// A level that cannot list its keys answers a prefix deletion without a server: that
    /// answer must not close a half-open breaker, nor keep its probe slot.
    #[test]
    fn a_prefix_deletion_the_level_cannot_make_neither_closes_a_half_open_breaker_nor_holds_its_probe() {
        let (breaker, guarded) = half_open();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(guarded.delete_prefix("p:").unwrap(), None);
        assert_eq!(rt.block_on(guarded.delete_prefix_async("p:")).unwrap(), None);
        assert_eq!(
            breaker.state(),
            BreakerState::HalfOpen,
            "closed with no word from the level"
        );
        assert_eq!(guarded.get("k").unwrap(), None, "the next call probes");
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    fn refused(call_only: bool) -> Result<()> {
        Err(Error::Misconfigured {
            level: "redis",
            hosts: "h:1".into(),
            reason: "refused".into(),
            call_only,
        })
    }

    /// A server that refuses one command (UNLINK renamed away) still serves the others: its
    /// refusals opened the breaker, and the reads were skipped with the deletes. One that refuses
    /// the connection (a rotated password) refuses every call, and opens it.
    #[test]
    fn a_refusal_of_one_command_does_not_open_the_breaker_a_refused_connection_does() {
        let clock = ManualClock::new(0);
        let breaker = CircuitBreaker::with_clock(2, Duration::from_secs(1), Arc::new(clock.clone()));
        for _ in 0..4 {
            record(&breaker, false, &refused(true));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        for _ in 0..2 {
            record(&breaker, false, &refused(false));
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(breaker.admit(), Some(true));
        record(&breaker, true, &refused(true));
        assert_eq!(breaker.admit(), Some(true), "the probe slot was freed");
    }

    /// A walk that a resharding left incomplete was answered by every node it asked: however
    /// many come in a row, the breaker stays closed, and a probe ending in one closes it. Counted,
    /// a few `clear` calls retried during a resharding opened it, and the reads were skipped.
    #[test]
    fn an_incomplete_walk_neither_opens_the_breaker_nor_fails_a_probe() {
        let incomplete = || -> Result<()> {
            Err(Error::WalkIncomplete {
                level: "redis",
                op: "clear",
                reason: "hash slots 7 moved".into(),
            })
        };
        let backend = || -> Result<()> {
            Err(Error::Backend {
                level: "redis",
                op: "get",
                reason: "refused".into(),
            })
        };
        let clock = ManualClock::new(0);
        let breaker = CircuitBreaker::with_clock(2, Duration::from_secs(1), Arc::new(clock.clone()));
        for _ in 0..4 {
            record(&breaker, false, &incomplete());
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
        for _ in 0..2 {
            record(&breaker, false, &backend());
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(1));
        assert_eq!(breaker.admit(), Some(true));
        record(&breaker, true, &incomplete());
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn caller_errors_do_not_count_as_failures() {
        let breaker = Arc::new(CircuitBreaker::new(1, Duration::from_secs(60)));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker.clone());
        for _ in 0..5 {
            assert!(matches!(guarded.get(""), Err(Error::InvalidKey { .. })));
        }
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn a_probe_ending_in_a_caller_error_lets_the_next_call_probe() {
        let (breaker, guarded) = half_open();
        assert!(matches!(guarded.get(""), Err(Error::InvalidKey { .. })));
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(
            guarded.get("k").unwrap(),
            None,
            "the next call probes instead of waiting another cool-down"
        );
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn async_probe_ending_in_a_caller_error_frees_the_slot_too() {
        let (breaker, guarded) = half_open();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(matches!(
            rt.block_on(guarded.get_async("")),
            Err(Error::InvalidKey { .. })
        ));
        assert_eq!(rt.block_on(guarded.get_async("k")).unwrap(), None);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }

    #[test]
    fn async_calls_are_guarded_too() {
        let breaker = Arc::new(CircuitBreaker::new(1, Duration::from_secs(60)));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker.clone());
        guarded.inner().down.store(true, Ordering::SeqCst);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert!(matches!(
            rt.block_on(guarded.get_async("a")),
            Err(Error::Backend { .. })
        ));
        assert!(matches!(
            rt.block_on(guarded.get_async("a")),
            Err(Error::CircuitOpen { .. })
        ));
    }

    #[test]
    fn a_failed_size_read_is_not_counted_and_is_skipped_while_the_breaker_is_open() {
        let breaker = Arc::new(CircuitBreaker::new(1, Duration::from_secs(60)));
        let guarded = Guarded::new("flaky", Flaky::default(), breaker.clone());
        guarded.inner().down.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            assert!(matches!(guarded.size(), Err(Error::Backend { .. })));
        }
        assert_eq!(breaker.state(), BreakerState::Closed, "stats reads never open it");
        assert!(matches!(guarded.get("a"), Err(Error::Backend { .. })));
        assert_eq!(breaker.state(), BreakerState::Open, "the traffic does");
        let reached = guarded.inner().blocking_calls.load(Ordering::SeqCst);
        assert!(matches!(guarded.size(), Err(Error::CircuitOpen { .. })));
        assert_eq!(
            guarded.inner().blocking_calls.load(Ordering::SeqCst),
            reached,
            "no walk of a level whose breaker is open"
        );
    }
}
