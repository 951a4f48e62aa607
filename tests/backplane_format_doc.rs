//! The backplane message format as `storage-format.md` ("Invalidation backplane messages") states it: messages built here by
//! hand, byte by byte from the document (not with the crate's encoder), must decode to what the
//! document says they mean, and every violation the document lists must be refused with the
//! error it names. If the code and the document drift apart, an independent publisher written
//! from the document would be silently ignored by every instance; this file catches that.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use uno_cache::invalidation::{InstanceId, Invalidation, InvalidationMessage, MessageError};
use uno_cache::Error;

/// A message per the document's layout table.
fn by_hand(version: u8, kind: u8, reserved: u16, origin: u128, seq: u64, strings: &[&[u8]]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(b"UNOI");
    m.push(version);
    m.push(kind);
    m.extend_from_slice(&reserved.to_le_bytes());
    m.extend_from_slice(&origin.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend_from_slice(&(strings.len() as u32).to_le_bytes());
    for s in strings {
        m.extend_from_slice(&(s.len() as u32).to_le_bytes());
        m.extend_from_slice(s);
    }
    let crc = crc32fast::hash(&m);
    m.extend_from_slice(&crc.to_le_bytes());
    m
}

fn reason(bytes: &[u8]) -> MessageError {
    match InvalidationMessage::decode(bytes) {
        Err(Error::InvalidMessage { reason }) => reason,
        other => panic!("expected InvalidMessage, got {other:?}"),
    }
}

const ORIGIN: u128 = 0x00112233_44556677_8899aabb_ccddeeff;

#[test]
fn a_keys_message_built_from_the_document_decodes() {
    let bytes = by_hand(1, 1, 0, ORIGIN, 7, &[b"user:42", b"cart:9"]);
    // Fixed part 36 bytes, two strings of 4 + len, CRC 4.
    assert_eq!(bytes.len(), 36 + (4 + 7) + (4 + 6) + 4);
    assert_eq!(&bytes[..4], &[0x55, 0x4E, 0x4F, 0x49]);
    let msg = InvalidationMessage::decode(&bytes).unwrap();
    assert_eq!(msg.origin, InstanceId::from_u128(ORIGIN));
    assert_eq!(msg.seq, 7);
    assert_eq!(
        msg.invalidation,
        Invalidation::Keys(vec!["user:42".into(), "cart:9".into()])
    );
    // The crate's encoder writes exactly the same bytes.
    assert_eq!(msg.encode(), bytes);
}

#[test]
fn every_kind_in_the_table_means_what_the_document_says() {
    let cases: Vec<(Vec<u8>, Invalidation)> = vec![
        (by_hand(1, 1, 0, ORIGIN, 1, &[]), Invalidation::Keys(vec![])),
        (
            by_hand(1, 2, 0, ORIGIN, 2, &[b"team:7", b""]),
            Invalidation::Tags(vec!["team:7".into(), String::new()]),
        ),
        (
            by_hand(1, 3, 0, ORIGIN, 3, &[b"session:"]),
            Invalidation::Prefix("session:".into()),
        ),
        (by_hand(1, 4, 0, ORIGIN, 4, &[]), Invalidation::All),
    ];
    for (bytes, want) in cases {
        assert_eq!(InvalidationMessage::decode(&bytes).unwrap().invalidation, want);
    }
    assert_eq!(by_hand(1, 4, 0, ORIGIN, 4, &[]).len(), 40, "the smallest message");
}

#[test]
fn every_check_in_the_reading_order_is_refused_with_the_error_it_names() {
    let good = by_hand(1, 1, 0, ORIGIN, 1, &[b"k"]);
    assert!(matches!(
        reason(&good[..39]),
        MessageError::TooShort { len: 39, min: 40 }
    ));
    assert_eq!(
        reason(b"PUBLISHED BY SOMEONE ELSE, NOT US AT ALL"),
        MessageError::BadMagic
    );
    assert_eq!(reason(b"{}"), MessageError::TooShort { len: 2, min: 40 });
    assert_eq!(
        reason(&by_hand(2, 1, 0, ORIGIN, 1, &[b"k"])),
        MessageError::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    );
    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    assert!(matches!(reason(&bad_crc), MessageError::BadChecksum { .. }));
    assert_eq!(
        reason(&by_hand(1, 5, 0, ORIGIN, 1, &[])),
        MessageError::UnknownKind(5)
    );
    assert_eq!(
        reason(&by_hand(1, 1, 1, ORIGIN, 1, &[b"k"])),
        MessageError::ReservedNotZero(1)
    );
    assert_eq!(
        reason(&by_hand(1, 3, 0, ORIGIN, 1, &[b"a", b"b"])),
        MessageError::BadCount { kind: 3, count: 2 }
    );
    assert_eq!(
        reason(&by_hand(1, 4, 0, ORIGIN, 1, &[b"a"])),
        MessageError::BadCount { kind: 4, count: 1 }
    );
    assert_eq!(
        reason(&by_hand(1, 1, 0, ORIGIN, 1, &[&[0xC3, 0x28]])),
        MessageError::NotUtf8 { index: 0 }
    );

    // Lengths that lie, with a valid CRC over the lie.
    let reseal = |mut body: Vec<u8>| {
        let crc = crc32fast::hash(&body);
        body.extend_from_slice(&crc.to_le_bytes());
        body
    };
    let body = good[..good.len() - 4].to_vec();
    let mut count_lies = body.clone();
    count_lies[32..36].copy_from_slice(&1_000_000u32.to_le_bytes());
    assert!(matches!(
        reason(&reseal(count_lies)),
        MessageError::Truncated { .. }
    ));
    let mut length_lies = body.clone();
    length_lies[36..40].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(reason(&reseal(length_lies)), MessageError::Truncated { index: 0 });
    let mut extra = body;
    extra.extend_from_slice(b"zz");
    assert_eq!(reason(&reseal(extra)), MessageError::TrailingBytes { count: 2 });
}

/// "Reading" gives the order of the checks: the kind before the reserved field, so a message
/// failing both is refused as `UnknownKind`, as an independent reader written from the
/// document refuses it (a newer kind says more about the message than its reserved bytes).
#[test]
fn an_unknown_kind_is_named_before_a_reserved_field_that_is_not_zero() {
    assert_eq!(
        reason(&by_hand(1, 9, 1, ORIGIN, 1, &[])),
        MessageError::UnknownKind(9)
    );
    // Then reserved before the count: a Prefix with no string and a reserved field set.
    assert_eq!(
        reason(&by_hand(1, 3, 2, ORIGIN, 1, &[])),
        MessageError::ReservedNotZero(2)
    );
}
