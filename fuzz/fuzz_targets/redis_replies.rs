//! Arbitrary bytes as a Redis server's RESP reply to one of the level's calls, read as the level
//! reads it. See `redis_replies_target` in wire_targets.rs.
#![no_main]

#[allow(dead_code)]
mod wire {
    include!("../wire_targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::redis_replies_target(data));
