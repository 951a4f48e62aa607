//! The backfill thread of batch reads (`src/manager/fill.rs`) outlives a panic in L1: an L1 of
//! the caller's own whose fill panics once costs that batch's backfills, not every later one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "support/delegate.rs"]
mod delegate;

use delegate::{Delegate, Wrap, WrapLocal};
use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, InProcess, LocalStorage, MemoryStore, Result, Storage,
};

/// A memory L1 whose `fill_each` panics while `panics` is set.
struct FillPanics {
    inner: MemoryStore,
    panics: AtomicBool,
}

impl Wrap for FillPanics {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn name(&self) -> &str {
        "fill-panics"
    }
}

impl WrapLocal for FillPanics {
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        assert!(!self.panics.load(Ordering::SeqCst), "L1 fill panicked (test)");
        self.inner.fill_each(items)
    }
}

#[test]
fn a_panic_in_l1_while_backfilling_a_batch_read_leaves_the_backfill_thread_running() {
    let l1 = Arc::new(Delegate(FillPanics {
        inner: MemoryStore::new(100).unwrap(),
        panics: AtomicBool::new(true),
    }));
    let l2 = Arc::new(MemoryStore::new(100).unwrap());
    let cache = CacheManager::builder()
        .config(CacheConfig::default())
        .local(Arc::clone(&l1) as Arc<dyn LocalStorage>)
        .distributed(Arc::new(InProcess::shared(Arc::clone(&l2))) as Arc<dyn DistributedStorage>)
        .build()
        .unwrap();
    for key in ["a", "b", "c", "d"] {
        l2.set(key, key.as_bytes(), None).unwrap();
    }
    // Two L2 hits: their backfills go to the thread, whose L1 fill panics.
    assert_eq!(cache.multi_get_raw(&["a", "b"]).unwrap().len(), 2);
    cache.flush().unwrap();
    assert!(l1.inner.get("a").unwrap().is_none());
    l1.panics.store(false, Ordering::SeqCst);

    assert_eq!(cache.multi_get_raw(&["c", "d"]).unwrap().len(), 2);
    let started = Instant::now();
    cache.flush().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "flush waited {:?} for a backfill queue nobody empties",
        started.elapsed()
    );
    assert_eq!(l1.inner.get("c").unwrap().map(|e| e.value), Some(b"c".to_vec()));
    assert_eq!(l1.inner.get("d").unwrap().map(|e| e.value), Some(b"d".to_vec()));
    assert!(
        cache.stats().overall.backfills_skipped >= 2,
        "the panicked batch is counted as skipped"
    );
}
