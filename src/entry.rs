//! [`Entry`]: a value read from a level, with its expiry. A bottom module (it imports nothing
//! of the crate), so that both `storage` and `error` (a partial batch carries the entries it
//! read) can use it without a cycle.

use std::time::{Duration, SystemTime};

/// A value read from a level, with the moment it stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stored bytes.
    pub value: Vec<u8>,
    /// When the entry expires; `None` if it never does.
    pub expires_at: Option<SystemTime>,
}

impl Entry {
    /// Time left before expiry, measured against `now`; `None` if the entry never expires.
    /// An entry already past its expiry has `Some(Duration::ZERO)` left.
    #[must_use]
    pub fn remaining_ttl(&self, now: SystemTime) -> Option<Duration> {
        self.expires_at
            .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
    }
}
