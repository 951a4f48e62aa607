//! Damaged files: a store with known contents is closed, then copies of its directory get
//! truncated segment and hint files and flipped or zeroed bytes, in many seeded rounds. Opening
//! must never panic or fail (only a damaged metadata file may fail, with a clear error), a read
//! returns the value written or a miss — never another key's value, never garbage — and damage in
//! record bytes shows up in `verify` or the recovery report.
//!
//! The directory-level cases, one by one, are in `tests/damaged_directories.rs`.
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
use std::path::Path;
use std::time::Duration;

use common::{copy_dir, env_knob, files_with_ext, segment_salt, small_segments, value_bytes, Rng};
use uno_cache::__fuzz::scan_segment;
use uno_cache::FileStore;

/// Byte layout constants, from `src/local/file/format.rs` (storage-format.md).
const SEGMENT_HEADER_LEN: usize = 32;

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
    let store = FileStore::open(dir, small_segments()).unwrap();
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
        let scan = scan_segment(&bytes, segment_salt(&bytes));
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
        // intact hint names it even when the segment's header is damaged or the file was cut
        // short of the records it names (the hint is kept as the segment's lost keys).
        let seg = lay.newest_in[key];
        let d = damage.get(&seg).cloned().unwrap_or_default();
        let hint_was_usable = !d.hint;
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
    match catch_unwind(AssertUnwindSafe(|| FileStore::open(dir, small_segments()))) {
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

#[test]
fn bad_bytes_at_the_end_of_a_newest_segment_that_has_a_hint_are_damage_not_a_torn_tail() {
    // A segment is fsynced before its hint is written, so a crash never tears one that has a
    // hint file: with the hint damaged too (the segment scanned), its bad last record was
    // reported as the torn tail of a crash, and `verify` passed.
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let store = FileStore::open(&dir, small_segments()).unwrap();
    for i in 0..100u64 {
        store.set(&format!("k{i}"), &value_bytes(i, 2000), None).unwrap();
    }
    store.close().unwrap();
    let newest = files_with_ext(&dir, "seg").pop().unwrap();
    let hint = newest.with_extension("hint");
    let mut bytes = fs::read(&hint).expect("close writes the newest segment's hint");
    bytes[40] ^= 0x01;
    fs::write(&hint, &bytes).unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    fs::write(&newest, &bytes).unwrap();

    let store = FileStore::open(&dir, small_segments()).unwrap();
    let report = store.recovery_report().clone();
    assert_eq!(report.scanned, 1, "{report:?}");
    assert_eq!(
        (report.damaged_ranges, report.torn_tail_bytes),
        (1, 0),
        "{report:?}"
    );
    assert_eq!(store.get("k99").unwrap(), None);
    assert_eq!(store.get("k98").unwrap(), Some(value_bytes(98, 2000)));
}
