//! Where a key goes: its server form ([`map_key`]) and its host (rendezvous hashing over FNV-1a
//! 64, fixed so that every process and every build agrees, whatever order it lists the hosts in).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::options::MAX_MEMCACHED_KEY;

/// Maps `prefix + key` to a key memcached accepts, without collisions:
///
/// 1. A key of at most 250 bytes made only of printable ASCII other than `%` (0x21–0x7E, no
///    space) passes through unchanged.
/// 2. Any other key is escaped: each byte outside that set (space, control characters, `%`,
///    UTF-8 bytes of non-ASCII characters) becomes `%XX` (uppercase hex). The result contains a
///    `%`, so it never equals a pass-through key, and escaping is reversible, so two keys never
///    escape to the same string. Used if the result is at most 250 bytes.
/// 3. Otherwise the key becomes `%#` followed by the 64 hex digits of its SHA-256. `%#` never
///    appears in an escaped key (there `%` is always followed by a hex digit), so a hashed key
///    never equals a key of kind 1 or 2; two long keys share a form only if SHA-256 collides.
///
/// ```
/// use uno_cache::distributed::map_memcached_key as map_key;
/// assert_eq!(map_key("user:42"), "user:42");
/// assert_eq!(map_key("a key"), "a%20key");
/// assert_eq!(map_key("100%"), "100%25");
/// assert!(map_key(&"x".repeat(300)).starts_with("%#"));
/// ```
#[must_use]
pub fn map_key(full: &str) -> Cow<'_, str> {
    fn plain(b: u8) -> bool {
        (0x21..=0x7E).contains(&b) && b != b'%'
    }
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if full.len() <= MAX_MEMCACHED_KEY && full.bytes().all(plain) {
        return Cow::Borrowed(full);
    }
    let mut escaped = String::with_capacity(full.len() + 16);
    for b in full.bytes() {
        if plain(b) {
            escaped.push(char::from(b));
        } else {
            escaped.push('%');
            escaped.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
            escaped.push(char::from(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0')));
        }
        if escaped.len() > MAX_MEMCACHED_KEY {
            break;
        }
    }
    if escaped.len() <= MAX_MEMCACHED_KEY {
        return Cow::Owned(escaped);
    }
    let digest = Sha256::digest(full.as_bytes());
    let mut hashed = String::with_capacity(2 + 64);
    hashed.push_str("%#");
    for b in digest {
        hashed.push(char::from(HEX.get(usize::from(b >> 4)).copied().unwrap_or(b'0')));
        hashed.push(char::from(HEX.get(usize::from(b & 0xF)).copied().unwrap_or(b'0')));
    }
    Cow::Owned(hashed)
}

/// FNV-1a, 64-bit: the fixed hash that picks a key's host.
pub(super) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The splitmix64 finalizer: spreads the bits of a host's and a key's hashes combined, so that
/// each host's score of a key is independent of the others'.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Rendezvous (highest random weight) hashing: the host whose score of `key` is highest, each
/// host scored by its name's hash, so the answer depends on the set of hosts and not on the
/// order they are listed in. Two processes that list the same hosts in another order agree on
/// where every key lives (with a position in the list, each put every key elsewhere, and one's
/// delete left the other's value readable). Adding a host moves only the keys it now wins, about
/// 1/n; removing one moves only its own keys. Equal scores (a host listed twice) go to the first.
pub(super) fn rendezvous(key: u64, hosts: &[u64]) -> usize {
    let mut best = (0usize, 0u64);
    for (i, &host) in hosts.iter().enumerate() {
        let score = mix64(key ^ host);
        if i == 0 || score > best.1 {
            best = (i, score);
        }
    }
    best.0
}

/// Maps caller keys to server keys and hosts for one store.
#[derive(Debug, Clone)]
pub(super) struct Router {
    prefix: String,
    /// `fnv1a64` of each host's name (`host:port`), in the order the hosts are listed.
    hosts: Vec<u64>,
}

impl Router {
    /// A router over hosts named `names` (`host:port`, as [`HostSpec`](super::options) shows
    /// them), in the order the store holds them.
    pub(super) fn new<'a>(prefix: String, names: impl IntoIterator<Item = &'a str>) -> Self {
        Router {
            prefix,
            hosts: names.into_iter().map(|n| fnv1a64(n.as_bytes())).collect(),
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key memcached sees for `key` (prefix added, then mapped), and its host index.
    pub(super) fn server_key(&self, key: &str) -> (String, usize) {
        let full = format!("{}{key}", self.prefix);
        let mapped = map_key(&full).into_owned();
        let host = self.host_of(&mapped);
        (mapped, host)
    }

    pub(super) fn host_of(&self, mapped: &str) -> usize {
        if self.hosts.len() <= 1 {
            return 0;
        }
        rendezvous(fnv1a64(mapped.as_bytes()), &self.hosts)
    }

    /// Groups `mapped` keys by host: (host, indices into `mapped`), hosts in order, none empty.
    pub(super) fn plan(&self, mapped: &[String]) -> Vec<(usize, Vec<usize>)> {
        let mut by_host: Vec<Vec<usize>> = vec![Vec::new(); self.hosts.len()];
        for (i, key) in mapped.iter().enumerate() {
            if let Some(group) = by_host.get_mut(self.host_of(key)) {
                group.push(i);
            }
        }
        by_host
            .into_iter()
            .enumerate()
            .filter(|(_, members)| !members.is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hosts of `key:0` to `key:7` among the three hosts of `sharding_is_stable_and_balanced`.
    const PINNED: [usize; 8] = [1, 2, 0, 0, 1, 2, 2, 0];

    #[test]
    fn safe_short_keys_pass_through_unchanged() {
        assert_eq!(map_key("user:42"), Cow::Borrowed("user:42"));
        let max = "k".repeat(MAX_MEMCACHED_KEY);
        assert_eq!(map_key(&max), max.as_str());
    }

    #[test]
    fn unsafe_keys_are_escaped_reversibly() {
        assert_eq!(map_key("a b"), "a%20b");
        assert_eq!(map_key("tab\there"), "tab%09here");
        assert_eq!(map_key("50%"), "50%25");
        assert_eq!(map_key("é"), "%C3%A9");
        // The classic collision of naive schemes: a key that looks like an escaped one.
        assert_ne!(map_key("a%20b"), map_key("a b"));
        assert_eq!(map_key("a%20b"), "a%2520b");
    }

    #[test]
    fn long_keys_are_hashed_with_a_distinct_marker() {
        let long = "x".repeat(MAX_MEMCACHED_KEY + 1);
        let mapped = map_key(&long);
        assert!(mapped.starts_with("%#"));
        assert_eq!(mapped.len(), 66);
        assert_ne!(map_key(&format!("{long}y")), mapped);
        // A short key that escapes past the limit is hashed too.
        let spaces = " ".repeat(100);
        assert!(map_key(&spaces).starts_with("%#"));
    }

    #[test]
    fn every_mapped_key_is_acceptable_to_memcached() {
        let samples = [
            "plain".to_owned(),
            "with space".to_owned(),
            "ctl\u{1}\u{7f}".to_owned(),
            "ü".repeat(200),
            "x".repeat(1000),
            "%#".to_owned(),
        ];
        for key in &samples {
            let mapped = map_key(key);
            assert!(mapped.len() <= MAX_MEMCACHED_KEY, "{key:?}");
            assert!(
                mapped.bytes().all(|b| (0x21..=0x7E).contains(&b)),
                "{key:?} → {mapped:?}"
            );
        }
        assert_eq!(
            map_key("%#"),
            "%25#",
            "a literal %# key is escaped, not taken as hashed"
        );
    }

    #[test]
    fn sharding_is_stable_and_balanced() {
        // Pinned values: a change here moves keys between hosts for every deployed process.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let names = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"];
        let hosts: Vec<u64> = names.iter().map(|n| fnv1a64(n.as_bytes())).collect();
        // Pinned: a change here moves keys between hosts for every deployed process.
        let pinned: Vec<usize> = (0..8)
            .map(|i| rendezvous(fnv1a64(format!("key:{i}").as_bytes()), &hosts))
            .collect();
        assert_eq!(pinned, PINNED);
        let mut counts = [0usize; 3];
        for i in 0..3_000 {
            counts[rendezvous(fnv1a64(format!("key:{i}").as_bytes()), &hosts)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
        let four: Vec<u64> = hosts
            .iter()
            .copied()
            .chain([fnv1a64(b"10.0.0.4:11211")])
            .collect();
        let reversed: Vec<u64> = hosts.iter().rev().copied().collect();
        for i in 0..1_000 {
            let h = fnv1a64(format!("key:{i}").as_bytes());
            let before = rendezvous(h, &hosts);
            // Growing from 3 to 4 hosts moves only keys that go to the new host.
            let after = rendezvous(h, &four);
            assert!(after == before || after == 3);
            // Removing a host moves only its own keys.
            let without_first = rendezvous(h, &hosts[1..]) + 1;
            assert!(before == 0 || without_first == before);
            // The order the hosts are listed in changes nothing.
            assert_eq!(2 - rendezvous(h, &reversed), before);
        }
    }

    #[test]
    fn plans_group_keys_by_host_in_order() {
        let router = Router::new("p:".to_owned(), ["a:1", "b:1", "c:1"]);
        let keys: Vec<String> = (0..30).map(|i| router.server_key(&format!("k{i}")).0).collect();
        let plan = router.plan(&keys);
        assert_eq!(plan.iter().map(|(_, m)| m.len()).sum::<usize>(), 30);
        for (host, members) in &plan {
            assert!(members.windows(2).all(|w| w[0] < w[1]));
            assert!(members.iter().all(|&i| router.host_of(&keys[i]) == *host));
        }
    }
}
