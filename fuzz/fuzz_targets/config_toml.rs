//! Arbitrary text through `CacheConfig::from_toml_str` and `validate`; a local-only config
//! builds a manager in a temp directory.
#![no_main]

#[allow(dead_code)]
mod targets {
    include!("../targets.rs");
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::config_toml_target(data));
