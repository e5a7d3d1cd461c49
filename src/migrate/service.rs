//! The migration state machine, shared by the control socket, the admin page and the
//! CLI: `not started → checked → pushing → mirroring → verified → cut over`, with
//! abort back to not started before cut-over. One lock serialises everything that
//! talks to the target (push, mirror, verify, cut-over) so that no resource is
//! created twice by two of them at once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use super::client::{Client, Target};
use super::push::{self, PushOptions};
use super::readiness::{self, Policy};
use crate::clock::Timestamp;
use crate::store::{MigrationState, Phase, Store, StoreError};

/// SCIM writes: accepted, paused for a cut-over, or refused for good.
pub const WRITES_OPEN: u8 = 0;
pub const WRITES_PAUSED: u8 = 1;
pub const WRITES_CUT_OVER: u8 = 2;

/// Longest a cut-over waits for the mirror to catch up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

pub struct Migration {
    pub store: Store,
    pub policy: Policy,
    lock: tokio::sync::Mutex<()>,
    writes: AtomicU8,
    /// The target URL, for the error that refuses writes after cut-over.
    target: RwLock<Option<String>>,
}

fn err(e: StoreError) -> String {
    match e {
        StoreError::Scim(s) => s.detail,
        other => other.to_string(),
    }
}

/// What `migrate push` is given.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PushRequest {
    pub target: String,
    pub token: String,
    pub cacert: Option<String>,
    pub allow_http: bool,
    pub dry_run: bool,
}

impl Migration {
    pub fn new(store: Store, policy: Policy) -> Result<Arc<Migration>, String> {
        let state = store
            .snapshot()
            .and_then(|s| s.migration_state())
            .map_err(err)?;
        let writes = if state.phase == Phase::CutOver {
            WRITES_CUT_OVER
        } else {
            WRITES_OPEN
        };
        Ok(Arc::new(Migration {
            store,
            policy,
            lock: tokio::sync::Mutex::new(()),
            writes: AtomicU8::new(writes),
            target: RwLock::new(state.target),
        }))
    }

    /// `None` when SCIM writes may proceed, else (status, message) to refuse them with.
    pub fn write_refusal(&self) -> Option<(u16, String)> {
        match self.writes.load(Ordering::Acquire) {
            WRITES_OPEN => None,
            WRITES_PAUSED => Some((503, "writes are paused for a moment while this bridge cuts over to hosted provisioning; retry shortly".into())),
            _ => {
                let url = self.target.read().ok().and_then(|t| t.clone()).unwrap_or_else(|| "the hosted provisioning service".into());
                Some((410, format!(
                    "this bridge has been cut over to hosted provisioning and no longer accepts changes: \
                     point your identity provider at {url}"
                )))
            }
        }
    }

    pub fn state(&self) -> Result<MigrationState, String> {
        self.store
            .snapshot()
            .and_then(|s| s.migration_state())
            .map_err(err)
    }

    fn client_for(state: &MigrationState) -> Result<Client, String> {
        let url = state
            .target
            .as_deref()
            .ok_or("no migration target is set")?;
        let target = Target::parse(url, state.allow_http)?;
        let token = state.token.clone().ok_or("no target token is stored")?;
        Client::new(target, token, state.cacert.as_deref().map(str::as_bytes))
    }

    /// Readiness report; moves `not started` to `checked` when nothing blocks.
    pub async fn check(&self) -> Result<readiness::Report, String> {
        let snapshot = self.store.snapshot().map_err(err)?;
        let report = readiness::check(&snapshot, &self.policy).map_err(err)?;
        if report.ready {
            self.store
                .update_migration(|s| {
                    if s.phase == Phase::NotStarted {
                        s.phase = Phase::Checked;
                    }
                    Ok(())
                })
                .await
                .map_err(err)??;
        }
        Ok(report)
    }

    /// The initial push (or its resumption), then mirroring.
    pub async fn push(
        &self,
        req: PushRequest,
        progress: push::Progress<'_>,
    ) -> Result<Value, String> {
        let target = Target::parse(&req.target, req.allow_http)?;
        let mut client = Client::new(
            target.clone(),
            req.token.clone(),
            req.cacert.as_deref().map(str::as_bytes),
        )?;
        let _guard = self.lock.lock().await;
        let current = self.state()?;
        if current.phase == Phase::CutOver {
            return Err("this bridge has already cut over; there is nothing left to push".into());
        }
        if let Some(t) = &current.target {
            if current.phase != Phase::NotStarted
                && current.phase != Phase::Checked
                && *t != target.base
            {
                return Err(format!(
                    "a migration to {t} is under way; run `scimbridge migrate abort` before pushing to {}",
                    target.base
                ));
            }
        }
        let report =
            readiness::check(&self.store.snapshot().map_err(err)?, &self.policy).map_err(err)?;
        if !report.ready {
            let names: Vec<String> = report.blockers.iter().map(|b| b.message.clone()).collect();
            return Err(format!(
                "the readiness check has blockers; run `scimbridge migrate check`:\n  {}",
                names.join("\n  ")
            ));
        }
        if req.dry_run {
            return push::push(
                &self.store,
                &mut client,
                &PushOptions { dry_run: true },
                progress,
            )
            .await;
        }
        let now = Timestamp::now();
        let last_seq = self
            .store
            .snapshot()
            .and_then(|s| s.last_event_seq())
            .map_err(err)?;
        let base = target.base.clone();
        let r = req.clone();
        self.store
            .update_migration(move |s| {
                if !matches!(s.phase, Phase::Pushing | Phase::Mirroring | Phase::Verified) {
                    // A new migration: mirror every change made from now on.
                    s.mirror_from = last_seq;
                    s.started_at = Some(now);
                    s.progress = Default::default();
                }
                s.phase = Phase::Pushing;
                s.target = Some(base);
                s.token = Some(r.token);
                s.cacert = r.cacert;
                s.allow_http = r.allow_http;
                s.updated_at = Some(now);
                s.last_error = None;
                Ok(())
            })
            .await
            .map_err(err)??;
        if let Ok(mut t) = self.target.write() {
            *t = Some(target.base.clone());
        }
        match push::push(&self.store, &mut client, &PushOptions::default(), progress).await {
            Ok(mut summary) => {
                let now = Timestamp::now();
                self.store
                    .update_migration(move |s| {
                        s.phase = Phase::Mirroring;
                        s.updated_at = Some(now);
                        Ok(())
                    })
                    .await
                    .map_err(err)??;
                // Read the target back right away and report every difference.
                let report = self.verify_locked(&mut client, progress).await?;
                summary["differences"] = report["differences"].clone();
                Ok(summary)
            }
            Err(e) => {
                let m = e.clone();
                let _ = self
                    .store
                    .update_migration(move |s| {
                        s.last_error = Some(m);
                        Ok(())
                    })
                    .await;
                Err(format!(
                    "{e}\nThe push stopped; run the same command again to resume where it stopped."
                ))
            }
        }
    }

    /// Replays pending changes to the target (the mirror's step). Returns how many.
    pub async fn mirror_step(&self, cached: &mut Option<MirrorClient>) -> Result<usize, String> {
        let state = self.state()?;
        if !state.phase.is_mirroring() || self.writes.load(Ordering::Acquire) == WRITES_CUT_OVER {
            *cached = None;
            return Ok(0);
        }
        // Idle most of the time: look for pending events before touching the target.
        let pending = self
            .store
            .snapshot()
            .and_then(|s| s.last_event_seq())
            .map_err(err)?
            > state.mirror_from;
        if !pending {
            return Ok(0);
        }
        let _guard = self.lock.lock().await;
        // One client (TLS roots loaded once, connection kept alive) for as long as the
        // target and its token stay the same.
        let key = (state.target.clone(), state.token.clone());
        let client = match cached {
            Some(c) if c.key == key => &mut c.client,
            _ => {
                &mut cached
                    .insert(MirrorClient {
                        key,
                        client: Self::client_for(&state)?,
                    })
                    .client
            }
        };
        push::drain(&self.store, client, 200).await
    }

    /// State, lag and counts for `migrate status` and the admin page.
    pub fn status(&self) -> Result<Value, String> {
        let snapshot = self.store.snapshot().map_err(err)?;
        let state = snapshot.migration_state().map_err(err)?;
        let now = Timestamp::now();
        let (behind, secs) = if state.phase.is_mirroring() || state.phase == Phase::Pushing {
            push::lag(&snapshot, &state, now)?
        } else {
            (0, 0.0)
        };
        Ok(json!({
            "phase": state.phase,
            "phaseText": state.phase.as_str(),
            "state": state.public(),
            "lag": {"events": behind, "seconds": secs},
            "mapped": snapshot.mapped_count().map_err(err)?,
        }))
    }

    /// Drains the mirror, then compares the target with the directory.
    pub async fn verify(&self, progress: push::Progress<'_>) -> Result<Value, String> {
        let state = self.state()?;
        if !state.phase.is_mirroring() {
            return Err(format!(
                "verification needs a pushed migration; the migration is {}",
                state.phase.as_str()
            ));
        }
        let _guard = self.lock.lock().await;
        let mut client = Self::client_for(&state)?;
        self.verify_locked(&mut client, progress).await
    }

    /// Drains the mirror and compares; the caller holds the lock.
    async fn verify_locked(
        &self,
        client: &mut Client,
        progress: push::Progress<'_>,
    ) -> Result<Value, String> {
        while push::drain(&self.store, client, 500).await? > 0 {}
        let diffs = push::verify(&self.store, client, progress).await?;
        let n = diffs.len() as u64;
        let now = Timestamp::now();
        self.store
            .update_migration(move |s| {
                s.differences = Some(n);
                if n == 0 {
                    s.phase = Phase::Verified;
                    s.verified_at = Some(now);
                }
                Ok(())
            })
            .await
            .map_err(err)??;
        Ok(json!({"differences": diffs, "count": n}))
    }

    /// Stops mirroring and returns to not started; the local directory stays the
    /// source of truth.
    pub async fn abort(&self) -> Result<Value, String> {
        let _guard = self.lock.lock().await;
        let state = self.state()?;
        if state.phase == Phase::CutOver {
            return Err("the bridge has cut over; a cut-over cannot be undone".into());
        }
        self.store.clear_map().await.map_err(err)?;
        self.store
            .update_migration(|s| {
                *s = MigrationState::default();
                Ok(())
            })
            .await
            .map_err(err)??;
        if let Ok(mut t) = self.target.write() {
            *t = None;
        }
        Ok(json!({"phase": Phase::NotStarted}))
    }

    /// Pauses writes, drains the mirror to zero, verifies, and flips to cut over.
    /// Irreversible. On any failure writes resume and the migration stays as it was.
    pub async fn cutover(&self, progress: push::Progress<'_>) -> Result<Value, String> {
        let state = self.state()?;
        if !state.phase.is_mirroring() {
            return Err(format!(
                "cut-over needs a pushed, mirroring migration; the migration is {}",
                state.phase.as_str()
            ));
        }
        let _guard = self.lock.lock().await;
        self.writes.store(WRITES_PAUSED, Ordering::Release);
        let result = async {
            let mut client = Self::client_for(&state)?;
            let deadline = tokio::time::Instant::now() + DRAIN_DEADLINE;
            loop {
                let n = push::drain(&self.store, &mut client, 500).await?;
                if n == 0 {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(
                        "the mirror did not catch up in time; writes resume, try again".to_owned(),
                    );
                }
            }
            progress(json!({"phase": "drained"}));
            let diffs = push::verify(&self.store, &mut client, progress).await?;
            if !diffs.is_empty() {
                return Err(format!(
                    "verification found {} differences; not cutting over. First: {}",
                    diffs.len(),
                    diffs[0]
                ));
            }
            let now = Timestamp::now();
            self.store
                .update_migration(move |s| {
                    s.phase = Phase::CutOver;
                    s.cutover_at = Some(now);
                    s.differences = Some(0);
                    // The target token is no longer needed: forget it.
                    s.token = None;
                    Ok(())
                })
                .await
                .map_err(err)??;
            Ok(json!({"phase": Phase::CutOver, "target": state.target}))
        }
        .await;
        match &result {
            Ok(_) => self.writes.store(WRITES_CUT_OVER, Ordering::Release),
            Err(_) => self.writes.store(WRITES_OPEN, Ordering::Release),
        }
        result
    }
}

/// The mirror's connection to the target, with what it was made for.
pub struct MirrorClient {
    key: (Option<String>, Option<String>),
    client: Client,
}

/// The mirror: replays accepted changes to the target while a migration mirrors.
/// Runs in the server; survives restarts because its position is in the store.
pub async fn run_mirror(m: Arc<Migration>) {
    let mut backoff = Duration::from_millis(250);
    let mut client = None;
    loop {
        match m.mirror_step(&mut client).await {
            Ok(0) => {
                backoff = Duration::from_millis(250);
                tokio::time::sleep(backoff).await;
            }
            Ok(_) => backoff = Duration::from_millis(250),
            Err(e) => {
                tracing::warn!(error = %e, "migration mirror: retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}
