//! List queries (RFC 7644 §3.4.2): parameters, the index plan for a filter, sorting
//! and paging. Which filters are answered from an index is decided here, purely; the
//! store executes the lookups.
//!
//! Indexed: `eq` on `id`, `userName`, `externalId`, `emails.value` (or `emails`) and
//! Group `displayName`, and `and`/`or` combinations where the indexed side narrows
//! the candidates. Everything else scans the resource type, evaluating the filter on
//! each resource.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::filter::{CompareOp, Filter};
use super::path::AttrPath;
use super::schema::{AttrType, ResourceType};

/// An index lookup that yields candidate ids (the resources' `id` strings); each
/// candidate is still checked against the whole filter. Built by [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The resource with this `id` (`id eq "…"`).
    Id(String),
    /// The User with this `userName` (`userName eq "…"`), compared by its caseless form as
    /// `userName` is not `caseExact` (RFC 7643 §4.1).
    UserName(String),
    /// The resources with this `externalId` (`externalId eq "…"`).
    ExternalId(String),
    /// The Groups with this `displayName` (`displayName eq "…"` on `/Groups`).
    GroupName(String),
    /// The Users with an `emails` value equal to this address (`emails eq "…"` or
    /// `emails.value eq "…"`).
    Email(String),
    /// Ids in every one of these.
    All(Vec<Lookup>),
    /// Ids in any of these.
    Any(Vec<Lookup>),
}

/// Candidate ids from an index, or `None` when the filter needs a scan.
pub fn plan(filter: &Filter, rt: ResourceType) -> Option<Lookup> {
    match filter {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(v),
        } => {
            let found = path.resolve(rt)?;
            if found.schema.is_some() {
                return None;
            }
            let name = found.def.name;
            match (rt, name, path.sub.as_deref()) {
                (_, "id", None) => Some(Lookup::Id(v.clone())),
                (_, "externalId", None) => Some(Lookup::ExternalId(v.clone())),
                (ResourceType::User, "userName", None) => Some(Lookup::UserName(v.clone())),
                (ResourceType::User, "emails", sub)
                    if sub.is_none_or(|s| s.eq_ignore_ascii_case("value")) =>
                {
                    Some(Lookup::Email(v.clone()))
                }
                (ResourceType::Group, "displayName", None) => Some(Lookup::GroupName(v.clone())),
                _ => None,
            }
        }
        Filter::And(a, b) => match (plan(a, rt), plan(b, rt)) {
            (Some(x), Some(y)) => Some(Lookup::All(vec![x, y])),
            (Some(x), None) | (None, Some(x)) => Some(x),
            (None, None) => None,
        },
        Filter::Or(a, b) => match (plan(a, rt), plan(b, rt)) {
            (Some(x), Some(y)) => Some(Lookup::Any(vec![x, y])),
            _ => None,
        },
        _ => None,
    }
}

/// Does the filter refer to the top-level attribute `name` (e.g. `members`)?
pub fn mentions(filter: &Filter, name: &str) -> bool {
    match filter {
        Filter::Compare { path, .. } | Filter::Present(path) | Filter::ValuePath { path, .. } => {
            path.attr.eq_ignore_ascii_case(name)
        }
        Filter::And(a, b) | Filter::Or(a, b) => mentions(a, name) || mentions(b, name),
        Filter::Not(a) => mentions(a, name),
    }
}

/// The top-level key of a resource object that holds the attribute `path` names: the
/// attribute's canonical name, or the URN of the extension schema holding it.
/// `None` when the path does not resolve for `rt`.
pub fn top_level_key(rt: ResourceType, path: &AttrPath) -> Option<&'static str> {
    let found = path.resolve(rt)?;
    Some(match found.schema {
        Some(ext) => ext.id,
        None => found.def.name,
    })
}

/// The top-level keys whose values decide `filter` (see [`top_level_key`]); a
/// resource object holding only these keys (matched case-insensitively) gives the
/// same [`filter::matches`](super::filter::matches) answer as the whole resource.
/// `None` when a path does not resolve (then nothing may be left out).
pub fn filter_keys(filter: &Filter, rt: ResourceType) -> Option<Vec<&'static str>> {
    let mut keys = Vec::new();
    fn walk(f: &Filter, rt: ResourceType, keys: &mut Vec<&'static str>) -> Option<()> {
        match f {
            Filter::Compare { path, .. }
            | Filter::Present(path)
            | Filter::ValuePath { path, .. } => {
                let k = top_level_key(rt, path)?;
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            Filter::And(a, b) | Filter::Or(a, b) => {
                walk(a, rt, keys)?;
                walk(b, rt, keys)?;
            }
            Filter::Not(a) => walk(a, rt, keys)?,
        }
        Some(())
    }
    walk(filter, rt, &mut keys)?;
    Some(keys)
}

/// Always true / always false, written in the filter language (`id` is always
/// present), so a resolved membership check stays a `Filter`.
fn constant(v: bool) -> Filter {
    let t = Filter::Present(AttrPath {
        urn: None,
        attr: "id".into(),
        sub: None,
    });
    if v {
        t
    } else {
        Filter::Not(Box::new(t))
    }
}

/// Replaces `members[value eq "X"]` (Entra's membership check) with the answer of
/// `is_member(X)`, so a group's members need not be loaded to evaluate it. `None`
/// when the filter uses `members` in any other way.
pub fn resolve_member_checks(
    filter: &Filter,
    is_member: &mut dyn FnMut(&str) -> bool,
) -> Option<Filter> {
    Some(match filter {
        Filter::ValuePath {
            path,
            filter: inner,
        } if path.attr.eq_ignore_ascii_case("members") && path.sub.is_none() => {
            match inner.as_ref() {
                Filter::Compare {
                    path: p,
                    op: CompareOp::Eq,
                    value: Value::String(id),
                } if p.attr.eq_ignore_ascii_case("value") && p.sub.is_none() => {
                    constant(is_member(id))
                }
                _ => return None,
            }
        }
        f @ (Filter::Compare { path, .. }
        | Filter::Present(path)
        | Filter::ValuePath { path, .. }) => {
            if path.attr.eq_ignore_ascii_case("members") {
                return None;
            }
            f.clone()
        }
        Filter::And(a, b) => Filter::And(
            Box::new(resolve_member_checks(a, is_member)?),
            Box::new(resolve_member_checks(b, is_member)?),
        ),
        Filter::Or(a, b) => Filter::Or(
            Box::new(resolve_member_checks(a, is_member)?),
            Box::new(resolve_member_checks(b, is_member)?),
        ),
        Filter::Not(a) => Filter::Not(Box::new(resolve_member_checks(a, is_member)?)),
    })
}

/// Validated list parameters of a query (RFC 7644 §3.4.2: filter, sorting, paging by
/// index), built by [`ListParams::parse`].
#[derive(Debug, Clone)]
pub struct ListParams {
    /// The parsed `filter` parameter (RFC 7644 §3.4.2.2); `None` when absent or blank (all
    /// resources of the type).
    pub filter: Option<Filter>,
    /// The `sortBy` attribute (RFC 7644 §3.4.2.3); `None` keeps the store's order.
    pub sort_by: Option<AttrPath>,
    /// `sortOrder=descending`; ascending (`false`) is the default (RFC 7644 §3.4.2.3).
    pub descending: bool,
    /// 1-based.
    pub start_index: usize,
    /// The `count` parameter: most resources in the page, from 0 to the configured maximum
    /// page size (RFC 7644 §3.4.2.4 clamps a negative count to 0; a larger one is cut to the
    /// maximum). Absent: the configured default page size.
    pub count: usize,
}

impl ListParams {
    /// From raw parameter values (query string or `.search` body, RFC 7644 §3.4.2,
    /// §3.4.3); blank values count as absent, `startIndex` below 1 becomes 1.
    /// Errors: 400 `invalidFilter` when the filter does not parse; 400 `invalidValue`
    /// for an unparsable `sortBy`, a `sortOrder` other than `ascending` or
    /// `descending` (any case), or a `startIndex` or `count` that is not an integer.
    pub fn parse(
        filter: Option<&str>,
        sort_by: Option<&str>,
        sort_order: Option<&str>,
        start_index: Option<&str>,
        count: Option<&str>,
        default_count: usize,
        max_count: usize,
    ) -> ScimResult<ListParams> {
        let filter = match filter.map(str::trim) {
            Some(f) if !f.is_empty() => Some(super::filter::parse(f)?),
            _ => None,
        };
        let sort_by = match sort_by.map(str::trim) {
            Some(s) if !s.is_empty() => Some(
                AttrPath::parse(s)
                    .map_err(|e| ScimError::invalid_value(format!("sortBy: {}", e.detail)))?,
            ),
            _ => None,
        };
        let descending = match sort_order.map(str::trim) {
            None | Some("") => false,
            Some(o) if o.eq_ignore_ascii_case("ascending") => false,
            Some(o) if o.eq_ignore_ascii_case("descending") => true,
            Some(o) => {
                return Err(ScimError::invalid_value(format!(
                    "sortOrder must be \"ascending\" or \"descending\", not \"{o}\""
                )))
            }
        };
        // RFC 7644 §3.4.2.4: startIndex < 1 is treated as 1; a negative count as 0.
        let start_index = match start_index.map(str::trim) {
            None | Some("") => 1,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| {
                    ScimError::invalid_value(format!("startIndex must be an integer, not \"{s}\""))
                })?
                .clamp(1, i64::from(u32::MAX)) as usize,
        };
        let count = match count.map(str::trim) {
            None | Some("") => default_count,
            Some(s) => s
                .parse::<i64>()
                .map_err(|_| {
                    ScimError::invalid_value(format!("count must be an integer, not \"{s}\""))
                })?
                .clamp(0, max_count as i64) as usize,
        };
        Ok(ListParams {
            filter,
            sort_by,
            descending,
            start_index,
            count,
        })
    }
}

/// Checks that `sortBy` names an attribute a resource of one of `types` can have
/// (RFC 7644 §3.4.2.3: "the attribute whose value SHALL be used to order the returned
/// responses"; a complex attribute must be named by a sub-attribute, e.g.
/// `name.familyName`). Names are matched caselessly and may carry the schema URN
/// (`urn:ietf:params:scim:schemas:core:2.0:User:userName`); a complex attribute with
/// a `value` sub-attribute (`emails`) sorts by it. Ok when it resolves in any of
/// `types` (a root search sorts Users and Groups together).
/// Errors: 400 `invalidValue` naming the attribute, for an attribute no schema of
/// `types` defines, a sub-attribute its parent does not have, or a complex attribute
/// without `value` named without a sub-attribute. Silently ignoring an unknown
/// `sortBy` would return an unsorted page the client takes for a sorted one.
pub fn check_sort_by(path: &AttrPath, types: &[ResourceType]) -> ScimResult<()> {
    let mut why = None;
    for rt in types {
        let Some(found) = path.resolve(*rt) else {
            continue;
        };
        let def = found.def;
        why = match (path.sub.as_deref(), def.ty) {
            (Some(sub), AttrType::Complex) if def.sub(sub).is_some() => return Ok(()),
            (Some(sub), AttrType::Complex) => {
                Some(format!("\"{}\" has no sub-attribute \"{sub}\"", def.name))
            }
            (Some(_), _) => Some(format!(
                "\"{}\" is not complex: it has no sub-attributes",
                def.name
            )),
            (None, AttrType::Complex) if def.sub("value").is_none() => Some(format!(
                "\"{}\" is complex: name one of its sub-attributes (e.g. {}.{})",
                def.name,
                def.name,
                def.sub_attributes.first().map_or("value", |s| s.name)
            )),
            (None, _) => return Ok(()),
        };
    }
    let names: Vec<&str> = types.iter().map(|t| t.name()).collect();
    Err(ScimError::invalid_value(format!(
        "sortBy \"{path}\": {} (RFC 7644 §3.4.2.3)",
        why.unwrap_or_else(|| format!("no such attribute in the {} schemas", names.join(" or ")))
    )))
}

/// The value a resource sorts by: the attribute (or sub-attribute) named by `path`;
/// for a multi-valued attribute, its primary value or else its first.
fn sort_key<'a>(
    rt: ResourceType,
    resource: &'a Map<String, Value>,
    path: &AttrPath,
) -> Option<&'a Value> {
    let found = path.resolve(rt)?;
    let holder = match found.schema {
        Some(ext) => resource.get(ext.id)?.as_object()?,
        None => resource,
    };
    let mut v = holder.get(found.def.name)?;
    if let Value::Array(items) = v {
        v = items
            .iter()
            .find(|i| i.get("primary") == Some(&Value::Bool(true)))
            .or_else(|| items.first())?;
    }
    let sub = path
        .sub
        .as_deref()
        .or(if found.def.ty == AttrType::Complex {
            Some("value")
        } else {
            None
        });
    if let Some(sub) = sub {
        let obj = v.as_object()?;
        v = obj
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(sub))
            .map(|(_, v)| v)?;
    }
    Some(v)
}

fn case_exact(rt: ResourceType, path: &AttrPath) -> bool {
    let Some(found) = path.resolve(rt) else {
        return false;
    };
    match path.sub.as_deref() {
        Some(s) => found.def.sub(s).is_some_and(|d| d.case_exact),
        None => found.def.case_exact,
    }
}

fn compare_values(a: &Value, b: &Value, exact: bool) -> Ordering {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            if exact {
                x.cmp(y)
            } else {
                super::text::caseless(x).cmp(&super::text::caseless(y))
            }
        }
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => Ordering::Equal,
    }
}

/// Sorts rendered resources by `sortBy`; resources without the attribute come last
/// when ascending and first when descending (RFC 7644 §3.4.2.3: "they are ordered
/// last if ascending and first if descending").
pub fn sort(
    resources: &mut [(ResourceType, Map<String, Value>)],
    path: &AttrPath,
    descending: bool,
) {
    resources.sort_by(|(ra, a), (rb, b)| {
        compare_sort_values(
            *ra,
            sort_key(*ra, a, path),
            sort_key(*rb, b, path),
            path,
            descending,
        )
    });
}

/// The value a rendered resource sorts by (`sortBy`, RFC 7644 §3.4.2.3), owned, so
/// that a query can keep only (value, id) pairs instead of whole resources; `None`
/// when the resource has no such value.
pub fn sort_value(
    rt: ResourceType,
    resource: &Map<String, Value>,
    path: &AttrPath,
) -> Option<Value> {
    sort_key(rt, resource, path).cloned()
}

/// Orders two sort values as `sort` does: by the attribute's caseExact (as `rt`'s
/// schema says), reversed when `descending`; a missing value sorts after every value
/// when ascending and before them when descending (RFC 7644 §3.4.2.3), so a
/// descending page is exactly the ascending order reversed.
pub fn compare_sort_values(
    rt: ResourceType,
    a: Option<&Value>,
    b: Option<&Value>,
    path: &AttrPath,
    descending: bool,
) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => {
            // Users and Groups in one root search: compare as the first one's schema says.
            let o = compare_values(x, y, case_exact(rt, path));
            if descending {
                o.reverse()
            } else {
                o
            }
        }
        (Some(_), None) if descending => Ordering::Greater,
        (None, Some(_)) if descending => Ordering::Less,
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Whether `sortBy` is the User's core `userName`, whose lowercased index gives the
/// order without reading the resources (caseExact false: the index key is the
/// comparison key).
pub fn sorts_by_user_name(rt: ResourceType, path: &AttrPath) -> bool {
    if rt != ResourceType::User || path.sub.is_some() {
        return false;
    }
    path.resolve(rt)
        .is_some_and(|found| found.def.name == "userName" && found.schema.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(s: &str) -> Filter {
        super::super::filter::parse(s).unwrap()
    }

    #[test]
    fn plans_index_lookups() {
        let u = ResourceType::User;
        assert_eq!(
            plan(&f("userName eq \"A\""), u),
            Some(Lookup::UserName("A".into()))
        );
        assert_eq!(
            plan(&f("USERNAME eq \"A\""), u),
            Some(Lookup::UserName("A".into()))
        );
        assert_eq!(
            plan(&f("externalId eq \"x\""), u),
            Some(Lookup::ExternalId("x".into()))
        );
        assert_eq!(
            plan(&f("emails.value eq \"a@b\""), u),
            Some(Lookup::Email("a@b".into()))
        );
        assert_eq!(plan(&f("userName co \"A\""), u), None);
        assert_eq!(plan(&f("userName eq \"A\" or title eq \"x\""), u), None);
        assert_eq!(
            plan(
                &f("id eq \"g1\" and members[value eq \"u1\"]"),
                ResourceType::Group
            ),
            Some(Lookup::Id("g1".into()))
        );
        assert_eq!(
            plan(&f("displayName eq \"Eng\""), ResourceType::Group),
            Some(Lookup::GroupName("Eng".into()))
        );
    }

    #[test]
    fn membership_checks_resolve_without_members() {
        let g = json!({"id": "g1", "displayName": "G"});
        let g = g.as_object().unwrap();
        let check = f("id eq \"g1\" and members[value eq \"u1\"]");
        let yes = resolve_member_checks(&check, &mut |id| id == "u1").unwrap();
        assert!(super::super::filter::matches(&yes, ResourceType::Group, g));
        let no = resolve_member_checks(&check, &mut |_| false).unwrap();
        assert!(!super::super::filter::matches(&no, ResourceType::Group, g));
        assert!(resolve_member_checks(&f("members pr"), &mut |_| true).is_none());
        assert!(mentions(
            &f("displayName eq \"x\" or members[value eq \"u\"]"),
            "members"
        ));
        assert!(!mentions(&f("displayName eq \"x\""), "members"));
    }

    #[test]
    fn paging_parameters_are_clamped() {
        let p = ListParams::parse(None, None, None, Some("0"), Some("-5"), 100, 1000).unwrap();
        assert_eq!((p.start_index, p.count), (1, 0));
        let p = ListParams::parse(None, None, None, None, Some("5000"), 100, 1000).unwrap();
        assert_eq!(p.count, 1000);
        assert!(ListParams::parse(None, None, Some("up"), None, None, 100, 1000).is_err());
        assert!(ListParams::parse(None, None, None, Some("x"), None, 100, 1000).is_err());
    }

    #[test]
    fn sort_by_names_a_real_attribute_or_is_refused_naming_it() {
        let (u, g) = (ResourceType::User, ResourceType::Group);
        let ok = |s: &str, t: &[ResourceType]| check_sort_by(&AttrPath::parse(s).unwrap(), t);
        for s in [
            "userName",
            "USERNAME",
            "name.familyName",
            "NAME.GIVENNAME",
            "emails",
            "emails.value",
            "meta.lastModified",
            "urn:ietf:params:scim:schemas:core:2.0:User:userName",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        ] {
            assert!(ok(s, &[u]).is_ok(), "{s}");
        }
        assert!(ok("displayName", &[g]).is_ok());
        // A root search: an attribute of either type sorts both.
        assert!(ok("userName", &[u, g]).is_ok());
        for (s, t, says) in [
            (
                "nickNamee",
                &[u][..],
                "no such attribute in the User schemas",
            ),
            (
                "userName",
                &[g][..],
                "no such attribute in the Group schemas",
            ),
            ("bogus", &[u, g][..], "User or Group"),
            (
                "name",
                &[u][..],
                "\"name\" is complex: name one of its sub-attributes",
            ),
            (
                "name.nope",
                &[u][..],
                "\"name\" has no sub-attribute \"nope\"",
            ),
            ("userName.x", &[u][..], "\"userName\" is not complex"),
            (
                "urn:example:unknown:2.0:User:userName",
                &[u][..],
                "no such attribute",
            ),
        ] {
            let e = ok(s, t).unwrap_err();
            assert_eq!(e.status, 400, "{s}");
            assert_eq!(
                e.scim_type,
                Some(crate::scim::error::ScimType::InvalidValue),
                "{s}"
            );
            assert!(
                e.detail.contains(s) && e.detail.contains(says),
                "{s}: {}",
                e.detail
            );
        }
    }

    #[test]
    fn sorts_case_insensitively_with_missing_last_ascending_and_first_descending() {
        let mut v: Vec<(ResourceType, Map<String, Value>)> = [
            json!({"userName": "b"}),
            json!({}),
            json!({"userName": "A"}),
        ]
        .into_iter()
        .map(|x| (ResourceType::User, x.as_object().unwrap().clone()))
        .collect();
        let path = AttrPath::parse("userName").unwrap();
        sort(&mut v, &path, false);
        assert_eq!(v[0].1["userName"], "A");
        assert!(v[2].1.get("userName").is_none());
        sort(&mut v, &path, true);
        assert!(v[0].1.get("userName").is_none());
        assert_eq!(v[1].1["userName"], "b");
        assert_eq!(v[2].1["userName"], "A");
    }

    #[test]
    fn root_search_sorts_users_and_groups_together() {
        let mut v = vec![
            (
                ResourceType::Group,
                json!({"displayName": "b"}).as_object().unwrap().clone(),
            ),
            (
                ResourceType::User,
                json!({"displayName": "a"}).as_object().unwrap().clone(),
            ),
            (
                ResourceType::Group,
                json!({"displayName": "C"}).as_object().unwrap().clone(),
            ),
        ];
        sort(&mut v, &AttrPath::parse("displayName").unwrap(), false);
        let names: Vec<&str> = v
            .iter()
            .map(|(_, r)| r["displayName"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "C"]);
    }
}
