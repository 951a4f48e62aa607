//! The replay queue under a simulated power loss (`crate::disk::sim`): every push and ack that
//! returned was fdatasynced, so after any crash the queue holds exactly the ops pushed and not
//! acked, newest per key, whatever the crash kept of what was in flight.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{ReplayAction, ReplayOptions, ReplayQueue};
use crate::disk::sim::Sim;
use crate::disk::Disk;

fn run_case(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    std::fs::create_dir(&live).unwrap();
    let sim = Sim::new(&live);
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
    drop(queue);
    let after = root.path().join("after");
    let kept = sim.crash(seed, &after);
    let context = || format!("seed {seed}; {kept}\n{}", log.join("\n"));
    let queue = match ReplayQueue::open(&after, ReplayOptions::default()) {
        Ok(queue) => queue,
        Err(e) => panic!("reopen failed: {e}\n{}", context()),
    };
    let got: BTreeMap<String, ReplayAction> = queue
        .pending()
        .into_iter()
        .map(|op| (op.key, op.action))
        .collect();
    assert_eq!(got, model, "{}", context());
    assert!(!queue.is_overflowed(), "{}", context());
}

#[test]
fn after_a_simulated_power_loss_the_queue_holds_exactly_the_pushed_and_unacked_ops() {
    let cases: u64 = std::env::var("UNO_POWER_LOSS_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    for seed in 0..cases {
        run_case(seed);
    }
}
