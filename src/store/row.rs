//! A stored resource row (`RawResource`: the bytes of a resource table's value, a
//! `StoredResource` serialized as `{"id", "meta", "attrs"}`) and its decodings: whole
//! (`decode`), or as text (`StoredText`: `id` and `meta` parsed, each top-level
//! attribute kept as the JSON text it is stored as, borrowed from the row, in stored
//! order). The text form is the one partial decoding: a read renders it straight to
//! JSON text (`scim::resource::render_text`) instead of building a
//! `serde_json::Value` tree, rebuilding and serializing it again, and a scan or an
//! index lookup parses from it only the attributes its filter and sort read
//! (`StoredText::values_of`) (issue 10); `parts` hands the attributes out as their
//! stored text, for the export. Knows the row's layout and nothing of queries or rendering.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::{StoreResult, StoredResource};
use crate::scim::resource::{AttrText, Attributes, Meta};

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
        #[derive(Deserialize)]
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

    /// The resource as text: `id` and `meta` parsed, the attributes borrowed.
    pub(crate) fn text(&self) -> StoreResult<StoredText<'a>> {
        Ok(parse(self.0)?)
    }
}

/// A stored resource whose attributes are JSON text borrowed from its record.
pub(crate) struct StoredText<'a> {
    pub id: String,
    pub meta: Meta,
    /// Every top-level attribute in stored order, with its value's text.
    pub attrs: Vec<AttrText<'a>>,
}

impl StoredText<'_> {
    /// The attributes named in `keys` (compared ASCII-case-insensitively, as the
    /// filter evaluator looks names up), parsed; the others are not.
    pub(crate) fn values_of(&self, keys: &[&str]) -> StoreResult<Attributes> {
        let mut out = Attributes::new();
        for (k, v) in &self.attrs {
            if keys.iter().any(|n| n.eq_ignore_ascii_case(k)) {
                out.insert(
                    k.as_ref().to_owned(),
                    serde_json::from_str::<Value>(v.get())?,
                );
            }
        }
        Ok(out)
    }
}

/// Parses a record's bytes (as written from a `StoredResource`).
fn parse(record: &[u8]) -> serde_json::Result<StoredText<'_>> {
    #[derive(Deserialize)]
    struct Record<'a> {
        id: String,
        meta: Meta,
        #[serde(borrow)]
        attrs: Attrs<'a>,
    }
    // Validated once here: parsing from a `str` does not validate each value again.
    let record = std::str::from_utf8(record).map_err(serde::de::Error::custom)?;
    let r: Record<'_> = serde_json::from_str(record)?;
    Ok(StoredText {
        id: r.id,
        meta: r.meta,
        attrs: r.attrs.0,
    })
}

/// The `attrs` object as (name, value text) pairs.
struct Attrs<'a>(Vec<AttrText<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Attrs<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Attrs<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a stored resource's attributes (an object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Attrs<'a>, A::Error> {
                let mut out = Vec::with_capacity(m.size_hint().unwrap_or(12));
                while let Some(Name(k)) = m.next_key()? {
                    let v: &'de RawValue = m.next_value()?;
                    out.push((k, v));
                }
                Ok(Attrs(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// An attribute name, borrowed unless it holds escapes.
struct Name<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Name<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Name<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an attribute name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'a>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::scim::resource::{normalize, render, render_text, Reference};
    use crate::scim::schema::ResourceType;
    use crate::store::StoredResource;

    fn stored(rt: ResourceType, body: serde_json::Value) -> Vec<u8> {
        let r = StoredResource {
            id: "0190-a\"b".into(),
            meta: Meta {
                created: "2026-11-01T00:00:00.000Z".into(),
                last_modified: "2026-11-02T00:00:00.000Z".into(),
                version: 7,
                groups_tag: Some(0xfeed),
            },
            attrs: normalize(rt, &body).unwrap().attrs,
        };
        serde_json::to_vec(&r).unwrap()
    }

    fn both(
        rt: ResourceType,
        record: &[u8],
        refs: Option<&[Reference]>,
    ) -> (Vec<u8>, Option<Vec<u8>>) {
        let r: StoredResource = serde_json::from_slice(record).unwrap();
        let mut meta = r.meta.clone();
        meta.groups_tag = Some(0xfeed);
        let tree = render(rt, &r.id, r.attrs, &meta, refs, "https://h/scim/v2");
        let t = parse(record).unwrap();
        let text = render_text(rt, &t.id, &t.attrs, &meta, refs, "https://h/scim/v2");
        (serde_json::to_vec(&tree).unwrap(), text)
    }

    #[test]
    fn text_rendering_gives_the_bytes_of_the_value_rendering() {
        let user = stored(
            ResourceType::User,
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "displayName": "Zoë \"Q\" O'Brien\n\u{1f}\\",
                "userName": "zoe@example.com",
                "externalId": "ext-1",
                "name": {"givenName": "Zoë", "familyName": "O'Brien"},
                "emails": [{"value": "zoe@example.com", "type": "work", "primary": true}],
                "active": false,
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": "0042", "department": "R&D </script>"
                }
            }),
        );
        let groups = [
            Reference {
                id: "g1".into(),
                rt: ResourceType::Group,
                display: Some("Tëam \"1\"".into()),
                indirect: false,
            },
            Reference {
                id: "g2".into(),
                rt: ResourceType::Group,
                display: None,
                indirect: true,
            },
        ];
        for refs in [None, Some(&groups[..0]), Some(&groups[..])] {
            let (tree, text) = both(ResourceType::User, &user, refs);
            assert_eq!(
                String::from_utf8(text.unwrap()).unwrap(),
                String::from_utf8(tree).unwrap()
            );
        }
        let group = stored(
            ResourceType::Group,
            json!({"displayName": "Ops", "externalId": "e"}),
        );
        let members = [Reference {
            id: "u1".into(),
            rt: ResourceType::User,
            display: Some("Ann".into()),
            indirect: false,
        }];
        let (tree, text) = both(ResourceType::Group, &group, Some(&members));
        assert_eq!(text.unwrap(), tree);
    }

    #[test]
    fn attribute_names_with_escapes_parse_and_names_the_rendering_sets_fall_back() {
        let record = br#"{"id":"x","meta":{"created":"c","lastModified":"l","version":1},"attrs":{"user\u004eame":"a","title":"t"}}"#;
        let t = parse(record).unwrap();
        assert_eq!(t.attrs.len(), 2);
        assert_eq!(t.attrs[0].0, "userName");
        assert_eq!(t.attrs[0].1.get(), "\"a\"");
        let meta = t.meta.clone();
        assert!(render_text(ResourceType::User, "x", &t.attrs, &meta, None, "b").is_some());
        let record = br#"{"id":"x","meta":{"created":"c","lastModified":"l","version":1},"attrs":{"groups":[]}}"#;
        let t = parse(record).unwrap();
        assert_eq!(
            render_text(ResourceType::User, "x", &t.attrs, &meta, None, "b"),
            None
        );
    }

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
    fn values_of_keeps_the_named_attributes_in_any_case_and_the_text_the_whole_meta() {
        let raw = row();
        let whole = RawResource(&raw).decode().unwrap();
        let text = RawResource(&raw).text().unwrap();
        let sparse = text.values_of(&["title", "emails"]).unwrap();
        assert_eq!(text.id, whole.id);
        assert_eq!(text.meta, whole.meta);
        let kept: Vec<&str> = sparse.keys().map(String::as_str).collect();
        assert_eq!(kept, ["title", "emails", "TITLE"]);
        assert_eq!(sparse["title"], whole.attrs["title"]);
        assert_eq!(sparse["emails"], whole.attrs["emails"]);
        assert_eq!(sparse["TITLE"], whole.attrs["TITLE"]);
    }

    #[test]
    fn reading_as_text_refuses_a_damaged_row() {
        let raw = row();
        assert!(RawResource(&raw[..raw.len() - 1]).text().is_err());
        assert!(RawResource(br#"{"id":"u1","attrs":{}}"#).text().is_err());
        assert!(RawResource(b"{\"id\":\"u\xff\",\"meta\":{},\"attrs\":{}}")
            .text()
            .is_err());
    }
}
