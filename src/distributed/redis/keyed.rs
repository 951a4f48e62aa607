//! A one-key call's error, made to name what the error of the call could not: the key of a
//! value of another type (`WRONGTYPE`), and the key and its hash slot when the cluster does not
//! serve that slot (`CLUSTERDOWN`: the slot has no owner, its primary failed with no replica to
//! take over, or the cluster stopped for want of full coverage). A batch split per slot names
//! its failed slots already (`batches`); a single key's error, and a batch's sent whole (its
//! keys on one primary, or in one slot), said only "this key's hash slot", which left the
//! operator to work the slot out from the keys by hand. A redirect the cluster client gave up
//! following (`MOVED`, `ASK`) is named the same way: its error read only "Moved: 449 h:7001".

use super::errors::{clusterdown_advice, redirect_advice, THIS_KEYS_SLOT};
use super::slots::slot_of;
use crate::error::{key_for_error, Error};

/// Words what an error means for a slot named in words.
type Advice = fn(&str) -> String;

/// The advice of `reason` that names no slot yet (a CLUSTERDOWN's or a given-up redirect's), and
/// the function that words it for a named slot.
fn unnamed_advice(reason: &str) -> Option<(String, Advice)> {
    let advices: [Advice; 2] = [clusterdown_advice, redirect_advice];
    advices
        .into_iter()
        .map(|advice| (advice(THIS_KEYS_SLOT), advice))
        .find(|(unnamed, _)| reason.contains(unnamed.as_str()))
}

/// `error` of a call on `key` (stored under `prefix`), naming the key, and its hash slot where
/// the cluster does not serve it or moved it away.
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
            let Some((unnamed, advice)) = unnamed_advice(&reason) else {
                return Error::Backend { level, op, reason };
            };
            let mut full = Vec::with_capacity(prefix.len() + key.len());
            full.extend_from_slice(prefix.as_bytes());
            full.extend_from_slice(key.as_bytes());
            let slot = format!("hash slot {} (of key {:?})", slot_of(&full), key_for_error(key));
            Error::Backend {
                level,
                op,
                reason: reason.replacen(&unnamed, &advice(&slot), 1),
            }
        }
        other => other,
    }
}

/// `error` of a batch sent whole (its keys share a primary, or the slot map is not known and
/// they share a hash slot), naming the hash slots of its `keys` where the cluster does not
/// serve one of them or moved it away. Its other errors are left as they are: a batch's envelope errors name
/// their keys already, and naming the first key there would name the wrong one.
pub(super) fn naming_batch<'k>(error: Error, keys: impl Iterator<Item = &'k str>, prefix: &str) -> Error {
    /// Slots listed by name; a batch over more says how many others.
    const LISTED: usize = 8;
    let Error::Backend { level, op, reason } = error else {
        return error;
    };
    let Some((unnamed, advice)) = unnamed_advice(&reason) else {
        return Error::Backend { level, op, reason };
    };
    let (mut slots, mut count, mut first) = (Vec::new(), 0usize, None);
    let mut full = Vec::with_capacity(prefix.len() + 64);
    for key in keys {
        full.clear();
        full.extend_from_slice(prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        let slot = slot_of(&full);
        if !slots.contains(&slot) {
            slots.push(slot);
        }
        count += 1;
        first.get_or_insert(key);
    }
    let first = key_for_error(first.unwrap_or_default());
    let of = match count {
        1 => format!("of the batch's one key, {first:?}"),
        _ => format!("of the batch's {count} keys, {first:?} first"),
    };
    let named = match slots.as_slice() {
        [slot] => format!("hash slot {slot} ({of})"),
        _ => {
            let shown: Vec<String> = slots.iter().take(LISTED).map(ToString::to_string).collect();
            let more = slots.len().saturating_sub(LISTED);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("one of hash slots {}{more} ({of})", shown.join(", "))
        }
    };
    Error::Backend {
        level,
        op,
        reason: reason.replacen(&unnamed, &advice(&named), 1),
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
    fn a_batch_sent_whole_names_its_keys_slots_and_leaves_its_other_errors() {
        let text = |keys: &[&str]| naming_batch(clusterdown(), keys.iter().copied(), "app:").to_string();
        let one = text(&["{user}:1", "{user}:2"]);
        assert!(
            one.contains("does not serve hash slot 5474 (of the batch's 2 keys, \"{user}:1\" first)"),
            "{one}"
        );
        let keys = ["a", "b"];
        let (a, b) = (slot_of(b"app:a"), slot_of(b"app:b"));
        assert_ne!(a, b);
        let two = text(&keys);
        assert!(
            two.contains(&format!(
                "does not serve one of hash slots {a}, {b} (of the batch's 2 keys"
            )),
            "{two}"
        );
        let many: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut slots: Vec<usize> = many
            .iter()
            .map(|k| slot_of(format!("app:{k}").as_bytes()))
            .collect();
        slots.sort_unstable();
        slots.dedup();
        let listed = text(&many);
        assert!(
            listed.contains(&format!(" and {} more (of the batch's 40 keys", slots.len() - 8)),
            "{listed}"
        );
        // An envelope error of a batch names its own key or none: not the batch's first.
        let envelope = Error::InvalidEnvelope {
            level: "redis",
            key: String::new(),
            reason: "bad magic".to_owned(),
        };
        match naming_batch(envelope, keys.iter().copied(), "") {
            Error::InvalidEnvelope { key, .. } => assert!(key.is_empty(), "{key}"),
            other => panic!("{other:?}"),
        }
    }

    /// A redirect the cluster client gave up following read "redis get failed: Moved: 449
    /// 127.0.0.1:7001": no key, no advice.
    #[test]
    fn a_redirect_given_up_names_the_key_and_its_slot_and_says_what_to_do() {
        // As the client reads it off the wire.
        let moved = redis::parse_redis_value(b"-MOVED 449 127.0.0.1:7001\r\n")
            .and_then(redis::Value::extract_error)
            .unwrap_err();
        let error = super::super::errors::call_error("get", "h:1, h:2", &moved, true);
        let text = naming(error, "{user}:42", "app:").to_string();
        assert!(
            text.starts_with(
                "redis get failed: h:1, h:2: the cluster redirected the call on hash slot 5474 (of \
                 key \"{user}:42\") to another node"
            ) && text.contains("CLUSTER SLOTS")
                && text.contains("cluster-announce-ip")
                && text.ends_with("(Moved: 449 127.0.0.1:7001)"),
            "{text}"
        );
        let error = super::super::errors::call_error("get_many", "h:1", &moved, true);
        let batch = naming_batch(error, ["{user}:1", "{user}:2"].into_iter(), "app:").to_string();
        assert!(
            batch.contains(
                "redirected the call on hash slot 5474 (of the batch's 2 keys, \"{user}:1\" first)"
            ),
            "{batch}"
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
