//! The store directory: the ownership check, the exclusive lock, and the metadata file.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::format::{self, HeaderError, Meta, LOCK_FILE, META_FILE, META_LEN, TMP_EXT};
use crate::disk::Disk;
use crate::error::{Error, Result};

/// An open, locked store directory. The lock is released when this is dropped.
#[derive(Debug)]
pub(crate) struct LockedDir {
    pub(crate) path: PathBuf,
    /// Where every write of the store goes.
    pub(crate) disk: Disk,
    /// Held for its flock; never read.
    _lock: File,
}

impl LockedDir {
    /// Creates `path` if needed, refuses a directory that is not ours, and takes the lock.
    ///
    /// Returns the directory and its metadata; a new directory gets `new_meta`.
    pub(crate) fn open(path: &Path, disk: Disk, new_meta: Meta) -> Result<(LockedDir, Meta)> {
        let created = !path.exists();
        fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))?;
        let meta_path = path.join(META_FILE);
        let has_meta = meta_path.exists();
        if !has_meta && !is_empty_but_lock(path)? {
            return Err(Error::NotOurDirectory {
                path: path.to_owned(),
                meta: META_FILE,
            });
        }
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| Error::io("open lock file", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    path: path.to_owned(),
                    lock: lock_path,
                })
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path, e)),
        }
        let dir = LockedDir {
            path: path.to_owned(),
            disk,
            _lock: lock,
        };
        let meta = if has_meta {
            dir.read_meta()?
        } else if let Err(e) = dir.write_meta(&new_meta) {
            // A failed first open (a full disk) leaves nothing behind: not our lock file, and not
            // the directory if this call made it.
            let _ = fs::remove_file(&lock_path);
            if created {
                let _ = fs::remove_dir(path);
            }
            return Err(e);
        } else {
            new_meta
        };
        Ok((dir, meta))
    }

    fn read_meta(&self) -> Result<Meta> {
        let path = self.path.join(META_FILE);
        let bytes = fs::read(&path).map_err(|e| Error::io("read metadata", &path, e))?;
        format::decode_meta(&bytes).map_err(|e| match e {
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
                reason: format!("{other} ({} bytes, expected {META_LEN})", bytes.len()),
            },
        })
    }

    /// Replaces the metadata file atomically: write a temporary file, fsync, rename, fsync the
    /// directory.
    pub(crate) fn write_meta(&self, meta: &Meta) -> Result<()> {
        let path = self.path.join(META_FILE);
        let tmp = self.path.join(format!("{META_FILE}.{TMP_EXT}"));
        let written = self
            .disk
            .create(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))
            .and_then(|file| {
                file.write_all_at(&format::encode_meta(meta), 0)
                    .map_err(|e| Error::io("write", &tmp, e))?;
                file.sync_data().map_err(|e| Error::io("fsync", &tmp, e))
            })
            .and_then(|()| {
                self.disk
                    .rename(&tmp, &path)
                    .map_err(|e| Error::io("rename", &path, e))
            });
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        self.sync()
    }

    /// fsyncs the directory, making created, renamed and removed names durable.
    pub(crate) fn sync(&self) -> Result<()> {
        self.disk
            .sync_dir(&self.path)
            .map_err(|e| Error::io("fsync directory", &self.path, e))
    }
}

/// True if the directory holds nothing but files uno-cache itself keeps there (our lock, and the
/// replay queue, which may have been opened first).
fn is_empty_but_lock(path: &Path) -> Result<bool> {
    use crate::replay::format as replay;
    let ours = [
        LOCK_FILE,
        replay::LOG_FILE,
        replay::LOG_NEW_FILE,
        replay::LOG_DAMAGED_FILE,
        replay::LOCK_FILE,
    ];
    let entries = fs::read_dir(path).map_err(|e| Error::io("list directory", path, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("list directory", path, e))?;
        if !ours.iter().any(|name| entry.file_name() == *name) {
            return Ok(false);
        }
    }
    Ok(true)
}
