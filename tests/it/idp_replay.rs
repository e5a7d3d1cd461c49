//! Replays the request sequences that identity providers document or ship (Microsoft
//! Entra ID, Okta, OneLogin, authentik's SCIM provider, Keycloak's SCIM plugin)
//! against a fresh bridge over TLS. JumpCloud, Rippling, PingOne and Google Workspace
//! publish setup guides but no request sequence; none is invented for them. Each
//! fixture in `tests/fixtures/` names the public page its requests come from
//! (`source`), and lists steps:
//!
//! - `method`, `path` (below `/scim/v2`; the query is written unencoded and encoded
//!   here), optional `body` and `headers`;
//! - `{name}` placeholders in the path, body, headers and expectations are filled
//!   from earlier `capture`s: `"capture": {"user_id": "/id"}` takes a JSON pointer
//!   into the response;
//! - `expect`: `status`, `json` (pointer → exact value), `absent` (pointers that must
//!   not resolve), `len` (pointer → array length), `header` (name → value);
//! - `collect`: `{"seen": "/Resources/*/id"}` appends every matched value to a named
//!   list, checked at the end against the fixture's `collected` (`distinct` count,
//!   `includes`, `same_order_as` another list), so paging is checked without
//!   assuming which order the server chose, only that it keeps it.
//!
//! One test per fixture, named after it; `every_fixture_is_replayed` keeps the list
//! and the directory in step.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::support::{Resp, Server};
use serde_json::Value;

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Replaces `{name}` with captured values in a string.
fn fill(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Fills placeholders in every string of a JSON value (keys included).
fn fill_json(v: &Value, vars: &HashMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(fill(s, vars)),
        Value::Array(items) => Value::Array(items.iter().map(|i| fill_json(i, vars)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (fill(k, vars), fill_json(v, vars)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Percent-encodes the query of `path` the way an HTTP client would.
fn encode_query(path: &str) -> String {
    let Some((base, query)) = path.split_once('?') else {
        return path.to_owned();
    };
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        ser.append_pair(k, v);
    }
    format!("{base}?{}", ser.finish())
}

/// Values at a pointer whose segments may be `*` (every array element).
fn pointer_all<'a>(v: &'a Value, pointer: &str) -> Vec<&'a Value> {
    let mut current = vec![v];
    for seg in pointer.split('/').skip(1) {
        let mut next = Vec::new();
        for c in current {
            match (seg, c) {
                ("*", Value::Array(items)) => next.extend(items.iter()),
                (s, Value::Array(items)) => {
                    next.extend(s.parse::<usize>().ok().and_then(|i| items.get(i)))
                }
                (s, Value::Object(m)) => next.extend(m.get(s)),
                _ => {}
            }
        }
        current = next;
    }
    current
}

fn describe(step: usize, name: &str, method: &str, path: &str, resp: &Resp) -> String {
    format!(
        "step {step} ({name}): {method} {path} → {} {}",
        resp.status,
        String::from_utf8_lossy(&resp.body)
    )
}

fn replay(file: &str) {
    let text = std::fs::read_to_string(fixtures_dir().join(file))
        .unwrap_or_else(|e| panic!("read fixture {file}: {e}"));
    let fixture: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("fixture {file} is not JSON: {e}"));
    let source = &fixture["source"];
    assert!(
        source["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
            && source["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{file}: every fixture names its public source (url and title)"
    );
    assert!(fixture["idp"].is_string(), "{file}: idp missing");

    let server = Server::start();
    let client = server.client();
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut collected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let steps = fixture["steps"].as_array().expect("steps");
    for (i, step) in steps.iter().enumerate() {
        let step = fill_json(step, &vars);
        let name = step["name"].as_str().unwrap_or("");
        let method = step["method"].as_str().expect("method");
        let path = encode_query(step["path"].as_str().expect("path"));
        let headers: Vec<(String, String)> = step["headers"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let extra: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let body = step.get("body");
        let resp = client.scim_with(method, &path, body, &extra);
        let what = describe(i, name, method, &path, &resp);

        let expect = &step["expect"];
        if let Some(status) = expect["status"].as_u64() {
            assert_eq!(u64::from(resp.status), status, "{file}: {what}");
        }
        assert_ne!(resp.status, 500, "{file}: {what}");
        let json = if resp.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&resp.body)
                .unwrap_or_else(|e| panic!("{file}: {what}: body is not JSON: {e}"))
        };
        if let Some(m) = expect["json"].as_object() {
            for (pointer, want) in m {
                assert_eq!(
                    json.pointer(pointer),
                    Some(want),
                    "{file}: {what}: at {pointer}"
                );
            }
        }
        if let Some(list) = expect["absent"].as_array() {
            for pointer in list.iter().filter_map(Value::as_str) {
                assert!(
                    json.pointer(pointer).is_none(),
                    "{file}: {what}: {pointer} should be absent"
                );
            }
        }
        if let Some(m) = expect["len"].as_object() {
            for (pointer, want) in m {
                let got = json
                    .pointer(pointer)
                    .and_then(Value::as_array)
                    .map(Vec::len);
                assert_eq!(
                    got.map(|n| n as u64),
                    want.as_u64(),
                    "{file}: {what}: length of {pointer}"
                );
            }
        }
        if let Some(m) = expect["header"].as_object() {
            for (h, want) in m {
                assert_eq!(
                    resp.header(h).as_deref(),
                    want.as_str(),
                    "{file}: {what}: header {h}"
                );
            }
        }
        if let Some(m) = step["capture"].as_object() {
            for (var, pointer) in m {
                let pointer = pointer.as_str().expect("capture pointer");
                let v = match pointer.strip_prefix("header:") {
                    Some(h) => resp.header(h),
                    None => json
                        .pointer(pointer)
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                };
                let v =
                    v.unwrap_or_else(|| panic!("{file}: {what}: nothing at {pointer} to capture"));
                vars.insert(var.clone(), v);
            }
        }
        if let Some(m) = step["collect"].as_object() {
            for (list, pointer) in m {
                let values = pointer_all(&json, pointer.as_str().expect("collect pointer"));
                collected
                    .entry(list.clone())
                    .or_default()
                    .extend(values.iter().filter_map(|v| v.as_str()).map(str::to_owned));
            }
        }
    }

    if let Some(m) = fixture["collected"].as_object() {
        for (list, want) in m {
            let got = collected.get(list).cloned().unwrap_or_default();
            let mut distinct = got.clone();
            distinct.sort();
            distinct.dedup();
            if let Some(n) = want["distinct"].as_u64() {
                assert_eq!(
                    distinct.len() as u64,
                    n,
                    "{file}: collected {list}: {got:?}"
                );
                assert_eq!(
                    got.len(),
                    distinct.len(),
                    "{file}: {list} has repeats: {got:?}"
                );
            }
            if let Some(other) = want["same_order_as"].as_str() {
                assert_eq!(
                    Some(&got),
                    collected.get(other),
                    "{file}: {list} and {other} differ in order"
                );
            }
            for item in want["includes"].as_array().into_iter().flatten() {
                let item = fill(item.as_str().unwrap_or_default(), &vars);
                assert!(got.contains(&item), "{file}: {list} lacks {item}: {got:?}");
            }
        }
    }
}

macro_rules! replays {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                replay(concat!(stringify!($name), ".json"));
            }
        )*

        const REPLAYED: &[&str] = &[$(concat!(stringify!($name), ".json")),*];
    };
}

replays!(
    entra_test_connection,
    entra_user_lifecycle,
    entra_user_update_without_compliance_flag,
    entra_user_update_with_compliance_flag,
    entra_work_email_created_by_path,
    entra_manager,
    entra_create_with_nulls_and_unknown_schemas,
    entra_group_lifecycle,
    okta_test_connector,
    okta_user_lifecycle,
    okta_group_push,
    okta_import_paging,
    onelogin_provisioning,
    authentik_provider,
    keycloak_scim_plugin,
);

#[test]
fn every_fixture_is_replayed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("tests/fixtures")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = REPLAYED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        on_disk, listed,
        "add a name to replays!() for each fixture in tests/fixtures"
    );
}
