//! `decode_record`, `scan_segment` and the hint and metadata decoders on arbitrary bytes.
#![no_main]

#[allow(dead_code)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::decode_record_target(data));
