//! Every write uno-cache makes to its files goes through here: the file store's segments, hints
//! and metadata, and the replay log.
//!
//! The layer is thin on purpose (each call is the `std` call it names), and it exists for one
//! reason: so that a test can stand between the stores and the file system. In test builds a
//! [`Disk`] can carry a simulator (`sim`) that records every write, truncation, rename, unlink and
//! fsync, can fail a chosen call, and at a crash point keeps only what a power loss could have
//! kept. Reads are not routed: they go to the real files (through `pread` or the segment maps),
//! which always hold what was written, as the page cache does for a running process. In other
//! builds the hooks are empty and compile away.
//!
//! Beside it live the two rules every file of the cache obeys, written once for the file store
//! and the replay log: the directory's lock file (`lock`) and the write latch after a failed
//! write or fsync (`latch`).

mod latch;
mod lock;
#[cfg(test)]
pub(crate) mod sim;

pub(crate) use self::latch::WriteLatch;
pub(crate) use self::lock::LockFile;

use std::fs::{File, OpenOptions};

use crate::perms;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

#[cfg(test)]
use self::sim::Sim;

/// Stands in for the simulator outside test builds: every hook does nothing.
#[cfg(not(test))]
#[derive(Debug)]
pub(crate) enum Sim {}

#[cfg(not(test))]
#[allow(clippy::unused_self, clippy::unnecessary_wraps)]
impl Sim {
    fn check(&self, _: Op, _: &Path) -> io::Result<()> {
        match *self {}
    }
    fn created(&self, _: &Path) -> usize {
        match *self {}
    }
    fn opened(&self, _: &Path) -> usize {
        match *self {}
    }
    fn short_write(&self) -> Option<(usize, io::ErrorKind)> {
        match *self {}
    }
    fn renamed(&self, _: &Path, _: &Path) {}
    fn linked(&self, _: &Path, _: &Path) {}
    fn removed(&self, _: &Path) {}
    fn dir_synced(&self, _: &Path) {}
    fn wrote(&self, _: usize, _: u64, _: &[u8]) {}
    fn set_len(&self, _: usize, _: u64) {}
    fn extended(&self, _: usize, _: u64) {}
    fn synced(&self, _: usize) {}
    fn sync_failed(&self, _: usize) {}
}

/// The kinds of call the simulator can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Op {
    Create,
    Write,
    SetLen,
    Allocate,
    Sync,
    SyncDir,
    Rename,
    Remove,
}

/// The file system as the stores write to it. Cheap to clone; the real one is the default.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    sim: Option<Arc<Sim>>,
}

/// A file opened for writing through a [`Disk`].
#[derive(Debug)]
pub(crate) struct DiskFile {
    file: File,
    /// The simulator and its number for this file (test builds).
    sim: Option<(Arc<Sim>, usize)>,
}

impl Disk {
    /// A disk whose calls a simulator records and may fail (test builds).
    #[cfg(test)]
    pub(crate) fn simulated(sim: Arc<Sim>) -> Disk {
        Disk { sim: Some(sim) }
    }

    fn check(&self, op: Op, path: &Path) -> io::Result<()> {
        match &self.sim {
            Some(sim) => sim.check(op, path),
            None => Ok(()),
        }
    }

    /// Creates a new file for reading and writing with permission bits `mode` (less the umask);
    /// fails if it exists.
    pub(crate) fn create_new(&self, path: &Path, mode: u32) -> io::Result<DiskFile> {
        self.check(Op::Create, path)?;
        let file = perms::new_file(mode).create_new(true).open(path)?;
        Ok(self.wrap(file, path, true))
    }

    /// Opens an existing file for reading and writing.
    pub(crate) fn open(&self, path: &Path) -> io::Result<DiskFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(self.wrap(file, path, false))
    }

    fn wrap(&self, file: File, path: &Path, created: bool) -> DiskFile {
        let sim = self.sim.as_ref().map(|sim| {
            let inode = if created {
                sim.created(path)
            } else {
                sim.opened(path)
            };
            (Arc::clone(sim), inode)
        });
        DiskFile { file, sim }
    }

    /// Renames `from` over `to`.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename, to)?;
        std::fs::rename(from, to)?;
        if let Some(sim) = &self.sim {
            sim.renamed(from, to);
        }
        Ok(())
    }

    /// Gives the file at `from` a second name, `to` (which must not exist).
    pub(crate) fn hard_link(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename, to)?;
        std::fs::hard_link(from, to)?;
        if let Some(sim) = &self.sim {
            sim.linked(from, to);
        }
        Ok(())
    }

    /// Removes a file's name (an open file lives on until it is closed).
    pub(crate) fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove, path)?;
        std::fs::remove_file(path)?;
        if let Some(sim) = &self.sim {
            sim.removed(path);
        }
        Ok(())
    }

    /// fsyncs a directory: makes the names created, renamed and removed in it durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir, dir)?;
        if let Some(sim) = &self.sim {
            // Simulated: what is durable is the simulator's record, and thousands of cases must
            // not wait for the real disk.
            sim.dir_synced(dir);
            return Ok(());
        }
        File::open(dir).and_then(|d| d.sync_all())
    }

    /// fsyncs the directory `dir` through `handle`, a file of it opened earlier: a store's
    /// directory fsync (every roll makes one) then needs no file of its own, which a process
    /// at its limit on open files could not have.
    pub(crate) fn sync_dir_handle(&self, handle: &File, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir, dir)?;
        if let Some(sim) = &self.sim {
            sim.dir_synced(dir);
            return Ok(());
        }
        handle.sync_all()
    }

    /// Creates `path` and its missing parents (see [`perms::create_dir`]) and fsyncs the parent
    /// of each, so the new names are durable; if `path` was there, fsyncs its parent all the
    /// same. Returns whether `path` was created.
    ///
    /// A directory's name lives in its parent: fsyncing the files in a new directory, or the
    /// directory itself, does not make the directory survive a power cut, and with it would go
    /// every write the store had acknowledged as durable.
    pub(crate) fn create_dir(&self, path: &Path, file_mode: u32) -> io::Result<bool> {
        let missing = path
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
            .count();
        let created = perms::create_dir(path, file_mode)?;
        fn parent_of(dir: &Path) -> &Path {
            dir.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        }
        if missing == 0 {
            // There already, but perhaps made by an earlier open whose fsync of the parent
            // failed after the mkdir: its name may still be in no durable state. Best effort:
            // the directory is usually someone else's (made by hand, or by an earlier run that
            // synced it), and a parent this process may not read, or a file system that does
            // not fsync directories, must not stop an open that never needed it before. The
            // real parent: `.`, `..` and symbolic links name another one.
            let synced = path
                .canonicalize()
                .and_then(|real| self.sync_dir(parent_of(&real)));
            if let Err(e) = synced {
                tracing::debug!(path = %path.display(), error = %e, "could not fsync the parent of an existing directory");
            }
            return Ok(created);
        }
        for new in path.ancestors().take(missing) {
            self.sync_dir(parent_of(new))?;
        }
        Ok(created)
    }
}

impl DiskFile {
    /// The open file, for reads (`pread`, maps) and locks.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    fn check(&self, op: Op) -> io::Result<()> {
        match &self.sim {
            Some((sim, _)) => sim.check(op, Path::new("")),
            None => Ok(()),
        }
    }

    /// `pwrite` of all of `bytes` at `offset`.
    pub(crate) fn write_all_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        self.check(Op::Write)?;
        if let Some((sim, inode)) = &self.sim {
            if let Some((landed, kind)) = sim.short_write() {
                // Some bytes land, then the error: a device that fills up mid-write.
                let landed = bytes.get(..landed).unwrap_or(bytes);
                self.file.write_all_at(landed, offset)?;
                sim.wrote(*inode, offset, landed);
                return Err(io::Error::new(kind, "injected short write"));
            }
        }
        let result = self.file.write_all_at(bytes, offset);
        if let Some((sim, inode)) = &self.sim {
            // Even a failed write may have landed in part.
            sim.wrote(*inode, offset, bytes);
        }
        result
    }

    /// Sets the file's length (truncates, or extends with zeros).
    pub(crate) fn set_len(&self, len: u64) -> io::Result<()> {
        self.check(Op::SetLen)?;
        self.file.set_len(len)?;
        if let Some((sim, inode)) = &self.sim {
            sim.set_len(*inode, len);
        }
        Ok(())
    }

    /// Allocates the first `len` bytes on the device (`fallocate`), so later writes and reads of
    /// that range need no space. File systems without `fallocate` get the range written with
    /// zeros instead, which allocates it just the same.
    pub(crate) fn allocate(&self, len: u64) -> io::Result<()> {
        self.check(Op::Allocate)?;
        match rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                const CHUNK: usize = 1 << 20;
                let zeros = vec![0u8; CHUNK];
                let mut at = 0u64;
                while at < len {
                    let n = usize::try_from(len - at).unwrap_or(CHUNK).min(CHUNK);
                    self.file.write_all_at(zeros.get(..n).unwrap_or(&zeros), at)?;
                    at += n as u64;
                }
            }
            Err(e) => return Err(e.into()),
        }
        if let Some((sim, inode)) = &self.sim {
            sim.extended(*inode, len);
        }
        Ok(())
    }

    /// `fdatasync`: makes the file's data (and its length) durable.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        if let Err(e) = self.check(Op::Sync) {
            if let Some((sim, inode)) = &self.sim {
                sim.sync_failed(*inode);
            }
            return Err(e);
        }
        if let Some((sim, inode)) = &self.sim {
            // Simulated: see `Disk::sync_dir`.
            sim.synced(*inode);
            return Ok(());
        }
        self.file.sync_data()
    }
}
