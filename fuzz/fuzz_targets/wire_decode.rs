//! Arbitrary bytes as an L2 value's envelope or a backplane message: decoded, and re-encoded to
//! the same bytes when accepted. See `wire_decode_target` in wire_targets.rs.
#![no_main]

#[allow(dead_code)]
mod wire {
    include!("../wire_targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::wire_decode_target(data));
