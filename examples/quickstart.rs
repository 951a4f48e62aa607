//! Quickstart: open the embedded default cache (a file store in `./uno-cache-data`, no server
//! needed), write, read, restart, and show the stats.
//!
//! Run: `cargo run --release --example quickstart`

use std::time::Duration;

use uno_cache::{FileStore, FileStoreOptions};

fn main() -> Result<(), uno_cache::Error> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "./uno-cache-data".to_owned());
    let options = || FileStoreOptions::default().max_size_mb(64);

    let store = FileStore::open(&dir, options())?;
    let runs = store
        .get("quickstart:runs")?
        .map_or(0, |v| String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0));
    println!("this quickstart has run {runs} time(s) before in {dir}");
    store.set("quickstart:runs", (runs + 1).to_string().as_bytes(), None)?;
    store.set("session:abc", b"{\"user\":42}", Some(Duration::from_secs(60)))?;
    for i in 0..10_000 {
        store.set(
            &format!("item:{i}"),
            format!("value number {i}").as_bytes(),
            Some(Duration::from_secs(3600)),
        )?;
    }
    let hit = store.get("item:4242")?;
    println!("item:4242 = {:?}", hit.as_deref().map(String::from_utf8_lossy));
    store.delete("session:abc")?;
    store.close()?;

    // Reopen: what was written is still there, and the delete held.
    let store = FileStore::open(&dir, options())?;
    assert!(store.get("session:abc")?.is_none());
    println!(
        "after reopen: item:9999 = {:?}",
        store.get("item:9999")?.as_deref().map(String::from_utf8_lossy)
    );
    println!("recovery: {:?}", store.recovery_report());
    println!(
        "stats: {}",
        serde_json::to_string_pretty(&store.stats()).unwrap_or_default()
    );
    store.close()
}
