//! `POST /Bulk` (RFC 7644 §3.7): parses a BulkRequest, turns each of its operations
//! into the same `app::Operation` a single request becomes and executes it through
//! the application layer, resolving `bulkId:` references to the ids created earlier
//! in the request and stopping after `failOnErrors` errors; then writes the
//! BulkResponse. Limits are announced in ServiceProviderConfig and enforced (413
//! tooMany). It knows the Bulk wire format, not the single-request endpoints.

use std::collections::HashMap;

use hyper::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::{scim_json, store_error, AppState, Handled};
use crate::app::{Operation, Outcome, Reply};
use crate::auth::Principal;
use crate::scim::error::{ScimError, ScimResult, ScimType};
use crate::scim::schema::ResourceType;
use crate::store::{Actor, Target};

pub(crate) const BULK_REQUEST_URN: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";
pub(crate) const BULK_RESPONSE_URN: &str = "urn:ietf:params:scim:api:messages:2.0:BulkResponse";

struct BulkOp {
    method: Method,
    bulk_id: Option<String>,
    path: String,
    data: Option<Value>,
    version: Option<String>,
}

fn parse_ops(body: &Value, max_ops: usize) -> ScimResult<(Vec<BulkOp>, Option<usize>)> {
    let obj = body
        .as_object()
        .ok_or_else(|| ScimError::invalid_syntax("a bulk request must be a JSON object"))?;
    let schemas_ok = obj
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|u| u.as_str() == Some(BULK_REQUEST_URN)));
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!(
            "\"schemas\" must contain {BULK_REQUEST_URN}"
        )));
    }
    let fail_on_errors = match obj.get("failOnErrors") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|v| v >= 1) => {
            n.as_u64().map(|v| v as usize)
        }
        Some(_) => {
            return Err(ScimError::invalid_value(
                "failOnErrors must be a positive integer",
            ))
        }
    };
    let ops = obj
        .get("Operations")
        .and_then(Value::as_array)
        .ok_or_else(|| ScimError::invalid_syntax("\"Operations\" must be an array"))?;
    if ops.len() > max_ops {
        return Err(ScimError::new(
            413,
            Some(ScimType::TooMany),
            format!(
                "a bulk request may hold at most {max_ops} operations; this one has {}",
                ops.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        let method = op
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| match m.to_ascii_uppercase().as_str() {
                "POST" => Some(Method::POST),
                "PUT" => Some(Method::PUT),
                "PATCH" => Some(Method::PATCH),
                "DELETE" => Some(Method::DELETE),
                _ => None,
            })
            .ok_or_else(|| {
                ScimError::invalid_value(
                    "each bulk operation needs a method: POST, PUT, PATCH or DELETE",
                )
            })?;
        let path = op
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| ScimError::invalid_value("each bulk operation needs a path"))?
            .to_owned();
        let bulk_id = op.get("bulkId").and_then(Value::as_str).map(str::to_owned);
        if method == Method::POST && bulk_id.is_none() {
            return Err(ScimError::invalid_value(
                "a bulk POST operation needs a bulkId",
            ));
        }
        out.push(BulkOp {
            method,
            bulk_id,
            path,
            data: op.get("data").cloned(),
            version: op.get("version").and_then(Value::as_str).map(str::to_owned),
        });
    }
    Ok((out, fail_on_errors))
}

/// Replaces `bulkId:X` in every string of `v`; false if a reference is unknown.
fn resolve_refs(v: &mut Value, ids: &HashMap<String, String>) -> bool {
    match v {
        Value::String(s) => match s.strip_prefix("bulkId:") {
            Some(r) => match ids.get(r) {
                Some(id) => {
                    *s = id.clone();
                    true
                }
                None => false,
            },
            None => true,
        },
        Value::Array(items) => items.iter_mut().all(|i| resolve_refs(i, ids)),
        Value::Object(m) => m.values_mut().all(|i| resolve_refs(i, ids)),
        _ => true,
    }
}

/// Replaces a `bulkId:X` last segment of a path (`/Users/bulkId:X`); `None` while
/// X is not created yet.
fn resolve_path(path: &str, ids: &HashMap<String, String>) -> Option<String> {
    match path.rsplit_once('/') {
        Some((head, last)) => match last.strip_prefix("bulkId:") {
            Some(r) => ids.get(r).map(|id| format!("{head}/{id}")),
            None => Some(path.to_owned()),
        },
        None => Some(path.to_owned()),
    }
}

/// `/Users`, `/Users/{id}`, `/Groups`, `/Groups/{id}`.
fn parse_path(path: &str) -> Option<(ResourceType, Option<String>)> {
    let mut parts = path.trim_matches('/').splitn(2, '/');
    let rt = match parts.next()? {
        "Users" => ResourceType::User,
        "Groups" => ResourceType::Group,
        _ => return None,
    };
    match parts.next() {
        None => Some((rt, None)),
        Some(id) if !id.is_empty() && !id.contains('/') => Some((rt, Some(id.to_owned()))),
        _ => None,
    }
}

/// Parses a BulkRequest and builds each operation as [`handle`] does, every
/// `bulkId:` reference resolved to a placeholder id, then checks each body with
/// the SCIM core (a resource normalised, a PATCH request parsed); executes nothing.
/// The request's refusal, or one result per operation. For the fuzz target and its
/// replay test (`fuzz/targets.rs`): whatever the body, an answer, never a panic.
pub(crate) fn check_request(body: &Value, max_ops: usize) -> ScimResult<Vec<ScimResult<()>>> {
    let (ops, _) = parse_ops(body, max_ops)?;
    let ids: HashMap<String, String> = ops
        .iter()
        .filter_map(|op| op.bulk_id.clone())
        .map(|b| {
            let id = format!("bulk-{}", b.len());
            (b, id)
        })
        .collect();
    Ok(ops
        .iter()
        .map(|op| {
            let mut data = op.data.clone();
            if let Some(d) = data.as_mut() {
                resolve_refs(d, &ids);
            }
            let path = resolve_path(&op.path, &ids).unwrap_or_default();
            match operation(op, &path, data)? {
                Operation::Create { rt, resource, .. }
                | Operation::Replace {
                    target: Target { rt, .. },
                    resource,
                    ..
                } => crate::scim::resource::normalize(rt, &resource).map(drop),
                Operation::Patch { request, .. } => {
                    crate::scim::patch::parse_request(&request).map(drop)
                }
                _ => Ok(()),
            }
        })
        .collect())
}

pub(crate) async fn handle(
    state: &AppState,
    body: Value,
    principal: &Principal,
    base: &str,
) -> Handled {
    let actor = &Actor {
        token_id: Some(principal.token_id.clone()),
        name: principal.name.clone(),
    };
    let (ops, fail_on_errors) = parse_ops(&body, state.app.config.limits.bulk_max_operations)?;
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut results: Vec<Option<Value>> = vec![None; ops.len()];
    let mut pending: Vec<usize> = (0..ops.len()).collect();
    let mut errors = 0usize;
    // Operations whose bulkId references are not yet resolvable wait for a later pass
    // (RFC 7644 §3.7.2 allows forward references); what never resolves fails.
    let mut stopped = false;
    let mut revoked = false;
    loop {
        let mut progressed = false;
        let mut waiting = Vec::new();
        for i in std::mem::take(&mut pending) {
            let op = &ops[i];
            let mut data = op.data.clone();
            let path = resolve_path(&op.path, &ids);
            let resolvable = data.as_mut().is_none_or(|d| resolve_refs(d, &ids)) && path.is_some();
            if !resolvable {
                waiting.push(i);
                continue;
            }
            progressed = true;
            // A token revoked while the request runs stops it before the next write.
            let now = crate::clock::Timestamp::now();
            if !crate::auth::still_valid(&state.app.store, principal, now).unwrap_or(false) {
                tracing::warn!(token = %principal.name, "token revoked or expired during a Bulk request; stopping it");
                revoked = true;
                waiting.push(i);
                break;
            }
            let path = path.unwrap_or_default();
            let outcome = run_op(state, op, &path, data, actor, base).await;
            let entry = match outcome {
                Ok((status, location, version, id)) => {
                    if let (Some(b), Some(id)) = (&op.bulk_id, id) {
                        ids.insert(b.clone(), id);
                    }
                    let mut m = entry_head(op);
                    if let Some(l) = location {
                        m.insert("location".into(), json!(l));
                    }
                    if let Some(v) = version {
                        m.insert("version".into(), json!(v));
                    }
                    m.insert("status".into(), json!(status.to_string()));
                    Value::Object(m)
                }
                Err(e) => {
                    errors += 1;
                    error_entry(op, &e)
                }
            };
            results[i] = Some(entry);
            if fail_on_errors.is_some_and(|limit| errors >= limit) {
                stopped = true;
                break;
            }
        }
        if revoked {
            // Whatever this pass had not reached yet is not processed either.
            let reached: std::collections::HashSet<usize> = waiting.iter().copied().collect();
            waiting
                .extend((0..ops.len()).filter(|i| results[*i].is_none() && !reached.contains(i)));
            for &i in &waiting {
                let e = ScimError::new(
                    401,
                    None,
                    "the token was revoked or expired while this Bulk request ran; the operation was not processed",
                );
                results[i] = Some(error_entry(&ops[i], &e));
            }
            waiting.clear();
        }
        pending = waiting;
        if stopped {
            // failOnErrors reached: the rest is not processed (RFC 7644 §3.7.3).
            pending.clear();
            break;
        }
        if pending.is_empty() || !progressed {
            break;
        }
    }
    for i in pending {
        if results[i].is_none() {
            let e = ScimError::new(
                409,
                None,
                "the operation refers to a bulkId that no operation of this request created",
            );
            results[i] = Some(error_entry(&ops[i], &e));
        }
    }
    let operations: Vec<Value> = results.into_iter().flatten().collect();
    Ok(scim_json(
        StatusCode::OK,
        &json!({"schemas": [BULK_RESPONSE_URN], "Operations": operations}),
    ))
}

/// `method` and `bulkId` of an operation's entry in the BulkResponse.
fn entry_head(op: &BulkOp) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("method".into(), json!(op.method.as_str()));
    if let Some(b) = &op.bulk_id {
        m.insert("bulkId".into(), json!(b));
    }
    m
}

fn error_entry(op: &BulkOp, e: &ScimError) -> Value {
    let mut m = entry_head(op);
    m.insert("status".into(), json!(e.status.to_string()));
    m.insert("response".into(), e.to_json());
    Value::Object(m)
}

/// The `Operation` a bulk operation asks for, its `path` and `data` already resolved.
fn operation(op: &BulkOp, path: &str, data: Option<Value>) -> ScimResult<Operation> {
    let Some((rt, id)) = parse_path(path) else {
        return Err(ScimError::invalid_path(format!(
            "\"{path}\" is not /Users, /Groups or one of their resources"
        )));
    };
    let need_data =
        || data.ok_or_else(|| ScimError::invalid_syntax("this operation needs \"data\""));
    let target = |id| Target {
        rt,
        id,
        if_match: op.version.clone(),
    };
    Ok(match (&op.method, id) {
        (&Method::POST, None) => Operation::Create {
            rt,
            resource: need_data()?,
            reply: Reply::VersionOnly,
        },
        (&Method::PUT, Some(id)) => Operation::Replace {
            target: target(id),
            resource: need_data()?,
            reply: Reply::VersionOnly,
        },
        (&Method::PATCH, Some(id)) => Operation::Patch {
            target: target(id),
            request: need_data()?,
            reply: Reply::VersionOnly,
        },
        (&Method::DELETE, Some(id)) => Operation::Delete { target: target(id) },
        _ => {
            return Err(ScimError::invalid_path(format!(
                "{} is not allowed on {path}",
                op.method
            )))
        }
    })
}

/// Runs one operation; returns (status, location, version, created id).
async fn run_op(
    state: &AppState,
    op: &BulkOp,
    path: &str,
    data: Option<Value>,
    actor: &Actor,
    base: &str,
) -> ScimResult<(u16, Option<String>, Option<String>, Option<String>)> {
    let operation = operation(op, path, data)?;
    // A Bulk request has one audit entry for the whole request (`scim::handle`).
    let outcome = state
        .app
        .execute(operation, actor, base, None)
        .await
        .map_err(store_error)?;
    Ok(match outcome {
        Outcome::Resource(w) if op.method == Method::POST => {
            (201, Some(w.location), Some(w.version), Some(w.id))
        }
        Outcome::Resource(w) => (200, Some(w.location), Some(w.version), None),
        Outcome::Deleted => (204, None, None, None),
        Outcome::NotModified { .. } | Outcome::Streamed { .. } | Outcome::Json { .. } => {
            return Err(ScimError::internal())
        }
    })
}

/// The fuzz targets' entry into Bulk (`fuzz/targets.rs`, run by cargo-fuzz and by
/// the replay test in `cargo test`), re-exported as `scimbridge::fuzzing`. Not an API.
pub mod fuzzing {
    use crate::scim::error::ScimError;

    /// `POST /Bulk`'s parsing and per-operation checks with nothing executed
    /// (`check_request`): the request's refusal, or one result per
    /// operation.
    pub fn bulk(
        body: &serde_json::Value,
        max_ops: usize,
    ) -> Result<Vec<Result<(), ScimError>>, ScimError> {
        super::check_request(body, max_ops)
    }
}
