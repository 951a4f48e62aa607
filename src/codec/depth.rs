//! A serde adapter that stops decoding a value before its nesting overflows the stack, so that a
//! damaged or hostile value is an error instead of an abort.
//!
//! bincode recurses once per level of the value it decodes and has no bound of its own: the bytes
//! of a recursive type (a tree, a linked list) a million levels deep fit in one megabyte, and
//! decoding them overflows the thread's stack, which aborts the process. JSON goes through the
//! adapter too: `serde_json` stops at 128 nested arrays or objects, a count of levels that says
//! nothing of the stack a heavy type's levels take.
//!
//! [`Limited`] wraps a [`Deserializer`] and every visitor, access and seed it hands out, and
//! counts a level each time the value steps into a sequence, a map, an enum, an `Option` or a
//! newtype. From [`CHECKED_FROM`] levels on, each step asks how much stack the thread has left
//! and refuses to go on below [`STACK_MARGIN`]. A bound on levels alone would not do: what a level
//! takes depends on the type (a struct holding a large array takes tens of KiB per level in a
//! debug build), and a bound low enough for every type would refuse lists that decode fine. So
//! any value that fits in the stack still decodes, as it did before the bound. Where the stack's
//! extent is unknown, [`FALLBACK_MAX_DEPTH`] levels are allowed. Everything else is passed
//! through unchanged, `is_human_readable` included (bincode says false, and types such as
//! `IpAddr` encode differently for it).
//!
//! Two more bounds ride on the same wrappers, for what a length read from the bytes can make
//! serde do before the bytes run out. Elements: bincode charges a sequence's or map's length
//! nothing against its byte limit, and an element of a zero-size type reads no byte, so ten
//! bytes claiming 2^64 unit values kept a core busy for good; every element and map entry is
//! counted against [`ElementBound`], 16 per byte of the payload plus 65,536, far more than any
//! value whose elements take a byte each (a list of that many zero-size values is refused).
//! Preallocation: serde reserves up to 1 MiB for a `Vec` or map from the length it is told, and
//! a recursive type whose every level claims a long list reserved that much per level, gigabytes
//! for a value of kilobytes; below the top level no length is passed on as a size hint, so a
//! nested list grows as its elements are read.
//!
//! What it does not cover: one level that alone takes more than [`STACK_MARGIN`] (a type with
//! a huge array inline), a thread already within that margin of its end before the first
//! [`CHECKED_FROM`] levels, and the second pass serde makes over a value it buffered (an
//! untagged enum or a `flatten` field, in JSON; bincode refuses those), which does not go
//! through the adapter.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// Stack that must remain for decoding to step one level deeper: far more than one level of any
/// reasonable type takes, so that the step after a check cannot overflow.
pub(super) const STACK_MARGIN: usize = 128 << 10;

/// Levels decoded without asking how much stack is left: values this shallow decoded before the
/// bound existed, and the check costs a call per level.
const CHECKED_FROM: usize = 16;

/// The deepest a value may nest where the thread's stack extent is unknown, as `serde_json`'s
/// own bound for JSON is 128.
pub(super) const FALLBACK_MAX_DEPTH: usize = 128;

/// Elements and map entries a value may have per byte of its payload (see [`ElementBound`]).
const ELEMENTS_PER_BYTE: u64 = 16;

/// Elements any value may have whatever its size, so that short values of small lists are
/// never near the bound.
const ELEMENTS_ALWAYS: u64 = 1 << 16;

thread_local! {
    /// Elements the value being decoded on this thread may still have ([`ElementBound`]);
    /// unbounded outside a decode.
    static ELEMENTS_LEFT: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// The bound on the elements of the value decoded on this thread while it lives: a decode is
/// one call on one thread, and its wrappers are made and dropped inside it. The bound in force
/// before is restored on drop, so a decode nested inside another's `Deserialize` keeps both.
pub(super) struct ElementBound {
    previous: u64,
}

impl ElementBound {
    /// Bounds the elements of a value of `payload_len` bytes.
    pub(super) fn enter(payload_len: usize) -> ElementBound {
        let bound = u64::try_from(payload_len)
            .unwrap_or(u64::MAX)
            .saturating_mul(ELEMENTS_PER_BYTE)
            .saturating_add(ELEMENTS_ALWAYS);
        ElementBound {
            previous: ELEMENTS_LEFT.with(|left| left.replace(bound)),
        }
    }
}

impl Drop for ElementBound {
    fn drop(&mut self) {
        ELEMENTS_LEFT.with(|left| left.set(self.previous));
    }
}

/// Counts one element or map entry against the bound, or refuses the value.
#[inline]
fn count_element<E: serde::de::Error>() -> Result<(), E> {
    match ELEMENTS_LEFT.with(|left| {
        let n = left.get();
        left.set(n.saturating_sub(1));
        n
    }) {
        0 => Err(too_many_elements()),
        _ => Ok(()),
    }
}

#[cold]
#[inline(never)]
fn too_many_elements<E: serde::de::Error>() -> E {
    E::custom(format!(
        "the value claims more elements than its bytes can hold ({ELEMENTS_PER_BYTE} per byte \
         and {ELEMENTS_ALWAYS} more): it is damaged, or written by another program"
    ))
}

/// Why a value was refused, for the error.
#[cold]
#[inline(never)]
fn refused<E: serde::de::Error>(depth: usize, remaining: Option<usize>) -> E {
    E::custom(match remaining {
        Some(left) => format!(
            "the value nests too deep for the stack this thread has left ({depth} levels in, \
             {} KiB left, {} KiB needed to go on): decode it on a thread with a larger stack; \
             a value this deep may also be damaged, or written by another program",
            left >> 10,
            STACK_MARGIN >> 10
        ),
        None => format!(
            "the value nests deeper than {FALLBACK_MAX_DEPTH} levels, the bound where the \
             thread's stack size is unknown; it may be damaged, or written by another program"
        ),
    })
}

/// A [`Deserializer`] that stops before the value it decodes nests too deep for the stack.
pub(super) struct Limited<D> {
    inner: D,
    budget: Budget,
}

impl<D> Limited<D> {
    /// Wraps `inner`, at the value's top level.
    pub(super) fn new(inner: D) -> Limited<D> {
        Limited {
            inner,
            budget: Budget { depth: 0 },
        }
    }
}

/// The state passed down to each wrapper: how many levels the value has stepped into.
#[derive(Clone, Copy)]
struct Budget {
    depth: usize,
}

impl Budget {
    /// One level down, or the error when the stack left (or, where it is unknown, the level
    /// count) says no.
    #[inline]
    fn step<E: serde::de::Error>(self) -> Result<Budget, E> {
        let depth = self.depth.saturating_add(1);
        if depth >= CHECKED_FROM {
            match stacker::remaining_stack() {
                Some(left) if left < STACK_MARGIN => return Err(refused(depth, Some(left))),
                None if depth > FALLBACK_MAX_DEPTH => return Err(refused(depth, None)),
                _ => {}
            }
        }
        Ok(Budget { depth })
    }
}

/// A visitor, passed through except where it steps into a nested value.
struct Visit<V> {
    inner: V,
    budget: Budget,
}

/// A seed, which deserializes its value through a [`Limited`] with the budget it carries.
struct Seed<S> {
    inner: S,
    budget: Budget,
}

/// A sequence, map or enum access whose elements are deserialized with a budget.
struct Access<A> {
    inner: A,
    budget: Budget,
}

macro_rules! forward_deserialize {
    ($($method:ident),* $(,)?) => {
        $(
            #[inline]
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
                self.inner.$method(Visit { inner: visitor, budget: self.budget })
            }
        )*
    };
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Limited<D> {
    type Error = D::Error;

    forward_deserialize!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any,
    );

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget;
        self.inner.deserialize_unit_struct(
            name,
            Visit {
                inner: visitor,
                budget,
            },
        )
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget;
        self.inner.deserialize_newtype_struct(
            name,
            Visit {
                inner: visitor,
                budget,
            },
        )
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Self::Error> {
        let budget = self.budget;
        self.inner.deserialize_tuple(
            len,
            Visit {
                inner: visitor,
                budget,
            },
        )
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget;
        self.inner.deserialize_tuple_struct(
            name,
            len,
            Visit {
                inner: visitor,
                budget,
            },
        )
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget;
        self.inner.deserialize_struct(
            name,
            fields,
            Visit {
                inner: visitor,
                budget,
            },
        )
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let budget = self.budget;
        self.inner.deserialize_enum(
            name,
            variants,
            Visit {
                inner: visitor,
                budget,
            },
        )
    }

    #[inline]
    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    #[inline]
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Limited {
            inner: deserializer,
            budget: self.budget,
        })
    }
}

macro_rules! forward_visit {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(
            #[inline]
            fn $method<E: serde::de::Error>(self, v: $ty) -> Result<Self::Value, E> {
                self.inner.$method(v)
            }
        )*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Visit<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool(bool),
        visit_i8(i8),
        visit_i16(i16),
        visit_i32(i32),
        visit_i64(i64),
        visit_i128(i128),
        visit_u8(u8),
        visit_u16(u16),
        visit_u32(u32),
        visit_u64(u64),
        visit_u128(u128),
        visit_f32(f32),
        visit_f64(f64),
        visit_char(char),
        visit_str(&str),
        visit_borrowed_str(&'de str),
        visit_string(String),
        visit_bytes(&[u8]),
        visit_borrowed_bytes(&'de [u8]),
        visit_byte_buf(Vec<u8>),
    );

    #[inline]
    fn visit_none<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    #[inline]
    fn visit_unit<E: serde::de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    #[inline]
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let budget = self.budget.step()?;
        self.inner.visit_some(Limited {
            inner: deserializer,
            budget,
        })
    }

    #[inline]
    fn visit_newtype_struct<D: Deserializer<'de>>(self, deserializer: D) -> Result<V::Value, D::Error> {
        let budget = self.budget.step()?;
        self.inner.visit_newtype_struct(Limited {
            inner: deserializer,
            budget,
        })
    }

    #[inline]
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        let budget = self.budget.step()?;
        self.inner.visit_seq(Access { inner: seq, budget })
    }

    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        let budget = self.budget.step()?;
        self.inner.visit_map(Access { inner: map, budget })
    }

    #[inline]
    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        let budget = self.budget.step()?;
        self.inner.visit_enum(Access { inner: data, budget })
    }
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, A::Error> {
        count_element()?;
        self.inner.next_element_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    /// The length read from the bytes at the top level only (serde reserves at most 1 MiB from
    /// it); below, none, so that nested lists claiming long lengths reserve nothing.
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        if self.budget.depth <= 1 {
            self.inner.size_hint()
        } else {
            None
        }
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
        count_element()?;
        self.inner.next_key_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    #[inline]
    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.next_value_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    /// The length read from the bytes at the top level only (serde reserves at most 1 MiB from
    /// it); below, none, so that nested lists claiming long lengths reserve nothing.
    #[inline]
    fn size_hint(&self) -> Option<usize> {
        if self.budget.depth <= 1 {
            self.inner.size_hint()
        } else {
            None
        }
    }
}

impl<'de, A: EnumAccess<'de>> EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;

    #[inline]
    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Access<A::Variant>), A::Error> {
        let budget = self.budget;
        let (value, variant) = self.inner.variant_seed(Seed { inner: seed, budget })?;
        Ok((
            value,
            Access {
                inner: variant,
                budget,
            },
        ))
    }
}

impl<'de, A: VariantAccess<'de>> VariantAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.inner.tuple_variant(
            len,
            Visit {
                inner: visitor,
                budget: self.budget,
            },
        )
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.struct_variant(
            fields,
            Visit {
                inner: visitor,
                budget: self.budget,
            },
        )
    }
}
