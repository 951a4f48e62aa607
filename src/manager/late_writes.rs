//! What a manager does when its L2 deleted a key because an older write of it, which had timed
//! out, landed after a newer one (see the Redis and Memcached levels' `doubt` modules): every
//! L1 may have read that older value in the moment it was there, so every L1 drops the key.
//!
//! The other instances are told through the backplane (`backplane::publish_late_write`). This
//! instance drops the key from its own L1 too: the backplane does not deliver an instance its
//! own messages, and without a backplane there is no message at all, so an L1 that missed the
//! key and read L2 in that moment kept the older value until its TTL. The hook is called on
//! L2's I/O thread, which every L2 call of every caller waits on: the L1 delete (a file L1's
//! disk work) must not run there. So the keys are handed to a thread apart (`apart`, waited for
//! at shutdown), started when the first key comes and ended when none is left: corrections
//! follow only writes that timed out, so most managers never start it.
//!
//! The hook passes the `apart` gate before it takes the manager's state, as a load apart from
//! its caller does: uncounted, a report that came while the last handle was dropped held the
//! state past the shutdown, which then released it (the file L1, the L2 and its I/O thread) on
//! the I/O thread after the drop had returned. A report the closed gate turns away waits, in a
//! list the hook holds by itself, for the shutdown's own publish and drop of it.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::apart::{Apart, Pass};
use super::policy::Shared;

/// Keys L2 deleted after a late write, waiting to be dropped from this instance's L1. Held by
/// the hook too, apart from the manager's state (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct LateWrites {
    state: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    keys: Vec<String>,
    /// A thread is dropping keys; it takes what is added before it ends.
    draining: bool,
    /// The shutdown took what was left: a key reported from now on is not kept (nothing would
    /// drop it, and an L2 the caller keeps may report for long after the manager is gone).
    ended: bool,
}

impl LateWrites {
    /// Keeps `key`, reported once the gate was closed, for the shutdown
    /// ([`Shared::drop_late_writes_left`]), unless it already ran.
    fn leave_for_shutdown(&self, key: &str) {
        let mut waiting = self.state.lock();
        if !waiting.ended {
            waiting.keys.push(key.to_owned());
        }
    }
}

impl Shared {
    /// With an L2: its hook for keys deleted after a late write (see the module docs). The hook
    /// holds the manager weakly, as L2 holds the hook, and takes it only through the gate.
    pub(crate) fn on_late_writes(self: &Arc<Self>) {
        let Some(l2) = &self.l2 else {
            return;
        };
        let shared: Weak<Shared> = Arc::downgrade(self);
        let apart: Arc<Apart> = Arc::clone(&self.apart);
        let late_writes = Arc::clone(&self.late_writes);
        l2.on_late_write_deleted(Arc::new(move |key: &str| {
            match Pass::enter_weak(&apart, &shared) {
                Some(pass) => {
                    pass.shared().publish_late_write(key);
                    drop_late_write(pass, key);
                }
                // Shutting down: no thread starts now. The key waits for the shutdown's own
                // publish and drop of what is left, as a persistent L1 outlives the run.
                None => late_writes.leave_for_shutdown(key),
            }
        }));
    }

    /// At shutdown, once nothing else writes L1 (the work apart and the background threads have
    /// ended, the write-behind queue is sent) and before the backplane's last send: publishes
    /// and drops the keys reported while the manager shut down, which no thread could be started
    /// for. A file L1 keeps its entries across the restart, and under `restart_policy = "trust"`
    /// the next run would serve such a key's older value until its TTL. A key reported after
    /// this (by an L2 call still out) is not dropped.
    pub(crate) fn drop_late_writes_left(&self) {
        let keys = {
            let mut waiting = self.late_writes.state.lock();
            waiting.ended = true;
            std::mem::take(&mut waiting.keys)
        };
        if !keys.is_empty() {
            for key in &keys {
                self.publish_late_write(key);
            }
            let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            self.drop_local(&refs);
        }
    }
}

/// Hands `key` to the thread that drops such keys from L1, starting it if none runs; `pass`
/// counts the hook in until it returns.
fn drop_late_write(pass: Pass, key: &str) {
    let shared = pass.shared();
    {
        let mut waiting = shared.late_writes.state.lock();
        waiting.keys.push(key.to_owned());
        if waiting.draining {
            return;
        }
        waiting.draining = true;
    }
    // A pass of its own for the thread: the hook's is kept for a thread that cannot start.
    let Some(theirs) = Pass::enter(Arc::clone(shared)) else {
        // Closed meanwhile: the key waits for the shutdown, as one the gate turned away.
        shared.late_writes.state.lock().draining = false;
        return;
    };
    let started = std::thread::Builder::new()
        .name("uno-cache-late-writes".into())
        .spawn(move || drain(&theirs));
    if let Err(e) = started {
        let mut waiting = shared.late_writes.state.lock();
        waiting.draining = false;
        // Suspect, not served as it is: the entries of the keys it could not drop may be
        // the older values.
        let keys = std::mem::take(&mut waiting.keys);
        drop(waiting);
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        shared
            .left_behind
            .record(super::left_behind::Removal::Keys(&refs));
        tracing::warn!(error = %e, "no thread to drop keys L2 deleted after late writes from L1; every L1 entry becomes suspect");
        shared.distrust_everything();
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
    use std::sync::{Arc, Barrier};

    use crate::local::memory::MemoryStore;
    use crate::manager::apart::tests::hold_this_thread_before_entering;
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

    /// L2 reports a late write on its I/O thread while the manager's last handle is being
    /// dropped: the report holds nothing of the manager's until the gate lets it in. The hook
    /// took the shared state first and asked the gate only after: uncounted, the shutdown did
    /// not wait for it, and the state (the file L1, and the L2 with its I/O thread) was released
    /// afterwards on that thread, once the drop had returned. A program that reopened the store
    /// right after the drop found it locked.
    #[test]
    fn a_late_write_reported_during_the_drop_holds_nothing_of_the_manager() {
        let dir = tempfile::tempdir().unwrap();
        let open = || crate::FileStore::open(dir.path(), crate::FileStoreOptions::default());
        let l2 = Arc::new(Delegate(Hooked::new(InProcess::new(
            MemoryStore::new(100).unwrap(),
        ))));
        let cache = crate::CacheManager::builder()
            .config(crate::CacheConfig::default())
            .local(Arc::new(open().unwrap()) as Arc<dyn LocalStorage>)
            .distributed(Arc::clone(&l2) as Arc<dyn DistributedStorage>)
            .build()
            .unwrap();
        let hook = l2.0.hook.lock().clone().unwrap();
        let hold = Arc::new(Barrier::new(2));
        let report = {
            let hold = Arc::clone(&hold);
            std::thread::spawn(move || {
                hold_this_thread_before_entering(hold);
                hook("k");
            })
        };
        // The report is at the gate, and held there until the second meeting.
        hold.wait();
        drop(cache);
        let reopened = open();
        hold.wait();
        report.join().unwrap();
        reopened.unwrap_or_else(|e| {
            panic!("the store could not be reopened right after the manager's drop: {e}")
        });
    }
}
