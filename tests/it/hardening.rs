//! Safe to expose (issue 11, network side): connection deadlines, bounded HTTP/2,
//! early refusals that reach the client, the limiter (429 + Retry-After), failed-
//! authentication throttling, trusted proxies, closed metric labels, sign-in
//! throttling that reserves before checking, HSTS, URLs that never echo Host.
//!
//! Every test runs the real server on 127.0.0.1 over real TLS; slow-client tests use
//! limits of a few seconds and at most a few dozen connections, and assert what a
//! user sees (closed, 429, /healthz still answering), not timings.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::json;

/// Starts a server whose config file holds `toml`.
fn start_configured(toml: &str, extra: &[&str]) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("test.toml");
    std::fs::write(&cfg, toml).unwrap();
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_in_with(dir, "test", &args)
}

fn tls_config(s: &Server, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(s.data_dir().join("tls/cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A blocking TLS connection (for raw HTTP/1.x bytes).
fn raw_tls(s: &Server, alpn: &[&[u8]]) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let conn = rustls::ClientConnection::new(
        tls_config(s, alpn),
        ServerName::try_from("127.0.0.1").unwrap(),
    )
    .unwrap();
    let tcp = TcpStream::connect(&s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
}

/// Reads one HTTP/1.x response head and returns its status ("" when the
/// connection ended first).
fn read_status(stream: &mut impl Read) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head)
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// Whether the server has closed this connection (waits a moment for it).
fn is_closed(t: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> bool {
    t.sock
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut b = [0u8; 1];
    match t.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Whether /healthz answers 200 within `bound`.
fn healthz_within(s: &Server, bound: Duration) -> bool {
    let c = s.client();
    let t0 = Instant::now();
    let r = c.send("GET", "/healthz", &[], None);
    r.status == 200 && t0.elapsed() < bound
}

fn metrics(s: &Server) -> String {
    let r = s.client().send("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body).into_owned()
}

fn wait_for(what: &str, bound: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An HTTP/2 connection (hyper client) on a current-thread runtime.
struct H2 {
    rt: tokio::runtime::Runtime,
    sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    conn: Option<tokio::task::JoinHandle<()>>,
}

impl H2 {
    fn connect(s: &Server) -> H2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let cfg = tls_config(s, &[b"h2"]);
        let addr = s.addr.clone();
        let (sender, conn) = rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            let conn = tokio::spawn(async move {
                let _ = conn.await;
            });
            (sender, conn)
        });
        H2 {
            rt,
            sender,
            conn: Some(conn),
        }
    }

    fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<(u16, hyper::HeaderMap, Bytes), hyper::Error> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(format!("https://127.0.0.1{path}"));
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body))).unwrap();
        let sender = &mut self.sender;
        self.rt.block_on(async move {
            sender.ready().await?;
            let resp = sender.send_request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.into_body().collect().await?.to_bytes();
            Ok((status, headers, body))
        })
    }

    /// Waits up to `bound` for the server to end the connection.
    fn closed_within(&mut self, bound: Duration) -> bool {
        let conn = self.conn.take().unwrap();
        self.rt
            .block_on(async { tokio::time::timeout(bound, conn).await.is_ok() })
    }
}

// ---- transport ----------------------------------------------------------------------

#[test]
fn head_over_http2_has_headers_and_no_body() {
    let s = Server::start();
    let mut h2 = H2::connect(&s);
    let auth = format!("Bearer {}", s.token);
    for path in [
        "/healthz",
        "/scim/v2/ServiceProviderConfig",
        "/scim/v2/Users",
    ] {
        let (status, headers, body) = h2
            .send("HEAD", path, &[("authorization", &auth)], vec![])
            .unwrap_or_else(|e| panic!("HEAD {path}: {e}"));
        assert!(status == 200 || status == 405, "{path}: {status}");
        assert!(body.is_empty(), "{path}: a HEAD answer carried a body");
        let len: u64 = headers["content-length"].to_str().unwrap().parse().unwrap();
        assert!(len > 0, "{path}: the length of the GET answer is announced");
    }
    // The connection is still good afterwards.
    let (status, _, body) = h2.send("GET", "/healthz", &[], vec![]).unwrap();
    assert_eq!((status, &body[..]), (200, &b"ok\n"[..]));
}

#[test]
fn early_refusals_reach_http2_clients_that_are_still_sending() {
    let dir = tempfile::tempdir().unwrap();
    let read_only = issue_token(dir.path(), "reader", &["--read-only"]);
    let s = Server::start_in(dir, "writer");
    let mut h2 = H2::connect(&s);
    let ro = format!("Bearer {read_only}");
    let rw = format!("Bearer {}", s.token);
    let big = serde_json::to_vec(&json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "title", "value": "x".repeat(400_000)}]
    }))
    .unwrap();
    for i in 0..20 {
        let (status, _, body) = h2
            .send(
                "PATCH",
                "/scim/v2/Users/some-id",
                &[
                    ("authorization", &ro),
                    ("content-type", "application/scim+json"),
                ],
                big.clone(),
            )
            .unwrap_or_else(|e| panic!("round {i}: the 403 was lost: {e}"));
        assert_eq!(status, 403, "round {i}");
        assert!(String::from_utf8_lossy(&body).contains("read-only"));
        let (status, _, _) = h2
            .send(
                "PUT",
                "/scim/v2/Users",
                &[
                    ("authorization", &rw),
                    ("content-type", "application/scim+json"),
                ],
                big.clone(),
            )
            .unwrap_or_else(|e| panic!("round {i}: the 405 was lost: {e}"));
        assert_eq!(status, 405, "round {i}");
    }
}

#[test]
fn a_client_offering_only_http_1_0_is_served() {
    let s = Server::start();
    let mut t = raw_tls(&s, &[b"http/1.0"]);
    assert_eq!(t.conn.alpn_protocol(), Some(&b"http/1.0"[..]));
    t.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_status(&mut t), "200");
}

#[test]
fn a_huge_request_uri_is_answered_not_dropped() {
    let s = Server::start();
    let target = format!("/scim/v2/Users?filter={}", "a".repeat(100_000));
    for round in 0..3 {
        let mut t = raw_tls(&s, &[b"http/1.1"]);
        t.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let status = read_status(&mut t);
        assert!(
            status == "414" || status == "431",
            "round {round}: answered {status:?}"
        );
    }
    // Over HTTP/2 the same size in a header (the http crate refuses such a URI).
    let mut h2 = H2::connect(&s);
    let big = "a".repeat(100_000);
    match h2.send("GET", "/healthz", &[("x-big", &big)], vec![]) {
        Ok((status, _, _)) => assert!(status == 414 || status == 431, "{status}"),
        // h2 may refuse the header block with a stream reset instead.
        Err(e) => assert!(e.to_string().contains("stream") || e.is_closed(), "{e}"),
    }
    assert!(healthz_within(&s, Duration::from_secs(5)));
}

#[test]
fn slow_bodies_and_idle_connections_are_closed_and_others_are_served() {
    let s = start_configured(
        "[limits]\nbody_timeout_secs = 2\nidle_timeout_secs = 2\nhandshake_timeout_secs = 3\n",
        &[],
    );
    // 30 connections trickling a sign-in form, 10 that never send a request.
    let mut slow: Vec<_> = (0..30)
        .map(|_| {
            let mut t = raw_tls(&s, &[b"http/1.1"]);
            t.write_all(
                b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\npassword=",
            )
            .unwrap();
            t
        })
        .collect();
    let mut silent: Vec<_> = (0..10).map(|_| raw_tls(&s, &[b"http/1.1"])).collect();
    let t0 = Instant::now();
    // Meanwhile the server answers others.
    assert!(healthz_within(&s, Duration::from_secs(3)));
    for t in slow.iter_mut() {
        let _ = t.write_all(b"x");
    }
    for (i, t) in slow.iter_mut().enumerate() {
        let status = read_status(t);
        assert!(
            status.is_empty() || status.starts_with('4'),
            "slow body {i}: {status:?}"
        );
    }
    for t in silent.iter_mut() {
        assert!(is_closed(t), "a silent connection is closed");
    }
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    // An HTTP/2 connection that goes idle is closed too.
    let mut h2 = H2::connect(&s);
    assert_eq!(h2.send("GET", "/healthz", &[], vec![]).unwrap().0, 200);
    assert!(h2.closed_within(Duration::from_secs(8)));
    assert!(healthz_within(&s, Duration::from_secs(3)));
    let m = metrics(&s);
    assert!(m.contains("reason=\"idle_timeout\""), "{m}");
}

#[test]
fn idle_connections_make_room_when_every_slot_is_taken() {
    let s = start_configured(
        "[limits]\nmax_connections = 8\nidle_timeout_secs = 300\nhandshake_timeout_secs = 60\n",
        &[],
    );
    // Eight TLS connections that say nothing hold every slot.
    let mut held: Vec<_> = (0..8).map(|_| raw_tls(&s, &[b"http/1.1"])).collect();
    // A ninth client still gets an answer: idle connections yield under pressure.
    let t0 = Instant::now();
    assert!(healthz_within(&s, Duration::from_secs(10)));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let closed = held.iter_mut().map(is_closed).filter(|c| *c).count();
    assert!(closed >= 1);
    assert!(metrics(&s).contains("reason=\"idle_under_pressure\""));
}

/// A client that opens many HTTP/2 streams for large lists and never reads: its
/// connection is closed once writes stop making progress (memory stays bounded by
/// the per-token limit meanwhile); the server keeps answering.
#[test]
fn http2_clients_that_never_read_are_closed() {
    let s = start_configured(
        "[limits]\nwrite_timeout_secs = 2\nmin_send_rate = 1024\nidle_timeout_secs = 300\n",
        &[],
    );
    let auth = format!("Bearer {}", s.token);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cfg = tls_config(&s, &[b"h2"]);
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();
    let result = rt.block_on(async move {
        use tokio::io::AsyncWriteExt;
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = sock.connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(cfg)
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let mut out = Vec::new();
        out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        // SETTINGS: INITIAL_WINDOW_SIZE = 2^31-1 (the server may send everything).
        out.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff]);
        // WINDOW_UPDATE on the connection.
        out.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0x00, 0x00]);
        // HPACK, literals without indexing: :method GET, :scheme https, :path,
        // :authority, authorization.
        let path = b"/scim/v2/Schemas";
        let block: Vec<u8> = [
            &[0x82u8, 0x87][..],
            &[0x04, path.len() as u8],
            path,
            &[0x01, 9],
            b"127.0.0.1",
            &[0x0f, 0x08, auth.len() as u8],
            auth.as_bytes(),
        ]
        .concat();
        for stream in (1u32..120).step_by(2) {
            let len = block.len() as u32;
            out.extend_from_slice(&len.to_be_bytes()[1..]);
            out.extend_from_slice(&[1, 0x05]); // HEADERS, END_STREAM | END_HEADERS
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(&block);
        }
        tls.write_all(&out).await.unwrap();
        tls.flush().await.unwrap();
        tls
    });
    // Never read; the server must give up on this connection by itself.
    wait_for("a write stall", Duration::from_secs(90), || {
        metrics(&s).contains("reason=\"write_stall\"")
    });
    assert!(healthz_within(&s, Duration::from_secs(3)));
    let mut tls = result;
    let ended = rt.block_on(async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 64 * 1024];
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    });
    assert!(ended, "the stalled connection is closed");
}

// ---- limits -------------------------------------------------------------------------

#[test]
fn requests_per_token_are_limited_with_retry_after_and_healthz_is_exempt() {
    let s = start_configured("[limits]\ntoken_requests = 3\n", &[]);
    let c = s.client();
    let held = hold_permits(&s, &s.token, 3, || c.get("/Users").status == 429);
    let r = c.get("/Users");
    assert_scim_error(&r, 429, None);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(r.json()["detail"].as_str().unwrap().contains("this token"));
    // Another token and /healthz are not affected.
    for _ in 0..5 {
        assert_eq!(c.send("GET", "/healthz", &[], None).status, 200);
    }
    drop(held);
    wait_for("permits to come back", Duration::from_secs(10), || {
        c.get("/Users").status == 200
    });
    assert!(metrics(&s).contains("scimbridge_throttled_total{limit=\"token_requests\"}"));
}

#[test]
fn heavy_requests_are_limited_per_token() {
    let s = start_configured("[limits]\ntoken_heavy = 1\nheavy_slots = 1\n", &[]);
    let c = s.client();
    for i in 0..3 {
        assert_eq!(
            c.post("/Users", &user_body(&format!("u{i}@example.com")))
                .status,
            201
        );
    }
    // A scan (non-indexed filter) and a sort are heavy; one at a time per token.
    let scan = "/Users?filter=title%20co%20%22x%22&sortBy=userName";
    let addr = s.addr.clone();
    let ca = s.data_dir().join("tls/cert.pem");
    let token = s.token.clone();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, ca, token) = (addr.clone(), ca.clone(), token.clone());
            std::thread::spawn(move || {
                let c = Client::new(&addr, Some(ca), token);
                (0..10).map(|_| c.get(scan).status).collect::<Vec<_>>()
            })
        })
        .collect();
    let statuses: Vec<u16> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    // An indexed lookup is never heavy.
    assert_eq!(
        c.get("/Users?filter=userName%20eq%20%22u1@example.com%22")
            .status,
        200
    );
}

#[test]
fn failed_authentication_is_throttled_per_address_but_valid_tokens_never_are() {
    let s = start_configured(
        "[limits]\nauth_failures = 5\nauth_failure_window_secs = 60\n",
        &[],
    );
    let c = s.client();
    let bad = c.with_token("scimb_not_a_token");
    for _ in 0..5 {
        assert_scim_error(&bad.get("/Users"), 401, None);
    }
    let r = bad.get("/Users");
    assert_scim_error(&r, 429, None);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    // The same address with a valid token is served.
    for _ in 0..10 {
        assert_eq!(c.get("/Users").status, 200);
    }
    wait_for(
        "an auth failure logged with the client",
        Duration::from_secs(5),
        || {
            s.log_text()
                .lines()
                .any(|l| l.contains("SCIM authentication failed") && l.contains("client=127.0.0.1"))
        },
    );
    assert!(metrics(&s).contains("scimbridge_throttled_total{limit=\"auth_failures\"}"));
}

#[test]
fn forwarded_addresses_count_only_from_trusted_proxies() {
    let trusting = start_configured(
        "trusted_proxies = [\"127.0.0.1\"]\n[limits]\nauth_failures = 3\n",
        &[],
    );
    let bad = trusting.client().with_token("scimb_nope");
    let from = |ip: &str| {
        bad.scim_with(
            "GET",
            "/Users",
            None,
            &[("x-forwarded-for", &format!("198.51.100.1, {ip}"))],
        )
        .status
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.5"), 401);
    }
    assert_eq!(from("203.0.113.5"), 429);
    // Another client behind the same proxy is not affected...
    assert_eq!(from("203.0.113.6"), 401);
    // ...and the log names the real client.
    wait_for(
        "the forwarded client in the log",
        Duration::from_secs(5),
        || trusting.log_text().contains("client=203.0.113.5"),
    );

    // Without trusted_proxies the header is ignored: everyone is 127.0.0.1.
    let plain = start_configured("[limits]\nauth_failures = 3\n", &[]);
    let bad = plain.client().with_token("scimb_nope");
    for ip in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let r = bad.scim_with("GET", "/Users", None, &[("x-forwarded-for", ip)]);
        assert_eq!(r.status, 401);
    }
    let r = bad.scim_with("GET", "/Users", None, &[("x-forwarded-for", "203.0.113.4")]);
    assert_eq!(r.status, 429);
    assert!(!plain.log_text().contains("client=203.0.113"));
}

#[test]
fn unknown_methods_do_not_grow_the_metrics() {
    let s = Server::start();
    let c = s.client();
    for i in 0..40 {
        let r = c.send(&format!("BREW{i}"), "/healthz", &[], None);
        assert!(r.status < 500);
    }
    let m = metrics(&s);
    assert!(!m.contains("BREW"), "{m}");
    assert!(m.contains("method=\"other\""));
}

// ---- SCIM routes --------------------------------------------------------------------

#[test]
fn scope_is_decided_by_the_route_not_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    let read_only = issue_token(dir.path(), "reader", &["--read-only"]);
    let s = Server::start_in(dir, "writer");
    let ro = s.client().with_token(&read_only);
    // A DELETE whose last segment is ".search" is still a write.
    assert_scim_error(&ro.delete("/Users/.search"), 403, None);
    assert_scim_error(&ro.put("/Groups/.search", &json!({})), 403, None);
    // A search is a read.
    let r = ro.post(
        "/Users/.search",
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn locations_never_echo_the_host_header() {
    let s = Server::start();
    let c = s.client();
    let r = c.scim_with(
        "POST",
        "/Users",
        Some(&user_body("host@example.com")),
        &[("host", "evil.example")],
    );
    assert_eq!(r.status, 201);
    let expected = format!("https://{}/scim/v2/Users/", s.addr);
    assert!(r.header("location").unwrap().starts_with(&expected));
    assert!(r.json()["meta"]["location"]
        .as_str()
        .unwrap()
        .starts_with(&expected));
    let r = c.scim_with("GET", "/Users", None, &[("host", "evil.example")]);
    assert!(!String::from_utf8_lossy(&r.body).contains("evil.example"));
}

#[test]
fn hsts_only_with_certificate_files() {
    let s = Server::start();
    assert!(s
        .client()
        .send("GET", "/healthz", &[], None)
        .header("strict-transport-security")
        .is_none());
    // The same certificate, now from files.
    let tls = s.data_dir().join("tls");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::copy(tls.join("cert.pem"), &cert).unwrap();
    std::fs::copy(tls.join("key.pem"), &key).unwrap();
    let data = tempfile::tempdir().unwrap();
    let f = Server::start_in_with(
        data,
        "test",
        &[
            "--tls",
            "files",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let c = Client::new(&f.addr, Some(cert.clone()), f.token.clone());
    let r = c.send("GET", "/healthz", &[], None);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
    let r = c.get("/Users");
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=31536000")
    );
}

#[test]
fn a_bulk_request_stops_writing_once_its_token_is_revoked() {
    let s = Server::start();
    let dir = s.data_dir();
    let secret = issue_token_via_cli(&dir, "bulker");
    let ops: Vec<_> = (0..1000)
        .map(|i| {
            json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"),
                   "data": user_body(&format!("bulk{i}@example.com"))})
        })
        .collect();
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
    let (addr, ca) = (s.addr.clone(), dir.join("tls/cert.pem"));
    let bulk =
        std::thread::spawn(move || Client::new(&addr, Some(ca), secret).post("/Bulk", &body));
    let c = s.client();
    wait_for(
        "the Bulk request to start writing",
        Duration::from_secs(30),
        || {
            c.get("/Users?count=0").json()["totalResults"]
                .as_u64()
                .unwrap_or(0)
                > 0
        },
    );
    let (ok, _, err) = cli(&dir, &["token", "revoke", "bulker"]);
    assert!(ok, "{err}");
    let revoked_at = c.get("/Users?count=0").json()["totalResults"]
        .as_u64()
        .unwrap();
    let r = bulk.join().unwrap();
    assert_eq!(r.status, 200);
    let entries = r.json()["Operations"].as_array().unwrap().clone();
    let created = entries.iter().filter(|e| e["status"] == "201").count() as u64;
    let refused = entries.iter().filter(|e| e["status"] == "401").count();
    assert!(
        refused > 0,
        "the Bulk request finished before the revocation took effect"
    );
    assert_eq!(entries.len(), 1000);
    let total = c.get("/Users?count=0").json()["totalResults"]
        .as_u64()
        .unwrap();
    assert_eq!(total, created);
    // At most the operation in progress when the revocation landed was written after it.
    assert!(total <= revoked_at + 1, "{total} > {revoked_at} + 1");
}

/// Issues a token through the running server's control socket and returns it.
fn issue_token_via_cli(dir: &std::path::Path, name: &str) -> String {
    let (ok, out, err) = cli(dir, &["token", "issue", "--name", name]);
    assert!(ok, "{err}");
    out.lines().last().unwrap().trim().to_owned()
}

// ---- admin sign-in ------------------------------------------------------------------

use crate::support::admin as admin_support;

#[test]
fn concurrent_wrong_passwords_are_reserved_before_checking() {
    let s = start_configured("trusted_proxies = [\"127.0.0.1\"]\n", &[]);
    let c = s.client();
    assert_eq!(
        admin_support::set_password(&c, &admin_support::setup_link(&s), admin_support::PASSWORD)
            .status,
        303
    );
    let (addr, ca) = (s.addr.clone(), s.data_dir().join("tls/cert.pem"));
    let threads: Vec<_> = (0..40)
        .map(|_| {
            let (addr, ca) = (addr.clone(), ca.clone());
            std::thread::spawn(move || {
                let c = Client::new(&addr, Some(ca), String::new());
                c.send(
                    "POST",
                    "/admin/login",
                    &[
                        ("content-type", "application/x-www-form-urlencoded"),
                        ("x-forwarded-for", "203.0.113.50"),
                    ],
                    Some(b"name=admin&password=not+the+password".to_vec()),
                )
                .status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + throttled, 40, "{statuses:?}");
    assert!(checked <= 5, "{checked} wrong passwords were checked");
    // Another address, even behind the same proxy, signs in with the right password.
    let r = c.send(
        "POST",
        "/admin/login",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", "203.0.113.51"),
        ],
        Some(
            format!(
                "name=admin&password={}",
                admin_support::PASSWORD.replace(' ', "+")
            )
            .into_bytes(),
        ),
    );
    assert_eq!(r.status, 303);
}

#[test]
fn a_valid_setup_link_is_never_throttled() {
    let s = Server::start();
    let c = s.client();
    let link = admin_support::setup_link(&s);
    for _ in 0..8 {
        let r = c.send("GET", "/admin/setup?code=wrong-code", &[], None);
        assert!(r.status == 403 || r.status == 429, "{}", r.status);
    }
    assert_eq!(
        c.send("GET", "/admin/setup?code=wrong", &[], None).status,
        429
    );
    // The real link from the same address still works.
    assert_eq!(
        admin_support::set_password(&c, &link, admin_support::PASSWORD).status,
        303
    );
}

/// Trial 7 item 20: plain http:// sent to the TLS port got raw TLS bytes back. It is
/// answered as nginx does: a plain-text 400 saying the port speaks HTTPS, with the
/// https:// URL of the request, then the connection closes; TLS keeps working.
#[test]
fn plain_http_on_the_tls_port_gets_a_400_naming_the_https_url() {
    let s = Server::start();
    let ask = |request: &[u8]| -> String {
        let mut tcp = TcpStream::connect(&s.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.write_all(request).unwrap();
        let mut out = Vec::new();
        tcp.read_to_end(&mut out)
            .expect("the server closes after answering");
        String::from_utf8(out).expect("plain text, no TLS bytes")
    };
    let request = format!(
        "GET /scim/v2/Users?count=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        s.addr, s.token
    );
    let answer = ask(request.as_bytes());
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(
        head.contains("Content-Type: text/plain") && head.contains("Connection: close"),
        "{head}"
    );
    assert_eq!(
        body,
        format!(
            "This port speaks HTTPS only, and this request came as plain HTTP.\nUse https://{}/scim/v2/Users?count=1\n",
            s.addr
        )
    );
    // A POST whose body the answer did not wait for still gets the answer whole.
    let mut post = format!(
        "POST /scim/v2/Users HTTP/1.1\r\nHost: {}\r\nContent-Length: 200000\r\n\r\n",
        s.addr
    )
    .into_bytes();
    post.extend(std::iter::repeat_n(b'x', 200_000));
    assert!(ask(&post).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    // A Host that is not a plain host name is not echoed.
    let odd = ask(b"GET / HTTP/1.1\r\nHost: evil.example/x?\r\n\r\n");
    assert!(
        odd.ends_with(&format!("Use https://{}/\n", s.addr)),
        "{odd}"
    );
    // TLS on the same port is unaffected.
    assert_eq!(s.client().get("/Users").status, 200);
    let metrics = s.client().send("GET", "/metrics", &[], None);
    assert!(
        String::from_utf8_lossy(&metrics.body)
            .contains("scimbridge_connections_closed_total{reason=\"plain_http\"} 3"),
        "{}",
        String::from_utf8_lossy(&metrics.body)
    );
}
