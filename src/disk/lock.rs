//! The lock file of a directory: the file store's `LOCK` and the replay queue's `replay.lock`
//! (names in `crate::files`). One opener at a time, in this process or another: an exclusive
//! advisory `flock`, taken without waiting and released when the [`LockFile`] is dropped.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::perms;

/// A held lock file; unlocked on drop.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Opens `dir/name` (created with `mode` if missing) and locks it.
    ///
    /// # Errors
    /// [`Error::Locked`] naming `dir` if another opener holds it; [`Error::Io`] (`what` says
    /// which lock) if it cannot be opened or locked.
    pub(crate) fn acquire(dir: &Path, name: &str, mode: u32, what: &'static str) -> Result<LockFile> {
        let path = dir.join(name);
        let file = perms::new_file(mode)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(what, &path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(LockFile { file, path }),
            Err(TryLockError::WouldBlock) => Err(Error::Locked {
                path: dir.to_owned(),
                lock: path,
            }),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }

    /// The lock file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Explicitly, rather than by closing: a child process forked meanwhile (say, to start a
        // server) holds a copy of the descriptor until it execs, and the lock with it.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_opener_is_refused_until_the_first_drops_its_lock() {
        let dir = tempfile::tempdir().unwrap();
        let first = LockFile::acquire(dir.path(), "LOCK", 0o600, "open lock file").unwrap();
        match LockFile::acquire(dir.path(), "LOCK", 0o600, "open lock file") {
            Err(Error::Locked { path, lock }) => {
                assert_eq!(path, dir.path());
                assert_eq!(lock, first.path());
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        LockFile::acquire(dir.path(), "LOCK", 0o600, "open lock file").unwrap();
    }
}
