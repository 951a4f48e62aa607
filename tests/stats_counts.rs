//! What `stats()` counts for each read, against real `redis-server` and `memcached` L2s and a
//! file-store L1 with its memory tier: each key a read reaches counts once at each level, as a
//! hit or a miss, and `hit_rate.local` is the local hits over the local lookups (memory-tier
//! hits, and the reads that reached the file tier).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

#[path = "support/delegate.rs"]
mod delegate;

use std::path::Path;
use std::sync::{mpsc, Arc};

use delegate::{Delegate, Wrap, WrapDistributed, WrapLocal};
use support::{MemcachedServer, RedisServer};
use uno_cache::distributed::{MemcachedOptions, MemcachedStore};
use uno_cache::{
    CacheConfig, CacheManager, CacheStats, DistributedStorage, Entry, Error, Fetched, FileStore, Freshness,
    LocalStorage, RedisOptions, RedisStore, Storage,
};

fn config(dir: &Path, kind: &str, hosts: &[String], fallback: bool) -> CacheConfig {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = {fallback}
        [local]
        type = "file"
        path = {:?}
        ttl = 600
        [distributed]
        enabled = true
        type = "{kind}"
        hosts = [{}]
        key_prefix = "sc:"
        ttl = 600
        timeout_ms = 500
        [consistency]
        restart_policy = "revalidate"
        "#,
        dir.display().to_string(),
        hosts.join(", ")
    ))
    .unwrap()
}

fn redis_cache(dir: &Path, redis: &RedisServer) -> CacheManager {
    CacheManager::new(config(dir, "redis", &[redis.addr()], true)).unwrap()
}

/// A read of one key, named.
type Read = (&'static str, fn(&CacheManager, &str) -> Option<u32>);

/// A batch read, named: how many keys it found.
type Batch = (&'static str, fn(&CacheManager, &[&str]) -> usize);

/// A loader, as the loading calls take it.
type Loader = Box<dyn FnOnce() -> Result<u32, LoadError> + Send>;

/// A loading call of `k`, named.
type LoadCall = (&'static str, fn(&CacheManager, Loader) -> Result<u32, LoadError>);

/// A loader's error, or the cache's.
#[derive(Debug)]
enum LoadError {
    Source,
    Cache(Error),
}

impl From<Error> for LoadError {
    fn from(e: Error) -> Self {
        LoadError::Cache(e)
    }
}

/// The read counts of every level: memory tier, file tier, local (both), L2, overall.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    memory: (u64, u64),
    file: (u64, u64),
    local: (u64, u64),
    distributed: (u64, u64),
    overall: (u64, u64),
}

fn counts(s: &CacheStats) -> Counts {
    Counts {
        memory: (s.memory.hits, s.memory.misses),
        file: (s.file.hits, s.file.misses),
        local: (s.local.hits, s.local.misses),
        distributed: (s.distributed.hits, s.distributed.misses),
        overall: (s.overall.hits, s.overall.misses),
    }
}

/// A manager reopened on the L1 directory of one that wrote `keys` (each = its index) to both
/// levels: its L1 entries are restored, suspect until L2 confirms them.
fn restarted_with(dir: &Path, redis: &RedisServer, keys: &[&str]) -> CacheManager {
    {
        let cache = redis_cache(dir, redis);
        for (i, key) in keys.iter().enumerate() {
            cache.set(key, &(i as u32), None).unwrap();
        }
        cache.flush().unwrap();
    }
    redis_cache(dir, redis)
}

/// A restored entry checked against L2 is a read that missed L1 and that L2 answered: before,
/// neither the file tier nor `local` counted it at all (L2 and overall did), so
/// `hit_rate.local` left out every read of the restart's first minutes.
#[test]
fn a_restored_entry_checked_against_l2_is_one_local_miss_and_one_l2_hit() {
    let redis = RedisServer::start();
    let reads: [Read; 3] = [
        ("get", |c, k| c.get(k).unwrap()),
        ("get_async", |c, k| support::block_on(c.get_async(k)).unwrap()),
        ("multi_get", |c, k| c.multi_get(&[k]).unwrap().remove(k)),
    ];
    for (name, read) in reads {
        let dir = tempfile::tempdir().unwrap();
        let cache = restarted_with(dir.path(), &redis, &["k"]);
        assert_eq!(read(&cache, "k"), Some(0), "{name}");
        let stats = cache.stats();
        assert_eq!(
            counts(&stats),
            Counts {
                memory: (0, 1),
                file: (0, 1),
                local: (0, 1),
                distributed: (1, 0),
                overall: (1, 0),
            },
            "{name}"
        );
        assert_eq!(stats.consistency.revalidated_confirmed, 1, "{name}");
        // Confirmed, the value is in the memory tier: the next read is a local hit.
        assert_eq!(read(&cache, "k"), Some(0), "{name}");
        let stats = cache.stats();
        assert_eq!((stats.local.hits, stats.local.misses), (1, 1), "{name}");
        assert!(
            (stats.hit_rate.local - 0.5).abs() < 1e-9,
            "{name}: {}",
            stats.hit_rate.local
        );
    }
}

/// While L2 is down a restored entry is served as it is: a local hit, and no L2 hit or miss.
#[test]
fn a_restored_entry_served_unverified_while_l2_is_down_is_one_local_hit() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = restarted_with(dir.path(), &redis, &["k"]);
    redis.kill();
    assert_eq!(cache.get::<u32>("k").unwrap(), Some(0));
    let stats = cache.stats();
    assert_eq!(stats.consistency.served_unverified, 1);
    assert_eq!(
        counts(&stats),
        Counts {
            memory: (0, 1),
            file: (1, 0),
            local: (1, 0),
            distributed: (0, 0),
            overall: (1, 0),
        }
    );
    assert!(stats.distributed.errors >= 1, "{:?}", stats.distributed);
}

/// A batch that lists a key twice answers it once (a map): before, each level was asked for it
/// twice and counted both, so a batch of one key listed twice read as two misses in every tier.
#[test]
fn a_key_a_batch_lists_twice_is_read_and_counted_once() {
    let redis = RedisServer::start();
    let batches: [Batch; 4] = [
        ("multi_get", |c, keys| c.multi_get::<u32>(keys).unwrap().len()),
        ("multi_get_async", |c, keys| {
            support::block_on(c.multi_get_async::<u32>(keys)).unwrap().len()
        }),
        ("multi_get_raw", |c, keys| c.multi_get_raw(keys).unwrap().len()),
        ("multi_get_raw_async", |c, keys| {
            support::block_on(c.multi_get_raw_async(keys)).unwrap().len()
        }),
    ];
    for (name, read) in batches {
        let dir = tempfile::tempdir().unwrap();
        let cache = redis_cache(dir.path(), &redis);
        // "in_l1" is in both levels; "in_l2" only in L2 (another instance wrote it).
        cache.set("in_l1", &1u32, None).unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        redis_cache(other_dir.path(), &redis)
            .set("in_l2", &2u32, None)
            .unwrap();
        let keys = ["in_l1", "in_l2", "nowhere", "in_l2", "nowhere", "in_l1"];
        assert_eq!(read(&cache, &keys), 2, "{name}");
        let stats = cache.stats();
        let typed = !name.contains("raw");
        let memory = if typed { (0, 3) } else { (0, 0) };
        assert_eq!(
            counts(&stats),
            Counts {
                memory,
                file: (1, 2),
                local: (1, 2),
                distributed: (1, 1),
                overall: (2, 1),
            },
            "{name}"
        );
        assert_eq!(stats.overall.reads, 3, "{name}");
        cache.delete("in_l2").unwrap();
    }
}

/// A batch read some of whose keys' node is down, with `fallback_on_error = false`: the caller
/// gets the partial error, and the keys it could not read count in neither `overall.hits` nor
/// `overall.misses`, as a single read whose error reaches the caller does (their level counts
/// the error); with fallback, such a key is answered as a miss and counted as one.
#[test]
fn keys_a_batch_could_not_read_count_as_misses_only_when_fallback_answers_them() {
    let servers = [MemcachedServer::start(), MemcachedServer::start()];
    let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
    let place =
        MemcachedStore::connect(MemcachedOptions::with_hosts(hosts.iter().cloned()).prefix("sc:")).unwrap();
    let on = |host: usize| -> String {
        (0..)
            .map(|i| format!("key{i}"))
            .find(|k| place.server_key(k).1 == host)
            .unwrap()
    };
    let (up, down) = (on(0), on(1));
    let [server0, mut server1] = servers;
    let strict_dir = tempfile::tempdir().unwrap();
    let strict = CacheManager::new(config(strict_dir.path(), "memcached", &hosts, false)).unwrap();
    let lenient_dir = tempfile::tempdir().unwrap();
    let lenient = CacheManager::new(config(lenient_dir.path(), "memcached", &hosts, true)).unwrap();
    server1.kill();

    let err = strict.multi_get_raw(&[up.as_str(), down.as_str()]).unwrap_err();
    assert!(matches!(err, Error::PartialBatch(_)), "{err}");
    let err = strict.get_raw(&down).unwrap_err();
    assert!(!matches!(err, Error::PartialBatch(_)), "{err}");
    let stats = strict.stats();
    // Both keys missed L1 (three L1 reads); only `up`'s L2 read was answered.
    assert_eq!(
        counts(&stats),
        Counts {
            memory: (0, 0),
            file: (0, 3),
            local: (0, 3),
            distributed: (0, 1),
            overall: (0, 1),
        }
    );
    assert_eq!(stats.overall.reads, 1);
    assert!(stats.distributed.errors >= 2, "{:?}", stats.distributed);

    assert!(lenient
        .multi_get_raw(&[up.as_str(), down.as_str()])
        .unwrap()
        .is_empty());
    assert_eq!(lenient.get_raw(&down).unwrap(), None);
    let stats = lenient.stats();
    assert_eq!(
        counts(&stats),
        Counts {
            memory: (0, 0),
            file: (0, 3),
            local: (0, 3),
            distributed: (0, 1),
            overall: (0, 3),
        }
    );
    drop(server0);
}

/// A loading call that waited on another caller's load, which failed, looks at the key again
/// and loads: that look is not a second read (as a leader's look before it loads is not).
/// Before, it was counted again at every level, so two callers of a missing key counted three
/// misses.
#[test]
fn a_loading_call_that_waited_on_a_failed_load_counts_its_read_once() {
    let redis = RedisServer::start();
    let calls: [LoadCall; 4] = [
        ("get_or_set_with", |c, f| c.get_or_set_with("k", None, f)),
        ("get_or_set_with_async", |c, f| {
            support::block_on(c.get_or_set_with_async("k", None, || async move { f() }))
        }),
        ("get_or_load", |c, f| {
            c.get_or_load("k", None, f).map(Fetched::into_value)
        }),
        ("get_or_load_async", |c, f| {
            support::block_on(c.get_or_load_async("k", None, || async move { f() })).map(Fetched::into_value)
        }),
    ];
    for (name, call) in calls {
        let dir = tempfile::tempdir().unwrap();
        let cache = redis_cache(dir.path(), &redis);
        cache.delete("k").unwrap();
        let cache = &cache;
        let (release, gate) = mpsc::channel::<()>();
        std::thread::scope(|scope| {
            let failing = scope.spawn(move || {
                call(
                    cache,
                    Box::new(move || {
                        gate.recv().unwrap();
                        Err(LoadError::Source)
                    }),
                )
            });
            support::wait_until("the first caller loads", || cache.stats().overall.loads == 1);
            let waiting = scope.spawn(move || call(cache, Box::new(|| Ok(7))));
            support::wait_until("the second caller waits on its load", || {
                cache.stats().overall.load_waits == 1
            });
            release.send(()).unwrap();
            match failing.join().unwrap() {
                Err(LoadError::Source) => {}
                Err(LoadError::Cache(e)) => panic!("{name}: the cache failed: {e}"),
                Ok(v) => panic!("{name}: the failing load answered {v}"),
            }
            assert_eq!(waiting.join().unwrap().unwrap(), 7, "{name}");
        });
        let stats = cache.stats();
        assert_eq!(stats.overall.loads, 2, "{name}");
        assert_eq!(
            counts(&stats),
            Counts {
                memory: (0, 2),
                file: (0, 2),
                local: (0, 2),
                distributed: (0, 2),
                overall: (0, 2),
            },
            "{name}"
        );
    }
}

/// A file-store L1 whose reads fail (its device gone, say).
struct FailingReads(FileStore);

fn read_failure() -> Error {
    Error::Backend {
        level: "file",
        op: "get",
        reason: "the device is gone".into(),
    }
}

impl Wrap for FailingReads {
    type Inner = FileStore;
    fn inner(&self) -> &FileStore {
        &self.0
    }
    fn get(&self, _: &str) -> uno_cache::Result<Option<Entry>> {
        Err(read_failure())
    }
}

impl WrapLocal for FailingReads {
    fn get_checked(&self, _: &str) -> uno_cache::Result<Option<(Entry, Freshness)>> {
        Err(read_failure())
    }
}

/// A loading call's leader looks at its key again before it loads, uncounted; when L1 failed
/// that look (hidden by `fallback_on_error`), the look went on as a full read, counted: the
/// key's L2 miss and its overall miss were counted twice. The L1 failures are counted, each.
#[test]
fn a_leaders_look_again_through_a_failing_l1_is_not_counted_as_a_second_read() {
    let redis = RedisServer::start();
    let calls: [LoadCall; 2] = [
        ("get_or_set_with", |c, f| c.get_or_set_with("k", None, f)),
        ("get_or_set_with_async", |c, f| {
            support::block_on(c.get_or_set_with_async("k", None, || async move { f() }))
        }),
    ];
    for (name, call) in calls {
        let dir = tempfile::tempdir().unwrap();
        let l1 = FileStore::open(dir.path(), uno_cache::FileStoreOptions::default()).unwrap();
        let cache = CacheManager::builder()
            .config(config(dir.path(), "redis", &[redis.addr()], true))
            .local(Arc::new(Delegate(FailingReads(l1))))
            .build()
            .unwrap();
        cache.delete("k").unwrap();
        assert_eq!(call(&cache, Box::new(|| Ok(7))).unwrap(), 7, "{name}");
        let stats = cache.stats();
        assert_eq!(stats.overall.loads, 1, "{name}");
        assert_eq!(stats.local.errors, 2, "{name}: the read's and the look's");
        assert_eq!(
            counts(&stats),
            Counts {
                memory: (0, 0),
                file: (0, 0),
                local: (0, 0),
                distributed: (0, 1),
                overall: (0, 1),
            },
            "{name}"
        );
    }
}

/// An L2 down at start-up (with fallback) is connected in the background; until then it answers
/// every call at once, unsent. Those answers are failures, counted in `errors`, but no round
/// trips: before, each was timed into `get_latency` and `set_latency` (until the breaker
/// opened), pulling the percentiles an operator alerts on to a few microseconds.
#[test]
fn calls_to_an_l2_not_connected_yet_count_as_errors_but_are_not_timed() {
    const N: u64 = 20;
    let port = support::free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "redis", &[format!("127.0.0.1:{port}")], true);
    // The breaker stays closed, so every call reaches the level not connected yet (an open
    // breaker's skips were already left untimed); the connector retries every 20 ms.
    config.distributed.breaker_failures = 1_000_000;
    config.distributed.breaker_cooldown_ms = 20;
    let cache = CacheManager::new(config).unwrap();

    for i in 0..N {
        assert_eq!(cache.get_raw(&format!("get{i}")).unwrap(), None);
        cache.set_raw(&format!("set{i}"), b"v", None).unwrap();
    }
    let down = cache.stats().distributed;
    assert_eq!(
        (down.get_latency.samples, down.set_latency.samples),
        (0, 0),
        "{down:?}"
    );
    // Each get and set failed (replays of the queued sets may add their own failures).
    assert!(down.errors >= 2 * N, "{down:?}");
    let shown = down.last_error.unwrap_or_default();
    assert!(
        shown.contains("not connected yet") && shown.contains(&port.to_string()),
        "{shown}"
    );

    let _redis = RedisServer::start_on(port, &[], None);
    let l2 = cache.distributed().unwrap();
    support::wait_until("the level connects", || l2.size().is_ok());
    assert_eq!(cache.get_raw("after").unwrap(), None);
    cache.set_raw("after", b"v", None).unwrap();
    let up = cache.stats().distributed;
    assert_eq!(up.get_latency.samples, 1, "{up:?}");
    assert!(up.set_latency.samples >= 1, "{up:?}");
    assert_eq!(
        l2.get("after").unwrap().map(|e| e.value).as_deref(),
        Some(&b"v"[..])
    );
}

/// A batch write, named.
type BatchWrite = (&'static str, fn(&CacheManager, &[(&str, u32)]));

/// A batch write that lists a key twice writes it once, with its last value: each level holds
/// that value and counts one set of the key. Before, each level was sent both values (and kept
/// the last), and counted two sets.
#[test]
fn a_key_a_batch_write_lists_twice_is_written_once_with_its_last_value_and_counted_once() {
    let redis = RedisServer::start();
    fn raw(cache: &CacheManager, items: &[(&str, u32)]) -> Vec<(String, Vec<u8>)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), cache.codec().encode(k, v).unwrap()))
            .collect()
    }
    fn borrowed(items: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
        items.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect()
    }
    let writes: [BatchWrite; 4] = [
        ("multi_set", |c, items| {
            c.multi_set(items.iter().copied(), None).unwrap();
        }),
        ("multi_set_async", |c, items| {
            support::block_on(c.multi_set_async(items.iter().copied(), None)).unwrap();
        }),
        ("multi_set_raw", |c, items| {
            let encoded = raw(c, items);
            c.multi_set_raw(&borrowed(&encoded), None).unwrap();
        }),
        ("multi_set_raw_async", |c, items| {
            let encoded = raw(c, items);
            support::block_on(c.multi_set_raw_async(&borrowed(&encoded), None)).unwrap();
        }),
    ];
    for (name, write) in writes {
        let dir = tempfile::tempdir().unwrap();
        let cache = redis_cache(dir.path(), &redis);
        write(&cache, &[("a", 1), ("b", 2), ("a", 3)]);
        let codec = cache.codec();
        let in_l1 = |k: &str| {
            cache
                .local()
                .get(k)
                .unwrap()
                .map(|e| codec.decode::<u32>(k, &e.value).unwrap())
        };
        let l2 = cache.distributed().unwrap();
        let in_l2 = |k: &str| {
            l2.get(k)
                .unwrap()
                .map(|e| codec.decode::<u32>(k, &e.value).unwrap())
        };
        assert_eq!((in_l1("a"), in_l1("b")), (Some(3), Some(2)), "{name}");
        assert_eq!((in_l2("a"), in_l2("b")), (Some(3), Some(2)), "{name}");
        let stats = cache.stats();
        assert_eq!((stats.local.sets, stats.distributed.sets), (2, 2), "{name}");
        cache.multi_delete(&["a", "b"]).unwrap();
    }
}

/// A batch delete that lists a key twice deletes it once: each level is asked for it once and
/// counts one delete, where each counted one per listing; the count returned is of keys.
#[test]
fn a_key_a_batch_delete_lists_twice_is_deleted_once_and_counted_once() {
    let redis = RedisServer::start();
    type BatchDelete = (&'static str, fn(&CacheManager, &[&str]) -> u64);
    let deletes: [BatchDelete; 2] = [
        ("multi_delete", |c, keys| c.multi_delete(keys).unwrap()),
        ("multi_delete_async", |c, keys| {
            support::block_on(c.multi_delete_async(keys)).unwrap()
        }),
    ];
    for (name, delete) in deletes {
        let dir = tempfile::tempdir().unwrap();
        let cache = redis_cache(dir.path(), &redis);
        cache.set("a", &1u32, None).unwrap();
        cache.set("b", &2u32, None).unwrap();
        assert_eq!(delete(&cache, &["a", "b", "a"]), 2, "{name}");
        let stats = cache.stats();
        assert_eq!((stats.local.deletes, stats.distributed.deletes), (2, 2), "{name}");
        assert_eq!(cache.get::<u32>("a").unwrap(), None, "{name}");
    }
}

/// The manager's Redis L2, whose first read once armed lets another manager over the same L1
/// and Redis set `k` to 7 and then mark every L1 entry suspect (its subscription lost, say),
/// on a thread of its own, before it answers what it read (a miss).
struct OtherWritesAfterRead {
    redis: Arc<RedisStore>,
    other: Arc<CacheManager>,
    armed: std::sync::atomic::AtomicBool,
}

impl OtherWritesAfterRead {
    fn after_read(&self) {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let other = Arc::clone(&self.other);
            std::thread::spawn(move || {
                other.set("k", &7u32, None).unwrap();
                other.local().mark_all_suspect().unwrap();
            })
            .join()
            .unwrap();
        }
    }
}

impl Wrap for OtherWritesAfterRead {
    type Inner = RedisStore;
    fn inner(&self) -> &RedisStore {
        &self.redis
    }
    fn get(&self, key: &str) -> uno_cache::Result<Option<Entry>> {
        let read = self.redis.get(key);
        self.after_read();
        read
    }
}

impl WrapDistributed for OtherWritesAfterRead {
    fn get_async<'a>(&'a self, key: &'a str) -> uno_cache::BoxFuture<'a, uno_cache::Result<Option<Entry>>> {
        Box::pin(async move {
            let read = self.redis.get_async(key).await;
            self.after_read();
            read
        })
    }
}

/// A loading call's leader looks at its key again before it loads, uncounted; a look that
/// found a suspect entry (written and then made suspect by another holder of L1 since the
/// call's read missed) went on as a full read, counted: an L1 miss, an L2 hit and an overall
/// hit on top of the read's misses, two reads for one call. The look checks the entry against
/// L2 (and confirms it) without counting, so the call counts the one read that missed.
#[test]
fn a_leaders_look_again_that_finds_a_suspect_entry_is_not_counted_as_a_second_read() {
    let server = RedisServer::start();
    let calls: [LoadCall; 2] = [
        ("get_or_set_with", |c, f| c.get_or_set_with("k", None, f)),
        ("get_or_set_with_async", |c, f| {
            support::block_on(c.get_or_set_with_async("k", None, || async move { f() }))
        }),
    ];
    for (i, (name, call)) in calls.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let l1: Arc<dyn LocalStorage> =
            Arc::new(FileStore::open(dir.path(), uno_cache::FileStoreOptions::default()).unwrap());
        let redis = Arc::new(
            RedisStore::connect(RedisOptions::new(server.addr()).prefix(format!("sl{i}:"))).unwrap(),
        );
        let other = Arc::new(
            CacheManager::builder()
                .local(Arc::clone(&l1))
                .distributed(redis.clone())
                .build()
                .unwrap(),
        );
        let l2 = Arc::new(Delegate(OtherWritesAfterRead {
            redis,
            other,
            armed: std::sync::atomic::AtomicBool::new(true),
        }));
        let cache = CacheManager::builder()
            .config(config(dir.path(), "redis", &[server.addr()], true))
            .local(l1)
            .distributed(l2.clone())
            .build()
            .unwrap();
        assert_eq!(call(&cache, Box::new(|| Ok(8))).unwrap(), 7, "{name}");
        assert!(
            !l2.armed.load(std::sync::atomic::Ordering::SeqCst),
            "{name}: the other holder did not write"
        );
        let stats = cache.stats();
        assert_eq!(
            stats.overall.loads, 0,
            "{name}: the look found the other holder's value"
        );
        assert_eq!(stats.consistency.revalidated_confirmed, 1, "{name}");
        assert_eq!(
            counts(&stats),
            Counts {
                memory: (0, 0),
                file: (0, 1),
                local: (0, 1),
                distributed: (0, 1),
                overall: (0, 1),
            },
            "{name}"
        );
    }
}

/// A file-store L1 whose fills fail (its device gone, say), other writes going through.
struct FailingFills(FileStore);

impl Wrap for FailingFills {
    type Inner = FileStore;
    fn inner(&self) -> &FileStore {
        &self.0
    }
}

impl WrapLocal for FailingFills {
    fn fill_each(&self, _: &[(&str, &[u8], Option<std::time::Duration>)]) -> uno_cache::Result<usize> {
        Err(Error::Backend {
            level: "file",
            op: "fill",
            reason: "the device is gone".into(),
        })
    }
}

/// An L2 hit that L1 fails to take in is a backfill skipped (and an L1 error), whichever read
/// found it: a batch read counted each of its hits so, but a single read counted it in no
/// backfill figure, so `backfills + backfills_skipped` fell short of the L2 hits to copy.
#[test]
fn an_l2_hit_l1_fails_to_take_is_one_backfill_skipped_for_single_and_batch_reads() {
    let redis = RedisServer::start();
    let reads: [Batch; 4] = [
        ("get", |c, keys| {
            keys.iter().filter(|k| c.get::<u32>(k).unwrap().is_some()).count()
        }),
        ("get_async", |c, keys| {
            keys.iter()
                .filter(|k| support::block_on(c.get_async::<u32>(k)).unwrap().is_some())
                .count()
        }),
        ("multi_get", |c, keys| c.multi_get::<u32>(keys).unwrap().len()),
        ("multi_get_raw_async", |c, keys| {
            support::block_on(c.multi_get_raw_async(keys)).unwrap().len()
        }),
    ];
    for (name, read) in reads {
        let dir = tempfile::tempdir().unwrap();
        let l1 = FileStore::open(dir.path(), uno_cache::FileStoreOptions::default()).unwrap();
        let cache = CacheManager::builder()
            .config(config(dir.path(), "redis", &[redis.addr()], true))
            .local(Arc::new(Delegate(FailingFills(l1))))
            .build()
            .unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = redis_cache(other_dir.path(), &redis);
        other.multi_set(vec![("a", 1u32), ("b", 2u32)], None).unwrap();
        assert_eq!(read(&cache, &["a", "b"]), 2, "{name}");
        // The backfill thread's batches are applied by then.
        cache.flush().unwrap();
        let stats = cache.stats();
        assert_eq!(stats.distributed.hits, 2, "{name}");
        assert_eq!(
            (stats.overall.backfills, stats.overall.backfills_skipped),
            (0, 2),
            "{name}"
        );
        assert_eq!(stats.local.sets, 0, "{name}");
        let fills = if name.starts_with("multi") { 1 } else { 2 };
        assert_eq!(stats.local.errors, fills, "{name}: one per failed fill call");
        other.multi_delete(&["a", "b"]).unwrap();
    }
}

/// A file-store L1 that refuses fills of more than one item as bad input, then, one by one,
/// refuses `big` as too large and fails `io` (its device gone), taking the others.
struct PickyFills(FileStore);

impl Wrap for PickyFills {
    type Inner = FileStore;
    fn inner(&self) -> &FileStore {
        &self.0
    }
}

impl WrapLocal for PickyFills {
    fn fill_each(&self, items: &[(&str, &[u8], Option<std::time::Duration>)]) -> uno_cache::Result<usize> {
        let too_large = |key: &str| Error::ValueTooLarge {
            key: key.to_owned(),
            len: 1,
            max: 0,
            store: "a test's L1".into(),
        };
        match items {
            [(key, ..), _, ..] => Err(too_large(key)),
            [("big", ..)] => Err(too_large("big")),
            [("io", ..)] => Err(Error::Backend {
                level: "file",
                op: "fill",
                reason: "the device is gone".into(),
            }),
            _ => self.0.fill_each(items),
        }
    }
}

/// A batch's backfills that L1 took one by one (after it refused the batch as bad input) are
/// counted as backfills and L1 sets whatever failed after them: when the last one failed with
/// an error other than bad input, the count stopped there, and the values L1 had taken were
/// counted in neither `backfills` nor `backfills_skipped`.
#[test]
fn backfills_l1_took_one_by_one_count_whichever_fill_failed_last() {
    let redis = RedisServer::start();
    for keys in [["ok", "big", "io"], ["ok", "io", "big"]] {
        let dir = tempfile::tempdir().unwrap();
        let l1 = FileStore::open(dir.path(), uno_cache::FileStoreOptions::default()).unwrap();
        let cache = CacheManager::builder()
            .config(config(dir.path(), "redis", &[redis.addr()], true))
            .local(Arc::new(Delegate(PickyFills(l1))))
            .build()
            .unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        let other = redis_cache(other_dir.path(), &redis);
        other
            .multi_set(keys.iter().map(|k| (*k, 1u32)).collect::<Vec<_>>(), None)
            .unwrap();
        assert_eq!(cache.multi_get_raw(&keys).unwrap().len(), 3, "{keys:?}");
        cache.flush().unwrap();
        let stats = cache.stats();
        assert_eq!(
            (stats.overall.backfills, stats.overall.backfills_skipped),
            (1, 2),
            "{keys:?}"
        );
        assert_eq!(stats.local.sets, 1, "{keys:?}");
        assert_eq!(stats.local.errors, 1, "{keys:?}: the batch's fill");
        assert!(cache.local().get("ok").unwrap().is_some(), "{keys:?}");
        other.multi_delete(&keys).unwrap();
    }
}
