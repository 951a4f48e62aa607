//! Arbitrary bytes as the replay queue's log: open, read every pending op, push, reopen. See
//! `replay_log_target` in targets.rs for the input layout.
#![no_main]

#[allow(dead_code)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::replay_log_target(data));
