//! The case the Redis and the Memcached late-write tests share: a late write that L2 deleted is
//! published, so another instance that read the older value's successor into its L1 drops the
//! key. Included by each test next to its `proxy` module.

#![allow(dead_code, clippy::unwrap_used)]

use uno_cache::CacheManager;

use super::proxy::TcpProxy;
use super::support::wait_until;

/// `a` writes through `proxy` an older value of `k`, which `hold` (bytes of its request) keeps
/// until it times out, then a newer one; `b` reads the newer one into its L1. Once the older
/// one lands and `a`'s level deletes it, `b` must drop the key: only the published deletion
/// can take it out of `b`'s L1.
pub fn a_late_write_deleted_from_l2_reaches_the_other_instance(
    proxy: &TcpProxy,
    a: &CacheManager,
    b: &CacheManager,
    hold: &[u8],
) {
    a.set_raw("probe", b"p", None).unwrap();
    wait_until("B's subscription", || {
        b.stats().consistency.invalidations_received > 0
    });
    proxy.hold_on(hold);
    a.set_raw("k", b"older value", None).unwrap();
    assert_eq!(a.stats().distributed.writes_in_doubt, 1);
    a.set_raw("k", b"the newer value", None).unwrap();
    // B holds a value in its L1, which only a message can take out.
    let newer = Some(b"the newer value".to_vec());
    wait_until("B to read the newer value from its L1", || {
        let hits = b.stats().local.hits;
        b.get_raw("k").unwrap() == newer && b.stats().local.hits > hits
    });

    proxy.release();
    wait_until("the writes in doubt to settle", || {
        a.stats().distributed.writes_in_doubt == 0
    });
    assert_eq!(a.stats().distributed.late_writes_deleted, 1);
    wait_until("B to drop the key L2 deleted", || {
        b.get_raw("k").unwrap().is_none()
    });
}
