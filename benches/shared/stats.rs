//! Summaries every bench prints: medians, the figure the README quotes, so that one disturbed
//! trial on a shared machine never decides a line.

/// The median of `values` (the mean of the two middle ones for an even count); NaN if empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Runs `ours` and `peer` `rounds` times each, alternating which goes first, and returns the
/// median of what each returned (a rate): so that a drift of the machine during the run (a
/// server warming up, another process) weighs on both sides alike.
#[allow(dead_code)] // Each bench binary compiles this module; not every one alternates.
pub fn alternating(
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut peer: impl FnMut() -> f64,
) -> (f64, f64) {
    let (mut o, mut p) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for round in 0..rounds {
        if round % 2 == 0 {
            o.push(ours());
            p.push(peer());
        } else {
            p.push(peer());
            o.push(ours());
        }
    }
    (median(&o), median(&p))
}

/// The `p` quantile (0.0 to 1.0) of `sorted` (ascending), interpolated between the two nearest
/// ranks, so that `p = 0.5` is the median for an even count too (the nearest rank gave the upper
/// of the two middle values); NaN if empty.
#[allow(dead_code)] // Each bench binary compiles this module; not every one takes quantiles.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let rank = last as f64 * p.clamp(0.0, 1.0);
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Whether this run is the short one: `UNO_BENCH_QUICK` set to anything but empty or `0`, or a
/// `--quick` argument. One rule for every bench, so that `UNO_BENCH_QUICK=0` asks each of them
/// for its full run and no figure labelled full comes from a short one.
#[allow(dead_code)] // Each bench binary compiles this module; hot_split has no quick run.
pub fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var("UNO_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}
