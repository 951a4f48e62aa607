//! Hit-ratio simulation shared by `tests/hit_ratio.rs` and `examples/hit_ratios.rs`: access
//! patterns (a real trace slice, loops, scans, zipf), and the caches compared on them, all
//! demand-filled (a miss inserts the key; the file tier's miss is a fill, which its admission
//! policy may refuse).
//!
//! The trace slices are of cache2k web12, web07 and orm-busy (Copyright headissue GmbH, Jens
//! Wilke; CC BY 4.0): see `tests/traces/README.md` and `tests/traces/cache2k_LICENSE.txt`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::Duration;

use uno_cache::{Durability, FileStore, FileStoreOptions, MemoryStore, Storage};

/// The first 30,000 accesses of cache2k web12, one little-endian `u16` key each.
pub const WEB12_SLICE: &[u8] = include_bytes!("../traces/cache2k_web12_head30k.u16le");

/// The first 30,000 accesses of cache2k web07, one little-endian `u16` key each.
pub const WEB07_SLICE: &[u8] = include_bytes!("../traces/cache2k_web07_head30k.u16le");

/// The first 60,000 accesses of cache2k orm-busy, keys renumbered in order of first access, one
/// little-endian `u16` key each.
pub const ORM_BUSY_SLICE: &[u8] = include_bytes!("../traces/cache2k_orm_busy_head60k.u16le");

/// The web12 slice as keys.
pub fn web12_slice() -> Vec<u32> {
    u16_keys(WEB12_SLICE)
}

/// The web07 slice as keys.
pub fn web07_slice() -> Vec<u32> {
    u16_keys(WEB07_SLICE)
}

/// The orm-busy slice as keys.
pub fn orm_busy_slice() -> Vec<u32> {
    u16_keys(ORM_BUSY_SLICE)
}

fn u16_keys(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(2)
        .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
        .collect()
}

/// A trace file in the cache2k format (4-byte big-endian keys), decompressed.
pub fn read_cache2k_trace(path: &std::path::Path) -> std::io::Result<Vec<u32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Distinct keys of a trace.
pub fn distinct(trace: &[u32]) -> usize {
    let mut seen = std::collections::HashSet::new();
    trace.iter().filter(|k| seen.insert(**k)).count()
}

/// A small deterministic generator (splitmix64), so patterns are the same on every run.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `passes` passes over keys `0..keys` in order: LRU and FIFO get nothing once `keys` exceeds
/// the capacity; the best possible keeps a fixed part.
pub fn loop_pattern(keys: u32, passes: u32) -> Vec<u32> {
    (0..passes).flat_map(|_| 0..keys).collect()
}

/// `passes` passes over a window of `width` keys that moves on by `step` keys every pass (the
/// oldest `step` leave it, `step` new ones come), each pass in a lightly shuffled order: a
/// working set that slides, every key read again within about `width` accesses while it is in
/// the window. LRU with room for the window hits all but the new keys.
pub fn sliding_loop_pattern(width: u32, step: u32, passes: u32, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity((width * passes) as usize);
    for pass in 0..passes {
        let start = out.len();
        out.extend(pass * step..pass * step + width);
        for i in (start + 1..out.len()).rev() {
            if rng.unit() < 0.3 {
                let j = start + rng.below((i - start + 1) as u64) as usize;
                out.swap(i, j);
            }
        }
    }
    out
}

/// Two pools read in turn, each uniformly: `hot` keys, then one of `cold` other keys, and so on
/// (the pattern of the LIRS set's 2_pools). A store of about `hot` entries hits at most half
/// the reads, by holding the hot pool; keys of the cold pool come back too, but seldom.
pub fn two_pools_pattern(hot: u32, cold: u32, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|i| {
            if i % 2 == 0 {
                rng.below(u64::from(hot)) as u32
            } else {
                hot + rng.below(u64::from(cold)) as u32
            }
        })
        .collect()
}

/// A hot set of `hot` keys (read uniformly) mixed with a one-pass scan of keys never seen again:
/// each access is a scan key with probability `scan_share`. A policy that lets the scan flush
/// the hot set loses most of its hits.
pub fn scan_pattern(hot: u32, scan_share: f64, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut next_scan = hot;
    (0..len)
        .map(|_| {
            if rng.unit() < scan_share {
                next_scan += 1;
                next_scan
            } else {
                rng.below(u64::from(hot)) as u32
            }
        })
        .collect()
}

/// Zipf(`s`) over `keys` keys, hottest first.
pub fn zipf_pattern(keys: u32, s: f64, len: usize, seed: u64) -> Vec<u32> {
    let mut cdf = Vec::with_capacity(keys as usize);
    let mut total = 0.0;
    for i in 1..=keys {
        total += 1.0 / f64::from(i).powf(s);
        cdf.push(total);
    }
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|_| {
            let x = rng.unit() * total;
            cdf.partition_point(|&c| c < x) as u32
        })
        .collect()
}

/// A working set that moves: `phases` phases of `phase_len` accesses, each zipf(`s`) over its
/// own `keys` keys (no key shared between phases). A policy that holds on to the old set after a
/// shift loses the start of every phase.
pub fn shifting_pattern(keys: u32, s: f64, phase_len: usize, phases: u32, seed: u64) -> Vec<u32> {
    (0..phases)
        .flat_map(|phase| {
            zipf_pattern(keys, s, phase_len, seed + u64::from(phase))
                .into_iter()
                .map(move |k| k + phase * keys)
        })
        .collect()
}

/// A loop over `loop_keys` keys interleaved with reads of a hot set of `hot` keys (uniform): each
/// access is a hot one with probability `hot_share`. The hot set should stay, and a fixed part of
/// the loop with it.
pub fn loop_mix_pattern(loop_keys: u32, hot: u32, hot_share: f64, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut next = 0;
    (0..len)
        .map(|_| {
            if rng.unit() < hot_share {
                loop_keys + rng.below(u64::from(hot)) as u32
            } else {
                next = (next + 1) % loop_keys;
                next
            }
        })
        .collect()
}

/// Zipf(`s`) over `keys` ranks whose keys drift: the key of rank `r` at access `i` is
/// `(r + i / drift_every) % (2 * keys)`, so the hot keys change a little all the time, as the
/// popular items of a news site or a shop do. Recency is worth more than frequency here (LRU
/// beats quick_cache).
pub fn drifting_pattern(keys: u32, s: f64, len: usize, drift_every: u32, seed: u64) -> Vec<u32> {
    zipf_pattern(keys, s, len, seed)
        .into_iter()
        .enumerate()
        .map(|(i, k)| (k + i as u32 / drift_every) % (2 * keys))
        .collect()
}

/// Two loops (over `short` and `long` keys, each 30% of the accesses) interleaved with zipf(0.9)
/// reads of `hot` other keys: a cache should keep the hot keys and the short loop.
pub fn two_loops_pattern(short: u32, long: u32, hot: u32, len: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let (mut a, mut b) = (0, 0);
    zipf_pattern(hot, 0.9, len, seed + 1)
        .into_iter()
        .map(|k| {
            let u = rng.unit();
            if u < 0.3 {
                a = (a + 1) % short;
                hot + a
            } else if u < 0.6 {
                b = (b + 1) % long;
                hot + short + b
            } else {
                k
            }
        })
        .collect()
}

/// Zipf(`s`) reads of `hot` keys mixed with bursts: a new key read `burst` times within about
/// `spread` accesses, then never again (correlated references: a page that loads an object a
/// few times, a transaction that reads a row again). About `burst_share` of the accesses belong
/// to bursts. A cache should serve the bursts from a short probation and keep the zipf keys; one
/// that counts a burst's reads as lasting popularity keeps keys that are done.
pub fn burst_pattern(
    hot: u32,
    s: f64,
    burst_share: f64,
    burst: u32,
    spread: u64,
    len: usize,
    seed: u64,
) -> Vec<u32> {
    const FREE: u32 = u32::MAX;
    let mut rng = Rng::new(seed);
    let mut zipf = zipf_pattern(hot, s, len, seed + 1).into_iter();
    let mut out = vec![FREE; len];
    let mut next_key = hot;
    for i in 0..len {
        if out[i] != FREE {
            continue;
        }
        if rng.unit() < burst_share / f64::from(burst.max(1)) {
            out[i] = next_key;
            for _ in 1..burst {
                // The first free slot at or after a random point of the spread.
                let from = i + 1 + rng.below(spread.max(1)) as usize;
                if let Some(slot) = out.iter_mut().skip(from).find(|k| **k == FREE) {
                    *slot = next_key;
                }
            }
            next_key += 1;
        } else {
            out[i] = zipf.next().unwrap_or(0);
        }
    }
    out
}

/// A block device read as a file system reads it: requests for runs of consecutive blocks, each
/// block a key. With probability `scan_share` a request is a sequential scan of `scan_len` blocks
/// never read before (a backup, a copy of a large file); otherwise it reads a whole extent,
/// picked by zipf(`s`) over `extents` extents of 1 to `max_extent` blocks. Stops at `len`
/// accesses. The pattern of the ARC set's block traces: the blocks of an extent come and go
/// together, and scans of new blocks come between the reads of a working set.
pub fn block_pattern(
    extents: u32,
    max_extent: u32,
    s: f64,
    scan_share: f64,
    scan_len: u32,
    len: usize,
    seed: u64,
) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut starts = Vec::with_capacity(extents as usize + 1);
    let mut next_block = 0u32;
    for _ in 0..extents {
        starts.push(next_block);
        next_block += 1 + rng.below(u64::from(max_extent)) as u32;
    }
    starts.push(next_block);
    let mut picks = zipf_pattern(extents, s, len, seed + 1).into_iter();
    let mut out = Vec::with_capacity(len + scan_len.max(max_extent) as usize);
    while out.len() < len {
        if rng.unit() < scan_share {
            out.extend(next_block..next_block + scan_len);
            next_block += scan_len;
        } else {
            let e = picks.next().unwrap_or(0) as usize;
            out.extend(starts[e]..starts[e + 1]);
        }
    }
    out.truncate(len);
    out
}

/// A demand-filled cache: `access` returns whether the key was a hit, and inserts it if not.
pub trait Policy {
    fn access(&mut self, key: u32) -> bool;
}

/// Hit ratio in percent of `policy` on `trace`.
pub fn hit_ratio(policy: &mut dyn Policy, trace: &[u32]) -> f64 {
    let hits = trace.iter().filter(|&&k| policy.access(k)).count();
    100.0 * hits as f64 / trace.len().max(1) as f64
}

/// Textbook LRU (hash map + doubly linked list in a vector).
pub struct Lru {
    capacity: usize,
    map: HashMap<u32, usize, BuildHasherDefault<std::hash::DefaultHasher>>,
    nodes: Vec<(u32, usize, usize)>,
    head: usize,
}

const NIL: usize = usize::MAX;

impl Lru {
    pub fn new(capacity: usize) -> Lru {
        Lru {
            capacity,
            map: HashMap::default(),
            nodes: Vec::new(),
            head: NIL,
        }
    }

    fn unlink(&mut self, i: usize) {
        let (_, prev, next) = self.nodes[i];
        if next == i {
            self.head = NIL;
            return;
        }
        self.nodes[prev].2 = next;
        self.nodes[next].1 = prev;
        if self.head == i {
            self.head = next;
        }
    }

    /// Links `i` as the most recent (just before the head, which is the least recent).
    fn push_front(&mut self, i: usize) {
        if self.head == NIL {
            self.nodes[i].1 = i;
            self.nodes[i].2 = i;
            self.head = i;
            return;
        }
        let head = self.head;
        let tail = self.nodes[head].1;
        self.nodes[i].1 = tail;
        self.nodes[i].2 = head;
        self.nodes[tail].2 = i;
        self.nodes[head].1 = i;
    }
}

impl Policy for Lru {
    fn access(&mut self, key: u32) -> bool {
        if let Some(&i) = self.map.get(&key) {
            self.unlink(i);
            self.push_front(i);
            return true;
        }
        let i = if self.map.len() >= self.capacity {
            let lru = self.head;
            self.unlink(lru);
            self.map.remove(&self.nodes[lru].0);
            self.nodes[lru].0 = key;
            lru
        } else {
            self.nodes.push((key, NIL, NIL));
            self.nodes.len() - 1
        };
        self.map.insert(key, i);
        self.push_front(i);
        false
    }
}

/// `quick_cache` used directly (plain `insert`), the reference for the memory tier.
pub struct QuickCache(quick_cache::sync::Cache<u32, (), quick_cache::UnitWeighter, ahash::RandomState>);

impl QuickCache {
    /// `seed`: its hash seeds, fixed for a run that repeats (see [`compare`]), or random.
    /// `shards`: fixed, so that the figures do not depend on the machine's cores (each shard
    /// evicts on its own, and the count moved the sliding window's ratio by 0.6 points), or
    /// `quick_cache`'s default, four per core, as the memory tier has it.
    pub fn new(capacity: usize, seed: Option<u64>, shards: Option<usize>) -> QuickCache {
        let hasher = match seed {
            Some(seed) => ahash::RandomState::with_seeds(seed, 1, 2, 3),
            None => ahash::RandomState::new(),
        };
        let mut options = quick_cache::OptionsBuilder::new();
        options
            .estimated_items_capacity(capacity)
            .weight_capacity(capacity as u64);
        if let Some(shards) = shards {
            options.shards(shards);
        }
        QuickCache(quick_cache::sync::Cache::with_options(
            options.build().unwrap(),
            quick_cache::UnitWeighter,
            hasher,
            quick_cache::sync::DefaultLifecycle::default(),
        ))
    }
}

impl Policy for QuickCache {
    fn access(&mut self, key: u32) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, ());
        false
    }
}

/// moka (sync), with its pending maintenance run on every miss so it holds its bound.
pub struct Moka(moka::sync::Cache<u32, ()>);

impl Moka {
    pub fn new(capacity: usize) -> Moka {
        Moka(moka::sync::Cache::new(capacity as u64))
    }
}

impl Policy for Moka {
    fn access(&mut self, key: u32) -> bool {
        if self.0.get(&key).is_some() {
            return true;
        }
        self.0.insert(key, ());
        self.0.run_pending_tasks();
        false
    }
}

/// The memory tier through the `Storage` trait.
pub struct MemoryTier(MemoryStore);

impl MemoryTier {
    pub fn new(capacity: usize) -> MemoryTier {
        MemoryTier(MemoryStore::new(capacity as u64).unwrap())
    }
}

fn key_name(key: u32) -> String {
    format!("k{key}")
}

impl Policy for MemoryTier {
    fn access(&mut self, key: u32) -> bool {
        let name = key_name(key);
        if self.0.get(&name).unwrap().is_some() {
            return true;
        }
        self.0.set(&name, b"v", None).unwrap();
        false
    }
}

/// The file tier: a store bounded to `max_size_mb` with values sized so that about `capacity`
/// entries fit. [`FileTier::capacity`] is how many it really holds: distinct keys written before
/// the first eviction and the refused fills it may hold in RAM, the capacity the other caches
/// are given.
pub struct FileTier {
    store: FileStore,
    value: Vec<u8>,
    capacity: usize,
    inserts: u64,
    _dir: tempfile::TempDir,
}

impl FileTier {
    /// `seed`: the store's [`FileStoreOptions::hash_seed`], or a random one.
    pub fn new(capacity: usize, max_size_mb: u64, seed: Option<u64>) -> FileTier {
        let bytes = max_size_mb * 1024 * 1024;
        // Record header, key and hint entry take about 80 bytes.
        let value_len = (bytes / capacity.max(1) as u64).saturating_sub(80).max(1) as usize;
        let value = vec![0x5a; value_len];
        let capacity = Self::measure(max_size_mb, &value);
        // The values of fills refused lately that the store holds in RAM for a second read, one
        // per 64 entries at most but at least four, or an eighth of a store of fewer than 32
        // (`FileStoreStats::held_fills`, `held_entries` in `src/local/file/stash.rs`), are
        // entries it holds too: the other caches get them.
        let capacity = capacity + (capacity / 64).max((capacity / 8).min(4));
        let dir = tempfile::tempdir().unwrap();
        let mut options = Self::options(max_size_mb);
        if let Some(seed) = seed {
            options = options.hash_seed(seed);
        }
        let store = FileStore::open(dir.path(), options).unwrap();
        FileTier {
            store,
            value,
            capacity,
            inserts: 0,
            _dir: dir,
        }
    }

    fn options(max_size_mb: u64) -> FileStoreOptions {
        FileStoreOptions::default()
            .max_size_mb(max_size_mb)
            .durability(Durability::None)
            .background_threads(false)
            .compaction_interval(Duration::from_secs(3600))
    }

    /// Distinct keys held when the first eviction happens.
    fn measure(max_size_mb: u64, value: &[u8]) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), Self::options(max_size_mb)).unwrap();
        let mut i = 0u32;
        loop {
            let before = store.stats().live_items;
            store.set(&key_name(u32::MAX - i), value, None).unwrap();
            if store.stats().evictions > 0 {
                return before as usize;
            }
            i += 1;
        }
    }

    /// Records re-appended by evictions per record written on a miss: the write amplification
    /// the policy costs.
    pub fn copies_per_insert(&self) -> f64 {
        let s = self.store.stats();
        s.second_chances as f64 / self.inserts.max(1) as f64
    }

    /// Entries the store holds (see the type's docs).
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl Policy for FileTier {
    fn access(&mut self, key: u32) -> bool {
        let name = key_name(key);
        if self.store.get(&name).unwrap().is_some() {
            return true;
        }
        // A read-through cache's miss is a fill: the store may refuse it (see `admission`).
        if self.store.fill(&name, &self.value, None).unwrap() {
            self.inserts += 1;
        }
        false
    }
}

/// Hit ratios of every cache on one pattern at one capacity.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub capacity: usize,
    pub file: f64,
    /// The file tier's [`FileTier::copies_per_insert`].
    pub file_copies: f64,
    pub memory: f64,
    /// `quick_cache` with 8 shards, what it picks on two cores, and the seed of the file tier.
    pub quick_cache: f64,
    /// `quick_cache` as the memory tier builds it (random seeds, its default shards): what the
    /// memory tier is held to.
    pub quick_cache_like_memory: f64,
    pub moka: f64,
    pub lru: f64,
}

/// Runs every cache on `trace` with about `capacity` entries (the file tier's measured capacity
/// is given to the others). `with_moka`: moka is the slowest to simulate, so the test skips it.
/// `seed` fixes the hash seeds of the file tier and of `quick_cache`, so that the run gives the
/// same ratios every time (on one build target: aHash takes another algorithm where AES
/// instructions are enabled at compile time, `-C target-cpu=native` say); `None` draws them at
/// random, to see their spread. The memory tier and moka are always seeded at random.
pub fn compare(trace: &[u32], capacity: usize, max_size_mb: u64, with_moka: bool, seed: Option<u64>) -> Row {
    let mut file = FileTier::new(capacity, max_size_mb, seed);
    let capacity = file.capacity();
    let file_ratio = hit_ratio(&mut file, trace);
    Row {
        capacity,
        file: file_ratio,
        file_copies: file.copies_per_insert(),
        memory: hit_ratio(&mut MemoryTier::new(capacity), trace),
        quick_cache: hit_ratio(&mut QuickCache::new(capacity, seed, Some(8)), trace),
        quick_cache_like_memory: hit_ratio(&mut QuickCache::new(capacity, None, None), trace),
        moka: if with_moka {
            hit_ratio(&mut Moka::new(capacity), trace)
        } else {
            f64::NAN
        },
        lru: hit_ratio(&mut Lru::new(capacity), trace),
    }
}
