//! Attack figures (issue 11): what slow and hostile clients cost the server, and
//! whether /healthz still answers meanwhile. Not a test: it prints numbers.
//!
//! Each scenario starts a fresh server (default configuration, self-signed TLS, on
//! 127.0.0.1) and measures its resident memory (VmRSS now, VmHWM peak) and the
//! latency of /healthz (a fresh TLS connection each time) while under attack.
//!
//!   cargo bench --bench attack                       # the binary of this tree
//!   SCIMBRIDGE_BIN=/path/to/old/scimbridge cargo bench --bench attack   # another one
//!   ATTACK_SECS=20 ...                               # seconds per scenario (default 15)

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

struct Server {
    child: Child,
    addr: String,
    token: String,
    tls: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> PathBuf {
    std::env::var_os("SCIMBRIDGE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_scimbridge")))
}

fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .args(["--data-dir"])
        .arg(dir.path())
        .args(["token", "issue", "--name", "bench"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_owned();
    let mut child = Command::new(bin())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .env("SCIMBRIDGE_LOG", "warn,scimbridge=info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("identity provider: ") {
                let _ = tx.send(line[i + 19..].trim().to_owned());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server start");
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
    let tls = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    Server {
        child,
        addr,
        token,
        tls,
        _dir: dir,
    }
}

impl Server {
    fn rss_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    fn connect(&self, alpn: &[&[u8]]) -> Option<Tls> {
        let mut cfg = (*self.tls).clone();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let conn =
            rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("127.0.0.1").ok()?)
                .ok()?;
        let tcp = TcpStream::connect(&self.addr).ok()?;
        tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut t = rustls::StreamOwned::new(conn, tcp);
        while t.conn.is_handshaking() {
            t.conn.complete_io(&mut t.sock).ok()?;
        }
        Some(t)
    }

    /// One request on a fresh connection: (status, whole time), or None if dropped.
    fn request(&self, raw: &[u8]) -> Option<(u16, Duration)> {
        let t0 = Instant::now();
        let mut t = self.connect(&[b"http/1.1"])?;
        t.write_all(raw).ok()?;
        let mut got = Vec::new();
        let _ = t.read_to_end(&mut got);
        let status = String::from_utf8_lossy(&got)
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some((status, t0.elapsed()))
    }

    fn healthz(&self) -> Option<Duration> {
        self.request(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .filter(|(s, _)| *s == 200)
            .map(|(_, d)| d)
    }

    fn get(&self, path: &str) -> Option<(u16, Duration)> {
        self.request(
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                self.token
            )
            .as_bytes(),
        )
    }
}

/// /healthz probed every 200 ms until `stop`: (answered, failed, p50, max).
fn probe(s: &Server, stop: &AtomicBool) -> (usize, usize, Duration, Duration) {
    let mut times = Vec::new();
    let mut failed = 0;
    while !stop.load(Ordering::Relaxed) {
        match s.healthz() {
            Some(d) => times.push(d),
            None => failed += 1,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    times.sort();
    let p50 = times.get(times.len() / 2).copied().unwrap_or_default();
    let max = times.last().copied().unwrap_or_default();
    (times.len(), failed, p50, max)
}

fn secs() -> u64 {
    std::env::var("ATTACK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
}

/// Runs `attack` for the scenario's time while probing /healthz, then prints a line.
fn scenario(name: &str, s: &Server, attack: impl FnOnce(&AtomicBool) -> String + Send) {
    let (rss0, _) = s.rss_kb();
    let stop = AtomicBool::new(false);
    let (health, detail) = std::thread::scope(|scope| {
        let prober = scope.spawn(|| probe(s, &stop));
        let attacker = scope.spawn(|| attack(&stop));
        std::thread::sleep(Duration::from_secs(secs()));
        let (rss_now, _) = s.rss_kb();
        stop.store(true, Ordering::Relaxed);
        let health = prober.join().unwrap();
        let detail = attacker.join().unwrap();
        (
            health,
            format!("{detail}; RSS at the end {} MB", rss_now / 1024),
        )
    });
    let (_, peak) = s.rss_kb();
    let (ok, failed, p50, max) = health;
    println!(
        "{name:<34} RSS {} MB before, peak {} MB | /healthz {ok} ok, {failed} failed, p50 {:.1} ms, max {:.1} ms | {detail}",
        rss0 / 1024,
        peak / 1024,
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
}

/// Connections kept open by `hold` (each returns its stream); how many the server
/// had closed by the end.
fn hold_many(
    s: &Server,
    n: usize,
    stop: &AtomicBool,
    open: impl Fn(&Server) -> Option<Tls>,
) -> String {
    let mut held: Vec<Tls> = (0..n).filter_map(|_| open(s)).collect();
    let opened = held.len();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut closed = 0;
    for t in held.iter_mut() {
        t.sock
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mut b = [0u8; 1];
        match t.read(&mut b) {
            Ok(0) => closed += 1,
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                closed += 1
            }
            _ => {}
        }
    }
    format!("{opened} opened, {closed} closed by the server")
}

fn h2_never_reading(s: &Server, path: &str, streams: u32) -> Option<TcpStream> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
    sock.set_recv_buffer_size(4096).ok()?;
    let addr: std::net::SocketAddr = s.addr.parse().ok()?;
    sock.connect(&addr.into()).ok()?;
    let tcp: TcpStream = sock.into();
    let mut cfg = (*s.tls).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), ServerName::try_from("127.0.0.1").ok()?)
            .ok()?;
    let mut t = rustls::StreamOwned::new(conn, tcp);
    while t.conn.is_handshaking() {
        t.conn.complete_io(&mut t.sock).ok()?;
    }
    let auth = format!("Bearer {}", s.token);
    let mut out = Vec::new();
    out.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    out.extend_from_slice(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff]);
    out.extend_from_slice(&[0, 0, 4, 8, 0, 0, 0, 0, 0, 0x7f, 0xff, 0x00, 0x00]);
    let block: Vec<u8> = [
        &[0x82u8, 0x87][..],
        &[0x04, path.len() as u8],
        path.as_bytes(),
        &[0x01, 9],
        b"127.0.0.1",
        &[0x0f, 0x08, auth.len() as u8],
        auth.as_bytes(),
    ]
    .concat();
    for stream in (0..streams).map(|i| 2 * i + 1) {
        out.extend_from_slice(&(block.len() as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[1, 0x05]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(&block);
    }
    t.write_all(&out).ok()?;
    t.flush().ok()?;
    // Keep the socket, drop the TLS state: nothing will ever be read.
    let (_, tcp) = t.into_parts();
    Some(tcp)
}

fn seed_users(s: &Server, n: usize) {
    for chunk in 0..n.div_ceil(1000) {
        let ops: Vec<serde_json::Value> = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| {
                serde_json::json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"),
                    "data": {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                             "userName": format!("user{i}@example.com"), "title": format!("title {i}"),
                             "emails": [{"value": format!("user{i}@example.com"), "primary": true}]}})
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops}))
        .unwrap();
        let mut raw = format!(
            "POST /scim/v2/Bulk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            s.token,
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(&body);
        let r = s.request(&raw);
        assert_eq!(r.map(|x| x.0), Some(200), "seeding users");
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!("binary: {}", bin().display());
    println!(
        "{} s per scenario, default configuration, 127.0.0.1\n",
        secs()
    );

    let s = start();
    scenario("baseline (no attack)", &s, |_| String::from("-"));
    drop(s);

    let s = start();
    scenario("300 slow-body sign-ins", &s, |stop| {
        let open = |s: &Server| {
            let mut t = s.connect(&[b"http/1.1"])?;
            t.write_all(b"POST /admin/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\npassword=").ok()?;
            Some(t)
        };
        hold_many(&s, 300, stop, open)
    });
    drop(s);

    let s = start();
    scenario("300 idle HTTP/2 connections", &s, |stop| {
        let open = |s: &Server| {
            let mut t = s.connect(&[b"h2"])?;
            t.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                .ok()?;
            Some(t)
        };
        hold_many(&s, 300, stop, open)
    });
    drop(s);

    let s = start();
    seed_users(&s, 2000);
    scenario("HTTP/2 never reading (token)", &s, |stop| {
        let socks: Vec<TcpStream> = (0..20)
            .filter_map(|_| h2_never_reading(&s, "/scim/v2/Users?count=1000", 60))
            .collect();
        let n = socks.len();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("{n} connections x 60 streams of 1000 users")
    });
    drop(s);

    let s = start();
    scenario("HTTP/2 never reading (/metrics)", &s, |stop| {
        let socks: Vec<TcpStream> = (0..50)
            .filter_map(|_| h2_never_reading(&s, "/metrics", 60))
            .collect();
        let n = socks.len();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        format!("{n} unauthenticated connections x 60 streams")
    });
    drop(s);

    let s = start();
    seed_users(&s, 10_000);
    scenario("8 clients of heavy scans+sorts", &s, |stop| {
        let done = AtomicU64::new(0);
        let refused = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        match s
                            .get("/scim/v2/Users?filter=title%20co%20%225%22&sortBy=title&count=10")
                        {
                            Some((200, _)) => done.fetch_add(1, Ordering::Relaxed),
                            Some((429, _)) => refused.fetch_add(1, Ordering::Relaxed),
                            _ => 0,
                        };
                    }
                });
            }
        });
        format!(
            "{} scans answered, {} refused 429",
            done.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed)
        )
    });
    drop(s);

    let s = start();
    scenario("20,000 requests, unknown methods", &s, |_| {
        let mut sent = 0;
        let t0 = Instant::now();
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|k| {
                    let s = &s;
                    scope.spawn(move || {
                        let mut t = s.connect(&[b"http/1.1"]).unwrap();
                        let mut n = 0;
                        for i in 0..5000 {
                            let req = format!("M{k}X{i} /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
                            let ok = t.write_all(req.as_bytes()).is_ok() && read_answer(&mut t);
                            if !ok {
                                match s.connect(&[b"http/1.1"]) {
                                    Some(c) => t = c,
                                    None => break,
                                }
                                continue;
                            }
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            for h in handles {
                sent += h.join().unwrap();
            }
        });
        let metrics = s.get("/metrics").map(|_| ()).is_some();
        let size = metrics_size(&s);
        format!(
            "{sent} sent in {:.1} s; /metrics {} ({size} bytes)",
            t0.elapsed().as_secs_f64(),
            if metrics { "answers" } else { "fails" }
        )
    });
}

/// Reads one keep-alive answer (head and Content-Length body); false if it failed.
fn read_answer(t: &mut Tls) -> bool {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match t.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return false,
        }
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    t.read_exact(&mut body).is_ok()
}

fn metrics_size(s: &Server) -> usize {
    let Some(mut t) = s.connect(&[b"http/1.1"]) else {
        return 0;
    };
    let _ = t.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut got = Vec::new();
    let _ = t.read_to_end(&mut got);
    got.len()
}
