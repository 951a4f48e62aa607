//! How a TOML text that does not parse is reported: the dotted name of the field at fault, its
//! line and column, and serde's words for a number a field's type cannot hold, or for a list, in
//! the configuration's terms (the range a user can write, not the Rust type behind it: `expected
//! u64`, `as i128`; an array, not `a sequence`).

use super::invalid;
use crate::error::Result;

/// `message` with a Rust integer type it expects replaced by the range that type takes, and the
/// TOML parser's "integer number overflowed" (past `u128::MAX`) saying what is accepted, and
/// serde's "a sequence" as TOML's array. Any other message is returned as it is.
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
    // serde's word for a list; TOML's is "array", and the one-host mistake (`hosts = "h:1"`)
    // is fixed by the brackets.
    if expected == "a sequence" {
        return format!("{what}, expected an array, in brackets (hosts = [\"127.0.0.1:6379\"])");
    }
    // The one float setting (`loader.refresh_ahead`): "f64" is Rust's name, not the user's.
    if expected == "f64" {
        return format!("{what}, expected a number, such as 0.8");
    }
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

/// `message` (from [`in_range_terms`]) with the unit of `field`'s number, where the value was
/// not a whole number at all (a string or a float: `max_size = "1GB"`, `timeout_ms = "100ms"`):
/// the unit is what such a value tried to say, and the range alone did not tell it.
pub(super) fn with_unit(field: &str, message: String) -> String {
    let mistyped = ["invalid type: string", "invalid type: floating point"]
        .iter()
        .any(|t| message.starts_with(t));
    if !mistyped || !message.contains("expected a whole number") {
        return message;
    }
    let key = field.rsplit('.').next().unwrap_or(field);
    let unit = if field == "local.max_size" {
        "in MiB for a file or redb L1 and in items for a memory L1 (1 GiB: max_size = 1024)"
    } else if key.ends_with("_ms") {
        "in milliseconds"
    } else if key.ends_with("_mb") {
        "in MiB"
    } else if key.ends_with("_secs") {
        "in seconds"
    } else if key.ends_with("_bytes") || key == "max_item_size" {
        "in bytes"
    } else {
        return message;
    };
    format!("{message}; the number is {unit}, written bare")
}

/// `message` with where its unknown key belongs, when `field` is a key of another section or of
/// the top level (no backticks: [`without_secrets`] hides what they quote on a password's line): TOML puts every key after a `[section]` line into that section, so
/// `fallback_on_error = false` added at the end of a file was refused as an unknown
/// `distributed.fallback_on_error`, with `[distributed]`'s keys listed and not a word on the
/// move that fixes it (found by following the README as a new user). Any other message is
/// returned as it is.
pub(super) fn with_placement(field: &str, message: String) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message;
    };
    let Some((key, _)) = rest.split_once('`') else {
        return message;
    };
    let here = field.rsplit_once('.').map(|(section, _)| section);
    if !here.is_none_or(|s| SECTIONS.contains(&s)) {
        return message;
    }
    let top_level = keys_of(None);
    let hint = if here.is_some() && top_level.iter().any(|k| k == key) && !SECTIONS.contains(&key) {
        format!(
            "; {key} is a top-level setting: write it above the first [section] line (TOML puts every key after a [{}] line into that section)",
            here.unwrap_or_default()
        )
    } else {
        let owners: Vec<String> = SECTIONS
            .iter()
            .filter(|s| Some(**s) != here && keys_of(Some(s)).iter().any(|k| k == key))
            .map(|s| format!("[{s}]"))
            .collect();
        if owners.is_empty() {
            return message;
        }
        format!(
            "; {key} is a setting of {}: move it under that section's line",
            owners.join(" and ")
        )
    };
    message + &hint
}

/// The keys a section (or, with `None`, the top level) takes, as the parse lists them when it
/// refuses an unknown one: read from the configuration's own types, so no list here can fall
/// behind them.
fn keys_of(section: Option<&str>) -> Vec<String> {
    const PROBE: &str = "uno_cache_no_such_key";
    let text = match section {
        Some(s) => format!("[{s}]\n{PROBE} = 0\n"),
        None => format!("{PROBE} = 0\n"),
    };
    let Err(e) = toml::from_str::<super::CacheConfig>(&text) else {
        return Vec::new();
    };
    let message = e.message().to_owned();
    // serde's words: "expected `a`", "expected `a` or `b`", "expected one of `a`, `b`, `c`".
    let Some((_, listed)) = message.split_once("expected ") else {
        return Vec::new();
    };
    let listed = listed.strip_prefix("one of ").unwrap_or(listed);
    listed
        .split(", ")
        .flat_map(|k| k.split(" or "))
        .map(|k| k.trim().trim_matches('`').to_owned())
        .collect()
}

/// `message` of the parse error at `field` (byte `pos` of `text`) with every value it quotes
/// (between backticks) shown as `***` where the field is a password, or the line may set one (an
/// inline table's error is named after the table): one written unquoted, as a number, was
/// printed whole in the error a service logs at start-up ("invalid type: integer `123456`").
pub(super) fn without_secrets(text: &str, pos: Option<usize>, field: &str, message: String) -> String {
    let line_sets_one = pos
        .and_then(|pos| line_at(text, pos))
        .is_some_and(|l| l.contains("password"));
    if !field.ends_with("password") && !line_sets_one {
        return message;
    }
    let mut shown = String::with_capacity(message.len());
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            shown.push('`');
        }
        // The odd parts are the quoted ones; an unpaired last backtick quotes the rest.
        shown.push_str(if i % 2 == 1 { "***" } else { part });
    }
    shown
}

/// The line of `text` that holds byte `pos`.
fn line_at(text: &str, pos: usize) -> Option<&str> {
    let start = text.get(..pos)?.rfind('\n').map_or(0, |i| i + 1);
    let end = text.get(pos..)?.find('\n').map_or(text.len(), |i| pos + i);
    text.get(start..end)
}

/// The sections of a configuration, each a table.
const SECTIONS: [&str; 6] = [
    "local",
    "distributed",
    "offline",
    "consistency",
    "invalidation",
    "loader",
];

/// Refuses a section of `text` given as something other than a table, naming it: serde read an
/// array as the section's fields in order, so `[[local]]` was blamed on its first key as a
/// `local.type` ("unknown variant `path`"), `[[distributed]]` on a boolean, and `loader = []`
/// passed as the defaults.
pub(super) fn check_sections_are_tables(top: &toml::Table) -> Result<()> {
    let Some((name, value)) = SECTIONS
        .iter()
        .find_map(|name| top.get(*name).filter(|v| !v.is_table()).map(|v| (*name, v)))
    else {
        return Ok(());
    };
    let given = if value
        .as_array()
        .is_some_and(|a| a.iter().all(toml::Value::is_table))
    {
        format!("an array of tables (`[[{name}]]`, or `{name} = [...]`)")
    } else {
        format!("{} (`{name} = ...`)", value.type_str())
    };
    Err(invalid(
        name,
        format!("is {given}; write it as one table: a `[{name}]` line with its settings under it (or `{name} = {{ ... }}`)"),
    ))
}

/// The 1-based line and column (in characters) of byte `pos` of `text`.
pub(super) fn line_and_column(text: &str, pos: usize) -> Option<(usize, usize)> {
    let before = text.get(..pos)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((before.matches('\n').count() + 1, column))
}

/// Works out the dotted name of the key at byte `pos` of a TOML text (`[local]` + `ttl = …` →
/// `local.ttl`), for error messages.
pub(super) fn field_at(text: &str, pos: usize) -> Option<String> {
    let before = text.get(..pos)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = text.get(pos..)?.find('\n').map_or(text.len(), |i| pos + i);
    let line = text.get(line_start..line_end)?.trim();
    let table = |l: &str| {
        l.strip_prefix('[')
            .and_then(|l| l.split(']').next())
            .map(|t| t.trim().trim_matches('[').trim().to_owned())
    };
    if line.starts_with('[') {
        return table(line).filter(|t| !t.is_empty());
    }
    // An element of an array written over several lines sets no key on its line: the key is
    // the nearest line above that sets one, within the section (a line that sets none and
    // opens no array stays itself). A comment or string holding `=` sets none.
    let sets_key = |l: &str| {
        l.split_once('=').is_some_and(|(key, _)| {
            let key = key.trim();
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.\"' \t".contains(c))
        })
    };
    let line = if sets_key(line) {
        line
    } else {
        before
            .get(..line_start)?
            .lines()
            .rev()
            .map(str::trim)
            .take_while(|l| !l.starts_with('['))
            .find(|l| sets_key(l))
            .unwrap_or(line)
    };
    let key = line.split('=').next()?.trim().trim_matches('"');
    if key.is_empty() {
        return None;
    }
    let key = match inline_key(text.get(line_start..pos)?, text.get(pos..)?) {
        Some(inner) => format!("{key}.{inner}"),
        None => key.to_owned(),
    };
    let section = before
        .get(..line_start)?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .and_then(table);
    Some(match section {
        Some(s) if !s.is_empty() => format!("{s}.{key}"),
        _ => key,
    })
}

/// The key inside an inline table (`local = { ttl = 5, bogus = 1 }`) that an error at the end
/// of `head` (its line up to there) is about, `tail` being the rest: the key that starts there
/// (an unknown one), or the one whose value does (a bad value). `None` outside an inline table.
/// Read as plain text: a string holding `{`, `,` or `=` may mislead it, as it would the rest.
fn inline_key(head: &str, tail: &str) -> Option<String> {
    let (_, value) = head.split_once('=')?;
    if !value.trim_start().starts_with('{') {
        return None;
    }
    let part = value.rsplit([',', '{']).next()?;
    let name = match part.split_once('=') {
        Some((name, _)) => name,
        None => tail,
    };
    let name: String = name
        .trim_start()
        .trim_start_matches('"')
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    (!name.is_empty()).then_some(name)
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

    /// A size or a time written with its unit, as a string (`max_size = "1GB"`,
    /// `timeout_ms = "100ms"`), was refused as "expected a whole number in 0..=…", which did not
    /// say the unit the number is in, the one thing the user needs to write it (found by
    /// walking the README). The refusal names the unit; a number of the right type needs none.
    #[test]
    fn a_size_or_time_written_with_its_unit_is_refused_naming_the_unit_of_the_number() {
        for (text, field, says) in [
            (
                "[local]\nmax_size = \"1GB\"\n",
                "local.max_size",
                "MiB for a file or redb L1",
            ),
            (
                "[local]\nmemory_max_mb = \"64MB\"\n",
                "local.memory_max_mb",
                "in MiB",
            ),
            (
                "[local]\ndurability_interval_ms = \"1s\"\n",
                "local.durability_interval_ms",
                "in milliseconds",
            ),
            (
                "[distributed]\ntimeout_ms = \"100ms\"\n",
                "distributed.timeout_ms",
                "in milliseconds",
            ),
            (
                "[offline]\nreplay_max_bytes = \"64MiB\"\n",
                "offline.replay_max_bytes",
                "in bytes",
            ),
            (
                "[distributed]\nsize_max_age_secs = 1.5\n",
                "distributed.size_max_age_secs",
                "in seconds",
            ),
        ] {
            let (named, reason) = reason_of(text);
            assert_eq!(named, field, "{text:?}");
            assert!(reason.contains(says), "{text:?}: {reason}");
            assert!(reason.contains("expected a whole number"), "{text:?}: {reason}");
        }
        // An integer out of range is not a unit mistake.
        let (_, reason) = reason_of("[local]\nmax_size = -1\n");
        assert!(!reason.contains("MiB"), "{reason}");
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

    /// `refresh_ahead = "80%"` was told "expected f64", Rust's name for the type (found by
    /// review).
    #[test]
    fn a_share_written_as_text_is_refused_asking_for_a_number() {
        for value in ["\"80%\"", "\"0.8\"", "true"] {
            let (named, reason) = reason_of(&format!("[loader]\nrefresh_ahead = {value}\n"));
            assert_eq!(named, "loader.refresh_ahead", "{reason}");
            assert!(
                reason.contains("expected a number, such as 0.8"),
                "{value}: {reason}"
            );
            assert!(!reason.contains("f64"), "{value}: {reason}");
        }
    }

    /// serde said "expected a sequence", where TOML has arrays, for `hosts = "h:1"`.
    #[test]
    fn a_single_value_where_a_list_goes_is_refused_asking_for_an_array() {
        let (named, reason) = reason_of("[distributed]\nenabled = true\nhosts = \"127.0.0.1:6379\"\n");
        assert_eq!(named, "distributed.hosts");
        assert!(reason.contains("expected an array, in brackets"), "{reason}");
        assert!(!reason.contains("sequence"), "{reason}");
    }

    /// `[[local]]` was blamed on its first key, as a `local.type` ("unknown variant `path`"),
    /// `[[distributed]]` on a boolean, and `loader = []` passed as the defaults (found by
    /// review).
    #[test]
    fn a_section_that_is_not_a_table_is_refused_naming_the_section() {
        for (text, section, says) in [
            ("[[local]]\npath = \"/tmp/x\"\n", "local", "an array of tables"),
            (
                "[[distributed]]\nenabled = true\n",
                "distributed",
                "`[[distributed]]`",
            ),
            ("loader = []\n", "loader", "an array of tables"),
            ("offline = \"x\"\n", "offline", "string"),
            ("consistency = 5\n", "consistency", "integer"),
        ] {
            let (named, reason) = reason_of(text);
            assert_eq!(named, section, "{text:?}: {reason}");
            assert!(
                reason.contains(says) && reason.contains(&format!("[{section}]")),
                "{text:?}: {reason}"
            );
            assert!(
                !reason.contains("variant") && !reason.contains("struct"),
                "{reason}"
            );
        }
        // A table, inline or not, is no section at fault.
        assert!(CacheConfig::from_toml_str("loader = { absent_ttl = 5 }\n[local]\nttl = 5\n").is_ok());
    }

    /// A section written as an inline table named the section alone, for its unknown key or
    /// its bad value: `local = { bogus = 1 }` was blamed on `local` where `[local]` and
    /// `bogus = 1` name `local.bogus` (found by review).
    #[test]
    fn a_key_of_an_inline_section_is_named_with_its_section() {
        for (text, field) in [
            ("local = { bogus = 1 }\n", "local.bogus"),
            ("local = { ttl = 5, bogus = 1 }\n", "local.bogus"),
            ("local = { ttl = \"x\" }\n", "local.ttl"),
            (
                "loader = { absent_ttl = 5, refresh_ahead_max = -1 }\n",
                "loader.refresh_ahead_max",
            ),
            (
                "distributed = { enabled = true, hosts = \"h:1\" }\n",
                "distributed.hosts",
            ),
            ("codec = \"x\"\n", "codec"),
            ("[local]\nbogus = 1\n", "local.bogus"),
            // An array is no inline table, whatever its strings hold.
            (
                "[distributed]\nenabled = true\nhosts = [\"{x\", 5]\n",
                "distributed.hosts",
            ),
        ] {
            let (named, reason) = reason_of(text);
            assert_eq!(named, field, "{text:?}: {reason}");
        }
    }

    /// A password written unquoted as a number (or a boolean, a float) was printed whole in
    /// the refusal, which a service logs (found by review).
    #[test]
    fn a_password_of_the_wrong_type_is_refused_without_showing_it() {
        for (section, value) in [
            ("distributed", "123456"),
            ("distributed", "1234567890123456789012345"),
            ("invalidation", "3.14159"),
            ("distributed", "true"),
        ] {
            let text = format!("[{section}]\nenabled = true\nhosts = [\"h:1\"]\npassword = {value}\n");
            let (named, reason) = reason_of(&text);
            assert_eq!(named, format!("{section}.password"), "{reason}");
            assert!(!reason.contains(value), "{reason}");
            assert!(reason.contains("expected a string"), "{reason}");
        }
        let (_, reason) =
            reason_of("distributed = { enabled = true, hosts = [\"h:1\"], password = 123456 }\n");
        assert!(!reason.contains("123456"), "{reason}");
        // Other fields keep the value, which tells what was read.
        let (_, reason) = reason_of("[distributed]\nusername = 123456\n");
        assert!(reason.contains("123456"), "{reason}");
    }
    /// TOML puts every key after a `[section]` line into that section: a top-level setting
    /// added at the end of a file, or a key written under the wrong section, was refused with
    /// the section's own keys listed and nothing on where it goes (found by following the
    /// README as a new user). The refusal says where it belongs; a key of no section is
    /// refused as before.
    #[test]
    fn a_key_under_the_wrong_section_is_refused_naming_where_it_belongs() {
        for (text, field, says) in [
            (
                "[distributed]\nenabled = true\nhosts = [\"h:1\"]\nfallback_on_error = false\n",
                "distributed.fallback_on_error",
                "fallback_on_error is a top-level setting: write it above the first [section] line (TOML puts every key after a [distributed] line into that section)",
            ),
            ("[loader]\ncodec = \"json\"\n", "loader.codec", "codec is a top-level setting"),
            ("[distributed]\nreplay = false\n", "distributed.replay", "replay is a setting of [offline]: move it under that section's line"),
            ("[local]\nrestart_policy = \"drop\"\n", "local.restart_policy", "restart_policy is a setting of [consistency]"),
            ("ttl = 300\n", "ttl", "ttl is a setting of [local] and [distributed]"),
            ("local = { hosts = [\"h:1\"] }\n", "local.hosts", "hosts is a setting of [distributed] and [invalidation]"),
        ] {
            let (named, reason) = reason_of(text);
            assert_eq!(named, field, "{text:?}: {reason}");
            assert!(reason.contains(says), "{text:?}: {reason}");
            assert!(reason.contains(&format!("unknown field `{}`", field.rsplit('.').next().unwrap_or(field))), "{reason}");
        }
        for text in ["[local]\nmax_sise = 10\n", "bogus = 1\n"] {
            let (_, reason) = reason_of(text);
            assert!(
                !reason.contains("setting of") && !reason.contains("top-level"),
                "{text:?}: {reason}"
            );
        }
        // On a password's line the key names stay readable; the value is still hidden.
        let (_, reason) = reason_of("password = \"hunter2\"\n");
        assert!(
            reason.contains("password is a setting of [distributed] and [invalidation]"),
            "{reason}"
        );
        assert!(!reason.contains("hunter2"), "{reason}");
    }
}
