//! Crash recovery with real processes.
//!
//! A child process (this test binary, re-executed in child mode) writes to a `FileStore` —
//! random keys and value sizes, overwrites, deletes, far-future TTLs, the odd `clear`, `compact`
//! and read — and announces every operation on a pipe *before* doing it, and every `flush` after
//! it returns. The parent kills it with SIGKILL at a random moment, recovers a copy of the
//! directory and checks it against a model of what the child did:
//!
//! - The recovered store is exactly the state after some prefix of the child's operations: all
//!   operations before the last one announced, and the last one either applied or not. A write
//!   that returned is in the page cache, so SIGKILL cannot lose it, whatever the durability
//!   policy. This implies the flush contract (checked on its own too): after the last flush `F`,
//!   every key holds its value at `F` or a value the child wrote after `F` — never an older value,
//!   never garbage.
//! - In rounds with a small size bound, segments roll and get evicted, so a key may be missing;
//!   a value that is there is still never a wrong one.
//! - `verify` finds no damage, and the recovery report is sane (a crash only tears the tail).
//!
//! The next child then goes on in the same (not copied) directory, so it recovers what the killed
//! one left, and reports what it recovered, which must match what the parent saw in the copy.
//!
//! Knobs: `UNO_CRASH_KILLS` (rounds, default 24), `UNO_CRASH_SEED` (default fixed). A failure
//! prints the seed and round; rerun with that seed to replay the same operations (the kill
//! moment varies, the checks hold for any moment).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime};

use common::{copy_dir, env_knob, value_bytes, Rng};
use uno_cache::{Durability, Error, FileStore, FileStoreOptions, RecoveryReport};

/// Environment variable that puts the test binary in child mode; its value names the mode.
const CHILD_ENV: &str = "UNO_CRASH_CHILD";
/// Name of the test function that runs the child side (used as the exact test filter).
const CHILD_TEST: &str = "crash_child";
/// Keys the child draws from: few enough for many overwrites and deletes.
const KEYS: u32 = 300;
const SEGMENT_SIZE: u64 = 64 * 1024;
/// Marker in front of every protocol line (the test harness prints its own lines too).
const MARK: &str = "@@";

fn key_name(n: u32) -> String {
    match n % 50 {
        0 => format!("long-{n:03}-{}", "k".repeat(900 + n as usize)),
        m => format!("key-{n:03}-{}", "x".repeat(m as usize % 13)),
    }
}

/// How one child round behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mode {
    seed: u64,
    first_op: u64,
    /// 0 none, 1 default (periodic 1 s), 2 periodic 2 ms, 3 every write.
    durability: u8,
    /// A 1 MiB bound over 64 KiB segments: segments roll and the oldest get evicted.
    evict: bool,
    /// Background compaction every few milliseconds.
    compact: bool,
    /// Per-mille chance of `clear` per operation.
    clear_permille: u64,
}

impl Mode {
    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.seed,
            self.first_op,
            self.durability,
            u8::from(self.evict),
            u8::from(self.compact),
            self.clear_permille
        )
    }

    fn decode(s: &str) -> Mode {
        let f: Vec<u64> = s.split(' ').map(|x| x.parse().unwrap()).collect();
        Mode {
            seed: f[0],
            first_op: f[1],
            durability: u8::try_from(f[2]).unwrap(),
            evict: f[3] == 1,
            compact: f[4] == 1,
            clear_permille: f[5],
        }
    }

    fn options(&self) -> FileStoreOptions {
        let durability = match self.durability {
            0 => Durability::None,
            1 => Durability::default(),
            2 => Durability::Periodic(Duration::from_millis(2)),
            _ => Durability::EveryWrite,
        };
        let mut options = FileStoreOptions::default()
            .segment_size(SEGMENT_SIZE)
            .max_size_mb(if self.evict { 1 } else { 256 })
            .durability(durability);
        if self.compact {
            options = options
                .compaction_interval(Duration::from_millis(3))
                .min_live_ratio(0.8);
        }
        options
    }
}

/// What a write put under a key: enough to regenerate the exact bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Val {
    op: u64,
    len: usize,
    ttl: bool,
}

impl Val {
    fn bytes(&self) -> Vec<u8> {
        value_bytes(self.op, self.len)
    }
}

type State = BTreeMap<u32, Val>;

/// FNV-1a over the sorted state, the same on both sides of the pipe.
fn digest<'a>(entries: impl Iterator<Item = (u32, &'a [u8])>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (n, value) in entries {
        eat(&n.to_le_bytes());
        eat(&(value.len() as u64).to_le_bytes());
        eat(value);
    }
    h
}

fn value_len(rng: &mut Rng) -> usize {
    let r = rng.below(100);
    let (lo, hi) = match r {
        0..70 => (0, 512),
        70..90 => (512, 4096),
        90..98 => (4096, 16 * 1024),
        _ => (16 * 1024, 40 * 1024),
    };
    rng.range(lo, hi) as usize
}

// ---- the child ----------------------------------------------------------------------------

/// The child side. Only does something when started by [`spawn_child`].
#[test]
#[ignore = "child process of the crash tests; they start it themselves"]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(std::env::var("UNO_CRASH_DIR").unwrap());
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        out.write_all(format!("\n{MARK}{line}\n").as_bytes()).unwrap();
        out.flush().unwrap();
    };
    if mode == "hold-lock" {
        let store = FileStore::open(&dir, FileStoreOptions::default()).unwrap();
        say("HELD".into());
        std::thread::sleep(Duration::from_secs(600));
        drop(store);
        return;
    }
    if mode == "try-open" {
        match FileStore::open(&dir, FileStoreOptions::default()) {
            Ok(store) => {
                say("OPEN ok".into());
                store.close().unwrap();
            }
            Err(e @ Error::Locked { .. }) => {
                let Error::Locked { path, lock } = &e else {
                    unreachable!()
                };
                say(format!("OPEN locked {}|{}|{e}", path.display(), lock.display()));
            }
            Err(e) => say(format!("OPEN error {e}")),
        }
        return;
    }
    let mode = Mode::decode(&mode);
    run_child(&dir, mode, &mut say);
}

fn run_child(dir: &Path, mode: Mode, say: &mut impl FnMut(String)) {
    let mut rng = Rng::new(mode.seed);
    let store = FileStore::open(dir, mode.options()).unwrap();
    // What this process knows the store holds; starts as whatever recovery found.
    let mut model: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut ttls: BTreeMap<u32, bool> = BTreeMap::new();
    for n in 0..KEYS {
        if let Some(entry) = store.get_entry(&key_name(n)).unwrap() {
            ttls.insert(n, entry.expires_at.is_some());
            model.insert(n, entry.value);
        }
    }
    say(format!(
        "R {} {} {}",
        model.len(),
        digest(model.iter().map(|(n, v)| (*n, v.as_slice()))),
        serde_json::to_string(store.recovery_report()).unwrap()
    ));
    let mut op = mode.first_op;
    // A bound so an orphaned child cannot run forever; the parent kills long before.
    while op < mode.first_op + 1_000_000 {
        let r = rng.below(1000);
        if r < 600 {
            let n = rng.below(u64::from(KEYS)) as u32;
            // Under the 1 MiB bound, bigger values: the live set outgrows the bound, so eviction
            // drops live keys and gives read ones a second chance.
            let len = if mode.evict {
                (value_len(&mut rng) * 4).min(40 * 1024)
            } else {
                value_len(&mut rng)
            };
            let ttl = rng.chance(20);
            say(format!("S {op} {n} {len} {}", u8::from(ttl)));
            let value = value_bytes(op, len);
            let ttl_d = ttl.then(|| Duration::from_secs(rng.range(3600, 36_000)));
            store.set(&key_name(n), &value, ttl_d).unwrap();
            model.insert(n, value);
            ttls.insert(n, ttl);
            op += 1;
        } else if r < 800 {
            let n = rng.below(u64::from(KEYS)) as u32;
            say(format!("D {op} {n}"));
            let removed = store.delete(&key_name(n)).unwrap();
            let had = model.remove(&n).is_some();
            // With eviction a key can vanish unseen; without it, delete must know the truth.
            assert!(
                removed == had || (mode.evict && had && !removed),
                "delete({n}) returned {removed}, model says {had}"
            );
            op += 1;
        } else if r < 800 + mode.clear_permille {
            say(format!("C {op}"));
            store.clear().unwrap();
            model.clear();
            op += 1;
        } else if r < 950 {
            let n = rng.below(u64::from(KEYS)) as u32;
            let got = store.get_entry(&key_name(n)).unwrap();
            match (got, model.get(&n)) {
                (None, None) => {}
                (None, Some(_)) if mode.evict => {
                    model.remove(&n);
                }
                (Some(e), Some(v)) if &e.value == v && e.expires_at.is_some() == ttls[&n] => {}
                (got, want) => {
                    say(format!(
                        "E get {n}: got {:?} want {:?}",
                        got.map(|e| e.value.len()),
                        want.map(Vec::len)
                    ));
                    panic!("child read a wrong value for key {n}");
                }
            }
        } else if r < 960 {
            store.compact().unwrap();
        } else {
            store.flush().unwrap();
            say(format!("F {op}"));
        }
    }
    say("X ran out of operations".into());
}

// ---- the parent ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Set(u32, Val),
    Delete(u32),
    Clear,
}

impl Op {
    fn apply(&self, state: &mut State) {
        match self {
            Op::Set(n, v) => {
                state.insert(*n, *v);
            }
            Op::Delete(n) => {
                state.remove(n);
            }
            Op::Clear => state.clear(),
        }
    }
}

/// What one child round reported.
#[derive(Debug, Default)]
struct Transcript {
    recovered: Option<(usize, u64, String)>,
    /// Operations announced, in order, with their op numbers.
    ops: Vec<(u64, Op)>,
    /// Op numbers `f` of completed flushes: every op below `f` was flushed.
    flushes: Vec<u64>,
    other: Vec<String>,
}

impl Transcript {
    fn take(&mut self, line: &str) {
        let Some(at) = line.find(MARK) else { return };
        let line = line[at + MARK.len()..].trim_end();
        let f: Vec<&str> = line.split(' ').collect();
        let num = |i: usize| -> u64 { f[i].parse().unwrap() };
        match f[0] {
            "R" => self.recovered = Some((num(1) as usize, num(2), f[3..].join(" "))),
            "S" => self.ops.push((
                num(1),
                Op::Set(
                    num(2) as u32,
                    Val {
                        op: num(1),
                        len: num(3) as usize,
                        ttl: num(4) == 1,
                    },
                ),
            )),
            "D" => self.ops.push((num(1), Op::Delete(num(2) as u32))),
            "C" => self.ops.push((num(1), Op::Clear)),
            "F" => self.flushes.push(num(1)),
            _ => self.other.push(line.to_owned()),
        }
    }
}

fn spawn_child(dir: &Path, mode: &str, stderr_to: &Path) -> Child {
    // Killed with this process, also when it is killed: the "hold-lock" child would otherwise
    // sleep on for ten minutes holding the store's lock.
    support::dies_with_us(std::env::current_exe().unwrap().to_str().unwrap())
        .args([
            CHILD_TEST,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env("UNO_CRASH_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(stderr_to).unwrap())
        .spawn()
        .unwrap()
}

/// What the parent finds when it opens a copy of the directory.
struct Observed {
    state: BTreeMap<u32, (Vec<u8>, bool)>,
    report: RecoveryReport,
    verify_clean: bool,
    verify_problems: Vec<String>,
}

fn observe(dir: &Path) -> Observed {
    let store = FileStore::open(
        dir,
        FileStoreOptions::default()
            .segment_size(SEGMENT_SIZE)
            .max_size_mb(256)
            .background_threads(false),
    )
    .unwrap_or_else(|e| panic!("reopening {} after a crash failed: {e}", dir.display()));
    let now = SystemTime::now();
    let mut state = BTreeMap::new();
    for n in 0..KEYS {
        if let Some(e) = store.get_entry(&key_name(n)).unwrap() {
            if let Some(at) = e.expires_at {
                assert!(
                    at > now + Duration::from_secs(3000),
                    "key {n}: expiry {at:?} is not the far-future one written"
                );
            }
            state.insert(n, (e.value, e.expires_at.is_some()));
        }
    }
    let live = store.keys().len();
    assert_eq!(
        live,
        state.len(),
        "keys() disagrees with get() about how many keys are live"
    );
    let report = store.recovery_report().clone();
    let verify = store.verify(|_, _| {}).unwrap();
    store.close().unwrap();
    Observed {
        state,
        report,
        verify_clean: verify.is_clean(),
        verify_problems: verify.problems,
    }
}

/// Keys whose observed value differs from `expected` (a missing key is fine when eviction may
/// have dropped it).
fn mismatches(observed: &BTreeMap<u32, (Vec<u8>, bool)>, expected: &State, may_evict: bool) -> Vec<String> {
    let mut bad = Vec::new();
    for n in 0..KEYS {
        match (observed.get(&n), expected.get(&n)) {
            (None, None) => {}
            (None, Some(_)) if may_evict => {}
            (Some((bytes, ttl)), Some(v)) if *bytes == v.bytes() && *ttl == v.ttl => {}
            (got, want) => bad.push(format!(
                "key {n}: got {}, want {}",
                got.map_or("miss".to_owned(), |(b, t)| describe(b, *t)),
                want.map_or("miss".to_owned(), |v| format!(
                    "op {} ({} bytes, ttl {})",
                    v.op, v.len, v.ttl
                ))
            )),
        }
    }
    bad
}

fn describe(bytes: &[u8], ttl: bool) -> String {
    let id = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()));
    match id {
        Some(op) if value_bytes(op, bytes.len()) == bytes => {
            format!("op {op} ({} bytes, ttl {ttl})", bytes.len())
        }
        _ => format!(
            "{} bytes that no op wrote under this length/id (garbage?)",
            bytes.len()
        ),
    }
}

/// Turns an observed state into model values, matching each value to the op that wrote it.
fn as_model(observed: &BTreeMap<u32, (Vec<u8>, bool)>, candidates: &[&State]) -> State {
    observed
        .iter()
        .map(|(n, (bytes, ttl))| {
            let v = candidates
                .iter()
                .filter_map(|s| s.get(n))
                .find(|v| v.bytes() == *bytes && v.ttl == *ttl)
                .copied()
                .unwrap_or_else(|| panic!("key {n} holds a value no candidate state has"));
            (*n, v)
        })
        .collect()
}

fn pick_mode(rng: &mut Rng, round: u64, first_op: u64) -> Mode {
    let durability = match rng.below(10) {
        0..4 => 0,
        4..8 => 1,
        8 => 2,
        _ => 3,
    };
    Mode {
        seed: rng.next_u64(),
        first_op,
        durability,
        // Every third round at least, so CI always sees eviction.
        evict: round % 3 == 1 || rng.chance(15),
        compact: rng.chance(40),
        clear_permille: if rng.chance(15) { 2 } else { 0 },
    }
}

#[test]
fn sigkill_at_random_moments_loses_nothing_written_and_returns_no_wrong_value() {
    let rounds = env_knob("UNO_CRASH_KILLS", 24);
    let seed = env_knob("UNO_CRASH_SEED", 0x00c0_ffee);
    eprintln!("crash test: {rounds} kills, UNO_CRASH_SEED={seed}");
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    let mut rng = Rng::new(seed);
    let mut model = State::new();
    let mut last_digest = digest(std::iter::empty());
    let mut next_op = 0u64;
    // Kills in rounds with eviction, keys eviction dropped, most ops in a round, rounds with a flush.
    let mut stats = [0u64; 4];
    for round in 0..rounds {
        let mode = pick_mode(&mut rng, round, next_op);
        let ctx = format!("UNO_CRASH_SEED={seed} round {round} mode {mode:?}");
        let stderr_path = scratch.path().join(format!("child-{round}.stderr"));
        let mut child = spawn_child(&dir, &mode.encode(), &stderr_path);
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        // Kill after a random number of announced operations, plus a random short delay so the
        // kill lands anywhere: mid-write, mid-flush, mid-roll, mid-compaction, mid-eviction.
        let max_ops = if mode.durability == 3 { 150 } else { 1500 };
        let kill_after = rng.range(1, max_ops);
        let delay_us = if rng.chance(50) { rng.below(3000) } else { 0 };
        let mut transcript = Transcript::default();
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 {
                let status = child.wait().unwrap();
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("{ctx}: child ended by itself ({status}) after {} ops; other lines {:?}\nstderr:\n{stderr}", transcript.ops.len(), transcript.other);
            }
            transcript.take(&line);
            if transcript.ops.len() as u64 >= kill_after {
                break;
            }
        }
        std::thread::sleep(Duration::from_micros(delay_us));
        child.kill().unwrap();
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        for l in rest.lines() {
            transcript.take(l);
        }
        let status = child.wait().unwrap();
        if status.signal() != Some(9) {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("{ctx}: child was not killed by SIGKILL but ended with {status}; lines {:?}\nstderr:\n{stderr}", transcript.other);
        }
        assert!(
            transcript.other.is_empty(),
            "{ctx}: child reported {:?}",
            transcript.other
        );

        // What the child found at open must be what the parent found in its copy last round.
        let (count, child_digest, child_report) = transcript
            .recovered
            .clone()
            .unwrap_or_else(|| panic!("{ctx}: child never reported its recovery"));
        assert_eq!(
            (count, child_digest),
            (model.len(), last_digest),
            "{ctx}: the child recovered another state than the parent saw ({child_report})"
        );

        // Model: every announced op but the last happened; the last one may or may not have.
        let mut before_last = model.clone();
        let (ops, last) = transcript.ops.split_at(transcript.ops.len() - 1);
        for (_, op) in ops {
            op.apply(&mut before_last);
        }
        let mut after_last = before_last.clone();
        last[0].1.apply(&mut after_last);

        // Recover a copy, so the next child recovers the very bytes the killed one left.
        let copy = scratch.path().join(format!("copy-{round}"));
        copy_dir(&dir, &copy);
        let seen = observe(&copy);
        std::fs::remove_dir_all(&copy).unwrap();

        // Prefix consistency.
        let miss_before = mismatches(&seen.state, &before_last, mode.evict);
        let miss_after = mismatches(&seen.state, &after_last, mode.evict);
        assert!(
            miss_before.is_empty() || miss_after.is_empty(),
            "{ctx}: the recovered store is not the state after a prefix of the writes.\n\
             last op {:?}\nvs. without the last op: {miss_before:?}\nvs. with it: {miss_after:?}",
            last[0]
        );

        // The flush contract, stated on its own: after the last flush F, each key holds its
        // value at F or one written after F (or nothing, if deleted, cleared or evicted since).
        if let Some(&f) = transcript.flushes.last() {
            let mut at_flush = model.clone();
            for (op_no, op) in &transcript.ops {
                if *op_no < f {
                    op.apply(&mut at_flush);
                }
            }
            let later: Vec<&Op> = transcript
                .ops
                .iter()
                .filter(|(o, _)| *o >= f)
                .map(|(_, op)| op)
                .collect();
            for n in 0..KEYS {
                let got = seen.state.get(&n);
                let ok_flushed = match (got, at_flush.get(&n)) {
                    (None, None) => true,
                    (Some((b, t)), Some(v)) => *b == v.bytes() && *t == v.ttl,
                    _ => false,
                };
                let ok_later = later.iter().any(|op| match (op, got) {
                    (Op::Set(k, v), Some((b, t))) => *k == n && *b == v.bytes() && *t == v.ttl,
                    (Op::Delete(k), None) => *k == n,
                    (Op::Clear, None) => true,
                    _ => false,
                });
                let ok_evicted = mode.evict && got.is_none();
                assert!(
                    ok_flushed || ok_later || ok_evicted,
                    "{ctx}: key {n} after flush at op {f}: got {:?}, flushed value {:?}",
                    got.map(|(b, t)| describe(b, *t)),
                    at_flush.get(&n)
                );
            }
            stats[3] += 1;
        }

        // A SIGKILL tears at most the record being written; nothing else is damaged.
        let r = &seen.report;
        assert!(
            seen.verify_clean,
            "{ctx}: verify found damage after recovery: {:?}",
            seen.verify_problems
        );
        assert_eq!(r.segments, r.from_hints + r.scanned, "{ctx}: {r:?}");
        assert_eq!(
            (r.damaged_ranges, r.damaged_bytes),
            (0, 0),
            "{ctx}: a crash left damage in the middle: {r:?}"
        );
        assert!(r.damaged_segments <= 1, "{ctx}: {r:?}");
        assert!(r.torn_tail_bytes < SEGMENT_SIZE, "{ctx}: {r:?}");
        assert_eq!(r.expired, 0, "{ctx}: far-future TTLs expired: {r:?}");
        assert!(r.records >= seen.state.len() as u64, "{ctx}: {r:?}");

        if mode.evict {
            stats[0] += 1;
        }
        stats[1] += before_last
            .keys()
            .filter(|n| after_last.contains_key(n) && !seen.state.contains_key(n))
            .count() as u64;
        stats[2] = stats[2].max(transcript.ops.len() as u64);
        model = as_model(&seen.state, &[&before_last, &after_last]);
        last_digest = digest(seen.state.iter().map(|(n, (v, _))| (*n, v.as_slice())));
        next_op = transcript.ops.last().map_or(next_op, |(o, _)| o + 1);
    }

    // Finally open the real directory, close it cleanly, and check that the clean reopen loads
    // every segment from its hint and finds the same state.
    let first = observe(&dir);
    assert!(mismatches(&first.state, &model, false).is_empty());
    let second = observe(&dir);
    assert_eq!(
        second.report.scanned, 0,
        "after a clean close every segment has a hint: {:?}",
        second.report
    );
    assert_eq!(first.state, second.state);
    if rounds >= 12 {
        assert!(
            stats[1] > 0,
            "no round evicted a live key; the size bound was not exercised"
        );
    }
    eprintln!(
        "crash test: {rounds} kills ({} with eviction, {} live keys evicted), up to {} ops per child, {} rounds checked against a flush; {} keys at the end",
        stats[0], stats[1], stats[2], stats[3], model.len()
    );
}

#[test]
fn a_second_process_gets_locked_naming_the_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("store");
    // Reads up to the child's answer; the reader is handed back so the pipe stays open (a child
    // writing to a closed pipe would fail) until the caller drains it.
    let read_answer = |child: &mut Child| -> (String, BufReader<std::process::ChildStdout>) {
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            assert_ne!(
                reader.read_line(&mut line).unwrap(),
                0,
                "child ended without answering"
            );
            if let Some(at) = line.find(MARK) {
                return (line[at + MARK.len()..].trim_end().to_owned(), reader);
            }
        }
    };
    let finish = |child: &mut Child, mut reader: BufReader<std::process::ChildStdout>| {
        std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
        let status = child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    };

    // This process holds the directory; another process is refused.
    let store = FileStore::open(&dir, FileStoreOptions::default()).unwrap();
    store.set("k", b"v", None).unwrap();
    let mut child = spawn_child(&dir, "try-open", &scratch.path().join("a.stderr"));
    let (answer, reader) = read_answer(&mut child);
    finish(&mut child, reader);
    let rest = answer
        .strip_prefix("OPEN locked ")
        .unwrap_or_else(|| panic!("expected Error::Locked, got {answer:?}"));
    let parts: Vec<&str> = rest.splitn(3, '|').collect();
    assert_eq!(
        Path::new(parts[0]),
        dir,
        "Error::Locked names the wrong directory"
    );
    assert_eq!(Path::new(parts[1]), dir.join("LOCK"));
    assert!(
        parts[2].contains(&dir.display().to_string()),
        "the message does not name the directory: {}",
        parts[2]
    );

    // Once closed, the other process gets it.
    store.close().unwrap();
    let mut child = spawn_child(&dir, "try-open", &scratch.path().join("b.stderr"));
    let (answer, reader) = read_answer(&mut child);
    assert_eq!(answer, "OPEN ok");
    finish(&mut child, reader);

    // The other way round: a child holds it, this process is refused; SIGKILL frees it.
    let mut child = spawn_child(&dir, "hold-lock", &scratch.path().join("c.stderr"));
    let (answer, _reader) = read_answer(&mut child);
    assert_eq!(answer, "HELD");
    match FileStore::open(&dir, FileStoreOptions::default()) {
        Err(Error::Locked { path, .. }) => assert_eq!(path, dir),
        other => panic!("expected Error::Locked while the child holds the directory, got {other:?}"),
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let store = FileStore::open(&dir, FileStoreOptions::default()).unwrap();
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
    store.close().unwrap();
}
