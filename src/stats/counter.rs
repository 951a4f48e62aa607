//! Striped counters and fixed-bucket latency histograms: what the manager's hot path writes,
//! lock-free (see the [parent module](super) for what a hit pays and how latency is sampled).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::LatencyStats;

/// Stripes a thread may own: its owner alone writes one, with a plain load and store.
pub(super) const OWNED: usize = 8;
/// Stripes shared by the threads beyond the first [`OWNED`] alive, written with `fetch_add`.
const SHARED: usize = 8;
/// Stripes per counter.
pub(crate) const STRIPES: usize = OWNED + SHARED;
/// One L1 read, and one L1 write, in this many (per thread) is timed.
pub(crate) const L1_SAMPLE_EVERY: u32 = 16;
/// One typed read in this many (per thread) is timed.
pub(crate) const READ_SAMPLE_EVERY: u32 = 64;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Padded(AtomicU64);

/// A counter striped over cache lines; exact, cheap to bump from many threads.
#[derive(Debug, Default)]
pub(crate) struct Counter([Padded; STRIPES]);

/// The stripe of this thread, in every counter. An owned stripe is given back when the thread
/// ends, for the next thread to claim.
struct Stripe {
    index: usize,
    owned: bool,
}

impl Stripe {
    fn claim() -> Stripe {
        let all = (1u64 << OWNED) - 1;
        let mut owners = OWNERS.load(Ordering::Relaxed);
        while owners & all != all {
            let bit = (!owners & all).trailing_zeros();
            // Acquire: the last owner's counts, given back with Release, are seen by the plain
            // increments that follow.
            match OWNERS.compare_exchange_weak(
                owners,
                owners | (1 << bit),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Stripe {
                        index: bit as usize,
                        owned: true,
                    }
                }
                Err(now) => owners = now,
            }
        }
        Stripe {
            index: OWNED + NEXT_SHARED.fetch_add(1, Ordering::Relaxed) % SHARED,
            owned: false,
        }
    }
}

impl Drop for Stripe {
    fn drop(&mut self) {
        if self.owned {
            OWNERS.fetch_and(!(1u64 << self.index), Ordering::Release);
        }
    }
}

thread_local! {
    static STRIPE: Stripe = Stripe::claim();
    static COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// The L1 writes' own countdown: a thread that alternates reads and writes (a miss, then the
    /// set that fills it) would otherwise time the same kind of call every time.
    static WRITE_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
    /// The typed reads' own countdown: one shared with the L1 calls they make would time the
    /// same one of the two calls every time.
    static READ_COUNTDOWN: Cell<u32> = const { Cell::new(0) };
}
/// Which of the [`OWNED`] stripes a thread owns now, one bit each.
static OWNERS: AtomicU64 = AtomicU64::new(0);
static NEXT_SHARED: AtomicUsize = AtomicUsize::new(0);

impl Counter {
    /// Why two kinds of stripe: a `fetch_add` (a locked instruction) keeps the CPU from
    /// starting the loads that follow it, which costs a memory-tier hit on 100 000 random keys
    /// about 15 % (`memory_tier_hit` in `benches/manager.rs`); the owner of a stripe, its only
    /// writer, adds with a plain load and store. A thread past its stripe's end (a thread-local
    /// destructor counting) adds to a shared stripe.
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        let (index, owned) = STRIPE.try_with(|s| (s.index, s.owned)).unwrap_or((OWNED, false));
        if let Some(cell) = self.0.get(index) {
            if owned {
                cell.0
                    .store(cell.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
            } else {
                cell.0.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    #[inline]
    pub(crate) fn incr(&self) {
        self.add(1);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

/// Starts a timer on one L1 read in [`L1_SAMPLE_EVERY`] (per thread); `None` otherwise.
pub(crate) fn sample_l1() -> Option<Instant> {
    sample(&COUNTDOWN, L1_SAMPLE_EVERY)
}

/// Starts a timer on one L1 write in [`L1_SAMPLE_EVERY`] (per thread); `None` otherwise.
pub(crate) fn sample_l1_write() -> Option<Instant> {
    sample(&WRITE_COUNTDOWN, L1_SAMPLE_EVERY)
}

/// Starts a timer on one typed read in [`READ_SAMPLE_EVERY`] (per thread), end to end; its
/// memory-tier step is timed from the same start.
#[inline]
pub(crate) fn sample_read() -> Option<Instant> {
    sample(&READ_COUNTDOWN, READ_SAMPLE_EVERY)
}

#[inline]
fn sample(countdown: &'static std::thread::LocalKey<Cell<u32>>, every: u32) -> Option<Instant> {
    countdown.with(|c| {
        let left = c.get();
        if left == 0 {
            c.set(every - 1);
            Some(Instant::now())
        } else {
            c.set(left - 1);
            None
        }
    })
}

const SUB_BITS: u32 = 2;
const SUBS: u64 = 1 << SUB_BITS;
/// Values below this are their own bucket.
const LINEAR: u64 = 16;
const BUCKETS: usize = 256;

/// A fixed-bucket, lock-free latency histogram in nanoseconds.
#[derive(Debug)]
pub(crate) struct Histogram {
    buckets: Box<[AtomicU64]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(ns: u64) -> usize {
    if ns < LINEAR {
        return usize::try_from(ns).unwrap_or(0);
    }
    let msb = 63 - u64::from(ns.leading_zeros());
    let sub = (ns >> (msb - u64::from(SUB_BITS))) & (SUBS - 1);
    usize::try_from(LINEAR + (msb - 4) * SUBS + sub).unwrap_or(BUCKETS - 1)
}

/// The largest value that falls in bucket `b`.
fn upper_bound(b: usize) -> u64 {
    let b = b as u64;
    if b < LINEAR {
        return b;
    }
    let msb = (b - LINEAR) / SUBS + 4;
    let sub = (b - LINEAR) % SUBS;
    let step = 1u64 << (msb - u64::from(SUB_BITS));
    ((SUBS + sub) * step).saturating_add(step - 1)
}

impl Histogram {
    pub(crate) fn record(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_of(ns)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub(crate) fn record_since(&self, start: Option<Instant>) {
        if let Some(start) = start {
            self.record(start.elapsed());
        }
    }

    pub(crate) fn snapshot(&self) -> LatencyStats {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let samples: u64 = counts.iter().sum();
        let percentile = |p: u64| -> u64 {
            if samples == 0 {
                return 0;
            }
            // The smallest bucket holding at least p % of the samples.
            let rank = (samples * p).div_ceil(100).max(1);
            let mut seen = 0;
            for (b, n) in counts.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return upper_bound(b);
                }
            }
            0
        };
        LatencyStats {
            samples,
            p50_ns: percentile(50),
            p99_ns: percentile(99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bounds_contain_their_values() {
        let mut last = 0;
        for ns in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 2, u64::MAX]) {
            let b = bucket_of(ns);
            assert!(b >= last || ns > 5000, "bucket went down at {ns}");
            assert!(b < BUCKETS);
            assert!(upper_bound(b) >= ns, "bound {} below {ns}", upper_bound(b));
            if ns >= LINEAR {
                // Within 25 %.
                assert!(upper_bound(b) - ns <= ns / 4 + 1, "{ns} -> {}", upper_bound(b));
            }
            if ns <= 5000 {
                last = b;
            }
        }
    }

    #[test]
    fn percentiles_pick_the_right_buckets() {
        let h = Histogram::default();
        for _ in 0..98 {
            h.record(Duration::from_nanos(100));
        }
        h.record(Duration::from_micros(50));
        h.record(Duration::from_micros(50));
        let s = h.snapshot();
        assert_eq!(s.samples, 100);
        assert!((100..=125).contains(&s.p50_ns), "{s:?}");
        assert!((50_000..=62_500).contains(&s.p99_ns), "{s:?}");
        assert_eq!(Histogram::default().snapshot(), LatencyStats::default());
    }

    #[test]
    fn counters_are_exact_across_threads() {
        let c = Counter::default();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        c.incr();
                    }
                });
            }
        });
        assert_eq!(c.get(), 40_000);
    }

    #[test]
    fn counters_stay_exact_as_threads_beyond_the_owned_stripes_come_and_go() {
        let c = Counter::default();
        // Waves of more threads than there are owned stripes: owned stripes change hands as
        // threads end, the threads beyond them share stripes.
        for _ in 0..3 {
            std::thread::scope(|s| {
                for _ in 0..(OWNED + 4) {
                    s.spawn(|| {
                        for _ in 0..5_000 {
                            c.incr();
                        }
                        c.add(3);
                    });
                }
            });
        }
        assert_eq!(c.get(), 3 * (OWNED as u64 + 4) * 5_003);
    }

    #[test]
    fn one_l1_call_in_16_and_one_typed_read_in_64_are_sampled_per_thread() {
        std::thread::spawn(|| {
            let sampled = (0..L1_SAMPLE_EVERY * 10)
                .filter(|_| sample_l1().is_some())
                .count();
            assert_eq!(sampled, 10);
        })
        .join()
        .unwrap();
        std::thread::spawn(|| {
            let sampled = (0..READ_SAMPLE_EVERY * 10)
                .filter(|_| sample_read().is_some())
                .count();
            assert_eq!(sampled, 10);
        })
        .join()
        .unwrap();
    }
}
