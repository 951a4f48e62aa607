//! The model test of `local_tiers_model.rs` with a Redis L2 behind the two local tiers: seeded
//! random typed and raw reads, writes with and without TTLs, deletes, batches, prefix
//! invalidation, `get_or_set_with` and a manual clock moving on, through a manager with a small
//! file store (and memory tier) in front of a real Redis, write-through, `fallback_on_error`, no
//! backplane and the default restart policy; and, between them, what drops one level but not the
//! other: L1 clears (reads backfill from L2), restarts on the same directory (L1's entries are
//! suspect and revalidated against L2), and `FLUSHALL` (L2 forgets, L1 may still serve).
//!
//! None of those changes what a key holds, so the model keeps it through them all, and:
//! - a read answers a miss or exactly the key's last value written: never an older one, a
//!   deleted or expired one, nor another key's (`invalidate_local` deletes nothing: L2 still
//!   holds the value, so a read may answer it);
//! - a key whose L2 copy a `FLUSHALL` dropped, with a restart after it and no write since, reads
//!   as a miss: L1's restored copy is suspect, and revalidation finds nothing in L2 to confirm it
//!   (before the restart L1 may still serve it: it is the last value written);
//! - a delete, batch delete or prefix invalidation counts no more keys than were there (a key in
//!   both levels counts once).
//!
//! Checked by breaking the manager, each caught by the first seed within a few hundred
//! operations: a batch delete that leaves L1 alone; a prefix invalidation that skips L2's scan
//! (an L1 clear or restart then brings the keys back from L2); a revalidation that serves L1's copy
//! when L2 has none. One thread cannot see the write guard (a backfill racing a write of its key):
//! a backfill that ignores it passes the model run, so the second test below races them, and
//! catches a single read's backfill, or a batch's, that ignores the guard within a few dozen
//! writes.
//!
//! The manual clock starts at the real time: Redis runs its own TTLs in real time beside the
//! expiry the manager writes into each value (checked on the manager's clock), so Redis may
//! forget a value first, which the model allows. Both levels cap TTLs at the same 600 s.
//!
//! Knobs as in `local_tiers_model.rs`: `UNO_MODEL_SEED=n` runs that seed alone, `UNO_MODEL_OPS`
//! the operations per seed (default 1500). A failure names the seed, the operation's index and
//! the operations before it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod model;
mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use model::{env_u64, over_redis_toml, seeds, Keys, Runner};
use rand::Rng;
use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, ManualClock};

/// A small file store in front of a Redis L2: write-through, L2 failures hidden, no backplane,
/// the default restart policy (`revalidate`).
fn config(dir: &Path, redis: &str, key_prefix: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&over_redis_toml(dir, redis, key_prefix, "", "")).unwrap()
}

fn open(dir: &Path, redis: &str, key_prefix: &str, clock: &ManualClock) -> CacheManager {
    CacheManager::builder()
        .config(config(dir, redis, key_prefix))
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap()
}

fn ops() -> usize {
    env_u64("UNO_MODEL_OPS").map_or(1500, |n| n as usize)
}

/// What the run made the levels do, to see that it reached backfills and revalidations.
#[derive(Debug, Default)]
struct Totals {
    restarts: u64,
    l1_clears: u64,
    flushes: u64,
    l1_hits: u64,
    l2_hits: u64,
    misses: u64,
}

impl Totals {
    fn add(&mut self, cache: &CacheManager) {
        let s = cache.stats();
        self.l1_hits += s.local.hits;
        self.l2_hits += s.distributed.hits;
        self.misses += s.overall.misses;
    }
}

/// One seed's run on `redis`: random operations and, now and then, a restart, an L1 clear or a
/// `FLUSHALL`.
fn run_seed(redis: &RedisServer, seed: u64, ops: usize) {
    let dir = tempfile::tempdir().unwrap();
    let real_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let clock = ManualClock::new(u64::try_from(real_now).unwrap());
    // Each seed its own L2 keys, though a `FLUSHALL` drops them all.
    let key_prefix = format!("model{seed}:");
    let keys = Keys {
        prefix: String::new(),
        groups: 2,
        per_kind: 40,
    };
    let mut runner = Runner::new(seed, seed, keys, &clock, true).over_l2();
    let mut cache = Some(open(dir.path(), &redis.addr(), &key_prefix, &clock));
    let mut totals = Totals::default();
    for i in 0..ops {
        runner.index = i;
        match runner.rng.random_range(0..400) {
            0 | 1 => {
                runner.log("restart".to_owned());
                totals.add(cache.as_ref().unwrap());
                totals.restarts += 1;
                drop(cache.take());
                let flushed = runner.model.flushed.clone();
                runner.model.gone.extend(flushed);
                cache = Some(open(dir.path(), &redis.addr(), &key_prefix, &clock));
            }
            2 | 3 => {
                runner.log("clear L1".to_owned());
                cache.as_ref().unwrap().local().clear().unwrap();
                totals.l1_clears += 1;
            }
            4 | 5 => {
                runner.log("FLUSHALL".to_owned());
                let _: () = redis::cmd("FLUSHALL").query(&mut redis.raw()).unwrap();
                totals.flushes += 1;
                let all = runner.keys.all().into_iter().map(|(k, _)| k);
                runner.model.flushed.extend(all);
            }
            _ => runner.step(cache.as_ref().unwrap()),
        }
    }
    totals.add(cache.as_ref().unwrap());
    eprintln!("seed {seed}: {totals:?}");
}

#[test]
fn random_calls_with_l1_clears_restarts_and_l2_flushes_never_answer_a_value_the_model_does_not_hold() {
    let redis = RedisServer::start();
    for seed in seeds(&[1, 2, 3]) {
        run_seed(&redis, seed, ops());
    }
}

/// A read that misses L1 and backfills what L2 answered must not land over a write of its key
/// that ran in between: L1 would keep the older value, where no read of L2 would ever replace it,
/// until its TTL. One thread writes a few keys and reads each one back at once (it must read its
/// own write or a miss, as L2 holds nothing else), while two others drop the keys from L1 and
/// read them, alone and in batches, backfilling from L2 again and again, racing the writes
/// (`UNO_MODEL_OPS` writes, 3000 by default).
#[test]
fn backfills_racing_writes_of_their_keys_never_leave_an_older_value_in_l1() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let real_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    let clock = ManualClock::new(u64::try_from(real_now).unwrap());
    let cache = open(dir.path(), &redis.addr(), "race:", &clock);
    let keys: Vec<String> = (0..4).map(|i| format!("k{i}")).collect();
    let writes = env_u64("UNO_MODEL_OPS").map_or(3000, |n| n as usize);
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (cache, keys, done) = (&cache, &keys, &done);
            s.spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    for key in keys {
                        cache.invalidate_local(key).unwrap();
                        cache.get_raw(key).unwrap();
                    }
                    // A batch's backfills are guarded apart from a single read's.
                    for key in keys {
                        cache.invalidate_local(key).unwrap();
                    }
                    cache.multi_get_raw(keys).unwrap();
                }
            });
        }
        let writer = s.spawn(|| {
            for n in 0..writes {
                let key = &keys[n % keys.len()];
                let value = format!("write {n}").into_bytes();
                cache.set_raw(key, &value, None).unwrap();
                let got = cache.get_raw(key).unwrap();
                if got.as_ref().is_some_and(|g| *g != value) {
                    let got = String::from_utf8_lossy(got.as_deref().unwrap_or_default());
                    return Err(format!("{key:?} read {got:?} right after write {n}"));
                }
            }
            Ok(())
        });
        let result = writer.join();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{e}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    });
}
