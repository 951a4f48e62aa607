//! The `uno-cache` command-line tool (work in progress).

fn main() {}
