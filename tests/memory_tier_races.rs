//! Races on the two local tiers, hammered with real threads: typed reads that would promote a
//! value into the memory tier against deletes, invalidations, writes and losses of trust of the
//! same key; no read that begins after a change returned answers the value the change replaced.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use uno_cache::{CacheConfig, CacheManager, DistributedStorage, InProcess, MemoryStore, Storage};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Val {
    n: u32,
}

fn config(dir: &Path) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        durability = "none"
        memory_items = 100
        "#,
        dir.display()
    ))
    .unwrap()
}

/// A manager with the memory tier in front of a file tier, and an in-process L2 if `l2`.
fn manager(dir: &Path, l2: Option<Arc<MemoryStore>>) -> CacheManager {
    let mut b = CacheManager::builder().config(config(dir));
    if let Some(l2) = l2 {
        b = b.distributed(Arc::new(InProcess::shared(l2)) as Arc<dyn DistributedStorage>);
    }
    b.build().unwrap()
}

/// How long the racing tests may take rounds past their minimum, for the race they are about to
/// have happened at least once: a loaded machine can keep the readers off the CPU through every
/// window of a thousand rounds. Past it, the race never happens: the code under test is what
/// keeps it from happening.
const RACE_DEADLINE: Duration = Duration::from_secs(60);

/// Whether to play another round: at least `min`, then until `raced` holds.
fn another_round(played: u32, min: u32, started: Instant, raced: impl FnOnce() -> bool) -> bool {
    if played < min {
        return true;
    }
    if raced() {
        return false;
    }
    assert!(
        started.elapsed() < RACE_DEADLINE,
        "the race never happened in {played} rounds"
    );
    true
}

/// What one round's change does to the key after writing it.
#[derive(Clone, Copy, Debug)]
enum Gone {
    Delete,
    MultiDelete,
    InvalidateLocal,
    InvalidatePrefix,
}

/// One thread writes `p:k` with ever larger numbers and drops it after each write, publishing
/// the number it dropped once the drop returned; readers (typed, `Arc`, batch) racing it never
/// answer a number already dropped when their read began. At least `rounds` rounds, and on
/// until every reader has read and the memory tier answered one of them.
fn hammer(cache: &CacheManager, drops: &[Gone], rounds: u32) {
    let dropped = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(4));
    let reads: Arc<[AtomicU64; 3]> = Arc::default();
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (cache, dropped, done, start, reads) = (
                cache.clone(),
                Arc::clone(&dropped),
                Arc::clone(&done),
                Arc::clone(&start),
                Arc::clone(&reads),
            );
            std::thread::spawn(move || {
                start.wait();
                while !done.load(Ordering::SeqCst) {
                    let before = dropped.load(Ordering::SeqCst);
                    let seen = match r {
                        0 => cache.get::<Val>("p:k").unwrap().map(|v| v.n),
                        1 => cache.get_arc::<Val>("p:k").unwrap().map(|v| v.n),
                        _ => cache
                            .multi_get::<Val>(&["p:k", "p:other"])
                            .unwrap()
                            .remove("p:k")
                            .map(|v| v.n),
                    };
                    if let Some(n) = seen {
                        assert!(
                            n > before,
                            "reader {r} read {n}, dropped up to {before} before the read"
                        );
                    }
                    reads[r].fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut n = 0;
    while another_round(n, rounds, started, || {
        reads.iter().all(|r| r.load(Ordering::SeqCst) > 0) && cache.stats().memory.hits > 0
    }) {
        n += 1;
        cache.set("p:k", &Val { n }, None).unwrap();
        match drops[n as usize % drops.len()] {
            Gone::Delete => {
                cache.delete("p:k").unwrap();
            }
            Gone::MultiDelete => {
                cache.multi_delete(&["p:k"]).unwrap();
            }
            Gone::InvalidateLocal => {
                cache.invalidate_local("p:k").unwrap();
            }
            Gone::InvalidatePrefix => {
                cache.invalidate_prefix("p:").unwrap();
            }
        }
        dropped.store(n, Ordering::SeqCst);
        assert_eq!(cache.get::<Val>("p:k").unwrap(), None, "round {n}");
        assert_eq!(cache.get_arc::<Val>("p:k").unwrap(), None, "round {n}");
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
}

#[test]
fn a_typed_read_racing_a_delete_or_local_invalidation_never_answers_the_dropped_value() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), None);
    hammer(
        &cache,
        &[
            Gone::Delete,
            Gone::MultiDelete,
            Gone::InvalidateLocal,
            Gone::InvalidatePrefix,
        ],
        1500,
    );
}

#[test]
fn a_typed_read_racing_a_delete_with_an_l2_never_answers_the_dropped_value() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let cache = manager(dir.path(), Some(l2));
    hammer(&cache, &[Gone::Delete, Gone::MultiDelete], 1500);
}

/// How a reader of [`race_l2_hits`] reads the key.
#[derive(Clone, Copy, Debug)]
enum Read {
    Get,
    GetArc,
    /// A batch read, which backfills L1 (and, through that fill, the memory tier) on the fill
    /// thread after it answered.
    Batch,
}

/// What the main thread of [`race_l2_hits`] does to the key each round, after another
/// instance's write of its next number to L2.
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Deletes it: no number is left.
    Delete,
    /// Drops it from L1, as the other instance's message does: L2's new number is left.
    InvalidateLocal,
    /// Drops every key of its prefix from L1.
    InvalidatePrefix,
    /// Writes the new number through this instance too (L1 and L2).
    Write,
}

/// L1 missing the key while L2 holds it, written there alone as another instance would: each
/// reader's read backfills both tiers, racing changes (`then`, one a round in turn) that
/// publish the last number they replaced once they returned; no read answers a number already
/// replaced when it began. At least 1000 rounds, and on until `raced` holds of the stats.
fn race_l2_hits(readers: &[Read], then: &[Then], raced: fn(&uno_cache::CacheStats) -> bool) {
    const KEYS: [&str; 2] = ["p:k", "p:j"];
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let cache = manager(dir.path(), Some(Arc::clone(&l2)));
    let codec = cache.codec();
    let dropped = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(readers.len() + 1));
    let threads: Vec<_> = readers
        .iter()
        .map(|&read| {
            let (cache, dropped, done, start) = (
                cache.clone(),
                Arc::clone(&dropped),
                Arc::clone(&done),
                Arc::clone(&start),
            );
            std::thread::spawn(move || {
                start.wait();
                while !done.load(Ordering::SeqCst) {
                    let before = dropped.load(Ordering::SeqCst);
                    let seen = match read {
                        Read::Get => cache.get::<Val>("p:k").unwrap().map(|v| v.n),
                        Read::GetArc => cache.get_arc::<Val>("p:k").unwrap().map(|v| v.n),
                        // Two keys, each an L2 hit while L1 misses it: a batch with a
                        // single L2 hit backfills it inline, not on the fill thread.
                        Read::Batch => {
                            let mut found = cache.multi_get::<Val>(&KEYS).unwrap();
                            if let Some(j) = found.remove("p:j") {
                                assert!(
                                    j.n > before,
                                    "{read:?} read {} of p:j, replaced up to {before} before the read",
                                    j.n
                                );
                            }
                            found.remove("p:k").map(|v| v.n)
                        }
                    };
                    if let Some(n) = seen {
                        assert!(
                            n > before,
                            "{read:?} read {n}, replaced up to {before} before the read"
                        );
                    }
                }
            })
        })
        .collect();
    start.wait();
    let started = Instant::now();
    let mut n = 0;
    while another_round(n, 1000, started, || raced(&cache.stats())) {
        n += 1;
        for key in KEYS {
            l2.set(key, &codec.encode(key, &Val { n }).unwrap(), None)
                .unwrap();
        }
        std::thread::yield_now();
        let left = match then[n as usize % then.len()] {
            Then::Delete => {
                for key in KEYS {
                    cache.delete(key).unwrap();
                }
                dropped.store(n, Ordering::SeqCst);
                None
            }
            change => {
                match change {
                    Then::InvalidateLocal => {
                        for key in KEYS {
                            cache.invalidate_local(key).unwrap();
                        }
                    }
                    // The in-process L2 lists no keys: it keeps them, which the call says
                    // once it has dropped them from L1 (all this race needs).
                    Then::InvalidatePrefix => match cache.invalidate_prefix("p:") {
                        Ok(_) | Err(uno_cache::Error::PrefixKeptInL2 { .. }) => {}
                        Err(e) => panic!("round {n}: {e}"),
                    },
                    _ => {
                        for key in KEYS {
                            cache.set(key, &Val { n }, None).unwrap();
                        }
                    }
                }
                dropped.store(n - 1, Ordering::SeqCst);
                Some(Val { n })
            }
        };
        for key in KEYS {
            assert_eq!(cache.get::<Val>(key).unwrap(), left, "round {n}: {key}");
        }
    }
    done.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Until a read has backfilled the memory tier.
#[test]
fn an_l2_hit_backfilled_into_both_tiers_racing_a_delete_never_outlives_it() {
    race_l2_hits(
        &[Read::Get, Read::GetArc, Read::Batch],
        &[Then::Delete],
        |stats| stats.memory.sets > 0,
    );
}

/// Batch readers alone, whose L2 hits reach the memory tier through the fill thread's copy:
/// until the memory tier has answered one of them.
#[test]
fn a_batch_reads_fill_of_the_memory_tier_racing_a_delete_never_outlives_it() {
    race_l2_hits(&[Read::Batch, Read::Batch], &[Then::Delete], |stats| {
        stats.memory.hits > 0
    });
}

/// Batch readers alone, racing what replaces the number they read (another instance's write
/// and its invalidation, local or by prefix, or a write of this instance) rather than deletes
/// it: a fill of the memory tier the fill thread makes after a replacement returned would
/// answer the number replaced. Until the memory tier has answered one of them.
#[test]
fn a_batch_reads_fill_of_the_memory_tier_racing_a_replacement_never_outlives_it() {
    race_l2_hits(
        &[Read::Batch, Read::Batch],
        &[Then::InvalidateLocal, Then::Write, Then::InvalidatePrefix],
        |stats| stats.memory.hits > 0,
    );
}

/// Every L1 entry made suspect while typed reads promote: once the marking returned, a read
/// checks L2, which another instance changed meanwhile, rather than answer from memory.
#[test]
fn a_loss_of_trust_racing_promotions_leaves_no_value_in_memory_that_l2_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let l2 = Arc::new(MemoryStore::new(1000).unwrap());
    let cache = manager(dir.path(), Some(Arc::clone(&l2)));
    let codec = cache.codec();
    let replaced = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    cache.set("k", &Val { n: 0 }, None).unwrap();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (cache, replaced, done) = (cache.clone(), Arc::clone(&replaced), Arc::clone(&done));
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let before = replaced.load(Ordering::SeqCst);
                    if let Some(v) = cache.get::<Val>("k").unwrap() {
                        assert!(v.n >= before, "read {}, L2 at {before} before the read", v.n);
                    }
                }
            })
        })
        .collect();
    for n in 1..=800u32 {
        // Another instance's write, whose message this one missed: L2 changes under L1.
        l2.set("k", &codec.encode("k", &Val { n }).unwrap(), None)
            .unwrap();
        cache.local().mark_all_suspect().unwrap();
        replaced.store(n, Ordering::SeqCst);
        assert_eq!(cache.get::<Val>("k").unwrap(), Some(Val { n }), "round {n}");
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
}

/// Writes of ever larger numbers racing typed readers of two types: no reader sees a number go
/// down, and a read after the last write answers it from either type's cache.
#[test]
fn writes_racing_readers_of_two_types_never_go_back() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), None);
    cache
        .set("k", &Val { n: 0 }, Some(Duration::from_secs(60)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (cache, done) = (cache.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut last = 0u32;
                while !done.load(Ordering::SeqCst) {
                    let n = match r {
                        0 => cache.get::<Val>("k").unwrap().unwrap().n,
                        1 => cache.get_arc::<Val>("k").unwrap().unwrap().n,
                        _ => cache.get::<u32>("k").unwrap().unwrap(),
                    };
                    assert!(n >= last, "reader {r}: {n} after {last}");
                    last = n;
                }
            })
        })
        .collect();
    for n in 1..=2000u32 {
        // With and without a TTL of its own: the second only drops the key from memory.
        let ttl = (n % 2 == 0).then(|| Duration::from_secs(60));
        cache.set("k", &Val { n }, ttl).unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    assert_eq!(cache.get::<Val>("k").unwrap(), Some(Val { n: 2000 }));
    assert_eq!(
        cache.get_arc::<Val>("k").unwrap().as_deref(),
        Some(&Val { n: 2000 })
    );
}

/// A set racing an invalidation of its key (local, or by prefix: neither waits for the set, as a
/// delete would), the key held in the memory tier before each round: once both returned, the
/// memory tier answers what the file tier holds, whichever landed last.
#[test]
fn a_set_racing_an_invalidation_leaves_the_memory_tier_agreeing_with_the_file_tier() {
    let dir = tempfile::tempdir().unwrap();
    let cache = manager(dir.path(), None);
    for n in 1..=1000u32 {
        cache.set("p:k", &Val { n: 0 }, None).unwrap();
        assert_eq!(
            cache.get::<Val>("p:k").unwrap(),
            Some(Val { n: 0 }),
            "round {n}: held"
        );
        let start = Arc::new(Barrier::new(2));
        let invalidation = {
            let (cache, start) = (cache.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                // A few in a row, so that one often runs while the set does and none after.
                for _ in 0..n % 5 + 1 {
                    if n % 2 == 0 {
                        cache.invalidate_local("p:k").unwrap();
                    } else {
                        cache.invalidate_prefix("p:").unwrap();
                    }
                }
            })
        };
        start.wait();
        cache.set("p:k", &Val { n }, None).unwrap();
        invalidation.join().unwrap();
        let file = cache
            .local()
            .get("p:k")
            .unwrap()
            .map(|e| cache.codec().decode::<Val>("p:k", &e.value).unwrap());
        assert_eq!(cache.get::<Val>("p:k").unwrap(), file, "round {n}");
        assert_eq!(
            cache.get_arc::<Val>("p:k").unwrap().as_deref(),
            file.as_ref(),
            "round {n}"
        );
    }
}
