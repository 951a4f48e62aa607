// The store_ops target, `include!`d by targets.rs (so in the same module, with its imports and
// constants): kept apart so that each file stays one size a reader takes in at once.

use uno_cache::{Clock, Durability, Entry, Storage};

// ---- target: store_ops ------------------------------------------------------------------------
//
// A sequence of operations on one `FileStore`, checked against a model of what a cache may
// answer: a read gives the value the key was last written with, or nothing (a cache may drop a
// value: the size bound evicts, a refused fill is held in RAM only for a while) — never a deleted,
// overwritten or expired value, never other bytes or another expiry.

/// Keys the operations name; an input picks one with a byte, modulo this.
pub const STORE_KEYS: usize = 16;
/// The segment size of every store the target opens: the smallest, so that a few KiB of values
/// fill segments, roll them and (with [`STORE_MAX_MB`]) reach the size bound.
pub const STORE_SEGMENT_SIZE: u64 = 64 * 1024;
/// The size bound: sixteen segments.
pub const STORE_MAX_MB: u64 = 1;
/// The keep window of expired values (see [`store_flags::KEEP_EXPIRED`]).
pub const STORE_KEEP_EXPIRED_MS: u64 = 3_600_000;
/// At most this many operations of an input are run, so one input cannot take minutes.
pub const STORE_MAX_OPS: usize = 600;

/// Key `i` of the target: short ones, two long ones, one of [`uno_cache::MAX_KEY_LEN`] bytes,
/// one not ASCII.
pub fn store_key(i: usize) -> String {
    match i % STORE_KEYS {
        12 => format!("long/12/{}", "x".repeat(300)),
        13 => format!("long/13/{}", "y".repeat(1000)),
        14 => "z".repeat(uno_cache::MAX_KEY_LEN),
        15 => "ключ-15".to_owned(),
        i => format!("k{i}"),
    }
}

/// The largest value key `i` may be given: a record of it fills an empty segment.
pub fn store_max_value_len(key: usize) -> usize {
    STORE_SEGMENT_SIZE as usize - SEGMENT_HEADER_LEN - RECORD_HEADER_LEN - store_key(key).len()
}

/// In [`STORE_VALUE_LENS`]: the key's largest value length (see [`store_max_value_len`]).
pub const STORE_LEN_MAX: u32 = u32::MAX;
/// In [`STORE_VALUE_LENS`]: one byte less than the key's largest value length.
pub const STORE_LEN_BELOW_MAX: u32 = u32::MAX - 1;
/// In [`STORE_VALUE_LENS`]: one byte more than the key's largest value length (refused).
pub const STORE_LEN_PAST_MAX: u32 = u32::MAX - 2;

/// Value lengths a `len` byte picks, modulo the table's length.
pub const STORE_VALUE_LENS: [u32; 16] = [
    0,
    1,
    7,
    8,
    100,
    255,
    1000,
    2000,
    4000,
    4096,
    8000,
    16_000,
    30_000,
    STORE_LEN_BELOW_MAX,
    STORE_LEN_MAX,
    STORE_LEN_PAST_MAX,
];

fn store_value_len(key: usize, len_byte: u8) -> usize {
    let max = store_max_value_len(key);
    match STORE_VALUE_LENS[usize::from(len_byte) % STORE_VALUE_LENS.len()] {
        STORE_LEN_MAX => max,
        STORE_LEN_BELOW_MAX => max - 1,
        STORE_LEN_PAST_MAX => max + 1,
        l => l as usize,
    }
}

/// TTLs a `ttl` byte picks, modulo the table's length: none, zero (refused), under a
/// millisecond (rounded up to one), and up to an hour.
pub const STORE_TTLS: [Option<std::time::Duration>; 8] = [
    None,
    None,
    Some(std::time::Duration::ZERO),
    Some(std::time::Duration::from_micros(500)),
    Some(std::time::Duration::from_millis(1000)),
    Some(std::time::Duration::from_secs(5)),
    Some(std::time::Duration::from_secs(60)),
    Some(std::time::Duration::from_secs(3600)),
];

/// How far an `Advance` byte moves the clock forward, modulo the table's length, in ms.
pub const STORE_ADVANCES_MS: [u64; 8] = [0, 1, 999, 1000, 5000, 60_000, 3_600_000, 86_400_000];
/// How far a `Rewind` byte moves the clock back, modulo the table's length, in ms.
pub const STORE_REWINDS_MS: [u64; 4] = [1, 1000, 60_000, 3_600_000];
/// Value lengths of a `Burst`'s writes, by its `len` byte modulo the table's length.
pub const STORE_BURST_LENS: [usize; 4] = [500, 2000, 4000, 8000];

/// One operation of a `store_ops` input. Bytes name keys, lengths and durations through the
/// tables above, so that every byte value means something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreOp {
    /// `set` of a value of the given length, with the given TTL.
    Set { key: u8, len: u8, ttl: u8 },
    /// `get_entry`, checked against the model.
    Get { key: u8 },
    /// `delete`.
    Delete { key: u8 },
    /// `flush`.
    Flush,
    /// `compact`.
    Compact,
    /// `close`, then open again with the same options; every key is then read.
    Reopen,
    /// Moves the clock forward.
    Advance { by: u8 },
    /// Moves the clock back.
    Rewind { by: u8 },
    /// `count % 64 + 1` sets of values of [`STORE_BURST_LENS`] bytes, to keys from `key` on:
    /// enough writes to roll segments, reach the size bound and evict.
    Burst { key: u8, count: u8, len: u8, ttl: u8 },
    /// One `set_each` of up to four items (a key may repeat).
    SetEach { items: Vec<(u8, u8, u8)> },
    /// `fill`, which the store may refuse.
    Fill { key: u8, len: u8, ttl: u8 },
    /// Reads every key, checks `keys()` and `verify()`.
    CheckAll,
    /// `clear`.
    Clear,
}

/// Input flags (the first byte): bit 0 fsyncs every write; bits 1–2 pick the compaction's
/// `min_live_ratio`; bit 3 keeps expired entries an hour (for `get_stale`; `get` must still
/// miss them); bit 4 picks another hash seed.
pub mod store_flags {
    pub const EVERY_WRITE: u8 = 1;
    pub const RATIO_SHIFT: u8 = 1;
    pub const KEEP_EXPIRED: u8 = 8;
    pub const OTHER_SEED: u8 = 16;
}

const STORE_OP_KINDS: u8 = 13;

/// Decodes a `store_ops` input: the flags byte, then operations, each an opcode byte (modulo
/// the number of kinds, in the order of [`StoreOp`]) and its argument bytes. Missing bytes
/// read as zero.
pub fn decode_store_ops(data: &[u8]) -> (u8, Vec<StoreOp>) {
    let mut cur = Cursor(data);
    let flag_bits = cur.byte();
    let mut ops = Vec::new();
    while !cur.0.is_empty() && ops.len() < STORE_MAX_OPS {
        let op = match cur.byte() % STORE_OP_KINDS {
            0 => StoreOp::Set {
                key: cur.byte(),
                len: cur.byte(),
                ttl: cur.byte(),
            },
            1 => StoreOp::Get { key: cur.byte() },
            2 => StoreOp::Delete { key: cur.byte() },
            3 => StoreOp::Flush,
            4 => StoreOp::Compact,
            5 => StoreOp::Reopen,
            6 => StoreOp::Advance { by: cur.byte() },
            7 => StoreOp::Rewind { by: cur.byte() },
            8 => StoreOp::Burst {
                key: cur.byte(),
                count: cur.byte(),
                len: cur.byte(),
                ttl: cur.byte(),
            },
            9 => {
                let n = usize::from(cur.byte() % 4) + 1;
                let items = (0..n).map(|_| (cur.byte(), cur.byte(), cur.byte())).collect();
                StoreOp::SetEach { items }
            }
            10 => StoreOp::Fill {
                key: cur.byte(),
                len: cur.byte(),
                ttl: cur.byte(),
            },
            11 => StoreOp::CheckAll,
            _ => StoreOp::Clear,
        };
        ops.push(op);
    }
    (flag_bits, ops)
}

/// Encodes a `store_ops` input (the inverse of [`decode_store_ops`]), for seeds.
pub fn encode_store_ops(flag_bits: u8, ops: &[StoreOp]) -> Vec<u8> {
    let mut out = vec![flag_bits];
    for op in ops {
        match op {
            StoreOp::Set { key, len, ttl } => out.extend([0, *key, *len, *ttl]),
            StoreOp::Get { key } => out.extend([1, *key]),
            StoreOp::Delete { key } => out.extend([2, *key]),
            StoreOp::Flush => out.push(3),
            StoreOp::Compact => out.push(4),
            StoreOp::Reopen => out.push(5),
            StoreOp::Advance { by } => out.extend([6, *by]),
            StoreOp::Rewind { by } => out.extend([7, *by]),
            StoreOp::Burst { key, count, len, ttl } => out.extend([8, *key, *count, *len, *ttl]),
            StoreOp::SetEach { items } => {
                out.push(9);
                out.push((items.len().clamp(1, 4) - 1) as u8);
                for (key, len, ttl) in items.iter().take(4) {
                    out.extend([*key, *len, *ttl]);
                }
            }
            StoreOp::Fill { key, len, ttl } => out.extend([10, *key, *len, *ttl]),
            StoreOp::CheckAll => out.push(11),
            StoreOp::Clear => out.push(12),
        }
    }
    out
}

/// A value of `len` bytes that names the write that made it (`serial`), so that an older value
/// of the same length reads as different bytes (from 8 bytes on).
fn store_value(serial: u64, len: usize) -> Vec<u8> {
    let tag = serial.to_le_bytes();
    (0..len)
        .map(|i| {
            tag.get(i)
                .copied()
                .unwrap_or((serial as u8).wrapping_add(i as u8))
        })
        .collect()
}

/// What a read of one key may give: its value (with the expiry written with it, Unix ms, 0 =
/// never) if not yet expired, or a value of a refused fill, held in RAM for a while, or nothing.
/// It may give nothing for a live value only once the store could have dropped it: an eviction
/// since the write, or an expiry undone by moving the clock back.
#[derive(Debug, Clone, Default)]
struct KeyModel {
    value: Option<(Vec<u8>, u64)>,
    held: Vec<(Vec<u8>, u64)>,
    /// The store's eviction count (summed over opens) when the key was last written.
    evictions_at_write: u64,
    /// The clock went back after the value expired: the value may read as live again, or may
    /// have been swept while it was expired.
    swept_maybe: bool,
}

impl KeyModel {
    fn allowed(&self) -> impl Iterator<Item = &(Vec<u8>, u64)> {
        self.value.iter().chain(&self.held)
    }
}

fn live_at(expires: u64, now: u64) -> bool {
    expires == 0 || expires > now
}

/// Whether a value expiring at `expires` is live or expired less than `keep` ms ago at `now`.
fn kept_at(expires: u64, keep: u64, now: u64) -> bool {
    expires == 0 || expires.saturating_add(keep) > now
}

fn store_options_for(flag_bits: u8, clock: &ManualClock) -> FileStoreOptions {
    let ratio = [0.0, 0.5, 0.9, 1.0][usize::from((flag_bits >> store_flags::RATIO_SHIFT) & 3)];
    let mut options = FileStoreOptions::default()
        .segment_size(STORE_SEGMENT_SIZE)
        .max_size_mb(STORE_MAX_MB)
        .background_threads(false)
        .min_live_ratio(ratio)
        .hash_seed(1 + u64::from(flag_bits & store_flags::OTHER_SEED != 0))
        .clock(Arc::new(clock.clone()));
    if flag_bits & store_flags::EVERY_WRITE != 0 {
        options = options.durability(Durability::EveryWrite);
    }
    if flag_bits & store_flags::KEEP_EXPIRED != 0 {
        options = options.keep_expired(std::time::Duration::from_millis(STORE_KEEP_EXPIRED_MS));
    }
    options
}

fn expiry_of(entry: &Entry) -> u64 {
    entry.expires_at.map_or(0, |t| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    })
}

/// The expiry the store gives a value written at `now` with `ttl` (sub-ms TTLs round up).
fn expiry_for(now: u64, ttl: Option<std::time::Duration>) -> u64 {
    ttl.map_or(0, |t| {
        now.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
    })
}

struct StoreRun {
    dir: tempfile::TempDir,
    flag_bits: u8,
    clock: ManualClock,
    store: Option<FileStore>,
    keys: Vec<KeyModel>,
    /// Evictions counted by stores closed before the open one.
    evictions_before: u64,
    /// Numbers the values written, so that each write's bytes differ.
    serial: u64,
    step: usize,
}

impl StoreRun {
    fn store(&self) -> &FileStore {
        match &self.store {
            Some(store) => store,
            None => panic!("step {}: no store open", self.step),
        }
    }

    /// The keep window of expired values, if the input asked for one.
    fn keep_ms(&self) -> Option<u64> {
        (self.flag_bits & store_flags::KEEP_EXPIRED != 0).then_some(STORE_KEEP_EXPIRED_MS)
    }

    fn evictions(&self) -> u64 {
        self.evictions_before + Storage::counters(self.store()).evictions
    }

    fn next_value(&mut self, len: usize) -> Vec<u8> {
        self.serial += 1;
        store_value(self.serial, len)
    }

    fn written(&mut self, key: usize, value: Vec<u8>, expires: u64) {
        let evictions = self.evictions();
        self.keys[key] = KeyModel {
            value: Some((value, expires)),
            held: Vec::new(),
            evictions_at_write: evictions,
            swept_maybe: false,
        };
    }

    /// Reads `key` and checks the answer against the model; returns whether it was found.
    fn check_key(&mut self, key: usize) -> bool {
        let name = store_key(key);
        let now = self.clock.now_ms();
        let step = self.step;
        let got = self
            .store()
            .get_entry(&name)
            .unwrap_or_else(|e| panic!("step {step}: get of key {key} failed: {e}"));
        let contains = self.store().contains(&name);
        let evictions = self.evictions();
        let m = &self.keys[key];
        if let Some(keep) = self.keep_ms() {
            // A stale copy is the key's value, expired less than the keep window ago.
            let stale = self
                .store()
                .get_stale(&name)
                .unwrap_or_else(|e| panic!("step {step}: get_stale of key {key} failed: {e}"));
            if let Some(entry) = stale {
                let exp = expiry_of(&entry);
                assert!(
                    m.allowed()
                        .any(|(v, e)| *v == entry.value && *e == exp && kept_at(*e, keep, now)),
                    "step {step}: get_stale of key {key} gave {} bytes (serial {:?}) expiring at \
                     {exp}, now {now}; the model allows {:?}",
                    entry.value.len(),
                    entry.value.get(..8),
                    m.allowed()
                        .map(|(v, e)| (v.len(), v.get(..8), *e))
                        .collect::<Vec<_>>()
                );
            }
        }
        let Some(entry) = got else {
            let live = m.value.as_ref().filter(|(_, e)| live_at(*e, now));
            assert!(
                live.is_none() || m.swept_maybe || evictions > m.evictions_at_write,
                "step {step}: key {key} is missing, but it holds a live value ({} bytes, expiring \
                 at {}, now {now}) and no eviction ran since its write",
                live.map_or(0, |(v, _)| v.len()),
                live.map_or(0, |(_, e)| *e),
            );
            assert!(
                !contains,
                "step {step}: key {key} missed, but contains() says present"
            );
            return false;
        };
        let exp = expiry_of(&entry);
        let allowed = m
            .allowed()
            .any(|(v, e)| *v == entry.value && *e == exp && live_at(*e, now));
        assert!(
            allowed,
            "step {step}: key {key} read {} bytes (serial {:?}) expiring at {exp}, now {now}; the \
             model allows {:?}",
            entry.value.len(),
            entry.value.get(..8),
            m.allowed()
                .map(|(v, e)| (v.len(), v.get(..8), *e))
                .collect::<Vec<_>>()
        );
        assert!(
            contains,
            "step {step}: key {key} was read, but contains() says absent"
        );
        true
    }

    /// Reads every key; `keys()` must list every key found, and only keys with a value live or
    /// expired within the keep window; `verify()` must find nothing damaged.
    fn check_all(&mut self) {
        let found: Vec<bool> = (0..STORE_KEYS).map(|key| self.check_key(key)).collect();
        let now = self.clock.now_ms();
        let keep = self.keep_ms().unwrap_or(0);
        let step = self.step;
        let listed = self.store().keys();
        for (key, found) in found.iter().enumerate() {
            if *found {
                assert!(
                    listed.contains(&store_key(key)),
                    "step {step}: key {key} was read, but keys() leaves it out"
                );
            }
        }
        for name in listed {
            let Some(key) = (0..STORE_KEYS).find(|&k| store_key(k) == name) else {
                panic!("step {step}: keys() lists {name:?}, which was never written");
            };
            let listable = self.keys[key].allowed().any(|(_, e)| kept_at(*e, keep, now));
            assert!(
                listable,
                "step {step}: keys() lists key {key}, which has no value live or kept expired"
            );
        }
        let report = self
            .store()
            .verify(|_, _| {})
            .unwrap_or_else(|e| panic!("step {step}: verify failed: {e}"));
        assert!(report.is_clean(), "step {step}: verify found damage: {report:?}");
    }

    fn set(&mut self, key: usize, len: usize, ttl_byte: u8) {
        let ttl = STORE_TTLS[usize::from(ttl_byte) % STORE_TTLS.len()];
        let value = self.next_value(len);
        let now = self.clock.now_ms();
        let step = self.step;
        match self.store().set(&store_key(key), &value, ttl) {
            Ok(()) => self.written(key, value, expiry_for(now, ttl)),
            Err(Error::ZeroTtl { .. }) if ttl == Some(std::time::Duration::ZERO) => {}
            Err(Error::ValueTooLarge { .. }) if len > store_max_value_len(key) => {}
            Err(e) => panic!("step {step}: set of key {key} ({len} bytes, ttl {ttl:?}) failed: {e}"),
        }
    }

    fn set_each(&mut self, items: &[(u8, u8, u8)]) {
        let now = self.clock.now_ms();
        let mut batch: Vec<(usize, Vec<u8>, Option<std::time::Duration>)> = Vec::new();
        for &(key, len, ttl) in items {
            let key = usize::from(key) % STORE_KEYS;
            let value = self.next_value(store_value_len(key, len));
            batch.push((key, value, STORE_TTLS[usize::from(ttl) % STORE_TTLS.len()]));
        }
        let names: Vec<String> = batch.iter().map(|(k, _, _)| store_key(*k)).collect();
        let refs: Vec<(&str, &[u8], Option<std::time::Duration>)> = batch
            .iter()
            .zip(&names)
            .map(|((_, v, t), n)| (n.as_str(), v.as_slice(), *t))
            .collect();
        let bad = batch
            .iter()
            .any(|(k, v, t)| *t == Some(std::time::Duration::ZERO) || v.len() > store_max_value_len(*k));
        let step = self.step;
        match self.store().set_each(&refs) {
            Ok(()) => {
                assert!(!bad, "step {step}: set_each took an invalid item");
                // A key given twice keeps its last value.
                for (key, value, ttl) in batch {
                    self.written(key, value, expiry_for(now, ttl));
                }
            }
            Err(Error::ZeroTtl { .. } | Error::ValueTooLarge { .. }) if bad => {}
            Err(e) => panic!("step {step}: set_each failed: {e}"),
        }
    }

    fn fill(&mut self, key: usize, len: usize, ttl_byte: u8) {
        let ttl = STORE_TTLS[usize::from(ttl_byte) % STORE_TTLS.len()];
        let value = self.next_value(len);
        let now = self.clock.now_ms();
        let step = self.step;
        match self.store().fill(&store_key(key), &value, ttl) {
            Ok(true) => self.written(key, value, expiry_for(now, ttl)),
            // Refused: the key keeps its value, and the new one may be held in RAM for a while.
            Ok(false) => self.keys[key].held.push((value, expiry_for(now, ttl))),
            Err(Error::ZeroTtl { .. }) if ttl == Some(std::time::Duration::ZERO) => {}
            Err(Error::ValueTooLarge { .. }) if len > store_max_value_len(key) => {}
            Err(e) => panic!("step {step}: fill of key {key} ({len} bytes, ttl {ttl:?}) failed: {e}"),
        }
    }

    fn delete(&mut self, key: usize) {
        let now = self.clock.now_ms();
        let step = self.step;
        let removed = self
            .store()
            .delete(&store_key(key))
            .unwrap_or_else(|e| panic!("step {step}: delete of key {key} failed: {e}"));
        // A value expired within the keep window counts as removed: a stale copy went.
        let keep = self.keep_ms().unwrap_or(0);
        let m = &mut self.keys[key];
        assert!(
            !removed || m.allowed().any(|(_, e)| kept_at(*e, keep, now)),
            "step {step}: delete of key {key} says it removed a value; the model has none live or kept"
        );
        *m = KeyModel::default();
    }

    fn reopen(&mut self) {
        let step = self.step;
        let Some(store) = self.store.take() else { return };
        self.evictions_before += Storage::counters(&store).evictions;
        store
            .close()
            .unwrap_or_else(|e| panic!("step {step}: close failed: {e}"));
        let store = FileStore::open(self.dir.path(), store_options_for(self.flag_bits, &self.clock))
            .unwrap_or_else(|e| panic!("step {step}: reopen failed: {e}"));
        let r = store.recovery_report();
        assert!(
            r.damaged_ranges == 0 && r.damaged_segments == 0 && r.lost_keys == 0,
            "step {step}: a cleanly closed store reopens with damage: {r:?}"
        );
        self.store = Some(store);
        // Held fills live in RAM only.
        for m in &mut self.keys {
            m.held.clear();
        }
        self.check_all();
    }
}

/// Runs the input's operations on a store in a fresh temp directory, checking every read
/// against the model (see the top of this file), and ends with a close and a reopen. No
/// operation may panic or fail, but for a set or fill the input made invalid (a zero TTL, a
/// value too large for a segment), which must fail with that error and write nothing.
pub fn store_ops_target(data: &[u8]) {
    let (flag_bits, ops) = decode_store_ops(data);
    let Ok(dir) = tempfile::tempdir() else { return };
    let clock = ManualClock::new(NOW_MS);
    let store = FileStore::open(dir.path(), store_options_for(flag_bits, &clock))
        .unwrap_or_else(|e| panic!("open of a new directory failed: {e}"));
    let mut run = StoreRun {
        dir,
        flag_bits,
        clock,
        store: Some(store),
        keys: vec![KeyModel::default(); STORE_KEYS],
        evictions_before: 0,
        serial: 0,
        step: 0,
    };
    let key = |b: u8| usize::from(b) % STORE_KEYS;
    for (step, op) in ops.iter().enumerate() {
        run.step = step;
        match op {
            StoreOp::Set { key: k, len, ttl } => run.set(key(*k), store_value_len(key(*k), *len), *ttl),
            StoreOp::Get { key: k } => {
                run.check_key(key(*k));
            }
            StoreOp::Delete { key: k } => run.delete(key(*k)),
            StoreOp::Flush => run
                .store()
                .flush()
                .unwrap_or_else(|e| panic!("step {step}: flush failed: {e}")),
            StoreOp::Compact => {
                run.store()
                    .compact()
                    .unwrap_or_else(|e| panic!("step {step}: compact failed: {e}"));
            }
            StoreOp::Reopen => run.reopen(),
            StoreOp::Advance { by } => run.clock.advance(std::time::Duration::from_millis(
                STORE_ADVANCES_MS[usize::from(*by) % STORE_ADVANCES_MS.len()],
            )),
            StoreOp::Rewind { by } => {
                let back = STORE_REWINDS_MS[usize::from(*by) % STORE_REWINDS_MS.len()];
                let now = run.clock.now_ms();
                for m in &mut run.keys {
                    if m.allowed().any(|(_, e)| !live_at(*e, now)) {
                        m.swept_maybe = true;
                    }
                }
                run.clock.set(now.saturating_sub(back));
            }
            StoreOp::Burst {
                key: k,
                count,
                len,
                ttl,
            } => {
                let len = STORE_BURST_LENS[usize::from(*len) % STORE_BURST_LENS.len()];
                for i in 0..=count % 64 {
                    run.set(key(k.wrapping_add(i)), len, *ttl);
                }
            }
            StoreOp::SetEach { items } => run.set_each(items),
            StoreOp::Fill { key: k, len, ttl } => run.fill(key(*k), store_value_len(key(*k), *len), *ttl),
            StoreOp::CheckAll => run.check_all(),
            StoreOp::Clear => {
                run.store()
                    .clear()
                    .unwrap_or_else(|e| panic!("step {step}: clear failed: {e}"));
                run.keys.fill_with(KeyModel::default);
            }
        }
    }
    run.step = ops.len();
    run.reopen();
    if let Some(store) = run.store.take() {
        store
            .close()
            .unwrap_or_else(|e| panic!("final close failed: {e}"));
    }
}
