//! Damaged files: a store with known contents is closed, then copies of its directory get
//! truncated segment and hint files and flipped or zeroed bytes, in many seeded rounds. Opening
//! must never panic or fail (only a damaged metadata file may fail, with a clear error), a read
//! returns the value written or a miss — never another key's value, never garbage — and damage in
//! record bytes shows up in `verify` or the recovery report.
//!
//! Plus the directory-level cases: a damaged or stale hint falls back to scanning its segment,
//! foreign files are refused, a newer format version is refused, a damaged metadata file is
//! reported.
//!
//! Knobs: `UNO_DAMAGE_ROUNDS` (default 150), `UNO_DAMAGE_SEED` (default fixed); a failure names
//! the round's seed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{copy_dir, env_knob, files_with_ext, value_bytes, Rng};
use uno_cache::__fuzz::{decode_segment_header, scan_segment};
use uno_cache::{Error, FileStore, FileStoreOptions, FORMAT_VERSION};

const SEGMENT_SIZE: u64 = 64 * 1024;
/// Byte layout constants, from `src/local/file/format.rs` (storage-format.md).
const SEGMENT_HEADER_LEN: usize = 32;
const HINT_HEADER_LEN: usize = 32;
const META_FILE: &str = "uno-cache.meta";
const META_LEN: usize = 36;

fn options() -> FileStoreOptions {
    FileStoreOptions::default()
        .segment_size(SEGMENT_SIZE)
        .max_size_mb(64)
        .background_threads(false)
}

/// What was written, per key: every version in order (the last is current), and whether the key
/// was deleted at the end.
#[derive(Debug, Default)]
struct Known {
    keys: BTreeMap<String, KeyHistory>,
}

#[derive(Debug, Default, Clone)]
struct KeyHistory {
    versions: Vec<(Vec<u8>, bool)>,
    deleted: bool,
}

impl Known {
    fn current(&self, key: &str) -> Option<&(Vec<u8>, bool)> {
        let h = &self.keys[key];
        if h.deleted {
            None
        } else {
            h.versions.last()
        }
    }
}

/// Builds a closed store of about a dozen segments: keys written once, keys overwritten across
/// segments, keys deleted; some with a far-future TTL.
fn build_store(dir: &Path) -> Known {
    let mut rng = Rng::new(7);
    let mut known = Known::default();
    let store = FileStore::open(dir, options()).unwrap();
    let mut id = 0u64;
    let mut set = |store: &FileStore, known: &mut Known, key: String, rng: &mut Rng| {
        id += 1;
        let len = match rng.below(10) {
            0 => 0,
            1..8 => rng.range(1, 1500) as usize,
            _ => rng.range(1500, 12_000) as usize,
        };
        let ttl = rng.chance(25);
        let value = value_bytes(id, len);
        store
            .set(&key, &value, ttl.then(|| Duration::from_secs(36_000)))
            .unwrap();
        let h = known.keys.entry(key).or_default();
        h.versions.push((value, ttl));
        h.deleted = false;
    };
    for phase in 0..3 {
        for i in 0..150 {
            if phase == 0 || i % 3 == phase {
                set(&store, &mut known, format!("once-{phase}-{i}"), &mut rng);
            }
            if i < 60 {
                set(&store, &mut known, format!("over-{i}"), &mut rng);
            }
            if phase == 0 && i < 50 {
                set(&store, &mut known, format!("gone-{i}"), &mut rng);
            }
        }
        if phase > 0 {
            for i in (0..50).filter(|i| i % 2 == phase - 1) {
                let key = format!("gone-{i}");
                assert!(store.delete(&key).unwrap());
                known.keys.get_mut(&key).unwrap().deleted = true;
            }
        }
    }
    store.close().unwrap();
    known
}

/// Where each key's newest record (value or tombstone) lives in the undamaged store, and each
/// segment's data end.
struct Layout {
    newest_in: BTreeMap<String, u64>,
    data_end: BTreeMap<u64, u64>,
    /// Record start offsets per segment.
    starts: BTreeMap<u64, BTreeSet<u64>>,
}

fn segment_id(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn layout(dir: &Path) -> Layout {
    let mut newest: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut data_end = BTreeMap::new();
    let mut starts = BTreeMap::new();
    for path in files_with_ext(dir, "seg") {
        let id = segment_id(&path);
        let bytes = fs::read(&path).unwrap();
        let scan = scan_segment(&bytes, salt(&bytes));
        assert!(scan.damaged.is_empty() && scan.torn_tail.is_none());
        data_end.insert(id, scan.data_end);
        starts.insert(id, scan.records.iter().map(|r| r.offset).collect());
        for r in &scan.records {
            let slot = newest.entry(r.record.key.to_owned()).or_insert((0, 0));
            if r.record.seq >= slot.0 {
                *slot = (r.record.seq, id);
            }
        }
    }
    Layout {
        newest_in: newest.into_iter().map(|(k, (_, id))| (k, id)).collect(),
        data_end,
        starts,
    }
}

/// What one round did to the files of one segment id.
#[derive(Debug, Default, Clone)]
struct Damage {
    /// Bytes of the segment header changed, or the file cut inside it.
    header: bool,
    /// Bytes inside `header..data_end` changed (flips, zeroed bytes that were not zero).
    records: bool,
    /// The file was cut below its data end.
    cut_below_data_end: bool,
    /// The lowest changed offset in the record region, and whether everything from there to the
    /// data end is now zero or gone: then the segment looks exactly like a shorter, intact log.
    first_change: Option<u64>,
    /// The hint file was changed or deleted.
    hint: bool,
}

fn flip(bytes: &mut [u8], at: usize, rng: &mut Rng) {
    bytes[at] ^= rng.range(1, 256) as u8;
}

/// Applies 1–4 random damages to the files in `dir`; returns what was done, per segment id.
fn damage(dir: &Path, lay: &Layout, rng: &mut Rng, log: &mut Vec<String>) -> BTreeMap<u64, Damage> {
    let mut out: BTreeMap<u64, Damage> = BTreeMap::new();
    let ids: Vec<u64> = lay.data_end.keys().copied().collect();
    let seg_path = |id: u64| dir.join(format!("{id:020}.seg"));
    let hint_path = |id: u64| dir.join(format!("{id:020}.hint"));
    for _ in 0..rng.range(1, 5) {
        let id = ids[rng.index(ids.len())];
        let end = lay.data_end[&id];
        let d = out.entry(id).or_default();
        let kind = rng.below(8);
        match kind {
            // Truncate a segment: usually inside the record region.
            0 => {
                let path = seg_path(id);
                let Ok(mut bytes) = fs::read(&path) else { continue };
                let len = bytes.len() as u64;
                let cut = if rng.chance(80) {
                    rng.below(end.min(len) + 1)
                } else {
                    rng.below(len + 1)
                };
                bytes.truncate(cut as usize);
                fs::write(&path, &bytes).unwrap();
                log.push(format!("truncate seg {id} at {cut} (data end {end})"));
                if cut < SEGMENT_HEADER_LEN as u64 {
                    d.header = true;
                }
                if cut < end {
                    d.cut_below_data_end = true;
                    d.records = true;
                    note_change(d, cut.max(SEGMENT_HEADER_LEN as u64));
                }
            }
            // Flip bytes in a segment: mostly record bytes, sometimes anywhere (header, zeros).
            1 | 2 => {
                let path = seg_path(id);
                let Ok(mut bytes) = fs::read(&path) else { continue };
                if bytes.is_empty() {
                    continue;
                }
                for _ in 0..rng.range(1, 9) {
                    let region = if rng.chance(85) {
                        end.min(bytes.len() as u64)
                    } else {
                        bytes.len() as u64
                    };
                    let at = rng.below(region.max(1)) as usize;
                    flip(&mut bytes, at, rng);
                    log.push(format!("flip seg {id} byte {at}"));
                    if at < SEGMENT_HEADER_LEN {
                        d.header = true;
                    } else if (at as u64) < end {
                        d.records = true;
                        note_change(d, at as u64);
                    }
                }
                fs::write(&path, &bytes).unwrap();
            }
            // Zero a block of record bytes (a lost page).
            3 => {
                let path = seg_path(id);
                let Ok(mut bytes) = fs::read(&path) else { continue };
                let limit = end.min(bytes.len() as u64);
                if limit <= SEGMENT_HEADER_LEN as u64 {
                    continue;
                }
                let at = rng.range(SEGMENT_HEADER_LEN as u64, limit) as usize;
                let to = (at + rng.range(1, 4097) as usize).min(limit as usize);
                if bytes[at..to].iter().any(|&b| b != 0) {
                    d.records = true;
                    let first = at + bytes[at..to].iter().position(|&b| b != 0).unwrap();
                    note_change(d, first as u64);
                }
                bytes[at..to].fill(0);
                fs::write(&path, &bytes).unwrap();
                log.push(format!("zero seg {id} {at}..{to}"));
            }
            // Truncate a hint.
            4 => {
                let path = hint_path(id);
                let Ok(mut bytes) = fs::read(&path) else { continue };
                let cut = rng.below(bytes.len() as u64) as usize;
                bytes.truncate(cut);
                fs::write(&path, &bytes).unwrap();
                d.hint = true;
                log.push(format!("truncate hint {id} at {cut}"));
            }
            // Flip bytes in a hint.
            5 | 6 => {
                let path = hint_path(id);
                let Ok(mut bytes) = fs::read(&path) else { continue };
                for _ in 0..rng.range(1, 4) {
                    let at = rng.index(bytes.len());
                    flip(&mut bytes, at, rng);
                    log.push(format!("flip hint {id} byte {at}"));
                }
                fs::write(&path, &bytes).unwrap();
                d.hint = true;
            }
            // Delete a hint.
            _ => {
                if fs::remove_file(hint_path(id)).is_ok() {
                    d.hint = true;
                    log.push(format!("delete hint {id}"));
                }
            }
        }
    }
    out
}

fn note_change(d: &mut Damage, at: u64) {
    d.first_change = Some(d.first_change.map_or(at, |f| f.min(at)));
}

/// True if, from `first_change` on, the segment's record region is all zero or gone and
/// `first_change` is a record boundary: indistinguishable from a log that simply ended there.
fn looks_like_a_shorter_log(dir: &Path, id: u64, d: &Damage, lay: &Layout) -> bool {
    let Some(first) = d.first_change else { return false };
    if !lay.starts[&id].contains(&first) {
        return false;
    }
    let bytes = fs::read(dir.join(format!("{id:020}.seg"))).unwrap_or_default();
    let end = (lay.data_end[&id] as usize).min(bytes.len());
    bytes
        .get(first as usize..end)
        .is_none_or(|rest| rest.iter().all(|&b| b == 0))
}

/// Reads every known key and checks it: the current value, or a miss; for an overwritten or
/// deleted key an older version is tolerated only where the store could not know better (the
/// segment holding the newest record had no usable hint). Returns what was read.
fn check_reads(
    store: &FileStore,
    known: &Known,
    lay: &Layout,
    damage: &BTreeMap<u64, Damage>,
    ctx: &str,
) -> (BTreeMap<String, Vec<u8>>, u64) {
    let mut seen = BTreeMap::new();
    let mut stale = 0;
    for (key, history) in &known.keys {
        let untouched = !damage.contains_key(&lay.newest_in[key]);
        let Some(entry) = store.get_entry(key).unwrap() else {
            // Damage elsewhere must not cost a key whose newest record is in an untouched segment.
            assert!(
                !(untouched && known.current(key).is_some()),
                "{ctx}: key {key:?} is missing although the segment of its newest record was not damaged"
            );
            continue;
        };
        let ttl = entry.expires_at.is_some();
        let current = known.current(key);
        if current.is_some_and(|(v, t)| *v == entry.value && *t == ttl) {
            seen.insert(key.clone(), entry.value);
            continue;
        }
        let older = history
            .versions
            .iter()
            .any(|(v, t)| *v == entry.value && *t == ttl);
        assert!(
            older,
            "{ctx}: key {key:?} returned {} bytes that were never written under it",
            entry.value.len()
        );
        // An older version: possible only if recovery could not see the newest record. An
        // intact hint names it even when the segment's header is damaged (the hint is kept as
        // the segment's lost keys); with an intact header, only if the hint matches the file.
        let seg = lay.newest_in[key];
        let d = damage.get(&seg).cloned().unwrap_or_default();
        let hint_was_usable = !d.hint && (d.header || !d.cut_below_data_end);
        assert!(
            !hint_was_usable,
            "{ctx}: key {key:?} returned an older version although the hint of segment {seg}, which holds its newest record, was intact ({d:?})"
        );
        stale += 1;
        seen.insert(key.clone(), entry.value);
    }
    (seen, stale)
}

fn open_checked(dir: &Path, ctx: &str) -> FileStore {
    match catch_unwind(AssertUnwindSafe(|| FileStore::open(dir, options()))) {
        Ok(Ok(store)) => store,
        Ok(Err(e)) => panic!("{ctx}: open failed: {e}"),
        Err(_) => panic!("{ctx}: open panicked"),
    }
}

#[test]
fn random_truncations_and_flips_never_panic_or_return_wrong_values() {
    let rounds = env_knob("UNO_DAMAGE_ROUNDS", 150);
    let seed = env_knob("UNO_DAMAGE_SEED", 0xda_0a6e);
    let scratch = tempfile::tempdir().unwrap();
    let base = scratch.path().join("base");
    let known = build_store(&base);
    let lay = layout(&base);
    assert!(
        lay.data_end.len() >= 8,
        "the base store should span several segments"
    );
    let (mut stale_total, mut reported, mut missing_total) = (0, 0, 0);
    for round in 0..rounds {
        let round_seed = seed.wrapping_mul(1_000_003).wrapping_add(round);
        let mut rng = Rng::new(round_seed);
        let dir = scratch.path().join(format!("r{round}"));
        copy_dir(&base, &dir);
        let mut log = Vec::new();
        let dmg = damage(&dir, &lay, &mut rng, &mut log);
        let ctx = format!("UNO_DAMAGE_SEED={seed} round {round} (round seed {round_seed}) damage {log:?}");
        // Decide before opening: recovery rewrites damaged tails and hints.
        let silent: BTreeSet<u64> = dmg
            .iter()
            .filter(|(id, d)| looks_like_a_shorter_log(&dir, **id, d, &lay))
            .map(|(id, _)| *id)
            .collect();

        let store = open_checked(&dir, &ctx);
        let report = store.recovery_report().clone();
        let verify = store.verify(|_, _| {}).unwrap();
        let (seen, stale) = check_reads(&store, &known, &lay, &dmg, &ctx);
        stale_total += stale;
        missing_total += known
            .keys
            .keys()
            .filter(|k| known.current(k).is_some() && !seen.contains_key(*k))
            .count();

        // Changed record bytes are reported: by verify, or by recovery (which cut a torn tail or
        // dropped a segment whose header was unreadable). Only a change that leaves a valid,
        // shorter log behind can go unnoticed.
        let noticed = !verify.is_clean()
            || report.damaged_ranges > 0
            || report.torn_tail_bytes > 0
            || report.damaged_segments > 0;
        for (id, d) in &dmg {
            if (d.records || d.header) && !silent.contains(id) {
                assert!(
                    noticed,
                    "{ctx}: damage in segment {id} ({d:?}) went unreported: {report:?} {verify:?}"
                );
                reported += 1;
            }
            // A segment loaded from its intact hint is not rescanned at open, so only verify can
            // see damage in its records.
            // (A zeroed tail counts too: the hint says records were there.)
            if d.records && !d.hint && !d.header && !d.cut_below_data_end {
                assert!(
                    !verify.is_clean(),
                    "{ctx}: record bytes of segment {id} changed under an intact hint, but verify is clean: {verify:?}"
                );
            }
        }
        assert_eq!(
            report.segments,
            report.from_hints + report.scanned,
            "{ctx}: {report:?}"
        );
        store.close().unwrap();

        // The reads above dropped damaged entries (with tombstones); a second open must agree
        // with what the first one ended with.
        let again = open_checked(&dir, &ctx);
        for key in known.keys.keys() {
            assert_eq!(
                again.get(key).unwrap().as_ref(),
                seen.get(key),
                "{ctx}: key {key:?} changed between the first and the second open"
            );
        }
        again.close().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
    eprintln!(
        "damage test: {rounds} rounds, {reported} damaged segments reported, {missing_total} reads missed, {stale_total} older versions returned where no hint could tell"
    );
}

// ---- directory-level cases ------------------------------------------------------------------

fn small_store(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let store = FileStore::open(dir, options()).unwrap();
    let mut want = BTreeMap::new();
    for i in 0..300u64 {
        let key = format!("key-{i}");
        let value = value_bytes(i, 500 + (i as usize * 7) % 900);
        store.set(&key, &value, None).unwrap();
        want.insert(key, value);
    }
    store.close().unwrap();
    want
}

fn assert_all_there(store: &FileStore, want: &BTreeMap<String, Vec<u8>>) {
    for (key, value) in want {
        assert_eq!(store.get(key).unwrap().as_ref(), Some(value), "key {key:?}");
    }
}

fn hint_of(dir: &Path, n: usize) -> PathBuf {
    files_with_ext(dir, "hint")[n].clone()
}

/// Recomputes the trailer CRC of a hint file after an edit, so only the edited field is wrong.
fn fix_hint_crc(bytes: &mut [u8]) {
    let at = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..at]);
    bytes[at..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damaged_or_stale_hints_fall_back_to_scanning_their_segment() {
    let scratch = tempfile::tempdir().unwrap();
    let base = scratch.path().join("base");
    let want = small_store(&base);
    let hints = files_with_ext(&base, "hint").len();
    assert!(hints >= 4, "need several segments, got {hints}");

    type Edit = fn(&Path);
    let cases: [(&str, Edit); 6] = [
        ("flipped byte", |dir| {
            let p = hint_of(dir, 1);
            let mut b = fs::read(&p).unwrap();
            b[HINT_HEADER_LEN + 5] ^= 0x40;
            fs::write(&p, b).unwrap();
        }),
        ("truncated", |dir| {
            let p = hint_of(dir, 1);
            let b = fs::read(&p).unwrap();
            fs::write(&p, &b[..b.len() / 2]).unwrap();
        }),
        ("empty", |dir| fs::write(hint_of(dir, 1), b"").unwrap()),
        ("another segment's hint", |dir| {
            fs::copy(hint_of(dir, 2), hint_of(dir, 1)).unwrap();
        }),
        ("data end past the file", |dir| {
            let p = hint_of(dir, 1);
            let mut b = fs::read(&p).unwrap();
            b[24..32].copy_from_slice(&(SEGMENT_SIZE * 2).to_le_bytes());
            fix_hint_crc(&mut b);
            fs::write(&p, b).unwrap();
        }),
        ("version 2", |dir| {
            let p = hint_of(dir, 1);
            let mut b = fs::read(&p).unwrap();
            b[8..10].copy_from_slice(&2u16.to_le_bytes());
            fix_hint_crc(&mut b);
            fs::write(&p, b).unwrap();
        }),
    ];
    for (name, edit) in cases {
        let dir = scratch.path().join(name.replace(' ', "-"));
        copy_dir(&base, &dir);
        edit(&dir);
        let store = FileStore::open(&dir, options()).unwrap();
        let r = store.recovery_report().clone();
        assert_eq!((r.scanned, r.from_hints), (1, hints as u64 - 1), "{name}: {r:?}");
        assert_eq!((r.damaged_ranges, r.torn_tail_bytes), (0, 0), "{name}: {r:?}");
        assert_all_there(&store, &want);
        assert!(store.verify(|_, _| {}).unwrap().is_clean(), "{name}");
        store.close().unwrap();
        // The scan rewrote the hint: the next open reads hints only.
        let store = FileStore::open(&dir, options()).unwrap();
        assert_eq!(
            store.recovery_report().scanned,
            0,
            "{name}: {:?}",
            store.recovery_report()
        );
        assert_all_there(&store, &want);
        store.close().unwrap();
    }
}

#[test]
fn record_damage_under_an_intact_hint_is_a_miss_and_stays_one() {
    // An overwritten key whose newest record is damaged must not fall back to the older value,
    // neither now nor after a restart.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let store = FileStore::open(&dir, options()).unwrap();
    store.set("victim", b"old value", None).unwrap();
    for i in 0..200u64 {
        store
            .set(&format!("filler-{i}"), &value_bytes(i, 1000), None)
            .unwrap();
    }
    store.set("victim", b"new value", None).unwrap();
    store.set("after", b"still here", None).unwrap();
    store.close().unwrap();
    let seg = files_with_ext(&dir, "seg").pop().unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(9).position(|w| w == b"new value").unwrap();
    bytes[at] ^= 1;
    fs::write(&seg, bytes).unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(store.recovery_report().scanned, 0);
    assert!(!store.verify(|_, _| {}).unwrap().is_clean());
    assert_eq!(store.get("victim").unwrap(), None);
    assert_eq!(store.stats().corrupt_reads, 1);
    assert_eq!(store.get("after").unwrap().as_deref(), Some(&b"still here"[..]));
    store.close().unwrap();
    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(
        store.get("victim").unwrap(),
        None,
        "the older value came back after a restart"
    );
    store.close().unwrap();
}

#[test]
fn a_directory_with_foreign_files_is_not_ours() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("photos");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("holiday.jpg"), b"not a cache").unwrap();
    match FileStore::open(&dir, options()) {
        Err(Error::NotOurDirectory { path, meta }) => {
            assert_eq!(path, dir);
            assert_eq!(meta, META_FILE);
        }
        other => panic!("expected NotOurDirectory, got {}", outcome(other)),
    }
    assert_eq!(fs::read(dir.join("holiday.jpg")).unwrap(), b"not a cache");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "open left files behind");

    // A file named like our metadata but with other magic bytes is not ours either.
    let dir = scratch.path().join("impostor");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(META_FILE), [b'X'; META_LEN]).unwrap();
    assert!(matches!(
        FileStore::open(&dir, options()),
        Err(Error::NotOurDirectory { .. })
    ));
}

/// An open result in a few words (a store's Debug output is its whole index).
fn outcome(r: uno_cache::Result<FileStore>) -> String {
    match r {
        Ok(store) => format!("Ok (recovery {:?})", store.recovery_report()),
        Err(e) => format!("Err({e:?})"),
    }
}

/// The salt a segment file's header names.
fn salt(bytes: &[u8]) -> u32 {
    decode_segment_header(bytes).unwrap().salt
}

/// A segment header as storage-format.md lays it out: magic, version, flags, salt (zero here), id,
/// reserved, CRC of everything before it.
fn segment_header(version: u16, id: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(b"UNOCSEG\0");
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&[0; 2]);
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(h.len(), SEGMENT_HEADER_LEN);
    h
}

/// A metadata file: magic, version, reserved, segment size, minimum sequence number, CRC.
fn meta_file(version: u16, segment_size: u64) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"UNOCMETA");
    m.extend_from_slice(&version.to_le_bytes());
    m.extend_from_slice(&[0; 6]);
    m.extend_from_slice(&segment_size.to_le_bytes());
    m.extend_from_slice(&0u64.to_le_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(m.len(), META_LEN);
    m
}

#[test]
fn hand_written_version_1_files_open() {
    // The byte layouts in this file are the ones the store writes: a directory made by hand
    // opens, so the version tests below change nothing but the version.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join(META_FILE), meta_file(FORMAT_VERSION, SEGMENT_SIZE)).unwrap();
    let mut seg = segment_header(FORMAT_VERSION, 1);
    seg.resize(SEGMENT_SIZE as usize, 0);
    fs::write(dir.join(format!("{:020}.seg", 1)), seg).unwrap();
    let store = FileStore::open(&dir, options()).unwrap();
    let r = store.recovery_report();
    assert_eq!((r.segments, r.damaged_segments), (1, 0), "{r:?}");
    store.close().unwrap();
}

#[test]
fn a_segment_of_a_newer_format_version_is_refused_not_deleted() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    small_store(&dir);
    let newer = dir.join(format!("{:020}.seg", 1000));
    let mut seg = segment_header(2, 1000);
    seg.resize(SEGMENT_SIZE as usize, 0);
    fs::write(&newer, &seg).unwrap();
    match FileStore::open(&dir, options()) {
        Err(Error::UnsupportedVersion {
            path,
            found,
            supported,
        }) => {
            assert_eq!(path, newer);
            assert_eq!((found, supported), (2, FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedVersion, got {}", outcome(other)),
    }
    assert_eq!(
        fs::read(&newer).unwrap(),
        seg,
        "the newer segment was changed or removed"
    );
}

#[test]
fn metadata_of_a_newer_format_version_is_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    small_store(&dir);
    let meta = dir.join(META_FILE);
    fs::write(&meta, meta_file(2, SEGMENT_SIZE)).unwrap();
    let before: Vec<PathBuf> = files_with_ext(&dir, "seg");
    match FileStore::open(&dir, options()) {
        Err(Error::UnsupportedVersion {
            path,
            found,
            supported,
        }) => {
            assert_eq!(path, meta);
            assert_eq!((found, supported), (2, FORMAT_VERSION));
        }
        other => panic!("expected UnsupportedVersion, got {}", outcome(other)),
    }
    assert_eq!(files_with_ext(&dir, "seg"), before);
}

#[test]
fn damaged_metadata_is_a_clear_error() {
    let scratch = tempfile::tempdir().unwrap();
    let base = scratch.path().join("base");
    small_store(&base);
    let good = fs::read(base.join(META_FILE)).unwrap();
    let mut flipped = good.clone();
    flipped[20] ^= 0x10;
    let mut bad_size = meta_file(FORMAT_VERSION, 12345);
    bad_size.truncate(META_LEN);
    for (name, bytes) in [
        ("flipped", flipped),
        ("truncated", good[..META_LEN - 5].to_vec()),
        ("empty", Vec::new()),
        ("segment size out of range", bad_size),
    ] {
        let dir = scratch.path().join(name.replace(' ', "-"));
        copy_dir(&base, &dir);
        let meta = dir.join(META_FILE);
        fs::write(&meta, &bytes).unwrap();
        match FileStore::open(&dir, options()) {
            Err(e @ Error::CorruptMetadata { .. }) => {
                let Error::CorruptMetadata { path, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(path, &meta, "{name}");
                assert!(e.to_string().contains(META_FILE), "{name}: {e}");
            }
            other => panic!("{name}: expected CorruptMetadata, got {}", outcome(other)),
        }
    }
}

#[test]
fn a_damaged_version_byte_in_the_metadata_is_reported_as_damage_not_as_a_newer_format() {
    // The version field fails the CRC like any other damaged byte: the error must say the file
    // is damaged, not send the user looking for a newer uno-cache.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    small_store(&dir);
    let meta = dir.join(META_FILE);
    let mut bytes = fs::read(&meta).unwrap();
    bytes[8] ^= 0x02; // version 1 -> 3, CRC unchanged
    fs::write(&meta, &bytes).unwrap();
    match FileStore::open(&dir, options()) {
        Err(Error::CorruptMetadata { path, reason }) => {
            assert_eq!(path, meta);
            assert!(reason.contains("checksum"), "{reason}");
        }
        other => panic!("expected CorruptMetadata, got {}", outcome(other)),
    }
    assert_eq!(fs::read(&meta).unwrap(), bytes, "a refused file is not rewritten");
}

#[test]
fn a_damaged_version_byte_in_a_segment_header_is_damage_not_a_newer_format() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    small_store(&dir);
    let seg = files_with_ext(&dir, "seg")[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    bytes[8] ^= 0x02;
    fs::write(&seg, &bytes).unwrap();
    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(store.recovery_report().damaged_segments, 1);
    store.close().unwrap();
}

#[test]
fn verify_reports_records_zeroed_at_the_end_of_a_segment_with_an_intact_hint() {
    // Zeroed trailing records look like a log that ended early, so a scan alone cannot tell; but
    // the hint (and so the index) says the records were there, and verify must say they are gone.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let want = small_store(&dir);
    let seg = files_with_ext(&dir, "seg")[0].clone();
    let mut bytes = fs::read(&seg).unwrap();
    let scan = scan_segment(&bytes, salt(&bytes));
    let last = *scan.records.last().unwrap();
    let (key, start, end) = (
        last.record.key.to_owned(),
        last.offset as usize,
        scan.data_end as usize,
    );
    bytes[start..end].fill(0);
    fs::write(&seg, &bytes).unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(
        store.recovery_report().scanned,
        0,
        "the hint is intact and should be used"
    );
    let verify = store.verify(|_, _| {}).unwrap();
    assert!(
        !verify.is_clean(),
        "verify missed {} zeroed bytes of records: {verify:?}",
        end - start
    );
    assert_eq!(store.get(&key).unwrap(), None);
    for (k, v) in want.iter().filter(|(k, _)| **k != key) {
        assert_eq!(store.get(k).unwrap().as_ref(), Some(v), "key {k:?}");
    }
    store.close().unwrap();
}

#[test]
fn verify_while_writes_go_on_reports_no_damage() {
    // The active segment grows during the scan: records appended after it are not a lost tail.
    use std::sync::atomic::{AtomicU64, Ordering};
    let scratch = tempfile::tempdir().unwrap();
    let store = FileStore::open(scratch.path(), options()).unwrap();
    let written = AtomicU64::new(0);
    const WRITES: u64 = 50_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..WRITES {
                store.set(&format!("k{}", i % 5000), &[7u8; 100], None).unwrap();
                written.store(i + 1, Ordering::Relaxed);
            }
        });
        let mut rounds = 0;
        while written.load(Ordering::Relaxed) < WRITES {
            let report = store.verify(|_, _| {}).unwrap();
            assert!(report.is_clean(), "round {rounds}: {report:?}");
            rounds += 1;
        }
        assert!(rounds > 0);
    });
}

/// A record laid out as storage-format.md says (the store's own encoder is private): CRC32 of the
/// salt then the rest, kind, flags, key length, value length, seq, expiry, key, value. The salt is
/// zero, so the record is valid only in a segment whose salt is zero, as a smuggled one would be.
fn record_bytes(kind: u8, seq: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 4];
    r.push(kind);
    r.push(0);
    r.extend_from_slice(&(key.len() as u16).to_le_bytes());
    r.extend_from_slice(&(value.len() as u32).to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.extend_from_slice(&0u64.to_le_bytes());
    r.extend_from_slice(key);
    r.extend_from_slice(value);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&0u32.to_le_bytes());
    crc.update(&r[4..]);
    r[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    r
}

#[test]
fn a_torn_write_does_not_surface_a_record_hidden_in_its_value() {
    // A cache stores bytes it does not control. If such a value happens to contain a valid record
    // of another key and the write of it is torn by a crash, recovery must cut the tail there,
    // not resynchronise into the value and take the hidden record for a real one.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let store = FileStore::open(&dir, options()).unwrap();
    store.set("victim", b"real value", None).unwrap();
    let hidden = record_bytes(1, 1_000_000, b"victim", b"injected by another key's value");
    let mut carrier = vec![0x42u8; 100];
    carrier.extend_from_slice(&hidden);
    carrier.extend_from_slice(&[0x43; 5000]);
    store.set("carrier", &carrier, None).unwrap();
    store.close().unwrap();

    // The crash: the last segment has no hint yet, and the end of the carrier never reached disk.
    let seg = files_with_ext(&dir, "seg").pop().unwrap();
    fs::remove_file(seg.with_extension("hint")).unwrap();
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes
        .windows(hidden.len())
        .position(|w| w == hidden.as_slice())
        .unwrap()
        + hidden.len();
    let end = scan_segment(&bytes, salt(&bytes)).data_end as usize;
    bytes[at..end].fill(0);
    fs::write(&seg, &bytes).unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(store.get("carrier").unwrap(), None);
    assert_eq!(
        store.get("victim").unwrap().as_deref(),
        Some(&b"real value"[..]),
        "recovery took bytes inside another key's value for a record: {:?}",
        store.recovery_report()
    );
    store.close().unwrap();
}

#[test]
fn compaction_keeps_a_segment_whose_damaged_tombstone_its_hint_still_knows() {
    // The hint of the second segment describes the tombstone of `victim`, whose record is
    // damaged. Compaction cannot read the tombstone to copy it: removing that segment would let
    // the value in the first segment come back at the next open.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let store = FileStore::open(&dir, options()).unwrap();
    store.set("victim", b"old value", None).unwrap();
    let mut i = 0u64;
    while files_with_ext(&dir, "seg").len() < 2 {
        store
            .set(&format!("filler-{i}"), &value_bytes(i, 1000), None)
            .unwrap();
        i += 1;
    }
    assert!(store.delete("victim").unwrap());
    store.close().unwrap();
    let segments = files_with_ext(&dir, "seg");
    assert_eq!(segments.len(), 2, "{segments:?}");
    let mut bytes = fs::read(&segments[1]).unwrap();
    let at = bytes.windows(6).position(|w| w == b"victim").unwrap();
    bytes[at] ^= 0x02;
    fs::write(&segments[1], bytes).unwrap();

    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(store.recovery_report().from_hints, 2);
    assert_eq!(store.get("victim").unwrap(), None);
    store.compact().unwrap();
    assert_eq!(store.get("victim").unwrap(), None);
    store.close().unwrap();
    let store = FileStore::open(&dir, options()).unwrap();
    assert_eq!(
        store.get("victim").unwrap(),
        None,
        "the deleted value came back once compaction dropped its damaged tombstone"
    );
    for j in 0..i {
        assert_eq!(
            store.get(&format!("filler-{j}")).unwrap(),
            Some(value_bytes(j, 1000)),
            "filler-{j}"
        );
    }
    store.close().unwrap();
}

#[test]
fn damage_in_the_newest_segment_does_not_cost_the_durable_records_after_it() {
    // Every write below was fsynced before it returned, so a crash cannot have torn the value of
    // `a`: a flipped byte there is damage, and the tombstone after it must still count.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let durable = || options().durability(uno_cache::Durability::EveryWrite);
    let store = FileStore::open(&dir, durable()).unwrap();
    store.set("k", b"old value", None).unwrap();
    store.close().unwrap();
    let store = FileStore::open(&dir, durable()).unwrap();
    store.set("a", &[0x61; 200], None).unwrap();
    assert!(store.delete("k").unwrap());
    // A kill: the newest segment gets no hint, so the next open scans it.
    std::mem::forget(store);
    let seg = files_with_ext(&dir, "seg").pop().unwrap();
    assert!(!seg.with_extension("hint").exists());
    let mut bytes = fs::read(&seg).unwrap();
    let at = bytes.windows(200).position(|w| w == [0x61; 200]).unwrap() + 100;
    bytes[at] ^= 0x01;
    fs::write(&seg, bytes).unwrap();
    // The forgotten store still holds the lock.
    let copy = scratch.path().join("copy");
    copy_dir(&dir, &copy);

    let store = FileStore::open(&copy, durable()).unwrap();
    let r = store.recovery_report().clone();
    assert_eq!(r.damaged_ranges, 1, "{r:?}");
    assert_eq!(store.get("a").unwrap(), None);
    assert_eq!(
        store.get("k").unwrap(),
        None,
        "the delete after the damaged record was cut away: {r:?}"
    );
    store.close().unwrap();
    let store = FileStore::open(&copy, durable()).unwrap();
    assert_eq!(store.get("k").unwrap(), None);
    store.close().unwrap();
}
