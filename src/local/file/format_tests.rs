//! Tests of the byte layouts (`format.rs`): records, hints and headers round-trip, and any
//! damage is caught.

use super::*;

const S: u32 = 0x5eed_5a17;

#[test]
fn record_round_trips_and_rejects_any_flipped_bit() {
    let mut buf = Vec::new();
    encode_record(&mut buf, S, Kind::Value, 7, 99, "key", b"value");
    assert_eq!(buf.len(), record_len(3, 5));
    match decode_record(&buf, S) {
        Decoded::Record(r, len) => {
            assert_eq!(
                (r.kind, r.seq, r.expires_at_ms, r.key, r.value),
                (Kind::Value, 7, 99, "key", &b"value"[..])
            );
            assert_eq!(len, buf.len());
        }
        other => panic!("expected a record, got {other:?}"),
    }
    for bit in 0..buf.len() * 8 {
        let mut bad = buf.clone();
        if let Some(b) = bad.get_mut(bit / 8) {
            *b ^= 1 << (bit % 8);
        }
        assert!(
            !matches!(decode_record(&bad, S), Decoded::Record(..)),
            "bit {bit} flip accepted"
        );
    }
}

#[test]
fn a_record_from_another_segment_fails_the_crc() {
    let mut buf = Vec::new();
    encode_record(&mut buf, S, Kind::Value, 1, 0, "k", b"v");
    assert!(matches!(decode_record(&buf, S), Decoded::Record(..)));
    assert_eq!(decode_record(&buf, S ^ 1), Decoded::Invalid("checksum"));
}

#[test]
fn zero_header_is_end_and_short_buffer_is_incomplete() {
    assert_eq!(decode_record(&[0u8; 64], S), Decoded::End);
    let mut buf = Vec::new();
    encode_record(&mut buf, S, Kind::Value, 1, 0, "k", b"v");
    assert_eq!(
        decode_record(buf.get(..buf.len() - 1).unwrap_or_default(), S),
        Decoded::Incomplete
    );
}

#[test]
fn scan_skips_damage_in_the_middle_and_reports_a_torn_tail() {
    let mut seg = encode_segment_header(SegmentHeader { id: 1, salt: S }).to_vec();
    let mut offsets = Vec::new();
    for i in 0..3u64 {
        offsets.push(seg.len());
        encode_record(&mut seg, S, Kind::Value, i, 0, &format!("k{i}"), b"some value");
    }
    let end = seg.len();
    seg.extend_from_slice(&[0u8; 100]);
    // Damage the middle record.
    if let Some(b) = seg.get_mut(offsets[1] + RECORD_HEADER_LEN) {
        *b ^= 0xff;
    }
    let scan = scan_segment(&seg, S);
    assert_eq!(scan.records.len(), 2);
    assert_eq!(scan.damaged.len(), 1);
    assert_eq!(scan.data_end, end as u64);
    assert!(scan.torn_tail.is_none());

    // Tear the last record.
    let mut torn = seg.get(..end - 3).unwrap_or_default().to_vec();
    torn.extend_from_slice(&[0u8; 50]);
    let scan = scan_segment(&torn, S);
    assert_eq!(scan.records.len(), 1);
    assert!(scan.torn_tail.is_some());
}

#[test]
fn a_record_damaged_in_its_value_is_skipped_by_length_not_searched() {
    // The damaged record's value holds a complete, valid record of another key: searching
    // byte by byte would surface it; skipping by the intact header's length must not.
    let mut inner = Vec::new();
    encode_record(
        &mut inner,
        S,
        Kind::Value,
        99,
        0,
        "smuggled",
        b"not really written",
    );
    let mut seg = encode_segment_header(SegmentHeader { id: 1, salt: S }).to_vec();
    encode_record(&mut seg, S, Kind::Value, 1, 0, "outer", &inner);
    encode_record(&mut seg, S, Kind::Value, 2, 0, "after", b"ok");
    seg.extend_from_slice(&[0u8; 64]);
    if let Some(b) = seg.get_mut(SEGMENT_HEADER_LEN + RECORD_HEADER_LEN + 2) {
        *b ^= 0x01; // in the outer record's value, before the embedded record
    }
    let scan = scan_segment(&seg, S);
    let keys: Vec<&str> = scan.records.iter().map(|r| r.record.key).collect();
    assert_eq!(keys, vec!["after"]);
    assert_eq!(scan.damaged.len(), 1);
}

#[test]
fn a_search_past_damage_through_values_full_of_header_lookalikes_takes_linear_time() {
    // Every 8 bytes the pattern reads as a record header (kind 1, flags 0, key_len 1,
    // value_len 1 MiB) whose key is valid UTF-8: only its CRC, over 1 MiB, refutes it. Checked
    // at every candidate, 2 MiB of it cost 128 GiB of CRC.
    let pattern = [0x01u8, 0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x00];
    let mut seg = encode_segment_header(SegmentHeader { id: 1, salt: S }).to_vec();
    seg.push(0xff);
    while seg.len() < SEGMENT_HEADER_LEN + 1 + (2 << 20) {
        seg.extend_from_slice(&pattern);
    }
    let candidate = SEGMENT_HEADER_LEN + 1 + 4;
    let header = Fields::read(seg.get(candidate..).unwrap_or_default());
    assert_eq!(
        header.map(|f| (f.kind, f.flags, f.key_len, f.value_len)),
        Some((1, 0, 1, 1 << 20)),
        "the pattern no longer looks like a record header"
    );
    let started = std::time::Instant::now();
    let scan = scan_segment(&seg, S);
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "the scan took {took:?}");
    assert!(scan.records.is_empty());
    assert_eq!(scan.data_end, SEGMENT_HEADER_LEN as u64);
    assert!(scan.torn_tail.is_some() || !scan.damaged.is_empty());
}

#[test]
fn a_valid_record_after_damage_is_found_past_header_lookalikes() {
    // The bound on the search's checksum work must not cost the records after ordinary
    // damage, the largest ones included.
    let mut seg = encode_segment_header(SegmentHeader { id: 1, salt: S }).to_vec();
    encode_record(
        &mut seg,
        S,
        Kind::Value,
        1,
        0,
        "first",
        &[0x01, 0x00, 0x01, 0x00].repeat(4096),
    );
    let damaged = seg.len();
    encode_record(&mut seg, S, Kind::Value, 2, 0, "second", b"x");
    encode_record(&mut seg, S, Kind::Value, 3, 0, "big", &vec![7u8; 1 << 20]);
    seg.extend_from_slice(&[0u8; 64]);
    // The second record's header is hit, so the scan must search.
    if let Some(b) = seg.get_mut(damaged + 4) {
        *b = 0x09;
    }
    let scan = scan_segment(&seg, S);
    let keys: Vec<&str> = scan.records.iter().map(|r| r.record.key).collect();
    assert_eq!(keys, vec!["first", "big"]);
    assert_eq!(scan.damaged.len(), 1);
    assert!(scan.torn_tail.is_none());
}

#[test]
fn last_nonzero_finds_the_last_set_byte_at_every_position() {
    assert_eq!(last_nonzero(&[]), 0);
    assert_eq!(last_nonzero(&[0u8; 300]), 0);
    for at in [0usize, 1, 63, 64, 65, 127, 128, 200, 299] {
        let mut buf = vec![0u8; 300];
        buf[at] = 9;
        assert_eq!(last_nonzero(&buf), at + 1, "set byte at {at}");
        buf[0] = 1;
        assert_eq!(last_nonzero(&buf), at + 1, "set bytes at 0 and {at}");
    }
}

#[test]
fn a_damaged_version_byte_is_a_checksum_failure_in_every_header() {
    let meta = encode_meta(&Meta {
        segment_size: 1 << 20,
        min_seq: 0,
        max_size: 0,
    });
    let segment = encode_segment_header(SegmentHeader { id: 1, salt: S });
    let mut hint = Vec::new();
    encode_hint_header(&mut hint, 1, 32);
    encode_hint_trailer(&mut hint, 0);
    let mut bad = meta;
    bad[frame::VERSION_AT] ^= 0x02;
    assert_eq!(decode_meta(&bad), Err(HeaderError::Crc));
    let mut bad = segment;
    bad[frame::VERSION_AT] ^= 0x02;
    assert_eq!(decode_segment_header(&bad), Err(HeaderError::Crc));
    let mut bad = hint.clone();
    bad[frame::VERSION_AT] ^= 0x02;
    assert_eq!(check_hint(&bad).map(|_| ()), Err(HeaderError::Crc));
}

#[test]
fn meta_and_hint_round_trip() {
    let meta = Meta {
        segment_size: 1 << 20,
        min_seq: 5,
        max_size: 3 << 30,
    };
    let bytes = encode_meta(&meta);
    assert_eq!(decode_meta(&bytes), Ok(meta));
    // The base alone, or a damaged extension: no bound recorded, everything else kept.
    let unrecorded = Meta { max_size: 0, ..meta };
    assert_eq!(
        decode_meta(bytes.get(..META_LEN).unwrap_or_default()),
        Ok(unrecorded)
    );
    let mut damaged = bytes;
    put(&mut damaged, META_MAX_SIZE_AT, &7u64.to_le_bytes());
    assert_eq!(decode_meta(&damaged), Ok(unrecorded));
    let mut buf = Vec::new();
    encode_hint_header(&mut buf, 3, 1000);
    encode_hint_entry(&mut buf, Kind::Tombstone, "gone", 32, 40, 9, 0);
    encode_hint_trailer(&mut buf, 1);
    let hint = decode_hint(&buf);
    assert!(matches!(&hint, Ok(h) if h.segment_id == 3 && h.data_end == 1000 && h.entries.len() == 1));
    let mut bad = buf.clone();
    if let Some(b) = bad.get_mut(HINT_HEADER_LEN + 3) {
        *b ^= 1;
    }
    assert_eq!(decode_hint(&bad), Err(HeaderError::Crc));
}

/// Records what a scan asked for ahead of itself.
#[derive(Default)]
struct Asked(std::cell::RefCell<Vec<Range<usize>>>);

impl ReadAhead for Asked {
    fn read_ahead(&self, range: Range<usize>) {
        self.0.borrow_mut().push(range);
    }
}

#[test]
fn a_scan_asks_for_its_bytes_ahead_of_itself_a_window_at_a_time() {
    let mut seg = encode_segment_header(SegmentHeader { id: 1, salt: S }).to_vec();
    let value = vec![b'v'; 3000];
    for i in 0..1500u64 {
        encode_record(&mut seg, S, Kind::Value, i, 0, &format!("k{i}"), &value);
    }
    let end = seg.len();
    seg.extend_from_slice(&[0u8; 4096]);
    let asked = Asked::default();
    let records = records(&seg, S).read_ahead(&asked);
    let mut seen = 0;
    for located in records {
        let record_end = located.offset as usize + located.len as usize;
        let covered = asked.0.borrow().last().map_or(0, |r| r.end);
        assert!(
            covered >= record_end,
            "the record ending at {record_end} was read before it was asked for ({covered})"
        );
        // The next window is asked for half a window before the last one ends.
        assert!(
            covered <= located.offset as usize + READ_AHEAD + READ_AHEAD / 2,
            "asked for up to {covered}, more than one and a half windows past {}",
            located.offset
        );
        seen += 1;
    }
    assert_eq!(seen, 1500);
    let asked = asked.0.into_inner();
    // Contiguous windows from the first record to the data end, each at most READ_AHEAD long.
    assert_eq!(asked.first().map(|r| r.start), Some(SEGMENT_HEADER_LEN));
    assert_eq!(asked.last().map(|r| r.end), Some(end));
    assert!(asked.windows(2).all(|w| w[0].end == w[1].start), "{asked:?}");
    assert!(asked.iter().all(|r| r.len() <= READ_AHEAD), "{asked:?}");
    assert!(asked.len() >= end / READ_AHEAD, "{asked:?}");
}
