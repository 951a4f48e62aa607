//! Arbitrary segment and hint files next to a valid metadata file: open, read everything, write,
//! compact, reopen. See `recover_dir_target` in targets.rs for the input layout.
#![no_main]

#[allow(dead_code)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::recover_dir_target(data));
