//! A stored resource row as a scan reads it (`RawResource`: the row's bytes) and
//! its decoding, whole or sparse: the sparse form parses `id`, `meta` and only the
//! named top-level attributes, stepping over the others without building values
//! (`serde::de::IgnoredAny`), so a scan that needs one or two attributes of each
//! record does not build a JSON tree per record. Knows the row's serialized form
//! (`StoredResource` as JSON), nothing of queries. `RawResource::parts` hands the
//! attributes out as their stored text, for the export.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{StoreResult, StoredResource};
use crate::scim::resource::{Attributes, Meta};

/// One row of a resource table, undecoded.
#[derive(Clone, Copy)]
pub(crate) struct RawResource<'a>(pub(super) &'a [u8]);

impl<'a> RawResource<'a> {
    /// The row's bytes: the resource as JSON (`{"id":…,"meta":…,"attrs":{…}}`).
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.0
    }

    /// The whole resource.
    pub(crate) fn decode(&self) -> StoreResult<StoredResource> {
        Ok(serde_json::from_slice(self.0)?)
    }

    /// The id, the meta and the attributes as the JSON text they are stored as
    /// (an object), borrowed from the row: for copying a record out whole (the
    /// export) without building its attributes.
    pub(crate) fn parts(&self) -> StoreResult<(String, Meta, &'a RawValue)> {
        #[derive(serde::Deserialize)]
        struct Parts<'a> {
            id: String,
            meta: Meta,
            #[serde(borrow)]
            attrs: &'a RawValue,
        }
        let p: Parts<'a> = serde_json::from_slice(self.0)?;
        if !p.attrs.get().starts_with('{') {
            let e: serde_json::Error =
                serde::de::Error::custom("a stored record's attrs is not an object");
            return Err(e.into());
        }
        Ok((p.id, p.meta, p.attrs))
    }

    /// The resource with only the top-level attributes named in `keys` (compared
    /// ASCII-case-insensitively, as the filter evaluator looks names up); `id` and
    /// `meta` whole.
    pub(crate) fn decode_only(&self, keys: &[&str]) -> StoreResult<StoredResource> {
        let mut de = serde_json::Deserializer::from_slice(self.0);
        let r = Sparse { keys }.deserialize(&mut de)?;
        de.end()?;
        Ok(r)
    }
}

/// Decodes a `StoredResource` keeping only `keys` of its attributes.
struct Sparse<'k> {
    keys: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for Sparse<'_> {
    type Value = StoredResource;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<StoredResource, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Sparse<'_> {
    type Value = StoredResource;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a stored resource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoredResource, A::Error> {
        let (mut id, mut meta, mut attrs) = (None, None, None);
        while let Some(Key(k)) = map.next_key()? {
            match k.as_ref() {
                "id" => id = Some(map.next_value::<String>()?),
                "meta" => meta = Some(map.next_value::<Meta>()?),
                "attrs" => attrs = Some(map.next_value_seed(Only { keys: self.keys })?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        use serde::de::Error;
        Ok(StoredResource {
            id: id.ok_or_else(|| A::Error::missing_field("id"))?,
            meta: meta.ok_or_else(|| A::Error::missing_field("meta"))?,
            attrs: attrs.ok_or_else(|| A::Error::missing_field("attrs"))?,
        })
    }
}

/// The attributes object, keeping only `keys`.
struct Only<'k> {
    keys: &'k [&'k str],
}

impl<'de> DeserializeSeed<'de> for Only<'_> {
    type Value = Attributes;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Attributes, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Only<'_> {
    type Value = Attributes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the attributes of a stored resource")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
        let mut attrs = Attributes::new();
        while let Some(Key(k)) = map.next_key()? {
            if self.keys.iter().any(|n| n.eq_ignore_ascii_case(&k)) {
                attrs.insert(k.into_owned(), map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(attrs)
    }
}

/// A map key, borrowed from the row when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row() -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "u1",
            "meta": {"created": "2026-01-01T00:00:00Z", "lastModified": "2026-01-02T00:00:00Z", "version": 3},
            "attrs": {
                "userName": "bjensen",
                "title": "Tour \"Guide\"",
                "name": {"givenName": "Barbara"},
                "emails": [{"value": "b@x.org"}],
                "TITLE": "second spelling"
            }
        }))
        .unwrap()
    }

    #[test]
    fn decode_only_keeps_the_named_attributes_in_any_case_and_the_whole_meta() {
        let raw = row();
        let whole = RawResource(&raw).decode().unwrap();
        let sparse = RawResource(&raw).decode_only(&["title", "emails"]).unwrap();
        assert_eq!(sparse.id, whole.id);
        assert_eq!(sparse.meta, whole.meta);
        let kept: Vec<&str> = sparse.attrs.keys().map(String::as_str).collect();
        assert_eq!(kept, ["title", "emails", "TITLE"]);
        assert_eq!(sparse.attrs["title"], whole.attrs["title"]);
        assert_eq!(sparse.attrs["emails"], whole.attrs["emails"]);
    }

    #[test]
    fn decode_only_refuses_a_damaged_row() {
        let raw = row();
        assert!(RawResource(&raw[..raw.len() - 1])
            .decode_only(&["title"])
            .is_err());
        assert!(RawResource(br#"{"id":"u1","attrs":{}}"#)
            .decode_only(&[])
            .is_err());
    }
}
