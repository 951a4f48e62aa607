//! How the manager's typed API turns values into bytes and back.
//!
//! Every encoded value starts with one tag byte naming the codec that wrote it, followed by the
//! codec's payload:
//!
//! | tag    | codec                                                  |
//! |--------|--------------------------------------------------------|
//! | `0xB2` | bincode 2 through serde, `bincode::config::standard()` |
//! | `0x4A` | JSON through `serde_json`                              |
//!
//! Decoding checks the tag first, so a value is never decoded by the wrong codec: a mismatch is
//! [`Error::CodecMismatch`] naming the key and both codecs. The raw-bytes API
//! (`CacheManager::get_raw`, …) stores bytes untouched, with no tag.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{key_for_error, Error, Result};

/// Tag byte of bincode 2 (standard configuration).
const TAG_BINCODE: u8 = 0xB2;
/// Tag byte of JSON.
const TAG_JSON: u8 = 0x4A;
/// The whole value of a cached "absent" answer (`get_or_load_optional`): one byte that no codec
/// tag uses, so it reads the same whichever codec wrote it and never decodes as a value.
pub(crate) const ABSENT: &[u8] = &[0x00];

/// A serde codec with a tag byte: bincode 2 (the default) or JSON.
///
/// ```
/// use uno_cache::Codec;
/// let codec = Codec::json();
/// let bytes = codec.encode("k", &vec![1, 2, 3])?;
/// assert_eq!(codec.decode::<Vec<i32>>("k", &bytes)?, vec![1, 2, 3]);
/// assert!(Codec::bincode().decode::<Vec<i32>>("k", &bytes).is_err());
/// # Ok::<(), uno_cache::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec(Kind);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Bincode,
    Json,
}

impl Codec {
    /// bincode 2 with its standard configuration (varint integers, little endian): compact and
    /// fast. The default.
    #[must_use]
    pub const fn bincode() -> Codec {
        Codec(Kind::Bincode)
    }

    /// JSON: larger and slower, but readable by other languages and tools.
    #[must_use]
    pub const fn json() -> Codec {
        Codec(Kind::Json)
    }

    /// The codec's name, as used in errors and configuration ("bincode", "json").
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self.0 {
            Kind::Bincode => "bincode",
            Kind::Json => "json",
        }
    }

    /// The tag byte written in front of every value.
    #[must_use]
    pub const fn tag(self) -> u8 {
        match self.0 {
            Kind::Bincode => TAG_BINCODE,
            Kind::Json => TAG_JSON,
        }
    }

    /// Encodes `value` as the tag byte followed by the payload. `key` only names the value in
    /// errors.
    ///
    /// # Errors
    /// [`Error::Encode`] if serde refuses the value (for example a map with non-string keys in
    /// JSON).
    pub fn encode<T: Serialize + ?Sized>(self, key: &str, value: &T) -> Result<Vec<u8>> {
        let mut out = vec![self.tag()];
        let encoded = match self.0 {
            Kind::Bincode => {
                bincode::serde::encode_into_std_write(value, &mut out, bincode::config::standard())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Kind::Json => serde_json::to_writer(&mut out, value).map_err(|e| e.to_string()),
        };
        encoded.map_err(|reason| Error::Encode {
            key: key_for_error(key),
            codec: self.name(),
            reason,
        })?;
        Ok(out)
    }

    /// Decodes bytes written by [`Codec::encode`] with the same codec.
    ///
    /// # Errors
    /// [`Error::CodecMismatch`] if the tag names another codec (or none, for example bytes stored
    /// through the raw API); [`Error::Decode`] if the payload is not a `T` (trailing bytes
    /// included).
    pub fn decode<T: DeserializeOwned>(self, key: &str, bytes: &[u8]) -> Result<T> {
        let Some((&tag, payload)) = bytes.split_first() else {
            return Err(self.mismatch(key, "an empty value (no codec tag)".to_owned()));
        };
        if tag != self.tag() {
            let stored = match tag {
                TAG_BINCODE => Codec::bincode().name().to_owned(),
                TAG_JSON => Codec::json().name().to_owned(),
                other => format!("an unknown codec (tag 0x{other:02X})"),
            };
            return Err(self.mismatch(key, stored));
        }
        let decoded = match self.0 {
            Kind::Bincode => {
                match bincode::serde::decode_from_slice::<T, _>(payload, bincode::config::standard()) {
                    Ok((value, used)) if used == payload.len() => Ok(value),
                    Ok((_, used)) => Err(format!(
                        "{} trailing bytes after the value",
                        payload.len().saturating_sub(used)
                    )),
                    Err(e) => Err(e.to_string()),
                }
            }
            Kind::Json => serde_json::from_slice::<T>(payload).map_err(|e| e.to_string()),
        };
        decoded.map_err(|reason| Error::Decode {
            key: key_for_error(key),
            codec: self.name(),
            reason,
        })
    }

    fn mismatch(self, key: &str, stored: String) -> Error {
        Error::CodecMismatch {
            key: key_for_error(key),
            stored,
            expected: self.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
    }

    #[test]
    fn each_codec_round_trips_and_writes_its_tag() {
        let user = User {
            id: 7,
            name: "Ada".into(),
        };
        for codec in [Codec::bincode(), Codec::json()] {
            let bytes = codec.encode("u", &user).unwrap();
            assert_eq!(bytes.first(), Some(&codec.tag()));
            assert_eq!(codec.decode::<User>("u", &bytes).unwrap(), user);
        }
    }

    #[test]
    fn other_codec_tag_is_a_mismatch_naming_both_codecs() {
        let bytes = Codec::json().encode("user:1", &5u32).unwrap();
        let err = Codec::bincode().decode::<u32>("user:1", &bytes).unwrap_err();
        assert!(
            matches!(&err, Error::CodecMismatch { key, stored, expected }
                if key == "user:1" && stored == "json" && *expected == "bincode"),
            "{err:?}"
        );
    }

    #[test]
    fn untagged_and_empty_bytes_are_mismatches() {
        let err = Codec::bincode().decode::<u32>("k", b"raw").unwrap_err();
        assert!(
            matches!(&err, Error::CodecMismatch { stored, .. } if stored.contains("0x72")),
            "{err:?}"
        );
        let err = Codec::bincode().decode::<u32>("k", b"").unwrap_err();
        assert!(matches!(err, Error::CodecMismatch { .. }));
    }

    #[test]
    fn wrong_type_or_trailing_bytes_is_a_decode_error() {
        let bytes = Codec::bincode().encode("k", &(1u8, 2u8)).unwrap();
        let err = Codec::bincode().decode::<u8>("k", &bytes).unwrap_err();
        assert!(matches!(&err, Error::Decode { codec: "bincode", .. }), "{err:?}");
        let bytes = Codec::json().encode("k", "text").unwrap();
        let err = Codec::json().decode::<u64>("k", &bytes).unwrap_err();
        assert!(matches!(&err, Error::Decode { codec: "json", .. }), "{err:?}");
    }
}
