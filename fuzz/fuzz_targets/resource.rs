//! Resource bodies (POST/PUT) and attribute lists: normalise, render, project.
#![no_main]
use libfuzzer_sys::fuzz_target;
use scimbridge::scim::resource::{normalize, render, Meta, Projection};
use scimbridge::scim::schema::ResourceType;

fuzz_target!(|data: &[u8]| {
    let (head, tail) = data.split_at(data.len().min(64));
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(tail) else {
        return;
    };
    let attrs = std::str::from_utf8(head).unwrap_or("");
    let meta = Meta {
        created: "2026-01-01T00:00:00Z".into(),
        last_modified: "2026-01-01T00:00:00Z".into(),
        version: 1,
        groups_tag: None,
    };
    for rt in ResourceType::ALL {
        if let Ok(n) = normalize(rt, &body) {
            let full = render(rt, "id", n.attrs, &meta, None, "https://h/scim/v2");
            if let Ok(p) = Projection::parse(Some(attrs), None) {
                let _ = p.apply(rt, full.clone());
            }
            if let Ok(p) = Projection::parse(None, Some(attrs)) {
                let _ = p.apply(rt, full);
            }
        }
    }
});
