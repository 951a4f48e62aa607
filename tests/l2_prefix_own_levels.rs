//! `invalidate_prefix` on an L2 given to the builder: a level of the user's own
//! (`DistributedStorage`), which nothing in the manager knows how to list. It used to drop L1's
//! keys, tell the other instances and return `Ok` while the level kept the values under the
//! prefix, and the next `get` read an old value back from it into L1. Now the level is asked
//! (`DistributedStorage::delete_prefix`): one that deletes them leaves no key under the prefix
//! in either level; one that cannot list its keys (the method's default) makes the call return
//! `Error::PrefixKeptInL2`, as a Memcached L2 does.
//!
//! The levels here are the user's own, written in the test, not stand-ins for a server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod manager_support;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use manager_support::{ScriptedStore, START_MS};
use uno_cache::{
    BoxFuture, CacheManager, DistributedStorage, Entry, Error, FileStore, FileStoreOptions, InProcess,
    LocalStorage, ManualClock, MemoryStore, Result, Storage, StorageCounters, StorageSize,
};

/// A user's L2: a map, no TTLs (the tests write none).
#[derive(Default)]
struct Map(Mutex<HashMap<String, Vec<u8>>>);

impl Map {
    fn get(&self, key: &str) -> Option<Entry> {
        self.0.lock().unwrap().get(key).map(|value| Entry {
            value: value.clone(),
            expires_at: None,
        })
    }

    fn set(&self, key: &str, value: &[u8]) {
        self.0.lock().unwrap().insert(key.to_owned(), value.to_vec());
    }

    fn delete(&self, key: &str) -> bool {
        self.0.lock().unwrap().remove(key).is_some()
    }

    fn delete_prefix(&self, prefix: &str) -> u64 {
        let mut map = self.0.lock().unwrap();
        let before = map.len();
        map.retain(|key, _| !key.starts_with(prefix));
        (before - map.len()) as u64
    }

    fn size(&self) -> StorageSize {
        let map = self.0.lock().unwrap();
        StorageSize {
            items: map.len() as u64,
            bytes: map.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum(),
        }
    }
}

/// Implements `Storage` and the required part of `DistributedStorage` for `$level` (a struct
/// whose field `map` is a [`Map`]), with `$prefix` the rest of its `DistributedStorage`: a
/// user's level that does not know of prefix deletion leaves it out.
macro_rules! own_level {
    ($level:ty, { $($prefix:tt)* }) => {
        impl Storage for $level {
            fn name(&self) -> &str {
                "own"
            }
            fn get(&self, key: &str) -> Result<Option<Entry>> {
                Ok(self.map.get(key))
            }
            fn set(&self, key: &str, value: &[u8], _ttl: Option<Duration>) -> Result<()> {
                self.map.set(key, value);
                Ok(())
            }
            fn delete(&self, key: &str) -> Result<bool> {
                Ok(self.map.delete(key))
            }
            fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
                Ok(keys.iter().map(|key| self.map.get(key)).collect())
            }
            fn set_many(&self, items: &[(&str, &[u8])], _ttl: Option<Duration>) -> Result<()> {
                for (key, value) in items {
                    self.map.set(key, value);
                }
                Ok(())
            }
            fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
                for (key, value, _) in items {
                    self.map.set(key, value);
                }
                Ok(())
            }
            fn delete_many(&self, keys: &[&str]) -> Result<u64> {
                Ok(keys.iter().filter(|key| self.map.delete(key)).count() as u64)
            }
            fn check_value(&self, _key: &str, _value_len: usize) -> Result<()> {
                Ok(())
            }
            fn size(&self) -> Result<StorageSize> {
                Ok(self.map.size())
            }
            fn clear(&self) -> Result<()> {
                self.map.0.lock().unwrap().clear();
                Ok(())
            }
            fn flush(&self) -> Result<()> {
                Ok(())
            }
            fn counters(&self) -> StorageCounters {
                StorageCounters::default()
            }
        }

        impl DistributedStorage for $level {
            $($prefix)*

            fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
                Box::pin(std::future::ready(self.get(key)))
            }
            fn set_async<'a>(
                &'a self,
                key: &'a str,
                value: &'a [u8],
                ttl: Option<Duration>,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(std::future::ready(self.set(key, value, ttl)))
            }
            fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
                Box::pin(std::future::ready(self.delete(key)))
            }
            fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
                Box::pin(std::future::ready(self.get_many(keys)))
            }
            fn set_many_async<'a>(
                &'a self,
                items: &'a [(&'a str, &'a [u8])],
                ttl: Option<Duration>,
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(std::future::ready(self.set_many(items, ttl)))
            }
            fn set_each_async<'a>(
                &'a self,
                items: &'a [(&'a str, &'a [u8], Option<Duration>)],
            ) -> BoxFuture<'a, Result<()>> {
                Box::pin(std::future::ready(self.set_each(items)))
            }
            fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
                Box::pin(std::future::ready(self.delete_many(keys)))
            }
            fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
                Box::pin(std::future::ready(self.size()))
            }
        }
    };
}

/// A level written before prefix deletion existed: it has no `delete_prefix`.
#[derive(Default)]
struct Unlisted {
    map: Map,
}

own_level!(Unlisted, {});

/// A level that deletes its keys under a prefix, and counts its calls (sync, async).
#[derive(Default)]
struct Listing {
    map: Map,
    calls: Mutex<Vec<&'static str>>,
}

own_level!(Listing, {
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.calls.lock().unwrap().push("delete_prefix");
        Ok(Some(self.map.delete_prefix(prefix)))
    }

    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.calls.lock().unwrap().push("delete_prefix_async");
        Box::pin(std::future::ready(Ok(Some(self.map.delete_prefix(prefix)))))
    }
});

/// A manager over a file store L1 in `dir` (which lists its keys: the counts are exact) and
/// `l2`.
fn over(dir: &tempfile::TempDir, l2: Arc<dyn DistributedStorage>) -> CacheManager {
    let l1 = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    CacheManager::builder()
        .local(Arc::new(l1))
        .distributed(l2)
        .build()
        .unwrap()
}

/// Writes `user:0..n` and `other:0..n` through `cache`, then drops every other `user:` key
/// from L1 alone (as another instance's writes are: in L2 only).
fn write_both_prefixes(cache: &CacheManager, n: usize) {
    for i in 0..n {
        cache.set(&format!("user:{i}"), &7u32, None).unwrap();
        cache.set(&format!("other:{i}"), &7u32, None).unwrap();
    }
    for i in (0..n).step_by(2) {
        cache.invalidate_local(&format!("user:{i}")).unwrap();
    }
}

/// No `user:` key is left in L1 or in `l2`, or read back; every `other:` key is in both.
fn only_the_prefix_is_gone(cache: &CacheManager, l2: &dyn Storage, n: usize) {
    for i in 0..n {
        let (user, other) = (format!("user:{i}"), format!("other:{i}"));
        assert_eq!(l2.get(&user).unwrap(), None, "{user} still in L2");
        assert_eq!(cache.local().get(&user).unwrap(), None, "{user} still in L1");
        assert_eq!(cache.get::<u32>(&user).unwrap(), None, "{user} read back");
        assert!(
            l2.get(&other).unwrap().is_some(),
            "{other}, outside the prefix, left L2"
        );
        assert!(
            cache.local().get(&other).unwrap().is_some(),
            "{other}, outside the prefix, left L1"
        );
    }
}

/// The bug: a level of the user's own that cannot list its keys kept the values under the
/// prefix, the call returned `Ok`, and the next read brought one back. Now the call says so,
/// naming what it dropped from L1, and the warning holds: L2 still serves the old value.
#[test]
fn a_prefix_kept_by_a_level_of_your_own_is_reported_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(Unlisted::default());
    let cache = over(&dir, l2.clone());
    write_both_prefixes(&cache, 10);
    match cache.invalidate_prefix("user:") {
        Err(Error::PrefixKeptInL2 {
            level,
            prefix,
            dropped,
        }) => assert_eq!((level, prefix.as_str(), dropped), ("L2", "user:", 5)),
        other => panic!("a prefix the level keeps was not reported: {other:?}"),
    }
    for i in 0..10 {
        assert_eq!(
            cache.local().get(&format!("user:{i}")).unwrap(),
            None,
            "user:{i} in L1"
        );
    }
    // What the error warns of.
    assert!(l2.get("user:3").unwrap().is_some());
    assert_eq!(cache.get::<u32>("user:3").unwrap(), Some(7));
}

/// The async form says the same.
#[test]
fn an_async_prefix_kept_by_a_level_of_your_own_is_reported_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let cache = over(&dir, Arc::new(Unlisted::default()));
    write_both_prefixes(&cache, 4);
    let result = block_on(cache.invalidate_prefix_async("user:"));
    assert!(
        matches!(
            result,
            Err(Error::PrefixKeptInL2 {
                level: "L2",
                dropped: 2,
                ..
            })
        ),
        "{result:?}"
    );
}

/// A level that implements `delete_prefix` loses its keys under the prefix, L1 too, and keeps
/// the others; the call counts each key once (L2 held every key L1 did).
#[test]
fn a_level_of_your_own_that_deletes_a_prefix_keeps_nothing_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(Listing::default());
    let cache = over(&dir, l2.clone());
    write_both_prefixes(&cache, 10);
    assert_eq!(cache.invalidate_prefix("user:").unwrap(), 10);
    assert_eq!(*l2.calls.lock().unwrap(), ["delete_prefix"]);
    only_the_prefix_is_gone(&cache, &*l2, 10);
}

/// The async form asks the level's async method.
#[test]
fn an_async_prefix_invalidation_asks_the_levels_async_delete() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(Listing::default());
    let cache = over(&dir, l2.clone());
    write_both_prefixes(&cache, 10);
    assert_eq!(block_on(cache.invalidate_prefix_async("user:")).unwrap(), 10);
    assert_eq!(*l2.calls.lock().unwrap(), ["delete_prefix_async"]);
    only_the_prefix_is_gone(&cache, &*l2, 10);
}

/// `InProcess` cannot list the keys of the level it wraps; `InProcess::listing` lists those of
/// a local level that can (a file store) and deletes them, and clears one that cannot (a
/// memory store), a superset.
#[test]
fn an_in_process_l2_deletes_a_prefix_only_when_made_listing() {
    let (dir, l2_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let file = Arc::new(FileStore::open(l2_dir.path(), FileStoreOptions::default()).unwrap());
    let cache = over(&dir, Arc::new(InProcess::shared(Arc::clone(&file))));
    write_both_prefixes(&cache, 6);
    assert!(
        matches!(
            cache.invalidate_prefix("user:"),
            Err(Error::PrefixKeptInL2 { level: "L2", .. })
        ),
        "a plain InProcess cannot list its keys"
    );
    assert!(file.get("user:0").unwrap().is_some());
    drop(cache);

    let dir = tempfile::tempdir().unwrap();
    let cache = over(&dir, Arc::new(InProcess::listing(Arc::clone(&file))));
    write_both_prefixes(&cache, 6);
    assert_eq!(cache.invalidate_prefix("user:").unwrap(), 6);
    only_the_prefix_is_gone(&cache, &*file, 6);
    assert_eq!(file.keys_with_prefix("user:").unwrap(), Some(Vec::new()));

    let dir = tempfile::tempdir().unwrap();
    let memory = Arc::new(MemoryStore::new(1_000).unwrap());
    let cache = over(&dir, Arc::new(InProcess::listing(Arc::clone(&memory))));
    write_both_prefixes(&cache, 6);
    assert_eq!(
        cache.invalidate_prefix("user:").unwrap(),
        12,
        "every entry cleared"
    );
    assert_eq!(memory.get("user:1").unwrap(), None);
    assert_eq!(cache.get::<u32>("user:1").unwrap(), None);
}

/// L1 is dropped again after the level's delete: a set of a key under the prefix that runs
/// whole while the level deletes (its L2 copy deleted with the prefix) does not stay in L1
/// alone, where a read would serve it while L2 has none.
#[test]
fn a_set_during_a_level_of_your_owns_prefix_delete_does_not_stay_in_l1_alone() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let l2 = ScriptedStore::new("own", &clock);
    let cache = over(&dir, l2.clone());
    cache.set("p:k", &1u32, None).unwrap();
    let gate = l2.gate("delete_prefix");
    std::thread::scope(|scope| {
        let invalidation = scope.spawn(|| cache.invalidate_prefix("p:"));
        gate.wait_entered();
        // The level holds the call before it deletes: the set lands in both levels, and its L2
        // copy then goes with the prefix.
        cache.set("p:k", &2u32, None).unwrap();
        gate.release();
        invalidation.join().unwrap().unwrap();
    });
    assert_eq!(l2.peek("p:k"), None, "the level deleted the prefix");
    assert_eq!(cache.local().get("p:k").unwrap(), None, "p:k stayed in L1 alone");
    assert_eq!(cache.get::<u32>("p:k").unwrap(), None);
}

/// A level whose async prefix delete is sent at once and lands when `land` lets it, whether or
/// not its caller still waits (as a command written to a socket does): its future never ends.
#[derive(Default)]
struct LandsLate {
    map: Arc<Map>,
    land: Arc<(Mutex<bool>, std::sync::Condvar)>,
    sent: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl LandsLate {
    /// Lets the delete land, and waits until it has.
    fn land(&self) {
        *self.land.0.lock().unwrap() = true;
        self.land.1.notify_all();
        let sent = self.sent.lock().unwrap().take();
        sent.expect("no delete was sent").join().unwrap();
    }
}

own_level!(LandsLate, {
    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        let (map, land, prefix) = (Arc::clone(&self.map), Arc::clone(&self.land), prefix.to_owned());
        *self.sent.lock().unwrap() = Some(std::thread::spawn(move || {
            let mut landed = land.0.lock().unwrap();
            while !*landed {
                landed = land.1.wait(landed).unwrap();
            }
            map.delete_prefix(&prefix);
        }));
        Box::pin(std::future::pending())
    }
});

/// An async prefix invalidation dropped while the level's delete is on its way (a caller's
/// timeout) owes what one dropped during a Redis walk does: a set that runs after the drop and
/// before the delete lands loses its L2 copy to it, and its L1 copy goes too at the end of the
/// quiet window, rather than staying in L1 alone, with no TTL to end it, while L2 has none.
#[test]
fn a_cancelled_async_prefix_delete_of_a_level_of_your_own_drops_l1_again_once_it_may_have_landed() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(LandsLate::default());
    let cache = over(&dir, l2.clone());
    cache.set("p:k", &1u32, None).unwrap();
    {
        let mut invalidation = std::pin::pin!(cache.invalidate_prefix_async("p:"));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(invalidation.as_mut().poll(&mut cx).is_pending());
    }
    cache.set("p:k", &2u32, None).unwrap();
    l2.land();
    assert_eq!(
        l2.get("p:k").unwrap(),
        None,
        "the late delete took the set's L2 copy"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cache.local().get("p:k").unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "p:k stayed in L1 alone after the late delete"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cache.get::<u32>("p:k").unwrap(), None);
}

/// Drives `fut` to its end on a current-thread runtime.
fn block_on<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(fut)
}
