//! The push: replay the directory into a target SCIM endpoint, resumably, then keep
//! it in step (mirror) until cut-over, and verify by reading the target back. The
//! push, the mirror, verify and a second push follow the same rules:
//!
//! - Matching: a resource mapped in the journal is the same resource; otherwise the
//!   target's resources are listed once (paged, or by cursor) and matched in memory
//!   by externalId, then userName / displayName compared case-insensitively, or, when
//!   the target is much larger than the directory, looked up one by one with filters
//!   (a filter the target refuses is skipped for the run, its detail kept as a note).
//!   A create answered 409 uniqueness finds and matches the existing resource; a
//!   create whose answer was lost is looked up before it is sent again.
//! - References (manager, members) are resolved from the id map as it is when each
//!   body is built; a manager not yet mapped is set once every user is.
//! - Group members travel as PATCH deltas (`add` in chunks, `remove` by
//!   `members[value eq "…"]`), by whole-group PUT only when the target refuses PATCH.
//! - Every body is sized to the target's announced limits and split on 413.
//! - Accounts only the target has are left alone and listed by name.
//!
//! Knows the store's typed API and the client; nothing of the edges.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Mutex;
use std::task::Poll;

use hyper::Method;
use serde_json::{json, Map, Value};

use super::client::{Client, Response, Sent};
use super::error::{MigrateError, MigrateResult};
use super::report::{
    Capabilities, Difference, DifferenceKind, GroupChange, IdPair, Lag, MatchRule, PlanCounts,
    PreviewItem, Progress, PushOutcome, PushPlan, PushReport,
};
use super::target::{self, attr_name, encode, name_attr, Discovery, Events, TargetIndex};
use crate::clock::Timestamp;
use crate::logline::printable;
use crate::scim::schema::{ResourceType, ENTERPRISE_USER_URN};
use crate::store::{Event, MigrationState, Snapshot, Store, StoredResource};

/// Resources read from the snapshot and sent per round (memory is bounded by this;
/// the journal is written after each round).
const PAGE: usize = 200;
/// Members per PATCH request at most (issue 10: batches of at most 1,000).
const MEMBER_CHUNK: usize = 1000;
/// Operations per Bulk request at most, whatever the target allows.
const BULK_CHUNK: usize = 100;
/// Requests in flight at once unless the admin says otherwise.
pub(crate) const DEFAULT_PARALLEL: usize = 8;
/// Upper bound of the parallelism an admin may ask for.
pub(crate) const MAX_PARALLEL: usize = 64;
/// A target this many times larger than the unmatched part of the directory is
/// searched per resource instead of listed.
const LIST_FACTOR: u64 = 2;
/// Characters of a name read from the target kept in a report (escaped: a
/// target's names reach the terminal and the page).
const NAME_CHARS: usize = 200;

fn filter_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Options of one push.
#[derive(Debug, Clone, Default)]
pub(crate) struct PushOptions {
    /// Plan only: read the target, send no writes.
    pub dry_run: bool,
    /// Leave out the attributes the target cannot hold instead of refusing.
    pub omit_unsupported: bool,
    /// Requests in flight at once (0: the default).
    pub parallel: usize,
    /// An earlier push of this migration stopped before it finished: users it
    /// mapped may still lack their manager, so their managers are set again.
    pub resume: bool,
}

/// The journal in memory: local id ↔ target id, updated as resources are mapped, so
/// that every body is built from the map as it is at that moment.
#[derive(Debug, Default)]
struct IdMap {
    ids: HashMap<(ResourceType, String), String>,
    /// Every target id in the map: a target resource not in here is not ours. With
    /// the rule that mapped it in this push (`None`: from the journal, or by the
    /// mirror), so that an entry dropped between two passes is counted once.
    targets: HashMap<String, Option<MatchRule>>,
}

impl IdMap {
    fn load(snapshot: &Snapshot) -> MigrateResult<IdMap> {
        let mut m = IdMap::default();
        for rt in ResourceType::ALL {
            for (local, tid) in snapshot.target_ids(rt)? {
                m.targets.insert(tid.clone(), None);
                m.ids.insert((rt, local), tid);
            }
        }
        Ok(m)
    }
    fn get(&self, rt: ResourceType, local: &str) -> Option<String> {
        self.ids.get(&(rt, local.to_owned())).cloned()
    }
    fn set(&mut self, rt: ResourceType, local: &str, tid: Option<&str>) {
        self.decide(rt, local, tid, None)
    }
    /// `set`, remembering the rule that decided the mapping in this push.
    fn decide(
        &mut self,
        rt: ResourceType,
        local: &str,
        tid: Option<&str>,
        rule: Option<MatchRule>,
    ) {
        match tid {
            Some(t) => {
                self.targets.insert(t.to_owned(), rule);
                if let Some(old) = self.ids.insert((rt, local.to_owned()), t.to_owned()) {
                    if old != t {
                        self.targets.remove(&old);
                    }
                }
            }
            None => {
                if let Some(old) = self.ids.remove(&(rt, local.to_owned())) {
                    self.targets.remove(&old);
                }
            }
        }
    }
}

/// What every worker of one run shares. Locks are never held across an await.
struct Run {
    caps: Mutex<Capabilities>,
    map: Mutex<IdMap>,
    /// Target indexes by resource type (listing mode), built once.
    index: Mutex<HashMap<ResourceType, TargetIndex>>,
    /// Target ids already matched in this run (one target resource, one local one).
    claimed: Mutex<HashSet<String>>,
    /// Lookup filters the target refused: "endpoint attribute" → note (kept in the
    /// migration state as `refused_filters`).
    refused: Mutex<BTreeMap<String, String>>,
    not_kept: Mutex<BTreeSet<String>>,
    rules: Mutex<BTreeMap<MatchRule, u64>>,
    omit: HashSet<String>,
    events: Events,
    /// Updates the target refused in this pass (400 on a member PATCH, a group PUT or
    /// a manager update; 404 for a mapped group or user): the error and the target
    /// ids involved, re-checked before the push gives up (a mapped resource may have
    /// been deleted on the target since it was pushed). Only a push collects them
    /// (`repairs`); the mirror stops on the error.
    refusals: Mutex<Vec<(MigrateError, Vec<String>)>>,
    /// A push, which re-checks refused ids and repairs stale journal entries; not the
    /// mirror or verify.
    repairs: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Run {
    fn new(caps: Capabilities, map: IdMap, omit: HashSet<String>, events: Events) -> Run {
        Run {
            caps: Mutex::new(caps),
            map: Mutex::new(map),
            index: Mutex::new(HashMap::new()),
            claimed: Mutex::new(HashSet::new()),
            refused: Mutex::new(BTreeMap::new()),
            not_kept: Mutex::new(BTreeSet::new()),
            rules: Mutex::new(BTreeMap::new()),
            omit,
            events,
            refusals: Mutex::new(Vec::new()),
            repairs: false,
        }
    }
    fn caps(&self) -> Capabilities {
        lock(&self.caps).clone()
    }
    fn target_of(&self, rt: ResourceType, local: &str) -> Option<String> {
        lock(&self.map).get(rt, local)
    }
    fn count(&self, rule: MatchRule) {
        *lock(&self.rules).entry(rule).or_default() += 1;
    }
    fn uncount(&self, rule: MatchRule) {
        let mut rules = lock(&self.rules);
        if let Some(n) = rules.get_mut(&rule) {
            *n -= 1;
            if *n == 0 {
                rules.remove(&rule);
            }
        }
    }
    /// A refusal that a resource deleted on the target may explain: kept for
    /// `push_all` to re-check `ids` (target ids) in a push; the error itself
    /// otherwise.
    fn record_refusal(&self, e: MigrateError, ids: Vec<String>) -> MigrateResult<()> {
        if !self.repairs {
            return Err(e);
        }
        lock(&self.refusals).push((e, ids));
        Ok(())
    }
    /// The largest body the target takes, in bytes (0: no limit announced).
    fn max_payload(&self) -> usize {
        lock(&self.caps).max_payload as usize
    }
    /// The notes of the filters the target refused, for a report.
    fn refused_notes(&self) -> Vec<String> {
        lock(&self.refused).values().cloned().collect()
    }
    /// Did the target refuse to list `rt` without a filter (in this run or, for the
    /// mirror and verify, in the push)?
    fn listing_refused(&self, rt: ResourceType) -> bool {
        lock(&self.refused).contains_key(&listing_key(rt))
    }
    /// Records that the target lists `rt` only through a filter: matching goes on by
    /// lookups, verify reads each resource by id. Kept with the refused filters
    /// (`refused_filters`: `migrate status`, the Migration page).
    fn refuse_listing(&self, e: MigrateError) -> MigrateResult<()> {
        let MigrateError::ListingRefused {
            endpoint,
            status,
            detail,
        } = e
        else {
            return Err(e);
        };
        let note = format!(
            "the target refused to list {endpoint} without a filter ({status}: {detail}); \
             each resource is looked up by filter instead and verify reads each one by id \
             (duplicates and accounts only on the target are not looked for)"
        );
        let rt = if endpoint == ResourceType::Group.endpoint() {
            ResourceType::Group
        } else {
            ResourceType::User
        };
        lock(&self.refused).insert(listing_key(rt), note);
        Ok(())
    }
}

/// The `refused` key of an unfiltered listing the target refused.
fn listing_key(rt: ResourceType) -> String {
    format!("{} listing", rt.endpoint())
}

/// Runs `work` over `jobs` with one client per worker (at most `pool.len()` at once),
/// on the current task. Stops at the first error (the other workers finish the job
/// they are on). Results come back in no particular order.
async fn in_parallel<J, T, F, Fut>(
    pool: &mut Vec<Client>,
    jobs: Vec<J>,
    work: F,
) -> MigrateResult<Vec<T>>
where
    F: Fn(Client, J) -> Fut,
    Fut: Future<Output = (Client, MigrateResult<T>)>,
{
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let n = pool.len().clamp(1, jobs.len());
    let mut queues: Vec<Vec<J>> = (0..n).map(|_| Vec::new()).collect();
    for (i, j) in jobs.into_iter().enumerate() {
        queues[i % n].push(j);
    }
    let work = &work;
    let mut workers = Vec::new();
    for q in queues {
        let client = match pool.pop() {
            Some(c) => c,
            None => return Err(MigrateError::TaskFailed("push worker")),
        };
        workers.push(Box::pin(async move {
            let mut client = client;
            let mut out = Vec::with_capacity(q.len());
            for j in q {
                let (c, r) = work(client, j).await;
                client = c;
                match r {
                    Ok(t) => out.push(t),
                    Err(e) => return (client, Err(e)),
                }
            }
            (client, Ok(out))
        }));
    }
    let mut done: Vec<Option<(Client, MigrateResult<Vec<T>>)>> =
        (0..workers.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, w) in workers.iter_mut().enumerate() {
            if done[i].is_none() {
                match w.as_mut().poll(cx) {
                    Poll::Ready(v) => done[i] = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    drop(workers);
    let mut out = Vec::new();
    let mut first_err = None;
    for (client, r) in done.into_iter().flatten() {
        pool.push(client);
        match r {
            Ok(v) => out.extend(v),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A pool of `n` clients sharing `client`'s counters and throttle gate.
fn pool_of(client: &Client, n: usize) -> Vec<Client> {
    (0..n.clamp(1, MAX_PARALLEL))
        .map(|_| client.clone())
        .collect()
}

/// The body sent for a user: its attributes less the omitted ones, `schemas`, and the
/// manager mapped to its target id from the map as it is now. Returns whether a
/// manager had to be left out because it has no target id yet.
fn user_body(run: &Run, r: &StoredResource) -> (Value, bool) {
    let mut attrs = r.attrs.clone();
    let mut unresolved = false;
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
            match run.target_of(ResourceType::User, &m) {
                Some(tid) => {
                    ext.insert("manager".into(), json!({"value": tid}));
                }
                None => {
                    ext.remove("manager");
                    unresolved = true;
                }
            }
        }
    }
    target::strip(&mut attrs, &run.omit);
    with_schemas(ResourceType::User, attrs, unresolved)
}

/// Adds `schemas`: the core schema and every extension the body still holds (RFC
/// 7643 §3; a strict target refuses extension attributes whose schema is not listed).
fn with_schemas(rt: ResourceType, mut attrs: Map<String, Value>, flag: bool) -> (Value, bool) {
    let schemas = crate::scim::resource::schemas_of(rt, &attrs);
    attrs.insert("schemas".into(), schemas);
    (Value::Object(attrs), flag)
}

/// The body of a group without members (they travel as PATCH deltas).
fn group_body(run: &Run, r: &StoredResource) -> Value {
    let mut attrs = r.attrs.clone();
    attrs.remove("members");
    target::strip(&mut attrs, &run.omit);
    with_schemas(ResourceType::Group, attrs, false).0
}

/// The local id of a user's manager, if it has one.
fn manager_of(r: &StoredResource) -> Option<&str> {
    manager_in(&r.attrs)
}

/// The manager's id in a user's attributes (a local id, or a target id in a body
/// built by `user_body`).
fn manager_in(attrs: &Map<String, Value>) -> Option<&str> {
    attrs
        .get(ENTERPRISE_USER_URN)
        .and_then(|e| e.get("manager"))
        .and_then(|m| m.get("value"))
        .and_then(Value::as_str)
}

fn name_of(rt: ResourceType, r: &StoredResource) -> String {
    r.attrs
        .get(name_attr(rt))
        .and_then(Value::as_str)
        .unwrap_or(&r.id)
        .to_owned()
}

fn answered(action: String, r: &Response) -> MigrateError {
    MigrateError::TargetAnswered {
        action,
        status: r.status,
        detail: r.detail(),
    }
}

fn too_large(what: String, run: &Run) -> MigrateError {
    MigrateError::TargetAnswered {
        action: what,
        status: 413,
        detail: format!(
            "the target refuses the body as too large even alone (limit announced: {} bytes)",
            run.max_payload()
        ),
    }
}

/// Notes which attributes a target dropped from what it was sent: the attributes of
/// `sent` missing from the representation it answered with. Only a full
/// representation counts (one that carries the naming attribute).
fn observe_drops(run: &Run, rt: ResourceType, sent: &Value, answer: &Value) {
    let (Some(s), Some(a)) = (sent.as_object(), answer.as_object()) else {
        return;
    };
    if !a.contains_key(name_attr(rt)) {
        return;
    }
    let has = |o: &Map<String, Value>, k: &str| {
        o.iter()
            .any(|(ak, av)| ak.eq_ignore_ascii_case(k) && !av.is_null())
    };
    let mut dropped = Vec::new();
    for (k, v) in s {
        if k == "schemas" || k == "password" || v.is_null() {
            continue;
        }
        if !has(a, k) {
            dropped.push(k.clone());
            continue;
        }
        if k.starts_with("urn:") {
            if let (Some(sx), Some(ax)) = (v.as_object(), a[k.as_str()].as_object()) {
                for (ek, ev) in sx {
                    if !ev.is_null() && !has(ax, ek) {
                        dropped.push(attr_name(Some(k), ek, None));
                    }
                }
            }
        }
    }
    if !dropped.is_empty() {
        lock(&run.not_kept).extend(dropped);
    }
}

/// Picks an unclaimed candidate: the first of `ids` nobody in this run matched yet.
fn claim(run: &Run, ids: &[String]) -> Option<String> {
    let map = lock(&run.map);
    let mut claimed = lock(&run.claimed);
    for id in ids {
        if !map.targets.contains_key(id) && claimed.insert(id.clone()) {
            return Some(id.clone());
        }
    }
    None
}

/// Matches in the listed index: externalId, then the name (case-insensitive).
fn match_in_index(
    run: &Run,
    rt: ResourceType,
    attrs: &Map<String, Value>,
) -> Option<(String, MatchRule)> {
    let idx = lock(&run.index);
    let index = idx.get(&rt)?;
    if let Some(e) = attrs.get("externalId").and_then(Value::as_str) {
        if let Some(ids) = index.by_external.get(e) {
            if let Some(id) = claim(run, ids) {
                return Some((id, MatchRule::ExternalId));
            }
        }
    }
    let name = attrs.get(name_attr(rt)).and_then(Value::as_str)?;
    let ids = index.by_name.get(&name.to_lowercase())?;
    let rule = match rt {
        ResourceType::User => MatchRule::UserName,
        ResourceType::Group => MatchRule::DisplayName,
    };
    claim(run, ids).map(|id| (id, rule))
}

/// Searches the target with a filter, skipping a matcher the target refused (RFC
/// 7644 §3.4.2.2 lets it refuse filters on attributes it does not support), and
/// matches the candidates by our own rule.
async fn lookup(
    client: &mut Client,
    run: &Run,
    rt: ResourceType,
    attrs: &Map<String, Value>,
) -> MigrateResult<Option<(String, MatchRule)>> {
    let name_rule = match rt {
        ResourceType::User => MatchRule::UserName,
        ResourceType::Group => MatchRule::DisplayName,
    };
    let mut tries = Vec::new();
    if let Some(e) = attrs.get("externalId").and_then(Value::as_str) {
        tries.push(("externalId", e.to_owned(), MatchRule::ExternalId));
    }
    if let Some(n) = attrs.get(name_attr(rt)).and_then(Value::as_str) {
        tries.push((name_attr(rt), n.to_owned(), name_rule));
    }
    for (attr, value, rule) in tries {
        let is_ext = attr == "externalId";
        let key = format!("{} {attr}", rt.endpoint());
        if lock(&run.refused).contains_key(&key) {
            continue;
        }
        let f = format!("{attr} eq \"{}\"", filter_value(&value));
        let r = client
            .request(
                Method::GET,
                &format!("{}?filter={}&count=10", rt.endpoint(), encode(&f)),
                None,
            )
            .await?;
        if matches!(r.status, 400 | 403 | 404 | 501) {
            let note = format!(
                "the target refused the filter `{attr} eq …` on {} ({}: {}); matching goes on without it",
                rt.endpoint(),
                r.status,
                r.detail()
            );
            lock(&run.refused).insert(key, note);
            continue;
        }
        if !r.is_success() {
            return Err(answered(format!("searching the target with {f}"), &r));
        }
        let list = r.json()?;
        let ids: Vec<String> = list["Resources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|c| {
                let got = c[attr].as_str().unwrap_or_default();
                if is_ext {
                    got == value
                } else {
                    got.to_lowercase() == value.to_lowercase()
                }
            })
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        if let Some(id) = claim(run, &ids) {
            return Ok(Some((id, rule)));
        }
    }
    Ok(None)
}

/// Lists the target's resources of `rt` into the run's index (once per run).
async fn ensure_index(client: &mut Client, run: &Run, rt: ResourceType) -> MigrateResult<()> {
    if lock(&run.index).contains_key(&rt) || run.listing_refused(rt) {
        return Ok(());
    }
    let caps = run.caps();
    let mut index = TargetIndex::default();
    let query = format!("&attributes=externalId,{}", name_attr(rt));
    let listed = target::list(client, &caps, rt, &query, &run.events, |v| {
        index.add(rt, &v)
    })
    .await;
    match listed {
        Ok(_) => {
            lock(&run.index).insert(rt, index);
            Ok(())
        }
        // Without an index, `find` looks each resource up by filter.
        Err(e) => run.refuse_listing(e),
    }
}

/// Finds an existing resource for `attrs`: in the index when there is one, else by
/// filter, else (the filters refused or blind to case) by listing the target once.
async fn find(
    client: &mut Client,
    run: &Run,
    rt: ResourceType,
    attrs: &Map<String, Value>,
    relist: bool,
) -> MigrateResult<Option<(String, MatchRule)>> {
    if relist {
        lock(&run.index).remove(&rt);
        ensure_index(client, run, rt).await?;
    }
    if lock(&run.index).contains_key(&rt) {
        return Ok(match_in_index(run, rt, attrs));
    }
    if let Some(m) = lookup(client, run, rt, attrs).await? {
        return Ok(Some(m));
    }
    Ok(None)
}

/// Finds a resource that may have appeared since the target was listed: by filter,
/// and when the filters are refused or find nothing, by listing the target again
/// (a target whose filters are case-sensitive hides `User@X` from `user@x`).
async fn find_fresh(
    client: &mut Client,
    run: &Run,
    rt: ResourceType,
    attrs: &Map<String, Value>,
) -> MigrateResult<Option<(String, MatchRule)>> {
    if let Some(m) = lookup(client, run, rt, attrs).await? {
        return Ok(Some(m));
    }
    if run.listing_refused(rt) {
        // Nothing to list; the lookup above was all the target allows.
        return Ok(None);
    }
    find(client, run, rt, attrs, true).await
}

/// Creates one resource; a 409 uniqueness or an uncertain failure looks it up before
/// anything is sent again. Returns its target id and the rule that decided.
async fn create(
    client: &mut Client,
    run: &Run,
    rt: ResourceType,
    r: &StoredResource,
    body: &Value,
) -> MigrateResult<(String, MatchRule)> {
    let what = format!("{} {}", rt.name(), name_of(rt, r));
    let mut uncertain = false;
    for _ in 0..4 {
        if uncertain {
            // The target may have created it before the answer was lost: ask it
            // now (the listing made before is stale).
            if let Some((tid, _)) = find_fresh(client, run, rt, &r.attrs).await? {
                return Ok((tid, MatchRule::Recovered));
            }
        }
        match client
            .send(Method::POST, rt.endpoint(), Some(body), false)
            .await?
        {
            Sent::Answered(resp) if resp.is_success() => {
                let v = resp.json()?;
                let tid = v["id"].as_str().map(str::to_owned).ok_or_else(|| {
                    MigrateError::TargetProtocol(format!("the target created {what} without an id"))
                })?;
                observe_drops(run, rt, body, &v);
                lock(&run.claimed).insert(tid.clone());
                return Ok((tid, MatchRule::Created));
            }
            Sent::Answered(resp) if resp.status == 409 => {
                // RFC 7644 §3.3: 409 uniqueness: the resource exists. Find it by our
                // own rule (listing the target if its filters are blind to case) and
                // make it ours.
                let Some((tid, _)) = find_fresh(client, run, rt, &r.attrs).await? else {
                    return Err(answered(
                        format!("creating {what} on the target (409, and no existing resource matches it)"),
                        &resp,
                    ));
                };
                if !replace(client, run, rt, &tid, &what, body).await? {
                    return Err(answered(format!("creating {what} on the target"), &resp));
                }
                return Ok((tid, MatchRule::Uniqueness));
            }
            Sent::Answered(resp) if resp.status == 413 => {
                return Err(too_large(format!("creating {what} on the target"), run))
            }
            Sent::Answered(resp) => {
                return Err(answered(format!("creating {what} on the target"), &resp))
            }
            Sent::Uncertain(reason) => {
                let _ = run.events.send(Progress::Retrying {
                    reason: format!("creating {what}: {reason}; looking it up before trying again"),
                    wait_ms: 0,
                });
                uncertain = true;
            }
        }
    }
    Err(MigrateError::Unreachable(format!(
        "creating {what} on the target kept failing without an answer"
    )))
}

/// Replaces one resource on the target (PUT). `Ok(false)` when the target no longer
/// has it (404).
async fn replace(
    client: &mut Client,
    run: &Run,
    rt: ResourceType,
    tid: &str,
    what: &str,
    body: &Value,
) -> MigrateResult<bool> {
    let resp = client
        .request(Method::PUT, &format!("{}/{tid}", rt.endpoint()), Some(body))
        .await?;
    match resp.status {
        200..=299 => {
            if let Ok(v) = resp.json() {
                observe_drops(run, rt, body, &v);
            }
            Ok(true)
        }
        404 => Ok(false),
        413 => Err(too_large(format!("updating {what} on the target"), run)),
        _ => Err(answered(format!("updating {what} on the target"), &resp)),
    }
}

/// Pushes one user: update the mapped or matched one, else create it. Returns the
/// target id, the rule, and whether its manager still has to be set.
async fn push_user(
    client: &mut Client,
    run: &Run,
    r: &StoredResource,
) -> MigrateResult<(String, MatchRule, bool)> {
    let rt = ResourceType::User;
    let (body, unresolved) = user_body(run, r);
    let matched = match run.target_of(rt, &r.id) {
        Some(t) => Some((t, MatchRule::Journal)),
        None => find(client, run, rt, &r.attrs, false).await?,
    };
    match send_user(client, run, r, matched.clone(), &body).await {
        // Its manager deleted on the target since it was mapped? A push sends the
        // user without it, sets the manager afterwards, and re-checks its id
        // (`Run::record_refusal`); the mirror stops on the refusal.
        Err(e @ MigrateError::TargetAnswered { status: 400, .. }) if run.repairs => {
            let Some(manager) = body.as_object().and_then(manager_in).map(str::to_owned) else {
                return Err(e);
            };
            let mut bare = body;
            if let Some(ext) = bare[ENTERPRISE_USER_URN].as_object_mut() {
                ext.remove("manager");
            }
            let (tid, rule) = send_user(client, run, r, matched, &bare).await?;
            run.record_refusal(e, vec![manager])?;
            Ok((tid, rule, true))
        }
        sent => sent.map(|(tid, rule)| (tid, rule, unresolved)),
    }
}

/// Updates the matched user (`matched`: its target id and the rule) with `body`,
/// or creates it when nothing matched or the target no longer has it.
async fn send_user(
    client: &mut Client,
    run: &Run,
    r: &StoredResource,
    matched: Option<(String, MatchRule)>,
    body: &Value,
) -> MigrateResult<(String, MatchRule)> {
    let rt = ResourceType::User;
    if let Some((tid, rule)) = matched {
        let what = format!("user {}", name_of(rt, r));
        if replace(client, run, rt, &tid, &what, body).await? {
            return Ok((tid, rule));
        }
        // Mapped, but gone on the target: create it again.
    }
    create(client, run, rt, r, body).await
}

/// Creates users with Bulk requests sized to the target's limits, split on 413.
/// Whatever a Bulk request cannot settle (an uncertain answer, an operation that
/// failed) goes through `create`, which looks before it creates again.
async fn bulk_create(
    client: &mut Client,
    run: &Run,
    users: &[StoredResource],
) -> MigrateResult<Vec<(String, String, MatchRule, bool)>> {
    let caps = run.caps();
    let max_ops = if caps.bulk_max_operations > 0 {
        (caps.bulk_max_operations as usize).min(BULK_CHUNK)
    } else {
        BULK_CHUNK
    };
    let limit = run.max_payload();
    let mut out = Vec::new();
    let mut queue: Vec<Vec<(usize, Value, bool)>> = Vec::new();
    // Pack by operation count and by body size.
    let mut cur: Vec<(usize, Value, bool)> = Vec::new();
    let mut size = 200usize;
    for (i, r) in users.iter().enumerate() {
        let (body, unresolved) = user_body(run, r);
        let len = serde_json::to_vec(&body).map(|b| b.len()).unwrap_or(0) + 120;
        if !cur.is_empty() && (cur.len() >= max_ops || (limit > 0 && size + len > limit)) {
            queue.push(std::mem::take(&mut cur));
            size = 200;
        }
        size += len;
        cur.push((i, body, unresolved));
    }
    if !cur.is_empty() {
        queue.push(cur);
    }
    while let Some(batch) = queue.pop() {
        let ops: Vec<Value> = batch
            .iter()
            .map(|(i, body, _)| json!({"method": "POST", "path": "/Users", "bulkId": format!("b{i}"), "data": body}))
            .collect();
        let req = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": ops});
        let sent = client
            .send(Method::POST, "/Bulk", Some(&req), false)
            .await?;
        let results = match sent {
            Sent::Answered(resp) if resp.status == 413 && batch.len() > 1 => {
                let mut b = batch;
                let second = b.split_off(b.len() / 2);
                queue.push(b);
                queue.push(second);
                continue;
            }
            Sent::Answered(resp) if resp.is_success() => resp.json()?["Operations"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            // Refused as a whole, or uncertain: each one on its own, looking first.
            _ => Vec::new(),
        };
        for (i, body, unresolved) in batch {
            let r = &users[i];
            let op = results
                .iter()
                .find(|o| o["bulkId"].as_str() == Some(format!("b{i}").as_str()));
            let status: u16 = op
                .and_then(|o| {
                    o["status"]
                        .as_str()
                        .and_then(|s| s.parse().ok())
                        .or(o["status"].as_u64().map(|s| s as u16))
                })
                .unwrap_or(0);
            let id = op
                .and_then(|o| o["location"].as_str())
                .and_then(|l| l.rsplit('/').next())
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let (tid, rule) = match (status, id) {
                (200..=299, Some(id)) => {
                    lock(&run.claimed).insert(id.clone());
                    (id, MatchRule::Created)
                }
                _ => {
                    // Uncertain when the request as a whole got no answer: the
                    // target may have created it.
                    if results.is_empty() {
                        if let Some((tid, _)) =
                            lookup(client, run, ResourceType::User, &r.attrs).await?
                        {
                            out.push((r.id.clone(), tid, MatchRule::Recovered, unresolved));
                            continue;
                        }
                    }
                    create(client, run, ResourceType::User, r, &body).await?
                }
            };
            out.push((r.id.clone(), tid, rule, unresolved));
        }
    }
    Ok(out)
}

async fn save_progress(
    store: &Store,
    f: impl FnOnce(&mut MigrationState) + Send + 'static,
) -> MigrateResult<()> {
    store.update_migration(f).await?;
    Ok(())
}

/// The resources of one type of a snapshot in pages of `PAGE`, in id order: the
/// walk every step of the push, the dry run and verify makes. Ends at the first
/// empty page or after the first error.
struct Pages<'a> {
    snapshot: &'a Snapshot,
    rt: ResourceType,
    /// The id of the last resource returned; `None` before the first page.
    after: Option<String>,
    done: bool,
}

impl Iterator for Pages<'_> {
    type Item = MigrateResult<Vec<StoredResource>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self
            .snapshot
            .page_after(self.rt, self.after.as_deref(), PAGE)
        {
            Ok(page) if page.is_empty() => {
                self.done = true;
                None
            }
            Ok(page) => {
                self.after = page.last().map(|r| r.id.clone());
                Some(Ok(page))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e.into()))
            }
        }
    }
}

/// Walks the resources of `rt` in `snapshot` page by page.
fn pages(snapshot: &Snapshot, rt: ResourceType) -> Pages<'_> {
    Pages {
        snapshot,
        rt,
        after: None,
        done: false,
    }
}

/// The attributes of the directory the target cannot hold.
fn unsupported(snapshot: &Snapshot, d: &Discovery) -> MigrateResult<Vec<String>> {
    Ok(unsupported_counts(snapshot, d)?.into_keys().collect())
}

/// Each attribute of the directory the target does not define, with how many users
/// and groups hold it (`migrate check --to` shows the counts: what leaving it out
/// drops). Empty when the target's schemas could not be read.
pub(crate) fn unsupported_counts(
    snapshot: &Snapshot,
    d: &Discovery,
) -> MigrateResult<BTreeMap<String, u64>> {
    let mut held_by: BTreeMap<String, u64> = BTreeMap::new();
    if d.schema.is_none() {
        return Ok(held_by);
    }
    for rt in ResourceType::ALL {
        for page in pages(snapshot, rt) {
            for r in &page? {
                let mut here = BTreeSet::new();
                d.unsupported_in(rt, &r.attrs, &mut here);
                for a in here {
                    *held_by.entry(a).or_default() += 1;
                }
            }
        }
    }
    Ok(held_by)
}

/// Lists the target when that costs fewer requests than looking each unmatched
/// resource up, or when the target cannot filter. A target that refuses to list
/// without a filter is searched per resource (noted, not a failure).
async fn choose_matching(client: &mut Client, run: &Run, snapshot: &Snapshot) -> MigrateResult<()> {
    let caps = run.caps();
    for rt in ResourceType::ALL {
        let unmapped = snapshot
            .count(rt)?
            .saturating_sub(snapshot.target_ids(rt)?.len() as u64);
        let total = match target::total(client, rt).await {
            Ok(total) => total,
            Err(e) => {
                run.refuse_listing(e)?;
                continue;
            }
        };
        let page = if caps.max_results > 0 {
            caps.max_results.min(1000)
        } else {
            1000
        };
        let pages = total.div_ceil(page.max(1));
        if total == 0 || !caps.filter || pages <= unmapped.saturating_mul(LIST_FACTOR) {
            if total == 0 {
                lock(&run.index).insert(rt, TargetIndex::default());
            } else {
                ensure_index(client, run, rt).await?;
            }
        }
    }
    Ok(())
}

/// What one push found and decided, for its report.
struct Outcome {
    created: u64,
    updated: u64,
}

/// The push: discover, refuse unsupported attributes unless told to omit them,
/// match, create or update users, set managers, create groups, set members. Resumes
/// from the journal. A dry run returns the plan and sends no write.
pub(crate) async fn push(
    store: &Store,
    client: &mut Client,
    opts: &PushOptions,
    events: &Events,
) -> MigrateResult<PushOutcome> {
    let discovery = target::discover(client).await?;
    let snapshot = store.snapshot()?;
    let unsupported = unsupported(&snapshot, &discovery)?;
    let state = snapshot.migration_state()?;
    let mut caps = discovery.caps.clone();
    if let Some(old) = state
        .capabilities
        .as_ref()
        .and_then(|v| serde_json::from_value::<Capabilities>(v.clone()).ok())
    {
        // Learned in an earlier run of this migration: PATCH refused.
        caps.members_by_put |= old.members_by_put;
    }
    let caps_json = serde_json::to_value(&caps).ok();
    // An earlier push of this migration was told to leave these out: running it
    // again (README: "running the push again finishes it") keeps that choice.
    let chosen_before = !opts.omit_unsupported
        && !unsupported.is_empty()
        && unsupported.iter().all(|a| state.omitted.contains(a));
    let omit_unsupported = opts.omit_unsupported || chosen_before;
    let omit: HashSet<String> = if omit_unsupported {
        unsupported.iter().cloned().collect()
    } else {
        HashSet::new()
    };
    let mut run = Run::new(caps.clone(), IdMap::load(&snapshot)?, omit, events.clone());
    run.repairs = true;
    choose_matching(client, &run, &snapshot).await?;
    if opts.dry_run {
        return Ok(PushOutcome::Planned(Box::new(
            dry_run(client, &run, &snapshot, unsupported, caps).await?,
        )));
    }
    if !unsupported.is_empty() && !omit_unsupported {
        return Err(MigrateError::Unsupported(unsupported));
    }
    {
        let (c, omitted) = (caps_json, unsupported.clone());
        save_progress(store, move |s| {
            s.capabilities = c;
            s.omitted = omitted;
            s.match_rules.clear();
        })
        .await?;
    }
    let mut pool = pool_of(
        client,
        if opts.parallel == 0 {
            DEFAULT_PARALLEL
        } else {
            opts.parallel
        },
    );
    let outcome = match recheck_journal(client, &run, store).await {
        Ok(dropped) => push_all(store, &run, &mut pool, &snapshot, opts.resume, dropped).await,
        Err(e) => Err(e),
    };
    // Whatever happened, keep what was learned.
    let rules: BTreeMap<String, u64> = lock(&run.rules)
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), *v))
        .collect();
    let not_kept: Vec<String> = lock(&run.not_kept).iter().cloned().collect();
    let caps_now = serde_json::to_value(run.caps()).ok();
    let refused = lock(&run.refused).clone();
    save_progress(store, move |s| {
        s.match_rules = rules;
        s.refused_filters = refused;
        for n in not_kept {
            if !s.not_kept.contains(&n) {
                s.not_kept.push(n);
            }
        }
        s.capabilities = caps_now;
    })
    .await?;
    let o = outcome?;
    let mut notes = run.refused_notes();
    if chosen_before {
        notes.push(format!(
            "left out, as the first push of this migration was told (--omit-unsupported): {}",
            unsupported.join(", ")
        ));
    }
    let rules: Vec<(MatchRule, u64)> = lock(&run.rules).iter().map(|(k, v)| (*k, *v)).collect();
    Ok(PushOutcome::Pushed(PushReport {
        users: snapshot.count(ResourceType::User)?,
        groups: snapshot.count(ResourceType::Group)?,
        created: o.created,
        updated: o.updated,
        requests: client.requests(),
        throttled: client.throttled(),
        differences: Vec::new(),
        rules,
        notes,
        only_on_target: Vec::new(),
        not_kept: Vec::new(),
        repaired: Vec::new(),
        earlier_created: state.progress.earlier_created,
        earlier_updated: state.progress.earlier_updated,
    }))
}

/// Sends the whole directory, in the order references need: users (page by page,
/// the journal written after each), the managers that had no target id yet, groups
/// without members, then every group's members as deltas. `resume`: an earlier push
/// was interrupted, so the managers of users it pushed are set again. `dropped`: the
/// local ids whose journal entry `recheck_journal` dropped (deleted on the target).
///
/// When the target refuses an update that names mapped ids (400 on a member PATCH,
/// a whole-group PUT or a manager update; 404 for the mapped group or user itself),
/// those ids are read back: the ones the target no longer has (404) lose their
/// journal entry and one more pass matches or creates them and rebuilds the
/// references to them; a refusal that no stale entry explains stops the push. Each
/// resource is counted once, by the decision that stands (the second pass counts
/// only what it decides again, and takes back what the first counted for it).
async fn push_all(
    store: &Store,
    run: &Run,
    pool: &mut Vec<Client>,
    snapshot: &Snapshot,
    resume: bool,
    mut dropped: HashSet<String>,
) -> MigrateResult<Outcome> {
    let mut tally = Tally {
        run,
        outcome: Outcome {
            created: 0,
            updated: 0,
        },
        count_journal: true,
    };
    for pass in 0..2 {
        tally.count_journal = pass == 0;
        let managers = push_users(store, run, pool, snapshot, resume, &dropped, &mut tally).await?;
        set_managers(run, pool, snapshot, &managers).await?;
        let fresh = create_groups(store, run, pool, snapshot, &mut tally).await?;
        sync_all_members(store, run, pool, snapshot, &fresh, &tally).await?;
        let refusals = std::mem::take(&mut *lock(&run.refusals));
        if refusals.is_empty() {
            break;
        }
        let suspects: Vec<(ResourceType, String, String)> = {
            let refused: HashSet<&String> = refusals.iter().flat_map(|(_, ids)| ids).collect();
            let map = lock(&run.map);
            map.ids
                .iter()
                .filter(|(_, t)| refused.contains(t))
                .map(|((rt, local), t)| (*rt, local.clone(), t.clone()))
                .collect()
        };
        let Some((first, _)) = refusals.into_iter().next() else {
            break;
        };
        if pass == 0 {
            let gone = drop_stale(&mut pool[0], run, store, suspects).await?;
            for (_, _, counted) in &gone {
                tally.uncount(counted.unwrap_or(MatchRule::Journal));
            }
            dropped = gone.into_iter().map(|(_, local, _)| local).collect();
        }
        if pass == 1 || dropped.is_empty() {
            return Err(first);
        }
    }
    Ok(tally.outcome)
}

/// Before a push that has a journal: lists the target's resources of each type the
/// journal maps and reads by id those the listing lacks (`drop_stale`), so that a
/// resource deleted on the target after an earlier push is found again or created
/// rather than referenced by an id the target refuses. A target that refuses to
/// list is not checked here; the ids of the updates it refuses are (`push_all`).
async fn recheck_journal(
    client: &mut Client,
    run: &Run,
    store: &Store,
) -> MigrateResult<HashSet<String>> {
    let mut suspects = Vec::new();
    for rt in ResourceType::ALL {
        let mapped: Vec<(String, String)> = lock(&run.map)
            .ids
            .iter()
            .filter(|((t, _), _)| *t == rt)
            .map(|((_, local), tid)| (local.clone(), tid.clone()))
            .collect();
        if mapped.is_empty() {
            continue;
        }
        ensure_index(client, run, rt).await?;
        let idx = lock(&run.index);
        let Some(index) = idx.get(&rt) else {
            continue;
        };
        suspects.extend(
            mapped
                .into_iter()
                .filter(|(_, tid)| !index.names.contains_key(tid))
                .map(|(local, tid)| (rt, local, tid)),
        );
    }
    let gone = drop_stale(client, run, store, suspects).await?;
    Ok(gone.into_iter().map(|(_, local, _)| local).collect())
}

/// Reads each suspect (type, local id, target id) by id; those the target answers
/// 404 for lose their journal entry (in memory and in the store). Returns them
/// (type, local id) with the rule that mapped them in this push (`None`: the
/// journal), which the push counted.
async fn drop_stale(
    client: &mut Client,
    run: &Run,
    store: &Store,
    suspects: Vec<(ResourceType, String, String)>,
) -> MigrateResult<Vec<(ResourceType, String, Option<MatchRule>)>> {
    let mut gone = Vec::new();
    for (rt, local, tid) in suspects {
        let r = client
            .request(Method::GET, &format!("{}/{tid}", rt.endpoint()), None)
            .await?;
        match r.status {
            404 => {
                let counted = lock(&run.map).targets.get(&tid).copied().flatten();
                gone.push((rt, local, counted))
            }
            200..=299 => {}
            _ => {
                return Err(answered(
                    format!("reading {} {tid} from the target", rt.name()),
                    &r,
                ))
            }
        }
    }
    {
        let mut map = lock(&run.map);
        for (rt, local, _) in &gone {
            map.set(*rt, local, None);
        }
    }
    store
        .map_ids(
            gone.iter()
                .map(|(rt, l, _)| (*rt, l.clone(), None))
                .collect(),
        )
        .await?;
    Ok(gone)
}

/// Counts each decision for the report (`Run::count`) and for the push's progress
/// (created; updated when matched, not when already in the journal).
struct Tally<'a> {
    run: &'a Run,
    outcome: Outcome,
    /// Count resources found in the journal: in the first pass only (a second pass
    /// finds there everything the first one mapped).
    count_journal: bool,
}

impl Tally<'_> {
    fn count(&mut self, rule: MatchRule) {
        if rule == MatchRule::Journal && !self.count_journal {
            return;
        }
        self.run.count(rule);
        match rule {
            MatchRule::Created => self.outcome.created += 1,
            MatchRule::Journal => {}
            _ => self.outcome.updated += 1,
        }
    }
    /// Takes back a decision counted for a resource that is decided again.
    fn uncount(&mut self, rule: MatchRule) {
        self.run.uncount(rule);
        match rule {
            MatchRule::Created => self.outcome.created = self.outcome.created.saturating_sub(1),
            MatchRule::Journal => {}
            _ => self.outcome.updated = self.outcome.updated.saturating_sub(1),
        }
    }
}

/// Users, page by page: each one already in the journal is skipped, the others are
/// matched and updated or created (by Bulk when offered and the listed target surely
/// lacks them); the journal and the progress are written after every page. Returns
/// the local ids of users whose manager could not be set yet.
async fn push_users(
    store: &Store,
    run: &Run,
    pool: &mut Vec<Client>,
    snapshot: &Snapshot,
    resume: bool,
    dropped: &HashSet<String>,
    tally: &mut Tally<'_>,
) -> MigrateResult<Vec<String>> {
    let users_total = snapshot.count(ResourceType::User)?;
    let groups_total = snapshot.count(ResourceType::Group)?;
    let mut done = 0u64;
    let mut managers: Vec<String> = Vec::new();
    for page in pages(snapshot, ResourceType::User) {
        let page = page?;
        let (to_send, to_create) = sort_users(run, &page, resume, dropped, tally, &mut managers);
        let results = send_users(run, pool, to_send, to_create).await?;
        let mut mapped = Vec::new();
        for (local, tid, rule, unresolved) in results {
            lock(&run.map).decide(ResourceType::User, &local, Some(&tid), Some(rule));
            tally.count(rule);
            if unresolved {
                managers.push(local.clone());
            }
            mapped.push((ResourceType::User, local, Some(tid)));
        }
        // Map before anything else, so a kill loses nothing that was done.
        store.map_ids(mapped).await?;
        done += page.len() as u64;
        let (c, u) = (tally.outcome.created, tally.outcome.updated);
        save_progress(store, move |s| {
            s.progress.users_total = users_total;
            s.progress.users_done = done;
            s.progress.groups_total = groups_total;
            s.progress.created = c;
            s.progress.updated = u;
        })
        .await?;
        let _ = run.events.send(Progress::Users {
            done,
            total: users_total,
        });
    }
    Ok(managers)
}

/// Sorts a page of users into those sent one by one (matched first) and those
/// created by Bulk; users already in the journal are counted and left out (their
/// manager queued again when resuming).
fn sort_users(
    run: &Run,
    page: &[StoredResource],
    resume: bool,
    dropped: &HashSet<String>,
    tally: &mut Tally<'_>,
    managers: &mut Vec<String>,
) -> (Vec<StoredResource>, Vec<StoredResource>) {
    let bulk = run.caps().bulk;
    let mut to_send = Vec::new();
    let mut to_create = Vec::new();
    for r in page {
        if run.target_of(ResourceType::User, &r.id).is_some() {
            // Pushed before; the mirror brings later changes. If that push was
            // interrupted, its manager may have been left out: set it again.
            tally.count(MatchRule::Journal);
            // Its manager was deleted on the target and is pushed again: the link
            // must carry the manager's new id.
            let manager_gone = manager_of(r).is_some_and(|m| dropped.contains(m));
            if (resume && manager_of(r).is_some()) || manager_gone {
                managers.push(r.id.clone());
            }
            continue;
        }
        // Bulk creates only what the listed target surely lacks; without a listing
        // each user is looked up first.
        let has_index = lock(&run.index).contains_key(&ResourceType::User);
        let matched = has_index && match_in_index(run, ResourceType::User, &r.attrs).is_some();
        if matched || !bulk || !has_index {
            to_send.push(r.clone());
        } else {
            to_create.push(r.clone());
        }
    }
    // `push_user` matches again; undo the claims made while sorting.
    lock(&run.claimed).clear();
    (to_send, to_create)
}

/// Sends one page's users: `to_send` one request each, `to_create` in Bulk chunks,
/// on the pool's workers. Returns (local id, target id, rule, manager unresolved).
async fn send_users(
    run: &Run,
    pool: &mut Vec<Client>,
    to_send: Vec<StoredResource>,
    to_create: Vec<StoredResource>,
) -> MigrateResult<Vec<(String, String, MatchRule, bool)>> {
    let mut results: Vec<(String, String, MatchRule, bool)> =
        in_parallel(pool, to_send, |mut c, r: StoredResource| async move {
            let res = push_user(&mut c, run, &r).await;
            (c, res.map(|(t, rule, u)| (r.id.clone(), t, rule, u)))
        })
        .await?;
    if !to_create.is_empty() {
        let chunks: Vec<Vec<StoredResource>> =
            to_create.chunks(BULK_CHUNK).map(|c| c.to_vec()).collect();
        let more = in_parallel(pool, chunks, |mut c, rs: Vec<StoredResource>| async move {
            let res = bulk_create(&mut c, run, &rs).await;
            (c, res)
        })
        .await?;
        results.extend(more.into_iter().flatten());
    }
    Ok(results)
}

/// Sets the managers that had no target id when their user's body was sent: every
/// user has one now, so each body built here carries the manager (a PUT each).
async fn set_managers(
    run: &Run,
    pool: &mut Vec<Client>,
    snapshot: &Snapshot,
    managers: &[String],
) -> MigrateResult<()> {
    let total = managers.len() as u64;
    let mut fixed = 0u64;
    for chunk in managers.chunks(PAGE) {
        let users: Vec<StoredResource> = chunk
            .iter()
            .filter_map(|id| snapshot.get(ResourceType::User, id).ok().flatten())
            .collect();
        in_parallel(pool, users, |mut c, r: StoredResource| async move {
            let res = async {
                let Some(tid) = run.target_of(ResourceType::User, &r.id) else {
                    return Ok(());
                };
                let (body, _) = user_body(run, &r);
                let what = format!("the manager of user {}", name_of(ResourceType::User, &r));
                match replace(&mut c, run, ResourceType::User, &tid, &what, &body).await {
                    Ok(true) => Ok(()),
                    // The user deleted on the target since it was mapped?
                    Ok(false) => run.record_refusal(gone(&what), vec![tid]),
                    // Its manager deleted there?
                    Err(e @ MigrateError::TargetAnswered { status: 400, .. }) => {
                        let mut ids = vec![tid];
                        ids.extend(body.as_object().and_then(manager_in).map(str::to_owned));
                        run.record_refusal(e, ids)
                    }
                    Err(e) => Err(e),
                }
            }
            .await;
            (c, res)
        })
        .await?;
        fixed += chunk.len() as u64;
        let _ = run.events.send(Progress::Managers { done: fixed, total });
    }
    Ok(())
}

/// Groups without members first (nested groups need each other's ids): each not in
/// the journal is matched or created. Returns the local ids of the groups created
/// in this run (nothing on the target to read before setting their members).
async fn create_groups(
    store: &Store,
    run: &Run,
    pool: &mut Vec<Client>,
    snapshot: &Snapshot,
    tally: &mut Tally<'_>,
) -> MigrateResult<HashSet<String>> {
    let groups_total = snapshot.count(ResourceType::Group)?;
    let mut done = 0u64;
    let mut fresh: HashSet<String> = HashSet::new();
    for page in pages(snapshot, ResourceType::Group) {
        let page = page?;
        let todo: Vec<StoredResource> = page
            .iter()
            .filter(|g| run.target_of(ResourceType::Group, &g.id).is_none())
            .cloned()
            .collect();
        let results = in_parallel(pool, todo, |mut c, g: StoredResource| async move {
            let res = async {
                let matched = find(&mut c, run, ResourceType::Group, &g.attrs, false).await?;
                match matched {
                    Some((tid, rule)) => Ok((g.id.clone(), tid, rule)),
                    None => {
                        let body = group_body(run, &g);
                        let (tid, rule) =
                            create(&mut c, run, ResourceType::Group, &g, &body).await?;
                        Ok((g.id.clone(), tid, rule))
                    }
                }
            }
            .await;
            (c, res)
        })
        .await?;
        let mut mapped = Vec::new();
        for (local, tid, rule) in results {
            lock(&run.map).decide(ResourceType::Group, &local, Some(&tid), Some(rule));
            if rule == MatchRule::Created {
                fresh.insert(local.clone());
            }
            tally.count(rule);
            mapped.push((ResourceType::Group, local, Some(tid)));
        }
        for _ in 0..(page.len() - mapped.len()) {
            tally.count(MatchRule::Journal);
        }
        store.map_ids(mapped).await?;
        done += page.len() as u64;
        let _ = run.events.send(Progress::Groups {
            done,
            total: groups_total,
        });
    }
    Ok(fresh)
}

/// Members (and the attributes of groups that existed), group by group, as deltas
/// (`sync_group`); the progress is written after every page of groups.
async fn sync_all_members(
    store: &Store,
    run: &Run,
    pool: &mut Vec<Client>,
    snapshot: &Snapshot,
    fresh: &HashSet<String>,
    tally: &Tally<'_>,
) -> MigrateResult<()> {
    let groups_total = snapshot.count(ResourceType::Group)?;
    let mut done = 0u64;
    for page in pages(snapshot, ResourceType::Group) {
        let page = page?;
        let mut jobs = Vec::new();
        for g in page.iter() {
            jobs.push((
                g.clone(),
                desired_members(run, snapshot, &g.id)?,
                fresh.contains(&g.id),
            ));
        }
        in_parallel(
            pool,
            jobs,
            |mut c, (g, desired, is_new): (StoredResource, Vec<String>, bool)| async move {
                let res = async {
                    let Some(tid) = run.target_of(ResourceType::Group, &g.id) else {
                        return Ok(());
                    };
                    sync_group(&mut c, run, &g, &tid, desired, is_new).await
                }
                .await;
                (c, res)
            },
        )
        .await?;
        done += page.len() as u64;
        let (c, u) = (tally.outcome.created, tally.outcome.updated);
        save_progress(store, move |s| {
            s.progress.groups_done = done;
            s.progress.created = c;
            s.progress.updated = u;
        })
        .await?;
        let _ = run.events.send(Progress::Memberships {
            done,
            total: groups_total,
        });
    }
    Ok(())
}

/// The target ids a group's members should have, from the map as it is now.
/// Members without a target id are left out (verify names them).
fn desired_members(run: &Run, snapshot: &Snapshot, group: &str) -> MigrateResult<Vec<String>> {
    let refs = snapshot.references(ResourceType::Group, group)?;
    let map = lock(&run.map);
    Ok(refs.iter().filter_map(|m| map.get(m.rt, &m.id)).collect())
}

/// How many members fit in one PATCH: at most `MEMBER_CHUNK`, fewer when the target
/// announces a smaller payload limit.
fn member_chunk(run: &Run, id_len: usize) -> usize {
    let limit = run.max_payload();
    if limit == 0 {
        return MEMBER_CHUNK;
    }
    // {"value":"<id>"}, plus the envelope.
    let per = id_len + 14;
    (limit.saturating_sub(300) / per).clamp(1, MEMBER_CHUNK)
}

/// Reads a group from the target (`query`: `""` or `?attributes=…`): its
/// attributes and member ids. `None` on 404.
async fn read_group(
    client: &mut Client,
    tid: &str,
    query: &str,
) -> MigrateResult<Option<(Value, Vec<String>)>> {
    let r = client
        .request(Method::GET, &format!("/Groups/{tid}{query}"), None)
        .await?;
    if r.status == 404 {
        return Ok(None);
    }
    if !r.is_success() {
        return Err(answered(format!("reading group {tid} from the target"), &r));
    }
    let v = r.json()?;
    let members = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["value"].as_str().map(str::to_owned))
        .collect();
    Ok(Some((v, members)))
}

/// The members of a target group that a push removes: those that are ours (`ours`:
/// mapped by the journal, or about to be) and not among `desired`. Members the
/// target has that are not ours (accounts only the target has) are left alone. The
/// push (`sync_group`) and its dry run's plan (`plan_group_changes`) both ask here.
fn members_to_remove<'a>(
    current: &'a [String],
    desired: &HashSet<&String>,
    ours: impl Fn(&String) -> bool,
) -> Vec<&'a String> {
    current
        .iter()
        .filter(|m| !desired.contains(m) && ours(m))
        .collect()
}

/// Brings one group on the target in line with the directory: its attributes
/// (displayName, externalId and the rest) and its members as PATCH deltas. Members
/// the target has that are not ours (accounts only the target has) are left alone.
/// `is_new`: created in this run without members, so nothing needs reading.
async fn sync_group(
    client: &mut Client,
    run: &Run,
    g: &StoredResource,
    tid: &str,
    desired: Vec<String>,
    is_new: bool,
) -> MigrateResult<()> {
    let what = format!("group {}", name_of(ResourceType::Group, g));
    let (current, attrs_differ) = if is_new {
        (Vec::new(), false)
    } else {
        match read_group(client, tid, "").await? {
            Some((remote, members)) => {
                let body = group_body(run, g);
                let differ = body.as_object().into_iter().flatten().any(|(k, v)| {
                    k != "schemas" && remote.get(k).is_none_or(|r| !covers(v, r, false))
                });
                (members, differ)
            }
            // Deleted on the target since it was mapped: a push drops the entry and
            // creates the group again (the mirror leaves it to the next push).
            None if run.repairs => return run.record_refusal(gone(&what), vec![tid.to_owned()]),
            None => return Ok(()),
        }
    };
    let current_set: HashSet<&String> = current.iter().collect();
    let desired_set: HashSet<&String> = desired.iter().collect();
    let add: Vec<&String> = desired
        .iter()
        .filter(|m| !current_set.contains(m))
        .collect();
    let remove = {
        let map = lock(&run.map);
        members_to_remove(&current, &desired_set, |m| map.targets.contains_key(m))
    };
    if run.caps().members_by_put {
        if add.is_empty() && remove.is_empty() && !attrs_differ {
            return Ok(());
        }
        return put_group(client, run, g, tid, &desired, &current, &what).await;
    }
    let mut ops: Vec<Value> = Vec::new();
    if attrs_differ {
        let mut body = group_body(run, g);
        if let Some(o) = body.as_object_mut() {
            o.remove("schemas");
        }
        ops.push(json!({"op": "replace", "value": body}));
    }
    let chunk = member_chunk(
        run,
        desired.first().or(current.first()).map_or(36, |s| s.len()),
    );
    let mut batches: Vec<Vec<Value>> = Vec::new();
    for c in add.chunks(chunk) {
        let vals: Vec<Value> = c.iter().map(|m| json!({"value": m})).collect();
        batches.push(vec![json!({"op": "add", "path": "members", "value": vals})]);
    }
    for c in remove.chunks(chunk) {
        batches.push(
            c.iter()
                .map(|m| json!({"op": "remove", "path": format!("members[value eq \"{}\"]", filter_value(m))}))
                .collect(),
        );
    }
    if !ops.is_empty() {
        batches.insert(0, ops);
    }
    let mut queue: Vec<Vec<Value>> = batches.into_iter().rev().collect();
    while let Some(ops) = queue.pop() {
        let req = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        let r = client
            .request(Method::PATCH, &format!("/Groups/{tid}"), Some(&req))
            .await?;
        match r.status {
            200..=299 => {}
            405 | 501 => {
                // The target takes membership only as a whole: PUT from now on.
                lock(&run.caps).members_by_put = true;
                return put_group(client, run, g, tid, &desired, &current, &what).await;
            }
            413 => {
                let Some(split) = split_patch(ops) else {
                    return Err(too_large(format!("updating the members of {what}"), run));
                };
                queue.extend(split.into_iter().rev());
            }
            400 if ops.iter().any(|o| o["op"] == "add") => {
                // Perhaps a member deleted on the target since it was pushed:
                // `push_all` re-checks the ids sent before giving up.
                let sent: Vec<String> = ops
                    .iter()
                    .filter(|o| o["op"] == "add")
                    .flat_map(|o| o["value"].as_array().cloned().unwrap_or_default())
                    .filter_map(|v| v["value"].as_str().map(str::to_owned))
                    .collect();
                let e = answered(format!("updating the members of {what} on the target"), &r);
                return run.record_refusal(e, sent);
            }
            _ => {
                return Err(answered(
                    format!("updating the members of {what} on the target"),
                    &r,
                ))
            }
        }
    }
    Ok(())
}

/// Halves a PATCH that the target found too large: its operations, or the values of
/// its one operation. `None` when it cannot be split further.
fn split_patch(mut ops: Vec<Value>) -> Option<Vec<Vec<Value>>> {
    if ops.len() > 1 {
        let second = ops.split_off(ops.len() / 2);
        return Some(vec![ops, second]);
    }
    let op = ops.pop()?;
    let vals = op["value"].as_array()?.clone();
    if vals.len() < 2 {
        return None;
    }
    let (a, b) = vals.split_at(vals.len() / 2);
    let mut first = op.clone();
    first["value"] = Value::Array(a.to_vec());
    let mut second = op;
    second["value"] = Value::Array(b.to_vec());
    Some(vec![vec![first], vec![second]])
}

/// The whole group by PUT, for targets that refuse PATCH: our members plus the
/// members only the target has (left alone). A 400 (a member deleted on the target
/// since it was mapped?) or a 404 (the group itself?) is a refusal of the ids sent
/// (`Run::record_refusal`).
async fn put_group(
    client: &mut Client,
    run: &Run,
    g: &StoredResource,
    tid: &str,
    desired: &[String],
    current: &[String],
    what: &str,
) -> MigrateResult<()> {
    let mut body = group_body(run, g);
    let mut members: Vec<String> = desired.to_vec();
    {
        let map = lock(&run.map);
        for m in current {
            if !map.targets.contains_key(m) && !members.contains(m) {
                members.push(m.clone());
            }
        }
    }
    body["members"] = Value::Array(members.iter().map(|m| json!({"value": m})).collect());
    match replace(client, run, ResourceType::Group, tid, what, &body).await {
        Ok(true) => Ok(()),
        Ok(false) => run.record_refusal(gone(what), vec![tid.to_owned()]),
        Err(e @ MigrateError::TargetAnswered { status: 400, .. }) => {
            let mut ids = desired.to_vec();
            ids.push(tid.to_owned());
            run.record_refusal(e, ids)
        }
        Err(e) => Err(e),
    }
}

/// The target answered 404 for a resource the journal maps.
fn gone(what: &str) -> MigrateError {
    MigrateError::TargetAnswered {
        action: format!("updating {what} on the target"),
        status: 404,
        detail: "not found (deleted on the target since it was pushed?)".into(),
    }
}

/// The plan of a dry run: every resource by name with the rule that would decide it.
async fn dry_run(
    client: &mut Client,
    run: &Run,
    snapshot: &Snapshot,
    unsupported: Vec<String>,
    caps: Capabilities,
) -> MigrateResult<PushPlan> {
    let mut counts = [PlanCounts::default(); 2];
    let mut preview = Vec::new();
    // What each resource would be on the target (journal or matched), and the
    // groups matched to an existing one, to say what their members will become.
    let mut planned: HashMap<(ResourceType, String), String> = HashMap::new();
    let mut matched_groups: Vec<(StoredResource, String)> = Vec::new();
    for (i, rt) in ResourceType::ALL.into_iter().enumerate() {
        for page in pages(snapshot, rt) {
            for r in &page? {
                let found = match run.target_of(rt, &r.id) {
                    Some(t) => Some((t, MatchRule::Journal)),
                    None => find(client, run, rt, &r.attrs, false).await?,
                };
                let rule = found.as_ref().map_or(MatchRule::Created, |(_, rule)| *rule);
                if let Some((tid, rule)) = found {
                    planned.insert((rt, r.id.clone()), tid.clone());
                    if rt == ResourceType::Group && rule != MatchRule::Journal {
                        matched_groups.push((r.clone(), tid));
                    }
                }
                counts[i].total += 1;
                if rule == MatchRule::Created {
                    counts[i].create += 1;
                } else {
                    counts[i].update += 1;
                }
                preview.push(PreviewItem {
                    resource_type: rt,
                    name: name_of(rt, r),
                    rule,
                });
            }
        }
    }
    let group_changes = plan_group_changes(client, run, snapshot, &planned, matched_groups).await?;
    // Listed targets only: without a listing nothing says what else the target holds.
    let only_on_target = {
        let idx = lock(&run.index);
        let ours: HashSet<&String> = planned.values().collect();
        let mut names: Vec<String> = ResourceType::ALL
            .into_iter()
            .filter_map(|rt| idx.get(&rt).map(|index| (rt, index)))
            .flat_map(|(rt, index)| {
                index
                    .names
                    .iter()
                    .filter(|(tid, _)| !ours.contains(tid))
                    .map(move |(_, name)| format!("{} {name}", rt.name()))
            })
            .collect();
        names.sort();
        names
    };
    let notes = run.refused_notes();
    Ok(PushPlan {
        only_on_target,
        group_changes,
        target: client.target().base.clone(),
        bulk: caps.bulk,
        users: counts[0],
        groups: counts[1],
        memberships: snapshot.membership_count()?,
        capabilities: caps,
        unsupported,
        preview,
        protected_groups: Vec::new(),
        blockers: Vec::new(),
        notes,
    })
}

/// For each group matched to one the target already holds: its rename, and the
/// members `sync_group` would remove (members of ours on the target that are not
/// members here; accounts only the target has are left alone) and add, reading each
/// such group's members once.
async fn plan_group_changes(
    client: &mut Client,
    run: &Run,
    snapshot: &Snapshot,
    planned: &HashMap<(ResourceType, String), String>,
    matched: Vec<(StoredResource, String)>,
) -> MigrateResult<Vec<GroupChange>> {
    let ours: HashSet<&String> = planned.values().collect();
    let mut changes = Vec::new();
    for (g, tid) in matched {
        let Some((remote, current)) = read_group(client, &tid, "").await? else {
            continue;
        };
        let refs = snapshot.references(ResourceType::Group, &g.id)?;
        // Members here by their target id; `None` for one the push will create.
        let targets: Vec<Option<&String>> = refs
            .iter()
            .map(|m| planned.get(&(m.rt, m.id.clone())))
            .collect();
        let desired: HashSet<&String> = targets.iter().flatten().copied().collect();
        let current_set: HashSet<&String> = current.iter().collect();
        let removed: Vec<String> = members_to_remove(&current, &desired, |m| ours.contains(m))
            .into_iter()
            .map(|m| {
                let idx = lock(&run.index);
                idx.get(&ResourceType::User)
                    .and_then(|i| i.names.get(m))
                    .or_else(|| idx.get(&ResourceType::Group).and_then(|i| i.names.get(m)))
                    .cloned()
                    .unwrap_or_else(|| m.clone())
            })
            .collect();
        let added = targets
            .iter()
            .filter(|t| t.is_none_or(|t| !current_set.contains(t)))
            .count() as u64;
        let name = name_of(ResourceType::Group, &g);
        let renamed_from = remote["displayName"]
            .as_str()
            .filter(|t| *t != name)
            .map(str::to_owned);
        if renamed_from.is_some() || !removed.is_empty() || added > 0 {
            changes.push(GroupChange {
                name,
                renamed_from,
                removed,
                added,
            });
        }
    }
    Ok(changes)
}

/// Replays one change event to the target: the resource's current state (a group's
/// members as a delta), or its deletion. Idempotent, so replaying an event twice is
/// harmless.
async fn replay(store: &Store, client: &mut Client, run: &Run, ev: &Event) -> MigrateResult<()> {
    if ev.id == "*" {
        return Ok(());
    }
    resend(store, client, run, ev.resource_type, &ev.id).await
}

/// Sends the resource's current state to the target: a user as a whole PUT (created
/// when the journal maps nothing and nothing matches), a group's attributes and
/// members as deltas; a resource no longer in the directory is deleted there. What
/// the mirror does for one event, and what a push does for a resource the target
/// holds differently (`repair`).
async fn resend(
    store: &Store,
    client: &mut Client,
    run: &Run,
    rt: ResourceType,
    id: &str,
) -> MigrateResult<()> {
    let snapshot = store.snapshot()?;
    lock(&run.claimed).clear();
    match snapshot.get(rt, id)? {
        Some(r) => match rt {
            ResourceType::User => {
                let (tid, _, _) = push_user(client, run, &r).await?;
                lock(&run.map).set(rt, &r.id, Some(&tid));
                store.map_ids(vec![(rt, r.id.clone(), Some(tid))]).await?;
            }
            ResourceType::Group => {
                let (tid, is_new) = match run.target_of(rt, &r.id) {
                    Some(t) => (t, false),
                    None => {
                        let (t, rule) = match find(client, run, rt, &r.attrs, false).await? {
                            Some(m) => m,
                            None => {
                                let body = group_body(run, &r);
                                create(client, run, rt, &r, &body).await?
                            }
                        };
                        (t, rule == MatchRule::Created)
                    }
                };
                lock(&run.map).set(rt, &r.id, Some(&tid));
                store
                    .map_ids(vec![(rt, r.id.clone(), Some(tid.clone()))])
                    .await?;
                let desired = desired_members(run, &snapshot, &r.id)?;
                sync_group(client, run, &r, &tid, desired, is_new).await?;
            }
        },
        None => {
            if let Some(tid) = run.target_of(rt, id) {
                let resp = client
                    .request(Method::DELETE, &format!("{}/{tid}", rt.endpoint()), None)
                    .await?;
                if !resp.is_success() && resp.status != 404 {
                    return Err(answered(
                        format!("deleting {} {tid} on the target", rt.name()),
                        &resp,
                    ));
                }
                lock(&run.map).set(rt, id, None);
                store.map_ids(vec![(rt, id.to_owned(), None)]).await?;
            }
        }
    }
    Ok(())
}

/// The differences a push repairs by sending the resource again (`repair`): an
/// attribute or the members of a pushed resource that the target holds otherwise,
/// e.g. changed by hand on the target after the push. Missing resources are found
/// again by the push itself (`recheck_journal`); duplicates and count differences
/// are not the push's to resolve.
pub(crate) fn repairable(d: &Difference) -> bool {
    d.id.is_some()
        && matches!(
            d.kind,
            DifferenceKind::Attribute { .. } | DifferenceKind::Members { .. }
        )
}

/// Sends again, as the mirror would, each resource that `differences` shows held
/// otherwise on the target (`repairable`), once each, in the order found. Run by a
/// push whose closing verification found such differences, before it verifies again
/// (README, "A resource changed by hand on the target is repaired"). Returns the
/// names of the resources sent again, and for each one the target refused, a note
/// with its answer (the verification that follows still names the difference).
pub(crate) async fn repair(
    store: &Store,
    client: &mut Client,
    events: &Events,
    differences: &[Difference],
) -> MigrateResult<(Vec<String>, Vec<String>)> {
    let run = run_from_state(store, events)?;
    let mut seen = HashSet::new();
    let (mut repaired, mut notes) = (Vec::new(), Vec::new());
    for d in differences.iter().filter(|d| repairable(d)) {
        let Some(id) = d.id.as_deref() else { continue };
        if !seen.insert((d.resource_type, id.to_owned())) {
            continue;
        }
        let name = format!(
            "{} {}",
            d.resource_type.name(),
            d.name.as_deref().unwrap_or(id)
        );
        match resend(store, client, &run, d.resource_type, id).await {
            Ok(()) => repaired.push(name),
            Err(e) => notes.push(format!("sending {name} again to repair it failed: {e}")),
        }
    }
    Ok((repaired, notes))
}

/// The journal, resource by resource, with each one's name and externalId as the
/// directory holds them now (`migrate id-map`); users first, then groups, each by
/// local id. An entry whose resource was deleted here since is left out (the mirror
/// deletes it on the target).
pub(crate) fn id_pairs(snapshot: &Snapshot) -> MigrateResult<Vec<IdPair>> {
    let mut pairs = Vec::new();
    for rt in ResourceType::ALL {
        let mut ids = snapshot.target_ids(rt)?;
        ids.sort();
        for (local, target_id) in ids {
            let Some(r) = snapshot.get(rt, &local)? else {
                continue;
            };
            pairs.push(IdPair {
                resource_type: rt,
                name: name_of(rt, &r),
                external_id: r
                    .attrs
                    .get("externalId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                id: local,
                target_id,
            });
        }
    }
    Ok(pairs)
}

/// A run for the mirror and verify: the capabilities and attribute choices the push
/// recorded, and the journal as it is now.
fn run_from_state(store: &Store, events: &Events) -> MigrateResult<Run> {
    let snapshot = store.snapshot()?;
    let state = snapshot.migration_state()?;
    let caps = state
        .capabilities
        .as_ref()
        .and_then(|v| serde_json::from_value::<Capabilities>(v.clone()).ok())
        .unwrap_or_else(|| Capabilities {
            patch: true,
            filter: true,
            ..Capabilities::default()
        });
    let omit = state.omitted.iter().cloned().collect();
    let run = Run::new(caps, IdMap::load(&snapshot)?, omit, events.clone());
    // What the push (or an earlier step) found refused stays skipped.
    *lock(&run.refused) = state.refused_filters;
    Ok(run)
}

/// Replays every pending event (up to `max`); returns how many were replayed.
pub(crate) async fn drain(
    store: &Store,
    client: &mut Client,
    max: usize,
    events: &Events,
) -> MigrateResult<usize> {
    let state = store.snapshot().and_then(|s| s.migration_state())?;
    let pending = store
        .snapshot()
        .and_then(|s| s.events_after(state.mirror_from, max))?;
    if pending.is_empty() {
        return Ok(0);
    }
    let run = run_from_state(store, events)?;
    let mut n = 0;
    for ev in &pending {
        if let Err(e) = replay(store, client, &run, ev).await {
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
            s.mirror_failures = 0;
        })
        .await?;
        n += 1;
    }
    // A target that turned out to refuse PATCH stays on PUT; a filter it refused
    // stays skipped, and shown.
    let caps = serde_json::to_value(run.caps()).ok();
    let refused = lock(&run.refused).clone();
    save_progress(store, move |s| {
        if caps.is_some() && s.capabilities.is_some() {
            s.capabilities = caps;
        }
        s.refused_filters.extend(refused);
    })
    .await?;
    Ok(n)
}

/// Lag of the mirror: events behind, seconds since the oldest pending event.
pub(crate) fn lag(
    snapshot: &Snapshot,
    state: &MigrationState,
    now: Timestamp,
) -> MigrateResult<Lag> {
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

/// Does the target's value hold everything the local value says? Strings compare
/// exactly except userName (case-insensitive); multi-valued attributes compare as
/// sets; sub-attributes the target adds are ignored.
fn covers(local: &Value, target: &Value, case_insensitive: bool) -> bool {
    match (local, target) {
        (Value::String(a), Value::String(b)) => {
            if case_insensitive {
                a.to_lowercase() == b.to_lowercase()
            } else {
                a == b
            }
        }
        (Value::Object(a), Value::Object(b)) => a.iter().all(|(k, v)| {
            v.is_null()
                || b.iter()
                    .find(|(bk, _)| bk.eq_ignore_ascii_case(k))
                    .is_some_and(|(_, bv)| covers(v, bv, false))
        }),
        (Value::Array(a), Value::Array(b)) => {
            a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| covers(x, y, false)))
        }
        (a, b) => a == b,
    }
}

/// What verify found besides differences.
pub(crate) struct Verified {
    pub differences: Vec<Difference>,
    pub only_on_target: Vec<String>,
    pub not_kept: Vec<String>,
    /// What verify could not look at, and why (a target that refuses to list).
    pub notes: Vec<String>,
}

/// The target's resources of `rt` by target id (groups without their members):
/// listed page by page, or, when the target refuses to list without a filter, each
/// resource the journal maps read by id (one not found is left out; verify names it
/// missing).
async fn read_target(
    client: &mut Client,
    run: &Run,
    caps: &Capabilities,
    rt: ResourceType,
) -> MigrateResult<HashMap<String, Value>> {
    let mut remote: HashMap<String, Value> = HashMap::new();
    if !run.listing_refused(rt) {
        let query = match rt {
            ResourceType::User => "",
            ResourceType::Group => "&excludedAttributes=members",
        };
        let listed = target::list(client, caps, rt, query, &run.events, |v| {
            if let Some(id) = v["id"].as_str() {
                remote.insert(id.to_owned(), v);
            }
        })
        .await;
        match listed {
            Ok(_) => return Ok(remote),
            Err(e) => run.refuse_listing(e)?,
        }
    }
    let tids: Vec<String> = lock(&run.map)
        .ids
        .iter()
        .filter(|((t, _), _)| *t == rt)
        .map(|(_, tid)| tid.clone())
        .collect();
    let query = match rt {
        ResourceType::User => "",
        ResourceType::Group => "?excludedAttributes=members",
    };
    for tid in tids {
        let r = client
            .request(
                Method::GET,
                &format!("{}/{tid}{query}", rt.endpoint()),
                None,
            )
            .await?;
        if r.status == 404 {
            continue;
        }
        if !r.is_success() {
            return Err(answered(
                format!("reading {} {tid} from the target", rt.name()),
                &r,
            ));
        }
        remote.insert(tid, r.json()?);
    }
    Ok(remote)
}

fn difference(rt: ResourceType, r: &StoredResource, kind: DifferenceKind) -> Difference {
    Difference {
        resource_type: rt,
        id: Some(r.id.clone()),
        name: Some(name_of(rt, r)),
        kind,
    }
}

/// Compares the attributes of a local body with the target's representation,
/// skipping what the target does not keep.
fn compare(
    rt: ResourceType,
    r: &StoredResource,
    expected: &Value,
    remote: &Value,
    skip: &HashSet<String>,
    out: &mut Vec<Difference>,
) {
    let get = attribute_of;
    for (k, v) in expected.as_object().into_iter().flatten() {
        if k == "schemas" || k == "members" || skip.contains(k) || v.is_null() {
            continue;
        }
        let got = get(remote, k);
        if k.starts_with("urn:") {
            for (ek, ev) in v.as_object().into_iter().flatten() {
                let name = attr_name(Some(k), ek, None);
                if skip.contains(&name) || ev.is_null() {
                    continue;
                }
                let g = got.as_ref().and_then(|g| get(g, ek));
                if !g.as_ref().is_some_and(|g| covers(ev, g, false)) {
                    out.push(difference(
                        rt,
                        r,
                        DifferenceKind::Attribute {
                            attribute: name,
                            local: ev.clone(),
                            target: g.unwrap_or(Value::Null),
                        },
                    ));
                }
            }
            continue;
        }
        let ok = got.as_ref().is_some_and(|g| covers(v, g, k == "userName"));
        if !ok {
            out.push(difference(
                rt,
                r,
                DifferenceKind::Attribute {
                    attribute: k.clone(),
                    local: v.clone(),
                    target: got.unwrap_or(Value::Null),
                },
            ));
        }
    }
}

/// Reads the target back page by page (groups without their members, then each
/// group's members) and compares it with the directory. Accounts only the target
/// has are listed by name and left out of the differences; duplicates on the target
/// are differences named by userName / displayName.
pub(crate) async fn verify(
    store: &Store,
    client: &mut Client,
    events: &Events,
) -> MigrateResult<Verified> {
    let snapshot = store.snapshot()?;
    let state = snapshot.migration_state()?;
    let run = run_from_state(store, events)?;
    let caps = run.caps();
    let skip: HashSet<String> = state
        .omitted
        .iter()
        .chain(state.not_kept.iter())
        .cloned()
        .collect();
    let mut diffs = Vec::new();
    let mut only = Vec::new();
    // Target id → name, for members named in a difference.
    let mut names: HashMap<String, String> = HashMap::new();
    for rt in ResourceType::ALL {
        let remote = read_target(client, &run, &caps, rt).await?;
        diffs.extend(duplicates(rt, &remote));
        let compared = compare_each(&run, &snapshot, rt, &remote, &skip, &mut diffs)?;
        names.extend(remote.iter().map(|(id, v)| {
            (
                id.clone(),
                printable(v[name_attr(rt)].as_str().unwrap_or(id), NAME_CHARS),
            )
        }));
        compare_members(client, &run, &snapshot, compared.groups, &names, &mut diffs).await?;
        for (id, v) in &remote {
            if !compared.ours.contains(id) {
                only.push(format!(
                    "{} {}",
                    rt.name(),
                    printable(v[name_attr(rt)].as_str().unwrap_or(id), NAME_CHARS)
                ));
            }
        }
    }
    only.sort();
    let mut not_kept: Vec<String> = skip.into_iter().collect();
    not_kept.sort();
    let notes = ResourceType::ALL
        .into_iter()
        .filter_map(|rt| lock(&run.refused).get(&listing_key(rt)).cloned())
        .collect();
    Ok(Verified {
        differences: diffs,
        only_on_target: only,
        not_kept,
        notes,
    })
}

/// The target's resources (by target id) that share a name by our rule
/// (case-insensitive), one difference per name.
fn duplicates(rt: ResourceType, remote: &HashMap<String, Value>) -> Vec<Difference> {
    let mut by_name: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (id, v) in remote {
        let n = v[name_attr(rt)].as_str().unwrap_or_default();
        by_name
            .entry(n.to_lowercase())
            .or_default()
            .push((printable(n, NAME_CHARS), id.clone()));
    }
    let mut out = Vec::new();
    for (_, mut ids) in by_name.into_iter().filter(|(_, v)| v.len() > 1) {
        ids.sort();
        out.push(Difference {
            resource_type: rt,
            id: None,
            name: Some(ids[0].0.clone()),
            kind: DifferenceKind::Duplicate {
                target_ids: ids.into_iter().map(|(_, id)| id).collect(),
            },
        });
    }
    out
}

/// The manager a target's user holds, as the target wrote it (`{"value": "…"}`,
/// or null when it has none): a link this directory cannot map is reported with
/// the target's own value, never as null when the target holds one.
fn target_manager(user: &Value) -> Value {
    attribute_of(user, ENTERPRISE_USER_URN)
        .and_then(|ext| attribute_of(&ext, "manager"))
        .unwrap_or(Value::Null)
}

/// The attribute `name` of a JSON object, its name compared case-insensitively
/// (RFC 7643 §2.1: attribute names are case-insensitive).
fn attribute_of(o: &Value, name: &str) -> Option<Value> {
    o.as_object().and_then(|o| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    })
}

/// What `compare_each` leaves for the rest of verify.
struct Compared {
    /// Target ids the journal maps (a listed resource not in here is the target's own).
    ours: HashSet<String>,
    /// Groups found on the target, with their target id, whose members are compared next.
    groups: Vec<(StoredResource, String)>,
}

/// Compares every local resource of `rt` with its target representation in
/// `remote`: never pushed, missing on the target, or attribute by attribute
/// (`compare`), skipping the attributes in `skip`. Reports progress per page.
fn compare_each(
    run: &Run,
    snapshot: &Snapshot,
    rt: ResourceType,
    remote: &HashMap<String, Value>,
    skip: &HashSet<String>,
    diffs: &mut Vec<Difference>,
) -> MigrateResult<Compared> {
    let total = snapshot.count(rt)?;
    let mut done = 0u64;
    let mut compared = Compared {
        ours: HashSet::new(),
        groups: Vec::new(),
    };
    for page in pages(snapshot, rt) {
        let page = page?;
        for r in &page {
            let Some(tid) = run.target_of(rt, &r.id) else {
                diffs.push(difference(rt, r, DifferenceKind::NeverPushed));
                continue;
            };
            compared.ours.insert(tid.clone());
            let Some(got) = remote.get(&tid) else {
                diffs.push(difference(
                    rt,
                    r,
                    DifferenceKind::MissingOnTarget { target_id: tid },
                ));
                continue;
            };
            let expected = match rt {
                ResourceType::User => {
                    let (body, unresolved) = user_body(run, r);
                    if unresolved {
                        // A link to a deleted user (older releases kept them) is no
                        // push failure: say so, `migrate check` lists what to fix.
                        let local = match manager_of(r) {
                            Some(m) if snapshot.get(ResourceType::User, m)?.is_none() => {
                                format!("the manager \"{m}\" does not exist in this directory")
                            }
                            _ => "a manager that was never pushed".to_owned(),
                        };
                        diffs.push(difference(
                            rt,
                            r,
                            DifferenceKind::Attribute {
                                attribute: format!("{ENTERPRISE_USER_URN}:manager"),
                                local: json!(local),
                                target: target_manager(got),
                            },
                        ));
                    }
                    body
                }
                ResourceType::Group => {
                    compared.groups.push((r.clone(), tid.clone()));
                    group_body(run, r)
                }
            };
            compare(rt, r, &expected, got, skip, diffs);
        }
        done += page.len() as u64;
        let _ = run.events.send(Progress::Verify {
            resource_type: rt,
            done,
            total,
        });
    }
    Ok(compared)
}

/// Reads each group's members from the target and compares them with the
/// directory's, through the journal: members missing on the target and members of
/// ours the target has in excess, by name (`names`: target id → name). Members that
/// are the target's own accounts are left alone.
async fn compare_members(
    client: &mut Client,
    run: &Run,
    snapshot: &Snapshot,
    groups: Vec<(StoredResource, String)>,
    names: &HashMap<String, String>,
    diffs: &mut Vec<Difference>,
) -> MigrateResult<()> {
    for (g, tid) in groups {
        let Some((_, got)) = read_group(client, &tid, "?attributes=members").await? else {
            // Listed a moment ago, gone now.
            diffs.push(difference(
                ResourceType::Group,
                &g,
                DifferenceKind::MissingOnTarget { target_id: tid },
            ));
            continue;
        };
        let got: HashSet<String> = got.into_iter().collect();
        let refs = snapshot.references(ResourceType::Group, &g.id)?;
        let mut missing = Vec::new();
        let mut want = HashSet::new();
        for m in &refs {
            match run.target_of(m.rt, &m.id) {
                Some(t) => {
                    if !got.contains(&t) {
                        missing.push(m.display.clone().unwrap_or_else(|| m.id.clone()));
                    }
                    want.insert(t);
                }
                None => missing.push(m.display.clone().unwrap_or_else(|| m.id.clone())),
            }
        }
        let map = lock(&run.map);
        let extra: Vec<String> = got
            .iter()
            .filter(|t| !want.contains(*t) && map.targets.contains_key(*t))
            .map(|t| names.get(t).cloned().unwrap_or_else(|| t.clone()))
            .collect();
        drop(map);
        if !missing.is_empty() || !extra.is_empty() {
            diffs.push(difference(
                ResourceType::Group,
                &g,
                DifferenceKind::Members { missing, extra },
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_too_large_is_split_by_operations_then_by_values() {
        let ops = vec![
            json!({"op": "add"}),
            json!({"op": "remove"}),
            json!({"op": "x"}),
        ];
        let s = split_patch(ops).unwrap();
        assert_eq!(s[0].len(), 1);
        assert_eq!(s[1].len(), 2);
        let one = vec![
            json!({"op": "add", "path": "members", "value": [{"value": "a"}, {"value": "b"}, {"value": "c"}]}),
        ];
        let s = split_patch(one).unwrap();
        assert_eq!(s[0][0]["value"].as_array().unwrap().len(), 1);
        assert_eq!(s[1][0]["value"].as_array().unwrap().len(), 2);
        let single = vec![json!({"op": "add", "path": "members", "value": [{"value": "a"}]})];
        assert!(split_patch(single).is_none());
    }

    #[test]
    fn member_chunks_follow_the_payload_limit() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let run = Run::new(
            Capabilities::default(),
            IdMap::default(),
            HashSet::new(),
            tx.clone(),
        );
        assert_eq!(member_chunk(&run, 36), MEMBER_CHUNK);
        let run = Run::new(
            Capabilities {
                max_payload: 32_768,
                ..Capabilities::default()
            },
            IdMap::default(),
            HashSet::new(),
            tx,
        );
        let n = member_chunk(&run, 36);
        assert!(n < MEMBER_CHUNK && n * 50 + 300 <= 32_768, "{n}");
    }

    #[test]
    fn user_names_compare_case_insensitively_beyond_ascii() {
        assert!(covers(&json!("Ärger@x"), &json!("ärger@X"), true));
        assert!(!covers(&json!("a"), &json!("A"), false));
    }
}
