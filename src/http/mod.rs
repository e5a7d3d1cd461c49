//! The HTTP edge: the listener (`server`), routing (here), the SCIM endpoints
//! (`scim`) and the plain ACME HTTP-01 listener (`acme`); TLS itself is `crate::tls`. Only this layer knows HTTP; it turns requests into calls on the
//! SCIM core and the store, and errors into SCIM error documents in one place.

pub mod acme;
pub mod admin;
pub mod bulk;
pub mod metrics;
pub mod scim;
pub mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::app::App;
use crate::scim::error::ScimError;
use crate::store::StoreError;

pub type Body = Full<Bytes>;

/// A handler's answer: a response, or a SCIM error to render as one.
pub type Handled = Result<Response<Body>, ScimError>;

pub const SCIM_PREFIX: &str = "/scim/v2";
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The SCIM listener (`listen`); also serves the admin page unless `admin.listen` is set.
    Main,
    /// The separate admin listener (`admin.listen`): only `/admin`.
    Admin,
}

/// Facts about the connection of a request, put into its extensions by the server.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Listener,
}

/// What the HTTP edge keeps besides the application: TLS certificates, metrics,
/// admin sessions and the request log. Shared by all connections.
pub struct AppState {
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
}

impl AppState {
    pub fn new(app: Arc<App>, certs: Option<Arc<crate::tls::CertStore>>) -> Self {
        AppState {
            app,
            certs,
            started: Instant::now(),
            request_ids: AtomicU64::new(1),
            metrics: metrics::Metrics::default(),
            admin: admin::AdminState::default(),
            activity: admin::activity::Activity::default(),
        }
    }
}

pub fn scim_json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(SCIM_CONTENT_TYPE));
    r
}

pub fn scim_error(e: &ScimError) -> Response<Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = scim_json(status, &e.to_json());
    if e.status == 401 {
        r.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"scimbridge\""),
        );
    }
    r
}

/// Maps a store error to a SCIM error; storage failures are logged here and never
/// shown to the client.
pub fn store_error(e: StoreError) -> ScimError {
    match e {
        StoreError::Scim(s) => s,
        StoreError::Closed => ScimError::new(503, None, "the server is shutting down"),
        StoreError::Aborted(_) => ScimError::new(
            503,
            None,
            "the write was rolled back with another operation; retry it",
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
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn metrics_response(state: &AppState, req: &Request<Incoming>) -> Response<Body> {
    if let Some(expected) = &state.app.config.metrics_token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !expected.matches(given) {
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
    let mut text = state.metrics.render(&gauges);
    if let Some(view) = state
        .certs
        .as_ref()
        .and_then(|c| c.view(crate::clock::Timestamp::now()))
    {
        metrics::render_tls(&view, &mut text);
    }
    let (refused, dropped) = state.app.unknown.totals();
    text.push_str(&format!(
        "# HELP scimbridge_unknown_attributes_total Attributes no schema defines that SCIM requests named, by what the server did ([scim] unknown_attributes).\n\
         # TYPE scimbridge_unknown_attributes_total counter\n\
         scimbridge_unknown_attributes_total{{action=\"refused\"}} {refused}\n\
         scimbridge_unknown_attributes_total{{action=\"dropped\"}} {dropped}\n"
    ));
    let mut r = Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

/// Routes one request and logs it with a request id.
pub async fn route(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let rid = state.request_ids.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let listener = req
        .extensions()
        .get::<ConnInfo>()
        .map_or(Listener::Main, |c| c.listener);
    let is_admin_path = path == "/admin" || path.starts_with("/admin/");
    let response = match path.as_str() {
        _ if is_admin_path && admin::served_on(&state.app.config, listener) => {
            admin::handle(&state, req).await
        }
        _ if listener == Listener::Admin => plain(
            StatusCode::NOT_FOUND,
            "not found; this listener serves only the admin page at /admin\n",
        ),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => match state.app.store.check_writable().await {
            Ok(()) => plain(StatusCode::OK, "ready\n"),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                plain(StatusCode::SERVICE_UNAVAILABLE, "database not writable\n")
            }
        },
        "/metrics" => metrics_response(&state, &req),
        p if p == SCIM_PREFIX || p.starts_with("/scim/v2/") => {
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
        method.as_str(),
        response.status().as_u16(),
        elapsed,
    );
    tracing::info!(
        request_id = rid,
        method = %method,
        path = %path,
        status = response.status().as_u16(),
        micros = elapsed.as_micros() as u64,
        "request"
    );
    response
}
