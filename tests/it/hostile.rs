//! The hostile-request corpus (`tests/fixtures/hostile/requests.jsonl`, written by
//! `generate.py` beside it): broken JSON, wrong types and shapes, huge numbers and
//! strings, deep nesting, invalid UTF-8, NUL bytes, filter and path injection,
//! header abuse, wrong content types and methods, replayed against the real server,
//! each on its own TLS connection. Every request must be answered 4xx (a SCIM error
//! document where the SCIM endpoints answer), never 5xx or a dropped connection;
//! afterwards the server is up and the directory is exactly as before.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

use crate::support::*;

const CORPUS: &str = include_str!("../fixtures/hostile/requests.jsonl");

/// Expands `@repeat(N,TEXT)` (see generate.py).
fn expand(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("@repeat(") {
        out.push_str(&rest[..i]);
        let args = &rest[i + "@repeat(".len()..];
        let close = args.find(')').expect("@repeat( closes");
        let (n, text) = args[..close].split_once(',').expect("@repeat(N,TEXT)");
        out.push_str(&text.repeat(n.parse().expect("a count")));
        rest = &args[close + 1..];
    }
    out.push_str(rest);
    out
}

/// A string whose characters are all below U+0100, as the bytes they stand for.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| u8::try_from(c as u32).expect("a corpus header or path byte"))
        .collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The raw request of one corpus entry.
fn request_bytes(e: &Value, token: &str, ids: &[(&str, &str)]) -> Vec<u8> {
    let mut path = expand(e["path"].as_str().unwrap());
    for (k, v) in ids {
        path = path.replace(k, v);
    }
    let mut out = Vec::new();
    out.extend_from_slice(e["method"].as_str().unwrap().as_bytes());
    out.push(b' ');
    out.extend_from_slice(&latin1(&path));
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if e["auth"] != json!(false) {
        out.extend_from_slice(format!("Authorization: Bearer {token}\r\n").as_bytes());
    }
    let mut explicit_length = false;
    for h in e["headers"].as_array().into_iter().flatten() {
        let name = h[0].as_str().unwrap();
        explicit_length |= name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding");
        out.extend_from_slice(name.as_bytes());
        if let Some(v) = h[1].as_str() {
            out.extend_from_slice(b": ");
            out.extend_from_slice(&latin1(&expand(v)));
        }
        out.extend_from_slice(b"\r\n");
    }
    let body = match (e["body"].as_str(), e["body_hex"].as_str()) {
        (Some(b), _) => expand(b).into_bytes(),
        (None, Some(h)) => unhex(h),
        (None, None) => Vec::new(),
    };
    if !explicit_length && (!body.is_empty() || e.get("body").is_some()) {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

/// Sends one raw request on a fresh TLS connection and reads the answer to its end.
fn replay(s: &Server, tls: &Arc<rustls::ClientConfig>, raw: &[u8]) -> Result<Answer, String> {
    let conn =
        rustls::ClientConnection::new(tls.clone(), ServerName::try_from("127.0.0.1").unwrap())
            .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(&s.addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut t = rustls::StreamOwned::new(conn, tcp);
    // The server may answer (413, 431) before it has read everything: keep what it
    // said even if the rest of the write fails.
    let _ = t.write_all(raw).and_then(|_| t.flush());
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match t.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if got.is_empty() => return Err(format!("no answer: {e}")),
            Err(_) => break,
        }
    }
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete answer head in {} bytes", got.len()))?;
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: got[head_end + 4..].to_vec(),
    })
}

/// Users and groups as the directory holds them (ids, names, versions).
fn directory(c: &Client) -> Vec<Value> {
    ["/Users?count=1000", "/Groups?count=1000"]
        .iter()
        .flat_map(|p| {
            let r = c.get(p);
            assert_eq!(r.status, 200);
            r.json()["Resources"].as_array().unwrap().clone()
        })
        .collect()
}

#[test]
fn hostile_requests_are_refused_with_4xx_and_change_nothing() {
    let s = Server::start();
    let c = s.client();
    let user = c.post("/Users", &user_body("seed@example.com"));
    assert_eq!(user.status, 201);
    let user_id = user.json()["id"].as_str().unwrap().to_owned();
    let group = c.post(
        "/Groups",
        &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                "displayName": "seed group", "members": [{"value": user_id}]}),
    );
    assert_eq!(group.status, 201);
    let group_id = group.json()["id"].as_str().unwrap().to_owned();
    let before = directory(&c);

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(s.data_dir().join("tls/cert.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let ids = [("{user}", user_id.as_str()), ("{group}", group_id.as_str())];
    let entries: Vec<Value> = CORPUS
        .lines()
        .map(|l| serde_json::from_str(l).expect("a corpus line"))
        .collect();
    assert!(entries.len() >= 300, "{} requests", entries.len());
    let mut failures = Vec::new();
    for e in &entries {
        let name = e["name"].as_str().unwrap();
        let raw = request_bytes(e, &s.token, &ids);
        let answer = match replay(&s, &tls, &raw) {
            Ok(a) => a,
            Err(why) => {
                failures.push(format!("{name}: {why}"));
                continue;
            }
        };
        if !(400..500).contains(&answer.status) {
            failures.push(format!(
                "{name}: answered {} {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
            continue;
        }
        if e["layer"] == json!("http") {
            continue;
        }
        let doc: Option<Value> = serde_json::from_slice(&answer.body).ok();
        let is_scim_error = answer.content_type == "application/scim+json"
            && doc.as_ref().is_some_and(|d| {
                d["schemas"][0] == "urn:ietf:params:scim:api:messages:2.0:Error"
                    && d["status"].as_str() == Some(answer.status.to_string().as_str())
                    && d["detail"].as_str().is_some_and(|t| !t.is_empty())
            });
        if !is_scim_error {
            failures.push(format!(
                "{name}: {} is not a SCIM error: {} {}",
                answer.status,
                answer.content_type,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} hostile requests were not refused cleanly:\n{}",
        failures.len(),
        entries.len(),
        failures.join("\n")
    );
    assert_eq!(c.send("GET", "/healthz", &[], None).status, 200);
    assert_eq!(directory(&c), before, "the directory changed");
}
