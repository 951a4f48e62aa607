//! The rules of a prefix invalidation around L2's scan, for both shells
//! (`CacheManager::invalidate_prefix` and its async form, in `maintenance`): the shells drain the
//! write-behind queue, make L2's scan and publish the message; the steps before and after the
//! scan, and what a scan cut short still owes, are here, said once.
//!
//! An async invalidation dropped during L2's scan (a caller's timeout), or a scan whose round
//! trip timed out, leaves an `UNLINK` that may still land, for as long as any cancelled command
//! may: four L2 timeouts (`Shared::cancel_quiet`). Reads keep nothing in L1 meanwhile
//! ([`KeyOrder::quiet_all`]), but a set of this manager writes L1 itself: its key's L2 copy,
//! written meanwhile on L2's own connection, can be deleted by the late `UNLINK` on the tag
//! store's, and L1 alone kept the value until its TTL. So L1's keys under the prefix are
//! dropped once more at the end of the window ([`LateDrops`]), as the backplane repeats the
//! invalidation to the other instances once the command has likely run (`repeat_later_after`).
//! A set in the window is then in neither level, or, made after the `UNLINK` landed, read back
//! from L2.
//!
//! [`KeyOrder::quiet_all`]: super::guard::KeyOrder::quiet_all

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::apart::Pass;
use super::l2_keys::InL2;
use super::policy::Shared;
use crate::error::{Error, Result};

/// A prefix invalidation past its first L1 drop, on its way to L2's scan
/// ([`Shared::prefix_before_l2`]), for [`Shared::prefix_after_l2`].
pub(crate) struct PrefixBegun {
    /// How many keys L1 dropped.
    dropped: u64,
    /// Which (none if L1 was cleared instead), until L2's scan takes them
    /// ([`take_l1_keys`](Self::take_l1_keys)) not to count them again.
    l1_keys: Vec<String>,
    /// Whether the replay queue had writes under the prefix (turned into deletes), or the
    /// queue's error.
    queued: Result<bool>,
    /// L1's error, where it kept keys under the prefix that the next start serves without
    /// asking L2 (see `Shared::take_out_of_l1`): the call's answer, once every other step ran.
    kept: Option<Error>,
}

impl PrefixBegun {
    /// Whether L1 is dropped again once L2's scan is over: a set of this manager that ran whole
    /// between the first drop and L2's scan (or the queue's listing) is gone from L2 by then,
    /// or will be, and its L1 copy must go too, so the levels agree.
    pub(crate) fn drops_again(&self, s: &Shared) -> bool {
        s.l2_keys.deletes() || matches!(self.queued, Ok(true))
    }

    /// The keys L1 dropped, for L2's scan, which counts only the keys it deletes that are not
    /// among them: the call counts each key once, in whichever levels it was.
    pub(crate) fn take_l1_keys(&mut self) -> Vec<String> {
        std::mem::take(&mut self.l1_keys)
    }
}

impl Shared {
    /// The steps before L2's scan: L1's keys under `prefix` dropped (an error listing them
    /// ends the call; one deleting them that leaves keys the next start serves fails it only
    /// at its end, as the queue's does), then the writes under it still waiting in the replay queue turned into deletes
    /// (they came before the call: replayed as sets, they would bring the keys back). A queue
    /// that cannot take the deletes fails the call only at its end: L2's scan, the second L1
    /// drop and the message still come, as L2 and the other instances must lose the prefix all
    /// the same.
    pub(crate) fn prefix_before_l2(&self, prefix: &str) -> Result<PrefixBegun> {
        let dropped = self.drop_local_prefix_keys(prefix)?;
        let queued = self.queue_prefix_deletes(prefix);
        Ok(PrefixBegun {
            dropped: dropped.count,
            l1_keys: dropped.keys,
            queued,
            kept: dropped.kept,
        })
    }

    /// The step after L2's scan answered `in_l2` (what it deleted, or that L2 cannot list its
    /// keys): L1 dropped again where [`PrefixBegun::drops_again`] says so and L2 may have
    /// deleted keys, also after L2's error (the scan may have deleted part of the prefix before
    /// it failed). A scan that timed out owes what a cancelled one does
    /// ([`prefix_cancelled`](Self::prefix_cancelled)): its last `UNLINK` may land still.
    /// Returns the call's answer, which the shell gives once it has published the message: the
    /// keys dropped from L1 or L2, each once (see [`InL2`]), or the first error of the first
    /// drop where L1 kept keys the next start serves (`Error::PrefixKeptInL1`), the second
    /// drop, the queue and L2's scan; and, all those done, `Error::PrefixKeptInL2` on an L2
    /// that cannot list its keys.
    pub(crate) fn prefix_after_l2(
        self: &Arc<Self>,
        prefix: &str,
        begun: PrefixBegun,
        in_l2: Result<InL2>,
    ) -> Result<u64> {
        // An L2 that cannot list its keys deleted none: L1 is dropped again then only for the
        // queue's deletes.
        let kept = matches!(in_l2, Ok(InL2::Kept { .. }));
        let again = if matches!(in_l2, Err(Error::Timeout { .. })) {
            self.prefix_cancelled(prefix).map(drop)
        } else if begun.drops_again(self) && (!kept || matches!(begun.queued, Ok(true))) {
            self.drop_local_prefix(prefix).map(drop)
        } else {
            Ok(())
        };
        if let Some(cause) = begun.kept {
            return Err(Error::PrefixKeptInL1 {
                prefix: crate::error::key_for_error(prefix),
                dropped: begun.dropped,
                cause: Box::new(cause),
            });
        }
        again?;
        begun.queued?;
        let in_l2 = in_l2?;
        let dropped = in_l2.with_l1(begun.dropped);
        match in_l2 {
            // Not a silent `Ok`: L2 still serves the values, and the next read of a key brings
            // its old value back into L1 (see `Error::PrefixKeptInL2`).
            InL2::Kept { level } => Err(Error::PrefixKeptInL2 {
                level,
                prefix: crate::error::key_for_error(prefix),
                dropped,
            }),
            InL2::Uncounted(_) | InL2::Deleted(_) => Ok(dropped),
        }
    }
}

impl Shared {
    /// What a prefix invalidation dropped during L2's scan, or whose scan timed out, still owes
    /// (see the module docs):
    /// L1's keys under `prefix` dropped again at once (a set that ran whole since the first drop
    /// may have lost its L2 copy) and once more at the end of the quiet window, and no backfill
    /// of any key until then (the keys are L2's, listed by nobody here). Returns the keys
    /// dropped now.
    pub(crate) fn prefix_cancelled(self: &Arc<Self>, prefix: &str) -> Result<u64> {
        self.guard.quiet_all(self.cancel_quiet);
        self.drop_prefix_later(prefix);
        self.drop_local_prefix(prefix)
    }

    /// Owes an L1 drop of `prefix` at the end of the quiet window that begins now, made by a
    /// thread of its own (one at a time, for every prefix owed), held as work apart from its
    /// caller (see `apart`).
    fn drop_prefix_later(self: &Arc<Self>, prefix: &str) {
        let due = Instant::now().checked_add(self.cancel_quiet);
        {
            let mut owed = self.late_drops.owed.lock();
            let at = owed.due.entry(prefix.to_owned()).or_insert(due);
            *at = (*at).zip(due).map(|(a, b)| a.max(b));
            if std::mem::replace(&mut owed.running, true) {
                return;
            }
        }
        let started = Pass::enter(Arc::clone(self)).map(|pass| {
            std::thread::Builder::new()
                .name("uno-cache-prefix-again".to_owned())
                .spawn(move || pass.shared().drop_late_prefixes())
        });
        if !matches!(started, Some(Ok(_))) {
            // Shutting down, or no thread: the drops are made now, the window's end unwaited.
            tracing::warn!(
                prefix,
                "no thread to drop a cancelled prefix invalidation's keys from L1 once more; dropped now"
            );
            self.late_drops.owed.lock().running = false;
            self.drop_late_prefixes_now();
        }
    }

    /// The body of the late drops' thread: each owed prefix dropped from L1 once its time has
    /// come, or at once when the manager shuts down (L1 outlives the run, and nothing of this
    /// manager sets a key after that); ends when none is owed.
    fn drop_late_prefixes(&self) {
        loop {
            let (now_due, wait) = {
                let mut owed = self.late_drops.owed.lock();
                if owed.due.is_empty() {
                    owed.running = false;
                    return;
                }
                let stopping = self.stop.is_fired();
                let now = Instant::now();
                let now_due: Vec<String> = owed
                    .due
                    .iter()
                    .filter(|(_, at)| stopping || at.is_some_and(|at| at <= now))
                    .map(|(prefix, _)| prefix.clone())
                    .collect();
                for prefix in &now_due {
                    owed.due.remove(prefix);
                }
                // Every window is as long (`cancel_quiet`): a prefix owed later is never due
                // sooner than the one slept for.
                let next = owed.due.values().flatten().min();
                let wait = next.map_or(Duration::MAX, |at| at.saturating_duration_since(now));
                (now_due, wait)
            };
            for prefix in &now_due {
                self.drop_late_prefix(prefix);
            }
            if !now_due.is_empty() {
                continue;
            }
            self.stop.sleep(wait);
        }
    }

    /// Every owed drop, now.
    fn drop_late_prefixes_now(&self) {
        let owed: Vec<String> = self.late_drops.owed.lock().due.drain().map(|(p, _)| p).collect();
        for prefix in &owed {
            self.drop_late_prefix(prefix);
        }
    }

    fn drop_late_prefix(&self, prefix: &str) {
        if let Err(e) = self.drop_local_prefix(prefix) {
            tracing::warn!(prefix, error = %e, "a cancelled prefix invalidation could not drop L1's keys once more");
        }
    }
}

/// The L1 drops owed by cancelled prefix invalidations: each prefix, and when (`None`: a
/// window past what an `Instant` holds, made at shutdown).
#[derive(Debug, Default)]
pub(crate) struct LateDrops {
    owed: Mutex<Owed>,
}

#[derive(Debug, Default)]
struct Owed {
    due: HashMap<String, Option<Instant>>,
    /// A thread works through `due`.
    running: bool,
}
