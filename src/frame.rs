//! The framing that the file store's files and the replay log share, written once: the file
//! header's magic, version and CRC, and the 28-byte record header with its seeded CRC.
//!
//! `storage-format.md` specifies both users ("Segment file", "Replay log"); each keeps its own
//! kinds, field rules, seeds and scan, and calls this module for the bytes they have in common.
//! Nothing here decides what a record means.
//!
//! Header rule: length, magic, **CRC, then version**. A version byte that fails the CRC is
//! damage; only a header whose CRC checks out can say "written by a newer uno-cache".

use crate::le::{bytes, put, u16_at, u32_at, u64_at};

// ---- file headers --------------------------------------------------------------------------

/// Every header starts with 8 magic bytes...
pub(crate) const MAGIC_AT: usize = 0;
/// ...then the format version (u16).
pub(crate) const VERSION_AT: usize = MAGIC_AT + 8;
/// The first byte after the version.
pub(crate) const AFTER_VERSION_AT: usize = VERSION_AT + 2;

/// Why a file header (or a whole small file such as a hint) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the fixed header.
    Short,
    /// Wrong magic bytes: not our file.
    Magic,
    /// Checksum mismatch: damaged.
    Crc,
    /// The checksum is right but the version is not one this build reads.
    Version(u16),
    /// Reserved bytes are not zero.
    Reserved,
    /// A field holds an impossible value.
    Field(&'static str),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("file is shorter than its header"),
            HeaderError::Magic => f.write_str("wrong magic bytes"),
            HeaderError::Crc => f.write_str("checksum mismatch"),
            HeaderError::Version(v) => write!(f, "unsupported format version {v}"),
            HeaderError::Reserved => f.write_str("reserved header bytes are not zero"),
            HeaderError::Field(name) => write!(f, "invalid field {name}"),
        }
    }
}

/// Writes the magic and the version at the start of `buf`.
#[inline]
pub(crate) fn put_magic_version(buf: &mut [u8], magic: &[u8; 8], version: u16) {
    put(buf, MAGIC_AT, magic);
    put(buf, VERSION_AT, &version.to_le_bytes());
}

/// Writes at `crc_at` the CRC of the bytes before it.
#[inline]
pub(crate) fn seal(buf: &mut [u8], crc_at: usize) {
    let crc = crc32fast::hash(buf.get(..crc_at).unwrap_or_default());
    put(buf, crc_at, &crc.to_le_bytes());
}

/// Checks a header: at least `min_len` bytes, `magic`, the CRC of `buf[..crc_at]` stored at
/// `crc_at`, then `version` (see the module docs for why in this order).
pub(crate) fn check_header(
    buf: &[u8],
    min_len: usize,
    magic: &[u8; 8],
    crc_at: usize,
    version: u16,
) -> Result<(), HeaderError> {
    if buf.len() < min_len || buf.len() < crc_at + 4 {
        return Err(HeaderError::Short);
    }
    if bytes::<8>(buf, MAGIC_AT).as_ref() != Some(magic) {
        return Err(HeaderError::Magic);
    }
    if crc32fast::hash(buf.get(..crc_at).unwrap_or_default()) != u32_at(buf, crc_at) {
        return Err(HeaderError::Crc);
    }
    let found = u16_at(buf, VERSION_AT);
    if found != version {
        return Err(HeaderError::Version(found));
    }
    Ok(())
}

// ---- records -------------------------------------------------------------------------------

/// The record's CRC; it covers the record from [`KIND_AT`] on, seeded (see [`record_crc`]).
pub(crate) const CRC_AT: usize = 0;
pub(crate) const KIND_AT: usize = CRC_AT + 4;
pub(crate) const FLAGS_AT: usize = KIND_AT + 1;
const KEY_LEN_AT: usize = FLAGS_AT + 1;
const VALUE_LEN_AT: usize = KEY_LEN_AT + 2;
const SEQ_AT: usize = VALUE_LEN_AT + 4;
const EXPIRES_AT: usize = SEQ_AT + 8;
/// Length of a record header; the key follows it, then the value.
pub const RECORD_HEADER_LEN: usize = EXPIRES_AT + 8;

/// The fixed fields of a record header, as stored (not yet checked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fields {
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) key_len: usize,
    pub(crate) value_len: usize,
    pub(crate) seq: u64,
    pub(crate) expires_at_ms: u64,
}

impl Fields {
    /// Reads the fields at the start of `header`; `None` if it is shorter than a record header.
    #[inline]
    pub(crate) fn read(header: &[u8]) -> Option<Fields> {
        let header = header.get(..RECORD_HEADER_LEN)?;
        Some(Fields {
            kind: *header.get(KIND_AT)?,
            flags: *header.get(FLAGS_AT)?,
            key_len: usize::from(u16_at(header, KEY_LEN_AT)),
            value_len: u32_at(header, VALUE_LEN_AT) as usize,
            seq: u64_at(header, SEQ_AT),
            expires_at_ms: u64_at(header, EXPIRES_AT),
        })
    }

    /// Total length of the record these fields describe.
    #[inline]
    pub(crate) fn record_len(&self) -> usize {
        record_len(self.key_len, self.value_len)
    }
}

/// Whether a search past damage may check the record whose header starts `rest` (its CRC, over
/// its whole length): its fields pass `check`, the buffer holds it, and `budget` pays its
/// length, which is then taken from it. A search checks every offset, and only the CRC refutes
/// a candidate whose fields look right, so bytes that repeat such a header claiming a large
/// length made searches quadratic; with a budget (a few times the file's length) they end as
/// damage or a torn tail in linear time. A candidate refused here costs nothing.
pub(crate) fn pay_for_candidate<K>(
    rest: &[u8],
    budget: &mut u64,
    check: impl Fn(&Fields) -> Result<K, &'static str>,
) -> bool {
    let Some(fields) = Fields::read(rest) else {
        return false;
    };
    let len = fields.record_len() as u64;
    if check(&fields).is_err() || len > rest.len() as u64 || len > *budget {
        return false;
    }
    *budget -= len;
    true
}

/// Total encoded length of a record.
#[inline]
pub(crate) fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// A record's CRC: CRC-32 of `seed` (the segment's salt, or the log's id, little-endian)
/// followed by the record's bytes after the CRC field. The seed keeps a record copied into a
/// value, or from another file, from checking out where it was not written.
#[inline]
pub(crate) fn record_crc(seed: &[u8], after_crc: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(seed);
    hasher.update(after_crc);
    hasher.finalize()
}

/// Whether `rest`, which starts with a record header whose lengths run past its end, holds that
/// record whole up to its end but for one damaged length field: with the key length, or the
/// value length, made to end the record where `rest` ends, the CRC under `seed` checks out. A
/// write cut short by a crash keeps the lengths it wrote and loses the end, which no such
/// correction brings back (but by a 2^-32 chance); a flipped bit in a length of a record written
/// whole makes it claim bytes past the end of the file all the same, and only this tells the two
/// apart.
pub(crate) fn whole_but_for_a_length(rest: &[u8], seed: &[u8]) -> bool {
    let (Some(header), Some(fields), Some(tail)) = (
        rest.get(..RECORD_HEADER_LEN),
        Fields::read(rest),
        rest.get(RECORD_HEADER_LEN..),
    ) else {
        return false;
    };
    let value_len = tail
        .len()
        .checked_sub(fields.key_len)
        .and_then(|len| u32::try_from(len).ok())
        .map(|len| (VALUE_LEN_AT, len.to_le_bytes().to_vec()));
    let key_len = tail
        .len()
        .checked_sub(fields.value_len)
        .and_then(|len| u16::try_from(len).ok())
        .map(|len| (KEY_LEN_AT, len.to_le_bytes().to_vec()));
    [value_len, key_len].into_iter().flatten().any(|(at, len)| {
        let mut fixed = [0u8; RECORD_HEADER_LEN];
        fixed.copy_from_slice(header);
        put(&mut fixed, at, &len);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(seed);
        hasher.update(fixed.get(KIND_AT..).unwrap_or_default());
        hasher.update(tail);
        hasher.finalize() == u32_at(header, CRC_AT)
    })
}

/// What a record carries besides its CRC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    pub(crate) kind: u8,
    pub(crate) seq: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) key: &'a str,
    pub(crate) value: &'a [u8],
}

/// Appends one encoded record to `out`, its CRC seeded with `seed`. The caller has validated the
/// key and value lengths (they must fit u16 and u32).
#[inline]
pub(crate) fn encode_record(out: &mut Vec<u8>, seed: &[u8], record: &Record<'_>) {
    let start = out.len();
    let key_len = u16::try_from(record.key.len()).unwrap_or(u16::MAX);
    let value_len = u32::try_from(record.value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&[0u8; 4]);
    out.push(record.kind);
    out.push(0);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.expires_at_ms.to_le_bytes());
    out.extend_from_slice(record.key.as_bytes());
    out.extend_from_slice(record.value);
    let crc = record_crc(seed, out.get(start + KIND_AT..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// The outcome of decoding a record at one offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framed<'a, K> {
    /// A valid record of `len` bytes whose header `check` accepted as `kind`.
    Record {
        kind: K,
        seq: u64,
        expires_at_ms: u64,
        key: &'a str,
        value: &'a [u8],
        len: usize,
    },
    /// The record header is all zero bytes: nothing was written here.
    End,
    /// The buffer ends before the record does: a torn write, or the end of a short file.
    Incomplete,
    /// The bytes are not a valid record; the field (or check) that failed.
    Invalid(&'static str),
}

/// Decodes the record at the start of `buf`: all zeros are [`Framed::End`]; then `check` judges
/// the header fields (the caller's kinds and rules, which also bound the lengths); then the
/// whole record must be in `buf`, pass its CRC under `seed`, and have a UTF-8 key.
pub(crate) fn decode_record<'a, K>(
    buf: &'a [u8],
    seed: &[u8],
    check: impl FnOnce(&Fields) -> Result<K, &'static str>,
) -> Framed<'a, K> {
    let Some(header) = buf.get(..RECORD_HEADER_LEN) else {
        return if buf.iter().all(|&b| b == 0) {
            Framed::End
        } else {
            Framed::Incomplete
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Framed::End;
    }
    let Some(fields) = Fields::read(header) else {
        return Framed::Incomplete;
    };
    let kind = match check(&fields) {
        Ok(kind) => kind,
        Err(what) => return Framed::Invalid(what),
    };
    let len = fields.record_len();
    let Some(record) = buf.get(..len) else {
        return Framed::Incomplete;
    };
    if record_crc(seed, record.get(KIND_AT..).unwrap_or_default()) != u32_at(record, CRC_AT) {
        return Framed::Invalid("checksum");
    }
    let key_end = RECORD_HEADER_LEN + fields.key_len;
    let Ok(key) = std::str::from_utf8(record.get(RECORD_HEADER_LEN..key_end).unwrap_or_default()) else {
        return Framed::Invalid("key is not UTF-8");
    };
    Framed::Record {
        kind,
        seq: fields.seq,
        expires_at_ms: fields.expires_at_ms,
        key,
        value: record.get(key_end..).unwrap_or_default(),
        len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: [u8; 8] = *b"TESTMAGC";

    fn header(version: u16) -> [u8; 20] {
        let mut buf = [0u8; 20];
        put_magic_version(&mut buf, &MAGIC, version);
        put(&mut buf, 10, &[1, 2, 3, 4, 5, 6]);
        seal(&mut buf, 16);
        buf
    }

    #[test]
    fn a_damaged_version_byte_is_a_checksum_failure_not_a_newer_version() {
        assert_eq!(check_header(&header(1), 20, &MAGIC, 16, 1), Ok(()));
        let mut damaged = header(1);
        damaged[VERSION_AT] ^= 0x02;
        assert_eq!(check_header(&damaged, 20, &MAGIC, 16, 1), Err(HeaderError::Crc));
        // A real newer version (its CRC checks out) is reported as one.
        assert_eq!(
            check_header(&header(3), 20, &MAGIC, 16, 1),
            Err(HeaderError::Version(3))
        );
        assert_eq!(
            check_header(&header(1)[..19], 20, &MAGIC, 16, 1),
            Err(HeaderError::Short)
        );
        assert_eq!(
            check_header(&header(1), 20, b"OTHERMGC", 16, 1),
            Err(HeaderError::Magic)
        );
    }

    #[test]
    fn a_record_checks_out_only_under_its_seed_and_its_callers_rules() {
        let mut buf = Vec::new();
        let record = Record {
            kind: 7,
            seq: 3,
            expires_at_ms: 9,
            key: "key",
            value: b"value",
        };
        encode_record(&mut buf, b"seed", &record);
        assert_eq!(buf.len(), record_len(3, 5));
        let accept = |f: &Fields| Ok::<u8, &'static str>(f.kind);
        assert_eq!(
            decode_record(&buf, b"seed", accept),
            Framed::Record {
                kind: 7,
                seq: 3,
                expires_at_ms: 9,
                key: "key",
                value: &b"value"[..],
                len: buf.len(),
            }
        );
        assert_eq!(decode_record(&buf, b"deed", accept), Framed::Invalid("checksum"));
        assert_eq!(
            decode_record(&buf, b"seed", |_| Err::<u8, _>("kind")),
            Framed::Invalid("kind")
        );
        assert_eq!(
            decode_record(&buf[..buf.len() - 1], b"seed", accept),
            Framed::Incomplete
        );
        assert_eq!(decode_record(&[0u8; 40], b"seed", accept), Framed::End);
    }
}
