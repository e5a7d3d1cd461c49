//! The plain-HTTP listener of ACME HTTP-01 (`tls.acme.http_listen`, port 80): it
//! answers `GET /.well-known/acme-challenge/{token}` with the key authorization
//! (RFC 8555 §8.3) and redirects every other request to https, so that nothing but
//! challenges is ever served in clear. Connections are bounded in number and time.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::Body;
use crate::tls::acme::Http01Tokens;

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";
/// Plain connections served at once; validators need a handful.
const MAX_CONNECTIONS: usize = 64;
/// A connection gets this long to send its request and read the answer.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// The answer to one plain-HTTP request. `https_port` is the TLS listener's port,
/// `public_url` the configured external URL (redirects go there when set).
fn answer<B>(
    req: &Request<B>,
    tokens: &Http01Tokens,
    https_port: u16,
    public_url: Option<&str>,
) -> Response<Body> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix(CHALLENGE_PREFIX) {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        return match tokens.get(token) {
            Some(key_authorization) => text(StatusCode::OK, key_authorization),
            None => text(StatusCode::NOT_FOUND, "no such ACME challenge\n".into()),
        };
    }
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let origin = match public_url {
        Some(u) => u.to_owned(),
        None => {
            let host = req
                .headers()
                .get(HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(crate::tls::check::url_host);
            let Some(host) = host else {
                return text(
                    StatusCode::BAD_REQUEST,
                    "this address serves https only; no Host header to redirect to\n".into(),
                );
            };
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host
            };
            match https_port {
                443 => format!("https://{host}"),
                p => format!("https://{host}:{p}"),
            }
        }
    };
    let mut r = text(
        StatusCode::MOVED_PERMANENTLY,
        "this address serves https only\n".into(),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("{origin}{path_and_query}")) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves the plain listener until the task is aborted.
pub(crate) async fn serve_http01(
    listener: TcpListener,
    tokens: Arc<Http01Tokens>,
    https_port: u16,
    public_url: Option<String>,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let public_url: Arc<Option<String>> = Arc::new(public_url);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP-01 accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let tokens = tokens.clone();
        let public_url = public_url.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let r = answer(&req, &tokens, https_port, public_url.as_deref());
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(CONNECTION_DEADLINE)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, uri: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn answers_challenges_and_redirects_the_rest() {
        let tokens = Http01Tokens::default();
        tokens.insert("tok", "tok.thumb");
        let r = answer(
            &req("GET", "/.well-known/acme-challenge/tok", Some("a.example")),
            &tokens,
            443,
            None,
        );
        assert_eq!(r.status(), 200);
        let r = answer(
            &req(
                "GET",
                "/.well-known/acme-challenge/other",
                Some("a.example"),
            ),
            &tokens,
            443,
            None,
        );
        assert_eq!(r.status(), 404);
        let r = answer(
            &req("GET", "/scim/v2/Users?x=1", Some("a.example:80")),
            &tokens,
            443,
            None,
        );
        assert_eq!(r.status(), 301);
        assert_eq!(r.headers()[LOCATION], "https://a.example/scim/v2/Users?x=1");
        let r = answer(&req("POST", "/x", Some("a.example")), &tokens, 8443, None);
        assert_eq!(r.headers()[LOCATION], "https://a.example:8443/x");
        let r = answer(
            &req("GET", "/x", None),
            &tokens,
            443,
            Some("https://scim.example.com"),
        );
        assert_eq!(r.headers()[LOCATION], "https://scim.example.com/x");
        assert_eq!(
            answer(&req("GET", "/x", None), &tokens, 443, None).status(),
            400
        );
    }
}
