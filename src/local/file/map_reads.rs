//! How a get that misses the page cache reads the device: around its page, or only its page.
//!
//! A get reads its record through a segment's map, so a miss in the page cache is a page fault,
//! and the kernel reads around a faulting page as far as the device reads ahead (128 KiB by
//! default, 8 MiB on some virtual disks). In a store that fits in the memory it may use, that
//! is what warms it: 10,000 random gets of a cold 100 MB store ran 8.5 times as fast as redb's,
//! and 1.25 times with the advice below (`file_get_cold` in `benches/file_store.rs`). In a store
//! larger than that memory, the same read-around evicts the pages it read before they are used:
//! random gets of a cold 800 MB store of 4 KiB values, from a process in a 128 MiB memory
//! cgroup on a disk reading ahead 8 MiB, read 6.4 MiB from the device each and ran at 200 a
//! second; with the advice they read 9.5 KiB each and ran at 13,000 a second, 1.7 times redb's
//! (`file_get_larger_than_memory`).
//!
//! So the maps of a store whose size bound is more than half the memory it may use are advised
//! for random reads (`MADV_RANDOM`): a fault reads its own page. A get asks for the pages of a
//! record likely to straddle two in one request (`Segment::ahead_of_record`); scans of a segment
//! (eviction, compaction, the planner) ask for the next MiB ahead of themselves
//! (`format::ReadAhead`), and an eviction's copies likewise (`segment::InOrder`), so they still
//! read the device in large requests. The open's own scans run before the advice, with the
//! read-around: they read whole segments in order.
//!
//! The memory the process may use is the smallest of the machine's RAM and the limits of the
//! memory cgroups it runs in (v1 or v2, each ancestor's included): in a container, the limit of
//! the container, not the host's RAM.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// How the maps of the store's segments read the device on a page fault (see the module docs).
/// In TOML (`local.map_reads`): `"auto"`, `"around"` or `"random"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MapReads {
    /// [`MapReads::Random`] when the store's size bound is more than half of the memory this
    /// process may use (the machine's RAM or its memory cgroup's limit, whichever is smaller),
    /// [`MapReads::Around`] otherwise. The default.
    #[default]
    Auto,
    /// The kernel's read-around: a fault reads the device's read-ahead window around its page.
    /// A cold store that fits in memory warms at the device's sequential speed.
    Around,
    /// Advised for random reads: a fault reads only its own page, and scans ask for the next
    /// MiB ahead of themselves. A store larger than its memory reads what its gets need.
    Random,
}

impl MapReads {
    /// Whether a store of `bound` bytes advises its maps for random reads, with `memory` bytes
    /// the process may use (`None`: unknown, so the read-around, as before the choice existed).
    pub(crate) fn random_for(self, bound: u64, memory: Option<u64>) -> bool {
        match self {
            MapReads::Around => false,
            MapReads::Random => true,
            MapReads::Auto => memory.is_some_and(|memory| bound > memory / 2),
        }
    }
}

/// Bytes of memory this process may use: the smallest of the machine's RAM and the limits of
/// the memory cgroups it runs in. `None` if none of them can be read (not Linux, say).
pub(crate) fn memory_available() -> Option<u64> {
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| mem_total(&text));
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|own| cgroup_limit(&own, Path::new("/sys/fs/cgroup")));
    match (ram, cgroup) {
        (Some(ram), Some(limit)) => Some(ram.min(limit)),
        (ram, limit) => ram.or(limit),
    }
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

/// The smallest memory limit of the cgroups named in `own` (`/proc/self/cgroup`) and their
/// ancestors, read under `root` (`/sys/fs/cgroup`): cgroup v1's memory controller
/// (`N:...,memory,...:/path`, `memory.limit_in_bytes`) or cgroup v2 (`0::/path`, `memory.max`).
fn cgroup_limit(own: &str, root: &Path) -> Option<u64> {
    let mut smallest: Option<u64> = None;
    let mut note = |limit: Option<u64>| {
        if let Some(limit) = limit {
            smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
        }
    };
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (base, file) = if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else {
            continue;
        };
        // The group and each ancestor up to the root of the hierarchy: a parent's limit binds
        // its children too.
        let mut dir = base.join(path.trim_start_matches('/'));
        loop {
            note(read_limit(&dir.join(file)));
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    smallest
}

/// A limit file's value: a number of bytes, or `max` (v2) for none. v1 writes "no limit" as a
/// number near 2^63, which is more than any machine's RAM and so never the smallest.
fn read_limit(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_advises_random_reads_only_for_a_bound_over_half_the_memory() {
        const GIB: u64 = 1 << 30;
        assert!(!MapReads::Auto.random_for(GIB, Some(4 * GIB)));
        assert!(!MapReads::Auto.random_for(2 * GIB, Some(4 * GIB)));
        assert!(MapReads::Auto.random_for(2 * GIB + 1, Some(4 * GIB)));
        assert!(MapReads::Auto.random_for(GIB, Some(128 << 20)));
        assert!(
            !MapReads::Auto.random_for(GIB, None),
            "unknown memory: the read-around"
        );
        assert!(!MapReads::Around.random_for(GIB, Some(1)));
        assert!(MapReads::Random.random_for(1, Some(u64::MAX)));
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let meminfo = "MemTotal:       24576000 kB\nMemFree:        16000000 kB\n";
        assert_eq!(mem_total(meminfo), Some(24_576_000 * 1024));
        assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    }

    /// A cgroup tree as the kernel shows it, laid out in a temporary directory.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, value) in files {
            let path = root.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, value).unwrap();
        }
        root
    }

    #[test]
    fn a_v1_memory_limit_is_the_smallest_of_the_group_and_its_ancestors() {
        let root = tree(&[
            ("memory/memory.limit_in_bytes", "9223372036854771712\n"),
            ("memory/pod/memory.limit_in_bytes", "536870912\n"),
            ("memory/pod/app/memory.limit_in_bytes", "9223372036854771712\n"),
        ]);
        let own = "12:pids:/pod/app\n4:cpuacct,memory:/pod/app\n0::/\n";
        assert_eq!(cgroup_limit(own, root.path()), Some(512 << 20));
        assert_eq!(
            cgroup_limit("4:memory:/\n", root.path()),
            Some(9_223_372_036_854_771_712)
        );
    }

    #[test]
    fn a_v2_memory_limit_is_the_smallest_of_the_group_and_its_ancestors_and_max_is_none() {
        let root = tree(&[
            ("box/memory.max", "max\n"),
            ("box/app/memory.max", "134217728\n"),
            ("other/memory.max", "max\n"),
        ]);
        assert_eq!(cgroup_limit("0::/box/app\n", root.path()), Some(128 << 20));
        assert_eq!(cgroup_limit("0::/other\n", root.path()), None);
        assert_eq!(
            cgroup_limit("0::/\n", root.path()),
            None,
            "the root has no memory.max"
        );
    }
}
