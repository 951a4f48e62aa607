//! Helpers shared by the crash, damage and fuzz-seed tests: deterministic randomness, values that
//! can be regenerated from their id, and directory copies.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

/// SplitMix64: a tiny, fixed, seedable generator, so a failing seed replays identically on any
/// machine and with any version of `rand`.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..hi` (`lo < hi`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability `percent / 100`.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The value written by write number `id`: `len` bytes that no other id produces (for `len >= 8`
/// the first eight bytes are the id itself), so a read can be traced back to the write it came
/// from, and garbage or another key's value is never mistaken for it.
pub fn value_bytes(id: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&id.to_le_bytes());
    let mut rng = Rng::new(id.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ len as u64);
    while out.len() < len {
        out.extend_from_slice(&rng.next_u64().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Copies the files of a store directory (flat, no subdirectories) into `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for entry in fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
}

/// Reads a `u64` knob from the environment, with a default.
pub fn env_knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a non-negative integer")),
        Err(_) => default,
    }
}

/// Paths of the files in `dir` whose name ends with `.{ext}`, sorted.
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    out.sort();
    out
}

/// The salt a segment file's header names (from the header the file starts with).
pub fn segment_salt(bytes: &[u8]) -> u32 {
    uno_cache::__fuzz::decode_segment_header(bytes).unwrap().salt
}

/// Segment size of the damage and lost-segment tests: small, so a few hundred values span
/// many segments.
pub const SEGMENT_SIZE: u64 = 64 * 1024;

/// A store of [`SEGMENT_SIZE`] segments, with no background thread: every write and open of
/// a test happens where the test says.
pub fn small_segments() -> uno_cache::FileStoreOptions {
    uno_cache::FileStoreOptions::default()
        .segment_size(SEGMENT_SIZE)
        .max_size_mb(64)
        .background_threads(false)
}
