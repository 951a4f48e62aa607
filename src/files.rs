//! The name of every file uno-cache keeps on disk, in one place: the file store, the replay
//! queue and the redb level may share one directory, so each must know the others' names (a new
//! file store accepts a directory holding only a replay queue's files). `storage-format.md` lists
//! them with their layouts.

// ---- the file store ("Directory" in storage-format.md) --------------------------------------

/// Directory metadata file; its presence makes a directory "ours".
pub const META_FILE: &str = "uno-cache.meta";
/// Lock file held (advisory `flock`) for as long as a store is open.
pub const LOCK_FILE: &str = "LOCK";
/// Segment file extension: `{id:020}.seg`.
pub const SEGMENT_EXT: &str = "seg";
/// Hint file extension: `{id:020}.hint`.
pub const HINT_EXT: &str = "hint";
/// A segment whose header cannot be read is moved aside as `{id:020}.damaged`, for diagnosis:
/// the store neither reads nor counts it, and it can be deleted.
pub const DAMAGED_EXT: &str = "damaged";
/// The hint of a segment lost to damage is kept as `{id:020}.lost`: its keys are read as
/// tombstones at every open while an older segment remains, so older versions stay hidden.
pub const LOST_EXT: &str = "lost";
/// Temporary files (`*.tmp`) are deleted at open.
pub const TMP_EXT: &str = "tmp";
/// The metadata file of a first open, before its rename to [`META_FILE`].
pub const META_TMP_FILE: &str = "uno-cache.meta.tmp";

// ---- the replay queue ("Replay log" in storage-format.md) ------------------------------------

/// The replay log.
pub const LOG_FILE: &str = "replay.log";
/// A compacted log being written; renamed over [`LOG_FILE`] when complete, deleted at open.
pub const LOG_NEW_FILE: &str = "replay.log.new";
/// Where a log whose header is damaged is moved aside (replacing an older one).
pub const LOG_DAMAGED_FILE: &str = "replay.log.damaged";
/// Lock file held (advisory `flock`) while a queue is open.
pub const REPLAY_LOCK_FILE: &str = "replay.lock";
/// An empty file left when a write of the log failed: the queue is overflowed, whatever the log
/// says, until the flag is cleared.
pub const REPLAY_OVERFLOWED_FILE: &str = "replay.overflowed";
/// Every file a replay queue may leave in a directory.
pub const REPLAY_FILES: [&str; 5] = [
    LOG_FILE,
    LOG_NEW_FILE,
    LOG_DAMAGED_FILE,
    REPLAY_LOCK_FILE,
    REPLAY_OVERFLOWED_FILE,
];

/// The files a directory may hold and still hold no store: the lock, a first open's
/// [`META_TMP_FILE`] that a kill or power cut left before its rename, and a replay queue's files
/// (the queue may be opened first). A file store opens such a directory as a new, empty store;
/// one holding any other file, without [`META_FILE`], it refuses as not its own.
pub const NO_STORE_FILES: [&str; 7] = [
    LOCK_FILE,
    META_TMP_FILE,
    LOG_FILE,
    LOG_NEW_FILE,
    LOG_DAMAGED_FILE,
    REPLAY_LOCK_FILE,
    REPLAY_OVERFLOWED_FILE,
];

// ---- the redb level ----------------------------------------------------------------------------

/// The redb database file the manager creates in `local.path` for `local.type = "redb"`.
#[cfg(feature = "redb")]
pub const REDB_FILE_NAME: &str = "cache.redb";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_metadata_file_is_the_metadata_file_with_the_temporary_extension() {
        assert_eq!(META_TMP_FILE, format!("{META_FILE}.{TMP_EXT}"));
    }

    #[test]
    fn a_directory_without_a_store_may_hold_every_replay_file() {
        assert!(REPLAY_FILES.iter().all(|f| NO_STORE_FILES.contains(f)));
    }
}
