//! The backplane's wire format: one binary, versioned, checksummed message per `PUBLISH`.
//!
//! The byte layout is specified in the "Invalidation backplane messages" section of `storage-format.md`;
//! the constants below are its offsets. Binary rather than JSON because a message is mostly keys:
//! keys go in as raw UTF-8 with a length in front (no escaping, no base64, no parser), a
//! reader checks exact lengths and a CRC instead of trusting a text parser's recovery, and the
//! header (origin, sequence) is a fixed 36 bytes instead of ~80 characters of field names.
//!
//! ```
//! use uno_cache::invalidation::{InstanceId, Invalidation, InvalidationMessage};
//!
//! let msg = InvalidationMessage {
//!     origin: InstanceId::from_u128(7),
//!     seq: 1,
//!     invalidation: Invalidation::Keys(vec!["user:42".to_owned()]),
//! };
//! let bytes = msg.encode();
//! assert_eq!(InvalidationMessage::decode(&bytes)?, msg);
//! assert!(InvalidationMessage::decode(b"not ours").is_err());
//! # Ok::<(), uno_cache::Error>(())
//! ```

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// First bytes of every message.
pub const MESSAGE_MAGIC: [u8; 4] = *b"UNOI";
/// The wire-format version this build writes and reads.
pub const MESSAGE_VERSION: u8 = 1;

const MAGIC_AT: usize = 0;
const VERSION_AT: usize = MAGIC_AT + MESSAGE_MAGIC.len();
const KIND_AT: usize = VERSION_AT + size_of::<u8>();
const RESERVED_AT: usize = KIND_AT + size_of::<u8>();
const ORIGIN_AT: usize = RESERVED_AT + size_of::<u16>();
const SEQ_AT: usize = ORIGIN_AT + size_of::<u128>();
const COUNT_AT: usize = SEQ_AT + size_of::<u64>();
/// Length of the fixed header (before the strings).
pub const HEADER_LEN: usize = COUNT_AT + size_of::<u32>();
/// Length of the CRC-32 trailer.
const CRC_LEN: usize = size_of::<u32>();
/// The smallest valid message (`All`: a header, no strings, a CRC).
pub const MIN_MESSAGE_LEN: usize = HEADER_LEN + CRC_LEN;
/// The largest message [`publish`](super::Backplane::publish) sends (32 MiB); split bigger key
/// lists.
pub const MAX_MESSAGE_LEN: usize = 32 * 1024 * 1024;

const KIND_KEYS: u8 = 1;
const KIND_TAGS: u8 = 2;
const KIND_PREFIX: u8 = 3;
const KIND_ALL: u8 = 4;

/// Which L1 entries to drop.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Invalidation {
    /// These keys (a set or a delete of each, or a batch of them).
    Keys(Vec<String>),
    /// Every key written with any of these tags.
    Tags(Vec<String>),
    /// Every key that starts with this prefix (the empty prefix matches every key).
    Prefix(String),
    /// Every key (a `clear`).
    All,
}

/// The most bytes of keys one `Keys` message built by [`Invalidation::keys_in_messages`] holds.
/// Far below [`MAX_MESSAGE_LEN`]: Redis buffers each subscriber's messages and disconnects one
/// whose buffer passes `client-output-buffer-limit pubsub` (32 MiB hard, 8 MiB for a minute by
/// default), so a near-limit message, or a few queued ones, would cost every receiver its
/// subscription.
pub const KEYS_MESSAGE_BUDGET: usize = 1024 * 1024;

impl Invalidation {
    /// `keys` as `Keys` messages, in order, each holding at most [`KEYS_MESSAGE_BUDGET`] bytes
    /// of keys (and at least one key): one message unless the list is longer than that.
    #[must_use]
    pub fn keys_in_messages(keys: &[&str]) -> Vec<Invalidation> {
        split_keys(keys, KEYS_MESSAGE_BUDGET)
    }

    /// How many strings (keys or tags) the message carries: what the republish bound counts.
    #[must_use]
    pub fn weight(&self) -> usize {
        match self {
            Invalidation::Keys(items) | Invalidation::Tags(items) => items.len().max(1),
            Invalidation::Prefix(_) | Invalidation::All => 1,
        }
    }

    fn kind(&self) -> u8 {
        match self {
            Invalidation::Keys(_) => KIND_KEYS,
            Invalidation::Tags(_) => KIND_TAGS,
            Invalidation::Prefix(_) => KIND_PREFIX,
            Invalidation::All => KIND_ALL,
        }
    }

    fn strings(&self) -> &[String] {
        match self {
            Invalidation::Keys(items) | Invalidation::Tags(items) => items,
            Invalidation::Prefix(prefix) => std::slice::from_ref(prefix),
            Invalidation::All => &[],
        }
    }
}

/// [`Invalidation::keys_in_messages`] with any `budget` of bytes per message.
fn split_keys(keys: &[&str], budget: usize) -> Vec<Invalidation> {
    let mut messages = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut bytes = 0usize;
    for key in keys {
        let cost = size_of::<u32>().saturating_add(key.len());
        if !current.is_empty() && bytes.saturating_add(cost) > budget {
            messages.push(Invalidation::Keys(std::mem::take(&mut current)));
            bytes = 0;
        }
        current.push((*key).to_owned());
        bytes = bytes.saturating_add(cost);
    }
    if !current.is_empty() || messages.is_empty() {
        messages.push(Invalidation::Keys(current));
    }
    messages
}

/// The id of one cache instance (one process, or one manager in it): 128 random bits, so that
/// two instances never share one by chance.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct InstanceId(u128);

impl InstanceId {
    /// A fresh random id. The bits come from the standard library's per-process random hash
    /// keys (seeded by the operating system), mixed with the process id, the time and a counter.
    #[must_use]
    pub fn random() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let half = |salt: u64| {
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(salt);
            hasher.write_u128(nanos);
            hasher.write_u32(std::process::id());
            hasher.write_u64(count);
            hasher.finish()
        };
        InstanceId((u128::from(half(1)) << 64) | u128::from(half(2)))
    }

    /// An id given by the caller (for tests, or an id stored elsewhere). Give it to one run
    /// only: an instance numbers its messages from 1 each time it connects, and a receiver that
    /// heard the id's earlier run takes the new run's numbers, up to the old run's highest, for
    /// late re-sends, so a message of the new run lost on the way goes unreported until then.
    #[must_use]
    pub const fn from_u128(id: u128) -> Self {
        InstanceId(id)
    }

    /// The id as a number.
    #[must_use]
    pub const fn as_u128(self) -> u128 {
        self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

/// One message on the channel: what to invalidate, who sent it, and its number in the sender's
/// sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidationMessage {
    /// The instance that published it; an instance ignores its own messages.
    pub origin: InstanceId,
    /// Per-origin sequence number, from 1, in publish order. A receiver that sees a number skip
    /// knows it missed (or will receive late) a message from that origin.
    pub seq: u64,
    /// What to drop.
    pub invalidation: Invalidation,
}

/// Defined in `crate::error`, the bottom of the crate, which wraps it in [`Error::InvalidMessage`].
pub use crate::error::MessageError;

impl InvalidationMessage {
    /// The encoded length in bytes.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        let strings: usize = self
            .invalidation
            .strings()
            .iter()
            .map(|s| size_of::<u32>().saturating_add(s.len()))
            .fold(0, usize::saturating_add);
        MIN_MESSAGE_LEN.saturating_add(strings)
    }

    /// The message as bytes (see `storage-format.md`). Strings longer than `u32::MAX`
    /// bytes cannot be encoded; [`publish`](super::Backplane::publish) refuses messages over
    /// [`MAX_MESSAGE_LEN`] before they get here.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let strings = self.invalidation.strings();
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&MESSAGE_MAGIC);
        out.push(MESSAGE_VERSION);
        out.push(self.invalidation.kind());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&self.origin.0.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&u32::try_from(strings.len()).unwrap_or(u32::MAX).to_le_bytes());
        for s in strings {
            out.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a message; any other bytes are refused with [`Error::InvalidMessage`], never a
    /// panic.
    ///
    /// # Errors
    /// [`Error::InvalidMessage`] saying which check failed.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode(bytes).map_err(|reason| Error::InvalidMessage { reason })
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at.checked_add(4)?)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// The decoder behind [`InvalidationMessage::decode`], with the bare reason.
pub(crate) fn decode(bytes: &[u8]) -> std::result::Result<InvalidationMessage, MessageError> {
    let too_short = MessageError::TooShort {
        len: bytes.len(),
        min: MIN_MESSAGE_LEN,
    };
    if bytes.len() < MIN_MESSAGE_LEN {
        // A short payload that is not even ours says so first.
        if bytes.len() >= MESSAGE_MAGIC.len() && bytes.get(..MESSAGE_MAGIC.len()) != Some(&MESSAGE_MAGIC[..])
        {
            return Err(MessageError::BadMagic);
        }
        return Err(too_short);
    }
    if bytes.get(MAGIC_AT..VERSION_AT) != Some(&MESSAGE_MAGIC[..]) {
        return Err(MessageError::BadMagic);
    }
    let version = bytes.get(VERSION_AT).copied().ok_or(too_short.clone())?;
    if version != MESSAGE_VERSION {
        return Err(MessageError::UnsupportedVersion {
            found: version,
            supported: MESSAGE_VERSION,
        });
    }
    let body_len = bytes.len() - CRC_LEN;
    let (body, trailer) = bytes.split_at(body_len);
    let stored = le_u32(trailer, 0).ok_or(too_short.clone())?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(MessageError::BadChecksum { stored, computed });
    }
    let kind = body.get(KIND_AT).copied().ok_or(too_short.clone())?;
    if !matches!(kind, KIND_KEYS | KIND_TAGS | KIND_PREFIX | KIND_ALL) {
        return Err(MessageError::UnknownKind(kind));
    }
    let reserved = body
        .get(RESERVED_AT..ORIGIN_AT)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or(too_short.clone())?;
    if reserved != 0 {
        return Err(MessageError::ReservedNotZero(reserved));
    }
    let origin = body
        .get(ORIGIN_AT..SEQ_AT)
        .and_then(|b| b.try_into().ok())
        .map(u128::from_le_bytes)
        .ok_or(too_short.clone())?;
    let seq = body
        .get(SEQ_AT..COUNT_AT)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or(too_short.clone())?;
    let count = le_u32(body, COUNT_AT).ok_or(too_short)?;
    let count_ok = match kind {
        KIND_PREFIX => count == 1,
        KIND_ALL => count == 0,
        _ => true,
    };
    if !count_ok {
        return Err(MessageError::BadCount { kind, count });
    }
    // Each string takes at least its 4-byte length: a count beyond that is a lie, refused before
    // allocating for it.
    let room = (body_len - HEADER_LEN) / size_of::<u32>();
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > room {
        return Err(MessageError::Truncated { index: room });
    }
    let mut strings = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for index in 0..count {
        let len = le_u32(body, at).ok_or(MessageError::Truncated { index })?;
        let start = at + size_of::<u32>();
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| start.checked_add(len))
            .filter(|&end| end <= body_len)
            .ok_or(MessageError::Truncated { index })?;
        let raw = body.get(start..end).ok_or(MessageError::Truncated { index })?;
        let s = std::str::from_utf8(raw).map_err(|_| MessageError::NotUtf8 { index })?;
        strings.push(s.to_owned());
        at = end;
    }
    if at != body_len {
        return Err(MessageError::TrailingBytes { count: body_len - at });
    }
    let invalidation = match kind {
        KIND_KEYS => Invalidation::Keys(strings),
        KIND_TAGS => Invalidation::Tags(strings),
        KIND_PREFIX => Invalidation::Prefix(strings.into_iter().next().unwrap_or_default()),
        _ => Invalidation::All,
    };
    Ok(InvalidationMessage {
        origin: InstanceId(origin),
        seq,
        invalidation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(invalidation: Invalidation) -> InvalidationMessage {
        InvalidationMessage {
            origin: InstanceId::from_u128(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10),
            seq: 42,
            invalidation,
        }
    }

    #[test]
    fn a_long_key_list_is_split_in_order_into_messages_within_the_budget() {
        let keys: Vec<String> = (0..1_000)
            .map(|i| format!("key:{i:0>width$}", width = i % 40))
            .collect();
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let budget = 2_000;
        let messages = split_keys(&refs, budget);
        assert!(messages.len() > 10, "{} messages", messages.len());
        let mut joined = Vec::new();
        for m in &messages {
            let Invalidation::Keys(part) = m else {
                panic!("{m:?}")
            };
            let bytes: usize = part.iter().map(|k| 4 + k.len()).sum();
            assert!(
                bytes <= budget && !part.is_empty(),
                "{bytes} bytes, {} keys",
                part.len()
            );
            joined.extend(part.iter().cloned());
        }
        assert_eq!(joined, keys);
        // A key longer than the budget still goes, alone; an empty list is one empty message.
        let long = "x".repeat(3_000);
        assert_eq!(split_keys(&[&long, "a"], budget).len(), 2);
        assert_eq!(split_keys(&[], budget), vec![Invalidation::Keys(Vec::new())]);
        assert_eq!(Invalidation::keys_in_messages(&refs).len(), 1);
    }

    #[test]
    fn every_kind_round_trips() {
        for inv in [
            Invalidation::Keys(vec!["a".into(), String::new(), "ключ".into()]),
            Invalidation::Keys(Vec::new()),
            Invalidation::Tags(vec!["tag:1".into()]),
            Invalidation::Prefix("user:".into()),
            Invalidation::Prefix(String::new()),
            Invalidation::All,
        ] {
            let m = msg(inv);
            let bytes = m.encode();
            assert_eq!(bytes.len(), m.encoded_len());
            assert_eq!(decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn header_offsets_chain_to_36_bytes() {
        assert_eq!(
            (VERSION_AT, KIND_AT, RESERVED_AT, ORIGIN_AT, SEQ_AT, COUNT_AT),
            (4, 5, 6, 8, 24, 32)
        );
        assert_eq!(HEADER_LEN, 36);
        assert_eq!(MIN_MESSAGE_LEN, 40);
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let bytes = msg(Invalidation::Keys(vec!["k1".into(), "key-two".into()])).encode();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "prefix of {len} bytes accepted");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "flip of bit {bit} in byte {i} accepted");
            }
        }
    }

    #[test]
    fn lying_counts_and_lengths_are_typed_errors_with_a_valid_crc() {
        let reseal = |mut body: Vec<u8>| {
            let crc = crc32fast::hash(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            body
        };
        let good = msg(Invalidation::Keys(vec!["k".into()])).encode();
        let body = good[..good.len() - 4].to_vec();

        let mut huge_count = body.clone();
        huge_count[COUNT_AT..HEADER_LEN].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&reseal(huge_count)),
            Err(MessageError::Truncated { .. })
        ));

        let mut long_string = body.clone();
        long_string[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            decode(&reseal(long_string)),
            Err(MessageError::Truncated { index: 0 })
        );

        let mut trailing = body.clone();
        trailing.push(0);
        assert_eq!(
            decode(&reseal(trailing)),
            Err(MessageError::TrailingBytes { count: 1 })
        );

        let mut not_utf8 = body.clone();
        not_utf8[HEADER_LEN + 4] = 0xff;
        assert_eq!(decode(&reseal(not_utf8)), Err(MessageError::NotUtf8 { index: 0 }));

        let mut kind = body.clone();
        kind[KIND_AT] = 9;
        assert_eq!(decode(&reseal(kind)), Err(MessageError::UnknownKind(9)));

        let mut all_with_strings = body.clone();
        all_with_strings[KIND_AT] = KIND_ALL;
        assert_eq!(
            decode(&reseal(all_with_strings)),
            Err(MessageError::BadCount {
                kind: KIND_ALL,
                count: 1
            })
        );

        let mut reserved = body.clone();
        reserved[RESERVED_AT] = 1;
        assert_eq!(decode(&reseal(reserved)), Err(MessageError::ReservedNotZero(1)));

        let mut version = body;
        version[VERSION_AT] = 2;
        assert_eq!(
            decode(&reseal(version)),
            Err(MessageError::UnsupportedVersion {
                found: 2,
                supported: 1
            })
        );
    }

    #[test]
    fn foreign_payloads_are_bad_magic() {
        assert_eq!(decode(b"hello"), Err(MessageError::BadMagic));
        assert_eq!(
            decode(&[b'x'; 100]),
            Err(MessageError::BadMagic),
            "long foreign payload"
        );
        assert!(matches!(
            decode(b"UN"),
            Err(MessageError::TooShort { len: 2, .. })
        ));
    }

    #[test]
    fn random_ids_differ() {
        let ids: std::collections::HashSet<InstanceId> = (0..1000).map(|_| InstanceId::random()).collect();
        assert_eq!(ids.len(), 1000);
        assert_eq!(InstanceId::from_u128(255).to_string(), format!("{:032x}", 255));
    }
}
