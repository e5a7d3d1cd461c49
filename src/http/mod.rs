//! The HTTP edge: the listener (`server`), TLS (`tls`), routing (here) and the SCIM
//! endpoints (`scim`). Only this layer knows HTTP; it turns requests into calls on the
//! SCIM core and the store, and errors into SCIM error documents in one place.

pub mod admin;
pub mod bulk;
pub mod metrics;
pub mod scim;
pub mod server;
pub mod tls;
pub mod unknown;
pub mod x509;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::config::Config;
use crate::scim::error::ScimError;
use crate::store::{Store, StoreError};

pub type Body = Full<Bytes>;

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

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub store: Store,
    pub config: Config,
    /// The served certificate, when TLS is on.
    pub certs: Option<Arc<tls::CertStore>>,
    pub started: Instant,
    /// Last use of each token since the last flush (token id → time); flushed to the
    /// store periodically instead of costing an fsync per request.
    token_uses: Mutex<HashMap<String, String>>,
    request_ids: AtomicU64,
    pub metrics: metrics::Metrics,
    /// The migration state machine; also decides whether SCIM writes are accepted.
    pub migration: Arc<crate::migrate::service::Migration>,
    /// Admin sessions, login throttling and background migration jobs (in memory).
    pub admin: admin::AdminState,
    /// The last SCIM requests with their outcome, for the admin dashboard.
    pub activity: admin::activity::Activity,
    /// Attributes no schema defines that requests named: refused or dropped, counted.
    pub unknown: Arc<unknown::UnknownLedger>,
}

impl AppState {
    pub fn new(
        store: Store,
        config: Config,
        certs: Option<Arc<tls::CertStore>>,
        migration: Arc<crate::migrate::service::Migration>,
    ) -> Self {
        AppState {
            migration,
            store,
            certs,
            started: Instant::now(),
            token_uses: Mutex::new(HashMap::new()),
            request_ids: AtomicU64::new(1),
            metrics: metrics::Metrics::default(),
            admin: admin::AdminState::default(),
            activity: admin::activity::Activity::default(),
            unknown: Arc::new(unknown::UnknownLedger::new(config.scim.unknown_attributes)),
            config,
        }
    }

    /// A token's last use not yet flushed to the store.
    pub fn pending_token_use(&self, token_id: &str) -> Option<String> {
        self.token_uses.lock().ok()?.get(token_id).cloned()
    }

    pub fn note_token_use(&self, token_id: &str, now: &str) {
        if let Ok(mut m) = self.token_uses.lock() {
            match m.get_mut(token_id) {
                // Same second: nothing worth an allocation on the hot path.
                Some(t) if t.get(..19) == now.get(..19) => {}
                Some(t) => now.clone_into(t),
                None => {
                    m.insert(token_id.to_owned(), now.to_owned());
                }
            }
        }
    }

    /// Writes the pending token-use times to the store.
    pub async fn flush_token_uses(&self) {
        let uses: Vec<(String, String)> = match self.token_uses.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => return,
        };
        if uses.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_token_use(uses).await {
            tracing::warn!(error = %e, "could not record token use");
        }
    }
}

/// Current time as RFC 3339 UTC with milliseconds, and as Unix milliseconds.
pub fn now() -> (String, u64) {
    let t = time::OffsetDateTime::now_utc();
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as u64;
    let t = t.replace_millisecond(t.millisecond()).unwrap_or(t);
    let s = t
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into());
    (s, ms)
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
    if let Some(expected) = &state.config.metrics_token {
        let given = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !crate::auth::secrets_equal(given, expected) {
            let mut r = plain(StatusCode::UNAUTHORIZED, "metrics need the metrics token\n");
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"scimbridge-metrics\""),
            );
            return r;
        }
    }
    let mut gauges: Vec<(&str, &str, f64)> = Vec::new();
    if let Ok(snap) = state.store.snapshot() {
        use crate::scim::schema::ResourceType;
        let users = snap.count(ResourceType::User).unwrap_or(0) as f64;
        let groups = snap.count(ResourceType::Group).unwrap_or(0) as f64;
        gauges.push(("scimbridge_users", "Users in the directory.", users));
        gauges.push(("scimbridge_groups", "Groups in the directory.", groups));
    }
    gauges.push((
        "scimbridge_database_size_bytes",
        "Size of the database file.",
        state.store.file_size() as f64,
    ));
    gauges.push((
        "scimbridge_uptime_seconds",
        "Seconds since the server started.",
        state.started.elapsed().as_secs_f64(),
    ));
    if let Some(info) = state
        .certs
        .as_ref()
        .and_then(|c| x509::parse(&c.leaf_der()))
    {
        gauges.push((
            "scimbridge_tls_certificate_expiry_timestamp_seconds",
            "Unix time at which the served certificate expires.",
            info.not_after as f64,
        ));
    }
    let mut text = state.metrics.render(&gauges);
    let (refused, dropped) = state.unknown.totals();
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
        _ if is_admin_path && admin::served_on(&state.config, listener) => {
            admin::handle(&state, req).await
        }
        _ if listener == Listener::Admin => plain(
            StatusCode::NOT_FOUND,
            "not found; this listener serves only the admin page at /admin\n",
        ),
        "/healthz" => plain(StatusCode::OK, "ok\n"),
        "/readyz" => match state.store.check_writable().await {
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
