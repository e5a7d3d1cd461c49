//! The body of every fuzz target, shared by the libFuzzer binaries in
//! `fuzz_targets/` (cargo-fuzz, `fuzz/run.sh`) and by the replay test in the normal
//! `cargo test` (`tests/it/fuzz_replay.rs`), which feeds them the committed seeds,
//! every regression input and bounded random mutations of both. Each function takes
//! arbitrary bytes, calls the parsers that take outside input the way the server
//! does, and must never panic; what it returns is only a count for the replay test.
//! Knows only the library's public API.

#![allow(dead_code)]

use scimbridge::scim::resource::{normalize, render, Meta, Projection};
use scimbridge::scim::schema::ResourceType;
use scimbridge::scim::{filter, patch, query};
use serde_json::{json, Value};

/// A target: arbitrary bytes in, nothing out; it must not panic.
pub type Target = fn(&[u8]);

/// Every target by name, as `fuzz/run.sh` and the seed directories name them.
pub const ALL: &[(&str, Target)] = &[
    ("filter", filter),
    ("patch", patch),
    ("resource", resource),
    ("bulk", bulk),
    ("export", export),
    ("import", import),
    ("x509", x509),
];

fn user() -> Value {
    json!({
        "id": "u1", "userName": "Alice@Example.com", "active": true, "externalId": "E1",
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [{"value": "alice@example.com", "type": "work", "primary": true}, {"value": "b@example.com"}],
        "addresses": [{"type": "work", "locality": "X"}],
        "meta": {"created": "2026-01-01T00:00:00Z", "lastModified": "2026-01-02T00:00:00Z"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D", "manager": {"value": "m"}}
    })
}

fn group() -> Value {
    json!({"id": "g1", "displayName": "Eng", "members": [{"value": "u1", "type": "User"}]})
}

/// Filter text: parse, render and parse again, validate for both resource types,
/// evaluate, plan the index use, rewrite membership checks.
pub fn filter(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = filter::parse(text) else { return };
    // The rendered text must read back (src/scim/properties.rs checks equality).
    let _ = filter::parse(&f.to_string());
    for (rt, r) in [(ResourceType::User, user()), (ResourceType::Group, group())] {
        let _ = filter::validate(&f, rt);
        let _ = filter::matches(&f, rt, r.as_object().unwrap());
        let _ = query::plan(&f, rt);
        let _ = query::resolve_member_checks(&f, &mut |id| id == "u1");
    }
}

/// PATCH: a request body (JSON), or, for other bytes, a PATCH path (the path
/// parser on its own); parsed, applied to a user and a group, then normalised as the
/// server stores the result.
pub fn patch(data: &[u8]) {
    let body = match serde_json::from_slice::<Value>(data) {
        Ok(body) => body,
        Err(_) => match std::str::from_utf8(data) {
            Ok(path) => json!({"schemas": [patch::PATCH_OP_URN], "Operations": [
                {"op": "remove", "path": path},
                {"op": "add", "path": path, "value": "x"},
            ]}),
            Err(_) => return,
        },
    };
    let Ok(ops) = patch::parse_request(&body) else {
        return;
    };
    for (rt, r) in [(ResourceType::User, user()), (ResourceType::Group, group())] {
        let _ = patch::member_delta(rt, &ops);
        let mut m = r.as_object().unwrap().clone();
        if patch::apply(rt, &mut m, &ops).is_ok() {
            let _ = normalize(rt, &Value::Object(m));
        }
    }
}

/// POST/PUT bodies and `attributes`/`excludedAttributes` lists: the first 64 bytes
/// are the list, the rest the body; normalise, render, project.
pub fn resource(data: &[u8]) {
    let (head, tail) = data.split_at(data.len().min(64));
    let Ok(body) = serde_json::from_slice::<Value>(tail) else {
        return;
    };
    let attrs = std::str::from_utf8(head).unwrap_or("");
    let meta = Meta {
        created: "2026-01-01T00:00:00Z".into(),
        last_modified: "2026-01-01T00:00:00Z".into(),
        version: 1,
        groups_tag: None,
    };
    let limits = scimbridge::scim::resource::RequestLimits::default();
    for rt in ResourceType::ALL {
        let _ = scimbridge::scim::resource::check_request_limits(&body, &limits);
        if let Ok(n) = normalize(rt, &body) {
            // The stored form is canonical: normalising it again must succeed.
            let again = normalize(rt, &Value::Object(n.attrs.clone()));
            assert!(
                again.is_ok(),
                "a normalised resource does not normalise again"
            );
            let full = render(rt, "id", n.attrs, &meta, None, "https://h/scim/v2");
            if let Ok(p) = Projection::parse(Some(attrs), None) {
                let _ = p.apply(rt, full.clone());
            }
            if let Ok(p) = Projection::parse(None, Some(attrs)) {
                let _ = p.apply(rt, full);
            }
        }
    }
}

/// Bulk request bodies: parsed and every operation built as `POST /Bulk` does,
/// nothing executed.
pub fn bulk(data: &[u8]) {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = scimbridge::fuzzing::bulk(&body, 1000);
}

/// Export files: verification of arbitrary bytes must refuse, never panic.
pub fn export(data: &[u8]) {
    let _ = scimbridge::migrate::export::verify(data);
}

/// Import files: every record checked as `import` checks it (as a create would),
/// whether or not the file verifies.
pub fn import(data: &[u8]) {
    let limits = scimbridge::scim::resource::RequestLimits::default();
    let _ = scimbridge::migrate::export::check_records(data, &limits);
}

/// Certificates: the reader behind the certificate checks, the dashboard and the
/// expiry metric.
pub fn x509(data: &[u8]) {
    let _ = scimbridge::tls::x509::parse(data);
}
