//! Directory operations: every change or read of Users and Groups that a client can
//! ask for is one `Operation` (RFC 7644 §3.3 create, §3.4.1 get, §3.4.2 query, §3.5.1
//! replace, §3.5.2 patch, §3.6 delete), executed by `App::execute`, answered with a
//! typed `Outcome`. The SCIM endpoints and Bulk build Operations from their requests
//! and render Outcomes; neither calls the other. This file owns the steps between the
//! request and the store: normalising the client's representation, splitting off a
//! group's members, choosing the membership delta for member-only PATCHes, and
//! rendering stored resources (meta, references, projection), and keeping a GET's
//! rendered answer in `answers` until the next commit. It knows neither HTTP nor
//! redb.

use serde_json::Value;

use super::answers::Answer;
use super::audit::{log_stored, WriteAudit};
use super::query::{self, Page, Query, Threads};
use super::render::{
    created_text, refs_attr, render, stream_group, Derived, DerivedText, JsonChunks, Resource,
    STREAM_DEPTH,
};
use super::App;
use crate::clock::Timestamp;
use crate::scim::error::{ScimError, ScimResult};
use crate::scim::patch;
use crate::scim::resource::{
    check_request_limits, normalize, normalize_value, Attributes, Projection,
};
use crate::scim::schema::ResourceType;
use crate::store::{
    Actor, AuditOnWrite, Created, MemberRef, MembersChange, Snapshot, StoreResult, StoredResource,
    Target, Update, UpdateRequest,
};

/// Members beyond which reading a group with its members is heavy work.
pub(crate) const LARGE_GROUP: usize = 1000;

/// One directory request, already parsed from its edge's wire form.
#[derive(Debug, Clone)]
pub(crate) enum Operation {
    /// Create a resource from the client's representation (`POST /Users`).
    Create {
        rt: ResourceType,
        resource: Value,
        reply: Reply,
    },
    /// Replace a resource's attributes (`PUT`); a group's `members` are replaced too.
    Replace {
        target: Target,
        resource: Value,
        reply: Reply,
    },
    /// Apply a PatchOp request body (`PATCH`, RFC 7644 §3.5.2).
    Patch {
        target: Target,
        request: Value,
        reply: Reply,
    },
    Delete {
        target: Target,
    },
    /// Read one resource; `if_none_match` (ETags or `*`) answers `NotModified` when
    /// the current version is among them.
    Get {
        rt: ResourceType,
        id: String,
        if_none_match: Option<String>,
        projection: Projection,
    },
}

/// What a write answers with.
#[derive(Debug, Clone)]
pub(crate) enum Reply {
    /// The resource's representation, projected (RFC 7644 §3.9).
    Representation(Projection),
    /// Only its id, version and location: the caller sends no representation (a
    /// group PATCH answered `204 No Content`, as Entra ID and Okta expect; a Bulk
    /// entry). Nothing is rendered, so the answer costs the same whatever the
    /// group's size.
    VersionOnly,
}

/// What an operation did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The resource as created, changed or read.
    Resource(Written),
    /// A group read with more than `LARGE_GROUP` members: its ETag, and its
    /// representation as JSON text in pieces, made while the client reads them.
    Streamed {
        version: String,
        json: JsonChunks,
    },
    Deleted,
    /// A read's representation as JSON text, with its ETag (a `Get` without
    /// `attributes` / `excludedAttributes`: written from the stored text, issue 10).
    Json {
        version: String,
        json: bytes::Bytes,
    },
    /// `Get` whose `if_none_match` holds the current version.
    NotModified {
        version: String,
    },
}

/// A resource after an operation.
#[derive(Debug, Clone)]
pub(crate) struct Written {
    pub id: String,
    /// Weak ETag of this version, `W/"n"` (RFC 7644 §3.14).
    pub version: String,
    /// Its URL (`meta.location`): the base URL, the endpoint and the id.
    pub location: String,
    /// Its representation, projected as the operation asked; `None` for
    /// `Reply::VersionOnly`.
    pub resource: Option<Resource>,
}

impl App {
    /// Executes one directory operation for `actor`. `base` is the SCIM base URL
    /// (no trailing slash) for `meta.location` and `$ref`. Errors: `StoreError::Scim`
    /// for refusals the client must see (400 invalid input, 404, 409 uniqueness, 412
    /// version mismatch), other `StoreError`s when storage fails.
    /// `audit`, for a write, is stored in the write's own transaction when the
    /// write succeeds, and logged once durable (`WriteAudit`); a failed write stores
    /// none.
    pub(crate) async fn execute(
        &self,
        op: Operation,
        actor: &Actor,
        base: &str,
        audit: Option<WriteAudit>,
    ) -> StoreResult<Outcome> {
        let now = Timestamp::now();
        let audit = audit.map(|a| AuditOnWrite {
            record: a.record(now),
            durable: log_stored,
        });
        match op {
            Operation::Create {
                rt,
                resource,
                reply,
            } => {
                let (attrs, members) = self.admitted(rt, resource, now).await?;
                let members = members.unwrap_or_default();
                let without_refs = members.is_empty();
                let created = self
                    .store
                    .create(rt, attrs, members, actor.clone(), now, audit)
                    .await?;
                self.created(rt, created, without_refs, &reply, base)
                    .map(Outcome::Resource)
            }
            Operation::Replace {
                target,
                resource,
                reply,
            } => {
                let rt = target.rt;
                let (attrs, members) = self.admitted(rt, resource, now).await?;
                let req = update_request(target, false, actor, now, audit);
                let stored = self
                    .store
                    .update(req, move |_current| {
                        let members = match rt {
                            ResourceType::Group => MembersChange::Set(members.unwrap_or_default()),
                            ResourceType::User => MembersChange::Keep,
                        };
                        Ok(Update { attrs, members })
                    })
                    .await?;
                self.written(rt, stored, &reply, base)
                    .map(Outcome::Resource)
            }
            Operation::Patch {
                target,
                request,
                reply,
            } => {
                let rt = target.rt;
                let stored = self.patch(target, &request, actor, now, audit).await?;
                self.written(rt, stored, &reply, base)
                    .map(Outcome::Resource)
            }
            Operation::Delete { target } => {
                let audited = audit.is_some();
                let reports = self.store.delete(target, actor.clone(), now, audit).await?;
                // Without an entry of its own (a Bulk operation), the reports' entries
                // are stored but not yet logged.
                if !audited {
                    reports.iter().for_each(log_stored);
                }
                Ok(Outcome::Deleted)
            }
            Operation::Get {
                rt,
                id,
                if_none_match,
                projection,
            } => {
                let inm = if_none_match.as_deref();
                // Read before the snapshot: an answer kept at this count is at least
                // as new as the snapshot would be (`answers`).
                let changes = self.store.changes();
                let cacheable = projection.returns_default();
                if cacheable {
                    if let Some(a) = self.answers.get(changes, base, rt, &id) {
                        return Ok(answer_outcome(a, inm));
                    }
                }
                if !self.is_large_read(rt, &id, &projection)? {
                    let snapshot = self.store.shared_snapshot()?;
                    let outcome = get(&snapshot, rt, &id, inm, &projection, base)?;
                    if let (true, Outcome::Json { version, json }) = (cacheable, &outcome) {
                        let a = Answer {
                            version: version.clone(),
                            json: json.clone(),
                        };
                        self.answers.put(changes, base, rt, &id, &a);
                    }
                    return Ok(outcome);
                }
                self.stream_large_group(id, if_none_match, projection, base)
                    .await
            }
        }
    }

    /// Runs a list query on one snapshot (see `query::run` for its errors).
    pub(crate) async fn query(&self, q: Query, base: &str) -> StoreResult<Page> {
        if query::reads_at_most_one(&q) {
            // A lookup of one resource costs a GET by id: run here, as a GET does.
            return query::run(&*self.store.shared_snapshot()?, &q, base);
        }
        // Unfiltered and sorted by meta.lastModified: ordered from the stored meta
        // alone (`by_modified`), off the async workers, with the engine's answer.
        if let Some(rt) = super::by_modified::answers(&q) {
            let (store, base) = (self.store.clone(), base.to_owned());
            return tokio::task::spawn_blocking(move || {
                super::by_modified::page(&store.snapshot()?, rt, &q, &base)
            })
            .await
            .map_err(|_| ScimError::internal())?;
        }
        // A scan can take long: keep it off the async workers. One that reads a whole
        // table splits it over a second thread when a heavy-work slot is free for it.
        let spare = query::scans_a_table(&q)
            .then(|| self.limiter.spare_slot())
            .flatten();
        let threads = match spare {
            Some(_) => Threads::Two,
            None => Threads::One,
        };
        let (store, base) = (self.store.clone(), base.to_owned());
        tokio::task::spawn_blocking(move || {
            let _spare = spare;
            query::run_on(&store.snapshot()?, &q, &base, threads)
        })
        .await
        .map_err(|_| ScimError::internal())?
    }

    /// Whether reading `id` with `projection` is heavy work: a group with more than
    /// `LARGE_GROUP` members whose `members` the answer includes. Such a read runs off
    /// the async workers, and edges take a heavy permit for it (issue 10: a full GET
    /// of a 100,000-member group must not stall `/healthz`). Costs at most
    /// `LARGE_GROUP + 1` membership-key reads.
    pub(crate) fn is_large_read(
        &self,
        rt: ResourceType,
        id: &str,
        projection: &Projection,
    ) -> StoreResult<bool> {
        if rt != ResourceType::Group || !projection.includes(rt, refs_attr(rt)) {
            return Ok(false);
        }
        self.store
            .shared_snapshot()?
            .has_more_members_than(id, LARGE_GROUP)
    }

    /// Checks a POST/PUT body (or Bulk data) against the request limits, normalizes
    /// it, applies the unknown-attribute policy (refuse, or drop and count) and takes
    /// a group's members out of it. A body with more than `LARGE_GROUP` members is
    /// handled off the async workers.
    async fn admitted(
        &self,
        rt: ResourceType,
        resource: Value,
        now: Timestamp,
    ) -> ScimResult<(Attributes, Option<Vec<MemberRef>>)> {
        let limits = self.config.limits.request();
        let ledger = self.unknown.clone();
        let large = resource
            .get("members")
            .and_then(Value::as_array)
            .is_some_and(|m| m.len() > LARGE_GROUP);
        let work = move || {
            check_request_limits(&resource, &limits)?;
            let normalized = normalize(rt, &resource)?;
            ledger.admit(rt, &normalized.unknown, now)?;
            let mut attrs = normalized.attrs;
            let members = take_members(&mut attrs)?;
            Ok((attrs, members))
        };
        if !large {
            return work();
        }
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| ScimError::internal())?
    }

    /// Reads a large group with its members (see `is_large_read`) off the async
    /// workers: one snapshot, the group's head rendered first, then its members sent
    /// in pieces as the client reads them (`Outcome::Streamed`), so neither a worker
    /// nor memory holds the whole answer. Errors before the first piece (404, storage)
    /// are returned as for any read; `NotModified` as well.
    async fn stream_large_group(
        &self,
        id: String,
        if_none_match: Option<String>,
        projection: Projection,
        base: &str,
    ) -> StoreResult<Outcome> {
        let rt = ResourceType::Group;
        let (store, base) = (self.store.clone(), base.to_owned());
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_DEPTH);
        let (head_tx, head_rx) = tokio::sync::oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let head = store.snapshot().and_then(|snapshot| {
                let Some(r) = snapshot.get(rt, &id)? else {
                    return Err(ScimError::not_found(format!("Group {id} not found")).into());
                };
                let version = r.meta.etag();
                if matches_etag(if_none_match.as_deref(), &version) {
                    return Ok(Err(Outcome::NotModified { version }));
                }
                let full = render(&snapshot, rt, r, false, &base)?;
                let head = projection.apply(rt, full);
                Ok(Ok((snapshot, version, head)))
            });
            match head {
                Ok(Ok((snapshot, version, head))) => {
                    if head_tx.send(Ok(Ok(version))).is_ok() {
                        stream_group(&snapshot, &id, head, &projection, &base, &tx);
                    }
                }
                Ok(Err(outcome)) => {
                    let _ = head_tx.send(Ok(Err(outcome)));
                }
                Err(e) => {
                    let _ = head_tx.send(Err(e));
                }
            }
        });
        match head_rx.await.map_err(|_| ScimError::internal())?? {
            Ok(version) => Ok(Outcome::Streamed { version, json: rx }),
            Err(outcome) => Ok(outcome),
        }
    }

    async fn patch(
        &self,
        target: Target,
        request: &Value,
        actor: &Actor,
        now: Timestamp,
        audit: Option<AuditOnWrite>,
    ) -> StoreResult<StoredResource> {
        let rt = target.rt;
        check_request_limits(request, &self.config.limits.request())?;
        let ops = patch::parse_request(request)?;
        // Adding or removing members of a large group must not cost the group's size:
        // such PATCHes change the membership rows directly.
        if let Some(delta) = patch::member_delta(rt, &ops) {
            let def = rt
                .schema()
                .attr("members")
                .ok_or_else(ScimError::internal)?;
            let mut holder = Attributes::new();
            let (added, unknown) = normalize_value(def, &Value::Array(delta.add))?;
            self.unknown.admit(rt, &unknown, now)?;
            if let Some(v) = added {
                holder.insert("members".into(), v);
            }
            let add = take_members(&mut holder)?.unwrap_or_default();
            let remove = delta.remove;
            let req = update_request(target, false, actor, now, audit);
            return self
                .store
                .update(req, move |current| {
                    Ok(Update {
                        attrs: current.attrs,
                        members: MembersChange::Delta { add, remove },
                    })
                })
                .await;
        }
        let req = update_request(target, true, actor, now, audit);
        let ledger = self.unknown.clone();
        self.store
            .update(req, move |current| {
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
            })
            .await
    }

    /// A create's result: without a projection, and without members to show
    /// (`without_refs`), written from the stored record's text (issue 10: reading
    /// it back, building a `Value` tree and serializing it was ≈ 50,000 instructions
    /// of a create's); otherwise as [`App::written`].
    fn created(
        &self,
        rt: ResourceType,
        created: Created,
        without_refs: bool,
        reply: &Reply,
        base: &str,
    ) -> StoreResult<Written> {
        if let Reply::Representation(p) = reply {
            if without_refs && p.returns_default() {
                if let Some((id, meta, json)) = created_text(rt, &created, base)? {
                    return Ok(Written {
                        version: meta.etag(),
                        location: location(base, rt, &id),
                        resource: Some(Resource::text(rt, id.clone(), json)),
                        id,
                    });
                }
            }
        }
        self.written(rt, created.resource, reply, base)
    }

    /// A write's result, rendered from a fresh snapshot (it shows the write) when
    /// `reply` asks for the representation.
    fn written(
        &self,
        rt: ResourceType,
        stored: StoredResource,
        reply: &Reply,
        base: &str,
    ) -> StoreResult<Written> {
        match reply {
            Reply::Representation(p) => written(&self.store.snapshot()?, rt, stored, p, base),
            Reply::VersionOnly => {
                let mut stored = stored;
                // A user's version follows its groups (direct and indirect).
                self.store.snapshot()?.derive_meta(rt, &mut stored)?;
                Ok(Written {
                    version: stored.meta.etag(),
                    location: location(base, rt, &stored.id),
                    id: stored.id,
                    resource: None,
                })
            }
        }
    }
}

/// Reads one resource from `snapshot` (404 when it does not exist).
fn get(
    snapshot: &Snapshot,
    rt: ResourceType,
    id: &str,
    if_none_match: Option<&str>,
    projection: &Projection,
    base: &str,
) -> StoreResult<Outcome> {
    let not_found = || ScimError::not_found(format!("{} {id} not found", rt.name()));
    // A user's version follows its groups (direct and indirect).
    let with_refs = projection.includes(rt, refs_attr(rt));
    // Without a projection the stored attributes are copied as text (issue 10).
    if projection.returns_default() {
        let text = snapshot.get_text(rt, id, |r| {
            let derived = DerivedText::new(snapshot, rt, r, with_refs)?;
            let version = derived.version();
            if matches_etag(if_none_match, &version) {
                return Ok(Some(Outcome::NotModified { version }));
            }
            let json = derived.render(snapshot, with_refs, base)?;
            Ok(json.map(|json| Outcome::Json {
                version,
                json: json.into(),
            }))
        })?;
        match text {
            None => return Err(not_found().into()),
            Some(Some(outcome)) => return Ok(outcome),
            // Attributes `render_text` leaves to `render`.
            Some(None) => {}
        }
    }
    let Some(r) = snapshot.get(rt, id)? else {
        return Err(not_found().into());
    };
    let derived = Derived::new(snapshot, rt, r, with_refs)?;
    let version = derived.version();
    if matches_etag(if_none_match, &version) {
        return Ok(Outcome::NotModified { version });
    }
    written_derived(snapshot, derived, with_refs, projection, base).map(Outcome::Resource)
}

/// A kept answer as a read's outcome: `NotModified` when `if_none_match` holds its
/// version.
fn answer_outcome(a: Answer, if_none_match: Option<&str>) -> Outcome {
    if matches_etag(if_none_match, &a.version) {
        return Outcome::NotModified { version: a.version };
    }
    Outcome::Json {
        version: a.version,
        json: a.json,
    }
}

/// Whether an `If-None-Match` list (ETags or `*`, RFC 9110 §13.1.2) holds `version`.
fn matches_etag(if_none_match: Option<&str>, version: &str) -> bool {
    if_none_match.is_some_and(|inm| {
        inm.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t == version)
    })
}

fn written(
    snapshot: &Snapshot,
    rt: ResourceType,
    r: StoredResource,
    projection: &Projection,
    base: &str,
) -> StoreResult<Written> {
    let with_refs = projection.includes(rt, refs_attr(rt));
    let derived = Derived::new(snapshot, rt, r, with_refs)?;
    written_derived(snapshot, derived, with_refs, projection, base)
}

/// [`written`] of a resource whose meta is derived already.
fn written_derived(
    snapshot: &Snapshot,
    derived: Derived,
    with_refs: bool,
    projection: &Projection,
    base: &str,
) -> StoreResult<Written> {
    let rt = derived.rt();
    let version = derived.version();
    let id = derived.id().to_owned();
    let full = derived.render(snapshot, with_refs, base)?;
    Ok(Written {
        location: location(base, rt, &id),
        id,
        version,
        resource: Some(Resource::tree(rt, full).project(projection)),
    })
}

/// A resource's URL (`meta.location`, RFC 7643 §3.1).
fn location(base: &str, rt: ResourceType, id: &str) -> String {
    format!("{base}{}/{id}", rt.endpoint())
}

fn update_request(
    target: Target,
    with_members: bool,
    actor: &Actor,
    now: Timestamp,
    audit: Option<AuditOnWrite>,
) -> UpdateRequest {
    UpdateRequest {
        target,
        with_members,
        actor: actor.clone(),
        now,
        audit,
    }
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
