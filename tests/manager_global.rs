//! The process-wide instance: `get_instance` before `init_global` is a typed error, the first
//! `init_global` wins, a second one is refused without opening anything, and every thread sees
//! the same manager.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use uno_cache::{CacheConfig, CacheManager, Error, LocalKind};

fn memory_config() -> CacheConfig {
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    config
}

// One test function: the instance is process-wide, so the steps must run in this order.
#[test]
fn global_instance_is_initialised_once_and_shared_by_every_thread() {
    assert!(matches!(
        CacheManager::get_instance(),
        Err(Error::GlobalNotInitialized)
    ));

    let first = CacheManager::init_global(memory_config()).unwrap();
    first.set("shared", &"from main", None).unwrap();

    assert!(matches!(
        CacheManager::init_global(memory_config()),
        Err(Error::GlobalAlreadyInitialized)
    ));
    let other = CacheManager::new(memory_config()).unwrap();
    assert!(matches!(
        CacheManager::init_global_with(other),
        Err(Error::GlobalAlreadyInitialized)
    ));

    std::thread::scope(|s| {
        for i in 0..4 {
            s.spawn(move || {
                let cache = CacheManager::get_instance().unwrap();
                assert!(std::ptr::eq(cache, first));
                assert_eq!(
                    cache.get::<String>("shared").unwrap().as_deref(),
                    Some("from main")
                );
                cache.set(&format!("t{i}"), &i, None).unwrap();
            });
        }
    });
    let cache = CacheManager::get_instance().unwrap();
    assert_eq!(cache.get::<i32>("t3").unwrap(), Some(3));
    assert_eq!(cache.stats().local.sets, 5);
}
