//! Load benchmark (issue 10): runs SCIM scenarios against scimbridge (the release
//! binary, started here over TLS on 127.0.0.1) or against any SCIM server given by
//! URL, and prints one line per measurement: requests, ops/s, p50, p99, p99.9,
//! errors, and the p99 of `/healthz` probed through the same stack while the
//! measurement ran (one probe every 20 ms on its own connection). Every loop is
//! bounded in count and in time.
//!
//!   cargo bench --bench load                                  # every scenario, 10k users
//!   cargo bench --bench load -- --scenarios read,lookup --users 2000
//!   cargo bench --bench load -- --data-dir /tmp/big           # a directory `import`ed before
//!   cargo bench --bench load -- --base http://127.0.0.1:8000 --token T   # another server
//!
//! Scenarios: read (GET by id, and /healthz alone, at 8 and 64 connections), lookup
//! (`userName eq`), create (durable POSTs from 64 clients), patch (user PATCH), list
//! (deep `startIndex` and cursor pages), sort (`sortBy=userName` first and deep
//! page, `sortBy=title`), scan (`title co "Engineer"`), large-group (building a
//! group in PATCHes of 1,000, one-member add/remove, the Entra membership probe,
//! `excludedAttributes=members` and full reads), sync (Entra-like: lookup-then-create
//! users, groups, members in batches, updates, deactivations), export (`scimbridge
//! export` through the running server; only with a server started here). With a
//! server started here the RSS growth of heavy requests is printed too (from /proc),
//! and the RSS `--settle` seconds (default 3) after the last scenario. `--warmup S`
//! first sends S seconds of unmeasured GETs by id and `userName eq` lookups over
//! the sampled users (8 connections), so read and lookup measure a filled page
//! cache rather than its first fill. `--sample N`: the users those loops draw from
//! (default the first 20,064, or the large group's size + 64 if larger); the server
//! keeps rendered GET answers up to 16 MiB, so a sample larger than that measures
//! the GET path without them. `--bin PATH` starts that scimbridge binary
//! instead of this build's (to compare two builds under the same harness). With a
//! server started here each line also gives the CPU microseconds per request of the
//! server and of this load generator (from /proc/PID/stat), since both share the
//! machine's cores.
//!
//!   cargo bench --bench load -- --data-dir /work/scratch/big --scenarios large-group \
//!       --group-size 100000 --settle 60

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

/// The scimbridge binary started here: this build's, or `--bin PATH` (to measure
/// another build with the same harness).
fn bin() -> &'static str {
    BIN.get()
        .map_or(env!("CARGO_BIN_EXE_scimbridge"), String::as_str)
}
static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
/// The process id of the server started here (0: none, the target is remote).
static SERVER_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat` (fields
/// 14 and 15, in clock ticks of 1/100 s: `getconf CLK_TCK` on Linux); `None` when
/// it cannot be read.
fn cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The CPU seconds of the server started here and of this load generator.
fn cpu_now() -> (Option<f64>, Option<f64>) {
    let pid = SERVER_PID.load(Ordering::Relaxed);
    let server = (pid != 0).then(|| cpu_secs(&pid.to_string())).flatten();
    (server, cpu_secs("self"))
}
const PATCH_URN: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ALL: &[&str] = &[
    "read",
    "lookup",
    "create",
    "patch",
    "list",
    "sort",
    "scan",
    "large-group",
    "sync",
    "export",
];

/// Where requests go: host:port, the path prefix of the SCIM base, the token and,
/// for https, the TLS connector.
struct Target {
    addr: String,
    prefix: String,
    token: String,
    tls: Option<tokio_rustls::TlsConnector>,
}

/// The header values every request carries, built once per measurement rather than
/// per request (the generator shares the server's cores: its own cost per request
/// is part of every ratio this harness prints).
struct Headers {
    host: HeaderValue,
    authorization: HeaderValue,
    content_type: HeaderValue,
}

type Conn = SendRequest<Full<Bytes>>;

impl Target {
    async fn connect(&self) -> Conn {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        match &self.tls {
            Some(tls) => {
                let host = self.addr.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
                let name = ServerName::try_from(host.to_owned()).unwrap();
                let io = tls.connect(name, tcp).await.unwrap();
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                s
            }
            None => {
                let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                s
            }
        }
    }

    /// One request; `path` is below the SCIM base unless it starts with `//`
    /// (then it is absolute, e.g. `///healthz`).
    async fn send(
        &self,
        s: &mut Conn,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Bytes) {
        let body = body.map(json_bytes);
        let resp = self.request(s, &self.headers(), method, path, body).await;
        match resp {
            Some(resp) => {
                let status = resp.status().as_u16();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                (status, body.unwrap_or_default())
            }
            None => (599, Bytes::new()),
        }
    }

    /// `send` for the timed loops, which need only the status: the body is read
    /// frame by frame and dropped (hyper has its length from Content-Length), never
    /// gathered or parsed, so the generator's cost per request does not grow with
    /// the answer.
    async fn status(
        &self,
        s: &mut Conn,
        headers: &Headers,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> u16 {
        let Some(resp) = self.request(s, headers, method, path, body).await else {
            return 599;
        };
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return 599;
            }
        }
        status
    }

    fn headers(&self) -> Headers {
        Headers {
            host: HeaderValue::from_str(&self.addr).unwrap(),
            authorization: HeaderValue::from_str(&format!("Bearer {}", self.token)).unwrap(),
            content_type: HeaderValue::from_static("application/scim+json"),
        }
    }

    /// Sends one request on `s` (reconnecting first if it was closed); `None` when
    /// the connection failed (then `s` is a new one).
    async fn request(
        &self,
        s: &mut Conn,
        headers: &Headers,
        method: &str,
        path: &str,
        body: Option<Bytes>,
    ) -> Option<hyper::Response<hyper::body::Incoming>> {
        let uri = match path.strip_prefix("//") {
            Some(abs) => abs.to_owned(),
            None => format!("{}{path}", self.prefix),
        };
        let mut req = Request::new(Full::new(body.unwrap_or_default()));
        *req.method_mut() = method.parse().unwrap();
        *req.uri_mut() = uri.parse().unwrap();
        let h = req.headers_mut();
        h.insert(HOST, headers.host.clone());
        h.insert(AUTHORIZATION, headers.authorization.clone());
        h.insert(CONTENT_TYPE, headers.content_type.clone());
        if s.ready().await.is_err() {
            *s = self.connect().await;
        }
        match s.send_request(req).await {
            Ok(resp) => Some(resp),
            Err(_) => {
                *s = self.connect().await;
                None
            }
        }
    }

    async fn json(&self, s: &mut Conn, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (st, b) = self.send(s, method, path, body).await;
        assert!(
            st < 300,
            "{method} {path}: {st} {}",
            String::from_utf8_lossy(&b)
        );
        if b.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&b).unwrap()
        }
    }
}

/// Latencies of one measurement.
struct Stats {
    secs: f64,
    lat: Vec<Duration>,
    errors: usize,
    health: Vec<Duration>,
    /// CPU seconds used during the measurement by the server started here, and by
    /// this load generator (its `/healthz` probe included).
    server_cpu: Option<f64>,
    generator_cpu: Option<f64>,
}

impl Stats {
    fn pct(lat: &[Duration], p: f64) -> f64 {
        let mut l = lat.to_vec();
        l.sort();
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    }
    /// Server CPU microseconds per request, when the server was started here.
    fn server_us(&self) -> Option<f64> {
        let n = self.lat.len().max(1) as f64;
        self.server_cpu.map(|c| c * 1e6 / n)
    }
    fn rate(&self) -> f64 {
        self.lat.len() as f64 / self.secs.max(1e-9)
    }
    fn print(&self, name: &str) {
        let health = if self.health.is_empty() {
            "      -".to_owned()
        } else {
            format!("{:>7.2}", Stats::pct(&self.health, 0.99))
        };
        let per_op = |cpu: Option<f64>| match cpu {
            Some(c) if !self.lat.is_empty() => format!("{:>8.1}", c * 1e6 / self.lat.len() as f64),
            _ => format!("{:>8}", "-"),
        };
        println!(
            "{name:<52} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>6} {health} {} {}",
            self.lat.len(),
            self.rate(),
            Stats::pct(&self.lat, 0.5),
            Stats::pct(&self.lat, 0.99),
            Stats::pct(&self.lat, 0.999),
            self.errors,
            per_op(self.server_cpu),
            per_op(self.generator_cpu),
        );
    }
}

fn header() {
    println!(
        "{:<52} {:>7} {:>9} {:>8} {:>8} {:>8} {:>6} {:>7} {:>8} {:>8}",
        "measurement",
        "ops",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9",
        "errors",
        "hz p99",
        "srv us",
        "gen us"
    );
    println!("# srv us / gen us: CPU microseconds per request of the server started here and of this load generator (both threads, its /healthz probe included), from /proc/PID/stat");
}

type Make = dyn Fn(usize) -> (&'static str, String, Option<Value>) + Send + Sync;
/// As [`Make`], with the body as the bytes to send.
type MakeBytes = dyn Fn(usize) -> (&'static str, String, Option<Bytes>) + Send + Sync;

/// A body as the JSON bytes serde writes for it.
fn json_bytes(body: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(body).unwrap())
}

/// Runs up to `count` requests over `conns` keep-alive connections, at most `limit`
/// long, while one more connection probes `/healthz` every 20 ms.
async fn run(
    t: &Arc<Target>,
    conns: usize,
    count: usize,
    limit: Duration,
    make: Arc<Make>,
) -> Stats {
    let make = Arc::new(move |i| {
        let (m, p, b) = make(i);
        (m, p, b.as_ref().map(json_bytes))
    });
    run_bytes(t, conns, count, limit, make).await
}

/// Runs the measurement `f` makes on a runtime of its own with a single thread, and
/// waits for it. The durable creates keep 64 connections busy while each waits for
/// its fsync: one thread serves them all without the two workers of the main
/// runtime waking each other for every answer, which was part of the generator's
/// CPU per create on the cores the server runs on.
async fn on_one_thread<F, Fut>(t: &Arc<Target>, f: F) -> Stats
where
    F: FnOnce(Arc<Target>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Stats>,
{
    let t = t.clone();
    tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f(t))
    })
    .await
    .unwrap()
}

/// [`run`] with bodies made as bytes (the create loops: no JSON tree per request).
async fn run_bytes(
    t: &Arc<Target>,
    conns: usize,
    count: usize,
    limit: Duration,
    make: Arc<MakeBytes>,
) -> Stats {
    let next = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let cpu0 = cpu_now();
    let probe = {
        let (t, done) = (t.clone(), done.clone());
        tokio::spawn(async move {
            let mut s = t.connect().await;
            let headers = t.headers();
            let mut lat = Vec::new();
            while !done.load(Ordering::Relaxed) && started.elapsed() < limit * 2 {
                let t0 = Instant::now();
                let st = t.status(&mut s, &headers, "GET", "///healthz", None).await;
                if st < 500 {
                    lat.push(t0.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (t, make, next, errors) = (t.clone(), make.clone(), next.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = t.connect().await;
            let headers = t.headers();
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || started.elapsed() > limit {
                    break;
                }
                let (m, p, b) = make(i);
                let t0 = Instant::now();
                let status = t.status(&mut s, &headers, m, &p, b).await;
                lat.push(t0.elapsed());
                if status >= 400 {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu1 = cpu_now();
    done.store(true, Ordering::Relaxed);
    let used = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
    Stats {
        secs,
        lat,
        errors: errors.load(Ordering::Relaxed),
        health: probe.await.unwrap(),
        server_cpu: used(cpu0.0, cpu1.0),
        generator_cpu: used(cpu0.1, cpu1.1),
    }
}

/// One request timed, with `/healthz` probed meanwhile.
async fn once(t: &Arc<Target>, method: &'static str, path: String, body: Option<Value>) -> Stats {
    let body = Arc::new(body);
    run(
        t,
        1,
        1,
        Duration::from_secs(600),
        Arc::new(move |_| (method, path.clone(), (*body).clone())),
    )
    .await
}

/// The server this run started: its process (for RSS) and data directory.
struct Local {
    child: Child,
    dir: std::path::PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Local {
    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn start_local(data_dir: Option<&str>) -> (Target, Local) {
    let tmp = match data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().unwrap()),
    };
    let dir = data_dir.map_or_else(
        || tmp.as_ref().unwrap().path().to_path_buf(),
        std::path::PathBuf::from,
    );
    let out = Command::new(bin())
        .arg("--data-dir")
        .arg(&dir)
        .args([
            "token",
            "issue",
            "--name",
            &format!("bench-{}", std::process::id()),
        ])
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !token.is_empty(),
        "token issue: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(&dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(
            "SCIMBRIDGE_LOG",
            "warn,scimbridge::cli=info,scimbridge::server=info",
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    SERVER_PID.store(child.id(), Ordering::Relaxed);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(i) = line.find("identity provider: ") {
            url = line[i + 19..].trim().to_owned();
            break;
        }
    }
    // Keep draining the server's log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let addr = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("tls/cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let target = Target {
        addr,
        prefix: "/scim/v2".into(),
        token,
        tls: Some(tokio_rustls::TlsConnector::from(Arc::new(cfg))),
    };
    (
        target,
        Local {
            child,
            dir,
            _tmp: tmp,
        },
    )
}

fn arg(args: &HashMap<String, String>, name: &str) -> Option<String> {
    args.get(name).cloned()
}

/// User `i` of a run tagged `tag` as an identity provider creates it (every one
/// distinct: its own userName, email and names).
fn user(i: usize, tag: &str) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
           "userName": format!("{tag}{i}@example.com"), "active": true,
           "displayName": format!("Bench User {i}"), "title": if i.is_multiple_of(3) { "Engineer" } else { "Accountant" },
           "name": {"givenName": "Bench", "familyName": format!("User{i}")},
           "emails": [{"value": format!("{tag}{i}@example.com"), "type": "work", "primary": true}]})
}

/// [`user`] as the bytes serde writes for it, written straight from a template: the
/// create loops send thousands a second from the cores the server runs on, and
/// building and serializing a JSON tree per request was part of the generator's
/// cost per create (docs/PERFORMANCE.md "Durable creates"). `main` checks the two
/// agree.
fn user_body(i: usize, tag: &str) -> Bytes {
    use std::fmt::Write;
    let title = if i.is_multiple_of(3) {
        "Engineer"
    } else {
        "Accountant"
    };
    let mut s = String::with_capacity(320);
    let _ = write!(
        s,
        r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"{tag}{i}@example.com","active":true,"displayName":"Bench User {i}","title":"{title}","name":{{"givenName":"Bench","familyName":"User{i}"}},"emails":[{{"value":"{tag}{i}@example.com","type":"work","primary":true}}]}}"#
    );
    Bytes::from(s)
}

fn members_patch(op: &str, ids: &[String]) -> Value {
    let value: Vec<Value> = ids.iter().map(|m| json!({"value": m})).collect();
    json!({"schemas": [PATCH_URN], "Operations": [{"op": op, "path": "members", "value": value}]})
}

/// Up to `n` (id, userName) pairs, read in pages of 1,000 by start index.
async fn sample_users(t: &Target, n: usize) -> Vec<(String, String)> {
    let mut s = t.connect().await;
    let mut out = Vec::new();
    let mut start = 1;
    while out.len() < n {
        let page = t
            .json(
                &mut s,
                "GET",
                &format!("/Users?startIndex={start}&count=1000&attributes=userName"),
                None,
            )
            .await;
        let rs = page["Resources"].as_array().cloned().unwrap_or_default();
        if rs.is_empty() {
            break;
        }
        start += rs.len();
        for r in rs {
            out.push((
                r["id"].as_str().unwrap().to_owned(),
                r["userName"].as_str().unwrap_or("").to_owned(),
            ));
        }
    }
    out.truncate(n);
    out
}

fn main() {
    let mut args = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if let Some(k) = a.strip_prefix("--") {
            if k == "bench" {
                continue;
            }
            args.insert(k.to_owned(), it.next().unwrap_or_default());
        }
    }
    let scenarios: Vec<String> = arg(&args, "scenarios")
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|| ALL.iter().map(|s| s.to_string()).collect());
    let users: usize = arg(&args, "users")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let secs: u64 = arg(&args, "seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let big: usize = arg(&args, "group-size")
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let warmup: u64 = arg(&args, "warmup")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // Users the read, lookup and patch loops draw from (the first N in id order,
    // i.e. random ids); a larger sample than the server's rendered-answer cache holds
    // measures the uncached read path.
    let sample_size: usize = arg(&args, "sample")
        .and_then(|s| s.parse().ok())
        .unwrap_or(big.max(20_000) + 64);
    let settle: u64 = arg(&args, "settle")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let limit = Duration::from_secs(secs);

    if let Some(b) = arg(&args, "bin") {
        let _ = BIN.set(b);
    }
    let (target, local) = match arg(&args, "base") {
        Some(base) => {
            let rest = base.trim_start_matches("http://");
            let (addr, prefix) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
            let target = Target {
                addr: addr.to_owned(),
                prefix: if prefix.is_empty() {
                    String::new()
                } else {
                    format!("/{prefix}")
                },
                token: arg(&args, "token").unwrap_or_default(),
                tls: None,
            };
            (target, None)
        }
        None => {
            let (t, l) = start_local(arg(&args, "data-dir").as_deref());
            (t, Some(l))
        }
    };
    let name = arg(&args, "name").unwrap_or_else(|| "scimbridge".into());
    let target = Arc::new(target);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "load benchmark: {name}, scenarios {}, {secs} s per measurement",
        scenarios.join(",")
    );
    let rss = |l: &Option<Local>| l.as_ref().map_or(0.0, Local::rss_mb);
    rt.block_on(async {
        let t = &target;
        let mut s = t.connect().await;
        // Make sure there are `users` users to read (a fresh directory is filled
        // with durable creates from 64 clients, which is the create scenario).
        let existing = t.json(&mut s, "GET", "/Users?count=0", None).await["totalResults"]
            .as_u64()
            .unwrap_or(0) as usize;
        header();
        let want = |n: &str| scenarios.iter().any(|s| s == n);
        if existing < users || want("create") {
            let tag = format!("c{}-", std::process::id());
            for i in [0, 1, 7, 12_345] {
                assert_eq!(user_body(i, &tag), json_bytes(&user(i, &tag)), "user_body({i})");
            }
            let n = if existing < users { users - existing } else { 20_000 };
            let tag2 = tag.clone();
            let make: Arc<MakeBytes> = Arc::new(move |i| {
                ("POST", "/Users".into(), Some(user_body(i, &tag2)))
            });
            let limit = Duration::from_secs(600).max(limit);
            let st = on_one_thread(t, move |t| async move { run_bytes(&t, 64, n, limit, make).await }).await;
            st.print("create: POST /Users, 64 clients (durable)");
            // A server that drops connections (scim2-server closes each one) loses
            // some creates: top the directory up, one connection, at most 3 rounds,
            // so both sides of compare.sh hold the same number of users.
            for round in 1..=3 {
                let have = t.json(&mut s, "GET", "/Users?count=0", None).await["totalResults"]
                    .as_u64()
                    .unwrap_or(0) as usize;
                if have >= users {
                    break;
                }
                let tag2 = format!("{tag}r{round}-");
                run_bytes(t, 1, users - have, Duration::from_secs(600), Arc::new(move |i| {
                    ("POST", "/Users".into(), Some(user_body(i, &tag2)))
                }))
                .await;
            }
        }
        println!("# server RSS {:.0} MB", rss(&local));
        let sample = Arc::new(sample_users(t, sample_size.max(big + 64)).await);
        let total = t.json(&mut s, "GET", "/Users?count=0", None).await["totalResults"]
            .as_u64()
            .unwrap_or(0) as usize;
        println!("# {total} users in the directory");
        if warmup > 0 {
            let ids = sample.clone();
            let st = run(t, 8, usize::MAX, Duration::from_secs(warmup), Arc::new(move |i| {
                let (id, name) = &ids[(i * 7919) % ids.len()];
                if i.is_multiple_of(2) {
                    ("GET", format!("/Users/{id}"), None)
                } else {
                    ("GET", format!("/Users?filter=userName%20eq%20%22{name}%22"), None)
                }
            }))
            .await;
            println!("# warm-up: {} GETs by id and userName lookups in {:.0} s, RSS {:.0} MB", st.lat.len(), st.secs, rss(&local));
        }

        if want("read") {
            for conns in [8, 64] {
                let health = run(t, conns, 1_000_000, limit, Arc::new(|_| ("GET", "///healthz".into(), None))).await;
                health.print(&format!("read: GET /healthz alone, {conns} conns"));
                let ids = sample.clone();
                let get = run(t, conns, 1_000_000, limit, Arc::new(move |i| {
                    ("GET", format!("/Users/{}", ids[(i * 7919) % ids.len()].0), None)
                }))
                .await;
                get.print(&format!("read: GET /Users/{{id}}, {conns} conns"));
                // Both measurements are CPU-bound on the same cores, so the ratio of
                // their rates is that of their CPU per request (server + generator)
                // when both had the same share of the machine; the second figure is
                // that ratio, which does not move with the share the other processes
                // left to each 5-second window.
                let cpu = |s: &Stats| Some((s.server_cpu? + s.generator_cpu?) / s.lat.len().max(1) as f64);
                println!(
                    "# GET by id ÷ /healthz at {conns} conns: {:.2} (by CPU per request: {}); server CPU per request {} ÷ {} us",
                    get.rate() / health.rate(),
                    cpu(&health).zip(cpu(&get)).map_or("-".into(), |(h, g)| format!("{:.2}", h / g)),
                    get.server_us().map_or("-".into(), |u| format!("{u:.1}")),
                    health.server_us().map_or("-".into(), |u| format!("{u:.1}")),
                );
            }
        }
        if want("lookup") {
            for conns in [8, 64] {
                let ids = sample.clone();
                let st = run(t, conns, 1_000_000, limit, Arc::new(move |i| {
                    let name = &ids[(i * 7919) % ids.len()].1;
                    ("GET", format!("/Users?filter=userName%20eq%20%22{name}%22"), None)
                }))
                .await;
                st.print(&format!("lookup: userName eq, {conns} conns"));
            }
        }
        if want("patch") {
            let ids = sample.clone();
            let st = run(t, 16, 1_000_000, limit, Arc::new(move |i| {
                let body = json!({"schemas": [PATCH_URN], "Operations": [
                    {"op": "replace", "path": "title", "value": format!("Title {i}")}]});
                ("PATCH", format!("/Users/{}", ids[(i * 7919) % ids.len()].0), Some(body))
            }))
            .await;
            st.print("patch: PATCH /Users/{id} replace title, 16 conns");
        }
        if want("list") {
            let mid = total / 2;
            let before = rss(&local);
            once(t, "GET", format!("/Users?startIndex={mid}&count=100"), None).await
                .print(&format!("list: startIndex={mid}&count=100"));
            let st = run(t, 1, 20, limit, Arc::new(move |_| ("GET", format!("/Users?startIndex={mid}&count=100"), None))).await;
            st.print(&format!("list: startIndex={mid}&count=100, x20"));
            // A cursor page halfway through the directory: the cursor continues after
            // the resource at `mid` (found once, by offset). Cursors are opaque to
            // clients; this bench knows the server's form (`c1.` + the id in unpadded
            // base64url, `http/scim.rs` `cursor_of`) to start halfway without walking.
            let at_mid = t.json(&mut s, "GET", &format!("/Users?startIndex={mid}&count=1&attributes=id"), None).await;
            let id = at_mid["Resources"][0]["id"].as_str().unwrap_or_default().to_owned();
            let cursor = {
                use base64::Engine;
                format!("c1.{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id))
            };
            let st = run(t, 1, 50, limit, Arc::new(move |_| ("GET", format!("/Users?count=100&cursor={cursor}"), None))).await;
            st.print("list: a cursor page halfway (count=100), x50");
            let st = run(t, 1, 50, limit, Arc::new(|_| ("GET", "/Users?count=100&cursor=".into(), None))).await;
            st.print("list: the first cursor page (count=100), x50");
            println!("# RSS growth during list: {:.0} MB", rss(&local) - before);
        }
        if want("sort") {
            let before = rss(&local);
            once(t, "GET", "/Users?sortBy=userName&count=100".into(), None).await
                .print("sort: sortBy=userName, first page");
            let deep = total / 2;
            once(t, "GET", format!("/Users?sortBy=userName&startIndex={deep}&count=100"), None).await
                .print(&format!("sort: sortBy=userName, startIndex={deep}"));
            once(t, "GET", "/Users?sortBy=title&sortOrder=descending&count=100".into(), None).await
                .print("sort: sortBy=title descending, first page");
            println!("# RSS growth during sort: {:.0} MB (after: {:.0} MB)", rss(&local) - before, rss(&local));
        }
        if want("scan") {
            let before = rss(&local);
            let scan = "/Users?filter=title%20co%20%22Engineer%22&count=100";
            once(t, "GET", scan.into(), None).await
                .print("scan: title co \"Engineer\", count=100");
            // Again with the caches filled, five times one after the other: more
            // `/healthz` probes while a scan runs (on both cores when it splits).
            run(t, 1, 5, limit, Arc::new(move |_| ("GET", scan.into(), None))).await
                .print("scan: the same, x5");
            println!("# RSS growth during scan: {:.0} MB", rss(&local) - before);
        }
        if want("large-group") {
            let mut s = t.connect().await;
            let g = t.json(&mut s, "POST", "/Groups", Some(&json!({"displayName": format!("All staff {}", std::process::id())}))).await;
            let gid = g["id"].as_str().unwrap().to_owned();
            let members: Vec<String> = sample.iter().take(big).map(|(id, _)| id.clone()).collect();
            let mut batches = Vec::new();
            for chunk in members.chunks(1000) {
                let t0 = Instant::now();
                let (st, b) = t.send(&mut s, "PATCH", &format!("/Groups/{gid}"), Some(&members_patch("add", chunk))).await;
                assert!(st < 300, "{st} {}", String::from_utf8_lossy(&b));
                batches.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            let mut sorted = batches.clone();
            sorted.sort_by(f64::total_cmp);
            println!(
                "# built a group of {} in PATCHes of 1,000: first {:.1} ms, median {:.1} ms, last {:.1} ms, max {:.1} ms, total {:.1} s; RSS {:.0} MB",
                members.len(),
                batches.first().unwrap_or(&0.0),
                sorted.get(sorted.len() / 2).unwrap_or(&0.0),
                batches.last().unwrap_or(&0.0),
                sorted.last().unwrap_or(&0.0),
                batches.iter().sum::<f64>() / 1000.0,
                rss(&local)
            );
            let extra: Vec<String> = sample.iter().rev().take(64).map(|(id, _)| id.clone()).collect();
            let (gid2, extra2) = (gid.clone(), extra.clone());
            let st = run(t, 1, 400, limit, Arc::new(move |i| {
                let m = &extra2[(i / 2) % extra2.len()];
                let body = if i.is_multiple_of(2) {
                    members_patch("add", std::slice::from_ref(m))
                } else {
                    json!({"schemas": [PATCH_URN], "Operations": [{"op": "remove", "path": format!("members[value eq \"{m}\"]")}]})
                };
                ("PATCH", format!("/Groups/{gid2}"), Some(body))
            }))
            .await;
            st.print(&format!("large-group: one-member add/remove, {} members", members.len()));
            let gid2 = gid.clone();
            let st = run(t, 8, 1_000_000, limit, Arc::new(move |_| ("GET", format!("/Groups/{gid2}?excludedAttributes=members"), None))).await;
            st.print("large-group: GET excludedAttributes=members, 8 conns");
            let (gid2, probe) = (gid.clone(), members.clone());
            let st = run(t, 8, 1_000_000, limit, Arc::new(move |i| {
                let m = &probe[(i * 7919) % probe.len()];
                ("GET", format!("/Groups?filter=id%20eq%20%22{gid2}%22%20and%20members%5Bvalue%20eq%20%22{m}%22%5D&excludedAttributes=members"), None)
            }))
            .await;
            st.print("large-group: Entra member probe, 8 conns");
            let before = rss(&local);
            let mut peak = before;
            let full = {
                let fut = once(t, "GET", format!("/Groups/{gid}"), None);
                tokio::pin!(fut);
                loop {
                    tokio::select! {
                        st = &mut fut => break st,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => peak = peak.max(rss(&local)),
                    }
                }
            };
            full.print("large-group: full GET");
            println!("# RSS growth during the full GET: {:.0} MB (peak {:.0} MB)", peak - before, peak);
        }
        if want("sync") {
            // Entra-like first sync: for each user a lookup by userName (empty), then
            // a create; then groups, members in batches of 50, updates, deactivations.
            let n = users.min(10_000);
            let groups = (n / 20).max(1);
            let tag = format!("s{}-", std::process::id());
            let t0 = Instant::now();
            let tag2 = tag.clone();
            let lookups = run(t, 16, n, Duration::from_secs(600), Arc::new(move |i| {
                ("GET", format!("/Users?filter=userName%20eq%20%22{tag2}{i}@example.com%22"), None)
            }))
            .await;
            let tag2 = tag.clone();
            let creates = run(t, 16, n, Duration::from_secs(600), Arc::new(move |i| ("POST", "/Users".into(), Some(user(i, &tag2))))).await;
            let mut s = t.connect().await;
            let mut ids = Vec::new();
            let mut start = 1;
            loop {
                let page = t.json(&mut s, "GET", &format!("/Users?filter=userName%20sw%20%22{tag}%22&startIndex={start}&count=1000&attributes=id"), None).await;
                let rs = page["Resources"].as_array().cloned().unwrap_or_default();
                if rs.is_empty() {
                    break;
                }
                start += rs.len();
                ids.extend(rs.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
            }
            let tag2 = tag.clone();
            let gcreates = run(t, 16, groups, Duration::from_secs(600), Arc::new(move |i| {
                ("POST", "/Groups".into(), Some(json!({"displayName": format!("{tag2}group {i}")})))
            }))
            .await;
            let page = t.json(&mut s, "GET", &format!("/Groups?filter=displayName%20sw%20%22{tag}%22&count=1000&excludedAttributes=members"), None).await;
            let gids: Arc<Vec<String>> = Arc::new(page["Resources"].as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap().to_owned()).collect());
            let ids = Arc::new(ids);
            let (g2, i2) = (gids.clone(), ids.clone());
            let adds = run(t, 16, g2.len(), Duration::from_secs(600), Arc::new(move |i| {
                let chunk: Vec<String> = (0..50).map(|k| i2[(i * 50 + k) % i2.len()].clone()).collect();
                ("PATCH", format!("/Groups/{}", g2[i]), Some(members_patch("add", &chunk)))
            }))
            .await;
            let i2 = ids.clone();
            let updates = run(t, 16, n / 10, Duration::from_secs(600), Arc::new(move |i| {
                let body = json!({"schemas": [PATCH_URN], "Operations": [
                    {"op": "Replace", "path": "displayName", "value": format!("Renamed {i}")}]});
                ("PATCH", format!("/Users/{}", i2[i % i2.len()]), Some(body))
            }))
            .await;
            let i2 = ids.clone();
            let deactivations = run(t, 16, n / 20, Duration::from_secs(600), Arc::new(move |i| {
                let body = json!({"schemas": [PATCH_URN], "Operations": [
                    {"op": "Replace", "path": "active", "value": "False"}]});
                ("PATCH", format!("/Users/{}", i2[i2.len() - 1 - i % i2.len()]), Some(body))
            }))
            .await;
            lookups.print("sync: lookup userName eq (absent), 16 conns");
            creates.print("sync: create users, 16 conns");
            gcreates.print("sync: create groups, 16 conns");
            adds.print("sync: add 50 members per group, 16 conns");
            updates.print("sync: update users, 16 conns");
            deactivations.print("sync: deactivate users, 16 conns");
            let errors = lookups.errors + creates.errors + gcreates.errors + adds.errors + updates.errors + deactivations.errors;
            println!("# sync of {n} users and {} groups of 50: {:.1} s, {errors} errors", gids.len(), t0.elapsed().as_secs_f64());
        }
        if want("export") {
            if let Some(l) = &local {
                // The export streams through the running server's control socket;
                // the file goes next to the data directory's database.
                let out = l.dir.join("bench-export.jsonl");
                let before = l.rss_mb();
                let mut peak = before;
                let t0 = Instant::now();
                let mut child = Command::new(bin())
                    .arg("--data-dir")
                    .arg(&l.dir)
                    .args(["export", "--out"])
                    .arg(&out)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let status = loop {
                    if let Some(st) = child.try_wait().unwrap() {
                        break st;
                    }
                    peak = peak.max(l.rss_mb());
                    if t0.elapsed() > Duration::from_secs(600) {
                        let _ = child.kill();
                        break child.wait().unwrap();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                let size = std::fs::metadata(&out).map_or(0, |m| m.len());
                let _ = std::fs::remove_file(&out);
                println!(
                    "# export: {status}, {:.1} s, {:.0} MB written, server RSS {before:.0} → peak {peak:.0} MB (growth {:.0} MB)",
                    t0.elapsed().as_secs_f64(),
                    size as f64 / 1e6,
                    peak - before
                );
            }
        }
        // Memory is given back after heavy work: RSS once things settled.
        if let Some(l) = &local {
            let now = l.rss_mb();
            tokio::time::sleep(Duration::from_secs(settle)).await;
            println!("# server RSS at the end: {now:.0} MB, {settle} s later {:.0} MB", l.rss_mb());
        }
    });
    drop(local);
}
