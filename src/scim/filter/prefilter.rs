//! A byte-level prefilter for scans: from a filter, the ASCII strings that any
//! matching resource's serialized JSON must contain (compared ASCII-caselessly), so
//! a scan can reject most records without parsing them. It may only ever reject a
//! record that [`matches`](super::matches) would reject too; survivors go through the
//! exact evaluator. Knows the filter tree and the schema, nothing of storage: it
//! reads the bytes `serde_json` writes for a resource (or any object holding it).
//!
//! Why it is sound. `eq`, `co`, `sw` and `ew` on a string compare the attribute's
//! text (or a number's / boolean's text, as `serde_json` writes it) with the literal,
//! caselessly (NFC + full case folding) unless the attribute is caseExact; each
//! implies that the text contains the literal. When the record's bytes are ASCII and
//! hold no `\` (so no JSON escape hides a character), every string of the record is
//! written verbatim, and for ASCII text the caseless form is the ASCII lowercase: a
//! matching record's bytes contain the literal ASCII-caselessly. A record with a
//! non-ASCII byte or an escape is never rejected (e.g. the Kelvin sign U+212A folds
//! to `k`, `\u0041` is `A`). dateTime `eq` compares instants (different texts can be
//! one instant) and booleans compare leniently, so neither yields a needle; nor does
//! `ne`, an ordering, `pr`, or anything under `not`. The admin page's `search`
//! compares search forms (case and diacritics folded): for an ASCII record that is
//! its ASCII lowercase, so the needle is the literal's search form.

use serde_json::Value;

use super::{resolve, CompareOp, Filter, Scope};
use crate::scim::schema::{AttrType, ResourceType};

/// What a record's bytes must contain for a filter to possibly match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefilter(Need);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    /// Nothing can be concluded from the bytes.
    Nothing,
    /// The bytes contain this ASCII string (stored lowercase), ASCII-caselessly.
    Text(Vec<u8>),
    All(Box<Need>, Box<Need>),
    Either(Box<Need>, Box<Need>),
}

impl Prefilter {
    /// The prefilter of `filter` over resources of `rt`; `None` when it would keep
    /// every record (no `eq`/`co`/`sw`/`ew` with a usable ASCII literal that every
    /// match must satisfy).
    pub fn new(filter: &Filter, rt: ResourceType) -> Option<Prefilter> {
        match need(filter, Scope::Resource(rt)) {
            Need::Nothing => None,
            n => Some(Prefilter(n)),
        }
    }

    /// False only when no resource serialized as `record` (JSON as `serde_json`
    /// writes it) can match the filter; true when it may.
    pub fn may_match(&self, record: &[u8]) -> bool {
        if !record.is_ascii() || memchr::memchr(b'\\', record).is_some() {
            return true;
        }
        let folded = record.to_ascii_lowercase();
        self.0.holds(&folded)
    }
}

impl Need {
    /// Whether `folded` (ASCII-lowercased bytes) satisfies the need.
    fn holds(&self, folded: &[u8]) -> bool {
        match self {
            Need::Nothing => true,
            Need::Text(t) => memchr::memmem::find(folded, t).is_some(),
            Need::All(a, b) => a.holds(folded) && b.holds(folded),
            Need::Either(a, b) => a.holds(folded) || b.holds(folded),
        }
    }
}

fn need(filter: &Filter, scope: Scope) -> Need {
    match filter {
        Filter::And(a, b) => match (need(a, scope), need(b, scope)) {
            (Need::Nothing, n) | (n, Need::Nothing) => n,
            (x, y) => Need::All(Box::new(x), Box::new(y)),
        },
        Filter::Or(a, b) => match (need(a, scope), need(b, scope)) {
            (Need::Nothing, _) | (_, Need::Nothing) => Need::Nothing,
            (x, y) => Need::Either(Box::new(x), Box::new(y)),
        },
        Filter::Not(_) | Filter::Present(_) => Need::Nothing,
        Filter::ValuePath { path, filter } => match resolve(scope, path) {
            // A value path matches when one element matches the inner filter, whose
            // values are part of the record.
            Ok(t) if t.sub.is_none() => need(filter, Scope::Element(t.def)),
            _ => Need::Nothing,
        },
        Filter::Compare { path, op, value } => {
            let (CompareOp::Eq | CompareOp::Co | CompareOp::Sw | CompareOp::Ew | CompareOp::Search) =
                op
            else {
                return Need::Nothing;
            };
            let Value::String(text) = value else {
                return Need::Nothing;
            };
            // A search compares search forms: for an ASCII record (the only kind
            // ever rejected) that is its lowercase, so it must contain the literal's
            // search form.
            let searched;
            let text = if *op == CompareOp::Search {
                searched = crate::scim::text::search_form(text).into_owned();
                &searched
            } else {
                text
            };
            let usable = !text.is_empty()
                && text
                    .bytes()
                    .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
            let leaf = resolve(scope, path).ok().and_then(|t| t.leaf());
            match leaf.map(|d| d.ty) {
                Some(AttrType::Boolean | AttrType::DateTime) | None => Need::Nothing,
                Some(_) if usable => Need::Text(text.to_ascii_lowercase().into_bytes()),
                Some(_) => Need::Nothing,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{matches, parse};
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Map};

    fn pre(f: &str) -> Option<Prefilter> {
        Prefilter::new(&parse(f).unwrap(), ResourceType::User)
    }

    fn bytes(v: Value) -> Vec<u8> {
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn a_record_without_the_literal_is_rejected_caselessly() {
        let p = pre(r#"title co "Engineer""#).unwrap();
        assert!(p.may_match(&bytes(json!({"title": "Senior ENGINEER"}))));
        assert!(!p.may_match(&bytes(json!({"title": "Accountant"}))));
    }

    #[test]
    fn non_ascii_or_escaped_records_are_always_kept() {
        let p = pre(r#"title co "k""#).unwrap();
        // The Kelvin sign folds to "k": the exact evaluator matches it.
        let kelvin = json!({"title": "\u{212A}"});
        assert!(matches(
            &parse(r#"title co "k""#).unwrap(),
            ResourceType::User,
            kelvin.as_object().unwrap()
        ));
        assert!(p.may_match(&bytes(kelvin)));
        assert!(p.may_match(br#"{"title":"\u004b"}"#));
    }

    #[test]
    fn filters_without_a_usable_literal_have_no_prefilter() {
        for f in [
            r#"title pr"#,
            r#"title ne "x""#,
            r#"title gt "x""#,
            r#"not (title co "x")"#,
            r#"title co "x" or title pr"#,
            r#"title co "é""#,
            r#"title co "a\"b""#,
            r#"title eq """#,
            r#"active eq "true""#,
            r#"meta.lastModified eq "2026-01-01T00:00:00Z""#,
            r#"title eq null"#,
        ] {
            assert_eq!(pre(f), None, "{f}");
        }
    }

    #[test]
    fn and_needs_both_or_needs_either() {
        let and = pre(r#"title co "eng" and displayName sw "bob""#).unwrap();
        assert!(!and.may_match(&bytes(json!({"title": "eng", "displayName": "al"}))));
        assert!(and.may_match(&bytes(json!({"title": "eng", "displayName": "Bob"}))));
        let or = pre(r#"title co "eng" or emails[value ew "@x.org"]"#).unwrap();
        assert!(or.may_match(&bytes(json!({"emails": [{"value": "a@X.org"}]}))));
        assert!(!or.may_match(&bytes(json!({"emails": [{"value": "a@y.org"}]}))));
    }

    // The property: whatever the record and filter, a record the exact evaluator
    // matches is never rejected. Texts mix ASCII of both cases with characters that
    // JSON escapes, that fold to ASCII (Kelvin sign, long s, ß, İ), and combining marks.
    fn pieces() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "k", "K", "s", "ss", "i", "E", "\u{212A}", "\u{17F}", "\u{DF}", "\u{130}", "\u{E9}",
            "e\u{301}", "\"", "\\", "\n", "1", "true",
        ])
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(pieces(), 0..4).prop_map(|v| v.concat())
    }

    fn literal() -> impl Strategy<Value = Value> {
        prop_oneof![
            8 => prop::collection::vec(pieces(), 1..3).prop_map(|v| Value::String(v.concat())),
            1 => Just(Value::Null),
            1 => Just(json!(1)),
            1 => Just(json!(true)),
        ]
    }

    fn path() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "title",
            "displayName",
            "name.givenName",
            "emails",
            "emails.value",
            "active",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
        ])
    }

    fn op() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["eq", "co", "co", "sw", "ew", "ne", "gt", "search"])
    }

    /// `attr op value`; `search` (the admin page's, which has no filter text) is
    /// parsed as `co` and turned into `CompareOp::Search`.
    fn compare(p: &str, o: &str, v: &Value) -> Filter {
        let written = if o == "search" { "co" } else { o };
        let mut f = parse(&format!("{p} {written} {v}")).unwrap();
        if let (Filter::Compare { op, .. }, "search") = (&mut f, o) {
            *op = CompareOp::Search;
        }
        f
    }

    fn leaf() -> impl Strategy<Value = Filter> {
        (path(), op(), literal()).prop_map(|(p, o, v)| compare(p, o, &v))
    }

    fn filter() -> impl Strategy<Value = Filter> {
        let element =
            (prop::sample::select(vec!["value", "type"]), op(), literal()).prop_map(|(p, o, v)| {
                Filter::ValuePath {
                    path: crate::scim::path::AttrPath::parse("emails").unwrap(),
                    filter: Box::new(compare(p, o, &v)),
                }
            });
        prop_oneof![leaf(), element].prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Filter::And(Box::new(a), Box::new(b))),
                (inner.clone(), inner.clone())
                    .prop_map(|(a, b)| Filter::Or(Box::new(a), Box::new(b))),
                inner.prop_map(|a| Filter::Not(Box::new(a))),
            ]
        })
    }

    fn user() -> impl Strategy<Value = Map<String, Value>> {
        (text(), text(), text(), text(), text(), any::<bool>(), text()).prop_map(
            |(title, display, given, email, kind, active, dept)| {
                let v = json!({
                    "userName": format!("{given}@x"),
                    "title": title,
                    "displayName": display,
                    "name": {"givenName": given},
                    "emails": [{"value": email, "type": kind}, {"value": "b@y.org"}],
                    "active": active,
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": dept},
                });
                v.as_object().unwrap().clone()
            },
        )
    }

    fn never_rejects_a_match(f: &Filter, u: &Map<String, Value>) -> Result<(), TestCaseError> {
        if matches(f, ResourceType::User, u) {
            if let Some(p) = Prefilter::new(f, ResourceType::User) {
                let record = serde_json::to_vec(u).unwrap();
                prop_assert!(p.may_match(&record), "{f} rejected {u:?}");
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_rejects_a_record_the_exact_evaluator_matches(f in filter(), u in user()) {
            never_rejects_a_match(&f, &u)?;
        }

        // One comparison at a time meets the texts that fold to ASCII far more often.
        #[test]
        fn never_rejects_a_record_one_comparison_matches(f in leaf(), u in user()) {
            never_rejects_a_match(&f, &u)?;
        }
    }

    /// The property is not vacuous: over ASCII records the prefilter rejects some.
    #[test]
    fn the_prefilter_rejects_records_that_cannot_match() {
        let p = pre(r#"title co "Eng" and emails[type eq "work"]"#).unwrap();
        assert!(!p.may_match(&bytes(
            json!({"title": "Engineer", "emails": [{"type": "home"}]})
        )));
    }
}
