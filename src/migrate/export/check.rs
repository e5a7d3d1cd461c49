//! The line check of `verify`: decides whether one line of an export file is a
//! record of the format and what kind, without building the record. Parsing every
//! record's attributes into a `serde_json::Value` tree (through serde's buffered
//! content for the tagged `Line`) was most of the 12 s the `export` command spent
//! checking a 1M-user file (issue 10). Knows the line layout `write_export` writes
//! and nothing of the file around a line.
//!
//! A User, Group or membership line that starts the way `write_export` starts one
//! (`{"type":"User",` …) is parsed as a plain struct of the same fields, with the
//! attributes walked, not kept. Every other line, and every line the fast parse
//! refuses, is parsed as `super::Line`, so an error names exactly what the format's
//! own type finds; the fast parse accepts only what that type accepts (walking a
//! value with `deserialize_any` parses numbers and strings as a `Value` does), which
//! `fast_and_full_parses_agree` checks.

use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::Manifest;
use crate::scim::resource::Meta;

/// What `verify` needs to know of a line.
pub(super) enum Line {
    Manifest(Manifest),
    User,
    Group,
    Membership { member_type: String },
    Trailer { sha256: String, lines: u64 },
}

/// Parses one line (without its newline).
pub(super) fn parse(text: &[u8]) -> serde_json::Result<Line> {
    if let Some(line) = fast(text) {
        return Ok(line);
    }
    Ok(match serde_json::from_slice::<super::Line>(text)? {
        super::Line::Manifest(m) => Line::Manifest(m),
        super::Line::User(_) => Line::User,
        super::Line::Group(_) => Line::Group,
        super::Line::Membership { member_type, .. } => Line::Membership { member_type },
        super::Line::Trailer { sha256, lines } => Line::Trailer { sha256, lines },
    })
}

/// The fast parse of a record line as `write_export` writes it; `None` for any
/// other line or any doubt (the full parse then decides and words the error).
fn fast(text: &[u8]) -> Option<Line> {
    // Validated once, so that the parse from `str` is that of a `Value` (which
    // validates every string it reads) whatever it skips.
    let text = std::str::from_utf8(text).ok()?;
    if text.starts_with(r#"{"type":"User","#) {
        serde_json::from_str::<RecordLine>(text).ok()?;
        Some(Line::User)
    } else if text.starts_with(r#"{"type":"Group","#) {
        serde_json::from_str::<RecordLine>(text).ok()?;
        Some(Line::Group)
    } else if text.starts_with(r#"{"type":"membership","#) {
        let m: MembershipLine = serde_json::from_str(text).ok()?;
        Some(Line::Membership {
            member_type: m.member_type,
        })
    } else {
        None
    }
}

/// `super::Record` with its tag, the attributes walked instead of kept.
#[derive(Deserialize)]
struct RecordLine {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    #[serde(rename = "id")]
    _id: String,
    #[serde(rename = "meta")]
    _meta: Meta,
    #[serde(rename = "attributes")]
    _attributes: Object,
}

/// `super::Line::Membership` with its tag.
#[derive(Deserialize)]
struct MembershipLine {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    #[serde(rename = "group")]
    _group: String,
    #[serde(rename = "member")]
    _member: String,
    #[serde(rename = "memberType")]
    member_type: String,
    #[serde(rename = "display", default)]
    _display: Option<String>,
}

/// A JSON object whose entries are walked as a `serde_json::Map` would read them.
struct Object;

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Object, D::Error> {
        d.deserialize_map(Walk).map(|_| Object)
    }
}

/// Any JSON value, read (`deserialize_any`) as `serde_json::Value` reads it.
struct AnyValue;

impl<'de> Deserialize<'de> for AnyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AnyValue, D::Error> {
        d.deserialize_any(Walk).map(|_| AnyValue)
    }
}

/// An object key, read as a string.
struct Key;

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        d.deserialize_str(Walk).map(|_| Key)
    }
}

/// serde_json's `Value` (with its `raw_value` feature) treats this key as the
/// marker of a raw value; a key spelled so is left to the full parse.
const RAW_VALUE_KEY: &str = "$serde_json::private::RawValue";

/// Accepts every value a `Value` accepts and keeps nothing.
struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        if s == RAW_VALUE_KEY {
            return Err(E::custom("reserved key"));
        }
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<AnyValue>()?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key::<Key>()?.is_some() {
            map.next_value::<AnyValue>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> bool {
        serde_json::from_str::<super::super::Line>(text).is_ok()
    }

    /// Lines of every kind `write_export` writes, and near misses of each: the fast
    /// parse accepts exactly what the format's type accepts.
    #[test]
    fn fast_and_full_parses_agree() {
        let meta = r#""meta":{"created":"2026-01-01T00:00:00Z","lastModified":"2026-01-01T00:00:00Z","version":3}"#;
        let cases = [
            format!(
                r#"{{"type":"User","id":"u1",{meta},"attributes":{{"userName":"a","emails":[{{"value":"a@x","primary":true}}],"n":1.5e3,"z":null}}}}"#
            ),
            format!(
                r#"{{"type":"Group","id":"g\u00e91",{meta},"attributes":{{"displayName":"G"}}}}"#
            ),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{}},"extra":[1,2]}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":[]}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":null}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta}}}"#),
            format!(r#"{{"type":"User","id":7,{meta},"attributes":{{}}}}"#),
            format!(r#"{{"type":"User","type":"Group","id":"u1",{meta},"attributes":{{}}}}"#),
            format!(r#"{{"type":"User","id":"u1","id":"u2",{meta},"attributes":{{}}}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":1e400}}}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":"\ud800"}}}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":"\x"}}}}"#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":{{"b":[1,}}}}}}"#),
            format!(
                r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":{{"$serde_json::private::RawValue":"[1"}}}}}}"#
            ),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":1}}}} "#),
            format!(r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":1}}}}x"#),
            r#"{"type":"User","id":"u1","meta":{"created":"x","lastModified":"y","version":-1},"attributes":{}}"#
                .to_owned(),
            r#"{"type":"User","id":"u1","meta":{"created":"x","lastModified":"y","version":1.0},"attributes":{}}"#
                .to_owned(),
            format!(
                r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":"{}"}}}}"#,
                "[".repeat(200)
            ),
            format!(
                r#"{{"type":"User","id":"u1",{meta},"attributes":{{"a":{}1{}}}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
            r#"{"type":"membership","group":"g","member":"u","memberType":"User"}"#.to_owned(),
            r#"{"type":"membership","group":"g","member":"u","memberType":"User","display":"Ann"}"#
                .to_owned(),
            r#"{"type":"membership","group":"g","member":"u","memberType":"User","display":null}"#
                .to_owned(),
            r#"{"type":"membership","group":"g","member":"u","memberType":"Robot"}"#.to_owned(),
            r#"{"type":"membership","group":"g","memberType":"User"}"#.to_owned(),
            r#"{"type":"membership","group":"g","member":"u","memberType":"User","display":5}"#
                .to_owned(),
            r#"{"type":"membership","group":"g","member":"u","member":"v","memberType":"User"}"#
                .to_owned(),
        ];
        for text in &cases {
            let fast_ok = fast(text.as_bytes()).is_some();
            assert!(
                !fast_ok || full(text),
                "fast accepts what the format refuses: {text}"
            );
            assert_eq!(parse(text.as_bytes()).is_ok(), full(text), "{text}");
        }
        // The well-formed lines do take the fast path.
        for text in &cases[..3] {
            assert!(fast(text.as_bytes()).is_some(), "{text}");
        }
        assert!(fast(cases[20].as_bytes()).is_some());
        assert!(fast(cases[21].as_bytes()).is_some());
    }

    #[test]
    fn invalid_utf8_is_refused_with_the_formats_error() {
        let mut line = br#"{"type":"User","id":"u1","meta":{"created":"a","lastModified":"b","version":1},"attributes":{"a":""#.to_vec();
        line.extend_from_slice(&[0xff, b'"', b'}', b'}']);
        assert!(fast(&line).is_none());
        assert!(parse(&line).is_err());
    }
}
