//! A small SCIM client for pushing into a target endpoint: one keep-alive HTTP/1.1
//! connection (re-established when it breaks), TLS verified against the system roots
//! or a given CA, plain HTTP only on loopback or when explicitly allowed. Honours 429
//! with Retry-After (shared by every clone of a client), retries 5xx and connection
//! failures of idempotent requests with backoff, reports each retry and its reason,
//! fails at once on an untrusted certificate (with the `--cacert` hint), and never
//! repeats a create blindly: an uncertain create is handed back to the caller.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;

use super::error::{MigrateError, MigrateResult};
use super::report::Progress;
use crate::logline::printable;
use crate::secret::Secret;

/// Attempts per request before giving up (429 and 5xx and broken connections).
const MAX_ATTEMPTS: u32 = 8;
/// Attempts of the first request of a step (`Client::first_contact`): a mistyped
/// host or port fails in about a second instead of after the 51 s of backoff that
/// a target gone away mid-push is given (trial 8 item 26).
const FIRST_CONTACT_ATTEMPTS: u32 = 3;
/// Longest wait honoured from a Retry-After header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer read from a target (issue 11: a 1.5 GB body must not be read
/// whole). A page of 1,000 users or a group of 100,000 members is well below it.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Characters of a target's error text kept in a message.
const DETAIL_CHARS: usize = 300;

#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Normalised base URL, no trailing slash, e.g. `https://scim.example.com/scim/v2`.
    pub base: String,
    scheme_https: bool,
    host: String,
    port: u16,
    /// Path prefix of the base URL, e.g. `/scim/v2`.
    prefix: String,
}

impl Target {
    /// Parses and normalises a target URL. Refuses plain http except on loopback or
    /// with `allow_http`.
    pub(crate) fn parse(url: &str, allow_http: bool) -> MigrateResult<Target> {
        let invalid = MigrateError::InvalidTarget;
        let trimmed = url.trim().trim_end_matches('/');
        let uri: Uri = trimmed
            .parse()
            .map_err(|e| invalid(format!("\"{url}\" is not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(invalid(format!("\"{url}\" must start with https://"))),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid(format!("\"{url}\" has no host")))?
            .trim_matches(['[', ']'])
            .to_owned();
        if uri.query().is_some() {
            return Err(invalid(format!("\"{url}\" must not have a query string")));
        }
        if !https && !allow_http {
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false);
            if !loopback {
                return Err(invalid(format!(
                    "\"{url}\" is plain http: the token and the directory would travel unencrypted. \
                     Use https, or pass --allow-http if this network is trusted"
                )));
            }
        }
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let prefix = uri.path().trim_end_matches('/').to_owned();
        let base = format!(
            "{}://{}{}",
            if https { "https" } else { "http" },
            authority(&host, port, https),
            prefix
        );
        Ok(Target {
            base,
            scheme_https: https,
            host,
            port,
            prefix,
        })
    }
}

fn authority(host: &str, port: u16, https: bool) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if (https && port == 443) || (!https && port == 80) {
        h
    } else {
        format!("{h}:{port}")
    }
}

#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (a SCIM document).
    pub(crate) fn json(&self) -> MigrateResult<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            MigrateError::TargetProtocol(format!("the target answered non-JSON ({e})"))
        })
    }

    /// The target's explanation, safe to show on one line of a terminal, a log or
    /// the admin page: a SCIM error's `scimType` and `detail` (RFC 7644 §3.12),
    /// else the start of the body; control characters escaped
    /// (`logline::printable`), at most `DETAIL_CHARS` characters.
    pub(crate) fn detail(&self) -> String {
        let scim = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .filter(|v| v.get("detail").is_some() || v.get("scimType").is_some());
        let text = match scim {
            Some(v) => [&v["scimType"], &v["detail"]]
                .iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(": "),
            None => String::from_utf8_lossy(&self.body[..self.body.len().min(4 * DETAIL_CHARS)])
                .into_owned(),
        };
        printable(&text, DETAIL_CHARS)
    }
    pub(crate) fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// What a client shares with its clones: the target, the token, TLS, the counters
/// and the throttle gate (a 429 pauses every clone, not only the one that got it).
struct Shared {
    target: Target,
    token: Secret,
    tls: Option<tokio_rustls::TlsConnector>,
    requests: AtomicU64,
    throttled: AtomicU64,
    /// No request is sent before this instant (set from 429 Retry-After).
    paused_until: Mutex<Option<tokio::time::Instant>>,
    /// Where retry notices go (the push's progress), if anywhere.
    notices: Mutex<Option<tokio::sync::mpsc::UnboundedSender<Progress>>>,
}

/// A SCIM client of one target. `Clone` gives a client with its own connection that
/// shares counters, the throttle gate and the notice channel: the push runs a bounded
/// number of them side by side.
pub(crate) struct Client {
    shared: Arc<Shared>,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Clone for Client {
    fn clone(&self) -> Client {
        Client {
            shared: self.shared.clone(),
            conn: None,
        }
    }
}

/// The answer to a request that must not be repeated blindly (a create).
#[derive(Debug)]
pub(crate) enum Sent {
    /// The target answered (any status but 429, which is waited for and retried).
    Answered(Response),
    /// The request went out and no usable answer came back (5xx, a broken connection,
    /// a timeout): the target may have done the work. The reason, for messages.
    Uncertain(String),
}

/// Why one attempt failed.
enum Attempt {
    /// Nothing was sent (connect failed): safe to retry.
    NotSent(String),
    /// Sent, no answer: the target may have processed it.
    Lost(String),
    /// Retrying cannot help (an untrusted certificate).
    Fatal(MigrateError),
}

/// TLS configuration: the given CA bundle (PEM) or the system roots.
fn tls_connector(cacert_pem: Option<&[u8]>) -> MigrateResult<tokio_rustls::TlsConnector> {
    let cfg = crate::tls::client_config(cacert_pem).map_err(MigrateError::Tls)?;
    Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
}

/// Parses Retry-After: delay-seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v.trim()).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

/// A TLS failure that retrying cannot fix: the certificate is not trusted or does not
/// name the host. rustls reports these as `InvalidCertificate` ("invalid peer
/// certificate: UnknownIssuer", "NotValidForName", "Expired").
fn certificate_refused(e: &std::io::Error) -> bool {
    let text = e.to_string();
    text.contains("invalid peer certificate") || text.contains("certificate")
}

impl Client {
    pub(crate) fn new(
        target: Target,
        token: Secret,
        cacert_pem: Option<&[u8]>,
    ) -> MigrateResult<Client> {
        let tls = if target.scheme_https {
            Some(tls_connector(cacert_pem)?)
        } else {
            None
        };
        Ok(Client {
            shared: Arc::new(Shared {
                target,
                token,
                tls,
                requests: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                paused_until: Mutex::new(None),
                notices: Mutex::new(None),
            }),
            conn: None,
        })
    }

    pub(crate) fn target(&self) -> &Target {
        &self.shared.target
    }

    /// Requests sent so far by this client and its clones (retries included).
    pub(crate) fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Answers 429 received so far by this client and its clones.
    pub(crate) fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::Relaxed)
    }

    /// Sends retry notices (`Progress::Retrying`) to `tx` from now on.
    pub(crate) fn report_to(&self, tx: Option<tokio::sync::mpsc::UnboundedSender<Progress>>) {
        if let Ok(mut n) = self.shared.notices.lock() {
            *n = tx;
        }
    }

    fn notice(&self, reason: &str, wait: Duration) {
        tracing::info!(
            reason,
            wait_ms = wait.as_millis() as u64,
            "retrying a request to the migration target"
        );
        if let Ok(n) = self.shared.notices.lock() {
            if let Some(tx) = n.as_ref() {
                let _ = tx.send(Progress::Retrying {
                    reason: reason.chars().take(200).collect(),
                    wait_ms: wait.as_millis() as u64,
                });
            }
        }
    }

    async fn connect(&mut self) -> Result<(), Attempt> {
        let t = &self.shared.target;
        let down = Attempt::NotSent;
        let addr = (t.host.as_str(), t.port);
        let tcp = tokio::time::timeout(REQUEST_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| down(format!("connecting to {} timed out", t.base)))?
            .map_err(|e| down(format!("cannot connect to {}: {e}", t.base)))?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.shared.tls {
            Some(tls) => {
                let name = ServerName::try_from(t.host.clone()).map_err(|e| {
                    Attempt::Fatal(MigrateError::InvalidTarget(format!(
                        "bad server name {}: {e}",
                        t.host
                    )))
                })?;
                let stream = tls.connect(name, tcp).await.map_err(|e| {
                    if certificate_refused(&e) {
                        Attempt::Fatal(MigrateError::Tls(format!(
                            "TLS with {} failed: {e}. The target's certificate is not trusted by \
                             this machine; if it is signed by a private CA, pass that CA with \
                             --cacert FILE",
                            t.base
                        )))
                    } else {
                        down(format!("TLS with {} failed: {e}", t.base))
                    }
                })?;
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .map_err(|e| down(e.to_string()))?;
                tokio::spawn(conn);
                sender
            }
            None => {
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| down(e.to_string()))?;
                tokio::spawn(conn);
                sender
            }
        };
        self.conn = Some(sender);
        Ok(())
    }

    async fn send_once(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), Attempt> {
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.connect().await?;
        }
        let t = &self.shared.target;
        let Some(conn) = self.conn.as_mut() else {
            return Err(Attempt::NotSent("no connection".into()));
        };
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", t.prefix))
            .header(
                hyper::header::HOST,
                authority(&t.host, t.port, t.scheme_https),
            )
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.shared.token.expose()),
            )
            .header(
                hyper::header::ACCEPT,
                "application/scim+json, application/json",
            )
            .header(
                hyper::header::USER_AGENT,
                concat!("scimbridge/", env!("CARGO_PKG_VERSION")),
            );
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/scim+json");
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(|e| Attempt::NotSent(e.to_string()))?;
        conn.ready()
            .await
            .map_err(|e| Attempt::NotSent(e.to_string()))?;
        let lost = Attempt::Lost;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, conn.send_request(req))
            .await
            .map_err(|_| lost("the target did not answer in time".to_owned()))?
            .map_err(|e| lost(e.to_string()))?;
        let status = resp.status();
        let wait = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let too_large = || {
            Attempt::Fatal(MigrateError::TargetProtocol(format!(
                "the target's answer to {method} {path} is larger than {} MiB; it was not read \
                 (a SCIM answer that large is a fault of the target or of a proxy before it)",
                MAX_RESPONSE_BYTES >> 20
            )))
        };
        let announced = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
            // The connection still carries the unread body: never reuse it.
            self.conn = None;
            return Err(too_large());
        }
        let limited = http_body_util::Limited::new(resp.into_body(), MAX_RESPONSE_BYTES);
        let read = tokio::time::timeout(REQUEST_TIMEOUT, limited.collect()).await;
        let body = match read {
            Err(_) => return Err(lost("the target's answer stalled".to_owned())),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                self.conn = None;
                return Err(too_large());
            }
            Ok(Err(e)) => return Err(lost(e.to_string())),
            Ok(Ok(b)) => b.to_bytes(),
        };
        Ok((status, wait, body))
    }

    /// Waits while a 429 from any clone asks everyone to pause.
    async fn wait_for_gate(&self) {
        let until = self.shared.paused_until.lock().ok().and_then(|g| *g);
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    fn close_gate_for(&self, wait: Duration) {
        if let Ok(mut g) = self.shared.paused_until.lock() {
            let until = tokio::time::Instant::now() + wait;
            if g.is_none_or(|u| u < until) {
                *g = Some(until);
            }
        }
    }

    /// Sends a request to `base + path`. 429 is always waited for (Retry-After, shared
    /// by every clone) and retried; a connection that could not be made is retried with
    /// exponential backoff. When `idempotent`, 5xx answers and lost answers are retried
    /// too; otherwise they come back as `Sent::Uncertain` so that the caller can look
    /// for the resource before creating it again (RFC 7231 §4.2.2: POST is not
    /// idempotent; a gateway may answer 503 after the target did the work).
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> MigrateResult<Sent> {
        self.send_tries(method, path, body, idempotent, MAX_ATTEMPTS)
            .await
    }

    /// `send`, giving up after `attempts`.
    async fn send_tries(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotent: bool,
        attempts: u32,
    ) -> MigrateResult<Sent> {
        let bytes = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| {
                MigrateError::TargetProtocol(format!("cannot encode a request body: {e}"))
            })?),
            None => None,
        };
        let mut backoff = Duration::from_millis(200);
        let mut last = String::new();
        for _ in 0..attempts {
            self.wait_for_gate().await;
            self.shared.requests.fetch_add(1, Ordering::Relaxed);
            let failure = match self.send_once(&method, path, bytes.as_deref()).await {
                Ok((status, wait, body)) => {
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.shared.throttled.fetch_add(1, Ordering::Relaxed);
                        let w = wait.unwrap_or(backoff).min(MAX_RETRY_AFTER);
                        self.close_gate_for(w);
                        last = "429 Too Many Requests".into();
                        self.notice(
                            &format!("{method} {path}: the target answered 429 Too Many Requests"),
                            w,
                        );
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    if status.is_server_error() {
                        let answer = Response {
                            status: status.as_u16(),
                            body,
                        };
                        let text = format!("{status}: {}", answer.detail());
                        if !idempotent {
                            return Ok(Sent::Uncertain(text));
                        }
                        (text, wait)
                    } else {
                        return Ok(Sent::Answered(Response {
                            status: status.as_u16(),
                            body,
                        }));
                    }
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Lost(e)) => {
                    self.conn = None;
                    if !idempotent {
                        return Ok(Sent::Uncertain(e));
                    }
                    (e, None)
                }
                Err(Attempt::NotSent(e)) => {
                    self.conn = None;
                    (e, None)
                }
            };
            let (reason, wait) = failure;
            let w = wait.unwrap_or(backoff).min(MAX_RETRY_AFTER);
            self.notice(&format!("{method} {path}: {reason}"), w);
            tokio::time::sleep(w).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            last = reason;
        }
        Err(MigrateError::Unreachable(format!(
            "{method} {}{path} failed after {attempts} attempts: {last}",
            self.shared.target.base
        )))
    }

    /// An idempotent request (GET, PUT, PATCH, DELETE), retried as `send` says.
    pub(crate) async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> MigrateResult<Response> {
        self.request_tries(method, path, body, MAX_ATTEMPTS).await
    }

    /// The first GET of a step (discovery): as `request`, but given up after
    /// `FIRST_CONTACT_ATTEMPTS`, since a target that never answered is more likely a
    /// wrong URL than a pause; nothing has been sent yet, so running it again is safe.
    /// Errors: `NeverAnswered` when no attempt got an answer.
    pub(crate) async fn first_contact(&mut self, path: &str) -> MigrateResult<Response> {
        match self
            .request_tries(Method::GET, path, None, FIRST_CONTACT_ATTEMPTS)
            .await
        {
            Err(MigrateError::Unreachable(why)) => Err(MigrateError::NeverAnswered(why)),
            other => other,
        }
    }

    async fn request_tries(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        attempts: u32,
    ) -> MigrateResult<Response> {
        match self
            .send_tries(method.clone(), path, body, true, attempts)
            .await?
        {
            Sent::Answered(r) => Ok(r),
            Sent::Uncertain(reason) => Err(MigrateError::Unreachable(format!(
                "{method} {}{path}: {reason}",
                self.shared.target.base
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised_and_http_is_refused_off_loopback() {
        let t = Target::parse("https://scim.example.com/scim/v2/", false).unwrap();
        assert_eq!(t.base, "https://scim.example.com/scim/v2");
        let t = Target::parse("https://scim.example.com:8443/scim/v2//", false).unwrap();
        assert_eq!(t.base, "https://scim.example.com:8443/scim/v2");
        assert!(Target::parse("http://scim.example.com/scim/v2", false)
            .unwrap_err()
            .to_string()
            .contains("--allow-http"));
        assert!(Target::parse("http://scim.example.com/scim/v2", true).is_ok());
        assert!(Target::parse("http://127.0.0.1:8080/scim/v2", false).is_ok());
        assert!(Target::parse("http://[::1]:8080", false).is_ok());
        assert!(Target::parse("ftp://x/y", false).is_err());
        assert!(Target::parse("not a url", false).is_err());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }
}
