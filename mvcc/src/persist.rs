//! Reading persisted state safely: `imbl`'s own deserializers preallocate whatever length the
//! input claims (a damaged or hostile snapshot panics with "capacity overflow") and collect into
//! a vector first (twice the memory at restore). These insert entry by entry instead, and
//! [`options`] bounds every length by the bytes actually available.

use std::fmt;
use std::marker::PhantomData;

use bincode::Options;
use imbl::{OrdMap, OrdSet};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// bincode's legacy encoding (what `bincode::serialize` writes), refusing any length beyond
/// `limit` bytes of input.
pub fn options(limit: u64) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
        .with_limit(limit)
}

struct MapVisitor<K, V>(PhantomData<(K, V)>);

impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
where
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    type Value = OrdMap<K, V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut m = OrdMap::new();
        while let Some((k, v)) = access.next_entry()? {
            m.insert(k, v);
        }
        Ok(m)
    }
}

/// Deserializes an `OrdMap` without trusting the input's length (`deserialize_with`).
pub fn ord_map<'de, D, K, V>(d: D) -> Result<OrdMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord + Clone,
    V: Deserialize<'de> + Clone,
{
    d.deserialize_map(MapVisitor(PhantomData))
}

struct SetVisitor<T>(PhantomData<T>);

impl<'de, T> Visitor<'de> for SetVisitor<T>
where
    T: Deserialize<'de> + Ord + Clone,
{
    type Value = OrdSet<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
        let mut s = OrdSet::new();
        while let Some(x) = access.next_element()? {
            s.insert(x);
        }
        Ok(s)
    }
}

/// Deserializes an `OrdSet` without trusting the input's length (`deserialize_with`).
pub fn ord_set<'de, D, T>(d: D) -> Result<OrdSet<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Ord + Clone,
{
    d.deserialize_seq(SetVisitor(PhantomData))
}
