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
//! [`Error::CodecMismatch`] naming the key and both codecs. A damaged or hostile payload is an
//! [`Error::Decode`], never an abort: lengths are bounded by the payload's size, and nesting by
//! 128 levels (bincode has no bound of its own, see `depth`). The raw-bytes API
//! (`CacheManager::get_raw`, …) stores bytes untouched, with no tag.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{key_for_error, Error, Result};

mod depth;

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
            Kind::Bincode => match decode_bincode::<T>(payload) {
                Ok((value, used)) if used == payload.len() => Ok(value),
                Ok((_, used)) => Err(format!(
                    "{} trailing bytes after the value",
                    payload.len().saturating_sub(used)
                )),
                Err(bincode::error::DecodeError::LimitExceeded) => Err(format!(
                    "a length in the value is longer than its {} bytes allow",
                    payload.len()
                )),
                // serde's own messages (and the depth bound's), without bincode's Debug dress.
                Err(bincode::error::DecodeError::OtherString(reason)) => Err(reason),
                Err(e) => Err(e.to_string()),
            },
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

/// The most bytes bincode claims (for its limit) per byte it reads: a one-byte varint read as a
/// `u128`.
const CLAIMS_PER_BYTE: usize = 16;

/// The deepest a bincode value may nest (each sequence, map, struct, enum, `Option` and newtype
/// is a level), as `serde_json`'s own bound for JSON is 128: deep enough for any value a program
/// builds, and shallow enough that decoding stays within the 2 MiB stack of a spawned thread.
const MAX_DEPTH: usize = 128;

/// bincode's `decode_from_slice` with a byte limit sized to the payload. Without a limit, bincode
/// allocates a `String` or byte buffer as long as the length read from the bytes says before it
/// reads them: a damaged value, or one written as another type (a `u64` read as a `String`),
/// would ask for up to 2^64 bytes, an abort rather than an error. Every claim a well-formed
/// value makes is at most [`CLAIMS_PER_BYTE`] times the bytes it reads, so a limit of that much
/// refuses no value the codec wrote; the limit is a const generic, hence the steps (powers of
/// two, so a lying length can claim at most twice the need: 32 times the payload).
fn decode_bincode<T: DeserializeOwned>(
    payload: &[u8],
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    use bincode::config::standard;
    let need = payload.len().saturating_mul(CLAIMS_PER_BYTE);
    macro_rules! limited {
        ($($bits:literal),*) => {
            $(
                if need <= 1usize << $bits {
                    return decode_bounded(payload, standard().with_limit::<{ 1usize << $bits }>());
                }
            )*
        };
    }
    limited!(12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31);
    #[cfg(target_pointer_width = "64")]
    limited!(32, 33, 34, 35, 36);
    // Beyond any value a level stores (4 GiB, the file store's bound).
    decode_bounded(payload, standard().with_limit::<{ usize::MAX }>())
}

/// Decodes a `T` from the front of `payload` through [`depth::Limited`], returning it with the
/// number of bytes it took (what bincode's `decode_from_slice` does, plus the depth bound).
fn decode_bounded<T: DeserializeOwned>(
    payload: &[u8],
    config: impl bincode::config::Config,
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    let mut reader = Rest(payload);
    let mut decoder = bincode::serde::OwnedSerdeDecoder::from_reader(&mut reader, config);
    let value = T::deserialize(depth::Limited::new(decoder.as_deserializer(), MAX_DEPTH))?;
    Ok((value, payload.len() - reader.0.len()))
}

/// bincode's slice reader, with the unread rest of the slice in sight (bincode's own keeps it
/// private), so that trailing bytes can be told apart.
struct Rest<'a>(&'a [u8]);

impl bincode::de::read::Reader for Rest<'_> {
    #[inline]
    fn read(&mut self, bytes: &mut [u8]) -> std::result::Result<(), bincode::error::DecodeError> {
        let Some((read, rest)) = self.0.split_at_checked(bytes.len()) else {
            return Err(bincode::error::DecodeError::UnexpectedEnd {
                additional: bytes.len() - self.0.len(),
            });
        };
        bytes.copy_from_slice(read);
        self.0 = rest;
        Ok(())
    }

    #[inline]
    fn peek_read(&mut self, n: usize) -> Option<&[u8]> {
        self.0.get(..n)
    }

    #[inline]
    fn consume(&mut self, n: usize) {
        self.0 = self.0.get(n..).unwrap_or_default();
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

    #[test]
    fn a_value_written_as_another_type_with_a_huge_length_is_a_decode_error_not_an_abort() {
        // A u64 of 2^62 read back as a String: bincode takes the integer for the string's
        // length and, unlimited, allocates 4 EiB before reading (an abort, not an error).
        let bytes = Codec::bincode().encode("k", &(1u64 << 62)).unwrap();
        let err = Codec::bincode().decode::<String>("k", &bytes).unwrap_err();
        assert!(
            matches!(&err, Error::Decode { key, codec: "bincode", .. } if key == "k"),
            "{err:?}"
        );
        // A length just past the end, and one beyond isize::MAX.
        for len in [3u64, 1 << 40, u64::MAX] {
            let mut bytes = Codec::bincode().encode("k", &len).unwrap();
            bytes.extend_from_slice(b"ab");
            let err = Codec::bincode().decode::<String>("k", &bytes).unwrap_err();
            assert!(matches!(&err, Error::Decode { .. }), "{len}: {err:?}");
        }
    }

    /// A recursive type, as a user's tree or linked list would be.
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    enum Tree {
        Leaf,
        Node(Box<Tree>),
    }

    fn nested(depth: usize) -> Tree {
        (0..depth).fold(Tree::Leaf, |t, _| Tree::Node(Box::new(t)))
    }

    /// Variant 1 (`Node`) a million times, then variant 0 (`Leaf`): a value of 1 MB that nests a
    /// million deep. Unlimited, bincode recurses once per level and overflows the stack, which
    /// aborts the process (a signal, not an error).
    #[test]
    fn a_value_nested_deeper_than_the_limit_is_a_decode_error_not_a_stack_overflow() {
        for codec in [Codec::bincode(), Codec::json()] {
            let mut bytes = vec![codec.tag()];
            match codec.0 {
                Kind::Bincode => {
                    bytes.extend(std::iter::repeat_n(1u8, 1_000_000));
                    bytes.push(0);
                }
                Kind::Json => {
                    bytes.extend(std::iter::repeat_n(&b"{\"Node\":"[..], 1_000_000).flatten());
                    bytes.extend_from_slice(b"\"Leaf\"");
                    bytes.extend(std::iter::repeat_n(b'}', 1_000_000));
                }
            }
            let err = codec.decode::<Tree>("tree:1", &bytes).unwrap_err();
            assert!(
                // serde_json's own bound says "recursion limit exceeded".
                matches!(&err, Error::Decode { key, reason, .. }
                    if key == "tree:1" && (reason.contains("nests deeper than 128") || reason.contains("recursion limit"))),
                "{}: {err:?}",
                codec.name()
            );
        }
    }

    /// The limit refuses no value a program would build: a value just under it decodes, on a
    /// thread with the 2 MiB stack Rust gives spawned threads, in a debug build.
    #[test]
    fn a_value_nested_just_under_the_limit_decodes_on_a_default_thread() {
        let ok = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                for codec in [Codec::bincode(), Codec::json()] {
                    let tree = nested(MAX_DEPTH - 1);
                    let bytes = codec.encode("k", &tree).unwrap();
                    let back = codec.decode::<Tree>("k", &bytes).unwrap();
                    // Dropped one level at a time: a million-deep drop would overflow too, but
                    // this one is short.
                    assert!(back == tree, "{}", codec.name());
                }
                let bytes = Codec::bincode().encode("k", &nested(MAX_DEPTH)).unwrap();
                let err = Codec::bincode().decode::<Tree>("k", &bytes).unwrap_err();
                assert!(
                    matches!(&err, Error::Decode { reason, .. } if reason.contains("nests deeper")),
                    "{err:?}"
                );
            })
            .unwrap()
            .join();
        assert!(ok.is_ok());
    }

    /// Every shape serde has passes through the depth bound unchanged, including a type that
    /// encodes differently for a binary format (`IpAddr` asks `is_human_readable`).
    #[test]
    fn every_serde_shape_round_trips_through_the_depth_bound() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Unit;
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Wrapper(u32);
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Pair(i8, char);
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        enum Shape {
            Empty,
            One(String),
            Two(u16, bool),
            Named { x: f64, tags: Vec<String> },
        }
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct All {
            unit: Unit,
            wrapper: Wrapper,
            pair: Pair,
            shapes: Vec<Shape>,
            map: std::collections::BTreeMap<String, Option<Vec<u8>>>,
            ip: std::net::IpAddr,
            big: (i128, u128),
            float: f32,
            nothing: (),
        }
        let value = All {
            unit: Unit,
            wrapper: Wrapper(7),
            pair: Pair(-3, 'é'),
            shapes: vec![
                Shape::Empty,
                Shape::One("one".into()),
                Shape::Two(2, true),
                Shape::Named {
                    x: 1.5,
                    tags: vec!["a".into()],
                },
            ],
            map: [("k".to_owned(), Some(vec![1, 2])), ("n".to_owned(), None)].into(),
            ip: "::1".parse().unwrap(),
            big: (i128::MIN, u128::MAX),
            float: 0.25,
            nothing: (),
        };
        let bytes = Codec::bincode().encode("k", &value).unwrap();
        assert_eq!(Codec::bincode().decode::<All>("k", &bytes).unwrap(), value);
        // An IPv6 address is 16 bytes in a binary format, its text form in a readable one.
        let ip: std::net::IpAddr = "::1".parse().unwrap();
        assert_eq!(Codec::bincode().encode("k", &ip).unwrap().len(), 1 + 1 + 16);
    }

    #[test]
    fn large_and_integer_heavy_values_still_decode_under_the_length_limit() {
        let big = "x".repeat(5 << 20);
        let bytes = Codec::bincode().encode("k", &big).unwrap();
        assert_eq!(Codec::bincode().decode::<String>("k", &bytes).unwrap(), big);
        // Each varint byte of a small u128 is claimed as 16 bytes by bincode's limit.
        let ints: Vec<u128> = (0..100_000).map(|i| i % 200).collect();
        let bytes = Codec::bincode().encode("k", &ints).unwrap();
        assert_eq!(Codec::bincode().decode::<Vec<u128>>("k", &bytes).unwrap(), ints);
        let small: (u128, String) = (1, String::new());
        let bytes = Codec::bincode().encode("k", &small).unwrap();
        assert_eq!(
            Codec::bincode().decode::<(u128, String)>("k", &bytes).unwrap(),
            small
        );
    }
}
