//! Two `init_global` calls at once, on one file-store directory: the loser gets
//! `GlobalAlreadyInitialized` and opens nothing, as documented. Both used to pass the check and
//! open the store, and the loser got the winner's lock error. A binary of its own: the process's
//! global manager can be set once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Barrier};
use uno_cache::{CacheConfig, CacheManager, Error};

#[test]
fn of_two_racing_init_global_calls_the_loser_is_told_it_is_already_initialized() {
    let dir = tempfile::tempdir().unwrap();
    let toml = format!(
        "[local]\ntype = \"file\"\npath = {:?}\n",
        dir.path().display().to_string()
    );
    let barrier = Arc::new(Barrier::new(2));
    let results: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let b = Arc::clone(&barrier);
                let toml = toml.clone();
                s.spawn(move || {
                    let config = CacheConfig::from_toml_str(&toml).unwrap();
                    b.wait();
                    match CacheManager::init_global(config) {
                        Ok(_) => "ok".to_owned(),
                        Err(Error::GlobalAlreadyInitialized) => "already".to_owned(),
                        Err(e) => format!("other error: {e}"),
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut sorted = results.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["already".to_owned(), "ok".to_owned()],
        "results: {results:?}"
    );
}
