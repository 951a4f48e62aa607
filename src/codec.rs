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
//! [`Error::Decode`] rather than an abort or a hang: the lengths of strings and bytes are bounded
//! by the payload's size, the count of elements too (16 per byte), a length read from the bytes
//! reserves memory only at the top level, and nesting is bounded by the stack the decoding thread
//! has left, with a 128 KiB margin (bincode has no bound of its own; `depth` says what the
//! bounds do not cover). The raw-bytes API
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
    /// fast. The default. It cannot decode a type that asks the format what comes next (serde's
    /// `deserialize_any`: untagged or internally tagged enums, `#[serde(flatten)]`,
    /// `serde_json::Value`): such a value is written, and a read that reaches such a field is an
    /// [`Error::TypeNotDecodable`] that says so (a loading call does not store a loaded value
    /// that would not read back, and returns that error); store such types with [`Codec::json`].
    #[must_use]
    pub const fn bincode() -> Codec {
        Codec(Kind::Bincode)
    }

    /// JSON: larger and slower, but readable by other languages and tools. JSON has no NaN or
    /// infinity: `serde_json` writes them as `null`, which then does not decode as a float.
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
    /// included); [`Error::TypeNotDecodable`] if the payload leads to a field of `T` this codec
    /// cannot decode.
    pub fn decode<T: DeserializeOwned>(self, key: &str, bytes: &[u8]) -> Result<T> {
        let Some((&tag, payload)) = bytes.split_first() else {
            return Err(self.mismatch(key, "an empty value (no codec tag)".to_owned()));
        };
        if tag != self.tag() {
            let stored = match tag {
                TAG_BINCODE => Codec::bincode().name().to_owned(),
                TAG_JSON => Codec::json().name().to_owned(),
                // Most often bytes no codec wrote: say where such bytes come from, since the
                // user who stored them with the command-line tool expects a typed read to work.
                other => format!(
                    "no codec (its first byte, 0x{other:02X}, is no codec's tag: raw bytes, as get_raw reads them and set_raw and the uno-cache command-line tool's set store them, or a codec of a newer uno-cache)"
                ),
            };
            return Err(self.mismatch(key, stored));
        }
        let _elements = depth::ElementBound::enter(payload.len());
        let decoded = match self.0 {
            Kind::Bincode => match decode_bincode::<T>(payload) {
                Ok((value, used)) if used == payload.len() => Ok(value),
                Ok((_, used)) => Err(another_type(format!(
                    "{} trailing bytes after the value",
                    payload.len().saturating_sub(used)
                ))),
                Err(bincode::error::DecodeError::LimitExceeded) => Err(another_type(format!(
                    "a length in the value is longer than its {} bytes allow",
                    payload.len()
                ))),
                Err(bincode::error::DecodeError::Serde(
                    bincode::serde::DecodeError::AnyNotSupported
                    | bincode::serde::DecodeError::IgnoredAnyNotSupported
                    | bincode::serde::DecodeError::IdentifierNotSupported,
                )) => {
                    return Err(Error::TypeNotDecodable {
                        key: key_for_error(key),
                        codec: self.name(),
                        reason: NOT_SELF_DESCRIBING,
                    })
                }
                // serde's own messages (and the bounds'), without bincode's Debug dress.
                Err(bincode::error::DecodeError::OtherString(reason)) => Err(data_reason(&reason)),
                Err(e) => Err(another_type(e.to_string())),
            },
            Kind::Json => decode_json::<T>(payload).map_err(|e| json_reason(&e)),
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

/// bincode's `decode_from_slice` (its borrowing decoder, which hands strings and bytes to
/// visitors without a copy), with every level of the value passed through [`depth::Limited`].
fn decode_bounded<T: DeserializeOwned>(
    payload: &[u8],
    config: impl bincode::config::Config,
) -> std::result::Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::seed_decode_from_slice(Bounded(std::marker::PhantomData::<T>), payload, config)
}

/// Why bincode cannot read a type that asks the format what comes next, and what to do.
const NOT_SELF_DESCRIBING: &str = "the type read needs a self-describing format (serde's \
     deserialize_any: an untagged or internally tagged enum, #[serde(flatten)], serde_json::Value), \
     which bincode cannot decode; store this type with the JSON codec (codec = \"json\")";

/// `reason`, with the likely cause of a payload that does not match the type read.
fn another_type(reason: String) -> String {
    format!("{reason}; was another type stored under this key?")
}

/// Whether `message` is one of `depth`'s refusals (nesting, elements), which name their cause.
fn is_bounds_refusal(message: &str) -> bool {
    message.starts_with("the value nests") || message.starts_with("the value claims")
}

/// A data error's reason ([`without_the_value`]), with the hint of [`another_type`] unless it
/// is one of the bounds' (which name their own cause).
fn data_reason(message: &str) -> String {
    let reason = without_the_value(message);
    if is_bounds_refusal(message) {
        reason
    } else {
        another_type(reason)
    }
}

/// A serde error's message without what the value held. serde's data errors quote it
/// (`invalid type: string "…", expected u64`, `unknown variant `…``), and a cached value must not
/// reach the logs an error goes to. What was expected stays (it comes from the type read), and
/// so do the messages that quote nothing of the value (syntax, a missing field, the depth bound).
fn without_the_value(message: &str) -> String {
    const QUOTING: [&str; 5] = [
        "invalid type:",
        "invalid value:",
        "invalid length",
        "unknown variant",
        "unknown field",
    ];
    if !QUOTING.iter().any(|start| message.starts_with(start)) {
        return message.to_owned();
    }
    match message.split_once(", expected ") {
        Some((_, expected)) => format!("the value does not match the type read: expected {expected}"),
        None => "the value does not match the type read".to_owned(),
    }
}

/// A `serde_json` error as [`without_the_value`] tells it, with where in the value it was.
fn json_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    // `serde_json` appends the position; it goes back on after the message is cleaned.
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match message.strip_suffix(&suffix) {
        Some(bare) if is_bounds_refusal(bare) => {
            format!("{bare}{suffix}")
        }
        Some(bare) => another_type(format!("{}{suffix}", without_the_value(bare))),
        None => data_reason(&message),
    }
}

/// `serde_json::from_slice` with every level of the value passed through [`depth::Limited`]:
/// `serde_json`'s own bound (128 arrays or objects) counts levels, not the stack they take.
fn decode_json<T: DeserializeOwned>(payload: &[u8]) -> serde_json::Result<T> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let value = T::deserialize(depth::Limited::new(&mut deserializer))?;
    deserializer.end()?;
    Ok(value)
}

/// Deserializes a `T` through [`depth::Limited`].
struct Bounded<T>(std::marker::PhantomData<T>);

impl<'de, T: serde::Deserialize<'de>> serde::de::DeserializeSeed<'de> for Bounded<T> {
    type Value = T;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<T, D::Error> {
        T::deserialize(depth::Limited::new(deserializer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A colour read from a string, refused with serde's `invalid_value`, which quotes the string.
    #[derive(Debug)]
    struct Colour;

    impl<'de> serde::Deserialize<'de> for Colour {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            let s = String::deserialize(d)?;
            Err(serde::de::Error::invalid_value(
                serde::de::Unexpected::Str(&s),
                &"a known colour",
            ))
        }
    }

    #[test]
    fn a_decode_error_says_what_was_expected_and_never_quotes_the_value() {
        for codec in [Codec::bincode(), Codec::json()] {
            let secret = codec.encode("k", "s3cret-token").unwrap();
            let wrong_type = codec.decode::<u64>("k", &secret).map(drop);
            let refused = codec.decode::<Colour>("k", &secret).map(drop);
            for (what, result) in [("wrong type", wrong_type), ("refused value", refused)] {
                let Err(err @ Error::Decode { .. }) = result else {
                    // bincode reads the string's length as the u64: no error to check.
                    assert!(
                        codec.name() == "bincode" && what == "wrong type",
                        "{}: {what}: {result:?}",
                        codec.name()
                    );
                    continue;
                };
                let text = err.to_string();
                assert!(!text.contains("s3cret"), "{}: {what}: {text}", codec.name());
            }
        }
        let refused = Codec::json()
            .decode::<Colour>("k", &Codec::json().encode("k", "s3cret-token").unwrap())
            .unwrap_err()
            .to_string();
        assert!(refused.contains("expected a known colour"), "{refused}");
        let wrong_type = Codec::json()
            .decode::<u64>("k", &Codec::json().encode("k", "s3cret-token").unwrap())
            .unwrap_err()
            .to_string();
        assert!(wrong_type.contains("expected u64 at line 1"), "{wrong_type}");
        let missing = Codec::json().decode::<User>(
            "k",
            &Codec::json().encode("k", &serde_json::json!({"id": 1})).unwrap(),
        );
        assert!(
            matches!(&missing, Err(Error::Decode { reason, .. }) if reason.contains("missing field `name`")),
            "{missing:?}"
        );
    }

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
        // Where untagged bytes come from, so that a value set with the CLI is not a puzzle.
        let text = err.to_string();
        assert!(text.contains("raw bytes") && text.contains("set_raw"), "{text}");
        assert!(text.contains("command-line tool's set"), "{text}");
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
    /// million deep. Unbounded, bincode recurses once per level and overflows the stack, which
    /// aborts the process (a signal, not an error).
    #[test]
    fn a_value_nested_deeper_than_the_stack_allows_is_a_decode_error_not_an_abort() {
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
                    if key == "tree:1" && (reason.contains("nests too deep") || reason.contains("recursion limit"))),
                "{}: {err:?}",
                codec.name()
            );
        }
    }

    /// A level of this type takes tens of KiB of stack in a debug build (the array is copied
    /// through several frames): a bound on levels low enough for it would refuse ordinary lists,
    /// so the bound is the stack left.
    #[derive(Debug, serde::Deserialize)]
    struct Heavy {
        _block: [[u64; 32]; 32],
        _kids: Vec<Heavy>,
    }

    /// 300 levels of [`Heavy`] in 300 KB, built by hand (encoding them would recurse as deep):
    /// each level is 1,024 zeros (one byte each) and a list of one child, the last an empty list.
    #[test]
    fn a_type_whose_levels_take_much_stack_is_refused_before_the_stack_runs_out() {
        let mut bytes = vec![Codec::bincode().tag()];
        for level in 0..300 {
            bytes.extend(std::iter::repeat_n(0u8, 1024));
            bytes.push(u8::from(level < 299));
        }
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || Codec::bincode().decode::<Heavy>("heavy", &bytes).map(drop))
            .unwrap()
            .join()
            .unwrap();
        let err = outcome.unwrap_err();
        assert!(
            matches!(&err, Error::Decode { reason, .. } if reason.contains("nests too deep")),
            "{err:?}"
        );
    }

    /// A list a thousand nodes long decoded before the bound existed, and still does on a thread
    /// with the stack for it: the bound refuses only what would overflow.
    #[test]
    fn a_deep_value_that_fits_the_stack_still_decodes() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Node {
            value: u32,
            next: Option<Box<Node>>,
        }
        let outcome = std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn(|| {
                for codec in [Codec::bincode(), Codec::json()] {
                    let list = (0..1_000).fold(None, |next, value| Some(Box::new(Node { value, next })));
                    let list = list.unwrap();
                    let bytes = codec.encode("k", &list).unwrap();
                    let back = codec.decode::<Node>("k", &bytes);
                    // JSON stops at 128 objects, its own bound, whatever the stack.
                    match codec.0 {
                        Kind::Bincode => assert!(back.unwrap() == *list),
                        Kind::Json => assert!(back.is_err()),
                    }
                }
            })
            .unwrap()
            .join();
        assert!(outcome.is_ok());
        // A hundred levels fit the 2 MiB a spawned thread gets, with the margin to spare.
        let outcome = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(|| {
                let tree = nested(100);
                let bytes = Codec::bincode().encode("k", &tree).unwrap();
                assert!(Codec::bincode().decode::<Tree>("k", &bytes).unwrap() == tree);
            })
            .unwrap()
            .join();
        assert!(outcome.is_ok());
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

    /// bincode's borrowing decoder hands a string to `visit_borrowed_str`; a type whose visitor
    /// takes only that (it copies what it keeps) decoded before the bound, and still does.
    #[test]
    fn strings_reach_the_visitor_borrowed_as_bincode_hands_them() {
        #[derive(Debug, PartialEq)]
        struct Name(String);
        impl<'de> serde::Deserialize<'de> for Name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Name, D::Error> {
                struct Only;
                impl<'de> serde::de::Visitor<'de> for Only {
                    type Value = Name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a borrowed string")
                    }
                    fn visit_borrowed_str<E>(self, v: &'de str) -> std::result::Result<Name, E> {
                        Ok(Name(v.to_owned()))
                    }
                }
                d.deserialize_str(Only)
            }
        }
        let bytes = Codec::bincode().encode("k", "hello").unwrap();
        assert_eq!(
            Codec::bincode().decode::<Name>("k", &bytes).unwrap(),
            Name("hello".to_owned())
        );
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
