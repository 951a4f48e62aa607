//! The store directory a command works on: refused where it holds no store, and named as a
//! store whose metadata file is missing or damaged where it holds a store's other files.

use std::path::Path;

use uno_cache::{CacheConfig, LocalKind};

/// Refuses a path that holds no store, for every command but `set` and `import`: opening it
/// would create an empty store there (a mistyped `--dir`, a relative `local.path` run from
/// another directory, the `offline.replay_dir` of a memory L1), in which `get` misses and
/// `verify` passes. A directory with other files in it is left to the open, which says it is
/// not a store and creates nothing, and so is one the user may not look into.
pub(crate) fn require_store(path: &Path, marker: &str) -> Result<(), String> {
    match path.join(marker).try_exists() {
        Ok(true) => return Ok(()),
        // Another user's store (private by default) cannot be looked into: the open names the
        // directory and the missing permission, where "no store" sent the user to look for a
        // typo in a path that was right.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return Ok(()),
        _ => {}
    }
    let has_files = std::fs::read_dir(path).is_ok_and(|entries| {
        entries.flatten().any(|entry| {
            !uno_cache::files::NO_STORE_FILES
                .iter()
                .any(|name| entry.file_name() == *name)
        })
    });
    if has_files {
        return Ok(());
    }
    // A file there (or above it) reads as "no store" too, which leaves the user looking for a
    // typo.
    let what = match path.ancestors().find(|p| p.exists()) {
        Some(file) if !file.is_dir() && file == path => " (it is a file, not a directory)".to_owned(),
        Some(file) if !file.is_dir() => format!(" ({} is a file, not a directory)", file.display()),
        _ => String::new(),
    };
    Err(format!(
        "no store at {}{what}; check --dir / local.path (a relative local.path is resolved against the current directory); only `set` and `import` create a store",
        path.display()
    ))
}

/// [`require_store`] for the L1 a configuration describes, if it lives on disk.
pub(crate) fn require_store_of(config: &CacheConfig) -> Result<(), String> {
    let dir = config.local.effective_path();
    match config.local.kind {
        LocalKind::File => require_store(dir, uno_cache::files::META_FILE),
        #[cfg(feature = "redb")]
        LocalKind::Redb => require_store(dir, uno_cache::REDB_FILE_NAME),
        _ => Ok(()),
    }
}

/// What to say of a directory the open refused as not uno-cache's (`NotOurDirectory`, for a
/// metadata file `meta` missing or without uno-cache's magic bytes) where it holds the store's
/// own segment, hint or `.lost` files: a store whose metadata was deleted or damaged, not
/// another program's directory, to which "choose an empty or new directory" sent the user away
/// from their own store. `None` where nothing there is the store's: the open's error stands.
pub(crate) fn metadata_lost(path: &Path, meta: &str) -> Option<String> {
    let ours = std::fs::read_dir(path)
        .ok()?
        .flatten()
        .any(|entry| is_store_file(&entry.file_name()));
    if !ours {
        return None;
    }
    let meta = path.join(meta);
    let what = if meta.exists() {
        "is damaged (it does not start with uno-cache's magic bytes)"
    } else {
        "is missing"
    };
    Some(format!(
        "the metadata file {} of the store in {} {what}: the store cannot be opened without it (it records the segment size), and nothing was changed; it holds only a cache: move the directory away or delete it to start empty",
        meta.display(),
        path.display()
    ))
}

/// `{id:020}.seg`, `.hint`, `.lost` or `.damaged`: a name only the file store gives a file.
fn is_store_file(name: &std::ffi::OsStr) -> bool {
    use uno_cache::files::{DAMAGED_EXT, HINT_EXT, LOST_EXT, SEGMENT_EXT};
    let Some((id, ext)) = name.to_str().and_then(|n| n.split_once('.')) else {
        return false;
    };
    id.len() == 20
        && id.bytes().all(|b| b.is_ascii_digit())
        && [SEGMENT_EXT, HINT_EXT, LOST_EXT, DAMAGED_EXT].contains(&ext)
}
