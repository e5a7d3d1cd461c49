//! Test harness: starts the real `scimbridge` binary on 127.0.0.1 with an ephemeral
//! port and a temporary data directory, and speaks HTTP/1.1 to it over real TLS,
//! trusting the certificate the server generated. `wait_until` is the one way a test
//! waits: it polls a log line or a status with a deadline. `admin` adds the admin
//! page's sign-in and HTML, `export` writes export files to seed large directories with
//! `scimbridge import`, `prereq` finds the external programs some tests drive.

pub mod admin;
pub mod export;
pub mod prereq;
pub mod quirky;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_scimbridge");

/// A small xorshift generator: deterministic for a seed, so a failure replays.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Calls `check` until it returns `Some`, first every 5 ms and backing off to every
/// 100 ms; `None` once `timeout` has passed without it.
pub fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// Waits until `check` returns `Some` and returns its value; after `timeout` the test
/// fails with "timed out after …: `what`". The one way tests wait for something that
/// happens in another process: never a fixed sleep.
pub fn wait_until<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    poll(timeout, check).unwrap_or_else(|| panic!("timed out after {timeout:?}: {what}"))
}

/// Fails the test as soon as `happened` returns true within `window`: for a thing that
/// must not happen (a change that must not be mirrored), watched rather than slept on.
pub fn assert_not_within(what: &str, window: Duration, mut happened: impl FnMut() -> bool) {
    if poll(window, || happened().then_some(())).is_some() {
        panic!("{what}");
    }
}

/// Runs a scimbridge CLI command and returns (status ok, stdout, stderr).
/// `source.toml` in `dir`: a migration policy allowing the tests' domain
/// (example.com), for a bridge to push from; returns its path.
pub fn migration_config(dir: &Path) -> PathBuf {
    let p = dir.join("source.toml");
    std::fs::write(&p, "[migration]\nallowed_domains = [\"example.com\"]\n").unwrap();
    p
}

pub fn cli(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .expect("run scimbridge");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issues a token with the CLI (server stopped) and returns its secret.
pub fn issue_token(data_dir: &Path, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["token", "issue", "--name", name];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = cli(data_dir, &args);
    assert!(ok, "token issue failed: {stderr}");
    stdout.lines().last().expect("token line").trim().to_owned()
}

pub struct Server {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// SCIM base URL, e.g. https://127.0.0.1:PORT/scim/v2
    pub base: String,
    pub addr: String,
    pub token: String,
    pub extra_args: Vec<String>,
    /// Environment variables the server is started with (besides the defaults).
    pub env: Vec<(String, String)>,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// A fresh data directory with one read-write token, and the server started.
    pub fn start() -> Server {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in_with(dir, "test", extra)
    }

    /// Starts on an existing data directory after issuing a token named `token_name`.
    pub fn start_in(dir: tempfile::TempDir, token_name: &str) -> Server {
        Self::start_in_with(dir, token_name, &[])
    }

    pub fn start_in_with(dir: tempfile::TempDir, token_name: &str, extra: &[&str]) -> Server {
        Self::start_at(dir, token_name, "", extra)
    }

    /// Starts listening on `listen` (e.g. a port another process was told about; empty
    /// for an ephemeral port), after issuing a token named `token_name`.
    pub fn start_at(
        dir: tempfile::TempDir,
        token_name: &str,
        listen: &str,
        extra: &[&str],
    ) -> Server {
        Self::start_full(dir, token_name, listen, extra, &[])
    }

    /// A fresh data directory with one read-write token, and the server started with
    /// the environment variables `env` (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_full(dir, "test", "", extra, env)
    }

    fn start_full(
        dir: tempfile::TempDir,
        token_name: &str,
        listen: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let token = issue_token(dir.path(), token_name, &[]);
        let mut s = Server {
            child: None,
            dir,
            base: String::new(),
            addr: listen.to_owned(),
            token,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: Default::default(),
        };
        s.spawn();
        s
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn spawn(&mut self) {
        let listen = if self.addr.is_empty() {
            "127.0.0.1:0".to_owned()
        } else {
            self.addr.clone()
        };
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("serve")
            .arg("--listen")
            .arg(&listen)
            .args(&self.extra_args)
            .env_remove("SCIMBRIDGE_CONFIG")
            .env("SCIMBRIDGE_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn scimbridge serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("identity provider: ") {
                    // The URL ends the human line; in a JSON line, a quote follows it.
                    let rest = &line[i + "identity provider: ".len()..];
                    let url = rest.split(['"', ' ']).next().unwrap_or_default();
                    let _ = tx.send(url.to_owned());
                }
                log.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start; log:\n{}",
                    self.log.lock().unwrap().join("\n")
                );
            }
        };
        // The URL names the certificate's host in ACME mode; a given address stays.
        if self.addr.is_empty() || self.addr.ends_with(":0") {
            self.addr = url
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap()
                .to_owned();
        }
        self.base = url;
        self.child = Some(child);
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the server's log contains `needle` (the log is read by another
    /// thread, so a line the server has written may not be here yet); returns the log.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let timeout = Duration::from_secs(20);
        poll(timeout, || {
            Some(self.log_text()).filter(|l| l.contains(needle))
        })
        .unwrap_or_else(|| {
            panic!(
                "no \"{needle}\" in the log after {timeout:?}:\n{}",
                self.log_text()
            )
        })
    }

    /// The running server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, `"KILL"`) to the running server.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{name} {} failed", self.pid());
    }

    /// Seeds the empty directory with `scimbridge import` of `export` (through the
    /// control socket while the server runs): thousands of resources in one
    /// transaction instead of one request each.
    pub fn import(&self, export: &export::ExportFile) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        export.write(file.path());
        let (ok, out, err) = cli(&self.data_dir(), &["import", file.path().to_str().unwrap()]);
        assert!(ok, "import failed: {out}{err}");
    }

    /// SIGTERM and wait for exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            if poll(Duration::from_secs(20), || c.try_wait().ok().flatten()).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn client(&self) -> Client {
        Client::new(
            &self.addr,
            Some(self.dir.path().join("tls/cert.pem")),
            self.token.clone(),
        )
    }
}

impl Drop for Server {
    /// Stops the server; when a test is failing, prints the end of the server's log
    /// first, so that a CI failure shows what the server said (a dropped connection,
    /// a panic, a refused open) next to the test's own message.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(80)..];
            eprintln!(
                "---- the last {} lines of the server log ({}) ----\n{}\n---- end of the server log ----",
                tail.len(),
                self.base,
                tail.join("\n")
            );
        }
        self.kill();
    }
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A rustls client configuration (ring) that trusts the certificates in `cas` (PEM
/// files) and offers `versions` of TLS.
pub fn tls_config(
    cas: &[&Path],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in cas {
        for c in CertificateDer::pem_file_iter(ca).expect("read CA") {
            roots.add(c.expect("cert")).expect("add root");
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(cfg)
}

/// A minimal HTTPS client: one connection per request, verifying the server's
/// certificate against the given CA file (the self-signed certificate).
pub struct Client {
    pub addr: String,
    /// The name the server's certificate is checked against (and sent as SNI).
    pub server_name: String,
    pub token: String,
    tls: Option<tokio_rustls::TlsConnector>,
    rt: tokio::runtime::Runtime,
    pub content_type: String,
}

impl Client {
    pub fn new(addr: &str, ca: Option<PathBuf>, token: String) -> Client {
        let tls = ca.map(|ca| {
            tokio_rustls::TlsConnector::from(tls_config(&[&ca], rustls::DEFAULT_VERSIONS))
        });
        Client {
            addr: addr.to_owned(),
            server_name: "127.0.0.1".to_owned(),
            token,
            tls,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            content_type: "application/scim+json".into(),
        }
    }

    pub fn with_token(&self, token: &str) -> Client {
        Client {
            addr: self.addr.clone(),
            server_name: self.server_name.clone(),
            token: token.to_owned(),
            tls: self.tls.clone(),
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            content_type: self.content_type.clone(),
        }
    }

    /// Sends a request; `path` is below the server root (e.g. `/scim/v2/Users`).
    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let started = std::time::Instant::now();
        // A failure names the request, the step and how long it had waited.
        let fail = |step: &str, e: &dyn std::fmt::Display| -> ! {
            panic!(
                "{method} {path}: {step} failed after {:?}: {e}",
                started.elapsed()
            )
        };
        self.rt.block_on(async {
            let tcp = tokio::net::TcpStream::connect(&self.addr)
                .await
                .unwrap_or_else(|e| fail("connect", &e));
            let mut builder = Request::builder()
                .method(Method::from_bytes(method.as_bytes()).unwrap())
                .uri(path)
                .header("host", &self.addr);
            for (k, v) in headers {
                builder = builder.header(*k, *v);
            }
            let req = builder
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .unwrap();
            let resp = match &self.tls {
                Some(tls) => {
                    let name = ServerName::try_from(self.server_name.clone()).unwrap();
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .unwrap_or_else(|e| fail("TLS handshake", &e));
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .unwrap_or_else(|e| fail("http handshake", &e));
                    tokio::spawn(conn);
                    sender
                        .send_request(req)
                        .await
                        .unwrap_or_else(|e| fail("request", &e))
                }
                None => {
                    let (mut sender, conn) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .unwrap_or_else(|e| fail("http handshake", &e));
                    tokio::spawn(conn);
                    sender
                        .send_request(req)
                        .await
                        .unwrap_or_else(|e| fail("request", &e))
                }
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|e| fail("reading the body", &e))
                .to_bytes();
            Resp {
                status,
                headers,
                body,
            }
        })
    }

    fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// A SCIM request with the client's token; `path` is below /scim/v2.
    pub fn scim(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        self.scim_with(method, path, body, &[])
    }

    pub fn scim_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        extra: &[(&str, &str)],
    ) -> Resp {
        let auth = self.auth();
        let mut headers: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", self.content_type.as_str()));
        }
        headers.extend_from_slice(extra);
        self.send(
            method,
            &format!("/scim/v2{path}"),
            &headers,
            body.map(|b| serde_json::to_vec(b).unwrap()),
        )
    }

    pub fn get(&self, path: &str) -> Resp {
        self.scim("GET", path, None)
    }
    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.scim("POST", path, Some(body))
    }
    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.scim("PUT", path, Some(body))
    }
    pub fn patch(&self, path: &str, body: &Value) -> Resp {
        self.scim("PATCH", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Resp {
        self.scim("DELETE", path, None)
    }
}

/// Asserts a SCIM error document with this status (and scimType, if given).
pub fn assert_scim_error(r: &Resp, status: u16, scim_type: Option<&str>) {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/scim+json")
    );
    let j = r.json();
    assert_eq!(
        j["schemas"][0],
        "urn:ietf:params:scim:api:messages:2.0:Error"
    );
    assert_eq!(j["status"], status.to_string());
    if let Some(t) = scim_type {
        assert_eq!(j["scimType"], t, "{j}");
    }
    assert!(j["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

/// POSTs the user `body`, with `manager` (an id) as its enterprise manager when
/// given; asserts 201 and returns the new id.
pub fn post_user_with_manager(c: &Client, mut body: Value, manager: Option<&str>) -> String {
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    if let Some(m) = manager {
        body["schemas"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!(ent));
        body[ent] = serde_json::json!({"manager": {"value": m}});
    }
    let r = c.post("/Users", &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["id"].as_str().unwrap().to_owned()
}

pub fn user_body(name: &str) -> Value {
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": name,
        "name": {"givenName": "Test", "familyName": name},
        "emails": [{"value": name, "type": "work", "primary": true}],
        "active": true
    })
}

/// A blocking TLS connection to `addr` that sends `server_name` (SNI) and checks the
/// server's certificate for it against the given CA files; returns the stream and
/// the chain the server presented (leaf first, DER).
pub fn tls_connect(
    addr: &str,
    server_name: &str,
    cas: &[&Path],
) -> (
    rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    Vec<Vec<u8>>,
) {
    let conn = rustls::ClientConnection::new(
        tls_config(cas, rustls::DEFAULT_VERSIONS),
        ServerName::try_from(server_name.to_owned()).unwrap(),
    )
    .unwrap();
    let tcp = std::net::TcpStream::connect(addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    let chain = tls
        .conn
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.to_vec())
        .collect();
    (tls, chain)
}

/// Holds `n` of `token`'s request permits with SCIM POSTs whose bodies never arrive,
/// and polls `limit_reached` (within 10 s) until it says the token's limit is reached.
/// The server may see a polled request before a held one's headers (separate
/// connections, no order): then that held request is the one refused, answered at
/// once, and it is sent again on a new connection. Dropping the result frees the
/// permits.
pub fn hold_permits(
    s: &Server,
    token: &str,
    n: usize,
    mut limit_reached: impl FnMut() -> bool,
) -> Vec<rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>> {
    let ca = s.data_dir().join("tls/cert.pem");
    let hold = || {
        let (mut held, _) = tls_connect(&s.addr, "127.0.0.1", &[ca.as_path()]);
        write!(
            held,
            "POST /scim/v2/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/scim+json\r\nContent-Length: 1000\r\n\r\n{{"
        )
        .unwrap();
        held.flush().unwrap();
        held.sock
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        held
    };
    let mut held: Vec<_> = (0..n).map(|_| hold()).collect();
    wait_until("the limit to be reached", Duration::from_secs(10), || {
        if limit_reached() {
            return Some(());
        }
        // Any answer on a held connection means it is no longer held.
        for h in held.iter_mut() {
            if h.read(&mut [0u8; 1]).is_ok() {
                *h = hold();
            }
        }
        None
    });
    held
}

/// One HTTP/1.1 request on an open connection; returns the status code.
pub fn request_on<S: std::io::Read + std::io::Write>(stream: &mut S, path: &str) -> u16 {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    stream.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let len: usize = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                return text[9..12].parse().unwrap();
            }
        }
    }
}

/// Edits the stored record of every unrevoked secret of the token `name` (one,
/// unless a rotation left several; server stopped): how tests make times in the past
/// (an expired token), as no test may wait for them.
pub fn edit_token(data_dir: &Path, name: &str, edit: impl Fn(&mut Value)) {
    use redb::{ReadableDatabase, ReadableTable};
    let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("tokens");
    let db = redb::Database::create(data_dir.join("scimbridge.redb")).unwrap();
    let found: Vec<(String, Value)> = {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(table).unwrap();
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                let rec: Value = serde_json::from_slice(v.value()).unwrap();
                (k.value().to_owned(), rec)
            })
            .filter(|(_, rec)| rec["name"] == name && rec["revoked"].is_null())
            .collect()
    };
    assert!(!found.is_empty(), "no token {name}");
    let txn = db.begin_write().unwrap();
    {
        let mut t = txn.open_table(table).unwrap();
        for (id, mut rec) in found {
            edit(&mut rec);
            t.insert(id.as_str(), serde_json::to_vec(&rec).unwrap().as_slice())
                .unwrap();
        }
    }
    txn.commit().unwrap();
}

/// `hours` before now (negative: after), as the store writes times.
pub fn hours_ago(hours: i64) -> String {
    let t = time::OffsetDateTime::now_utc() - time::Duration::hours(hours);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The `value`s of a group's `members` (a group without members: none).
pub fn member_values(group: &Value) -> std::collections::BTreeSet<&str> {
    group["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["value"].as_str().unwrap())
        .collect()
}
