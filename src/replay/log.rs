//! The log file: appends with `fdatasync`, atomic rewrites, and the failure latch (the lock
//! file and the latch are the file store's, from `crate::disk`).

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::format::{self, Header, LOCK_FILE, LOG_FILE, LOG_NEW_FILE, OVERFLOWED_FILE};
use crate::disk::{Disk, DiskFile, LockFile, WriteLatch};
use crate::error::{Error, Result};

/// A random log id; it seeds the record checksums of one file.
pub(crate) fn new_log_id() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// Takes the queue's lock file in `dir`, creating it with `mode` if missing.
pub(crate) fn lock(dir: &Path, mode: u32) -> Result<LockFile> {
    LockFile::acquire(dir, LOCK_FILE, mode, "open replay lock file")
}

/// fsyncs a directory, making created, renamed and removed names durable.
pub(crate) fn sync_dir(disk: &Disk, dir: &Path) -> Result<()> {
    disk.sync_dir(dir)
        .map_err(|e| Error::io("fsync directory", dir, e))
}

/// The open log file.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    path: PathBuf,
    disk: Disk,
    file: DiskFile,
    log_id: u64,
    /// Length of the file: where the next record goes.
    len: u64,
    /// The first write or fsync failure; writes are refused once set.
    latch: WriteLatch,
    /// Permission bits of the log files this queue writes.
    mode: u32,
    /// Held for its flock; unlocked on drop.
    _lock: LockFile,
    /// Test hook: the next append's fsync fails.
    #[cfg(test)]
    pub(crate) fail_next_sync: bool,
}

impl Log {
    /// Opens the existing log for appending at `len` (the caller has read and checked it).
    pub(crate) fn open_existing(
        dir: &Path,
        disk: Disk,
        lock: LockFile,
        log_id: u64,
        len: u64,
        mode: u32,
    ) -> Result<Log> {
        let path = dir.join(LOG_FILE);
        let file = disk
            .open(&path)
            .map_err(|e| Error::io("open replay log", &path, e))?;
        Ok(Log::with_file(dir, disk, file, lock, log_id, len, mode))
    }

    /// The log on `file`, open at `len`, taking writes.
    fn with_file(
        dir: &Path,
        disk: Disk,
        file: DiskFile,
        lock: LockFile,
        log_id: u64,
        len: u64,
        mode: u32,
    ) -> Log {
        Log {
            dir: dir.to_owned(),
            path: dir.join(LOG_FILE),
            disk,
            file,
            log_id,
            len,
            latch: WriteLatch::new("replay log"),
            mode,
            _lock: lock,
            #[cfg(test)]
            fail_next_sync: false,
        }
    }

    /// Writes a complete new log (header then `body`, encoded under `log_id`) atomically in place
    /// of any existing one: temporary file, fsync, rename, directory fsync.
    pub(crate) fn create(
        dir: &Path,
        disk: Disk,
        lock: LockFile,
        header: &Header,
        body: &[u8],
        mode: u32,
    ) -> Result<Log> {
        let (file, len) = write_new(&disk, dir, header, body, mode)?;
        Ok(Log::with_file(dir, disk, file, lock, header.log_id, len, mode))
    }

    /// [`create`](Self::create) in place of a log that holds damage, or, if the new log cannot
    /// be written (a full device, as it often is after a crash), the damaged log opened latched
    /// with that failure: nothing is appended to it, the queue keeps what the open loaded in
    /// memory, and [`replace_latched`](Self::replace_latched) writes the new log once there is
    /// room. Failing the open instead kept the queue, and the manager with it, from starting. A
    /// reopen before then reads the same damage again. Returns the log and the failure, if any.
    pub(crate) fn create_over_damaged(
        dir: &Path,
        disk: Disk,
        lock: LockFile,
        header: &Header,
        body: &[u8],
        mode: u32,
    ) -> Result<(Log, Option<Error>)> {
        match write_new(&disk, dir, header, body, mode) {
            Ok((file, len)) => Ok((
                Log::with_file(dir, disk, file, lock, header.log_id, len, mode),
                None,
            )),
            Err(e) => {
                let path = dir.join(LOG_FILE);
                let len = fs::metadata(&path)
                    .map_err(|e| Error::io("read replay log", &path, e))?
                    .len();
                let log = Log::open_existing(dir, disk, lock, header.log_id, len, mode)?;
                let e = log.fail(e);
                Ok((log, Some(e)))
            }
        }
    }

    pub(crate) fn log_id(&self) -> u64 {
        self.log_id
    }

    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn failure(&self) -> Option<&str> {
        self.latch.cause()
    }

    pub(crate) fn check_writable(&self) -> Result<()> {
        self.latch.check(&self.path)
    }

    /// Test hook: latches the log as a failed write does.
    #[cfg(test)]
    pub(crate) fn latch_for_test(&self) {
        let _ = self.fail(Error::io(
            "append to replay log",
            &self.path,
            io::Error::other("injected write failure"),
        ));
    }

    /// Removes the overflow mark (see [`fail`](Self::fail)) once the flag is cleared in the log.
    pub(crate) fn clear_overflowed_mark(&self) -> Result<()> {
        clear_overflowed_mark(&self.disk, &self.dir)
    }

    /// Latches the log read-only and passes the error on. The first failure also leaves
    /// [`OVERFLOWED_FILE`]: from now on the overflow flag, and the sets that refused ops turn
    /// into deletes, live in memory until [`ReplayQueue::recover`](super::ReplayQueue::recover)
    /// rewrites the log, which a device still full keeps failing; a process that ends before
    /// then would reopen the log as it was, with the flag clear, and never report the ops lost.
    /// An empty file needs no data block, so it can be made when the log's write could not.
    fn fail(&self, error: Error) -> Error {
        if self.latch.cause().is_none() {
            mark_overflowed(&self.disk, &self.dir, self.mode);
        }
        self.latch.fail(error)
    }

    /// Appends encoded records and makes them durable (`fdatasync`) before returning.
    pub(crate) fn append(&mut self, records: &[u8]) -> Result<()> {
        self.check_writable()?;
        let result = self
            .file
            .write_all_at(records, self.len)
            .map_err(|e| write_error("append to replay log", &self.path, records.len(), e))
            .and_then(|()| self.sync());
        match result {
            Ok(()) => {
                self.len += records.len() as u64;
                Ok(())
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    fn sync(&mut self) -> Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(Error::io(
                "fsync replay log",
                &self.path,
                io::Error::other("injected fsync failure"),
            ));
        }
        self.file
            .sync_data()
            .map_err(|e| write_error("fsync replay log", &self.path, 0, e))
    }

    /// Replaces the log with a new one (header then `body`, encoded under `header.log_id`).
    ///
    /// A failure before the rename leaves the old log in use and does not latch; a failure after
    /// it (the directory fsync) latches, because later appends would go to a file whose name may
    /// not survive a crash.
    pub(crate) fn replace(&mut self, header: &Header, body: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.replace_unchecked(header, body)
    }

    /// [`replace`](Self::replace) of a log a failed write latched, which takes writes again
    /// once the new log is durable under its name: nothing of the failed file is read or
    /// appended to after that (a failed fsync says nothing of what its pages hold).
    pub(crate) fn replace_latched(&mut self, header: &Header, body: &[u8]) -> Result<()> {
        self.replace_unchecked(header, body)?;
        self.latch = WriteLatch::new("replay log");
        Ok(())
    }

    fn replace_unchecked(&mut self, header: &Header, body: &[u8]) -> Result<()> {
        let tmp = self.dir.join(LOG_NEW_FILE);
        let file = match write_tmp(&self.disk, &tmp, header, body, self.mode) {
            Ok(file) => file,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if let Err(e) = self.disk.rename(&tmp, &self.path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename replay log", &self.path, e));
        }
        self.file = file;
        self.log_id = header.log_id;
        self.len = (format::HEADER_LEN + body.len()) as u64;
        if let Err(e) = sync_dir(&self.disk, &self.dir) {
            return Err(self.fail(e));
        }
        Ok(())
    }
}

/// Cuts the log at `path` to `end` bytes in place and fsyncs it: a torn tail goes without a
/// rewrite, which needs room for every pending op. Whether it worked (if not, the caller
/// rewrites the log).
pub(crate) fn cut_at(disk: &Disk, path: &Path, end: u64) -> bool {
    let cut = disk
        .open(path)
        .and_then(|file| file.set_len(end).and_then(|()| file.sync_data()));
    if let Err(e) = &cut {
        tracing::warn!(path = %path.display(), error = %e, "could not cut the torn tail of the replay log in place; rewriting it");
    }
    cut.is_ok()
}

/// Leaves [`OVERFLOWED_FILE`] in `dir`, durably; a failure is only logged (the flag is still
/// set in memory, and written with the next rewrite of the log).
pub(crate) fn mark_overflowed(disk: &Disk, dir: &Path, mode: u32) {
    let path = dir.join(OVERFLOWED_FILE);
    let made = match disk.create_new(&path, mode) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
    .and_then(|()| disk.sync_dir(dir));
    if let Err(e) = made {
        tracing::warn!(path = %path.display(), error = %e, "could not leave the replay queue's overflow mark; the flag is lost if the process ends before the log is rewritten");
    }
}

/// Removes [`OVERFLOWED_FILE`] from `dir`, durably (the flag was cleared in the log).
pub(crate) fn clear_overflowed_mark(disk: &Disk, dir: &Path) -> Result<()> {
    let path = dir.join(OVERFLOWED_FILE);
    match disk.remove_file(&path) {
        Ok(()) => sync_dir(disk, dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove replay overflow mark", &path, e)),
    }
}

/// A failed write: [`Error::DiskFull`] if the device is full, as the stores report it, so a
/// caller can tell it from a failing disk. A file system may say so at the write, at the
/// `fdatasync` (writeback on btrfs, NFS) or when a file is created; `needed` is the bytes the
/// write asked for (0 where it is not one write's).
fn write_error(op: &'static str, path: &Path, needed: usize, e: io::Error) -> Error {
    if crate::error::is_no_space(&e) {
        Error::DiskFull {
            path: path.to_owned(),
            op,
            needed: needed as u64,
        }
    } else {
        Error::io(op, path, e)
    }
}

/// Writes header and body to `tmp` and fsyncs it.
fn write_tmp(disk: &Disk, tmp: &Path, header: &Header, body: &[u8], mode: u32) -> Result<DiskFile> {
    // A leftover file would keep its old permission bits through a truncate.
    let _ = fs::remove_file(tmp);
    let file = disk
        .create_new(tmp, mode)
        .map_err(|e| write_error("create", tmp, 0, e))?;
    let head = format::encode_header(header);
    file.write_all_at(&head, 0)
        .and_then(|()| file.write_all_at(body, head.len() as u64))
        .map_err(|e| write_error("write replay log", tmp, head.len() + body.len(), e))?;
    file.sync_data()
        .map_err(|e| write_error("fsync", tmp, head.len() + body.len(), e))?;
    Ok(file)
}

/// Writes a new log in place of any old one; returns the file and its length.
fn write_new(disk: &Disk, dir: &Path, header: &Header, body: &[u8], mode: u32) -> Result<(DiskFile, u64)> {
    let tmp = dir.join(LOG_NEW_FILE);
    let path = dir.join(LOG_FILE);
    let file = match write_tmp(disk, &tmp, header, body, mode) {
        Ok(file) => file,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    disk.rename(&tmp, &path)
        .map_err(|e| Error::io("rename replay log", &path, e))?;
    sync_dir(disk, dir)?;
    Ok((file, (format::HEADER_LEN + body.len()) as u64))
}

/// Deletes a leftover temporary log from an interrupted rewrite.
pub(crate) fn remove_leftover(disk: &Disk, dir: &Path) -> Result<()> {
    let tmp = dir.join(LOG_NEW_FILE);
    match disk.remove_file(&tmp) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove leftover replay log", &tmp, e)),
    }
}
