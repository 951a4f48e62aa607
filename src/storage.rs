//! The one trait every cache level implements: file, memory, Redis, Memcached, or your own.

use std::time::{Duration, SystemTime};

use crate::error::Result;

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

/// How much a level holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageSize {
    /// Live entries.
    pub items: u64,
    /// Bytes of live entries as the level counts them (keys, values and per-entry overhead for the
    /// file store; keys and values for the memory store).
    pub bytes: u64,
}

/// A cache level: bytes in, bytes out, keyed by string.
///
/// The trait is object safe, so the level can be picked from configuration at run time
/// (`Box<dyn Storage>`). Implementations know nothing of other levels; multi-level policy lives
/// only in the manager.
///
/// Contract for every implementation:
/// - `get` never returns an expired entry or bytes other than the ones last `set` for the key.
/// - `set` with `Some(ttl)` requires `ttl > 0` ([`Error::ZeroTtl`](crate::Error::ZeroTtl)
///   otherwise); `None` means the level's default (which may be "never").
/// - A failed call changes nothing that a later successful `get` could observe as garbage.
pub trait Storage: Send + Sync + 'static {
    /// Reads a key. A miss is `Ok(None)`.
    fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Writes a key, replacing any previous value.
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Deletes a key; `true` if a live entry was removed.
    fn delete(&self, key: &str) -> Result<bool>;

    /// Reads several keys; the result has one slot per key, in order.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Writes several keys with the same TTL.
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.set(key, value, ttl)?;
        }
        Ok(())
    }

    /// Deletes several keys; returns how many live entries were removed.
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            if self.delete(key)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// How much the level holds now.
    fn size(&self) -> Result<StorageSize>;

    /// Removes every entry.
    fn clear(&self) -> Result<()>;

    /// Makes every completed write durable, where the level has such a notion.
    fn flush(&self) -> Result<()> {
        Ok(())
    }
}
