//! The application layer: what the bridge does, as typed calls that every edge (the
//! SCIM endpoints, Bulk, the admin page, the control socket, the CLI) shares. It owns
//! the rules that are not protocol parsing and not storage: directory operations and
//! queries (`directory`), and the services around them. It knows neither HTTP (no
//! hyper types, no status lines) nor redb (only the store's typed API); an edge turns
//! its input into these calls and renders their typed results and errors.

pub(crate) mod admin;
pub(crate) mod answers;
pub(crate) mod audit;
pub(crate) mod by_modified;
pub(crate) mod directory;
pub(crate) mod liveness;
pub(crate) mod query;
pub(crate) mod render;
pub(crate) mod tokens;

pub(crate) use directory::{Operation, Outcome, Reply, Written};
pub(crate) use query::{Page, Paging, Query};
pub(crate) use render::Resource;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub(crate) mod unknown;

use crate::clock::Timestamp;
use crate::config::Config;
use crate::limiter::Limiter;
use crate::migrate::service::Migration;
use crate::store::Store;

/// The running bridge's application state, shared by every edge (cheap to share
/// behind an `Arc`). The HTTP edge's own state holds one.
pub(crate) struct App {
    /// The directory, tokens, settings and migration journal.
    pub store: Store,
    /// The validated configuration (limits, public URL, migration policy…).
    pub config: Config,
    /// The migration state machine; also decides whether SCIM writes are accepted.
    pub migration: Arc<Migration>,
    /// Attributes no schema defines that requests named: refused or dropped
    /// (`[scim] unknown_attributes`), counted and listed for the dashboard.
    pub unknown: Arc<unknown::UnknownLedger>,
    /// The one limiter: concurrent and heavy work per token and per address, failed
    /// authentications (`[limits]`). Edges ask it before admitting work; heavy work
    /// in this layer asks it for a heavy permit.
    pub limiter: Limiter,
    /// Last use of each token since the last flush (token id → time): recording it
    /// costs no fsync per request; `flush_token_uses` writes it every 30 s.
    token_uses: Mutex<HashMap<String, Timestamp>>,
    /// Each token's requests per hour by outcome (issue 14 point 5), flushed with
    /// `token_uses`.
    pub liveness: liveness::Liveness,
    /// Bounds the audit writes in flight from the SCIM path (`audit::MAX_PENDING`).
    audit_slots: Arc<tokio::sync::Semaphore>,
    /// Rendered GET-by-id answers, valid until the next commit of the directory.
    answers: answers::Answers,
}

impl App {
    pub(crate) fn new(store: Store, config: Config, migration: Arc<Migration>) -> App {
        let liveness = liveness::Liveness::load(&store);
        App {
            limiter: Limiter::new(config.limits.limiter.clone()),
            unknown: Arc::new(unknown::UnknownLedger::new(config.scim.unknown_attributes)),
            config,
            migration,
            store,
            token_uses: Mutex::new(HashMap::new()),
            liveness,
            audit_slots: Arc::new(tokio::sync::Semaphore::new(audit::MAX_PENDING)),
            answers: answers::Answers::default(),
        }
    }

    /// GETs by id answered from the rendered-answer cache since start (`/metrics`).
    pub(crate) fn kept_answer_hits(&self) -> u64 {
        self.answers.hits()
    }

    /// A token's last use not yet flushed to the store.
    pub(crate) fn pending_token_use(&self, token_id: &str) -> Option<Timestamp> {
        self.token_uses.lock().ok()?.get(token_id).copied()
    }

    /// Remembers that a token was used at `now` (kept in memory until the next flush).
    pub(crate) fn note_token_use(&self, token_id: &str, now: Timestamp) {
        if let Ok(mut m) = self.token_uses.lock() {
            match m.get_mut(token_id) {
                // Same second: not worth remembering.
                Some(t) if t.unix_seconds() == now.unix_seconds() => {}
                Some(t) => *t = now,
                None => {
                    m.insert(token_id.to_owned(), now);
                }
            }
        }
    }

    /// Writes the pending token-use times and the changed traffic counts (the
    /// tokens' and the no-recognised-token row) to the store; forgets the counts of tokens revoked meanwhile.
    pub(crate) async fn flush_token_uses(&self) {
        let uses: Vec<(String, Timestamp)> = match self.token_uses.lock() {
            Ok(mut m) => m.drain().collect(),
            Err(_) => return,
        };
        let traffic = self.liveness.take_changed();
        let unrecognised = self.liveness.take_unrecognised_changed();
        if uses.is_empty() && traffic.is_empty() && unrecognised.is_none() {
            return;
        }
        let ids: Vec<String> = traffic.iter().map(|(id, _)| id.clone()).collect();
        let retry_unrecognised = unrecognised.is_some();
        match self
            .store
            .record_token_use(uses, traffic, unrecognised)
            .await
        {
            Ok(gone) => self.liveness.forget(&gone),
            Err(e) => {
                tracing::warn!(error = %e, "could not record token use");
                self.liveness.retry(ids, retry_unrecognised);
            }
        }
    }

    /// Every token with its liveness at `now` (revoked ones without counts), in the
    /// store's order.
    pub(crate) fn token_liveness(
        &self,
        now: Timestamp,
    ) -> Result<Vec<(tokens::TokenInfo, liveness::TokenLiveness)>, tokens::TokenError> {
        Ok(tokens::list(&self.store, now)?
            .into_iter()
            .map(|t| {
                let last = self.pending_token_use(&t.id).or(t.last_used);
                let traffic = self.liveness.traffic(&t.id);
                let l = liveness::assess(&t, last, traffic, now);
                (t, l)
            })
            .collect())
    }
}

/// Whether `name` is a plain name, the rule token and account names share: 1 to
/// `max` ASCII letters, digits and `. _ - @`, starting with a letter or digit (no
/// space to quote on a command line, no leading `-` to read as a flag, nothing that
/// looks like another character in the audit or a log field).
pub(crate) fn is_plain_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}
