//! Bytes on disk of the replay log: file names, magic, header, records, and the scan.
//!
//! The "Replay log" section of `storage-format.md` is the specification; this module is
//! its only implementation. All integers are little-endian. Offsets are named consts chained by
//! size, so a layout change shows up as a diff here and in the document together.

use crate::le::{bytes, put, u16_at, u32_at, u64_at};
use std::ops::Range;

use crate::local::file::MAX_KEY_LEN;

/// Current version of the replay log format, written into its header.
pub const REPLAY_FORMAT_VERSION: u16 = 1;

/// The replay log.
pub const LOG_FILE: &str = "replay.log";
/// A compacted log being written; renamed over [`LOG_FILE`] when complete, deleted at open.
pub const LOG_NEW_FILE: &str = "replay.log.new";
/// Where a log whose header is damaged is moved aside (replacing an older one).
pub const LOG_DAMAGED_FILE: &str = "replay.log.damaged";
/// Lock file held (advisory `flock`) while a queue is open.
pub const LOCK_FILE: &str = "replay.lock";

/// Magic bytes at the start of the log.
pub const LOG_MAGIC: [u8; 8] = *b"UNOCRPLY";

// ---- header --------------------------------------------------------------------------------
const HDR_MAGIC_AT: usize = 0;
const HDR_VERSION_AT: usize = HDR_MAGIC_AT + 8;
const HDR_RESERVED_AT: usize = HDR_VERSION_AT + 2;
const HDR_LOG_ID_AT: usize = HDR_RESERVED_AT + 6;
const HDR_NEXT_SEQ_AT: usize = HDR_LOG_ID_AT + 8;
const HDR_CRC_AT: usize = HDR_NEXT_SEQ_AT + 8;
/// Length of the log header; the first record starts here.
pub const HEADER_LEN: usize = HDR_CRC_AT + 4;

/// The fields of the log header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// A random number chosen when the file is written; it seeds every record's CRC, so a record
    /// copied into a value (or into another log) never checks out at the wrong place.
    pub log_id: u64,
    /// The next sequence number to hand out is at least this (it survives compaction, which may
    /// drop the records holding the highest numbers).
    pub next_seq: u64,
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the header.
    Short,
    /// Wrong magic bytes.
    Magic,
    /// Checksum mismatch.
    Crc,
    /// The checksum is right but the version is not one this build reads.
    Version(u16),
    /// A reserved byte is not zero.
    Reserved,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Short => f.write_str("file is shorter than its header"),
            HeaderError::Magic => f.write_str("wrong magic bytes"),
            HeaderError::Crc => f.write_str("header checksum mismatch"),
            HeaderError::Version(v) => write!(f, "unsupported replay log version {v}"),
            HeaderError::Reserved => f.write_str("reserved header bytes are not zero"),
        }
    }
}

/// Encodes the header.
pub fn encode_header(header: &Header) -> [u8; HEADER_LEN] {
    let mut buf = [0u8; HEADER_LEN];
    put(&mut buf, HDR_MAGIC_AT, &LOG_MAGIC);
    put(&mut buf, HDR_VERSION_AT, &REPLAY_FORMAT_VERSION.to_le_bytes());
    put(&mut buf, HDR_LOG_ID_AT, &header.log_id.to_le_bytes());
    put(&mut buf, HDR_NEXT_SEQ_AT, &header.next_seq.to_le_bytes());
    let crc = crc32fast::hash(buf.get(..HDR_CRC_AT).unwrap_or_default());
    put(&mut buf, HDR_CRC_AT, &crc.to_le_bytes());
    buf
}

/// Decodes and checks the header: magic, then checksum, then version (so a damaged version
/// field is damage, not a newer format).
pub fn decode_header(buf: &[u8]) -> Result<Header, HeaderError> {
    if buf.len() < HEADER_LEN {
        return Err(HeaderError::Short);
    }
    if bytes::<8>(buf, HDR_MAGIC_AT) != Some(LOG_MAGIC) {
        return Err(HeaderError::Magic);
    }
    if crc32fast::hash(buf.get(..HDR_CRC_AT).unwrap_or_default()) != u32_at(buf, HDR_CRC_AT) {
        return Err(HeaderError::Crc);
    }
    let version = u16_at(buf, HDR_VERSION_AT);
    if version != REPLAY_FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    if buf
        .get(HDR_RESERVED_AT..HDR_LOG_ID_AT)
        .is_none_or(|r| r.iter().any(|&b| b != 0))
    {
        return Err(HeaderError::Reserved);
    }
    Ok(Header {
        log_id: u64_at(buf, HDR_LOG_ID_AT),
        next_seq: u64_at(buf, HDR_NEXT_SEQ_AT),
    })
}

// ---- record --------------------------------------------------------------------------------
const REC_CRC_AT: usize = 0;
const REC_KIND_AT: usize = REC_CRC_AT + 4;
const REC_FLAGS_AT: usize = REC_KIND_AT + 1;
const REC_KEY_LEN_AT: usize = REC_FLAGS_AT + 1;
const REC_VALUE_LEN_AT: usize = REC_KEY_LEN_AT + 2;
const REC_SEQ_AT: usize = REC_VALUE_LEN_AT + 4;
const REC_EXPIRES_AT: usize = REC_SEQ_AT + 8;
/// Length of a record header; the key follows it, then the value.
pub const RECORD_HEADER_LEN: usize = REC_EXPIRES_AT + 8;

/// What a record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Replay `SET key value` (with the record's expiry).
    Set = 1,
    /// Replay `DEL key`.
    Delete = 2,
    /// The op of this key with this seq reached L2; forget it.
    Ack = 3,
    /// An op was lost because the queue was full: L2 may hold stale values.
    Overflow = 4,
    /// An operator cleared the overflow flag.
    OverflowCleared = 5,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Set),
            2 => Some(Kind::Delete),
            3 => Some(Kind::Ack),
            4 => Some(Kind::Overflow),
            5 => Some(Kind::OverflowCleared),
            _ => None,
        }
    }

    /// Whether records of this kind name a key (the overflow kinds have none).
    fn has_key(self) -> bool {
        matches!(self, Kind::Set | Kind::Delete | Kind::Ack)
    }
}

/// Total encoded length of a record.
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_HEADER_LEN + key_len + value_len
}

/// The fields of one record, borrowed from the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub kind: Kind,
    /// For set and delete: the op's sequence number. For ack: the seq of the op acknowledged.
    /// Zero for the overflow kinds.
    pub seq: u64,
    /// For set: absolute expiry in Unix ms, 0 = never. Zero for every other kind.
    pub expires_at_ms: u64,
    pub key: &'a str,
    pub value: &'a [u8],
}

/// The CRC of a record: CRC-32 of the 8-byte log id followed by the record from its kind byte on.
fn record_crc(log_id: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&log_id.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// Appends one encoded record to `out`. The caller has validated the key and value lengths (a
/// key of at most [`MAX_KEY_LEN`] bytes, a value of at most `u32::MAX` bytes).
pub fn encode_record(out: &mut Vec<u8>, log_id: u64, record: &RecordRef<'_>) {
    let start = out.len();
    let key_len = u16::try_from(record.key.len()).unwrap_or(u16::MAX);
    let value_len = u32::try_from(record.value.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&[0u8; 4]);
    out.push(record.kind as u8);
    out.push(0);
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.expires_at_ms.to_le_bytes());
    out.extend_from_slice(record.key.as_bytes());
    out.extend_from_slice(record.value);
    let crc = record_crc(log_id, out.get(start + REC_KIND_AT..).unwrap_or_default());
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&crc.to_le_bytes());
    }
}

/// The outcome of decoding at one offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record of `len` bytes.
    Record(RecordRef<'a>, usize),
    /// The record header is all zero bytes: nothing was written here (or a crash left zeros).
    End,
    /// The buffer ends before the record does: a torn write.
    Incomplete,
    /// The bytes are not a valid record.
    Invalid(&'static str),
}

/// Checks the fixed part of a record header; returns the kind and the total length.
fn check_header(header: &[u8]) -> Result<(Kind, usize, usize), &'static str> {
    let kind = Kind::from_byte(header.get(REC_KIND_AT).copied().unwrap_or(0)).ok_or("kind")?;
    if header.get(REC_FLAGS_AT).copied() != Some(0) {
        return Err("flags");
    }
    let key_len = usize::from(u16_at(header, REC_KEY_LEN_AT));
    let value_len = u32_at(header, REC_VALUE_LEN_AT) as usize;
    if kind.has_key() {
        if key_len == 0 || key_len > MAX_KEY_LEN {
            return Err("key length");
        }
    } else if key_len != 0 {
        return Err("key length");
    }
    if kind != Kind::Set && value_len != 0 {
        return Err("value length");
    }
    if kind != Kind::Set && u64_at(header, REC_EXPIRES_AT) != 0 {
        return Err("expiry");
    }
    if !matches!(kind, Kind::Set | Kind::Delete | Kind::Ack) && u64_at(header, REC_SEQ_AT) != 0 {
        return Err("seq");
    }
    Ok((kind, key_len, record_len(key_len, value_len)))
}

/// Decodes the record at the start of `buf`, verifying its checksum against `log_id`.
pub fn decode_record(buf: &[u8], log_id: u64) -> Decoded<'_> {
    let Some(header) = buf.get(..RECORD_HEADER_LEN) else {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Incomplete
        };
    };
    if header.iter().all(|&b| b == 0) {
        return Decoded::End;
    }
    let (kind, key_len, len) = match check_header(header) {
        Ok(fields) => fields,
        Err(what) => return Decoded::Invalid(what),
    };
    let Some(record) = buf.get(..len) else {
        return Decoded::Incomplete;
    };
    if record_crc(log_id, record.get(REC_KIND_AT..).unwrap_or_default()) != u32_at(record, REC_CRC_AT) {
        return Decoded::Invalid("checksum");
    }
    let key_bytes = record
        .get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + key_len)
        .unwrap_or_default();
    let Ok(key) = std::str::from_utf8(key_bytes) else {
        return Decoded::Invalid("key is not UTF-8");
    };
    Decoded::Record(
        RecordRef {
            kind,
            seq: u64_at(record, REC_SEQ_AT),
            expires_at_ms: u64_at(record, REC_EXPIRES_AT),
            key,
            value: record.get(RECORD_HEADER_LEN + key_len..).unwrap_or_default(),
        },
        len,
    )
}

// ---- scan ----------------------------------------------------------------------------------

/// One thing found by a scan, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item<'a> {
    /// A valid record.
    Record(RecordRef<'a>),
    /// Bad bytes followed by at least one valid record: real damage, skipped.
    Damage(Range<u64>),
}

/// What a scan of a whole log found.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    /// Records and damaged ranges, in file order.
    pub items: Vec<Item<'a>>,
    /// Offset just past the last valid record.
    pub data_end: u64,
    /// Bad bytes after the last valid record: a torn tail, cut at open.
    pub torn_tail: Option<Range<u64>>,
}

/// Scans a whole log (header included; the caller has checked the header).
///
/// After a bad record the scan searches forward, byte by byte, for the next offset where a valid
/// record decodes; the bytes in between are damage. Bad bytes with no valid record after them are
/// a torn tail.
pub fn scan_log(buf: &[u8], log_id: u64) -> Scan<'_> {
    let mut scan = Scan {
        data_end: HEADER_LEN as u64,
        ..Scan::default()
    };
    let limit = buf.len();
    let mut at = HEADER_LEN;
    while at < limit {
        let rest = buf.get(at..).unwrap_or_default();
        let from = match decode_record(rest, log_id) {
            Decoded::Record(record, len) => {
                scan.items.push(Item::Record(record));
                at += len;
                scan.data_end = at as u64;
                continue;
            }
            // A zeroed block: resume the search at the next non-zero byte.
            Decoded::End => at + rest.iter().position(|&b| b != 0).unwrap_or(rest.len()),
            Decoded::Incomplete | Decoded::Invalid(_) => at + 1,
        };
        match resync(buf, from, log_id) {
            Some(next) => {
                scan.items.push(Item::Damage(at as u64..next as u64));
                at = next;
            }
            None => {
                scan.torn_tail = Some(at as u64..limit as u64);
                return scan;
            }
        }
    }
    scan
}

/// The first offset at or after `from` where a valid record decodes.
fn resync(buf: &[u8], from: usize, log_id: u64) -> Option<usize> {
    (from..buf.len()).find(|&at| {
        let rest = buf.get(at..).unwrap_or_default();
        // Cheap filters first: a complete header that passes the field checks.
        rest.get(..RECORD_HEADER_LEN)
            .is_some_and(|h| check_header(h).is_ok())
            && matches!(decode_record(rest, log_id), Decoded::Record(..))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(seq: u64, key: &'a str, value: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            kind: Kind::Set,
            seq,
            expires_at_ms: 99,
            key,
            value,
        }
    }

    #[test]
    fn header_round_trips_and_checks_crc_before_version() {
        let header = Header {
            log_id: 0xdead_beef_0123_4567,
            next_seq: 42,
        };
        let buf = encode_header(&header);
        assert_eq!(buf.len(), 36);
        assert_eq!(decode_header(&buf), Ok(header));
        let mut flipped_version = buf;
        flipped_version[HDR_VERSION_AT] ^= 0x02;
        assert_eq!(decode_header(&flipped_version), Err(HeaderError::Crc));
        assert_eq!(decode_header(&buf[..HEADER_LEN - 1]), Err(HeaderError::Short));
        let mut other = buf;
        other[0] = b'X';
        assert_eq!(decode_header(&other), Err(HeaderError::Magic));
    }

    #[test]
    fn record_round_trips_and_rejects_any_flipped_bit() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, &set(3, "key", b"value"));
        assert_eq!(buf.len(), record_len(3, 5));
        assert_eq!(
            decode_record(&buf, 7),
            Decoded::Record(set(3, "key", b"value"), buf.len())
        );
        for bit in 0..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !matches!(decode_record(&bad, 7), Decoded::Record(..)),
                "bit {bit} flip accepted"
            );
        }
    }

    #[test]
    fn a_record_only_checks_out_under_the_log_id_it_was_written_with() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 1, &set(3, "key", b"value"));
        assert_eq!(decode_record(&buf, 2), Decoded::Invalid("checksum"));
    }

    #[test]
    fn fields_that_a_kind_must_not_use_are_rejected() {
        for (kind, key, value, seq, expires) in [
            (Kind::Delete, "k", &b"v"[..], 1, 0),
            (Kind::Delete, "k", &b""[..], 1, 5),
            (Kind::Ack, "", &b""[..], 1, 0),
            (Kind::Overflow, "k", &b""[..], 0, 0),
            (Kind::Overflow, "", &b""[..], 3, 0),
            (Kind::OverflowCleared, "", &b"v"[..], 0, 0),
        ] {
            let mut buf = Vec::new();
            let record = RecordRef {
                kind,
                seq,
                expires_at_ms: expires,
                key,
                value,
            };
            encode_record(&mut buf, 1, &record);
            assert!(
                matches!(decode_record(&buf, 1), Decoded::Invalid(_)),
                "{record:?} accepted"
            );
        }
    }

    #[test]
    fn scan_reports_damage_in_the_middle_and_a_torn_tail() {
        let mut log = encode_header(&Header {
            log_id: 5,
            next_seq: 1,
        })
        .to_vec();
        let mut offsets = Vec::new();
        for i in 0..3u64 {
            offsets.push(log.len());
            encode_record(&mut log, 5, &set(i + 1, &format!("k{i}"), b"some value"));
        }
        let end = log.len();
        log[offsets[1] + RECORD_HEADER_LEN] ^= 0xff;
        let scan = scan_log(&log, 5);
        assert_eq!(scan.items.len(), 3);
        assert_eq!(scan.items[1], Item::Damage(offsets[1] as u64..offsets[2] as u64));
        assert_eq!(scan.data_end, end as u64);
        assert!(scan.torn_tail.is_none());

        let torn = &log[..end - 3];
        let scan = scan_log(torn, 5);
        assert_eq!(scan.data_end, offsets[1] as u64);
        assert_eq!(scan.torn_tail, Some(offsets[1] as u64..torn.len() as u64));
    }

    #[test]
    fn a_record_hidden_in_a_value_resyncs_only_under_the_log_id_it_was_written_with() {
        // The value of the second record is itself a complete record of this log's id.
        let mut inner = Vec::new();
        encode_record(&mut inner, 9, &set(100, "evil", b"x"));
        let mut log = encode_header(&Header {
            log_id: 9,
            next_seq: 1,
        })
        .to_vec();
        encode_record(&mut log, 9, &set(1, "a", b"1"));
        let second = log.len();
        encode_record(&mut log, 9, &set(2, "b", &inner));
        // Damage the second record's header. Under a different log id (the normal case: ids are
        // random per file) resync rejects the embedded copy; under the same id it would accept it,
        // which is why the id is random and never shown to the application.
        let mut other_log = encode_header(&Header {
            log_id: 10,
            next_seq: 1,
        })
        .to_vec();
        encode_record(&mut other_log, 10, &set(1, "a", b"1"));
        encode_record(&mut other_log, 10, &set(2, "b", &inner));
        other_log[second + 4] = 0x7f;
        let scan = scan_log(&other_log, 10);
        assert!(scan
            .items
            .iter()
            .all(|i| !matches!(i, Item::Record(r) if r.key == "evil")));
        assert!(scan.torn_tail.is_some());
        log[second + 4] = 0x7f;
        assert!(matches!(scan_log(&log, 9).items.last(), Some(Item::Record(r)) if r.key == "evil"));
    }
}
