//! Operating the bridge: health, metrics, TLS reload, graceful shutdown, logs,
//! configuration errors and backups. Real binary, real TLS, 127.0.0.1 only.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::admin::{get_page, signed_in_server, text};
use crate::support::*;
use rustls_pki_types::ServerName;
use serde_json::json;

#[test]
fn health_and_readiness_need_no_token() {
    let s = Server::start();
    let c = s.client();
    let h = c.send("GET", "/healthz", &[], None);
    assert_eq!(h.status, 200);
    let r = c.send("GET", "/readyz", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(String::from_utf8_lossy(&r.body).trim(), "ready");
}

#[test]
fn metrics_count_requests_directory_and_certificate() {
    let s = Server::start();
    let c = s.client();
    assert_eq!(c.post("/Users", &user_body("m1@example.com")).status, 201);
    assert_eq!(c.post("/Users", &user_body("m2@example.com")).status, 201);
    let _ = c.with_token("scimb_nope").get("/Users");
    let m = c.send("GET", "/metrics", &[], None);
    assert_eq!(m.status, 200);
    assert!(m
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains("scimbridge_http_requests_total{route=\"/scim/v2/Users\",method=\"POST\",status=\"201\"} 2"), "{text}");
    assert!(
        text.contains("scimbridge_http_request_duration_seconds_count{route=\"/scim/v2/Users\"}")
    );
    assert!(text.contains("scimbridge_auth_failures_total{reason=\"unknown token\"} 1"));
    assert!(text.contains("scimbridge_users 2\n"));
    assert!(text.contains("scimbridge_groups 0\n"));
    assert!(text.contains("scimbridge_database_size_bytes "));
    let expiry = text
        .lines()
        .find_map(|l| l.strip_prefix("scimbridge_tls_certificate_expiry_timestamp_seconds "))
        .expect("certificate expiry gauge");
    let expiry: f64 = expiry.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 86400.0 * 700.0,
        "self-signed certificate should be valid for ~825 days"
    );
    assert!(!text.contains(&s.token), "metrics must never show a token");
}

#[test]
fn metrics_token_protects_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[metrics]\ntoken = \"0123456789abcdef-metrics\"\n").unwrap();
    let s = Server::start_in_with(dir, "t", &["--config", cfg.to_str().unwrap()]);
    let c = s.client();
    assert_eq!(c.send("GET", "/metrics", &[], None).status, 401);
    assert_eq!(
        c.send(
            "GET",
            "/metrics",
            &[("authorization", "Bearer wrong")],
            None
        )
        .status,
        401
    );
    let ok = c.send(
        "GET",
        "/metrics",
        &[("authorization", "Bearer 0123456789abcdef-metrics")],
        None,
    );
    assert_eq!(ok.status, 200);
    // SCIM tokens are not metrics tokens.
    let scim = c.send(
        "GET",
        "/metrics",
        &[("authorization", &format!("Bearer {}", s.token))],
        None,
    );
    assert_eq!(scim.status, 401);
}

fn make_cert(dir: &Path, name: &str, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let mut params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// A TLS connection to the bridge trusting the given CA files; returns the stream and
/// the certificate the server presented.
fn connect(
    addr: &str,
    cas: &[&Path],
) -> (
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    Vec<u8>,
) {
    let (tls, mut chain) = tls_connect(addr, "127.0.0.1", cas);
    (tls, chain.swap_remove(0))
}

/// Reads one response head (up to the blank line), byte by byte so that nothing after
/// it is consumed.
fn read_head<S: Read>(stream: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn cn_of(der: &[u8]) -> String {
    String::from_utf8_lossy(der).into_owned()
}

#[test]
fn tls_certificate_reloads_on_sighup_and_keeps_open_connections() {
    let certs = tempfile::tempdir().unwrap();
    let (a_crt, a_key) = make_cert(certs.path(), "a", "cert-A");
    let (b_crt, b_key) = make_cert(certs.path(), "b", "cert-B");
    let live_crt = certs.path().join("live.crt");
    let live_key = certs.path().join("live.key");
    std::fs::copy(&a_crt, &live_crt).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    let s = Server::start_with(&[
        "--tls",
        "files",
        "--tls-cert",
        live_crt.to_str().unwrap(),
        "--tls-key",
        live_key.to_str().unwrap(),
    ]);
    // The common name of the certificate a new connection is served.
    let served = || cn_of(&connect(&s.addr, &[&a_crt, &b_crt]).1);
    let (mut old_conn, peer) = connect(&s.addr, &[&a_crt, &b_crt]);
    assert!(cn_of(&peer).contains("cert-A"));
    assert_eq!(request_on(&mut old_conn, "/healthz"), 200);

    std::fs::copy(&b_crt, &live_crt).unwrap();
    std::fs::copy(&b_key, &live_key).unwrap();
    s.signal("HUP");
    wait_until(
        "the new certificate to be served after SIGHUP",
        Duration::from_secs(10),
        || served().contains("cert-B").then_some(()),
    );
    // The connection opened before the reload still works.
    assert_eq!(request_on(&mut old_conn, "/healthz"), 200);

    // A broken certificate, or a key that does not belong to the certificate, keeps
    // the current one and says why in the log.
    let broken = certs.path().join("broken.crt");
    std::fs::write(
        &broken,
        "-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (cert, key, said) in [
        (&broken, &b_key, "still serving the previous one"),
        (&a_crt, &b_key, "does not belong to the certificate"),
    ] {
        std::fs::copy(cert, &live_crt).unwrap();
        std::fs::copy(key, &live_key).unwrap();
        s.signal("HUP");
        s.wait_for_log(said);
        assert!(served().contains("cert-B"));
    }

    // Changed files are picked up without a signal too.
    std::fs::copy(&a_crt, &live_crt).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    wait_until(
        "changed certificate files to be reloaded without a signal",
        Duration::from_secs(20),
        || served().contains("cert-A").then_some(()),
    );
}

#[test]
fn only_tls_1_2_and_1_3_are_offered() {
    let s = Server::start();
    let ca = s.data_dir().join("tls/cert.pem");
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let conn = rustls::ClientConnection::new(
            tls_config(&[&ca], &[version]),
            ServerName::try_from("127.0.0.1").unwrap(),
        )
        .unwrap();
        let mut tls =
            rustls::StreamOwned::new(conn, std::net::TcpStream::connect(&s.addr).unwrap());
        assert_eq!(request_on(&mut tls, "/healthz"), 200);
    }
    // A TLS 1.0 ClientHello is refused (rustls has no TLS 1.0 client, so send one by hand).
    let hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x00, 0x2f, 0x01, 0x00, 0x00, 0x2b, 0x03, 0x01, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x00, 0x02,
        0x00, 0x2f, 0x01, 0x00, 0x00, 0x00,
    ];
    let mut tcp = std::net::TcpStream::connect(&s.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.write_all(hello).unwrap();
    let mut resp = [0u8; 16];
    let n = tcp.read(&mut resp).unwrap_or(0);
    assert!(
        n == 0 || resp[0] == 0x15,
        "expected an alert or a close, got {:?}",
        &resp[..n]
    );
}

/// SIGTERM drains requests in flight; systemd hears `STOPPING=1` as the shutdown
/// begins (the trial saw it only after "scimbridge stopped"), while the request is
/// still in flight.
#[test]
fn sigterm_lets_the_in_flight_request_finish() {
    let notify_dir = tempfile::tempdir().unwrap();
    let notify_path = notify_dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut s = Server::start_with_env(&[], &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())]);
    let mut datagram = [0u8; 512];
    let mut next_notification = || {
        let n = notify
            .recv(&mut datagram)
            .expect("a notification within 20 s");
        String::from_utf8_lossy(&datagram[..n]).into_owned()
    };
    assert!(next_notification().starts_with("READY=1"));
    let ca = s.data_dir().join("tls/cert.pem");
    let (mut tls, _) = connect(&s.addr, &[&ca]);
    let body = serde_json::to_vec(&user_body("inflight@example.com")).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    // `Expect: 100-continue`: the interim 100 answer shows that the server has read the
    // head and its handler waits for the body, so the request is in flight.
    write!(
        tls,
        "POST /scim/v2/Users HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        s.token,
        body.len()
    )
    .unwrap();
    tls.flush().unwrap();
    let interim = read_head(&mut tls);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    tls.write_all(first).unwrap();
    tls.flush().unwrap();
    s.signal("TERM");
    // Shutting down drops the listener: once new connections are refused, the server
    // is draining, and only then does the rest of the body arrive.
    wait_until(
        "the listener to close after SIGTERM",
        Duration::from_secs(10),
        || std::net::TcpStream::connect(&s.addr).is_err().then_some(()),
    );
    assert_eq!(next_notification(), "STOPPING=1");
    tls.write_all(rest).unwrap();
    tls.flush().unwrap();
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    // The server exits by itself once the request is done.
    let child = s.child.as_mut().unwrap();
    wait_until(
        "the server to exit after SIGTERM",
        Duration::from_secs(20),
        || child.try_wait().unwrap(),
    );
    s.child = None;
    s.restart();
    let found = s
        .client()
        .get("/Users?filter=userName%20eq%20%22inflight@example.com%22")
        .json();
    assert_eq!(found["totalResults"], 1);
}

#[test]
fn json_logs_have_request_ids_and_never_tokens() {
    let s = Server::start_with(&["--log-format", "json"]);
    let c = s.client();
    assert_eq!(
        c.post(
            "/Users",
            &json!({"userName": "log@example.com", "password": "Sup3rSecret!"})
        )
        .status,
        201
    );
    let lines = s.wait_for_log("\"request_id\"");
    let request_lines: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))
        })
        .filter(|v| v["fields"]["request_id"].is_number())
        .collect();
    assert!(!request_lines.is_empty());
    assert!(request_lines
        .iter()
        .any(|v| v["fields"]["status"] == 201 && v["fields"]["path"] == "/scim/v2/Users"));
    assert!(!lines.contains(&s.token) && !lines.contains("Sup3rSecret!"));
}

/// The trial: logs showed Rust's `Debug` forms (`"actor":"\"okta\""`,
/// `Some("pw@contoso.com")`, `reason="None"`). Both formats write plain values and
/// leave absent ones out.
#[test]
fn logs_write_plain_values_and_leave_absent_ones_out() {
    let s = Server::start_with(&["--log-format", "json"]);
    let c = s.client();
    assert_eq!(c.post("/Users", &user_body("pw@contoso.com")).status, 201);
    assert_eq!(c.get("/Users/no-such-id").status, 404);
    let log = s.wait_for_log("SCIM request refused");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let created = lines
        .iter()
        .find(|v| v["target"] == "audit" && v["fields"]["action"] == "scim.create")
        .unwrap_or_else(|| panic!("no audit line of the create:\n{log}"));
    assert_eq!(created["fields"]["actor"], "test", "{created}");
    assert_eq!(created["fields"]["resource_name"], "pw@contoso.com");
    assert!(created["fields"].get("reason").is_none(), "{created}");
    let refused = lines
        .iter()
        .find(|v| v["fields"]["message"] == "SCIM request refused")
        .unwrap();
    assert_eq!(refused["fields"]["token"], "test", "{refused}");
    assert_eq!(refused["fields"]["path"], "/Users/no-such-id", "{refused}");
    assert!(refused["fields"]["reason"].is_string());
    assert!(
        !log.contains("Some(") && !log.contains("None") && !log.contains("\\\""),
        "{log}"
    );

    let s = Server::start();
    let c = s.client();
    assert_eq!(c.post("/Users", &user_body("pw@contoso.com")).status, 201);
    assert_eq!(c.get("/Users/no-such-id").status, 404);
    let log = s.wait_for_log("SCIM request refused");
    let line_with = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle}:\n{log}"))
    };
    let audit = line_with("action=scim.create");
    assert!(
        audit.contains(" actor=test ") && audit.contains(" resource_name=pw@contoso.com "),
        "{audit}"
    );
    assert!(!audit.contains("reason"), "{audit}");
    let refused = line_with("SCIM request refused");
    assert!(
        refused.contains(" token=test ") && refused.contains(" reason=\""),
        "{refused}"
    );
    assert!(!log.contains("Some(") && !log.contains("None"), "{log}");
}

/// The trial: `serve` on a port another program holds created the data directory
/// and a self-signed certificate, then failed. The listeners are bound first now.
#[test]
fn serve_on_a_busy_port_creates_nothing() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("new");
    let admin_busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin_busy.local_addr().unwrap().to_string();
    for (listen, admin, said) in [
        (addr.as_str(), None, addr.as_str()),
        (
            "127.0.0.1:0",
            Some(admin_addr.as_str()),
            admin_addr.as_str(),
        ),
    ] {
        let mut cmd = std::process::Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", listen])
            .env_remove("SCIMBRIDGE_CONFIG");
        if let Some(a) = admin {
            cmd.args(["--admin-listen", a]);
        }
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(err.contains(&format!("cannot listen on {said}")), "{err}");
        assert!(!data.exists(), "a data directory was left behind: {err}");
    }
}

/// The server's stderr up to the first line holding `needle` (at most 20 s), then
/// the server is stopped.
fn log_until(cmd: &mut std::process::Command, needle: &str) -> String {
    let mut child = cmd
        .env_remove("SCIMBRIDGE_CONFIG")
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        log.push_str(&line);
        log.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    log
}

/// The trial: started with `--config`, the first-start hint said "with the same
/// --data-dir", though the CLI must read the same file.
#[test]
fn the_first_start_hint_names_how_the_server_was_configured() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("bridge.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\nlisten = \"127.0.0.1:0\"\n",
            data.display()
        ),
    )
    .unwrap();
    let log = log_until(
        std::process::Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("serve"),
        "identity provider: ",
    );
    let hint = format!(
        "no SCIM token yet: run `scimbridge --config {} token issue --name <idp>`",
        file.display()
    );
    assert!(log.contains(&hint), "{log}");
    // Without a file, the data directory.
    let other = dir.path().join("other");
    let log = log_until(
        std::process::Command::new(BIN)
            .arg("--data-dir")
            .arg(&other)
            .args(["serve", "--listen", "127.0.0.1:0"]),
        "identity provider: ",
    );
    let hint = format!(
        "run `scimbridge --data-dir {} token issue --name <idp>`",
        other.display()
    );
    assert!(log.contains(&hint), "{log}");
}

/// The trial: behind a reverse proxy (TLS off, `public_url` set, the proxy serving only
/// /scim/v2 as the README shows) the first-run setup link named the public URL, where
/// no admin page is served. It names this machine's listener; SCIM keeps the public URL.
#[test]
fn behind_a_proxy_the_setup_link_is_this_machines_listener() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_until(
        std::process::Command::new(BIN)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--tls",
                "off",
                "--public-url",
                "https://scim.example.com",
            ]),
        "identity provider: ",
    );
    assert!(
        log.contains("identity provider: https://scim.example.com/scim/v2"),
        "{log}"
    );
    assert!(log.contains("admin page: http://127.0.0.1:"), "{log}");
    assert!(log.contains("open http://127.0.0.1:"), "{log}");
    assert!(!log.contains("https://scim.example.com/admin"), "{log}");
    assert!(log.contains("through an SSH tunnel (ssh -L "), "{log}");
}

/// The trial: `backup --out` silently replaced an existing file, and a missing
/// directory was reported as `cannot create /nonexistent/dir/x.partial`.
#[test]
fn backup_keeps_an_existing_file_unless_forced_and_names_the_file_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    issue_token(&data, "entra", &[]);
    let out = dir.path().join("keep.redb");
    std::fs::write(&out, "the one good copy").unwrap();
    let (ok, _, err) = cli(&data, &["backup", "--out", out.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{} already exists", out.display())) && err.contains("--force"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "the one good copy");
    let (ok, stdout, err) = cli(
        &data,
        &["backup", "--out", out.to_str().unwrap(), "--force"],
    );
    assert!(ok, "{err}");
    assert!(stdout.contains("backup written to"), "{stdout}");
    assert_ne!(std::fs::read(&out).unwrap(), b"the one good copy");

    let missing = dir.path().join("no-such-dir").join("x.redb");
    let (ok, _, err) = cli(&data, &["backup", "--out", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains(&format!("cannot write {}", missing.display()))
            && err.contains("does not exist")
            && !err.contains(".partial"),
        "{err}"
    );
    let (ok, _, err) = cli(&data, &["export", "--out", missing.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        !err.contains(".partial") && err.contains("no-such-dir"),
        "{err}"
    );
}

#[test]
fn check_config_reports_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("listn = \"x\"\n", "listn"),
        ("listen = 8443\n", "listen"),
        ("listen = \"not-an-address\"\n", "listen"),
        ("[tls]\nmode = \"sometimes\"\n", "tls.mode"),
        ("[tls]\nmode = \"files\"\n", "tls.cert"),
        ("[limits]\nmax_body_bytes = 10\n", "limits.max_body_bytes"),
    ];
    for (text, key) in cases {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let (ok, _, err) = cli(
            dir.path(),
            &["--config", f.to_str().unwrap(), "check-config"],
        );
        assert!(!ok, "{text} should be refused");
        assert!(
            err.contains("bad.toml") && err.contains(key),
            "{text}: {err}"
        );
    }
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:9443\"\n").unwrap();
    let (ok, out, err) = cli(
        dir.path(),
        &["--config", good.to_str().unwrap(), "check-config"],
    );
    assert!(ok, "{err}");
    assert!(out.contains("127.0.0.1:9443"));
}

#[test]
fn environment_variables_configure_like_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check-config"])
        .env("SCIMBRIDGE_DATA_DIR", dir.path())
        .env("SCIMBRIDGE_LISTEN", "127.0.0.1:9555")
        .env("SCIMBRIDGE_TLS", "off")
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("127.0.0.1:9555") && text.contains("tls=off"),
        "{text}"
    );
    // The trial: an invalid value from a variable was reported for the flag only.
    let out = std::process::Command::new(BIN)
        .args(["check-config"])
        .env("SCIMBRIDGE_DATA_DIR", dir.path())
        .env("SCIMBRIDGE_TLS", "bogus")
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("'bogus'") && err.contains("environment variable SCIMBRIDGE_TLS"),
        "{err}"
    );
    // Given as a flag, the flag is what is named.
    let out = std::process::Command::new(BIN)
        .args(["check-config", "--tls", "bogus"])
        .env("SCIMBRIDGE_DATA_DIR", dir.path())
        .env("SCIMBRIDGE_TLS", "bogus")
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'--tls <MODE>'") && !err.contains("environment variable"),
        "{err}"
    );
}

/// The last note: `--version` said `0.1.0` for every build from a checkout, released
/// or not. A build from a git checkout names its commit (and "dirty" when its sources
/// differ), unless it is exactly the release tag; the admin page's Health card says the
/// same. (`version::describe`'s unit test covers the tag, the dirty sources, a
/// directory without git and a missing git program.)
#[test]
fn version_names_the_commit_of_a_build_from_a_checkout() {
    let out = std::process::Command::new(BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown = String::from_utf8(out.stdout).unwrap();
    let shown = shown
        .trim()
        .strip_prefix("scimbridge ")
        .expect("the name first");
    let plain = env!("CARGO_PKG_VERSION");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(manifest)
            .args(args)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let own_checkout = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).canonicalize().ok() == manifest.canonicalize().ok());
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) if own_checkout => {
            let released = git(&["tag", "--points-at", "HEAD"])
                .is_some_and(|t| t.lines().any(|t| t == format!("v{plain}")));
            assert!(
                shown.starts_with(&format!("{plain} (git {commit}"))
                    || (released && shown == plain),
                "{shown} (HEAD {commit})"
            );
        }
        // A source tree without its own git (a release tarball).
        _ => assert_eq!(shown, plain),
    }
    let (s, cookie) = signed_in_server(&[]);
    let page = text(&get_page(&s.client(), "/admin", &cookie));
    assert!(
        page.contains(&format!("<th>Version</th><td>{shown}</td>")),
        "{page}"
    );
}

/// A value clap accepts but the configuration refuses (an address that does not
/// parse, a short metrics token) named the file's key even when a variable gave it,
/// over a file that was right. It names the variable; the file's own mistakes still
/// name the file and the key.
#[test]
fn a_refused_value_names_the_variable_it_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scimbridge.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:9443\"\n").unwrap();
    let check = |env: &[(&str, &str)], flags: &[&str]| {
        let out = std::process::Command::new(BIN)
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .args(flags)
            .env("SCIMBRIDGE_DATA_DIR", dir.path())
            .env_remove("SCIMBRIDGE_CONFIG")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = check(&[("SCIMBRIDGE_LISTEN", "nope")], &[]);
    assert!(
        err.contains("the environment variable SCIMBRIDGE_LISTEN: \"nope\" is not an address"),
        "{err}"
    );
    assert!(!err.contains("key listen"), "{err}");
    let err = check(&[("SCIMBRIDGE_ADMIN_LISTEN", "127.0.0.1:9443")], &[]);
    assert!(
        err.contains("the environment variable SCIMBRIDGE_ADMIN_LISTEN: 127.0.0.1:9443 is also the SCIM listener"),
        "{err}"
    );
    let err = check(&[("SCIMBRIDGE_METRICS_TOKEN", "short")], &[]);
    assert!(
        err.contains(
            "the environment variable SCIMBRIDGE_METRICS_TOKEN: the metrics token must be"
        ),
        "{err}"
    );
    // The flag wins over its variable, and is what is named.
    let err = check(
        &[("SCIMBRIDGE_LISTEN", "127.0.0.1:1")],
        &["--listen", "nope"],
    );
    assert!(err.contains("--listen: \"nope\""), "{err}");
    // The file's own mistake names the file and the key.
    std::fs::write(&file, "listen = \"nope\"\n").unwrap();
    let err = check(&[], &[]);
    assert!(
        err.contains(&format!("{} (key listen): \"nope\"", file.display())),
        "{err}"
    );
}

#[test]
fn backup_is_consistent_under_concurrent_writes_and_restores() {
    let mut s = Server::start();
    let c = s.client();
    for i in 0..50 {
        assert_eq!(
            c.post("/Users", &user_body(&format!("b{i}@example.com")))
                .status,
            201
        );
    }
    // Keep writing from another thread while the backup runs.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let client = s.client();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 500 {
                assert_eq!(
                    client
                        .post("/Users", &user_body(&format!("w{n}@example.com")))
                        .status,
                    201
                );
                n += 1;
            }
            n
        })
    };
    let backup = s.data_dir().join("backup.redb");
    let (ok, out, err) = cli(
        &s.data_dir(),
        &["backup", "--out", backup.to_str().unwrap()],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(ok, "{err}");
    let copied: u64 = out
        .split('(')
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((50..=50 + written as u64).contains(&copied), "{out}");

    // Restore: stop, put the backup in place, start; exactly the copied users are there
    // and every index works.
    s.stop();
    std::fs::copy(&backup, s.data_dir().join("scimbridge.redb")).unwrap();
    s.restart();
    let c = s.client();
    assert_eq!(
        c.get("/Users").json()["totalResults"].as_u64().unwrap(),
        copied
    );
    assert_eq!(
        c.get("/Users?filter=userName%20eq%20%22b7@example.com%22")
            .json()["totalResults"],
        1
    );
    assert_scim_error(
        &c.post("/Users", &user_body("b8@example.com")),
        409,
        Some("uniqueness"),
    );
}

/// Issue 14: the bridge's bare address in a browser leads to the admin page where
/// the listener serves it, and names the SCIM URL where it does not.
#[test]
fn root_path_points_to_the_admin_page_or_the_scim_api() {
    let s = Server::start();
    let r = s.client().send("GET", "/", &[], None);
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location").as_deref(), Some("/admin"));
    let s = Server::start_with(&["--admin-enabled", "false"]);
    let r = s.client().send("GET", "/", &[], None);
    assert_eq!(r.status, 200);
    assert!(String::from_utf8_lossy(&r.body).contains("/scim/v2"));
}

/// Trial 7 item 12: the start-up line read "page cache sized from the database file
/// and the machine's memory, 24105 MiB (read from /proc/meminfo)", taken for a
/// 24 GiB cache. The cache's own size comes first, then what it was sized from.
#[test]
fn the_start_up_line_says_the_page_cache_size_first() {
    let s = Server::start();
    let log = s.wait_for_log("page cache");
    let line = log.lines().find(|l| l.contains("page cache")).unwrap();
    // A new database is far below 16 MiB: the floor applies.
    assert!(
        line.contains("page cache: 16 MiB, sized for a database file of 0 MiB"),
        "{line}"
    );
    assert!(line.contains("set storage.cache_mb"), "{line}");
}

/// Trial 7 item 13: one request could not be followed through the log: the request
/// line lacked the token's name, and the audit line and "SCIM authentication failed"
/// lacked the request id. All three carry what joins them.
#[test]
fn one_request_can_be_followed_through_the_log() {
    let s = Server::start();
    let c = s.client();
    assert_eq!(
        c.post("/Users", &user_body("follow@example.com")).status,
        201
    );
    assert_eq!(c.with_token("scimb_wrong").get("/Users").status, 401);
    let log = s.wait_for_log("SCIM authentication failed");
    let log = poll(Duration::from_secs(20), || {
        let log = s.log_text();
        log.lines()
            .any(|l| l.contains(" request ") && l.contains("status=401"))
            .then_some(log)
    })
    .unwrap_or_else(|| panic!("no request line of the 401:\n{log}"));
    let field = |line: &str, name: &str| -> String {
        let at = line
            .find(&format!(" {name}="))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        line[at + name.len() + 2..]
            .split(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    let audit = log
        .lines()
        .find(|l| l.contains("action=scim.create"))
        .unwrap();
    // The request line of the request a line names by its request_id.
    let request_of = |line: &str| {
        let rid = field(line, "request_id");
        log.lines()
            .find(|l| l.contains(" request ") && l.contains(&format!(" request_id={rid} ")))
            .unwrap_or_else(|| panic!("no request line with request_id={rid}:\n{log}"))
    };
    let request = request_of(audit);
    assert!(
        request.contains("method=POST") && request.contains("path=/scim/v2/Users"),
        "{request}"
    );
    assert_eq!(field(request, "token"), "test", "{request}");
    let failed = log
        .lines()
        .find(|l| l.contains("SCIM authentication failed"))
        .unwrap();
    let request = request_of(failed);
    assert!(request.contains("status=401"), "{request}");
    assert!(
        !request.contains(" token="),
        "no token was recognised: {request}"
    );
}
