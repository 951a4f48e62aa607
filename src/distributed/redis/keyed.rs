//! A one-key call's error, made to name what the error of the call could not: the key of a
//! value of another type (`WRONGTYPE`), and the key and its hash slot when the cluster does not
//! serve that slot (`CLUSTERDOWN`: the slot has no owner, its primary failed with no replica to
//! take over, or the cluster stopped for want of full coverage). A batch split per slot names
//! its failed slots already (`batches`); a single key's error said only "this key's hash
//! slot", which left the operator to work the slot out from the key by hand.

use super::errors::{clusterdown_advice, THIS_KEYS_SLOT};
use super::slots::slot_of;
use crate::error::{key_for_error, Error};

/// `error` of a call on `key` (stored under `prefix`), naming the key, and its hash slot where
/// the cluster does not serve it.
pub(super) fn naming(error: Error, key: &str, prefix: &str) -> Error {
    match error {
        Error::InvalidEnvelope {
            level,
            key: unnamed,
            reason,
        } if unnamed.is_empty() => Error::InvalidEnvelope {
            level,
            key: key_for_error(key),
            reason,
        },
        Error::Backend { level, op, reason } => {
            let unnamed = clusterdown_advice(THIS_KEYS_SLOT);
            if !reason.contains(&unnamed) {
                return Error::Backend { level, op, reason };
            }
            let mut full = Vec::with_capacity(prefix.len() + key.len());
            full.extend_from_slice(prefix.as_bytes());
            full.extend_from_slice(key.as_bytes());
            let slot = format!("hash slot {} (of key {:?})", slot_of(&full), key_for_error(key));
            Error::Backend {
                level,
                op,
                reason: reason.replacen(&unnamed, &clusterdown_advice(&slot), 1),
            }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusterdown() -> Error {
        Error::Backend {
            level: "redis",
            op: "get",
            reason: format!(
                "h:1, h:2: {} (cluster down: Hash slot not served)",
                clusterdown_advice(THIS_KEYS_SLOT)
            ),
        }
    }

    #[test]
    fn a_clusterdown_names_the_keys_slot_under_its_prefix_and_keeps_the_rest() {
        // `{user}` is hashed alone whatever the prefix, so its slot is known: 5474.
        let Error::Backend { level, op, reason } = naming(clusterdown(), "{user}:42", "app:") else {
            panic!("still a backend failure");
        };
        assert_eq!((level, op), ("redis", "get"));
        assert!(
            reason.starts_with("h:1, h:2: the cluster does not serve hash slot 5474 (of key \"{user}:42\")")
                && reason.ends_with("(cluster down: Hash slot not served)")
                && reason.contains("CLUSTER INFO"),
            "{reason}"
        );
        // The prefix is part of the key the slot is hashed from.
        let text = naming(clusterdown(), "k", "p:").to_string();
        let slot = slot_of(b"p:k");
        assert_ne!(slot, slot_of(b"k"));
        assert!(
            text.contains(&format!("hash slot {slot} (of key \"k\")")),
            "{text}"
        );
    }

    #[test]
    fn other_failures_are_left_alone_and_a_long_key_is_cut() {
        let other = Error::Backend {
            level: "redis",
            op: "get",
            reason: "h:1: connection refused".to_owned(),
        };
        assert_eq!(
            naming(other, "k", "").to_string(),
            "redis get failed: h:1: connection refused"
        );
        let long = "k".repeat(100);
        match naming(clusterdown(), &long, "") {
            Error::Backend { reason, .. } => {
                assert!(
                    reason.contains(&format!("{:?}", key_for_error(&long))),
                    "{reason}"
                );
                assert!(!reason.contains(&long), "a long key is cut: {reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}
