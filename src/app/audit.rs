//! The audit trail every edge writes to: who (a token, an admin account, a CLI user),
//! from where, what was attempted on which resource (by its name as it was), and how
//! it ended, refused attempts included. Each entry is stored (`store::audit`) and
//! written to the log as one `audit` event (JSON with `--log-format json`). Reading
//! back: `search` (filtered, newest first, paged with the match count) and `export`
//! (CSV or JSON Lines). Knows neither HTTP nor redb.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::App;
use crate::clock::Timestamp;
use crate::scim::schema::ResourceType;
use crate::store::{ActorKind, AuditOutcome, AuditRecord, StoreError, StoreResult};

/// Audit writes in flight from the SCIM path; past this, entries are logged but not
/// stored (a flood of refused requests cannot queue unbounded work).
pub(crate) const MAX_PENDING: usize = 1024;

/// Who is acting, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    pub kind: ActorKind,
    /// The token's name, the admin account, or the operating-system user.
    pub name: String,
    pub client: Option<IpAddr>,
}

impl Caller {
    pub(crate) fn token(name: &str, client: IpAddr) -> Caller {
        Caller {
            kind: ActorKind::Token,
            name: name.to_owned(),
            client: Some(client),
        }
    }
    pub(crate) fn admin(name: &str, client: IpAddr) -> Caller {
        Caller {
            kind: ActorKind::Admin,
            name: name.to_owned(),
            client: Some(client),
        }
    }
    pub(crate) fn cli(user: &str) -> Caller {
        Caller {
            kind: ActorKind::Cli,
            name: user.to_owned(),
            client: None,
        }
    }
}

/// The actor name recorded for a SCIM request that carried no valid token.
pub(crate) const NO_VALID_TOKEN: &str = "(no valid token)";

/// An actor in words, as (name, kind), shown as "name (kind)" wherever an actor is
/// named: "entra (token)", "alice (admin account)", "CLI (unix user root)",
/// "import (scimbridge)". A command-line user is the operating-system account, so it
/// is never written as a bare name that could be read as an admin account's.
pub(crate) fn actor_words(kind: ActorKind, name: &str) -> (String, String) {
    match kind {
        ActorKind::Cli => ("CLI".to_owned(), format!("unix user {name}")),
        // Not "(no valid token) (token)", as the trial saw it.
        ActorKind::Token if name == NO_VALID_TOKEN => {
            ("unknown caller".to_owned(), "no valid token".to_owned())
        }
        other => (name.to_owned(), kind_words(other).to_owned()),
    }
}

/// What kind of actor, in words (the Activity page's filter and `actor_words`).
pub(crate) fn kind_words(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::Token => "token",
        ActorKind::Admin => "admin account",
        ActorKind::Cli => "command line",
        ActorKind::System => "scimbridge",
    }
}

/// What happened, before it is stamped with a caller and a time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    /// `scim.create`, `token.revoke`, `migration.cutover`…
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub resource_name: Option<String>,
    /// `None`: done; `Some(reason)`: refused, denied or failed (`ended`) for that
    /// reason.
    pub refused: Option<String>,
    /// How an attempt that did not take effect ended (refused unless told).
    pub ended: Option<AuditOutcome>,
    /// The HTTP status, for SCIM requests.
    pub status: Option<u16>,
}

impl Entry {
    pub(crate) fn new(action: &str) -> Entry {
        Entry {
            action: action.to_owned(),
            ..Entry::default()
        }
    }
    /// The resource acted on: its type, id and name as it was.
    pub(crate) fn on(mut self, rt: &str, id: Option<&str>, name: Option<&str>) -> Entry {
        self.resource_type = Some(rt.to_owned());
        self.resource_id = id.map(str::to_owned);
        self.resource_name = name.map(str::to_owned);
        self
    }
    /// The entry that records a long step's start (`ACTION.start`, the same
    /// resource), written before the step runs so that one the server did not live
    /// to finish is on record; the step's own entry follows when it ends.
    pub(crate) fn started(&self) -> Entry {
        Entry {
            action: format!("{}.start", self.action),
            ..self.clone()
        }
    }
    /// Marks the entry refused, with the reason shown to the caller.
    pub(crate) fn refused(mut self, reason: impl Into<String>) -> Entry {
        self.refused = Some(reason.into());
        self
    }
    /// The outcome of `r`: done, or refused with the error's message.
    pub(crate) fn outcome<T, E: std::fmt::Display>(self, r: &Result<T, E>) -> Entry {
        self.outcome_as(r, |_| AuditOutcome::Refused)
    }
    /// The outcome of `r`: done, or ended as `class` says (refused, denied or
    /// failed) with the error's message.
    pub(crate) fn outcome_as<T, E: std::fmt::Display>(
        mut self,
        r: &Result<T, E>,
        class: impl FnOnce(&E) -> AuditOutcome,
    ) -> Entry {
        match r {
            Ok(_) => self,
            Err(e) => {
                self.ended = Some(class(e));
                self.refused(e.to_string())
            }
        }
    }
    fn stamp(self, caller: &Caller, time: Timestamp) -> AuditRecord {
        AuditRecord {
            seq: 0,
            time,
            actor_kind: caller.kind,
            actor: caller.name.clone(),
            client: caller.client,
            action: self.action,
            resource_type: self.resource_type,
            resource_id: self.resource_id,
            resource_name: self.resource_name,
            outcome: match (&self.refused, self.ended) {
                (None, _) => AuditOutcome::Done,
                (Some(_), Some(ended)) => ended,
                (Some(_), None) => AuditOutcome::Refused,
            },
            status: self.status,
            reason: self.refused,
        }
    }
}

/// The audit entry of one directory write, stored in the write's own transaction
/// when the write succeeds (`App::execute`, `store::Store::create`), so an
/// acknowledged write always has its entry and costs one group-commit job, not two
/// (issue 10). The store fills in the resource's id and name; a refused write
/// changes nothing and is audited by its edge afterwards (`App::audit_later`).
#[derive(Debug, Clone)]
pub(crate) struct WriteAudit {
    pub caller: Caller,
    /// The action and resource type, and the status the edge answers with when the
    /// write succeeds.
    pub entry: Entry,
}

impl WriteAudit {
    /// The record to store with the write, stamped at `time`.
    pub(crate) fn record(self, time: Timestamp) -> AuditRecord {
        self.entry.stamp(&self.caller, time)
    }
}

/// Writes the log line of an entry stored with its write (`WriteAudit`), once that
/// write is durable.
pub(crate) fn log_stored(r: &AuditRecord) {
    log(r);
}

/// Writes one entry to the log (target `audit`): plain values, absent ones left out;
/// `request_id` when a request's task writes it (its `request` line has the same).
/// Names come from identity providers; both log formats escape their control
/// characters (`logline`, JSON), and the human one quotes a name with spaces.
fn log(r: &AuditRecord) {
    tracing::info!(
        target: "audit",
        request_id = crate::logline::request_id(),
        actor_kind = r.actor_kind.as_str(),
        actor = r.actor.as_str(),
        client = r.client.map(|c| c.to_string()),
        action = %r.action,
        resource_type = r.resource_type.as_deref(),
        resource_id = r.resource_id.as_deref(),
        resource_name = r.resource_name.as_deref(),
        outcome = r.outcome.as_str(),
        status = r.status,
        reason = r.reason.as_deref(),
        "audit"
    );
}

impl App {
    /// A resource's name (a User's userName, a Group's displayName) as it is now, for
    /// an audit entry that must still read after the resource is gone.
    pub(crate) fn resource_name(&self, rt: ResourceType, id: &str) -> Option<String> {
        self.store.snapshot().ok()?.name_of(rt, id).ok()?
    }

    /// Records `entry` for `caller`: logged now, stored durably before this returns.
    pub(crate) async fn audit(&self, caller: &Caller, entry: Entry) {
        let r = entry.stamp(caller, Timestamp::now());
        log(&r);
        if let Err(e) = self.store.append_audit(vec![r]).await {
            tracing::warn!(error = %e, "an audit entry could not be stored (it is in this log)");
        }
    }

    /// Records `entry` without waiting (the SCIM path: the answer is not held up by
    /// the audit commit). At most `MAX_PENDING` in flight; beyond, the entry is only
    /// logged.
    pub(crate) fn audit_later(self: &Arc<Self>, caller: &Caller, entry: Entry) {
        let r = entry.stamp(caller, Timestamp::now());
        log(&r);
        let Ok(permit) = self.audit_slots.clone().try_acquire_owned() else {
            tracing::warn!("audit writes are backed up; this entry is only in the log");
            return;
        };
        let app = self.clone();
        tokio::spawn(async move {
            if let Err(e) = app.store.append_audit(vec![r]).await {
                tracing::warn!(error = %e, "an audit entry could not be stored (it is in this log)");
            }
            drop(permit);
        });
    }
}

// ---- reading -------------------------------------------------------------------------

/// Which entries to show: every given condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct AuditFilter {
    /// Text found (case-insensitively) in the actor, the action, the resource's name
    /// or id, the client address or the reason.
    pub q: String,
    /// `token`, `admin`, `cli` or `system`; empty for all.
    pub actor: String,
    /// `done`, `refused`, `denied` or `failed`; empty for all.
    pub outcome: String,
    /// An action or its prefix (`scim.`, `token.`, `migration.`); empty for all.
    pub action: String,
}

impl AuditFilter {
    pub(crate) fn matches(&self, r: &AuditRecord) -> bool {
        if !self.actor.is_empty() && r.actor_kind.as_str() != self.actor {
            return false;
        }
        if !self.outcome.is_empty() && r.outcome.as_str() != self.outcome {
            return false;
        }
        if !self.action.is_empty() && !r.action.starts_with(&self.action) {
            return false;
        }
        let q = self.q.trim().to_lowercase();
        if q.is_empty() {
            return true;
        }
        let client = r.client.map(|c| c.to_string());
        let found = [
            Some(r.actor.as_str()),
            Some(r.action.as_str()),
            r.resource_name.as_deref(),
            r.resource_id.as_deref(),
            r.reason.as_deref(),
            client.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|f| f.to_lowercase().contains(&q));
        found
    }
}

/// The column the Activity page sorts by (issue 14 point 9 for the lists, applied to
/// the audit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuditSort {
    /// When it happened (the entry's sequence number): newest first by default.
    #[default]
    Time,
    /// The actor's name (token, admin account, CLI user), caseless.
    Actor,
    /// `scim.create`, `token.revoke`…
    Action,
    /// The resource's name as it was (else its id, else its type), caseless.
    Resource,
    /// `done` before `refused`, then by HTTP status.
    Outcome,
}

impl AuditSort {
    /// The query-string value (`sort=actor`).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuditSort::Time => "time",
            AuditSort::Actor => "actor",
            AuditSort::Action => "action",
            AuditSort::Resource => "resource",
            AuditSort::Outcome => "outcome",
        }
    }

    /// The order a click on the column asks for first: newest first for time,
    /// A to Z for the others.
    pub(crate) fn first_descending(self) -> bool {
        self == AuditSort::Time
    }

    /// The sort key: the column's value, then the sequence number, so that equal
    /// values keep their time order and every order is total.
    fn key(self, r: &AuditRecord) -> (String, u64) {
        let text = match self {
            AuditSort::Time => String::new(),
            AuditSort::Actor => r.actor.to_lowercase(),
            AuditSort::Action => r.action.clone(),
            AuditSort::Resource => r
                .resource_name
                .as_deref()
                .or(r.resource_id.as_deref())
                .or(r.resource_type.as_deref())
                .unwrap_or("")
                .to_lowercase(),
            AuditSort::Outcome => format!("{}{:03}", r.outcome.as_str(), r.status.unwrap_or(0)),
        };
        (text, r.seq)
    }
}

/// An entry ranked for a sorted page; `Ord` is the page's order (descending
/// reverses it), so a max-heap's top is the entry that would be shown last.
struct Ranked {
    key: (String, u64),
    descending: bool,
    record: AuditRecord,
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let natural = self.key.cmp(&other.key);
        if self.descending {
            natural.reverse()
        } else {
            natural
        }
    }
}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Ranked {}

/// The entries of one page in a sorted order, from entries offered in any order:
/// a max-heap holds the first `offset + limit` seen so far.
struct SortedPage {
    sort: AuditSort,
    descending: bool,
    offset: usize,
    keep: usize,
    best: std::collections::BinaryHeap<Ranked>,
}

impl SortedPage {
    fn new((sort, descending): (AuditSort, bool), offset: u64, limit: usize) -> SortedPage {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        SortedPage {
            sort,
            descending,
            offset,
            keep: offset.saturating_add(limit),
            best: std::collections::BinaryHeap::new(),
        }
    }

    fn offer(&mut self, record: AuditRecord) {
        self.best.push(Ranked {
            key: self.sort.key(&record),
            descending: self.descending,
            record,
        });
        if self.best.len() > self.keep {
            self.best.pop();
        }
    }

    /// The page: entries `offset + 1 ..= offset + limit` in order.
    fn finish(self) -> Vec<AuditRecord> {
        self.best
            .into_sorted_vec()
            .into_iter()
            .skip(self.offset)
            .map(|r| r.record)
            .collect()
    }
}

/// One page of matching entries, in the asked order (newest first by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AuditPage {
    pub records: Vec<AuditRecord>,
    /// Matching entries in all (the page is `offset+1 ..= offset+records.len()` of it).
    pub matched: u64,
    pub offset: u64,
}

/// The export formats of the Activity page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExportFormat {
    Csv,
    JsonLines,
}

const CSV_HEADER: &str =
    "seq,time,actor_kind,actor,client,action,resource_type,resource_id,resource_name,outcome,status,reason";

/// One CSV cell (RFC 4180 quoting). A cell that a spreadsheet would run as a
/// formula (starting with `= + - @`, or a tab or carriage return) gets a leading `'`:
/// names come from identity providers (OWASP "CSV injection").
pub(crate) fn csv_cell(s: &str) -> String {
    let guarded = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if guarded.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", guarded.replace('"', "\"\""))
    } else {
        guarded
    }
}

fn csv_line(r: &AuditRecord) -> String {
    let opt = |s: &Option<String>| csv_cell(s.as_deref().unwrap_or(""));
    [
        r.seq.to_string(),
        r.time.to_rfc3339(),
        r.actor_kind.as_str().to_owned(),
        csv_cell(&r.actor),
        r.client.map(|c| c.to_string()).unwrap_or_default(),
        csv_cell(&r.action),
        opt(&r.resource_type),
        opt(&r.resource_id),
        opt(&r.resource_name),
        r.outcome.as_str().to_owned(),
        r.status.map(|s| s.to_string()).unwrap_or_default(),
        opt(&r.reason),
    ]
    .join(",")
}

fn export_failed(e: std::io::Error) -> StoreError {
    StoreError::Storage(format!("writing the audit export failed: {e}"))
}

impl App {
    /// The `limit` matching entries after the first `offset` matches in the order
    /// `sort` (`descending` or not), and how many match in all. Scans the audit
    /// table once (one snapshot). Newest first streams; any other order keeps only
    /// the best `offset + limit` entries in a heap, so memory follows the page asked
    /// for, not the size of the audit.
    pub(crate) fn audit_search(
        &self,
        filter: &AuditFilter,
        (sort, descending): (AuditSort, bool),
        offset: u64,
        limit: usize,
    ) -> StoreResult<AuditPage> {
        let snap = self.store.snapshot()?;
        let mut matched = 0u64;
        let mut records = Vec::new();
        if sort == AuditSort::Time && descending {
            snap.audit_newest_first(|r| {
                if filter.matches(&r) {
                    if matched >= offset && records.len() < limit {
                        records.push(r);
                    }
                    matched += 1;
                }
                true
            })?;
        } else {
            let mut best = SortedPage::new((sort, descending), offset, limit);
            snap.audit_newest_first(|r| {
                if filter.matches(&r) {
                    matched += 1;
                    best.offer(r);
                }
                true
            })?;
            records = best.finish();
        }
        Ok(AuditPage {
            records,
            matched,
            offset,
        })
    }

    /// The newest `limit` matching entries, newest first, without counting the rest:
    /// reading stops at the `limit`th match (the dashboard's "Recent changes", drawn
    /// on every visit, so its cost must not grow with the audit).
    pub(crate) fn audit_newest(
        &self,
        filter: &AuditFilter,
        limit: usize,
    ) -> StoreResult<Vec<AuditRecord>> {
        let mut records = Vec::with_capacity(limit);
        if limit > 0 {
            self.store.snapshot()?.audit_newest_first(|r| {
                if filter.matches(&r) {
                    records.push(r);
                }
                records.len() < limit
            })?;
        }
        Ok(records)
    }

    /// Every matching entry, newest first, as CSV (with a header line) or JSON Lines.
    pub(crate) fn audit_export(
        &self,
        filter: &AuditFilter,
        format: ExportFormat,
        out: &mut impl Write,
    ) -> StoreResult<()> {
        let snap = self.store.snapshot()?;
        let mut failed = None;
        if format == ExportFormat::Csv {
            writeln!(out, "{CSV_HEADER}").map_err(export_failed)?;
        }
        snap.audit_newest_first(|r| {
            if !filter.matches(&r) {
                return true;
            }
            let written = match format {
                ExportFormat::Csv => writeln!(out, "{}", csv_line(&r)),
                ExportFormat::JsonLines => serde_json::to_writer(&mut *out, &r)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n")),
            };
            match written {
                Ok(()) => true,
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        match failed {
            Some(e) => Err(export_failed(e)),
            None => Ok(()),
        }
    }
}

/// The most entries `resource_history` returns.
pub(crate) const HISTORY_LIMIT: usize = 50;

/// What the audit knows of one resource (the page of a deleted one shows it).
#[derive(Debug, Clone, Default)]
pub(crate) struct ResourceHistory {
    /// The newest `HISTORY_LIMIT` entries naming it by type and id, newest first.
    pub entries: Vec<AuditRecord>,
    /// Whether there are older ones beyond those.
    pub more: bool,
    /// The newest delete that took effect (`scim.delete`, done), when the audit has
    /// one: when and by whom it was deleted.
    pub deleted: Option<AuditRecord>,
}

impl ResourceHistory {
    /// The name the newest entry gave it (its name as it was when last touched).
    pub(crate) fn last_name(&self) -> Option<&str> {
        self.entries.iter().find_map(|r| r.resource_name.as_deref())
    }
}

impl App {
    /// The audit entries of the resource `rt`/`id`, newest first (see
    /// `ResourceHistory`): one pass over the audit table on one snapshot, as an
    /// Activity search. A Bulk request is audited as one entry without resource, so
    /// what it did is not here.
    pub(crate) fn resource_history(
        &self,
        rt: ResourceType,
        id: &str,
    ) -> StoreResult<ResourceHistory> {
        let mut h = ResourceHistory::default();
        self.store.snapshot()?.audit_newest_first(|r| {
            if r.resource_type.as_deref() != Some(rt.name()) || r.resource_id.as_deref() != Some(id)
            {
                return true;
            }
            if h.deleted.is_none() && r.action == "scim.delete" && r.outcome == AuditOutcome::Done {
                h.deleted = Some(r.clone());
            }
            if h.entries.len() < HISTORY_LIMIT {
                h.entries.push(r);
                true
            } else {
                h.more = true;
                // The delete is the newest change of a deleted resource: found by now
                // unless it is not in the audit at all.
                h.deleted.is_none()
            }
        })?;
        Ok(h)
    }
}

/// Audit entries read back at most when looking for the names of deleted resources:
/// the dashboard's lookup stays bounded however busy the bridge is.
pub(crate) const NAME_LOOKBACK: usize = 10_000;

/// How far before the oldest request in question entries are read: the entry of a
/// write is stamped before its answer, the request after it.
const NAME_LOOKBACK_SLACK: time::Duration = time::Duration::minutes(1);

/// Finds what resources were last called in the audit (each entry keeps the name "as
/// it was"; a delete's, the name before it), offered entries newest first. The newest
/// entry naming a resource wins. Stops at entries older than `since` or after
/// `NAME_LOOKBACK` entries; a resource left unnamed keeps its id (a Bulk request has
/// one entry for the whole request, so what it deleted has no name here).
pub(crate) struct NameSearch<'a> {
    wanted: &'a [(ResourceType, &'a str)],
    names: Vec<Option<String>>,
    since: Timestamp,
    read: usize,
}

impl<'a> NameSearch<'a> {
    /// A search for `wanted`, among entries from `since` (less `NAME_LOOKBACK_SLACK`).
    pub(crate) fn new(wanted: &'a [(ResourceType, &'a str)], since: Timestamp) -> Self {
        NameSearch {
            wanted,
            names: vec![None; wanted.len()],
            since: since.saturating_add(-NAME_LOOKBACK_SLACK),
            read: 0,
        }
    }

    /// Takes the next older entry; `false` when the search is over.
    pub(crate) fn offer(&mut self, r: &AuditRecord) -> bool {
        if r.time < self.since || self.read >= NAME_LOOKBACK {
            return false;
        }
        self.read += 1;
        if let (Some(rt), Some(id), Some(name)) = (
            r.resource_type.as_deref(),
            r.resource_id.as_deref(),
            r.resource_name.as_deref(),
        ) {
            for (i, (want_rt, want_id)) in self.wanted.iter().enumerate() {
                if self.names[i].is_none() && want_rt.name() == rt && *want_id == id {
                    self.names[i] = Some(name.to_owned());
                }
            }
        }
        self.names.iter().any(Option::is_none)
    }

    /// The names found, in the order of `wanted`.
    pub(crate) fn finish(self) -> Vec<Option<String>> {
        self.names
    }
}

impl App {
    /// The last names the audit recorded for `wanted` (type, id), looking back to
    /// `since` (see `NameSearch`): what the dashboard shows for a resource a recent
    /// request named and the directory no longer has.
    pub(crate) fn names_in_audit(
        &self,
        wanted: &[(ResourceType, &str)],
        since: Timestamp,
    ) -> StoreResult<Vec<Option<String>>> {
        let mut search = NameSearch::new(wanted, since);
        if !wanted.is_empty() {
            self.store
                .snapshot()?
                .audit_newest_first(|r| search.offer(&r))?;
        }
        Ok(search.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_resource_is_named_by_its_newest_audit_entry() {
        let t0 = Timestamp::parse("2026-11-30T12:00:00Z").unwrap();
        let at = |s: i64| t0.saturating_add(time::Duration::seconds(s));
        let entry = |action: &str, rt: &str, id: &str, name: Option<&str>, time: Timestamp| {
            Entry::new(action)
                .on(rt, Some(id), name)
                .stamp(&Caller::token("entra", "192.0.2.7".parse().unwrap()), time)
        };
        // Newest first, as the store offers them.
        let newest_first = [
            entry("scim.delete", "Group", "g1", Some("Temp crew"), at(300)),
            entry("scim.bulk", "Group", "g2", None, at(290)),
            entry("scim.replace", "User", "u1", Some("ada.new"), at(200)),
            entry("scim.create", "User", "u1", Some("ada"), at(100)),
            entry("scim.create", "User", "u9", Some("old"), at(-1000)),
        ];
        let wanted = [
            (ResourceType::User, "u1"),
            (ResourceType::Group, "g1"),
            (ResourceType::User, "g1"),
            (ResourceType::Group, "g2"),
            (ResourceType::User, "u9"),
        ];
        let mut search = NameSearch::new(&wanted, at(150));
        let mut offered = 0;
        for r in &newest_first {
            offered += 1;
            if !search.offer(r) {
                break;
            }
        }
        assert_eq!(
            search.finish(),
            [
                Some("ada.new".to_owned()),
                Some("Temp crew".to_owned()),
                None,
                None,
                None
            ],
            "the newest name; the type must match; a Bulk entry names nothing; too old is not read"
        );
        assert_eq!(offered, 5, "stopped at the first entry before the window");

        // All found: the search ends there.
        let one = [(ResourceType::Group, "g1")];
        let mut search = NameSearch::new(&one, at(0));
        assert!(!search.offer(&newest_first[0]));
        // Bounded however many entries are in the window.
        let mut search = NameSearch::new(&one, at(0));
        let other = entry("scim.create", "User", "x", Some("x"), at(10));
        let read = (0..NAME_LOOKBACK + 10)
            .take_while(|_| search.offer(&other))
            .count();
        assert_eq!(read, NAME_LOOKBACK);
    }

    #[test]
    fn actors_are_named_with_their_kind_once() {
        let words = |k, n| actor_words(k, n);
        assert_eq!(
            words(ActorKind::Token, "entra"),
            ("entra".into(), "token".into())
        );
        assert_eq!(
            words(ActorKind::Cli, "root"),
            ("CLI".into(), "unix user root".into())
        );
        assert_eq!(
            words(ActorKind::Token, NO_VALID_TOKEN),
            ("unknown caller".into(), "no valid token".into())
        );
    }

    #[test]
    fn csv_cells_that_look_like_formulas_are_defused() {
        assert_eq!(csv_cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_cell("+1"), "'+1");
        assert_eq!(csv_cell("-2"), "'-2");
        assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_cell("ada"), "ada");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
    }

    #[test]
    fn sorted_pages_follow_the_column_then_time() {
        let who = |name: &str, seq: u64, status: Option<u16>| {
            let mut r = Entry::new(if seq.is_multiple_of(2) {
                "scim.create"
            } else {
                "token.issue"
            })
            .on("User", Some("id"), Some(&format!("user{}", 9 - seq)))
            .stamp(
                &Caller::token(name, "192.0.2.7".parse().unwrap()),
                Timestamp::now(),
            );
            r.seq = seq;
            r.status = status;
            r
        };
        let all = [
            who("okta", 1, Some(201)),
            who("Entra", 2, Some(409)),
            who("admin", 3, None),
            who("entra", 4, Some(201)),
            who("bob", 5, None),
        ];
        let page = |sort: AuditSort, desc: bool, offset: u64, limit: usize| {
            let mut p = SortedPage::new((sort, desc), offset, limit);
            // Offered newest first, as the store scans.
            for r in all.iter().rev() {
                p.offer(r.clone());
            }
            p.finish().into_iter().map(|r| r.seq).collect::<Vec<_>>()
        };
        // Caseless, ties in time order.
        assert_eq!(page(AuditSort::Actor, false, 0, 10), [3, 5, 2, 4, 1]);
        assert_eq!(page(AuditSort::Actor, true, 0, 10), [1, 4, 2, 5, 3]);
        assert_eq!(
            page(AuditSort::Actor, false, 1, 2),
            [5, 2],
            "page 2 of size 2, offset 1"
        );
        assert_eq!(page(AuditSort::Time, false, 0, 3), [1, 2, 3]);
        assert_eq!(
            page(AuditSort::Resource, false, 0, 2),
            [5, 4],
            "user4, user5"
        );
        assert_eq!(page(AuditSort::Action, false, 0, 10), [2, 4, 1, 3, 5]);
        assert_eq!(page(AuditSort::Outcome, false, 0, 10), [3, 5, 1, 4, 2]);
        assert!(page(AuditSort::Outcome, false, 5, 10).is_empty());
    }

    #[test]
    fn filter_matches_every_condition() {
        let r = Entry::new("scim.delete")
            .on("User", Some("u1"), Some("Bob@Example.com"))
            .refused("not found")
            .stamp(
                &Caller::token("entra", "192.0.2.7".parse().unwrap()),
                Timestamp::now(),
            );
        let f = |q: &str, actor: &str, outcome: &str, action: &str| AuditFilter {
            q: q.into(),
            actor: actor.into(),
            outcome: outcome.into(),
            action: action.into(),
        };
        assert!(f("bob@", "", "", "").matches(&r));
        assert!(f("192.0.2.7", "token", "refused", "scim.").matches(&r));
        assert!(!f("", "admin", "", "").matches(&r));
        assert!(!f("", "", "done", "").matches(&r));
        assert!(!f("", "", "", "token.").matches(&r));
        assert!(!f("alice", "", "", "").matches(&r));
    }
}
