//! The write-behind writer undoes in L1 a write L2 did not take; an L1 a user plugged in may
//! panic there, and the writer must go on sending the batches after it.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tests::HeldL2;
use crate::error::Result;
use crate::local::memory::MemoryStore;
use crate::storage::delegate::{Delegate, Wrap, WrapLocal};
use crate::storage::Storage;

/// A memory L1 whose deletes always panic, as a faulty level a user plugged in might; each
/// delete first says so on `deleting`.
struct DeletesPanic {
    inner: MemoryStore,
    deleting: Mutex<mpsc::Sender<()>>,
}

impl DeletesPanic {
    fn entered_delete(&self) {
        let _ = self.deleting.lock().unwrap().send(());
        panic!("delete panicked (test)");
    }
}

impl Wrap for DeletesPanic {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.inner
    }
    fn name(&self) -> &str {
        "custom"
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.entered_delete();
        self.inner.delete(key)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.entered_delete();
        self.inner.delete_many(keys)
    }
}

impl WrapLocal for DeletesPanic {}

/// With no replay queue and `fallback_on_error = false`, a batch L2 did not take is undone in
/// L1 by the writer thread. An L1 whose delete panicked there ended the thread (the catch around
/// the send took the first panic, and the failed batch's second undo panicked past it): every
/// later write-behind batch stayed queued, never sent. Now the panic is a failed delete (counted,
/// every L1 entry made suspect, here dropped) and the writer sends the next batch.
#[test]
fn an_l1_that_panics_while_the_writer_undoes_a_failed_batch_does_not_stop_the_writer() {
    let l2 = HeldL2::new();
    let (deleting, deleted) = mpsc::channel();
    let l1 = Arc::new(Delegate(DeletesPanic {
        inner: MemoryStore::new(100).unwrap(),
        deleting: Mutex::new(deleting),
    }));
    let mut config = crate::CacheConfig {
        fallback_on_error: false,
        ..Default::default()
    };
    config.offline.replay = false;
    config.distributed.write_mode = crate::WriteMode::Behind;
    let cache = crate::CacheManager::builder()
        .config(config)
        .local(l1.clone())
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();

    l2.batches_fail.store(true, Ordering::Relaxed);
    let failing = l2.hold("set_each");
    cache.set_raw("lost", b"v1", None).unwrap();
    failing.wait_entered();
    failing.release.send(()).unwrap();
    // The writer thread undoes `lost` in L1, which panics.
    deleted
        .recv_timeout(Duration::from_secs(20))
        .expect("the writer never undid the failed batch in L1");
    l2.batches_fail.store(false, Ordering::Relaxed);

    let sending = l2.hold("set_each");
    cache.set_raw("next", b"v2", None).unwrap();
    sending.wait_entered();
    sending.release.send(()).unwrap();
    // `lost` failed with no replay queue to take it: the flush reports it.
    let flushed = cache.flush();
    assert!(
        matches!(&flushed, Err(crate::Error::WriteBehindLost { writes: 1, key, .. }) if key == "lost"),
        "{flushed:?}"
    );
    assert_eq!(
        l2.inner.get("next").unwrap().map(|e| e.value).as_deref(),
        Some(&b"v2"[..]),
        "the writer stopped"
    );
    assert!(cache.stats().local.errors >= 1, "the panic was not counted");
    assert_eq!(
        cache.get_raw("lost").unwrap(),
        None,
        "L1 still serves the write L2 did not take"
    );
}
