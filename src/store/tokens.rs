//! SCIM bearer tokens as stored: metadata by token id, and the SHA-256 of each secret
//! → token id. The secret itself is never stored; generating and hashing it is the
//! auth layer's job.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::traffic::{drop_traffic_in, put_traffic_in, put_unrecognised_in, TokenTraffic};
use super::{Snapshot, Store, StoreError, StoreResult};
use crate::clock::Timestamp;
use crate::scim::error::ScimError;

/// token id → token record (JSON).
pub(super) const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// SHA-256 of the secret → token id.
pub(super) const TOKEN_HASHES: TableDefinition<&[u8], &str> = TableDefinition::new("token_hashes");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Scope {
    /// GET only; writes answer 403.
    ReadOnly,
    ReadWrite,
}

impl Scope {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scope::ReadOnly => "read-only",
            Scope::ReadWrite => "read-write",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenRecord {
    pub id: String,
    pub name: String,
    /// Hex SHA-256 of the secret.
    pub hash: String,
    pub scope: Scope,
    pub created: Timestamp,
    /// Refused from this instant on; `None` never expires.
    pub expires: Option<Timestamp>,
    pub last_used: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
    /// When `token rotate` issued a successor under the same name: the secret stays
    /// valid until it is revoked, never automatically. Absent in format 3's records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub superseded: Option<Timestamp>,
    /// The quiet-time alarm: warn when the token has sent nothing for this many
    /// minutes (issue 14 point 5). `None` (the default, and every record stored
    /// before the alarm existed): never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_after_minutes: Option<u32>,
}

/// Whether a token is accepted at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenState {
    Active,
    /// Accepted, but a successor was issued under its name (`token rotate`).
    Superseded,
    Revoked,
    Expired,
}

impl TokenState {
    /// `active`, `superseded`, `revoked` or `expired`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenState::Active => "active",
            TokenState::Superseded => "superseded",
            TokenState::Revoked => "revoked",
            TokenState::Expired => "expired",
        }
    }

    /// Whether a request with the token is accepted.
    pub(crate) fn accepted(self) -> bool {
        matches!(self, TokenState::Active | TokenState::Superseded)
    }
}

impl TokenRecord {
    /// The token's state at `now`.
    pub(crate) fn state(&self, now: Timestamp) -> TokenState {
        if self.revoked.is_some() {
            TokenState::Revoked
        } else if self.expires.is_some_and(|e| e <= now) {
            TokenState::Expired
        } else if self.superseded.is_some() {
            TokenState::Superseded
        } else {
            TokenState::Active
        }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn all_tokens(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> StoreResult<Vec<TokenRecord>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (_, v) = row?;
        out.push(serde_json::from_slice(v.value())?);
    }
    Ok(out)
}

impl Snapshot {
    pub(crate) fn tokens(&self) -> StoreResult<Vec<TokenRecord>> {
        all_tokens(&self.txn().open_table(TOKENS)?)
    }

    /// The token whose secret hashes to `hash`, whatever its state.
    pub(crate) fn token_by_hash(&self, hash: &[u8]) -> StoreResult<Option<TokenRecord>> {
        let ids = self.txn().open_table(TOKEN_HASHES)?;
        let Some(id) = ids.get(hash)?.map(|v| v.value().to_owned()) else {
            return Ok(None);
        };
        let t = self.txn().open_table(TOKENS)?;
        let r = match t.get(id.as_str())? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        Ok(r)
    }
}

/// Token records by secret hash. A lookup that started before a token changed must
/// not put its stale answer in the cache: `generation` counts changes, and both the
/// insert and the invalidation happen under the cache's lock.
#[derive(Default)]
pub(super) struct TokenCache {
    generation: u64,
    by_hash: std::collections::HashMap<Vec<u8>, TokenRecord>,
}

/// Most cached tokens (only tokens that exist are cached).
const CACHE_LIMIT: usize = 4096;

impl Store {
    /// The token whose secret hashes to `hash`, whatever its state; cached.
    pub(crate) fn token_by_hash(&self, hash: &[u8]) -> StoreResult<Option<TokenRecord>> {
        let generation = {
            let cache = self.inner.tokens.lock().map_err(|_| StoreError::Closed)?;
            if let Some(r) = cache.by_hash.get(hash) {
                return Ok(Some(r.clone()));
            }
            cache.generation
        };
        let found = self.snapshot()?.token_by_hash(hash)?;
        if let Some(r) = &found {
            let mut cache = self.inner.tokens.lock().map_err(|_| StoreError::Closed)?;
            if cache.generation == generation && cache.by_hash.len() < CACHE_LIMIT {
                cache.by_hash.insert(hash.to_vec(), r.clone());
            }
        }
        Ok(found)
    }

    fn invalidate_tokens(&self) {
        if let Ok(mut cache) = self.inner.tokens.lock() {
            cache.generation += 1;
            cache.by_hash.clear();
        }
    }

    /// Stores a new token. Names are unique among tokens that are not revoked.
    pub(crate) async fn add_token(
        &self,
        record: TokenRecord,
        secret_hash: Vec<u8>,
    ) -> StoreResult<TokenRecord> {
        let r = self
            .write(move |txn| add_token_in(txn, record, &secret_hash))
            .await;
        self.invalidate_tokens();
        r
    }

    /// Revokes the secrets `which` selects under this name (or the one with this
    /// id); takes effect on the next request.
    pub(crate) async fn revoke_token(
        &self,
        name: String,
        which: RevokeWhich,
        now: Timestamp,
    ) -> StoreResult<Vec<TokenRecord>> {
        let r = self
            .write(move |txn| revoke_in(txn, &name, which, now))
            .await;
        self.invalidate_tokens();
        r
    }

    /// Marks the token `old_id` superseded and stores its successor, in one
    /// transaction; refused when `old_id` was revoked or rotated meanwhile. Returns
    /// (old, new).
    pub(crate) async fn rotate_token(
        &self,
        old_id: String,
        successor: TokenRecord,
        secret_hash: Vec<u8>,
        now: Timestamp,
    ) -> StoreResult<(TokenRecord, TokenRecord)> {
        let r = self
            .write(move |txn| {
                let old: Option<TokenRecord> = match txn.open_table(TOKENS)?.get(old_id.as_str())? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                let Some(mut old) = old.filter(|t| t.revoked.is_none() && t.superseded.is_none())
                else {
                    return Err(StoreError::Scim(ScimError::not_found(format!(
                        "the token {old_id} was revoked or rotated meanwhile; nothing was issued"
                    ))));
                };
                old.superseded = Some(now);
                txn.open_table(TOKENS)?
                    .insert(old.id.as_str(), serde_json::to_vec(&old)?.as_slice())?;
                let new = add_token_in(txn, successor, &secret_hash)?;
                Ok((old, new))
            })
            .await;
        self.invalidate_tokens();
        r
    }

    /// Records when tokens were last used, their traffic and (when `Some`) that of
    /// the requests no token sent (batched by the caller; not worth an fsync per
    /// request), in one transaction. Returns the ids whose traffic was refused
    /// because the token is gone.
    pub(crate) async fn record_token_use(
        &self,
        uses: Vec<(String, Timestamp)>,
        traffic: Vec<(String, TokenTraffic)>,
        unrecognised: Option<TokenTraffic>,
    ) -> StoreResult<Vec<String>> {
        // Bookkeeping: no SCIM answer is rendered from these tables, so the commit
        // keeps the rendered answers (`app::answers`).
        self.write_bookkeeping(move |txn| {
            if let Some(u) = &unrecognised {
                put_unrecognised_in(txn, u)?;
            }
            {
                let mut t = txn.open_table(TOKENS)?;
                for (id, when) in uses {
                    let rec = t.get(id.as_str())?.map(|v| v.value().to_vec());
                    if let Some(bytes) = rec {
                        let mut r: TokenRecord = serde_json::from_slice(&bytes)?;
                        if r.last_used < Some(when) {
                            r.last_used = Some(when);
                            t.insert(id.as_str(), serde_json::to_vec(&r)?.as_slice())?;
                        }
                    }
                }
            }
            // Traffic of tokens that are gone is refused and deleted. A revoked
            // token's row is kept: its past hours stay on the dashboard's chart, and
            // it cannot grow (a revoked secret no longer authenticates).
            let (live, refused): (Vec<_>, Vec<_>) = {
                let t = txn.open_table(TOKENS)?;
                let mut split = (Vec::new(), Vec::new());
                for (id, row) in traffic {
                    if t.get(id.as_str())?.is_some() {
                        split.0.push((id, row));
                    } else {
                        split.1.push(id);
                    }
                }
                split
            };
            put_traffic_in(txn, live)?;
            for id in &refused {
                drop_traffic_in(txn, id)?;
            }
            Ok(refused)
        })
        .await
    }

    /// Sets (or with `None` turns off) the quiet-time alarm of the unrevoked token
    /// with this id, or of every unrevoked secret with this name (after a rotation
    /// the alarm watches the identity provider, whichever secret it sends); returns
    /// the first record changed.
    pub(crate) async fn set_token_quiet_after(
        &self,
        name: String,
        minutes: Option<u32>,
    ) -> StoreResult<TokenRecord> {
        let r = self
            .write(move |txn| {
                let chosen = unrevoked_in(txn, &name)?;
                let mut t = txn.open_table(TOKENS)?;
                let mut first = None;
                for mut rec in chosen {
                    rec.quiet_after_minutes = minutes;
                    t.insert(rec.id.as_str(), serde_json::to_vec(&rec)?.as_slice())?;
                    first.get_or_insert(rec);
                }
                first.ok_or_else(|| {
                    StoreError::Scim(ScimError::not_found(format!(
                        "no active token named \"{name}\""
                    )))
                })
            })
            .await;
        self.invalidate_tokens();
        r
    }
}

fn add_token_in(
    txn: &WriteTransaction,
    record: TokenRecord,
    secret_hash: &[u8],
) -> StoreResult<TokenRecord> {
    let existing = all_tokens(&txn.open_table(TOKENS)?)?;
    if existing
        .iter()
        .any(|t| t.name == record.name && t.revoked.is_none() && t.superseded.is_none())
    {
        return Err(StoreError::Scim(ScimError::uniqueness(format!(
            "a token named \"{}\" already exists; rotate or revoke it first, or choose another name",
            record.name
        ))));
    }
    debug_assert_eq!(record.hash, hex(secret_hash));
    txn.open_table(TOKENS)?
        .insert(record.id.as_str(), serde_json::to_vec(&record)?.as_slice())?;
    txn.open_table(TOKEN_HASHES)?
        .insert(secret_hash, record.id.as_str())?;
    Ok(record)
}

/// The unrevoked secrets this name (or id) means: the token with this id, else
/// every unrevoked secret under this name (a rotation leaves several).
fn unrevoked_in(txn: &WriteTransaction, name: &str) -> StoreResult<Vec<TokenRecord>> {
    let live: Vec<TokenRecord> = all_tokens(&txn.open_table(TOKENS)?)?
        .into_iter()
        .filter(|t| t.revoked.is_none())
        .collect();
    let chosen: Vec<TokenRecord> = match live.iter().find(|t| t.id == name) {
        Some(by_id) => vec![by_id.clone()],
        None => live.into_iter().filter(|t| t.name == name).collect(),
    };
    if chosen.is_empty() {
        return Err(StoreError::Scim(ScimError::not_found(format!(
            "no active token named \"{name}\""
        ))));
    }
    Ok(chosen)
}

/// Which secrets `token revoke NAME` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum RevokeWhich {
    /// The one unrevoked secret with this name, or the token with this id; refused
    /// when a rotation left several under the name (the error says how to choose).
    Only,
    /// Every superseded, unrevoked secret under this name (ending a rotation).
    Superseded,
}

fn revoke_in(
    txn: &WriteTransaction,
    name: &str,
    which: RevokeWhich,
    now: Timestamp,
) -> StoreResult<Vec<TokenRecord>> {
    let live: Vec<TokenRecord> = all_tokens(&txn.open_table(TOKENS)?)?
        .into_iter()
        .filter(|t| t.revoked.is_none())
        .collect();
    let chosen: Vec<TokenRecord> = match which {
        RevokeWhich::Only => match live.iter().find(|t| t.id == name) {
            Some(by_id) => vec![by_id.clone()],
            None => live.into_iter().filter(|t| t.name == name).collect(),
        },
        RevokeWhich::Superseded => live
            .into_iter()
            .filter(|t| t.name == name && t.superseded.is_some())
            .collect(),
    };
    if chosen.is_empty() {
        return Err(StoreError::Scim(ScimError::not_found(match which {
            RevokeWhich::Only => format!("no active token named \"{name}\""),
            RevokeWhich::Superseded => {
                format!("no superseded secret of the token \"{name}\" is left to revoke")
            }
        })));
    }
    if which == RevokeWhich::Only && chosen.len() > 1 {
        return Err(StoreError::Scim(ScimError::invalid_value(format!(
            "the token \"{name}\" has {} valid secrets after a rotation; revoke the old ones \
             with --superseded, or one secret by its id (token list shows them)",
            chosen.len()
        ))));
    }
    let mut t = txn.open_table(TOKENS)?;
    let mut out = Vec::with_capacity(chosen.len());
    for mut rec in chosen {
        rec.revoked = Some(now);
        t.insert(rec.id.as_str(), serde_json::to_vec(&rec)?.as_slice())?;
        // The token's traffic stays (the chart's history); its metric series end.
        out.push(rec);
    }
    Ok(out)
}
