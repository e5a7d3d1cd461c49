//! A small SCIM client for pushing into a target endpoint: one keep-alive HTTP/1.1
//! connection (re-established when it breaks), TLS verified against the system roots
//! or a given CA, plain HTTP only on loopback or when explicitly allowed. Honours 429
//! with Retry-After and retries 5xx and connection failures with backoff.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::Value;

use super::error::{MigrateError, MigrateResult};
use crate::secret::Secret;

/// Attempts per request before giving up (429 and 5xx and broken connections).
const MAX_ATTEMPTS: u32 = 8;
/// Longest wait honoured from a Retry-After header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Target {
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
    pub fn parse(url: &str, allow_http: bool) -> MigrateResult<Target> {
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
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON (a SCIM document).
    pub fn json(&self) -> MigrateResult<Value> {
        serde_json::from_slice(&self.body).map_err(|e| {
            MigrateError::TargetProtocol(format!("the target answered non-JSON ({e})"))
        })
    }

    /// The start of the body, for an error message.
    pub fn detail(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

pub struct Client {
    target: Target,
    token: Secret,
    tls: Option<tokio_rustls::TlsConnector>,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// Requests sent (for progress and tests).
    pub requests: u64,
    /// Times a 429 made us wait.
    pub throttled: u64,
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

impl Client {
    pub fn new(target: Target, token: Secret, cacert_pem: Option<&[u8]>) -> MigrateResult<Client> {
        let tls = if target.scheme_https {
            Some(tls_connector(cacert_pem)?)
        } else {
            None
        };
        Ok(Client {
            target,
            token,
            tls,
            conn: None,
            requests: 0,
            throttled: 0,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    async fn connect(&mut self) -> MigrateResult<()> {
        let down = MigrateError::Unreachable;
        let addr = (self.target.host.as_str(), self.target.port);
        let tcp = tokio::time::timeout(REQUEST_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| down(format!("connecting to {} timed out", self.target.base)))?
            .map_err(|e| down(format!("cannot connect to {}: {e}", self.target.base)))?;
        let _ = tcp.set_nodelay(true);
        let sender = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.target.host.clone())
                    .map_err(|e| down(format!("bad server name {}: {e}", self.target.host)))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| down(format!("TLS with {} failed: {e}", self.target.base)))?;
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
        body: Option<&Value>,
    ) -> MigrateResult<(StatusCode, Option<Duration>, Bytes)> {
        let down = MigrateError::Unreachable;
        if self.conn.as_ref().is_none_or(|c| c.is_closed()) {
            self.connect().await?;
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(down("no connection".into()));
        };
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let mut req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.target.prefix))
            .header(
                hyper::header::HOST,
                authority(
                    &self.target.host,
                    self.target.port,
                    self.target.scheme_https,
                ),
            )
            .header(
                hyper::header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
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
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| down(e.to_string()))?;
        conn.ready().await.map_err(|e| down(e.to_string()))?;
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, conn.send_request(req))
            .await
            .map_err(|_| down("the target did not answer in time".to_owned()))?
            .map_err(|e| down(e.to_string()))?;
        let status = resp.status();
        let wait = resp
            .headers()
            .get(hyper::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry_after);
        let body = tokio::time::timeout(REQUEST_TIMEOUT, resp.into_body().collect())
            .await
            .map_err(|_| down("the target's answer stalled".to_owned()))?
            .map_err(|e| down(e.to_string()))?
            .to_bytes();
        Ok((status, wait, body))
    }

    /// Sends a request to `base + path`, retrying 429 (after Retry-After), 5xx and
    /// broken connections with exponential backoff.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> MigrateResult<Response> {
        let mut backoff = Duration::from_millis(200);
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            self.requests += 1;
            match self.send_once(&method, path, body).await {
                Ok((status, wait, body)) => {
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        self.throttled += 1;
                        let w = wait.unwrap_or(backoff).min(MAX_RETRY_AFTER);
                        tracing::info!(
                            wait_ms = w.as_millis() as u64,
                            "the target asked us to slow down (429)"
                        );
                        tokio::time::sleep(w).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        last = "429 Too Many Requests".into();
                        continue;
                    }
                    if status.is_server_error() {
                        last = format!(
                            "{status}: {}",
                            String::from_utf8_lossy(&body)
                                .chars()
                                .take(200)
                                .collect::<String>()
                        );
                        tokio::time::sleep(wait.unwrap_or(backoff).min(MAX_RETRY_AFTER)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        continue;
                    }
                    return Ok(Response {
                        status: status.as_u16(),
                        body,
                    });
                }
                Err(e) => {
                    self.conn = None;
                    last = e.to_string();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        Err(MigrateError::Unreachable(format!(
            "{method} {}{path} failed after {MAX_ATTEMPTS} attempts: {last}",
            self.target.base
        )))
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
