//! serde's words for a number a field's type cannot hold, in the configuration's terms: the range
//! a user can write, not the Rust type behind it (`expected u64`, `as i128`).

/// `message` with a Rust integer type it expects replaced by the range that type takes, and the
/// TOML parser's "integer number overflowed" (past `u128::MAX`) saying what is accepted. Any
/// other message is returned as it is.
pub(super) fn in_range_terms(message: &str) -> String {
    if message == "integer number overflowed" {
        return format!(
            "the number is too far from 0 to read; no setting takes a whole number outside 0..={}",
            u64::MAX
        );
    }
    let Some((what, expected)) = message.rsplit_once(", expected ") else {
        return message.to_owned();
    };
    let max = match expected {
        "u8" => u64::from(u8::MAX),
        "u16" => u64::from(u16::MAX),
        "u32" => u64::from(u32::MAX),
        "u64" => u64::MAX,
        "usize" => u64::try_from(usize::MAX).unwrap_or(u64::MAX),
        _ => return message.to_owned(),
    };
    // An integer past `u64::MAX` reaches the field as a 128-bit one, which serde calls a type
    // error: to the user it is a number out of range.
    let what = match what.strip_suffix(" as i128") {
        Some(number) => number.replacen("invalid type", "invalid value", 1),
        None => what.to_owned(),
    };
    format!("{what}, expected a whole number in 0..={max}")
}

#[cfg(test)]
mod tests {
    use crate::config::CacheConfig;
    use crate::error::Error;

    fn reason_of(text: &str) -> (String, String) {
        match CacheConfig::from_toml_str(text) {
            Err(Error::Config { field, reason }) => (field, reason),
            other => panic!("{text:?}: not a config error: {other:?}"),
        }
    }

    /// Before, the range was a Rust type (`expected u32`), and a number past `u64::MAX` a type
    /// error "as i128"; past `u128::MAX`, the parser's "integer number overflowed" said nothing
    /// of what to write (found by review).
    #[test]
    fn a_whole_number_out_of_its_fields_range_is_refused_naming_the_range() {
        for (text, field, says) in [
            ("[local]\nmax_size = -1\n", "local.max_size", "`-1`, expected a whole number in 0..=18446744073709551615"),
            (
                "[local]\nmax_size = 18446744073709551616\n",
                "local.max_size",
                "invalid value: integer `18446744073709551616`, expected a whole number in 0..=18446744073709551615",
            ),
            ("[distributed]\nbreaker_failures = 4294967296\n", "distributed.breaker_failures", "in 0..=4294967295"),
            ("[offline]\nreplay_max_entries = 1.5\n", "offline.replay_max_entries", "`1.5`, expected a whole number in 0..="),
            (
                "[loader]\nhard_timeout_ms = 340282366920938463463374607431768211456\n",
                "loader.hard_timeout_ms",
                "too far from 0 to read; no setting takes a whole number outside 0..=18446744073709551615",
            ),
        ] {
            let (named, reason) = reason_of(text);
            assert_eq!(named, field, "{text:?}");
            assert!(reason.contains(says), "{text:?}: {reason}");
            assert!(!reason.contains("u64") && !reason.contains("i128"), "{reason}");
        }
        // Other messages keep their words.
        let (_, reason) = reason_of("[local]\nmax_size = \"5\"\n");
        assert!(reason.contains("string \"5\""), "{reason}");
    }
}
