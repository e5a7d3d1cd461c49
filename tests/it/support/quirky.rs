//! A configurable, in-memory SCIM 2.0 target on 127.0.0.1 (plain HTTP on loopback,
//! which the push allows) with one switch for each quirk hosted provisioning services
//! have (issue 15): refused filters, accounts only the target has, case rules,
//! strict schemas, dropped attributes, PATCH-only or PUT-only membership, body
//! limits, 503 after processing, 429, capped pages, listings refused without a
//! filter, latency. The test reads the
//! target's true state directly (`Quirky::users`, `Quirky::groups`), not through its
//! SCIM answers, and counts every request by method and status.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The switches. `Default` is a compliant target without Bulk.
#[derive(Debug, Clone, Default)]
pub struct Quirks {
    /// 1: `externalId eq …` answers 400 invalidFilter.
    pub refuse_external_id_filter: bool,
    /// 4: `userName eq` compares case-sensitively.
    pub filter_case_sensitive: bool,
    /// 4: uniqueness is case-sensitive too (so a create never answers 409 for a
    /// case variant: duplicates unless the client matches by its own rule).
    pub unique_case_sensitive: bool,
    /// 5: /Schemas and /ResourceTypes list no Enterprise extension, and a User with
    /// it is refused with 400.
    pub strict_schemas: bool,
    /// 5: accepts externalId and does not keep it.
    pub drops_external_id: bool,
    /// 6: a Group PUT answers 405 (membership only by PATCH).
    pub no_group_put: bool,
    /// 6: a Group PATCH answers 405 (membership only by PUT).
    pub no_group_patch: bool,
    /// 7: bodies larger than this answer 413.
    pub max_body: Option<usize>,
    /// 7: what ServiceProviderConfig announces as bulk.maxPayloadSize (absent: None).
    pub announced_payload: Option<usize>,
    /// 8: every Nth POST is processed, then answered 503 (a gateway timing out).
    pub fail_after_processing: u32,
    /// 9: every Nth request answers 429 with Retry-After: 1.
    pub throttle_every: u32,
    /// GET /Users or /Groups without a filter answers 403 (a hosted service that
    /// answers only filtered searches); filtered searches and reads by id work.
    pub refuse_unfiltered_list: bool,
    /// Pages hold at most this many resources (0: 200).
    pub page_cap: usize,
    /// Every answer waits this long.
    pub latency_ms: u64,
    /// Bulk offered (maxOperations 100).
    pub bulk: bool,
    /// RFC 9865 cursor paging offered.
    pub cursor: bool,
    /// Every POST answers 400 from now on (an interruption the test can lift).
    pub refuse_creates: bool,
    /// Every POST /Groups answers 400 (a push that stops after its users; the test
    /// can lift it).
    pub refuse_group_creates: bool,
    /// Stores a User's displayName in upper case (a target that changes data).
    pub mangle_display_name: bool,
    /// The `detail` of refused creates (default: "creates are refused right now");
    /// a hostile target puts newlines and ANSI escapes in it (issue 11).
    pub refusal_detail: Option<String>,
    /// Every GET of /Users answers a body of this many bytes, streamed (a hostile
    /// or broken target, issue 11); written until the client goes away.
    pub huge_users_answer: Option<u64>,
    /// With `huge_users_answer`: announce the size in Content-Length (else chunked).
    pub huge_with_length: bool,
}

#[derive(Debug, Default)]
pub struct State {
    pub quirks: Quirks,
    pub users: BTreeMap<String, Value>,
    pub groups: BTreeMap<String, Value>,
    next: u64,
    /// Requests seen: total, and (method, status) → count.
    pub requests: u64,
    pub by_status: BTreeMap<(String, u16), u64>,
    /// Bodies of Group PATCH requests, in order.
    pub group_patches: Vec<Value>,
    /// GET /Groups requests (listings and reads by id), as (path after the base,
    /// query parameters), in order.
    pub group_gets: Vec<(String, BTreeMap<String, String>)>,
    posts: u32,
    /// userName lowercased → ids (uniqueness checks without a scan).
    names: BTreeMap<String, Vec<String>>,
}

impl State {
    fn index_user(&mut self, id: &str, v: &Value) {
        self.unindex_user(id);
        let n = v["userName"].as_str().unwrap_or("").to_lowercase();
        self.names.entry(n).or_default().push(id.to_owned());
    }
    fn unindex_user(&mut self, id: &str) {
        if let Some(old) = self.users.get(id) {
            let n = old["userName"].as_str().unwrap_or("").to_lowercase();
            if let Some(ids) = self.names.get_mut(&n) {
                ids.retain(|x| x != id);
            }
        }
    }
    /// Deletes a User or Group (`kind`: the endpoint's name) as DELETE does, with
    /// its memberships. `false` when there is no such resource.
    pub fn delete(&mut self, kind: &str, id: &str) -> bool {
        let removed = if kind == "Users" {
            self.unindex_user(id);
            self.users.remove(id)
        } else {
            self.groups.remove(id)
        };
        if removed.is_none() {
            return false;
        }
        for g in self.groups.values_mut() {
            if let Some(m) = g["members"].as_array_mut() {
                m.retain(|x| x["value"] != id);
            }
        }
        true
    }
    /// Removes a user the test planted (a duplicate) as if it never was.
    pub fn remove_user(&mut self, id: &str) {
        self.unindex_user(id);
        self.users.remove(id);
    }
}

#[derive(Clone)]
pub struct Quirky {
    pub state: Arc<Mutex<State>>,
    /// Base URL, e.g. `http://127.0.0.1:PORT/scim/v2`.
    pub base: String,
    pub token: String,
}

impl Quirky {
    pub fn start(quirks: Quirks) -> Quirky {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            quirks,
            ..State::default()
        }));
        let token = "quirky-target-token".to_owned();
        let (s, t) = (state.clone(), token.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (s, t) = (s.clone(), t.clone());
                std::thread::spawn(move || serve(stream, &s, &t));
            }
        });
        Quirky {
            state,
            base: format!("http://{addr}/scim/v2"),
            token,
        }
    }

    pub fn set(&self, f: impl FnOnce(&mut Quirks)) {
        f(&mut self.state.lock().unwrap().quirks);
    }

    /// Adds a resource directly (an account the target already has).
    pub fn seed_user(&self, body: Value) -> String {
        let mut st = self.state.lock().unwrap();
        st.next += 1;
        let id = format!("t-{:06}", st.next);
        let mut v = body;
        v["id"] = json!(id);
        st.index_user(&id, &v);
        st.users.insert(id.clone(), v);
        id
    }

    pub fn users(&self) -> Vec<Value> {
        self.state.lock().unwrap().users.values().cloned().collect()
    }
    pub fn groups(&self) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .groups
            .values()
            .cloned()
            .collect()
    }
    pub fn count(&self, method: &str, status: u16) -> u64 {
        let st = self.state.lock().unwrap();
        st.by_status
            .get(&(method.to_owned(), status))
            .copied()
            .unwrap_or(0)
    }
    pub fn requests(&self) -> u64 {
        self.state.lock().unwrap().requests
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>, token: &str) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("/").to_owned();
        let mut len = 0usize;
        let mut auth = String::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if k.eq_ignore_ascii_case("authorization") {
                    auth = v.trim().to_owned();
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (latency, huge, with_length) = {
            let q = &state.lock().unwrap().quirks;
            (q.latency_ms, q.huge_users_answer, q.huge_with_length)
        };
        if latency > 0 {
            std::thread::sleep(Duration::from_millis(latency));
        }
        if let Some(size) = huge.filter(|_| method == "GET" && target.contains("/Users")) {
            *state
                .lock()
                .unwrap()
                .by_status
                .entry((method.clone(), 200))
                .or_default() += 1;
            stream_huge(&mut out, size, with_length);
            return;
        }
        let (status, extra, answer) = if auth != format!("Bearer {token}") {
            (401, "", error(401, None, "no or wrong token"))
        } else {
            handle(state, &method, &target, &body)
        };
        {
            let mut st = state.lock().unwrap();
            *st.by_status.entry((method.clone(), status)).or_default() += 1;
        }
        let bytes = serde_json::to_vec(&answer).unwrap();
        // Head and body in one write: written apart, the body waits behind Nagle's
        // algorithm for the client's delayed ACK (about 40 ms an answer on Linux).
        let mut message = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n{extra}\r\n",
            bytes.len()
        )
        .into_bytes();
        message.extend_from_slice(&bytes);
        if out.write_all(&message).is_err() {
            return;
        }
    }
}

/// Writes a 200 answer of `size` bytes (a list response that never ends), in 1 MiB
/// pieces, until done or the client closes the connection.
fn stream_huge(out: &mut TcpStream, size: u64, with_length: bool) {
    let framing = if with_length {
        format!("Content-Length: {size}")
    } else {
        "Transfer-Encoding: chunked".to_owned()
    };
    let head =
        format!("HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\n{framing}\r\n\r\n");
    if out.write_all(head.as_bytes()).is_err() {
        return;
    }
    let piece = {
        let mut p = b"{\"Resources\":[".to_vec();
        while p.len() < (1 << 20) - 16 {
            p.extend_from_slice(b"{\"id\":\"x\"},");
        }
        p.resize(1 << 20, b' ');
        p
    };
    let mut sent = 0u64;
    while sent < size {
        let n = (size - sent).min(piece.len() as u64) as usize;
        let ok = if with_length {
            out.write_all(&piece[..n])
        } else {
            write!(out, "{n:x}\r\n")
                .and_then(|_| out.write_all(&piece[..n]))
                .and_then(|_| out.write_all(b"\r\n"))
        };
        if ok.is_err() {
            return;
        }
        sent += n as u64;
    }
    if !with_length {
        let _ = out.write_all(b"0\r\n\r\n");
    }
}

fn error(status: u16, scim_type: Option<&str>, detail: &str) -> Value {
    let mut v = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": status.to_string(), "detail": detail});
    if let Some(t) = scim_type {
        v["scimType"] = json!(t);
    }
    v
}

fn query(target: &str) -> (String, BTreeMap<String, String>) {
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let params = form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    (path.trim_start_matches("/scim/v2").to_owned(), params)
}

type Answer = (u16, &'static str, Value);

fn handle(state: &Mutex<State>, method: &str, target: &str, body: &[u8]) -> Answer {
    let (path, params) = query(target);
    let parsed: Result<Value, _> = if body.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice(body)
    };
    let mut st = state.lock().unwrap();
    st.requests += 1;
    let q = st.quirks.clone();
    if q.throttle_every > 0 && st.requests.is_multiple_of(q.throttle_every as u64) {
        return (429, "Retry-After: 1\r\n", error(429, None, "slow down"));
    }
    if let Some(max) = q.max_body {
        if body.len() > max {
            return (413, "", error(413, None, "request body too large"));
        }
    }
    let Ok(json) = parsed else {
        return (400, "", error(400, Some("invalidSyntax"), "not JSON"));
    };
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    if method == "GET" && segs.first() == Some(&"Groups") {
        st.group_gets.push((path.clone(), params.clone()));
    }
    match (method, segs.as_slice()) {
        ("GET", ["ServiceProviderConfig"]) => {
            let mut bulk = json!({"supported": q.bulk, "maxOperations": 100});
            if let Some(p) = q.announced_payload {
                bulk["maxPayloadSize"] = json!(p);
            }
            (
                200,
                "",
                json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "patch": {"supported": true}, "bulk": bulk,
                "filter": {"supported": true, "maxResults": page_size(&q)},
                "pagination": {"cursor": q.cursor, "index": true},
                "changePassword": {"supported": false}, "sort": {"supported": false},
                "etag": {"supported": false}, "authenticationSchemes": []}),
            )
        }
        ("GET", ["Schemas"]) => (200, "", schemas(&q)),
        ("GET", ["ResourceTypes"]) => {
            let exts = if q.strict_schemas {
                json!([])
            } else {
                json!([{"schema": ENTERPRISE, "required": false}])
            };
            (
                200,
                "",
                json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 2,
                "Resources": [
                    {"id": "User", "name": "User", "endpoint": "/Users", "schema": "urn:ietf:params:scim:schemas:core:2.0:User", "schemaExtensions": exts},
                    {"id": "Group", "name": "Group", "endpoint": "/Groups", "schema": "urn:ietf:params:scim:schemas:core:2.0:Group"}]}),
            )
        }
        ("GET", ["Users" | "Groups"])
            if q.refuse_unfiltered_list && !params.contains_key("filter") =>
        {
            (
                403,
                "",
                error(403, None, "listing without a filter is not allowed"),
            )
        }
        ("GET", [kind @ ("Users" | "Groups")]) => list(&st, &q, kind, &params),
        ("GET", [kind @ ("Users" | "Groups"), id]) => {
            let map = if *kind == "Users" {
                &st.users
            } else {
                &st.groups
            };
            match map.get(*id) {
                Some(v) => {
                    let mut v = v.clone();
                    if params.get("attributes").is_some_and(|a| a == "members") {
                        v = json!({"id": v["id"], "members": v.get("members").cloned().unwrap_or(json!([]))});
                    }
                    (200, "", v)
                }
                None => (404, "", error(404, None, "not found")),
            }
        }
        ("POST", ["Bulk"]) if q.bulk => bulk(&mut st, &q, &json),
        ("POST", [kind @ ("Users" | "Groups")]) => {
            if q.refuse_creates || (q.refuse_group_creates && *kind == "Groups") {
                return (400, "", error(400, None, &refusal(&q)));
            }
            st.posts += 1;
            let fail =
                q.fail_after_processing > 0 && st.posts.is_multiple_of(q.fail_after_processing);
            let r = create(&mut st, &q, kind, json);
            if fail && r.0 == 201 {
                return (503, "", error(503, None, "gateway timeout"));
            }
            r
        }
        ("PUT", ["Groups", _]) if q.no_group_put => (405, "", error(405, None, "use PATCH")),
        ("PATCH", ["Groups", _]) if q.no_group_patch => (405, "", error(405, None, "use PUT")),
        ("PUT", [kind @ ("Users" | "Groups"), id]) => {
            if *kind == "Users" {
                if let Some(e) = refuse_user(&q, &json) {
                    return e;
                }
            }
            // As a compliant target: a manager or member must be a resource it has.
            let refs: Vec<Value> = if *kind == "Users" {
                vec![json[ENTERPRISE]["manager"].clone()]
            } else {
                json["members"].as_array().cloned().unwrap_or_default()
            };
            if let Some(e) = unknown_reference(&st, refs) {
                return e;
            }
            let users = *kind == "Users";
            if users {
                if let Some(e) = conflict(&st, &q, &json, Some(id)) {
                    return e;
                }
            }
            let exists = if users {
                st.users.contains_key(*id)
            } else {
                st.groups.contains_key(*id)
            };
            if !exists {
                return (404, "", error(404, None, "not found"));
            }
            let v = keep(&q, users, json, id);
            if users {
                st.index_user(id, &v);
                st.users.insert(id.to_string(), v.clone());
            } else {
                st.groups.insert(id.to_string(), v.clone());
            }
            (200, "", v)
        }
        ("PATCH", ["Groups", id]) => {
            st.group_patches.push(json.clone());
            // As a compliant target: a member added must be a User or Group it has.
            let added = json["Operations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|op| {
                    op["op"]
                        .as_str()
                        .is_some_and(|o| o.eq_ignore_ascii_case("add"))
                })
                .flat_map(|op| op["value"].as_array().cloned().unwrap_or_default())
                .collect();
            if let Some(e) = unknown_reference(&st, added) {
                return e;
            }
            let Some(g) = st.groups.get_mut(*id) else {
                return (404, "", error(404, None, "not found"));
            };
            for op in json["Operations"].as_array().cloned().unwrap_or_default() {
                let kind = op["op"].as_str().unwrap_or("").to_lowercase();
                let path = op["path"].as_str().unwrap_or("");
                let members = g["members"].as_array().cloned().unwrap_or_default();
                match (kind.as_str(), path) {
                    ("add", "members") => {
                        let mut m = members;
                        for v in op["value"].as_array().cloned().unwrap_or_default() {
                            if !m.iter().any(|x| x["value"] == v["value"]) {
                                m.push(json!({"value": v["value"]}));
                            }
                        }
                        g["members"] = json!(m);
                    }
                    ("remove", p) if p.starts_with("members[value eq \"") => {
                        let id = p
                            .trim_start_matches("members[value eq \"")
                            .trim_end_matches("\"]");
                        let m: Vec<Value> =
                            members.into_iter().filter(|x| x["value"] != id).collect();
                        g["members"] = json!(m);
                    }
                    ("replace", "") => {
                        for (k, v) in op["value"].as_object().cloned().unwrap_or_default() {
                            if k == "externalId" && q.drops_external_id {
                                continue;
                            }
                            g[k.as_str()] = v;
                        }
                    }
                    _ => {
                        return (
                            400,
                            "",
                            error(400, Some("invalidPath"), "unsupported PATCH"),
                        )
                    }
                }
            }
            (204, "", Value::Null)
        }
        ("DELETE", [kind @ ("Users" | "Groups"), id]) => {
            if !st.delete(kind, id) {
                return (404, "", error(404, None, "not found"));
            }
            (204, "", Value::Null)
        }
        _ => (404, "", error(404, None, "no such endpoint")),
    }
}

fn page_size(q: &Quirks) -> usize {
    if q.page_cap == 0 {
        200
    } else {
        q.page_cap
    }
}

fn schemas(q: &Quirks) -> Value {
    let sub = |names: &[&str]| -> Value {
        json!(names
            .iter()
            .map(|n| json!({"name": n, "type": "string"}))
            .collect::<Vec<_>>())
    };
    let user = json!({"id": "urn:ietf:params:scim:schemas:core:2.0:User", "name": "User", "attributes": [
        {"name": "userName"}, {"name": "name", "subAttributes": sub(&["formatted", "familyName", "givenName", "middleName"])},
        {"name": "displayName"}, {"name": "active"}, {"name": "title"},
        {"name": "emails", "subAttributes": sub(&["value", "type", "primary", "display"])}]});
    let group = json!({"id": "urn:ietf:params:scim:schemas:core:2.0:Group", "name": "Group", "attributes": [
        {"name": "displayName"}, {"name": "members", "subAttributes": sub(&["value", "type", "display", "$ref"])}]});
    let ent = json!({"id": ENTERPRISE, "name": "EnterpriseUser", "attributes": [
        {"name": "department"}, {"name": "employeeNumber"}, {"name": "manager", "subAttributes": sub(&["value", "displayName", "$ref"])}]});
    let mut all = vec![user, group];
    if !q.strict_schemas {
        all.push(ent);
    }
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": all.len(), "Resources": all})
}

/// `attr eq "value"`: the only filter this target understands.
fn filter_matches(q: &Quirks, filter: &str, v: &Value) -> Result<bool, Answer> {
    let Some((attr, rest)) = filter.split_once(" eq ") else {
        return Err((
            400,
            "",
            error(400, Some("invalidFilter"), "only eq is supported"),
        ));
    };
    let want = rest.trim().trim_matches('"').replace("\\\"", "\"");
    match attr {
        "externalId" if q.refuse_external_id_filter => Err((
            400,
            "",
            error(
                400,
                Some("invalidFilter"),
                "filtering on externalId is not supported",
            ),
        )),
        "externalId" | "id" => Ok(v[attr].as_str() == Some(want.as_str())),
        "userName" | "displayName" => {
            let got = v[attr].as_str().unwrap_or("");
            Ok(if attr == "userName" && q.filter_case_sensitive {
                got == want
            } else {
                got.to_lowercase() == want.to_lowercase()
            })
        }
        _ => Err((
            400,
            "",
            error(400, Some("invalidFilter"), "unsupported attribute"),
        )),
    }
}

fn list(st: &State, q: &Quirks, kind: &str, params: &BTreeMap<String, String>) -> Answer {
    let map = if kind == "Users" {
        &st.users
    } else {
        &st.groups
    };
    let mut all = Vec::new();
    for v in map.values() {
        if let Some(f) = params.get("filter") {
            match filter_matches(q, f, v) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => return e,
            }
        }
        let mut v = v.clone();
        if params
            .get("excludedAttributes")
            .is_some_and(|e| e.contains("members"))
        {
            if let Some(o) = v.as_object_mut() {
                o.remove("members");
            }
        }
        all.push(v);
    }
    let cap = page_size(q);
    let count: usize = params
        .get("count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(cap)
        .min(cap);
    let total = all.len();
    let (start, next) = if let Some(c) = params.get("cursor").filter(|_| q.cursor) {
        let start: usize = c.parse().unwrap_or(0);
        (
            start,
            (start + count < total).then(|| (start + count).to_string()),
        )
    } else {
        let s: usize = params
            .get("startIndex")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1);
        (s.max(1) - 1, None)
    };
    let page: Vec<Value> = all.into_iter().skip(start).take(count).collect();
    let mut out = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": total, "itemsPerPage": page.len(), "startIndex": start + 1, "Resources": page});
    if let Some(n) = next {
        out["nextCursor"] = json!(n);
    }
    (200, "", out)
}

/// 400 when a reference (`{"value": id}`: a member, a manager) names no User or
/// Group of this target.
fn unknown_reference(st: &State, refs: Vec<Value>) -> Option<Answer> {
    let m = refs
        .iter()
        .filter_map(|v| v["value"].as_str())
        .find(|m| !st.users.contains_key(*m) && !st.groups.contains_key(*m))?;
    let detail = format!("\"{m}\" is not a User or Group of this directory");
    Some((400, "", error(400, Some("invalidValue"), &detail)))
}

fn refuse_user(q: &Quirks, body: &Value) -> Option<Answer> {
    if q.strict_schemas && body.get(ENTERPRISE).is_some() {
        return Some((
            400,
            "",
            error(
                400,
                Some("invalidSyntax"),
                &format!("unknown schema {ENTERPRISE}"),
            ),
        ));
    }
    None
}

fn conflict(st: &State, q: &Quirks, body: &Value, except: Option<&str>) -> Option<Answer> {
    let name = body["userName"].as_str().unwrap_or("");
    let ids = st
        .names
        .get(&name.to_lowercase())
        .cloned()
        .unwrap_or_default();
    let clash = ids.iter().any(|id| {
        let other = st.users[id]["userName"].as_str().unwrap_or("");
        let same = !q.unique_case_sensitive || other == name;
        same && Some(id.as_str()) != except
    });
    clash.then(|| (409, "", error(409, Some("uniqueness"), "userName is taken")))
}

/// What the target keeps of a body.
fn keep(q: &Quirks, users: bool, body: Value, id: &str) -> Value {
    let mut v = body;
    if let Some(o) = v.as_object_mut() {
        o.remove("schemas");
        if q.drops_external_id {
            o.remove("externalId");
        }
        if users && q.mangle_display_name {
            if let Some(d) = o.get("displayName").and_then(Value::as_str) {
                let up = d.to_uppercase();
                o.insert("displayName".into(), json!(up));
            }
        }
        o.insert("id".into(), json!(id));
    }
    v
}

fn create(st: &mut State, q: &Quirks, kind: &str, body: Value) -> Answer {
    let users = kind == "Users";
    if users {
        if let Some(e) = refuse_user(q, &body) {
            return e;
        }
        if let Some(e) = unknown_reference(st, vec![body[ENTERPRISE]["manager"].clone()]) {
            return e;
        }
        if let Some(e) = conflict(st, q, &body, None) {
            return e;
        }
    }
    st.next += 1;
    let id = format!("t-{:06}", st.next);
    let v = keep(q, users, body, &id);
    if users {
        st.index_user(&id, &v);
        st.users.insert(id, v.clone());
    } else {
        st.groups.insert(id, v.clone());
    }
    (201, "", v)
}

fn refusal(q: &Quirks) -> String {
    q.refusal_detail
        .clone()
        .unwrap_or_else(|| "creates are refused right now".to_owned())
}

fn bulk(st: &mut State, q: &Quirks, req: &Value) -> Answer {
    if q.refuse_creates {
        return (400, "", error(400, None, &refusal(q)));
    }
    st.posts += 1;
    let fail = q.fail_after_processing > 0 && st.posts.is_multiple_of(q.fail_after_processing);
    let mut results = Vec::new();
    for op in req["Operations"].as_array().cloned().unwrap_or_default() {
        let (status, _, v) = create(st, q, "Users", op["data"].clone());
        let mut r = json!({"method": "POST", "bulkId": op["bulkId"], "status": status.to_string()});
        if status == 201 {
            r["location"] = json!(format!("/scim/v2/Users/{}", v["id"].as_str().unwrap_or("")));
        } else {
            r["response"] = v;
        }
        results.push(r);
    }
    if fail {
        return (503, "", error(503, None, "gateway timeout"));
    }
    (
        200,
        "",
        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkResponse"], "Operations": results}),
    )
}
