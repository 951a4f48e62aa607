//! A serde adapter that refuses values nested deeper than a bound, so that decoding a damaged or
//! hostile value returns an error instead of overflowing the stack.
//!
//! bincode recurses once per level of the value it decodes and has no bound of its own: the bytes
//! of a recursive type (a tree, a linked list) a million levels deep fit in one megabyte, and
//! decoding them overflows the thread's stack, which aborts the process. JSON needs no adapter:
//! `serde_json` stops at 128 nested arrays or objects.
//!
//! [`Limited`] wraps a [`Deserializer`] and every visitor, access and seed it hands out, and
//! counts one level each time the value steps into a sequence, a map, an enum, an `Option` or a
//! newtype. At the bound it fails with an error that says why. Everything else is passed through unchanged,
//! `is_human_readable` included (bincode says false, and types such as `IpAddr` encode
//! differently for it).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, VariantAccess, Visitor};

/// The error text for a value nested deeper than the bound.
fn too_deep(limit: usize) -> String {
    format!(
        "the value nests deeper than {limit} levels and is refused before it overflows the \
         stack (a damaged value, or one another program wrote)"
    )
}

/// A [`Deserializer`] that may step into at most `left` more levels.
pub(super) struct Limited<D> {
    inner: D,
    budget: Budget,
}

impl<D> Limited<D> {
    /// Wraps `inner`, allowing `limit` levels of nesting.
    pub(super) fn new(inner: D, limit: usize) -> Limited<D> {
        Limited {
            inner,
            budget: Budget { left: limit, limit },
        }
    }
}

/// The state passed down to each wrapper: levels left and the bound, for the error.
#[derive(Clone, Copy)]
struct Budget {
    left: usize,
    limit: usize,
}

impl Budget {
    /// One level down, or the error when none is left.
    #[inline]
    fn step<E: serde::de::Error>(self) -> Result<Budget, E> {
        match self.left.checked_sub(1) {
            Some(left) => Ok(Budget { left, ..self }),
            None => Err(refused(self.limit)),
        }
    }
}

/// Out of line, so that the checks on the decoding path stay small enough to inline.
#[cold]
#[inline(never)]
fn refused<E: serde::de::Error>(limit: usize) -> E {
    E::custom(too_deep(limit))
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
        self.inner.next_element_seed(Seed {
            inner: seed,
            budget: self.budget,
        })
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Access<A> {
    type Error = A::Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, A::Error> {
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

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
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
