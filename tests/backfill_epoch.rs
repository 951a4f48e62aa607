//! A value a read takes from L2 is written into L1 only in the suspect epoch the read began
//! in. The manager's stripes keep its own marks out; these tests make the mark from another
//! holder of the same L1 (a second manager over it, a direct user), on a thread of its own,
//! while the read is between its L2 read and its backfill, or inside the backfill's write. That
//! holder also sets the key anew in L2: the change its lost certainty stands for. Before, the
//! value read from L2 before the mark landed in L1 trusted, and the next read served it over
//! L2's newer one. Real `redis-server` L2; file, memory and two-tier L1s.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use delegate::{Delegate, Wrap, WrapDistributed, WrapLocal};
use support::RedisServer;
use uno_cache::local::hot::HotTier;
use uno_cache::local::tiered::Tiered;
use uno_cache::{
    BoxFuture, CacheConfig, CacheManager, DistributedStorage, Entry, FileStore, FileStoreOptions,
    LocalStorage, MemoryStore, RedisOptions, RedisStore, Result, Storage, SystemClock,
};

const OLD: &[u8] = b"old";
const NEW: &[u8] = b"new";
const KEYS: [&str; 2] = ["a", "b"];

/// The other holder of L1 and L2: on a thread of its own, sets [`KEYS`] to [`NEW`] in L2 and
/// marks every L1 entry suspect, and is waited for.
#[derive(Clone)]
struct OtherHolder {
    l1: Arc<dyn LocalStorage>,
    l2: Arc<RedisStore>,
}

impl OtherHolder {
    fn changes_and_marks(&self) {
        let (l1, l2) = (self.l1.clone(), self.l2.clone());
        std::thread::spawn(move || {
            for key in KEYS {
                l2.set(key, NEW, None).unwrap();
            }
            l1.mark_all_suspect().unwrap();
        })
        .join()
        .unwrap();
    }
}

/// The manager's L2: Redis, whose first read once armed lets [`OtherHolder`] change and mark
/// before it answers (what it read, from before).
struct MarkAfterRead {
    redis: Arc<RedisStore>,
    other: OtherHolder,
    armed: AtomicBool,
}

impl MarkAfterRead {
    fn after_read(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.other.changes_and_marks();
        }
    }
}

impl Wrap for MarkAfterRead {
    type Inner = RedisStore;
    fn inner(&self) -> &RedisStore {
        &self.redis
    }
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let read = self.redis.get(key);
        self.after_read();
        read
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        let read = self.redis.get_many(keys);
        self.after_read();
        read
    }
}

impl WrapDistributed for MarkAfterRead {
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move {
            let read = self.redis.get_async(key).await;
            self.after_read();
            read
        })
    }
    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        Box::pin(async move {
            let read = self.redis.get_many_async(keys).await;
            self.after_read();
            read
        })
    }
}

/// The manager's L1: the shared level, whose first fill once armed lets [`OtherHolder`] change
/// and mark just before it writes (after the manager looked at the epoch); with
/// `failing_deletes`, its batch deletes fail (the disk went read-only).
struct MarkBeforeFill {
    l1: Arc<dyn LocalStorage>,
    other: OtherHolder,
    armed: AtomicBool,
    failing_deletes: bool,
}

impl Wrap for MarkBeforeFill {
    type Inner = dyn LocalStorage;
    fn inner(&self) -> &dyn LocalStorage {
        &*self.l1
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if self.failing_deletes {
            return Err(uno_cache::Error::Backend {
                level: "local",
                op: "delete_many",
                reason: "the disk went read-only".into(),
            });
        }
        self.l1.delete_many(keys)
    }
}

impl WrapLocal for MarkBeforeFill {
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.other.changes_and_marks();
        }
        self.l1.fill_each(items)
    }
}

/// The local levels that keep or forget entries on a loss of certainty, named.
fn locals(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn LocalStorage>)> {
    let file = || FileStore::open(dir.join("file"), FileStoreOptions::default().max_size_mb(64)).unwrap();
    let hot = Arc::new(HotTier::new(100, 1 << 20, Arc::new(SystemClock)));
    vec![
        ("file", Arc::new(file()) as Arc<dyn LocalStorage>),
        ("memory", Arc::new(MemoryStore::new(100).unwrap())),
        (
            "two-tier",
            Arc::new(Tiered::new(
                hot,
                Arc::new(
                    FileStore::open(dir.join("tiers"), FileStoreOptions::default().max_size_mb(64)).unwrap(),
                ),
            )),
        ),
    ]
}

fn redis(server: &RedisServer, prefix: &str) -> Arc<RedisStore> {
    Arc::new(RedisStore::connect(RedisOptions::new(server.addr()).prefix(prefix)).unwrap())
}

fn manager(l1: Arc<dyn LocalStorage>, l2: Arc<dyn DistributedStorage>) -> CacheManager {
    CacheManager::builder()
        .config(CacheConfig::default())
        .local(l1)
        .distributed(l2)
        .build()
        .unwrap()
}

/// A read of [`KEYS`] through the manager, named: a single read of each or a batch of both.
type Read = (&'static str, fn(&CacheManager) -> Vec<Option<Vec<u8>>>);

fn reads() -> [Read; 4] {
    [
        ("get_raw", |c| {
            KEYS.iter().map(|k| c.get_raw(k).unwrap()).collect()
        }),
        ("get_raw_async", |c| {
            KEYS.iter()
                .map(|k| support::block_on(c.get_raw_async(k)).unwrap())
                .collect()
        }),
        ("multi_get_raw", |c| {
            let mut found = c.multi_get_raw(&KEYS).unwrap();
            KEYS.iter().map(|k| found.remove(*k)).collect()
        }),
        ("multi_get_raw_async", |c| {
            let mut found = support::block_on(c.multi_get_raw_async(&KEYS)).unwrap();
            KEYS.iter().map(|k| found.remove(*k)).collect()
        }),
    ]
}

/// `read` of keys L1 misses and L2 holds as [`OLD`], armed: the first key's read answers
/// [`OLD`] (what L2 held when asked). Once the backfills are written (`flush`), a read of each
/// key must answer [`NEW`]: L1 must not hold `OLD` trusted after the other holder's mark. What
/// went wrong, if anything (every read and level is tried, to say which fail).
fn the_next_read_answers_l2s_new_value(
    cache: &CacheManager,
    l2: &RedisStore,
    arm: &AtomicBool,
    (name, read): Read,
    l1_name: &str,
) -> Option<String> {
    for key in KEYS {
        l2.set(key, OLD, None).unwrap();
        cache.local().delete(key).unwrap();
    }
    arm.store(true, Ordering::SeqCst);
    let first = read(cache);
    assert_eq!(first[0].as_deref(), Some(OLD), "{l1_name}, {name}");
    cache.flush().unwrap();
    assert!(
        !arm.load(Ordering::SeqCst),
        "{l1_name}, {name}: the mark was not made"
    );
    let next: Vec<Option<Vec<u8>>> = KEYS.iter().map(|k| cache.get_raw(k).unwrap()).collect();
    let new = [Some(NEW.to_vec()), Some(NEW.to_vec())];
    (next != new).then(|| format!("{l1_name} L1, {name}: the next reads answered {next:?}"))
}

#[test]
fn a_value_read_from_l2_before_another_holders_mark_is_not_backfilled_trusted() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for (i, (l1_name, l1)) in locals(dir.path()).into_iter().enumerate() {
        let redis = redis(&server, &format!("be{i}:"));
        let other = OtherHolder {
            l1: l1.clone(),
            l2: redis.clone(),
        };
        let l2 = Arc::new(Delegate(MarkAfterRead {
            redis: redis.clone(),
            other,
            armed: AtomicBool::new(false),
        }));
        let cache = manager(l1, l2.clone());
        for read in reads() {
            failed.extend(the_next_read_answers_l2s_new_value(
                &cache, &redis, &l2.armed, read, l1_name,
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "a value read from L2 before another holder's mark_all_suspect was backfilled into L1 \
         as trusted after it: {failed:#?}"
    );
}

/// A manager over `shared` wrapped in [`MarkBeforeFill`] (not armed yet), whose other holder
/// writes to Redis under `prefix`.
fn marking_before_fill(
    server: &RedisServer,
    prefix: &str,
    shared: Arc<dyn LocalStorage>,
    failing_deletes: bool,
) -> (Arc<Delegate<MarkBeforeFill>>, Arc<RedisStore>, CacheManager) {
    let redis = redis(server, prefix);
    let other = OtherHolder {
        l1: shared.clone(),
        l2: redis.clone(),
    };
    let l1 = Arc::new(Delegate(MarkBeforeFill {
        l1: shared,
        other,
        armed: AtomicBool::new(false),
        failing_deletes,
    }));
    let cache = manager(l1.clone(), redis.clone());
    (l1, redis, cache)
}

#[test]
fn a_mark_that_lands_while_a_backfill_is_written_takes_the_backfill_out() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for (i, (l1_name, shared)) in locals(dir.path()).into_iter().enumerate() {
        let (l1, redis, cache) = marking_before_fill(&server, &format!("bw{i}:"), shared, false);
        for read in reads() {
            failed.extend(the_next_read_answers_l2s_new_value(
                &cache, &redis, &l1.armed, read, l1_name,
            ));
        }
    }
    assert!(
        failed.is_empty(),
        "a backfill written across another holder's mark_all_suspect stayed in L1, trusted: \
         {failed:#?}"
    );
}

/// As above, but L1 cannot take the backfill out again: it is distrusted instead (every hit
/// checked against L2), so the next read still answers L2's new value. One read per level: the
/// distrust outlasts it.
#[test]
fn a_backfill_written_across_a_mark_that_l1_cannot_take_out_leaves_l1_distrusted() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for (i, (l1_name, shared)) in locals(dir.path()).into_iter().enumerate() {
        let (l1, redis, cache) = marking_before_fill(&server, &format!("bd{i}:"), shared, true);
        failed.extend(the_next_read_answers_l2s_new_value(
            &cache,
            &redis,
            &l1.armed,
            reads()[0],
            l1_name,
        ));
        assert!(
            cache.stats().local.errors >= 1,
            "{l1_name}: the failed delete is counted"
        );
    }
    assert!(
        failed.is_empty(),
        "a backfill written across another holder's mark_all_suspect, which L1 could not take \
         out, was served trusted: {failed:#?}"
    );
}
