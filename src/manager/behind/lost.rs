//! [`LostWrites`]: the write-behind writes L2 will never have, kept until a `flush` reports them.
//!
//! A write-behind set is acknowledged before L2 sees it, so when L2 refuses it, or it fails with
//! no replay queue to take it, no caller is left to tell. The log says so, but a program that must
//! know L2 has its writes (before it exits, say) asks `flush`: as `fsync` reports a writeback
//! error once, the first flush after a loss returns it ([`Error::WriteBehindLost`]), and the
//! next one starts afresh. Writes the replay queue took are not lost: they land once L2 answers.

use parking_lot::Mutex;

use crate::error::{key_for_error, Error, Result};
use crate::manager::policy::Shared;

/// What was lost since the last report: how many writes, the first one's key, and why.
#[derive(Debug)]
struct Lost {
    writes: u64,
    key: String,
    reason: String,
}

/// See the [module docs](self).
#[derive(Debug, Default)]
pub(crate) struct LostWrites(Mutex<Option<Lost>>);

impl LostWrites {
    /// Records that the writes of `keys` will never reach L2, for `reason` (the first reason
    /// since the last report is the one reported).
    pub(crate) fn note(&self, keys: &[&str], reason: impl FnOnce() -> String) {
        let Some(first) = keys.first() else {
            return;
        };
        let mut lost = self.0.lock();
        match lost.as_mut() {
            Some(lost) => lost.writes = lost.writes.saturating_add(keys.len() as u64),
            None => {
                *lost = Some(Lost {
                    writes: keys.len() as u64,
                    key: key_for_error(first),
                    reason: reason(),
                });
            }
        }
    }

    /// Puts back a loss [`take`](Self::take) returned that reached nobody; it comes before any
    /// loss noted since, whose writes it counts.
    pub(crate) fn restore(&self, writes: u64, key: String, reason: String) {
        let mut lost = self.0.lock();
        let since = lost.take().map_or(0, |since| since.writes);
        *lost = Some(Lost {
            writes: writes.saturating_add(since),
            key,
            reason,
        });
    }

    /// The loss since the last call, as an error; `Ok` if nothing was lost.
    pub(crate) fn take(&self) -> Result<()> {
        match self.0.lock().take() {
            Some(Lost { writes, key, reason }) => Err(Error::WriteBehindLost { writes, key, reason }),
            None => Ok(()),
        }
    }
}

impl Shared {
    /// A write of write-behind mode sent through by its caller (the queue was full) that L2
    /// failed, `fallback_on_error` hiding the failure: the caller was told it succeeded, as for
    /// any write-behind write, so with no replay queue to take it, it is lost as a queued write
    /// L2 failed is. `queued`: the replay queue's answer, whose error the caller is told.
    pub(crate) fn lost_through(&self, items: &[(&str, &[u8])], error: &Error, queued: &Result<()>) {
        let Some(queue) = &self.behind else {
            return;
        };
        if queued.is_err() || (self.replays_failures && self.replay.is_some()) {
            return;
        }
        let keys: Vec<&str> = items.iter().map(|(key, _)| *key).collect();
        queue.lost.note(&keys, || {
            format!("written through while the queue was full, they did not reach L2 ({error}) and no replay queue takes them (offline.replay needs a directory)")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_is_reported_once_with_its_first_key_and_reason_and_every_write_counted() {
        let lost = LostWrites::default();
        assert!(lost.take().is_ok());
        lost.note(&["a", "b"], || "first".into());
        lost.note(&["c"], || "second".into());
        match lost.take() {
            Err(Error::WriteBehindLost { writes, key, reason }) => {
                assert_eq!((writes, key.as_str(), reason.as_str()), (3, "a", "first"));
            }
            other => panic!("expected WriteBehindLost, got {other:?}"),
        }
        assert!(lost.take().is_ok(), "a loss is reported once");
    }

    #[test]
    fn noting_no_key_is_no_loss() {
        let lost = LostWrites::default();
        lost.note(&[], || "nothing".into());
        assert!(lost.take().is_ok());
    }
}
