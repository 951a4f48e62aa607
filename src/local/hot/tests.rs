//! Unit tests of the memory tier: its rules, and its hit ratio against quick_cache.

mod rules {
    use super::super::*;
    use crate::clock::ManualClock;

    #[derive(Clone, Debug, PartialEq)]
    struct User {
        name: String,
    }

    #[test]
    fn a_value_comes_back_as_its_own_type_and_not_as_another() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(1000)));
        tier.insert("u", User { name: "Ada".into() }, 0, 8);
        assert_eq!(tier.get::<User>("u"), Some(User { name: "Ada".into() }));
        assert_eq!(tier.get::<String>("u"), None, "another type is a miss");
        tier.insert("u", Arc::new(User { name: "Bob".into() }), 0, 8);
        assert_eq!(
            tier.get::<Arc<User>>("u").map(|u| u.name.clone()),
            Some("Bob".into())
        );
        tier.remove("u");
        assert_eq!(tier.get::<User>("u"), None, "a remove reaches every type");
        assert_eq!(tier.get::<Arc<User>>("u"), None);
    }

    #[test]
    fn an_expired_value_is_a_miss_and_leaves_the_tier() {
        let clock = ManualClock::new(1000);
        let tier = HotTier::new(10, 64 << 20, Arc::new(clock.clone()));
        tier.insert("k", 7u32, 1500, 8);
        assert_eq!(tier.get::<u32>("k"), Some(7));
        clock.advance(std::time::Duration::from_millis(500));
        assert_eq!(tier.get::<u32>("k"), None);
        assert!(tier.is_empty());
    }

    /// A clock standing at 1000 whose next expiry check, once armed, first keeps a fresh value
    /// of `k` in the tier: a write landing between a hit's lookup and its expiry check.
    #[derive(Debug)]
    struct WriteDuringCheck {
        tier: OnceLock<std::sync::Weak<HotTier>>,
        armed: std::sync::atomic::AtomicBool,
    }

    impl Clock for WriteDuringCheck {
        fn now_ms(&self) -> u64 {
            1000
        }
        fn reached(&self, at_ms: u64) -> bool {
            if self.armed.swap(false, Ordering::SeqCst) {
                if let Some(tier) = self.tier.get().and_then(std::sync::Weak::upgrade) {
                    tier.insert("k", 2u32, 5000, 8);
                }
            }
            at_ms <= self.now_ms()
        }
    }

    #[test]
    fn a_read_that_finds_a_value_expired_leaves_the_value_written_meanwhile() {
        let clock = Arc::new(WriteDuringCheck {
            tier: OnceLock::new(),
            armed: false.into(),
        });
        let tier = Arc::new(HotTier::new(10, 64 << 20, clock.clone()));
        clock.tier.get_or_init(|| Arc::downgrade(&tier));
        tier.insert("k", 1u32, 1000, 8);
        clock.armed.store(true, Ordering::SeqCst);
        assert_eq!(tier.get::<u32>("k"), None, "the value looked up had expired");
        assert_eq!(tier.get::<u32>("k"), Some(2), "the value written meanwhile stays");
        assert_eq!(
            tier.counters().expirations,
            0,
            "the expired value was replaced, not dropped by the read"
        );
        // Without a write in between, the read drops the expired value and counts it.
        tier.insert("k", 3u32, 900, 8);
        assert_eq!(tier.get::<u32>("k"), None);
        assert!(tier.is_empty());
        assert_eq!(tier.counters().expirations, 1);
    }

    #[test]
    fn a_value_kept_again_takes_its_new_expiry() {
        let clock = ManualClock::new(1000);
        let tier = HotTier::new(10, 64 << 20, Arc::new(clock.clone()));
        tier.insert("k", 1u32, 1500, 8);
        tier.insert("k", 2u32, 0, 8);
        clock.advance(std::time::Duration::from_millis(1000));
        assert_eq!(tier.get::<u32>("k"), Some(2), "the second value never expires");
        tier.insert("k", 3u32, 2500, 8);
        assert_eq!(tier.get::<u32>("k"), Some(3));
        clock.advance(std::time::Duration::from_millis(500));
        assert_eq!(tier.get::<u32>("k"), None, "the third value's expiry is its own");
        tier.insert("k", 4u32, 4000, 8);
        tier.remove("k");
        tier.insert("k", 5u32, 0, 8);
        clock.advance(std::time::Duration::from_millis(5000));
        assert_eq!(
            tier.get::<u32>("k"),
            Some(5),
            "a forgotten key's expiry is not kept either"
        );
    }

    #[test]
    fn the_tier_holds_at_most_its_bound_per_type() {
        // A bound in bytes past any RAM leaves the count as the bound (and does not overflow).
        for max_bytes in [64 << 20, u64::MAX] {
            let tier = HotTier::new(100, max_bytes, Arc::new(ManualClock::new(0)));
            for i in 0..1000u32 {
                tier.insert(&format!("k{i}"), i, 0, 8);
            }
            assert!((80..=100).contains(&tier.len()), "{}", tier.len());
        }
    }

    #[test]
    fn a_bound_in_items_past_one_per_byte_leaves_the_bound_in_bytes_binding() {
        // Four million places in 1 MiB: every value weighs more than its share, so the bytes bind.
        let max_bytes = 1 << 20;
        let tier = HotTier::new(4_000_000, max_bytes, Arc::new(ManualClock::new(0)));
        for i in 0..100_000u32 {
            tier.insert(&format!("k{i}"), i, 0, 100);
        }
        let weight = tier.weight();
        assert!(
            weight <= max_bytes,
            "{} values weigh {weight} bytes, over the bound of {max_bytes}",
            tier.len()
        );
        assert!(tier.len() > 1_000, "{}", tier.len());
    }

    #[test]
    fn large_values_are_bounded_by_their_bytes_and_small_ones_by_their_count() {
        // 100 values, 1 MiB: a value of up to about 10 KiB takes one of the 100 places.
        let tier = HotTier::new(100, 1 << 20, Arc::new(ManualClock::new(0)));
        for i in 0..1000u32 {
            tier.insert(&format!("small-{i}"), i, 0, 100);
        }
        assert!((80..=100).contains(&tier.len()), "{}", tier.len());
        tier.clear();
        // 100 KiB each: about ten fit in 1 MiB, whatever the count allows.
        for i in 0..1000u32 {
            tier.insert(&format!("large-{i}"), i, 0, 100 << 10);
        }
        assert!((1..=10).contains(&tier.len()), "{}", tier.len());
        // A value too large for the bound is not kept, and takes nothing from the others.
        tier.insert("huge", 7u32, 0, 2 << 20);
        assert_eq!(tier.get::<u32>("huge"), None);
        assert!(!tier.is_empty(), "the large values kept before it stay");
    }

    #[test]
    fn a_value_replaced_or_deleted_is_no_eviction() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(0)));
        tier.insert("k", 1u32, 0, 8);
        tier.insert("k", 2u32, 0, 8);
        let change = tier.begin_change("k");
        tier.end_change("k", change, None);
        assert_eq!(tier.get::<u32>("k"), None);
        assert_eq!(tier.counters().evictions, 0);
        // A write's refresh replaces the held value too.
        let tier = holding_k(&ManualClock::new(0));
        let change = tier.begin_change("k");
        tier.end_change("k", change, written(b"2"));
        assert_eq!(tier.get::<u32>("k"), Some(2));
        assert_eq!(tier.counters().evictions, 0);
    }

    #[test]
    fn a_value_too_heavy_to_keep_is_no_eviction_and_not_counted_as_kept() {
        let tier = HotTier::new(10, 1000, Arc::new(ManualClock::new(0)));
        let none = || -> Decoder<u32> { Box::new(|_, _| None) };
        let kept = tier.insert_unless_cleared("k", 1u32, 0, 5000, tier.clear_mark(), none);
        assert!(!kept);
        assert_eq!(tier.get::<u32>("k"), None);
        assert_eq!(tier.counters().evictions, 0);
        // Nor is the lighter value it replaces an eviction.
        assert!(tier.insert_unless_cleared("k", 2u32, 0, 8, tier.clear_mark(), none));
        assert!(!tier.insert_unless_cleared("k", 3u32, 0, 5000, tier.clear_mark(), none));
        assert_eq!(tier.get::<u32>("k"), None);
        assert_eq!(tier.counters().evictions, 0);
    }

    #[test]
    fn values_pushed_out_for_room_are_evictions() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(0)));
        for i in 0..100u32 {
            tier.insert(&format!("k{i}"), i, 0, 8);
        }
        let evictions = tier.counters().evictions;
        assert_eq!(
            evictions,
            100 - tier.len(),
            "{evictions} evictions, {} kept",
            tier.len()
        );
    }

    #[test]
    fn a_clear_undoes_an_insert_that_read_before_it() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(0)));
        let mark = tier.clear_mark();
        tier.clear();
        let none = || -> Decoder<u8> { Box::new(|_, _| None) };
        assert!(!tier.insert_unless_cleared("k", 1u8, 0, 8, mark, none));
        assert_eq!(tier.get::<u8>("k"), None);
        let mark = tier.clear_mark();
        assert!(tier.insert_unless_cleared("k", 2u8, 0, 8, mark, none));
        assert_eq!(tier.get::<u8>("k"), Some(2));
    }

    thread_local! {
        /// Set while dropping a [`Brittle`] on this thread panics (per thread: tests run in
        /// parallel).
        static BRITTLE_DROP_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// A value whose `Drop` panics while [`BRITTLE_DROP_PANICS`] is set.
    #[derive(Clone, Debug)]
    struct Brittle(u32);

    impl Drop for Brittle {
        fn drop(&mut self) {
            if BRITTLE_DROP_PANICS.get() && !std::thread::panicking() {
                panic!("Brittle::drop panics (test)");
            }
        }
    }

    /// A clear drops every value: a panicking `Drop` unwound out of it (out of the write,
    /// invalidation or loss of trust that cleared the tier) with the other shards and types not
    /// cleared, and the clear counted as running for good, so nothing was kept again (found by
    /// review).
    #[test]
    fn a_value_whose_drop_panics_neither_unwinds_out_of_a_clear_nor_stops_the_tier() {
        let tier = HotTier::new(100, 64 << 20, Arc::new(ManualClock::new(0)));
        let none = || -> Decoder<Brittle> { Box::new(|_, _| None) };
        let keys: Vec<String> = (0..32).map(|i| format!("k{i}")).collect();
        for (i, key) in (0u32..).zip(&keys) {
            assert!(tier.insert_unless_cleared(key, Brittle(i), 0, 8, tier.clear_mark(), none));
        }
        // A type whose cache comes after Brittle's.
        tier.insert("u", 7u8, 0, 8);
        BRITTLE_DROP_PANICS.set(true);
        let cleared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tier.clear()));
        BRITTLE_DROP_PANICS.set(false);
        assert!(cleared.is_ok(), "a panicking drop unwound out of the clear");
        let left: Vec<&String> = keys
            .iter()
            .filter(|key| tier.get::<Brittle>(key).is_some())
            .collect();
        assert!(left.is_empty(), "values left by the clear: {left:?}");
        assert_eq!(tier.get::<u8>("u"), None, "the next type's cache was not cleared");
        assert!(
            tier.insert_unless_cleared("k0", Brittle(1), 0, 8, tier.clear_mark(), none),
            "the clear still counts as running"
        );
        assert_eq!(tier.get::<Brittle>("k0").map(|b| b.0), Some(1));
    }

    /// A write of a held key whose value is too heavy to keep gets its decoded value handed
    /// back by the cache, and drops it: a panicking `Drop` unwound out of the write, with its
    /// bytes stored (found by review).
    #[test]
    fn a_written_value_too_heavy_to_keep_whose_drop_panics_does_not_unwind_out_of_the_write() {
        let tier = HotTier::new(10, 1 << 16, Arc::new(ManualClock::new(0)));
        let decoder = || -> Decoder<Brittle> { Box::new(|_, bytes| Some(Brittle(bytes.len() as u32))) };
        assert!(tier.insert_unless_cleared("k", Brittle(1), 0, 8, tier.clear_mark(), decoder));
        let heavy = vec![0u8; 1 << 20];
        let change = tier.begin_change("k");
        BRITTLE_DROP_PANICS.set(true);
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            tier.end_change(
                "k",
                change,
                Some(Written {
                    bytes: &heavy,
                    ttl: Duration::from_secs(10),
                }),
            );
        }));
        BRITTLE_DROP_PANICS.set(false);
        assert!(ended.is_ok(), "a panicking drop unwound out of the write");
        assert!(tier.get::<Brittle>("k").is_none(), "too heavy to keep");
    }

    #[test]
    fn an_insert_whose_mark_was_taken_during_a_clear_is_undone() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(0)));
        let none = || -> Decoder<u8> { Box::new(|_, _| None) };
        // Where one clear has begun and not ended, then two (overlapping: the count of clears
        // begun is even again): their caches may be emptied already.
        for running in 1..=2 {
            tier.clears.fetch_add(1, Ordering::SeqCst);
            let mark = tier.clear_mark();
            assert!(
                !tier.insert_unless_cleared("k", 1u8, 0, 8, mark, none),
                "{running} clears running"
            );
            assert_eq!(tier.get::<u8>("k"), None);
        }
    }

    /// A `u32` from its decimal text.
    fn decimal() -> Decoder<u32> {
        Box::new(|_, bytes| std::str::from_utf8(bytes).ok()?.parse().ok())
    }

    /// A tier holding `k` as a `u32` decoded from its decimal text, read at `now`.
    fn holding_k(clock: &ManualClock) -> HotTier {
        let tier = HotTier::new(10, 64 << 20, Arc::new(clock.clone()));
        assert!(tier.insert_unless_cleared("k", 1u32, 0, 8, tier.clear_mark(), decimal));
        tier
    }

    fn written(bytes: &[u8]) -> Option<Written<'_>> {
        Some(Written {
            bytes,
            ttl: Duration::from_secs(10),
        })
    }

    #[test]
    fn a_write_of_a_held_key_puts_its_value_where_the_old_one_was_until_its_ttl() {
        let clock = ManualClock::new(1000);
        let tier = holding_k(&clock);
        let change = tier.begin_change("k");
        assert_eq!(
            tier.get::<u32>("k"),
            None,
            "out of the tier while the change runs"
        );
        clock.advance(Duration::from_millis(5));
        tier.end_change("k", change, written(b"2"));
        assert_eq!(tier.get::<u32>("k"), Some(2));
        clock.set(1000 + 9_999);
        assert_eq!(tier.get::<u32>("k"), Some(2));
        clock.set(1000 + 10_000);
        assert_eq!(tier.get::<u32>("k"), None, "expires a TTL after the write began");
    }

    #[test]
    fn a_write_of_a_key_not_held_keeps_nothing() {
        let clock = ManualClock::new(0);
        let tier = holding_k(&clock);
        let change = tier.begin_change("other");
        tier.end_change("other", change, written(b"2"));
        assert_eq!(tier.get::<u32>("other"), None);
        assert_eq!(tier.get::<u32>("k"), Some(1));
    }

    #[test]
    fn a_delete_a_failed_write_or_a_write_without_ttl_leaves_the_key_out() {
        let clock = ManualClock::new(0);
        let tier = holding_k(&clock);
        let change = tier.begin_change("k");
        tier.end_change("k", change, None);
        assert_eq!(tier.get::<u32>("k"), None);
        // Its place is kept: a later write of the key refreshes it again.
        let change = tier.begin_change("k");
        tier.end_change("k", change, written(b"3"));
        assert_eq!(tier.get::<u32>("k"), Some(3));
    }

    #[test]
    fn a_change_tells_whether_the_tier_held_a_live_value_of_the_key_not_a_place_or_an_expired_one() {
        let clock = ManualClock::new(1000);
        let tier = holding_k(&clock);
        let change = tier.begin_change("k");
        assert!(change.had_value(), "held");
        tier.end_change("k", change, None);
        let change = tier.begin_change("k");
        assert!(!change.had_value(), "only its place is left");
        tier.end_change("k", change, None);
        assert!(!tier.begin_change("other").had_value(), "never held");
        tier.insert("k", 5u32, 2000, 8);
        clock.set(2000);
        assert!(!tier.begin_change("k").had_value(), "expired");
    }

    #[test]
    fn bytes_that_do_not_decode_as_the_held_type_leave_the_key_out() {
        let clock = ManualClock::new(0);
        let tier = holding_k(&clock);
        let change = tier.begin_change("k");
        tier.end_change("k", change, written(b"not a number"));
        assert_eq!(tier.get::<u32>("k"), None);
    }

    #[test]
    fn a_write_overlapped_by_another_change_of_the_key_leaves_it_out_whichever_ends_first() {
        let clock = ManualClock::new(0);
        for write_ends_first in [true, false] {
            let tier = holding_k(&clock);
            let write = tier.begin_change("k");
            let delete = tier.begin_change("k");
            if write_ends_first {
                tier.end_change("k", write, written(b"2"));
                tier.end_change("k", delete, None);
            } else {
                tier.end_change("k", delete, None);
                tier.end_change("k", write, written(b"2"));
            }
            assert_eq!(tier.get::<u32>("k"), None, "write ends first: {write_ends_first}");
        }
        // Two writes: the level below may hold either value, so the tier keeps neither.
        let tier = holding_k(&clock);
        let first = tier.begin_change("k");
        let second = tier.begin_change("k");
        tier.end_change("k", second, written(b"3"));
        tier.end_change("k", first, written(b"2"));
        assert_eq!(tier.get::<u32>("k"), None);
    }

    /// A write overlapped by another change of its key is never put in the tier, not even for
    /// a moment: the other change may have returned by the time the write ends, and a read
    /// after it must not answer the write's value. (A decoder that counts its calls tells: a
    /// put decodes the value first.)
    #[test]
    fn a_write_overlapped_by_another_change_of_the_key_is_never_put_in_the_tier() {
        let decoded = Arc::new(AtomicU64::new(0));
        let counting = |decoded: &Arc<AtomicU64>| -> Decoder<u32> {
            let decoded = Arc::clone(decoded);
            Box::new(move |_, bytes| {
                decoded.fetch_add(1, Ordering::SeqCst);
                std::str::from_utf8(bytes).ok()?.parse().ok()
            })
        };
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(0)));
        assert!(tier.insert_unless_cleared("k", 1u32, 0, 8, tier.clear_mark(), || counting(&decoded)));
        for later_ends_first in [true, false] {
            tier.insert("k", 1u32, 0, 8);
            let earlier = tier.begin_change("k");
            let later = tier.begin_change("k");
            if later_ends_first {
                tier.end_change("k", later, written(b"3"));
                tier.end_change("k", earlier, written(b"2"));
            } else {
                tier.end_change("k", earlier, written(b"2"));
                tier.end_change("k", later, written(b"3"));
            }
            assert_eq!(tier.get::<u32>("k"), None);
            assert_eq!(
                decoded.load(Ordering::SeqCst),
                0,
                "a value was put (later ends first: {later_ends_first})"
            );
        }
        // The same write alone is put (the decoder counts).
        let change = tier.begin_change("k");
        tier.end_change("k", change, written(b"4"));
        assert_eq!(tier.get::<u32>("k"), Some(4));
        assert_eq!(decoded.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_write_after_a_noted_miss_puts_the_value_in_once() {
        let clock = ManualClock::new(0);
        let tier = holding_k(&clock);
        tier.note_miss::<u32>("new", decimal);
        let change = tier.begin_change("new");
        tier.end_change("new", change, written(b"4"));
        assert_eq!(tier.get::<u32>("new"), Some(4));
        assert_eq!(tier.get::<String>("new"), None, "only in the type that missed");
        // The miss was taken by that write: a key written again after it left the tier, with
        // no read in between, is not put back.
        tier.remove("new");
        tier.clear();
        let change = tier.begin_change("new");
        tier.end_change("new", change, written(b"5"));
        assert_eq!(tier.get::<u32>("new"), None);
        assert!(tier.is_empty());
        // Nor is a key no read missed.
        let change = tier.begin_change("never-read");
        tier.end_change("never-read", change, written(b"6"));
        assert!(tier.is_empty());
    }

    #[test]
    fn a_clear_during_a_write_leaves_the_key_out() {
        let clock = ManualClock::new(0);
        let tier = holding_k(&clock);
        let change = tier.begin_change("k");
        tier.clear();
        // Back in the tier (a read's insert), so the refresh finds its place.
        tier.insert("k", 1u32, 0, 8);
        tier.end_change("k", change, written(b"2"));
        assert_eq!(tier.get::<u32>("k"), None);
    }

    #[test]
    fn types_past_the_last_slot_just_miss() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(0)));
        tier.insert("a", 1u8, 0, 8);
        tier.insert("a", 1u16, 0, 8);
        tier.insert("a", 1u32, 0, 8);
        tier.insert("a", 1u64, 0, 8);
        tier.insert("a", 1i8, 0, 8);
        tier.insert("a", 1i16, 0, 8);
        tier.insert("a", 1i32, 0, 8);
        tier.insert("a", 1i64, 0, 8);
        tier.insert("a", 1u128, 0, 8);
        assert_eq!(tier.get::<u128>("a"), None, "a ninth type is not kept");
        assert_eq!(tier.get::<i64>("a"), Some(1));
        let mark = tier.clear_mark();
        let kept = tier.insert_unless_cleared("b", 2u128, 0, 8, mark, || Box::new(|_, _| None));
        assert!(!kept, "nor counted as kept");
        let kept = tier.insert_unless_cleared("b", 2u8, 0, 8, mark, || Box::new(|_, _| None));
        assert!(kept);
    }

    #[test]
    fn two_misses_noted_in_one_pair_of_slots_are_both_kept_and_a_third_replaces_one() {
        let misses: Vec<AtomicU64> = (0..MISSES).map(|_| AtomicU64::new(0)).collect();
        let pairs = MISSES as u64 / 2;
        let (a, b, c) = (6, 6 + pairs, 6 + 2 * pairs);
        note_miss_of(&misses, a);
        note_miss_of(&misses, b);
        note_miss_of(&misses, b);
        assert!(take_miss_of(&misses, a) && take_miss_of(&misses, b));
        assert!(!take_miss_of(&misses, a), "a note is taken once");
        note_miss_of(&misses, a);
        note_miss_of(&misses, b);
        note_miss_of(&misses, c);
        assert!(take_miss_of(&misses, c));
        assert_eq!(
            u8::from(take_miss_of(&misses, a)) + u8::from(take_miss_of(&misses, b)),
            1,
            "the third note of a full pair replaces one of the two"
        );
    }

    /// Two keys of `tier` that fall in one stripe of its changes.
    fn two_keys_of_one_stripe(tier: &HotTier) -> (String, String) {
        let mut seen = std::collections::HashMap::new();
        for i in 0.. {
            let key = format!("k{i}");
            let stripe = tier.changes.stripe_of(tier.changes.hash(&key));
            if let Some(other) = seen.insert(stripe, key.clone()) {
                return (other, key);
            }
        }
        unreachable!("a stripe repeats within STRIPES + 1 keys")
    }

    #[test]
    fn a_batch_of_two_keys_in_one_stripe_leaves_both_written_values_in_the_tier() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(1000)));
        let (a, b) = two_keys_of_one_stripe(&tier);
        for key in [&a, &b] {
            tier.note_miss::<u32>(key, decimal);
        }
        let changes = tier.begin_changes([a.as_str(), b.as_str()].into_iter(), true);
        for ((key, bytes), change) in [(&a, b"1"), (&b, b"2")].into_iter().zip(changes) {
            tier.end_change(key, change, written(bytes));
        }
        assert_eq!((tier.get::<u32>(&a), tier.get::<u32>(&b)), (Some(1), Some(2)));
    }

    #[test]
    fn a_change_of_another_key_of_the_stripe_during_a_batch_still_overlaps_it() {
        let tier = HotTier::new(10, 64 << 20, Arc::new(ManualClock::new(1000)));
        let (a, b) = two_keys_of_one_stripe(&tier);
        tier.note_miss::<u32>(&a, decimal);
        let mut changes = tier.begin_changes([a.as_str()].into_iter(), true);
        let other = tier.begin_change(&b);
        tier.end_change(&a, changes.remove(0), written(b"1"));
        tier.end_change(&b, other, None);
        assert_eq!(
            tier.get::<u32>(&a),
            None,
            "overlapped: the key is left out, as after a write"
        );
    }
}

mod hit_ratio {
    use super::super::*;
    use crate::clock::ManualClock;

    /// Zipf(0.99)-distributed keys over `n` ranks, 10% writes, from a fixed xorshift stream.
    fn trace(n: usize, ops: usize) -> Vec<(usize, bool)> {
        let mut cdf = Vec::with_capacity(n);
        let mut acc = 0.0;
        for rank in 1..=n {
            acc += 1.0 / (rank as f64).powf(0.99);
            cdf.push(acc);
        }
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64
        };
        (0..ops)
            .map(|_| {
                let u = next() * acc;
                let rank = cdf.partition_point(|&c| c < u).min(n - 1);
                (rank, next() < 0.1)
            })
            .collect()
    }

    /// A write forgets the key's value but not its place: on a zipf trace with writes, the tier
    /// keeps more hits than a cache that removes written keys (which sends a hot key back among
    /// the keys never seen before each time it is written).
    #[test]
    fn a_written_key_keeps_its_place_and_the_tier_beats_remove_on_write() {
        let (keys, capacity) = (20_000, 1_000);
        let ops = trace(keys, 200_000);
        let tier = HotTier::new(capacity as u64, 64 << 20, Arc::new(ManualClock::new(0)));
        let removing = Cache::<String, u32>::new(capacity);
        let (mut ours, mut theirs, mut reads) = (0u32, 0u32, 0u32);
        for &(rank, write) in &ops {
            let key = format!("k{rank}");
            if write {
                tier.remove(&key);
                removing.remove(&key);
                continue;
            }
            reads += 1;
            match tier.get::<u32>(&key) {
                Some(_) => ours += 1,
                None => tier.insert(&key, 1u32, 0, 8),
            }
            match removing.get(&key) {
                Some(_) => theirs += 1,
                None => removing.insert(key, 1),
            }
        }
        let (ours, theirs) = (
            f64::from(ours) / f64::from(reads),
            f64::from(theirs) / f64::from(reads),
        );
        assert!(
            ours > theirs + 0.005,
            "hit ratio {ours:.4} with places kept vs {theirs:.4} with written keys removed"
        );
    }
}
