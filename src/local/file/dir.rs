//! The store directory: the ownership check, the exclusive lock, the metadata file, and the
//! permission bits of everything in it.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::{
    self, HeaderError, Meta, LOCK_FILE, MAX_SEGMENT_SIZE, META_EXT_LEN, META_FILE, META_LEN, TMP_EXT,
};
use crate::disk::{Disk, DiskFile, LockFile};
use crate::error::{Error, Result};
use crate::files::NO_STORE_FILES;
use crate::perms::{self, DEFAULT_FILE_MODE};

/// An open, locked store directory. The lock is released when this is dropped.
#[derive(Debug)]
pub(crate) struct LockedDir {
    pub(crate) path: PathBuf,
    /// Permission bits of the files the store creates: those of `uno-cache.meta`.
    pub(crate) file_mode: u32,
    /// Where every write of the store goes.
    pub(crate) disk: Disk,
    /// Held for its flock; unlocked on drop.
    _lock: LockFile,
    /// The directory itself, open for its fsyncs (see [`Disk::sync_dir_handle`]): opened for
    /// each, a roll's failed for want of a file when the segment it made took the process's
    /// last one, and the failed fsync disabled writes.
    handle: fs::File,
}

/// What an opener asks of the settings a directory records.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wanted {
    /// Metadata for a new directory.
    pub(crate) new_meta: Meta,
    /// A size bound (bytes) to use and record; `None`: the one recorded.
    pub(crate) max_size: Option<u64>,
    /// Permission bits for the store's files, applied and recorded; `None`: the ones recorded
    /// (the bits of `uno-cache.meta`), or [`DEFAULT_FILE_MODE`] for a new directory.
    pub(crate) file_mode: Option<u32>,
    /// Whether `new_meta`'s segment size was asked for (`segment_size`) rather than derived
    /// from the bound: the field an error about it names.
    pub(crate) segment_size_asked: bool,
}

impl LockedDir {
    /// Removes `path`, logging (not returning) a failure: for files whose removal only tidies
    /// up at open (leftovers, stale hints, lost keys that hide nothing any more).
    pub(crate) fn remove_quietly(&self, path: &Path) {
        if let Err(e) = self.disk.remove_file(path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove a file");
        }
    }

    /// Creates `path` if needed (private by default), refuses a directory that is not ours, and
    /// takes the lock.
    ///
    /// Returns the directory and its metadata: a new directory gets `wanted.new_meta`; an
    /// existing one keeps its own, except for an explicit size bound or file mode in `wanted`,
    /// which is applied and recorded (a bound the disk has no room to record holds for this
    /// open only).
    pub(crate) fn open(path: &Path, disk: Disk, wanted: Wanted) -> Result<(LockedDir, Meta)> {
        let new_dir_mode = wanted.file_mode.unwrap_or(DEFAULT_FILE_MODE);
        let created = disk
            .create_dir(path, new_dir_mode)
            .map_err(|e| Error::io("create directory", path, e))?;
        let meta_path = path.join(META_FILE);
        let has_meta = meta_path.exists();
        if !has_meta && !is_empty_but_lock(path)? {
            return Err(Error::NotOurDirectory {
                path: path.to_owned(),
                meta: META_FILE,
            });
        }
        let recorded_mode = if has_meta {
            perms::mode_of(&meta_path)
        } else {
            None
        };
        let file_mode = wanted.file_mode.or(recorded_mode).unwrap_or(DEFAULT_FILE_MODE);
        let lock = LockFile::acquire(path, LOCK_FILE, file_mode, "open lock file")?;
        if !has_meta && meta_path.exists() {
            // Another process made the store between the look above and the lock (two first
            // opens at once, the other one quick to close): this open would write its own
            // metadata over the other's, and read the other's segments with its own segment
            // size. Opened again, it is an existing store.
            drop(lock);
            return Self::open(path, disk, wanted);
        }
        let lock_path = lock.path().to_owned();
        let handle = fs::File::open(path).map_err(|e| Error::io("open directory", path, e))?;
        let dir = LockedDir {
            path: path.to_owned(),
            file_mode,
            disk,
            _lock: lock,
            handle,
        };
        let meta = if has_meta {
            let stored = dir.read_meta()?;
            // Only a new bound: one an earlier build recorded keeps opening (an unchanged
            // configuration must not stop the store after an upgrade).
            if let Some(max_size) = wanted.max_size.filter(|&m| m != stored.max_size) {
                check_bound_fits_segments(max_size, stored.segment_size)?;
                check_segments_fit_maps(max_size, stored.segment_size, "max_size_mb", max_map_count())?;
            }
            if recorded_mode.is_some_and(|m| m != file_mode) {
                dir.apply_mode()?;
            }
            match wanted.max_size {
                Some(max_size) if max_size != stored.max_size => {
                    let meta = Meta { max_size, ..stored };
                    match dir.write_meta(&meta) {
                        Ok(()) => {}
                        // Opening needs no free space: the new bound holds for this run, and the
                        // next open that finds room records it (the old file is left whole).
                        Err(e) if e.is_no_space() => {
                            tracing::warn!(path = %path.display(), error = %e,
                                "no space to record the new max_size; it applies to this run only");
                        }
                        Err(e) => return Err(e),
                    }
                    meta
                }
                _ => stored,
            }
        } else if let Err(e) = check_segments_fit_maps(
            wanted.new_meta.max_size,
            wanted.new_meta.segment_size,
            if wanted.segment_size_asked {
                "segment_size"
            } else {
                "max_size_mb"
            },
            max_map_count(),
        )
        .and_then(|()| dir.write_meta(&wanted.new_meta))
        {
            // A failed first open (a full disk) leaves nothing behind: not our lock file, and not
            // the directory if this call made it.
            let _ = fs::remove_file(&lock_path);
            if created {
                let _ = fs::remove_dir(path);
            }
            return Err(e);
        } else {
            wanted.new_meta
        };
        Ok((dir, meta))
    }

    /// Gives the directory and every file in it the (changed) mode, so that a store made
    /// private later is private throughout.
    fn apply_mode(&self) -> Result<()> {
        perms::set_mode(&self.path, perms::dir_mode(self.file_mode))
            .map_err(|e| Error::io("chmod", &self.path, e))?;
        let entries = fs::read_dir(&self.path).map_err(|e| Error::io("list directory", &self.path, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list directory", &self.path, e))?;
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file {
                let file = entry.path();
                perms::set_mode(&file, self.file_mode).map_err(|e| Error::io("chmod", &file, e))?;
            }
        }
        Ok(())
    }

    fn read_meta(&self) -> Result<Meta> {
        let path = self.path.join(META_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io("read metadata", &path, e))?;
        let meta = format::decode_meta(&bytes).map_err(|e| match e {
            HeaderError::Magic => Error::NotOurDirectory {
                path: self.path.clone(),
                meta: META_FILE,
            },
            HeaderError::Version(found) => Error::UnsupportedVersion {
                path: path.clone(),
                found,
                supported: format::FORMAT_VERSION,
            },
            other => Error::CorruptMetadata {
                path: path.clone(),
                // The length is named only when it is what is wrong: a damaged file of the
                // right length read as a length problem.
                reason: if bytes.len() == META_LEN || bytes.len() == META_EXT_LEN {
                    other.to_string()
                } else {
                    format!(
                        "{other} ({} bytes, expected {META_LEN} or {META_EXT_LEN})",
                        bytes.len()
                    )
                },
            },
        })?;
        if meta.max_size == 0 && bytes.len() > META_LEN {
            tracing::warn!(
                path = %path.display(),
                "the size bound recorded in the metadata is damaged; using the default or the bytes on disk, whichever is larger, until a bound is set"
            );
        }
        Ok(meta)
    }

    /// Replaces the metadata file atomically: write a temporary file, fsync, rename, fsync the
    /// directory.
    pub(crate) fn write_meta(&self, meta: &Meta) -> Result<()> {
        let path = self.path.join(META_FILE);
        let tmp = self.path.join(format!("{META_FILE}.{TMP_EXT}"));
        self.replace_file(&tmp, &path, |file| {
            file.write_all_at(&format::encode_meta(meta), 0)
                .map_err(|e| Error::io("write", &tmp, e))?;
            file.sync_data().map_err(|e| Error::io("fsync", &tmp, e))
        })?;
        self.sync()
    }

    /// Writes a new file `tmp` with the store's file mode (exactly, whatever the umask) through
    /// `write`, then renames it over `path`. A failure removes `tmp`, so nothing is left behind
    /// (a full disk must not leave temporary files that the next open takes for foreign ones).
    pub(crate) fn replace_file(
        &self,
        tmp: &Path,
        path: &Path,
        write: impl FnOnce(&DiskFile) -> Result<()>,
    ) -> Result<()> {
        // A leftover temporary file would keep its old permission bits.
        let _ = self.disk.remove_file(tmp);
        let written = self
            .disk
            .create_new(tmp, self.file_mode)
            .map_err(|e| Error::io("create", tmp, e))
            .and_then(|file| {
                perms::set_mode(tmp, self.file_mode).map_err(|e| Error::io("chmod", tmp, e))?;
                write(&file)
            })
            .and_then(|()| {
                self.disk
                    .rename(tmp, path)
                    .map_err(|e| Error::io("rename", path, e))
            });
        if written.is_err() {
            let _ = self.disk.remove_file(tmp);
        }
        written
    }

    /// fsyncs the directory, making created, renamed and removed names durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.disk
            .sync_dir_handle(&self.handle, &self.path)
            .map_err(|e| Error::io("fsync directory", &self.path, e))
    }
}

/// Refuses an explicit size bound below four of an existing directory's segments, the rule a new
/// directory's options are held to (the segment size of an existing one is the recorded one, not
/// the option's). Refused rather than raised: a bound is a promise about the device, and exceeding
/// it silently (the active segment alone could be many times a small bound) breaks it. Checked
/// before anything is recorded, so the directory keeps its old bound. Not checked against the
/// bound already recorded (earlier builds recorded such bounds).
fn check_bound_fits_segments(max_size: u64, segment_size: u64) -> Result<()> {
    let least = segment_size.saturating_mul(4);
    if max_size >= least {
        return Ok(());
    }
    let mib = 1024 * 1024;
    Err(Error::Config {
        field: "max_size_mb".into(),
        reason: format!(
            "{} MiB is less than four of this directory's {segment_size}-byte segments (the size bound needs at least four); set max_size_mb to at least {}, or remove the directory (a cache: it is rebuilt) to recreate it with smaller segments",
            max_size / mib,
            least.div_ceil(mib)
        ),
    })
}

/// Memory maps a store may take, at most, of the process's `vm.max_map_count`: half, so that
/// the process keeps the rest (its libraries, its allocator's arenas, its threads' stacks, other
/// stores).
const MAPS_SHARE_DIVISOR: u64 = 2;
/// Segments a store may hold beyond `max_size / segment_size`: the active one, and the one a
/// compaction writes before it drops the segments it emptied.
const SEGMENTS_OVER_BOUND: u64 = 2;

/// `vm.max_map_count`, the memory maps a Linux process may hold; `None` where it cannot be read.
fn max_map_count() -> Option<u64> {
    fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|text| text.trim().parse().ok())
}

/// Refuses a bound whose segments would take more than their share of the process's memory
/// maps: each segment is read through a map of its own (`mmap`), and past `vm.max_map_count` a
/// new segment's map fails with `ENOMEM`, so every write that needs a new segment would fail.
/// `field`: the setting the error names. No limit known (`max_maps` `None`): nothing checked.
pub(super) fn check_segments_fit_maps(
    max_size: u64,
    segment_size: u64,
    field: &str,
    max_maps: Option<u64>,
) -> Result<()> {
    let Some(max_maps) = max_maps else {
        return Ok(());
    };
    let allowed = max_maps / MAPS_SHARE_DIVISOR;
    let segments = max_size
        .div_ceil(segment_size.max(1))
        .saturating_add(SEGMENTS_OVER_BOUND);
    if segments <= allowed {
        return Ok(());
    }
    let mib = 1024 * 1024;
    let least_segment = max_size.div_ceil(allowed.saturating_sub(SEGMENTS_OVER_BOUND).max(1));
    let most_mb = allowed
        .saturating_sub(SEGMENTS_OVER_BOUND)
        .saturating_mul(segment_size)
        / mib;
    // Past the largest segment, only a smaller bound or more maps will do.
    let larger_segments = if least_segment <= MAX_SEGMENT_SIZE {
        format!("use a segment_size of at least {least_segment} bytes for a new directory, ")
    } else {
        String::new()
    };
    Err(Error::Config {
        field: field.into(),
        reason: format!(
            "a bound of {} MiB in {segment_size}-byte segments is {segments} segments, each read through a memory map of its own, and this system allows {max_maps} maps per process (vm.max_map_count), of which a store takes at most half; {larger_segments}set max_size_mb to at most {most_mb}, or raise vm.max_map_count",
            max_size / mib
        ),
    })
}

/// True if the directory holds nothing but files uno-cache itself keeps there (our lock, and the
/// replay queue, which may have been opened first), or the temporary metadata file of a first
/// open that a kill or a power cut stopped before its rename: that directory was never a store,
/// and refusing it as foreign left it refused at every open until someone deleted it by hand.
fn is_empty_but_lock(path: &Path) -> Result<bool> {
    let entries = fs::read_dir(path).map_err(|e| Error::io("list directory", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", path, e))?;
        let name = entry.file_name();
        if !NO_STORE_FILES.iter().any(|ours| name == *ours) {
            return Ok(false);
        }
    }
    Ok(true)
}
