//! The SCIM endpoints below `/scim/v2`: authentication and scope, parsing an HTTP
//! request into an `app::Operation` (or a `Query`), and writing the `Outcome` as a
//! SCIM response (status, ETag, Location, ListResponse). Discovery documents are
//! answered here too. What an operation does is the application layer's business;
//! this file knows HTTP and nothing of the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::Value;

use super::admin::activity::ScimRequestRecord;
use super::{scim_error, scim_json, store_error, AppState, Body, Handled, RequestBody};
use crate::app::audit::{Caller, Entry, WriteAudit};
use crate::app::{Operation, Outcome, Page, Paging, Query, Reply, Written};
use crate::auth::{authenticate, AuthFailure, Principal, DOUBLED_SCHEME};
use crate::clock::Timestamp;
use crate::limiter::Subject;
use crate::scim::discovery::{self, Capabilities};
use crate::scim::error::{ScimError, ScimResult, ScimType};
use crate::scim::query::ListParams;
use crate::scim::resource::Projection;
use crate::scim::schema::ResourceType;
use crate::store::{Actor, OutcomeClass, Scope, Target};

/// Query-string parameters, percent-decoded; a repeated name keeps its first value.
fn query_params(req: &Request<RequestBody>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(q) = req.uri().query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
    }
    out
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn capabilities(state: &AppState) -> Capabilities {
    Capabilities {
        max_results: state.app.config.limits.max_page_size,
        default_page_size: state.app.config.limits.default_page_size,
        max_body_bytes: state.app.config.limits.max_body_bytes,
        bulk: Some((
            state.app.config.limits.bulk_max_operations,
            state.app.config.limits.bulk_max_payload_bytes,
        )),
    }
}

fn resource_type_of(segment: &str) -> Option<ResourceType> {
    match segment {
        "Users" => Some(ResourceType::User),
        "Groups" => Some(ResourceType::Group),
        _ => None,
    }
}

/// What a request below `/scim/v2` does, parsed from its method and path: the
/// scope check and the cut-over write gate ask this, not how the path ends (a
/// `DELETE …/.search` is a write; a `POST …/.search` is a read).
#[derive(Debug, PartialEq, Eq)]
enum ScimRoute {
    /// GET of resources or discovery documents, `POST …/.search`.
    Read,
    /// POST (create), PUT, PATCH, DELETE of a resource, and `POST /Bulk`.
    Write,
    /// Anything the dispatch below answers 404 or 405.
    Refused,
}

impl ScimRoute {
    fn parse(method: &Method, segments: &[&str]) -> ScimRoute {
        use ScimRoute as R;
        if segments.first().and_then(|s| resource_type_of(s)).is_some() {
            return match (method, &segments[1..]) {
                (&Method::GET, [] | [_]) | (&Method::POST, [".search"]) => R::Read,
                (&Method::POST, []) => R::Write,
                (&Method::PUT | &Method::PATCH | &Method::DELETE, [_]) => R::Write,
                _ => R::Refused,
            };
        }
        match (method, segments) {
            (&Method::GET, ["ServiceProviderConfig" | "Schemas" | "ResourceTypes"])
            | (&Method::GET, ["Schemas" | "ResourceTypes", _])
            | (&Method::POST, [".search"]) => R::Read,
            (&Method::POST, ["Bulk"]) => R::Write,
            _ => R::Refused,
        }
    }

    /// Whether the route changes the directory (refused for read-only tokens and
    /// after cut-over).
    fn writes(&self) -> bool {
        *self == ScimRoute::Write
    }

    /// The methods a SCIM path answers, for the `Allow` header of a 405 (RFC 9110
    /// §15.5.6); `None` for a path that does not exist (404).
    fn allowed(segments: &[&str]) -> Option<&'static str> {
        if segments.first().and_then(|s| resource_type_of(s)).is_some() {
            return match &segments[1..] {
                [] => Some("GET, POST"),
                // RFC 7644 §3.4.3: a search is POSTed.
                [".search"] => Some("POST"),
                [_] => Some("GET, PUT, PATCH, DELETE"),
                _ => None,
            };
        }
        match segments {
            ["ServiceProviderConfig" | "Schemas" | "ResourceTypes", ..] => Some("GET"),
            [".search"] | ["Bulk"] => Some("POST"),
            _ => None,
        }
    }
}

pub(crate) async fn handle(
    state: &Arc<AppState>,
    req: Request<RequestBody>,
    rest: &str,
) -> Response<Body> {
    let method = req.method().clone();
    let client = super::client_of(&req);
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let writes = ScimRoute::parse(&method, &segments).writes();
    let path_rt = match segments.as_slice() {
        [rt, id] if !id.starts_with('.') => resource_type_of(rt),
        _ => None,
    };
    // (token id, token name) once authenticated, or once an expired secret is
    // recognised; why authentication failed, when it did.
    let mut token = None;
    let mut failure = None;
    // Set when the write's audit entry was stored with the write (`WriteAudit`).
    let audited = AtomicBool::new(false);
    // The name a refused create asked for (the audit names it).
    let mut attempted = None;
    let sender = (&mut token, &mut failure, &mut attempted);
    let (mut response, reason) = match handle_inner(state, req, rest, sender, &audited).await {
        Ok(r) => {
            let reason = (r.status() == StatusCode::TOO_MANY_REQUESTS)
                .then(|| "throttled: too many requests in progress".to_owned());
            (r, reason)
        }
        // The client learns only "invalid"; the admin learns whose secret it was.
        Err(e) => match &failure {
            Some(AuthFailure::Revoked { name, .. }) => (
                scim_error(&e),
                Some(format!("the secret of the revoked token \"{name}\"")),
            ),
            Some(AuthFailure::Expired { name, .. }) => (
                scim_error(&e),
                Some(format!("the secret of the expired token \"{name}\"")),
            ),
            Some(AuthFailure::DoubledScheme { of }) => (
                scim_error(&e),
                Some(match of {
                    Some(name) => format!(
                        "{DOUBLED_SCHEME} (\"Bearer Bearer <secret>\"; the secret is the token \
                         \"{name}\"'s): remove \"Bearer \" from the identity provider's token field"
                    ),
                    None => format!(
                        "{DOUBLED_SCHEME} (\"Bearer Bearer <secret>\"): remove \"Bearer \" from the \
                         identity provider's token field"
                    ),
                }),
            ),
            _ => (scim_error(&e), Some(e.detail)),
        },
    };
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        if let Some(allow) = ScimRoute::allowed(&segments) {
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
        }
    }
    let status = response.status().as_u16();
    let now = Timestamp::now();
    let token_name = token.map(|(id, name)| {
        state
            .app
            .liveness
            .count(&id, status, reason.as_deref(), now);
        name
    });
    // Turned away before the directory: shown on the dashboard. A 429 after a
    // failed authentication throttled the address, not a token.
    if status == 429 {
        let token = token_name.clone().filter(|_| failure.is_none());
        let why = crate::app::liveness::TurnedAway::Throttled { token };
        state.app.liveness.turned_away(why, client, now);
    }
    if let Some(why) = failure {
        // A secret no token has is counted apart, so that the dashboard's chart
        // holds every request (a recognised one counted for its token above).
        if token_name.is_none() {
            state.app.liveness.count_unrecognised(status, now);
        }
        state
            .app
            .liveness
            .turned_away(turned_away(why), client, now);
    }
    // Kept for the admin dashboard, refusals included.
    let seen = state.activity.record(
        method.as_str(),
        rest,
        (token_name, client),
        reason,
        &response,
    );
    if let Some(name) = &seen.token {
        response
            .extensions_mut()
            .insert(super::AnsweredToken(name.clone()));
    }
    if writes {
        if !audited.load(Ordering::Relaxed) {
            // A create that was refused never got an id to look its name up by.
            let asked = attempted.filter(|_| seen.id.is_none());
            audit_write(state, &seen, path_rt, asked);
        }
    } else if let Some(why) = &seen.reason {
        tracing::info!(
            request_id = crate::logline::request_id(),
            token = seen.token.as_deref(),
            client = %client,
            method = %method,
            path = rest,
            status = seen.status,
            reason = why.as_str(),
            // The documented vocabulary: refused (4xx), denied (401/403), failed (5xx).
            "SCIM request {}",
            OutcomeClass::of(seen.status).as_str()
        );
    }
    response
}

/// The audit action of a SCIM write by its method and endpoint (`Users`, `Bulk`…).
fn write_action(method: &str, endpoint: &str) -> &'static str {
    match (method, endpoint) {
        (_, "Bulk") => "scim.bulk",
        ("POST", _) => "scim.create",
        ("PUT", _) => "scim.replace",
        ("PATCH", _) => "scim.patch",
        ("DELETE", _) => "scim.delete",
        _ => "scim.write",
    }
}

/// The audit entry of a SCIM write whose entry was not stored with it: refused,
/// throttled, or a Bulk request (one entry for the request). A refused write
/// changed nothing, so the resource's name read now is its name as it was.
/// `asked` is the name a refused create asked for (it has no id to look up).
fn audit_write(
    state: &Arc<AppState>,
    seen: &ScimRequestRecord,
    rt: Option<ResourceType>,
    asked: Option<String>,
) {
    let rt = rt.or_else(|| resource_type_of(&seen.endpoint));
    let mut entry = Entry::new(write_action(&seen.method, &seen.endpoint));
    if let Some(rt) = rt {
        let name = seen
            .id
            .as_deref()
            .and_then(|id| state.app.resource_name(rt, id))
            .or(asked);
        entry = entry.on(rt.name(), seen.id.as_deref(), name.as_deref());
    }
    entry.status = Some(seen.status);
    if let Some(why) = &seen.reason {
        entry = entry.refused(why.clone());
    }
    let caller = match &seen.token {
        Some(name) => Caller::token(name, seen.client),
        None => Caller::token(crate::app::audit::NO_VALID_TOKEN, seen.client),
    };
    state.app.audit_later(&caller, entry);
}

/// Why a request was not authenticated, as the dashboard shows it.
fn turned_away(why: AuthFailure) -> crate::app::liveness::TurnedAway {
    use crate::app::liveness::TurnedAway as T;
    match why {
        AuthFailure::Revoked { name, .. } => T::Revoked { name },
        AuthFailure::Expired { name, .. } => T::Expired { name },
        AuthFailure::DoubledScheme { of } => T::DoubledScheme { token: of },
        other => T::Unrecognised {
            why: match other {
                AuthFailure::Missing => "no token",
                AuthFailure::Malformed => "a malformed Authorization header",
                _ => "an unknown token",
            },
        },
    }
}

/// The token of a request (id, name), why it was not authenticated, and the name
/// a refused create asked for, as `handle_inner` finds them.
type Sender<'a> = (
    &'a mut Option<(String, String)>,
    &'a mut Option<AuthFailure>,
    &'a mut Option<String>,
);

/// The name a create body asks for: a user's `userName`, a group's `displayName`.
fn asked_name(rt: ResourceType, body: &Value) -> Option<String> {
    let attr = match rt {
        ResourceType::User => "userName",
        ResourceType::Group => "displayName",
    };
    body.get(attr).and_then(Value::as_str).map(str::to_owned)
}

async fn handle_inner(
    state: &Arc<AppState>,
    req: Request<RequestBody>,
    rest: &str,
    (token, failure, attempted): Sender<'_>,
    audited: &AtomicBool,
) -> Handled {
    let principal = match admit(state, &req, (token, failure)) {
        Ok(p) => p,
        Err(Refusal::Throttled(t)) => return Ok(super::throttled(&t, true)),
        Err(Refusal::Error(e)) => return Err(e),
    };

    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if segments.first() == Some(&"Me") {
        // RFC 7644 §3.11: a service provider without /Me answers 501.
        return Err(ScimError::new(
            501,
            None,
            "/Me is not implemented: a bearer token here belongs to a provisioning client, \
             not to a user; use /Users/{id}",
        ));
    }
    let method = req.method().clone();
    // Scope and the cut-over gate are decided by the parsed route, not by how the
    // path ends.
    if ScimRoute::parse(&method, &segments).writes() {
        if let Err(e) = write_gate(state, &principal) {
            // A refused create is audited with the name it asked for (the trial's
            // 403 rows named nothing): read its body, bounded as any, on refusal only.
            if let (&Method::POST, [collection]) = (&method, segments.as_slice()) {
                if let Some(rt) = resource_type_of(collection) {
                    let limit = state.app.config.limits.max_body_bytes;
                    if let Ok(body) = read_json(req, limit).await {
                        *attempted = asked_name(rt, &body);
                    }
                }
            }
            return Err(e);
        }
    }
    let base = state.scim_base();
    let params = query_params(&req);
    if let Some(rt) = segments.first().and_then(|s| resource_type_of(s)) {
        let endpoint = ResourceEndpoint {
            state,
            rt,
            principal: &principal,
            params: &params,
            base: &base,
            audited,
        };
        return endpoint
            .handle(req, method, &segments[1..], attempted)
            .await;
    }
    let service = ServiceEndpoint {
        state,
        principal: &principal,
        base: &base,
    };
    service.handle(req, method, &segments, rest).await
}

/// Authenticates the request's bearer token (RFC 7644 §2) and takes the token's
/// request permit from the limiter; records the token's use.
///
/// Refusals: 401 for a missing, unknown, revoked or expired
/// token (each failure counted in /metrics and logged with the client address;
/// repeated failures from one address are throttled with 429), 429 when the
/// token already has its limit of requests in progress. Sets `token` as soon as it
/// is known (a revoked or expired secret's token included, so its refusals count
/// for it and are named) and `failure` when authentication failed.
fn admit(
    state: &Arc<AppState>,
    req: &Request<RequestBody>,
    (token, failure): (&mut Option<(String, String)>, &mut Option<AuthFailure>),
) -> Result<Principal, Refusal> {
    let now = Timestamp::now();
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let client = super::client_of(req);
    let authenticated =
        authenticate(&state.app.store, header, now).map_err(|e| Refusal::Error(store_error(e)))?;
    let principal = match authenticated {
        Ok(p) => p,
        Err(why) => {
            state.metrics.auth_failure(why.as_str());
            let reason = why.explained();
            // A recognised secret (revoked or expired) names its token: its refusals
            // count for it, and the dashboard and the log say which token an
            // identity provider still sends (its name only, never the secret).
            let named = match &why {
                AuthFailure::Revoked { id, name } | AuthFailure::Expired { id, name } => {
                    *token = Some((id.clone(), name.clone()));
                    Some(name.clone())
                }
                // The token whose secret followed; the request is not counted for it.
                AuthFailure::DoubledScheme { of } => of.clone(),
                _ => None,
            };
            let doubled = matches!(why, AuthFailure::DoubledScheme { .. });
            *failure = Some(why);
            // `None` leaves the field out of the line.
            let named = named.as_deref();
            // Only failures are throttled: a valid token is never refused for its
            // address (identity providers share theirs).
            let limiter = &state.app.limiter;
            if let Err(t) = limiter.auth_failed(client, std::time::Instant::now()) {
                tracing::debug!(request_id = crate::logline::request_id(), client = %client, reason, token = named, "SCIM authentication failed (throttled)");
                return Err(Refusal::Throttled(t));
            }
            tracing::warn!(request_id = crate::logline::request_id(), client = %client, reason, token = named, "SCIM authentication failed");
            if doubled {
                return Err(Refusal::Error(ScimError::new(
                    401,
                    None,
                    format!(
                        "authentication required: {DOUBLED_SCHEME}; send \"Authorization: Bearer \
                         <token>\" with the token alone"
                    ),
                )));
            }
            return Err(Refusal::Error(ScimError::new(
                401,
                None,
                "authentication required: send \"Authorization: Bearer <token>\" with a valid, unrevoked token",
            )));
        }
    };
    *token = Some((principal.token_id.clone(), principal.name.clone()));
    match state
        .app
        .limiter
        .request(Subject::Token(principal.token_id.clone()))
    {
        Ok(p) => super::request_ctx(req).hold(p),
        Err(t) => return Err(Refusal::Throttled(t)),
    }
    state.app.note_token_use(&principal.token_id, now);
    Ok(principal)
}

/// Why `admit` turned a request away.
enum Refusal {
    /// Answered 429 with `Retry-After`.
    Throttled(crate::limiter::Throttled),
    /// Answered with this SCIM error.
    Error(ScimError),
}

/// Whether a write may run: refused after cut-over (or 503 while the migration
/// holds writes, with `Retry-After: 10` in the detail) and for read-only tokens
/// (403).
fn write_gate(state: &AppState, principal: &Principal) -> ScimResult<()> {
    if let Some((status, why)) = state.app.migration.write_refusal() {
        let mut e = ScimError::new(status, None, why);
        if status == 503 {
            // `scim_error` sends the header too.
            e.detail.push_str(&format!(
                " (Retry-After: {})",
                super::UNAVAILABLE_RETRY_SECS
            ));
        }
        return Err(e);
    }
    if principal.scope == Scope::ReadOnly {
        return Err(ScimError::new(
            403,
            None,
            format!(
                "the token \"{}\" is read-only; this request needs a read-write token",
                principal.name
            ),
        ));
    }
    Ok(())
}

/// A request to an endpoint of the service itself rather than of a resource type:
/// discovery (RFC 7644 §4), the root `/.search` (§3.4.3) and `/Bulk` (§3.7).
struct ServiceEndpoint<'a> {
    state: &'a Arc<AppState>,
    principal: &'a Principal,
    base: &'a str,
}

impl ServiceEndpoint<'_> {
    async fn handle(
        &self,
        req: Request<RequestBody>,
        method: Method,
        segments: &[&str],
        rest: &str,
    ) -> Handled {
        let (state, base) = (self.state, self.base);
        match (method, segments) {
            (Method::GET, ["ServiceProviderConfig"]) => Ok(scim_json(
                StatusCode::OK,
                &discovery::service_provider_config(&capabilities(state), base),
            )),
            (Method::GET, ["Schemas"]) => {
                let docs = discovery::listed_schemas()
                    .map(|s| discovery::schema_json(s, base))
                    .collect();
                Ok(scim_json(StatusCode::OK, &discovery::list_response(docs)))
            }
            (Method::GET, ["Schemas", id @ ..]) => schema(id, base),
            (Method::GET, ["ResourceTypes"]) => {
                let docs = ResourceType::ALL
                    .iter()
                    .map(|rt| discovery::resource_type_json(*rt, base))
                    .collect();
                Ok(scim_json(StatusCode::OK, &discovery::list_response(docs)))
            }
            (Method::GET, ["ResourceTypes", id]) => match ResourceType::from_name(id) {
                Some(rt) => Ok(scim_json(
                    StatusCode::OK,
                    &discovery::resource_type_json(rt, base),
                )),
                None => Err(ScimError::not_found(format!("no resource type \"{id}\""))),
            },
            (Method::POST, [".search"]) => {
                let body = read_json(req, state.app.config.limits.max_body_bytes).await?;
                search(state, None, &search_params(&body)?, base, self.principal).await
            }
            (Method::POST, ["Bulk"]) => self.bulk(req).await,
            (_, [seg, ..])
                if matches!(
                    *seg,
                    "ServiceProviderConfig" | "Schemas" | "ResourceTypes" | "Bulk" | ".search"
                ) =>
            {
                Err(ScimError::new(
                    405,
                    None,
                    "this method is not allowed on this endpoint",
                ))
            }
            _ => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}{rest}",
                super::SCIM_PREFIX
            ))),
        }
    }

    /// `POST /Bulk` (RFC 7644 §3.7) as heavy work (`Limiter::heavy`: the token's own
    /// heavy-work limit, then a shared slot); 429 when none is free.
    async fn bulk(&self, req: Request<RequestBody>) -> Handled {
        let state = self.state;
        let limit = state.app.config.limits.bulk_max_payload_bytes;
        let body = read_json_within(req, limit, "bulk_max_payload_bytes").await?;
        let subject = Subject::Token(self.principal.token_id.clone());
        let _heavy = match state.app.limiter.heavy(subject).await {
            Ok(p) => p,
            Err(t) => return Ok(super::throttled(&t, true)),
        };
        let answer = super::bulk::handle(state, body, self.principal, self.base).await;
        crate::memory::release_soon();
        answer
    }
}

/// The SCIM response for an operation's outcome: 201 for a create, 200 with the
/// resource, 304 with the ETag, 204 for a delete, or a streamed 200 that keeps the
/// heavy-work permit (`heavy`) until its last byte is sent.
fn outcome_response(
    outcome: Outcome,
    created: bool,
    mut heavy: Option<crate::limiter::Permit>,
) -> Response<Body> {
    let streamed = matches!(outcome, Outcome::Streamed { .. });
    if !streamed && heavy.take().is_some() {
        crate::memory::release_soon();
    }
    match outcome {
        Outcome::Streamed { version, json } => {
            let mut body = Body::chunks(json);
            if let Some(p) = heavy.take() {
                body = body.keeping(Box::new(p));
            }
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(super::SCIM_CONTENT_TYPE),
            );
            set_etag(&mut resp, &version);
            resp
        }
        Outcome::Resource(w) if created => written_response(StatusCode::CREATED, w),
        Outcome::Resource(w) => written_response(StatusCode::OK, w),
        Outcome::Json { version, json } => {
            let mut resp = Response::new(Body::new(json));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(super::SCIM_CONTENT_TYPE),
            );
            set_etag(&mut resp, &version);
            resp
        }
        Outcome::NotModified { version } => {
            let mut resp = Response::new(Body::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            set_etag(&mut resp, &version);
            resp
        }
        Outcome::Deleted => {
            let mut r = Response::new(Body::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    }
}

/// `GET /Schemas/{id}`: ids are URNs, or (Entra's ADSCIM schema) an http URL,
/// percent-encoded in its location or sent with its slashes. 404 for an unknown id.
fn schema(id: &[&str], base: &str) -> Handled {
    let raw = id.join("/");
    let id: String = form_urlencoded::parse(format!("i={}", raw.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or(raw);
    match discovery::find_schema(&id) {
        Some(s) => Ok(scim_json(StatusCode::OK, &discovery::schema_json(s, base))),
        None => Err(ScimError::not_found(format!("no schema \"{id}\""))),
    }
}

/// A request below `/Users` or `/Groups`.
struct ResourceEndpoint<'a> {
    state: &'a Arc<AppState>,
    rt: ResourceType,
    principal: &'a Principal,
    params: &'a HashMap<String, String>,
    base: &'a str,
    /// Set once a write succeeded with its audit entry stored in its transaction.
    audited: &'a AtomicBool,
}

impl ResourceEndpoint<'_> {
    /// Handles the request; `attempted` gets the name a create asked for, which the
    /// audit shows when the create is refused (409 `uniqueness`).
    async fn handle(
        &self,
        req: Request<RequestBody>,
        method: Method,
        tail: &[&str],
        attempted: &mut Option<String>,
    ) -> Handled {
        let rt = self.rt;
        let client = super::client_of(&req);
        let limit = self.state.app.config.limits.max_body_bytes;
        let target = |id: &str, req: &Request<RequestBody>| Target {
            rt,
            id: id.to_owned(),
            if_match: header_str(req, IF_MATCH),
        };
        // A large group's full read is heavy work (see `App::is_large_read`).
        let mut heavy = None;
        let op = match (method, tail) {
            (Method::GET, []) => {
                let search = SearchRequest::from_query(self.params);
                return self.search(Some(rt), &search).await;
            }
            (Method::POST, [".search"]) => {
                let body = read_json(req, limit).await?;
                return self.search(Some(rt), &search_params(&body)?).await;
            }
            (Method::POST, []) => {
                let reply = Reply::Representation(projection(self.params)?);
                let resource = read_json(req, limit).await?;
                *attempted = asked_name(rt, &resource);
                Operation::Create {
                    rt,
                    resource,
                    reply,
                }
            }
            // `GET /Users/.search` is no id (the trial got "User .search not found").
            (_, [".search"]) => {
                return Err(ScimError::new(
                    405,
                    None,
                    "a search is POSTed to .search (RFC 7644 §3.4.3); GET the collection \
                     with ?filter= instead",
                ))
            }
            (Method::GET, [id]) => {
                let projection = projection(self.params)?;
                let app = &self.state.app;
                if app
                    .is_large_read(rt, id, &projection)
                    .map_err(store_error)?
                {
                    let subject = Subject::Token(self.principal.token_id.clone());
                    match app.limiter.heavy(subject).await {
                        Ok(p) => heavy = Some(p),
                        Err(t) => return Ok(super::throttled(&t, true)),
                    }
                }
                Operation::Get {
                    rt,
                    id: (*id).to_owned(),
                    if_none_match: header_str(&req, IF_NONE_MATCH),
                    projection,
                }
            }
            (Method::PUT, [id]) => {
                let reply = Reply::Representation(projection(self.params)?);
                let target = target(id, &req);
                Operation::Replace {
                    target,
                    resource: read_json(req, limit).await?,
                    reply,
                }
            }
            (Method::PATCH, [id]) => {
                // A group PATCH answers 204 with the new ETag unless the client asks
                // for attributes (RFC 7644 §3.5.2 allows either; Entra ID and Okta
                // document 204 for group updates): rendering a 100,000-member group
                // for every one-member change would cost the group's size.
                let asked = ["attributes", "excludedAttributes"]
                    .iter()
                    .any(|n| param(self.params, n).is_some());
                let reply = if rt == ResourceType::Group && !asked {
                    Reply::VersionOnly
                } else {
                    Reply::Representation(projection(self.params)?)
                };
                let target = target(id, &req);
                Operation::Patch {
                    target,
                    request: read_json(req, limit).await?,
                    reply,
                }
            }
            (Method::DELETE, [id]) => Operation::Delete {
                target: target(id, &req),
            },
            (_, [] | [_]) => {
                return Err(ScimError::new(
                    405,
                    None,
                    "this method is not allowed on this endpoint",
                ))
            }
            _ => {
                return Err(ScimError::not_found(format!(
                    "no SCIM endpoint at {}{}/{}",
                    super::SCIM_PREFIX,
                    rt.endpoint(),
                    tail.join("/")
                )))
            }
        };
        let created = matches!(op, Operation::Create { .. });
        // The status a successful write answers with (`outcome_response`).
        let done = match &op {
            Operation::Create { .. } => Some(("POST", 201)),
            Operation::Replace { .. } => Some(("PUT", 200)),
            Operation::Patch {
                reply: Reply::VersionOnly,
                ..
            } => Some(("PATCH", 204)),
            Operation::Patch { .. } => Some(("PATCH", 200)),
            Operation::Delete { .. } => Some(("DELETE", 204)),
            Operation::Get { .. } => None,
        };
        let audit = done.map(|(method, status)| {
            let mut entry = Entry::new(write_action(method, rt.endpoint()));
            entry.resource_type = Some(rt.name().to_owned());
            entry.status = Some(status);
            WriteAudit {
                caller: Caller::token(&self.principal.name, client),
                entry,
            }
        });
        let outcome = self
            .state
            .app
            .execute(op, &actor(self.principal), self.base, audit)
            .await
            .map_err(store_error)?;
        if done.is_some() {
            self.audited.store(true, Ordering::Relaxed);
        }
        Ok(outcome_response(outcome, created, heavy))
    }

    async fn search(&self, rt: Option<ResourceType>, req: &SearchRequest) -> Handled {
        search(self.state, rt, req, self.base, self.principal).await
    }
}

/// A header's value; one that is not visible ASCII is kept (lossily) rather than
/// dropped, so an unreadable `If-Match` fails its precondition instead of vanishing.
fn header_str(req: &Request<RequestBody>, name: hyper::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn actor(p: &Principal) -> Actor {
    Actor {
        token_id: Some(p.token_id.clone()),
        name: p.name.clone(),
    }
}

fn projection(params: &HashMap<String, String>) -> ScimResult<Projection> {
    Projection::parse(
        param(params, "attributes"),
        param(params, "excludedAttributes"),
    )
}

/// `bytes` in MiB: whole (`4 MiB`) or to two decimals (`1.50 MiB`).
fn mib(bytes: usize) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.2} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// How much of an oversized body is read and thrown away before giving up on it.
const DISCARD_FACTOR: usize = 8;

/// Reads a JSON request body of at most `limit` bytes, `[limits] max_body_bytes`.
async fn read_json(req: Request<RequestBody>, limit: usize) -> ScimResult<Value> {
    read_json_within(req, limit, "max_body_bytes").await
}

/// Reads a JSON request body of at most `limit` bytes, the value of `[limits]
/// setting`: a larger one answers 413 naming the setting and the limit in MiB (the
/// trial: "larger than 1048576 bytes" left the operator to find what sets it).
async fn read_json_within(
    req: Request<RequestBody>,
    limit: usize,
    setting: &str,
) -> ScimResult<Value> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
        if !ct.is_empty() && !ct.contains("json") {
            return Err(ScimError::new(
                415,
                None,
                "the request body must be application/scim+json (or application/json)",
            ));
        }
    }
    let mut body = req.into_body();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e {
            super::body::BodyError::TimedOut => ScimError::new(
                408,
                None,
                "the request body did not arrive in time; send it faster or in a smaller request",
            ),
            _ => ScimError::invalid_syntax("the request body could not be read"),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            bytes.extend_from_slice(&data);
        } else if seen > DISCARD_FACTOR * limit {
            // Far too large: stop reading; the connection is closed after the answer.
            break;
        }
        // Between the limit and the discard bound the rest is read and dropped, so
        // the client finishes sending and sees the 413 instead of a reset.
    }
    if seen > limit {
        return Err(ScimError::new(
            413,
            None,
            format!(
                "the request body is larger than {} ({limit} bytes), this bridge's limit set by \
                 `[limits] {setting}` in its configuration file",
                mib(limit)
            ),
        ));
    }
    let bytes = Bytes::from(bytes);
    if bytes.is_empty() {
        return Err(ScimError::invalid_syntax(
            "the request body is empty; a JSON object was expected",
        ));
    }
    let large = bytes.len() > LARGE_BODY;
    let parse = move || {
        serde_json::from_slice(&bytes).map_err(|e| {
            ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}"))
        })
    };
    if !large {
        return parse();
    }
    // Parsing megabytes takes milliseconds: not on the async workers.
    tokio::task::spawn_blocking(parse)
        .await
        .map_err(|_| ScimError::internal())?
}

/// Bodies larger than this are parsed off the async workers.
const LARGE_BODY: usize = 256 * 1024;

fn set_etag(resp: &mut Response<Body>, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        resp.headers_mut().insert(ETAG, v);
    }
}

/// A resource as the answer of a write or a read, with its ETag (and Location when
/// it was created, RFC 7644 §3.3); `204 No Content` with the ETag alone when the
/// operation rendered no representation.
fn written_response(status: StatusCode, w: Written) -> Response<Body> {
    let mut resp = match w.resource {
        Some(r) => {
            let mut json = Vec::new();
            r.write_json(&mut json);
            super::scim_json_text(status, json)
        }
        None => {
            let mut r = Response::new(Body::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
    };
    set_etag(&mut resp, &w.version);
    if status == StatusCode::CREATED {
        if let Ok(v) = HeaderValue::from_str(&w.location) {
            resp.headers_mut().insert(LOCATION, v);
        }
    }
    resp
}

/// A ListResponse (RFC 7644 §3.4.2). A cursor page (RFC 9865 §2) carries
/// `nextCursor` while more matches follow, `previousCursor` on every page but the
/// first, no `startIndex`, and `totalResults`
/// always, GET or POST `.search`, filtered or not: the table's length when
/// unfiltered, else the matches the first page counted (`carried` by the cursor).
fn list_response(page: Page, paging: &Paging, carried: Option<usize>) -> Response<Body> {
    // Written as text: resources read without a projection are JSON text already
    // (issue 10). The members are in the order a `Map` of them would serialize.
    let n = page.resources.len();
    let mut body = Vec::with_capacity(160 + n * 1024);
    body.extend_from_slice(b"{\"schemas\":[");
    json_text(&mut body, discovery::LIST_URN);
    body.push(b']');
    let cursor = !matches!(paging, Paging::Index);
    let total = match page.total.or(carried) {
        Some(total) => Some(total),
        None if !cursor => Some(n),
        None => None,
    };
    if let Some(total) = total {
        body.extend_from_slice(format!(",\"totalResults\":{total}").as_bytes());
    }
    body.extend_from_slice(format!(",\"itemsPerPage\":{n}").as_bytes());
    if cursor {
        if let Some(next) = &page.next_after {
            body.extend_from_slice(b",\"nextCursor\":");
            json_text(&mut body, &cursor_of(CURSOR_V1, next, total));
        }
        if let Some(before) = &page.prev_before {
            body.extend_from_slice(b",\"previousCursor\":");
            json_text(&mut body, &cursor_of(CURSOR_BEFORE_V1, before, total));
        }
    } else {
        body.extend_from_slice(format!(",\"startIndex\":{}", page.start_index).as_bytes());
    }
    body.extend_from_slice(b",\"Resources\":[");
    for (i, r) in page.resources.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        r.write_json(&mut body);
    }
    body.extend_from_slice(b"]}");
    super::scim_json_text(StatusCode::OK, body)
}

/// Appends `s` as a JSON string.
fn json_text(out: &mut Vec<u8>, s: &str) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A cursor (RFC 9865 §2): opaque to clients, `kind` (`c1.` for a `nextCursor`,
/// which continues after the resource `id`; `b1.` for a `previousCursor`, which
/// goes back to the page ending before it), the id in unpadded base64url and, when
/// known, `.` and the listing's total (so later pages of a filtered listing report
/// the count its first page took): only RFC 3986 unreserved characters, as RFC 9865
/// §2 requires. It names a position in id order, so it stays valid when that
/// resource is deleted between pages.
fn cursor_of(kind: &str, id: &str, total: Option<usize>) -> String {
    use base64::Engine;
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id);
    match total {
        Some(t) => format!("{kind}{id}.{t}"),
        None => format!("{kind}{id}"),
    }
}

/// The paging a cursor of [`cursor_of`] asks for and the total it carries; `None`
/// for anything this server did not issue.
fn cursor_paging(cursor: &str) -> Option<(Paging, Option<usize>)> {
    use base64::Engine;
    let (rest, before) = match cursor.strip_prefix(CURSOR_V1) {
        Some(rest) => (rest, false),
        None => (cursor.strip_prefix(CURSOR_BEFORE_V1)?, true),
    };
    let (encoded, total) = match rest.split_once('.') {
        Some((e, t)) if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) => {
            (e, Some(t.parse().ok()?))
        }
        Some(_) => return None,
        None => (rest, None),
    };
    if encoded.is_empty() || encoded.len() > MAX_CURSOR {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .ok()?;
    let id = String::from_utf8(bytes).ok()?;
    if id.chars().any(char::is_control) {
        return None;
    }
    let paging = if before {
        Paging::Before(id)
    } else {
        Paging::After(Some(id))
    };
    Some((paging, total))
}

/// The version prefix of the `nextCursor`s this server issues.
const CURSOR_V1: &str = "c1.";
/// The version prefix of the `previousCursor`s this server issues.
const CURSOR_BEFORE_V1: &str = "b1.";

/// The paging a list request asks for: `cursor` (RFC 9865 §2; present and empty for
/// the first page) or index paging. A cursor other than one [`cursor_of`] made is
/// refused with 400 `invalidCursor` (RFC 9865 §2.3: a client must not take an empty
/// page for the end of the listing), and `startIndex` beyond 1 with a cursor with
/// 400 `invalidValue`.
/// With a cursor, also the listing's total it carries.
fn paging(req: &SearchRequest) -> ScimResult<(Paging, Option<usize>)> {
    let Some(cursor) = req.cursor.as_deref() else {
        return Ok((Paging::Index, None));
    };
    if req.start_index.as_deref().is_some_and(|s| s.trim() != "1") {
        return Err(ScimError::invalid_value(
            "startIndex and cursor cannot be combined: page with one or the other",
        ));
    }
    if cursor.is_empty() {
        return Ok((Paging::After(None), None));
    }
    match cursor_paging(cursor) {
        Some(found) => Ok(found),
        None => {
            let shown: String = cursor
                .chars()
                .take(64)
                .filter(|c| !c.is_control())
                .collect();
            Err(ScimError::new(
                400,
                Some(ScimType::InvalidCursor),
                format!(
                    "the cursor \"{shown}\" is not one this server issued: send the nextCursor \
                     or previousCursor of the previous page as it came, or an empty cursor for \
                     the first page (RFC 9865)"
                ),
            ))
        }
    }
}

/// Longest encoded cursor accepted (ids are far shorter).
const MAX_CURSOR: usize = 1400;

/// The parameters of a list or `.search` request, before validation.
#[derive(Debug, Default)]
struct SearchRequest {
    filter: Option<String>,
    sort_by: Option<String>,
    sort_order: Option<String>,
    start_index: Option<String>,
    count: Option<String>,
    attributes: Option<String>,
    excluded: Option<String>,
    /// RFC 9865 `cursor`: `Some("")` asks for the first cursor page.
    cursor: Option<String>,
}

impl SearchRequest {
    fn from_query(params: &HashMap<String, String>) -> SearchRequest {
        let p = |n: &str| param(params, n).map(str::to_owned);
        SearchRequest {
            filter: p("filter"),
            sort_by: p("sortBy"),
            sort_order: p("sortOrder"),
            start_index: p("startIndex"),
            count: p("count"),
            attributes: p("attributes"),
            excluded: p("excludedAttributes"),
            cursor: p("cursor"),
        }
    }
}

/// A `.search` body (RFC 7644 §3.4.3): `attributes` may be an array or a string.
fn search_params(body: &Value) -> ScimResult<SearchRequest> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a .search body must be a JSON object"))?;
    let get = |name: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    };
    let text = |name: &str| -> ScimResult<Option<String>> {
        match get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Array(items)) => Ok(Some(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
            )),
            Some(_) => Err(ScimError::invalid_value(format!(
                "\"{name}\" has the wrong type"
            ))),
        }
    };
    Ok(SearchRequest {
        filter: text("filter")?,
        sort_by: text("sortBy")?,
        sort_order: text("sortOrder")?,
        start_index: text("startIndex")?,
        count: text("count")?,
        attributes: text("attributes")?,
        excluded: text("excludedAttributes")?,
        cursor: text("cursor")?,
    })
}

/// Whether a query is heavy work (`Limiter::heavy`): scans and sorts cost in
/// proportion to the directory, a search over every resource type too, and a large
/// page in proportion to its count (so that clients holding many large pages
/// unread, e.g. HTTP/2 streams never read, cannot make the server render more at a
/// time than the heavy-work limits allow). An indexed lookup of a small page is not.
fn is_heavy(params: &ListParams, rt: Option<ResourceType>) -> bool {
    let types: Vec<ResourceType> = rt.map_or_else(|| ResourceType::ALL.to_vec(), |t| vec![t]);
    params.sort_by.is_some()
        || params.count > LARGE_PAGE
        || types.len() > 1
        || params.filter.as_ref().is_some_and(|f| {
            types
                .iter()
                .any(|t| crate::scim::query::plan(f, *t).is_none())
        })
}

/// A page of more than this many resources is heavy work (`Limiter::heavy`); the
/// identity providers page by 100 or less (Okta imports ask for 100; Entra ID
/// looks resources up by filter).
const LARGE_PAGE: usize = 200;

async fn search(
    state: &AppState,
    rt: Option<ResourceType>,
    req: &SearchRequest,
    base: &str,
    principal: &Principal,
) -> Handled {
    let limits = &state.app.config.limits;
    let params = ListParams::parse(
        req.filter.as_deref(),
        req.sort_by.as_deref(),
        req.sort_order.as_deref(),
        req.start_index.as_deref(),
        req.count.as_deref(),
        limits.default_page_size,
        limits.max_page_size,
    )?;
    let scans = is_heavy(&params, rt);
    let _heavy = if scans {
        let subject = Subject::Token(principal.token_id.clone());
        match state.app.limiter.heavy(subject).await {
            Ok(p) => Some(p),
            Err(t) => return Ok(super::throttled(&t, true)),
        }
    } else {
        None
    };
    let (paging, carried) = paging(req)?;
    let query = Query {
        rt,
        params,
        projection: Projection::parse(req.attributes.as_deref(), req.excluded.as_deref())?,
        paging: paging.clone(),
    };
    let page = state.app.query(query, base).await.map_err(store_error)?;
    let answer = list_response(page, &paging, carried);
    if _heavy.is_some() {
        crate::memory::release_soon();
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(filter: Option<&str>, sort_by: Option<&str>, count: Option<&str>) -> ListParams {
        ListParams::parse(filter, sort_by, None, None, count, 100, 1000).unwrap()
    }

    #[test]
    fn scans_sorts_large_pages_and_root_searches_are_heavy_indexed_small_pages_are_not() {
        let user = Some(ResourceType::User);
        let lookup = Some("userName eq \"a@example.com\"");
        assert!(!is_heavy(&params(None, None, None), user));
        assert!(!is_heavy(&params(lookup, None, Some("100")), user));
        assert!(!is_heavy(&params(None, None, Some("200")), user));
        assert!(is_heavy(&params(None, None, Some("201")), user));
        assert!(is_heavy(&params(None, None, Some("1000")), user));
        assert!(is_heavy(&params(None, Some("userName"), None), user));
        assert!(is_heavy(&params(Some("title co \"x\""), None, None), user));
        assert!(is_heavy(&params(lookup, None, None), None));
    }
}
