//! What a resource looks like on the way in and on the way out: `normalize` turns a
//! client's JSON (any attribute-name case, IdP quirks) into the canonical stored form,
//! `render` adds `schemas`, `id`, `meta` and references for a response, and
//! `Projection` applies `attributes` / `excludedAttributes` with the `returned`
//! characteristic. Pure functions over `serde_json` values.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult};
use super::path::AttrPath;
use super::schema::{
    AttrDef, AttrType, Leniency, Mutability, ResourceType, Returned, COMMON_ATTRIBUTES,
};

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
    /// Incremented on every change of the resource's own record; a group's also on
    /// every member added or removed and when a member's display name changes.
    pub version: u64,
    /// A user's representation also shows its groups (RFC 7643 §4.1.2): this digest
    /// of the ids and versions of all of them, direct and indirect, is derived when
    /// the user is read and never stored. With it the ETag changes whenever the
    /// user's `groups` does, without rewriting users when a group changes.
    #[serde(skip)]
    pub groups_tag: Option<u64>,
}

impl Meta {
    /// The weak ETag (RFC 7232 §2.3): `W/"<version>"`, or `W/"<version>-<groups
    /// digest>"` for a user that belongs to groups.
    pub fn etag(&self) -> String {
        match self.groups_tag {
            Some(tag) => format!("W/\"{}-{tag:016x}\"", self.version),
            None => format!("W/\"{}\"", self.version),
        }
    }
}

/// A reference from a group to a member, or from a user to a group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The `id` of the resource referred to: rendered as the reference's `value` and at
    /// the end of its `$ref` URL.
    pub id: String,
    /// The type of the resource referred to: gives the endpoint of `$ref` and, for a
    /// group's `members`, the `type` (`User` or `Group`, RFC 7643 §4.2).
    pub rt: ResourceType,
    /// The `display` name rendered with the reference (a member's or group's display
    /// name); `None` renders no `display`.
    pub display: Option<String>,
    /// For a user's `groups`: the membership comes through a nested group
    /// (RFC 7643 §4.1.2 `type: indirect`). Always false for a group's `members`.
    pub indirect: bool,
}

/// An attribute a request named that no schema of the resource type defines, as the
/// client wrote it (`favouriteColour`, `name.foo`, `urn:…:2.0:User:costCode`), with
/// the JSON type of its value, so that the admin can be shown a declaration to paste.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAttr {
    /// The attribute path exactly as the client wrote it (case and URN kept).
    pub name: String,
    /// The RFC 7643 §2.3 type the value looked like: string, boolean, integer,
    /// decimal or complex.
    pub json_type: &'static str,
    /// Whether the value was an array.
    pub multi_valued: bool,
}

impl UnknownAttr {
    /// Names `name`, typed after `value`.
    pub fn new(name: String, value: &Value) -> UnknownAttr {
        let scalar = |v: &Value| match v {
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "decimal",
            Value::Object(_) => "complex",
            _ => "string",
        };
        let (json_type, multi_valued) = match value {
            Value::Array(items) => (items.first().map_or("string", scalar), true),
            other => (scalar(other), false),
        };
        UnknownAttr {
            name,
            json_type,
            multi_valued,
        }
    }

    /// A value that carries nothing (null, `[]`, `{}`) loses nothing when ignored:
    /// Entra ID sends `null` for every unmapped attribute it clears.
    pub fn carries_data(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::Array(items) => !items.is_empty(),
            Value::Object(fields) => !fields.is_empty(),
            _ => true,
        }
    }
}

/// What happens to an attribute that no schema defines (`[scim] unknown_attributes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownAttributes {
    /// Refuse the request: 400 `invalidSyntax` naming the attribute (the interop
    /// profile's rule; nothing is dropped silently).
    #[default]
    Reject,
    /// Store the rest and drop the attribute; the caller counts and shows every drop.
    Drop,
}

impl UnknownAttributes {
    /// The refusal for `unknown` under this policy, if any.
    pub fn check(self, unknown: &[UnknownAttr]) -> ScimResult<()> {
        if self == UnknownAttributes::Drop || unknown.is_empty() {
            return Ok(());
        }
        const SHOWN: usize = 10;
        let mut names: Vec<String> = unknown
            .iter()
            .take(SHOWN)
            .map(|u| format!("\"{}\"", u.name))
            .collect();
        if unknown.len() > SHOWN {
            names.push(format!("and {} more", unknown.len() - SHOWN));
        }
        Err(ScimError::invalid_syntax(format!(
            "no schema of this server defines the attribute {}; the bridge stores only \
             attributes it can serve back: ask its admin to declare a schema extension \
             for it, or stop sending it",
            names.join(", ")
        )))
    }
}

/// A normalized resource and the attributes of the input that no schema defines
/// (left out of `attrs`; the caller applies [`UnknownAttributes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// The resource in its stored form (see [`Attributes`]): canonical names, coerced
    /// values, read-only attributes and `password` removed.
    pub attrs: Attributes,
    /// The attributes of the input that no schema defines; left out of `attrs`.
    pub unknown: Vec<UnknownAttr>,
}

/// Normalizes a client-supplied resource (POST/PUT body, or a resource after PATCH)
/// into its canonical stored form. Attribute names are matched case-insensitively and
/// rewritten in canonical case; read-only attributes (`id`, `meta`, `groups`) and
/// `password` are dropped (they are defined: the server sets them, or never keeps
/// them); attributes no schema defines are listed in `unknown`; unknown schema URNs
/// in `schemas` are harmless (Entra ID sends some). Types are checked (400
/// `invalidValue` naming the attribute) with only the coercions of [`Leniency`] and
/// boolean strings; at most one value of a multi-valued attribute may be primary
/// (RFC 7643 §2.4); required attributes are enforced. Linear in the size of `body`.
pub fn normalize(rt: ResourceType, body: &Value) -> ScimResult<Normalized> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("the request body must be a JSON object"))?;
    let mut n = Normalizer::default();
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
            let fields = match value {
                Value::Null => continue,
                Value::Object(fields) => fields,
                _ => {
                    return Err(ScimError::invalid_syntax(format!(
                        "\"{}\" must be an object of extension attributes",
                        ext.id
                    )))
                }
            };
            for (name, v) in fields {
                // Clients repeat `schemas` inside extension objects; it is no attribute.
                if name.eq_ignore_ascii_case("schemas") {
                    continue;
                }
                match ext.attr(name) {
                    Some(def) => {
                        let label = Label::extension(ext.id, def.name);
                        n.put(&mut out, Some(ext.id), def, v, label)?
                    }
                    None => n.unknown(format!("{}:{name}", ext.id), v),
                }
            }
            continue;
        }
        if key.len() > 4 && key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("urn:")) {
            // A URN-qualified attribute name at the top level, or an extension object
            // under a URN no schema has.
            let found = AttrPath::parse(key)
                .ok()
                .filter(|p| p.sub.is_none() && !p.is_whole_schema())
                .and_then(|p| p.resolve(rt));
            match (found, value) {
                (Some(found), _) => n.put(
                    &mut out,
                    found.schema.map(|s| s.id),
                    found.def,
                    value,
                    Label::new(key),
                )?,
                (None, Value::Object(fields)) => {
                    for (name, v) in fields {
                        if !name.eq_ignore_ascii_case("schemas") {
                            n.unknown(format!("{key}:{name}"), v);
                        }
                    }
                }
                (None, other) => n.unknown(key.clone(), other),
            }
            continue;
        }
        let def = COMMON_ATTRIBUTES
            .iter()
            .chain(rt.schema().attributes.iter())
            .find(|a| a.name.eq_ignore_ascii_case(key));
        match def {
            Some(def) => n.put(&mut out, None, def, value, Label::new(def.name))?,
            None => n.unknown(key.clone(), value),
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
    for ext in rt.extensions() {
        for def in ext.attributes.iter().filter(|a| a.required) {
            let present = out
                .get(ext.id)
                .and_then(|o| o.get(def.name))
                .is_some_and(is_present);
            if !present {
                return Err(ScimError::invalid_value(format!(
                    "the attribute \"{}:{}\" is required",
                    ext.id, def.name
                )));
            }
        }
    }
    Ok(Normalized {
        attrs: out,
        unknown: n.unknown,
    })
}

fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
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
        // not know is not: Entra ID sends a misspelt enterprise URN. Attributes under
        // an unknown URN are what counts, and those are refused or dropped.
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

/// How errors and unknown names call the attribute being normalized:
/// `urn:name.sub`. Written only when an error or an unknown name needs it: building
/// it for every sub-attribute was a fifth of a create's normalization (issue 10).
#[derive(Clone, Copy)]
struct Label<'a> {
    urn: Option<&'a str>,
    name: &'a str,
    sub: Option<&'a str>,
}

impl<'a> Label<'a> {
    fn new(name: &'a str) -> Label<'a> {
        Label {
            urn: None,
            name,
            sub: None,
        }
    }

    fn extension(urn: &'a str, name: &'a str) -> Label<'a> {
        Label {
            urn: Some(urn),
            name,
            sub: None,
        }
    }

    /// The label of sub-attribute `sub` of this attribute.
    fn sub(self, sub: &'a str) -> Label<'a> {
        Label {
            sub: Some(sub),
            ..self
        }
    }
}

impl std::fmt::Display for Label<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(urn) = self.urn {
            write!(f, "{urn}:")?;
        }
        f.write_str(self.name)?;
        if let Some(sub) = self.sub {
            write!(f, ".{sub}")?;
        }
        Ok(())
    }
}

/// Collects the unknown attributes met while normalizing.
#[derive(Default)]
struct Normalizer {
    unknown: Vec<UnknownAttr>,
}

impl Normalizer {
    fn unknown(&mut self, name: String, value: &Value) {
        if UnknownAttr::carries_data(value) {
            self.unknown.push(UnknownAttr::new(name, value));
        }
    }

    /// Writes one normalized attribute into `out` (or removes it when the value is
    /// unassigned), skipping attributes that clients cannot set.
    fn put(
        &mut self,
        out: &mut Attributes,
        ext: Option<&'static str>,
        def: &'static AttrDef,
        value: &Value,
        label: Label<'_>,
    ) -> ScimResult<()> {
        if matches!(def.mutability, Mutability::ReadOnly | Mutability::WriteOnly) {
            return Ok(());
        }
        let normalized = self.value(def, value, label)?;
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
    /// array, empty complex value). `label` names it in errors and unknown names.
    fn value(
        &mut self,
        def: &AttrDef,
        value: &Value,
        label: Label<'_>,
    ) -> ScimResult<Option<Value>> {
        if value.is_null() {
            return Ok(None);
        }
        if def.multi_valued {
            let items = match value {
                Value::Array(a) => a.as_slice(),
                // One object where a list of complex values is expected (Okta, Entra).
                Value::Object(_) if def.ty == AttrType::Complex => std::slice::from_ref(value),
                _ => {
                    return Err(ScimError::invalid_value(format!(
                        "the attribute \"{label}\" is multi-valued: send an array"
                    )))
                }
            };
            let mut out = Vec::with_capacity(items.len());
            // Duplicates are dropped in one pass: a set of canonical encodings, not a
            // scan of what was kept (20,000 values must not cost 20,000²). One value
            // (most emails, phone numbers, roles) has none to drop.
            let mut seen = HashSet::with_capacity(if items.len() > 1 { items.len() } else { 0 });
            for item in items {
                if let Some(v) = self.single(def, item, label)? {
                    if items.len() == 1 || seen.insert(dedup_key(&v)) {
                        out.push(v);
                    }
                }
            }
            if def.sub("primary").is_some()
                && out.iter().filter(|v| is_primary_value(v)).count() > 1
            {
                return Err(ScimError::invalid_value(format!(
                    "the attribute \"{label}\" has more than one value with \"primary\": true; \
                     at most one may be primary (RFC 7643 §2.4)"
                )));
            }
            return Ok(if out.is_empty() {
                None
            } else {
                Some(Value::Array(out))
            });
        }
        if let Value::Array(items) = value {
            // Entra ID sets the manager with a one-element array of {"$ref", "value"}.
            if let ([only], Leniency::BareId) = (items.as_slice(), def.leniency) {
                return self.single(def, only, label);
            }
            return Err(ScimError::invalid_value(format!(
                "the attribute \"{label}\" is single-valued; an array was given"
            )));
        }
        self.single(def, value, label)
    }

    fn single(
        &mut self,
        def: &AttrDef,
        value: &Value,
        label: Label<'_>,
    ) -> ScimResult<Option<Value>> {
        let wrong = |expected: &str| {
            ScimError::invalid_value(format!("the attribute \"{label}\" must be {expected}"))
        };
        Ok(Some(match def.ty {
            AttrType::Complex => match value {
                Value::Object(fields) => {
                    let mut m = Map::new();
                    for (k, v) in fields {
                        let Some(sub) = def.sub(k) else {
                            self.unknown(format!("{label}.{k}"), v);
                            continue;
                        };
                        if sub.mutability == Mutability::ReadOnly
                            && def.mutability != Mutability::ReadOnly
                        {
                            continue;
                        }
                        if let Some(v) = self.value(sub, v, label.sub(sub.name))? {
                            m.insert(sub.name.to_owned(), v);
                        }
                    }
                    if m.is_empty() {
                        return Ok(None);
                    }
                    Value::Object(m)
                }
                // Entra ID sends `manager` as a bare id string.
                Value::String(s) if def.leniency == Leniency::BareId => {
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
                Value::Number(n) if def.leniency == Leniency::NumberAsString => {
                    Value::String(n.to_string())
                }
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
}

/// Normalizes the value of one attribute outside a whole resource (a PATCH's member
/// additions). Returns the value (`None`: unassigned) and the unknown sub-attributes.
pub fn normalize_value(
    def: &AttrDef,
    value: &Value,
) -> ScimResult<(Option<Value>, Vec<UnknownAttr>)> {
    let mut n = Normalizer::default();
    let v = n.value(def, value, Label::new(def.name))?;
    Ok((v, n.unknown))
}

/// A key equal for equal values whatever the order of their object keys (JSON
/// objects are unordered).
pub(crate) fn dedup_key(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let sorted: std::collections::BTreeMap<&str, &Value> =
                m.iter().map(|(k, v)| (k.as_str(), v)).collect();
            serde_json::to_string(&sorted).unwrap_or_default()
        }
        other => other.to_string(),
    }
}

fn is_primary_value(v: &Value) -> bool {
    v.get("primary") == Some(&Value::Bool(true))
}

/// Leaves at most one `primary: true` in each multi-valued attribute of stored
/// attributes (the first stays primary): what an import of an older export and the
/// format upgrade do with data that format 1 stored as sent. Returns the names of the
/// attributes it changed.
pub fn demote_extra_primaries(rt: ResourceType, attrs: &mut Attributes) -> Vec<String> {
    let mut changed = Vec::new();
    let mut fix = |holder: &mut Map<String, Value>, def: &AttrDef, label: String| {
        if !def.multi_valued || def.sub("primary").is_none() {
            return;
        }
        let Some(Value::Array(items)) = holder.get_mut(def.name) else {
            return;
        };
        let mut seen = false;
        let mut demoted = false;
        for item in items.iter_mut() {
            if is_primary_value(item) {
                if seen {
                    item["primary"] = Value::Bool(false);
                    demoted = true;
                }
                seen = true;
            }
        }
        if demoted {
            changed.push(label);
        }
    };
    for def in rt.schema().attributes {
        fix(attrs, def, def.name.to_owned());
    }
    for ext in rt.extensions() {
        if let Some(Value::Object(fields)) = attrs.get_mut(ext.id) {
            for def in ext.attributes {
                fix(fields, def, format!("{}:{}", ext.id, def.name));
            }
        }
    }
    changed
}

/// Bounds on one request operation (a POST/PUT body, one PATCH operation, one Bulk
/// operation's data): how long a value may be and how many values one attribute may
/// carry. A group's stored members are not bounded; only what one operation adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest string value, in bytes (UTF-8).
    pub max_value_bytes: usize,
    /// Most values in one array.
    pub max_values: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_value_bytes: 32 << 10,
            max_values: 20_000,
        }
    }
}

/// Checks every string and array of a request body against `limits` in one pass;
/// the error (400 `invalidValue`) names the attribute and the limit.
pub fn check_request_limits(body: &Value, limits: &RequestLimits) -> ScimResult<()> {
    fn walk(v: &Value, name: &str, limits: &RequestLimits) -> ScimResult<()> {
        match v {
            Value::String(s) if s.len() > limits.max_value_bytes => {
                Err(ScimError::invalid_value(format!(
                    "the value of \"{name}\" is {} bytes long; the limit is {} bytes",
                    s.len(),
                    limits.max_value_bytes
                )))
            }
            Value::Array(items) => {
                if items.len() > limits.max_values {
                    return Err(ScimError::invalid_value(format!(
                        "\"{name}\" has {} values in one operation; the limit is {}: \
                         split the change into several requests",
                        items.len(),
                        limits.max_values
                    )));
                }
                items.iter().try_for_each(|i| walk(i, name, limits))
            }
            Value::Object(fields) => fields.iter().try_for_each(|(k, v)| {
                if k.len() > limits.max_value_bytes {
                    return Err(ScimError::invalid_value(format!(
                        "an attribute name of {} bytes is longer than the limit of {} bytes",
                        k.len(),
                        limits.max_value_bytes
                    )));
                }
                walk(v, k, limits)
            }),
            _ => Ok(()),
        }
    }
    walk(body, "the request", limits)
}

/// The `schemas` of a resource with these stored attributes: the resource type's
/// core schema, then every extension (built-in or declared) it holds values of
/// (RFC 7643 §3). What clients read and what a migration push sends.
pub fn schemas_of(rt: ResourceType, attrs: &Attributes) -> Value {
    let mut schemas = vec![Value::String(rt.schema().id.to_owned())];
    for ext in rt.extensions() {
        if attrs.contains_key(ext.id) {
            schemas.push(Value::String(ext.id.to_owned()));
        }
    }
    Value::Array(schemas)
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
    out.insert("schemas".into(), schemas_of(rt, &attrs));
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

/// A stored attribute as JSON text, in stored order: its name and its value's
/// text exactly as stored (compact, as serde_json wrote it).
pub type AttrText<'a> = (std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue);

/// [`render`] written straight to JSON text from the attributes' stored text: the
/// bytes `serde_json::to_vec(&render(..))` gives, without building a `Value` tree
/// of the attributes and serializing it again (issue 10: that round trip was most
/// of a read's work). `None` when the attributes hold a name the representation
/// sets itself (`schemas`, `id`, `meta`, `members`, `groups`), where [`render`]'s
/// replacing rules apply; normalized attributes never do.
pub fn render_text(
    rt: ResourceType,
    id: &str,
    attrs: &[AttrText<'_>],
    meta: &Meta,
    refs: Option<&[Reference]>,
    base: &str,
) -> Option<Vec<u8>> {
    const SET_BY_RENDER: [&str; 5] = ["schemas", "id", "meta", "members", "groups"];
    if attrs
        .iter()
        .any(|(k, _)| SET_BY_RENDER.contains(&k.as_ref()))
    {
        return None;
    }
    let size: usize = attrs.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum();
    let mut out = Vec::with_capacity(size + 320);
    // Writing JSON into a Vec cannot fail.
    let text = |out: &mut Vec<u8>, s: &str| {
        let _ = serde_json::to_writer(&mut *out, s);
    };
    out.extend_from_slice(b"{\"schemas\":[");
    text(&mut out, rt.schema().id);
    for ext in rt.extensions() {
        if attrs.iter().any(|(k, _)| k == ext.id) {
            out.push(b',');
            text(&mut out, ext.id);
        }
    }
    out.extend_from_slice(b"],\"id\":");
    text(&mut out, id);
    let external = attrs.iter().find(|(k, _)| k == "externalId");
    for (k, v) in external
        .into_iter()
        .chain(attrs.iter().filter(|(k, _)| k != "externalId"))
    {
        out.push(b',');
        text(&mut out, k);
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    if let Some(refs) = refs.filter(|r| !r.is_empty()) {
        // As `references_value` builds them, written directly.
        out.extend_from_slice(match rt {
            ResourceType::Group => b",\"members\":[",
            ResourceType::User => b",\"groups\":[",
        });
        for (i, r) in refs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_reference(&mut out, rt, ReferenceFields::ALL, &r.as_text(), base);
        }
        out.push(b']');
    }
    out.extend_from_slice(b",\"meta\":{\"resourceType\":");
    text(&mut out, rt.name());
    out.extend_from_slice(b",\"created\":");
    text(&mut out, &meta.created);
    out.extend_from_slice(b",\"lastModified\":");
    text(&mut out, &meta.last_modified);
    out.extend_from_slice(b",\"location\":");
    write_url(&mut out, base, rt, id);
    out.extend_from_slice(b",\"version\":");
    text(&mut out, &meta.etag());
    out.extend_from_slice(b"}}");
    Some(out)
}

/// A [`Reference`] borrowed for writing: lets a reader write references straight
/// from stored rows, without an owned `Reference` per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceText<'a> {
    /// As [`Reference::id`].
    pub id: &'a str,
    /// As [`Reference::rt`].
    pub rt: ResourceType,
    /// As [`Reference::display`].
    pub display: Option<&'a str>,
    /// As [`Reference::indirect`].
    pub indirect: bool,
}

impl Reference {
    /// The reference borrowed, for [`write_reference`].
    pub fn as_text(&self) -> ReferenceText<'_> {
        ReferenceText {
            id: &self.id,
            rt: self.rt,
            display: self.display.as_deref(),
            indirect: self.indirect,
        }
    }
}

/// Which sub-attributes of a reference (`value`, `$ref`, `display`, `type`: the
/// sub-attributes `references_value` gives, in that order) a response keeps; see
/// [`Projection::reference_fields`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferenceFields {
    /// `value`: the id referred to.
    pub value: bool,
    /// `$ref`: the URL of the resource referred to.
    pub uri: bool,
    /// `display`, written when the reference has one.
    pub display: bool,
    /// `type`: `User`/`Group` for a member, `direct`/`indirect` for a user's group.
    pub kind: bool,
}

impl ReferenceFields {
    /// Every sub-attribute: what a response without `attributes` or
    /// `excludedAttributes` shows.
    pub const ALL: ReferenceFields = ReferenceFields {
        value: true,
        uri: true,
        display: true,
        kind: true,
    };
}

/// Appends one reference of a resource of type `holder` (a group's member, a user's
/// group) to `out` as a JSON object with the sub-attributes `fields` keeps: the
/// bytes `serde_json` writes for the element `references_value` builds and
/// `Projection::apply` leaves (issue 10: a full read of a 100,000-member group built
/// and dropped a `Value` object per member).
pub fn write_reference(
    out: &mut Vec<u8>,
    holder: ResourceType,
    fields: ReferenceFields,
    r: &ReferenceText<'_>,
    base: &str,
) {
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, name: &[u8]| {
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.extend_from_slice(name);
    };
    if fields.value {
        key(out, b"\"value\":");
        write_json_str(out, r.id);
    }
    if fields.uri {
        key(out, b"\"$ref\":");
        write_url(out, base, r.rt, r.id);
    }
    if let (true, Some(d)) = (fields.display, r.display) {
        key(out, b"\"display\":");
        write_json_str(out, d);
    }
    if fields.kind {
        key(out, b"\"type\":");
        write_json_str(
            out,
            match holder {
                ResourceType::Group => r.rt.name(),
                ResourceType::User if r.indirect => "indirect",
                ResourceType::User => "direct",
            },
        );
    }
    if first {
        out.push(b'{');
    }
    out.push(b'}');
}

/// `{base}{endpoint}/{id}` as one JSON string, as `render` formats the URL: JSON
/// escapes each character alone, so the parts are escaped one after the other.
fn write_url(out: &mut Vec<u8>, base: &str, rt: ResourceType, id: &str) {
    out.push(b'"');
    write_json_str_contents(out, base);
    write_json_str_contents(out, rt.endpoint());
    out.push(b'/');
    write_json_str_contents(out, id);
    out.push(b'"');
}

/// `s` as a JSON string, the bytes `serde_json::to_writer` writes.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    write_json_str_contents(out, s);
    out.push(b'"');
}

/// `s` escaped as inside a JSON string, as `serde_json` escapes it: `"`, `\\` and
/// the control characters below U+0020, nothing else. Most texts (ids, URLs, names)
/// need none and are copied as they are.
fn write_json_str_contents(out: &mut Vec<u8>, s: &str) {
    // Without an early exit the compiler checks many bytes at a time.
    let plain = !s.bytes().fold(false, |escape, b| {
        escape | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut quoted = Vec::with_capacity(s.len() + 8);
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut quoted, s);
    out.extend_from_slice(&quoted[1..quoted.len() - 1]);
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
                ResourceType::User if r.indirect => "indirect",
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
    /// From the raw comma-separated `attributes` and `excludedAttributes` parameters
    /// (RFC 7644 §3.4.2.5, §3.9); `None` or blank entries are ignored. Errors: 400
    /// `invalidPath` when an entry is not an attribute path.
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

    /// What `apply` keeps of each reference of a resource of type `rt` (a group's
    /// `members`, a user's `groups`): `None` when it drops the attribute, else the
    /// sub-attributes it keeps. Projection goes by attribute names only, so one
    /// reference with every sub-attribute, projected, tells it for all (lets a
    /// reader write references as text, `write_reference`, and keep `apply`'s answer).
    pub fn reference_fields(&self, rt: ResourceType) -> Option<ReferenceFields> {
        if self.returns_default() {
            return Some(ReferenceFields::ALL);
        }
        let probe = Reference {
            id: String::new(),
            rt,
            display: Some(String::new()),
            indirect: false,
        };
        let (name, list) = references_value(rt, std::slice::from_ref(&probe), "")?;
        let mut one = Map::new();
        one.insert(name.into(), list);
        let kept = self.apply(rt, one);
        let item = kept.get(name)?.as_array()?.first()?.as_object()?;
        Some(ReferenceFields {
            value: item.contains_key("value"),
            uri: item.contains_key("$ref"),
            display: item.contains_key("display"),
            kind: item.contains_key("type"),
        })
    }

    /// Whether the projection returns every attribute returned by default (no
    /// `attributes` or `excludedAttributes`): `apply` then changes nothing.
    pub fn returns_default(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }

    /// Applies the projection to a rendered resource.
    pub fn apply(&self, rt: ResourceType, resource: Map<String, Value>) -> Map<String, Value> {
        // No parameters: everything stored is returned by default (`password`, the one
        // never-returned attribute, is never stored), so there is nothing to drop.
        if self.returns_default() {
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

    use crate::scim::schema::tests::TEST_EXTENSION_URN;
    use crate::scim::schema::USER_SCHEMA;

    fn attrs(rt: ResourceType, body: Value) -> Attributes {
        let n = normalize(rt, &body).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(n.unknown.is_empty(), "{body}: unknown {:?}", n.unknown);
        n.attrs
    }

    fn unknown_names(body: Value) -> Vec<String> {
        let n = normalize(ResourceType::User, &body).unwrap_or_else(|e| panic!("{body}: {e}"));
        n.unknown.into_iter().map(|u| u.name).collect()
    }

    #[test]
    fn normalizes_attribute_names_and_drops_read_only_and_password() {
        let out = attrs(
            ResourceType::User,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "USERNAME": "a@example.com", "id": "x", "meta": {}, "password": "secret",
                    "Active": "False", "emails": {"value": "a@example.com", "Primary": "true"},
                    "groups": [{"value": "g"}]}),
        );
        assert_eq!(
            Value::Object(out),
            json!({"userName": "a@example.com", "active": false,
                   "emails": [{"value": "a@example.com", "primary": true}]})
        );
    }

    #[test]
    fn non_ascii_keys_are_unknown_not_a_panic() {
        // Found by the `resource` fuzz target: byte 4 inside a multi-byte character.
        let key = "urn\u{196}etf:params:scim:schemas:extension:enterprise:2.0:User";
        let n = normalize(
            ResourceType::User,
            &json!({"userName": "a", key: {"department": "x"}}),
        )
        .unwrap();
        assert_eq!(Value::Object(n.attrs), json!({"userName": "a"}));
        assert_eq!(n.unknown[0].name, key);
    }

    #[test]
    fn every_kind_of_unknown_attribute_is_reported_not_stored() {
        let ent = ENTERPRISE_USER_URN;
        let names = unknown_names(json!({
            "userName": "a",
            "favouriteColour": "red",
            "name": {"givenName": "G", "foo": "x"},
            "emails": [{"value": "a@x", "label": "w"}],
            ent: {"department": "D", "shoeSize": 9, "manager": {"value": "m", "rank": 1}},
            "urn:ietf:params:scim:schemas:extension:acme:2.0:User": {"badge": "7", "floor": 3},
            "urn:ietf:params:scim:schemas:extension:acme:2.0:User:desk": "D1",
            TEST_EXTENSION_URN: {"badge": "B", "unheard": true},
        }));
        assert_eq!(
            names,
            [
                "favouriteColour".to_owned(),
                "name.foo".into(),
                "emails.label".into(),
                format!("{ent}:shoeSize"),
                format!("{ent}:manager.rank"),
                "urn:ietf:params:scim:schemas:extension:acme:2.0:User:badge".into(),
                "urn:ietf:params:scim:schemas:extension:acme:2.0:User:floor".into(),
                "urn:ietf:params:scim:schemas:extension:acme:2.0:User:desk".into(),
                format!("{TEST_EXTENSION_URN}:unheard"),
            ]
        );
        let n = normalize(
            ResourceType::Group,
            &json!({"displayName": "g", "owner": "x",
            "members": [{"value": "u", "operation": "add"}]}),
        )
        .unwrap();
        let names: Vec<&str> = n.unknown.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["owner", "members.operation"]);
    }

    #[test]
    fn explicit_nulls_and_empty_values_of_unknown_names_are_harmless() {
        assert!(unknown_names(
            json!({"userName": "a", "favouriteColour": null, "tags2": [],
            "urn:ietf:params:scim:schemas:extension:acme:2.0:User": {"badge": null},
            "name": {"foo": null}})
        )
        .is_empty());
    }

    #[test]
    fn schemas_list_every_extension_a_resource_holds() {
        let both = attrs(
            ResourceType::User,
            json!({"userName": "a", TEST_EXTENSION_URN: {"badge": "B"},
                   ENTERPRISE_USER_URN: {"department": "D"}}),
        );
        let listed = schemas_of(ResourceType::User, &both);
        let listed: Vec<&str> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(listed[0], ResourceType::User.schema().id);
        assert!(listed.contains(&TEST_EXTENSION_URN) && listed.contains(&ENTERPRISE_USER_URN));
        assert_eq!(listed.len(), 3);
        let plain = attrs(ResourceType::User, json!({"userName": "a"}));
        assert_eq!(
            schemas_of(ResourceType::User, &plain),
            json!([ResourceType::User.schema().id])
        );
    }

    #[test]
    fn declared_extension_attributes_are_stored_with_their_types() {
        let out = attrs(
            ResourceType::User,
            json!({"userName": "a", TEST_EXTENSION_URN: {"BADGE": "B-7", "clearance": 3,
                   "remote": "True", "tags": ["x", "y", "x"]}}),
        );
        assert_eq!(
            out[TEST_EXTENSION_URN],
            json!({"badge": "B-7", "clearance": 3, "remote": true, "tags": ["x", "y"]})
        );
        let qualified = attrs(
            ResourceType::User,
            json!({"userName": "a", format!("{TEST_EXTENSION_URN}:badge"): "Q"}),
        );
        assert_eq!(qualified[TEST_EXTENSION_URN], json!({"badge": "Q"}));
        for (body, attr) in [
            (json!({TEST_EXTENSION_URN: {"clearance": "3"}}), "clearance"),
            (json!({TEST_EXTENSION_URN: {"clearance": 2.5}}), "clearance"),
            (json!({TEST_EXTENSION_URN: {"tags": "x"}}), "tags"),
            (json!({TEST_EXTENSION_URN: {"badge": 7}}), "badge"),
        ] {
            let mut body = body;
            body["userName"] = json!("a");
            let e = normalize(ResourceType::User, &body).unwrap_err();
            assert_eq!(
                e.scim_type,
                Some(crate::scim::error::ScimType::InvalidValue),
                "{body}"
            );
            assert!(e.detail.contains(attr), "{body}: {}", e.detail);
        }
    }

    #[test]
    fn the_unknown_attribute_policy_refuses_with_invalid_syntax_or_drops() {
        let unknown = normalize(ResourceType::User, &json!({"userName": "a", "x": 1}))
            .unwrap()
            .unknown;
        let e = UnknownAttributes::Reject.check(&unknown).unwrap_err();
        assert_eq!(
            e.scim_type,
            Some(crate::scim::error::ScimType::InvalidSyntax)
        );
        assert!(e.detail.contains("\"x\""));
        UnknownAttributes::Drop.check(&unknown).unwrap();
        UnknownAttributes::Reject.check(&[]).unwrap();
    }

    #[test]
    fn requires_user_name() {
        let err = normalize(ResourceType::User, &json!({"displayName": "x"})).unwrap_err();
        assert_eq!(err.status, 400);
        let err = normalize(ResourceType::User, &json!({"userName": "  "})).unwrap_err();
        assert_eq!(err.status, 400);
    }

    #[test]
    fn rejects_wrong_types_naming_the_attribute() {
        let ent = ENTERPRISE_USER_URN;
        for (body, attr) in [
            (json!({"userName": true}), "userName"),
            (json!({"userName": 12}), "userName"),
            (json!({"userName": "a", "active": "maybe"}), "active"),
            (json!({"userName": "a", "active": 1}), "active"),
            (json!({"userName": "a", "name": "x"}), "name"),
            (
                json!({"userName": "a", "displayName": ["a", "b"]}),
                "displayName",
            ),
            (json!({"userName": "a", "displayName": 5}), "displayName"),
            (json!({"userName": "a", "emails": "nope"}), "emails"),
            (json!({"userName": "a", "emails": ["nope"]}), "emails"),
            (
                json!({"userName": "a", "emails": [{"value": 5}]}),
                "emails.value",
            ),
            (
                json!({"userName": "a", "emails": [{"value": "a@x", "primary": "yes"}]}),
                "emails.primary",
            ),
            (
                json!({"userName": "a", "phoneNumbers": 5551234}),
                "phoneNumbers",
            ),
            (
                json!({"userName": "a", "name": [{"givenName": "G"}]}),
                "name",
            ),
            (
                json!({"userName": "a", "name": {"givenName": 5}}),
                "name.givenName",
            ),
            (
                json!({"userName": "a", ent: {"department": 42}}),
                "department",
            ),
            (json!({"userName": "a", ent: {"manager": 42}}), "manager"),
        ] {
            let err = normalize(ResourceType::User, &body).unwrap_err();
            assert_eq!(
                (err.status, err.scim_type),
                (400, Some(crate::scim::error::ScimType::InvalidValue)),
                "{body}"
            );
            assert!(err.detail.contains(attr), "{body}: {}", err.detail);
        }
        let e = normalize(ResourceType::Group, &json!({"displayName": 7})).unwrap_err();
        assert!(e.detail.contains("displayName"));
        assert_eq!(
            normalize(ResourceType::User, &json!([1, 2]))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn keeps_exactly_the_coercions_idps_need() {
        let ent = ENTERPRISE_USER_URN;
        let out = attrs(
            ResourceType::User,
            json!({"userName": "a", "active": "TRUE",
                   "emails": {"value": "a@x", "primary": "False"},
                   ent: {"employeeNumber": 701984, "costCenter": 4130, "manager": "m1"}}),
        );
        assert_eq!(out["active"], json!(true));
        assert_eq!(out["emails"], json!([{"value": "a@x", "primary": false}]));
        assert_eq!(
            out[ent],
            json!({"employeeNumber": "701984", "costCenter": "4130", "manager": {"value": "m1"}})
        );
    }

    #[test]
    fn entra_unknown_schema_urns_are_ignored() {
        // Entra ID's documented Create Group and Create User requests.
        let group = attrs(
            ResourceType::Group,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group",
                                "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
                    "displayName": "g"}),
        );
        assert_eq!(Value::Object(group), json!({"displayName": "g"}));
        let user = attrs(
            ResourceType::User,
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                                "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
                    "userName": "a", "department": null, "manager": null}),
        );
        assert_eq!(Value::Object(user), json!({"userName": "a"}));
        // The ADSCIM schema is defined (empty): an object under it carries nothing.
        let group = attrs(
            ResourceType::Group,
            json!({"displayName": "g",
                   "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group": {}}),
        );
        assert_eq!(Value::Object(group), json!({"displayName": "g"}));
    }

    #[test]
    fn at_most_one_primary_in_every_multi_valued_attribute() {
        let with_primary: Vec<&AttrDef> = USER_SCHEMA
            .attributes
            .iter()
            .filter(|a| a.multi_valued && a.sub("primary").is_some())
            .collect();
        assert_eq!(
            with_primary.len(),
            8,
            "emails, phoneNumbers, ims, photos, addresses, entitlements, roles, x509Certificates"
        );
        for def in with_primary {
            let value_key = if def.name == "addresses" {
                "formatted"
            } else {
                "value"
            };
            let item = |v: &str, primary: Value| json!({value_key: v, "primary": primary});
            let two = json!({"userName": "a", def.name: [item("x", json!(true)), item("y", json!("True"))]});
            let e = normalize(ResourceType::User, &two).unwrap_err();
            assert_eq!(
                e.scim_type,
                Some(crate::scim::error::ScimType::InvalidValue),
                "{}",
                def.name
            );
            assert!(
                e.detail.contains(def.name) && e.detail.contains("primary"),
                "{}",
                e.detail
            );
            let one = json!({"userName": "a", def.name: [item("x", json!(true)), item("y", json!(false))]});
            attrs(ResourceType::User, one);
        }
    }

    #[test]
    fn extra_primaries_are_demoted_for_repairs() {
        let mut a = Attributes::new();
        a.insert(
            "emails".into(),
            json!([{"value": "a", "primary": true}, {"value": "b", "primary": true}]),
        );
        a.insert("roles".into(), json!([{"value": "r", "primary": true}]));
        assert_eq!(
            demote_extra_primaries(ResourceType::User, &mut a),
            ["emails"]
        );
        assert_eq!(a["emails"][1]["primary"], json!(false));
        assert_eq!(a["emails"][0]["primary"], json!(true));
    }

    #[test]
    fn duplicates_are_dropped_in_linear_time_whatever_the_key_order() {
        // 40,000 values, half of them repeats with their keys in another order: a
        // scan of the kept values per value (the old way) would compare ~8·10^8 pairs.
        let n = 20_000;
        let mut emails: Vec<Value> = (0..n)
            .map(|i| json!({"value": format!("u{i}@example.com"), "type": "work"}))
            .collect();
        emails
            .extend((0..n).map(|i| json!({"type": "work", "value": format!("u{i}@example.com")})));
        let out = attrs(
            ResourceType::User,
            json!({"userName": "a", "emails": emails}),
        );
        assert_eq!(out["emails"].as_array().unwrap().len(), n);
    }

    #[test]
    fn request_limits_bound_value_length_and_values_per_operation() {
        let limits = RequestLimits {
            max_value_bytes: 1024,
            max_values: 100,
        };
        check_request_limits(
            &json!({"userName": "a".repeat(1024), "emails": vec![json!({"value": "x"}); 100]}),
            &limits,
        )
        .unwrap();
        let e = check_request_limits(&json!({"userName": "a".repeat(1025)}), &limits).unwrap_err();
        assert!(
            e.detail.contains("userName") && e.detail.contains("1024"),
            "{}",
            e.detail
        );
        let e = check_request_limits(
            &json!({"emails": vec![json!({"value": "x"}); 101]}),
            &limits,
        )
        .unwrap_err();
        assert!(
            e.detail.contains("emails") && e.detail.contains("100"),
            "{}",
            e.detail
        );
        // Nested: a PATCH operation's value, a sub-attribute.
        let e = check_request_limits(
            &json!({"Operations": [{"op": "add", "path": "members", "value": vec![json!({"value": "u"}); 101]}]}),
            &limits,
        )
        .unwrap_err();
        assert!(e.detail.contains("value"), "{}", e.detail);
        let e = check_request_limits(&json!({"name": {"givenName": "é".repeat(600)}}), &limits)
            .unwrap_err();
        assert!(e.detail.contains("givenName"), "{}", e.detail);
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
        let out = attrs(
            ResourceType::User,
            json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": "m1"},
                    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "R&D"}),
        );
        assert_eq!(
            out[ENTERPRISE_USER_URN],
            json!({"manager": {"value": "m1"}, "department": "R&D"})
        );
    }

    #[test]
    fn entra_manager_as_a_one_element_array() {
        let out = attrs(
            ResourceType::User,
            json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": [{"$ref": "https://x/Users/m1", "value": "m1"}]}}),
        );
        assert_eq!(out[ENTERPRISE_USER_URN]["manager"]["value"], "m1");
        let two = json!({"userName": "a", ENTERPRISE_USER_URN: {"manager": [{"value": "m1"}, {"value": "m2"}]}});
        assert_eq!(normalize(ResourceType::User, &two).unwrap_err().status, 400);
    }

    fn sample() -> Map<String, Value> {
        let attrs = attrs(
            ResourceType::User,
            json!({"userName": "a", "displayName": "A", "name": {"givenName": "G", "familyName": "F"},
                    ENTERPRISE_USER_URN: {"department": "D", "costCenter": "C"}}),
        );
        let meta = Meta {
            created: "2026-01-01T00:00:00Z".into(),
            last_modified: "2026-01-01T00:00:00Z".into(),
            version: 3,
            groups_tag: None,
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

    /// `write_reference` with the fields `reference_fields` gives writes the bytes
    /// that serializing `references_value`'s elements after `Projection::apply`
    /// gives (the streamed group read relies on it, issue 10), for every
    /// projection of the references and texts that need escaping.
    #[test]
    fn written_references_are_the_projected_trees_bytes() {
        let names = [
            None,
            Some("Ann"),
            Some(""),
            Some("Zoë \"Q\" O'Brien"),
            Some("back\\slash"),
            Some("tab\there"),
            Some("line\nbreak, bell\u{7}, del\u{7f}, nul\u{0}, unit\u{1f}"),
            Some("日本語 🙂 </script>"),
        ];
        let ids = [
            "0190a1b2-0000-7000-8000-000000000001",
            "q\"",
            "b\\",
            "c\u{1}",
        ];
        let mut refs = Vec::new();
        for (i, display) in names.iter().enumerate() {
            for id in ids {
                for rt in [ResourceType::User, ResourceType::Group] {
                    refs.push(Reference {
                        id: id.to_owned(),
                        rt,
                        display: display.map(str::to_owned),
                        indirect: i % 2 == 1,
                    });
                }
            }
        }
        let projections = [
            (None, None),
            (Some("members"), None),
            (Some("groups"), None),
            (Some("members.value"), None),
            (Some("MEMBERS.Value,members.type"), None),
            (Some("groups.display,groups.$ref"), None),
            (Some("displayName"), None),
            (Some("members.display"), Some("members.display")),
            (None, Some("members.display")),
            (None, Some("groups.value,groups.type")),
            (
                None,
                Some("members.$ref,members.value,members.display,members.type"),
            ),
            (None, Some("members")),
            (None, Some("displayName")),
        ];
        for base in ["https://h:8443/scim/v2", "https://h/\"q", "https://h/\\b"] {
            for holder in [ResourceType::Group, ResourceType::User] {
                for (attributes, excluded) in projections {
                    let p = Projection::parse(attributes, excluded).unwrap();
                    let (name, list) = references_value(holder, &refs, base).unwrap();
                    let mut one = Map::new();
                    one.insert(name.into(), list);
                    let expected: Option<Vec<Vec<u8>>> =
                        p.apply(holder, one).remove(name).map(|list| {
                            let Value::Array(items) = list else {
                                panic!("{list}")
                            };
                            items
                                .iter()
                                .map(|i| serde_json::to_vec(i).unwrap())
                                .collect()
                        });
                    let fields = p.reference_fields(holder);
                    let case = format!("{holder:?} {attributes:?} {excluded:?} {base}");
                    assert_eq!(fields.is_some(), expected.is_some(), "{case}");
                    let (Some(fields), Some(expected)) = (fields, expected) else {
                        continue;
                    };
                    for (r, want) in refs.iter().zip(&expected) {
                        let mut got = Vec::new();
                        write_reference(&mut got, holder, fields, &r.as_text(), base);
                        assert_eq!(
                            String::from_utf8(got).unwrap(),
                            String::from_utf8(want.clone()).unwrap(),
                            "{case} {r:?}"
                        );
                    }
                }
            }
        }
    }
}
