//! storage-format.md is a contract: these tests write files byte by byte from the document alone
//! (no encoder from the crate) and check that the store reads them, and read what the store writes.
//! With the `memcached` feature, the Memcached key mapping and host choice are computed from the
//! document alone and checked against where a real store puts its items.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(feature = "memcached")]
mod support;

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

/// `uno-cache.meta` with its extension: the 36-byte base, the recorded size bound, and a CRC of
/// everything before it.
fn meta_with_bound(segment_size: u64, min_seq: u64, max_size: u64) -> Vec<u8> {
    let mut b = meta(1, segment_size, min_seq);
    b.extend_from_slice(&max_size.to_le_bytes());
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(b.len(), 48);
    b
}

const SALT: u32 = 0xdead_beef;

fn segment_header(version: u16, id: u64) -> Vec<u8> {
    segment_header_with(version, 0, id, 0)
}

/// A segment header with its flags (offset 10) and reserved field (offset 24) as given.
fn segment_header_with(version: u16, flags: u16, id: u64, reserved: u32) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"UNOCSEG\0");
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&SALT.to_le_bytes());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&reserved.to_le_bytes());
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
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap(),
        meta(2, SEGMENT_SIZE, 0),
        "a refused file is not rewritten"
    );
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
    assert_eq!(
        bytes,
        meta_with_bound(SEGMENT_SIZE * 8, 3, 4 << 20),
        "records below seq 3 are ignored"
    );
}

#[test]
fn the_size_bound_is_read_from_the_metadata_extension() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("uno-cache.meta"),
        meta_with_bound(SEGMENT_SIZE, 0, 3 << 20),
    )
    .unwrap();
    write_segment(dir.path(), 1, &[record(1, 1, 0, "kept", b"hello")]);
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 3 << 20, "the recorded bound, not the default");
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"hello"[..]));
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap(),
        meta_with_bound(SEGMENT_SIZE, 0, 3 << 20),
        "an open without settings rewrites nothing"
    );
}

#[test]
fn a_metadata_file_without_the_extension_opens_and_gets_one_when_a_bound_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let old = meta(1, SEGMENT_SIZE, 0);
    std::fs::write(dir.path().join("uno-cache.meta"), &old).unwrap();
    write_segment(dir.path(), 1, &[record(1, 1, 0, "kept", b"hello")]);

    // No bound recorded and none asked for: the default (the store holds far less).
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 1024 << 20);
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"hello"[..]));
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap(),
        old,
        "the file is not rewritten until a bound is set"
    );

    // An explicit bound is obeyed and recorded in the extension; the base is unchanged, so a
    // build that predates the extension still reads it.
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(8)).unwrap();
    assert_eq!(store.max_size(), 8 << 20);
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap(),
        meta_with_bound(SEGMENT_SIZE, 0, 8 << 20)
    );
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 8 << 20);
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"hello"[..]));
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap()[..36],
        old[..],
        "the base is what it was"
    );
}

#[test]
fn a_damaged_extension_only_loses_the_recorded_bound() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = meta_with_bound(SEGMENT_SIZE, 0, 2 << 20);
    bytes[40] ^= 0xff;
    std::fs::write(dir.path().join("uno-cache.meta"), bytes).unwrap();
    write_segment(dir.path(), 1, &[record(1, 1, 0, "kept", b"hello")]);
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(
        store.max_size(),
        1024 << 20,
        "the default, as if none was recorded"
    );
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"hello"[..]));
}

#[test]
fn new_files_take_the_permission_bits_of_the_metadata_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let meta_path = dir.path().join("uno-cache.meta");
    std::fs::write(&meta_path, meta_with_bound(SEGMENT_SIZE, 0, 4 << 20)).unwrap();
    std::fs::set_permissions(&meta_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.file_mode(), 0o640);
    store.set("k", b"v", None).unwrap();
    store.close().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o640, 0, "{} is {mode:o}", path.display());
        seen += 1;
    }
    assert!(seen >= 4, "meta, LOCK, a segment and its hint: {seen} files");
}

/// "Conventions", value bytes: the tag byte each codec writes, and the one-byte `0x00` that is
/// a cached "absent" answer, written by hand and read back through the manager.
#[test]
fn the_documented_value_tags_and_the_absent_marker_read_as_specified() {
    use uno_cache::{CacheConfig, CacheManager, Codec, Fetched, LocalKind};
    let bincode = Codec::bincode().encode("k", &7u32).unwrap();
    assert_eq!(bincode.first(), Some(&0xB2));
    let json = Codec::json().encode("k", &7u32).unwrap();
    assert_eq!(json, b"\x4A7");
    let mut config = CacheConfig::default();
    config.local.kind = LocalKind::Memory;
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw("absent", &[0x00], None).unwrap();
    cache.set_raw("tagged", &bincode, None).unwrap();
    assert_eq!(
        cache.get::<u32>("absent").unwrap(),
        None,
        "a typed read sees a miss"
    );
    let answer: Option<Fetched<u32>> = cache
        .get_or_load_optional("absent", None, || -> Result<Option<u32>, Error> {
            panic!("a cached absent answer must not reach the source")
        })
        .unwrap();
    assert_eq!(answer, None);
    assert_eq!(cache.get::<u32>("tagged").unwrap(), Some(7));
    cache.set_raw("unknown", &[0x01, 0x02], None).unwrap();
    assert!(matches!(
        cache.get::<u32>("unknown"),
        Err(Error::CodecMismatch { .. })
    ));
}

/// "Memcached keys" in storage-format.md, implemented from the document alone.
#[cfg(feature = "memcached")]
mod memcached_keys {
    use sha2::{Digest, Sha256};
    use uno_cache::{MemcachedOptions, MemcachedStore, Storage};

    use super::support::MemcachedServer;

    fn plain(b: u8) -> bool {
        (0x21..=0x7E).contains(&b) && b != b'%'
    }

    /// Rules 1 to 3, the first that applies.
    fn documented_key(full: &str) -> String {
        if full.len() <= 250 && full.bytes().all(plain) {
            return full.to_owned();
        }
        let escaped: String = full
            .bytes()
            .map(|b| {
                if plain(b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        if escaped.len() <= 250 {
            return escaped;
        }
        let digest: String = Sha256::digest(full.as_bytes())
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        format!("%#{digest}")
    }

    fn fnv1a64(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }

    /// The documented splitmix64 finalizer.
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The documented host of `mapped` among `names`: the highest score, the first on a tie.
    fn rendezvous(mapped: &str, names: &[String]) -> usize {
        let k = fnv1a64(mapped.as_bytes());
        let scores: Vec<u64> = names.iter().map(|n| mix(k ^ fnv1a64(n.as_bytes()))).collect();
        let best = scores.iter().copied().max().unwrap();
        scores.iter().position(|&s| s == best).unwrap()
    }

    #[test]
    fn the_documented_examples_follow_the_documented_rules() {
        assert_eq!(documented_key("app:café"), "app:caf%C3%A9");
        assert_eq!(documented_key("a key"), "a%20key");
        assert_eq!(documented_key("100%"), "100%25");
        assert_eq!(documented_key("user:42"), "user:42");
    }

    /// Non-ASCII, over 250 bytes, escaped past 250 bytes, plain; under a plain prefix and under
    /// one that is escaped itself: each item is under the documented key on the documented host
    /// and on no other.
    #[test]
    fn a_store_puts_each_item_under_the_documented_key_on_the_documented_host() {
        let servers: Vec<MemcachedServer> = (0..3).map(|_| MemcachedServer::start()).collect();
        let hosts: Vec<String> = servers.iter().map(MemcachedServer::addr).collect();
        let long = "k".repeat(300);
        let spaces = " ".repeat(100);
        let mut placed = [0usize; 3];
        for prefix in ["app:", "my app/\u{e9}:"] {
            let store =
                MemcachedStore::connect(MemcachedOptions::with_hosts(hosts.clone()).prefix(prefix)).unwrap();
            let numbered: Vec<String> = (0..20).map(|i| format!("plain:{i}")).collect();
            let keys = ["café", long.as_str(), spaces.as_str()]
                .into_iter()
                .chain(numbered.iter().map(String::as_str));
            for key in keys {
                store.set(key, b"v", None).unwrap();
                let full = format!("{prefix}{key}");
                let mapped = documented_key(&full);
                let host = rendezvous(&mapped, &hosts);
                placed[host] += 1;
                for (i, server) in servers.iter().enumerate() {
                    let held = server.raw().get::<Vec<u8>>(&mapped).unwrap().is_some();
                    assert_eq!(
                        held,
                        i == host,
                        "{full:?} as {mapped:?}: on host {i}, documented {host}"
                    );
                }
            }
        }
        assert_eq!(documented_key(&format!("app:{long}")).len(), 66);
        assert!(documented_key(&format!("app:{spaces}")).starts_with("%#"));
        assert!(
            placed.iter().all(|&n| n > 0),
            "every host took some keys: {placed:?}"
        );
    }
}

#[test]
fn bytes_past_the_segment_size_are_not_read_as_records() {
    // The store never writes a segment longer than the segment size in the metadata, so what a
    // file holds past it (a copy gone wrong, another program's bytes) is not taken for records.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    let mut seg = segment_header(1, 1);
    seg.extend_from_slice(&record(1, 1, 0, "k", b"written by the store"));
    // Not zeros, which end a scan: bytes a scan searches through for the next record.
    seg.resize(SEGMENT_SIZE as usize, 0xA5);
    let past = record(1, 2, 0, "k", b"past the segment size");
    seg.extend_from_slice(&past);
    std::fs::write(dir.path().join(format!("{:020}.seg", 1)), seg).unwrap();

    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    assert_eq!(
        store.get("k").unwrap().as_deref(),
        Some(&b"written by the store"[..])
    );
    let report = store.recovery_report();
    assert!(
        report.damaged_bytes >= past.len() as u64,
        "the bytes past the segment size count as damage: {report:?}"
    );
    store.close().unwrap();
}

#[test]
fn a_newest_segment_of_zeros_is_a_cut_short_roll_removed_without_counting_damage() {
    // Segment 1 ends in a torn record; segment 2 has every byte zero, as a power cut between
    // its creation and its header reaching the disk leaves it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    let torn = record(1, 2, 0, "torn", b"cut by the crash");
    let mut seg = segment_header(1, 1);
    seg.extend_from_slice(&record(1, 1, 0, "k", b"kept"));
    seg.extend_from_slice(&torn[..torn.len() / 2]);
    seg.resize(SEGMENT_SIZE as usize, 0);
    std::fs::write(dir.path().join(format!("{:020}.seg", 1)), seg).unwrap();
    let zeros = dir.path().join(format!("{:020}.seg", 2));
    std::fs::write(&zeros, vec![0u8; SEGMENT_SIZE as usize]).unwrap();

    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(report.damaged_segments, 0, "{report:?}");
    assert_eq!(
        report.damaged_ranges, 0,
        "segment 1 is the newest written: torn, not damaged: {report:?}"
    );
    assert!(report.torn_tail_bytes > 0, "{report:?}");
    assert!(!zeros.exists(), "the segment of zeros is removed");
    assert!(
        !dir.path().join(format!("{:020}.damaged", 2)).exists(),
        "nothing is moved aside"
    );
    // The store goes on from there; an empty newest segment (cut short before its space was
    // reserved) goes the same way.
    store.set("after", b"v", None).unwrap();
    store.close().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    assert_eq!(store.get("after").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(store.recovery_report().damaged_segments, 0);
    store.close().unwrap();
    let empty = dir.path().join(format!("{:020}.seg", 99));
    std::fs::write(&empty, b"").unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    assert_eq!(store.recovery_report().damaged_segments, 0);
    assert!(!empty.exists(), "the empty newest segment is removed");
    assert_eq!(store.get("after").unwrap().as_deref(), Some(&b"v"[..]));
    store.close().unwrap();
}

#[test]
fn a_hint_entry_shorter_than_a_record_of_its_key_makes_the_segment_scanned() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    let rec = record(1, 1, 0, "k", b"from the segment");
    write_segment(dir.path(), 1, std::slice::from_ref(&rec));
    // One entry for "k" at offset 32, of length 0 (a record of a one-byte key is 29 at least).
    let mut hint = b"UNOCHINT".to_vec();
    hint.extend_from_slice(&1u16.to_le_bytes());
    hint.extend_from_slice(&[0u8; 6]);
    hint.extend_from_slice(&1u64.to_le_bytes());
    hint.extend_from_slice(&(32 + rec.len() as u64).to_le_bytes());
    hint.extend_from_slice(&[1, 0]);
    hint.extend_from_slice(&1u16.to_le_bytes());
    hint.extend_from_slice(&32u32.to_le_bytes());
    hint.extend_from_slice(&0u32.to_le_bytes());
    hint.extend_from_slice(&1u64.to_le_bytes());
    hint.extend_from_slice(&0u64.to_le_bytes());
    hint.extend_from_slice(b"k");
    hint.extend_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&hint);
    hint.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join(format!("{:020}.hint", 1)), hint).unwrap();

    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!((report.from_hints, report.scanned), (0, 1), "{report:?}");
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"from the segment"[..]));
    store.close().unwrap();
}

/// A hint file built from the document: (kind, key, seq) entries, offsets and lengths made up
/// (a `.lost` file's are never read).
fn hint_file(segment_id: u64, entries: &[(u8, &str, u64)]) -> Vec<u8> {
    let mut out = b"UNOCHINT".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&4096u64.to_le_bytes()); // data end
    for (i, (kind, key, seq)) in entries.iter().enumerate() {
        out.push(*kind);
        out.push(0);
        out.extend_from_slice(&(key.len() as u16).to_le_bytes());
        out.extend_from_slice(&(32 + 64 * i as u32).to_le_bytes()); // offset
        out.extend_from_slice(&64u32.to_le_bytes()); // length
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes()); // expires at
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

#[test]
fn a_lost_segments_keys_written_by_hand_hide_older_versions_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    write_segment(
        dir.path(),
        1,
        &[
            record(1, 1, 0, "over", b"old"),
            record(1, 2, 0, "gone", b"was"),
            record(1, 3, 0, "kept", b"k"),
            record(1, 4, 0, "moved", b"old"),
        ],
    );
    // Segment 2 was lost; its hint names a value of "over", a tombstone of "gone", the value of
    // "moved" that compaction copied into segment 3 (same seq), and the highest seq, 9.
    let lost = [(1, "over", 5), (2, "gone", 6), (1, "moved", 7), (1, "last", 9)];
    std::fs::write(dir.path().join(format!("{:020}.lost", 2)), hint_file(2, &lost)).unwrap();
    write_segment(dir.path(), 3, &[record(1, 7, 0, "moved", b"copy")]);
    // No segment is older than id 0: this one hides nothing and is deleted.
    let stale = dir.path().join(format!("{:020}.lost", 0));
    std::fs::write(&stale, hint_file(0, &[(2, "kept", 100)])).unwrap();

    let open = || FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let store = open();
    assert_eq!(store.recovery_report().lost_keys, 4);
    assert_eq!(
        store.get("over").unwrap(),
        None,
        "a value entry hides older versions"
    );
    assert_eq!(
        store.get("gone").unwrap(),
        None,
        "a tombstone entry hides older versions"
    );
    assert_eq!(
        store.get("moved").unwrap().as_deref(),
        Some(&b"copy"[..]),
        "a copy of the lost record itself is kept"
    );
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"k"[..]));
    assert!(!stale.exists());
    // The lost seq 9 counts as seen: this write takes seq 10, not 8, and the next open keeps it.
    store.set("last", b"new", None).unwrap();
    store.close().unwrap();
    let store = open();
    assert_eq!(store.get("last").unwrap().as_deref(), Some(&b"new"[..]));
    assert!(dir.path().join(format!("{:020}.lost", 2)).exists());
}

#[test]
fn a_sequence_number_past_any_a_store_reaches_opens_the_store_for_reads_only() {
    // A crafted or damaged record at seq u64::MAX: every later write would reuse it, and a value
    // set after a delete of its key lost the tie to the tombstone at the next open.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    write_segment(dir.path(), 1, &[record(1, u64::MAX, 0, "k", b"read")]);
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"read"[..]));
    for refused in [store.set("other", b"v", None).map(|()| false), store.delete("k")] {
        let message = match refused {
            Err(e @ uno_cache::Error::WritesDisabled { .. }) => e.to_string(),
            other => panic!("expected WritesDisabled, got {other:?}"),
        };
        assert!(message.contains("sequence number"), "{message}");
    }
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"read"[..]));
}

/// A hint file of `records` (encoded by [`record`], in file order from offset 32), every
/// entry's fields taken from the document's table; `reserved` fills the header's reserved bytes
/// (10..16) and each entry's reserved byte.
fn hint_of(segment_id: u64, records: &[(u8, &str, u64, u64, &Vec<u8>)], reserved: u8) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut offset = 32u32;
    for (kind, key, seq, expires_at, rec) in records {
        entries.push(*kind);
        entries.push(reserved);
        entries.extend_from_slice(&(key.len() as u16).to_le_bytes());
        entries.extend_from_slice(&offset.to_le_bytes());
        entries.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        entries.extend_from_slice(&seq.to_le_bytes());
        entries.extend_from_slice(&expires_at.to_le_bytes());
        entries.extend_from_slice(key.as_bytes());
        offset += rec.len() as u32;
    }
    let mut out = b"UNOCHINT".to_vec();
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&[reserved; 6]);
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&u64::from(offset).to_le_bytes()); // data end
    out.extend_from_slice(&entries);
    out.extend_from_slice(&(records.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The records of segment 1 and its hint, for the two tests below: a value, a value that
/// expires far in the future, and the tombstone of the first.
fn hinted_segment(dir: &Path, header: Vec<u8>, reserved: u8) -> Vec<u8> {
    let far = 4_000_000_000_000u64;
    let (a, b, gone) = (
        record(1, 1, 0, "a", b"first"),
        record(1, 2, far, "b", b"expires late"),
        record(2, 3, 0, "a", b""),
    );
    let mut seg = header;
    for r in [&a, &b, &gone] {
        seg.extend_from_slice(r);
    }
    // Sealed: the file ends at its data end.
    std::fs::write(dir.join(format!("{:020}.seg", 1)), &seg).unwrap();
    let hint = hint_of(
        1,
        &[(1, "a", 1, 0, &a), (1, "b", 2, far, &b), (2, "a", 3, 0, &gone)],
        reserved,
    );
    std::fs::write(dir.join(format!("{:020}.hint", 1)), &hint).unwrap();
    write_segment(dir, 2, &[record(1, 4, 0, "c", b"scanned")]);
    hint
}

#[test]
fn a_hint_file_written_by_hand_from_the_document_indexes_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    let hint = hinted_segment(dir.path(), segment_header(1, 1), 0);
    let open = || FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let store = open();
    let report = store.recovery_report().clone();
    assert_eq!(
        (report.segments, report.from_hints, report.scanned),
        (2, 1, 1),
        "segment 1 from its hint, segment 2 (no hint) scanned: {report:?}"
    );
    assert_eq!((report.damaged_ranges, report.records), (0, 4), "{report:?}");
    assert_eq!(store.get("a").unwrap(), None, "the tombstone entry wins");
    let b = store.get_entry("b").unwrap().unwrap();
    assert_eq!(b.value, b"expires late");
    assert_eq!(
        b.expires_at,
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(4_000_000_000_000))
    );
    assert_eq!(store.get("c").unwrap().as_deref(), Some(&b"scanned"[..]));
    store.close().unwrap();
    // A hint that checks out is used as it is, not rewritten; the next open reads hints only.
    assert_eq!(
        std::fs::read(dir.path().join(format!("{:020}.hint", 1))).unwrap(),
        hint
    );
    let store = open();
    assert_eq!(
        store.recovery_report().scanned,
        0,
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.get("c").unwrap().as_deref(), Some(&b"scanned"[..]));
}

#[test]
fn reserved_bytes_and_header_flags_are_ignored_by_version_1_readers_as_documented() {
    // "Versions": a version-1 reader ignores the flags and reserved bytes of the file headers
    // and of hint entries (each covered by its CRC, so they were written so); a record with
    // non-zero flags it refuses (see the next test).
    let dir = tempfile::tempdir().unwrap();
    let mut base = meta(1, SEGMENT_SIZE, 0);
    base[10..16].copy_from_slice(&[0xA5; 6]);
    let crc = crc32fast::hash(&base[..32]);
    base[32..36].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.path().join("uno-cache.meta"), &base).unwrap();
    hinted_segment(dir.path(), segment_header_with(1, 0xFFFF, 1, 0xFFFF_FFFF), 0xA5);

    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(
        (report.segments, report.from_hints, report.damaged_segments),
        (2, 1, 0),
        "{report:?}"
    );
    assert_eq!(store.get("a").unwrap(), None);
    assert_eq!(store.get("b").unwrap().as_deref(), Some(&b"expires late"[..]));
    store.close().unwrap();
}

/// A record whose CRC checks out but that breaks the record table (non-zero flags, an unknown
/// kind, a tombstone with a value, a key of 0 or over 4096 bytes) is invalid: its bytes are
/// damage, and the records on either side of it are read.
#[test]
fn a_record_that_breaks_the_record_table_is_damage_with_a_valid_crc() {
    let reseal = |mut rec: Vec<u8>| {
        let salted: Vec<u8> = SALT
            .to_le_bytes()
            .into_iter()
            .chain(rec[4..].iter().copied())
            .collect();
        let crc = crc32fast::hash(&salted);
        rec[0..4].copy_from_slice(&crc.to_le_bytes());
        rec
    };
    let mut flagged = record(1, 2, 0, "flagged", b"not a version-1 record");
    flagged[5] = 0x01;
    let long_key = "k".repeat(4097);
    let cases = [
        ("non-zero flags", reseal(flagged)),
        ("kind 3", record(3, 2, 0, "x", b"v")),
        ("a tombstone with a value", record(2, 2, 0, "before", b"v")),
        ("an empty key", record(1, 2, 0, "", b"v")),
        ("a key over 4096 bytes", record(1, 2, 0, &long_key, b"v")),
    ];
    for (name, bad) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
        let records = [
            record(1, 1, 0, "before", b"kept"),
            bad.clone(),
            record(1, 3, 0, "after", b"read"),
        ];
        write_segment(dir.path(), 1, &records);
        write_segment(dir.path(), 2, &[]);
        let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
        assert_eq!(
            store.get("before").unwrap().as_deref(),
            Some(&b"kept"[..]),
            "{name}"
        );
        assert_eq!(
            store.get("after").unwrap().as_deref(),
            Some(&b"read"[..]),
            "{name}"
        );
        let report = store.recovery_report();
        assert_eq!(
            (report.records, report.damaged_ranges, report.damaged_bytes),
            (2, 1, bad.len() as u64),
            "{name}: {report:?}"
        );
    }
}

#[test]
fn bytes_after_the_metadata_extension_are_ignored_and_a_rewrite_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut later = meta_with_bound(SEGMENT_SIZE, 0, 3 << 20);
    later.extend_from_slice(b"a later extension");
    std::fs::write(dir.path().join("uno-cache.meta"), &later).unwrap();
    write_segment(dir.path(), 1, &[record(1, 1, 0, "kept", b"hello")]);
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 3 << 20, "the extension is read");
    assert_eq!(store.get("kept").unwrap().as_deref(), Some(&b"hello"[..]));
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap(),
        later,
        "an open that records nothing leaves them"
    );
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(8)).unwrap();
    store.close().unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("uno-cache.meta")).unwrap(),
        meta_with_bound(SEGMENT_SIZE, 0, 8 << 20),
        "a rewrite writes the 48-byte form"
    );
}

#[test]
fn a_newest_segment_shorter_than_a_header_and_all_zeros_is_a_cut_short_roll() {
    // "with every byte zero (header included)": a file that ends inside its header, every byte
    // of it zero, held nothing either.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta"), meta(1, SEGMENT_SIZE, 0)).unwrap();
    write_segment(dir.path(), 1, &[record(1, 1, 0, "k", b"kept")]);
    let zeros = dir.path().join(format!("{:020}.seg", 2));
    std::fs::write(&zeros, [0u8; 20]).unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"kept"[..]));
    assert_eq!(report.damaged_segments, 0, "{report:?}");
    assert!(!zeros.exists(), "the segment of zeros is removed");
    assert!(!dir.path().join(format!("{:020}.damaged", 2)).exists());
    store.close().unwrap();
}
