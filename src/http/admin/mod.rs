//! The admin page below `/admin`: first-run password setup, sign-in, and pages for
//! tokens, the directory (read-only), recent activity, health and the migration.
//! Routing and handlers live here; HTML is in `pages`, sessions/CSRF/throttling in
//! `session`. Server-rendered, no external asset, one small script (the copy
//! button); every response carries a strict Content-Security-Policy.
//!
//! Credentials are separate from SCIM: a SCIM bearer token never signs in here and
//! the admin cookie is never looked at by the SCIM endpoints.

pub(crate) mod activity;
mod fragments;
mod liveness;
pub(crate) mod pages;
pub(crate) mod session;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, Body, Listener, RequestBody};
use crate::app::admin::{self as credentials, CredentialError, FirstRun};
use crate::app::audit::{Caller, Entry, ExportFormat};
use crate::app::tokens::{self, IssueRequest, RevokeWhich, TokenError, TokenState, MAX_TOKEN_DAYS};
use crate::app::{Paging, Query, Resource};
use crate::clock::Timestamp;
use crate::config::Config;
use crate::migrate::error::MigrateError;
use crate::migrate::policy::{PolicyChange, PolicyField, PolicyValue, PolicyView};
use crate::migrate::readiness::LastCheck;
use crate::migrate::report::{unverified, Progress, PushOutcome};
use crate::migrate::service::{Migration, PushRequest};
use crate::scim::query::ListParams;
use crate::scim::resource::Projection;
use crate::scim::schema::{ResourceType, ENTERPRISE_USER_URN};
use crate::secret::Secret;
use crate::store::{AuditOutcome, Scope, SetupRefusal, StoreError};
use pages::{Chrome, JobOutcome, ListQuery, MessageView};
use session::{Flash, SignedIn};

const COOKIE: &str = "scimbridge_admin";
const STYLE_CSS: &str = include_str!("../../admin/static/style.css");
const COPY_JS: &str = include_str!("../../admin/static/copy.js");
/// Largest form accepted (a CA bundle fits).
const MAX_FORM_BYTES: usize = 256 * 1024;
/// Rows per page in the Users and Groups views.
const PAGE_SIZE: usize = 50;
/// Members shown per page on a group's page.
const MEMBERS_PAGE_SIZE: usize = 100;
/// Entries per page on the Activity page.
const ACTIVITY_PAGE_SIZE: usize = 50;

const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// A migration step that runs in the background, started from the page.
enum JobKind {
    Push(PushRequest),
    /// With the target's token for this run after the cut-over (never stored).
    Verify(Option<Secret>),
    Cutover,
}

impl JobKind {
    fn name(&self) -> &'static str {
        match self {
            JobKind::Push(r) if r.dry_run => "Push (dry run)",
            JobKind::Push(_) => "Push",
            JobKind::Verify(_) => "Verification",
            JobKind::Cutover => "Cut-over",
        }
    }
}

struct Job {
    kind: &'static str,
    started: Timestamp,
    progress: Option<Progress>,
    finished: Option<Timestamp>,
    outcome: Option<Result<JobOutcome, String>>,
}

/// The admin page's state, in memory.
pub(crate) struct AdminState {
    pub sessions: session::Sessions,
    pub throttle: session::Throttle,
    /// Password hashing is slow on purpose; at most two at once so that sign-in
    /// attempts cannot take every core from SCIM traffic.
    hashing: tokio::sync::Semaphore,
    /// The last background migration job.
    job: Arc<Mutex<Option<Job>>>,
    /// ((last event sequence, users) when counted, inactive users): counting inactive
    /// users needs a scan, reused until the directory changes.
    user_counts: Mutex<Option<((u64, u64), u64)>>,
}

impl Default for AdminState {
    fn default() -> Self {
        AdminState {
            sessions: Default::default(),
            throttle: Default::default(),
            hashing: tokio::sync::Semaphore::new(2),
            job: Arc::new(Mutex::new(None)),
            user_counts: Mutex::new(None),
        }
    }
}

/// Whether `/admin` is served on this listener.
pub(crate) fn served_on(config: &Config, listener: Listener) -> bool {
    config.admin.enabled && (listener == Listener::Admin) == config.admin.listen.is_some()
}

/// At server start: remembers the URLs and, while no admin account can sign in, logs
/// a one-time link that creates the first one (unless a link printed by
/// `admin reset-password` or `admin add` is pending).
pub(crate) async fn announce(state: &AppState, admin_url: &str, scim_url: &str) {
    let _ = state.scim_url.set(scim_url.to_owned());
    if !state.app.config.admin.enabled {
        return;
    }
    tracing::info!("admin page: {admin_url}");
    match credentials::first_run(&state.app.store, admin_url.to_owned(), Timestamp::now()).await {
        Ok(FirstRun::PasswordSet) => {}
        Ok(FirstRun::ResetPending) => tracing::info!(
            "no admin account can sign in yet; use the setup link printed by `scimbridge admin \
             reset-password` or `admin add` (or run it again for a new one)"
        ),
        Ok(FirstRun::Issued(code)) => tracing::info!(
            "no admin account is set up yet: within an hour, open {admin_url}/setup?code={} to \
             create the first one (the link works once; `scimbridge admin reset-password` prints \
             a new one)",
            // The log is where a first-run code is meant to be read.
            code.expose()
        ),
        Err(e) => tracing::warn!(error = %e, "no admin setup code"),
    }
}

// ---- errors ------------------------------------------------------------------------

/// The one place where the application layer's errors become page text: refusals
/// read as they are; storage failures are logged and shown without internals.
trait PageMessage {
    fn page_message(self) -> String;
}

impl PageMessage for StoreError {
    fn page_message(self) -> String {
        super::store_error(self).detail
    }
}

impl PageMessage for TokenError {
    fn page_message(self) -> String {
        match self {
            TokenError::Store(e) => e.page_message(),
            e => e.to_string(),
        }
    }
}

impl PageMessage for MigrateError {
    fn page_message(self) -> String {
        match self {
            MigrateError::Store(e) => e.page_message(),
            e => e.to_string(),
        }
    }
}

// ---- responses -------------------------------------------------------------------

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn html(status: StatusCode, page: String) -> Response<Body> {
    response(status, "text/html; charset=utf-8", page)
}

fn redirect(location: &str) -> Response<Body> {
    let mut r = response(StatusCode::SEE_OTHER, "text/plain; charset=utf-8", "");
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// The page for a store that cannot answer (the reason is logged by `store_error`).
fn unavailable(e: StoreError) -> Response<Body> {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        &e.page_message(),
    )
}

fn refuse(status: StatusCode, title: &str, text: &str) -> Response<Body> {
    html(
        status,
        pages::message(&MessageView {
            title,
            text,
            link: Some(("/admin", "Back to the admin page")),
        }),
    )
}

fn security_headers(r: &mut Response<Body>) {
    let h = r.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        h.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
}

/// Whether the session cookie is marked `Secure` (RFC 6265 §4.1.2.5: the browser sends
/// it only over HTTPS): when this listener speaks TLS; when a trusted proxy says the
/// browser's request came to it over HTTPS (`X-Forwarded-Proto`, believed only from
/// `trusted_proxies`); and when `public_url` is https, as the README's reverse-proxy
/// setup has it (browsers keep a Secure cookie on http://127.0.0.1 and
/// http://localhost, so the admin page still works through the SSH tunnel to this
/// machine's own plain listener).
fn secure_cookie(state: &AppState, req: &Request<RequestBody>) -> bool {
    let config = &state.app.config;
    state.certs.is_some()
        || super::forwarded_https(&config.trusted_proxies, req)
        || config
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
}

fn session_cookie(secure: bool, value: &str, max_age: Option<u32>) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; HttpOnly{secure}; SameSite=Strict; Path=/admin{age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

// ---- request helpers ---------------------------------------------------------------

fn cookie(req: &Request<RequestBody>) -> Option<String> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The query string as `Q`; a query that does not fit (a repeated or malformed
/// parameter) counts as empty, as a page must still render.
fn query<Q: DeserializeOwned + Default>(req: &Request<RequestBody>) -> Q {
    serde_urlencoded::from_str(req.uri().query().unwrap_or("")).unwrap_or_default()
}

/// A form body (`application/x-www-form-urlencoded`); `None` when it is too large or
/// unreadable.
async fn form_body(req: Request<RequestBody>) -> Option<Bytes> {
    Some(
        Limited::new(req.into_body(), MAX_FORM_BYTES)
            .collect()
            .await
            .ok()?
            .to_bytes(),
    )
}

/// The form's fields as `F` (missing fields take their defaults), or the page that
/// says the form was refused.
fn parse_form<F: DeserializeOwned>(body: &[u8]) -> Result<F, Refused> {
    serde_urlencoded::from_bytes(body).map_err(|e| Refused {
        status: StatusCode::BAD_REQUEST,
        text: format!("The form could not be read ({e}); nothing was changed."),
    })
}

/// A form refused before it ran; shown as the "Refused" page.
struct Refused {
    status: StatusCode,
    text: String,
}

impl From<Refused> for Response<Body> {
    fn from(r: Refused) -> Self {
        refuse(r.status, "Refused", &r.text)
    }
}

// ---- forms and queries ---------------------------------------------------------------

/// The field every signed-in form carries.
#[derive(Deserialize)]
struct CsrfField {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginForm {
    name: String,
    password: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SetupForm {
    code: String,
    /// The account's name, asked only by the first account's link.
    name: String,
    password: String,
    confirm: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct SetupQuery {
    code: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct LoginQuery {
    setup: Option<String>,
    signed_out: Option<String>,
    /// After setup: the account whose password was just set, prefilled so that the
    /// admin types only the password.
    name: Option<String>,
}

/// The token form: a name, a scope and an optional expiry in days (empty: never).
#[derive(Deserialize, Default)]
#[serde(default)]
struct IssueForm {
    name: String,
    scope: String,
    expires_days: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RevokeForm {
    id: String,
    /// `yes` from the confirmation page; without it the page asks first.
    confirm: String,
}

/// The Rotate button of a token's row.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RotateForm {
    id: String,
}

/// The migration policy form: each field's text box, one value per line (domains
/// may also be separated by commas). A field left as it was is not stored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct PolicyForm {
    allowed_domains: Option<String>,
    public_domains: Option<String>,
    protected_groups: Option<String>,
}

impl PolicyForm {
    /// The change the form asks for: every field it carries.
    fn change(self) -> PolicyChange {
        let split = |text: Option<String>, commas: bool| -> Option<Vec<String>> {
            let text = text?;
            let sep = |c: char| c == '\n' || c == '\r' || (commas && c == ',');
            Some(
                text.split(sep)
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned)
                    .collect(),
            )
        };
        PolicyChange {
            allowed_domains: split(self.allowed_domains, true),
            public_domains: split(self.public_domains, true),
            protected_groups: split(self.protected_groups, false),
        }
    }
}

/// `change` without the fields whose (normalised) values are what applies now, so
/// that saving the form stores only what the admin changed.
fn only_changed(change: PolicyChange, now: &PolicyView) -> PolicyChange {
    let changed = |new: Option<Vec<String>>, old: &PolicyValue| new.filter(|n| *n != old.value);
    PolicyChange {
        allowed_domains: changed(change.allowed_domains, &now.allowed_domains),
        public_domains: changed(change.public_domains, &now.public_domains),
        protected_groups: changed(change.protected_groups, &now.protected_groups),
    }
}

#[derive(Deserialize)]
struct PolicyResetForm {
    field: PolicyField,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PushForm {
    target: String,
    token: String,
    cacert: String,
    /// Present (any value) when the dry-run box is ticked.
    dry_run: Option<String>,
    /// Present (any value) when "omit unsupported attributes" is ticked.
    omit_unsupported: Option<String>,
}

/// The verify form: after the cut-over it carries the target's token for the run.
#[derive(Deserialize, Default)]
#[serde(default)]
struct VerifyForm {
    token: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CutoverForm {
    confirm: String,
}

/// True when the browser says the request comes from another site. SameSite=Strict
/// and the CSRF token are the main defence; this also covers the forms that have no
/// session yet (sign-in, setup). `Sec-Fetch-Site` decides when present; `Origin` is
/// only a fallback, and its value `null` (what browsers send on a form POST from a
/// page with `Referrer-Policy: no-referrer`, i.e. ours) says nothing either way.
fn cross_site(req: &Request<RequestBody>) -> bool {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = header("sec-fetch-site") {
        return site != "same-origin" && site != "none";
    }
    if let Some(origin) = header("origin").filter(|o| *o != "null") {
        let host = header("host").or_else(|| req.uri().authority().map(|a| a.as_str()));
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        return origin_host.is_none() || origin_host != host;
    }
    false
}

fn client_ip(req: &Request<RequestBody>) -> IpAddr {
    super::client_of(req)
}

/// The parts of a signed-in page that come from the session.
fn chrome<'a>(me: &'a SignedIn, title: &'a str, active: &'a str) -> Chrome<'a> {
    Chrome {
        title,
        active,
        csrf: me.csrf(),
        flash: me.flash(),
    }
}

// ---- entry -------------------------------------------------------------------------

/// Serves one request below `/admin`.
pub(crate) async fn handle(state: &Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let mut r = dispatch(state, req).await;
    security_headers(&mut r);
    r
}

async fn dispatch(state: &Arc<AppState>, req: Request<RequestBody>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/admin/static/style.css") => {
            return response(StatusCode::OK, "text/css; charset=utf-8", STYLE_CSS)
        }
        (&Method::GET, "/admin/static/copy.js") => {
            return response(StatusCode::OK, "text/javascript; charset=utf-8", COPY_JS)
        }
        (&Method::GET, "/admin/setup") => return setup_form(state, &req).await,
        (&Method::POST, "/admin/setup") => return setup_submit(state, req).await,
        (&Method::GET, "/admin/login") => return login_form(state, &req),
        (&Method::POST, "/admin/login") => return login_submit(state, req).await,
        _ => {}
    }
    let now = Instant::now();
    let me = cookie(&req).and_then(|id| {
        let store = &state.app.store;
        (state.admin.sessions).signed_in(&id, now, |c| credentials::still_current(store, c))
    });
    let Some(me) = me else {
        return if method == Method::GET || method == Method::HEAD {
            redirect("/admin/login")
        } else {
            refuse(
                StatusCode::FORBIDDEN,
                "Sign in first",
                "Your session has ended or you are not signed in; nothing was changed.",
            )
        };
    };
    if method == Method::POST {
        return signed_in_post(state, &me, &path, req, now)
            .await
            .unwrap_or_else(Response::from);
    }
    if method != Method::GET && method != Method::HEAD {
        return refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "Not allowed",
            "This method is not used by the admin page.",
        );
    }
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["admin"] => dashboard(state, &req, chrome(&me, "Dashboard", "dashboard")).await,
        ["admin", "tokens"] => html(
            StatusCode::OK,
            pages::tokens(
                &chrome(&me, "Tokens", "tokens"),
                &pages::TokensView {
                    rows: &token_rows(state),
                    now: Timestamp::now(),
                    issued: None,
                    error: None,
                },
            ),
        ),
        ["admin", "users"] => {
            list(
                state,
                ResourceType::User,
                query(&req),
                chrome(&me, "Users", "users"),
            )
            .await
        }
        ["admin", "groups"] => {
            list(
                state,
                ResourceType::Group,
                query(&req),
                chrome(&me, "Groups", "groups"),
            )
            .await
        }
        ["admin", "users", id] => {
            detail(
                state,
                ResourceType::User,
                id,
                query(&req),
                chrome(&me, "User", "users"),
            )
            .await
        }
        ["admin", "groups", id] => {
            detail(
                state,
                ResourceType::Group,
                id,
                query(&req),
                chrome(&me, "Group", "groups"),
            )
            .await
        }
        ["admin", "activity"] => {
            activity_page(state, query(&req), chrome(&me, "Activity", "activity")).await
        }
        ["admin", "activity.csv"] => activity_export(state, query(&req), ExportFormat::Csv).await,
        ["admin", "activity.jsonl"] => {
            activity_export(state, query(&req), ExportFormat::JsonLines).await
        }
        ["admin", "migration"] => migration_page(
            state,
            chrome(&me, "Migration to hosted provisioning", "migration"),
        ),
        _ => refuse(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such admin page.",
        ),
    }
}

/// A state-changing form from a signed-in admin: same site, readable, carrying the
/// session's CSRF token; then parsed into its form struct and run.
async fn signed_in_post(
    state: &Arc<AppState>,
    me: &SignedIn,
    path: &str,
    req: Request<RequestBody>,
    now: Instant,
) -> Result<Response<Body>, Refused> {
    let who = Caller::admin(me.account(), client_ip(&req));
    let secure = secure_cookie(state, &req);
    if cross_site(&req) {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            text: "This form was sent from another site; nothing was changed.".into(),
        });
    }
    let Some(body) = form_body(req).await else {
        return Err(Refused {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            text: "The form is too large or could not be read; nothing was changed.".into(),
        });
    };
    let csrf = serde_urlencoded::from_bytes::<CsrfField>(&body).map(|f| f.csrf);
    if !state
        .admin
        .sessions
        .csrf_ok(me.id(), csrf.as_deref().ok(), now)
    {
        return Err(Refused {
            status: StatusCode::FORBIDDEN,
            text: "The form's security token is missing or wrong (the page may be stale, or the \
                   form came from elsewhere); nothing was changed. Reload the page and try again."
                .into(),
        });
    }
    Ok(match path {
        "/admin/logout" => {
            state.app.audit(&who, Entry::new("admin.sign_out")).await;
            state.admin.sessions.remove(me.id());
            let mut r = redirect("/admin/login?signed_out=1");
            r.headers_mut().insert(
                hyper::header::SET_COOKIE,
                session_cookie(secure, "", Some(0)),
            );
            r
        }
        "/admin/tokens" => {
            let f = parse_form(&body)?;
            issue_token(state, &who, f, chrome(me, "Tokens", "tokens")).await
        }
        "/admin/tokens/rotate" => {
            let f: RotateForm = parse_form(&body)?;
            rotate_token(state, &who, f.id, chrome(me, "Tokens", "tokens")).await
        }
        "/admin/tokens/revoke" => {
            let f: RevokeForm = parse_form(&body)?;
            if f.confirm != "yes" {
                return Ok(confirm_revoke(
                    state,
                    f.id,
                    chrome(me, "Revoke a token", "tokens"),
                ));
            }
            let msg = revoke_token(state, &who, f.id).await;
            state.admin.sessions.set_flash(me.id(), msg);
            redirect("/admin/tokens")
        }
        "/admin/tokens/quiet" => {
            let f: QuietForm = parse_form(&body)?;
            let msg = set_quiet_after(state, &who, f).await;
            state.admin.sessions.set_flash(me.id(), msg);
            redirect("/admin/tokens")
        }
        p if p.starts_with("/admin/migration/") => {
            let msg = migration_action(state, &who, &p["/admin/migration/".len()..], &body).await?;
            state.admin.sessions.set_flash(me.id(), msg);
            redirect("/admin/migration")
        }
        _ => refuse(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such admin action.",
        ),
    })
}

// ---- setup and sign-in -------------------------------------------------------------

fn setup_refused(why: SetupRefusal) -> Response<Body> {
    let text = match why {
        SetupRefusal::Expired => "This setup link has expired.",
        SetupRefusal::Unknown => "This setup link is not valid: it was already used, replaced by a newer one, or mistyped.",
    };
    html(
        StatusCode::FORBIDDEN,
        pages::message(&MessageView {
            title: "Setup link refused",
            text: &format!(
                "{text} Run `scimbridge admin reset-password NAME` on the server for a new link \
                 (NAME may be left out when there is only one account)."
            ),
            link: Some(("/admin/login", "Sign in")),
        }),
    )
}

fn throttled(wait: Duration) -> Response<Body> {
    let secs = wait.as_secs().max(1);
    let mut r = html(
        StatusCode::TOO_MANY_REQUESTS,
        pages::message(&MessageView {
            title: "Too many failed attempts",
            text: &format!(
                "Too many failed attempts from your address ({} in {} minutes; after that one \
                 attempt a minute). Wait {secs} second{} and try again. On the server, \
                 `scimbridge admin reset-password NAME` always works.",
                session::FAILURES_PER_ADDRESS,
                session::THROTTLE_WINDOW.as_secs() / 60,
                if secs == 1 { "" } else { "s" }
            ),
            link: None,
        }),
    );
    r.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// A wrong setup code: counted against the address (the code cannot be guessed;
/// this only bounds the noise), answered after the failure delay.
async fn setup_code_refused(state: &AppState, ip: IpAddr, why: SetupRefusal) -> Response<Body> {
    match state.admin.throttle.reserve(ip, Instant::now()) {
        Ok(r) => {
            tokio::time::sleep(session::FAILURE_DELAY).await;
            r.failed(Instant::now());
            tracing::warn!(client = %ip, "admin setup link refused");
            setup_refused(why)
        }
        Err(wait) => {
            tracing::warn!(client = %ip, "admin setup throttled");
            throttled(wait)
        }
    }
}

/// The pending code's account (`None`: the first account's link).
fn check_setup_code(state: &AppState, code: &str) -> Result<Option<String>, SetupRefusal> {
    credentials::check_setup_code(&state.app.store, code, Timestamp::now()).map(|c| c.account)
}

async fn setup_form(state: &AppState, req: &Request<RequestBody>) -> Response<Body> {
    let ip = client_ip(req);
    let q: SetupQuery = query(req);
    let code = q.code.as_str();
    // A valid code is never throttled: it cannot be guessed, and whoever holds it
    // must not be locked out by someone else's failures.
    match check_setup_code(state, code) {
        Ok(account) => html(
            StatusCode::OK,
            pages::setup(&pages::SetupView {
                code,
                account: account.as_deref(),
                name: credentials::FIRST_ACCOUNT,
                error: None,
            }),
        ),
        Err(why) => setup_code_refused(state, ip, why).await,
    }
}

/// What the forms of signed-out visitors (setup, sign-in) share: a same-site check
/// and a readable body.
async fn public_form<F: DeserializeOwned>(
    req: Request<RequestBody>,
) -> Result<(IpAddr, F), Response<Body>> {
    let ip = client_ip(&req);
    if cross_site(&req) {
        return Err(refuse(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form was sent from another site.",
        ));
    }
    match form_body(req).await {
        Some(body) => Ok((ip, parse_form(&body).map_err(Response::from)?)),
        None => Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Refused",
            "The form could not be read.",
        )),
    }
}

async fn setup_submit(state: &AppState, req: Request<RequestBody>) -> Response<Body> {
    let (ip, f): (_, SetupForm) = match public_form(req).await {
        Ok(x) => x,
        Err(refused) => return refused,
    };
    let code = f.code.as_str();
    let account = match check_setup_code(state, code) {
        Ok(account) => account,
        Err(why) => return setup_code_refused(state, ip, why).await,
    };
    let Ok(_permit) = state.admin.hashing.acquire().await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The server is shutting down.",
        );
    };
    let set = credentials::set_password(
        &state.app.store,
        code,
        &f.name,
        f.password.clone(),
        &f.confirm,
        Timestamp::now(),
    )
    .await;
    match set {
        Ok(name) => {
            // The account's other sessions end on their next request (their password
            // is no longer current); every throttle ends.
            state.admin.throttle.clear();
            let entry = Entry::new("admin.set_password").on("AdminAccount", None, Some(&name));
            state.app.audit(&Caller::admin(&name, ip), entry).await;
            // The sign-in page names the account just set (as stored: trimmed and
            // lowercased), so the admin types only the password.
            redirect(&format!(
                "/admin/login?setup=done&name={}",
                pages::segment(&name)
            ))
        }
        Err(
            e @ (CredentialError::WeakPassword(_)
            | CredentialError::InvalidName
            | CredentialError::Exists(_)),
        ) => {
            let mut msg = e.to_string();
            if let Some(first) = msg.get_mut(..1) {
                first.make_ascii_uppercase();
            }
            html(
                StatusCode::BAD_REQUEST,
                pages::setup(&pages::SetupView {
                    code,
                    account: account.as_deref(),
                    name: &f.name,
                    error: Some(&format!("{msg}.")),
                }),
            )
        }
        Err(CredentialError::Refused(why)) => setup_refused(why),
        Err(CredentialError::Store(e)) => unavailable(e),
        Err(
            e @ (CredentialError::NoSuchAccount(_)
            | CredentialError::LastAccount(_)
            | CredentialError::NameNeeded(_)),
        ) => refuse(StatusCode::CONFLICT, "Refused", &e.to_string()),
        Err(CredentialError::Random | CredentialError::Hashing) => refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The password could not be hashed (the random generator failed); try again.",
        ),
    }
}

fn login_form(state: &AppState, req: &Request<RequestBody>) -> Response<Body> {
    let q: LoginQuery = query(req);
    // Only the redirect after setup names an account; bounded like a typed name.
    let name: String = match (&q.setup, &q.name) {
        (Some(_), Some(n)) => n.trim().chars().take(credentials::MAX_NAME_CHARS).collect(),
        _ => String::new(),
    };
    let notice = match (q.setup.is_some(), name.is_empty()) {
        (true, true) => {
            Some("The password is set. Sign in with the account's name and the new password.")
        }
        (true, false) => Some("The password is set. Sign in with the new password."),
        (false, _) if q.signed_out.is_some() => Some("You are signed out."),
        (false, _) => None,
    };
    html(
        StatusCode::OK,
        pages::login(&pages::LoginView {
            error: None,
            notice,
            name: &name,
            password_set: credentials::password_is_set(&state.app.store),
        }),
    )
}

async fn login_submit(state: &AppState, req: Request<RequestBody>) -> Response<Body> {
    let secure = secure_cookie(state, &req);
    let (ip, f): (_, LoginForm) = match public_form(req).await {
        Ok(x) => x,
        Err(refused) => return refused,
    };
    // Reserved before the password is checked: concurrent guesses count at once.
    let reservation = match state.admin.throttle.reserve(ip, Instant::now()) {
        Ok(r) => r,
        Err(wait) => {
            tracing::warn!(client = %ip, "admin sign-in throttled");
            let entry = Entry::new("admin.sign_in").refused("throttled: too many failed attempts");
            state
                .app
                .audit(&Caller::admin("(unknown)", ip), entry)
                .await;
            return throttled(wait);
        }
    };
    let password = f.password;
    // Named in the audit of a failed attempt (as typed, bounded: it is not an account).
    let tried: String = f
        .name
        .trim()
        .chars()
        .take(credentials::MAX_NAME_CHARS)
        .collect();
    let Ok(_permit) = state.admin.hashing.acquire().await else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The server is shutting down.",
        );
    };
    let checked = credentials::verify_password(&state.app.store, &f.name, password).await;
    let credential = match checked {
        Ok(Some(c)) => c,
        Ok(None) => {
            tokio::time::sleep(session::FAILURE_DELAY).await;
            reservation.failed(Instant::now());
            tracing::warn!(client = %ip, account = tried.as_str(), "admin sign-in failed");
            let entry = Entry::new("admin.sign_in")
                .on("AdminAccount", None, Some(&tried))
                .refused("wrong name or password");
            state
                .app
                .audit(&Caller::admin("(unknown)", ip), entry)
                .await;
            return html(
                StatusCode::UNAUTHORIZED,
                pages::login(&pages::LoginView {
                    error: Some("Wrong name or password."),
                    notice: None,
                    name: &tried,
                    password_set: credentials::password_is_set(&state.app.store),
                }),
            );
        }
        Err(e) => return unavailable(e),
    };
    reservation.succeeded();
    let account = credential.account.clone();
    let Ok(id) = state.admin.sessions.create(Instant::now(), credential) else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "Unavailable",
            "The operating system's random generator failed; try again.",
        );
    };
    state
        .app
        .audit(
            &Caller::admin(&account, ip),
            Entry::new("admin.sign_in").on("AdminAccount", None, Some(&account)),
        )
        .await;
    let mut r = redirect("/admin");
    r.headers_mut()
        .insert(hyper::header::SET_COOKIE, session_cookie(secure, &id, None));
    r
}

// ---- dashboard ---------------------------------------------------------------------

fn scim_url(state: &AppState, req: &Request<RequestBody>) -> String {
    if let Some(u) = &state.app.config.public_url {
        return format!("{u}{}", super::SCIM_PREFIX);
    }
    // The admin's own Host is shown back to the admin (it names the server as the
    // admin reaches it); SCIM answers never use a Host header.
    let on_main = !matches!(
        req.extensions().get::<super::ConnInfo>(),
        Some(c) if c.listener == Listener::Admin
    );
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()));
    match (on_main, host) {
        (true, Some(h)) => {
            let scheme = if state.certs.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{h}{}", super::SCIM_PREFIX)
        }
        _ => state.scim_base(),
    }
}

/// (users, inactive users), from a scan reused while no change event was recorded.
async fn user_counts(state: &Arc<AppState>) -> (u64, u64) {
    let version = state
        .app
        .store
        .snapshot()
        .and_then(|s| Ok((s.last_event_seq()?, s.count(ResourceType::User)?)))
        .ok();
    if let (Ok(c), Some(version)) = (state.admin.user_counts.lock(), version) {
        if let Some((at, inactive)) = *c {
            if at == version {
                return (version.1, inactive);
            }
        }
    }
    let store = state.app.store.clone();
    let counted = tokio::task::spawn_blocking(move || {
        let snap = store.snapshot()?;
        let seq = snap.last_event_seq()?;
        let users = snap.count(ResourceType::User)?;
        let mut inactive = 0u64;
        snap.scan(ResourceType::User, |r| {
            if r.attrs.get("active") == Some(&Value::Bool(false)) {
                inactive += 1;
            }
            Ok(true)
        })?;
        Ok::<_, crate::store::StoreError>((seq, users, inactive))
    })
    .await;
    match counted {
        Ok(Ok((seq, users, inactive))) => {
            if let Ok(mut c) = state.admin.user_counts.lock() {
                *c = Some(((seq, users), inactive));
            }
            (users, inactive)
        }
        _ => (0, 0),
    }
}

async fn dashboard(
    state: &Arc<AppState>,
    req: &Request<RequestBody>,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let (users, inactive_users) = user_counts(state).await;
    let now = Timestamp::now();
    let snap = match state.app.store.snapshot() {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let migration = snap.migration_state().unwrap_or_default();
    let cert = state
        .certs
        .as_ref()
        .and_then(|c| c.view(now))
        .map(|v| pages::CertSummary::new(&v, now));
    let tokens = state.app.token_liveness(now).unwrap_or_default();
    let mut attention: Vec<_> = cert
        .iter()
        .filter_map(|c| liveness::cert_attention(c.left, &c.not_after))
        .collect();
    attention.extend(liveness::token_attention(&tokens));
    // A name's secrets share its scope (a rotation keeps it); a name reused with the
    // other scope has no one scope to name its holders by.
    let scope_of = |name: &str| {
        let mut scopes = tokens
            .iter()
            .filter(|(t, _)| t.name == name)
            .map(|(t, _)| t.scope);
        let first = scopes.next()?;
        scopes.all(|s| s == first).then_some(first)
    };
    attention.extend(liveness::turned_away_attention(
        state.app.liveness.invalid_tokens(now).as_ref(),
        state.app.liveness.throttled(now).as_ref(),
        scope_of,
    ));
    attention.sort_by_key(|a| !a.error);
    // The last changes as the audit has them: names as they were, who in words.
    let done = crate::app::audit::AuditFilter {
        outcome: "done".to_owned(),
        ..Default::default()
    };
    let changes = state.app.audit_newest(&done, 25).unwrap_or_default();
    let gone = gone_in(&snap, &changes);
    // Every request is on the chart: each token's, and those with no recognised
    // token (the same requests the turned-away entry counts for the last hour).
    let unrecognised = state.app.liveness.unrecognised_hourly(now);
    let mut traffic = crate::app::liveness::combined(tokens.iter().map(|(_, l)| l));
    let mut traffic_unrecognised = crate::store::OutcomeCounts::default();
    for (sum, h) in traffic.iter_mut().zip(&unrecognised) {
        sum.merge(h);
        traffic_unrecognised.merge(h);
    }
    let d = pages::Dashboard {
        attention,
        traffic,
        traffic_by_token: liveness::token_days(&tokens),
        traffic_unrecognised,
        now,
        scim_url: scim_url(state, req),
        users,
        inactive_users,
        groups: snap.count(ResourceType::Group).unwrap_or(0),
        active_tokens: tokens
            .iter()
            .filter(|(t, _)| t.state == TokenState::Active)
            .count(),
        requests: recent_requests(state, &snap),
        changes,
        gone,
        version: crate::version::VERSION,
        uptime: state.started.elapsed(),
        db_bytes: state.app.store.file_size(),
        cert,
        tls_on: state.certs.is_some(),
        phase: migration.phase,
        migration_error: crate::migrate::service::error_line(&migration),
        last_verify: migration.last_verify.as_ref().map(|v| (v.at, v.count)),
        target: migration.target,
        unknown: state
            .app
            .unknown
            .entries()
            .into_iter()
            .map(|e| pages::UnknownRow {
                resource_type: e.rt.name(),
                declaration: crate::app::unknown::declaration(&e),
                count: e.count,
                action: e.last_action.as_str(),
                last_seen: e.last_seen.to_rfc3339(),
                name: e.name,
            })
            .collect(),
        unknown_policy: match state.app.unknown.policy() {
            crate::scim::resource::UnknownAttributes::Reject => "reject",
            crate::scim::resource::UnknownAttributes::Drop => "drop",
        },
    };
    html(StatusCode::OK, pages::dashboard(&chrome, &d))
}

// ---- tokens ------------------------------------------------------------------------

fn token_rows(state: &AppState) -> Vec<pages::TokenRow> {
    let mut list = state
        .app
        .token_liveness(Timestamp::now())
        .unwrap_or_default();
    // Active first, then newest first.
    list.sort_by(|(a, _), (b, _)| {
        (a.state != TokenState::Active, &b.created)
            .cmp(&(b.state != TokenState::Active, &a.created))
    });
    list.into_iter()
        .map(|(t, liveness)| pages::TokenRow {
            state: t.state.as_str(),
            liveness,
            record: t,
        })
        .collect()
}

/// Asks before revoking: whatever uses the token (an identity provider, a reading
/// tool) is refused from its next request.
fn confirm_revoke(state: &AppState, id: String, chrome: Chrome<'_>) -> Response<Body> {
    let found = tokens::list(&state.app.store, Timestamp::now())
        .ok()
        .and_then(|l| l.into_iter().find(|t| t.id == id));
    match found {
        Some(t) => html(
            StatusCode::OK,
            pages::confirm_revoke(
                &chrome,
                &pages::ConfirmRevokeView {
                    last_used: state.app.pending_token_use(&t.id).or(t.last_used),
                    token: &t,
                },
            ),
        ),
        None => refuse(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such token; nothing was changed.",
        ),
    }
}

/// The quiet-time alarm form of one token: `off`/empty or a duration (`6h`).
#[derive(Deserialize)]
struct QuietForm {
    id: String,
    #[serde(default)]
    quiet_after: String,
}

/// Sets a token's quiet-time alarm; audited (`token.quiet_alarm`) with the value.
async fn set_quiet_after(state: &AppState, who: &Caller, f: QuietForm) -> Flash {
    let entry = Entry::new("token.quiet_alarm");
    let set = match tokens::parse_quiet_after(&f.quiet_after) {
        Ok(minutes) => {
            tokens::set_quiet_after(&state.app.store, f.id.clone(), minutes, Timestamp::now()).await
        }
        Err(e) => Err(e),
    };
    let (msg, entry) = match set {
        Ok(t) => {
            let (what, value) = match t.quiet_after_minutes.map(tokens::quiet_after_text) {
                Some(v) => (format!("warns when it has sent nothing for {v}"), v),
                None => ("is off".to_owned(), "off".to_owned()),
            };
            // The name as the audit shows it carries the new value.
            let shown = format!("{}: quiet alarm {value}", t.name);
            (
                Flash::Notice(format!("The quiet-time alarm of \"{}\" {what}.", t.name)),
                entry.on("Token", Some(&t.id), Some(&shown)),
            )
        }
        Err(e) => {
            let why = e.page_message();
            let entry = entry.on("Token", Some(&f.id), None).refused(why.clone());
            (Flash::Refusal(format!("Not changed: {why}")), entry)
        }
    };
    state.app.audit(who, entry).await;
    msg
}

/// The confirmed revocation of one token (by id, so one secret of a rotated name),
/// audited; returns the message for the next page.
async fn revoke_token(state: &AppState, who: &Caller, id: String) -> Flash {
    let entry = Entry::new("token.revoke");
    let revoked = tokens::revoke(
        &state.app.store,
        id.clone(),
        RevokeWhich::Only,
        Timestamp::now(),
    )
    .await
    .map(|mut v| v.pop());
    let (msg, entry) = match revoked {
        Ok(Some(t)) => (
            Flash::Notice(format!(
                "Revoked the {}token \"{}\": its next request is refused.",
                if t.superseded.is_some() {
                    "superseded "
                } else {
                    ""
                },
                t.name
            )),
            Entry::new(tokens::revoke_action(&t)).on("Token", Some(&t.id), Some(&t.name)),
        ),
        Ok(None) => (
            Flash::Refusal("Not revoked: no such token.".into()),
            entry.on("Token", Some(&id), None).refused("no such token"),
        ),
        Err(e) => {
            let why = e.page_message();
            // Named as the list names it, also when the revocation was refused.
            let name = tokens::list(&state.app.store, Timestamp::now())
                .ok()
                .and_then(|l| l.into_iter().find(|t| t.id == id))
                .map(|t| t.name);
            let entry = entry
                .on("Token", Some(&id), name.as_deref())
                .refused(why.clone());
            (Flash::Refusal(format!("Not revoked: {why}")), entry)
        }
    };
    state.app.audit(who, entry).await;
    msg
}

/// The Tokens page with the list as it is now, a secret just issued or a refusal.
fn tokens_page(
    state: &AppState,
    chrome: &Chrome<'_>,
    status: StatusCode,
    issued: Option<&pages::Issued>,
    error: Option<&str>,
) -> Response<Body> {
    let rows = token_rows(state);
    let v = pages::TokensView {
        rows: &rows,
        now: Timestamp::now(),
        issued,
        error,
    };
    html(status, pages::tokens(chrome, &v))
}

/// The Rotate button: a successor under the token's name, its secret shown once;
/// the old secret stays valid, superseded, until it is revoked.
async fn rotate_token(
    state: &AppState,
    who: &Caller,
    id: String,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let entry = Entry::new("token.rotate");
    match tokens::rotate(&state.app.store, id.clone(), Timestamp::now()).await {
        Ok((old, new)) => {
            let entry = entry.on("Token", Some(&old.id), Some(&old.name));
            state.app.audit(who, entry).await;
            let issued = pages::Issued {
                name: new.token.name,
                scope: new.token.scope,
                secret: new.secret,
                rotated: true,
                old_expired: old.expires.filter(|_| old.state == TokenState::Expired),
            };
            tokens_page(state, &chrome, StatusCode::OK, Some(&issued), None)
        }
        Err(e) => {
            let why = e.page_message();
            let entry = entry.on("Token", Some(&id), None).refused(why.clone());
            state.app.audit(who, entry).await;
            let msg = format!("Not rotated: {why}");
            tokens_page(state, &chrome, StatusCode::BAD_REQUEST, None, Some(&msg))
        }
    }
}

/// The token form: a name, a scope and an optional expiry in days.
async fn issue_token(
    state: &AppState,
    who: &Caller,
    f: IssueForm,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let entry = Entry::new("token.issue").on("Token", None, Some(&f.name));
    let refused_entry = entry.clone();
    let audit_refused = |msg: &str| state.app.audit(who, refused_entry.clone().refused(msg));
    let page = |status, issued: Option<&pages::Issued>, error: Option<&str>| {
        tokens_page(state, &chrome, status, issued, error)
    };
    let refused = |msg: &str| page(StatusCode::BAD_REQUEST, None, Some(msg));
    let scope = match f.scope.as_str() {
        "read-only" => Scope::ReadOnly,
        "read-write" | "" => Scope::ReadWrite,
        _ => {
            let msg = "Choose read-only or read-write.";
            audit_refused(msg).await;
            return refused(msg);
        }
    };
    let days = f.expires_days.trim();
    let expires_in_days = if days.is_empty() {
        None
    } else {
        match days.parse::<u32>() {
            Ok(d) if (1..=MAX_TOKEN_DAYS).contains(&d) => Some(d),
            _ => {
                let msg = format!(
                    "The expiry must be a whole number of days from 1 to {MAX_TOKEN_DAYS}, or empty for never."
                );
                audit_refused(&msg).await;
                return refused(&msg);
            }
        }
    };
    let req = IssueRequest {
        name: f.name,
        scope,
        expires_in_days,
    };
    match tokens::issue(&state.app.store, req, Timestamp::now()).await {
        Ok(t) => {
            let issued = pages::Issued {
                name: t.token.name,
                scope: t.token.scope,
                secret: t.secret,
                rotated: false,
                old_expired: None,
            };
            let entry = entry.on("Token", Some(&t.token.id), Some(&issued.name));
            state.app.audit(who, entry).await;
            page(StatusCode::OK, Some(&issued), None)
        }
        Err(e) => {
            let why = e.page_message();
            audit_refused(&why).await;
            refused(&format!("Not issued: {why}"))
        }
    }
}

// ---- users and groups --------------------------------------------------------------

/// The attributes the directory search looks in.
const USER_SEARCHED: [&str; 7] = [
    "userName",
    "displayName",
    "name.formatted",
    "name.givenName",
    "name.familyName",
    "emails.value",
    "externalId",
];
const GROUP_SEARCHED: [&str; 2] = ["displayName", "externalId"];

/// The list's search and state filter as one filter for the query engine: the text
/// is looked for in the names, emails and externalId as a person means it, case and
/// diacritics ignored (`CompareOp::Search`: "Jose" finds "José", "Muller" finds
/// "Müller"), and it finds the resource whose id it is (pasted from a log or the
/// audit). `active`: `active eq false` for inactive users, its negation for active
/// ones (a user without `active` counts as active, as its page says). `None` when
/// nothing narrows the list.
fn search_filter(
    rt: ResourceType,
    q: &str,
    active: Option<pages::ActiveFilter>,
) -> Option<crate::scim::filter::Filter> {
    use crate::scim::filter::{CompareOp, Filter};
    use crate::scim::path::AttrPath;
    let compare = |attr: &str, op: CompareOp, value: Value| {
        AttrPath::parse(attr)
            .ok()
            .map(|path| Filter::Compare { path, op, value })
    };
    let either = |a: Filter, b: Filter| Filter::Or(Box::new(a), Box::new(b));
    let text = (!q.is_empty()).then(|| {
        let searched: &[&str] = match rt {
            ResourceType::User => &USER_SEARCHED,
            ResourceType::Group => &GROUP_SEARCHED,
        };
        searched
            .iter()
            .filter_map(|a| compare(a, CompareOp::Search, Value::from(q)))
            .chain(compare("id", CompareOp::Eq, Value::from(q)))
            .reduce(either)
    });
    let state = match (rt, active) {
        (ResourceType::User, Some(pages::ActiveFilter::Inactive)) => {
            compare("active", CompareOp::Eq, Value::Bool(false))
        }
        (ResourceType::User, Some(pages::ActiveFilter::Active)) => {
            compare("active", CompareOp::Eq, Value::Bool(false)).map(|f| Filter::Not(Box::new(f)))
        }
        _ => None,
    };
    match (text.flatten(), state) {
        (Some(t), Some(s)) => Some(Filter::And(Box::new(t), Box::new(s))),
        (t, s) => t.or(s),
    }
}

async fn list(
    state: &Arc<AppState>,
    rt: ResourceType,
    q: ListQuery,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let filter = search_filter(rt, q.q.trim(), q.active);
    let (rows, matched) = match list_rows(state, rt, filter, &q).await {
        Ok(x) => x,
        Err(e) => return unavailable(e),
    };
    let v = pages::ListView {
        rt,
        query: q,
        rows,
        matched,
        page_size: PAGE_SIZE as u64,
    };
    html(StatusCode::OK, pages::list(&chrome, &v))
}

/// One page of list rows, sorted as asked, and how many resources match: the same
/// query engine as the SCIM API (`sortBy`, `sortOrder`, `startIndex`, `count`).
async fn list_rows(
    state: &AppState,
    rt: ResourceType,
    filter: Option<crate::scim::filter::Filter>,
    q: &ListQuery,
) -> Result<(Vec<pages::ListRow>, u64), crate::store::StoreError> {
    let column = q.sort.unwrap_or_default();
    let start = (q.page() - 1)
        .saturating_mul(PAGE_SIZE as u64)
        .saturating_add(1)
        .min(u64::from(u32::MAX)) as usize;
    let q = Query {
        rt: Some(rt),
        params: ListParams {
            filter,
            sort_by: crate::scim::path::AttrPath::parse(column.attribute(rt)).ok(),
            descending: q.order == Some(pages::SortOrder::Desc),
            start_index: start,
            count: PAGE_SIZE,
        },
        // The list shows neither a user's groups nor a group's members (a group's
        // member count is read from the membership rows).
        projection: match rt {
            ResourceType::User => Projection::parse(None, Some("groups")).unwrap_or_default(),
            ResourceType::Group => Projection::parse(None, Some("members")).unwrap_or_default(),
        },
        paging: Paging::Index,
    };
    // By "Last modified" unfiltered, `App::query` orders from the stored meta alone
    // (trial 7 item 17).
    let page = state.app.query(q, "").await?;
    let snap = state.app.store.snapshot()?;
    let mut rows = Vec::with_capacity(page.resources.len());
    for r in &page.resources {
        let members = match rt {
            ResourceType::Group => Some(snap.member_count(r.id())?),
            ResourceType::User => None,
        };
        rows.push(list_row(r, members));
    }
    Ok((rows, page.total.unwrap_or(0) as u64))
}

/// A user's `name` (RFC 7643 §4.1.1) in words: `formatted` when given, else its
/// parts in order (honorificPrefix givenName middleName familyName honorificSuffix):
/// Entra ID and Okta send givenName and familyName without formatted, and the trial's
/// Users page showed an empty Name. `None` when there is nothing to show.
fn person_name(name: Option<&Value>) -> Option<String> {
    let name = name?;
    let part = |k: &str| name.get(k).and_then(Value::as_str).map(str::trim);
    if let Some(f) = part("formatted").filter(|f| !f.is_empty()) {
        return Some(f.to_owned());
    }
    let parts: Vec<&str> = [
        "honorificPrefix",
        "givenName",
        "middleName",
        "familyName",
        "honorificSuffix",
    ]
    .into_iter()
    .filter_map(part)
    .filter(|p| !p.is_empty())
    .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// One row of the Users or Groups list, from the resource as a client would see it.
fn list_row(r: &Resource, members: Option<u64>) -> pages::ListRow {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    let modified = s(r.get("meta").and_then(|m| m.get("lastModified")));
    match r.rt() {
        ResourceType::User => {
            let display = s(r.get("displayName"));
            pages::ListRow {
                id: r.id().to_owned(),
                name: s(r.get("userName")),
                detail: if display.is_empty() {
                    person_name(r.get("name")).unwrap_or_default()
                } else {
                    display
                },
                email: crate::migrate::readiness::main_email(r.attributes()),
                active: r.get("active").and_then(Value::as_bool),
                modified,
            }
        }
        ResourceType::Group => pages::ListRow {
            id: r.id().to_owned(),
            name: s(r.get("displayName")),
            detail: pages::count(members.unwrap_or(0), "member", "members"),
            email: None,
            active: None,
            modified,
        },
    }
}

/// The id a user's enterprise `manager` names: `manager.value` (RFC 7643 §4.3: "the
/// id of the SCIM resource representing the User's manager"), or a bare id as older
/// records hold it.
fn manager_id(attrs: &serde_json::Map<String, Value>) -> Option<&str> {
    let m = attrs.get(ENTERPRISE_USER_URN)?.get("manager")?;
    m.get("value")
        .and_then(Value::as_str)
        .or_else(|| m.as_str())
}

/// The manager `id` names, by name: one lookup of one user, whatever the directory's size.
fn manager_ref(snap: &crate::store::Snapshot, id: &str) -> Result<pages::ManagerRef, StoreError> {
    let found = snap.get(ResourceType::User, id)?.map(|m| {
        let s = |k: &str| m.attrs.get(k).and_then(Value::as_str).map(str::to_owned);
        (s("userName").unwrap_or_default(), s("displayName"))
    });
    Ok(pages::ManagerRef {
        id: id.to_owned(),
        found,
    })
}

/// What became of the resource a past SCIM request named: its name now, or gone.
/// One lookup by id per row (`Snapshot::name_of`), so the dashboard costs the same
/// whatever the directory's size. `None` when the request named no resource or the
/// store could not be read (the row then shows the id alone).
fn resource_now(
    snap: &crate::store::Snapshot,
    r: &activity::ScimRequestRecord,
) -> Option<pages::ResourceNow> {
    let id = r.id.as_deref()?;
    let rt = r.resource_type()?;
    match snap.name_of(rt, id).ok()? {
        Some(name) => Some(pages::ResourceNow::Named(rt, name)),
        // A user has a userName and a group a displayName (both required), so no
        // name means no resource; a record without one still exists and keeps its id.
        None => match snap.get_raw(rt, id, |_| Ok(())).ok()? {
            Some(()) => None,
            None => Some(pages::ResourceNow::Gone { was: None }),
        },
    }
}

/// The dashboard's last SCIM requests, each with what became of its resource: its
/// name now, or, for one deleted since the request found it, the name the audit
/// last gave it (`App::names_in_audit`; a Bulk delete leaves it unnamed).
/// The users and groups named by `records` that `snap` no longer has: one read by
/// id per entry (a page shows at most `ACTIVITY_PAGE_SIZE`), as `resource_now`.
fn gone_in(snap: &crate::store::Snapshot, records: &[crate::store::AuditRecord]) -> pages::Gone {
    records
        .iter()
        .filter_map(pages::audit_subject)
        .filter(|(rt, id)| matches!(snap.get_raw(*rt, id, |_| Ok(())), Ok(None)))
        .map(|(rt, id)| (rt.name().to_owned(), id.to_owned()))
        .collect()
}

fn recent_requests(state: &AppState, snap: &crate::store::Snapshot) -> Vec<pages::RequestRow> {
    let mut rows: Vec<pages::RequestRow> = state
        .activity
        .recent(25)
        .into_iter()
        .map(|record| pages::RequestRow {
            resource: resource_now(snap, &record),
            record,
        })
        .collect();
    let deleted: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            matches!(rows[i].resource, Some(pages::ResourceNow::Gone { .. }))
                && rows[i].record.found_its_resource()
        })
        .collect();
    let wanted: Vec<(ResourceType, &str)> = deleted
        .iter()
        .filter_map(|&i| {
            let r = &rows[i].record;
            Some((r.resource_type()?, r.id.as_deref()?))
        })
        .collect();
    let Some(since) = deleted.iter().map(|&i| rows[i].record.time).min() else {
        return rows;
    };
    let names = match state.app.names_in_audit(&wanted, since) {
        Ok(names) => names,
        Err(e) => {
            tracing::warn!(error = %e, "the audit could not be read for the names of deleted resources");
            return rows;
        }
    };
    for (i, was) in deleted.into_iter().zip(names) {
        rows[i].resource = Some(pages::ResourceNow::Gone { was });
    }
    rows
}

/// Direct reports shown on a user's page; the rest are counted.
const REPORTS_SHOWN: usize = 100;

/// A user's direct reports from the manager → reports index (`Snapshot::reports_page`):
/// the first `REPORTS_SHOWN` by id with their names, and the count.
fn direct_reports(
    snap: &crate::store::Snapshot,
    id: &str,
) -> Result<pages::ReportsView, StoreError> {
    let (ids, total) = snap.reports_page(id, REPORTS_SHOWN)?;
    let mut shown = Vec::with_capacity(ids.len());
    for report in ids {
        let names = snap.get_text(ResourceType::User, &report, |t| {
            let v = t.values_of(&["userName", "displayName"])?;
            let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
            Ok((text("userName"), text("displayName")))
        })?;
        if let Some((user_name, display)) = names {
            shown.push((report.clone(), user_name.unwrap_or(report), display));
        }
    }
    Ok(pages::ReportsView { shown, total })
}

/// The page of a user or group that is not in the directory: when and by whom it
/// was deleted and its audit entries (410 Gone), or, when the audit has no delete of
/// it, what the audit has (404). The audit is read off the async workers, as an
/// Activity search.
async fn gone(
    state: &Arc<AppState>,
    rt: ResourceType,
    id: String,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let app = state.app.clone();
    let wanted = id.clone();
    let history = tokio::task::spawn_blocking(move || app.resource_history(rt, &wanted)).await;
    let history = match history {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return unavailable(e),
        Err(_) => return unavailable(StoreError::Closed),
    };
    let v = pages::GoneView {
        rt,
        id: &id,
        history: &history,
    };
    let title = pages::gone_title(&v);
    let status = match history.deleted {
        Some(_) => StatusCode::GONE,
        None => StatusCode::NOT_FOUND,
    };
    html(
        status,
        pages::gone(
            &Chrome {
                title: &title,
                ..chrome
            },
            &v,
        ),
    )
}

/// The query string of a user's or group's page: which page of members to show.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DetailQuery {
    page: Option<u64>,
}

/// A user's groups (all), or one page of a group's members, with their total.
fn detail_refs(
    snap: &crate::store::Snapshot,
    rt: ResourceType,
    id: &str,
    page: u64,
) -> Result<(Vec<crate::scim::resource::Reference>, u64), StoreError> {
    match rt {
        ResourceType::User => {
            let refs = snap.references(rt, id)?;
            let n = refs.len() as u64;
            Ok((refs, n))
        }
        ResourceType::Group => {
            let skip = (page - 1).saturating_mul(MEMBERS_PAGE_SIZE as u64);
            let refs = snap.members_page(id, skip, MEMBERS_PAGE_SIZE)?;
            Ok((refs, snap.member_count(id)?))
        }
    }
}

async fn detail(
    state: &Arc<AppState>,
    rt: ResourceType,
    id: &str,
    q: DetailQuery,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let id = percent_encoding::percent_decode_str(id)
        .decode_utf8_lossy()
        .into_owned();
    let snap = match state.app.store.snapshot() {
        Ok(s) => s,
        Err(e) => return unavailable(e),
    };
    let page = q.page.unwrap_or(1).max(1);
    let (mut r, (refs, refs_total)) = match (snap.get(rt, &id), detail_refs(&snap, rt, &id, page)) {
        (Ok(Some(r)), Ok(refs)) => (r, refs),
        (Ok(None), _) => return gone(state, rt, id, chrome).await,
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    if let Err(e) = snap.derive_meta(rt, &mut r) {
        return unavailable(e);
    }
    let base = state.scim_base();
    // The SCIM representation lists a user's groups; a group's members are the
    // table above, page by page (a 100,000-member group is not rendered whole).
    let shown_refs = (rt == ResourceType::User).then_some(refs.as_slice());
    let rendered =
        crate::scim::resource::render(rt, &r.id, r.attrs.clone(), &r.meta, shown_refs, &base);
    let s = |k: &str| r.attrs.get(k).and_then(Value::as_str).map(str::to_owned);
    let text = pages::Fact::Text;
    let mut facts: Vec<(&'static str, pages::Fact)> = Vec::new();
    match rt {
        ResourceType::User => {
            facts.push(("userName", text(s("userName").unwrap_or_default())));
            if let Some(d) = s("displayName") {
                facts.push(("displayName", text(d)));
            }
            if let Some(n) = person_name(r.attrs.get("name")) {
                facts.push(("Name", text(n)));
            }
            if let Some(e) = crate::migrate::readiness::main_email(&r.attrs) {
                facts.push(("Email", text(e)));
            }
            let active = r
                .attrs
                .get("active")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            facts.push(("Active", text(if active { "yes" } else { "no" }.into())));
            if let Some(id) = manager_id(&r.attrs) {
                match manager_ref(&snap, id) {
                    Ok(m) => facts.push(("Manager", pages::Fact::Manager(m))),
                    Err(e) => return unavailable(e),
                }
            }
        }
        ResourceType::Group => {
            facts.push(("displayName", text(s("displayName").unwrap_or_default())));
        }
    }
    if let Some(x) = s("externalId") {
        facts.push(("externalId", text(x)));
    }
    facts.push(("id", text(r.id.clone())));
    facts.push(("Created", text(pages::when(&r.meta.created))));
    facts.push(("Last modified", text(pages::when(&r.meta.last_modified))));
    facts.push(("Version", text(r.meta.etag())));
    let extensions = rt
        .extensions()
        .iter()
        .filter_map(|ext| Some((ext, r.attrs.get(ext.id)?.as_object()?)))
        .flat_map(|(ext, fields)| {
            // The manager is a fact above, by name (its id alone told the trial nothing).
            let shown_above = |name: &str| ext.id == ENTERPRISE_USER_URN && name == "manager";
            fields
                .iter()
                .filter(move |(name, _)| !shown_above(name))
                .map(move |(name, value)| {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Object(o) if o.contains_key("value") => o["value"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| o["value"].to_string()),
                        other => other.to_string(),
                    };
                    (ext.id.to_owned(), name.clone(), text)
                })
        })
        .collect();
    let name = match rt {
        ResourceType::User => s("userName"),
        ResourceType::Group => s("displayName"),
    }
    .filter(|n| !n.is_empty())
    .unwrap_or_else(|| r.id.clone());
    // A group's members by userName: one read by id per member shown (a page is at
    // most MEMBERS_PAGE_SIZE).
    let mut user_names = std::collections::HashMap::new();
    if rt == ResourceType::Group {
        for m in refs.iter().filter(|m| m.rt == ResourceType::User) {
            match snap.name_of(ResourceType::User, &m.id) {
                Ok(Some(n)) => {
                    user_names.insert(m.id.clone(), n);
                }
                Ok(None) => {}
                Err(e) => return unavailable(e),
            }
        }
    }
    let reports = match rt {
        ResourceType::User => match direct_reports(&snap, &r.id) {
            Ok(v) => Some(v),
            Err(e) => return unavailable(e),
        },
        ResourceType::Group => None,
    };
    let v = pages::DetailView {
        rt,
        id: r.id.clone(),
        refs_total,
        refs_page: page,
        refs_page_size: MEMBERS_PAGE_SIZE as u64,
        facts,
        extensions,
        refs,
        user_names,
        reports,
        json: serde_json::to_string_pretty(&Value::Object(rendered)).unwrap_or_default(),
    };
    html(
        StatusCode::OK,
        pages::detail(
            &Chrome {
                title: &name,
                ..chrome
            },
            &v,
        ),
    )
}

// ---- activity ----------------------------------------------------------------------

async fn activity_page(
    state: &Arc<AppState>,
    q: pages::ActivityQuery,
    chrome: Chrome<'_>,
) -> Response<Body> {
    let page = q.page.unwrap_or(1).max(1);
    let offset = (page - 1).saturating_mul(ACTIVITY_PAGE_SIZE as u64);
    let (app, filter, sort) = (state.app.clone(), q.filter(), q.sorting());
    let found = tokio::task::spawn_blocking(move || {
        app.audit_search(&filter, sort, offset, ACTIVITY_PAGE_SIZE)
    })
    .await;
    let found = match found {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return unavailable(e),
        Err(_) => return unavailable(crate::store::StoreError::Closed),
    };
    let gone = match state.app.store.snapshot() {
        Ok(snap) => gone_in(&snap, &found.records),
        Err(e) => return unavailable(e),
    };
    let v = pages::ActivityView {
        query: q,
        page: found,
        page_size: ACTIVITY_PAGE_SIZE,
        gone,
    };
    html(StatusCode::OK, pages::activity(&chrome, &v))
}

/// The matching audit entries as a download (CSV or JSON Lines), newest first.
async fn activity_export(
    state: &Arc<AppState>,
    q: pages::ActivityQuery,
    format: ExportFormat,
) -> Response<Body> {
    let (app, filter) = (state.app.clone(), q.filter());
    let made = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        app.audit_export(&filter, format, &mut out).map(|()| out)
    })
    .await;
    let bytes = match made {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return unavailable(e),
        Err(_) => return unavailable(crate::store::StoreError::Closed),
    };
    let (content_type, file) = match format {
        ExportFormat::Csv => ("text/csv; charset=utf-8", "scimbridge-audit.csv"),
        ExportFormat::JsonLines => ("application/x-ndjson", "scimbridge-audit.jsonl"),
    };
    let mut r = response(StatusCode::OK, content_type, bytes);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        r.headers_mut()
            .insert(hyper::header::CONTENT_DISPOSITION, v);
    }
    r
}

// ---- migration ---------------------------------------------------------------------

fn migration_page(state: &AppState, chrome: Chrome<'_>) -> Response<Body> {
    let status = match state.app.migration.status() {
        Ok(s) => s,
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &e.page_message(),
            )
        }
    };
    let check = match state.app.store.snapshot().and_then(|s| LastCheck::load(&s)) {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let job = state.admin.job.lock().ok().and_then(|j| {
        j.as_ref().map(|j| pages::JobView {
            kind: j.kind,
            started: j.started,
            progress: j.progress.clone(),
            finished: j.finished,
            outcome: j.outcome.clone(),
        })
    });
    let policy = match state.app.migration.policy_view() {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                &e.page_message(),
            )
        }
    };
    let v = pages::MigrationView {
        status,
        check,
        job,
        policy,
    };
    html(StatusCode::OK, pages::migration(&chrome, &v))
}

/// Runs a migration form's action; returns the message for the next page.
async fn migration_action(
    state: &Arc<AppState>,
    who: &Caller,
    action: &str,
    body: &[u8],
) -> Result<Flash, Refused> {
    // (message for the page, the audit entry's refusal reason if it was refused)
    let (msg, refused): (String, Option<String>) = match action {
        "check" => match state.app.migration.check().await {
            Ok(report) => {
                let msg = if report.ready {
                    "Readiness check: ready.".to_owned()
                } else {
                    format!(
                        "Readiness check: {}, {}.",
                        pages::count(report.blockers.len() as u64, "blocker", "blockers"),
                        pages::count(report.warnings.len() as u64, "warning", "warnings")
                    )
                };
                (msg, None)
            }
            Err(e) => {
                let why = e.page_message();
                (format!("The readiness check failed: {why}"), Some(why))
            }
        },
        "push" => {
            let f: PushForm = parse_form(body)?;
            let target = f.target.trim().to_owned();
            let token = Secret::new(f.token.trim());
            if target.is_empty() || token.is_empty() {
                let msg = "The push needs the target URL and its token.".to_owned();
                (msg.clone(), Some(msg))
            } else {
                let cacert = Some(f.cacert.trim().to_owned()).filter(|c| !c.is_empty());
                let req = PushRequest {
                    target,
                    token,
                    cacert,
                    allow_http: false,
                    dry_run: f.dry_run.is_some_and(|d| !d.is_empty()),
                    omit_unsupported: f.omit_unsupported.is_some_and(|d| !d.is_empty()),
                    parallel: None,
                };
                start_job(state, who, JobKind::Push(req)).await
            }
        }
        "policy" | "policy-reset" => {
            let (entry, msg) = policy_action(state, action, body).await?;
            if let Some(entry) = entry {
                state.app.audit(who, entry).await;
            }
            return Ok(msg);
        }
        "verify" => {
            // After the cut-over the stored token is gone: the form brings one for
            // this run (a password field; never stored, logged or audited).
            let f: VerifyForm = parse_form(body)?;
            let token = Some(Secret::new(f.token.trim())).filter(|t| !t.is_empty());
            let cut_over = state
                .app
                .migration
                .state()
                .is_ok_and(|s| s.phase == crate::store::Phase::CutOver);
            if cut_over && token.is_none() {
                let msg = "Not verified: after the cut-over the target's token is not stored; \
                           paste it into the form."
                    .to_owned();
                (msg.clone(), Some(msg))
            } else {
                start_job(state, who, JobKind::Verify(token)).await
            }
        }
        "cutover" => {
            let f: CutoverForm = parse_form(body)?;
            let target = state.app.migration.state().ok().and_then(|s| s.target);
            match target {
                Some(t) if f.confirm == t => start_job(state, who, JobKind::Cutover).await,
                Some(_) => {
                    let msg = "Not cut over: type the target URL exactly as shown to confirm.";
                    (msg.into(), Some(msg.into()))
                }
                None => {
                    let msg = "Not cut over: no migration target is set; push first.";
                    (msg.into(), Some(msg.into()))
                }
            }
        }
        "abort" => match state.app.migration.abort().await {
            Ok(_) => (
                "Migration aborted: mirroring stopped; this bridge stays the source of truth."
                    .into(),
                None,
            ),
            Err(e) => {
                let why = e.page_message();
                (format!("Not aborted: {why}"), Some(why))
            }
        },
        _ => return Ok(Flash::Refusal("There is no such migration action.".into())),
    };
    // A started job is audited by `start_job` (when it starts and when it ends).
    let started = matches!(action, "push" | "verify" | "cutover") && refused.is_none();
    let flash = match refused {
        Some(_) => Flash::Refusal(msg),
        None => Flash::Notice(msg),
    };
    if !started {
        let mut entry = Entry::new(&format!("migration.{action}"));
        if let Some(why) = refused {
            entry = entry.refused(why);
        }
        state.app.audit(who, entry).await;
    }
    Ok(flash)
}

/// Saves or resets the migration policy from the page: the audit entry (named as the
/// control socket names it, with what was set; none when nothing changed) and the
/// page's message.
async fn policy_action(
    state: &AppState,
    action: &str,
    body: &[u8],
) -> Result<(Option<Entry>, Flash), Refused> {
    let m = &state.app.migration;
    let (entry, result) = if action == "policy" {
        let form: PolicyForm = parse_form(body)?;
        let now = match m.policy_view() {
            Ok(v) => v,
            Err(e) => {
                let why = format!("Not saved: {}", e.page_message());
                return Ok((None, Flash::Refusal(why)));
            }
        };
        // Normalised first, so that the audit names the values as stored.
        let change = match form.change().normalised() {
            Ok(c) => only_changed(c, &now),
            Err(why) => {
                let entry = Entry::new("migration.policy_set").refused(why.clone());
                return Ok((Some(entry), Flash::Refusal(format!("Not saved: {why}"))));
            }
        };
        if change == PolicyChange::default() {
            let msg = "The policy is unchanged: nothing was saved.";
            return Ok((None, Flash::Notice(msg.into())));
        }
        let what = [
            ("allowed_domains", &change.allowed_domains),
            ("public_domains", &change.public_domains),
            ("protected_groups", &change.protected_groups),
        ]
        .iter()
        .filter_map(|(k, v)| {
            Some(format!(
                "{k} = {}",
                crate::migrate::policy::list(v.as_ref()?)
            ))
        })
        .collect::<Vec<_>>()
        .join("; ");
        let entry = Entry::new("migration.policy_set").on("Migration", None, Some(&what));
        (
            entry,
            m.set_policy(change)
                .await
                .map(|_| format!("Policy saved: {what}. Run the check again to apply it.")),
        )
    } else {
        let form: PolicyResetForm = parse_form(body)?;
        let key = form.field.key();
        let entry = Entry::new("migration.policy_reset").on("Migration", None, Some(key));
        let result = m.reset_policy(vec![form.field]).await.map(|v| {
            let now = v
                .fields()
                .into_iter()
                .find(|(f, _)| *f == form.field)
                .map(|(_, v)| v.clone());
            match now {
                Some(v) => format!(
                    "{key} reset: {} ({}) applies again.",
                    crate::migrate::policy::list(&v.value),
                    v.source.as_str()
                ),
                None => format!("{key} reset."),
            }
        });
        (entry, result)
    };
    Ok(match result {
        Ok(msg) => (Some(entry), Flash::Notice(msg)),
        Err(e) => {
            let why = e.page_message();
            (
                Some(entry.refused(why.clone())),
                Flash::Refusal(format!("Not saved: {why}")),
            )
        }
    })
}

/// Starts a migration step in the background unless one is running; the page shows
/// its progress and outcome on reload. Audited when it starts and when it ends.
/// Returns the page's message and, when it did not start, why.
async fn start_job(state: &Arc<AppState>, who: &Caller, kind: JobKind) -> (String, Option<String>) {
    let name = kind.name();
    let action = match &kind {
        JobKind::Push(r) if r.dry_run => "migration.push_dry_run",
        JobKind::Push(_) => "migration.push",
        JobKind::Verify(_) => "migration.verify",
        JobKind::Cutover => "migration.cutover",
    };
    let mut entry = Entry::new(action);
    if let JobKind::Push(r) = &kind {
        entry = entry.on("Migration", None, Some(&r.target));
    }
    let busy = {
        match state.admin.job.lock() {
            Err(_) => Some("The job table is unavailable.".to_owned()),
            Ok(mut slot) => match slot.as_ref().filter(|j| j.finished.is_none()) {
                Some(j) => Some(format!(
                    "{} is still running; wait for it to finish.",
                    j.kind
                )),
                None => {
                    *slot = Some(Job {
                        kind: name,
                        started: Timestamp::now(),
                        progress: None,
                        finished: None,
                        outcome: None,
                    });
                    None
                }
            },
        }
    };
    if let Some(why) = busy {
        state.app.audit(who, entry.refused(why.clone())).await;
        return (why.clone(), Some(why));
    }
    state.app.audit(who, entry.started()).await;
    let slot = state.admin.job.clone();
    let app = state.app.clone();
    let who = who.clone();
    tokio::spawn(async move {
        let m: Arc<Migration> = app.migration.clone();
        let progress_slot = slot.clone();
        let mut progress = move |p: Progress| {
            if let Ok(mut j) = progress_slot.lock() {
                if let Some(j) = j.as_mut() {
                    j.progress = Some(p);
                }
            }
        };
        let outcome = match kind {
            JobKind::Push(req) => m.push(req, &mut progress).await.map(JobOutcome::Push),
            JobKind::Verify(token) => m
                .verify(token, None, &mut progress)
                .await
                .map(JobOutcome::Verify),
            JobKind::Cutover => m.cutover(&mut progress).await.map(JobOutcome::Cutover),
        };
        if let Err(e) = &outcome {
            tracing::warn!(job = name, error = %e, "migration step from the admin page failed");
        }
        let ended = outcome.as_ref().err().map(MigrateError::audit_outcome);
        let outcome = outcome.map_err(PageMessage::page_message);
        // Ran to its end, but the target differs: not done (trial 8 item 27).
        let differs = match &outcome {
            Ok(JobOutcome::Push(PushOutcome::Pushed(r))) => unverified(&r.differences),
            Ok(JobOutcome::Verify(r)) => unverified(&r.differences),
            _ => None,
        };
        let entry = match differs {
            Some(why) => entry.refused(why),
            None => entry.outcome_as(&outcome, |_| ended.unwrap_or(AuditOutcome::Refused)),
        };
        app.audit(&who, entry).await;
        if let Ok(mut j) = slot.lock() {
            if let Some(j) = j.as_mut() {
                j.finished = Some(Timestamp::now());
                j.outcome = Some(outcome);
            }
        }
    });
    (
        format!("{name} started; this page shows its progress when reloaded."),
        None,
    )
}
