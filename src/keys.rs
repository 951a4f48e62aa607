//! The rules a key and a write must pass before any level sees them, shared by every local level,
//! the replay queue and the on-disk formats (which store key lengths in 16 bits and refuse longer
//! ones as damage). A bottom module: it depends on nothing but [`crate::error`].

use std::time::Duration;

use crate::error::{key_for_error, Error, KeyProblem, Result};

/// Longest accepted key in bytes.
pub const MAX_KEY_LEN: usize = 4096;

/// Refuses an empty key or one longer than [`MAX_KEY_LEN`]: the rule every local level and the
/// replay queue share (network levels map what their server cannot take instead).
pub(crate) fn check_key(key: &str) -> Result<()> {
    let problem = if key.is_empty() {
        KeyProblem::Empty
    } else if key.len() > MAX_KEY_LEN {
        KeyProblem::TooLong {
            len: key.len(),
            max: MAX_KEY_LEN,
        }
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key_for_error(key),
        problem,
    })
}

/// The keys of a list from outside (a received invalidation, the members of a tag's set) that
/// pass `check` ([`check_key`], or a caller's stricter rule), with how many did not and the
/// first refusal, so that the caller logs one line per list: a list of a million bad keys
/// logged a million lines.
pub(crate) fn passing_keys(
    keys: &[String],
    check: impl Fn(&str) -> Result<()>,
) -> (Vec<&str>, Option<(Error, usize)>) {
    let mut refused: Option<(Error, usize)> = None;
    let passing = keys
        .iter()
        .map(String::as_str)
        .filter(|key| match check(key) {
            Ok(()) => true,
            Err(e) => {
                refused.get_or_insert((e, 0)).1 += 1;
                false
            }
        })
        .collect();
    (passing, refused)
}

/// [`check_key`], and refuses `Some(Duration::ZERO)` (the `Storage` contract for `set`).
pub(crate) fn check_write(key: &str, ttl: Option<Duration>) -> Result<()> {
    check_key(key)?;
    if ttl.is_some_and(|t| t.is_zero()) {
        return Err(Error::ZeroTtl {
            key: key_for_error(key),
        });
    }
    Ok(())
}
