//! scratch
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

struct Zipf {
    cdf: Vec<f64>,
}
impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for i in 1..=n {
            acc += 1.0 / (i as f64).powf(s);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Zipf { cdf }
    }
    fn sample(&self, u: f64) -> usize {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}

fn main() {
    use rand::{Rng, SeedableRng};
    let n_keys = 100_000usize;
    let cap = n_keys / 10;
    let z = Zipf::new(n_keys, 0.99);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // scramble key ids so popularity does not follow insertion order
    let trace: Vec<u64> = (0..2_000_000)
        .map(|_| (z.sample(rng.random::<f64>()) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let keys: Vec<String> = trace.iter().map(|k| format!("key:{k}")).collect();
    // quick_cache
    let qc: quick_cache::sync::Cache<String, Arc<[u8]>> = quick_cache::sync::Cache::new(cap);
    let val: Arc<[u8]> = Arc::from(vec![0u8; 64]);
    let mut hits = 0u64;
    for k in &keys {
        if qc.get(k.as_str()).is_some() {
            hits += 1
        } else {
            qc.insert(k.clone(), val.clone())
        }
    }
    println!(
        "quick_cache hit ratio {:.2}%",
        hits as f64 * 100.0 / keys.len() as f64
    );
    let mk: moka::sync::Cache<String, Arc<[u8]>> = moka::sync::Cache::new(cap as u64);
    let mut hits = 0u64;
    for k in &keys {
        if mk.get(k.as_str()).is_some() {
            hits += 1
        } else {
            mk.insert(k.clone(), val.clone())
        }
    }
    println!("moka hit ratio {:.2}%", hits as f64 * 100.0 / keys.len() as f64);
    // hit cost
    let hot: Vec<String> = (0..1000).map(|i| format!("hot:{i}")).collect();
    for k in &hot {
        qc.insert(k.clone(), val.clone());
        mk.insert(k.clone(), val.clone());
    }
    mk.run_pending_tasks();
    for round in 0..3 {
        let t = Instant::now();
        for _ in 0..1000 {
            for k in &hot {
                black_box(qc.get(k.as_str()));
            }
        }
        let q = t.elapsed().as_nanos() as f64 / 1e6;
        let t = Instant::now();
        for _ in 0..1000 {
            for k in &hot {
                black_box(mk.get(k.as_str()));
            }
        }
        let m = t.elapsed().as_nanos() as f64 / 1e6;
        let t = Instant::now();
        for _ in 0..1000 {
            for _k in &hot {
                black_box(std::time::SystemTime::now());
            }
        }
        let c = t.elapsed().as_nanos() as f64 / 1e6;
        let t = Instant::now();
        for _ in 0..1000 {
            for _k in &hot {
                black_box(Instant::now());
            }
        }
        let i = t.elapsed().as_nanos() as f64 / 1e6;
        println!("round {round}: qc get {q:.1} ns, moka get {m:.1} ns, SystemTime::now {c:.1} ns, Instant::now {i:.1}");
    }
}
