//! Arbitrary bytes as a Memcached server's replies to one command, read as a connection reads
//! them. See `memcached_replies_target` in wire_targets.rs.
#![no_main]

#[allow(dead_code)]
mod wire {
    include!("../wire_targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| wire::memcached_replies_target(data));
