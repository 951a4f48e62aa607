//! The rig of the fail-safe and loader-timeout tests (`fail_safe_stale_copies.rs`,
//! `loader_timeouts.rs`): a manager over a file-store L1 on a manual clock, with `[loader]`
//! settings of the test's choosing, and a loader error of the application's own.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use uno_cache::{CacheConfig, CacheManager, Error, LocalKind, ManualClock};

pub const START_MS: u64 = 1_700_000_000_000;
pub const TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum AppError {
    SourceDown,
    Cache(#[allow(dead_code)] Error),
}

impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Cache(e)
    }
}

pub struct Rig {
    pub cache: CacheManager,
    pub clock: ManualClock,
    _dir: tempfile::TempDir,
}

pub fn config(dir: &std::path::Path, fail_safe_s: u64, soft_ms: u64, hard_ms: u64) -> CacheConfig {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::File;
    config.local.path = Some(dir.to_owned());
    config.loader.fail_safe_max_duration = Duration::from_secs(fail_safe_s);
    config.loader.fail_safe_throttle = Duration::from_secs(5);
    config.loader.soft_timeout_ms = soft_ms;
    config.loader.hard_timeout_ms = hard_ms;
    config
}

pub fn rig(fail_safe_s: u64, soft_ms: u64, hard_ms: u64) -> Rig {
    rig_with(fail_safe_s, soft_ms, hard_ms, |_| {})
}

pub fn rig_with(fail_safe_s: u64, soft_ms: u64, hard_ms: u64, edit: impl FnOnce(&mut CacheConfig)) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let mut config = config(dir.path(), fail_safe_s, soft_ms, hard_ms);
    edit(&mut config);
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    Rig {
        cache,
        clock,
        _dir: dir,
    }
}

/// The key holds "v1", which has just expired.
pub fn expired_v1(rig: &Rig) {
    rig.cache.set("k", &"v1".to_string(), Some(TTL)).unwrap();
    rig.clock.advance(TTL + Duration::from_secs(1));
}

pub fn failing() -> Result<String, AppError> {
    Err(AppError::SourceDown)
}
