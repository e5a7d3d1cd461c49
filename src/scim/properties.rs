//! Property tests of the SCIM core (issue 11, "proptest for filter round-trips and
//! PATCH invariants"): generated filters, resources and PATCH operations checked
//! against rules that hold for every input, not for a few examples. Bounded in case
//! count so the module runs in seconds in the normal `cargo test`. Owns no
//! behaviour; knows only the core's public functions.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::filter::{self, CompareOp, Filter};
use super::patch;
use super::path::AttrPath;
use super::resource::normalize;
use super::schema::ResourceType;
use super::text::caseless;

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Shrunk failures are printed; nothing is written next to the sources.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---- generators --------------------------------------------------------------------

fn attr_name() -> impl Strategy<Value = String> {
    prop_oneof![
        // Real names in odd case, and names no schema has (filters parse either).
        prop::sample::select(vec![
            "userName", "USERNAME", "title", "emails", "members", "value", "type", "primary",
            "name", "not", "and", "or", "pr", "eq", "$ref",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z][a-zA-Z0-9_-]{0,12}",
    ]
}

fn attr_path() -> impl Strategy<Value = AttrPath> {
    let urn = prop::option::weighted(
        0.2,
        prop::sample::select(vec![ENTERPRISE, "urn:example:params:ext"]).prop_map(str::to_owned),
    );
    (urn, attr_name(), prop::option::weighted(0.3, attr_name()))
        .prop_map(|(urn, attr, sub)| AttrPath { urn, attr, sub })
}

fn compare_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        // Any text, grammar characters, quotes, backslashes and controls included.
        any::<String>().prop_map(Value::String),
        "[\"\\\\()\\[\\] a-z]{0,8}".prop_map(Value::String),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ]
}

fn compare_op() -> impl Strategy<Value = CompareOp> {
    prop::sample::select(vec![
        CompareOp::Eq,
        CompareOp::Ne,
        CompareOp::Co,
        CompareOp::Sw,
        CompareOp::Ew,
        CompareOp::Gt,
        CompareOp::Ge,
        CompareOp::Lt,
        CompareOp::Le,
    ])
}

/// `and`, `or` and `not` over filters from `inner`.
fn combined(inner: BoxedStrategy<Filter>) -> impl Strategy<Value = Filter> {
    prop_oneof![
        (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::And(a.into(), b.into())),
        (inner.clone(), inner.clone()).prop_map(|(a, b)| Filter::Or(a.into(), b.into())),
        inner.prop_map(|f| Filter::Not(f.into())),
    ]
}

/// Filters without value paths (what may appear inside `attr[...]`).
fn plain_filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        (attr_path(), compare_op(), compare_value())
            .prop_map(|(path, op, value)| Filter::Compare { path, op, value }),
        attr_path().prop_map(Filter::Present),
    ];
    leaf.prop_recursive(4, 24, 2, combined)
}

fn any_filter() -> impl Strategy<Value = Filter> {
    let leaf = prop_oneof![
        3 => plain_filter(),
        // An attribute named `not` before `[` reads as the keyword; no schema has one.
        1 => (attr_path().prop_filter("`not[`", |p| p.attr != "not"), plain_filter())
            .prop_map(|(path, f)| Filter::ValuePath { path, filter: f.into() }),
    ];
    leaf.prop_recursive(3, 16, 2, combined)
}

fn email() -> impl Strategy<Value = Value> {
    (
        "[a-z]{1,6}@example\\.(com|org)",
        prop::option::of(prop::sample::select(vec!["work", "home", "other"])),
        prop::option::of(prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            prop::sample::select(vec!["True", "false", "FALSE"]).prop_map(Value::from),
        ]),
    )
        .prop_map(|(value, t, primary)| {
            let mut e = json!({ "value": value });
            if let Some(t) = t {
                e["type"] = json!(t);
            }
            if let Some(p) = primary {
                e["primary"] = p;
            }
            e
        })
}

/// User bodies as IdPs send them: odd attribute case, boolean strings, one object
/// where a list is expected, repeated values, the enterprise extension.
fn user_body() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["userName", "USERNAME", "username"]),
        "[a-zA-Z0-9.@]{1,16}",
        prop::collection::vec(email(), 0..5),
        any::<bool>(),
        prop::option::of("[ -~]{0,12}"),
        prop::option::of(prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            prop::sample::select(vec!["True", "False", "true"]).prop_map(Value::from),
        ]),
        prop::option::of(("[0-9]{1,6}", any::<bool>())),
    )
        .prop_map(
            |(key, user_name, emails, single, title, active, employee)| {
                let mut body = Map::new();
                body.insert(key.into(), json!(user_name));
                if single && emails.len() == 1 {
                    body.insert("Emails".into(), emails[0].clone());
                } else if !emails.is_empty() {
                    body.insert("emails".into(), Value::Array(emails));
                }
                if let Some(t) = title {
                    body.insert("title".into(), json!(t));
                }
                if let Some(a) = active {
                    body.insert("active".into(), a);
                }
                if let Some((number, as_number)) = employee {
                    let v = if as_number {
                        json!(number.parse::<u64>().unwrap_or(0))
                    } else {
                        json!(number)
                    };
                    body.insert(ENTERPRISE.into(), json!({ "employeeNumber": v }));
                }
                Value::Object(body)
            },
        )
}

fn stored_user() -> impl Strategy<Value = Map<String, Value>> {
    user_body().prop_filter_map("a body the core refuses", |b| {
        normalize(ResourceType::User, &b).ok().map(|n| n.attrs)
    })
}

fn member_ids() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("u[0-9]{1,2}", 0..8)
}

fn group_with(members: &[String]) -> Map<String, Value> {
    let mut seen = std::collections::HashSet::new();
    let list: Vec<Value> = members
        .iter()
        .filter(|m| seen.insert(m.as_str()))
        .map(|m| json!({"value": m, "type": "User"}))
        .collect();
    let mut g = Map::new();
    g.insert("displayName".into(), json!("G"));
    g.insert("members".into(), Value::Array(list));
    g
}

fn ops(list: Value) -> Vec<patch::PatchOp> {
    patch::parse_request(&json!({"schemas": [patch::PATCH_OP_URN], "Operations": list}))
        .unwrap_or_else(|e| panic!("the generated request does not parse: {}", e.detail))
}

/// Values of each multi-valued attribute marked primary (RFC 7643 §2.4: at most one).
fn primaries(attrs: &Map<String, Value>) -> Vec<(String, usize)> {
    attrs
        .iter()
        .filter_map(|(k, v)| {
            let n = v
                .as_array()?
                .iter()
                .filter(|e| e.get("primary") == Some(&Value::Bool(true)))
                .count();
            Some((k.clone(), n))
        })
        .collect()
}

fn patch_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z]{1,6}".prop_map(Value::from),
        any::<bool>().prop_map(Value::Bool),
        email(),
        prop::collection::vec(email(), 0..3).prop_map(Value::Array),
        Just(json!({"title": "t", "id": "other", "meta": {"version": "W/\"9\""}})),
    ]
}

/// An `add` of a value to an attribute (no value filter) or to the resource.
fn plain_add() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(vec![
        "",
        "title",
        "name.givenName",
        "emails",
        "emails.primary",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    ]);
    (path, patch_value()).prop_map(|(path, value)| {
        let mut o = json!({ "op": "add", "value": value });
        if !path.is_empty() {
            o["path"] = json!(path);
        }
        o
    })
}

fn patch_op() -> impl Strategy<Value = Value> {
    let path = prop::sample::select(vec![
        "",
        "title",
        "userName",
        "name.givenName",
        "emails",
        "emails[type eq \"work\"]",
        "emails[type eq \"work\"].value",
        "emails[value co \"@\"].primary",
        "emails.primary",
        "id",
        "meta",
        "meta.version",
        "groups",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    ]);
    let value = prop_oneof![1 => Just(Value::Null), 5 => patch_value()];
    (
        prop::sample::select(vec!["add", "replace", "remove", "Replace"]),
        path,
        prop::option::weighted(0.85, value),
    )
        .prop_map(|(op, path, value)| {
            let mut o = json!({ "op": op });
            if !path.is_empty() {
                o["path"] = json!(path);
            }
            if let Some(v) = value {
                o["value"] = v;
            }
            o
        })
}

// ---- properties --------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    /// Rendering a filter and parsing the text gives the same filter back, whatever
    /// the strings hold (quotes, brackets, keywords as attribute names).
    #[test]
    fn filter_render_then_parse_is_the_same_filter(f in any_filter()) {
        let text = f.to_string();
        prop_assume!(text.len() <= filter::MAX_FILTER_LEN);
        let back = filter::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text}: {}", e.detail)))?;
        prop_assert_eq!(back, f, "{}", text);
    }

    /// Text that parses renders to a canonical form that parses to the same filter.
    #[test]
    fn parsed_text_renders_to_an_equivalent_filter(
        parts in prop::collection::vec(prop::sample::select(vec![
            "userName", "emails", "[", "]", "(", ")", " ", "type", "value", "eq", "co", "pr",
            "and", "or", "not", "\"x\"", "\"a\\\"b\"", "1", "-2.5", "true", "null", ".value",
            "members", "name.givenName", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
        ]), 1..16)
    ) {
        let text = parts.join(" ");
        if let Ok(f) = filter::parse(&text) {
            let rendered = f.to_string();
            let again = filter::parse(&rendered)
                .map_err(|e| TestCaseError::fail(format!("{text} → {rendered}: {}", e.detail)))?;
            prop_assert_eq!(again, f, "{} → {}", text, rendered);
        }
    }

    /// Normalising a stored resource changes nothing: the stored form is canonical,
    /// so a PUT of what GET returned, a PATCH result or an import is stored as is.
    #[test]
    fn normalisation_is_idempotent(body in user_body()) {
        if let Ok(first) = normalize(ResourceType::User, &body) {
            let second = normalize(ResourceType::User, &Value::Object(first.attrs.clone()))
                .map_err(|e| TestCaseError::fail(e.detail))?;
            prop_assert_eq!(&second.attrs, &first.attrs);
            prop_assert!(second.unknown.is_empty());
            for (attr, n) in primaries(&first.attrs) {
                prop_assert!(n <= 1, "{} has {} primary values", attr, n);
            }
        }
    }

    /// userName is caseExact false (RFC 7643 §4.1.1): a name in other ASCII case, in
    /// either Unicode normal form or case-folded is the same name, for the index key
    /// and for a filter.
    #[test]
    fn user_names_equal_under_case_and_normal_form_are_one_name(name in "\\PC{1,12}") {
        use unicode_normalization::UnicodeNormalization;
        let key = caseless(&name).into_owned();
        prop_assert_eq!(caseless(&key).into_owned(), key.clone(), "folding twice changes {:?}", name);
        let user = json!({"userName": name});
        for v in [
            name.to_ascii_uppercase(),
            name.to_ascii_lowercase(),
            name.nfd().collect::<String>(),
            name.nfc().collect::<String>(),
            key.clone(),
        ] {
            prop_assert_eq!(caseless(&v).into_owned(), key.clone(), "{:?} against {:?}", v, name);
            let f = filter::parse(&format!("userName eq {}", Value::String(v.clone()))).unwrap();
            prop_assert!(
                filter::matches(&f, ResourceType::User, user.as_object().unwrap()),
                "userName eq {:?} does not find {:?}", v, name
            );
        }
    }

    /// Adding what is already there changes nothing: applying the same `add` twice
    /// stores what applying it once does (IdPs resend). For adds of a value to an
    /// attribute or to the resource; an add through a value filter may change what the
    /// filter selects (RFC 7644 §3.5.2.1), and an add of `null` is a removal.
    #[test]
    fn add_twice_is_add_once(user in stored_user(), op in plain_add()) {
        let Ok(request) = patch::parse_request(
            &json!({"schemas": [patch::PATCH_OP_URN], "Operations": [op]}),
        ) else {
            return Ok(());
        };
        let mut once = user.clone();
        if patch::apply(ResourceType::User, &mut once, &request).is_ok() {
            let Ok(once) = normalize(ResourceType::User, &Value::Object(once)) else {
                return Ok(());
            };
            let mut twice = once.attrs.clone();
            patch::apply(ResourceType::User, &mut twice, &request)
                .map_err(|e| TestCaseError::fail(format!("the second add failed: {}", e.detail)))?;
            let twice = normalize(ResourceType::User, &Value::Object(twice))
                .map_err(|e| TestCaseError::fail(e.detail))?;
            prop_assert_eq!(twice.attrs, once.attrs);
        }
    }

    /// Group members: adding present members and removing absent ones, in either
    /// form IdPs send (Entra's value list, Okta's filter), are no-ops (issue 12 kind 8).
    #[test]
    fn member_add_of_present_and_remove_of_absent_change_nothing(
        present in member_ids(), absent in member_ids()
    ) {
        let group = group_with(&present);
        let absent: Vec<&String> = absent.iter().filter(|a| !present.contains(a)).collect();
        let mut requests = vec![
            json!([{"op": "add", "path": "members",
                    "value": present.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()}]),
            json!([{"op": "remove", "path": "members",
                    "value": absent.iter().map(|m| json!({"value": m})).collect::<Vec<_>>()}]),
        ];
        for a in &absent {
            requests.push(json!([{"op": "remove", "path": format!("members[value eq \"{a}\"]")}]));
        }
        // No `members` and an empty list are one state.
        let members = |g: &Map<String, Value>| g.get("members").cloned().unwrap_or(json!([]));
        for r in requests {
            let mut g = group.clone();
            patch::apply(ResourceType::Group, &mut g, &ops(r.clone()))
                .map_err(|e| TestCaseError::fail(format!("{r}: {}", e.detail)))?;
            prop_assert_eq!(members(&g), members(&group), "{}", r);
            prop_assert_eq!(&g["displayName"], &group["displayName"]);
        }
    }

    /// Whatever a PATCH does, its result is all or nothing, keeps at most one primary
    /// value per attribute, and never sets what the server owns (`id`, `meta`,
    /// `groups`).
    #[test]
    fn patch_results_keep_the_invariants(
        user in stored_user(), list in prop::collection::vec(patch_op(), 1..4)
    ) {
        let Ok(request) = patch::parse_request(
            &json!({"schemas": [patch::PATCH_OP_URN], "Operations": list.clone()}),
        ) else {
            return Ok(());
        };
        let mut r = user.clone();
        match patch::apply(ResourceType::User, &mut r, &request) {
            Err(_) => prop_assert_eq!(&r, &user, "a refused PATCH changed the user: {:?}", list),
            // What is stored is the normalised result (types are checked there).
            Ok(_) => {
                if let Ok(stored) = normalize(ResourceType::User, &Value::Object(r)) {
                    for (attr, n) in primaries(&stored.attrs) {
                        prop_assert!(n <= 1, "{} has {} primary values after {:?}", attr, n, list);
                    }
                    for owned in ["id", "meta", "groups"] {
                        prop_assert!(!stored.attrs.contains_key(owned), "{} stored after {:?}", owned, list);
                    }
                }
            }
        }
    }
}
