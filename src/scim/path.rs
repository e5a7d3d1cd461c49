//! Attribute paths (RFC 7644 §3.10 `attrPath`): an optional schema URN, an attribute
//! name and an optional sub-attribute, as used in `attributes=`, `sortBy`, filters
//! and PATCH paths. Value paths with filters (`emails[type eq "work"]`) are parsed by
//! `filter.rs`, which builds on this.

use super::error::{ScimError, ScimResult};
use super::schema::{all_schemas, is_attr_name, AttrRef, ResourceType};

/// `[urn ":"] attr ["." sub]`, names kept as written (matching is case-insensitive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN as written, when the path was qualified with one.
    pub urn: Option<String>,
    /// The attribute name as written (`userName`, `name`); empty when the path is a bare
    /// schema URN naming a whole extension object.
    pub attr: String,
    /// The sub-attribute after `.` as written (`givenName` in `name.givenName`); `None` for a
    /// top-level attribute.
    pub sub: Option<String>,
}

/// A path that names a whole extension schema (`attributes=urn:…:enterprise:2.0:User`).
fn known_urn_prefix(s: &str) -> Option<&'static str> {
    all_schemas()
        .iter()
        .map(|s| s.id)
        .filter(|urn| {
            s.len() >= urn.len()
                && s.is_char_boundary(urn.len())
                && s[..urn.len()].eq_ignore_ascii_case(urn)
        })
        .max_by_key(|urn| urn.len())
}

impl AttrPath {
    /// Parses an attribute path. A bare schema URN yields `attr == ""` (the whole
    /// extension object), which callers that need an attribute reject. An unknown
    /// URN is kept; the attribute is what follows its last `:`. Errors: 400
    /// `invalidPath` for an empty path, or when the attribute or sub-attribute is not
    /// an ATTRNAME (RFC 7644 §3.10: a letter, then letters, digits, `-` or `_`).
    pub fn parse(s: &str) -> ScimResult<AttrPath> {
        let s = s.trim();
        if s.is_empty() {
            return Err(ScimError::invalid_path("empty attribute path"));
        }
        let (urn, rest) =
            if s.len() > 4 && s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
                if let Some(urn) = known_urn_prefix(s) {
                    if s.len() == urn.len() {
                        return Ok(AttrPath {
                            urn: Some(s.to_owned()),
                            attr: String::new(),
                            sub: None,
                        });
                    }
                    if s.as_bytes()[urn.len()] != b':' {
                        return Err(ScimError::invalid_path(format!(
                            "invalid attribute path \"{s}\""
                        )));
                    }
                    (Some(s[..urn.len()].to_owned()), &s[urn.len() + 1..])
                } else {
                    // An unknown schema: the attribute is what follows the last colon.
                    match s.rfind(':') {
                        Some(i) => (Some(s[..i].to_owned()), &s[i + 1..]),
                        None => unreachable_path(s)?,
                    }
                }
            } else {
                (None, s)
            };
        let (attr, sub) = match rest.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (rest, None),
        };
        if !is_attr_name(attr) || sub.is_some_and(|b| !is_attr_name(b)) {
            return Err(ScimError::invalid_path(format!(
                "invalid attribute path \"{s}\""
            )));
        }
        Ok(AttrPath {
            urn,
            attr: attr.to_owned(),
            sub: sub.map(str::to_owned),
        })
    }

    /// Resolves the path against a resource type's schemas; `None` when no such
    /// attribute exists there.
    pub fn resolve(&self, rt: ResourceType) -> Option<AttrRef> {
        rt.find_attr(self.urn.as_deref(), &self.attr)
    }

    /// True when the path names a whole extension schema object.
    pub fn is_whole_schema(&self) -> bool {
        self.attr.is_empty()
    }
}

fn unreachable_path<T>(s: &str) -> ScimResult<T> {
    Err(ScimError::invalid_path(format!(
        "invalid attribute path \"{s}\""
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_simple_and_sub_attribute_paths() {
        let p = AttrPath::parse("name.givenName").unwrap();
        assert_eq!(
            (p.urn, p.attr.as_str(), p.sub.as_deref()),
            (None, "name", Some("givenName"))
        );
        let p = AttrPath::parse("userName").unwrap();
        assert_eq!(p.sub, None);
    }

    #[test]
    fn parses_urn_qualified_paths() {
        let p = AttrPath::parse(
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        )
        .unwrap();
        assert_eq!(
            p.urn.as_deref(),
            Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
        );
        assert_eq!(
            (p.attr.as_str(), p.sub.as_deref()),
            ("manager", Some("value"))
        );
        let p = AttrPath::parse("urn:ietf:params:scim:schemas:core:2.0:User:userName").unwrap();
        assert_eq!(p.attr, "userName");
        let r = p.resolve(ResourceType::User).unwrap();
        assert_eq!(r.def.name, "userName");
    }

    #[test]
    fn whole_extension_path() {
        let p =
            AttrPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User").unwrap();
        assert!(p.is_whole_schema());
    }

    #[test]
    fn rejects_garbage() {
        assert!(AttrPath::parse("").is_err());
        assert!(AttrPath::parse("a b").is_err());
        assert!(AttrPath::parse("1abc").is_err());
        assert!(AttrPath::parse("name.").is_err());
    }

    #[test]
    fn non_ascii_input_is_an_error_not_a_panic() {
        assert!(AttrPath::parse("a\u{e9}\u{e9}").is_err());
        assert!(AttrPath::parse("urn\u{e9}:x").is_err());
    }
}
