//! What a small damaged or hostile value can make a decode do: never hang, never reserve memory
//! out of proportion to its bytes, and say why it failed in words that point at the fix.
//! Values here are built by hand in bincode's standard layout (the tag byte, then varint
//! lengths: `0xFB` and a `u16`, `0xFD` and a `u64`, little endian). A test binary of its own:
//! the memory test reads the process's peak address space, and the other tests here take little.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::mpsc;
use std::time::Duration;

use uno_cache::{Codec, Error};

/// A recursive type, as `depth` names them: each level a list of the next.
#[derive(Debug, serde::Deserialize)]
struct Node {
    _kids: Vec<Node>,
}

/// A zero-size element: reading one takes no byte.
#[derive(Debug, serde::Deserialize)]
struct Marker;

/// The process's peak virtual size (`VmPeak`), in bytes.
fn peak_address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmPeak:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// 60 KB of levels that each claim 43,690 children: serde reserved up to 1 MiB per level from
/// the claimed length, about 3 GiB live at once before the depth bound stopped the decode (under
/// a limit on address space, as containers set, the process aborted). Now a nested list
/// reserves nothing from its length.
#[test]
fn a_nested_value_claiming_long_lists_reserves_memory_in_proportion_to_its_bytes() {
    let mut bytes = vec![Codec::bincode().tag()];
    for _ in 0..20_000 {
        bytes.extend_from_slice(&[0xFB, 0xAA, 0xAA]);
    }
    bytes.push(0);
    let before = peak_address_space();
    let result = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || Codec::bincode().decode::<Node>("tree:1", &bytes).map(drop))
        .unwrap()
        .join()
        .unwrap();
    let grown = peak_address_space().saturating_sub(before);
    assert!(matches!(result, Err(Error::Decode { .. })), "{result:?}");
    // The thread's stack and its malloc arena take some 70 MiB of address space of their own.
    assert!(grown < 512 << 20, "decoding 60 KB reserved {} MiB", grown >> 20);
}

/// Ten bytes claiming 2^64 - 1 zero-size elements kept a core busy for good: bincode charges
/// a list's length nothing, and such an element reads no byte.
#[test]
fn ten_bytes_claiming_endless_zero_size_elements_are_refused_at_once() {
    let mut bytes = vec![Codec::bincode().tag(), 0xFD];
    bytes.extend_from_slice(&u64::MAX.to_le_bytes());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(
            Codec::bincode()
                .decode::<Vec<Marker>>("k", &bytes)
                .map(|v| v.len()),
        );
    });
    let answer = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("decoding 10 bytes still running after 10 s");
    match answer {
        Err(Error::Decode { key, reason, .. }) => {
            assert_eq!(key, "k");
            assert!(
                reason.contains("more elements than its bytes can hold"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // A list of zero-size values within the bound still decodes.
    let small = Codec::bincode().encode("k", &vec![(); 1_000]).unwrap();
    assert_eq!(
        Codec::bincode().decode::<Vec<()>>("k", &small).unwrap().len(),
        1_000
    );
}

/// A type bincode cannot read back (it asks the format what comes next) is written, and its
/// read says what to do, not that another type was stored.
#[test]
fn a_type_bincode_cannot_read_gets_an_error_naming_the_json_codec() {
    let value = serde_json::json!({"id": 1});
    let bytes = Codec::bincode().encode("doc:1", &value).unwrap();
    let err = Codec::bincode()
        .decode::<serde_json::Value>("doc:1", &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"doc:1\"") && err.contains("codec = \"json\""),
        "{err}"
    );
    assert!(!err.contains("another type"), "{err}");
    // JSON reads it back.
    let bytes = Codec::json().encode("doc:1", &value).unwrap();
    assert_eq!(
        Codec::json()
            .decode::<serde_json::Value>("doc:1", &bytes)
            .unwrap(),
        value
    );
}

/// A payload of another type still gets the hint that points at it.
#[test]
fn a_value_of_another_type_is_named_as_the_likely_cause() {
    for codec in [Codec::bincode(), Codec::json()] {
        let bytes = codec.encode("k", &"text".to_owned()).unwrap();
        let err = codec.decode::<u64>("k", &bytes).unwrap_err().to_string();
        assert!(err.contains("was another type stored under this key?"), "{err}");
    }
}
