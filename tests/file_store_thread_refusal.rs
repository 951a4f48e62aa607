//! The file store's open when the system refuses it threads, for real: a child process runs the
//! store on a thread that the kernel lets start no thread at all (`RLIMIT_NPROC` 0). What is
//! pinned: the open reads the segments and rebuilds the index on the thread that called it, and
//! every entry is there; an early build panicked in the open (`scope.spawn`), where the threads
//! it reads hints and rebuilds the index on could not be started.
//!
//! `RLIMIT_NPROC` binds no thread whose real user is root, and root is who CI runs as: the child's
//! thread then takes another user for itself alone (Linux keeps the user per thread), which also
//! drops its privileges, so the limit binds it; the parent gives that user the store's directory,
//! in the system's temporary directory, which that user can reach (see `store_dir`).
//! Run as another user, the limit binds the child as it is.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rustix::process::{Resource, Rlimit, Uid};
use uno_cache::{FileStore, FileStoreOptions};

/// More records than the open rebuilds the index from on one thread (`PARALLEL_FROM`, 65536):
/// the rebuild asks for threads too, not only the reading of the segments. (On a machine of one
/// core it asks for none, and only the reading is pinned; CI's machines have two or more.)
const ENTRIES: u64 = 70_000;
/// Small segments, so the open reads several of them.
const SEGMENT_SIZE: u64 = 1 << 20;
/// `nobody`: a user without privileges, for root's child to take (it needs no entry in
/// /etc/passwd).
const UNPRIVILEGED: u32 = 65_534;
const CHILD: &str = "child_fills_a_store_then_reopens_it_with_no_thread_to_be_had";
const CHILD_DIR: &str = "UNO_TEST_CHILD_DIR";

fn key(i: u64) -> String {
    format!("key-{i:08}")
}

fn value(i: u64) -> Vec<u8> {
    i.to_le_bytes().repeat(2)
}

fn options() -> FileStoreOptions {
    FileStoreOptions::default().segment_size(SEGMENT_SIZE)
}

/// The store's directory: as root, one the unprivileged user can reach. The target directory
/// may sit under a directory only root can enter (`/root`, mode 0700), where the child's open
/// was refused (permission denied); the system's temporary directory is open to every user.
fn store_dir() -> tempfile::TempDir {
    if !rustix::process::getuid().is_root() {
        return tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    for above in dir.path().ancestors().skip(1) {
        let mode = std::fs::metadata(above).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not searchable by other users (mode {mode:o}), so user {UNPRIVILEGED} cannot \
             reach the store in {}: set TMPDIR to a directory every user can enter",
            above.display(),
            dir.path().display()
        );
    }
    std::os::unix::fs::chown(dir.path(), Some(UNPRIVILEGED), None).unwrap();
    dir
}

#[test]
fn a_store_opens_with_every_entry_when_the_system_refuses_it_threads() {
    let dir = store_dir();
    support::run_child_test(CHILD, CHILD_DIR, dir.path());
}

/// Not a test of its own: the process of
/// `a_store_opens_with_every_entry_when_the_system_refuses_it_threads`.
#[test]
#[ignore = "child process of a_store_opens_with_every_entry_when_the_system_refuses_it_threads; does nothing alone"]
fn child_fills_a_store_then_reopens_it_with_no_thread_to_be_had() {
    let dir = std::env::var_os(CHILD_DIR).expect("UNO_TEST_CHILD_DIR: started by its parent test");
    let dir = Path::new(&dir);
    if rustix::process::getuid().is_root() {
        // This thread only: the threads it starts take its user, and are counted against it.
        let user = Uid::from_raw(UNPRIVILEGED);
        rustix::thread::set_thread_res_uid(user, user, user).unwrap();
    }
    let store = FileStore::open(dir, options()).unwrap();
    for i in 0..ENTRIES {
        store.set(&key(i), &value(i), None).unwrap();
    }
    assert!(store.stats().segments > 2, "{:?}", store.stats());
    store.close().unwrap();

    let none = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    rustix::process::setrlimit(Resource::Nproc, none).unwrap();
    assert!(
        std::thread::Builder::new().spawn(|| ()).is_err(),
        "a thread started under RLIMIT_NPROC 0: the limit does not bind this thread"
    );

    // Its flusher and compactor are threads of their own, which the store cannot do without
    // once asked for: a typed error says so.
    let refused = FileStore::open(dir, options());
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("spawn background thread")),
        "{refused:?}"
    );
    let store = FileStore::open(dir, options().background_threads(false)).unwrap();
    assert_eq!(store.stats().live_items, ENTRIES, "{:?}", store.stats());
    for i in 0..ENTRIES {
        assert_eq!(store.get(&key(i)).unwrap(), Some(value(i)), "{}", key(i));
    }
    store.close().unwrap();
}
