//! The `dump`/`import` line format: `key<TAB>value`, both escaped so any bytes fit on one line.
//!
//! Printable ASCII other than `\` stands for itself; `\\`, `\t`, `\n`, `\r` and `\xHH` (two
//! lowercase or uppercase hex digits) stand for the rest.

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
    fn bad_escapes_are_errors() {
        assert!(unescape("a\\q").is_err());
        assert!(unescape("a\\x4").is_err());
        assert!(unescape("a\\").is_err());
    }
}
