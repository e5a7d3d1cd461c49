//! Filter text: parse, validate for both resource types, evaluate. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use scimbridge::scim::{filter, query, schema::ResourceType};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(f) = filter::parse(text) else { return };
    let user = serde_json::json!({
        "id": "u1", "userName": "Alice@Example.com", "active": true, "externalId": "E1",
        "name": {"givenName": "Alice", "familyName": "Liddell"},
        "emails": [{"value": "alice@example.com", "type": "work", "primary": true}],
        "meta": {"created": "2026-01-01T00:00:00Z", "lastModified": "2026-01-02T00:00:00Z"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D", "manager": {"value": "m"}}
    });
    let group = serde_json::json!({"id": "g1", "displayName": "Eng", "members": [{"value": "u1", "type": "User"}]});
    for (rt, r) in [(ResourceType::User, &user), (ResourceType::Group, &group)] {
        let _ = filter::validate(&f, rt);
        let _ = filter::matches(&f, rt, r.as_object().unwrap());
        let _ = query::plan(&f, rt);
        let _ = query::resolve_member_checks(&f, &mut |id| id == "u1");
    }
});
