//! The keys of a segment lost to damage, held as deleted so their older versions stay gone.
//!
//! A segment whose header cannot be read is moved aside at open, and its records are lost with
//! it. An older segment may still hold an older version of a key it had a newer record or a
//! tombstone of, and without the lost records that version would win again: a deleted or
//! overwritten value served as current. The segment's hint file, if intact, names those keys
//! with their sequence numbers. It is kept as `{id:020}.lost` and read at every open as
//! tombstones, until no segment older than the lost one remains:
//! - a tombstone's entry is a tombstone at its seq;
//! - a value's entry is a tombstone just below its seq, so a copy of that very record in a newer
//!   segment (compaction copies keep their seq) still counts, and only older versions are hidden.
//!
//! A segment whose file ends before records its intact hint names lost those records the same
//! way (recovery scans what is left): its hint is kept as its `.lost` file too. The records still
//! in the file keep their seq, above the tombstones their entries become, so they still win.
//!
//! Renaming the hint needs no free space, so this works on a full disk, and nothing is written
//! into the segments at open. A segment without an intact hint (a crash between its sealing and
//! its hint, or a damaged hint) leaves nothing to name its keys: recovery reports the damaged
//! segment, and older versions of its keys can be read again.
//!
//! Only bytes read and found damaged are given up. A hint or `.lost` file that exists but cannot
//! be read (its mode, a directory in its place, a failing disk) refuses the open
//! ([`Error::LostKeysUnreadable`]) and is left where it is, as is the segment: its keys may be
//! whole, the cause can be fixed, and an open without them would serve the values they hide.
//! Such a hint was once deleted as damaged, and its keys were never named again. Deleting the
//! file is how a user opens without them. A hint read whole that cannot be renamed (a directory
//! at the `.lost` name, say) names its keys all the same: they are held as deleted for the run,
//! and the hint and the segment stay where they are, so the next open tries the rename again
//! (the segment's id stays taken meanwhile, as a segment file of that id is still there).

use std::collections::BTreeSet;
use std::fs;

use super::dir::LockedDir;
use super::format::{self, Kind};
use super::index::KeyHasher;
use super::segment;
use crate::error::{Error, Result};

/// What became of the hint of a segment whose header was unreadable (see [`keep`]).
#[derive(Debug)]
pub(crate) enum Kept {
    /// There was none, or its bytes were damaged (it was removed): nothing names the keys.
    Nothing,
    /// Renamed to `{id:020}.lost`, which [`load`] reads at this open and later ones (or removed,
    /// where a `.lost` file of the segment that names more keys was there already).
    Renamed,
    /// Read whole but not renamed: its tombstones, for this run. The hint stays, and the caller
    /// must leave the segment too, so that the next open tries again.
    Held(Buried),
}

/// Keeps the hint of segment `id`, whose header was unreadable or whose file ends before the
/// records the hint names, as `{id:020}.lost` if it is intact and names that segment, or holds its keys for this run if the rename fails; removes
/// it if its bytes are damaged or name another segment.
///
/// # Errors
/// [`Error::LostKeysUnreadable`] if the hint exists but cannot be read, and
/// [`Error::UnsupportedVersion`] if a newer uno-cache wrote it; it is left in place, and the
/// caller must leave the segment too, so that the next open tries again.
pub(crate) fn keep(dir: &LockedDir, id: u64, min_seq: u64, hasher: &KeyHasher) -> Result<Kept> {
    let hint = segment::hint_path(&dir.path, id);
    let bytes = match fs::read(&hint) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Kept::Nothing),
        Err(source) => {
            return Err(Error::LostKeysUnreadable {
                op: "read".to_owned(),
                path: hint,
                source,
            })
        }
    };
    // A newer uno-cache wrote it: refuse the directory rather than delete the keys it names
    // (the segment stays too: the caller moves nothing aside on an error).
    if let Err(format::HeaderError::Version(found)) = format::check_hint(&bytes) {
        return Err(newer_version(hint, found));
    }
    if !format::check_hint(&bytes).is_ok_and(|view| view.segment_id == id) {
        tracing::warn!(path = %hint.display(), "the hint of a damaged segment is damaged too; older versions of its keys may be read again");
        dir.remove_quietly(&hint);
        return Ok(Kept::Nothing);
    }
    let lost = segment::lost_path(&dir.path, id);
    // Kept when the segment's file was cut short of the records this hint's predecessor named
    // (recovery then wrote this one, of the records left): it names every key this one does
    // and those the cut took, so it stays.
    let kept =
        fs::read(&lost).is_ok_and(|kept| format::check_hint(&kept).is_ok_and(|view| view.segment_id == id));
    if kept {
        dir.remove_quietly(&hint);
        return Ok(Kept::Renamed);
    }
    let Err(e) = dir.disk.rename(&hint, &lost) else {
        return Ok(Kept::Renamed);
    };
    // Not removed: its bytes are whole, and nothing else names the keys.
    match buried_by(&bytes, min_seq, hasher) {
        Ok(buried) => {
            // The destination named too: what stops a rename (a directory of that name, say)
            // is often there, not at the hint.
            tracing::warn!(path = %hint.display(), to = %lost.display(), error = %e,
                "could not keep the hint of a damaged segment; its keys are held as deleted for this run, and the next open tries again");
            Ok(Kept::Held(buried))
        }
        Err(err) => {
            tracing::warn!(path = %hint.display(), error = %err, "the hint of a damaged segment is damaged too; older versions of its keys may be read again");
            dir.remove_quietly(&hint);
            Ok(Kept::Nothing)
        }
    }
}

/// The tombstones that name the keys of lost segments (their `.lost` files, or hints held).
#[derive(Debug, Default)]
pub(crate) struct Buried {
    /// (key hash, seq): every record of the key with a seq up to this one is hidden.
    pub(crate) tombstones: Vec<(u64, u64)>,
    /// The highest seq the lost records had: new writes must take higher ones, or the next
    /// open would hide them.
    pub(crate) max_seq: u64,
    /// `.lost` files found damaged and removed: the keys they named can read older versions
    /// again, and only the recovery report is left to tell.
    pub(crate) damaged_files: u64,
}

impl Buried {
    /// Takes in the tombstones of `other` too.
    pub(crate) fn add(&mut self, other: Buried) {
        self.tombstones.extend(other.tombstones);
        self.max_seq = self.max_seq.max(other.max_seq);
        self.damaged_files = self.damaged_files.saturating_add(other.damaged_files);
    }
}

/// The tombstones the hint (or `.lost` file) `bytes` of a lost segment names; see the module
/// docs.
fn buried_by(
    bytes: &[u8],
    min_seq: u64,
    hasher: &KeyHasher,
) -> std::result::Result<Buried, format::HeaderError> {
    let mut buried = Buried::default();
    format::check_hint(bytes)?.try_for_each(|e| {
        buried.max_seq = buried.max_seq.max(e.seq);
        if e.seq >= min_seq {
            let seq = match e.kind {
                Kind::Tombstone => e.seq,
                Kind::Value => e.seq.saturating_sub(1),
            };
            buried.tombstones.push((hasher.hash(e.key), seq));
        }
        Ok(())
    })?;
    Ok(buried)
}

/// Reads the `.lost` files of `ids`. One with no segment older than it left (`oldest`: the
/// oldest segment kept) hides nothing any more and is removed, as is one that is damaged.
///
/// # Errors
/// [`Error::LostKeysUnreadable`] if one that still hides keys exists but cannot be read, and
/// [`Error::UnsupportedVersion`] if a newer uno-cache wrote one; it is kept.
pub(crate) fn load(
    dir: &LockedDir,
    ids: &BTreeSet<u64>,
    oldest: Option<u64>,
    min_seq: u64,
    hasher: &KeyHasher,
) -> Result<Buried> {
    let mut buried = Buried::default();
    for &id in ids {
        let path = segment::lost_path(&dir.path, id);
        if oldest.is_none_or(|oldest| oldest > id) {
            dir.remove_quietly(&path);
            continue;
        }
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed since the listing: nothing is left to read, now or at the next open.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::LostKeysUnreadable {
                    op: "read".to_owned(),
                    path,
                    source,
                })
            }
        };
        match buried_by(&bytes, min_seq, hasher) {
            Ok(found) => buried.add(found),
            // A newer uno-cache wrote it: refused and kept, as a segment of that version is.
            Err(format::HeaderError::Version(found)) => return Err(newer_version(path, found)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "removing a damaged file of lost keys; older versions of them may be read again");
                dir.remove_quietly(&path);
                buried.damaged_files = buried.damaged_files.saturating_add(1);
            }
        }
    }
    Ok(buried)
}

/// The refusal of a file (a hint or `.lost` file) of a newer format version.
fn newer_version(path: std::path::PathBuf, found: u16) -> Error {
    Error::UnsupportedVersion {
        path,
        found,
        supported: format::FORMAT_VERSION,
    }
}
