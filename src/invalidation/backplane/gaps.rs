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
use std::time::{Duration, Instant, SystemTime};

use super::InstanceId;

/// Origins whose highest number is remembered at most; past that, the table keeps the half
/// heard from last (a sender met again is counted from its next message on).
const MAX_TRACKED_ORIGINS: usize = 4_096;

/// The highest number seen of every sender, when it was last heard from and what the subscriber
/// knew had arrived then, and the skips left open in their sequences.
#[derive(Debug, Default)]
pub(super) struct Sequences {
    last: HashMap<InstanceId, Heard>,
    gaps: Gaps,
}

/// A sender's highest number seen, and its last message's arrival.
#[derive(Debug, Clone, Copy)]
struct Heard {
    seq: u64,
    at: Instant,
    /// The subscriber's `alive` then: everything published before it had arrived. The sender
    /// published its next number after its last one, so after this: a loss of that next number
    /// is reported `since` no later than this.
    alive: SystemTime,
}

impl Sequences {
    /// Notes message `seq` of `origin` as seen at `at`, when everything published before `alive`
    /// had arrived; returns how many numbers it skipped.
    pub(super) fn note(&mut self, origin: InstanceId, seq: u64, at: Instant, alive: SystemTime) -> u64 {
        if self.last.len() >= MAX_TRACKED_ORIGINS && !self.last.contains_key(&origin) {
            self.forget_the_quiet_half();
        }
        let heard = self.last.entry(origin).or_insert(Heard { seq: 0, at, alive });
        let before = heard.alive;
        heard.at = at;
        heard.alive = alive;
        let last = &mut heard.seq;
        let tracked = self.gaps.note(origin, *last, seq, at, before);
        // The first message seen from an origin sets its base; after that, a skip is a gap.
        let skipped = if *last != 0 && seq > last.saturating_add(1) {
            seq - *last - 1
        } else {
            0
        };
        // A skip too large to track is a loss already (see `Gaps`); taken as the base, a number
        // far ahead (a sender's id reused, a message forged on the channel) made every later
        // message of the sender look like a late one filling a skip, and no loss of it was ever
        // seen again. So the sender is counted anew from its next message.
        *last = if tracked { (*last).max(seq) } else { 0 };
        skipped
    }

    /// Makes room in the table: senders with open skips stay (forgotten, a message lost before
    /// would never be reported, and a late one would set a base below numbers already seen;
    /// they are few, the open skips are bounded), and so does the half of the others heard from
    /// last. Cleared, the table forgot senders that were talking: many short-lived instances
    /// (each run of a tool a new id) pushed out a long-lived one, whose next loss, if it fell
    /// just then, went unseen.
    fn forget_the_quiet_half(&mut self) {
        let mut heard: Vec<Instant> = self.last.values().map(|h| h.at).collect();
        let keep_from = heard.len() / 2;
        let cut = *heard.select_nth_unstable(keep_from).1;
        let gaps = &self.gaps;
        self.last
            .retain(|origin, h| h.at > cut || gaps.open.contains_key(origin));
    }

    /// If a skip has stayed open for `bound` by `now` (see [`Gaps::overdue`]), the moment after
    /// which the lost messages were published: the subscriber's `alive` when the message before
    /// the earliest open skip arrived.
    pub(super) fn overdue(&mut self, now: Instant, bound: Duration) -> Option<SystemTime> {
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
    /// The earliest `alive` of a message before an open skip (or before the overflow): see
    /// [`Sequences::overdue`].
    since: Option<SystemTime>,
}

impl Gaps {
    /// Notes message `seq` of `origin`, whose highest number seen before was `last` (0: none)
    /// and arrived when everything published before `before` had. Returns false if it skipped
    /// more numbers than are tracked (a loss once the bound passes).
    fn note(&mut self, origin: InstanceId, last: u64, seq: u64, at: Instant, before: SystemTime) -> bool {
        if last != 0 && seq > last.saturating_add(1) {
            let skipped = seq - last - 1;
            self.since = Some(self.since.map_or(before, |since| since.min(before)));
            if self
                .count
                .saturating_add(usize::try_from(skipped).unwrap_or(usize::MAX))
                > MAX_OPEN
            {
                self.overflowed_at.get_or_insert(at);
                return false;
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
        true
    }

    /// Whether a skip has stayed open for `bound` by `now`, and if so since when messages were
    /// lost (see [`Sequences::overdue`]); every open skip is then forgotten, since the loss it
    /// is reported as covers them all.
    fn overdue(&mut self, now: Instant, bound: Duration) -> Option<SystemTime> {
        let late = |seen: Instant| now.saturating_duration_since(seen) >= bound;
        let overdue = self.overflowed_at.is_some_and(late)
            || self
                .open
                .values()
                .flat_map(BTreeMap::values)
                .any(|&seen| late(seen));
        if !overdue {
            return None;
        }
        let since = self.since.unwrap_or(SystemTime::UNIX_EPOCH);
        *self = Gaps::default();
        Some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn a_skip_is_overdue_only_if_no_late_message_fills_it_within_the_bound() {
        let (a, b) = (InstanceId::random(), InstanceId::random());
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut gaps = Gaps::default();
        gaps.note(a, 0, 7, start, T0); // the first message of a sender sets its base
        gaps.note(a, 7, 8, start, T0);
        assert!(gaps.overdue(start + bound * 2, bound).is_none(), "no skip");
        gaps.note(a, 8, 10, start, T0); // 9 skipped
        gaps.note(b, 3, 5, start, T0); // 4 skipped
        gaps.note(a, 10, 9, start + bound / 2, T0); // 9 arrives late
        assert!(gaps.overdue(start + bound / 2, bound).is_none());
        assert!(gaps.overdue(start + bound, bound).is_some(), "b's 4 never came");
        assert!(gaps.overdue(start + bound * 3, bound).is_none(), "reported once");
        gaps.note(a, 10, 5_000, start, T0);
        assert!(
            gaps.overdue(start + bound, bound).is_some(),
            "too many to track is a loss too"
        );
    }

    #[test]
    fn a_skip_stays_open_when_the_table_of_senders_starts_again() {
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut sequences = Sequences::default();
        let lossy = InstanceId::random();
        sequences.note(lossy, 1, start, T0);
        assert_eq!(sequences.note(lossy, 3, start, T0), 1);
        for _ in 0..MAX_TRACKED_ORIGINS {
            assert_eq!(sequences.note(InstanceId::random(), 9, start, T0), 0);
        }
        assert!(
            sequences.last.len() < MAX_TRACKED_ORIGINS,
            "the table started again"
        );
        assert!(
            sequences.overdue(start + bound, bound).is_some(),
            "message 2 never came"
        );
    }

    #[test]
    fn a_jump_too_large_to_track_is_a_loss_and_the_sender_is_counted_anew_from_its_next_message() {
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut sequences = Sequences::default();
        let sender = InstanceId::random();
        sequences.note(sender, 1, start, T0);
        // Forged on the channel, or a sender's id reused.
        sequences.note(sender, u64::MAX, start, T0);
        assert!(
            sequences.overdue(start + bound, bound).is_some(),
            "the jump is a loss"
        );
        sequences.note(sender, 2, start + bound, T0);
        assert_eq!(sequences.note(sender, 4, start + bound, T0), 1, "3 skipped");
        assert!(
            sequences.overdue(start + bound * 2, bound).is_some(),
            "a later loss of the sender is seen"
        );
    }

    #[test]
    fn a_sender_heard_from_lately_stays_when_the_table_of_senders_is_full() {
        let start = Instant::now();
        let mut sequences = Sequences::default();
        // Senders heard from once (each run of a tool a new id), then one that goes on talking.
        for i in 0..MAX_TRACKED_ORIGINS - 1 {
            sequences.note(
                InstanceId::random(),
                1,
                start + Duration::from_micros(i as u64),
                T0,
            );
        }
        let talking = InstanceId::random();
        let now = start + Duration::from_secs(1);
        sequences.note(talking, 1, now, T0);
        sequences.note(InstanceId::random(), 1, now, T0);
        assert!(
            sequences.last.len() <= MAX_TRACKED_ORIGINS / 2 + 2,
            "room was made"
        );
        assert_eq!(sequences.note(talking, 3, now, T0), 1, "its skip of 2 is seen");
    }

    #[test]
    fn a_late_message_fills_its_skip_after_the_table_of_senders_started_again() {
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let mut sequences = Sequences::default();
        let late = InstanceId::random();
        sequences.note(late, 1, start, T0);
        sequences.note(late, 3, start, T0);
        for _ in 0..MAX_TRACKED_ORIGINS {
            sequences.note(InstanceId::random(), 9, start, T0);
        }
        sequences.note(late, 2, start, T0);
        assert_eq!(
            sequences.note(late, 4, start, T0),
            0,
            "no skip below what was seen"
        );
        assert!(
            sequences.overdue(start + bound, bound).is_none(),
            "the skip of 2 was filled"
        );
    }

    /// A loss is reported `since` no later than the lost message can have been published: the
    /// subscriber's `alive` when the sender's message before it arrived. The `alive` of the
    /// check, later, let a handler that distrusts only what changed since keep what the lost
    /// message should have dropped.
    #[test]
    fn a_loss_is_reported_since_the_message_before_it_arrived() {
        let start = Instant::now();
        let bound = Duration::from_secs(1);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut sequences = Sequences::default();
        let (a, b) = (InstanceId::random(), InstanceId::random());
        sequences.note(a, 1, start, at(10));
        sequences.note(b, 1, start, at(20));
        sequences.note(b, 3, start, at(30)); // b's 2, published after at(20), is lost
        sequences.note(a, 2, start, at(40));
        assert_eq!(sequences.overdue(start + bound, bound), Some(at(20)));
        sequences.note(a, 5, start + bound, at(50)); // a's 3 and 4, published after at(40)
        assert_eq!(sequences.overdue(start + bound * 2, bound), Some(at(40)));
    }
}
