//! Quickstart: the cache on its embedded default — a crash-safe file store in `./uno-cache-data`,
//! no server needed. Typed values, TTLs, a loader with stampede protection, a restart, and stats.
//!
//! Run: `cargo run --release --example quickstart` (run it twice within five minutes, the default
//! `local.ttl`: the second run finds the first run's entries on disk).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uno_cache::{CacheConfig, CacheManager};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

fn load_user_from_database(id: u64) -> Result<User, uno_cache::Error> {
    Ok(User {
        id,
        name: format!("user number {id}"),
    })
}

fn main() -> Result<(), uno_cache::Error> {
    // The default configuration: L1 = file store in ./uno-cache-data, no L2.
    let mut config = CacheConfig::default();
    if let Some(dir) = std::env::args().nth(1) {
        config.local.path = Some(dir.into());
    }

    {
        let cache = CacheManager::new(config.clone())?;
        let runs: u64 = cache.get("quickstart:runs")?.unwrap_or(0);
        // Set without a TTL, the count lives `local.ttl` (300 s by default) after each run.
        println!("this quickstart ran {runs} time(s) before (its count survives restarts)");
        cache.set("quickstart:runs", &(runs + 1), None)?;

        // Typed values with a TTL. Each level caps a TTL at its own: L1 keeps this one for
        // `local.ttl` (300 s by default), not an hour; raise `local.ttl` to keep entries longer.
        cache.set(
            "user:1",
            &User {
                id: 1,
                name: "Ada".into(),
            },
            Some(Duration::from_secs(3600)),
        )?;
        let ada: Option<User> = cache.get("user:1")?;
        println!("user:1 = {ada:?}");

        // Read-through with one loader per key, however many callers ask at once.
        let user = cache.get_or_set_with("user:2", Some(Duration::from_secs(600)), || {
            load_user_from_database(2)
        })?;
        println!("user:2 = {user:?}");

        // Batches.
        let items: Vec<(String, User)> = (10..20)
            .map(|id| {
                (
                    format!("user:{id}"),
                    User {
                        id,
                        name: format!("batch {id}"),
                    },
                )
            })
            .collect();
        cache.multi_set(items, Some(Duration::from_secs(600)))?;
        let found = cache.multi_get::<User>(&["user:10", "user:15", "user:99"])?;
        println!("multi_get found {} of 3", found.len());

        cache.delete("user:2")?;
        cache.flush()?;
    } // dropped: the store closes and writes its hint files

    // A restart: what was written is there, the delete held.
    let cache = CacheManager::new(config)?;
    assert!(cache.get::<User>("user:2")?.is_none());
    println!("after restart: user:15 = {:?}", cache.get::<User>("user:15")?);
    let stats = cache.monitor().get_stats();
    println!(
        "stats: local hit rate {:.2}, {} items, {} bytes",
        stats.hit_rate.local, stats.size.local.items, stats.size.local.bytes
    );
    Ok(())
}
