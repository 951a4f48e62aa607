//! A file store of more sealed segments than the process may open files, for real: a child
//! process lowers its soft limit on open files (`RLIMIT_NOFILE`) to 64 and writes, compacts,
//! reopens, evicts and reads a store of about 200 segments. Each sealed segment used to keep its
//! file open for as long as the store was open, so the roll to the 60th or so segment failed
//! with "Too many open files" (EMFILE), and a store of more segments than the limit (a 64 GiB
//! bound with the default 64 MiB segments is 1,024) could not be opened at all under the
//! common default limit of 1,024. What is pinned: every key reads back, the store holds a
//! handful of files open whatever its number of segments, and a roll refused for want of a file
//! is a typed error that names the file and says what to do, after which writes resume.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;

use rustix::process::{Resource, Rlimit};
use uno_cache::{Error, FileStore, FileStoreOptions};

/// The soft limit on open files in the child: a test harness, the standard streams and the
/// store's lock take some of them.
const FILE_LIMIT: u64 = 64;
/// The smallest segment size a store takes, so that few bytes make many segments.
const SEGMENT_SIZE: u64 = 64 * 1024;
/// Values of 4,000 bytes: 16 to a segment, so 3,200 of them fill 200 segments.
const VALUE_LEN: usize = 4000;
const ENTRIES: u64 = 3200;
const CHILD: &str = "child_runs_a_store_of_more_segments_than_it_may_open_files";
const CHILD_DIR: &str = "UNO_TEST_CHILD_DIR";

fn key(i: u64) -> String {
    format!("key-{i:06}")
}

fn value(i: u64) -> Vec<u8> {
    let mut v = i.to_le_bytes().repeat(VALUE_LEN / 8);
    v.truncate(VALUE_LEN);
    v
}

/// A bound of 1,024 segments: nothing is evicted until the test asks for it.
fn options() -> FileStoreOptions {
    FileStoreOptions::default()
        .segment_size(SEGMENT_SIZE)
        .max_size_mb(64)
}

/// Descriptors of this process on files in `dir`.
fn open_files_in(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.starts_with(dir)))
        .count()
}

#[test]
fn a_store_of_more_sealed_segments_than_the_file_limit_writes_reopens_and_reads_every_key() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    support::run_child_test(CHILD, CHILD_DIR, dir.path());
}

/// Every key in `keys` reads back its value from `store`.
fn assert_reads(store: &FileStore, keys: impl Iterator<Item = u64>) {
    for i in keys {
        assert_eq!(store.get(&key(i)).unwrap(), Some(value(i)), "{}", key(i));
    }
}

/// Opens `/dev/null` until the process may open no more files.
fn take_every_file() -> Vec<std::fs::File> {
    let mut taken = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => taken.push(file),
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) => return taken,
            Err(e) => panic!("opening /dev/null: {e}"),
        }
    }
}

/// Not a test of its own: the process of
/// `a_store_of_more_sealed_segments_than_the_file_limit_writes_reopens_and_reads_every_key`.
#[test]
#[ignore = "child process of a_store_of_more_sealed_segments_than_the_file_limit_writes_reopens_and_reads_every_key; does nothing alone"]
fn child_runs_a_store_of_more_segments_than_it_may_open_files() {
    let dir = std::env::var_os(CHILD_DIR).expect("UNO_TEST_CHILD_DIR: started by its parent test");
    let dir = Path::new(&dir).join("store");
    let hard = rustix::process::getrlimit(Resource::Nofile).maximum;
    let limit = Rlimit {
        current: Some(FILE_LIMIT),
        maximum: hard,
    };
    rustix::process::setrlimit(Resource::Nofile, limit).unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    for i in 0..ENTRIES {
        store.set(&key(i), &value(i), None).unwrap();
    }
    store.flush().unwrap();
    let segments = store.stats().segments;
    assert!(
        segments > 3 * FILE_LIMIT,
        "{segments} segments: too few to pass the limit"
    );
    // Once flushed: the lock, the directory and the active segment. (Sealed segments wait for
    // their fsync with their files open.)
    let held = open_files_in(&dir);
    eprintln!("{segments} segments, {held} files held open after a flush");
    assert!(
        held <= 3,
        "{held} files held open by a store of {segments} segments"
    );
    assert_reads(&store, 0..ENTRIES);

    // Compaction under the limit: three of four entries of the older half go, and their
    // segments are rewritten.
    let gone = |i: u64| i < ENTRIES / 2 && !i.is_multiple_of(4);
    for i in (0..ENTRIES).filter(|&i| gone(i)) {
        store.delete(&key(i)).unwrap();
    }
    let report = store.compact().unwrap();
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert_reads(&store, (0..ENTRIES).filter(|&i| !gone(i)));
    store.close().unwrap();

    // The open of a store of more segments than the limit, and its reads.
    let store = FileStore::open(&dir, options()).unwrap();
    let segments = store.stats().segments;
    assert!(segments > FILE_LIMIT, "{segments} segments");
    let held = open_files_in(&dir);
    eprintln!("reopened: {segments} segments, {held} files held open");
    assert!(
        held <= 3,
        "{held} files held open by a store of {segments} segments"
    );
    assert_reads(&store, (0..ENTRIES).filter(|&i| !gone(i)));
    for i in (0..ENTRIES).filter(|&i| gone(i)) {
        assert_eq!(store.get(&key(i)).unwrap(), None, "{} was deleted", key(i));
    }

    // A roll refused for want of a file: every descriptor the limit allows is taken, and the
    // writes go on until one needs a new segment.
    let taken = take_every_file();
    let refused = (ENTRIES..ENTRIES + 100)
        .map(|i| store.set(&key(i), &value(i), None))
        .find_map(Result::err);
    let Some(Error::Io { path, .. }) = &refused else {
        panic!("expected an I/O error naming a segment, got {refused:?}");
    };
    let message = refused.as_ref().unwrap_or_else(|| unreachable!()).to_string();
    assert!(path.starts_with(&dir), "{message}");
    assert!(message.contains("ulimit -n"), "{message}");
    drop(taken);
    // Nothing was written and nothing latched: the next write makes its segment.
    store.set("after", b"refused roll", None).unwrap();
    assert_eq!(store.get("after").unwrap().as_deref(), Some(&b"refused roll"[..]));
    store.close().unwrap();

    // One file left to open: the first write's roll (an open starts no segment) makes a
    // segment, which takes it, and the fsync of the directory that makes the segment's name
    // durable needs none of its own. It opened the directory, and failed ("fsync directory ...
    // Too many open files"), which disabled writes until a reopen. Ten values fit in that
    // segment. Without the background threads, which open files of their own (a hint's).
    let store = FileStore::open(&dir, options().background_threads(false)).unwrap();
    let mut taken = take_every_file();
    drop(taken.pop());
    let first = ENTRIES + 100;
    for i in first..first + 10 {
        store.set(&key(i), &value(i), None).unwrap();
    }
    drop(taken);
    assert_reads(&store, first..first + 10);
    store.close().unwrap();

    // Evicting at the open, down to a bound of 128 segments: still more than the limit.
    let store = FileStore::open(&dir, options().max_size_mb(8)).unwrap();
    let stats = store.stats();
    assert!(stats.segments > FILE_LIMIT, "{stats:?}");
    let mut kept = 0;
    for i in (0..ENTRIES).filter(|&i| !gone(i)) {
        if let Some(v) = store.get(&key(i)).unwrap() {
            assert_eq!(v, value(i), "{}", key(i));
            kept += 1;
        }
    }
    assert!(kept > 0, "{stats:?}");
    assert!(
        open_files_in(&dir) <= 3,
        "{} files held open",
        open_files_in(&dir)
    );
    store.close().unwrap();
}
