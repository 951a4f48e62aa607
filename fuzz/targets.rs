// The logic of the fuzz targets, written once and `include!`d twice: by `fuzz/fuzz_targets/*.rs`
// (libFuzzer through cargo-fuzz, which needs nightly) and by `tests/fuzz_seeds.rs`, which runs it
// over the seed files in `fuzz/seeds/<target>/` and deterministic mutations of them on stable, so
// CI exercises the same checks.
//
// No target may panic on any input; where a result can be checked against the bytes (a returned
// value or op really is a record with a valid checksum, a log's records are all found), it is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::sync::Arc;

use uno_cache::__fuzz::{
    decode_hint, decode_meta, decode_record, decode_segment_header, scan_segment, Decoded,
};
use uno_cache::replay::{ReplayAction, ReplayOp, ReplayOptions, ReplayQueue};
use uno_cache::{CacheConfig, CacheManager, Error, FileStore, FileStoreOptions, LocalKind, ManualClock};

/// Byte layout, from storage-format.md (`src/local/file/format.rs`).
pub const SEGMENT_HEADER_LEN: usize = 32;
pub const RECORD_HEADER_LEN: usize = 28;
pub const HINT_HEADER_LEN: usize = 32;
pub const HINT_ENTRY_LEN: usize = 28;
pub const SEGMENT_SIZE: u64 = 64 * 1024;
/// The clock of every store the targets open, so TTLs in the input behave the same every run.
pub const NOW_MS: u64 = 1_700_000_000_000;
/// The salt of every segment the encoders below write (any value works; it is in the header).
pub const SALT: u32 = 0x7a11_5eed;

/// The salt a segment file's header names, or [`SALT`] if the header does not decode.
pub fn salt_of(file: &[u8]) -> u32 {
    decode_segment_header(file).map_or(SALT, |h| h.salt)
}

// ---- encoders (for seeds and fix-ups) ---------------------------------------------------------

/// One record: CRC32 (over the segment salt, then everything after the CRC), kind, flags, key length, value length,
/// sequence number, expiry, key, value.
pub fn encode_record(kind: u8, seq: u64, expires_at_ms: u64, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    fix_record_crc(&mut out);
    out
}

/// Rewrites the CRC of the record at the start of `rec` (which holds exactly that record).
fn fix_record_crc(rec: &mut [u8]) {
    if rec.len() >= 4 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&SALT.to_le_bytes());
        hasher.update(rec.get(4..).unwrap_or_default());
        let crc = hasher.finalize();
        if let Some(slot) = rec.get_mut(..4) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
    }
}

pub fn segment_header(id: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(SEGMENT_HEADER_LEN);
    h.extend_from_slice(b"UNOCSEG\0");
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&[0; 2]);
    h.extend_from_slice(&SALT.to_le_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

pub fn meta_file(segment_size: u64, min_seq: u64) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"UNOCMETA");
    m.extend_from_slice(&1u16.to_le_bytes());
    m.extend_from_slice(&[0; 6]);
    m.extend_from_slice(&segment_size.to_le_bytes());
    m.extend_from_slice(&min_seq.to_le_bytes());
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    m
}

/// A hint file around `entries` (whole entries only): header, entries, count, CRC.
pub fn hint_file(segment_id: u64, data_end: u64, entries: &[u8]) -> Vec<u8> {
    let (count, used) = count_hint_entries(entries);
    let mut h = Vec::new();
    h.extend_from_slice(b"UNOCHINT");
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&[0; 6]);
    h.extend_from_slice(&segment_id.to_le_bytes());
    h.extend_from_slice(&data_end.to_le_bytes());
    h.extend_from_slice(entries.get(..used).unwrap_or_default());
    h.extend_from_slice(&count.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// One hint entry: kind, reserved, key length, offset, length, sequence number, expiry, key.
pub fn hint_entry(kind: u8, key: &[u8], offset: u32, len: u32, seq: u64, expires_at_ms: u64) -> Vec<u8> {
    let mut e = vec![kind, 0];
    e.extend_from_slice(&(key.len() as u16).to_le_bytes());
    e.extend_from_slice(&offset.to_le_bytes());
    e.extend_from_slice(&len.to_le_bytes());
    e.extend_from_slice(&seq.to_le_bytes());
    e.extend_from_slice(&expires_at_ms.to_le_bytes());
    e.extend_from_slice(key);
    e
}

fn count_hint_entries(entries: &[u8]) -> (u32, usize) {
    let (mut count, mut at) = (0u32, 0usize);
    while let Some(e) = entries.get(at..at + HINT_ENTRY_LEN) {
        let key_len = usize::from(u16::from_le_bytes([e[2], e[3]]));
        if at + HINT_ENTRY_LEN + key_len > entries.len() {
            break;
        }
        at += HINT_ENTRY_LEN + key_len;
        count += 1;
    }
    (count, at)
}

/// Walks `body` as back-to-back records from its start and gives each a valid CRC, stopping at
/// the first header whose lengths do not fit: the fuzzer then explores the fields behind the
/// checksum instead of the checksum.
fn fix_record_crcs(body: &mut [u8]) {
    let mut at = 0;
    while let Some(h) = body.get(at..at + RECORD_HEADER_LEN) {
        let key_len = usize::from(u16::from_le_bytes([h[6], h[7]]));
        let value_len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let len = RECORD_HEADER_LEN + key_len + value_len;
        let Some(rec) = body.get_mut(at..at + len) else {
            break;
        };
        if rec.iter().all(|&b| b == 0) {
            break;
        }
        fix_record_crc(rec);
        at += len;
    }
}

// ---- target: decode_record --------------------------------------------------------------------

/// `decode_record`, `scan_segment`, `decode_hint` and `decode_meta` on arbitrary bytes: no panic,
/// and a scan's results are consistent with the bytes.
pub fn decode_record_target(data: &[u8]) {
    let salt = salt_of(data);
    match decode_record(data, salt) {
        Decoded::Record(r, len) => {
            assert_eq!(len, RECORD_HEADER_LEN + r.key.len() + r.value.len());
            assert!(len <= data.len() && !r.key.is_empty());
            assert_eq!(decode_record(&data[..len], salt), Decoded::Record(r, len));
        }
        Decoded::End => assert!(data.iter().take(RECORD_HEADER_LEN).all(|&b| b == 0)),
        Decoded::Incomplete | Decoded::Invalid(_) => {}
    }

    let scan = scan_segment(data, salt);
    let header = SEGMENT_HEADER_LEN as u64;
    let mut end = header;
    for rec in &scan.records {
        assert!(rec.offset >= end, "records overlap or go backwards");
        let at = rec.offset as usize;
        match decode_record(&data[at..], salt) {
            Decoded::Record(r, len) => {
                assert_eq!((r, len), (rec.record, rec.len as usize));
            }
            other => panic!("scan reported a record at {at} that does not decode: {other:?}"),
        }
        end = rec.offset + u64::from(rec.len);
    }
    assert_eq!(scan.data_end, end, "data_end is not the end of the last record");
    let mut prev = header;
    for range in &scan.damaged {
        assert!(range.start >= prev && range.start < range.end && range.end <= data.len() as u64);
        prev = range.end;
    }
    if let Some(torn) = &scan.torn_tail {
        assert_eq!(torn.start, scan.data_end);
        assert!(torn.start <= torn.end && torn.end <= data.len().max(SEGMENT_HEADER_LEN + 1) as u64);
    }

    if let Ok(hint) = decode_hint(data) {
        for e in &hint.entries {
            assert!(!e.key.is_empty());
        }
    }
    if let Ok(meta) = decode_meta(data) {
        assert!(meta.segment_size >= SEGMENT_SIZE);
    }
}

// ---- target: recover_dir ----------------------------------------------------------------------

/// Input layout of `recover_dir`:
///
/// | bytes | meaning |
/// |-------|---------|
/// | 0     | flags, below |
/// | 1     | segment id: `1 + b % 8`, or for `b >= 250` an id near `u64::MAX` |
/// | 2..   | up to three chunks, each a `u16` LE length then that many bytes: segment A, hint A, segment B |
///
/// Flags: bit 0 puts a valid segment header in front of each segment chunk (else the chunk is
/// the whole file); bit 1 gives every record that parses from the start of a segment body a
/// valid CRC; bit 2 writes hint A; bit 3 wraps hint A in a valid header and trailer (else the
/// chunk is the whole file); bit 4 writes segment B (id A + 1); bit 5 pads segments with zeros
/// to the segment size, as the store preallocates them.
pub mod flags {
    pub const HEADER: u8 = 1;
    pub const FIX_CRC: u8 = 2;
    pub const HINT: u8 = 4;
    pub const WRAP_HINT: u8 = 8;
    pub const SECOND: u8 = 16;
    pub const PAD: u8 = 32;
}

/// Builds a `recover_dir` input from its parts (the inverse of the parsing in the target).
pub fn recover_dir_input(flag_bits: u8, id_byte: u8, seg_a: &[u8], hint_a: &[u8], seg_b: &[u8]) -> Vec<u8> {
    let mut out = vec![flag_bits, id_byte];
    for chunk in [seg_a, hint_a, seg_b] {
        out.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        let b = self.0.first().copied().unwrap_or(0);
        self.0 = self.0.get(1..).unwrap_or_default();
        b
    }

    fn chunk(&mut self) -> &'a [u8] {
        let len = usize::from(u16::from_le_bytes([self.byte(), self.byte()]));
        let len = len.min(self.0.len());
        let (chunk, rest) = self.0.split_at(len);
        self.0 = rest;
        chunk
    }
}

fn segment_file(flag_bits: u8, id: u64, chunk: &[u8]) -> Vec<u8> {
    let mut body = chunk.to_vec();
    if flag_bits & flags::FIX_CRC != 0 {
        let start = if flag_bits & flags::HEADER != 0 {
            0
        } else {
            SEGMENT_HEADER_LEN.min(body.len())
        };
        fix_record_crcs(&mut body[start..]);
    }
    let mut file = if flag_bits & flags::HEADER != 0 {
        segment_header(id)
    } else {
        Vec::new()
    };
    file.extend_from_slice(&body);
    if flag_bits & flags::PAD != 0 && (file.len() as u64) < SEGMENT_SIZE {
        file.resize(SEGMENT_SIZE as usize, 0);
    }
    file
}

/// Every (key, value) of a record with a valid checksum at any offset of any segment file: the
/// most a store could ever legitimately return from these bytes.
fn valid_records(files: &[Vec<u8>]) -> BTreeMap<String, BTreeSet<Vec<u8>>> {
    let mut out: BTreeMap<String, BTreeSet<Vec<u8>>> = BTreeMap::new();
    for file in files {
        let salt = salt_of(file);
        for at in SEGMENT_HEADER_LEN..file.len() {
            let rest = &file[at..];
            if !matches!(rest.get(4), Some(1)) || rest.get(5) != Some(&0) {
                continue;
            }
            if let Decoded::Record(r, _) = decode_record(rest, salt) {
                out.entry(r.key.to_owned()).or_default().insert(r.value.to_vec());
            }
        }
    }
    out
}

fn store_options(clock: &ManualClock) -> FileStoreOptions {
    FileStoreOptions::default()
        .segment_size(SEGMENT_SIZE)
        .max_size_mb(1)
        .background_threads(false)
        .clock(Arc::new(clock.clone()))
}

/// Reads every key the store lists and every key the input names; each value must be one that
/// a valid record holds.
fn read_all(store: &FileStore, names: &BTreeSet<String>, allowed: &BTreeMap<String, BTreeSet<Vec<u8>>>) {
    let listed: BTreeSet<String> = store.keys().into_iter().collect();
    for key in listed.iter().chain(names) {
        if let Some(entry) = store.get_entry(key).unwrap_or_default() {
            assert!(
                allowed
                    .get(key)
                    .is_some_and(|values| values.contains(&entry.value)),
                "key {key:?} returned {} bytes that no valid record holds",
                entry.value.len()
            );
        }
    }
}

/// Writes the input's segment and hint files next to a valid metadata file, opens the store,
/// reads everything, writes, compacts, closes, reopens and reads again. No step may panic, and
/// open may fail only with `UnsupportedVersion` (a segment header with a valid checksum and
/// another version), or with an I/O error when the segment ids are used up.
pub fn recover_dir_target(data: &[u8]) {
    let mut cur = Cursor(data);
    let flag_bits = cur.byte();
    let id_byte = cur.byte();
    let id_a = match id_byte {
        0..=249 => 1 + u64::from(id_byte % 8),
        b => u64::MAX - u64::from(255 - b),
    };
    let id_b = id_a.checked_add(1).unwrap_or(1);
    let (chunk_a, chunk_hint, chunk_b) = (cur.chunk(), cur.chunk(), cur.chunk());

    let Ok(tmp) = tempfile::tempdir() else { return };
    let dir = tmp.path();
    let write = |name: String, bytes: &[u8]| fs::write(dir.join(name), bytes).map_err(|_| ());
    let seg_a = segment_file(flag_bits, id_a, chunk_a);
    let mut segments = vec![seg_a.clone()];
    let mut names: BTreeSet<String> = BTreeSet::new();
    let ok = (|| {
        write("uno-cache.meta".into(), &meta_file(SEGMENT_SIZE, 0))?;
        write(format!("{id_a:020}.seg"), &seg_a)?;
        if flag_bits & flags::HINT != 0 {
            let hint = if flag_bits & flags::WRAP_HINT != 0 {
                hint_file(id_a, seg_a.len() as u64, chunk_hint)
            } else {
                chunk_hint.to_vec()
            };
            if let Ok(h) = decode_hint(&hint) {
                names.extend(h.entries.iter().map(|e| e.key.to_string()));
            }
            write(format!("{id_a:020}.hint"), &hint)?;
        }
        if flag_bits & flags::SECOND != 0 && id_b != id_a {
            let seg_b = segment_file(flag_bits, id_b, chunk_b);
            write(format!("{id_b:020}.seg"), &seg_b)?;
            segments.push(seg_b);
        }
        Ok::<(), ()>(())
    })();
    if ok.is_err() {
        return;
    }
    let mut allowed = valid_records(&segments);
    names.extend(allowed.keys().cloned());

    let clock = ManualClock::new(NOW_MS);
    // Segment ids at the very end of the range leave no id for a new segment: the store must fail
    // cleanly (an I/O error creating it), not overflow.
    let ids_exhausted = id_a >= u64::MAX - 8;
    let acceptable = |e: &Error| {
        matches!(e, Error::UnsupportedVersion { .. }) || (ids_exhausted && matches!(e, Error::Io { .. }))
    };
    let store = match FileStore::open(dir, store_options(&clock)) {
        Ok(store) => store,
        Err(e) if acceptable(&e) => return,
        Err(e) => panic!("open failed on a directory with a valid metadata file: {e}"),
    };
    read_all(&store, &names, &allowed);
    let _ = store.verify(|_, _| {});
    let _ = store.stats();

    // Write paths on top of whatever was recovered.
    let new_value = b"written after recovery".to_vec();
    match store.set("fuzz:new", &new_value, None) {
        Ok(()) => {}
        Err(e) if ids_exhausted && matches!(e, Error::Io { .. } | Error::WritesDisabled { .. }) => return,
        // A sequence number past any a store reaches (2^63) opens the store for reads only.
        Err(Error::WritesDisabled { cause, .. }) if cause.contains("sequence number") => return,
        Err(e) => panic!("set after recovery failed: {e}"),
    }
    assert_eq!(store.get("fuzz:new").unwrap_or_default(), Some(new_value.clone()));
    allowed
        .entry("fuzz:new".into())
        .or_default()
        .insert(new_value.clone());
    names.insert("fuzz:new".into());
    if let Some(victim) = store.keys().into_iter().find(|k| k != "fuzz:new") {
        if store.delete(&victim).is_ok() {
            assert_eq!(
                store.get(&victim).unwrap_or_default(),
                None,
                "a deleted key is still there"
            );
        }
    }
    clock.advance(std::time::Duration::from_secs(3600));
    let _ = store.compact();
    read_all(&store, &names, &allowed);
    store.close().unwrap_or_else(|e| panic!("close failed: {e}"));

    let store = match FileStore::open(dir, store_options(&clock)) {
        Ok(store) => store,
        Err(e) if acceptable(&e) => return,
        Err(e) => panic!("reopen failed: {e}"),
    };
    read_all(&store, &names, &allowed);
    assert_eq!(store.get("fuzz:new").unwrap_or_default(), Some(new_value));
    let _ = store.close();
}

// ---- target: replay_log (in replay_targets.rs) ------------------------------------------------

include!("replay_targets.rs");

// ---- target: store_ops (in store_targets.rs) --------------------------------------------------

include!("store_targets.rs");

// ---- target: config_toml ----------------------------------------------------------------------

/// Arbitrary text through `CacheConfig::from_toml_str`: no panic, and a config it accepts
/// validates again. One with a memory or file L1 and nothing remote builds a manager in a temp
/// directory, which must take a write and read it back.
pub fn config_toml_target(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = CacheConfig::from_toml_str(text) else {
        return;
    };
    config
        .validate()
        .unwrap_or_else(|e| panic!("an accepted config does not validate: {e}"));
    let local_only = !config.distributed.enabled && !config.invalidation.enabled;
    if !local_only || !matches!(config.local.kind, LocalKind::Memory | LocalKind::File) {
        return;
    }
    let Ok(tmp) = tempfile::tempdir() else { return };
    config.local.path = Some(tmp.path().join("l1"));
    let manager = match CacheManager::builder().config(config).build() {
        Ok(manager) => manager,
        Err(Error::Config { .. } | Error::FeatureDisabled { .. }) => return,
        Err(e) => panic!("a valid local-only config failed to build: {e}"),
    };
    manager
        .set("fuzz:key", &42u32, None)
        .unwrap_or_else(|e| panic!("set failed: {e}"));
    let _ = manager.get::<u32>("fuzz:key");
}
