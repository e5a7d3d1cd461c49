//! SCIM PATCH (RFC 7644 §3.5.2): parses a PatchOp request body and applies its
//! operations to a resource held as a JSON object with canonical attribute names.
//! Owns path resolution, add/replace/remove semantics, mutability and the IdP
//! leniencies listed below. Does not check value types: a later normalisation pass
//! turns `"False"` into `false`, a bare manager id into `{"value": id}` and so on.
//!
//! Leniencies, each covered by a test naming the IdP:
//! - op names in any case (Entra ID sends `"Replace"`, `"Add"`, `"Remove"`);
//! - no-path values with dotted (`name.givenName`) and URN-qualified keys (Entra ID);
//! - add/replace through `emails[type eq "work"].value` when no element matches
//!   creates `{"type": "work", "value": …}` (Entra ID), only for filters that are
//!   plain `eq` comparisons joined by `and`;
//! - remove of `members` with a value list removes exactly the listed members
//!   (Entra ID), and removing a member that is not there, in either form, is a
//!   no-op success (IdPs resend removals; other attributes keep `noTarget`);
//! - a no-path replace carrying the resource's own `id`, or `meta`/`schemas`, ignores
//!   those keys (Okta's group rename), and merges complex values sub-attribute by
//!   sub-attribute (Okta); with a path, `replace` of a complex value replaces it whole.
//!
//! Attribute names no schema defines are not errors here: [`apply`] skips those
//! operations and returns them, and the caller refuses or drops them
//! (`resource::UnknownAttributes`). A PATCH applies all of its operations or none: on
//! error the resource is untouched. Every step is linear in the size of the request
//! and of the attribute it changes.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::error::{ScimError, ScimResult, ScimType};
use super::filter::{self, get_ci, is_present, CompareOp, Filter};
use super::path::AttrPath;
use super::resource::UnknownAttr;
use super::schema::{AttrDef, AttrType, Mutability, ResourceType, SchemaDef, GROUP_URN};
use super::text::caseless;

/// The schema URN a PATCH request body must list in `schemas` (RFC 7644 §3.5.2).
pub const PATCH_OP_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Most operations accepted in one PATCH request.
pub const MAX_OPERATIONS: usize = 1000;

/// The `op` of one PATCH operation (RFC 7644 §3.5.2), accepted in any case (Entra ID
/// sends `"Replace"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchOpKind {
    /// `add` (RFC 7644 §3.5.2.1): sets a singular attribute, appends to a multi-valued one;
    /// needs a `value`.
    Add,
    /// `remove` (RFC 7644 §3.5.2.2): unassigns what the `path` selects; needs a `path`
    /// (else 400 `noTarget`), the `value` is optional (a member list for `members`).
    Remove,
    /// `replace` (RFC 7644 §3.5.2.3): sets what the `path` selects, or with no path merges
    /// the `value` object into the resource; needs a `value`.
    Replace,
}

impl PatchOpKind {
    fn as_str(self) -> &'static str {
        match self {
            PatchOpKind::Add => "add",
            PatchOpKind::Remove => "remove",
            PatchOpKind::Replace => "replace",
        }
    }
}

/// A PATCH `path`: an attribute path, or `attr[valFilter]` optionally followed by
/// `.subAttr`. With a filter, `attr.sub` holds the sub-attribute written after `]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    /// The attribute the path names (`emails`, `name.givenName`, `urn:…:User:manager`); after
    /// a filter, `attr.sub` is the sub-attribute written after `]`.
    pub attr: AttrPath,
    /// The value filter of `attr[valFilter]`, selecting elements of a multi-valued complex
    /// attribute (RFC 7644 §3.5.2, `valuePath`); `None` for a plain attribute path.
    pub filter: Option<Filter>,
}

impl PatchPath {
    /// Parses a path; every syntax error is 400 `invalidPath`.
    pub fn parse(s: &str) -> ScimResult<PatchPath> {
        let s = s.trim();
        if !s.contains('[') {
            return Ok(PatchPath {
                attr: AttrPath::parse(s)?,
                filter: None,
            });
        }
        let (mut attr, filter, rest) = filter::parse_value_path(s)
            .map_err(|e| ScimError::invalid_path(format!("invalid path \"{s}\": {}", e.detail)))?;
        if attr.sub.is_some() {
            return Err(ScimError::invalid_path(format!(
                "invalid path \"{s}\": put the filter right after the attribute, e.g. emails[type eq \"work\"].value"
            )));
        }
        let rest = rest.trim();
        if !rest.is_empty() {
            let sub = rest
                .strip_prefix('.')
                .and_then(|name| AttrPath::parse(name).ok())
                .filter(|p| p.urn.is_none() && p.sub.is_none() && !p.attr.is_empty());
            match sub {
                Some(p) => attr.sub = Some(p.attr),
                None => {
                    return Err(ScimError::invalid_path(format!(
                        "invalid path \"{s}\": only \".subAttribute\" may follow the filter"
                    )))
                }
            }
        }
        Ok(PatchPath {
            attr,
            filter: Some(filter),
        })
    }
}

/// One parsed operation of a PATCH request (RFC 7644 §3.5.2), as [`parse_request`]
/// returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatchOp {
    /// What the operation does.
    pub op: PatchOpKind,
    /// The target; `None` when the request has no `path` (or an empty one), which `add` and
    /// `replace` read as "the value is an object of attributes".
    pub path: Option<PatchPath>,
    /// The JSON value as sent, not yet type-checked; `Some` for every `add` and `replace`
    /// ([`parse_request`] answers 400 `invalidValue` otherwise).
    pub value: Option<Value>,
}

/// A PATCH of a Group that only adds and removes members, expressed as a change to
/// the membership rows, so its cost does not grow with the group's size.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberDelta {
    /// Member objects to add (`value`, optional `type` and `display`).
    pub add: Vec<Value>,
    /// Member ids to remove; one that is not a member is a no-op (Entra's value-array
    /// removal and Okta's `members[value eq "…"]` alike).
    pub remove: Vec<String>,
}

fn is_members(p: &AttrPath) -> bool {
    p.attr.eq_ignore_ascii_case("members")
        && p.sub.is_none()
        && p.urn
            .as_deref()
            .is_none_or(|u| u.eq_ignore_ascii_case(GROUP_URN))
}

/// The membership change of a Group PATCH made only of member additions and
/// removals; `None` when any operation does anything else (then the whole resource
/// is patched the general way).
pub fn member_delta(rt: ResourceType, ops: &[PatchOp]) -> Option<MemberDelta> {
    if rt != ResourceType::Group {
        return None;
    }
    let mut delta = MemberDelta {
        add: Vec::new(),
        remove: Vec::new(),
    };
    for op in ops {
        let path = op.path.as_ref()?;
        if !is_members(&path.attr) {
            return None;
        }
        let value_objects = |v: &Value| -> Option<Vec<Value>> {
            let items = match v {
                Value::Array(a) => a.clone(),
                Value::Object(_) => vec![v.clone()],
                _ => return None,
            };
            items
                .iter()
                .all(|i| {
                    i.as_object()
                        .and_then(|o| get_ci(o, "value"))
                        .is_some_and(Value::is_string)
                })
                .then_some(items)
        };
        match (op.op, &path.filter, &op.value) {
            (PatchOpKind::Add, None, Some(v)) => delta.add.extend(value_objects(v)?),
            (PatchOpKind::Remove, None, Some(v)) => {
                for item in value_objects(v)? {
                    let id = item
                        .as_object()
                        .and_then(|o| get_ci(o, "value"))
                        .and_then(Value::as_str)?;
                    delta.remove.push(id.to_owned());
                }
            }
            (
                PatchOpKind::Remove,
                Some(Filter::Compare {
                    path: fp,
                    op: CompareOp::Eq,
                    value: Value::String(id),
                }),
                None,
            ) if fp.attr.eq_ignore_ascii_case("value") && fp.sub.is_none() && fp.urn.is_none() => {
                delta.remove.push(id.clone());
            }
            _ => return None,
        }
    }
    // An id both added and removed in one request: order matters, patch the general way.
    let added: HashSet<&str> = delta
        .add
        .iter()
        .filter_map(|a| {
            a.as_object()
                .and_then(|o| get_ci(o, "value"))
                .and_then(Value::as_str)
        })
        .collect();
    if delta.remove.iter().any(|r| added.contains(r.as_str())) {
        return None;
    }
    Some(delta)
}

/// Parses a PatchOp request body (RFC 7644 §3.5.2). Structure errors are
/// `invalidSyntax`, bad paths `invalidPath`, more than [`MAX_OPERATIONS`]
/// operations `invalidValue`.
pub fn parse_request(body: &Value) -> ScimResult<Vec<PatchOp>> {
    let obj = body.as_object().ok_or_else(|| {
        ScimError::invalid_syntax("a PATCH body must be a JSON object with schemas and Operations")
    })?;
    let has_schema = get_ci(obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| {
            s.iter().any(|u| {
                u.as_str()
                    .is_some_and(|u| u.eq_ignore_ascii_case(PATCH_OP_URN))
            })
        });
    if !has_schema {
        return Err(ScimError::invalid_syntax(format!(
            "a PATCH body's schemas must contain \"{PATCH_OP_URN}\""
        )));
    }
    let ops = get_ci(obj, "Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("a PATCH body needs an Operations array"))?;
    if ops.is_empty() {
        return Err(ScimError::invalid_syntax(
            "Operations is empty; send at least one operation",
        ));
    }
    if ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_value(format!(
            "{} operations in one PATCH; the limit is {MAX_OPERATIONS}, split the request",
            ops.len()
        )));
    }
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            parse_op(op).map_err(|mut e| {
                e.detail = format!("operation {}: {}", i + 1, e.detail);
                e
            })
        })
        .collect()
}

fn parse_op(op: &Value) -> ScimResult<PatchOp> {
    let obj = op
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("an operation must be a JSON object"))?;
    let name = get_ci(obj, "op").and_then(Value::as_str).ok_or_else(|| {
        ScimError::invalid_syntax("an operation needs \"op\": \"add\", \"remove\" or \"replace\"")
    })?;
    let kind = [PatchOpKind::Add, PatchOpKind::Remove, PatchOpKind::Replace]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            ScimError::invalid_syntax(format!("unknown op \"{name}\"; use add, remove or replace"))
        })?;
    let path = match get_ci(obj, "path") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(PatchPath::parse(s)?),
        Some(_) => return Err(ScimError::invalid_path("\"path\" must be a string")),
    };
    let value = get_ci(obj, "value").cloned();
    if kind != PatchOpKind::Remove && value.is_none() {
        return Err(ScimError::invalid_value(format!(
            "\"{}\" needs a \"value\"",
            kind.as_str()
        )));
    }
    Ok(PatchOp {
        op: kind,
        path,
        value,
    })
}

/// Applies the operations in order and returns the attributes they named that no
/// schema defines (those operations, or keys, were skipped). All or nothing: on error
/// `resource` is left as it was and the error names the failing operation.
pub fn apply(
    rt: ResourceType,
    resource: &mut Map<String, Value>,
    ops: &[PatchOp],
) -> ScimResult<Vec<UnknownAttr>> {
    let mut work = resource.clone();
    let mut unknown = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        apply_op(rt, &mut work, op, &mut unknown).map_err(|mut e| {
            e.detail = format!("operation {}: {}", i + 1, e.detail);
            e
        })?;
    }
    tidy_extensions(rt, resource, &mut work);
    *resource = work;
    Ok(unknown)
}

/// How a path-less operation writes complex values: it merges them (Okta sends
/// partial objects that way); an operation with a path replaces them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    WithPath,
    PathLess,
}

fn apply_op(
    rt: ResourceType,
    res: &mut Map<String, Value>,
    op: &PatchOp,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<()> {
    let Some(path) = &op.path else {
        if op.op == PatchOpKind::Remove {
            return Err(ScimError::no_target(
                "remove needs a path naming what to remove",
            ));
        }
        return match &op.value {
            Some(Value::Object(obj)) => apply_object(rt, res, op.op, None, obj, unknown),
            _ => Err(ScimError::invalid_value(format!(
                "{} without a path needs an object of attributes as its value",
                op.op.as_str()
            ))),
        };
    };
    if path.attr.is_whole_schema() && path.filter.is_none() {
        return apply_whole_schema(rt, res, op, &path.attr, unknown);
    }
    let Some(target) = resolve(rt, path)? else {
        note_unknown(unknown, path, op.op, op.value.as_ref());
        return Ok(());
    };
    apply_at(
        res,
        &target,
        op.op,
        op.value.as_ref(),
        Form::WithPath,
        unknown,
    )
}

/// Records an operation on an attribute no schema defines. Setting one to null
/// changes nothing and is not recorded (Entra ID clears unmapped attributes so).
fn note_unknown(
    unknown: &mut Vec<UnknownAttr>,
    path: &PatchPath,
    kind: PatchOpKind,
    value: Option<&Value>,
) {
    let a = &path.attr;
    let mut name = match &a.urn {
        Some(urn) => format!("{urn}:{}", a.attr),
        None => a.attr.clone(),
    };
    if let Some(sub) = &a.sub {
        name = format!("{name}.{sub}");
    }
    match (kind, value) {
        (PatchOpKind::Remove, _) => unknown.push(UnknownAttr::new(name, &Value::Null)),
        (_, Some(v)) if UnknownAttr::carries_data(v) => unknown.push(UnknownAttr::new(name, v)),
        _ => {}
    }
}

/// `"path": "urn:…:enterprise:2.0:User"`: the value is that extension's object.
fn apply_whole_schema(
    rt: ResourceType,
    res: &mut Map<String, Value>,
    op: &PatchOp,
    path: &AttrPath,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<()> {
    let urn = path.urn.as_deref().unwrap_or_default();
    let schema = rt.schema_by_urn(urn).ok_or_else(|| {
        ScimError::invalid_path(format!(
            "schema \"{urn}\" does not apply to {} resources",
            rt.name()
        ))
    })?;
    let is_core = std::ptr::eq(schema, rt.schema());
    match (op.op, &op.value) {
        (PatchOpKind::Remove, _) if is_core => Err(ScimError::invalid_path(
            "the core schema cannot be removed; name an attribute",
        )),
        (PatchOpKind::Remove, _) => {
            canonicalize_key(res, schema.id);
            res.remove(schema.id);
            Ok(())
        }
        (kind, Some(Value::Object(obj))) => apply_object(rt, res, kind, Some(schema), obj, unknown),
        (kind, _) => Err(ScimError::invalid_value(format!(
            "{} on a schema path needs an object of that schema's attributes",
            kind.as_str()
        ))),
    }
}

/// A no-path add/replace: each key names an attribute (any case, dotted, or
/// URN-qualified) or an extension whose object holds more of them.
fn apply_object(
    rt: ResourceType,
    res: &mut Map<String, Value>,
    kind: PatchOpKind,
    schema: Option<&'static SchemaDef>,
    obj: &Map<String, Value>,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<()> {
    for (key, value) in obj {
        // Clients (scim2-tester among them) repeat `schemas` inside an extension's
        // object too; it is never an attribute to change.
        if key.eq_ignore_ascii_case("schemas") {
            continue;
        }
        if schema.is_none() {
            if let Some(ext) = rt.schema_by_urn(key) {
                match value {
                    Value::Object(inner) => apply_object(rt, res, kind, Some(ext), inner, unknown)?,
                    Value::Null if !std::ptr::eq(ext, rt.schema()) => {
                        canonicalize_key(res, ext.id);
                        res.remove(ext.id);
                    }
                    _ => {
                        return Err(ScimError::invalid_value(format!(
                            "\"{key}\" must be an object of that schema's attributes"
                        )))
                    }
                }
                continue;
            }
        }
        // Keys are paths: `title`, `name.givenName`, `urn:…:User:department`, even
        // `emails[type eq "work"].value`.
        let mut path = PatchPath::parse(key)?;
        if path.attr.urn.is_none() {
            path.attr.urn = schema.map(|s| s.id.to_owned());
        }
        if path.attr.is_whole_schema() {
            return Err(ScimError::invalid_path(format!(
                "schema \"{key}\" does not apply to {} resources",
                rt.name()
            )));
        }
        let Some(target) = resolve(rt, &path)? else {
            note_unknown(unknown, &path, kind, Some(value));
            continue;
        };
        // Okta sends the resource back with its id and meta; they are not changes.
        if target.sub.is_none() && target.extension.is_none() && target.filter.is_none() {
            match target.def.name {
                "meta" => continue,
                "id" if res.get("id") == Some(value) => continue,
                _ => {}
            }
        }
        apply_at(res, &target, kind, Some(value), Form::PathLess, unknown)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Targets

/// A path resolved against the schema.
struct Target<'p> {
    def: &'static AttrDef,
    extension: Option<&'static SchemaDef>,
    sub: Option<&'static AttrDef>,
    filter: Option<&'p Filter>,
}

impl Target<'_> {
    /// How the target is named in error messages, with the schema's spelling.
    fn name(&self) -> String {
        let filter = if self.filter.is_some() { "[…]" } else { "" };
        match self.sub {
            Some(sub) => format!("{}{filter}.{}", self.def.name, sub.name),
            None => format!("{}{filter}", self.def.name),
        }
    }
}

/// Resolves a path against the schemas; `None` when it names an attribute (or a
/// sub-attribute of a complex one) that no schema defines.
fn resolve(rt: ResourceType, path: &PatchPath) -> ScimResult<Option<Target<'_>>> {
    let attr = &path.attr;
    let Some(found) = attr.resolve(rt) else {
        return Ok(None);
    };
    let def = found.def;
    let sub = match &attr.sub {
        None => None,
        Some(_) if def.ty != AttrType::Complex => {
            return Err(ScimError::invalid_path(format!(
                "\"{}\" has no sub-attributes",
                def.name
            )))
        }
        Some(name) => match def.sub(name) {
            Some(sub) => Some(sub),
            None => return Ok(None),
        },
    };
    if let Some(f) = &path.filter {
        if def.ty != AttrType::Complex || !def.multi_valued {
            return Err(ScimError::invalid_path(format!(
                "a value filter needs a multi-valued complex attribute such as emails; \"{}\" is not one",
                def.name
            )));
        }
        // A filter naming a sub-attribute the schema lacks names an unknown attribute
        // (invalidSyntax); other filter mistakes make the path malformed (invalidPath).
        filter::validate_element(f, def).map_err(|e| {
            let kind = if e.detail.contains("has no sub-attribute") {
                ScimType::InvalidSyntax
            } else {
                ScimType::InvalidPath
            };
            ScimError::bad(kind, e.detail)
        })?;
    }
    Ok(Some(Target {
        def,
        extension: found.schema,
        sub,
        filter: path.filter.as_ref(),
    }))
}

// ---------------------------------------------------------------------------------
// Operations at a target

fn apply_at(
    res: &mut Map<String, Value>,
    t: &Target<'_>,
    kind: PatchOpKind,
    value: Option<&Value>,
    form: Form,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<()> {
    for def in [Some(t.def), t.sub].into_iter().flatten() {
        if def.mutability == Mutability::ReadOnly {
            return Err(ScimError::mutability(format!(
                "\"{}\" is readOnly; the service provider sets it",
                t.name()
            )));
        }
    }
    let value = match (kind, value) {
        (PatchOpKind::Remove, v) => return remove_at(res, t, v),
        // Setting null unassigns (RFC 7643 §2.5).
        (_, None | Some(Value::Null)) => return remove_at(res, t, None),
        (_, Some(v)) => v,
    };
    let Some(container) = container(res, t.extension, true) else {
        return Err(ScimError::internal());
    };
    canonicalize_key(container, t.def.name);
    let replace_whole = kind == PatchOpKind::Replace && form == Form::WithPath;
    let winner = match (t.filter, t.sub) {
        (None, None) => write_attribute(container, t, kind, value, replace_whole, unknown)?,
        (None, Some(sub)) => write_sub_everywhere(container, t, sub, value)?,
        (Some(f), sub) => write_filtered(container, t, f, sub, value, replace_whole, unknown)?,
    };
    settle_primary(container, t.def, winner);
    Ok(())
}

/// add/replace of a whole attribute. Returns the index of the element an add made
/// primary, if any. `replace_whole`: a singular complex value is replaced, not merged.
fn write_attribute(
    container: &mut Map<String, Value>,
    t: &Target<'_>,
    kind: PatchOpKind,
    value: &Value,
    replace_whole: bool,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<Option<usize>> {
    let def = t.def;
    let value = canonical_value(def, value);
    if def.multi_valued {
        let incoming = match value {
            Value::Array(items) => items,
            other => vec![other],
        };
        if kind == PatchOpKind::Replace {
            if incoming.is_empty() {
                container.remove(def.name);
            } else {
                container.insert(def.name.to_owned(), Value::Array(incoming));
            }
            return Ok(None);
        }
        let items = array_mut(container, def.name);
        // Existing elements by their `value`, so each added element is matched in
        // constant time (an add of 20,000 values must not compare 20,000²).
        let mut by_value: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, e) in items.iter().enumerate() {
            by_value.entry(element_key(def, e)).or_default().push(i);
        }
        let mut winner = None;
        for item in incoming {
            let key = element_key(def, &item);
            let found = by_value.get(&key).and_then(|candidates| {
                candidates
                    .iter()
                    .copied()
                    .find(|&i| items.get(i).is_some_and(|e| same_element(def, e, &item)))
            });
            let index = match found {
                Some(i) => {
                    if let (Some(Value::Object(existing)), Value::Object(new)) =
                        (items.get_mut(i), &item)
                    {
                        merge_object(def, existing, new, unknown)?;
                    }
                    i
                }
                None => {
                    items.push(item);
                    let i = items.len() - 1;
                    by_value.entry(key).or_default().push(i);
                    i
                }
            };
            if items.get(index).is_some_and(is_primary) {
                winner = Some(index);
            }
        }
        return Ok(winner);
    }
    let existing = container.get_mut(def.name);
    match (existing, &value) {
        (Some(Value::Object(existing)), Value::Object(new))
            if def.ty == AttrType::Complex && !replace_whole =>
        {
            merge_object(def, existing, new, unknown)?;
        }
        (Some(Value::Object(existing)), Value::Object(new)) if def.ty == AttrType::Complex => {
            check_immutable_subs(def, existing, new, def.name)?;
            container.insert(def.name.to_owned(), value);
        }
        (existing, _) => {
            check_immutable(def, existing.as_deref(), Some(&value), def.name)?;
            container.insert(def.name.to_owned(), value);
        }
    }
    Ok(None)
}

/// `name.givenName`, `manager.value`, or `emails.type` without a filter (every
/// element; one is created when there is none).
fn write_sub_everywhere(
    container: &mut Map<String, Value>,
    t: &Target<'_>,
    sub: &'static AttrDef,
    value: &Value,
) -> ScimResult<Option<usize>> {
    let def = t.def;
    if def.multi_valued {
        let items = array_mut(container, def.name);
        if items.is_empty() {
            items.push(Value::Object(Map::new()));
        }
        let mut winner = None;
        for (i, item) in items.iter_mut().enumerate() {
            set_sub(object_of(item), sub, value, &t.name())?;
            if is_primary(item) {
                winner.get_or_insert(i);
            }
        }
        return Ok(winner);
    }
    let entry = container
        .entry(def.name.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    set_sub(object_of(entry), sub, value, &t.name())?;
    Ok(None)
}

/// `emails[type eq "work"]` or `emails[type eq "work"].value`. `replace_whole`: the
/// matched elements are replaced by the value (RFC 7644 §3.5.2.3), not merged.
fn write_filtered(
    container: &mut Map<String, Value>,
    t: &Target<'_>,
    f: &Filter,
    sub: Option<&'static AttrDef>,
    value: &Value,
    replace_whole: bool,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<Option<usize>> {
    let def = t.def;
    let items = array_mut(container, def.name);
    let matched: Vec<usize> = (0..items.len())
        .filter(|&i| {
            items
                .get(i)
                .is_some_and(|e| filter::matches_element(f, def, e))
        })
        .collect();
    if matched.is_empty() {
        // Entra ID: `emails[type eq "work"].value` on a user without a work email
        // means "set the work email".
        if let (Some(sub), Some(pairs)) = (sub, eq_pairs(f, def)) {
            let mut element: Map<String, Value> =
                pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            element.insert(sub.name.to_owned(), value.clone());
            items.push(Value::Object(element));
            let i = items.len() - 1;
            return Ok(items.get(i).filter(|e| is_primary(e)).map(|_| i));
        }
        return Err(ScimError::no_target(format!(
            "no value of \"{}\" matches the path's filter",
            def.name
        )));
    }
    let new = match sub {
        None => match canonical_value(def, value) {
            Value::Object(obj) => Some(obj),
            _ => {
                return Err(ScimError::invalid_value(format!(
                    "\"{}\" needs an object of sub-attributes as its value",
                    t.name()
                )))
            }
        },
        Some(_) => None,
    };
    let mut winner = None;
    for i in matched {
        let Some(item) = items.get_mut(i) else {
            continue;
        };
        match (sub, &new) {
            (Some(sub), _) => set_sub(object_of(item), sub, value, &t.name())?,
            (None, Some(new)) if replace_whole => {
                let old = object_of(item);
                check_immutable_subs(def, old, new, &t.name())?;
                *old = new.clone();
            }
            (None, Some(new)) => merge_object(def, object_of(item), new, unknown)?,
            (None, None) => {}
        }
        if is_primary(item) {
            winner = Some(i);
        }
    }
    Ok(winner)
}

fn remove_at(
    res: &mut Map<String, Value>,
    t: &Target<'_>,
    value: Option<&Value>,
) -> ScimResult<()> {
    let def = t.def;
    if t.filter.is_none() && t.sub.is_none() && def.required {
        return Err(ScimError::mutability(format!(
            "\"{}\" is required and cannot be removed",
            def.name
        )));
    }
    // IdPs resend member removals: removing a member that is not there succeeds.
    let lenient = is_group_members(t);
    let container = match container(res, t.extension, false) {
        Some(c) => c,
        None if t.filter.is_some() && !lenient => {
            return Err(ScimError::no_target(format!(
                "no value of \"{}\" matches the path's filter",
                def.name
            )))
        }
        None => return Ok(()),
    };
    canonicalize_key(container, def.name);
    match (t.filter, t.sub) {
        (None, None) => match value {
            // Entra ID: remove "members" with a list removes exactly those members.
            Some(listed) if def.multi_valued && !listed.is_null() => {
                let listed: Vec<&Value> = match listed {
                    Value::Array(items) => items.iter().collect(),
                    other => vec![other],
                };
                // The listed values by bucket, so the removal is linear.
                let mut by_key: HashMap<String, Vec<&Value>> = HashMap::new();
                for l in listed {
                    by_key.entry(element_key(def, l)).or_default().push(l);
                }
                if let Some(Value::Array(items)) = container.get_mut(def.name) {
                    items.retain(|e| {
                        !by_key
                            .get(&element_key(def, e))
                            .is_some_and(|ls| ls.iter().any(|l| same_value(def, e, l)))
                    });
                }
            }
            _ => {
                check_immutable(def, container.get(def.name), None, def.name)?;
                container.remove(def.name);
            }
        },
        (None, Some(sub)) => {
            for item in elements_mut(container, def.name) {
                if let Value::Object(obj) = item {
                    check_immutable(sub, get_ci(obj, sub.name), None, &t.name())?;
                    canonicalize_key(obj, sub.name);
                    obj.remove(sub.name);
                }
            }
        }
        (Some(f), sub) => {
            let Some(Value::Array(items)) = container.get_mut(def.name) else {
                if lenient {
                    return Ok(());
                }
                return Err(ScimError::no_target(format!(
                    "no value of \"{}\" matches the path's filter",
                    def.name
                )));
            };
            let before = items.len();
            let mut matched = 0;
            match sub {
                None => {
                    items.retain(|e| !filter::matches_element(f, def, e));
                    matched = before - items.len();
                }
                Some(sub) => {
                    for item in items.iter_mut() {
                        if !filter::matches_element(f, def, item) {
                            continue;
                        }
                        matched += 1;
                        if let Value::Object(obj) = item {
                            check_immutable(sub, get_ci(obj, sub.name), None, &t.name())?;
                            canonicalize_key(obj, sub.name);
                            obj.remove(sub.name);
                        }
                    }
                }
            }
            if matched == 0 && !lenient {
                return Err(ScimError::no_target(format!(
                    "no value of \"{}\" matches the path's filter",
                    def.name
                )));
            }
        }
    }
    drop_if_empty(container, def.name);
    Ok(())
}

// ---------------------------------------------------------------------------------
// Helpers

/// The object an attribute lives in: the resource, or its extension's object
/// (created on demand for writes).
fn container<'a>(
    res: &'a mut Map<String, Value>,
    extension: Option<&'static SchemaDef>,
    create: bool,
) -> Option<&'a mut Map<String, Value>> {
    let Some(schema) = extension else {
        return Some(res);
    };
    canonicalize_key(res, schema.id);
    if create {
        let entry = res
            .entry(schema.id.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
    }
    res.get_mut(schema.id)?.as_object_mut()
}

/// Renames a key spelled in another case to the schema's spelling, so later lookups
/// by the canonical name find it and writes do not leave two spellings.
fn canonicalize_key(obj: &mut Map<String, Value>, canonical: &str) {
    if obj.contains_key(canonical) {
        return;
    }
    let other = obj
        .keys()
        .find(|k| k.eq_ignore_ascii_case(canonical))
        .cloned();
    if let Some(k) = other {
        if let Some(v) = obj.remove(&k) {
            obj.insert(canonical.to_owned(), v);
        }
    }
}

/// The attribute's array, created (or a lone value wrapped) as needed.
fn array_mut<'a>(container: &'a mut Map<String, Value>, name: &str) -> &'a mut Vec<Value> {
    let entry = container
        .entry(name.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        let lone = entry.take();
        *entry = Value::Array(if lone.is_null() {
            Vec::new()
        } else {
            vec![lone]
        });
    }
    match entry {
        Value::Array(items) => items,
        _ => unreachable!("just made an array"),
    }
}

/// The values of an attribute, for single- and multi-valued ones alike.
fn elements_mut<'a>(container: &'a mut Map<String, Value>, name: &str) -> Vec<&'a mut Value> {
    match container.get_mut(name) {
        Some(Value::Array(items)) => items.iter_mut().collect(),
        Some(Value::Null) | None => Vec::new(),
        Some(other) => vec![other],
    }
}

/// The object inside a complex value; a bare value (a manager id sent as a string)
/// becomes `{"value": …}` so a sub-attribute can be set next to it.
fn object_of(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        let bare = v.take();
        let mut obj = Map::new();
        if !bare.is_null() {
            obj.insert("value".to_owned(), bare);
        }
        *v = Value::Object(obj);
    }
    match v {
        Value::Object(obj) => obj,
        _ => unreachable!("just made an object"),
    }
}

fn set_sub(
    obj: &mut Map<String, Value>,
    sub: &'static AttrDef,
    value: &Value,
    name: &str,
) -> ScimResult<()> {
    canonicalize_key(obj, sub.name);
    check_immutable(sub, obj.get(sub.name), Some(value), name)?;
    obj.insert(sub.name.to_owned(), value.clone());
    Ok(())
}

/// Merges sub-attributes into a complex value: given ones replace, others stay,
/// null unassigns; sub-attributes no schema defines are recorded and left out.
fn merge_object(
    def: &'static AttrDef,
    existing: &mut Map<String, Value>,
    new: &Map<String, Value>,
    unknown: &mut Vec<UnknownAttr>,
) -> ScimResult<()> {
    for (key, value) in new {
        let Some(sub) = def.sub(key) else {
            if UnknownAttr::carries_data(value) {
                unknown.push(UnknownAttr::new(format!("{}.{key}", def.name), value));
            }
            continue;
        };
        let name = sub.name;
        canonicalize_key(existing, name);
        check_immutable(
            sub,
            existing.get(name),
            Some(value),
            &format!("{}.{name}", def.name),
        )?;
        if value.is_null() {
            existing.remove(name);
        } else {
            existing.insert(name.to_owned(), value.clone());
        }
    }
    Ok(())
}

/// For a whole-value replace: no immutable sub-attribute that is set may change.
fn check_immutable_subs(
    def: &'static AttrDef,
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    name: &str,
) -> ScimResult<()> {
    for sub in def.sub_attributes {
        check_immutable(
            sub,
            get_ci(old, sub.name),
            get_ci(new, sub.name),
            &format!("{name}.{}", sub.name),
        )?;
    }
    Ok(())
}

/// Whether the target is a Group's `members` (where removals are idempotent).
fn is_group_members(t: &Target<'_>) -> bool {
    t.sub.is_none()
        && super::schema::GROUP_SCHEMA
            .attr("members")
            .is_some_and(|m| std::ptr::eq(m, t.def))
}

/// The bucket an element falls in for matching: its `value` in comparison form, or
/// the whole element (as a canonical encoding) when it has none. Elements that
/// `same_element`/`same_value` match always share a bucket, and a bucket holds only
/// elements with one `value`, so matching costs no scan of the attribute.
fn element_key(def: &'static AttrDef, v: &Value) -> String {
    let (leaf, exact) = if def.ty == AttrType::Complex {
        (value_of(v), def.sub("value").is_some_and(|d| d.case_exact))
    } else {
        (Some(v), def.case_exact)
    };
    match leaf {
        Some(Value::String(s)) if !exact => format!("s{}", caseless(s)),
        Some(Value::String(s)) => format!("s{s}"),
        Some(other) => format!("v{other}"),
        None => format!("o{}", super::resource::dedup_key(v)),
    }
}

/// An immutable attribute may be set while unassigned, never changed afterwards.
fn check_immutable(
    def: &AttrDef,
    old: Option<&Value>,
    new: Option<&Value>,
    name: &str,
) -> ScimResult<()> {
    if def.mutability == Mutability::Immutable && old.is_some_and(is_present) && old != new {
        return Err(ScimError::mutability(format!(
            "\"{name}\" is immutable; it cannot change once set"
        )));
    }
    Ok(())
}

/// Sub-attribute keys in the schema's spelling, for complex values.
fn canonical_value(def: &'static AttrDef, v: &Value) -> Value {
    if def.ty != AttrType::Complex {
        return v.clone();
    }
    match v {
        Value::Array(items) => {
            Value::Array(items.iter().map(|i| canonical_value(def, i)).collect())
        }
        Value::Object(obj) => Value::Object(
            obj.iter()
                .map(|(k, v)| {
                    (
                        def.sub(k).map_or(k.clone(), |s| s.name.to_owned()),
                        v.clone(),
                    )
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn text_eq(def: Option<&AttrDef>, a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) if !def.is_some_and(|d| d.case_exact) => {
            super::text::caseless_eq(x, y)
        }
        _ => a == b,
    }
}

/// The `value` of an element, or the element itself when it is a bare value.
fn value_of(v: &Value) -> Option<&Value> {
    match v {
        Value::Object(obj) => get_ci(obj, "value").filter(|v| !v.is_null()),
        Value::Null => None,
        other => Some(other),
    }
}

/// Whether `listed` (from a remove's value list) names element `e`.
fn same_value(def: &'static AttrDef, e: &Value, listed: &Value) -> bool {
    if e == listed {
        return true;
    }
    if def.ty != AttrType::Complex {
        return text_eq(Some(def), e, listed);
    }
    match (value_of(e), value_of(listed)) {
        (Some(a), Some(b)) => text_eq(def.sub("value"), a, b),
        _ => false,
    }
}

/// Whether an added element duplicates an existing one: equal, or the same `value`
/// (and the same `type` when both have one).
fn same_element(def: &'static AttrDef, existing: &Value, new: &Value) -> bool {
    if existing == new {
        return true;
    }
    if def.ty != AttrType::Complex {
        return text_eq(Some(def), existing, new);
    }
    let (Value::Object(a), Value::Object(b)) = (existing, new) else {
        return false;
    };
    let same_value = match (value_of(existing), value_of(new)) {
        (Some(x), Some(y)) => text_eq(def.sub("value"), x, y),
        _ => false,
    };
    let same_type = match (get_ci(a, "type"), get_ci(b, "type")) {
        (Some(x), Some(y)) if !x.is_null() && !y.is_null() => text_eq(def.sub("type"), x, y),
        _ => true,
    };
    same_value && same_type
}

/// The sub-attribute values a filter made only of `eq` joined by `and` pins down,
/// in the schema's spelling; `None` for any other filter.
fn eq_pairs(f: &Filter, def: &'static AttrDef) -> Option<Vec<(&'static str, Value)>> {
    match f {
        Filter::Compare {
            path,
            op: filter::CompareOp::Eq,
            value,
        } if path.urn.is_none() && path.sub.is_none() && !value.is_null() => {
            Some(vec![(def.sub(&path.attr)?.name, value.clone())])
        }
        Filter::And(a, b) => {
            let mut pairs = eq_pairs(a, def)?;
            pairs.extend(eq_pairs(b, def)?);
            Some(pairs)
        }
        _ => None,
    }
}

fn is_primary(v: &Value) -> bool {
    let primary = match v {
        Value::Object(obj) => get_ci(obj, "primary"),
        _ => None,
    };
    match primary {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// At most one element of a multi-valued attribute is primary (RFC 7643 §2.4): the
/// one this operation made primary, else the first.
fn settle_primary(
    container: &mut Map<String, Value>,
    def: &'static AttrDef,
    winner: Option<usize>,
) {
    if !def.multi_valued || def.sub("primary").is_none() {
        return;
    }
    let Some(Value::Array(items)) = container.get_mut(def.name) else {
        return;
    };
    let keep = winner.or_else(|| items.iter().position(is_primary));
    for (i, item) in items.iter_mut().enumerate() {
        if Some(i) != keep && is_primary(item) {
            if let Value::Object(obj) = item {
                canonicalize_key(obj, "primary");
                obj.insert("primary".to_owned(), Value::Bool(false));
            }
        }
    }
}

/// Unassigned, null and empty are the same state (RFC 7643 §2.5): drop empty
/// elements, arrays and objects rather than keep them.
fn drop_if_empty(container: &mut Map<String, Value>, name: &str) {
    let empty = match container.get_mut(name) {
        Some(Value::Array(items)) => {
            items.retain(|e| !matches!(e, Value::Object(o) if o.is_empty()));
            items.is_empty()
        }
        Some(Value::Object(obj)) => obj.is_empty(),
        Some(Value::Null) => true,
        _ => false,
    };
    if empty {
        container.remove(name);
    }
}

/// Keeps extension objects and the `schemas` list in step: an extension that gained
/// attributes is listed, one that lost all of them is dropped and unlisted.
fn tidy_extensions(rt: ResourceType, before: &Map<String, Value>, after: &mut Map<String, Value>) {
    for ext in rt.extensions() {
        let had = get_ci(before, ext.id).is_some_and(is_present);
        let has = get_ci(after, ext.id).is_some_and(is_present);
        if !has {
            canonicalize_key(after, ext.id);
            after.remove(ext.id);
        }
        let Some(Value::Array(schemas)) = after.get_mut("schemas") else {
            continue;
        };
        let listed = schemas
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(ext.id)));
        if has && !listed {
            schemas.push(Value::String(ext.id.to_owned()));
        } else if had && !has {
            schemas.retain(|s| !s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(ext.id)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::error::ScimType;
    use crate::scim::schema::ENTERPRISE_USER_URN;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test resource must be an object"),
        }
    }

    fn user() -> Map<String, Value> {
        obj(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "id": "u1",
            "meta": {"resourceType": "User", "version": "W/\"1\""},
            "userName": "bjensen@example.com",
            "name": {"givenName": "Barbara", "familyName": "Jensen"},
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home"}
            ]
        }))
    }

    fn group() -> Map<String, Value> {
        obj(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": "g1",
            "displayName": "Tour Guides",
            "members": [
                {"value": "u1", "type": "User"},
                {"value": "u2", "type": "User"},
                {"value": "u3", "type": "User"}
            ]
        }))
    }

    fn body(ops: Value) -> Value {
        json!({"schemas": [PATCH_OP_URN], "Operations": ops})
    }

    fn patch(rt: ResourceType, res: &mut Map<String, Value>, ops: Value) -> ScimResult<()> {
        let unknown = patch_unknown(rt, res, ops)?;
        assert!(
            unknown.is_empty(),
            "unexpected unknown attributes {unknown:?}"
        );
        Ok(())
    }

    /// Applies and returns the attributes the operations named that no schema defines.
    fn patch_unknown(
        rt: ResourceType,
        res: &mut Map<String, Value>,
        ops: Value,
    ) -> ScimResult<Vec<UnknownAttr>> {
        let ops = parse_request(&body(ops))?;
        apply(rt, res, &ops)
    }

    fn patched_user(ops: Value) -> Map<String, Value> {
        let mut u = user();
        patch(ResourceType::User, &mut u, ops).unwrap_or_else(|e| panic!("{e}"));
        u
    }

    fn patched_group(ops: Value) -> Map<String, Value> {
        let mut g = group();
        patch(ResourceType::Group, &mut g, ops).unwrap_or_else(|e| panic!("{e}"));
        g
    }

    fn user_error(ops: Value) -> ScimError {
        let mut u = user();
        let before = u.clone();
        let e = patch(ResourceType::User, &mut u, ops).expect_err("patch should fail");
        assert_eq!(
            u, before,
            "a failed PATCH must leave the resource untouched"
        );
        assert_eq!(e.status, 400);
        e
    }

    fn member_ids(g: &Map<String, Value>) -> Vec<&str> {
        g["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["value"].as_str().unwrap())
            .collect()
    }

    // --- parsing the request -----------------------------------------------------

    #[test]
    fn entra_op_names_in_any_case() {
        let ops = parse_request(&body(json!([
            {"op": "Replace", "path": "title", "value": "x"},
            {"op": "ADD", "path": "title", "value": "x"},
            {"op": "remove", "path": "title"}
        ])))
        .unwrap();
        let kinds: Vec<_> = ops.iter().map(|o| o.op).collect();
        assert_eq!(
            kinds,
            [PatchOpKind::Replace, PatchOpKind::Add, PatchOpKind::Remove]
        );
    }

    #[test]
    fn body_without_patch_op_schema_is_invalid_syntax() {
        let e =
            parse_request(&json!({"Operations": [{"op": "remove", "path": "title"}]})).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
        let e = parse_request(&json!({"schemas": ["urn:x"], "Operations": []})).unwrap_err();
        assert!(e.detail.contains(PATCH_OP_URN));
    }

    #[test]
    fn operations_must_be_a_non_empty_array() {
        for b in [
            json!({"schemas": [PATCH_OP_URN]}),
            json!({"schemas": [PATCH_OP_URN], "Operations": []}),
            json!({"schemas": [PATCH_OP_URN], "Operations": {"op": "add"}}),
            json!([1, 2]),
        ] {
            assert_eq!(
                parse_request(&b).unwrap_err().scim_type,
                Some(ScimType::InvalidSyntax),
                "{b}"
            );
        }
    }

    #[test]
    fn too_many_operations_is_invalid_value() {
        let ops: Vec<Value> = (0..=MAX_OPERATIONS)
            .map(|_| json!({"op": "remove", "path": "title"}))
            .collect();
        let e = parse_request(&body(Value::Array(ops))).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
    }

    #[test]
    fn unknown_op_and_missing_value_are_refused() {
        let e = parse_request(&body(json!([{"op": "merge", "path": "title"}]))).unwrap_err();
        assert!(e.detail.contains("merge"));
        let e = parse_request(&body(json!([{"op": "add", "path": "title"}]))).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidValue));
        assert!(e.detail.starts_with("operation 1:"), "{}", e.detail);
    }

    #[test]
    fn invalid_path_syntax_is_invalid_path() {
        for path in [
            "a b",
            "emails[type eq",
            r#"emails[type eq "work"]x"#,
            r#"emails[type eq "work"].value.x"#,
            r#"emails.value[type eq "work"]"#,
            r#"emails[type eq "work"] and x"#,
            "1abc",
            "naé",
            "",
        ] {
            let e = PatchPath::parse(path).expect_err(path);
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{path}");
        }
        let e = parse_request(&body(json!([{"op": "remove", "path": 7}]))).unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::InvalidPath));
    }

    #[test]
    fn parses_value_path_with_sub_attribute() {
        let p = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr.attr, "emails");
        assert_eq!(p.attr.sub.as_deref(), Some("value"));
        assert!(p.filter.is_some());
        let p =
            PatchPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager")
                .unwrap();
        assert_eq!(p.attr.urn.as_deref(), Some(ENTERPRISE_USER_URN));
    }

    // --- add / replace -----------------------------------------------------------

    #[test]
    fn replace_simple_attribute() {
        let u = patched_user(json!([{"op": "replace", "path": "title", "value": "Boss"}]));
        assert_eq!(u["title"], "Boss");
    }

    #[test]
    fn add_to_multi_valued_merges_without_duplicates() {
        let u = patched_user(json!([{"op": "add", "path": "emails", "value": [
            {"value": "BJENSEN@example.com", "type": "work"},
            {"value": "new@example.com", "type": "other"}
        ]}]));
        let emails = u["emails"].as_array().unwrap();
        assert_eq!(emails.len(), 3);
        assert_eq!(emails[2]["value"], "new@example.com");
    }

    #[test]
    fn okta_member_add_with_display_does_not_duplicate() {
        let g = patched_group(json!([{"op": "add", "path": "members", "value": [
            {"value": "u1", "display": "Barbara"},
            {"value": "u4", "display": "Dave"}
        ]}]));
        assert_eq!(member_ids(&g), ["u1", "u2", "u3", "u4"]);
    }

    #[test]
    fn replace_multi_valued_replaces_all_values() {
        let u = patched_user(json!([{"op": "replace", "path": "emails", "value": [
            {"value": "only@example.com", "type": "work"}
        ]}]));
        assert_eq!(
            u["emails"],
            json!([{"value": "only@example.com", "type": "work"}])
        );
    }

    #[test]
    fn replace_of_a_singular_complex_attribute_by_path_replaces_it_whole() {
        // The interop profile: replacing `name` replaces the whole value.
        let u = patched_user(
            json!([{"op": "replace", "path": "name", "value": {"givenName": "Babs"}}]),
        );
        assert_eq!(u["name"], json!({"givenName": "Babs"}));
        // The same for an extension's complex attribute.
        let mut u = user();
        u.insert(
            ENTERPRISE_USER_URN.into(),
            json!({"manager": {"value": "m1", "displayName": "Old Boss"}}),
        );
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "replace", "path": format!("{ENTERPRISE_USER_URN}:manager"), "value": {"value": "m2"}}]),
        )
        .unwrap();
        assert_eq!(u[ENTERPRISE_USER_URN]["manager"], json!({"value": "m2"}));
        // `add` with a path still merges (RFC 7644 §3.5.2.1).
        let u = patched_user(json!([{"op": "add", "path": "name", "value": {"middleName": "J"}}]));
        assert_eq!(
            u["name"],
            json!({"givenName": "Barbara", "familyName": "Jensen", "middleName": "J"})
        );
    }

    #[test]
    fn okta_path_less_replace_still_merges_complex_values() {
        let u = patched_user(json!([{"op": "replace", "value": {"name": {"givenName": "Babs"}}}]));
        assert_eq!(
            u["name"],
            json!({"givenName": "Babs", "familyName": "Jensen"})
        );
    }

    #[test]
    fn add_sub_attribute_creates_the_complex_attribute() {
        let mut u = user();
        u.remove("name");
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "add", "path": "name.familyName", "value": "Jensen"}]),
        )
        .unwrap();
        assert_eq!(u["name"], json!({"familyName": "Jensen"}));
    }

    #[test]
    fn replace_through_value_filter_and_sub_attribute() {
        let u = patched_user(
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@new.example"}]),
        );
        assert_eq!(u["emails"][0]["value"], "b@new.example");
        assert_eq!(u["emails"][1]["value"], "babs@jensen.org");
    }

    #[test]
    fn replace_through_value_filter_replaces_the_matched_element() {
        // RFC 7644 §3.5.2.3: "all matching record values SHALL be replaced".
        let u = patched_user(
            json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {"value": "b@x.org", "display": "Home"}}]),
        );
        assert_eq!(
            u["emails"][1],
            json!({"value": "b@x.org", "display": "Home"})
        );
        // An immutable sub-attribute (a member's value) cannot change that way.
        let mut g = group();
        let e = patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "replace", "path": "members[value eq \"u1\"]", "value": {"value": "u9"}}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn names_written_in_the_schemas_spelling() {
        let u = patched_user(json!([
            {"op": "add", "path": "PHONENUMBERS", "value": [{"Value": "555", "TYPE": "work"}]},
            {"op": "replace", "path": "Name.GivenName", "value": "B"}
        ]));
        assert_eq!(u["phoneNumbers"], json!([{"value": "555", "type": "work"}]));
        assert_eq!(u["name"]["givenName"], "B");
    }

    #[test]
    fn entra_no_path_replace_with_dotted_and_urn_keys() {
        let u = patched_user(json!([{"op": "Replace", "value": {
            "DisplayName": "Babs",
            "name.givenName": "Barb",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Sales",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager": "m1"
        }}]));
        assert_eq!(u["displayName"], "Babs");
        assert_eq!(u["name"]["givenName"], "Barb");
        assert_eq!(u["name"]["familyName"], "Jensen");
        assert_eq!(u[ENTERPRISE_USER_URN]["department"], "Sales");
        assert_eq!(u[ENTERPRISE_USER_URN]["manager"], "m1");
        assert!(u["schemas"]
            .as_array()
            .unwrap()
            .contains(&json!(ENTERPRISE_USER_URN)));
    }

    #[test]
    fn no_path_value_keys_may_be_value_paths() {
        let u = patched_user(json!([{"op": "replace", "value": {
            "emails[type eq \"work\"].value": "w@new.example"
        }}]));
        assert_eq!(u["emails"][0]["value"], "w@new.example");
    }

    #[test]
    fn no_path_value_with_extension_object() {
        let u = patched_user(json!([{"op": "add", "value": {
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:user": {"Department": "Ops", "costCenter": "42"}
        }}]));
        assert_eq!(
            u[ENTERPRISE_USER_URN],
            json!({"department": "Ops", "costCenter": "42"})
        );
    }

    #[test]
    fn no_path_add_merges_multi_valued_and_replace_replaces() {
        let u =
            patched_user(json!([{"op": "add", "value": {"emails": [{"value": "x@example.com"}]}}]));
        assert_eq!(u["emails"].as_array().unwrap().len(), 3);
        let u = patched_user(
            json!([{"op": "replace", "value": {"emails": [{"value": "x@example.com"}]}}]),
        );
        assert_eq!(u["emails"], json!([{"value": "x@example.com"}]));
    }

    #[test]
    fn okta_deactivation() {
        let u = patched_user(json!([{"op": "replace", "value": {"active": false}}]));
        assert_eq!(u["active"], false);
    }

    #[test]
    fn entra_boolean_strings_are_stored_for_normalisation() {
        let u = patched_user(json!([{"op": "Replace", "path": "active", "value": "False"}]));
        assert_eq!(u["active"], "False");
    }

    #[test]
    fn entra_boolean_strings_do_not_break_value_filters() {
        let mut u = user();
        u["emails"][0]["primary"] = json!("True");
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "replace", "path": "emails[primary eq true].value", "value": "p@example.com"}]),
        )
        .unwrap();
        assert_eq!(u["emails"][0]["value"], "p@example.com");
    }

    #[test]
    fn entra_creates_work_email_when_none_matches() {
        let mut u = user();
        u.remove("emails");
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "Add", "path": "emails[type eq \"work\"].value", "value": "w@example.com"}]),
        )
        .unwrap();
        assert_eq!(
            u["emails"],
            json!([{"type": "work", "value": "w@example.com"}])
        );
    }

    #[test]
    fn entra_creates_work_address_when_none_matches() {
        let u = patched_user(json!([
            {"op": "Replace", "path": "addresses[type eq \"work\"].streetAddress", "value": "1 Main St"},
            {"op": "Replace", "path": "addresses[type eq \"work\"].locality", "value": "Springfield"}
        ]));
        assert_eq!(
            u["addresses"],
            json!([{"type": "work", "streetAddress": "1 Main St", "locality": "Springfield"}])
        );
    }

    #[test]
    fn no_element_created_for_filters_other_than_eq() {
        let e = user_error(
            json!([{"op": "replace", "path": "emails[type co \"oth\"].value", "value": "x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
        let e = user_error(
            json!([{"op": "replace", "path": "emails[type eq \"other\" or type eq \"x\"].value", "value": "x"}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn replace_with_filter_matching_nothing_is_no_target() {
        let e = user_error(
            json!([{"op": "replace", "path": "emails[type eq \"other\"]", "value": {"value": "x"}}]),
        );
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn primary_stays_unique_when_adding_a_primary_value() {
        let u = patched_user(json!([{"op": "add", "path": "emails", "value": [
            {"value": "new@example.com", "type": "other", "primary": true}
        ]}]));
        let primaries: Vec<_> = u["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.get("primary").cloned().unwrap_or(json!(false)))
            .collect();
        assert_eq!(primaries, [json!(false), json!(false), json!(true)]);
    }

    #[test]
    fn primary_stays_unique_when_set_through_a_filter() {
        let u = patched_user(
            json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
        );
        assert_eq!(u["emails"][0]["primary"], false);
        assert_eq!(u["emails"][1]["primary"], true);
    }

    #[test]
    fn enterprise_manager_from_bare_id_and_from_value_path() {
        let path = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager";
        let u = patched_user(json!([{"op": "replace", "path": path, "value": "m1"}]));
        assert_eq!(u[ENTERPRISE_USER_URN]["manager"], "m1");
        let u =
            patched_user(json!([{"op": "add", "path": format!("{path}.value"), "value": "m2"}]));
        assert_eq!(u[ENTERPRISE_USER_URN]["manager"], json!({"value": "m2"}));
        // A bare id already stored becomes an object when a sub-attribute is set.
        let mut u = user();
        u.insert(ENTERPRISE_USER_URN.into(), json!({"manager": "m1"}));
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "replace", "path": format!("{path}.$ref"), "value": "../Users/m1"}]),
        )
        .unwrap();
        assert_eq!(
            u[ENTERPRISE_USER_URN]["manager"],
            json!({"value": "m1", "$ref": "../Users/m1"})
        );
    }

    #[test]
    fn member_only_patches_become_deltas() {
        let ops =
            |o: Value| parse_request(&json!({"schemas": [PATCH_OP_URN], "Operations": o})).unwrap();
        let d = member_delta(
            ResourceType::Group,
            &ops(json!([
                {"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2", "display": "Two"}]},
                {"op": "Remove", "path": "members", "value": [{"value": "u3"}]},
                {"op": "remove", "path": "members[value eq \"u4\"]"}
            ])),
        )
        .unwrap();
        assert_eq!(d.add.len(), 2);
        // Both removal forms are removals of whatever is there (no noTarget).
        assert_eq!(d.remove, vec!["u3".to_owned(), "u4".to_owned()]);
        // Anything else: the general way.
        assert!(member_delta(
            ResourceType::Group,
            &ops(json!([{"op": "replace", "path": "members", "value": []}]))
        )
        .is_none());
        assert!(member_delta(
            ResourceType::Group,
            &ops(json!([{"op": "replace", "path": "displayName", "value": "x"}]))
        )
        .is_none());
        assert!(member_delta(
            ResourceType::Group,
            &ops(json!([{"op": "remove", "path": "members"}]))
        )
        .is_none());
        assert!(member_delta(
            ResourceType::User,
            &ops(json!([{"op": "add", "path": "members", "value": [{"value": "u"}]}]))
        )
        .is_none());
        assert!(member_delta(
            ResourceType::Group,
            &ops(json!([{"op": "add", "path": "members", "value": [{"value": "u"}]}, {"op": "remove", "path": "members[value eq \"u\"]"}]))
        )
        .is_none());
    }

    #[test]
    fn schemas_inside_an_extension_object_is_ignored() {
        let mut u = user();
        let op = json!({"op": "add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "value": {"schemas": ["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], "employeeNumber": "7"}});
        apply(
            ResourceType::User,
            &mut u,
            &parse_request(&json!({"schemas": [PATCH_OP_URN], "Operations": [op]})).unwrap(),
        )
        .unwrap();
        assert_eq!(
            u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]["employeeNumber"],
            "7"
        );
    }

    #[test]
    fn whole_extension_path_takes_its_object() {
        let u = patched_user(
            json!([{"op": "add", "path": ENTERPRISE_USER_URN, "value": {"division": "North"}}]),
        );
        assert_eq!(u[ENTERPRISE_USER_URN], json!({"division": "North"}));
    }

    #[test]
    fn replace_with_null_unassigns() {
        let u = patched_user(json!([{"op": "replace", "path": "name.givenName", "value": null}]));
        assert_eq!(u["name"], json!({"familyName": "Jensen"}));
    }

    // --- remove ------------------------------------------------------------------

    #[test]
    fn remove_without_path_is_no_target() {
        let e = user_error(json!([{"op": "remove"}]));
        assert_eq!(e.scim_type, Some(ScimType::NoTarget));
    }

    #[test]
    fn remove_attribute_and_absent_attribute() {
        let u = patched_user(json!([
            {"op": "remove", "path": "name"},
            {"op": "remove", "path": "nickName"}
        ]));
        assert!(!u.contains_key("name"));
    }

    #[test]
    fn remove_last_sub_attribute_unassigns_the_attribute() {
        let u = patched_user(json!([
            {"op": "remove", "path": "name.givenName"},
            {"op": "remove", "path": "name.familyName"}
        ]));
        assert!(!u.contains_key("name"));
    }

    #[test]
    fn remove_required_attribute_is_mutability() {
        let e = user_error(json!([{"op": "remove", "path": "userName"}]));
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
        let e = user_error(json!([{"op": "replace", "path": "userName", "value": null}]));
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
        let mut g = group();
        let e = patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "remove", "path": "displayName"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn remove_member_by_value_filter() {
        let g = patched_group(json!([{"op": "remove", "path": "members[value eq \"u2\"]"}]));
        assert_eq!(member_ids(&g), ["u1", "u3"]);
    }

    #[test]
    fn remove_last_member_unassigns_members() {
        let mut g = group();
        g["members"] = json!([{"value": "u1"}]);
        patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "remove", "path": "members[value eq \"u1\"]"}]),
        )
        .unwrap();
        assert!(!g.contains_key("members"));
    }

    #[test]
    fn removing_a_member_that_is_not_there_is_a_no_op_in_both_forms() {
        // IdPs resend removals: Okta's filter form and Entra's value form alike.
        for op in [
            json!({"op": "remove", "path": "members[value eq \"nobody\"]"}),
            json!({"op": "remove", "path": "members", "value": [{"value": "nobody"}]}),
        ] {
            let g = patched_group(json!([op]));
            assert_eq!(g, group(), "{op}");
            let mut empty = group();
            empty.remove("members");
            patch(ResourceType::Group, &mut empty, json!([op])).unwrap();
        }
    }

    #[test]
    fn remove_with_filter_matching_nothing_is_no_target_for_other_attributes() {
        for path in [
            "emails[type eq \"fax\"]",
            "phoneNumbers[type eq \"work\"]",
            "addresses[type eq \"home\"]",
        ] {
            let e = user_error(json!([{"op": "remove", "path": path}]));
            assert_eq!(e.scim_type, Some(ScimType::NoTarget), "{path}");
        }
    }

    #[test]
    fn entra_remove_members_with_value_array() {
        let g = patched_group(json!([{"op": "Remove", "path": "members", "value": [
            {"value": "u1"}, {"value": "u3"}, {"value": "not-a-member"}
        ]}]));
        assert_eq!(member_ids(&g), ["u2"]);
    }

    #[test]
    fn remove_all_members_without_value() {
        let g = patched_group(json!([{"op": "remove", "path": "members"}]));
        assert!(!g.contains_key("members"));
    }

    #[test]
    fn removing_the_last_extension_attribute_drops_the_extension() {
        let mut u = user();
        u.insert(ENTERPRISE_USER_URN.into(), json!({"department": "Ops"}));
        u["schemas"]
            .as_array_mut()
            .unwrap()
            .push(json!(ENTERPRISE_USER_URN));
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "remove", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"}]),
        )
        .unwrap();
        assert!(!u.contains_key(ENTERPRISE_USER_URN));
        assert_eq!(
            u["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
        );
    }

    // --- paths and mutability ----------------------------------------------------

    #[test]
    fn unknown_attribute_names_are_returned_not_applied() {
        for (path, name) in [
            ("shoeSize", "shoeSize"),
            ("name.shoe", "name.shoe"),
            (
                "urn:example:unknown:1.0:User:x",
                "urn:example:unknown:1.0:User:x",
            ),
            (
                "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
                "urn:ietf:params:scim:schemas:core:2.0:Group:displayName",
            ),
        ] {
            let mut u = user();
            let unknown = patch_unknown(
                ResourceType::User,
                &mut u,
                json!([{"op": "replace", "path": path, "value": "x"}]),
            )
            .unwrap();
            assert_eq!(unknown.len(), 1, "{path}");
            assert_eq!(unknown[0].name, name);
            assert_eq!(u, user(), "{path}: nothing applied");
        }
        let mut u = user();
        let unknown = patch_unknown(
            ResourceType::User,
            &mut u,
            json!([{"op": "add", "value": {"shoeSize": 9, "title": "T", "name": {"nick": "B"}}}]),
        )
        .unwrap();
        let names: Vec<&str> = unknown.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["shoeSize", "name.nick"]);
        assert_eq!(unknown[0].json_type, "integer");
        assert_eq!(u["title"], "T", "the known attributes still apply");
        // Setting an unknown attribute to null is harmless and not reported.
        let mut u = user();
        let unknown = patch_unknown(
            ResourceType::User,
            &mut u,
            json!([{"op": "replace", "path": "shoeSize", "value": null}, {"op": "add", "value": {"shoeSize": null}}]),
        )
        .unwrap();
        assert!(unknown.is_empty());
    }

    #[test]
    fn adding_and_removing_many_values_is_linear() {
        // 10,000 values added to 10,000 (half of them already there), then 10,000
        // removed by value list: each step matches through a map, where the old scans
        // of the attribute cost 10,000 × 15,000 comparisons. `benches/normalize.rs`
        // prints the time per value at growing sizes.
        let n = 10_000;
        let mut g = group();
        g.insert(
            "members".into(),
            Value::Array(
                (0..n)
                    .map(|i| json!({"value": format!("m{i}"), "type": "User"}))
                    .collect(),
            ),
        );
        let add: Vec<Value> = (n / 2..n + n / 2)
            .map(|i| json!({"value": format!("m{i}")}))
            .collect();
        patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "add", "path": "members", "value": add}]),
        )
        .unwrap();
        assert_eq!(g["members"].as_array().unwrap().len(), n + n / 2);
        let remove: Vec<Value> = (0..n).map(|i| json!({"value": format!("m{i}")})).collect();
        patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "remove", "path": "members", "value": remove}]),
        )
        .unwrap();
        assert_eq!(g["members"].as_array().unwrap().len(), n / 2);
        // Emails compare caseless: "U1@X" is the same value as "u1@x".
        let mut u = user();
        let emails: Vec<Value> = (0..n)
            .map(|i| json!({"value": format!("u{i}@x")}))
            .collect();
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "add", "path": "emails", "value": emails}]),
        )
        .unwrap();
        let again: Vec<Value> = (0..n)
            .map(|i| json!({"value": format!("U{i}@X")}))
            .collect();
        patch(
            ResourceType::User,
            &mut u,
            json!([{"op": "add", "path": "emails", "value": again}]),
        )
        .unwrap();
        assert_eq!(u["emails"].as_array().unwrap().len(), n + 2);
        // A member-only PATCH of that size is a delta without a quadratic check.
        let ops = parse_request(&body(json!([
            {"op": "add", "path": "members", "value": (0..n).map(|i| json!({"value": format!("a{i}")})).collect::<Vec<_>>()},
            {"op": "remove", "path": "members", "value": (0..n).map(|i| json!({"value": format!("r{i}")})).collect::<Vec<_>>()}
        ])))
        .unwrap();
        let d = member_delta(ResourceType::Group, &ops).unwrap();
        assert_eq!((d.add.len(), d.remove.len()), (n, n));
    }

    #[test]
    fn malformed_paths_stay_invalid_path_and_unknown_filter_names_are_invalid_syntax() {
        for path in [
            "userName.value",
            "name[givenName eq \"x\"]",
            "emails[type eq]",
        ] {
            let e = user_error(json!([{"op": "replace", "path": path, "value": "x"}]));
            assert_eq!(e.scim_type, Some(ScimType::InvalidPath), "{path}");
        }
        let e =
            user_error(json!([{"op": "replace", "path": "emails[shoe eq \"x\"]", "value": "x"}]));
        assert_eq!(e.scim_type, Some(ScimType::InvalidSyntax));
    }

    #[test]
    fn read_only_targets_are_mutability_errors() {
        for op in [
            json!({"op": "replace", "path": "id", "value": "u9"}),
            json!({"op": "replace", "path": "meta.version", "value": "x"}),
            json!({"op": "add", "path": "groups", "value": [{"value": "g1"}]}),
            json!({"op": "remove", "path": "groups"}),
            json!({"op": "replace", "value": {"id": "someone-else"}}),
            json!({"op": "replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.displayName", "value": "x"}),
        ] {
            let e = user_error(json!([op.clone()]));
            assert_eq!(e.scim_type, Some(ScimType::Mutability), "{op}");
        }
    }

    #[test]
    fn okta_group_rename_with_its_own_id_is_accepted() {
        let g =
            patched_group(json!([{"op": "replace", "value": {"id": "g1", "displayName": "New"}}]));
        assert_eq!(g["displayName"], "New");
        assert_eq!(g["id"], "g1");
    }

    #[test]
    fn no_path_meta_and_schemas_keys_are_ignored() {
        let u = patched_user(json!([{"op": "replace", "value": {
            "schemas": ["x"], "meta": {"version": "W/\"9\""}, "title": "T"
        }}]));
        assert_eq!(u["meta"]["version"], "W/\"1\"");
        assert_eq!(
            u["schemas"],
            json!(["urn:ietf:params:scim:schemas:core:2.0:User"])
        );
        assert_eq!(u["title"], "T");
    }

    #[test]
    fn immutable_member_value_cannot_change() {
        let mut g = group();
        let e = patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "replace", "path": "members[value eq \"u1\"].value", "value": "u9"}]),
        )
        .unwrap_err();
        assert_eq!(e.scim_type, Some(ScimType::Mutability));
    }

    #[test]
    fn immutable_member_type_may_be_set_while_unassigned() {
        let mut g = group();
        g["members"] = json!([{"value": "u1"}]);
        patch(
            ResourceType::Group,
            &mut g,
            json!([{"op": "add", "path": "members[value eq \"u1\"].type", "value": "User"}]),
        )
        .unwrap();
        assert_eq!(g["members"], json!([{"value": "u1", "type": "User"}]));
    }

    #[test]
    fn failing_operation_leaves_resource_untouched() {
        let e = user_error(json!([
            {"op": "replace", "path": "title", "value": "changed"},
            {"op": "remove", "path": "userName"}
        ]));
        assert!(e.detail.starts_with("operation 2:"), "{}", e.detail);
    }

    /// Deterministic pseudo-random operations over random paths and values must
    /// never panic, and a refused request must leave the resource exactly as it was
    /// (RFC 7644 §3.5.2: "the PATCH request is atomic"), however far it got.
    #[test]
    fn random_operations_never_panic_and_a_refused_request_changes_nothing() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PATHS: &[&str] = &[
            "",
            "title",
            "name",
            "name.givenName",
            "emails",
            "emails.value",
            "emails.primary",
            "emails[type eq \"work\"]",
            "emails[type eq \"work\"].value",
            "emails[value co \"@\"].primary",
            "members",
            "members[value eq \"u1\"]",
            "members[value eq \"u1\"].value",
            "displayName",
            "userName",
            "id",
            "meta",
            "groups",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            "addresses[type eq \"work\" and primary eq true].locality",
            "é[",
            "[",
            "emails[",
        ];
        let values = [
            json!(null),
            json!("x"),
            json!(true),
            json!("False"),
            json!(3),
            json!([]),
            json!([{"value": "u1"}, "bare", null]),
            json!({"value": "v", "primary": true}),
            json!({"name.givenName": "g", "ID": "u1", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"manager": "m"}}),
            json!({"emails": {"value": "x"}, "members": "u1"}),
        ];
        let (mut refused, mut applied) = (0u32, 0u32);
        for _ in 0..5_000 {
            let n = 1 + (next() % 4) as usize;
            let ops: Vec<Value> = (0..n)
                .map(|_| {
                    let op = ["add", "Replace", "REMOVE", "bogus"][(next() % 4) as usize];
                    let mut o = json!({"op": op});
                    let path = PATHS[(next() % PATHS.len() as u64) as usize];
                    if !path.is_empty() {
                        o["path"] = json!(path);
                    }
                    if next() % 4 != 0 {
                        o["value"] = values[(next() % values.len() as u64) as usize].clone();
                    }
                    o
                })
                .collect();
            for (rt, before) in [(ResourceType::User, user()), (ResourceType::Group, group())] {
                let mut r = before.clone();
                if patch_unknown(rt, &mut r, Value::Array(ops.clone())).is_ok() {
                    applied += 1;
                } else {
                    refused += 1;
                    assert_eq!(r, before, "a refused PATCH changed the resource: {ops:?}");
                }
            }
        }
        // Both outcomes must be common, or the loop checks little.
        assert!(
            refused > 1_000 && applied > 300,
            "{refused} refused, {applied} applied"
        );
    }
}
