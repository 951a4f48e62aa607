//! Skips in another instance's sequence that stay unfilled: a message lost while the subscription
//! itself stayed healthy. In a Redis Cluster the publisher's node forwards a `PUBLISH` to the
//! subscriber's over the cluster bus, and a bus link that fails, or a node that dies right after
//! taking the `PUBLISH`, loses it; the subscriber's `PING`s to its own node go on being answered,
//! so only the next message of that sender, one number further on, shows it.
//!
//! A skip may still be filled: a message re-sent after a failed publish arrives later, with its
//! own number. So a skip counts as a loss only once it has stayed open for the staleness bound,
//! the time the subscriber has to notice a loss at all.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::InstanceId;

/// Origins whose highest number is remembered at most; past that, the table starts again (a
/// sender met again is counted from its next message on).
const MAX_TRACKED_ORIGINS: usize = 4_096;

/// The highest number seen of every sender, and the skips left open in their sequences.
#[derive(Debug, Default)]
pub(super) struct Sequences {
    last: HashMap<InstanceId, u64>,
    gaps: Gaps,
}

impl Sequences {
    /// Notes message `seq` of `origin` as seen at `at`; returns how many numbers it skipped.
    pub(super) fn note(&mut self, origin: InstanceId, seq: u64, at: Instant) -> u64 {
        if self.last.len() >= MAX_TRACKED_ORIGINS && !self.last.contains_key(&origin) {
            // Senders with open skips stay, with their highest number: forgotten, a message
            // lost before the table started again would never be reported, and a late one
            // would not fill its skip but set a base below numbers already seen. They are few:
            // the open skips are bounded.
            let gaps = &self.gaps;
            self.last.retain(|origin, _| gaps.open.contains_key(origin));
        }
        let last = self.last.entry(origin).or_insert(0);
        self.gaps.note(origin, *last, seq, at);
        // The first message seen from an origin sets its base; after that, a skip is a gap.
        let skipped = if *last != 0 && seq > last.saturating_add(1) {
            seq - *last - 1
        } else {
            0
        };
        *last = (*last).max(seq);
        skipped
    }

    /// Whether a skip has stayed open for `bound` by `now` (see [`Gaps::overdue`]).
    pub(super) fn overdue(&mut self, now: Instant, bound: Duration) -> bool {
        self.gaps.overdue(now, bound)
    }
}

/// Open skips remembered at most, over every sender; past that, the next check is a loss (a
/// sender that skipped that many is not worth tracking number by number).
const MAX_OPEN: usize = 4_096;

/// The open skips of every sender, with when each was seen.
#[derive(Debug, Default)]
struct Gaps {
    open: HashMap<InstanceId, BTreeMap<u64, Instant>>,
    count: usize,
    /// When more skips were seen than [`MAX_OPEN`] holds.
    overflowed_at: Option<Instant>,
}

impl Gaps {
    /// Notes message `seq` of `origin`, whose highest number seen before was `last` (0: none).
    fn note(&mut self, origin: InstanceId, last: u64, seq: u64, at: Instant) {
        if last != 0 && seq > last.saturating_add(1) {
            let skipped = seq - last - 1;
            if self
                .count
                .saturating_add(usize::try_from(skipped).unwrap_or(usize::MAX))
                > MAX_OPEN
            {
                self.overflowed_at.get_or_insert(at);
                return;
            }
            let open = self.open.entry(origin).or_default();
            for missing in last + 1..seq {
                if open.insert(missing, at).is_none() {
                    self.count += 1;
                }
            }
        } else if seq <= last {
            // A late message (a re-send) fills its skip.
            if let Some(open) = self.open.get_mut(&origin) {
                if open.remove(&seq).is_some() {
                    self.count -= 1;
                }
                if open.is_empty() {
                    self.open.remove(&origin);
                }
            }
        }
    }

    /// Whether a skip has stayed open for `bound` by `now`; if so every open skip is forgotten,
    /// since the loss it is reported as covers them all.
    fn overdue(&mut self, now: Instant, bound: Duration) -> bool {
        let late = |seen: Instant| now.saturating_duration_since(seen) >= bound;
        let overdue = self.overflowed_at.is_some_and(late)
            || self
                .open
                .values()
                .flat_map(BTreeMap::values)
                .any(|&seen| late(seen));
        if overdue {
            *self = Gaps::default();
        }
        overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_is_overdue_only_if_no_late_message_fills_it_within_the_bound() {
        let (a, b) = (InstanceId::random(), InstanceId::random());
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut gaps = Gaps::default();
        gaps.note(a, 0, 7, start); // the first message of a sender sets its base
        gaps.note(a, 7, 8, start);
        assert!(!gaps.overdue(start + bound * 2, bound), "no skip");
        gaps.note(a, 8, 10, start); // 9 skipped
        gaps.note(b, 3, 5, start); // 4 skipped
        gaps.note(a, 10, 9, start + bound / 2); // 9 arrives late
        assert!(!gaps.overdue(start + bound / 2, bound));
        assert!(gaps.overdue(start + bound, bound), "b's 4 never came");
        assert!(!gaps.overdue(start + bound * 3, bound), "reported once");
        gaps.note(a, 10, 5_000, start);
        assert!(
            gaps.overdue(start + bound, bound),
            "too many to track is a loss too"
        );
    }

    #[test]
    fn a_skip_stays_open_when_the_table_of_senders_starts_again() {
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut sequences = Sequences::default();
        let lossy = InstanceId::random();
        sequences.note(lossy, 1, start);
        assert_eq!(sequences.note(lossy, 3, start), 1);
        for _ in 0..MAX_TRACKED_ORIGINS {
            assert_eq!(sequences.note(InstanceId::random(), 9, start), 0);
        }
        assert!(
            sequences.last.len() < MAX_TRACKED_ORIGINS,
            "the table started again"
        );
        assert!(sequences.overdue(start + bound, bound), "message 2 never came");
    }

    #[test]
    fn a_late_message_fills_its_skip_after_the_table_of_senders_started_again() {
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut sequences = Sequences::default();
        let late = InstanceId::random();
        sequences.note(late, 1, start);
        sequences.note(late, 3, start);
        for _ in 0..MAX_TRACKED_ORIGINS {
            sequences.note(InstanceId::random(), 9, start);
        }
        sequences.note(late, 2, start);
        assert_eq!(sequences.note(late, 4, start), 0, "no skip below what was seen");
        assert!(
            !sequences.overdue(start + bound, bound),
            "the skip of 2 was filled"
        );
    }
}
