//! Migration state kept in the store: the state machine (in `settings`) and the
//! journal that maps local ids to the target's ids, so that a push resumes without
//! duplicates and the mirror knows what to update.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{rt_code, Snapshot, Store, StoreResult, SETTINGS};
use crate::clock::Timestamp;
use crate::scim::schema::ResourceType;
use crate::secret::Secret;

/// (resource type, local id) → target id.
pub(super) const MIGRATION_MAP: TableDefinition<(u8, &str), &str> =
    TableDefinition::new("migration_map");
const STATE_KEY: &str = "migration";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Phase {
    #[default]
    NotStarted,
    Checked,
    Pushing,
    Mirroring,
    Verified,
    CutOver,
}

impl Phase {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Phase::NotStarted => "not started",
            Phase::Checked => "checked",
            Phase::Pushing => "pushing",
            Phase::Mirroring => "mirroring",
            Phase::Verified => "verified",
            Phase::CutOver => "cut over",
        }
    }
    /// After the initial push, before cut-over: every accepted change is replayed.
    pub(crate) fn is_mirroring(self) -> bool {
        matches!(self, Phase::Mirroring | Phase::Verified)
    }
}

/// Progress counters of a push.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PushProgress {
    pub users_total: u64,
    pub users_done: u64,
    pub groups_total: u64,
    pub groups_done: u64,
    pub created: u64,
    pub updated: u64,
    /// Created and updated by the earlier runs of this migration's push (an
    /// interrupted one and its resumption, a repair): `created` and `updated` count
    /// the latest run only (trial 8 item 9). Absent in earlier states: 0.
    #[serde(default)]
    pub earlier_created: u64,
    #[serde(default)]
    pub earlier_updated: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MigrationState {
    pub phase: Phase,
    /// The target's SCIM base URL (normalised).
    pub target: Option<String>,
    /// The target's bearer token. Needed to keep mirroring across restarts; never
    /// shown or logged (`public` drops it before a status is shown).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::secret::exposed_opt"
    )]
    pub token: Option<Secret>,
    /// PEM of the CA to verify the target with, when not the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cacert: Option<String>,
    #[serde(default)]
    pub allow_http: bool,
    /// Events with a higher sequence number still have to be replayed to the target.
    pub mirror_from: u64,
    pub progress: PushProgress,
    pub started_at: Option<Timestamp>,
    pub updated_at: Option<Timestamp>,
    pub verified_at: Option<Timestamp>,
    pub cutover_at: Option<Timestamp>,
    pub last_error: Option<String>,
    /// Failed attempts of the mirror in a row: each request to the target that
    /// failed (the client retries one up to 8 times) and each step that could not
    /// start (no target token). Set from the first failure on, back to 0 when an
    /// event is replayed or a push starts; `last_error` holds the latest reason.
    /// Absent (0) in states written before it existed.
    #[serde(default)]
    pub mirror_failures: u32,
    /// Differences found by the last verification.
    pub differences: Option<u64>,
    /// What the target announced (the migration layer's `Capabilities`, as JSON:
    /// the store does not know its shape).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<serde_json::Value>,
    /// How many resources each matching rule decided in the last push (rule name →
    /// count).
    #[serde(default)]
    pub match_rules: std::collections::BTreeMap<String, u64>,
    /// Attributes left out of every body because the target does not define them
    /// (`--omit-unsupported`).
    #[serde(default)]
    pub omitted: Vec<String>,
    /// Attributes the target accepted but did not keep (observed on its answers).
    #[serde(default)]
    pub not_kept: Vec<String>,
    /// The last push stopped before it finished; running it again resumes.
    #[serde(default)]
    pub push_incomplete: bool,
    /// Lookup filters the target refused (RFC 7644 §3.4.2.2 lets it refuse filters
    /// on attributes it does not support), by endpoint and attribute
    /// (`"/Users externalId"`) → the note shown, with the target's `detail`. Each
    /// push learns them afresh; the mirror skips them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub refused_filters: std::collections::BTreeMap<String, String>,
    /// What the last verification could not compare, and why (a target that refuses
    /// to list without a filter: duplicates and accounts only on the target not
    /// looked for), as `migrate verify` prints them; the Migration page shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_notes: Vec<String>,
    /// Set in the copy `Store::erase_target_token` renames over the database file:
    /// the target token's bytes are gone from the file. A cut-over state without it
    /// (a failed rewrite, or a cut-over by an earlier release) is rewritten at the
    /// next start.
    #[serde(default)]
    pub token_erased: bool,
    /// The last verification (the CLI's, the Migration page's or the push's closing
    /// one): when, how many differences and the first of them, for the Migration
    /// page. Absent in states written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verify: Option<LastVerify>,
}

/// How many differences `LastVerify` keeps (the page says "and N more").
pub(crate) const KEPT_DIFFERENCES: usize = 50;

/// The outcome of one verification as the Migration page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LastVerify {
    pub at: Timestamp,
    /// Every difference found (not only those listed).
    pub count: u64,
    /// The first `KEPT_DIFFERENCES`, in verify's order.
    pub listed: Vec<ListedDifference>,
}

/// One difference in words: "User", "bob.jones@example.com", "missing on the
/// target", the attribute when one differs, and verify's sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListedDifference {
    pub resource_type: String,
    pub name: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    pub detail: String,
}

impl MigrationState {
    /// The state without secrets, for status displays.
    pub(crate) fn public(&self) -> MigrationState {
        MigrationState {
            token: None,
            cacert: None,
            ..self.clone()
        }
    }
}

/// Where the stored migration policy lives in `settings`.
const POLICY_KEY: &str = "migration_policy";

/// The migration policy as set by `migrate policy set` or the Migration page (issue
/// 14): a field left unset falls back to the config file's `[migration]`, then the
/// default (`migrate::policy` resolves that). A new `settings` key, absent in older
/// databases, which read as "nothing stored": no format upgrade needed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StoredPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_domains: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected_groups: Option<Vec<String>>,
}

/// Where the last readiness check's result lives in `settings` (issue 14 point 8:
/// it survives a restart). The store keeps it as JSON without knowing its shape
/// (`migrate::readiness::LastCheck`); a new key, absent in older databases, which
/// read as "not checked yet": no format upgrade needed.
const READINESS_KEY: &str = "migration_readiness";

/// Removes the push target's token from the migration state in `txn` (a backup
/// copy keeps the target's address, so a restored bridge resumes with
/// `migrate push --token-file`).
pub(crate) fn drop_target_token(txn: &WriteTransaction) -> StoreResult<()> {
    drop_token_and(txn, |_| {})
}

/// `drop_target_token`, then `also` changes the state (when there is one).
fn drop_token_and(
    txn: &WriteTransaction,
    also: impl FnOnce(&mut MigrationState),
) -> StoreResult<()> {
    let mut t = txn.open_table(SETTINGS)?;
    let state = t.get(STATE_KEY)?.map(|v| v.value().to_vec());
    if let Some(bytes) = state {
        let mut state: MigrationState = serde_json::from_slice(&bytes)?;
        let before = state.clone();
        state.token = None;
        also(&mut state);
        if state != before {
            t.insert(STATE_KEY, serde_json::to_vec(&state)?.as_slice())?;
        }
    }
    Ok(())
}

impl Snapshot {
    /// The stored migration policy (all fields unset when none was stored).
    pub(crate) fn migration_policy(&self) -> StoreResult<StoredPolicy> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = match t.get(POLICY_KEY)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => StoredPolicy::default(),
        };
        Ok(r)
    }

    /// The last readiness check as stored by `Store::set_last_readiness`, if any.
    pub(crate) fn last_readiness(&self) -> StoreResult<Option<serde_json::Value>> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = match t.get(READINESS_KEY)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        Ok(r)
    }

    pub(crate) fn migration_state(&self) -> StoreResult<MigrationState> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = match t.get(STATE_KEY)? {
            Some(v) => serde_json::from_slice(v.value())?,
            None => MigrationState::default(),
        };
        Ok(r)
    }

    /// Every (local id, target id) pair of one resource type, in local id order.
    pub(crate) fn target_ids(&self, rt: ResourceType) -> StoreResult<Vec<(String, String)>> {
        let t = self.txn().open_table(MIGRATION_MAP)?;
        let code = rt_code(rt);
        let mut out = Vec::new();
        for entry in t.range((code, "")..(code + 1, ""))? {
            let (k, v) = entry?;
            out.push((k.value().1.to_owned(), v.value().to_owned()));
        }
        Ok(out)
    }

    pub(crate) fn mapped_count(&self) -> StoreResult<u64> {
        Ok(self.txn().open_table(MIGRATION_MAP)?.len()?)
    }
}

impl Store {
    /// Changes the stored migration policy with `f`, durably; returns the new value.
    pub(crate) async fn update_migration_policy(
        &self,
        f: impl FnOnce(&mut StoredPolicy) + Send + 'static,
    ) -> StoreResult<StoredPolicy> {
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let mut policy: StoredPolicy = match t.get(POLICY_KEY)?.map(|v| v.value().to_vec()) {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => StoredPolicy::default(),
            };
            f(&mut policy);
            if policy == StoredPolicy::default() {
                t.remove(POLICY_KEY)?;
            } else {
                t.insert(POLICY_KEY, serde_json::to_vec(&policy)?.as_slice())?;
            }
            Ok(policy)
        })
        .await
    }

    /// Removes the push target's token for good (issue 11): drops it from the
    /// migration state, then rewrites the database into a fresh file
    /// (`rewrite_file`) whose state says `token_erased`, so no freed page of the
    /// file holds the token's bytes any more.
    pub(crate) async fn erase_target_token(&self) -> StoreResult<()> {
        self.update_migration(|s| s.token = None).await?;
        self.rewrite_file(|txn| drop_token_and(txn, |s| s.token_erased = true))
            .await
    }

    /// Keeps the last readiness check's result, durably, replacing the one before.
    pub(crate) async fn set_last_readiness(&self, check: serde_json::Value) -> StoreResult<()> {
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            t.insert(READINESS_KEY, serde_json::to_vec(&check)?.as_slice())?;
            Ok(())
        })
        .await
    }

    /// Replaces the migration state after `f` changed it; returns the new state.
    pub(crate) async fn update_migration(
        &self,
        f: impl FnOnce(&mut MigrationState) + Send + 'static,
    ) -> StoreResult<MigrationState> {
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let mut state: MigrationState = match t.get(STATE_KEY)?.map(|v| v.value().to_vec()) {
                Some(bytes) => serde_json::from_slice(&bytes)?,
                None => MigrationState::default(),
            };
            f(&mut state);
            t.insert(STATE_KEY, serde_json::to_vec(&state)?.as_slice())?;
            Ok(state)
        })
        .await
    }

    /// Records local → target ids (None removes the mapping).
    pub(crate) async fn map_ids(
        &self,
        entries: Vec<(ResourceType, String, Option<String>)>,
    ) -> StoreResult<()> {
        self.write(move |txn| {
            let mut t = txn.open_table(MIGRATION_MAP)?;
            for (rt, local, target) in entries {
                match target {
                    Some(tid) => {
                        t.insert((rt_code(rt), local.as_str()), tid.as_str())?;
                    }
                    None => {
                        t.remove((rt_code(rt), local.as_str()))?;
                    }
                }
            }
            Ok(())
        })
        .await
    }

    /// Forgets every mapping (abort).
    pub(crate) async fn clear_map(&self) -> StoreResult<()> {
        self.write(|txn| {
            txn.delete_table(MIGRATION_MAP)?;
            txn.open_table(MIGRATION_MAP)?;
            Ok(())
        })
        .await
    }
}
