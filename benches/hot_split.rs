//! Diagnostic: a memory-tier hit split in its parts, one variant per process, so that each heap
//! is laid out by its own fill alone: `SPLIT=raw` a quick_cache `get` of `User` by `String`,
//! `SPLIT=tier` `HotTier::get` alone, `SPLIT=mgr` (default) `CacheManager::get::<User>` on a
//! file L1 with its memory tier; `SPLIT=tier-mgrfill` `HotTier::get` alone on a tier filled
//! beside a manager with the values the manager decoded (its heap laid out as the manager's
//! tier), `SPLIT=tier-besidemgr` on a tier filled after the manager (the manager's memory, the
//! tier's values laid out in a row); `KEYLEN=long` for 20-byte keys (kept outside the entry) instead
//! of `user:N`. 100 000 keys, random order, median of 9 passes (`PASSES=n` for n; under
//! `valgrind --tool=cachegrind`, the difference of two pass counts is the gets' own cost), ns per get. Compare runs of the
//! variants made back to back: on a shared machine the figures of one run move by 30 %.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    missing_docs
)]
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use uno_cache::local::hot::HotTier;
use uno_cache::SystemClock;

#[path = "shared/user.rs"]
mod shared_user;
#[path = "shared/stats.rs"]
mod stats;
use shared_user::{memory_tier_manager, user, User};

fn main() {
    const KEYS: u64 = 100_000;
    let long = std::env::var("KEYLEN").is_ok_and(|v| v == "long");
    let keys: Vec<String> = (0..KEYS)
        .map(|i| {
            if long {
                format!("tenant:acme:user:{i}")
            } else {
                format!("user:{i}")
            }
        })
        .collect();
    let mode = std::env::var("SPLIT").unwrap_or_else(|_| "mgr".into());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let order: Vec<usize> = (0..200_000).map(|_| rng.random_range(0..KEYS as usize)).collect();
    let mut times = Vec::new();
    let passes: usize = std::env::var("PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let mut time = |f: &mut dyn FnMut()| {
        f();
        for _ in 0..passes {
            let s = Instant::now();
            f();
            times.push(s.elapsed().as_nanos() as f64 / order.len() as f64);
        }
    };
    match mode.as_str() {
        "raw" => {
            let raw = quick_cache::sync::Cache::<String, User>::new(KEYS as usize * 2);
            for (i, k) in keys.iter().enumerate() {
                raw.insert(k.clone(), user(i as u64));
            }
            time(&mut || {
                for &i in &order {
                    black_box(raw.get(&keys[i]));
                }
            });
            assert!(
                order.iter().all(|&i| raw.get(&keys[i]).is_some()),
                "every timed read hits"
            );
        }
        "tier" => {
            let tier = HotTier::new(KEYS * 2, 64 << 20, Arc::new(SystemClock));
            for (i, k) in keys.iter().enumerate() {
                tier.insert(k, user(i as u64), u64::MAX / 2, 32);
            }
            time(&mut || {
                for &i in &order {
                    black_box(tier.get::<User>(&keys[i]));
                }
            });
            assert!(
                order.iter().all(|&i| tier.get::<User>(&keys[i]).is_some()),
                "every timed read hits"
            );
        }
        "tier-mgrfill" | "tier-besidemgr" => {
            let dir = tempfile::tempdir().unwrap();
            let cache = memory_tier_manager(dir.path(), KEYS);
            let tier = HotTier::new(KEYS * 2, 64 << 20, Arc::new(SystemClock));
            for (i, k) in keys.iter().enumerate() {
                cache.set(k, &user(i as u64), None).unwrap();
                let v = cache.get::<User>(k).unwrap().unwrap();
                if mode == "tier-mgrfill" {
                    tier.insert(k, v, u64::MAX / 2, 32);
                }
            }
            if mode == "tier-besidemgr" {
                for (i, k) in keys.iter().enumerate() {
                    tier.insert(k, user(i as u64), u64::MAX / 2, 32);
                }
            }
            time(&mut || {
                for &i in &order {
                    black_box(tier.get::<User>(&keys[i]));
                }
            });
            assert!(
                order.iter().all(|&i| tier.get::<User>(&keys[i]).is_some()),
                "every timed read hits"
            );
        }
        _ => {
            let dir = tempfile::tempdir().unwrap();
            let cache = memory_tier_manager(dir.path(), KEYS);
            for (i, k) in keys.iter().enumerate() {
                cache.set(k, &user(i as u64), None).unwrap();
                black_box(cache.get::<User>(k).unwrap());
            }
            let before = cache.stats().memory.misses;
            time(&mut || {
                for &i in &order {
                    black_box(cache.get::<User>(&keys[i]).unwrap());
                }
            });
            assert_eq!(
                cache.stats().memory.misses,
                before,
                "every timed read was a memory-tier hit"
            );
        }
    }
    println!(
        "bench: hot_split[{mode}, keys={}] {:.1} ns (no peer in this process: compare with SPLIT=raw run beside it)",
        if long { "long" } else { "short" },
        stats::median(&times)
    );
}
