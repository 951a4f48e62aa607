//! Arbitrary sequences of sets, gets, deletes, fills, flushes, compactions, reopens and clock
//! moves on one file store, checked against a model. See `store_ops_target` in
//! store_targets.rs for the operations and what is checked.
#![no_main]

#[allow(dead_code)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::store_ops_target(data));
