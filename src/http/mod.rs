//! The HTTP edge: the listener (`server`), routing (here), the SCIM endpoints
//! (`scim`) and the plain ACME HTTP-01 listener (`acme`); TLS itself is `crate::tls`. Only this layer knows HTTP; it turns requests into calls on the
//! SCIM core and the store, and errors into SCIM error documents in one place.

pub(crate) mod acme;
pub(crate) mod admin;
pub(crate) mod body;
pub(crate) mod bulk;
pub(crate) mod conn;
pub(crate) mod metrics;
mod plain;
pub(crate) mod scim;
pub(crate) mod server;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

pub(crate) use body::RequestBody;

use crate::app::App;
use crate::config::TrustedProxies;
use crate::limiter::{Permit, Subject, Throttled};
use crate::scim::error::ScimError;
use crate::store::StoreError;

pub(crate) use body::Body;

/// A handler's answer: a response, or a SCIM error to render as one.
pub(crate) type Handled = Result<Response<Body>, ScimError>;

pub(crate) const SCIM_PREFIX: &str = "/scim/v2";
pub(crate) const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The SCIM listener (`listen`); also serves the admin page unless `admin.listen` is set.
    Main,
    /// The separate admin listener (`admin.listen`): only `/admin`.
    Admin,
}

/// Facts about the connection of a request, put into its extensions by the server.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnInfo {
    /// The TCP peer (a reverse proxy, when there is one).
    pub peer: SocketAddr,
    /// The client: the peer, or the address a trusted proxy forwarded for
    /// (`client_address`). Throttles, logs and the audit use this one.
    pub client: IpAddr,
    pub listener: Listener,
}

/// Per request, in its extensions: what must live until its answer has been sent
/// (the limiter's permits).
#[derive(Default)]
pub(crate) struct RequestCtx {
    permits: Mutex<Vec<Permit>>,
}

impl RequestCtx {
    /// Keeps `permit` until the answer to this request has been sent.
    pub(crate) fn hold(&self, permit: Permit) {
        if let Ok(mut p) = self.permits.lock() {
            p.push(permit);
        }
    }
}

/// The request's context (a fresh one when the server did not set one, in tests).
pub(crate) fn request_ctx<B>(req: &Request<B>) -> Arc<RequestCtx> {
    req.extensions()
        .get::<Arc<RequestCtx>>()
        .cloned()
        .unwrap_or_default()
}

/// The client address of a request (the peer when the server did not say).
pub(crate) fn client_of<B>(req: &Request<B>) -> IpAddr {
    req.extensions()
        .get::<ConnInfo>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), |c| c.client)
}

/// The client address: the TCP peer, unless the peer is a trusted proxy; then the
/// right-most address in `X-Forwarded-For` that is not itself a trusted proxy (the
/// left part of the header is whatever the client wrote and proves nothing).
/// A malformed entry ends the walk at the proxy that added it.
pub(crate) fn client_address(
    trusted: &TrustedProxies,
    peer: IpAddr,
    headers: &hyper::HeaderMap,
) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    for entry in entries.iter().rev() {
        let Ok(addr) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        client = addr;
        if !trusted.contains(addr) {
            break;
        }
    }
    client
}

/// Whether a trusted proxy says the client's request reached it over HTTPS: the TCP
/// peer is in `trusted_proxies` and the right-most `X-Forwarded-Proto` value (the one
/// the proxy that connected here set; a client's own value stands left of it, if the
/// proxy appends) is `https`. From any other peer the header proves nothing: anyone
/// can send it.
pub(crate) fn forwarded_https<B>(trusted: &TrustedProxies, req: &Request<B>) -> bool {
    let Some(info) = req.extensions().get::<ConnInfo>() else {
        return false;
    };
    if !trusted.contains(info.peer.ip()) {
        return false;
    }
    req.headers()
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// `Strict-Transport-Security` for certificates a browser can verify: a year, and
/// never `includeSubDomains` (the bridge speaks only for its own name).
pub(crate) const HSTS: &str = "max-age=31536000";

/// Everything a request handler needs, shared by all connections.
pub(crate) struct AppState {
    /// The application layer every edge shares (store, config, migration…).
    pub app: Arc<App>,
    /// The served certificate, when TLS is on.
    pub certs: Option<Arc<crate::tls::CertStore>>,
    pub started: Instant,
    request_ids: AtomicU64,
    pub metrics: metrics::Metrics,
    /// Admin sessions, login throttling and background migration jobs (in memory).
    pub admin: admin::AdminState,
    /// The last SCIM requests with their outcome, for the admin dashboard.
    pub activity: admin::activity::Activity,
    /// The SCIM base URL announced at start (public_url, else the listener's
    /// address): `meta.location` and `$ref` are built from it, never from the
    /// request's Host header.
    pub scim_url: OnceLock<String>,
    /// The last readiness probe (when, whether it wrote): `/readyz` reuses it for
    /// `READY_PROBE_EVERY`, so probes cost at most one durable write per period.
    readiness: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

/// How long a readiness probe's result is reused.
pub(crate) const READY_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl AppState {
    pub(crate) fn new(app: Arc<App>, certs: Option<Arc<crate::tls::CertStore>>) -> Self {
        AppState {
            app,
            certs,
            started: Instant::now(),
            request_ids: AtomicU64::new(1),
            metrics: metrics::Metrics::default(),
            admin: admin::AdminState::default(),
            activity: admin::activity::Activity::default(),
            scim_url: OnceLock::new(),
            readiness: tokio::sync::Mutex::new(None),
        }
    }

    /// The SCIM base URL (`https://host:port/scim/v2`): the one announced at start,
    /// else built from the configuration alone.
    pub(crate) fn scim_base(&self) -> String {
        if let Some(u) = self.scim_url.get() {
            return u.clone();
        }
        match &self.app.config.public_url {
            Some(u) => format!("{u}{SCIM_PREFIX}"),
            None => {
                let scheme = if self.certs.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}{SCIM_PREFIX}", self.app.config.listen)
            }
        }
    }

    /// Whether the database is writable, probing at most once per
    /// `READY_PROBE_EVERY` (concurrent callers share one probe).
    pub(crate) async fn ready(&self) -> bool {
        let mut last = self.readiness.lock().await;
        if let Some((at, ok)) = *last {
            if at.elapsed() < READY_PROBE_EVERY {
                return ok;
            }
        }
        let ok = match self.app.store.check_writable().await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                false
            }
        };
        *last = Some((Instant::now(), ok));
        ok
    }
}

pub(crate) fn scim_json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    scim_json_text(status, serde_json::to_vec(value).unwrap_or_default())
}

/// A SCIM response whose body is `json`, JSON text written by the caller.
pub(crate) fn scim_json_text(status: StatusCode, json: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::new(json));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    r
}

/// Seconds a client is asked to wait after a 503 (`Retry-After`, RFC 9110 §10.2.3):
/// this server answers 503 only for a pause (the migration's cut-over draining the
/// mirror, a shutdown, a storage retry), and identity providers retry after the
/// header, not after words in the detail.
pub(crate) const UNAVAILABLE_RETRY_SECS: u32 = 10;

/// A SCIM error response (RFC 7644 §3.12), with `WWW-Authenticate` on 401 and
/// `Retry-After` on 503.
pub(crate) fn scim_error(e: &ScimError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = scim_json(status, &e.to_json());
    if e.status == 401 {
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scimbridge\""),
        );
    }
    if e.status == 503 {
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            HeaderValue::from(UNAVAILABLE_RETRY_SECS),
        );
    }
    r
}

/// Maps a store error to a SCIM error; storage failures are logged here and never
/// shown to the client.
pub(crate) fn store_error(e: StoreError) -> ScimError {
    match e {
        StoreError::Scim(s) => s,
        StoreError::Closed => ScimError::new(503, None, "the server is shutting down"),
        StoreError::Aborted(_) => ScimError::new(
            503,
            None,
            "the write was rolled back with another operation; retry it",
        ),
        // Logged once by the store when the disk fills, not once per refused write.
        StoreError::DiskFull(_) => ScimError::new(
            507,
            None,
            "the server's disk is full: the write was not stored; retry later (its admin \
             must free space on the disk of the data directory)",
        ),
        other => {
            tracing::error!(error = %other, "storage failure");
            ScimError::new(
                503,
                None,
                "the directory store is unavailable; the server log has the details",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn metrics_response(state: &AppState, req: &Request<RequestBody>) -> Response<Body> {
    if let Some(expected) = &state.app.config.metrics_token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !expected.matches(given) {
            let client = client_of(req);
            if let Err(t) = state.app.limiter.auth_failed(client, Instant::now()) {
                return throttled(&t, false);
            }
            tracing::warn!(client = %client, "metrics authentication failed");
            let mut r = plain(StatusCode::UNAUTHORIZED, "metrics need the metrics token\n");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scimbridge-metrics\""),
            );
            return r;
        }
    }
    let mut gauges: Vec<(&str, &str, f64)> = Vec::new();
    if let Ok(snap) = state.app.store.snapshot() {
        use crate::scim::schema::ResourceType;
        let users = snap.count(ResourceType::User).unwrap_or(0) as f64;
        let groups = snap.count(ResourceType::Group).unwrap_or(0) as f64;
        gauges.push(("scimbridge_users", "Users in the directory.", users));
        gauges.push(("scimbridge_groups", "Groups in the directory.", groups));
    }
    if let Ok(m) = state.app.migration.status() {
        use crate::store::Phase;
        let phase = match m.phase {
            Phase::NotStarted => 0.0,
            Phase::Checked => 1.0,
            Phase::Pushing => 2.0,
            Phase::Mirroring => 3.0,
            Phase::Verified => 4.0,
            Phase::CutOver => 5.0,
        };
        gauges.push((
            "scimbridge_migration_phase",
            "Migration phase: 0 not started, 1 checked, 2 pushing, 3 mirroring, 4 verified, 5 cut over.",
            phase,
        ));
        gauges.push((
            "scimbridge_migration_mirror_lag_events",
            "Change events not yet replayed to the migration target.",
            m.lag.events as f64,
        ));
        gauges.push((
            "scimbridge_migration_mirror_lag_seconds",
            "Age in seconds of the oldest change event not yet replayed to the migration target.",
            m.lag.seconds,
        ));
        gauges.push((
            "scimbridge_migration_error",
            "1 from the first failed attempt of a push or the mirror, and while the mirror waits for a target token (see migrate status), else 0.",
            if m.state.last_error.is_some() || m.mirror.is_error() {
                1.0
            } else {
                0.0
            },
        ));
        gauges.push((
            "scimbridge_migration_mirror_failures",
            "Failed attempts of the migration mirror in a row (0 once a change is replayed).",
            f64::from(m.state.mirror_failures),
        ));
    }
    gauges.push((
        "scimbridge_database_size_bytes",
        "Size of the database file.",
        state.app.store.file_size() as f64,
    ));
    gauges.push((
        "scimbridge_uptime_seconds",
        "Seconds since the server started.",
        state.started.elapsed().as_secs_f64(),
    ));
    let mut text = state.metrics.render(&gauges, state.app.limiter.refusals());
    if let Some(view) = state
        .certs
        .as_ref()
        .and_then(|c| c.view(crate::clock::Timestamp::now()))
    {
        metrics::render_tls(&view, &mut text);
    }
    let now = crate::clock::Timestamp::now();
    metrics::render_tokens(
        &state.app.token_liveness(now).unwrap_or_default(),
        &mut text,
    );
    let (refused, dropped) = state.app.unknown.totals();
    text.push_str(&format!(
        "# HELP scimbridge_unknown_attributes_total Attributes no schema defines that SCIM requests named, by what the server did ([scim] unknown_attributes).\n\
         # TYPE scimbridge_unknown_attributes_total counter\n\
         scimbridge_unknown_attributes_total{{action=\"refused\"}} {refused}\n\
         scimbridge_unknown_attributes_total{{action=\"dropped\"}} {dropped}\n"
    ));
    text.push_str(&format!(
        "# HELP scimbridge_kept_answers_served_total GETs by id answered from the rendered-answer cache (kept until the next write of the directory).\n\
         # TYPE scimbridge_kept_answers_served_total counter\n\
         scimbridge_kept_answers_served_total {}\n",
        state.app.kept_answer_hits()
    ));
    let h = state.app.store.health();
    text.push_str(&format!(
        "# HELP scimbridge_storage_disk_full 1 while the disk holding the database is full (writes answer 507), else 0.\n\
         # TYPE scimbridge_storage_disk_full gauge\n\
         scimbridge_storage_disk_full {}\n\
         # HELP scimbridge_storage_write_failures_total Write batches the database refused, by kind.\n\
         # TYPE scimbridge_storage_write_failures_total counter\n\
         scimbridge_storage_write_failures_total{{kind=\"disk_full\"}} {}\n\
         scimbridge_storage_write_failures_total{{kind=\"io\"}} {}\n\
         # HELP scimbridge_storage_reopens_total Times the database was reopened after a storage failure.\n\
         # TYPE scimbridge_storage_reopens_total counter\n\
         scimbridge_storage_reopens_total {}\n",
        u8::from(h.disk_full),
        h.disk_full_failures,
        h.io_failures,
        h.reopens
    ));
    render_commits(&h, &mut text);
    let mut r = Response::new(Body::new(text));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// The store's group commits: how many, the writes they held (their ratio is the
/// mean batch size) and a histogram of their durations, fsync included (issue 10:
/// whether a write's latency is the disk's).
fn render_commits(h: &crate::store::StorageHealth, text: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        text,
        "# HELP scimbridge_storage_commits_total Group commits of the database (each one fsync).\n\
         # TYPE scimbridge_storage_commits_total counter\n\
         scimbridge_storage_commits_total {}\n\
         # HELP scimbridge_storage_committed_writes_total Write operations those commits held.\n\
         # TYPE scimbridge_storage_committed_writes_total counter\n\
         scimbridge_storage_committed_writes_total {}\n\
         # HELP scimbridge_storage_commit_duration_seconds Time to commit a batch, fsync included.\n\
         # TYPE scimbridge_storage_commit_duration_seconds histogram\n",
        h.commits, h.committed_writes
    );
    let mut cumulative = 0;
    for (bound, n) in crate::store::COMMIT_BUCKETS.iter().zip(h.commit_buckets) {
        cumulative += n;
        let _ = writeln!(
            text,
            "scimbridge_storage_commit_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let _ = write!(
        text,
        "scimbridge_storage_commit_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
         scimbridge_storage_commit_duration_seconds_sum {}\n\
         scimbridge_storage_commit_duration_seconds_count {}\n",
        h.commits,
        h.commit_micros as f64 / 1e6,
        h.commits
    );
}

/// A 429 answer for a limiter refusal: a SCIM error below `/scim/v2`, plain text
/// elsewhere, with `Retry-After` in seconds (RFC 6585 §4).
pub(crate) fn throttled(t: &Throttled, scim: bool) -> Response<Body> {
    let secs = t.retry_after_secs();
    let text = format!("{}; retry after {secs} s", t.reason.explain());
    let mut r = if scim {
        scim_error(&ScimError::new(429, None, text))
    } else {
        let mut r = Response::new(Body::new(format!("{text}\n")));
        *r.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Routes one request and logs it with a request id, which the lines written on its
/// behalf (audit, failed authentication) carry too (`logline::request_id`).
pub(crate) async fn route(state: Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let rid = state.request_ids.fetch_add(1, Ordering::Relaxed);
    crate::logline::in_request(rid, route_request(state, req, rid)).await
}

/// The token name a SCIM answer was given to (a response extension set by
/// `scim::handle`), for the request line.
#[derive(Clone)]
pub(crate) struct AnsweredToken(pub String);

async fn route_request(
    state: Arc<AppState>,
    req: Request<RequestBody>,
    rid: u64,
) -> Response<Body> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let (listener, client) = req
        .extensions()
        .get::<ConnInfo>()
        .map_or((Listener::Main, client_of(&req)), |c| {
            (c.listener, c.client)
        });
    let is_admin_path = path == "/admin" || path.starts_with("/admin/");
    let is_scim = path == SCIM_PREFIX || path.starts_with("/scim/v2/");
    // SCIM requests are limited per token once authenticated (scim::handle); the
    // rest per client address. /healthz is never limited.
    let admitted = if path == "/healthz" || (is_scim && listener == Listener::Main) {
        Ok(())
    } else {
        state
            .app
            .limiter
            .request(Subject::Address(client))
            .map(|p| request_ctx(&req).hold(p))
    };
    let response = match (admitted, path.as_str()) {
        (Err(t), _) => throttled(&t, false),
        _ if is_admin_path && admin::served_on(&state.app.config, listener) => {
            admin::handle(&state, req).await
        }
        // Someone typing the bridge's address into a browser (issue 14): the admin
        // page where this listener serves it, else where the SCIM API is.
        (_, "/") if admin::served_on(&state.app.config, listener) => {
            let mut r = plain(StatusCode::SEE_OTHER, "the admin page is at /admin\n");
            r.headers_mut()
                .insert(hyper::header::LOCATION, HeaderValue::from_static("/admin"));
            r
        }
        (_, "/") => plain(
            StatusCode::OK,
            "scimbridge: a SCIM 2.0 bridge. Identity providers use the SCIM API at /scim/v2; \
             the admin page is not served on this listener.\n",
        ),
        _ if listener == Listener::Admin => plain(
            StatusCode::NOT_FOUND,
            "not found; this listener serves only the admin page at /admin\n",
        ),
        (_, "/healthz") => plain(StatusCode::OK, "ok\n"),
        (_, "/readyz") => {
            if state.ready().await {
                plain(StatusCode::OK, "ready\n")
            } else {
                plain(StatusCode::SERVICE_UNAVAILABLE, "database not writable\n")
            }
        }
        (_, "/metrics") => metrics_response(&state, &req),
        (_, p) if is_scim => {
            let rest = p[SCIM_PREFIX.len()..].to_owned();
            scim::handle(&state, req, &rest).await
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found; the SCIM API is at /scim/v2\n",
        ),
    };
    let elapsed = started.elapsed();
    state.metrics.record(
        metrics::route_label(&path),
        &method,
        response.status().as_u16(),
        elapsed,
    );
    tracing::info!(
        request_id = rid,
        client = %client,
        token = response
            .extensions()
            .get::<AnsweredToken>()
            .map(|t| t.0.as_str()),
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trial 8 item 12: the cut-over's pause said "Retry-After: 10" only in its detail;
    /// an identity provider reads the header.
    #[test]
    fn a_503_carries_retry_after_and_other_errors_do_not() {
        let paused = scim_error(&ScimError::new(503, None, "writes are paused"));
        assert_eq!(paused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(paused.headers()[hyper::header::RETRY_AFTER], "10");
        for status in [400, 401, 404, 409, 410, 500] {
            let r = scim_error(&ScimError::new(status, None, "no"));
            assert!(
                r.headers().get(hyper::header::RETRY_AFTER).is_none(),
                "{status}"
            );
        }
    }

    fn request(peer: &str, protos: &[&str]) -> Request<()> {
        let mut b = Request::builder();
        for p in protos {
            b = b.header("x-forwarded-proto", *p);
        }
        let mut req = b.body(()).unwrap();
        let peer: SocketAddr = peer.parse().unwrap();
        req.extensions_mut().insert(ConnInfo {
            peer,
            client: peer.ip(),
            listener: Listener::Main,
        });
        req
    }

    #[test]
    fn only_a_trusted_proxys_forwarded_https_counts() {
        let trusted = TrustedProxies::parse(&["10.0.0.0/8".to_owned()]).unwrap();
        let https = |peer: &str, protos: &[&str]| forwarded_https(&trusted, &request(peer, protos));
        assert!(https("10.1.2.3:5000", &["https"]));
        assert!(https("10.1.2.3:5000", &["HTTPS"]));
        assert!(!https("10.1.2.3:5000", &["http"]));
        assert!(!https("10.1.2.3:5000", &[]));
        // The proxy's value is the right-most; what the client wrote stands left of it.
        assert!(!https("10.1.2.3:5000", &["https, http"]));
        assert!(!https("10.1.2.3:5000", &["https", "http"]));
        assert!(https("10.1.2.3:5000", &["http, https"]));
        // Anyone else's header proves nothing.
        assert!(!https("192.0.2.7:5000", &["https"]));
        let no_conn = Request::builder()
            .header("x-forwarded-proto", "https")
            .body(())
            .unwrap();
        assert!(!forwarded_https(&trusted, &no_conn));
    }
}
