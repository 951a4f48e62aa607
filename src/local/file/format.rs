//! Bytes on disk: file names, magic numbers, and the encoders and decoders of every file.
//!
//! `storage-format.md` at the repository root is the specification; this module is its only
//! implementation. All integers are little-endian. Offsets are named consts chained by size, so a
//! layout change shows up as a diff here and in the document together. The record header and the
//! header check (magic, CRC, version) are shared with the replay log through `crate::frame`.

use crate::frame::{self, Fields, Framed};
use crate::le::{put, u16_at, u32_at, u64_at};
use std::ops::Range;

pub use crate::frame::{HeaderError, RECORD_HEADER_LEN};

/// Current on-disk format version, written into every file header.
pub const FORMAT_VERSION: u16 = 1;

/// The store's file names live with every other on-disk name in `crate::files`.
pub use crate::files::{HINT_EXT, LOCK_FILE, META_FILE, SEGMENT_EXT, TMP_EXT};

pub const META_MAGIC: [u8; 8] = *b"UNOCMETA";
pub const SEGMENT_MAGIC: [u8; 8] = *b"UNOCSEG\0";
pub const HINT_MAGIC: [u8; 8] = *b"UNOCHINT";

pub use crate::keys::MAX_KEY_LEN;
/// Largest segment size; record offsets are 32-bit.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;
/// Smallest segment size.
pub const MIN_SEGMENT_SIZE: u64 = 64 * 1024;

// ---- metadata file -------------------------------------------------------------------------
// A 36-byte base (the original file), then an extension with the recorded size bound and its own
// CRC. Readers that predate the extension read the base and ignore the rest, so recording a bound
// never locks an older build out of a directory; a base without a valid extension means "no
// bound recorded".
const META_RESERVED_AT: usize = frame::AFTER_VERSION_AT;
const META_SEGMENT_SIZE_AT: usize = META_RESERVED_AT + 6;
const META_MIN_SEQ_AT: usize = META_SEGMENT_SIZE_AT + 8;
const META_CRC_AT: usize = META_MIN_SEQ_AT + 8;
/// Length of the base of the metadata file (all a file written before the extension has).
pub const META_LEN: usize = META_CRC_AT + 4;
const META_MAX_SIZE_AT: usize = META_LEN;
const META_EXT_CRC_AT: usize = META_MAX_SIZE_AT + 8;
/// Length of the metadata file with its extension, as this build writes it.
pub const META_EXT_LEN: usize = META_EXT_CRC_AT + 4;

/// The contents of the metadata file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Segment size fixed when the directory was created.
    pub segment_size: u64,
    /// Records with a sequence number below this were cleared and are ignored.
    pub min_seq: u64,
    /// The recorded size bound in bytes; 0 if none is recorded (a file without the extension,
    /// or with a damaged one).
    pub max_size: u64,
}

/// Encodes the metadata file, base and extension.
pub fn encode_meta(meta: &Meta) -> [u8; META_EXT_LEN] {
    let mut buf = [0u8; META_EXT_LEN];
    frame::put_magic_version(&mut buf, &META_MAGIC, FORMAT_VERSION);
    put(&mut buf, META_SEGMENT_SIZE_AT, &meta.segment_size.to_le_bytes());
    put(&mut buf, META_MIN_SEQ_AT, &meta.min_seq.to_le_bytes());
    frame::seal(&mut buf, META_CRC_AT);
    put(&mut buf, META_MAX_SIZE_AT, &meta.max_size.to_le_bytes());
    frame::seal(&mut buf, META_EXT_CRC_AT);
    buf
}

/// Decodes and checks the metadata file. The base must be valid (magic, CRC, then version: a
/// damaged version byte is damage, not a newer format); an extension that is missing, short or
/// fails its CRC only means no bound is recorded.
pub fn decode_meta(buf: &[u8]) -> Result<Meta, HeaderError> {
    frame::check_header(buf, META_LEN, &META_MAGIC, META_CRC_AT, FORMAT_VERSION)?;
    let segment_size = u64_at(buf, META_SEGMENT_SIZE_AT);
    if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
        return Err(HeaderError::Field("segment_size"));
    }
    let extension_ok = buf.len() >= META_EXT_LEN
        && crc32fast::hash(buf.get(..META_EXT_CRC_AT).unwrap_or_default()) == u32_at(buf, META_EXT_CRC_AT);
    Ok(Meta {
        segment_size,
        min_seq: u64_at(buf, META_MIN_SEQ_AT),
        max_size: if extension_ok {
            u64_at(buf, META_MAX_SIZE_AT)
        } else {
            0
        },
    })
}

// ---- segment header ------------------------------------------------------------------------
const SEG_FLAGS_AT: usize = frame::AFTER_VERSION_AT;
const SEG_SALT_AT: usize = SEG_FLAGS_AT + 2;
const SEG_ID_AT: usize = SEG_SALT_AT + 4;
const SEG_RESERVED2_AT: usize = SEG_ID_AT + 8;
const SEG_CRC_AT: usize = SEG_RESERVED2_AT + 4;
/// Length of the segment header; the first record starts here.
pub const SEGMENT_HEADER_LEN: usize = SEG_CRC_AT + 4;

/// What a segment header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment id; must match the file name.
    pub id: u64,
    /// Random per segment, mixed into every record's CRC, so that bytes copied from elsewhere (a
    /// record hidden inside a cached value, say) never pass as a record of this segment.
    pub salt: u32,
}

/// Encodes a segment header.
pub fn encode_segment_header(header: SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut buf = [0u8; SEGMENT_HEADER_LEN];
    frame::put_magic_version(&mut buf, &SEGMENT_MAGIC, FORMAT_VERSION);
    put(&mut buf, SEG_SALT_AT, &header.salt.to_le_bytes());
    put(&mut buf, SEG_ID_AT, &header.id.to_le_bytes());
    frame::seal(&mut buf, SEG_CRC_AT);
    buf
}

/// Checks a segment header and returns what it says.
pub fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    frame::check_header(
        buf,
        SEGMENT_HEADER_LEN,
        &SEGMENT_MAGIC,
        SEG_CRC_AT,
        FORMAT_VERSION,
    )?;
    Ok(SegmentHeader {
        id: u64_at(buf, SEG_ID_AT),
        salt: u32_at(buf, SEG_SALT_AT),
    })
}

/// A random salt for a new segment (from the OS-seeded hasher keys of the standard library).
pub fn new_salt(id: u64) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(id);
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 16) as u32
}

// ---- record (the header layout is `crate::frame`'s) -------------------------------------------

/// What a record says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The key holds the record's value.
    Value = 1,
    /// The key was deleted.
    Tombstone = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Value),
            2 => Some(Kind::Tombstone),
            _ => None,
        }
    }
}

/// Total encoded length of a record.
#[inline]
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    frame::record_len(key_len, value_len)
}

/// The fields of one record, borrowed from the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub kind: Kind,
    pub seq: u64,
    /// Absolute expiry in Unix ms; 0 means never.
    pub expires_at_ms: u64,
    pub key: &'a str,
    pub value: &'a [u8],
}

/// The capacity a writer's scratch buffer keeps between writes. A record (or a batch) is encoded
/// into it whole, so it grew to the largest write, up to a segment (64 MiB with the default
/// bound), and held that much RAM for the store's life.
const SCRATCH_KEEP: usize = 1 << 20;

/// Empties a writer's scratch buffer after a write, giving back what a large one took; the
/// length it had (the bytes the write needed).
pub(crate) fn release_scratch(buf: &mut Vec<u8>) -> usize {
    let len = buf.len();
    buf.clear();
    if buf.capacity() > SCRATCH_KEEP {
        buf.shrink_to(SCRATCH_KEEP);
    }
    len
}

/// Appends one encoded record to `out`. The caller has validated the key and value lengths.
#[inline]
pub fn encode_record(
    out: &mut Vec<u8>,
    salt: u32,
    kind: Kind,
    seq: u64,
    expires_at_ms: u64,
    key: &str,
    value: &[u8],
) {
    let record = frame::Record {
        kind: kind as u8,
        seq,
        expires_at_ms,
        key,
        value,
    };
    frame::encode_record(out, &salt.to_le_bytes(), &record);
}

/// The outcome of decoding at one offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record of `len` bytes.
    Record(RecordRef<'a>, usize),
    /// The header is all zero bytes: no record was ever written here.
    End,
    /// The buffer ends before the record does: a torn write, or the end of a short file.
    Incomplete,
    /// The bytes are not a valid record (bad checksum, kind, flags, or key).
    Invalid(&'static str),
}

/// Decodes the record at the start of `buf`, verifying its checksum against the segment's salt.
#[inline]
pub fn decode_record(buf: &[u8], salt: u32) -> Decoded<'_> {
    match frame::decode_record(buf, &salt.to_le_bytes(), check_fields) {
        Framed::Record {
            kind,
            seq,
            expires_at_ms,
            key,
            value,
            len,
        } => Decoded::Record(
            RecordRef {
                kind,
                seq,
                expires_at_ms,
                key,
                value,
            },
            len,
        ),
        Framed::End => Decoded::End,
        Framed::Incomplete => Decoded::Incomplete,
        Framed::Invalid(what) => Decoded::Invalid(what),
    }
}

/// The record rules of a segment, on the fields of a header: a known kind, zero flags, a key of
/// 1..=[`MAX_KEY_LEN`] bytes, no value in a tombstone, a value that fits a segment.
fn check_fields(f: &Fields) -> Result<Kind, &'static str> {
    let kind = Kind::from_byte(f.kind).ok_or("kind")?;
    if f.flags != 0 {
        return Err("flags");
    }
    if f.key_len == 0 || f.key_len > MAX_KEY_LEN {
        return Err("key length");
    }
    if kind == Kind::Tombstone && f.value_len != 0 {
        return Err("tombstone value length");
    }
    if f.value_len as u64 > MAX_SEGMENT_SIZE {
        return Err("value length");
    }
    Ok(kind)
}

/// The fixed fields of a record header, read without checking the CRC: for the bookkeeping
/// that needs a record's length, sequence number or expiry (the index keeps none of them). A
/// caller that uses the value decodes the whole record with [`decode_record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: Kind,
    /// Whole record length, header included.
    pub len: u32,
    pub key_len: u16,
    pub seq: u64,
    pub expires_at_ms: u64,
}

/// Reads the header at the start of `buf`; `None` if it is short or implausible.
#[inline]
pub fn peek_record_header(buf: &[u8]) -> Option<RecordHeader> {
    let f = Fields::read(buf)?;
    let kind = Kind::from_byte(f.kind)?;
    if f.key_len == 0 || f.key_len > MAX_KEY_LEN || f.value_len as u64 > MAX_SEGMENT_SIZE {
        return None;
    }
    Some(RecordHeader {
        kind,
        len: u32::try_from(f.record_len()).ok()?,
        key_len: u16::try_from(f.key_len).ok()?,
        seq: f.seq,
        expires_at_ms: f.expires_at_ms,
    })
}

// ---- segment scan --------------------------------------------------------------------------

/// One record found by a scan, located by its offset in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located<'a> {
    pub offset: u64,
    pub len: u32,
    pub record: RecordRef<'a>,
}

/// What a full scan of one segment's bytes found.
#[derive(Debug, Default)]
pub struct Scan<'a> {
    pub records: Vec<Located<'a>>,
    /// Offset just past the last good record.
    pub data_end: u64,
    /// Bad byte ranges followed by at least one good record: real damage, skipped.
    pub damaged: Vec<Range<u64>>,
    /// A bad range after the last good record: a torn tail (or damage at the very end).
    pub torn_tail: Option<Range<u64>>,
}

/// Scans a whole segment (header included), skipping damage.
///
/// After a bad record the scan searches forward, byte by byte, for the next offset where a valid
/// record decodes; the bytes in between are reported as damaged. Bad bytes with no valid record
/// after them are reported as a torn tail. The searches of one segment check checksums over at
/// most four times its length plus 1 MiB (see `search_for_record`), so a scan takes linear
/// time whatever the bytes.
pub fn scan_segment(buf: &[u8], salt: u32) -> Scan<'_> {
    scan(records(buf, salt))
}

/// [`scan_segment`] of `records`, a fresh iterator (one asking for its bytes ahead, say).
pub fn scan(mut records: Records<'_>) -> Scan<'_> {
    let found = records.by_ref().collect();
    Scan {
        records: found,
        data_end: records.data_end,
        damaged: records.damaged,
        torn_tail: records.torn_tail,
    }
}

/// The records of a whole segment (header included), one at a time, skipping damage as
/// [`scan_segment`] does: for a caller that needs each record once, and not all of them
/// decoded at once (about 70 bytes each in RAM).
pub fn records(buf: &[u8], salt: u32) -> Records<'_> {
    Records {
        buf,
        salt,
        at: SEGMENT_HEADER_LEN,
        // Everything past the last non-zero byte is unwritten preallocated space.
        limit: last_nonzero(buf),
        data_end: SEGMENT_HEADER_LEN as u64,
        damaged: Vec::new(),
        torn_tail: None,
        crc_budget: (buf.len() as u64)
            .saturating_mul(SEARCH_CRC_PER_BYTE)
            .saturating_add(SEARCH_CRC_BASE),
        ahead: None,
        window: AheadWindow::default(),
    }
}

/// Where a scan's bytes come from, asked for the ones it will read next (a segment's map, mapped
/// for random reads, whose faults read only the page they touch: a scan that did not ask would
/// wait for its pages one at a time).
pub trait ReadAhead {
    /// The scan will read `range` of its buffer soon.
    fn read_ahead(&self, range: Range<usize>);
}

/// Bytes a scan asks for ahead of itself at a time (see [`Records::read_ahead`]): a window small
/// enough that a scan in a small memory cgroup does not fill it with pages in flight.
pub const READ_AHEAD: usize = 1 << 20;

struct Ahead<'a>(&'a dyn ReadAhead);

impl std::fmt::Debug for Ahead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadAhead")
    }
}

/// Checksum work the searches past damage in one segment may do: this many bytes per byte of
/// the segment, plus [`SEARCH_CRC_BASE`]. A valid record found by a search costs its own length,
/// so ordinary damage needs about one segment's worth; only bytes full of lookalike record
/// headers (see [`search_for_record`]) run out.
const SEARCH_CRC_PER_BYTE: u64 = 4;
/// See [`SEARCH_CRC_PER_BYTE`].
const SEARCH_CRC_BASE: u64 = 1 << 20;

/// Iterator over a segment's records; see [`records`]. Once it has ended, its fields say what
/// the bytes held besides the records, as [`Scan`]'s do.
#[derive(Debug)]
pub struct Records<'a> {
    buf: &'a [u8],
    salt: u32,
    /// Where the next record is looked for.
    at: usize,
    limit: usize,
    /// Offset just past the last good record.
    pub data_end: u64,
    /// Bad byte ranges followed by at least one good record: real damage, skipped.
    pub damaged: Vec<Range<u64>>,
    /// A bad range after the last good record: a torn tail (or damage at the very end).
    pub torn_tail: Option<Range<u64>>,
    /// Checksum bytes the searches past damage may still spend (see [`SEARCH_CRC_PER_BYTE`]).
    crc_budget: u64,
    /// Asked for the bytes ahead, if set (see [`Records::read_ahead`]), through `window`.
    ahead: Option<Ahead<'a>>,
    window: AheadWindow,
}

/// What a reader going through a buffer in the order of offsets asks for ahead of itself: the
/// next [`READ_AHEAD`] bytes whenever it comes within half of that of the end of what it asked
/// for (a scan, see [`Records::read_ahead`], and an eviction's copies, `segment::InOrder`).
#[derive(Debug, Default)]
pub struct AheadWindow {
    asked_to: usize,
}

impl AheadWindow {
    /// Before a read at `at`: the bytes to ask for now, if any, none at or past `limit`.
    pub fn due(&mut self, at: usize, limit: usize) -> Option<Range<usize>> {
        let from = self.asked_to.max(at);
        if at.saturating_add(READ_AHEAD / 2) < self.asked_to || from >= limit {
            return None;
        }
        let to = from.saturating_add(READ_AHEAD).min(limit);
        self.asked_to = to;
        Some(from..to)
    }
}

impl<'a> Records<'a> {
    /// Has the iterator ask `source` for the next [`READ_AHEAD`] bytes whenever it comes within
    /// half of that of the end of what it asked for.
    pub fn read_ahead(mut self, source: &'a dyn ReadAhead) -> Self {
        self.ahead = Some(Ahead(source));
        self
    }

    fn ask_ahead(&mut self) {
        let Some(Ahead(source)) = self.ahead else {
            return;
        };
        if let Some(range) = self.window.due(self.at, self.limit) {
            source.read_ahead(range);
        }
    }

    /// The damaged ranges met so far, a bad range at the very end included: once the iterator
    /// has ended, all that the segment's bytes hold.
    pub fn damaged_ranges(&self) -> u64 {
        self.damaged.len() as u64 + u64::from(self.torn_tail.is_some())
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Located<'a>;

    fn next(&mut self) -> Option<Located<'a>> {
        let (buf, salt, limit) = (self.buf, self.salt, self.limit);
        while self.at < limit {
            self.ask_ahead();
            let at = self.at;
            let rest = buf.get(at..).unwrap_or_default();
            let next = match decode_record(rest, salt) {
                Decoded::Record(record, len) => {
                    self.at = at + len;
                    self.data_end = self.at as u64;
                    return Some(Located {
                        offset: at as u64,
                        len: u32::try_from(len).unwrap_or(u32::MAX),
                        record,
                    });
                }
                Decoded::End => {
                    // Zeros here normally mean "end of data"; non-zero bytes further on mean
                    // damage (for example a zeroed block in the middle).
                    // The search starts where a record whose first non-zero byte is that one
                    // could start: its CRC may begin with zero bytes, so up to its kind byte.
                    let skip = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
                    let from = (at + skip).saturating_sub(frame::KIND_AT).max(at + 1);
                    search_for_record(buf, salt, from, limit, &mut self.crc_budget).ok_or(limit)
                }
                Decoded::Incomplete | Decoded::Invalid(_) => {
                    let budget = &mut self.crc_budget;
                    skip_damaged(buf, salt, at, limit, budget)
                        .or_else(|| search_for_record(buf, salt, at + 1, limit, budget))
                        .ok_or(limit.max(at + 1))
                }
            };
            match next {
                Ok(next) => {
                    self.damaged.push(at as u64..next as u64);
                    self.at = next;
                }
                Err(end) => {
                    self.torn_tail = Some(at as u64..end as u64);
                    self.at = limit;
                }
            }
        }
        None
    }
}

/// If the record at `at` has a plausible header (valid kind, zero flags, lengths within the
/// buffer) and a valid record or the end of the data (only zeros) follows it, the offset after it.
///
/// Searching byte by byte inside a damaged record could "find" a record that is really part of its
/// value; trusting an intact header avoids that in the common case of damage to the payload.
fn skip_damaged(buf: &[u8], salt: u32, at: usize, limit: usize, budget: &mut u64) -> Option<usize> {
    let f = Fields::read(buf.get(at..)?)?;
    Kind::from_byte(f.kind)?;
    if f.flags != 0 || f.key_len == 0 || f.key_len > MAX_KEY_LEN || f.value_len as u64 > MAX_SEGMENT_SIZE {
        return None;
    }
    let next = at.checked_add(f.record_len())?;
    if next > buf.len() {
        return None;
    }
    // The end of the data is zeros up to the end of the buffer (`limit` is past the last
    // non-zero byte). A run of zeros with non-zero bytes after it is not: a damaged length can
    // land in the zeros of a later value, and skipping there lost the records in between.
    if next >= limit {
        return Some(next);
    }
    is_record_within(buf.get(next..)?, salt, budget).then_some(next)
}

/// The first offset in `from..limit` where a valid record decodes, within the checksum budget.
///
/// Every offset is a candidate, and only a record's CRC, over its whole length, refutes one
/// whose header fields look right. Bytes that repeat such a header (a value of small
/// little-endian integers can) made this quadratic: every 8 bytes a candidate claiming a
/// megabyte. The CRCs are paid from `budget` (see [`SEARCH_CRC_PER_BYTE`]); a candidate it can
/// no longer pay for is passed over, so such bytes end as damage or a torn tail, which is what
/// they are.
fn search_for_record(buf: &[u8], salt: u32, from: usize, limit: usize, budget: &mut u64) -> Option<usize> {
    (from..limit).find(|&at| {
        let rest = buf.get(at..).unwrap_or_default();
        // Cheap filters first: a kind byte and a zero flags byte.
        matches!(rest.get(frame::KIND_AT), Some(1 | 2))
            && rest.get(frame::FLAGS_AT) == Some(&0)
            && is_record_within(rest, salt, budget)
    })
}

/// Whether a valid record starts `rest`, its CRC paid from `budget`: a record whose header
/// fields fail, or that the buffer cannot hold, costs nothing; one the budget cannot pay for is
/// not checked and not taken.
fn is_record_within(rest: &[u8], salt: u32, budget: &mut u64) -> bool {
    frame::pay_for_candidate(rest, budget, check_fields)
        && matches!(decode_record(rest, salt), Decoded::Record(..))
}

/// The offset just past the last non-zero byte. Runs of zeros are skipped 64 bytes at a time
/// (an OR the compiler vectorises): the active segment found at open is mostly preallocated
/// zeros, and a byte-by-byte search of them was a tenth of the time to reopen a million entries.
fn last_nonzero(buf: &[u8]) -> usize {
    const STEP: usize = 64;
    let mut end = buf.len();
    while end >= STEP {
        let all_zero = buf
            .get(end - STEP..end)
            .is_some_and(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) == 0);
        if !all_zero {
            break;
        }
        end -= STEP;
    }
    buf.get(..end)
        .and_then(|head| head.iter().rposition(|&b| b != 0))
        .map_or(0, |i| i + 1)
}

// ---- hint file -----------------------------------------------------------------------------
const HINT_RESERVED_AT: usize = frame::AFTER_VERSION_AT;
const HINT_SEGMENT_ID_AT: usize = HINT_RESERVED_AT + 6;
const HINT_DATA_END_AT: usize = HINT_SEGMENT_ID_AT + 8;
/// Length of the hint file header; entries follow.
pub const HINT_HEADER_LEN: usize = HINT_DATA_END_AT + 8;

const HE_KIND_AT: usize = 0;
const HE_RESERVED_AT: usize = HE_KIND_AT + 1;
const HE_KEY_LEN_AT: usize = HE_RESERVED_AT + 1;
const HE_OFFSET_AT: usize = HE_KEY_LEN_AT + 2;
const HE_LEN_AT: usize = HE_OFFSET_AT + 4;
const HE_SEQ_AT: usize = HE_LEN_AT + 4;
const HE_EXPIRES_AT: usize = HE_SEQ_AT + 8;
/// Length of a hint entry before its key.
pub const HINT_ENTRY_LEN: usize = HE_EXPIRES_AT + 8;
/// Bytes a record takes on disk with its entry in the segment's hint file: what the size bound
/// counts for it.
#[inline]
pub fn stored_len(key_len: usize, value_len: usize) -> u64 {
    (record_len(key_len, value_len) + HINT_ENTRY_LEN + key_len) as u64
}

/// Trailer: entry count (u32) then CRC32 (u32) of everything before the CRC.
pub const HINT_TRAILER_LEN: usize = 8;

/// One hint entry: where a record is and what it says, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintEntry {
    pub kind: Kind,
    pub key: Box<str>,
    pub offset: u32,
    pub len: u32,
    pub seq: u64,
    pub expires_at_ms: u64,
}

/// A decoded hint file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub segment_id: u64,
    pub data_end: u64,
    pub entries: Vec<HintEntry>,
}

/// Appends the hint header.
pub fn encode_hint_header(out: &mut Vec<u8>, segment_id: u64, data_end: u64) {
    out.extend_from_slice(&HINT_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&[0u8; 6]);
    out.extend_from_slice(&segment_id.to_le_bytes());
    out.extend_from_slice(&data_end.to_le_bytes());
}

/// Appends one hint entry.
pub fn encode_hint_entry(
    out: &mut Vec<u8>,
    kind: Kind,
    key: &str,
    offset: u32,
    len: u32,
    seq: u64,
    expires_at_ms: u64,
) {
    out.push(kind as u8);
    out.push(0);
    out.extend_from_slice(&u16::try_from(key.len()).unwrap_or(u16::MAX).to_le_bytes());
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(key.as_bytes());
}

/// Appends the trailer (entry count and CRC over everything before the CRC).
pub fn encode_hint_trailer(out: &mut Vec<u8>, entries: u32) {
    out.extend_from_slice(&entries.to_le_bytes());
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Decodes and checks a whole hint file. Any damage rejects the file: the caller scans the
/// segment instead.
pub fn decode_hint(buf: &[u8]) -> Result<Hint, HeaderError> {
    let view = check_hint(buf)?;
    let mut entries = Vec::with_capacity(view.count.min(view.body.len() / HINT_ENTRY_LEN));
    view.try_for_each(|e| {
        entries.push(HintEntry {
            kind: e.kind,
            key: e.key.into(),
            offset: e.offset,
            len: e.len,
            seq: e.seq,
            expires_at_ms: e.expires_at_ms,
        });
        Ok(())
    })?;
    Ok(Hint {
        segment_id: view.segment_id,
        data_end: view.data_end,
        entries,
    })
}

/// One hint entry borrowed from the file's bytes (no allocation per key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HintEntryRef<'a> {
    pub kind: Kind,
    pub key: &'a str,
    pub offset: u32,
    pub len: u32,
    pub seq: u64,
    pub expires_at_ms: u64,
}

/// A hint file whose every byte was checked by [`check_hint`].
#[derive(Debug, Clone, Copy)]
pub struct HintView<'a> {
    pub segment_id: u64,
    pub data_end: u64,
    body: &'a [u8],
    count: usize,
}

/// Checks a hint file's header and CRC without allocating; [`HintView::try_for_each`] then
/// walks and checks the entries.
pub fn check_hint(buf: &[u8]) -> Result<HintView<'_>, HeaderError> {
    // The CRC is the file's last 4 bytes and covers everything before it.
    let crc_at = buf.len().saturating_sub(4);
    frame::check_header(
        buf,
        HINT_HEADER_LEN + HINT_TRAILER_LEN,
        &HINT_MAGIC,
        crc_at,
        FORMAT_VERSION,
    )?;
    Ok(HintView {
        segment_id: u64_at(buf, HINT_SEGMENT_ID_AT),
        data_end: u64_at(buf, HINT_DATA_END_AT),
        body: buf.get(HINT_HEADER_LEN..crc_at - 4).unwrap_or_default(),
        count: u32_at(buf, crc_at - 4) as usize,
    })
}

impl<'a> HintView<'a> {
    /// Passes every entry, in file order, to `f`, checking each and then the entry count; stops
    /// at the first error (`f`'s or the file's). Entries before it were passed already.
    pub fn try_for_each(
        &self,
        mut f: impl FnMut(HintEntryRef<'a>) -> Result<(), HeaderError>,
    ) -> Result<(), HeaderError> {
        let mut at = 0;
        let mut seen = 0usize;
        while at < self.body.len() {
            let (entry, next) = hint_entry_at(self.body, at)?;
            f(entry)?;
            at = next;
            seen += 1;
        }
        if seen != self.count {
            return Err(HeaderError::Field("entry count"));
        }
        Ok(())
    }
}

/// The hint entry at `at` of `body`, and the offset after it.
fn hint_entry_at(body: &[u8], at: usize) -> Result<(HintEntryRef<'_>, usize), HeaderError> {
    let e = body
        .get(at..at + HINT_ENTRY_LEN)
        .ok_or(HeaderError::Field("entry"))?;
    let kind = Kind::from_byte(e.get(HE_KIND_AT).copied().unwrap_or(0)).ok_or(HeaderError::Field("kind"))?;
    let key_len = usize::from(u16_at(e, HE_KEY_LEN_AT));
    if key_len == 0 || key_len > MAX_KEY_LEN {
        return Err(HeaderError::Field("key length"));
    }
    let key_bytes = body
        .get(at + HINT_ENTRY_LEN..at + HINT_ENTRY_LEN + key_len)
        .ok_or(HeaderError::Field("key"))?;
    let key = std::str::from_utf8(key_bytes).map_err(|_| HeaderError::Field("key"))?;
    Ok((
        HintEntryRef {
            kind,
            key,
            offset: u32_at(e, HE_OFFSET_AT),
            len: u32_at(e, HE_LEN_AT),
            seq: u64_at(e, HE_SEQ_AT),
            expires_at_ms: u64_at(e, HE_EXPIRES_AT),
        },
        at + HINT_ENTRY_LEN + key_len,
    ))
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
