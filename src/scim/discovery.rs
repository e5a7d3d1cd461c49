//! The discovery documents of RFC 7644 §4: ServiceProviderConfig, Schemas and
//! ResourceTypes, built from the schema tables so they always say what the server
//! actually does.

use serde_json::{json, Map, Value};

use super::schema::{all_schemas, AttrDef, ResourceType, SchemaDef};

pub const SPC_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
pub const RESOURCE_TYPE_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
pub const SCHEMA_URN: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";
pub const LIST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";

/// What the server announces about its limits and features.
#[derive(Debug, Clone)]
pub struct Capabilities {
    pub max_results: usize,
    pub default_page_size: usize,
    pub max_body_bytes: usize,
    pub bulk: Option<(usize, usize)>,
}

fn meta(resource_type: &str, location: String) -> Value {
    json!({"resourceType": resource_type, "location": location})
}

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
            "cursor": false,
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

/// The schema with this id (case-insensitively); `id` is already percent-decoded.
pub fn find_schema(id: &str) -> Option<&'static SchemaDef> {
    all_schemas()
        .iter()
        .copied()
        .find(|s| s.id.eq_ignore_ascii_case(id))
}

pub fn resource_type_json(rt: ResourceType, base: &str) -> Value {
    json!({
        "schemas": [RESOURCE_TYPE_URN],
        "id": rt.name(),
        "name": rt.name(),
        "endpoint": rt.endpoint(),
        "description": rt.description(),
        "schema": rt.schema().id,
        "schemaExtensions": rt.extensions().iter().map(|e| json!({"schema": e.id, "required": e.is_required()})).collect::<Vec<_>>(),
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
