//! The audit log as stored: sequence number → one JSON `AuditRecord` per admin, CLI or
//! SCIM write, refused ones included. Kept apart from the change events on purpose:
//! the change events are the migration mirror's feed and hold only acknowledged
//! changes, so a refused request can never be replayed to a migration target; the
//! audit log holds what people and identity providers tried, with who, from where,
//! the resource's name as it was, the outcome and the reason. This module knows
//! nothing of HTTP or of how the records are shown.

use std::net::IpAddr;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Snapshot, StoreResult};
use crate::clock::Timestamp;

/// sequence number → `AuditRecord` (JSON).
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");

/// Who acted: a SCIM token (its name), a named admin account on the admin page, a
/// user of the command line (the operating-system account), or the bridge itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ActorKind {
    Token,
    Admin,
    Cli,
    System,
}

impl ActorKind {
    pub(crate) const ALL: [ActorKind; 4] = [
        ActorKind::Token,
        ActorKind::Admin,
        ActorKind::Cli,
        ActorKind::System,
    ];
    /// `token`, `admin`, `cli` or `system`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ActorKind::Token => "token",
            ActorKind::Admin => "admin",
            ActorKind::Cli => "cli",
            ActorKind::System => "system",
        }
    }
}

/// How an attempt ended, in the words of the traffic chart (`OutcomeClass`):
/// refused (the request or the other side's 4xx), denied (401/403), failed (5xx,
/// the network, TLS). `reason` says why. Stored by name: entries written before
/// `Denied` and `Failed` existed read unchanged (both were `refused` then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuditOutcome {
    /// It took effect (or, for a background step, it was started).
    Done,
    /// It was refused: bad input, a wrong state, or a 4xx of the other side.
    Refused,
    /// A credential was not accepted (401/403).
    Denied,
    /// It failed: a 5xx, the network or TLS, a timeout.
    Failed,
}

impl AuditOutcome {
    /// `done`, `refused`, `denied` or `failed`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Done => "done",
            AuditOutcome::Refused => "refused",
            AuditOutcome::Denied => "denied",
            AuditOutcome::Failed => "failed",
        }
    }
}

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AuditRecord {
    /// Assigned when stored (0 before).
    #[serde(default)]
    pub seq: u64,
    pub time: Timestamp,
    pub actor_kind: ActorKind,
    /// The token's name, the admin account, or the operating-system user.
    pub actor: String,
    /// The client's address (SCIM and the admin page); `None` for the CLI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<IpAddr>,
    /// What was attempted, e.g. `scim.create`, `token.revoke`, `migration.cutover`.
    pub action: String,
    /// The resource type (`User`, `Group`, `Token`, `Migration`…), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
    /// The resource's name as it was at the time (userName, displayName, token
    /// name), so the entry still reads after the resource is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_name: Option<String>,
    pub outcome: AuditOutcome,
    /// The HTTP status of a SCIM request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it was refused (the SCIM error's detail, the page's message), or a note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Appends `records` in order, numbering them (`seq`) after the newest entry.
pub(crate) fn append(txn: &WriteTransaction, records: &mut [AuditRecord]) -> StoreResult<()> {
    append_to(&mut txn.open_table(AUDIT)?, records)
}

/// [`append`] into the audit table `t`, open.
pub(super) fn append_to(
    t: &mut redb::Table<'_, u64, &'static [u8]>,
    records: &mut [AuditRecord],
) -> StoreResult<()> {
    let mut seq = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    for r in records {
        seq += 1;
        r.seq = seq;
        t.insert(seq, serde_json::to_vec(r)?.as_slice())?;
    }
    Ok(())
}

impl Snapshot {
    /// Calls `f` with every audit entry, newest first, until it returns `false`.
    pub(crate) fn audit_newest_first(
        &self,
        mut f: impl FnMut(AuditRecord) -> bool,
    ) -> StoreResult<()> {
        let t = self.txn().open_table(AUDIT)?;
        for row in t.iter()?.rev() {
            let (_, v) = row?;
            if !f(serde_json::from_slice(v.value())?) {
                break;
            }
        }
        Ok(())
    }
}

impl super::Store {
    /// Appends `records` durably (in the next group commit).
    pub(crate) async fn append_audit(&self, mut records: Vec<AuditRecord>) -> StoreResult<()> {
        self.write(move |txn| append(txn, &mut records)).await
    }
}
