//! The typed value of the memory-tier benches (a small struct with `String` fields, as the issue
//! measuring a memory-tier hit asks for) and the manager they read it through.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uno_cache::{CacheConfig, CacheManager};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: u64,
    pub name: String,
    pub email: String,
    pub score: f64,
}

pub fn user(i: u64) -> User {
    User {
        id: i,
        name: format!("user number {i}"),
        email: format!("user{i}@example.com"),
        score: i as f64 * 0.5,
    }
}

/// A manager over a 256 MiB file L1 in `dir` with a memory tier of room for twice `keys`
/// values, entries an hour from expiry: every read of the benches is a memory-tier hit.
pub fn memory_tier_manager(dir: &Path, keys: u64) -> CacheManager {
    let mut config = CacheConfig::default();
    config.local.path = Some(dir.to_path_buf());
    config.local.max_size = Some(256);
    config.local.ttl = Duration::from_secs(3600);
    config.local.memory_items = keys * 2;
    CacheManager::new(config).unwrap()
}
