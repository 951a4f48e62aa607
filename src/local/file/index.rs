//! The in-memory index: key → where its newest live record is.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use dashmap::DashMap;

/// Where a live value record is, and what the read path needs to check without touching disk.
#[derive(Debug)]
pub(crate) struct IndexEntry {
    pub(crate) segment: u64,
    pub(crate) offset: u32,
    pub(crate) len: u32,
    pub(crate) seq: u64,
    /// Absolute expiry in Unix ms; 0 means never.
    pub(crate) expires_at_ms: u64,
    /// Set by reads, cleared when the entry is given a second chance at eviction.
    pub(crate) referenced: AtomicBool,
    /// The suspicion epoch in which the entry was last confirmed fresh (0: never); see
    /// `FileStore::mark_all_suspect`.
    pub(crate) confirmed_epoch: AtomicU32,
}

impl IndexEntry {
    pub(crate) fn new(segment: u64, offset: u32, len: u32, seq: u64, expires_at_ms: u64) -> Self {
        IndexEntry {
            segment,
            offset,
            len,
            seq,
            expires_at_ms,
            referenced: AtomicBool::new(false),
            confirmed_epoch: AtomicU32::new(0),
        }
    }

    pub(crate) fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && now_ms >= self.expires_at_ms
    }

    pub(crate) fn is_at(&self, segment: u64, offset: u64) -> bool {
        self.segment == segment && u64::from(self.offset) == offset
    }

    /// Marks the entry as read. Checks first so hot keys do not bounce a cache line between cores.
    pub(crate) fn touch(&self) {
        if !self.referenced.load(Ordering::Relaxed) {
            self.referenced.store(true, Ordering::Relaxed);
        }
    }
}

/// The index hashes with aHash: several times faster than std's SipHash on short keys (SipHash
/// was a fifth of the time to rebuild a million-key index at open), and, seeded at random per
/// process, it still keeps hash flooding out. The hash is never written to disk, so it does not
/// need to be stable across runs.
pub(crate) type Index = DashMap<Box<str>, IndexEntry, ahash::RandomState>;
