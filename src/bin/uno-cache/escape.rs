//! The `dump`/`import` line format: `key<TAB>value[<TAB>expires_at_ms]`, key and value escaped
//! so any bytes fit on one line (storage-format.md, "Dump format").
//!
//! Printable ASCII other than `\` stands for itself; `\\`, `\t`, `\n`, `\r` and `\xHH` (two
//! lowercase or uppercase hex digits) stand for the rest. The optional third field is the entry's
//! absolute expiry in Unix milliseconds (decimal, at least 1); without it the entry never expires.
//! A line without a TAB that starts with `#` is a comment (the dump's first line is one).

use std::fmt::Write as _;

/// Escapes bytes for one field of a dump line.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// Reverses [`escape`]; the error says which escape is bad.
pub fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.push(b'\\'),
            Some(b't') => out.push(b'\t'),
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b'x') => {
                let hi = bytes.next().and_then(hex);
                let lo = bytes.next().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                    _ => return Err("\\x must be followed by two hex digits".into()),
                }
            }
            Some(other) => return Err(format!("unknown escape \\{}", char::from(other))),
            None => return Err("a lone \\ at the end".into()),
        }
    }
    Ok(out)
}

/// One dump line.
pub fn dump_line(key: &[u8], value: &[u8], expires_at_ms: Option<u64>) -> String {
    match expires_at_ms {
        Some(at) => format!("{}\t{}\t{at}", escape(key), escape(value)),
        None => format!("{}\t{}", escape(key), escape(value)),
    }
}

/// Whether a line is a comment: no TAB (so never an entry) and a leading `#`.
pub fn is_comment(line: &str) -> bool {
    line.starts_with('#') && !line.contains('\t')
}

/// A parsed dump line.
#[derive(Debug, PartialEq, Eq)]
pub struct DumpLine {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Absolute expiry in Unix milliseconds; `None`: never expires.
    pub expires_at_ms: Option<u64>,
}

/// Parses `key<TAB>value` or `key<TAB>value<TAB>expires_at_ms`; the error names the field.
pub fn parse_dump_line(line: &str) -> Result<DumpLine, String> {
    let mut fields = line.split('\t');
    let (Some(key), Some(value)) = (fields.next(), fields.next()) else {
        return Err("expected key<TAB>value or key<TAB>value<TAB>expires_at_ms".into());
    };
    let expires_at_ms = match fields.next() {
        None => None,
        Some(text) => match text.parse::<u64>() {
            Ok(at) if at > 0 => Some(at),
            _ => {
                return Err(format!(
                    "expiry {text:?}: expected Unix milliseconds (a whole number above 0)"
                ))
            }
        },
    };
    if fields.next().is_some() {
        return Err("more than three TAB-separated fields".into());
    }
    Ok(DumpLine {
        key: unescape(key).map_err(|e| format!("key: {e}"))?,
        value: unescape(value).map_err(|e| format!("value: {e}"))?,
        expires_at_ms,
    })
}

fn hex(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_stays_on_one_line() {
        let all: Vec<u8> = (0..=255).collect();
        let escaped = escape(&all);
        assert!(!escaped.contains('\n') && !escaped.contains('\t'));
        assert_eq!(unescape(&escaped), Ok(all));
    }

    #[test]
    fn dump_lines_round_trip_with_and_without_expiry() {
        for at in [None, Some(1), Some(1_700_000_000_123)] {
            let line = dump_line(b"k\te", b"v\n", at);
            assert_eq!(
                parse_dump_line(&line),
                Ok(DumpLine {
                    key: b"k\te".to_vec(),
                    value: b"v\n".to_vec(),
                    expires_at_ms: at
                })
            );
        }
        assert!(parse_dump_line("k\tv\tsoon").is_err());
        assert!(parse_dump_line("k\tv\t0").is_err());
        assert!(parse_dump_line("k\tv\t1\tx").is_err());
        assert!(parse_dump_line("no tab").is_err());
        assert!(is_comment("# uno-cache dump 3") && is_comment("# end 3"));
        assert!(!is_comment("#key\tvalue"));
    }

    #[test]
    fn bad_escapes_are_errors() {
        assert!(unescape("a\\q").is_err());
        assert!(unescape("a\\x4").is_err());
        assert!(unescape("a\\").is_err());
    }
}
