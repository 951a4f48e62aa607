//! The key of a memory-tier entry ([`HotKey`], with the expiry and the weight of the value kept
//! under it) and a lookup of it ([`Probe`]).
//!
//! A key of up to [`INLINE`] bytes is kept inside the entry: a hit compares it without reading
//! a heap object of its own, a cache-line miss on many keys that a quick_cache entry keyed by
//! `String` pays on every hit (`SPLIT=tier` against `SPLIT=raw` in `benches/hot_split.rs`:
//! the tier alone went from 1.27x quick_cache to par). A longer key is one
//! heap block, the expiry and the weight then the key's bytes, so a `HotKey` is 24 bytes (a
//! `String`'s size) either way.
//!
//! The weight is what the entry counts against the tier's bound in bytes (see [`Weight`]),
//! kept as one byte: a power of two and eighths of it, rounded up, so it is never below the
//! weight given and, from 8 up, at most an eighth above it.

use std::cell::Cell;
use std::hash::{Hash, Hasher};

use quick_cache::Equivalent;

/// The longest key kept inside the entry, in bytes.
pub(super) const INLINE: usize = 13;

/// Bytes of expiry in front of a longer key's bytes.
const EXPIRY: usize = 8;
/// Bytes of expiry and weight class in front of a longer key's bytes.
const HEADER: usize = EXPIRY + 1;

/// The weight an entry counts against the tier's bound (see [`HotKey::weight`]).
pub(super) struct Weight;

impl Weight {
    /// The smallest class whose weight is at least `weight` (the largest class, past it).
    pub(super) fn class(weight: u64) -> u8 {
        // `of` never decreases as the class grows: a binary search.
        let (mut lo, mut hi) = (0u8, u8::MAX);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if Self::of(mid) >= weight {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        lo
    }

    /// The weight of `class`: `8 + class % 8` eighths of `2^(class / 8)`, so from 1 (class 0)
    /// to about 4 GB (class 255), in steps of an eighth from 8 up.
    pub(super) fn of(class: u8) -> u64 {
        ((8 + u64::from(class % 8)) << (class / 8)) >> 3
    }
}

/// A key of the tier and the absolute expiry (Unix ms; 0 = never) of the value kept under it.
/// The expiry rides in the key rather than beside the value so that an entry is the size of a
/// plain quick_cache entry of `V` (`Option<V>` of a struct with a `String`, `Vec`, `Box` or `Arc`
/// is the size of `V`): 8 more bytes per entry cost a hit about 15 % on 100 000 random keys.
/// Equality and hash are the key's alone; a [`Probe`] reads the expiry of the entry it matched.
/// quick_cache replaces the stored key with the value on an insert over an existing key, so a
/// value kept again takes its new expiry.
pub(super) enum HotKey {
    Inline {
        len: u8,
        /// See [`Weight`].
        class: u8,
        bytes: [u8; INLINE],
        expires_at_ms: u64,
    },
    /// The expiry (native byte order), the weight class, then the key.
    Heap(Box<[u8]>),
}

// A larger key makes every entry larger (see the type's docs).
const _: () = assert!(std::mem::size_of::<HotKey>() == 24);

impl HotKey {
    /// `weight`: what the entry counts against the tier's bound, rounded up (see [`Weight`]).
    pub(super) fn new(key: &str, expires_at_ms: u64, weight: u64) -> HotKey {
        let key = key.as_bytes();
        let class = Weight::class(weight);
        let mut bytes = [0u8; INLINE];
        if let (Some(inline), Ok(len)) = (bytes.get_mut(..key.len()), u8::try_from(key.len())) {
            inline.copy_from_slice(key);
            return HotKey::Inline {
                len,
                class,
                bytes,
                expires_at_ms,
            };
        }
        let mut heap = Vec::with_capacity(HEADER + key.len());
        heap.extend_from_slice(&expires_at_ms.to_ne_bytes());
        heap.push(class);
        heap.extend_from_slice(key);
        HotKey::Heap(heap.into_boxed_slice())
    }

    /// The key, if it is UTF-8 (it was made from a `&str`, so always).
    pub(super) fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(self.key()).ok()
    }

    fn key(&self) -> &[u8] {
        match self {
            HotKey::Inline { len, bytes, .. } => bytes.get(..usize::from(*len)).unwrap_or_default(),
            HotKey::Heap(heap) => heap.get(HEADER..).unwrap_or_default(),
        }
    }

    /// What the entry counts against the tier's bound.
    pub(super) fn weight(&self) -> u64 {
        Weight::of(match self {
            HotKey::Inline { class, .. } => *class,
            HotKey::Heap(heap) => heap.get(EXPIRY).copied().unwrap_or(0),
        })
    }

    /// The expiry of the value kept under the key (Unix ms; 0 = never).
    pub(super) fn expires_at_ms(&self) -> u64 {
        match self {
            HotKey::Inline { expires_at_ms, .. } => *expires_at_ms,
            HotKey::Heap(heap) => heap.first_chunk::<EXPIRY>().map_or(0, |e| u64::from_ne_bytes(*e)),
        }
    }
}

impl PartialEq for HotKey {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for HotKey {}

impl Hash for HotKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As a `Probe` hashes: the key's bytes.
        self.key().hash(state);
    }
}

/// A lookup of `key` that keeps the expiry of the entry it matched (0 if none): quick_cache
/// compares it with the stored key under the shard's lock, so the expiry is that of the value
/// the same lookup hands out.
pub(super) struct Probe<'a> {
    key: &'a str,
    expires_at_ms: Cell<u64>,
}

impl<'a> Probe<'a> {
    pub(super) fn new(key: &'a str) -> Self {
        Probe {
            key,
            expires_at_ms: Cell::new(0),
        }
    }

    /// The expiry of the entry the last lookup matched; 0 if none.
    pub(super) fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms.get()
    }
}

impl Hash for Probe<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.as_bytes().hash(state);
    }
}

impl Equivalent<HotKey> for Probe<'_> {
    fn equivalent(&self, stored: &HotKey) -> bool {
        if stored.key() == self.key.as_bytes() {
            self.expires_at_ms.set(stored.expires_at_ms());
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_its_probe_and_hands_over_its_expiry_inline_or_not() {
        let hasher = quick_cache::DefaultHashBuilder::default();
        for key in ["", "k", "thirteen byte", "fourteen bytes", &"long".repeat(40)] {
            let stored = HotKey::new(key, 1234, 700);
            assert_eq!(
                matches!(stored, HotKey::Inline { .. }),
                key.len() <= INLINE,
                "{key:?}"
            );
            let probe = Probe::new(key);
            assert_eq!(hasher.hash_one(&stored), hasher.hash_one(&probe), "{key:?}");
            assert!(probe.equivalent(&stored), "{key:?}");
            assert_eq!(probe.expires_at_ms(), 1234, "{key:?}");
            let other = Probe::new("another key entirely");
            assert!(!other.equivalent(&stored), "{key:?}");
            assert_eq!(other.expires_at_ms(), 0);
            assert!(stored == HotKey::new(key, 99, 5), "equality is the key's alone");
            assert!((700..=700 + 700 / 8).contains(&stored.weight()), "{key:?}");
        }
        assert!(
            !Probe::new("abc").equivalent(&HotKey::new("abcd", 0, 1)),
            "a prefix is another key"
        );
        assert!(!Probe::new("abd").equivalent(&HotKey::new("abc", 0, 1)));
        assert!(
            !Probe::new("ab").equivalent(&HotKey::new("ab\0", 0, 1)),
            "the padding is not part of the key"
        );
        assert!(!Probe::new("k").equivalent(&HotKey::new(&"k".repeat(40), 0, 1)));
    }

    #[test]
    fn a_weight_class_never_weighs_less_than_the_weight_it_was_made_for_nor_an_eighth_more() {
        for weight in (0..5_000u64).chain([1 << 20, 3 << 20, 64 << 20, 1 << 31, 4_000_000_000]) {
            let kept = Weight::of(Weight::class(weight));
            assert!(kept >= weight, "{weight} kept as {kept}");
            assert!(kept <= (weight + weight / 8).max(8), "{weight} kept as {kept}");
        }
        // Past the largest class: the largest.
        assert_eq!(Weight::class(u64::MAX), u8::MAX);
        assert!(Weight::of(u8::MAX) > 4_000_000_000);
    }
}
