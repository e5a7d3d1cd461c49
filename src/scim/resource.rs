//! What a resource looks like on the way in and on the way out: `normalize` turns a
//! client's JSON (any attribute-name case, IdP quirks) into the canonical stored form,
//! `render` adds `schemas`, `id`, `meta` and references for a response, and
//! `Projection` applies `attributes` / `excludedAttributes` with the `returned`
//! characteristic. Pure functions over `serde_json` values.

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::path::AttrPath;
use super::schema::{AttrDef, AttrType, Mutability, ResourceType, Returned, COMMON_ATTRIBUTES};

/// A resource as stored: canonical attribute names, extension attributes inside an
/// object under the extension's URN, no `schemas`, `id` or `meta` (kept beside it).
pub type Attributes = Map<String, Value>;

/// Server-maintained metadata of a resource.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// RFC 3339 time of creation.
    pub created: String,
    /// RFC 3339 time of the last change.
    #[serde(rename = "lastModified")]
    pub last_modified: String,
    /// Incremented on every change; rendered as the weak ETag `W/"<version>"`.
    pub version: u64,
}

impl Meta {
    pub fn etag(&self) -> String {
        format!("W/\"{}\"", self.version)
    }
}

/// A reference from a group to a member, or from a user to a group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub id: String,
    pub rt: ResourceType,
    pub display: Option<String>,
}

/// Normalizes a client-supplied resource (POST/PUT body, or a resource after PATCH)
/// into its canonical stored form. Attribute names are matched case-insensitively and
/// rewritten in canonical case; read-only attributes (`id`, `meta`, `groups`, member
/// `display`) and `password` are dropped (the bridge never stores a password);
/// unknown attributes and schema URNs are ignored; IdP leniencies (booleans as `"True"`, a bare id
/// string for a complex attribute with a `value`) are accepted. Types are checked and
/// required attributes enforced.
pub fn normalize(rt: ResourceType, body: &Value) -> ScimResult<Attributes> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    let mut out = Attributes::new();
    for (key, value) in obj {
        if key.eq_ignore_ascii_case("schemas") {
            check_schemas(rt, value)?;
            continue;
        }
        if let Some(ext) = rt
            .extensions()
            .iter()
            .find(|e| e.id.eq_ignore_ascii_case(key))
        {
            let Some(fields) = value.as_object() else {
                if value.is_null() {
                    continue;
                }
                return Err(ScimError::invalid_syntax(format!(
                    "\"{}\" must be an object of extension attributes",
                    ext.id
                )));
            };
            for (name, v) in fields {
                if let Some(def) = ext.attr(name) {
                    put_normalized(&mut out, Some(ext.id), def, v)?;
                }
            }
            continue;
        }
        if key.len() > 4 && key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
            // A URN-qualified attribute name at the top level.
            if let Ok(path) = AttrPath::parse(key) {
                if path.sub.is_none() && !path.is_whole_schema() {
                    if let Some(found) = path.resolve(rt) {
                        put_normalized(&mut out, found.schema.map(|s| s.id), found.def, value)?;
                    }
                }
            }
            continue;
        }
        let def = COMMON_ATTRIBUTES
            .iter()
            .chain(rt.schema().attributes.iter())
            .find(|a| a.name.eq_ignore_ascii_case(key));
        if let Some(def) = def {
            put_normalized(&mut out, None, def, value)?;
        }
    }
    for def in rt.schema().attributes.iter().filter(|a| a.required) {
        match out.get(def.name) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => {
                return Err(ScimError::invalid_value(format!(
                    "the attribute \"{}\" is required",
                    def.name
                )))
            }
        }
    }
    Ok(out)
}

fn check_schemas(rt: ResourceType, value: &Value) -> ScimResult<()> {
    let Some(list) = value.as_array() else {
        return Err(ScimError::invalid_syntax(
            "\"schemas\" must be an array of schema URNs",
        ));
    };
    for urn in list {
        let Some(urn) = urn.as_str() else {
            return Err(ScimError::invalid_syntax(
                "\"schemas\" must be an array of schema URNs",
            ));
        };
        // Another resource type's schema is a client mistake; a URN the bridge does
        // not know is not: Entra ID sends its ADSCIM group schema and a misspelt
        // enterprise URN, and their attributes are ignored like any unknown one.
        if let Some(other) = ResourceType::ALL
            .iter()
            .find(|o| **o != rt && o.schema().id.eq_ignore_ascii_case(urn))
        {
            return Err(ScimError::invalid_value(format!(
                "the schema \"{urn}\" is for {} resources, not {}",
                other.name(),
                rt.name()
            )));
        }
    }
    Ok(())
}

/// Writes one normalized attribute into `out` (or removes it when the value is
/// unassigned), skipping attributes that clients cannot set.
fn put_normalized(
    out: &mut Attributes,
    ext: Option<&'static str>,
    def: &'static AttrDef,
    value: &Value,
) -> ScimResult<()> {
    if matches!(def.mutability, Mutability::ReadOnly | Mutability::WriteOnly) {
        return Ok(());
    }
    let normalized = normalize_value(def, value)?;
    let set = |m: &mut Attributes| match normalized {
        Some(v) => {
            m.insert(def.name.to_owned(), v);
        }
        None => {
            m.remove(def.name);
        }
    };
    match ext {
        None => set(out),
        Some(urn) => {
            let mut fields = match out.remove(urn) {
                Some(Value::Object(m)) => m,
                _ => Map::new(),
            };
            set(&mut fields);
            if !fields.is_empty() {
                out.insert(urn.to_owned(), Value::Object(fields));
            }
        }
    }
    Ok(())
}

/// Normalizes the value of one attribute; `None` means unassigned (null, empty
/// array, empty complex value).
pub fn normalize_value(def: &AttrDef, value: &Value) -> ScimResult<Option<Value>> {
    if value.is_null() {
        return Ok(None);
    }
    if def.multi_valued {
        let items: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            single => vec![single],
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(v) = normalize_single(def, item)? {
                if !out.contains(&v) {
                    out.push(v);
                }
            }
        }
        return Ok(if out.is_empty() {
            None
        } else {
            Some(Value::Array(out))
        });
    }
    if let Value::Array(items) = value {
        // Entra ID sets the manager with a one-element array of {"$ref", "value"}.
        if let ([only], AttrType::Complex) = (items.as_slice(), def.ty) {
            return normalize_single(def, only);
        }
        return Err(ScimError::invalid_value(format!(
            "the attribute \"{}\" is single-valued; an array was given",
            def.name
        )));
    }
    normalize_single(def, value)
}

fn normalize_single(def: &AttrDef, value: &Value) -> ScimResult<Option<Value>> {
    let wrong = |expected: &str| {
        ScimError::invalid_value(format!("the attribute \"{}\" must be {expected}", def.name))
    };
    Ok(Some(match def.ty {
        AttrType::Complex => match value {
            Value::Object(fields) => {
                let mut m = Map::new();
                for (k, v) in fields {
                    let Some(sub) = def.sub(k) else { continue };
                    if sub.mutability == Mutability::ReadOnly
                        && def.mutability != Mutability::ReadOnly
                    {
                        continue;
                    }
                    if let Some(v) = normalize_value(sub, v)? {
                        m.insert(sub.name.to_owned(), v);
                    }
                }
                if m.is_empty() {
                    return Ok(None);
                }
                Value::Object(m)
            }
            // Entra ID sends `manager` as a bare id string.
            Value::String(s) if def.sub("value").is_some() => {
                if s.is_empty() {
                    return Ok(None);
                }
                let mut m = Map::new();
                m.insert("value".to_owned(), Value::String(s.clone()));
                Value::Object(m)
            }
            Value::Null => return Ok(None),
            _ => return Err(wrong("a complex value (a JSON object)")),
        },
        AttrType::String | AttrType::Reference | AttrType::Binary => match value {
            Value::String(_) => value.clone(),
            // Some clients send employee numbers and the like as JSON numbers.
            Value::Number(n) if def.ty == AttrType::String => Value::String(n.to_string()),
            _ => return Err(wrong("a string")),
        },
        AttrType::Boolean => match value {
            Value::Bool(_) => value.clone(),
            // Entra ID sends "True" / "False".
            Value::String(s) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            _ => return Err(wrong("a boolean")),
        },
        AttrType::Integer => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => value.clone(),
            _ => return Err(wrong("an integer")),
        },
        AttrType::Decimal => match value {
            Value::Number(_) => value.clone(),
            _ => return Err(wrong("a number")),
        },
        AttrType::DateTime => match value {
            Value::String(s)
                if time::OffsetDateTime::parse(
                    s,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_ok() =>
            {
                value.clone()
            }
            _ => return Err(wrong("an RFC 3339 date-time string")),
        },
    }))
}

/// Builds the full SCIM representation of a stored resource: `schemas`, `id`,
/// `externalId`, the attributes, the references (`members` of a group, `groups` of
/// a user) and `meta`. `base` is the SCIM base URL without a trailing slash. Takes
/// the attributes by value: values move into the output instead of being copied.
pub fn render(
    rt: ResourceType,
    id: &str,
    mut attrs: Attributes,
    meta: &Meta,
    refs: Option<&[Reference]>,
    base: &str,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut schemas = vec![Value::String(rt.schema().id.to_owned())];
    for ext in rt.extensions() {
        if attrs.contains_key(ext.id) {
            schemas.push(Value::String(ext.id.to_owned()));
        }
    }
    out.insert("schemas".into(), Value::Array(schemas));
    out.insert("id".into(), Value::String(id.to_owned()));
    if let Some(ext_id) = attrs.shift_remove("externalId") {
        out.insert("externalId".into(), ext_id);
    }
    out.extend(attrs);
    if let Some((name, list)) = refs.and_then(|r| references_value(rt, r, base)) {
        out.insert(name.into(), list);
    }
    let mut m = Map::new();
    m.insert("resourceType".into(), Value::String(rt.name().into()));
    m.insert("created".into(), Value::String(meta.created.clone()));
    m.insert(
        "lastModified".into(),
        Value::String(meta.last_modified.clone()),
    );
    m.insert(
        "location".into(),
        Value::String(format!("{base}{}/{id}", rt.endpoint())),
    );
    m.insert("version".into(), Value::String(meta.etag()));
    out.insert("meta".into(), Value::Object(m));
    out
}

/// The `members` of a group or the `groups` of a user as (attribute name, value);
/// `None` when there are none.
pub fn references_value(
    rt: ResourceType,
    refs: &[Reference],
    base: &str,
) -> Option<(&'static str, Value)> {
    if refs.is_empty() {
        return None;
    }
    let name = match rt {
        ResourceType::Group => "members",
        ResourceType::User => "groups",
    };
    let list = refs
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("value".into(), Value::String(r.id.clone()));
            m.insert(
                "$ref".into(),
                Value::String(format!("{base}{}/{}", r.rt.endpoint(), r.id)),
            );
            if let Some(d) = &r.display {
                m.insert("display".into(), Value::String(d.clone()));
            }
            let ty = match rt {
                ResourceType::Group => r.rt.name(),
                ResourceType::User => "direct",
            };
            m.insert("type".into(), Value::String(ty.into()));
            Value::Object(m)
        })
        .collect();
    Some((name, Value::Array(list)))
}

/// Adds references to an already rendered resource, keeping `meta` last.
pub fn add_references(
    rt: ResourceType,
    rendered: &mut Map<String, Value>,
    refs: &[Reference],
    base: &str,
) {
    if let Some((name, list)) = references_value(rt, refs, base) {
        let meta = rendered.shift_remove("meta");
        rendered.insert(name.into(), list);
        if let Some(meta) = meta {
            rendered.insert("meta".into(), meta);
        }
    }
}

/// The `attributes` / `excludedAttributes` of a request (RFC 7644 §3.4.2.5).
#[derive(Debug, Clone, Default)]
pub struct Projection {
    attributes: Vec<AttrPath>,
    excluded: Vec<AttrPath>,
}

fn parse_list(list: Option<&str>) -> ScimResult<Vec<AttrPath>> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(AttrPath::parse)
        .collect()
}

/// Is `path` about the attribute `name` (in the extension `ext`, if any)?
fn names(path: &AttrPath, rt: ResourceType, ext: Option<&str>, name: &str) -> bool {
    if path.is_whole_schema() {
        return false;
    }
    match path.resolve(rt) {
        Some(found) => found.def.name == name && found.schema.map(|s| s.id) == ext,
        None => false,
    }
}

impl Projection {
    pub fn parse(attributes: Option<&str>, excluded: Option<&str>) -> ScimResult<Projection> {
        Ok(Projection {
            attributes: parse_list(attributes)?,
            excluded: parse_list(excluded)?,
        })
    }

    /// Will a response include this top-level attribute? Lets callers skip loading
    /// expensive attributes (a large group's `members`).
    pub fn includes(&self, rt: ResourceType, name: &str) -> bool {
        let Some(def) = rt.find_attr(None, name).map(|a| a.def) else {
            return true;
        };
        self.keep(rt, None, def)
    }

    fn keep(&self, rt: ResourceType, ext: Option<&str>, def: &AttrDef) -> bool {
        match def.returned {
            Returned::Always => return true,
            Returned::Never => return false,
            _ => {}
        }
        if !self.attributes.is_empty() {
            return self.attributes.iter().any(|p| {
                names(p, rt, ext, def.name)
                    || (p.is_whole_schema()
                        && ext.is_some_and(|e| {
                            p.urn.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(e))
                        }))
            });
        }
        if def.returned == Returned::Request {
            return false;
        }
        !self
            .excluded
            .iter()
            .any(|p| p.sub.is_none() && names(p, rt, ext, def.name))
    }

    /// Sub-attribute filtering for a kept complex attribute.
    fn project_complex(
        &self,
        rt: ResourceType,
        ext: Option<&str>,
        def: &AttrDef,
        value: &mut Value,
    ) {
        let wanted: Vec<&str> = self
            .attributes
            .iter()
            .filter(|p| names(p, rt, ext, def.name))
            .map(|p| p.sub.as_deref())
            .collect::<Option<Vec<&str>>>()
            .unwrap_or_default();
        let unwanted: Vec<&str> = self
            .excluded
            .iter()
            .filter(|p| names(p, rt, ext, def.name))
            .filter_map(|p| p.sub.as_deref())
            .collect();
        let filter_obj = |m: &mut Map<String, Value>| {
            m.retain(|k, _| {
                let always = def.sub(k).is_some_and(|s| s.returned == Returned::Always);
                let in_wanted =
                    wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(k));
                let in_unwanted = unwanted.iter().any(|w| w.eq_ignore_ascii_case(k));
                always || (in_wanted && !in_unwanted)
            });
        };
        match value {
            Value::Object(m) => filter_obj(m),
            Value::Array(items) => {
                for item in items.iter_mut() {
                    if let Value::Object(m) = item {
                        filter_obj(m);
                    }
                }
            }
            _ => {}
        }
    }

    /// Applies the projection to a rendered resource.
    pub fn apply(&self, rt: ResourceType, resource: Map<String, Value>) -> Map<String, Value> {
        // No parameters: everything stored is returned by default (`password`, the one
        // never-returned attribute, is never stored), so there is nothing to drop.
        if self.attributes.is_empty() && self.excluded.is_empty() {
            return resource;
        }
        let mut out = Map::new();
        for (key, mut value) in resource {
            if key == "schemas" || key == "id" {
                out.insert(key, value);
                continue;
            }
            if let Some(ext) = rt.extensions().iter().find(|e| e.id == key) {
                let Value::Object(fields) = value else {
                    continue;
                };
                let mut kept = Map::new();
                for (name, mut v) in fields {
                    let Some(def) = ext.attr(&name) else { continue };
                    if self.keep(rt, Some(ext.id), def) {
                        if def.ty == AttrType::Complex {
                            self.project_complex(rt, Some(ext.id), def, &mut v);
                        }
                        kept.insert(name, v);
                    }
                }
                if !kept.is_empty() {
                    out.insert(key, Value::Object(kept));
                }
                continue;
            }
            let Some(def) = rt.find_attr(None, &key).map(|a| a.def) else {
                continue;
            };
            if self.keep(rt, None, def) {
                if def.ty == AttrType::Complex {
                    self.project_complex(rt, None, def, &mut value);
                }
                out.insert(key, value);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::schema::ENTERPRISE_USER_URN;
    use serde_json::json;

    #[test]
    fn normalizes_attribute_names_and_drops_read_only_and_password() {
        let out = normalize(
            ResourceType::User,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "USERNAME": "a@example.com", "id": "x", "meta": {}, "password": "secret",
                    "Active": "False", "emails": {"value": "a@example.com", "Primary": "true"},
                    "unknownThing": 1}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"userName": "a@example.com", "active": false,
                   "emails": [{"value": "a@example.com", "primary": true}]})
        );
    }

    #[test]
    fn non_ascii_keys_are_ignored_not_a_panic() {
        // Found by the `resource` fuzz target: byte 4 inside a multi-byte character.
        let out = normalize(
            ResourceType::User,
            &json!({"userName": "a", "urn\u{196}etf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "x"}}),
        )
        .unwrap();
        assert_eq!(Value::Object(out), json!({"userName": "a"}));
    }

    #[test]
    fn requires_user_name() {
        let err = normalize(ResourceType::User, &json!({"displayName": "x"})).unwrap_err();
        assert_eq!(err.status, 400);
        let err = normalize(ResourceType::User, &json!({"userName": "  "})).unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn rejects_wrong_types() {
        for body in [
            json!({"userName": true}),
            json!({"userName": "a", "active": "maybe"}),
            json!({"userName": "a", "name": "x"}),
            json!({"userName": "a", "displayName": ["a", "b"]}),
            json!([1, 2]),
        ] {
            let err = normalize(ResourceType::User, &body).unwrap_err();
            assert_eq!(err.status, 400, "{body}");
        }
    }

    #[test]
    fn entra_unknown_schema_urns_are_ignored() {
        // Entra ID's documented Create Group and Create User requests.
        let group = normalize(
            ResourceType::Group,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                    "displayName": "g"}),
        )
        .unwrap();
        assert_eq!(Value::Object(group), json!({"displayName": "g"}));
        let user = normalize(
            ResourceType::User,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                                "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
                    "userName": "a", "department": null, "manager": null}),
        )
        .unwrap();
        assert_eq!(Value::Object(user), json!({"userName": "a"}));
    }

    #[test]
    fn another_resource_types_schema_is_refused() {
        let err = normalize(
            ResourceType::User,
            &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "userName": "a"}),
        )
        .unwrap_err();
        assert_eq!(
            (err.status, err.scim_type),
            (400, Some(crate::scim::error::ScimType::InvalidValue))
        );
    }

    #[test]
    fn enterprise_manager_from_bare_id_and_qualified_names() {
        let out = normalize(
            ResourceType::User,
            &json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": "m1"},
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D"}),
        )
        .unwrap();
        assert_eq!(
            out[ENTERPRISE_USER_URN],
            json!({"manager": {"value": "m1"}, "department": "R&D"})
        );
    }

    #[test]
    fn entra_manager_as_a_one_element_array() {
        let out = normalize(
            ResourceType::User,
            &json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": [{"$ref": "https://x/Users/m1", "value": "m1"}]}}),
        )
        .unwrap();
        assert_eq!(out[ENTERPRISE_USER_URN]["manager"]["value"], "m1");
        let two = json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": [{"value": "m1"}, {"value": "m2"}]}});
        assert_eq!(normalize(ResourceType::User, &two).unwrap_err().status, 400);
    }

    fn sample() -> Map<String, Value> {
        let attrs = normalize(
            ResourceType::User,
            &json!({"userName": "a", "displayName": "A", "name": {"givenName": "G", "familyName": "F"},
                    ENTERPRISE_USER_URN: {"department": "D", "costCenter": "C"}}),
        )
        .unwrap();
        let meta = Meta {
            created: "2026-01-01T00:00:00Z".into(),
            last_modified: "2026-01-01T00:00:00Z".into(),
            version: 3,
        };
        render(
            ResourceType::User,
            "id1",
            attrs,
            &meta,
            None,
            "https://h/scim/v2",
        )
    }

    #[test]
    fn renders_schemas_meta_and_location() {
        let r = sample();
        assert_eq!(
            r["schemas"],
            json!([crate::scim::schema::USER_URN, ENTERPRISE_USER_URN])
        );
        assert_eq!(r["meta"]["location"], "https://h/scim/v2/Users/id1");
        assert_eq!(r["meta"]["version"], "W/\"3\"");
    }

    #[test]
    fn projection_attributes_keeps_always_returned() {
        let p = Projection::parse(Some("name.givenName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"), None).unwrap();
        let out = p.apply(ResourceType::User, sample());
        assert_eq!(out["id"], "id1");
        assert!(out.get("userName").is_none());
        assert_eq!(out["name"], json!({"givenName": "G"}));
        assert_eq!(out[ENTERPRISE_USER_URN], json!({"department": "D"}));
    }

    #[test]
    fn projection_excluded_attributes() {
        let p = Projection::parse(None, Some("displayName,name.familyName,id")).unwrap();
        let out = p.apply(ResourceType::User, sample());
        assert!(out.get("displayName").is_none());
        assert_eq!(out["id"], "id1");
        assert_eq!(out["name"], json!({"givenName": "G"}));
        assert!(out.get("meta").is_some());
    }
}
