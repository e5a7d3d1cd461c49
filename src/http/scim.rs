//! The SCIM endpoints below `/scim/v2`: authentication, parsing HTTP into SCIM
//! operations, calling the core and the store, and writing SCIM responses.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH, LOCATION};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value};

use super::{scim_error, scim_json, store_error, AppState, Body};
use crate::auth::{authenticate, Principal};
use crate::clock::Timestamp;
use crate::scim::discovery::{self, Capabilities};
use crate::scim::error::{ScimError, ScimResult};
use crate::scim::filter::{self, Filter};
use crate::scim::patch;
use crate::scim::query::{self, ListParams, Lookup};
use crate::scim::resource::{check_request_limits, normalize, render, Attributes, Projection};
use crate::scim::schema::ResourceType;
use crate::store::{
    Actor, MemberRef, MembersChange, Scope, Snapshot, StoreResult, StoredResource, Update,
};

pub(super) type Handled = Result<Response<Body>, ScimError>;

/// Query-string parameters, percent-decoded; a repeated name keeps its first value.
fn query_params(req: &Request<Incoming>) -> HashMap<String, String> {
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

/// The SCIM base URL for `location` and `$ref`: the configured public URL, else the
/// scheme and Host of the request.
fn base_url(state: &AppState, req: &Request<Incoming>) -> String {
    if let Some(u) = &state.app.config.public_url {
        return format!("{u}{}", super::SCIM_PREFIX);
    }
    let scheme = if state.certs.is_some() {
        "https"
    } else {
        req.headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .filter(|p| *p == "https" || *p == "http")
            .unwrap_or("http")
    };
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| state.app.config.listen.to_string());
    format!("{scheme}://{host}{}", super::SCIM_PREFIX)
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

pub async fn handle(state: &Arc<AppState>, req: Request<Incoming>, rest: &str) -> Response<Body> {
    let method = req.method().clone();
    let mut token_name = None;
    let response = match handle_inner(state, req, rest, &mut token_name).await {
        Ok(r) => r,
        Err(e) => scim_error(&e),
    };
    // Kept for the admin dashboard, refusals included.
    state
        .activity
        .record(method.as_str(), rest, token_name, &response);
    response
}

async fn handle_inner(
    state: &Arc<AppState>,
    req: Request<Incoming>,
    rest: &str,
    token_name: &mut Option<String>,
) -> Handled {
    let now = Timestamp::now();
    let header = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok());
    let principal = match authenticate(&state.app.store, header, now).map_err(store_error)? {
        Ok(p) => p,
        Err(why) => {
            tracing::warn!(reason = why.as_str(), "SCIM authentication failed");
            state.metrics.auth_failure(why.as_str());
            return Err(ScimError::new(
                401,
                None,
                "authentication required: send \"Authorization: Bearer <token>\" with a valid, unrevoked token",
            ));
        }
    };
    state.app.note_token_use(&principal.token_id, now);
    *token_name = Some(principal.name.clone());

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
    let is_write = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && segments.last().is_none_or(|s| *s != ".search");
    if is_write {
        if let Some((status, why)) = state.app.migration.write_refusal() {
            let mut e = ScimError::new(status, None, why);
            if status == 503 {
                e.detail.push_str(" (Retry-After: 10)");
            }
            return Err(e);
        }
    }
    if is_write && principal.scope == Scope::ReadOnly {
        return Err(ScimError::new(
            403,
            None,
            format!(
                "the token \"{}\" is read-only; this request needs a read-write token",
                principal.name
            ),
        ));
    }
    let base = base_url(state, &req);
    let params = query_params(&req);
    if let Some(rt) = segments.first().and_then(|s| resource_type_of(s)) {
        let endpoint = ResourceEndpoint {
            state,
            rt,
            principal: &principal,
            params: &params,
            base: &base,
        };
        return endpoint.handle(req, method, &segments[1..]).await;
    }
    match (method, segments.as_slice()) {
        (Method::GET, ["ServiceProviderConfig"]) => Ok(scim_json(
            StatusCode::OK,
            &discovery::service_provider_config(&capabilities(state), &base),
        )),
        (Method::GET, ["Schemas"]) => {
            let docs = crate::scim::schema::all_schemas()
                .iter()
                .map(|s| discovery::schema_json(s, &base))
                .collect();
            Ok(scim_json(StatusCode::OK, &discovery::list_response(docs)))
        }
        (Method::GET, ["Schemas", id @ ..]) => {
            // Ids are URNs, or (Entra's ADSCIM schema) an http URL, percent-encoded in
            // its location or sent with its slashes.
            let raw = id.join("/");
            let id: String =
                form_urlencoded::parse(format!("i={}", raw.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or(raw);
            match discovery::find_schema(&id) {
                Some(s) => Ok(scim_json(StatusCode::OK, &discovery::schema_json(s, &base))),
                None => Err(ScimError::not_found(format!("no schema \"{id}\""))),
            }
        }
        (Method::GET, ["ResourceTypes"]) => {
            let docs = ResourceType::ALL
                .iter()
                .map(|rt| discovery::resource_type_json(*rt, &base))
                .collect();
            Ok(scim_json(StatusCode::OK, &discovery::list_response(docs)))
        }
        (Method::GET, ["ResourceTypes", id]) => match ResourceType::from_name(id) {
            Some(rt) => Ok(scim_json(
                StatusCode::OK,
                &discovery::resource_type_json(rt, &base),
            )),
            None => Err(ScimError::not_found(format!("no resource type \"{id}\""))),
        },
        (Method::POST, [".search"]) => {
            let body = read_json(req, state.app.config.limits.max_body_bytes).await?;
            search(state, None, &search_params(&body)?, &base).await
        }
        (Method::POST, ["Bulk"]) => {
            let body = read_json(req, state.app.config.limits.bulk_max_payload_bytes).await?;
            super::bulk::handle(state, body, &principal, &base).await
        }
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

/// A request below `/Users` or `/Groups`.
struct ResourceEndpoint<'a> {
    state: &'a Arc<AppState>,
    rt: ResourceType,
    principal: &'a Principal,
    params: &'a HashMap<String, String>,
    base: &'a str,
}

impl ResourceEndpoint<'_> {
    async fn handle(&self, req: Request<Incoming>, method: Method, tail: &[&str]) -> Handled {
        let (state, rt, principal, base) = (self.state, self.rt, self.principal, self.base);
        let limit = state.app.config.limits.max_body_bytes;
        match (method, tail) {
            (Method::GET, []) => {
                search(
                    state,
                    Some(rt),
                    &SearchRequest::from_query(self.params),
                    base,
                )
                .await
            }
            (Method::POST, [".search"]) => {
                let body = read_json(req, limit).await?;
                search(state, Some(rt), &search_params(&body)?, base).await
            }
            (Method::POST, []) => {
                let projection = projection(self.params)?;
                let body = read_json(req, limit).await?;
                create(state, rt, body, principal, projection, base).await
            }
            (Method::GET, [id]) => {
                let if_none_match = header_str(&req, IF_NONE_MATCH);
                get(
                    state,
                    rt,
                    id,
                    projection(self.params)?,
                    if_none_match.as_deref(),
                    base,
                )
            }
            (Method::PUT, [id]) => {
                let (projection, if_match) = (projection(self.params)?, header_str(&req, IF_MATCH));
                let body = read_json(req, limit).await?;
                replace(
                    state,
                    rt,
                    (*id).to_owned(),
                    body,
                    if_match,
                    principal,
                    projection,
                    base,
                )
                .await
            }
            (Method::PATCH, [id]) => {
                let (projection, if_match) = (projection(self.params)?, header_str(&req, IF_MATCH));
                let body = read_json(req, limit).await?;
                patch_resource(
                    state,
                    rt,
                    (*id).to_owned(),
                    body,
                    if_match,
                    principal,
                    projection,
                    base,
                )
                .await
            }
            (Method::DELETE, [id]) => {
                delete(
                    state,
                    rt,
                    (*id).to_owned(),
                    header_str(&req, IF_MATCH),
                    principal,
                )
                .await
            }
            (_, [] | [_]) => Err(ScimError::new(
                405,
                None,
                "this method is not allowed on this endpoint",
            )),
            _ => Err(ScimError::not_found(format!(
                "no SCIM endpoint at {}{}/{}",
                super::SCIM_PREFIX,
                rt.endpoint(),
                tail.join("/")
            ))),
        }
    }
}

fn header_str(req: &Request<Incoming>, name: hyper::header::HeaderName) -> Option<String> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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

/// How much of an oversized body is read and thrown away before giving up on it.
const DISCARD_FACTOR: usize = 8;

/// Reads a JSON request body within the size limit.
async fn read_json(req: Request<Incoming>, limit: usize) -> ScimResult<Value> {
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
        let frame =
            frame.map_err(|_| ScimError::invalid_syntax("the request body could not be read"))?;
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
            format!("the request body is larger than {limit} bytes"),
        ));
    }
    let bytes = Bytes::from(bytes);
    if bytes.is_empty() {
        return Err(ScimError::invalid_syntax(
            "the request body is empty; a JSON object was expected",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("the request body is not valid JSON: {e}")))
}

/// Renders a stored resource with its references (when the projection wants them)
/// and the meta its representation has (a user's follows its groups).
fn full_resource(
    snapshot: &Snapshot,
    rt: ResourceType,
    mut r: StoredResource,
    with_refs: bool,
    base: &str,
) -> StoreResult<Map<String, Value>> {
    snapshot.derive_meta(rt, &mut r)?;
    let refs = if with_refs {
        Some(snapshot.references(rt, &r.id)?)
    } else {
        None
    };
    Ok(render(rt, &r.id, r.attrs, &r.meta, refs.as_deref(), base))
}

fn refs_attr(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::Group => "members",
        ResourceType::User => "groups",
    }
}

fn resource_response(
    state: &AppState,
    rt: ResourceType,
    r: StoredResource,
    projection: &Projection,
    base: &str,
    status: StatusCode,
) -> Handled {
    let mut r = r;
    let snapshot = state.app.store.snapshot().map_err(store_error)?;
    snapshot.derive_meta(rt, &mut r).map_err(store_error)?;
    let etag = r.meta.etag();
    let full = full_resource(
        &snapshot,
        rt,
        r,
        projection.includes(rt, refs_attr(rt)),
        base,
    )
    .map_err(store_error)?;
    let location = full
        .get("meta")
        .and_then(|m| m.get("location"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let body = Value::Object(projection.apply(rt, full));
    let mut resp = scim_json(status, &body);
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(ETAG, v);
    }
    if status == StatusCode::CREATED {
        if let Some(v) = location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            resp.headers_mut().insert(LOCATION, v);
        }
    }
    Ok(resp)
}

/// Normalizes a POST/PUT body (or Bulk data) after checking it against the request
/// limits, and applies the unknown-attribute policy.
fn admitted(
    state: &AppState,
    rt: ResourceType,
    body: &Value,
    now: Timestamp,
) -> ScimResult<Attributes> {
    check_request_limits(body, &state.app.config.limits.request())?;
    let normalized = normalize(rt, body)?;
    state.app.unknown.admit(rt, &normalized.unknown, now)?;
    Ok(normalized.attrs)
}

/// Takes `members` out of normalized Group attributes as member references.
fn take_members(attrs: &mut Attributes) -> ScimResult<Option<Vec<MemberRef>>> {
    let Some(list) = attrs.remove("members") else {
        return Ok(None);
    };
    let items = list.as_array().cloned().unwrap_or_default();
    let mut out = Vec::with_capacity(items.len());
    for m in items {
        let Some(id) = m.get("value").and_then(Value::as_str) else {
            return Err(ScimError::invalid_value(
                "each member needs a \"value\" with the member's id",
            ));
        };
        let rt = match m.get("type").and_then(Value::as_str) {
            None => None,
            Some(t) => Some(ResourceType::from_name(t).ok_or_else(|| {
                ScimError::invalid_value(format!("member type \"{t}\" is not User or Group"))
            })?),
        };
        out.push(MemberRef {
            id: id.to_owned(),
            rt,
            display: m.get("display").and_then(Value::as_str).map(str::to_owned),
        });
    }
    Ok(Some(out))
}

pub(super) async fn delete(
    state: &AppState,
    rt: ResourceType,
    id: String,
    if_match: Option<String>,
    principal: &Principal,
) -> Handled {
    let now = Timestamp::now();
    state
        .app
        .store
        .delete(rt, id, if_match, actor(principal), now)
        .await
        .map_err(store_error)?;
    let mut r = Response::new(Body::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    Ok(r)
}

pub(super) async fn create(
    state: &AppState,
    rt: ResourceType,
    body: Value,
    principal: &Principal,
    projection: Projection,
    base: &str,
) -> Handled {
    let now = Timestamp::now();
    let mut attrs = admitted(state, rt, &body, now)?;
    let members = take_members(&mut attrs)?.unwrap_or_default();
    let stored = state
        .app
        .store
        .create(rt, attrs, members, actor(principal), now)
        .await
        .map_err(store_error)?;
    resource_response(state, rt, stored, &projection, base, StatusCode::CREATED)
}

fn get(
    state: &AppState,
    rt: ResourceType,
    id: &str,
    projection: Projection,
    if_none_match: Option<&str>,
    base: &str,
) -> Handled {
    let snapshot = state.app.store.snapshot().map_err(store_error)?;
    let Some(mut r) = snapshot.get(rt, id).map_err(store_error)? else {
        return Err(ScimError::not_found(format!(
            "{} {id} not found",
            rt.name()
        )));
    };
    snapshot.derive_meta(rt, &mut r).map_err(store_error)?;
    let etag = r.meta.etag();
    if let Some(inm) = if_none_match {
        if inm.split(',').map(str::trim).any(|t| t == "*" || t == etag) {
            let mut resp = Response::new(Body::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_MODIFIED;
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(ETAG, v);
            }
            return Ok(resp);
        }
    }
    let full = full_resource(
        &snapshot,
        rt,
        r,
        projection.includes(rt, refs_attr(rt)),
        base,
    )
    .map_err(store_error)?;
    let mut resp = scim_json(StatusCode::OK, &Value::Object(projection.apply(rt, full)));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        resp.headers_mut().insert(ETAG, v);
    }
    Ok(resp)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn replace(
    state: &AppState,
    rt: ResourceType,
    id: String,
    body: Value,
    if_match: Option<String>,
    principal: &Principal,
    projection: Projection,
    base: &str,
) -> Handled {
    let now = Timestamp::now();
    let mut attrs = admitted(state, rt, &body, now)?;
    let members = take_members(&mut attrs)?;
    let stored = state
        .app
        .store
        .update(
            rt,
            id,
            if_match,
            false,
            actor(principal),
            now,
            move |_current| {
                let members = match rt {
                    ResourceType::Group => MembersChange::Set(members.unwrap_or_default()),
                    ResourceType::User => MembersChange::Keep,
                };
                Ok(Update { attrs, members })
            },
        )
        .await
        .map_err(store_error)?;
    resource_response(state, rt, stored, &projection, base, StatusCode::OK)
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn patch_resource(
    state: &AppState,
    rt: ResourceType,
    id: String,
    body: Value,
    if_match: Option<String>,
    principal: &Principal,
    projection: Projection,
    base: &str,
) -> Handled {
    check_request_limits(&body, &state.app.config.limits.request())?;
    let ops = patch::parse_request(&body)?;
    let now = Timestamp::now();
    // Adding or removing members of a large group must not cost the group's size:
    // such PATCHes change the membership rows directly.
    if let Some(delta) = patch::member_delta(rt, &ops) {
        let def = rt
            .schema()
            .attr("members")
            .ok_or_else(ScimError::internal)?;
        let mut holder = Attributes::new();
        let (added, unknown) =
            crate::scim::resource::normalize_value(def, &Value::Array(delta.add))?;
        state.app.unknown.admit(rt, &unknown, now)?;
        if let Some(v) = added {
            holder.insert("members".into(), v);
        }
        let add = take_members(&mut holder)?.unwrap_or_default();
        let remove = delta.remove;
        let stored = state
            .app
            .store
            .update(
                rt,
                id,
                if_match,
                false,
                actor(principal),
                now,
                move |current| {
                    Ok(Update {
                        attrs: current.attrs,
                        members: MembersChange::Delta { add, remove },
                    })
                },
            )
            .await
            .map_err(store_error)?;
        return resource_response(state, rt, stored, &projection, base, StatusCode::OK);
    }
    let ledger = state.app.unknown.clone();
    let stored = state
        .app
        .store
        .update(
            rt,
            id,
            if_match,
            true,
            actor(principal),
            now,
            move |current| {
                let mut resource = current.attrs;
                resource.insert("id".into(), Value::String(current.id.clone()));
                let mut unknown = patch::apply(rt, &mut resource, &ops)?;
                let normalized = normalize(rt, &Value::Object(resource))?;
                unknown.extend(normalized.unknown);
                ledger.admit(rt, &unknown, now)?;
                let mut attrs = normalized.attrs;
                let members = match rt {
                    ResourceType::Group => {
                        MembersChange::Set(take_members(&mut attrs)?.unwrap_or_default())
                    }
                    ResourceType::User => MembersChange::Keep,
                };
                Ok(Update { attrs, members })
            },
        )
        .await
        .map_err(store_error)?;
    resource_response(state, rt, stored, &projection, base, StatusCode::OK)
}

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
    })
}

async fn search(
    state: &Arc<AppState>,
    rt: Option<ResourceType>,
    req: &SearchRequest,
    base: &str,
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
    let projection = Projection::parse(req.attributes.as_deref(), req.excluded.as_deref())?;
    let types: Vec<ResourceType> = match rt {
        Some(rt) => vec![rt],
        None => ResourceType::ALL.to_vec(),
    };
    if let Some(f) = &params.filter {
        if types.len() == 1 {
            filter::validate(f, types[0])?;
        }
    }
    let state2 = state.clone();
    let base = base.to_owned();
    tokio::task::spawn_blocking(move || run_search(&state2, &types, &params, &projection, &base))
        .await
        .map_err(|_| ScimError::internal())?
}

fn run_search(
    state: &AppState,
    types: &[ResourceType],
    params: &ListParams,
    projection: &Projection,
    base: &str,
) -> Handled {
    let snapshot = state.app.store.snapshot().map_err(store_error)?;
    let start = params.start_index - 1;
    let total: usize;
    let mut page: Vec<(ResourceType, Map<String, Value>)> = Vec::new();
    let needs_all = params.sort_by.is_some() || types.len() > 1;

    // Unfiltered, unsorted listing of one type: page straight off the table.
    if params.filter.is_none() && !needs_all {
        let rt = types[0];
        total = snapshot.count(rt).map_err(store_error)? as usize;
        let mut index = 0usize;
        let with_refs = projection.includes(rt, refs_attr(rt));
        snapshot
            .scan(rt, |r| {
                if index >= start + params.count {
                    return Ok(false);
                }
                if index >= start {
                    page.push((rt, full_resource(&snapshot, rt, r, with_refs, base)?));
                }
                index += 1;
                Ok(true)
            })
            .map_err(store_error)?;
    } else {
        // Unsorted: count every match but keep only the requested page in memory.
        let sorting = params.sort_by.is_some();
        let mut matched: Vec<(ResourceType, Map<String, Value>)> = Vec::new();
        let mut count = 0usize;
        for &rt in types {
            let wants_refs = projection.includes(rt, refs_attr(rt));
            let refs_in_filter = params
                .filter
                .as_ref()
                .is_some_and(|f| query::mentions(f, refs_attr(rt)));
            let mut consider = |r: StoredResource| -> StoreResult<()> {
                // Evaluate without loading references when the filter can do without.
                let resolved: Option<Cow<'_, Filter>> = match &params.filter {
                    Some(f) if refs_in_filter && rt == ResourceType::Group => {
                        let mut err = None;
                        let resolved = query::resolve_member_checks(f, &mut |m| {
                            snapshot.is_member(&r.id, m).unwrap_or_else(|e| {
                                err = Some(e);
                                false
                            })
                        });
                        if let Some(e) = err {
                            return Err(e);
                        }
                        resolved.map(Cow::Owned)
                    }
                    Some(_) if refs_in_filter => None,
                    Some(f) => Some(Cow::Borrowed(f)),
                    None => None,
                };
                let (eval_refs, filter) = match (&params.filter, resolved) {
                    (None, _) => (false, None),
                    (Some(_), Some(r)) => (false, Some(r)),
                    (Some(f), None) => (true, Some(Cow::Borrowed(f))),
                };
                let id = r.id.clone();
                let mut full =
                    full_resource(&snapshot, rt, r, eval_refs || (wants_refs && sorting), base)?;
                if filter.is_some_and(|f| !filter::matches(&f, rt, &full)) {
                    return Ok(());
                }
                let in_page = sorting || (count >= start && count < start + params.count);
                count += 1;
                if in_page {
                    if wants_refs && !eval_refs && !sorting {
                        let refs = snapshot.references(rt, &id)?;
                        crate::scim::resource::add_references(rt, &mut full, &refs, base);
                    }
                    matched.push((rt, full));
                }
                Ok(())
            };
            let lookup = params.filter.as_ref().and_then(|f| query::plan(f, rt));
            match lookup {
                Some(lookup) => {
                    let mut ids = execute(&snapshot, rt, &lookup).map_err(store_error)?;
                    ids.sort();
                    ids.dedup();
                    for id in ids {
                        if let Some(r) = snapshot.get(rt, &id).map_err(store_error)? {
                            consider(r).map_err(store_error)?;
                        }
                    }
                }
                None => {
                    snapshot
                        .scan(rt, |r| {
                            consider(r)?;
                            Ok(true)
                        })
                        .map_err(store_error)?;
                }
            }
        }
        total = count;
        if let Some(path) = &params.sort_by {
            query::sort(&mut matched, path, params.descending);
            page = matched.into_iter().skip(start).take(params.count).collect();
        } else {
            page = matched;
        }
    }
    let resources: Vec<Value> = page
        .into_iter()
        .map(|(rt, r)| Value::Object(projection.apply(rt, r)))
        .collect();
    let body = serde_json::json!({
        "schemas": [discovery::LIST_URN],
        "totalResults": total,
        "itemsPerPage": resources.len(),
        "startIndex": params.start_index,
        "Resources": resources,
    });
    Ok(scim_json(StatusCode::OK, &body))
}

/// Runs an index plan.
fn execute(snapshot: &Snapshot, rt: ResourceType, lookup: &Lookup) -> StoreResult<Vec<String>> {
    Ok(match lookup {
        Lookup::Id(id) => vec![id.clone()],
        Lookup::UserName(n) => snapshot.find_by_user_name(n)?.into_iter().collect(),
        Lookup::ExternalId(e) => snapshot.find_by_external_id(rt, e)?,
        Lookup::GroupName(n) => snapshot.find_groups_by_name(n)?,
        Lookup::Email(e) => snapshot.find_users_by_email(e)?,
        Lookup::All(parts) => {
            let mut sets = parts.iter().map(|p| execute(snapshot, rt, p));
            let mut acc = match sets.next() {
                Some(s) => s?,
                None => Vec::new(),
            };
            for s in sets {
                let s = s?;
                acc.retain(|id| s.contains(id));
            }
            acc
        }
        Lookup::Any(parts) => {
            let mut acc = Vec::new();
            for p in parts {
                acc.extend(execute(snapshot, rt, p)?);
            }
            acc
        }
    })
}
