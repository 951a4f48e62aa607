//! The share of sampled entries that were read, over the last ones counted: what the gates on
//! fills (`fillgate`) and the decay of reads (`decay`) decide on.

/// Counts of sampled entries read and not read, both halved when together they reach the
/// window, so the share is taken over the last half-window to window of entries counted and
/// follows a change of pattern.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadShare {
    pub(crate) read: u64,
    pub(crate) unread: u64,
    window: u64,
}

impl ReadShare {
    /// No entry counted yet, over a window of `window` entries.
    pub(crate) const fn new(window: u64) -> ReadShare {
        ReadShare {
            read: 0,
            unread: 0,
            window,
        }
    }

    /// Counts one sampled entry, `read` or not.
    pub(crate) fn count(&mut self, read: bool) {
        if read {
            self.read += 1;
        } else {
            self.unread += 1;
        }
        if self.counted() >= self.window {
            self.read /= 2;
            self.unread /= 2;
        }
    }

    /// Entries the share is taken over.
    pub(crate) fn counted(&self) -> u64 {
        self.read + self.unread
    }

    /// Whether at least `percent` of the entries counted were read (true while none were).
    pub(crate) fn at_least(&self, percent: u64) -> bool {
        self.read * 100 >= self.counted() * percent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_taken_over_the_last_half_window_to_window_of_entries() {
        let mut share = ReadShare::new(64);
        assert!(share.at_least(100), "nothing counted: no evidence against");
        for _ in 0..63 {
            share.count(false);
        }
        assert_eq!(share.counted(), 63);
        assert!(!share.at_least(1));
        // The window is reached: both counts are halved.
        share.count(true);
        assert_eq!((share.read, share.unread), (0, 31));
        for _ in 0..32 {
            share.count(true);
        }
        // 32 of 63 counted read since the halving: the old unread ones weigh half.
        assert!(share.at_least(50) && !share.at_least(60), "{share:?}");
    }
}
