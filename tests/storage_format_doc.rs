//! storage-format.md is a contract: these tests write files byte by byte from the document alone
//! (no encoder from the crate) and check that the store reads them, and read what the store writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use uno_cache::{Error, FileStore, FileStoreOptions};

const SEGMENT_SIZE: u64 = 65_536;

fn meta(version: u16, segment_size: u64, min_seq: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"UNOCMETA");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&[0; 6]);
    b.extend_from_slice(&segment_size.to_le_bytes());
    b.extend_from_slice(&min_seq.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(b.len(), 36);
    b
}

const SALT: u32 = 0xdead_beef;

fn segment_header(version: u16, id: u64) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"UNOCSEG\0");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&[0; 2]);
    b.extend_from_slice(&SALT.to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(b.len(), 32);
    b
}

fn record(kind: u8, seq: u64, expires_at: u64, key: &str, value: &[u8]) -> Vec<u8> {
    let mut body = vec![kind, 0];
    body.extend_from_slice(&(key.len() as u16).to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(&seq.to_le_bytes());
    body.extend_from_slice(&expires_at.to_le_bytes());
    body.extend_from_slice(key.as_bytes());
    body.extend_from_slice(value);
    let mut salted = SALT.to_le_bytes().to_vec();
    salted.extend_from_slice(&body);
    let mut rec = crc32fast::hash(&salted).to_le_bytes().to_vec();
    rec.extend_from_slice(&body);
    rec
}

fn write_segment(dir: &Path, id: u64, records: &[Vec<u8>]) {
    let mut seg = segment_header(1, id);
    for r in records {
        seg.extend_from_slice(r);
    }
    seg.resize(SEGMENT_SIZE as usize, 0);
    std::fs::write(dir.join(format!("{id:020}.seg")), seg).unwrap();
}

#[test]
fn a_directory_written_by_hand_from_the_document_opens_and_reads() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    write_segment(
        dir.path(),
        1,
        &[
            record(1, 1, 0, "kept", b"hello"),
            record(1, 2, 0, "deleted", b"gone"),
            record(1, 3, 0, "overwritten", b"old"),
            record(1, 4, 1, "expired", b"long ago"),
        ],
    );
    // Segment 2 holds the newer records; seq, not file order, decides (seq 5 < seq 6).
    write_segment(
        dir.path(),
        2,
        &[
            record(2, 6, 0, "deleted", b""),
            record(1, 7, 0, "overwritten", b"new"),
            record(1, 5, 0, "stale", b"x"),
        ],
    );
    write_segment(dir.path(), 3, &[record(1, 0, 0, "stale", b"older")]);

    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"hello"[..]));
    assert_eq!(store.get("deleted").unwrap(), None);
    assert_eq!(store.get("overwritten").unwrap().as_deref(), Some(&b"new"[..]));
    assert_eq!(store.get("expired").unwrap(), None);
    assert_eq!(
        store.get("stale").unwrap().as_deref(),
        Some(&b"x"[..]),
        "highest seq wins, not file order"
    );
    let report = store.recovery_report();
    assert_eq!(
        (report.scanned, report.damaged_ranges, report.torn_tail_bytes),
        (3, 0, 0)
    );

    // New writes continue the sequence after the highest seq found (7).
    store.set("after", b"v", None).unwrap();
    store.close().unwrap();
    let newest = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .unwrap();
    let bytes = std::fs::read(newest).unwrap();
    let rec = &bytes[32..];
    assert_eq!(rec[4], 1, "kind");
    assert_eq!(
        u64::from_le_bytes(rec[12..20].try_into().unwrap()),
        8,
        "seq continues"
    );
    let key_len = u16::from_le_bytes(rec[6..8].try_into().unwrap()) as usize;
    let value_len = u32::from_le_bytes(rec[8..12].try_into().unwrap()) as usize;
    assert_eq!(&rec[28..28 + key_len], b"after");
    let mut salted = bytes[12..16].to_vec(); // the segment's salt, from its header
    salted.extend_from_slice(&rec[4..28 + key_len + value_len]);
    assert_eq!(
        crc32fast::hash(&salted),
        u32::from_le_bytes(rec[0..4].try_into().unwrap())
    );
}

#[test]
fn hint_files_follow_the_documented_layout() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
        store.set("a", b"1", None).unwrap();
        assert!(store.delete("a").unwrap());
        store.close().unwrap();
    }
    let hint = std::fs::read(dir.path().join(format!("{:020}.hint", 1))).unwrap();
    assert_eq!(&hint[0..8], b"UNOCHINT");
    assert_eq!(u16::from_le_bytes(hint[8..10].try_into().unwrap()), 1);
    assert_eq!(
        u64::from_le_bytes(hint[16..24].try_into().unwrap()),
        1,
        "segment id"
    );
    let n = hint.len();
    assert_eq!(
        crc32fast::hash(&hint[..n - 4]),
        u32::from_le_bytes(hint[n - 4..].try_into().unwrap())
    );
    assert_eq!(
        u32::from_le_bytes(hint[n - 8..n - 4].try_into().unwrap()),
        2,
        "two entries: value, tombstone"
    );
    let first = &hint[32..];
    assert_eq!(
        (first[0], u32::from_le_bytes(first[4..8].try_into().unwrap())),
        (1, 32),
        "value at offset 32"
    );
    let second = &first[28 + 1..];
    assert_eq!(second[0], 2, "tombstone");
    let data_end = u64::from_le_bytes(hint[24..32].try_into().unwrap());
    assert_eq!(data_end, 32 + (28 + 1 + 1) + (28 + 1));
}

#[test]
fn newer_format_versions_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(2, SEGMENT_SIZE, 0)).unwrap();
    match FileStore::open(dir.path(), FileStoreOptions::default()) {
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1,
            path,
        }) => {
            assert!(path.ends_with("uno-cache.meta"));
        }
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
}

#[test]
fn clear_sets_min_seq_in_the_metadata() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
        store.set("a", b"1", None).unwrap();
        store.set("b", b"2", None).unwrap();
        store.clear().unwrap();
    }
    let bytes = std::fs::read(dir.path().join("uno-cache.meta")).unwrap();
    assert_eq!(bytes.len(), 36);
    assert_eq!(
        u64::from_le_bytes(bytes[24..32].try_into().unwrap()),
        3,
        "records below seq 3 are ignored"
    );
}
