//! The push: replay the directory into a target SCIM endpoint, resumably, then keep
//! it in step (mirror) until cut-over, and verify by reading the target back.
//!
//! Matching: a resource already mapped in the journal is updated; otherwise the
//! target is searched by externalId, then userName (Users) or displayName (Groups),
//! and a found resource is updated instead of created. So a push killed at any
//! moment and run again creates no duplicates: what was created before the kill is
//! either in the journal or found by the search.

use serde_json::{json, Map, Value};

use super::client::{Client, Response};
use super::error::{MigrateError, MigrateResult};
use super::report::{
    Difference, DifferenceKind, Lag, PlanCounts, Progress, ProgressSink, PushOutcome, PushPlan,
    PushReport,
};
use crate::clock::Timestamp;
use crate::scim::schema::{ResourceType, ENTERPRISE_USER_URN};
use crate::store::{Event, MigrationState, Phase, Snapshot, Store, StoredResource};
use hyper::Method;

/// Resources read from the snapshot per round (memory is bounded by this).
const PAGE: usize = 100;
/// Creates per Bulk request when the target supports Bulk.
const BULK_CHUNK: usize = 50;

/// Walks a resource type of a snapshot in pages of `PAGE`, in id order.
#[derive(Default)]
struct Pager {
    after: Option<String>,
}

impl Pager {
    fn next(
        &mut self,
        snapshot: &Snapshot,
        rt: ResourceType,
    ) -> MigrateResult<Vec<StoredResource>> {
        let page = snapshot.page_after(rt, self.after.as_deref(), PAGE)?;
        if let Some(last) = page.last() {
            self.after = Some(last.id.clone());
        }
        Ok(page)
    }
}

/// What the target announced.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    pub bulk_max_operations: usize,
}

/// Reads the target's ServiceProviderConfig (RFC 7644 §4): is it SCIM, does it take
/// the token, does it offer Bulk.
pub async fn discover(client: &mut Client) -> MigrateResult<Discovery> {
    let r = client
        .request(Method::GET, "/ServiceProviderConfig", None)
        .await?;
    if r.status == 401 || r.status == 403 {
        return Err(MigrateError::TokenRefused { status: r.status });
    }
    if !r.is_success() {
        return Err(MigrateError::NotScim {
            url: client.target().base.clone(),
            status: r.status,
        });
    }
    let spc = r.json()?;
    let bulk = &spc["bulk"];
    let max = if bulk["supported"] == Value::Bool(true) {
        bulk["maxOperations"].as_u64().unwrap_or(0) as usize
    } else {
        0
    };
    Ok(Discovery {
        bulk_max_operations: max,
    })
}

fn filter_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

fn encode(q: &str) -> String {
    form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

/// Finds a resource on the target by externalId, then userName / displayName.
async fn find_on_target(
    client: &mut Client,
    rt: ResourceType,
    attrs: &Map<String, Value>,
) -> MigrateResult<Option<String>> {
    let mut filters = Vec::new();
    if let Some(e) = attrs.get("externalId").and_then(Value::as_str) {
        filters.push(format!("externalId eq \"{}\"", filter_value(e)));
    }
    let name_attr = match rt {
        ResourceType::User => "userName",
        ResourceType::Group => "displayName",
    };
    if let Some(n) = attrs.get(name_attr).and_then(Value::as_str) {
        filters.push(format!("{name_attr} eq \"{}\"", filter_value(n)));
    }
    for f in filters {
        let r = client
            .request(
                Method::GET,
                &format!("{}?filter={}&count=2", rt.endpoint(), encode(&f)),
                None,
            )
            .await?;
        if !r.is_success() {
            return Err(MigrateError::TargetAnswered {
                action: format!("searching the target with {f}"),
                status: r.status,
                detail: String::new(),
            });
        }
        let list = r.json()?;
        if let Some(id) = list["Resources"]
            .as_array()
            .and_then(|a| a.first())
            .and_then(|x| x["id"].as_str())
        {
            return Ok(Some(id.to_owned()));
        }
    }
    Ok(None)
}

/// The body sent to the target for a local resource: its attributes, `schemas`, the
/// manager and members mapped to target ids. Unmapped references are left out.
fn body_for(
    snapshot: &Snapshot,
    rt: ResourceType,
    r: &StoredResource,
    with_members: bool,
) -> MigrateResult<Value> {
    let mut attrs = r.attrs.clone();
    // Every extension the resource holds, declared ones too (RFC 7643 §3): a strict
    // target refuses extension attributes whose schema is not listed.
    let schemas = crate::scim::resource::schemas_of(rt, &attrs);
    if attrs.contains_key(ENTERPRISE_USER_URN) {
        if let Some(ext) = attrs
            .get_mut(ENTERPRISE_USER_URN)
            .and_then(Value::as_object_mut)
        {
            let manager = ext
                .get("manager")
                .and_then(|m| m.get("value"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(m) = manager {
                match snapshot.target_id(ResourceType::User, &m)? {
                    Some(tid) => {
                        ext.insert("manager".into(), json!({"value": tid}));
                    }
                    None => {
                        ext.remove("manager");
                    }
                }
            }
        }
    }
    attrs.insert("schemas".into(), schemas);
    if rt == ResourceType::Group && with_members {
        let mut members = Vec::new();
        for m in snapshot.references(ResourceType::Group, &r.id)? {
            if let Some(tid) = snapshot.target_id(m.rt, &m.id)? {
                members.push(json!({"value": tid, "type": m.rt.name()}));
            }
        }
        attrs.insert("members".into(), Value::Array(members));
    }
    Ok(Value::Object(attrs))
}

fn created_id(r: &Response, what: &str) -> MigrateResult<String> {
    if !r.is_success() {
        return Err(MigrateError::TargetAnswered {
            action: format!("creating {what} on the target"),
            status: r.status,
            detail: r.detail(),
        });
    }
    r.json()?["id"].as_str().map(str::to_owned).ok_or_else(|| {
        MigrateError::TargetProtocol(format!("the target created {what} without an id"))
    })
}

/// Creates or updates one resource on the target; returns its target id and whether
/// it was created.
async fn upsert(
    client: &mut Client,
    snapshot: &Snapshot,
    rt: ResourceType,
    r: &StoredResource,
    with_members: bool,
) -> MigrateResult<(String, bool)> {
    let body = body_for(snapshot, rt, r, with_members)?;
    let known = snapshot.target_id(rt, &r.id)?;
    let existing = match known {
        Some(t) => Some(t),
        None => find_on_target(client, rt, &r.attrs).await?,
    };
    if let Some(tid) = existing {
        let resp = client
            .request(
                Method::PUT,
                &format!("{}/{tid}", rt.endpoint()),
                Some(&body),
            )
            .await?;
        if resp.is_success() {
            return Ok((tid, false));
        }
        if resp.status != 404 {
            return Err(MigrateError::TargetAnswered {
                action: format!("updating {} {} on the target", rt.name(), r.id),
                status: resp.status,
                detail: resp.detail(),
            });
        }
        // Mapped, but gone on the target: create it again.
    }
    let resp = client
        .request(Method::POST, rt.endpoint(), Some(&body))
        .await?;
    Ok((created_id(&resp, &format!("{} {}", rt.name(), r.id))?, true))
}

/// Options of one push.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub dry_run: bool,
}

async fn save_progress(
    store: &Store,
    f: impl FnOnce(&mut MigrationState) + Send + 'static,
) -> MigrateResult<()> {
    store.update_migration(f).await?;
    Ok(())
}

/// Pushes every user and then every group. Resumes from the journal. A dry run
/// returns the plan; a push its report, without the read-back differences (the
/// caller verifies).
pub async fn push(
    store: &Store,
    client: &mut Client,
    opts: &PushOptions,
    progress: ProgressSink<'_>,
) -> MigrateResult<PushOutcome> {
    let discovery = discover(client).await?;
    let snapshot = store.snapshot()?;
    let users_total = snapshot.count(ResourceType::User)?;
    let groups_total = snapshot.count(ResourceType::Group)?;
    if opts.dry_run {
        let plan = dry_run(client, &snapshot, users_total, groups_total, &discovery).await?;
        return Ok(PushOutcome::Planned(plan));
    }
    let (mut created, mut updated) = (0u64, 0u64);
    // Users, page by page; creates go in Bulk requests when the target offers Bulk.
    let mut pager = Pager::default();
    let mut done = 0u64;
    let mut manager_fixups: Vec<String> = Vec::new();
    loop {
        let page = pager.next(&snapshot, ResourceType::User)?;
        if page.is_empty() {
            break;
        }
        let mut to_create: Vec<&StoredResource> = Vec::new();
        let mut mapped = Vec::new();
        for r in &page {
            if snapshot.target_id(ResourceType::User, &r.id)?.is_some() {
                continue; // pushed before an interruption; the mirror brings later changes
            }
            if let Some(tid) = find_on_target(client, ResourceType::User, &r.attrs).await? {
                let body = body_for(&snapshot, ResourceType::User, r, false)?;
                let resp = client
                    .request(Method::PUT, &format!("/Users/{tid}"), Some(&body))
                    .await?;
                if !resp.is_success() {
                    return Err(MigrateError::TargetAnswered {
                        action: format!("updating user {} on the target", r.id),
                        status: resp.status,
                        detail: resp.detail(),
                    });
                }
                mapped.push((ResourceType::User, r.id.clone(), Some(tid)));
                updated += 1;
            } else {
                to_create.push(r);
            }
        }
        // Map what was updated before creating, so a kill in between loses nothing.
        store.map_ids(std::mem::take(&mut mapped)).await?;
        let chunk = if discovery.bulk_max_operations > 1 {
            BULK_CHUNK.min(discovery.bulk_max_operations)
        } else {
            1
        };
        for group in to_create.chunks(chunk) {
            let ids = if chunk > 1 {
                bulk_create(client, &snapshot, group).await?
            } else {
                let body = body_for(&snapshot, ResourceType::User, group[0], false)?;
                let resp = client.request(Method::POST, "/Users", Some(&body)).await?;
                vec![created_id(&resp, &format!("user {}", group[0].id))?]
            };
            for (r, tid) in group.iter().zip(ids) {
                if r.attrs
                    .get(ENTERPRISE_USER_URN)
                    .and_then(|e| e.get("manager"))
                    .is_some()
                {
                    manager_fixups.push(r.id.clone());
                }
                mapped.push((ResourceType::User, r.id.clone(), Some(tid)));
                created += 1;
            }
            store.map_ids(std::mem::take(&mut mapped)).await?;
        }
        done += page.len() as u64;
        let (c, u) = (created, updated);
        save_progress(store, move |s| {
            s.progress.users_total = users_total;
            s.progress.users_done = done;
            s.progress.groups_total = groups_total;
            s.progress.created = c;
            s.progress.updated = u;
        })
        .await?;
        progress(Progress::Users {
            done,
            total: users_total,
        });
    }
    // Managers created before their manager had a target id: set them now.
    let snapshot = store.snapshot()?;
    for id in manager_fixups {
        if let Some(r) = snapshot.get(ResourceType::User, &id)? {
            upsert(client, &snapshot, ResourceType::User, &r, false).await?;
        }
    }
    // Groups: first every group without members (nested groups need each other's ids),
    // then the members.
    let mut pager = Pager::default();
    let mut done = 0u64;
    loop {
        let snapshot = store.snapshot()?;
        let page = pager.next(&snapshot, ResourceType::Group)?;
        if page.is_empty() {
            break;
        }
        for g in &page {
            if snapshot.target_id(ResourceType::Group, &g.id)?.is_some() {
                continue;
            }
            let (tid, was_created) =
                upsert(client, &snapshot, ResourceType::Group, g, false).await?;
            if was_created {
                created += 1
            } else {
                updated += 1
            }
            store
                .map_ids(vec![(ResourceType::Group, g.id.clone(), Some(tid))])
                .await?;
        }
        done += page.len() as u64;
        progress(Progress::Groups {
            done,
            total: groups_total,
        });
    }
    let snapshot = store.snapshot()?;
    let mut pager = Pager::default();
    let mut done = 0u64;
    loop {
        let page = pager.next(&snapshot, ResourceType::Group)?;
        if page.is_empty() {
            break;
        }
        for g in &page {
            upsert(client, &snapshot, ResourceType::Group, g, true).await?;
        }
        done += page.len() as u64;
        let (c, u) = (created, updated);
        save_progress(store, move |s| {
            s.progress.groups_done = done;
            s.progress.created = c;
            s.progress.updated = u;
        })
        .await?;
        progress(Progress::Memberships {
            done,
            total: groups_total,
        });
    }
    Ok(PushOutcome::Pushed(PushReport {
        users: users_total,
        groups: groups_total,
        created,
        updated,
        requests: client.requests,
        throttled: client.throttled,
        differences: Vec::new(),
    }))
}

/// Creates users with one Bulk request; returns their target ids in order.
async fn bulk_create(
    client: &mut Client,
    snapshot: &Snapshot,
    users: &[&StoredResource],
) -> MigrateResult<Vec<String>> {
    let mut ops = Vec::with_capacity(users.len());
    for r in users {
        ops.push(json!({"method": "POST", "path": "/Users", "bulkId": r.id, "data": body_for(snapshot, ResourceType::User, r, false)?}));
    }
    let req = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
    let resp = client.request(Method::POST, "/Bulk", Some(&req)).await?;
    if !resp.is_success() {
        return Err(MigrateError::TargetAnswered {
            action: "the target's Bulk endpoint".into(),
            status: resp.status,
            detail: resp.detail(),
        });
    }
    let body = resp.json()?;
    let results = body["Operations"].as_array().cloned().unwrap_or_default();
    let mut ids = Vec::with_capacity(users.len());
    for r in users {
        let op = results
            .iter()
            .find(|o| o["bulkId"].as_str() == Some(r.id.as_str()));
        let Some(op) = op else {
            return Err(MigrateError::TargetProtocol(format!(
                "the target's Bulk response does not mention user {}",
                r.id
            )));
        };
        let status: u16 = op["status"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .or(op["status"].as_u64().map(|s| s as u16))
            .unwrap_or(0);
        let location = op["location"].as_str().unwrap_or_default();
        let id = location.rsplit('/').next().filter(|s| !s.is_empty());
        match (status, id) {
            (200..=299, Some(id)) => ids.push(id.to_owned()),
            _ => {
                // Fall back to a single request, which reports the target's reason.
                let body = body_for(snapshot, ResourceType::User, r, false)?;
                let resp = client.request(Method::POST, "/Users", Some(&body)).await?;
                ids.push(created_id(&resp, &format!("user {}", r.id))?);
            }
        }
    }
    Ok(ids)
}

async fn dry_run(
    client: &mut Client,
    snapshot: &Snapshot,
    users: u64,
    groups: u64,
    d: &Discovery,
) -> MigrateResult<PushPlan> {
    let (mut create, mut update) = ([0u64; 2], [0u64; 2]);
    for (i, rt) in ResourceType::ALL.into_iter().enumerate() {
        let mut pager = Pager::default();
        loop {
            let page = pager.next(snapshot, rt)?;
            if page.is_empty() {
                break;
            }
            for r in &page {
                let known = snapshot.target_id(rt, &r.id)?.is_some();
                if known || find_on_target(client, rt, &r.attrs).await?.is_some() {
                    update[i] += 1;
                } else {
                    create[i] += 1;
                }
            }
        }
    }
    Ok(PushPlan {
        target: client.target().base.clone(),
        bulk: d.bulk_max_operations > 1,
        users: PlanCounts {
            total: users,
            create: create[0],
            update: update[0],
        },
        groups: PlanCounts {
            total: groups,
            create: create[1],
            update: update[1],
        },
        memberships: snapshot.membership_count()?,
    })
}

/// Replays one change event to the target: the resource's current state, or its
/// deletion. Idempotent, so replaying an event twice is harmless.
pub async fn replay(store: &Store, client: &mut Client, ev: &Event) -> MigrateResult<()> {
    let rt = ev.resource_type;
    if ev.id == "*" {
        return Ok(());
    }
    let snapshot = store.snapshot()?;
    match snapshot.get(rt, &ev.id)? {
        Some(r) => {
            let (tid, _) = upsert(client, &snapshot, rt, &r, rt == ResourceType::Group).await?;
            store.map_ids(vec![(rt, r.id.clone(), Some(tid))]).await?;
        }
        None => {
            if let Some(tid) = snapshot.target_id(rt, &ev.id)? {
                let resp = client
                    .request(Method::DELETE, &format!("{}/{tid}", rt.endpoint()), None)
                    .await?;
                if !resp.is_success() && resp.status != 404 {
                    return Err(MigrateError::TargetAnswered {
                        action: format!("deleting {} {tid} on the target", rt.name()),
                        status: resp.status,
                        detail: String::new(),
                    });
                }
                store.map_ids(vec![(rt, ev.id.clone(), None)]).await?;
            }
        }
    }
    Ok(())
}

/// Replays every pending event (up to `max`); returns how many were replayed.
pub async fn drain(store: &Store, client: &mut Client, max: usize) -> MigrateResult<usize> {
    let state = store.snapshot().and_then(|s| s.migration_state())?;
    let events = store
        .snapshot()
        .and_then(|s| s.events_after(state.mirror_from, max))?;
    let mut n = 0;
    for ev in &events {
        if let Err(e) = replay(store, client, ev).await {
            let e = MigrateError::Mirror {
                seq: ev.seq,
                op: ev.op,
                resource_type: ev.resource_type,
                id: ev.id.clone(),
                source: Box::new(e),
            };
            let m = e.to_string();
            let _ = save_progress(store, move |s| s.last_error = Some(m)).await;
            return Err(e);
        }
        let seq = ev.seq;
        save_progress(store, move |s| {
            s.mirror_from = s.mirror_from.max(seq);
            s.last_error = None;
        })
        .await?;
        n += 1;
    }
    Ok(n)
}

/// Lag of the mirror: events behind, seconds since the oldest pending event.
pub fn lag(snapshot: &Snapshot, state: &MigrationState, now: Timestamp) -> MigrateResult<Lag> {
    let last = snapshot.last_event_seq()?;
    let seconds = match snapshot.events_after(state.mirror_from, 1)?.first() {
        Some(ev) => now.since(ev.time).as_seconds_f64().max(0.0),
        None => 0.0,
    };
    Ok(Lag {
        events: last.saturating_sub(state.mirror_from),
        seconds,
    })
}

/// One difference between the local directory and the target.
fn diff(rt: ResourceType, id: &str, kind: DifferenceKind) -> Difference {
    Difference {
        resource_type: rt,
        id: Some(id.to_owned()),
        kind,
    }
}

/// Does the target's value hold everything the local value says? Strings compare
/// exactly except userName (case-insensitive); multi-valued attributes compare as
/// sets; sub-attributes the target adds are ignored.
fn covers(local: &Value, target: &Value, case_insensitive: bool) -> bool {
    match (local, target) {
        (Value::String(a), Value::String(b)) => {
            if case_insensitive {
                a.eq_ignore_ascii_case(b)
            } else {
                a == b
            }
        }
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| {
            b.iter()
                .find(|(bk, _)| bk.eq_ignore_ascii_case(k))
                .is_some_and(|(_, bv)| covers(v, bv, false))
        }),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| covers(x, y, false)))
        }
        (a, b) => a == b,
    }
}

/// Reads every mapped resource back from the target and compares it with the local
/// one. Returns the list of differences.
pub async fn verify(
    store: &Store,
    client: &mut Client,
    progress: ProgressSink<'_>,
) -> MigrateResult<Vec<Difference>> {
    let snapshot = store.snapshot()?;
    let mut diffs = Vec::new();
    for rt in ResourceType::ALL {
        let total = snapshot.count(rt)?;
        let mut pager = Pager::default();
        let mut done = 0u64;
        loop {
            let page = pager.next(&snapshot, rt)?;
            if page.is_empty() {
                break;
            }
            for r in &page {
                let Some(tid) = snapshot.target_id(rt, &r.id)? else {
                    diffs.push(diff(rt, &r.id, DifferenceKind::NeverPushed));
                    continue;
                };
                let resp = client
                    .request(Method::GET, &format!("{}/{tid}", rt.endpoint()), None)
                    .await?;
                if resp.status == 404 {
                    diffs.push(diff(
                        rt,
                        &r.id,
                        DifferenceKind::MissingOnTarget { target_id: tid },
                    ));
                    continue;
                }
                if !resp.is_success() {
                    return Err(MigrateError::TargetAnswered {
                        action: format!("reading {} {tid} from the target", rt.name()),
                        status: resp.status,
                        detail: String::new(),
                    });
                }
                let remote = resp.json()?;
                let expected = body_for(&snapshot, rt, r, true)?;
                for (k, v) in expected.as_object().into_iter().flatten() {
                    if k == "schemas" {
                        continue;
                    }
                    let got = remote.as_object().and_then(|o| {
                        o.iter()
                            .find(|(rk, _)| rk.eq_ignore_ascii_case(k))
                            .map(|(_, v)| v)
                    });
                    let empty_members = k == "members" && v.as_array().is_some_and(Vec::is_empty);
                    let ok = match got {
                        Some(g) => {
                            covers(v, g, k == "userName")
                                || (empty_members && g.as_array().is_some_and(Vec::is_empty))
                        }
                        None => empty_members,
                    };
                    if !ok {
                        diffs.push(diff(
                            rt,
                            &r.id,
                            DifferenceKind::Attribute {
                                attribute: k.clone(),
                                local: v.clone(),
                                target: got.cloned().unwrap_or(Value::Null),
                            },
                        ));
                    }
                }
            }
            done += page.len() as u64;
            progress(Progress::Verify {
                resource_type: rt,
                done,
                total,
            });
        }
        // Resources on the target that the bridge does not have.
        let resp = client
            .request(Method::GET, &format!("{}?count=0", rt.endpoint()), None)
            .await?;
        if resp.is_success() {
            let remote_total = resp.json()?["totalResults"].as_u64().unwrap_or(0);
            if remote_total > total {
                diffs.push(Difference {
                    resource_type: rt,
                    id: None,
                    kind: DifferenceKind::ExtraOnTarget {
                        target_count: remote_total,
                        local_count: total,
                    },
                });
            }
        }
    }
    Ok(diffs)
}

/// True when a phase allows SCIM writes.
pub fn writes_allowed(phase: Phase) -> bool {
    phase != Phase::CutOver
}
