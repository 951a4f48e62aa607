//! The file store on the disks its users have: small tmpfs mounts and full ext4 file systems,
//! really mounted (as root) and really filled. What is pinned: the bytes the kernel counts as
//! used stay within the size bound plus one segment at every moment, whatever the durability;
//! deleted segments never stay open; a full device never raises a signal, never blocks opening or
//! reading, makes writes evict before they fail with `DiskFull`, and writes resume once space
//! returns; failed opens leave nothing behind; a file system that goes read-only under the store
//! fails its writes naming the file, and loses nothing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
#[cfg(feature = "cli")]
use std::process::{Output, Stdio};
use std::time::Duration;

use mount::{deleted_but_open, open_files_under, Mount};
use uno_cache::replay::{ReplayOptions, ReplayQueue};
use uno_cache::{Durability, Error, FileStore, FileStoreOptions};

const KIB: u64 = 1024;

/// The tests of this file measure whole file systems and the process's open files; a child
/// process forked by one test (the CLI) briefly holds every open file of the others, deleted
/// ones too. So they run one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
const MIB: u64 = 1024 * KIB;

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i.wrapping_mul(31) + j) as u8).collect()
}

/// Files in `dir` whose names a finished operation must not leave behind.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn bytes_on_the_device_stay_within_the_bound_plus_one_segment_under_every_durability() {
    let _serial = one_at_a_time();
    let max = MIB;
    let segment = 64 * KIB;
    for durability in [
        Durability::None,
        Durability::Periodic(Duration::from_millis(50)),
        Durability::EveryWrite,
    ] {
        let fs = Mount::tmpfs(64 * 1024);
        let baseline = fs.used_bytes();
        let dir = fs.path().join("store");
        let store = FileStore::open(
            &dir,
            FileStoreOptions::default()
                .max_size_mb(1)
                .segment_size(segment)
                .durability(durability),
        )
        .unwrap();
        // Every file rounds up to a page on tmpfs: allow one page per file the bound can hold
        // (a segment and its hint each), and the lock and metadata files.
        let files = 2 * (max / segment + 2) + 2;
        let bound = max + segment + files * 4 * KIB;
        let segments_in_bound = (max / segment + 2) as usize;
        let mut worst = 0;
        for i in 0..6_000 {
            store.set(&format!("k{i}"), &value(i, 4096), None).unwrap();
            if i % 25 == 0 {
                let used = fs.used_bytes() - baseline;
                worst = worst.max(used);
                assert!(
                    used <= bound,
                    "{durability:?}: {used} bytes used on the device after {i} writes, bound {bound}; \
                     deleted but open: {:?}; {:?}",
                    deleted_but_open(&dir),
                    store.stats()
                );
                let stats = store.stats();
                assert!(
                    stats.allocated_bytes <= max + segment,
                    "{durability:?}: {stats:?}"
                );
                // A flush may hold one segment that was evicted while it was being fsynced, by
                // two descriptors while it writes that segment's hint (it reads the segment
                // through one of its own): one segment, not one descriptor.
                let held = deleted_but_open(&dir);
                let mut segments: Vec<_> = held.iter().map(|(path, _)| path).collect();
                segments.sort();
                segments.dedup();
                assert!(segments.len() <= 1, "{durability:?}: deleted but open: {held:?}");
                let open = open_files_under(&dir);
                assert!(
                    open <= segments_in_bound + 2,
                    "{durability:?}: {open} open files for at most {segments_in_bound} segments"
                );
            }
        }
        assert!(store.stats().evictions > 4_000, "{:?}", store.stats());
        eprintln!("{durability:?}: worst {worst} bytes used on the device (bound {bound})");
        store.close().unwrap();
    }
}

#[test]
fn the_replay_queue_keeps_no_deleted_file_open_and_stays_within_its_documented_size() {
    let _serial = one_at_a_time();
    let fs = Mount::tmpfs(64 * 1024);
    let baseline = fs.used_bytes();
    let max_bytes = 256 * KIB;
    let queue = ReplayQueue::open(fs.path(), ReplayOptions::default().max_bytes(max_bytes)).unwrap();
    let payload = value(7, 1000);
    for round in 0..200 {
        for i in 0..100 {
            queue
                .push_set(&format!("k{}", (round * 100 + i) % 500), &payload, 0)
                .unwrap();
        }
        let pending = queue.pending_up_to(80);
        queue.ack_many(&pending).unwrap();
        if round % 10 == 0 {
            queue.compact().unwrap();
        }
        let used = fs.used_bytes() - baseline;
        // The documented bound of the log file (two times max_bytes plus 64 KiB), and the lock.
        assert!(
            used <= 2 * max_bytes + 64 * KIB + 8 * KIB,
            "round {round}: {used} bytes"
        );
        assert!(deleted_but_open(fs.path()).is_empty(), "round {round}");
    }
}

/// A compaction refused by a full device is tried again once the log has grown by the pending
/// bytes. Once a retry succeeds, the log keeps its documented bound again (two times
/// `max_bytes` plus 64 KiB): the wait the failure set outlived the retry, and every later
/// compaction waited for the log to reach that old length, about three times the pending bytes.
#[test]
fn once_a_compaction_a_full_device_refused_succeeds_the_replay_log_keeps_its_bound() {
    let _serial = one_at_a_time();
    let fs = Mount::tmpfs(8 * 1024);
    let max_bytes = 256 * KIB;
    let queue = ReplayQueue::open(fs.path(), ReplayOptions::default().max_bytes(max_bytes)).unwrap();
    let payload = value(3, 1000);
    // Pending bytes close to `max_bytes`: every rewrite of the log needs room for them.
    for i in 0..240 {
        queue.push_set(&format!("live{i}"), &payload, 0).unwrap();
    }
    let live = queue.stats().bytes;
    // One write that reached L2 late: pushed, replayed, acked (its records are dead bytes).
    let mut n = 0u32;
    let mut cycle = || {
        n += 1;
        queue.push_set(&format!("t{n}"), &payload, 0).unwrap();
        let op = queue.pending().pop().unwrap();
        assert_eq!(op.key, format!("t{n}"));
        assert!(queue.ack(&op).unwrap());
        queue.stats()
    };
    // Up to a few writes short of a compaction, then a device with room for writes, not for a
    // rewrite.
    while cycle().log_bytes < 36 + 2 * live - 4 * 1100 {}
    assert_eq!(queue.stats().compactions, 0);
    let ballast = fs.fill("ballast");
    let full = std::fs::metadata(&ballast).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .unwrap()
        .set_len(full - 64 * KIB)
        .unwrap();
    for _ in 0..8 {
        cycle();
    }
    let stats = cycle();
    assert_eq!(
        (stats.compaction_failures, stats.compactions),
        (1, 0),
        "{stats:?}"
    );
    assert!(stats.write_failure.is_none(), "{stats:?}");
    fs.remove(&ballast);
    let mut tries = 0;
    while cycle().compactions == 0 {
        tries += 1;
        assert!(tries < 1000, "never compacted again: {:?}", queue.stats());
    }
    let bound = 2 * max_bytes + 64 * KIB;
    for _ in 0..800 {
        let stats = cycle();
        let on_disk = std::fs::metadata(fs.path().join("replay.log")).unwrap().len();
        assert!(
            stats.log_bytes <= bound && on_disk <= bound,
            "{on_disk} bytes on disk, over the bound of {bound}: {stats:?}"
        );
    }
    assert!(queue.stats().compactions >= 3, "{:?}", queue.stats());
}

#[cfg(feature = "cli")]
fn cli(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_uno-cache"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // The child may stop reading (a refused import): its exit code tells.
            let _ = input.write_all(bytes);
        }
    }
    child.wait_with_output().unwrap()
}

#[cfg(feature = "cli")]
fn no_signal(what: &str, out: &Output) -> i32 {
    assert_eq!(
        out.status.signal(),
        None,
        "{what} was killed by a signal ({:?}); stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.code().unwrap()
}

#[test]
#[cfg(feature = "cli")]
fn a_tmpfs_filled_through_the_cli_never_kills_it_with_a_signal_and_reads_still_work() {
    let _serial = one_at_a_time();
    let fs = Mount::tmpfs(6 * 1024);
    let dir = fs.path().join("store");
    // About 3.2 MB, under the store's 4 MiB bound: an import stops rather than evict what it
    // stored. The ballast below fills the rest of the tmpfs.
    let mut input = Vec::new();
    for i in 0..800 {
        input.extend_from_slice(format!("k{i}\t{}\n", "v".repeat(4000)).as_bytes());
    }
    let import = cli(&dir, &["--max-size-mb", "4", "import"], Some(&input));
    assert_eq!(
        no_signal("import", &import),
        0,
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    // Now nothing else fits.
    let _ballast = fs.fill("ballast");
    for args in [
        &["--max-size-mb", "4", "get", "k799"][..],
        &["--max-size-mb", "4", "stats"],
        &["--max-size-mb", "4", "verify"],
        &["--max-size-mb", "4", "dump"],
    ] {
        let out = cli(&dir, args, None);
        let code = no_signal(&args.join(" "), &out);
        assert_eq!(code, 0, "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let hit = cli(&dir, &["--max-size-mb", "4", "get", "k799"], None);
    assert_eq!(hit.stdout, "v".repeat(4000).as_bytes());
    // A write makes room by evicting the oldest segment (or says the disk is full); no signal.
    let set = cli(&dir, &["--max-size-mb", "4", "set", "new", "value"], None);
    let code = no_signal("set", &set);
    assert!(
        code == 0 || String::from_utf8_lossy(&set.stderr).contains("no space left"),
        "set exited {code}: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

/// A new store's segments are an eighth of its bound, 64 MiB under the default one: on a device
/// with less room, the first `set` through `--dir` got `DiskFull` telling the user to lower
/// `local.max_size`, a field of a configuration they do not have, and the store that `set` had
/// created kept its 64 MiB segments, so the `--max-size-mb` they tried next was refused (found by
/// review). The error names the flag and the way out, and that way works.
#[test]
#[cfg(feature = "cli")]
fn a_cli_set_with_no_room_for_one_segment_names_the_flag_and_the_way_out() {
    let _serial = one_at_a_time();
    let fs = Mount::tmpfs(4 * 1024);
    let dir = fs.path().join("store");
    let out = cli(&dir, &["set", "k", "v"], None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(no_signal("set", &out), 2, "{stderr}");
    assert!(
        stderr.contains("no space left") && stderr.contains("--max-size-mb"),
        "{stderr}"
    );
    assert!(!stderr.contains("local.max_size"), "{stderr}");
    assert!(stderr.contains(&format!("remove {}", dir.display())), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
    let out = cli(&dir, &["--max-size-mb", "8", "set", "k", "v"], None);
    assert_eq!(
        no_signal("set", &out),
        0,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(cli(&dir, &["get", "k"], None).stdout, b"v");
}

fn options() -> FileStoreOptions {
    FileStoreOptions::default()
        .max_size_mb(8)
        .segment_size(256 * KIB)
        .background_threads(false)
}

#[test]
fn a_full_ext4_disk_opens_and_reads_then_writes_evict_then_fail_with_disk_full_then_recover() {
    let _serial = one_at_a_time();
    let fs = Mount::ext4(24);
    let dir = fs.path().join("store");
    let n = 1_500;
    {
        let store = FileStore::open(&dir, options()).unwrap();
        for i in 0..n {
            store.set(&format!("k{i}"), &value(i, 4000), None).unwrap();
        }
        store.close().unwrap();
    }
    let files_before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let ballast = fs.fill("ballast");

    // Opening needs no space; every entry still there is read back intact.
    let store = FileStore::open(&dir, options()).unwrap();
    let live_before = store.stats().live_items;
    assert!(live_before > 1_000, "{:?}", store.stats());
    for i in (0..n).rev().take(live_before as usize) {
        assert_eq!(store.get(&format!("k{i}")).unwrap(), Some(value(i, 4000)), "k{i}");
    }
    assert!(store.verify(|_, _| {}).unwrap().is_clean());

    // A write on the full disk evicts the oldest segment to make room, and lands.
    store.set("fresh", &value(1, 4000), None).unwrap();
    assert_eq!(store.get("fresh").unwrap(), Some(value(1, 4000)));
    assert!(store.stats().evictions > 0, "{:?}", store.stats());
    assert_eq!(
        store.get(&format!("k{}", n - 1)).unwrap(),
        Some(value(n - 1, 4000))
    );

    // Clearing works on a disk with not one block free (the moment a user reaches for it):
    // it removes segments until its metadata fits.
    let _last_blocks = fs.fill("ballast1b");
    store.clear().unwrap();
    assert!(store.get(&format!("k{}", n - 1)).unwrap().is_none());

    // With nothing left to evict, a write gets DiskFull naming the directory, and latches nothing.
    let _more = fs.fill("ballast2");
    let err = store.set("k", &value(2, 4000), None).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.display().to_string()), "{err}");
    assert!(store.get("fresh").unwrap().is_none());

    // Space returns: writes work again without reopening.
    fs.remove(&ballast);
    store.set("k", &value(2, 4000), None).unwrap();
    assert_eq!(store.get("k").unwrap(), Some(value(2, 4000)));
    store.close().unwrap();
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    assert!(!files_before.is_empty());
}

#[test]
fn reopening_on_a_full_disk_leaves_no_file_behind() {
    let _serial = one_at_a_time();
    let fs = Mount::ext4(16);
    let dir = fs.path().join("store");
    // A process that writes and exits without closing the store: its active segment has no
    // hint, so the next open scans it and writes one.
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writes_300_entries_and_exits_without_closing",
            "--ignored",
            "--nocapture",
        ])
        .env("UNO_TEST_CHILD_DIR", &dir)
        .status()
        .unwrap();
    assert!(child.success());
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let _ballast = fs.fill("ballast");
    let before = names(&dir);
    for _ in 0..3 {
        let store = FileStore::open(&dir, options()).unwrap();
        assert_eq!(store.get("k299").unwrap(), Some(value(299, 4000)));
        drop(store);
        let after = names(&dir);
        // Only hint files (of the segment scanned) may appear, never a segment or a temp file.
        let added: Vec<&String> = after.iter().filter(|n| !before.contains(n)).collect();
        assert!(added.iter().all(|n| n.ends_with(".hint")), "added {added:?}");
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
    }
}

#[test]
fn a_first_open_on_a_full_tmpfs_fails_cleanly_and_leaves_nothing_behind() {
    let _serial = one_at_a_time();
    let fs = Mount::tmpfs(1024);
    let _ballast = fs.fill("ballast");
    let dir = fs.path().join("store");
    let err = FileStore::open(&dir, options()).unwrap_err();
    assert!(err.to_string().contains("store"), "{err}");
    assert!(!dir.exists(), "{:?}", std::fs::read_dir(&dir).map(|d| d.count()));
}

/// A store written before segments were reserved has sparse segments, and a roll a crash cut
/// short left one whose header is a hole. The open read that header through a map, which
/// faults a page in for a hole: a full tmpfs has none to give, and the open died of SIGBUS. The
/// open runs in a child process, which a signal kills instead of the test binary.
#[test]
fn opening_on_a_full_tmpfs_a_sparse_segment_whose_header_is_a_hole_raises_no_signal() {
    let _serial = one_at_a_time();
    let fs = Mount::tmpfs(4 * 1024);
    let dir = fs.path().join("store");
    let store = FileStore::open(&dir, options()).unwrap();
    store.set("k", &value(1, 4000), None).unwrap();
    store.close().unwrap();
    let newest: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".seg")?.parse().ok())
        .max()
        .unwrap();
    let sparse = dir.join(format!("{:020}.seg", newest + 1));
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(256 * KIB)
        .unwrap();
    let _ballast = fs.fill("ballast");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_opens_a_store_whose_newest_segment_is_a_hole_and_reads_k",
            "--ignored",
            "--nocapture",
        ])
        .env("UNO_TEST_CHILD_DIR", &dir)
        .status()
        .unwrap();
    assert_eq!(child.signal(), None, "the open was killed by a signal: {child}");
    assert!(child.success(), "{child}");
    assert!(!sparse.exists(), "a roll cut short is removed");
}

/// A compaction of mostly live segments on a device with no room for a new segment: it stops
/// with `DiskFull` and the store keeps every entry. Its rolls evicted the oldest segment as a
/// write's do, each freeing less room than the copies took, and the store ended empty (all 270
/// entries evicted by one `compact`).
#[test]
fn a_compaction_on_a_full_device_evicts_nothing_and_loses_nothing() {
    let _serial = one_at_a_time();
    let options = || {
        FileStoreOptions::default()
            .segment_size(64 * KIB)
            .min_live_ratio(0.95)
            .background_threads(false)
    };
    // A tenth deleted, a tenth written again: every segment is a candidate, nine tenths live.
    let expected = |i: usize| match i % 10 {
        0 => None,
        5 => Some(value(i, 900)),
        _ => Some(value(i, 1000)),
    };
    let check = |store: &FileStore, when: &str| {
        for i in 0..300 {
            assert_eq!(store.get(&format!("k{i}")).unwrap(), expected(i), "{when}: k{i}");
        }
    };
    let fs = Mount::tmpfs(2 * 1024);
    let dir = fs.path().join("store");
    let store = FileStore::open(&dir, options()).unwrap();
    for i in 0..300 {
        store.set(&format!("k{i}"), &value(i, 1000), None).unwrap();
    }
    // Sealed, so the segments hold no reserved room the copies could go to.
    store.close().unwrap();
    let store = FileStore::open(&dir, options()).unwrap();
    for i in (0..300).step_by(5) {
        if i % 10 == 0 {
            assert!(store.delete(&format!("k{i}")).unwrap());
        } else {
            store.set(&format!("k{i}"), &value(i, 900), None).unwrap();
        }
    }
    store.flush().unwrap();
    let ballast = fs.fill("ballast");

    let compacted = store.compact();
    assert!(matches!(compacted, Err(Error::DiskFull { .. })), "{compacted:?}");
    assert_eq!(store.stats().evictions, 0, "{:?}", store.stats());
    check(&store, "after the compaction");
    store.close().unwrap();
    fs.remove(&ballast);
    let store = FileStore::open(&dir, options()).unwrap();
    check(&store, "reopened");
    // With room again it compacts, and what it left behind reads the same.
    assert!(store.compact().unwrap().segments_rewritten > 0);
    check(&store, "compacted with room");
    store.close().unwrap();
    check(&FileStore::open(&dir, options()).unwrap(), "reopened after it");
}

/// Not a test of its own: the opening process of
/// `opening_on_a_full_tmpfs_a_sparse_segment_whose_header_is_a_hole_raises_no_signal`.
#[test]
#[ignore = "child process of opening_on_a_full_tmpfs_a_sparse_segment_whose_header_is_a_hole_raises_no_signal; does nothing alone"]
fn child_opens_a_store_whose_newest_segment_is_a_hole_and_reads_k() {
    let dir = std::env::var_os("UNO_TEST_CHILD_DIR").expect("UNO_TEST_CHILD_DIR: started by its parent test");
    let store = FileStore::open(Path::new(&dir), options()).unwrap();
    let report = store.recovery_report().clone();
    // Nothing in it was ever written: a roll cut short, not damage.
    assert_eq!(report.damaged_segments, 0, "{report:?}");
    assert_eq!(store.get("k").unwrap(), Some(value(1, 4000)));
}

/// Not a test of its own: the writer process of `reopening_on_a_full_disk_leaves_no_file_behind`.
#[test]
#[ignore = "child process of reopening_on_a_full_disk_leaves_no_file_behind; does nothing alone"]
fn child_writes_300_entries_and_exits_without_closing() {
    let dir = std::env::var_os("UNO_TEST_CHILD_DIR").expect("UNO_TEST_CHILD_DIR: started by its parent test");
    let store = FileStore::open(Path::new(&dir), options()).unwrap();
    for i in 0..300 {
        store.set(&format!("k{i}"), &value(i, 4000), None).unwrap();
    }
    // Exits with the store open: no close, no final hint.
    std::process::exit(0);
}

/// A store of 8 MiB written to its bound and closed, on an ext4 mount of 24 MiB: the directory
/// a lowered bound then meets at the next open.
fn store_at_8_mib(fs: &Mount) -> (std::path::PathBuf, usize) {
    let dir = fs.path().join("store");
    let n = 1_800;
    let store = FileStore::open(&dir, options()).unwrap();
    for i in 0..n {
        store.set(&format!("k{i}"), &value(i, 4000), None).unwrap();
    }
    assert!(store.stats().disk_bytes > 6 << 20, "{:?}", store.stats());
    store.close().unwrap();
    (dir, n)
}

#[test]
fn a_bound_lowered_while_the_disk_is_full_evicts_at_the_open_and_frees_the_device() {
    let _serial = one_at_a_time();
    let fs = Mount::ext4(24);
    let (dir, n) = store_at_8_mib(&fs);
    let _ballast = fs.fill("ballast");
    let used = fs.used_bytes();

    // Nothing was read since the last open, so the eviction copies nothing: it needs no
    // free block, and the open gives the bytes over the new bound back to the device.
    let store = FileStore::open(&dir, options().max_size_mb(4)).unwrap();
    let stats = store.stats();
    assert!(stats.disk_bytes <= 4 << 20, "{stats:?}");
    assert!(
        fs.used_bytes() + (2 << 20) <= used,
        "{} -> {}",
        used,
        fs.used_bytes()
    );
    let last = format!("k{}", n - 1);
    assert_eq!(store.get(&last).unwrap(), Some(value(n - 1, 4000)));
    store.set("fresh", &value(1, 4000), None).unwrap();
    assert_eq!(store.get("fresh").unwrap(), Some(value(1, 4000)));
    store.close().unwrap();
}

/// ext4 remounts itself read-only on an error it finds (`errors=remount-ro`) while the store
/// and the replay queue run: reads go on; each write fails naming the file and saying to
/// remount, then the store and queue are latched; an open on the read-only mount says the same
/// of the lock file. Back on a writable mount, nothing written before is lost and nothing
/// deleted comes back; what failed was not applied.
#[test]
fn a_file_system_gone_read_only_under_the_store_fails_writes_naming_the_file_and_loses_nothing() {
    let _serial = one_at_a_time();
    let fs = Mount::ext4(24);
    let dir = fs.path().join("store");
    let queue_dir = fs.path().join("queue");
    let opts = || options().durability(Durability::EveryWrite);
    let store = FileStore::open(&dir, opts()).unwrap();
    for i in 0..100 {
        store.set(&format!("k{i}"), &value(i, 4000), None).unwrap();
    }
    store.delete("k1").unwrap();
    let queue = ReplayQueue::open(&queue_dir, ReplayOptions::default()).unwrap();
    queue.push_set("q", b"v", 0).unwrap();
    queue.push_delete("k1").unwrap();

    fs.fail_read_only();
    let remount = "remount it read-write";
    assert_eq!(store.get("k5").unwrap(), Some(value(5, 4000)));
    let err = store.set("new", b"v", None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.display().to_string()) && text.contains(".seg") && text.contains(remount),
        "{text}"
    );
    let err = store.delete("k6").unwrap_err();
    assert!(matches!(err, Error::WritesDisabled { .. }), "{err:?}");
    assert_eq!(store.get("k6").unwrap(), Some(value(6, 4000)));
    let err = queue.push_delete("k2").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("replay.log") && text.contains(remount), "{text}");
    assert_eq!(queue.len(), 3, "{:?}", queue.pending());
    drop(queue);
    let _ = store.close();
    for err in [
        FileStore::open(&dir, opts()).map(drop).unwrap_err(),
        ReplayQueue::open(&queue_dir, ReplayOptions::default())
            .map(drop)
            .unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            matches!(err, Error::Io { .. }) && text.contains("lock") && text.contains(remount),
            "{text}"
        );
    }

    // The device again as a writable mount: a new mount of the same image.
    let image = fs.path().parent().unwrap().join("fs.img");
    let point = fs.path().to_owned();
    assert!(Command::new("umount").arg(&point).status().unwrap().success());
    let e2fsck = Command::new("e2fsck").arg("-fy").arg(&image).output().unwrap();
    assert!(e2fsck.status.code().is_some_and(|c| c <= 1), "{e2fsck:?}");
    assert!(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&point)
        .status()
        .unwrap()
        .success());
    let store = FileStore::open(&dir, opts()).unwrap();
    assert_eq!(store.get("k1").unwrap(), None);
    assert_eq!(store.get("new").unwrap(), None);
    for i in (0..100).filter(|&i| i != 1) {
        assert_eq!(store.get(&format!("k{i}")).unwrap(), Some(value(i, 4000)), "k{i}");
    }
    let queue = ReplayQueue::open(&queue_dir, ReplayOptions::default()).unwrap();
    let mut pending = queue.pending();
    pending.sort_by_key(|op| op.seq);
    let keys: Vec<&str> = pending.iter().map(|op| op.key.as_str()).collect();
    assert_eq!(keys, ["q", "k1"], "{pending:?}");
    drop(queue);
    store.close().unwrap();
}
