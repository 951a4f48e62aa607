//! A power-loss simulator for the [`Disk`](super::Disk) layer (test builds only).
#![allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
//!
//! It watches one directory. Every call through the layer is applied to the real files (so the
//! running store reads what it wrote) and recorded: per file, the content that is durable and the
//! writes, truncations and extensions since its last fsync; for the directory, the names that are
//! durable and the creations, renames and unlinks since its last fsync. At [`Sim::crash`] it
//! writes, into a new directory, one state a power loss could have left, chosen by a seed:
//!
//! - each file keeps its durable content plus an arbitrary subset of its pending operations, in
//!   order; a kept write may be torn, keeping only some of its 512-byte sectors;
//! - the directory keeps its durable names plus a prefix of its pending name changes (file
//!   systems journal metadata in order, so a later rename never survives an earlier one's loss);
//! - a directory that did not exist when the simulator started is lost with everything in it,
//!   on some seeds, until its parent is fsynced.
//!
//! It can also fail the next call of a kind with a chosen error, for the paths a real file system
//! cannot fail on demand. A failed fsync loses the file's unsynced writes, as a writeback error
//! does on Linux (the pages are marked clean; a later fsync reports success without them).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

use super::Op;

const SECTOR: u64 = 512;

#[derive(Debug, Clone)]
enum FileOp {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
    Extend(u64),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(OsString, usize),
    Rename(OsString, OsString),
    Unlink(OsString),
}

#[derive(Debug, Default, Clone)]
struct Inode {
    durable: Vec<u8>,
    pending: Vec<FileOp>,
}

/// A call held in [`Sim::check`] until the test lets it go (see [`Sim::hold_next`]).
#[derive(Debug, Default)]
pub(crate) struct Hold {
    state: Mutex<HoldState>,
    cv: parking_lot::Condvar,
}

#[derive(Debug, Default)]
struct HoldState {
    held: bool,
    outcome: Option<Option<io::ErrorKind>>,
}

impl Hold {
    /// Waits until a call is held here.
    pub(crate) fn wait_held(&self) {
        let mut state = self.state.lock();
        while !state.held {
            self.cv.wait(&mut state);
        }
    }

    /// Lets the held call go on (`None`) or fail with `kind`.
    pub(crate) fn release(&self, fail: Option<io::ErrorKind>) {
        self.state.lock().outcome = Some(fail);
        self.cv.notify_all();
    }

    fn hold(&self) -> Option<io::ErrorKind> {
        let mut state = self.state.lock();
        state.held = true;
        self.cv.notify_all();
        loop {
            if let Some(outcome) = state.outcome {
                return outcome;
            }
            self.cv.wait(&mut state);
        }
    }
}

#[derive(Debug, Default)]
struct State {
    inodes: Vec<Inode>,
    names: BTreeMap<OsString, usize>,
    durable_names: BTreeMap<OsString, usize>,
    pending_dir: Vec<DirOp>,
    /// Armed failures: the kind of call, how many such calls still pass, the error.
    faults: Vec<(Op, usize, io::ErrorKind)>,
    short_writes: Vec<(usize, io::ErrorKind)>,
    holds: Vec<(Op, std::sync::Arc<Hold>)>,
    crashed: bool,
    /// The watched directory did not exist when the simulator started and its parent was not
    /// fsynced since: its own name, and so every file in it, may be lost.
    dir_name_pending: bool,
}

/// Records what reaches the disk in one directory; see the module docs.
#[derive(Debug)]
pub(crate) struct Sim {
    dir: PathBuf,
    state: Mutex<State>,
}

fn apply(content: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, bytes } => {
            let (start, end) = (*offset as usize, *offset as usize + bytes.len());
            if content.len() < end {
                content.resize(end, 0);
            }
            content[start..end].copy_from_slice(bytes);
        }
        FileOp::SetLen(len) => content.resize(*len as usize, 0),
        FileOp::Extend(len) => {
            if content.len() < *len as usize {
                content.resize(*len as usize, 0);
            }
        }
    }
}

impl Sim {
    /// Starts watching `dir`; what it holds now counts as durable.
    pub(crate) fn new(dir: &Path) -> std::sync::Arc<Sim> {
        let mut state = State {
            dir_name_pending: !dir.exists(),
            ..State::default()
        };
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.path().is_file() {
                    let content = std::fs::read(entry.path()).unwrap_or_default();
                    state.inodes.push(Inode {
                        durable: content,
                        pending: Vec::new(),
                    });
                    let id = state.inodes.len() - 1;
                    state.names.insert(entry.file_name(), id);
                    state.durable_names.insert(entry.file_name(), id);
                }
            }
        }
        std::sync::Arc::new(Sim {
            dir: dir.to_owned(),
            state: Mutex::new(state),
        })
    }

    /// Makes the next call of kind `op` fail with `kind`, doing nothing.
    pub(crate) fn fail_next(&self, op: Op, kind: io::ErrorKind) {
        self.fail_after(op, 0, kind);
    }

    /// Lets `skip` calls of kind `op` through, then fails the next one with `kind`, doing nothing.
    pub(crate) fn fail_after(&self, op: Op, skip: usize, kind: io::ErrorKind) {
        self.state.lock().faults.push((op, skip, kind));
    }

    /// Makes the next write land its first `landed` bytes, then fail with `kind` (checked after
    /// the failures of [`Sim::fail_next`]).
    pub(crate) fn short_next_write(&self, landed: usize, kind: io::ErrorKind) {
        self.state.lock().short_writes.push((landed, kind));
    }

    /// The short write armed for the next write, taken.
    pub(super) fn short_write(&self) -> Option<(usize, io::ErrorKind)> {
        let mut state = self.state.lock();
        (!state.short_writes.is_empty()).then(|| state.short_writes.remove(0))
    }

    fn name(&self, path: &Path) -> Option<OsString> {
        (path.parent() == Some(self.dir.as_path()))
            .then(|| path.file_name().map(ToOwned::to_owned))
            .flatten()
    }

    /// Failures armed with [`Sim::fail_next`] or [`Sim::short_next_write`] and not hit yet.
    pub(crate) fn pending_faults(&self) -> usize {
        let state = self.state.lock();
        state.faults.len() + state.short_writes.len()
    }

    /// Holds the next call of kind `op` until the returned hold is released.
    pub(crate) fn hold_next(&self, op: Op) -> std::sync::Arc<Hold> {
        let hold = std::sync::Arc::new(Hold::default());
        self.state.lock().holds.push((op, std::sync::Arc::clone(&hold)));
        hold
    }

    pub(super) fn check(&self, op: Op, _path: &Path) -> io::Result<()> {
        let hold = {
            let mut state = self.state.lock();
            state
                .holds
                .iter()
                .position(|(o, _)| *o == op)
                .map(|at| state.holds.remove(at).1)
        };
        if let Some(hold) = hold {
            if let Some(kind) = hold.hold() {
                return Err(io::Error::new(kind, format!("injected {op:?} failure")));
            }
        }
        let mut state = self.state.lock();
        if state.crashed {
            return Err(io::Error::other("the simulated machine lost power"));
        }
        if let Some(at) = state.faults.iter().position(|(o, _, _)| *o == op) {
            if let Some((_, skip @ 1.., _)) = state.faults.get_mut(at) {
                *skip -= 1;
                return Ok(());
            }
            let (_, _, kind) = state.faults.remove(at);
            return Err(io::Error::new(kind, format!("injected {op:?} failure")));
        }
        Ok(())
    }

    pub(super) fn created(&self, path: &Path) -> usize {
        let mut state = self.state.lock();
        let Some(name) = self.name(path) else {
            return usize::MAX;
        };
        if let Some(&id) = state.names.get(&name) {
            // Re-created (emptied) under the same name: the same file.
            state.inodes[id].pending.push(FileOp::SetLen(0));
            return id;
        }
        state.inodes.push(Inode::default());
        let id = state.inodes.len() - 1;
        state.names.insert(name.clone(), id);
        state.pending_dir.push(DirOp::Link(name, id));
        id
    }

    pub(super) fn opened(&self, path: &Path) -> usize {
        let state = self.state.lock();
        self.name(path)
            .and_then(|n| state.names.get(&n).copied())
            .unwrap_or(usize::MAX)
    }

    pub(super) fn renamed(&self, from: &Path, to: &Path) {
        let mut state = self.state.lock();
        let (Some(from), Some(to)) = (self.name(from), self.name(to)) else {
            return;
        };
        if let Some(id) = state.names.remove(&from) {
            state.names.insert(to.clone(), id);
            state.pending_dir.push(DirOp::Rename(from, to));
        }
    }

    pub(super) fn linked(&self, from: &Path, to: &Path) {
        let mut state = self.state.lock();
        let (Some(from), Some(to)) = (self.name(from), self.name(to)) else {
            return;
        };
        if let Some(&id) = state.names.get(&from) {
            state.names.insert(to.clone(), id);
            state.pending_dir.push(DirOp::Link(to, id));
        }
    }

    pub(super) fn removed(&self, path: &Path) {
        let mut state = self.state.lock();
        if let Some(name) = self.name(path) {
            if state.names.remove(&name).is_some() {
                state.pending_dir.push(DirOp::Unlink(name));
            }
        }
    }

    pub(super) fn dir_synced(&self, dir: &Path) {
        if Some(dir) == self.dir.parent() {
            self.state.lock().dir_name_pending = false;
        }
        if dir != self.dir {
            return;
        }
        let mut state = self.state.lock();
        let ops = std::mem::take(&mut state.pending_dir);
        for op in &ops {
            apply_dir(&mut state.durable_names, op);
        }
    }

    fn pending(&self, inode: usize, op: FileOp) {
        let mut state = self.state.lock();
        if let Some(file) = state.inodes.get_mut(inode) {
            file.pending.push(op);
        }
    }

    pub(super) fn wrote(&self, inode: usize, offset: u64, bytes: &[u8]) {
        self.pending(
            inode,
            FileOp::Write {
                offset,
                bytes: bytes.to_vec(),
            },
        );
    }

    pub(super) fn set_len(&self, inode: usize, len: u64) {
        self.pending(inode, FileOp::SetLen(len));
    }

    pub(super) fn extended(&self, inode: usize, len: u64) {
        self.pending(inode, FileOp::Extend(len));
    }

    /// An fsync of `inode` failed: as Linux does after a writeback error, the file's unsynced
    /// writes are lost (their pages are marked clean, so no later fsync writes them, and a
    /// later fsync of the same open file reports success).
    pub(super) fn sync_failed(&self, inode: usize) {
        let mut state = self.state.lock();
        if let Some(file) = state.inodes.get_mut(inode) {
            file.pending.clear();
        }
    }

    pub(super) fn synced(&self, inode: usize) {
        let mut state = self.state.lock();
        if let Some(file) = state.inodes.get_mut(inode) {
            let ops = std::mem::take(&mut file.pending);
            for op in &ops {
                apply(&mut file.durable, op);
            }
        }
    }

    /// Cuts the power: every later call fails, and `into` receives one state the disk could
    /// hold now, chosen by `seed`. Returns a one-line account of what was dropped.
    pub(crate) fn crash(&self, seed: u64, into: &Path) -> String {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut state = self.state.lock();
        state.crashed = true;
        std::fs::create_dir_all(into).ok();
        if state.dir_name_pending && rng.random_bool(0.5) {
            return "the directory itself was lost: it was never fsynced into its parent".into();
        }
        let mut names = state.durable_names.clone();
        let kept_dir_ops = rng.random_range(0..=state.pending_dir.len());
        for op in state.pending_dir.iter().take(kept_dir_ops) {
            apply_dir(&mut names, op);
        }
        let (mut kept, mut dropped, mut torn) = (0, 0, 0);
        for (name, &id) in &names {
            let Some(file) = state.inodes.get(id) else {
                continue;
            };
            let mut content = file.durable.clone();
            for op in &file.pending {
                match rng.random_range(0..4u8) {
                    0 => dropped += 1,
                    1 => {
                        if let FileOp::Write { offset, bytes } = op {
                            torn += 1;
                            tear(&mut rng, &mut content, *offset, bytes);
                        } else {
                            apply(&mut content, op);
                        }
                    }
                    _ => {
                        kept += 1;
                        apply(&mut content, op);
                    }
                }
            }
            std::fs::write(into.join(name), &content).ok();
        }
        format!(
            "dir ops kept {kept_dir_ops}/{}, file ops kept {kept}, dropped {dropped}, torn {torn}",
            state.pending_dir.len()
        )
    }
}

fn apply_dir(names: &mut BTreeMap<OsString, usize>, op: &DirOp) {
    match op {
        DirOp::Link(name, id) => {
            names.insert(name.clone(), *id);
        }
        DirOp::Rename(from, to) => {
            if let Some(id) = names.remove(from) {
                names.insert(to.clone(), id);
            }
        }
        DirOp::Unlink(name) => {
            names.remove(name);
        }
    }
}

/// Applies some of a write's sectors (by absolute 512-byte sector), as a power loss mid-write can.
fn tear(rng: &mut impl Rng, content: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    let end = offset + bytes.len() as u64;
    let mut at = offset;
    while at < end {
        let sector_end = ((at / SECTOR) + 1) * SECTOR;
        let chunk_end = sector_end.min(end);
        if rng.random_bool(0.5) {
            let piece = &bytes[(at - offset) as usize..(chunk_end - offset) as usize];
            apply(
                content,
                &FileOp::Write {
                    offset: at,
                    bytes: piece.to_vec(),
                },
            );
        }
        at = chunk_end;
    }
}
