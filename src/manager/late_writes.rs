//! What a manager does when its L2 deleted a key because an older write of it, which had timed
//! out, landed after a newer one (see the Redis and Memcached levels' `doubt` modules): every
//! L1 may have read that older value in the moment it was there, so every L1 drops the key.
//!
//! The other instances are told through the backplane (`backplane::publish_late_write`). This
//! instance drops the key from its own L1 too: the backplane does not deliver an instance its
//! own messages, and without a backplane there is no message at all, so an L1 that missed the
//! key and read L2 in that moment kept the older value until its TTL. The hook is called on
//! L2's I/O thread, which must not wait: an L1 delete takes the key's write guard, which a
//! write of the key holds while it waits for L2's answer on that very thread. So the keys are
//! handed to a thread apart (`apart`, waited for at shutdown), started when the first key
//! comes and ended when none is left: corrections follow only writes that timed out, so most
//! managers never start it.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::apart::Pass;
use super::policy::Shared;

/// Keys L2 deleted after a late write, waiting to be dropped from this instance's L1.
#[derive(Debug, Default)]
pub(crate) struct LateWrites {
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    keys: Vec<String>,
    /// A thread is dropping keys; it takes what is added before it ends.
    draining: bool,
}

impl Shared {
    /// With an L2: its hook for keys deleted after a late write (see the module docs). The hook
    /// holds the manager weakly, as L2 holds the hook.
    pub(crate) fn on_late_writes(self: &Arc<Self>) {
        let Some(l2) = &self.l2 else {
            return;
        };
        let shared: Weak<Shared> = Arc::downgrade(self);
        l2.on_late_write_deleted(Arc::new(move |key: &str| {
            if let Some(shared) = shared.upgrade() {
                shared.publish_late_write(key);
                shared.drop_late_write(key);
            }
        }));
    }

    /// Hands `key` to the thread that drops such keys from L1, starting it if none runs.
    fn drop_late_write(self: &Arc<Self>, key: &str) {
        {
            let mut waiting = self.late_writes.state.lock();
            waiting.keys.push(key.to_owned());
            if waiting.draining {
                return;
            }
            waiting.draining = true;
        }
        // Shutting down: no thread starts now. The key waits for the shutdown's own drop of
        // what is left ([`Shared::drop_late_writes_left`]), as a persistent L1 outlives the run.
        let Some(pass) = Pass::enter(Arc::clone(self)) else {
            self.late_writes.state.lock().draining = false;
            return;
        };
        let started = std::thread::Builder::new()
            .name("uno-cache-late-writes".into())
            .spawn(move || drain(&pass));
        if let Err(e) = started {
            let mut waiting = self.late_writes.state.lock();
            waiting.draining = false;
            // Suspect, not served as it is: the entries of the keys it could not drop may be
            // the older values.
            let keys = std::mem::take(&mut waiting.keys);
            drop(waiting);
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.left_behind.record(super::left_behind::Removal::Keys(&refs));
            tracing::warn!(error = %e, "no thread to drop keys L2 deleted after late writes from L1; every L1 entry becomes suspect");
            self.distrust_everything();
        }
    }
}

impl Shared {
    /// At shutdown, once nothing else writes L1 (the work apart and the background threads have
    /// ended, the write-behind queue is sent): drops the keys reported while the manager shut
    /// down, which no thread could be started for. A file L1 keeps its entries across the
    /// restart, and under `restart_policy = "trust"` the next run would serve such a key's older
    /// value until its TTL. A key reported after this (by an L2 call still out) is not dropped.
    pub(crate) fn drop_late_writes_left(&self) {
        let keys = std::mem::take(&mut self.late_writes.state.lock().keys);
        if !keys.is_empty() {
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.drop_local(&refs);
        }
    }
}

/// Drops the waiting keys from L1 until none is left.
fn drain(pass: &Pass) {
    let shared = pass.shared();
    loop {
        let keys = {
            let mut waiting = shared.late_writes.state.lock();
            if waiting.keys.is_empty() {
                waiting.draining = false;
                return;
            }
            std::mem::take(&mut waiting.keys)
        };
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        shared.drop_local(&refs);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::local::memory::MemoryStore;
    use crate::storage::delegate::{Delegate, Hooked};
    use crate::storage::{DistributedStorage, InProcess, LocalStorage};

    /// L2 reports a key deleted after a late write while the manager is shutting down, once no
    /// thread may start for it: the shutdown drops it from the file L1 before it ends. It was
    /// left there, where the next run would serve it under `restart_policy = "trust"`.
    #[test]
    fn a_key_l2_deleted_after_a_late_write_during_shutdown_still_leaves_a_file_l1() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(crate::FileStore::open(dir.path(), crate::FileStoreOptions::default()).unwrap());
        let l2 = Arc::new(Delegate(Hooked::new(InProcess::new(
            MemoryStore::new(100).unwrap(),
        ))));
        let cache = crate::CacheManager::builder()
            .config(crate::CacheConfig::default())
            .local(Arc::clone(&file) as Arc<dyn LocalStorage>)
            .distributed(Arc::clone(&l2) as Arc<dyn DistributedStorage>)
            .build()
            .unwrap();
        cache.set_raw("k", b"maybe the older value", None).unwrap();
        let hook = l2.0.hook.lock().clone().unwrap();
        // The first step of the shutdown (`Workers::drop`): no work apart starts from here on.
        cache.shared.apart.close();
        hook("k");
        assert!(
            file.get("k").unwrap().is_some(),
            "dropped before the shutdown ran"
        );
        drop(cache);
        assert_eq!(file.get("k").unwrap(), None, "the file L1 kept the key");
    }
}
