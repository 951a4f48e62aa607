//! L1: levels that live in this process or on this machine.
//!
//! - [`mod@file`]: the default, a crash-safe persistent store.

pub mod file;
