//! Tests of the size bound's eviction and of compaction (`maintenance.rs`).

use crate::shutdown::Shutdown;
use crate::{FileStore, FileStoreOptions};

/// `disk_bytes` is what the bound promises to keep within `max_size`: it must hold after
/// every write, also for the roll a write makes (a segment header and a hint frame) and for
/// a batch whose hint entries outweigh its records (long keys, empty values).
#[test]
fn disk_bytes_stay_within_the_bound_after_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .segment_size(64 * 1024)
            .max_size_mb(1)
            .background_threads(false),
    )
    .unwrap();
    let max = store.max_size();
    let check = |what: &str| {
        let st = store.stats();
        assert!(
            st.disk_bytes <= max,
            "after {what}: {} bytes counted, bound {max}: {st:?}",
            st.disk_bytes
        );
    };
    // Past the bound, with record sizes that land a roll on every offset modulo 8 bytes.
    for i in 0..1200usize {
        store
            .set(&format!("fill-{i}"), &vec![1u8; 1500 + i % 97], None)
            .unwrap();
        check(&format!("set fill-{i}"));
        if i % 7 == 0 {
            store.delete(&format!("fill-{}", i / 2)).unwrap();
            check(&format!("delete fill-{}", i / 2));
        }
    }
    assert!(store.stats().evictions > 0);
    // Values of varied sizes in between, so the batches meet every slack an eviction leaves.
    for round in 0..100usize {
        let keys: Vec<String> = (0..15)
            .map(|i| format!("{round}-{i}-").repeat(1024)[..4096].to_owned())
            .collect();
        let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b""[..])).collect();
        store.set_many(&items, None).unwrap();
        check(&format!("set_many round {round}"));
        let len = (round * 7919) % 60_000;
        store
            .set(&format!("between-{round}"), &vec![2u8; len], None)
            .unwrap();
        check(&format!("set between-{round}"));
    }
}

/// The segment writes go to is never rewritten: removing it would take the records written
/// to it since with it. (A roll between two reads of `compact` once made it a candidate.)
#[test]
fn compaction_never_rewrites_the_segment_writes_go_to() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .segment_size(1024 * 1024)
            .min_live_ratio(1.0)
            .background_threads(false)
    };
    let store = FileStore::open(dir.path(), options()).unwrap();
    for i in 0..100 {
        store.set(&format!("k{i}"), &[7; 100], None).unwrap();
    }
    let active = store.inner.writer.lock().active.clone().unwrap();
    assert_eq!(
        store.inner.rewrite(&active, &Shutdown::default()).unwrap().moved,
        0
    );
    assert!(store.inner.segments.read().contains_key(&active.id));
    store.set("after", b"v", None).unwrap();
    // Nor does a compaction pass pick it, small as it is.
    assert_eq!(store.compact().unwrap().segments_rewritten, 0);
    store.close().unwrap();
    let reopened = FileStore::open(dir.path(), options()).unwrap();
    for i in 0..100 {
        assert_eq!(
            reopened.get(&format!("k{i}")).unwrap(),
            Some(vec![7; 100]),
            "k{i}"
        );
    }
    assert_eq!(reopened.get("after").unwrap(), Some(b"v".to_vec()));
}
