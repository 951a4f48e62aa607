//! The failure latch of a file the cache appends to (the file store's active segment, the replay
//! log). After a failed write or fsync nothing more may be written until the file is reopened: a
//! retried fsync can report success after the kernel dropped the dirty pages, so "try again"
//! would acknowledge writes that a power loss takes away.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// Set by the first failed write or fsync; writes are refused from then on.
#[derive(Debug)]
pub(crate) struct WriteLatch {
    /// What the latch guards, for the log line ("file store", "replay log").
    what: &'static str,
    /// The first failure, as text (errors are not `Clone`).
    cause: OnceLock<String>,
}

impl WriteLatch {
    pub(crate) fn new(what: &'static str) -> WriteLatch {
        WriteLatch {
            what,
            cause: OnceLock::new(),
        }
    }

    /// [`Error::WritesDisabled`] naming `path` and the first failure, once latched.
    pub(crate) fn check(&self, path: &Path) -> Result<()> {
        match self.cause.get() {
            Some(cause) => Err(Error::WritesDisabled {
                path: path.to_owned(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Latches (keeping the first cause) and passes the error on.
    pub(crate) fn fail(&self, error: Error) -> Error {
        let _ = self.cause.set(error.to_string());
        tracing::error!(error = %error, "{} write failed; further writes are refused until it is reopened (or, for the replay log, written anew)", self.what);
        error
    }

    /// The first failure, once latched.
    pub(crate) fn cause(&self) -> Option<&str> {
        self.cause.get().map(String::as_str)
    }

    pub(crate) fn is_latched(&self) -> bool {
        self.cause.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_latches_and_is_named_by_every_later_check() {
        let latch = WriteLatch::new("test file");
        let path = Path::new("/x/file");
        assert!(latch.check(path).is_ok());
        let first = latch.fail(Error::io("fsync", path, std::io::Error::other("first")));
        let _ = latch.fail(Error::io("fsync", path, std::io::Error::other("second")));
        assert!(latch.is_latched());
        assert_eq!(latch.cause(), Some(first.to_string().as_str()));
        match latch.check(path) {
            Err(Error::WritesDisabled { path: p, cause }) => {
                assert_eq!(p, path);
                assert!(cause.contains("first"), "{cause}");
            }
            other => panic!("expected WritesDisabled, got {other:?}"),
        }
    }
}
