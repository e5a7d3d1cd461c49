//! ACME against a real CA on 127.0.0.1: Debian's `pebble` (the RFC 8555 test server)
//! with `pebble-challtestsrv` as the DNS server that sends its validations to the
//! bridge. Each test starts its own pebble on ports it chose, with its own HTTPS
//! certificate (Debian's pebble ships none; the bridge trusts it with
//! `--acme-ca-file`), `PEBBLE_VA_NOSLEEP=1` and the certificate lifetime the test
//! needs: first issuance by TLS-ALPN-01 and by HTTP-01, a restart that orders
//! nothing, renewal under an open connection, a refusing CA, and External Account
//! Binding. Pebble 2.4 offers no renewal information (RFC 9773) and no rate limits;
//! the bridge's use of both is tested against the library's types and our parsers in
//! `tls::acme`'s unit tests.
//!
//! Then the `--tls files` checks: each fault named by `check-config`, refused at start,
//! and shown as a metric.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::admin as admin_support;
use crate::support::*;

const DOMAIN: &str = "scim.test";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when dropped, its output collected.
struct Proc {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    fn spawn(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e} (apt-get install pebble)"));
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    log.lock().unwrap().push(line);
                }
            });
        }
        Proc { child, log }
    }

    fn text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-made CA and a certificate it issued for 127.0.0.1, written as PEM files.
fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "scimbridge test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca_cert.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

struct PebbleOptions {
    /// Where pebble validates TLS-ALPN-01 and HTTP-01 (the bridge's listeners).
    tls_port: u16,
    http_port: u16,
    /// Lifetime of the certificates it issues.
    validity_secs: u64,
    /// Names it refuses to issue for.
    blocklist: Vec<String>,
    /// Require External Account Binding with `EAB_KID` and `EAB_KEY`.
    eab: bool,
}

/// An External Account Binding pebble knows (its own example's key, base64url).
const EAB_KID: &str = "kid-1";
const EAB_KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";

/// pebble and pebble-challtestsrv, stopped when dropped.
struct Pebble {
    dir: tempfile::TempDir,
    /// The ACME directory URL.
    directory: String,
    /// The CA of pebble's own HTTPS, for `--acme-ca-file`.
    ca_file: PathBuf,
    management: String,
    pebble: Option<Proc>,
    dns_address: String,
    _dns: Proc,
}

impl Pebble {
    fn start(o: PebbleOptions) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (ca_file, cert, key) = test_ca(dir.path());
        let (acme, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let dns_server = Proc::spawn(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                // Every name resolves to 127.0.0.1 only: the bridge listens there.
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]),
        );
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": cert,
            "privateKey": key,
            "httpPort": o.http_port,
            "tlsPort": o.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": o.eab,
            "externalAccountMACKeys": {EAB_KID: EAB_KEY},
            "certificateValidityPeriod": o.validity_secs,
            "domainBlocklist": o.blocklist,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let mut p = Pebble {
            directory: format!("https://127.0.0.1:{acme}/dir"),
            ca_file,
            management: format!("127.0.0.1:{management}"),
            pebble: None,
            dns_address: format!("127.0.0.1:{dns}"),
            _dns: dns_server,
            dir,
        };
        p.spawn();
        wait_until(
            "pebble-challtestsrv to listen",
            Duration::from_secs(10),
            || std::net::TcpStream::connect(format!("127.0.0.1:{dns_management}")).ok(),
        );
        p
    }

    fn spawn(&mut self) {
        let pebble = Proc::spawn(
            Command::new("pebble")
                .arg("-config")
                .arg(self.dir.path().join("pebble.json"))
                .args(["-dnsserver", &self.dns_address])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
        );
        wait_until("pebble to listen", Duration::from_secs(30), || {
            pebble
                .text()
                .contains("ACME directory available")
                .then_some(())
        });
        self.pebble = Some(pebble);
    }

    /// Stops pebble and starts it again on the same addresses: a CA that has forgotten
    /// every account and order (and has a new root).
    fn restart(&mut self) {
        drop(self.pebble.take());
        self.spawn();
    }

    fn log(&self) -> String {
        self.pebble.as_ref().map(Proc::text).unwrap_or_default()
    }

    /// Pebble's root CA (generated at its start), written to a file in `dir`.
    fn root_file(&self, dir: &Path) -> PathBuf {
        let (mut tls, _) = tls_connect(&self.management, "127.0.0.1", &[&self.ca_file]);
        write!(
            tls,
            "GET /roots/0 HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.management
        )
        .unwrap();
        let mut response = Vec::new();
        let _ = tls.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        let body = &text[text.find("-----BEGIN").expect("a PEM root")..];
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, body).unwrap();
        path
    }

    /// Order requests pebble has received since it started (refused ones included).
    fn orders(&self) -> usize {
        self.log().matches("POST /order-plz").count()
    }
}

/// A TLS client that accepts any certificate: to see what the bridge serves, the
/// temporary self-signed certificate included.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type Conn = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// An unverified TLS connection to the bridge as `DOMAIN`; the stream and the leaf.
fn open(addr: &str) -> Option<(Conn, Vec<u8>)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), DOMAIN.try_into().unwrap()).ok()?;
    let tcp = std::net::TcpStream::connect(addr).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).ok()?;
    }
    let leaf = tls.conn.peer_certificates()?.first()?.to_vec();
    Some((tls, leaf))
}

fn served_leaf(addr: &str) -> Option<Vec<u8>> {
    open(addr).map(|(_, leaf)| leaf)
}

fn issuer_of(der: &[u8]) -> String {
    scimbridge::tls::x509::parse(der)
        .expect("a certificate")
        .issuer
}

/// Waits until the bridge serves a certificate issued by pebble; returns its DER.
fn wait_for_pebble_certificate(addr: &str, secs: u64) -> Vec<u8> {
    wait_until(
        "a certificate issued by pebble",
        Duration::from_secs(secs),
        || served_leaf(addr).filter(|leaf| issuer_of(leaf).starts_with("Pebble Intermediate")),
    )
}

/// GET over an unverified connection; (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let (mut tls, _) = open(addr).expect("TLS connection");
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

fn metric(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn bridge(listen_port: u16, pebble: &Pebble, extra: &[&str]) -> Server {
    bridge_in(
        tempfile::tempdir().unwrap(),
        "test",
        listen_port,
        pebble,
        extra,
    )
}

/// The bridge on an existing data directory, with a new token named `token_name`.
fn bridge_in(
    dir: tempfile::TempDir,
    token_name: &str,
    listen_port: u16,
    pebble: &Pebble,
    extra: &[&str],
) -> Server {
    let mut args = vec![
        "--tls",
        "acme",
        "--acme-domain",
        DOMAIN,
        "--acme-email",
        "ops@example.com",
        "--acme-directory",
        &pebble.directory,
        "--acme-ca-file",
        pebble.ca_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start_at(dir, token_name, &format!("127.0.0.1:{listen_port}"), &args)
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn tls_alpn_01_issues_and_a_restart_serves_the_stored_certificate_without_ordering() {
    let port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_port(),
        validity_secs: 3600,
        blocklist: vec![],
        eab: false,
    });
    let mut s = bridge(port, &pebble, &[]);
    assert!(
        s.log_text().contains("TEMPORARY self-signed certificate"),
        "{}",
        s.log_text()
    );
    // The listener is on another port than 443: said at start-up, and why.
    assert!(s.log_text().contains("port 443 only"), "{}", s.log_text());
    let leaf = wait_for_pebble_certificate(&s.addr, 60);
    assert_eq!(pebble.orders(), 1);
    // The whole chain verifies for the name against pebble's root.
    let root = pebble.root_file(pebble.dir.path());
    let (mut verified, chain) = tls_connect(&s.addr, DOMAIN, &[&root]);
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    assert_eq!(request_on(&mut verified, "/healthz"), 200);
    // Kept in the data directory, readable by the service only.
    for f in ["account.json", "certificate.pem", "certificate.json"] {
        let p = s.data_dir().join("acme").join(f);
        #[cfg(unix)]
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        assert!(p.exists());
    }
    let (status, metrics) = get(&s.addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(&metrics, "scimbridge_acme_last_error{kind=\"none\"}"),
        Some(1.0)
    );
    let info = scimbridge::tls::x509::parse(&leaf).unwrap();
    let (not_before, not_after) = (
        info.not_before.unix_seconds(),
        info.not_after.unix_seconds(),
    );
    let two_thirds = not_before + (not_after - not_before) * 2 / 3;
    let next = wait_until(
        "the next renewal in /metrics",
        Duration::from_secs(10),
        || {
            metric(
                &get(&s.addr, "/metrics").1,
                "scimbridge_acme_next_renewal_timestamp_seconds",
            )
        },
    );
    assert!(
        (next - two_thirds as f64).abs() <= 1.0,
        "{next} vs {two_thirds}"
    );

    // With the CA gone, a restart serves the stored certificate at once and orders
    // nothing: nothing is due. (The CA file named on the command line must stay.)
    let ca_copy = s.data_dir().join("pebble-https-ca.pem");
    std::fs::copy(&pebble.ca_file, &ca_copy).unwrap();
    for a in &mut s.extra_args {
        if Path::new(a.as_str()) == pebble.ca_file {
            *a = ca_copy.to_str().unwrap().to_owned();
        }
    }
    drop(pebble);
    let before = s.log_text().len();
    s.restart();
    let log = || s.log_text()[before..].to_owned();
    assert!(!log().contains("TEMPORARY"), "{}", log());
    assert!(
        log().contains("serving the stored ACME certificate"),
        "{}",
        log()
    );
    assert_eq!(served_leaf(&s.addr).unwrap(), leaf);
    let metrics = wait_until(
        "the restarted bridge's renewal plan",
        Duration::from_secs(10),
        || {
            let (_, m) = get(&s.addr, "/metrics");
            metric(&m, "scimbridge_acme_next_renewal_timestamp_seconds")
                .is_some()
                .then_some(m)
        },
    );
    assert_eq!(
        metric(&metrics, "scimbridge_acme_next_renewal_timestamp_seconds"),
        Some(two_thirds as f64)
    );
    assert_eq!(
        metric(&metrics, "scimbridge_acme_last_error{kind=\"none\"}"),
        Some(1.0)
    );
    assert!(!log().contains("ACME certificate issued"), "{}", log());
    assert!(
        !log().contains("still serving the current certificate"),
        "{}",
        log()
    );
}

#[test]
fn http_01_issues_through_the_plain_listener_which_redirects_everything_else() {
    let (port, http_port) = (free_port(), free_port());
    // TLS-ALPN-01 would be validated on a port where nothing listens: only HTTP-01 can pass.
    let pebble = Pebble::start(PebbleOptions {
        tls_port: free_port(),
        http_port,
        validity_secs: 3600,
        blocklist: vec![],
        eab: false,
    });
    let http_listen = format!("127.0.0.1:{http_port}");
    let s = bridge(port, &pebble, &["--acme-http-listen", &http_listen]);
    wait_for_pebble_certificate(&s.addr, 60);
    let root = pebble.root_file(pebble.dir.path());
    let (mut verified, _) = tls_connect(&s.addr, DOMAIN, &[&root]);
    assert_eq!(request_on(&mut verified, "/healthz"), 200);

    let mut plain = std::net::TcpStream::connect(&http_listen).unwrap();
    write!(
        plain,
        "GET /scim/v2/Users?count=1 HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = plain.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 301"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains(&format!(
            "location: https://{DOMAIN}:{port}/scim/v2/users?count=1"
        )),
        "{response}"
    );
    let mut plain = std::net::TcpStream::connect(&http_listen).unwrap();
    write!(
        plain,
        "GET /.well-known/acme-challenge/unknown HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    let _ = plain.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
}

#[test]
fn renewal_swaps_the_certificate_under_an_open_keep_alive_connection() {
    let port = free_port();
    // A 12-second certificate is renewed 8 seconds after it starts.
    let pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_port(),
        validity_secs: 12,
        blocklist: vec![],
        eab: false,
    });
    let s = bridge(port, &pebble, &[]);
    let first = wait_for_pebble_certificate(&s.addr, 60);
    let (mut kept, kept_leaf) = open(&s.addr).unwrap();
    assert_eq!(request_on(&mut kept, "/healthz"), 200);
    let started = Instant::now();
    let renewed = wait_until("a renewed certificate", Duration::from_secs(60), || {
        served_leaf(&s.addr).filter(|leaf| *leaf != first && *leaf != kept_leaf)
    });
    let info = scimbridge::tls::x509::parse(&renewed).unwrap();
    assert!(info.names.contains(&DOMAIN.to_owned()));
    assert!(started.elapsed() < Duration::from_secs(30));
    // The connection opened before the renewal is still served.
    assert_eq!(request_on(&mut kept, "/healthz"), 200);
    assert_eq!(
        kept.conn.peer_certificates().unwrap()[0].to_vec(),
        kept_leaf
    );
    assert!(pebble.orders() >= 2);
    let (_, metrics) = get(&s.addr, "/metrics");
    assert_eq!(
        metric(&metrics, "scimbridge_acme_last_error{kind=\"none\"}"),
        Some(1.0)
    );
}

#[test]
fn a_refusing_ca_keeps_the_old_certificate_and_the_error_is_shown() {
    let port = free_port();
    let good = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_port(),
        validity_secs: 3600,
        blocklist: vec![],
        eab: false,
    });
    let mut s = bridge(port, &good, &[]);
    let leaf = wait_for_pebble_certificate(&s.addr, 60);
    let keep = tempfile::tempdir().unwrap();
    let root = good.root_file(keep.path());
    s.stop();
    drop(good);

    // Another CA, which refuses the name: the certificate came from elsewhere, so
    // the bridge orders at once, and is refused.
    let refusing = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_port(),
        validity_secs: 3600,
        blocklist: vec![DOMAIN.to_owned()],
        eab: false,
    });
    let dir = std::mem::replace(&mut s.dir, tempfile::tempdir().unwrap());
    drop(s);
    let s = bridge_in(dir, "second", port, &refusing, &[]);
    let metrics = wait_until("the refusal in /metrics", Duration::from_secs(60), || {
        let (_, m) = get(&s.addr, "/metrics");
        (metric(&m, "scimbridge_acme_last_error{kind=\"rejected\"}") == Some(1.0)).then_some(m)
    });
    assert_eq!(
        metric(&metrics, "scimbridge_acme_last_error{kind=\"none\"}"),
        Some(0.0)
    );
    let next = metric(&metrics, "scimbridge_acme_next_renewal_timestamp_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(next > now, "a retry is scheduled: {next} <= {now}");
    // The old certificate is still served, and verifies.
    assert_eq!(served_leaf(&s.addr).unwrap(), leaf);
    assert!(s
        .log_text()
        .contains("still serving the current certificate"));

    // The dashboard says what happened, in words.
    let mut c = Client::new(&s.addr, Some(root), s.token.clone());
    c.server_name = DOMAIN.to_owned();
    let r =
        admin_support::set_password(&c, &admin_support::setup_link(&s), admin_support::PASSWORD);
    assert_eq!(r.status, 303);
    let cookie = admin_support::login(&c, admin_support::PASSWORD);
    let page = admin_support::text(&admin_support::get_page(&c, "/admin", &cookie));
    assert!(page.contains("Last ACME error"), "{page}");
    assert!(
        page.contains("ordering a certificate for scim.test: the CA refused"),
        "{page}"
    );
    assert!(page.contains("rejectedIdentifier"), "{page}");
    assert!(page.contains(DOMAIN), "{page}");
    assert!(page.contains("Pebble Intermediate"), "{page}");
}

#[test]
fn a_changed_name_list_orders_at_once_and_a_forgotten_account_registers_again() {
    let port = free_port();
    let mut pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_port(),
        validity_secs: 3600,
        blocklist: vec![],
        eab: false,
    });
    let mut s = bridge(port, &pebble, &[]);
    let first = wait_for_pebble_certificate(&s.addr, 60);
    s.stop();
    // The CA forgets the account; the configuration adds a name.
    pebble.restart();
    s.extra_args
        .extend(["--acme-domain".to_owned(), format!("www.{DOMAIN}")]);
    s.restart();
    // The stored certificate is served at once, then replaced by one for both names.
    let both = wait_until(
        "a certificate for both names",
        Duration::from_secs(60),
        || {
            served_leaf(&s.addr).filter(|leaf| {
                let names = scimbridge::tls::x509::parse(leaf).unwrap().names;
                names.contains(&DOMAIN.to_owned()) && names.contains(&format!("www.{DOMAIN}"))
            })
        },
    );
    assert_ne!(both, first);
    assert!(
        s.log_text()
            .contains("the CA no longer knows our account; registering a new one"),
        "{}",
        s.log_text()
    );
    assert_eq!(
        pebble.orders(),
        2,
        "after the CA's restart: one refused for the unknown account, one issued"
    );
}

#[test]
fn external_account_binding_is_given_to_a_ca_that_requires_it() {
    let port = free_port();
    let pebble = Pebble::start(PebbleOptions {
        tls_port: port,
        http_port: free_port(),
        validity_secs: 3600,
        blocklist: vec![],
        eab: true,
    });
    // Without a binding the CA refuses the account: an account error, in words.
    let mut s = bridge(port, &pebble, &[]);
    wait_until(
        "the account refusal in /metrics",
        Duration::from_secs(30),
        || {
            let (_, m) = get(&s.addr, "/metrics");
            (metric(&m, "scimbridge_acme_last_error{kind=\"account\"}") == Some(1.0)).then_some(())
        },
    );
    assert!(
        s.log_text().contains("registering an ACME account with")
            && s.log_text().contains("externalAccountRequired"),
        "{}",
        s.log_text()
    );
    s.stop();
    // With it, the account is registered and the certificate issued.
    let key_file = s.data_dir().join("eab.key");
    std::fs::write(&key_file, format!("{EAB_KEY}\n")).unwrap();
    s.extra_args.extend([
        "--acme-eab-kid".to_owned(),
        EAB_KID.to_owned(),
        "--acme-eab-hmac-key-file".to_owned(),
        key_file.to_str().unwrap().to_owned(),
    ]);
    s.restart();
    wait_for_pebble_certificate(&s.addr, 60);
    let (_, metrics) = get(&s.addr, "/metrics");
    assert_eq!(
        metric(&metrics, "scimbridge_acme_last_error{kind=\"none\"}"),
        Some(1.0)
    );
}

// ---- --tls files ------------------------------------------------------------------

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    fn write(&self, name: &str, text: &str) -> String {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self.path(name)
    }
}

/// A CA-issued certificate for `names` with the given validity, and its key (PEM).
fn issued(
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
    names: &[&str],
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
) -> (String, String) {
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    p.not_before = not_before;
    p.not_after = not_after;
    let key = rcgen::KeyPair::generate().unwrap();
    (
        p.signed_by(&key, issuer).unwrap().pem(),
        key.serialize_pem(),
    )
}

fn check_config(data_dir: &Path, cert: &str, key: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "check-config",
        "--tls",
        "files",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(data_dir, &args);
    (ok, format!("{out}{err}"))
}

#[test]
fn check_config_names_each_certificate_file_fault() {
    let f = Files {
        dir: tempfile::tempdir().unwrap(),
    };
    let data = tempfile::tempdir().unwrap();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Example Intermediate");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let (good, good_key) = issued(&issuer, &["scim.example.com"], now - day, now + 90 * day);
    let chain = f.write("chain.pem", &format!("{good}{ca_pem}"));
    let key = f.write("key.pem", &good_key);

    // A good chain: OK, no warning.
    let (ok, out) = check_config(
        data.path(),
        &chain,
        &key,
        &["--public-url", "https://scim.example.com"],
    );
    assert!(
        ok && out.contains("configuration OK") && !out.contains("warning"),
        "{out}"
    );

    // Fatal: each refused with its own sentence.
    let (_, other_key) = issued(&issuer, &["x.example"], now - day, now + day);
    let fatal = [
        (
            f.path("missing.pem"),
            key.clone(),
            "cannot read the certificate file",
        ),
        (
            chain.clone(),
            f.path("missing.key"),
            "cannot read the private key file",
        ),
        (
            f.write("der.pem", "\u{30}\u{82} binary"),
            key.clone(),
            "holds no PEM certificate",
        ),
        (
            chain.clone(),
            f.write("cert-as-key.pem", &good),
            "holds no PEM private key",
        ),
        (
            chain.clone(),
            f.write("other.key", &other_key),
            "does not belong to the certificate",
        ),
    ];
    for (cert, key, expected) in &fatal {
        let (ok, out) = check_config(data.path(), cert, key, &[]);
        assert!(!ok && out.contains(expected), "{expected}: {out}");
    }
    // The server refuses to start with a fatal fault.
    let (ok, _, err) = cli(
        data.path(),
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "files",
            "--tls-cert",
            &chain,
            "--tls-key",
            &f.path("other.key"),
        ],
    );
    assert!(
        !ok && err.contains("does not belong to the certificate"),
        "{err}"
    );

    // Warnings: OK, but each named.
    let leaf_only = f.write("leaf.pem", &good);
    let (expired, expired_key) = issued(&issuer, &["scim.example.com"], now - 90 * day, now - day);
    let (future, future_key) = issued(&issuer, &["scim.example.com"], now + day, now + 90 * day);
    let warnings = [
        (
            leaf_only.clone(),
            key.clone(),
            "",
            "lacks the intermediate certificate of its issuer \"Example Intermediate\"",
        ),
        (
            f.write("expired.pem", &format!("{expired}{ca_pem}")),
            f.write("expired.key", &expired_key),
            "",
            "the certificate expired at",
        ),
        (
            f.write("future.pem", &format!("{future}{ca_pem}")),
            f.write("future.key", &future_key),
            "",
            "is not valid before",
        ),
        (
            chain.clone(),
            key.clone(),
            "https://other.example.com",
            "\"other.example.com\" is not among the certificate's names (scim.example.com)",
        ),
    ];
    for (cert, key, url, expected) in &warnings {
        let extra: Vec<&str> = if url.is_empty() {
            vec![]
        } else {
            vec!["--public-url", url]
        };
        let (ok, out) = check_config(data.path(), cert, key, &extra);
        assert!(
            ok && out.contains("warning: ") && out.contains(expected),
            "{expected}: {out}"
        );
    }

    // At start the warning is logged and shown as a metric.
    let s = Server::start_with(&[
        "--tls",
        "files",
        "--tls-cert",
        &leaf_only,
        "--tls-key",
        &key,
    ]);
    assert!(
        s.log_text().contains("lacks the intermediate"),
        "{}",
        s.log_text()
    );
    let (status, metrics) = get(&s.addr, "/metrics");
    assert_eq!(status, 200);
    assert_eq!(
        metric(
            &metrics,
            "scimbridge_tls_certificate_warning{kind=\"chain_incomplete\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "scimbridge_tls_certificate_warning{kind=\"expired\"}"
        ),
        Some(0.0)
    );

    // And on the dashboard, with the certificate's issuer, names and expiry.
    let ca_file = f.write("ca.pem", &ca_pem);
    let mut c = Client::new(&s.addr, Some(ca_file.into()), s.token.clone());
    c.server_name = "scim.example.com".to_owned();
    let r =
        admin_support::set_password(&c, &admin_support::setup_link(&s), admin_support::PASSWORD);
    assert_eq!(r.status, 303);
    let cookie = admin_support::login(&c, admin_support::PASSWORD);
    let page = admin_support::text(&admin_support::get_page(&c, "/admin", &cookie));
    for expected in [
        "Certificate warning",
        "lacks the intermediate certificate of its issuer",
        "Example Intermediate",
        "scim.example.com",
        "certificate files",
    ] {
        assert!(page.contains(expected), "{expected}: {page}");
    }
}

#[test]
fn check_config_explains_acme_ports() {
    let data = tempfile::tempdir().unwrap();
    // The admin page on loopback (as packaged): a public admin page warns too.
    let base = [
        "check-config",
        "--tls",
        "acme",
        "--acme-domain",
        "scim.example.com",
        "--admin-listen",
        "127.0.0.1:9443",
    ];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (ok, out, err) = cli(data.path(), &args);
        assert!(ok, "{err}");
        out
    };
    let out = run(&["--listen", "0.0.0.0:8443"]);
    assert!(
        out.contains("warning: ACME: the CA validates TLS-ALPN-01 on port 443 only"),
        "{out}"
    );
    assert!(out.contains("forwarded"), "{out}");
    assert!(
        out.contains("tls=acme (scim.example.com; https://acme-v02.api.letsencrypt.org/directory)"),
        "{out}"
    );
    let out = run(&["--listen", "0.0.0.0:443"]);
    // No ACME warning; /metrics on a public listener without a token still has its own.
    assert!(!out.contains("warning: ACME"), "{out}");
    assert!(
        out.contains("warning: /metrics on the SCIM listener 0.0.0.0:443"),
        "{out}"
    );
    let out = run(&[
        "--listen",
        "0.0.0.0:8443",
        "--acme-http-listen",
        "0.0.0.0:80",
    ]);
    assert!(!out.contains("warning: ACME"), "{out}");
    let out = run(&[
        "--listen",
        "0.0.0.0:443",
        "--acme-http-listen",
        "0.0.0.0:8080",
    ]);
    assert!(out.contains("HTTP-01 on port 80 only"), "{out}");
    // Refused: a wildcard, and no name at all.
    let (ok, _, err) = cli(
        data.path(),
        &[
            "check-config",
            "--tls",
            "acme",
            "--acme-domain",
            "*.example.com",
        ],
    );
    assert!(!ok && err.contains("wildcard"), "{err}");
    let (ok, _, err) = cli(data.path(), &["check-config", "--tls", "acme"]);
    assert!(!ok && err.contains("tls.acme.domains"), "{err}");
    // The environment works like the flags.
    let out = Command::new(BIN)
        .args(["--data-dir", data.path().to_str().unwrap(), "check-config"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .env("SCIMBRIDGE_TLS", "acme")
        .env("SCIMBRIDGE_ACME_DOMAINS", "a.example.com,b.example.com")
        .env("SCIMBRIDGE_ACME_STAGING", "true")
        .env("SCIMBRIDGE_LISTEN", "0.0.0.0:443")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("tls=acme (a.example.com, b.example.com; https://acme-staging-v02.api.letsencrypt.org/directory)"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
