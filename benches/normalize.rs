//! Request-work benchmark for the SCIM core: how normalising a body and applying a
//! PATCH scale with the number of values in one attribute. Linear work shows as a
//! flat time per value from 1,000 to 80,000 values; a quadratic step (as the
//! de-duplication of multi-valued attributes used to be) shows as a time per value
//! that grows with the size. Prints numbers; asserts nothing.
//!
//!   cargo bench --bench normalize

use std::time::{Duration, Instant};

use scimbridge::scim::patch;
use scimbridge::scim::resource::normalize;
use scimbridge::scim::schema::ResourceType;
use serde_json::{json, Map, Value};

fn per_value(total: Duration, n: usize) -> String {
    format!("{:>8.2} µs/value", total.as_secs_f64() * 1e6 / n as f64)
}

fn main() {
    println!(
        "{:<46} {:>8} {:>12} {:>18}",
        "case", "values", "total", "per value"
    );
    for n in [1_000usize, 10_000, 40_000, 80_000] {
        // A POST body whose emails repeat each value once (de-duplication), one
        // primary.
        let emails: Vec<Value> = (0..n)
            .map(|i| json!({"value": format!("u{}@example.com", i % (n / 2)), "type": "work"}))
            .collect();
        let body = json!({"userName": "bench", "emails": emails});
        let t = Instant::now();
        let out = normalize(ResourceType::User, &body).expect("normalize");
        let took = t.elapsed();
        assert_eq!(out.attrs["emails"].as_array().map(Vec::len), Some(n / 2));
        println!(
            "{:<46} {n:>8} {took:>12.2?} {:>18}",
            "normalize: POST with repeated emails",
            per_value(took, n)
        );

        // A PATCH adding n members to a group of n (half already members), then one
        // removing n by value list.
        let mut group: Map<String, Value> = Map::new();
        group.insert("displayName".into(), json!("g"));
        group.insert(
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
        let remove: Vec<Value> = (0..n).map(|i| json!({"value": format!("m{i}")})).collect();
        for (name, op) in [
            (
                "patch: add n members to a group of n",
                json!({"op": "add", "path": "members", "value": add}),
            ),
            (
                "patch: remove n members by value list",
                json!({"op": "remove", "path": "members", "value": remove}),
            ),
        ] {
            let ops = patch::parse_request(
                &json!({"schemas": [patch::PATCH_OP_URN], "Operations": [op]}),
            )
            .expect("parse");
            let t = Instant::now();
            patch::apply(ResourceType::Group, &mut group, &ops).expect("apply");
            let took = t.elapsed();
            println!("{name:<46} {n:>8} {took:>12.2?} {:>18}", per_value(took, n));
        }
    }
}
