//! The "Replay log" section of storage-format.md is a contract: these
//! tests write replay logs byte by byte from the document alone (no encoder from the crate) and
//! check that the queue reads them as the document says, and decode by hand what the queue writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fs;
use std::path::Path;
use std::sync::Arc;

use uno_cache::replay::{ReplayAction, ReplayOptions, ReplayQueue};
use uno_cache::{Error, ManualClock};

const SET: u8 = 1;
const DELETE: u8 = 2;
const ACK: u8 = 3;
const OVERFLOW: u8 = 4;
const OVERFLOW_CLEARED: u8 = 5;
const NOW_MS: u64 = 1_700_000_000_000;

fn header(version: u16, log_id: u64, next_seq: u64, reserved: [u8; 6]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"UNOCRPLY");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&reserved);
    b.extend_from_slice(&log_id.to_le_bytes());
    b.extend_from_slice(&next_seq.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(b.len(), 36);
    b
}

fn record(log_id: u64, kind: u8, seq: u64, expires_at: u64, key: &str, value: &[u8]) -> Vec<u8> {
    let mut body = vec![kind, 0];
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&expires_at.to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value);
    let mut seeded = log_id.to_le_bytes().to_vec();
    seeded.extend_from_slice(&body);
    let mut rec = crc32fast::hash(&seeded).to_le_bytes().to_vec();
    rec.extend_from_slice(&body);
    rec
}

fn write_log(dir: &Path, parts: &[Vec<u8>]) -> Vec<u8> {
    let bytes = parts.concat();
    fs::write(dir.join("replay.log"), &bytes).unwrap();
    bytes
}

fn open_at(dir: &Path, now_ms: u64) -> Result<ReplayQueue, Error> {
    ReplayQueue::open(
        dir,
        ReplayOptions::default().clock(Arc::new(ManualClock::new(now_ms))),
    )
}

/// The queue's pending ops as (key, sequence number, action), in the order it replays them.
fn pending_ops(q: &ReplayQueue) -> Vec<(String, u64, ReplayAction)> {
    q.pending()
        .into_iter()
        .map(|o| (o.key, o.seq, o.action))
        .collect()
}

fn set(value: &[u8], expires_at_ms: u64) -> ReplayAction {
    ReplayAction::Set {
        value: value.to_vec(),
        expires_at_ms,
    }
}

#[test]
fn a_log_written_from_the_document_opens_with_the_documented_meaning() {
    let dir = tempfile::tempdir().unwrap();
    let id = 0x0123_4567_89ab_cdef;
    write_log(
        dir.path(),
        &[
            header(1, id, 100, [0; 6]),
            record(id, SET, 1, 0, "a", b"va"),
            record(id, DELETE, 2, 0, "b", b""),
            record(id, SET, 3, 0, "c", b"vc1"),
            record(id, SET, 4, 0, "c", b"vc2"),
            // An ack of the superseded op changes nothing.
            record(id, ACK, 3, 0, "c", b""),
            record(id, SET, 5, 0, "d", b"vd"),
            record(id, ACK, 5, 0, "d", b""),
            record(id, OVERFLOW, 0, 0, "", b""),
            record(id, OVERFLOW_CLEARED, 0, 0, "", b""),
            record(id, SET, 6, NOW_MS + 60_000, "e", b"ve"),
            // Expired by now: replayed as a delete.
            record(id, SET, 7, NOW_MS - 1, "f", b"vf"),
            // A set read after a newer op of its key is ignored (highest seq wins).
            record(id, SET, 9, 0, "g", b"vg9"),
            record(id, SET, 8, 0, "g", b"vg8"),
            record(id, DELETE, 10, 0, "a", b""),
        ],
    );
    let q = open_at(dir.path(), NOW_MS).unwrap();
    let report = q.recovery_report();
    assert_eq!(
        (report.records, report.damaged_ranges, report.torn_tail_bytes),
        (14, 0, 0)
    );
    assert!(!q.is_overflowed());
    let ops = pending_ops(&q);
    assert_eq!(
        ops,
        vec![
            ("b".into(), 2, ReplayAction::Delete),
            ("f".into(), 7, ReplayAction::Delete),
            ("a".into(), 10, ReplayAction::Delete),
            ("c".into(), 4, set(b"vc2", 0)),
            ("e".into(), 6, set(b"ve", NOW_MS + 60_000)),
            ("g".into(), 9, set(b"vg9", 0)),
        ]
    );
    // next_seq from the header is honoured (it is above the highest seq read).
    assert_eq!(q.push_delete("h").unwrap().seq(), Some(100));
}

#[test]
fn an_overflow_record_alone_sets_the_flag_and_the_next_seq_follows_the_highest_record() {
    let dir = tempfile::tempdir().unwrap();
    let id = 7;
    write_log(
        dir.path(),
        &[
            header(1, id, 1, [0; 6]),
            record(id, DELETE, 41, 0, "x", b""),
            record(id, OVERFLOW, 0, 0, "", b""),
        ],
    );
    let q = open_at(dir.path(), NOW_MS).unwrap();
    assert!(q.is_overflowed());
    assert_eq!(q.push_delete("y").unwrap().seq(), Some(42));
}

/// `replay.overflowed`, an empty file next to a log whose flag is clear (a write of the log
/// failed before the queue was last closed), opens the queue overflowed; clearing the flag
/// removes it.
#[test]
fn an_overflowed_mark_next_to_a_clean_log_sets_the_flag_until_it_is_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let id = 7;
    write_log(
        dir.path(),
        &[header(1, id, 1, [0; 6]), record(id, DELETE, 1, 0, "x", b"")],
    );
    let mark = dir.path().join("replay.overflowed");
    std::fs::write(&mark, b"").unwrap();
    let q = open_at(dir.path(), NOW_MS).unwrap();
    assert!(q.is_overflowed());
    assert!(q.recovery_report().marked_overflowed);
    assert!(q.clear_overflow().unwrap());
    assert!(!mark.exists());
    drop(q);
    assert!(!open_at(dir.path(), NOW_MS).unwrap().is_overflowed());
}

#[test]
fn records_under_another_log_id_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    write_log(
        dir.path(),
        &[
            header(1, 1, 1, [0; 6]),
            record(1, DELETE, 1, 0, "mine", b""),
            record(2, DELETE, 2, 0, "foreign", b""),
        ],
    );
    let q = open_at(dir.path(), NOW_MS).unwrap();
    assert!(q.is_pending("mine"));
    assert!(!q.is_pending("foreign"));
    // A complete record that does not check out, at the end of a file that does not end in
    // zeros, is no append a crash cut short: damage, reported.
    let report = q.recovery_report();
    assert_eq!(
        (report.damaged_ranges, report.torn_tail_bytes),
        (1, 0),
        "{report:?}"
    );
    assert!(q.is_overflowed());
}

#[test]
fn another_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = write_log(
        dir.path(),
        &[header(2, 1, 1, [0; 6]), record(1, DELETE, 1, 0, "k", b"")],
    );
    match open_at(dir.path(), NOW_MS) {
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        }) => {}
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    assert_eq!(fs::read(dir.path().join("replay.log")).unwrap(), bytes);
}

#[test]
fn non_zero_reserved_header_bytes_are_damage() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = write_log(
        dir.path(),
        &[
            header(1, 1, 1, [0, 0, 1, 0, 0, 0]),
            record(1, DELETE, 1, 0, "k", b""),
        ],
    );
    let q = open_at(dir.path(), NOW_MS).unwrap();
    assert!(q.recovery_report().header_damage.is_some());
    assert!(q.is_overflowed());
    // The record checks out under the id at offset 16: its delete is kept.
    assert!(q.is_pending("k"));
    assert_eq!(fs::read(dir.path().join("replay.log.damaged")).unwrap(), bytes);
}

/// The records are not in the header: a header damaged anywhere but its `log_id` (or its version
/// field) leaves every record that checks out under that id readable, and the open keeps their
/// ops (the queue marked overflowed all the same). Dropped, one flipped byte of the magic, of
/// `next_seq` or of the CRC lost every queued op, deletes among them, and L2 kept the values they
/// removed until an operator flushed it.
#[test]
fn a_damaged_header_keeps_the_ops_whose_records_check_out_under_its_log_id() {
    let id = 0x5151_2727_9393_4646;
    let parts = [
        header(1, id, 10, [0; 6]),
        record(id, SET, 3, 0, "kept", b"value"),
        record(id, DELETE, 4, 0, "gone", b""),
        record(id, SET, 5, 0, "acked", b"v"),
        record(id, ACK, 5, 0, "acked", b""),
    ];
    // (offset, what is flipped)
    for (at, field) in [(0, "magic"), (26, "next_seq"), (33, "CRC")] {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = parts.concat();
        bytes[at] ^= 0x01;
        fs::write(dir.path().join("replay.log"), &bytes).unwrap();
        let q = open_at(dir.path(), NOW_MS).unwrap();
        let report = q.recovery_report().clone();
        assert!(report.header_damage.is_some(), "{field}: {report:?}");
        assert!(q.is_overflowed(), "{field}");
        let found: Vec<(u64, String, ReplayAction)> = q
            .pending()
            .into_iter()
            .map(|o| (o.seq, o.key, o.action))
            .collect();
        assert_eq!(
            found,
            [
                (4, "gone".to_owned(), ReplayAction::Delete),
                (3, "kept".to_owned(), set(b"value", 0)),
            ],
            "{field}"
        );
        assert_eq!(report.records, 4, "{field}");
        // Numbering goes on above every seq read.
        let next = q.push_delete("later").unwrap().seq().unwrap();
        assert!(next > 5, "{field}: {next}");
        drop(q);
        // The new log holds them; the damaged one was kept aside.
        let q = open_at(dir.path(), NOW_MS).unwrap();
        assert!(q.recovery_report().header_damage.is_none(), "{field}");
        assert!(q.is_overflowed(), "{field}");
        assert_eq!(q.len(), 3, "{field}");
        assert_eq!(fs::read(dir.path().join("replay.log.damaged")).unwrap(), bytes);
    }
    // A version field that may be another format's is not read as version 1, even damaged.
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = parts.concat();
    bytes[8] = 2;
    fs::write(dir.path().join("replay.log"), &bytes).unwrap();
    let q = open_at(dir.path(), NOW_MS).unwrap();
    assert!(q.is_empty());
    assert!(q.is_overflowed());
}

#[test]
fn what_the_queue_writes_decodes_by_hand_from_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let q = open_at(dir.path(), NOW_MS).unwrap();
    q.push_set("k", b"value", NOW_MS + 5).unwrap();
    q.push_delete("gone").unwrap();
    let op = q.pending().into_iter().find(|o| o.key == "gone").unwrap();
    q.ack(&op).unwrap();
    drop(q);

    let bytes = fs::read(dir.path().join("replay.log")).unwrap();
    assert_eq!(&bytes[0..8], b"UNOCRPLY");
    assert_eq!(u16::from_le_bytes(bytes[8..10].try_into().unwrap()), 1);
    assert_eq!(&bytes[10..16], &[0; 6]);
    assert_eq!(
        u32::from_le_bytes(bytes[32..36].try_into().unwrap()),
        crc32fast::hash(&bytes[0..32])
    );
    let id = u64::from_le_bytes(bytes[16..24].try_into().unwrap());
    assert_eq!(
        bytes[36..].to_vec(),
        [
            record(id, SET, 1, NOW_MS + 5, "k", b"value"),
            record(id, DELETE, 2, 0, "gone", b""),
            record(id, ACK, 2, 0, "gone", b""),
        ]
        .concat()
    );
}

/// "Fields by kind (anything else makes the record invalid)" and "Recovery (open)", step 4: a
/// record whose CRC checks out but whose fields break the table (an unknown kind, non-zero
/// flags, a field its kind does not use) is not applied; its bytes are damage, the sets read
/// before it replay as deletes, the queue is overflowed, and the records after it are read.
#[test]
fn a_record_that_breaks_the_table_of_fields_by_kind_is_damage_with_a_valid_crc() {
    let id = 0x5eed;
    let mut flagged = record(id, SET, 2, 0, "x", b"v");
    flagged[5] = 1;
    let seeded: Vec<u8> = id
        .to_le_bytes()
        .into_iter()
        .chain(flagged[4..].iter().copied())
        .collect();
    flagged[..4].copy_from_slice(&crc32fast::hash(&seeded).to_le_bytes());
    let cases = [
        ("unknown kind 6", record(id, 6, 2, 0, "x", b"")),
        ("non-zero flags", flagged),
        ("a delete with a value", record(id, DELETE, 2, 0, "x", b"v")),
        ("a delete with an expiry", record(id, DELETE, 2, NOW_MS, "x", b"")),
        ("an ack with a value", record(id, ACK, 1, 0, "a", b"v")),
        ("a set without a key", record(id, SET, 2, 0, "", b"v")),
        ("an overflow with a key", record(id, OVERFLOW, 0, 0, "x", b"")),
        ("an overflow with a seq", record(id, OVERFLOW, 2, 0, "", b"")),
        (
            "an overflow cleared with a value",
            record(id, OVERFLOW_CLEARED, 0, 0, "", b"v"),
        ),
    ];
    for (name, bad) in cases {
        let dir = tempfile::tempdir().unwrap();
        write_log(
            dir.path(),
            &[
                header(1, id, 1, [0; 6]),
                record(id, SET, 1, 0, "a", b"va"),
                bad.clone(),
                record(id, SET, 3, 0, "b", b"vb"),
            ],
        );
        let q = open_at(dir.path(), NOW_MS).unwrap();
        let report = q.recovery_report();
        assert_eq!(
            (report.records, report.damaged_ranges, report.damaged_bytes),
            (2, 1, bad.len() as u64),
            "{name}: {report:?}"
        );
        assert_eq!(report.sets_downgraded, 1, "{name}: {report:?}");
        assert!(q.is_overflowed(), "{name}");
        let ops = pending_ops(&q);
        assert_eq!(
            ops,
            vec![
                ("a".into(), 1, ReplayAction::Delete),
                ("b".into(), 3, set(b"vb", 0)),
            ],
            "{name}"
        );
    }
}
