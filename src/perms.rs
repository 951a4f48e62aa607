//! Permission bits of the files and directories uno-cache creates.
//!
//! Cached values are often personal data, so a store is private to its user by default: files
//! `0600`, directories `0700`. A configured mode is given as the files' bits; a directory gets the
//! same bits plus search (`x`) wherever read is allowed. The process umask can still remove bits
//! from a new file (never add them); a chmod that applies a changed mode is exact.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Default permission bits of the files a store creates: read and write for the owner only.
pub const DEFAULT_FILE_MODE: u32 = 0o600;

/// The directory bits that go with `file_mode`: search (`x`) wherever read (`r`) is allowed, so
/// `0o600` gives `0o700` and `0o640` gives `0o750`.
#[must_use]
pub(crate) fn dir_mode(file_mode: u32) -> u32 {
    file_mode | ((file_mode & 0o444) >> 2)
}

/// Checks a file mode given in code: [`check_mode_bits`], and for a decimal number whose digits
/// are octal (`file_mode(640)`, the mode 0o1200), how to write the mode those digits make, where
/// that mode would pass: a hint that fits any mode misled, e.g. 0o4755 (2541) was told to write
/// 0o2541, refused too.
pub(crate) fn check_file_mode(mode: u32) -> std::result::Result<(), String> {
    check_mode_bits(mode).map_err(|reason| {
        let decimal = mode.to_string();
        match u32::from_str_radix(&decimal, 8) {
            Ok(digits) if mode & !0o777 != 0 && check_mode_bits(digits).is_ok() => {
                format!("{reason}; {decimal} is a decimal number: for the mode of those octal digits write 0o{decimal}")
            }
            _ => reason,
        }
    })
}

/// Checks a file mode: permission bits only, and the owner must be able to read and write (the
/// store reopens its own files). For `local.file_mode`, whose literal was already checked for a
/// decimal number (see `config::local::check_mode_literal`): a mode that reaches this check
/// was written in octal, and a hint about decimal numbers would not fit it.
pub(crate) fn check_mode_bits(mode: u32) -> std::result::Result<(), String> {
    if mode & !0o777 != 0 {
        return Err(format!(
            "{mode:#o} has bits outside 0o777 (only permission bits are allowed)"
        ));
    }
    if mode & 0o600 != 0o600 {
        return Err(format!(
            "{mode:#o} does not let the owner read and write; the store must reopen its own files"
        ));
    }
    Ok(())
}

/// Creates `path` and any missing parents with the directory mode for `file_mode`. An existing
/// directory is left as it is; an existing file is an error that says so. Returns whether the
/// last component was created.
pub(crate) fn create_dir(path: &Path, file_mode: u32) -> io::Result<bool> {
    if path.is_dir() {
        return Ok(false);
    }
    if path.exists() {
        // The OS would only say "File exists", which reads as if the store were the problem.
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "it is a file, not a directory: give a directory's path (a new one is created), or move the file away",
        ));
    }
    // The OS says only "Not a directory", of a path whose last part does not exist.
    if let Some(file) = path
        .ancestors()
        .skip(1)
        .find(|p| p.exists())
        .filter(|p| !p.is_dir())
    {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!(
                "{} is a file, not a directory: give a directory's path (a new one is created), or move the file away",
                file.display()
            ),
        ));
    }
    let mode = dir_mode(file_mode);
    DirBuilder::new().recursive(true).mode(mode).create(path)?;
    // The umask may have removed bits the configuration asked for.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

/// Options that create a new file with `mode` (read and write access; the caller adds `create`
/// or `create_new`).
#[must_use]
pub(crate) fn new_file(mode: u32) -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).write(true).mode(mode);
    options
}

/// The permission bits of `path`, if it exists.
pub(crate) fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// Sets the permission bits of `path` exactly.
pub(crate) fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::check_file_mode;

    /// Given in code, a decimal number of octal digits is told the mode those digits make; a
    /// mode those digits would not make a valid one of is not (0o4755 was told 0o2541).
    #[test]
    fn the_decimal_hint_names_only_a_mode_that_would_pass() {
        let told = check_file_mode(640).unwrap_err();
        assert!(told.contains("write 0o640"), "{told}");
        let told = check_file_mode(0o4755).unwrap_err();
        assert!(!told.contains("0o2541") && !told.contains("decimal"), "{told}");
        assert_eq!(check_file_mode(0o640), Ok(()));
    }
}
