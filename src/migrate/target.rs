//! What the push knows about a target: its capabilities read from
//! /ServiceProviderConfig, /Schemas and /ResourceTypes (RFC 7643 §5–7; cursor paging
//! from RFC 9865), which of the directory's attributes it can hold, and the target's
//! resources listed page by page (by cursor when offered) into an in-memory index
//! that matches with our own rules: externalId exactly, userName and Group
//! displayName case-insensitively (RFC 7643 §4.1.1, userName is caseExact false),
//! whatever the target's filters do. Talks to the target only through `Client`;
//! knows nothing of the store's tables or of the edges.

use std::collections::{BTreeSet, HashMap, HashSet};

use hyper::Method;
use serde_json::{Map, Value};

use super::client::Client;
use super::error::{MigrateError, MigrateResult};
use super::report::{Capabilities, Progress};
use crate::scim::schema::ResourceType;

/// Where progress goes while a migration step runs.
pub(crate) type Events = tokio::sync::mpsc::UnboundedSender<Progress>;

/// Percent-encodes a query parameter value.
pub(crate) fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// Largest page asked for when listing (targets may serve fewer; we follow them).
const LIST_PAGE: u64 = 1000;

/// Attributes that every resource has (RFC 7643 §3.1) or that are read-only: never
/// checked against /Schemas, never sent as data.
const COMMON: [&str; 6] = ["id", "meta", "schemas", "externalId", "groups", "members"];

/// The attribute names a target's /Schemas defines: schema id (lowercase) → attribute
/// name (lowercase) → its sub-attribute names (lowercase; empty for simple ones).
#[derive(Debug, Default, Clone)]
pub(crate) struct TargetSchema {
    schemas: HashMap<String, HashMap<String, HashSet<String>>>,
    /// The User resource type's schemaExtensions (lowercase), when /ResourceTypes
    /// answered.
    user_extensions: Option<HashSet<String>>,
}

/// What discovery found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Discovery {
    pub caps: Capabilities,
    /// `None` when /Schemas could not be read: nothing is known to be unsupported.
    pub schema: Option<TargetSchema>,
}

fn flag(v: &Value) -> bool {
    v == &Value::Bool(true) || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
}

/// The `Resources` of a ListResponse, or the array itself (some targets answer
/// /Schemas with a bare array).
fn resources(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => v["Resources"].as_array().cloned().unwrap_or_default(),
    }
}

/// Reads the target's ServiceProviderConfig (is it SCIM, does it take the token,
/// its limits), then /Schemas and /ResourceTypes (which may be missing: then nothing
/// is assumed unsupported).
pub(crate) async fn discover(client: &mut Client) -> MigrateResult<Discovery> {
    let r = client.first_contact("/ServiceProviderConfig").await?;
    if r.status == 401 || r.status == 403 {
        return Err(MigrateError::TokenRefused { status: r.status });
    }
    if !r.is_success() {
        return Err(MigrateError::NotScim {
            url: client.target().base.clone(),
            status: r.status,
        });
    }
    let spc = r.json()?;
    let num = |v: &Value| v.as_u64().unwrap_or(0);
    let mut caps = Capabilities {
        bulk: flag(&spc["bulk"]["supported"]),
        bulk_max_operations: num(&spc["bulk"]["maxOperations"]),
        max_payload: num(&spc["bulk"]["maxPayloadSize"]),
        // RFC 7643 §5 makes patch.supported required; a target that leaves it out
        // is given the benefit of the doubt (a 405 later switches to PUT).
        patch: spc["patch"]["supported"] != Value::Bool(false),
        filter: spc["filter"]["supported"] != Value::Bool(false),
        max_results: num(&spc["filter"]["maxResults"]),
        cursor: flag(&spc["pagination"]["cursor"]),
        ..Capabilities::default()
    };
    let mut schema = None;
    let r = client.request(Method::GET, "/Schemas", None).await?;
    if r.is_success() {
        if let Ok(v) = r.json() {
            let mut s = TargetSchema::default();
            for sc in resources(&v) {
                let Some(id) = sc["id"].as_str() else {
                    continue;
                };
                caps.schemas.push(id.to_owned());
                let mut attrs = HashMap::new();
                for a in sc["attributes"].as_array().into_iter().flatten() {
                    let Some(name) = a["name"].as_str() else {
                        continue;
                    };
                    let subs = a["subAttributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|x| x["name"].as_str())
                        .map(str::to_lowercase)
                        .collect();
                    attrs.insert(name.to_lowercase(), subs);
                }
                s.schemas.insert(id.to_lowercase(), attrs);
            }
            caps.schemas_read = true;
            schema = Some(s);
        }
    }
    let r = client.request(Method::GET, "/ResourceTypes", None).await?;
    if r.is_success() {
        if let Ok(v) = r.json() {
            for rt in resources(&v) {
                if rt["name"].as_str() != Some("User") && rt["endpoint"].as_str() != Some("/Users")
                {
                    continue;
                }
                let exts: Vec<String> = rt["schemaExtensions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["schema"].as_str())
                    .map(str::to_owned)
                    .collect();
                caps.resource_types_read = true;
                caps.user_extensions = exts.clone();
                schema
                    .get_or_insert_with(TargetSchema::default)
                    .user_extensions = Some(exts.iter().map(|e| e.to_lowercase()).collect());
            }
        }
    }
    Ok(Discovery { caps, schema })
}

impl TargetSchema {
    /// Can the target hold `attr` (and `sub`) of schema `urn` on a resource of `rt`?
    /// Unknown (a schema /Schemas does not list at all, for core schemas) counts as
    /// yes: only what the target says it lacks is refused.
    fn holds(&self, rt: ResourceType, urn: &str, attr: &str, sub: Option<&str>) -> bool {
        let urn_l = urn.to_lowercase();
        let core = urn_l == rt.schema().id.to_lowercase();
        if !core {
            if let Some(exts) = &self.user_extensions {
                if rt == ResourceType::User && !exts.contains(&urn_l) {
                    return false;
                }
            }
        }
        match self.schemas.get(&urn_l) {
            None => core || self.schemas.is_empty(),
            Some(attrs) => match attrs.get(&attr.to_lowercase()) {
                None => false,
                Some(subs) => match sub {
                    Some(s) if !subs.is_empty() => subs.contains(&s.to_lowercase()),
                    _ => true,
                },
            },
        }
    }
}

/// The name of an attribute as the admin reads it: `title`, `name.givenName`,
/// `urn:…:enterprise:2.0:User:department`, `urn:…:User:manager.value`.
pub(crate) fn attr_name(urn: Option<&str>, attr: &str, sub: Option<&str>) -> String {
    let mut n = match urn {
        Some(u) => format!("{u}:{attr}"),
        None => attr.to_owned(),
    };
    if let Some(s) = sub {
        n.push('.');
        n.push_str(s);
    }
    n
}

/// Calls `f(urn, attr, sub)` for every attribute (and sub-attribute) present in
/// `attrs`; `urn` is `None` for the core schema of the resource type.
/// Receives (extension URN or `None`, attribute, sub-attribute).
type Visit<'a> = dyn FnMut(Option<&str>, &str, Option<&str>) + 'a;

pub(crate) fn each_attribute(
    attrs: &Map<String, Value>,
    mut f: impl FnMut(Option<&str>, &str, Option<&str>),
) {
    let complex = |urn: Option<&str>, name: &str, v: &Value, f: &mut Visit<'_>| {
        f(urn, name, None);
        let objs: Vec<&Map<String, Value>> = match v {
            Value::Object(o) => vec![o],
            Value::Array(a) => a.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        };
        let mut seen = BTreeSet::new();
        for o in objs {
            for k in o.keys() {
                if seen.insert(k.clone()) {
                    f(urn, name, Some(k));
                }
            }
        }
    };
    for (k, v) in attrs {
        if COMMON.iter().any(|c| c.eq_ignore_ascii_case(k)) || v.is_null() {
            continue;
        }
        if k.starts_with("urn:") {
            if let Some(ext) = v.as_object() {
                for (ek, ev) in ext {
                    if !ev.is_null() {
                        complex(Some(k), ek, ev, &mut f);
                    }
                }
            }
            continue;
        }
        complex(None, k, v, &mut f);
    }
}

impl Discovery {
    /// The attributes present in `attrs` that the target cannot hold, by name.
    pub(crate) fn unsupported_in(
        &self,
        rt: ResourceType,
        attrs: &Map<String, Value>,
        out: &mut BTreeSet<String>,
    ) {
        let Some(schema) = &self.schema else {
            return;
        };
        each_attribute(attrs, |urn, attr, sub| {
            let u = urn.unwrap_or(rt.schema().id);
            if !schema.holds(rt, u, attr, sub) {
                // Name the attribute once, not each of its sub-attributes, when the
                // attribute itself is missing.
                if sub.is_some() && !schema.holds(rt, u, attr, None) {
                    return;
                }
                out.insert(attr_name(urn, attr, sub));
            }
        });
    }
}

/// Leaves out of `attrs` every attribute named in `omit` (names as `attr_name`).
pub(crate) fn strip(attrs: &mut Map<String, Value>, omit: &HashSet<String>) {
    if omit.is_empty() {
        return;
    }
    let keys: Vec<String> = attrs.keys().cloned().collect();
    for k in keys {
        if omit.contains(&k) {
            attrs.remove(&k);
            continue;
        }
        let urn = k.starts_with("urn:").then(|| k.clone());
        let Some(v) = attrs.get_mut(&k) else { continue };
        let strip_subs = |name: &str, v: &mut Value| {
            let prefix = format!("{name}.");
            let subs: Vec<&str> = omit
                .iter()
                .filter_map(|o| o.strip_prefix(&prefix))
                .collect();
            if subs.is_empty() {
                return;
            }
            let each = |o: &mut Map<String, Value>| {
                for s in &subs {
                    o.remove(*s);
                }
            };
            match v {
                Value::Object(o) => each(o),
                Value::Array(a) => a.iter_mut().filter_map(Value::as_object_mut).for_each(each),
                _ => {}
            }
        };
        match urn {
            Some(u) => {
                if let Some(ext) = v.as_object_mut() {
                    let inner: Vec<String> = ext.keys().cloned().collect();
                    for ek in inner {
                        let name = format!("{u}:{ek}");
                        if omit.contains(&name) {
                            ext.remove(&ek);
                        } else if let Some(ev) = ext.get_mut(&ek) {
                            strip_subs(&name, ev);
                        }
                    }
                    // An extension left empty is left out, URN and all: a target
                    // that does not know it refuses it even empty.
                    if ext.is_empty() {
                        attrs.remove(&u);
                    }
                }
            }
            None => strip_subs(&k, v),
        }
    }
}

/// The target's resources of one type, indexed for matching. Built from one listing.
#[derive(Debug, Default)]
pub(crate) struct TargetIndex {
    /// externalId (exact) → target ids.
    pub by_external: HashMap<String, Vec<String>>,
    /// userName / displayName lowercased → target ids.
    pub by_name: HashMap<String, Vec<String>>,
    /// target id → userName / displayName as the target holds it.
    pub names: HashMap<String, String>,
}

impl TargetIndex {
    pub(crate) fn add(&mut self, rt: ResourceType, v: &Value) {
        let Some(id) = v["id"].as_str() else {
            return;
        };
        if let Some(e) = v["externalId"].as_str() {
            self.by_external
                .entry(e.to_owned())
                .or_default()
                .push(id.to_owned());
        }
        let name = v[name_attr(rt)].as_str().unwrap_or_default();
        self.by_name
            .entry(name.to_lowercase())
            .or_default()
            .push(id.to_owned());
        self.names.insert(id.to_owned(), name.to_owned());
    }
}

/// The attribute that names a resource: userName or displayName.
pub(crate) fn name_attr(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::User => "userName",
        ResourceType::Group => "displayName",
    }
}

/// Lists every resource of `rt` on the target, page by page (by RFC 9865 cursor when
/// the target offers it, else by startIndex, following the page sizes the target
/// actually serves), calling `each` on every resource. `query` is appended to every
/// page request (e.g. `&excludedAttributes=members`). Returns how many were listed.
pub(crate) async fn list(
    client: &mut Client,
    caps: &Capabilities,
    rt: ResourceType,
    query: &str,
    events: &Events,
    mut each: impl FnMut(Value),
) -> MigrateResult<u64> {
    let count = if caps.max_results > 0 {
        caps.max_results.min(LIST_PAGE)
    } else {
        LIST_PAGE
    };
    let mut done = 0u64;
    let mut start = 1u64;
    let mut cursor: Option<String> = caps.cursor.then(String::new);
    // A target that ignores paging parameters must not make us loop for ever.
    let mut pages = 0u64;
    loop {
        let path = match &cursor {
            Some(c) => format!(
                "{}?count={count}&cursor={}{query}",
                rt.endpoint(),
                encode(c)
            ),
            None => format!("{}?startIndex={start}&count={count}{query}", rt.endpoint()),
        };
        let r = client.request(Method::GET, &path, None).await?;
        if pages == 0 && refuses_listing(r.status) {
            return Err(MigrateError::ListingRefused {
                endpoint: rt.endpoint(),
                status: r.status,
                detail: r.detail(),
            });
        }
        if !r.is_success() {
            return Err(MigrateError::TargetAnswered {
                action: format!("listing the target's {}", rt.endpoint()),
                status: r.status,
                detail: r.detail(),
            });
        }
        let page = r.json()?;
        let items = page["Resources"].as_array().cloned().unwrap_or_default();
        let total = page["totalResults"].as_u64().unwrap_or(0);
        let n = items.len() as u64;
        for it in items {
            each(it);
        }
        done += n;
        pages += 1;
        let _ = events.send(Progress::Listing {
            resource_type: rt,
            done,
            total: total.max(done),
        });
        if n == 0 || pages > 1_000_000 {
            break;
        }
        match &mut cursor {
            Some(c) => match page["nextCursor"].as_str() {
                Some(next) if !next.is_empty() => *c = next.to_owned(),
                _ => break,
            },
            None => {
                start += n;
                if start > total {
                    break;
                }
            }
        }
    }
    Ok(done)
}

/// Whether the status of an unfiltered listing's first answer means "not allowed
/// here" rather than a failure: 400 (e.g. `invalidFilter`, "a filter is required"),
/// 403 or 501. The push then looks resources up one at a time.
fn refuses_listing(status: u16) -> bool {
    matches!(status, 400 | 403 | 501)
}

/// Total number of resources of `rt` on the target (one small request).
/// `ListingRefused` when the target answers only filtered searches.
pub(crate) async fn total(client: &mut Client, rt: ResourceType) -> MigrateResult<u64> {
    let r = client
        .request(Method::GET, &format!("{}?count=1", rt.endpoint()), None)
        .await?;
    if refuses_listing(r.status) {
        return Err(MigrateError::ListingRefused {
            endpoint: rt.endpoint(),
            status: r.status,
            detail: r.detail(),
        });
    }
    if !r.is_success() {
        return Err(MigrateError::TargetAnswered {
            action: format!("counting the target's {}", rt.endpoint()),
            status: r.status,
            detail: r.detail(),
        });
    }
    Ok(r.json()?["totalResults"].as_u64().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(v: Value, exts: Option<&[&str]>) -> Discovery {
        let mut s = TargetSchema::default();
        for sc in resources(&v) {
            let mut attrs = HashMap::new();
            for a in sc["attributes"].as_array().unwrap() {
                let subs = a["subAttributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| x["name"].as_str().unwrap().to_lowercase())
                    .collect();
                attrs.insert(a["name"].as_str().unwrap().to_lowercase(), subs);
            }
            s.schemas
                .insert(sc["id"].as_str().unwrap().to_lowercase(), attrs);
        }
        s.user_extensions = exts.map(|e| e.iter().map(|x| x.to_lowercase()).collect());
        Discovery {
            caps: Capabilities::default(),
            schema: Some(s),
        }
    }

    const ENT: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

    #[test]
    fn attributes_the_target_does_not_define_are_named_once() {
        let d = schema(
            json!([{"id": "urn:ietf:params:scim:schemas:core:2.0:User", "attributes": [
                {"name": "userName"}, {"name": "name", "subAttributes": [{"name": "givenName"}]},
                {"name": "emails", "subAttributes": [{"name": "value"}, {"name": "primary"}]}]}]),
            Some(&[]),
        );
        let attrs = json!({"userName": "a", "externalId": "x", "title": "CEO",
            "name": {"givenName": "A", "familyName": "B"},
            "emails": [{"value": "a@x", "primary": true, "type": "work"}],
            ENT: {"department": "R&D"}});
        let mut out = BTreeSet::new();
        d.unsupported_in(ResourceType::User, attrs.as_object().unwrap(), &mut out);
        let names: Vec<&str> = out.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "emails.type",
                "name.familyName",
                "title",
                &format!("{ENT}:department")
            ]
        );
    }

    #[test]
    fn an_unreadable_schema_endpoint_assumes_everything_is_held() {
        let d = Discovery::default();
        let mut out = BTreeSet::new();
        d.unsupported_in(
            ResourceType::User,
            json!({"title": "x", ENT: {"department": "y"}})
                .as_object()
                .unwrap(),
            &mut out,
        );
        assert!(out.is_empty());
    }

    #[test]
    fn strip_leaves_out_attributes_sub_attributes_and_extension_attributes() {
        let mut attrs =
            json!({"userName": "a", "title": "CEO", "emails": [{"value": "v", "type": "work"}],
            ENT: {"department": "d", "manager": {"value": "m"}}})
            .as_object()
            .unwrap()
            .clone();
        let omit: HashSet<String> = [
            "title".to_owned(),
            "emails.type".to_owned(),
            format!("{ENT}:department"),
        ]
        .into_iter()
        .collect();
        strip(&mut attrs, &omit);
        assert_eq!(
            Value::Object(attrs.clone()),
            json!({"userName": "a", "emails": [{"value": "v"}], ENT: {"manager": {"value": "m"}}})
        );
        let omit: HashSet<String> = [format!("{ENT}:manager")].into_iter().collect();
        strip(&mut attrs, &omit);
        assert_eq!(
            Value::Object(attrs),
            json!({"userName": "a", "emails": [{"value": "v"}]}),
            "an emptied extension goes, URN and all"
        );
    }

    #[test]
    fn the_index_matches_names_case_insensitively() {
        let mut i = TargetIndex::default();
        i.add(
            ResourceType::User,
            &json!({"id": "1", "userName": "User050@EXAMPLE.COM"}),
        );
        assert_eq!(i.by_name["user050@example.com"], ["1"]);
        assert_eq!(i.names["1"], "User050@EXAMPLE.COM");
    }
}
