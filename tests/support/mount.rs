//! Real small file systems for tests about disks: a tmpfs or a loop-mounted ext4 image, mounted
//! on a fresh temporary directory and unmounted on drop.
//!
//! Mounting needs root (CI runs as root) and, for ext4, `mkfs.ext4` (Debian package e2fsprogs).
//! Where either is missing the test fails saying so; nothing is skipped.
//!
//! A test process killed with SIGKILL runs no drop: its mounts stay, each tmpfs holding its
//! files in RAM and each ext4 image its blocks in the temp dir, run after run. So each mount's
//! directory is named after the process that made it (pid and start time), and each new mount
//! first unmounts and deletes those whose process is gone.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted file system; unmounted (and its image deleted) on drop.
pub struct Mount {
    /// Holds the mount point and, for ext4, the image file.
    _root: tempfile::TempDir,
    point: PathBuf,
}

fn run(what: &str, command: &mut Command, hint: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: could not run {command:?}: {e}. {hint}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}. {hint}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// `name` from PATH, or from the system directories a non-login PATH may lack.
fn system_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

const ROOT_HINT: &str = "These tests mount real file systems: they need `mount` (install it with \
     `apt-get install -y mount`, from util-linux) and must run as root (CI does)";

/// The start of the name of a mount's directory in the temp dir; the owner's pid namespace, pid
/// and start time follow.
const PREFIX: &str = "uno-cache-mount-";

/// This process's start time, in clock ticks after boot (field 22 of `/proc/<pid>/stat`): with
/// the pid, it names a process as a reused pid does not.
fn start_time(pid: &str) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the parenthesised command name start with the third, the state.
    stat.rsplit(") ").next()?.split(' ').nth(19).map(str::to_owned)
}

/// This process's pid namespace (the inode of `/proc/self/ns/pid`): a pid means a process only
/// in its namespace, and a container sharing the temp dir may have another.
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|ns| {
            ns.to_string_lossy()
                .chars()
                .filter(char::is_ascii_digit)
                .collect()
        })
        .unwrap_or_default()
}

/// A fresh directory for a mount, named after this process (see the module docs).
fn mount_root() -> tempfile::TempDir {
    sweep_leftovers();
    let pid = std::process::id().to_string();
    let started = start_time(&pid).unwrap_or_default();
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-{pid}-{started}-", pid_namespace()))
        .tempdir()
        .unwrap()
}

/// Whether the process that made the mount directory `name`, in this pid namespace, is gone.
fn owner_gone(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let mut parts = rest.splitn(4, '-');
    let (Some(ns), Some(pid), Some(started)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ours = !ns.is_empty() && ns == pid_namespace();
    ours && start_time(pid).as_deref() != Some(started)
}

/// Unmounts the mounts left by test processes that were killed, and deletes their directories
/// (ext4 images included). A directory that still has a mount under it is kept: deleting it
/// would delete the files of the file system mounted there.
fn sweep_leftovers() {
    let tmp = std::env::temp_dir();
    let left: Vec<PathBuf> = std::fs::read_dir(&tmp)
        .map(|dir| {
            dir.flatten()
                .filter(|e| owner_gone(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    if left.is_empty() {
        return;
    }
    for point in mount_points() {
        if left.iter().any(|root| point.starts_with(root)) {
            let _ = Command::new(system_binary("umount"))
                .arg("-l")
                .arg(&point)
                .status();
        }
    }
    let still = mount_points();
    for root in left {
        if !still.iter().any(|point| point.starts_with(&root)) {
            let _ = std::fs::remove_dir_all(&root);
        }
    }
}

/// The mount points of this process's mount namespace.
fn mount_points() -> Vec<PathBuf> {
    // Field 5 of each line is the mount point, with space, tab, newline and backslash octal
    // escaped (`\040`); the temp dirs here have none of those.
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

impl Mount {
    /// A tmpfs of `kib` KiB.
    pub fn tmpfs(kib: u64) -> Mount {
        let root = mount_root();
        let point = root.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        run(
            "mount tmpfs",
            Command::new(system_binary("mount"))
                .args(["-t", "tmpfs", "-o", &format!("size={kib}k")])
                .arg("tmpfs")
                .arg(&point),
            ROOT_HINT,
        );
        Mount { _root: root, point }
    }

    /// An ext4 file system of `mib` MiB in an image file, mounted through a loop device.
    pub fn ext4(mib: u64) -> Mount {
        let root = mount_root();
        let image = root.path().join("fs.img");
        let point = root.path().join("mnt");
        std::fs::create_dir(&point).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mib * 1024 * 1024)
            .unwrap();
        run(
            "mkfs.ext4",
            Command::new(system_binary("mkfs.ext4"))
                .args(["-q", "-F", "-m", "0"])
                .arg(&image),
            "Install it with `apt-get install -y e2fsprogs`",
        );
        run(
            "mount ext4 image",
            Command::new(system_binary("mount"))
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&point),
            ROOT_HINT,
        );
        Mount { _root: root, point }
    }

    pub fn path(&self) -> &Path {
        &self.point
    }

    /// Sets (`on`) or clears the immutable attribute of a file on an ext4 mount (`chattr +i`):
    /// while it is set, every write to the file fails with EPERM, through descriptors opened
    /// before too, as a failing device's writes do (an error that is not a full disk).
    pub fn set_immutable(&self, file: &Path, on: bool) {
        run(
            "chattr",
            Command::new(system_binary("chattr"))
                .arg(if on { "+i" } else { "-i" })
                .arg(file),
            "Install it with `apt-get install -y e2fsprogs`",
        );
    }

    /// Makes the file store in `dir` (on this mount) stop taking writes: its active segment, the
    /// newest, where every record and tombstone goes next, is set immutable. Returns that file,
    /// which the store's errors name and `set_immutable(.., false)` repairs.
    pub fn freeze_active_segment(&self, dir: &Path) -> PathBuf {
        let active = active_segment(dir);
        self.set_immutable(&active, true);
        active
    }

    /// Bytes in use on the file system, as the kernel counts them: deleted files that a process
    /// still holds open included, which `du` cannot see.
    pub fn used_bytes(&self) -> u64 {
        let s = statvfs(&self.point);
        (s.blocks - s.blocks_free) * s.fragment_size
    }

    /// Bytes still free.
    pub fn free_bytes(&self) -> u64 {
        let s = statvfs(&self.point);
        s.blocks_free * s.fragment_size
    }

    /// Fills the file system with a ballast file until not one block is free; returns its path.
    ///
    /// One pass is not enough on ext4: blocks freed since the last journal commit are not free
    /// yet, and delayed allocation reserves more than writeback uses. Passes repeat, each after
    /// a commit, until one adds nothing.
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let path = self.point.join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0xAAu8; 4096];
        for _pass in 0..16 {
            std::fs::File::open(&self.point).unwrap().sync_all().unwrap();
            let mut added = 0usize;
            loop {
                match file.write(&chunk) {
                    Ok(0) => break,
                    Ok(n) => added += n,
                    Err(e) if e.raw_os_error() == Some(28) => break,
                    Err(e) => panic!("filling {}: {e}", path.display()),
                }
            }
            // What the page cache accepted must reach the file system to count as used.
            let _ = file.sync_all();
            if added == 0 {
                break;
            }
        }
        // A growing file keeps blocks in reserve for its extent tree; a small new file does
        // not need them. Take those with one-byte files (each takes a block).
        for i in 0..4096 {
            let crumb = self.point.join(format!("{name}.{i}"));
            match std::fs::write(&crumb, b"x").and_then(|()| std::fs::File::open(&crumb)?.sync_all()) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling {}: {e}", crumb.display()),
            }
        }
        path
    }

    /// Remounts the file system read-only: every open for writing fails with EROFS from then on.
    pub fn remount_read_only(&self) {
        run(
            "remount read-only",
            Command::new(system_binary("mount"))
                .args(["-o", "remount,ro"])
                .arg(&self.point),
            ROOT_HINT,
        );
    }

    /// Makes ext4 remount itself read-only as it does on an error it finds on the device
    /// (`errors=remount-ro`, through its `trigger_fs_error` switch): from then on every write
    /// fails with EROFS, through descriptors opened before too. `mount -o remount,ro` cannot do
    /// this to a store that is open: the kernel refuses it while a file is open for writing.
    /// The file system stays so until it is unmounted.
    pub fn fail_read_only(&self) {
        run(
            "set errors=remount-ro",
            Command::new(system_binary("mount"))
                .args(["-o", "remount,errors=remount-ro"])
                .arg(&self.point),
            ROOT_HINT,
        );
        let source = Command::new(system_binary("findmnt"))
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.point)
            .output()
            .unwrap_or_else(|e| {
                panic!("could not run `findmnt`: {e}. Install it with `apt-get install -y util-linux`")
            });
        let source = String::from_utf8_lossy(&source.stdout);
        let device = source.trim().rsplit('/').next().unwrap_or_default();
        let switch = format!("/sys/fs/ext4/{device}/trigger_fs_error");
        std::fs::write(&switch, "uno-cache test")
            .unwrap_or_else(|e| panic!("writing {switch} (ext4 mounts only, as root): {e}"));
        let probe = std::fs::File::create(self.point.join("probe"));
        assert_eq!(
            probe.map_err(|e| e.raw_os_error()).err(),
            Some(Some(30)),
            "{} still takes writes after {switch}",
            self.point.display()
        );
    }

    /// Deletes a file and waits until the file system can give its blocks out again. ext4
    /// reuses freed blocks only once the journal transaction that freed them commits (up to
    /// five seconds later by default); an fsync of the directory commits it now.
    pub fn remove(&self, path: &Path) {
        std::fs::remove_file(path).unwrap();
        std::fs::File::open(&self.point).unwrap().sync_all().unwrap();
    }
}

struct Vfs {
    blocks: u64,
    blocks_free: u64,
    fragment_size: u64,
}

fn statvfs(path: &Path) -> Vfs {
    let out = Command::new("stat")
        .args(["-f", "-c", "%b %f %S"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("could not run `stat`: {e}. Install it with `apt-get install -y coreutils`")
        });
    assert!(
        out.status.success(),
        "stat -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let n: Vec<u64> = text.split_whitespace().map(|s| s.parse().unwrap()).collect();
    Vfs {
        blocks: n[0],
        blocks_free: n[1],
        fragment_size: n[2],
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazy: a file still open in a failing test must not leave the mount behind.
        let _ = Command::new(system_binary("umount"))
            .arg("-l")
            .arg(&self.point)
            .status();
    }
}

/// Files under `dir` that this process holds open although they were deleted, with their sizes.
pub fn deleted_but_open(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let text = target.to_string_lossy();
        if let Some(path) = text.strip_suffix(" (deleted)") {
            if Path::new(path).starts_with(dir) {
                let size = std::fs::metadata(entry.path()).map_or(0, |m| m.len());
                found.push((PathBuf::from(path), size));
            }
        }
    }
    found
}

/// Open file descriptors of this process on files under `dir`.
pub fn open_files_under(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
        .count()
}

/// The newest segment of the file store in `dir`: the active one, where its next record goes
/// (segment files are named by their id, zero-padded, so the greatest name is the newest).
pub fn active_segment(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == uno_cache::files::SEGMENT_EXT))
        .max()
        .expect("the store has a segment file")
}
