//! Fault injection that needs the crate's internals: a failed fsync latches the queue.

use super::*;

#[test]
fn a_failed_fsync_latches_pushes_and_acks_until_reopen_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    queue.push_delete("kept").unwrap();
    queue.fail_next_sync();
    let err = queue.push_set("lost", b"v", 0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Io {
                op: "fsync replay log",
                ..
            }
        ),
        "{err}"
    );
    // Not applied in memory: the caller was told it failed.
    assert!(!queue.is_pending("lost"));
    // Latched: no retry of the fsync, a distinct error for every later write.
    assert!(matches!(
        queue.push_delete("other"),
        Err(Error::WritesDisabled { .. })
    ));
    let ops = queue.pending();
    assert_eq!(ops.len(), 1);
    assert!(matches!(queue.ack(&ops[0]), Err(Error::WritesDisabled { .. })));
    assert!(matches!(queue.compact(), Err(Error::WritesDisabled { .. })));
    assert!(queue.stats().write_failure.is_some());
    drop(queue);

    // Reopen: writable again. The failed push reached the page cache before its fsync failed, so
    // it may be replayed; replaying an op whose L1 write happened is harmless.
    let queue = ReplayQueue::open(dir.path(), ReplayOptions::default()).unwrap();
    assert!(queue.is_pending("kept"));
    queue.push_delete("other").unwrap();
    assert!(queue.is_pending("other"));
}
