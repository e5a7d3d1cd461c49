//! PATCH bodies: parse and apply to a user and a group, then normalise the result,
//! as the server does. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use scimbridge::scim::{patch, resource, schema::ResourceType};

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(ops) = patch::parse_request(&body) else {
        return;
    };
    let user = serde_json::json!({
        "id": "u1", "userName": "alice", "active": true,
        "emails": [{"value": "a@example.com", "type": "work", "primary": true}, {"value": "b@example.com"}],
        "addresses": [{"type": "work", "locality": "X"}],
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "D"}
    });
    let group = serde_json::json!({"id": "g1", "displayName": "Eng", "members": [{"value": "u1", "type": "User"}]});
    for (rt, r) in [(ResourceType::User, user), (ResourceType::Group, group)] {
        let _ = patch::member_delta(rt, &ops);
        let mut m = r.as_object().unwrap().clone();
        if patch::apply(rt, &mut m, &ops).is_ok() {
            let _ = resource::normalize(rt, &serde_json::Value::Object(m));
        }
    }
});
