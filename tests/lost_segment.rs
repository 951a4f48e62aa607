//! A segment lost to a damaged header: its records are gone, and an older version of a key it
//! overwrote or deleted must not come back, at this open or any later one, as long as its hint
//! file names the key (storage-format.md, "Recovery", steps 3 and 4).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs;
use std::path::Path;

use common::{files_with_ext, small_segments, value_bytes};
use uno_cache::{Error, FileStore};

/// Three values fill a segment; the fourth write rolls to the next one.
const VALUE_LEN: usize = 20 * 1024;

fn value(id: u64) -> Vec<u8> {
    value_bytes(id, VALUE_LEN)
}

/// Segment 1: `k` = 1, `gone` = 2, `only-old` = 3. Segment 2: `k` = 4, `gone` deleted,
/// `mid` = 5, `mid2` = 6. Segment 3 (active): `k2` = 7. Returns the segment files.
fn three_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let store = FileStore::open(dir, small_segments()).unwrap();
    store.set("k", &value(1), None).unwrap();
    store.set("gone", &value(2), None).unwrap();
    store.set("only-old", &value(3), None).unwrap();
    store.set("k", &value(4), None).unwrap();
    assert!(store.delete("gone").unwrap());
    store.set("mid", &value(5), None).unwrap();
    store.set("mid2", &value(6), None).unwrap();
    store.set("k2", &value(7), None).unwrap();
    store.close().unwrap();
    let segments = files_with_ext(dir, "seg");
    assert_eq!(segments.len(), 3, "the layout this test needs: {segments:?}");
    segments
}

/// Flips a byte of the header's magic: the segment cannot be read at all.
fn damage_header(segment: &Path) {
    let mut bytes = fs::read(segment).unwrap();
    bytes[0] ^= 0xff;
    fs::write(segment, &bytes).unwrap();
}

fn get(store: &FileStore, key: &str) -> Option<Vec<u8>> {
    store.get(key).unwrap()
}

#[test]
fn keys_of_a_segment_lost_to_damage_never_read_their_older_versions_again() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    let hint = fs::read(segments[1].with_extension("hint")).expect("a sealed segment has its hint");
    damage_header(&segments[1]);

    for open in ["first", "second"] {
        let store = FileStore::open(&dir, small_segments()).unwrap();
        let report = store.recovery_report().clone();
        if open == "first" {
            assert_eq!(report.damaged_segments, 1, "{report:?}");
        }
        // k (overwritten), gone (deleted), mid, mid2.
        assert_eq!(report.lost_keys, 4, "{open} open: {report:?}");
        assert_eq!(
            get(&store, "k"),
            None,
            "{open} open: k's overwritten version came back"
        );
        assert_eq!(get(&store, "gone"), None, "{open} open: a deleted key came back");
        assert_eq!(get(&store, "mid"), None, "{open} open: its only record was lost");
        assert_eq!(
            get(&store, "only-old").as_deref(),
            Some(&value(3)[..]),
            "{open} open"
        );
        assert_eq!(get(&store, "k2").as_deref(), Some(&value(7)[..]), "{open} open");
        store.close().unwrap();
        assert_eq!(
            fs::read(segments[1].with_extension("lost")).ok().as_ref(),
            Some(&hint),
            "{open} open: the lost segment's hint is kept, as it was, while an older segment remains"
        );
    }

    // A write after the loss takes a higher sequence number than any lost record: the next open
    // must not hide it.
    let store = FileStore::open(&dir, small_segments()).unwrap();
    store.set("k", &value(8), None).unwrap();
    store.close().unwrap();
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(get(&store, "k").as_deref(), Some(&value(8)[..]));

    // Once no older segment remains, the lost keys hide nothing and the file goes.
    store.clear().unwrap();
    store.close().unwrap();
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(store.recovery_report().lost_keys, 0);
    store.close().unwrap();
    assert!(!segments[1].with_extension("lost").exists());
}

/// The open fails with `LostKeysUnreadable` naming `path`; then `fix` puts things right, and
/// the keys of the lost segment 2 are held as deleted at that open and the next.
fn refused_naming_then_held_once_fixed(dir: &Path, path: &Path, fix: impl FnOnce()) {
    let err = FileStore::open(dir, small_segments()).unwrap_err();
    assert!(matches!(err, Error::LostKeysUnreadable { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    fix();
    for open in ["first", "second"] {
        let store = FileStore::open(dir, small_segments()).unwrap();
        assert_eq!(store.recovery_report().lost_keys, 4, "{open} open");
        assert_eq!(get(&store, "gone"), None, "{open} open: a deleted key came back");
        assert_eq!(
            get(&store, "k"),
            None,
            "{open} open: k's overwritten version came back"
        );
        assert_eq!(get(&store, "k2").as_deref(), Some(&value(7)[..]), "{open} open");
        store.close().unwrap();
    }
}

/// A hint that cannot be read is not damaged: its bytes may be whole, and the cause (a mode, a
/// directory in its place, a failing disk) can be fixed. It was deleted as damaged, and the
/// deleted `gone` came back at that open and every later one. (A directory, because a mode of
/// 000 does not stop root from reading.)
#[test]
fn a_lost_segments_hint_that_cannot_be_read_refuses_the_open_and_is_kept_with_its_segment() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    damage_header(&segments[1]);
    let hint = segments[1].with_extension("hint");
    let saved = scratch.path().join("saved.hint");
    fs::rename(&hint, &saved).unwrap();
    fs::create_dir(&hint).unwrap();
    refused_naming_then_held_once_fixed(&dir, &hint, || {
        assert!(
            hint.is_dir() && segments[1].exists(),
            "the open moved or deleted them"
        );
        fs::remove_dir(&hint).unwrap();
        fs::rename(&saved, &hint).unwrap();
    });
}

/// A hint read whole that cannot be renamed to `.lost` (here a directory stands in the way) was
/// deleted, and its keys with it; then it refused the open. Its keys are held as deleted for the
/// run instead, with the hint and the segment left for the next open to try again.
#[test]
fn a_lost_segments_hint_that_cannot_be_renamed_holds_its_keys_and_stays_for_the_next_open() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    damage_header(&segments[1]);
    let hint = segments[1].with_extension("hint");
    let lost = segments[1].with_extension("lost");
    fs::create_dir(&lost).unwrap();
    let mut k = None;
    for (n, open) in ["first", "second", "fixed", "after"].into_iter().enumerate() {
        if open == "fixed" {
            fs::remove_dir(&lost).unwrap();
        }
        let store = FileStore::open(&dir, small_segments()).unwrap();
        let report = store.recovery_report().clone();
        assert_eq!(report.lost_keys, 4, "{open} open: {report:?}");
        let blocked = open == "first" || open == "second";
        let found = (report.damaged_segments_left, report.damaged_segments);
        assert_eq!(
            found,
            (u64::from(blocked), u64::from(open == "fixed")),
            "{open} open: {report:?}"
        );
        assert_eq!(get(&store, "gone"), None, "{open} open: a deleted key came back");
        assert_eq!(get(&store, "mid"), None, "{open} open: its only record was lost");
        // Not the overwritten version: none before the first write here, then the last one.
        assert_eq!(get(&store, "k"), k, "{open} open");
        assert_eq!(get(&store, "k2").as_deref(), Some(&value(7)[..]), "{open} open");
        assert!(
            hint.is_file() == blocked && segments[1].exists() == blocked,
            "{open} open"
        );
        assert_eq!(lost.is_file(), !blocked, "{open} open");
        // Written after the loss: the next open must not hide it.
        let written = value(10 + n as u64);
        store.set("k", &written, None).unwrap();
        k = Some(written);
        store.close().unwrap();
    }
}

/// The same for the newest segment: a write must not create a segment of its id while its file
/// is still there (the create fails), nor once it is moved aside (its `.lost` file names the
/// lost keys, and a new segment's hint of that id could replace it).
#[test]
fn a_lost_newest_segment_held_for_its_keys_keeps_its_id_taken() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    damage_header(&segments[2]);
    fs::create_dir(segments[2].with_extension("lost")).unwrap();
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(
        store.recovery_report().lost_keys,
        1,
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(get(&store, "k2"), None, "its only record was lost");
    store.set("x", &value(9), None).unwrap();
    store.close().unwrap();
    assert!(segments[2].with_extension("hint").is_file() && segments[2].exists());
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(get(&store, "x").as_deref(), Some(&value(9)[..]));
    assert_eq!(get(&store, "k2"), None);
    assert_eq!(get(&store, "k").as_deref(), Some(&value(4)[..]));
    store.close().unwrap();
    assert_eq!(
        files_with_ext(&dir, "seg").len(),
        4,
        "{:?}",
        files_with_ext(&dir, "seg")
    );
}

/// A `.lost` file kept by an earlier open that cannot be read now: its keys were skipped, with
/// a warning, and their older versions served for that run.
#[test]
fn a_lost_file_that_cannot_be_read_refuses_the_open_and_is_kept() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    damage_header(&segments[1]);
    FileStore::open(&dir, small_segments()).unwrap().close().unwrap();
    let lost = segments[1].with_extension("lost");
    let saved = scratch.path().join("saved.lost");
    fs::rename(&lost, &saved).unwrap();
    fs::create_dir(&lost).unwrap();
    refused_naming_then_held_once_fixed(&dir, &lost, || {
        assert!(lost.is_dir(), "the open removed it");
        fs::remove_dir(&lost).unwrap();
        fs::rename(&saved, &lost).unwrap();
    });
}

#[test]
fn a_lost_segment_whose_hint_is_damaged_too_is_reported_and_the_rest_opens() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    damage_header(&segments[1]);
    let hint = segments[1].with_extension("hint");
    let mut bytes = fs::read(&hint).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&hint, &bytes).unwrap();

    let store = FileStore::open(&dir, small_segments()).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!((report.damaged_segments, report.lost_keys), (1, 0), "{report:?}");
    assert!(!hint.exists() && !segments[1].with_extension("lost").exists());
    assert_eq!(get(&store, "only-old").as_deref(), Some(&value(3)[..]));
    assert_eq!(get(&store, "k2").as_deref(), Some(&value(7)[..]));
}

/// The lost segment was the newest: its records had the highest sequence numbers, and a write
/// after the open that took a lower one would be hidden by them at the next open.
#[test]
fn a_write_after_losing_the_newest_segment_survives_the_next_open() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    three_segments(&dir);
    // A reopened store writes to a new segment: k2 twice there, so that its lost records hide
    // every seq up to the last one the store gave out.
    let store = FileStore::open(&dir, small_segments()).unwrap();
    store.set("k2", &value(8), None).unwrap();
    store.set("k2", &value(9), None).unwrap();
    store.close().unwrap();
    let segments = files_with_ext(&dir, "seg");
    assert_eq!(segments.len(), 4, "{segments:?}");
    assert!(
        segments[3].with_extension("hint").exists(),
        "close writes the active segment's hint"
    );
    damage_header(&segments[3]);

    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(store.recovery_report().lost_keys, 2);
    assert_eq!(get(&store, "k2"), None);
    store.set("k2", &value(10), None).unwrap();
    store.close().unwrap();
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(get(&store, "k2").as_deref(), Some(&value(10)[..]));
}

/// The newest segment lost, a run that writes nothing, then a new segment damaged in turn: the
/// new one took the lost one's id, and its hint replaced the `.lost` file naming the first
/// loss's keys, whose older versions came back.
#[test]
fn a_new_segment_never_takes_a_lost_ones_id() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    three_segments(&dir);
    let store = FileStore::open(&dir, small_segments()).unwrap();
    store.set("k", &value(8), None).unwrap();
    store.close().unwrap();
    let newest = |dir: &Path| files_with_ext(dir, "seg").last().unwrap().clone();
    damage_header(&newest(&dir));
    FileStore::open(&dir, small_segments()).unwrap().close().unwrap();
    let store = FileStore::open(&dir, small_segments()).unwrap();
    store.set("x", &value(9), None).unwrap();
    store.close().unwrap();
    let second = newest(&dir);
    assert!(
        !second.with_extension("lost").exists(),
        "{second:?} took a lost segment's id"
    );
    damage_header(&second);

    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(get(&store, "k"), None, "k's overwritten version came back");
    assert_eq!(
        store.recovery_report().lost_keys,
        2,
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn a_newest_segment_zeroed_under_its_hint_is_lost_to_damage_not_taken_for_a_roll_cut_short() {
    // Only a segment a roll never wrote can read as all zeros after a crash: one with a hint was
    // fsynced before its hint was written. Deleted as a roll cut short, with its hint left to go
    // as one without a segment, the tombstone it held was forgotten and `gone` came back.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let store = FileStore::open(&dir, small_segments()).unwrap();
    store.set("gone", &value(1), None).unwrap();
    store.set("a", &value(2), None).unwrap();
    store.set("b", &value(3), None).unwrap();
    store.set("c", &value(4), None).unwrap();
    assert!(store.delete("gone").unwrap());
    store.close().unwrap();
    let segments = files_with_ext(&dir, "seg");
    assert_eq!(segments.len(), 2, "the layout this test needs: {segments:?}");
    assert!(segments[1].with_extension("hint").exists());
    let len = fs::metadata(&segments[1]).unwrap().len() as usize;
    fs::write(&segments[1], vec![0u8; len]).unwrap();

    let store = FileStore::open(&dir, small_segments()).unwrap();
    let report = store.recovery_report().clone();
    assert!(
        get(&store, "gone").is_none(),
        "the deleted value came back: {report:?}"
    );
    assert_eq!(report.damaged_segments, 1, "{report:?}");
    assert_eq!(get(&store, "a"), Some(value(2)));
    store.close().unwrap();
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert!(get(&store, "gone").is_none(), "and at the next open");
    store.close().unwrap();
}

/// Cuts `segment` to `len` bytes, as a file system that lost the file's tail would.
fn cut(segment: &Path, len: u64) {
    let file = fs::OpenOptions::new().write(true).open(segment).unwrap();
    file.set_len(len).unwrap();
}

#[test]
fn a_segment_cut_short_of_its_intact_hint_keeps_its_keys_deleted_and_the_cut_is_damage() {
    // A segment is fsynced before its hint is written, so no crash leaves one shorter than its
    // intact hint says: its tail was lost to damage, and the hint names the keys of the records
    // that went with it. The hint was set aside as stale and the segment scanned: the
    // overwritten `k` and the deleted `gone` and `only-old` came back, and the cut of the
    // newest segment was reported as the torn tail of a crash.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    three_segments(&dir);
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert!(store.delete("only-old").unwrap());
    store.close().unwrap();
    let segments = files_with_ext(&dir, "seg");
    assert_eq!(segments.len(), 4, "the layout this test needs: {segments:?}");
    assert!(segments.iter().all(|s| s.with_extension("hint").exists()));
    // Inside the first record of each: every record of the middle segment (k = 4, gone's
    // tombstone, mid, mid2) and of the newest (only-old's tombstone) is lost.
    cut(&segments[1], 40);
    cut(&segments[3], 40);

    for open in ["first", "second"] {
        let store = FileStore::open(&dir, small_segments()).unwrap();
        let report = store.recovery_report().clone();
        if open == "first" {
            assert_eq!(
                (report.damaged_ranges, report.torn_tail_bytes),
                (2, 0),
                "both cuts are damage: {report:?}"
            );
        }
        let back = |key: &str| get(&store, key).map(|v| v.len());
        assert_eq!(back("k"), None, "{open} open: k's overwritten version came back");
        assert_eq!(back("gone"), None, "{open} open: a deleted key came back");
        assert_eq!(
            back("only-old"),
            None,
            "{open} open: a key deleted in the newest segment came back"
        );
        assert_eq!(back("mid"), None, "{open} open");
        assert_eq!(get(&store, "k2").as_deref(), Some(&value(7)[..]), "{open} open");
        store.close().unwrap();
    }
}

#[test]
fn a_segment_cut_short_and_then_lost_to_a_damaged_header_keeps_every_key_its_first_hint_named() {
    // The scan after the cut wrote the segment a hint of what was left; the header damaged
    // later, that hint must not replace the `.lost` file that names the records the cut took.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    // Inside gone's tombstone, just past k = 4 (header, key, value).
    cut(&segments[1], 32 + 28 + 1 + VALUE_LEN as u64 + 10);
    let store = FileStore::open(&dir, small_segments()).unwrap();
    assert_eq!(get(&store, "k").as_deref(), Some(&value(4)[..]));
    assert_eq!(get(&store, "gone"), None);
    store.close().unwrap();
    // Only the `.lost` file names gone's tombstone now.
    let lost = segments[1].with_extension("lost");
    assert!(lost.exists(), "the cut segment's hint was not kept");
    damage_header(&segments[1]);
    for open in ["first", "second"] {
        let store = FileStore::open(&dir, small_segments()).unwrap();
        let back = |key: &str| get(&store, key).map(|v| v.len());
        assert_eq!(back("k"), None, "{open} open: k's overwritten version came back");
        assert_eq!(back("gone"), None, "{open} open: a deleted key came back");
        assert_eq!(back("mid"), None, "{open} open");
        assert_eq!(
            get(&store, "only-old").as_deref(),
            Some(&value(3)[..]),
            "{open} open"
        );
        store.close().unwrap();
    }
}

/// `bytes` (a hint file) with version `version` and its trailer CRC made right again.
fn with_version(mut bytes: Vec<u8>, version: u16) -> Vec<u8> {
    bytes[8..10].copy_from_slice(&version.to_le_bytes());
    let at = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..at]);
    bytes[at..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn a_lost_file_of_a_newer_format_version_is_refused_and_kept() {
    // storage-format.md ("Versions"): a file whose CRC checks out but whose version is higher is
    // refused, naming it. A `.lost` file of version 2 was removed as damaged instead, and the
    // keys it held as deleted (k, gone) read their older versions again.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let segments = three_segments(&dir);
    damage_header(&segments[1]);
    FileStore::open(&dir, small_segments()).unwrap().close().unwrap();
    let lost = segments[1].with_extension("lost");
    let newer = with_version(fs::read(&lost).unwrap(), 2);
    fs::write(&lost, &newer).unwrap();
    match FileStore::open(&dir, small_segments()) {
        Err(Error::UnsupportedVersion { path, found, .. }) => {
            assert_eq!((path, found), (lost.clone(), 2));
        }
        Err(e) => panic!("expected UnsupportedVersion, got {e}"),
        Ok(store) => panic!(
            "opened: gone = {:?} bytes, {:?}",
            get(&store, "gone").map(|v| v.len()),
            store.recovery_report()
        ),
    }
    assert_eq!(
        fs::read(&lost).ok().as_ref(),
        Some(&newer),
        "the file was not kept"
    );

    // The same for the hint of a segment whose header is unreadable: it was deleted as damaged.
    let dir = scratch.path().join("store2");
    let segments = three_segments(&dir);
    damage_header(&segments[1]);
    let hint = segments[1].with_extension("hint");
    let newer = with_version(fs::read(&hint).unwrap(), 2);
    fs::write(&hint, &newer).unwrap();
    match FileStore::open(&dir, small_segments()) {
        Err(Error::UnsupportedVersion { path, found, .. }) => {
            assert_eq!((path, found), (hint.clone(), 2));
        }
        Err(e) => panic!("expected UnsupportedVersion, got {e}"),
        Ok(store) => panic!("opened: {:?}", store.recovery_report()),
    }
    assert_eq!(
        fs::read(&hint).ok().as_ref(),
        Some(&newer),
        "the hint was not kept"
    );
    assert!(segments[1].exists(), "the segment was moved aside");
}
