//! The items a write appends, whatever shape the caller holds them in.

use std::time::Duration;

use crate::clock;

/// One value a write appends: `(key, value)` takes the batch's TTL, `(key, value, ttl)` has its
/// own (a backfill of entries with different remaining TTLs).
pub(super) trait ValueItem {
    fn key(&self) -> &str;
    fn value(&self) -> &[u8];
    fn ttl(&self, batch: Option<Duration>) -> Option<Duration>;

    /// The absolute expiry (Unix ms, 0 = never) of the value written at `now_ms`.
    fn expires_at_ms(&self, batch: Option<Duration>, now_ms: u64) -> u64 {
        self.ttl(batch).map_or(0, |t| clock::expiry_ms(now_ms, t))
    }
}

impl<T: ValueItem> ValueItem for &T {
    fn key(&self) -> &str {
        (**self).key()
    }
    fn value(&self) -> &[u8] {
        (**self).value()
    }
    fn ttl(&self, batch: Option<Duration>) -> Option<Duration> {
        (**self).ttl(batch)
    }
}

impl ValueItem for (&str, &[u8]) {
    fn key(&self) -> &str {
        self.0
    }
    fn value(&self) -> &[u8] {
        self.1
    }
    fn ttl(&self, batch: Option<Duration>) -> Option<Duration> {
        batch
    }
}

impl ValueItem for (&str, &[u8], Option<Duration>) {
    fn key(&self) -> &str {
        self.0
    }
    fn value(&self) -> &[u8] {
        self.1
    }
    fn ttl(&self, _batch: Option<Duration>) -> Option<Duration> {
        self.2
    }
}
