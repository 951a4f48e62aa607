//! A machine with little RAM, for real: a memory cgroup with a hard limit, in which a test runs
//! a child process.
//!
//! The cgroup is made next to the test's own: under it with cgroup v1's memory controller, as a
//! sibling with cgroup v2 (whose processes may only live in leaves). Making one needs root (CI
//! runs as root); where no memory cgroup can be made the test fails saying so; nothing is
//! skipped. The child is started under `setpriv --pdeathsig KILL` (util-linux), so it dies with
//! the test even when the test is killed; the cgroup is removed on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

const HINT: &str = "The low-memory tests run a child process in a memory cgroup of their own: they \
     need a writable cgroup v1 memory controller (/sys/fs/cgroup/memory) or cgroup v2 with the \
     memory controller enabled for the test's parent cgroup, and must run as root (CI does)";

/// A memory cgroup with a hard limit; removed on drop (its processes must have exited).
pub struct MemoryCgroup {
    path: PathBuf,
    v2: bool,
}

/// Where new cgroups can be made next to this process's: (directory, is v2).
fn parent_dir() -> (PathBuf, bool) {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_else(|e| panic!("reading /proc/self/cgroup: {e}. {HINT}"));
    // cgroup v1: "4:memory:/some/path" (the memory controller may share a line with others).
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if controllers.split(',').any(|c| c == "memory") {
            let dir = Path::new("/sys/fs/cgroup/memory").join(path.trim_start_matches('/'));
            if dir.join("memory.limit_in_bytes").is_file() {
                return (dir, false);
            }
        }
    }
    // cgroup v2: "0::/some/path"; a sibling, whose parent must hand the memory controller down.
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let own_dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        let parent = if path == "/" {
            own_dir.clone()
        } else {
            own_dir.parent().unwrap().to_path_buf()
        };
        let delegated = std::fs::read_to_string(parent.join("cgroup.subtree_control"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        if delegated {
            return (parent, true);
        }
    }
    panic!("no memory cgroup to make a child cgroup in (/proc/self/cgroup: {own:?}). {HINT}");
}

impl MemoryCgroup {
    /// A new memory cgroup whose processes may use at most `limit` bytes (page cache included,
    /// swap excluded where the kernel counts it apart).
    pub fn new(limit: u64) -> MemoryCgroup {
        let (parent, v2) = parent_dir();
        static MADE: AtomicU32 = AtomicU32::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!("uno-cache-test-{}-{n}", std::process::id()));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("making the cgroup {}: {e}. {HINT}", path.display()));
        let group = MemoryCgroup { path, v2 };
        let limit_file = if v2 { "memory.max" } else { "memory.limit_in_bytes" };
        group.write(limit_file, &limit.to_string());
        if v2 {
            // No swap either, so the limit is a limit on RAM.
            let _ = std::fs::write(group.path.join("memory.swap.max"), "0");
        }
        group
    }

    /// The cgroup's name, as `/proc/<pid>/cgroup` of its processes ends.
    pub fn name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.path.join(file);
        std::fs::write(&path, value)
            .unwrap_or_else(|e| panic!("writing {value} to {}: {e}. {HINT}", path.display()));
    }

    /// A command that runs `program` with `args` inside the cgroup, from its first instruction
    /// (the shell joins the cgroup, then `exec`s), and kills it when the calling thread ends.
    pub fn command(&self, program: &Path, args: &[&str]) -> Command {
        let procs = self.path.join("cgroup.procs");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$0" && exec setpriv --pdeathsig KILL -- sh -c "$@""#)
            .arg(procs)
            // As support::dies_with_us: exec only if the test process is still the parent, which
            // a kill before setpriv's prctl would have orphaned for good.
            .arg(r#"[ "$PPID" = "$0" ] && exec "$@""#)
            .arg(std::process::id().to_string())
            .arg(program)
            .args(args);
        cmd
    }

    /// How many times the kernel's OOM killer killed a process of the cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.path.join(file)).unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The most memory the cgroup's processes used at once, where the kernel reports it.
    pub fn peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes have been waited for, so it is empty; should it not be, an empty
        // directory in the test's own cgroup is all that is left.
        let _ = std::fs::remove_dir(&self.path);
    }
}
