//! A stored record read as text: its id and meta parsed, its attributes kept as the
//! JSON text they are stored as, borrowed from the read, in stored order. Lets one
//! resource be rendered straight to JSON text (`scim::resource::render_text`)
//! instead of being parsed into a `serde_json::Value` tree, rebuilt and serialized
//! again (issue 10). Knows the record's layout (`{"id", "meta", "attrs"}`, as
//! `StoredResource` serializes) and nothing of rendering.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::scim::resource::{AttrText, Meta};

/// A stored resource whose attributes are JSON text borrowed from its record.
pub(crate) struct StoredText<'a> {
    pub id: String,
    pub meta: Meta,
    /// Every top-level attribute in stored order, with its value's text.
    pub attrs: Vec<AttrText<'a>>,
}

/// Parses a record's bytes (as written from a `StoredResource`).
pub(super) fn parse(record: &[u8]) -> serde_json::Result<StoredText<'_>> {
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
}
