//! The discovery documents of RFC 7644 §4: ServiceProviderConfig, Schemas and
//! ResourceTypes, built from the schema tables so they always say what the server
//! actually does.

use serde_json::{json, Map, Value};

use super::schema::{all_schemas, AttrDef, ResourceType, SchemaDef};

/// The schema URN of the ServiceProviderConfig document (RFC 7643 §5, §8.7.2).
pub const SPC_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// The schema URN of a ResourceType document (RFC 7643 §6, §8.7.2).
pub const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// The schema URN of a Schema document (RFC 7643 §7, §8.7.2).
pub const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
/// The schema URN of a ListResponse (RFC 7644 §3.4.2).
pub const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// What the server announces about its limits and features.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Largest page a query returns, in resources: published as `filter.maxResults`
    /// (RFC 7643 §5) and `pagination.maxPageSize` (RFC 9865 §4).
    pub max_results: usize,
    /// Page size when a query gives no `count`, in resources: published as
    /// `pagination.defaultPageSize` (RFC 9865 §4).
    pub default_page_size: usize,
    /// Largest request body the server reads, in bytes. RFC 7643 §5 has no field for it
    /// (only Bulk's `maxPayloadSize`), so the ServiceProviderConfig does not publish it.
    pub max_body_bytes: usize,
    /// Bulk support (RFC 7644 §3.7) as (`maxOperations` in operations, `maxPayloadSize` in
    /// bytes); `None` publishes `bulk.supported: false` with both limits 0.
    pub bulk: Option<(usize, usize)>,
}

fn meta(resource_type: &str, location: String) -> Value {
    json!({"resourceType": resource_type, "location": location})
}

/// The `/ServiceProviderConfig` document (RFC 7643 §5, RFC 9865 §4 `pagination`): PATCH,
/// filter, sort and ETags supported, password change not, bearer-token authentication,
/// cursor and index paging. `base` is the SCIM base URL without a trailing `/`
/// (`https://host/scim/v2`); `meta.location` is built from it.
pub fn service_provider_config(caps: &Capabilities, base: &str) -> Value {
    let (bulk_ops, bulk_payload) = caps.bulk.unwrap_or((0, 0));
    json!({
        "schemas": [SPC_URN],
        "documentationUri": "https://github.com/scimbridge/scimbridge#readme",
        "patch": {"supported": true},
        "bulk": {"supported": caps.bulk.is_some(), "maxOperations": bulk_ops, "maxPayloadSize": bulk_payload},
        "filter": {"supported": true, "maxResults": caps.max_results},
        "changePassword": {"supported": false},
        "sort": {"supported": true},
        "etag": {"supported": true},
        "pagination": {
            "cursor": true,
            "index": true,
            "defaultPaginationMethod": "index",
            "defaultPageSize": caps.default_page_size,
            "maxPageSize": caps.max_results
        },
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication with a bearer token issued by the scimbridge admin (scimbridge token issue).",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true
        }],
        "meta": meta("ServiceProviderConfig", format!("{base}/ServiceProviderConfig")),
    })
}

fn attribute_json(a: &AttrDef) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    m.insert("type".into(), json!(a.ty.as_str()));
    m.insert("multiValued".into(), json!(a.multi_valued));
    m.insert("description".into(), json!(a.description));
    m.insert("required".into(), json!(a.required));
    m.insert("caseExact".into(), json!(a.case_exact));
    m.insert("mutability".into(), json!(a.mutability.as_str()));
    m.insert("returned".into(), json!(a.returned.as_str()));
    m.insert("uniqueness".into(), json!(a.uniqueness.as_str()));
    if let Some(values) = a.canonical_values {
        m.insert("canonicalValues".into(), json!(values));
    }
    if !a.reference_types.is_empty() {
        m.insert("referenceTypes".into(), json!(a.reference_types));
    }
    if !a.sub_attributes.is_empty() {
        m.insert(
            "subAttributes".into(),
            Value::Array(a.sub_attributes.iter().map(attribute_json).collect()),
        );
    }
    Value::Object(m)
}

/// A schema's URL below the base: its id, percent-encoded (Entra's ADSCIM schema id is
/// an http URL with slashes).
pub fn schema_location(s: &SchemaDef, base: &str) -> String {
    let id: String = form_urlencoded::byte_serialize(s.id.as_bytes()).collect();
    format!("{base}/Schemas/{id}")
}

/// A schema's `/Schemas/{id}` document (RFC 7643 §7): its attributes with all their
/// characteristics. `base` is the SCIM base URL; the id is percent-encoded in
/// `meta.location`.
pub fn schema_json(s: &SchemaDef, base: &str) -> Value {
    json!({
        "schemas": [SCHEMA_URN],
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "attributes": s.attributes.iter().map(attribute_json).collect::<Vec<_>>(),
        "meta": meta("Schema", schema_location(s, base)),
    })
}

/// Whether a schema is listed in `/Schemas` and in a resource type's
/// `schemaExtensions`. Entra ID's ADSCIM Group schema is accepted in requests but not
/// listed: its id is an http URL, and SCIM clients built on scim2-models (the
/// scim2-tester conformance checker among them) refuse to discover a server that
/// lists a schema whose id does not start with `urn:`. It stays readable at its own
/// location.
pub fn is_listed(s: &SchemaDef) -> bool {
    s.id.starts_with("urn:")
}

/// The schemas `/Schemas` lists (see [`is_listed`]).
pub fn listed_schemas() -> impl Iterator<Item = &'static SchemaDef> {
    all_schemas().iter().copied().filter(|s| is_listed(s))
}

/// The schema with this id (case-insensitively); `id` is already percent-decoded.
pub fn find_schema(id: &str) -> Option<&'static SchemaDef> {
    all_schemas()
        .iter()
        .copied()
        .find(|s| s.id.eq_ignore_ascii_case(id))
}

/// A resource type's `/ResourceTypes/{name}` document (RFC 7643 §6): endpoint, core
/// schema and the listed extensions with `required` (see [`is_listed`]). `base` is the
/// SCIM base URL, used in `meta.location`.
pub fn resource_type_json(rt: ResourceType, base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_URN],
        "id": rt.name(),
        "name": rt.name(),
        "endpoint": rt.endpoint(),
        "description": rt.description(),
        "schema": rt.schema().id,
        "schemaExtensions": rt.extensions().iter().filter(|e| is_listed(e)).map(|e| json!({"schema": e.id, "required": e.is_required()})).collect::<Vec<_>>(),
        "meta": meta("ResourceType", format!("{base}/ResourceTypes/{}", rt.name())),
    })
}

/// A ListResponse of all the given documents (discovery lists are not paged).
pub fn list_response(resources: Vec<Value>) -> Value {
    json!({
        "schemas": [LIST_URN],
        "totalResults": resources.len(),
        "itemsPerPage": resources.len(),
        "startIndex": 1,
        "Resources": resources,
    })
}
