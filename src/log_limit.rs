//! The log lines of failures that repeat on every call while their cause lasts (a full disk, a
//! full replay queue, an L1 that refuses writes): the first, then at most one a second, each
//! saying how many were held back since the last. A service making 10,000 calls a second would
//! otherwise write as many lines a second for as long as the outage lasts; the counters in
//! `stats()` count every failure whatever is logged.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// One kind of line; each place that logs keeps its own, so that one flood hides no other.
#[derive(Debug, Default)]
pub(crate) struct LogLimit(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    unlogged: u64,
}

impl LogLimit {
    const EVERY: Duration = Duration::from_secs(1);

    pub(crate) const fn new() -> Self {
        LogLimit(Mutex::new(State {
            last: None,
            unlogged: 0,
        }))
    }

    /// Whether one more line is written now; if so, how many were not since the last one.
    pub(crate) fn pass(&self) -> Option<u64> {
        self.pass_at(Instant::now())
    }

    fn pass_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.0.lock();
        if state
            .last
            .is_some_and(|last| now.saturating_duration_since(last) < Self::EVERY)
        {
            state.unlogged = state.unlogged.saturating_add(1);
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_passes_then_one_a_second_with_the_count_held_back() {
        let limit = LogLimit::new();
        let t0 = Instant::now();
        assert_eq!(limit.pass_at(t0), Some(0));
        for ms in [1, 500, 999] {
            assert_eq!(limit.pass_at(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(1)), Some(3));
        assert_eq!(limit.pass_at(t0 + Duration::from_millis(1500)), None);
        assert_eq!(limit.pass_at(t0 + Duration::from_secs(3)), Some(1));
    }
}
