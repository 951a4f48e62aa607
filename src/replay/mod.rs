//! The durable replay queue: writes and deletes that could not reach L2, kept in the L1 directory
//! and replayed when L2 returns.
//!
//! When L2 (Redis, Memcached) is unreachable, a `set` or `delete` still succeeds in L1 but cannot
//! reach L2. Forgetting it would let L2 serve the old value once it comes back — worst of all a
//! value that was *deleted* while L2 was away. The manager pushes such ops here instead; every
//! push is on disk (`fdatasync`) before it returns, and the manager replays [`pending`] ops when
//! L2 is reachable again, [`ack`]ing each one that L2 confirmed.
//!
//! ```
//! use uno_cache::replay::{ReplayAction, ReplayOptions, ReplayQueue};
//!
//! let dir = tempfile::tempdir()?;
//! let queue = ReplayQueue::open(dir.path(), ReplayOptions::default())?;
//! queue.push_set("user:1", b"Ada", 0)?; // L2 was down: remember the write ...
//! queue.push_delete("user:2")?; // ... and the delete.
//!
//! // L2 is back: deletes come first.
//! let ops = queue.pending();
//! assert!(matches!(ops[0].action, ReplayAction::Delete) && ops[0].key == "user:2");
//! for op in &ops {
//!     // send op to L2 here; on success:
//!     queue.ack(op)?;
//! }
//! assert!(queue.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The API is synchronous and every call is short: local file I/O (one append and one
//! `fdatasync` per push or ack batch), never network I/O. Pushes from several threads at once
//! share an `fdatasync`: those that arrive while one is being written are written together by
//! the next (group commit, see `group`), so in an L2 outage the queue's throughput grows with
//! the number of writers instead of each waiting for every fsync ahead of it. Async code can
//! call it directly (an `fdatasync` is the same kind of short blocking call as an L1 write) or
//! from `spawn_blocking`.
//! The queue is `Send + Sync`; share it in an `Arc`.
//!
//! # Semantics
//!
//! - **Coalescing.** Only the newest op per key is kept: a later delete replaces an earlier set, a
//!   later set replaces an earlier delete. Each op carries a **sequence number** that increases
//!   with every push and never repeats within a log (it survives compaction and restarts).
//! - **Replay order.** [`pending`] returns all deletes first, then all sets, each group in the
//!   order the ops were queued. A set whose expiry has passed is returned as a **delete** of its
//!   key (same seq): replaying the set would only write a value that is already dead, and L2 may
//!   still hold an *older* value that the set was meant to replace (the set may have coalesced
//!   away an earlier delete, or L2 may have held the key before). Deleting is always safe for a
//!   cache: the worst case is one miss.
//! - **Acks.** [`ack`] / [`ack_many`] remove an op only if it is still the pending op of its key
//!   with the same seq; an ack of an op that a newer push superseded does nothing (and returns
//!   `false`), so the newer op is still replayed. Acks are durable before they return: after a
//!   crash mid-replay, only un-acked ops are replayed again. Replaying an op twice is harmless
//!   (`SET` and `DEL` are idempotent) as long as the manager follows the protocol below.
//!
//! # Bounds and overflow
//!
//! [`ReplayOptions::max_bytes`] (default 64 MiB) bounds the encoded bytes of the pending ops and
//! [`ReplayOptions::max_entries`] (default 1,048,576) their number. When a push does not fit:
//!
//! 1. A **set** that does not fit is queued as a **delete** of its key ([`PushOutcome::Downgraded`]):
//!    L2 cannot keep a stale value, it only loses the key. A set that has already expired when it
//!    is pushed is downgraded the same way.
//! 2. A **delete** (or downgraded set) of a key that already has a pending op always fits: it
//!    replaces that op and never makes the queue bigger.
//! 3. A delete short only of bytes turns the oldest pending sets of other keys into deletes of
//!    their keys until it fits: their values make the room, and L2 loses those keys instead of
//!    keeping a stale value.
//! 4. When even that leaves the delete without room (no sets left, or `max_entries` reached),
//!    the op is lost and the queue becomes **overflowed**
//!    ([`PushOutcome::Overflowed`]): a flag, written to the log, that survives restarts until
//!    [`clear_overflow`] is called. It means "L2 may hold stale values"; the manager reports it and
//!    should not trust L2 (for example, flush it or skip L2 reads) until an operator clears it.
//!
//! Damage found in the log at open sets the same flag (see below).
//!
//! # On disk
//!
//! The queue lives in files of the L1 directory whose names cannot collide with the file store's
//! (`uno-cache.meta`, `LOCK`, `*.seg`, `*.hint`, `*.tmp`):
//!
//! | name | what |
//! |---|---|
//! | `replay.log` | the log: a header, then CRC-checked records (set, delete, ack, overflow, overflow cleared) |
//! | `replay.log.new` | a compacted log being written; renamed over `replay.log`; deleted at open |
//! | `replay.log.damaged` | a log whose header was damaged, moved aside at open |
//! | `replay.lock` | held with `flock` while a queue is open: a second opener gets [`Error::Locked`] |
//! | `replay.overflowed` | empty; left when a write of the log failed: the queue opens overflowed until [`clear_overflow`](ReplayQueue::clear_overflow) |
//!
//! The queue is the only writer of these files (its own lock guarantees it; the file store's
//! `LOCK` additionally keeps a second process out of the whole directory). The two may be opened in
//! either order: a new file store accepts a directory that holds only the queue's files.
//!
//! The log is append-only; the byte layout and every crash case are specified in
//! `storage-format.md` (section "Replay log"). In short:
//!
//! - A torn tail (a push interrupted by a crash) is cut at open; that push had not returned.
//! - A bad record followed by good ones is **damage**: skipped, counted in [`ReplayRecovery`],
//!   never returned. Since the lost record might have been a newer op of any key, every set queued
//!   before the damage is downgraded to a delete, and the queue is marked overflowed (an op of an
//!   unknown key may be lost).
//! - A damaged header keeps a copy of the log as `replay.log.damaged`; the queue keeps the ops
//!   whose records check out under the log id the header still holds (none if that id is
//!   damaged) and is marked overflowed. A header of an unknown version is refused with
//!   [`Error::UnsupportedVersion`].
//! - After damage the log is rewritten at open. A device too full for that does not stop the
//!   open: the queue opens latched with what it read ([`ReplayRecovery::rewrite_failed`]), as
//!   after a failed write (below), until [`recover`](ReplayQueue::recover) can write the log.
//! - When more than half of the log (and at least 64 KiB) is acked or superseded records, it is
//!   compacted: rewritten to `replay.log.new`, fsynced, renamed over the log, directory fsynced.
//!   So the file stays under about `2 × max_bytes + 64 KiB`, unless a compaction fails (a
//!   device too full for the rewrite): it is tried again only once the log has grown by the
//!   pending bytes (at least 64 KiB) again, not at every push and ack.
//! - A failed write or fsync latches the queue: later pushes, acks and compactions fail with
//!   [`Error::WritesDisabled`] until it is reopened (reads of the pending ops still work). The
//!   ops whose write failed stay pending in memory (their records may be on disk and come back
//!   at the reopen, and a direct L2 write of their keys in between would be overwritten then).
//!   A failed push, or one refused while latched, makes the queue report itself overflowed (an
//!   op may be lost). Any failure leaves `replay.overflowed` (see "On disk") as it latches, since
//!   a push refused later could no longer be written to the log: a reopen then says overflowed
//!   until the flag is cleared.
//!   [`recover`](ReplayQueue::recover) writes the log anew from memory (the manager's replay
//!   thread tries on each tick and each replay run, at most once a second, whether ops are
//!   pending or not; after a try that failed for lack of space, only once the device's free
//!   space has grown or the pending bytes shrunk), which makes the flag and the queue's state
//!   durable and takes writes again; if no op was lost (a failed ack or compaction), it removes the mark too.
//! - Acks go on while latched, in memory only (**held**, see [`ack_many`]): L2 has the op, so
//!   the replay moves on to the next ones while the device stays full, and the recovery leaves
//!   the op out of the new log. Until it does, the log still holds the op and a reopen replays
//!   it again: the window a crash between an L2 write and its ack opens anyway, and no wider
//!   than before, as such an op was never acked on disk before either. So the key stays
//!   [`is_pending`] until the recovery: reads of it skip L2 as before, and a write of it is
//!   pushed (refused while latched) rather than written to L2, where that reopen's replay would
//!   overwrite it; a refused push of such a key makes a delete of it pending again in memory,
//!   as it makes a pending set one, so L2 does not keep the older value.
//!
//! # Protocol for the manager
//!
//! 1. When an L2 `set`/`delete` fails (or the breaker is open), after L1 was written, push the op.
//!    If the push fails, the op may not reach L2: surface the error (or stop trusting L2).
//! 2. While a key [`is_pending`], do not write it to L2 directly: push the new op instead. A
//!    direct write could otherwise be overwritten by the older op's replay (or by its re-replay
//!    after a crash before its ack).
//! 3. To replay: take [`pending`] (or [`pending_up_to`] for batches), send each op to L2 in that
//!    order, and [`ack`] (or [`ack_many`]) each op after L2 confirmed it.
//! 4. If [`is_overflowed`], some op was lost: L2 may be stale. Tell the operator; after L2 has been
//!    flushed or reconciled, call [`clear_overflow`].
//!
//! There is an unavoidable window between the L1 write and the push: a crash there loses the op.
//! A manager that cannot accept it can push *before* trying L2 and ack after L2 succeeded, at the
//! cost of two `fdatasync`s per write.
//!
//! [`pending`]: ReplayQueue::pending
//! [`pending_up_to`]: ReplayQueue::pending_up_to
//! [`ack`]: ReplayQueue::ack
//! [`ack_many`]: ReplayQueue::ack_many
//! [`clear_overflow`]: ReplayQueue::clear_overflow
//! [`is_pending`]: ReplayQueue::is_pending
//! [`is_overflowed`]: ReplayQueue::is_overflowed

mod ack;
pub(crate) mod format;
mod group;
mod load;
mod log;
mod options;
#[cfg(test)]
mod power_loss_tests;
mod push;
mod report;
mod state;
#[cfg(test)]
mod tests;

use dashmap::DashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

pub use self::format::{LOG_FILE, REPLAY_FORMAT_VERSION};
pub use self::options::{ReplayOptions, DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};
pub use self::report::{ReplayRecovery, ReplayStats};

use self::format::{Header, HeaderError, Kind, RecordRef, HEADER_LEN, LOG_DAMAGED_FILE};
use self::group::Group;
use self::load::load;
use self::log::Log;
use self::state::Pending;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::keys::check_key;

/// The queue is shared between the write path and the replayer.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync + 'static>() {}
    send_and_sync::<ReplayQueue>();
};

/// A log is compacted only when it holds at least this many dead bytes (and more dead than live).
const COMPACT_MIN_DEAD: u64 = 64 * 1024;

/// What to replay for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayAction {
    /// Write the value. `expires_at_ms` is the absolute expiry in Unix milliseconds (0 = never);
    /// give L2 the TTL that remains until then.
    Set {
        /// The value.
        value: Vec<u8>,
        /// Absolute expiry in Unix ms; 0 means never.
        expires_at_ms: u64,
    },
    /// Delete the key.
    Delete,
}

/// One op to replay: the newest op of its key. Obtained from [`ReplayQueue::pending`]; pass it
/// back to [`ReplayQueue::ack`] once L2 confirmed it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayOp {
    /// Sequence number: identifies this op; increases with every push.
    pub seq: u64,
    /// The key.
    pub key: String,
    /// What to do.
    pub action: ReplayAction,
}

/// One op for [`ReplayQueue::push_many`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push<'a> {
    /// A write that did not reach L2.
    Set {
        /// The key.
        key: &'a str,
        /// The value.
        value: &'a [u8],
        /// Absolute expiry in Unix ms; 0 means never.
        expires_at_ms: u64,
    },
    /// A delete that did not reach L2.
    Delete {
        /// The key.
        key: &'a str,
    },
}

impl Push<'_> {
    /// The key the op is about.
    pub(crate) fn key(&self) -> &str {
        match self {
            Push::Set { key, .. } | Push::Delete { key } => key,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushOutcome {
    /// Queued as given.
    Queued {
        /// The op's sequence number.
        seq: u64,
    },
    /// A set queued as a delete of its key: it did not fit the bounds, or had already expired.
    Downgraded {
        /// The op's sequence number.
        seq: u64,
    },
    /// Nothing fit: the op is lost and the queue is (now) overflowed.
    Overflowed,
}

impl PushOutcome {
    /// The sequence number of the queued op, if one was queued.
    #[must_use]
    pub fn seq(&self) -> Option<u64> {
        match self {
            PushOutcome::Queued { seq } | PushOutcome::Downgraded { seq } => Some(*seq),
            PushOutcome::Overflowed => None,
        }
    }
}

#[derive(Debug)]
struct Inner {
    log: Log,
    pending: Pending,
    next_seq: u64,
    overflowed: bool,
    stats: ReplayStats,
    flood_lines: push::FloodLines,
    /// When [`ReplayQueue::recover_if_due`] last tried.
    last_recovery: Option<std::time::Instant>,
    /// After a failed compaction, the log length below which it is not tried again.
    compact_again_at: u64,
    /// Why the last [`ReplayQueue::recover`] failed, and on a full device the bytes it needed.
    recovery_failure: Option<(String, u64)>,
    /// After a recovery failed for lack of space: the device's free bytes and the pending bytes
    /// just after it. [`ReplayQueue::recover_if_due`] waits until one of them has changed.
    recovery_blocked: Option<(u64, u64)>,
}

/// How often [`ReplayQueue::recover_if_due`] tries at most: each try rewrites every pending op.
const RECOVERY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// A durable, bounded, coalescing queue of ops to replay to L2. See the [module docs](self).
#[derive(Debug)]
pub struct ReplayQueue {
    dir: PathBuf,
    max_bytes: u64,
    max_entries: usize,
    clock: Arc<dyn Clock>,
    recovery: ReplayRecovery,
    inner: Mutex<Inner>,
    /// The pending keys, readable without `inner` (see `Pending::key_set`).
    pending_keys: Arc<DashSet<Arc<str>>>,
    /// Pushes waiting to be written, a group at a time (see [`group`]).
    pushes: Group<Vec<push::Op>, Result<Vec<PushOutcome>>>,
}

impl ReplayQueue {
    /// Opens (or creates) the queue in `dir`, usually the L1 file store's directory (open the
    /// store first). Reads the log, cuts a torn tail, skips damage (see the module docs).
    ///
    /// # Errors
    /// [`Error::Config`] for invalid options; [`Error::Locked`] if another queue has `dir` open;
    /// [`Error::UnsupportedVersion`] for a log of another format version; [`Error::Io`].
    pub fn open(dir: &Path, options: ReplayOptions) -> Result<ReplayQueue> {
        options.check()?;
        options
            .disk
            .create_dir(dir, options.file_mode)
            .map_err(|e| Error::io("create directory", dir, e))?;
        let lock = log::lock(dir, options.file_mode)?;
        log::remove_leftover(&options.disk, dir)?;
        let path = dir.join(LOG_FILE);
        let mut recovery = ReplayRecovery::default();
        let mut pending = Pending::default();
        let mut overflowed = false;
        let mut next_seq = 1;
        let existing = match fs::read(&path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read replay log", &path, e)),
        };
        let had_log = existing.is_some();
        let clean = match existing {
            None => None,
            Some(bytes) => match format::decode_header(&bytes) {
                Ok(header) => {
                    let loaded = load(&bytes, header, &mut recovery);
                    pending = loaded.pending;
                    overflowed = loaded.overflowed;
                    next_seq = loaded.next_seq;
                    if recovery.damaged_ranges > 0 {
                        tracing::warn!(
                            path = %path.display(),
                            ranges = recovery.damaged_ranges,
                            bytes = recovery.damaged_bytes,
                            "replay log damaged; earlier sets replay as deletes and the queue is marked overflowed"
                        );
                    }
                    match loaded.clean_end {
                        Some(end) => Some((header.log_id, end)),
                        // Cut where it lies: a rewrite needs room for every pending op, and a
                        // device full when the process died (as it often is) kept the queue,
                        // and the manager with it, from opening at all.
                        None if loaded.only_torn && log::cut_at(&options.disk, &path, loaded.end) => {
                            Some((header.log_id, loaded.end))
                        }
                        None => None,
                    }
                }
                Err(HeaderError::Version(found)) => {
                    return Err(Error::UnsupportedVersion {
                        path,
                        found,
                        supported: REPLAY_FORMAT_VERSION,
                    })
                }
                Err(problem) => {
                    let aside = dir.join(LOG_DAMAGED_FILE);
                    // The records are not in the header: those that check out under the id
                    // it still holds are kept (dropped, one flipped byte lost every op).
                    if let Some(loaded) = load::rescue(&bytes, &mut recovery) {
                        pending = loaded.pending;
                        next_seq = loaded.next_seq;
                    }
                    tracing::warn!(
                        path = %path.display(),
                        problem = %problem,
                        moved_to = %aside.display(),
                        kept = pending.len(),
                        "replay log header damaged; the queue keeps the ops whose records check out and is marked overflowed"
                    );
                    // Linked, not renamed: the damaged log keeps its name until the new,
                    // overflowed one replaces it in one rename. Renamed away first, a kill or
                    // a full disk before the new log was in place left no log, and the next
                    // open started an empty queue without the overflow flag: the lost ops,
                    // deletes among them, were never reported.
                    // The copy is for diagnosis only: a file system without hard links (vfat,
                    // some network mounts) keeps none, and the open goes on.
                    let kept = match options.disk.remove_file(&aside) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                        _ => options.disk.hard_link(&path, &aside),
                    };
                    if let Err(e) = kept {
                        tracing::warn!(path = %aside.display(), error = %e, "could not keep a copy of the damaged replay log; the new log replaces it");
                    }
                    recovery.header_damage = Some(problem.to_string());
                    overflowed = true;
                    None
                }
            },
        };
        if dir.join(format::OVERFLOWED_FILE).exists() && !overflowed {
            tracing::warn!(dir = %dir.display(), "a write of the replay log failed before the queue was last closed: ops may have been lost, and the queue is marked overflowed");
            overflowed = true;
            recovery.marked_overflowed = true;
        }
        let log = match clean {
            Some((log_id, len)) => {
                Log::open_existing(dir, options.disk.clone(), lock, log_id, len, options.file_mode)?
            }
            None => {
                let header = Header {
                    log_id: log::new_log_id(),
                    next_seq,
                };
                let body = encode_body(header.log_id, &pending, overflowed);
                if had_log {
                    let (log, failed) = Log::create_over_damaged(
                        dir,
                        options.disk.clone(),
                        lock,
                        &header,
                        &body,
                        options.file_mode,
                    )?;
                    match failed {
                        None => {
                            pending.recompute_disk_lens();
                            recovery.rewritten = true;
                        }
                        Some(e) => {
                            tracing::warn!(path = %path.display(), error = %e,
                                "the damaged replay log could not be rewritten; the queue opens latched until there is room");
                            recovery.rewrite_failed = Some(e.to_string());
                        }
                    }
                    log
                } else {
                    let log =
                        Log::create(dir, options.disk.clone(), lock, &header, &body, options.file_mode)?;
                    pending.recompute_disk_lens();
                    log
                }
            }
        };
        recovery.pending = pending.len() as u64;
        let queue = ReplayQueue {
            dir: dir.to_owned(),
            max_bytes: options.max_bytes,
            max_entries: options.max_entries,
            clock: options.clock,
            recovery,
            pending_keys: pending.key_set(),
            pushes: Group::default(),
            inner: Mutex::new(Inner {
                log,
                pending,
                next_seq,
                overflowed,
                stats: ReplayStats::default(),
                flood_lines: push::FloodLines::default(),
                last_recovery: None,
                compact_again_at: 0,
                recovery_failure: None,
                recovery_blocked: None,
            }),
        };
        queue.maybe_compact(&mut queue.inner.lock());
        Ok(queue)
    }

    /// Whether `dir` holds a queue's log (which may still have ops to replay).
    #[must_use]
    pub fn exists_in(dir: &Path) -> bool {
        dir.join(LOG_FILE).exists()
    }

    /// The directory the queue lives in.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a write of `key` that did not reach L2; durable when it returns. `expires_at_ms`
    /// is the absolute expiry in Unix milliseconds, 0 for never.
    ///
    /// # Errors
    /// [`Error::InvalidKey`] (nothing queued); [`Error::Io`] if the write or fsync failed (the
    /// queue is then latched); [`Error::WritesDisabled`] after an earlier failure.
    pub fn push_set(&self, key: &str, value: &[u8], expires_at_ms: u64) -> Result<PushOutcome> {
        let outcomes = self.push_many(&[Push::Set {
            key,
            value,
            expires_at_ms,
        }])?;
        Ok(outcomes.first().copied().unwrap_or(PushOutcome::Overflowed))
    }

    /// Queues a delete of `key` that did not reach L2; durable when it returns.
    ///
    /// # Errors
    /// As [`push_set`](Self::push_set).
    pub fn push_delete(&self, key: &str) -> Result<PushOutcome> {
        let outcomes = self.push_many(&[Push::Delete { key }])?;
        Ok(outcomes.first().copied().unwrap_or(PushOutcome::Overflowed))
    }

    /// Queues several ops with one append and one `fdatasync`, in order (a later op of the same
    /// key supersedes an earlier one). Returns one outcome per op.
    ///
    /// # Errors
    /// As [`push_set`](Self::push_set); an invalid key refuses the whole batch and queues nothing.
    pub fn push_many(&self, ops: &[Push<'_>]) -> Result<Vec<PushOutcome>> {
        for op in ops {
            check_key(op.key())?;
        }
        let ops: Vec<push::Op> = ops.iter().map(push::Op::from_push).collect();
        let bounds = push::Bounds {
            max_bytes: self.max_bytes,
            max_entries: self.max_entries,
        };
        let answer = self.pushes.submit(ops, |pushes| {
            let now = self.clock.now_ms();
            let mut inner = self.inner.lock();
            let answers = push::write(&mut inner, pushes, now, bounds);
            self.maybe_compact(&mut inner);
            answers
        });
        answer.unwrap_or_else(|| {
            Err(Error::WritesDisabled {
                path: self.dir.join(LOG_FILE),
                cause: "the thread writing this push with others panicked; the push may be lost".to_owned(),
            })
        })
    }

    /// Every pending op in replay order: deletes first, then sets, each group in the order
    /// queued. Sets whose expiry has passed are returned as deletes.
    #[must_use]
    pub fn pending(&self) -> Vec<ReplayOp> {
        self.pending_up_to(usize::MAX)
    }

    /// The first `max` ops of [`pending`](Self::pending), for replaying in batches.
    #[must_use]
    pub fn pending_up_to(&self, max: usize) -> Vec<ReplayOp> {
        let now = self.clock.now_ms();
        let mut inner = self.inner.lock();
        inner.pending.expire_due(now);
        inner.pending.ops(max)
    }

    /// Marks `op` as replayed; durable when it returns. Returns `false` (and writes nothing) if
    /// `op` is no longer the pending op of its key: acked already, superseded by a newer push,
    /// which stays pending, or a set turned into a delete since it was taken.
    ///
    /// While the log cannot be written, the ack is held in memory (see
    /// [`ack_many`](Self::ack_many)).
    ///
    /// # Errors
    /// As [`ack_many`](Self::ack_many).
    pub fn ack(&self, op: &ReplayOp) -> Result<bool> {
        Ok(self.ack_many(std::slice::from_ref(op))? == 1)
    }

    /// Whether `key` has a pending op, or one whose ack is held (see
    /// [`ack_many`](Self::ack_many)). While it does, the manager must not write the key to L2
    /// directly (push instead), or the older op's replay could overwrite the newer value.
    #[must_use]
    pub fn is_pending(&self, key: &str) -> bool {
        // Not `inner`: a push holds it across its fdatasync, and readers must not wait for that.
        self.pending_keys.contains(key)
    }

    /// `key`'s pending op as [`pending`](Self::pending) would return it (an expired set as a
    /// delete): a hash lookup, but under the lock a push holds across its fsync, which
    /// [`is_pending`](Self::is_pending) never waits for: ask that first.
    pub(crate) fn pending_op(&self, key: &str) -> Option<ReplayOp> {
        let now = self.clock.now_ms();
        self.inner.lock().pending.op(key, now)
    }

    /// The sequence number of `key`'s pending op, if it has one (waits for a push's fsync).
    pub(crate) fn pending_seq(&self, key: &str) -> Option<u64> {
        self.inner.lock().pending.get(key).map(|slot| slot.seq)
    }

    /// The keys starting with `prefix` that have a pending op (read as [`is_pending`]
    /// does, without waiting for a push's fsync).
    ///
    /// [`is_pending`]: Self::is_pending
    #[must_use]
    pub fn pending_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.pending_keys
            .iter()
            .filter(|key| key.starts_with(prefix))
            .map(|key| key.to_string())
            .collect()
    }

    /// Number of keys that are [`is_pending`](Self::is_pending): pending ops (one per key) and
    /// held acks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.pending_keys.len()
    }

    /// Whether nothing is pending (without waiting for a push's fsync).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.pending_keys.is_empty()
    }

    /// Encoded bytes of the pending ops; what `max_bytes` bounds.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.inner.lock().pending.bytes()
    }

    /// Whether an op was ever lost (the queue was full, or its log was damaged) since the flag
    /// was last cleared: L2 may hold stale values. Survives restarts.
    #[must_use]
    pub fn is_overflowed(&self) -> bool {
        self.inner.lock().overflowed
    }

    /// Clears the overflow flag (durably), for an operator who has flushed or reconciled L2.
    /// Returns whether it was set. Pending ops stay pending.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::WritesDisabled`].
    pub fn clear_overflow(&self) -> Result<bool> {
        let mut inner = self.inner.lock();
        if !inner.overflowed {
            if inner.log.failure().is_none() {
                // A mark a failed ack or compaction left, with nothing lost (see `recover`).
                inner.log.clear_overflowed_mark()?;
            }
            return Ok(false);
        }
        let mut buf = Vec::new();
        format::encode_record(
            &mut buf,
            inner.log.log_id(),
            &overflow_record(Kind::OverflowCleared),
        );
        inner.log.append(&buf)?;
        inner.overflowed = false;
        // After the log says so: a kill in between leaves the mark, and the flag set again.
        inner.log.clear_overflowed_mark()?;
        Ok(true)
    }

    /// Makes a queue that a failed write latched (a full disk, a failed fsync) writable again:
    /// writes a new log from what is pending in memory, which holds every op the queue took,
    /// those whose write failed included, and the overflow flag, set by that failure (a push
    /// refused meanwhile is lost, so L2 may be stale), and not the ops whose acks were held
    /// (see [`ack_many`](Self::ack_many)). Without it the queue stays latched until it is
    /// reopened: acks are held in memory only (the reopen replays those ops again), and every
    /// failed L2 write after the failure is lost. Returns whether the queue was latched.
    ///
    /// # Errors
    /// [`Error::Io`] if the new log cannot be written (the disk is still full): the queue
    /// stays latched.
    pub fn recover(&self) -> Result<bool> {
        let mut inner = self.inner.lock();
        if inner.log.failure().is_none() {
            return Ok(false);
        }
        inner.last_recovery = Some(std::time::Instant::now());
        inner.stats.recovery_attempts += 1;
        if let Err(e) = rewrite_locked(&mut inner, Log::replace_latched) {
            let needed = match &e {
                Error::DiskFull { needed, .. } => *needed,
                _ => 0,
            };
            inner.recovery_failure = Some((e.to_string(), needed));
            // Read after the failed try removed its new log: the room it leaves for the next.
            inner.recovery_blocked = match &e {
                Error::DiskFull { .. } => free_bytes(&self.dir).map(|free| (free, inner.pending.bytes())),
                _ => None,
            };
            return Err(e);
        }
        inner.recovery_failure = None;
        inner.recovery_blocked = None;
        if !inner.overflowed {
            // The failure left `replay.overflowed` as it latched the log, before it could know
            // whether an op would be lost; none was (a refused or failed push sets the flag), and
            // the new log says so durably. Left, the mark opened the queue overflowed at the
            // next start, for an operator to clear with nothing to reconcile.
            if let Err(e) = inner.log.clear_overflowed_mark() {
                tracing::warn!(error = %e, "the replay overflow mark stays: the queue opens overflowed at its next start");
            }
        }
        tracing::warn!(path = %inner.log.path().display(), pending = inner.pending.len(),
            "replay log rewritten after a write failure; it takes writes again (marked overflowed: ops may have been lost)");
        Ok(true)
    }

    /// [`recover`](Self::recover), at most once per [`RECOVERY_EVERY`]: for a replay that runs
    /// on every tick and nudge. After a try that failed for lack of space, not until the
    /// device's free space has grown or the pending bytes have shrunk: each try writes up to
    /// every pending op to `replay.log.new` before it meets the full device again, and the L1
    /// store on that device had its writes fail, or its entries evicted, meanwhile.
    pub(crate) fn recover_if_due(&self) -> Result<bool> {
        {
            let mut inner = self.inner.lock();
            if inner.log.failure().is_none()
                || inner
                    .last_recovery
                    .is_some_and(|at| at.elapsed() < RECOVERY_EVERY)
            {
                return Ok(false);
            }
            if let Some((free, bytes)) = inner.recovery_blocked {
                // A device whose free space cannot be read is tried as before.
                let no_more_room = free_bytes(&self.dir).is_some_and(|now| now <= free);
                if no_more_room && inner.pending.bytes() >= bytes {
                    inner.last_recovery = Some(std::time::Instant::now());
                    inner.stats.recoveries_skipped += 1;
                    return Ok(false);
                }
            }
        }
        self.recover()
    }

    /// Rewrites the log with only the pending ops (and the overflow flag). Runs by itself when
    /// more than half of the log is dead; this forces it.
    ///
    /// # Errors
    /// [`Error::Io`] (the old log stays in use, unless the final directory fsync failed, which
    /// latches the queue) or [`Error::WritesDisabled`].
    pub fn compact(&self) -> Result<()> {
        let mut inner = self.inner.lock();
        compact_locked(&mut inner)
    }

    /// Sizes and counters.
    #[must_use]
    pub fn stats(&self) -> ReplayStats {
        let inner = self.inner.lock();
        ReplayStats {
            pending: inner.pending.len() as u64,
            pending_deletes: inner.pending.delete_count() as u64,
            bytes: inner.pending.bytes(),
            log_bytes: inner.log.len(),
            acks_held: inner.pending.held_len() as u64,
            overflowed: inner.overflowed,
            write_failure: inner.log.failure().map(str::to_owned),
            recovery_failure: inner.recovery_failure.as_ref().map(|(e, _)| e.clone()),
            recovery_needs_bytes: inner.recovery_failure.as_ref().map_or(0, |(_, needed)| *needed),
            ..inner.stats.clone()
        }
    }

    /// What opening the queue found.
    #[must_use]
    pub fn recovery_report(&self) -> &ReplayRecovery {
        &self.recovery
    }

    fn maybe_compact(&self, inner: &mut Inner) {
        let live = inner.pending.bytes();
        let len = inner.log.len();
        let dead = len.saturating_sub(HEADER_LEN as u64 + live);
        if dead <= live.max(COMPACT_MIN_DEAD) || inner.log.failure().is_some() || len < inner.compact_again_at
        {
            return;
        }
        if let Err(e) = compact_locked(inner) {
            // Tried again only once the log has grown by as much again: each try writes every
            // pending op under the queue's lock, and on a device too full for the rewrite
            // every push and ack retried it.
            inner.compact_again_at = len.saturating_add(live.max(COMPACT_MIN_DEAD));
            inner.stats.compaction_failures += 1;
            tracing::warn!(error = %e, path = %inner.log.path().display(), "replay log compaction failed; tried again once the log has grown by as much again");
        }
    }

    /// Test hook: the next append's fsync fails.
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self) {
        self.inner.lock().log.fail_next_sync = true;
    }

    /// Test hook: the log is latched as by a failed write, with nothing pending.
    #[cfg(test)]
    pub(crate) fn latch_for_test(&self) {
        self.inner.lock().log.latch_for_test();
    }
}

/// The bytes an unprivileged writer may still use on the device holding `dir`; `None` if the
/// file system does not say.
fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    stat.f_bavail.checked_mul(stat.f_frsize)
}

fn compact_locked(inner: &mut Inner) -> Result<()> {
    rewrite_locked(inner, Log::replace)
}

/// Writes the log anew with only the pending ops and the overflow flag, through `replace` (which
/// refuses a latched log, or takes it back).
fn rewrite_locked(inner: &mut Inner, replace: fn(&mut Log, &Header, &[u8]) -> Result<()>) -> Result<()> {
    let header = Header {
        log_id: log::new_log_id(),
        next_seq: inner.next_seq,
    };
    let body = encode_body(header.log_id, &inner.pending, inner.overflowed);
    replace(&mut inner.log, &header, &body)?;
    // The new log holds no record of the ops whose acks were held: a reopen no longer replays them.
    inner.pending.release_held();
    inner.pending.recompute_disk_lens();
    inner.stats.compactions += 1;
    // The wait a failed compaction set is over: kept, the log grew to that old length before
    // every later compaction, past the bound the documentation gives it.
    inner.compact_again_at = 0;
    Ok(())
}

/// The records of a rewritten log: the overflow flag, then every pending op in seq order.
fn encode_body(log_id: u64, pending: &Pending, overflowed: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(usize::try_from(pending.bytes()).unwrap_or(0));
    if overflowed {
        format::encode_record(&mut body, log_id, &overflow_record(Kind::Overflow));
    }
    for (key, slot) in pending.by_seq() {
        format::encode_record(&mut body, log_id, &record_of(key, slot.seq, &slot.action));
    }
    body
}

fn record_of<'a>(key: &'a str, seq: u64, action: &'a ReplayAction) -> RecordRef<'a> {
    match action {
        ReplayAction::Set { value, expires_at_ms } => RecordRef {
            kind: Kind::Set,
            seq,
            expires_at_ms: *expires_at_ms,
            key,
            value,
        },
        ReplayAction::Delete => RecordRef {
            kind: Kind::Delete,
            seq,
            expires_at_ms: 0,
            key,
            value: &[],
        },
    }
}

fn overflow_record(kind: Kind) -> RecordRef<'static> {
    RecordRef {
        kind,
        seq: 0,
        expires_at_ms: 0,
        key: "",
        value: &[],
    }
}
