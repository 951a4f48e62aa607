//! The replay queue under a simulated power loss (`crate::disk::sim`): every push and ack that
//! returned was fdatasynced, so after any crash the queue holds exactly the ops pushed and not
//! acked, newest per key, whatever the crash kept of what was in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{PushOutcome, ReplayAction, ReplayOptions, ReplayQueue};
use crate::disk::sim::Sim;
use crate::disk::Disk;

/// A directory `live` under a temporary root, written through a power-loss simulator.
fn simulated_dir() -> (tempfile::TempDir, std::path::PathBuf, Arc<Sim>) {
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let sim = Sim::new(&live);
    (root, live, sim)
}

/// Closes `queue`, keeps what a power loss (seeded `seed`) would of its directory, in `after`
/// under `root`, and reopens it there; with the text a failure gives: the seed, what the crash
/// kept and the calls made (`log`).
fn after_power_loss(
    queue: ReplayQueue,
    sim: &Sim,
    root: &std::path::Path,
    seed: u64,
    log: &[String],
) -> (ReplayQueue, String) {
    drop(queue);
    let after = root.join("after");
    let kept = sim.crash(seed, &after);
    let context = format!("seed {seed}; {kept}\n{}", log.join("\n"));
    match ReplayQueue::open(&after, ReplayOptions::default()) {
        Ok(queue) => (queue, context),
        Err(e) => panic!("reopen failed: {e}\n{context}"),
    }
}

fn run_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (root, live, sim) = simulated_dir();
    let options = || {
        ReplayOptions::default()
            .max_bytes(64 * 1024)
            .disk(Disk::simulated(Arc::clone(&sim)))
    };
    let mut queue = ReplayQueue::open(&live, options()).unwrap();
    // Per key, the op that must be pending (None: nothing pending).
    let mut model: BTreeMap<String, ReplayAction> = BTreeMap::new();
    let mut log = Vec::new();
    for n in 0..rng.random_range(1..120usize) {
        let key = format!("k{}", rng.random_range(0..12));
        match rng.random_range(0..10u8) {
            0..=4 => {
                let value = vec![n as u8; rng.random_range(0..3000)];
                queue.push_set(&key, &value, 0).unwrap();
                model.insert(
                    key.clone(),
                    ReplayAction::Set {
                        value,
                        expires_at_ms: 0,
                    },
                );
                log.push(format!("{n}: set {key}"));
            }
            5..=6 => {
                queue.push_delete(&key).unwrap();
                model.insert(key.clone(), ReplayAction::Delete);
                log.push(format!("{n}: delete {key}"));
            }
            7..=8 => {
                let ops = queue.pending_up_to(rng.random_range(1..6));
                queue.ack_many(&ops).unwrap();
                for op in &ops {
                    model.remove(&op.key);
                }
                log.push(format!("{n}: ack {}", ops.len()));
            }
            _ => {
                if rng.random_bool(0.5) {
                    queue.compact().unwrap();
                    log.push(format!("{n}: compact"));
                } else {
                    drop(queue);
                    queue = ReplayQueue::open(&live, options()).unwrap();
                    log.push(format!("{n}: reopen"));
                }
            }
        }
    }
    let (queue, context) = after_power_loss(queue, &sim, root.path(), seed, &log);
    let got: BTreeMap<String, ReplayAction> = queue
        .pending()
        .into_iter()
        .map(|op| (op.key, op.action))
        .collect();
    assert_eq!(got, model, "{context}");
    assert!(!queue.is_overflowed(), "{context}");
}

#[test]
fn after_a_simulated_power_loss_the_queue_holds_exactly_the_pushed_and_unacked_ops() {
    let cases: u64 = std::env::var("UNO_POWER_LOSS_CASES")
        .ok()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("UNO_POWER_LOSS_CASES={s:?} is not a number"))
        })
        .unwrap_or(2000);
    for seed in 0..cases {
        run_case(seed);
    }
}

/// Four threads push to their own keys while another acks what is pending, so pushes are written
/// in groups, between acks and compactions; once all calls returned, a power loss keeps the queue
/// exactly as it was in memory.
fn run_concurrent_case(seed: u64) {
    let (root, live, sim) = simulated_dir();
    let options = ReplayOptions::default()
        .max_bytes(256 * 1024)
        .disk(Disk::simulated(Arc::clone(&sim)));
    let queue = ReplayQueue::open(&live, options).unwrap();
    let done = std::sync::atomic::AtomicUsize::new(0);
    // Per key, the seq of its last push; and every seq an ack removed.
    let (last, acked): (BTreeMap<String, u64>, Vec<u64>) = std::thread::scope(|s| {
        let pushers: Vec<_> = (0..4u64)
            .map(|t| {
                let (queue, done) = (&queue, &done);
                s.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed * 8 + t);
                    let mut last = BTreeMap::new();
                    for n in 0..40usize {
                        let key = format!("t{t}k{}", rng.random_range(0..6));
                        let outcome = if rng.random_bool(0.7) {
                            queue.push_set(&key, &vec![n as u8; rng.random_range(0..3000)], 0)
                        } else {
                            queue.push_delete(&key)
                        };
                        let seq = outcome.unwrap().seq().unwrap();
                        last.insert(key, seq);
                    }
                    done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    last
                })
            })
            .collect();
        let acker = s.spawn(|| {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut acked = Vec::new();
            while done.load(std::sync::atomic::Ordering::SeqCst) < 4 {
                for op in queue.pending_up_to(rng.random_range(1..4)) {
                    if queue.ack(&op).unwrap() {
                        acked.push(op.seq);
                    }
                }
                std::thread::yield_now();
            }
            acked
        });
        let last = pushers.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (last, acker.join().unwrap())
    });
    let model: BTreeMap<String, u64> = last.into_iter().filter(|(_, seq)| !acked.contains(seq)).collect();
    let in_memory: BTreeMap<String, u64> = queue.pending().into_iter().map(|op| (op.key, op.seq)).collect();
    assert_eq!(in_memory, model, "seed {seed}: in memory");
    drop(queue);
    let after = root.path().join("after");
    let kept = sim.crash(seed, &after);
    let queue = ReplayQueue::open(&after, ReplayOptions::default()).unwrap();
    let got: BTreeMap<String, u64> = queue.pending().into_iter().map(|op| (op.key, op.seq)).collect();
    assert_eq!(got, model, "seed {seed}; {kept}");
    assert!(!queue.is_overflowed(), "seed {seed}; {kept}");
}

#[test]
fn pushes_from_many_threads_between_acks_survive_a_simulated_power_loss_exactly() {
    for seed in 0..40 {
        run_concurrent_case(seed);
    }
}

#[test]
fn a_queue_whose_open_created_its_directory_keeps_a_push_after_a_power_cut() {
    // The directory's name lives in its parent, which must be fsynced for the push to last.
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let sim = Sim::new(&live);
    let options = ReplayOptions::default().disk(Disk::simulated(Arc::clone(&sim)));
    let queue = ReplayQueue::open(&live, options).unwrap();
    queue.push_delete("k").unwrap();
    for seed in 0..64 {
        let after = root.path().join(format!("after-{seed}"));
        let kept = sim.crash(seed, &after);
        let reopened = ReplayQueue::open(&after, ReplayOptions::default()).unwrap();
        let pending: Vec<_> = reopened.pending_up_to(8).into_iter().map(|op| op.key).collect();
        assert_eq!(
            pending,
            ["k"],
            "seed {seed} ({kept}): an acknowledged push was lost"
        );
    }
}

/// A queue at its bounds, where pushes are downgraded, make room by turning other keys' sets
/// into deletes (records of their own, appended before the push's), or are lost and write the
/// overflow record: after a power loss the queue holds what it held in memory when the last
/// call returned, overflow flag included.
/// Returns how many pushes were downgraded, lost, and how many sets were given up for room.
fn run_bounded_case(seed: u64) -> (u64, u64, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (root, live, sim) = simulated_dir();
    let options = || {
        ReplayOptions::default()
            .max_bytes(8 * 1024)
            .max_entries(6)
            .disk(Disk::simulated(Arc::clone(&sim)))
    };
    let mut queue = ReplayQueue::open(&live, options()).unwrap();
    let mut log = Vec::new();
    let (mut own, mut lost, mut all) = (0u64, 0u64, 0u64);
    let mut count = |outcome: &PushOutcome| match outcome {
        PushOutcome::Downgraded { .. } => own += 1,
        PushOutcome::Overflowed => lost += 1,
        PushOutcome::Queued { .. } => {}
    };
    for n in 0..rng.random_range(1..80usize) {
        let key = format!("k{}", rng.random_range(0..10));
        match rng.random_range(0..10u8) {
            0..=5 => {
                let value = vec![n as u8; rng.random_range(0..3000)];
                let outcome = queue.push_set(&key, &value, 0).unwrap();
                count(&outcome);
                log.push(format!("{n}: set {key} ({} bytes): {outcome:?}", value.len()));
            }
            6..=7 => {
                let outcome = queue.push_delete(&key).unwrap();
                count(&outcome);
                log.push(format!("{n}: delete {key}: {outcome:?}"));
            }
            8 => {
                let ops = queue.pending_up_to(rng.random_range(1..4));
                queue.ack_many(&ops).unwrap();
                log.push(format!("{n}: ack {}", ops.len()));
            }
            _ => {
                all += queue.stats().downgraded;
                drop(queue);
                queue = ReplayQueue::open(&live, options()).unwrap();
                log.push(format!("{n}: reopen"));
            }
        }
    }
    let in_memory: BTreeMap<String, (u64, ReplayAction)> = queue
        .pending()
        .into_iter()
        .map(|op| (op.key, (op.seq, op.action)))
        .collect();
    let overflowed = queue.is_overflowed();
    all += queue.stats().downgraded;
    let (queue, context) = after_power_loss(queue, &sim, root.path(), seed, &log);
    let got: BTreeMap<String, (u64, ReplayAction)> = queue
        .pending()
        .into_iter()
        .map(|op| (op.key, (op.seq, op.action)))
        .collect();
    assert_eq!(got, in_memory, "{context}");
    assert_eq!(queue.is_overflowed(), overflowed, "{context}");
    (own, lost, all - own)
}

#[test]
fn a_queue_at_its_bounds_keeps_its_downgrades_room_and_overflow_across_a_simulated_power_loss() {
    let (mut downgraded, mut lost, mut room) = (0, 0, 0);
    for seed in 0..400 {
        let (d, l, r) = run_bounded_case(seed);
        (downgraded, lost, room) = (downgraded + d, lost + l, room + r);
    }
    // The cases reach every bound they are about.
    assert!(
        downgraded > 0 && lost > 0 && room > 0,
        "downgraded {downgraded}, lost {lost}, room made {room}"
    );
}
