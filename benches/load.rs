//! Load benchmark: starts the release binary on 127.0.0.1 over TLS and prints
//! throughput and latency numbers. Every phase is bounded in count and time.
//!
//!   cargo bench --bench load            # all phases
//!   SCIMBRIDGE_BENCH_SCALE=4 cargo bench --bench load   # 4x the counts
//!
//! Phases: GET /healthz vs GET /Users/{id} (same TLS + HTTP stack), concurrent durable
//! creates, userName lookups, and adding/removing one member in a small and a large
//! group.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_scimbridge");

struct Target {
    addr: String,
    token: String,
    tls: tokio_rustls::TlsConnector,
}

impl Target {
    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let tls = self
            .tls
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }
}

async fn send(
    s: &mut SendRequest<Full<Bytes>>,
    t: &Target,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", &t.addr)
        .header("authorization", format!("Bearer {}", t.token))
        .header("content-type", "application/scim+json")
        .body(Full::new(Bytes::from(
            body.map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
        )))
        .unwrap();
    s.ready().await.unwrap();
    let resp = s.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

struct Stats {
    n: usize,
    secs: f64,
    lat: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut l = self.lat.clone();
        l.sort();
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    }
    fn print(&self, name: &str) {
        println!(
            "{name:<44} {:>7} req in {:>5.2}s = {:>8.0}/s   p50 {:>6.2} ms   p99 {:>6.2} ms",
            self.n,
            self.secs,
            self.n as f64 / self.secs,
            self.pct(0.5),
            self.pct(0.99)
        );
    }
}

/// Runs `count` requests over `conns` keep-alive connections, at most `limit` long.
async fn run<F>(t: &Arc<Target>, conns: usize, count: usize, limit: Duration, make: F) -> Stats
where
    F: Fn(usize) -> (&'static str, String, Option<Value>) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (t, make, next) = (t.clone(), make.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = t.connect().await;
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count || started.elapsed() > limit {
                    break;
                }
                let (m, p, b) = make(i);
                let t0 = Instant::now();
                let (status, body) = send(&mut s, &t, m, &p, b.as_ref()).await;
                assert!(
                    status < 300,
                    "{m} {p}: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap());
    }
    Stats {
        n: lat.len(),
        secs: started.elapsed().as_secs_f64(),
        lat,
    }
}

fn main() {
    let scale: usize = std::env::var("SCIMBRIDGE_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["token", "issue", "--name", "bench"])
        .output()
        .unwrap();
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("SCIMBRIDGE_LOG", "warn,scimbridge::cli=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut url = String::new();
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if let Some(i) = line.find("identity provider: ") {
            url = line[i + 19..].trim().to_owned();
            break;
        }
    }
    let addr = url
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.path().join("tls/cert.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let target = Arc::new(Target {
        addr,
        token,
        tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("scimbridge load benchmark (release binary, TLS, 127.0.0.1, scale {scale})");
    rt.block_on(async {
        let limit = Duration::from_secs(20);
        let creates = run(&target, 64, 4000 * scale, limit, |i| {
            ("POST", "/scim/v2/Users".into(), Some(json!({"userName": format!("user{i}@example.com"), "active": true,
                "emails": [{"value": format!("user{i}@example.com"), "type": "work", "primary": true}]})))
        })
        .await;
        creates.print("POST /Users, 64 clients (durable creates)");

        let mut s = target.connect().await;
        let (_, body) = send(&mut s, &target, "GET", "/scim/v2/Users?count=200&attributes=id", None).await;
        let ids: Arc<Vec<String>> = Arc::new(
            serde_json::from_slice::<Value>(&body).unwrap()["Resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_str().unwrap().to_owned())
                .collect(),
        );
        let n = 20000 * scale;
        let health = run(&target, 16, n, limit, |_| ("GET", "/healthz".into(), None)).await;
        health.print("GET /healthz, 16 clients");
        let ids2 = ids.clone();
        let get = run(&target, 16, n, limit, move |i| ("GET", format!("/scim/v2/Users/{}", ids2[i % ids2.len()]), None)).await;
        get.print("GET /Users/{id}, 16 clients");
        let h = health.n as f64 / health.secs;
        let g = get.n as f64 / get.secs;
        println!("{:<44} {:>6.1}% slower than /healthz", "GET by id throughput", (h / g - 1.0) * 100.0);
        let total = creates.n;
        let lookup = run(&target, 16, n / 2, limit, move |i| {
            ("GET", format!("/scim/v2/Users?filter=userName%20eq%20%22USER{}@example.com%22", i % total), None)
        })
        .await;
        lookup.print("GET /Users?filter=userName eq, 16 clients");

        // One member added to and removed from a group of 10, then of a large group.
        for size in [10usize, 2000 * scale] {
            // A fresh connection: the one above sat idle past the server's idle timeout.
            let mut s = target.connect().await;
            let (st, body) = send(&mut s, &target, "POST", "/scim/v2/Groups", Some(&json!({"displayName": format!("g{size}")}))).await;
            assert_eq!(st, 201);
            let gid = serde_json::from_slice::<Value>(&body).unwrap()["id"].as_str().unwrap().to_owned();
            let mut members = Vec::new();
            let (_, body) = send(&mut s, &target, "GET", &format!("/scim/v2/Users?count={}&attributes=id", size.min(1000)), None).await;
            for r in serde_json::from_slice::<Value>(&body).unwrap()["Resources"].as_array().unwrap() {
                members.push(r["id"].as_str().unwrap().to_owned());
            }
            let mut start = 1 + members.len();
            while members.len() < size && start <= total {
                let (_, body) = send(&mut s, &target, "GET", &format!("/scim/v2/Users?count=1000&startIndex={start}&attributes=id"), None).await;
                let page = serde_json::from_slice::<Value>(&body).unwrap();
                let rs = page["Resources"].as_array().unwrap();
                if rs.is_empty() { break; }
                for r in rs { members.push(r["id"].as_str().unwrap().to_owned()); }
                start += rs.len();
            }
            members.truncate(size);
            for chunk in members.chunks(500) {
                let value: Vec<Value> = chunk.iter().map(|m| json!({"value": m})).collect();
                let (st, _) = send(&mut s, &target, "PATCH", &format!("/scim/v2/Groups/{gid}?excludedAttributes=members"),
                    Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                                 "Operations": [{"op": "add", "path": "members", "value": value}]}))).await;
                assert_eq!(st, 200);
            }
            let extra = ids[0].clone();
            let t0 = Instant::now();
            let rounds = 20;
            for _ in 0..rounds {
                for op in ["add", "remove"] {
                    let body = if op == "add" {
                        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                               "Operations": [{"op": "add", "path": "members", "value": [{"value": extra}]}]})
                    } else {
                        json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                               "Operations": [{"op": "remove", "path": format!("members[value eq \"{extra}\"]")}]})
                    };
                    let (st, _) = send(&mut s, &target, "PATCH", &format!("/scim/v2/Groups/{gid}?excludedAttributes=members"), Some(&body)).await;
                    assert_eq!(st, 200);
                }
            }
            let per = t0.elapsed().as_secs_f64() * 1000.0 / (2 * rounds) as f64;
            println!("{:<44} {:>8.2} ms per PATCH (group of {})", format!("add/remove one member, {} members", members.len()), per, members.len());
        }
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let size = std::fs::metadata(dir.path().join("scimbridge.redb"))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "{:<44} {:>8.1} MiB",
        "database file",
        size as f64 / 1048576.0
    );
}
