//! The L2 value envelope: a 12-byte header in front of every value uno-cache writes to Redis or
//! Memcached, so that a reader knows when the value expires even where the server cannot say
//! (Memcached has no TTL query; a Redis `GET` does not return the TTL).
//!
//! Layout, version 1 (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     2  magic          0xF5 0x75 (0xF5 never starts valid UTF-8, so text and JSON
//!                              written by other programs are never mistaken for an envelope)
//!      2     1  version        1
//!      3     1  flags          bit 0 = HAS_EXPIRY; bits 1..=7 reserved, must be 0
//!      4     8  expires_at_ms  absolute expiry, Unix milliseconds; 0 = never (iff HAS_EXPIRY clear)
//!     12     n  value          the caller's bytes, unchanged
//! ```
//!
//! A reader refuses (with [`EnvelopeError`]) anything shorter than the header, with other magic,
//! another version, a reserved flag bit set, or a flag that disagrees with the expiry field. The
//! levels turn that into [`Error::InvalidEnvelope`](crate::Error::InvalidEnvelope): a value
//! without a valid envelope is never returned as if it were the caller's bytes.
//!
//! ```
//! use uno_cache::distributed::envelope;
//! let bytes = envelope::encode(b"hello", Some(1_700_000_000_000));
//! let decoded = envelope::decode(&bytes)?;
//! assert_eq!(decoded.value, b"hello");
//! assert_eq!(decoded.expires_at_ms, Some(1_700_000_000_000));
//! # Ok::<(), envelope::EnvelopeError>(())
//! ```

/// The two magic bytes every envelope starts with.
pub const MAGIC: [u8; 2] = [0xF5, 0x75];
/// The envelope version this build writes and reads.
pub const VERSION: u8 = 1;
/// Flag bit: the expiry field holds an absolute expiry.
pub const FLAG_HAS_EXPIRY: u8 = 0b0000_0001;
/// Every flag bit this version knows.
const KNOWN_FLAGS: u8 = FLAG_HAS_EXPIRY;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const FLAGS_OFFSET: usize = VERSION_OFFSET + size_of::<u8>();
const EXPIRY_OFFSET: usize = FLAGS_OFFSET + size_of::<u8>();
/// Bytes in front of the value.
pub const HEADER_LEN: usize = EXPIRY_OFFSET + size_of::<u64>();

/// A decoded envelope, borrowing the value from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The caller's bytes.
    pub value: &'a [u8],
    /// Absolute expiry in Unix milliseconds; `None` if the value never expires.
    pub expires_at_ms: Option<u64>,
}

/// Why bytes are not a valid envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Fewer bytes than the header.
    #[error("{len} bytes, shorter than the {HEADER_LEN}-byte envelope header")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The first two bytes are not [`MAGIC`].
    #[error("starts with {found:02x?}, not the envelope magic {MAGIC:02x?}")]
    BadMagic {
        /// The first two bytes.
        found: [u8; 2],
    },
    /// Written by another envelope version.
    #[error(
        "envelope version {found}, but this build reads version {VERSION}; read it with a newer uno-cache"
    )]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// A reserved flag bit is set.
    #[error("unknown flag bits {flags:#010b}")]
    UnknownFlags {
        /// The flags byte found.
        flags: u8,
    },
    /// The HAS_EXPIRY flag disagrees with the expiry field.
    #[error("flags {flags:#010b} disagree with expiry field {expires_at_ms}")]
    Inconsistent {
        /// The flags byte found.
        flags: u8,
        /// The expiry field found.
        expires_at_ms: u64,
    },
}

/// Encodes `value` with an absolute expiry (`None` = never). An expiry of `Some(0)` is stored
/// as 1 ms after the epoch, so that 0 keeps meaning "never".
#[must_use]
pub fn encode(value: &[u8], expires_at_ms: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + value.len());
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    match expires_at_ms {
        Some(at) => {
            out.push(FLAG_HAS_EXPIRY);
            out.extend_from_slice(&at.max(1).to_le_bytes());
        }
        None => {
            out.push(0);
            out.extend_from_slice(&0u64.to_le_bytes());
        }
    }
    out.extend_from_slice(value);
    out
}

/// Decodes an envelope, checking every header field.
///
/// # Errors
/// [`EnvelopeError`] if `bytes` is not a valid version-1 envelope.
pub fn decode(bytes: &[u8]) -> Result<Decoded<'_>, EnvelopeError> {
    let (header, value) = bytes
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(EnvelopeError::TooShort { len: bytes.len() })?;
    let [m0, m1, version, flags, e0, e1, e2, e3, e4, e5, e6, e7] = *header;
    if [m0, m1] != MAGIC {
        return Err(EnvelopeError::BadMagic { found: [m0, m1] });
    }
    if version != VERSION {
        return Err(EnvelopeError::UnsupportedVersion { found: version });
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(EnvelopeError::UnknownFlags { flags });
    }
    let expires_at_ms = u64::from_le_bytes([e0, e1, e2, e3, e4, e5, e6, e7]);
    let has_expiry = flags & FLAG_HAS_EXPIRY != 0;
    if has_expiry != (expires_at_ms != 0) {
        return Err(EnvelopeError::Inconsistent { flags, expires_at_ms });
    }
    Ok(Decoded {
        value,
        expires_at_ms: has_expiry.then_some(expires_at_ms),
    })
}

/// Decodes an owned buffer in place: the header is cut off without copying into a new buffer.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn decode_owned(mut bytes: Vec<u8>) -> Result<(Vec<u8>, Option<u64>), EnvelopeError> {
    let expires_at_ms = decode(&bytes)?.expires_at_ms;
    bytes.drain(..HEADER_LEN);
    Ok((bytes, expires_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_and_without_expiry() {
        for expiry in [None, Some(1), Some(1_700_000_000_123), Some(u64::MAX)] {
            let bytes = encode(b"value", expiry);
            assert_eq!(bytes.len(), HEADER_LEN + 5);
            let decoded = decode(&bytes).unwrap();
            assert_eq!(decoded.value, b"value");
            assert_eq!(decoded.expires_at_ms, expiry);
            #[cfg(any(feature = "redis", feature = "memcached"))]
            {
                let (value, at) = decode_owned(bytes).unwrap();
                assert_eq!((value.as_slice(), at), (&b"value"[..], expiry));
            }
        }
    }

    #[test]
    fn expiry_zero_is_not_confused_with_never() {
        let decoded = decode(&encode(b"", Some(0))).unwrap().expires_at_ms;
        assert_eq!(decoded, Some(1));
    }

    #[test]
    fn refuses_every_malformed_header() {
        let good = encode(b"v", Some(5));
        assert_eq!(decode(&good[..11]), Err(EnvelopeError::TooShort { len: 11 }));
        assert_eq!(
            decode(b"{\"json\":\"text written by another program\"}"),
            Err(EnvelopeError::BadMagic { found: *b"{\"" })
        );
        let mut bad = good.clone();
        bad[2] = 2;
        assert_eq!(decode(&bad), Err(EnvelopeError::UnsupportedVersion { found: 2 }));
        let mut bad = good.clone();
        bad[3] = 0b11;
        assert_eq!(decode(&bad), Err(EnvelopeError::UnknownFlags { flags: 0b11 }));
        let mut bad = good.clone();
        bad[3] = 0;
        assert_eq!(
            decode(&bad),
            Err(EnvelopeError::Inconsistent {
                flags: 0,
                expires_at_ms: 5
            })
        );
        let mut bad = encode(b"v", None);
        bad[3] = FLAG_HAS_EXPIRY;
        assert!(matches!(decode(&bad), Err(EnvelopeError::Inconsistent { .. })));
    }
}
