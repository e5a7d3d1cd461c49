//! The migration state machine, shared by the control socket, the admin page and the
//! CLI: `not started → checked → pushing → mirroring → verified → cut over`, with
//! abort back to not started before cut-over. One lock serialises everything that
//! talks to the target (push, mirror, verify, cut-over) so that no resource is
//! created twice by two of them at once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::client::{Client, Target};
use super::error::{MigrateError, MigrateResult, Step};
use super::policy::{PolicyChange, PolicyField, PolicyView};
use super::push::{self, PushOptions};
use super::readiness::{self, ReadinessReport};
use super::report::{Lag, MigrationStatus, Progress, ProgressSink, PushOutcome, VerifyReport};
use crate::clock::Timestamp;
use crate::config::MigrationPolicy;
use crate::secret::Secret;
use crate::store::{MigrationState, Phase, Store};

/// SCIM writes: accepted, paused for a cut-over, or refused for good.
pub const WRITES_OPEN: u8 = 0;
pub const WRITES_PAUSED: u8 = 1;
pub const WRITES_CUT_OVER: u8 = 2;

/// Longest a cut-over waits for the mirror to catch up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);

pub struct Migration {
    pub store: Store,
    /// The config file's `[migration]` (defaults where it says nothing); a stored
    /// policy overrides it field by field (`policy_view`).
    pub policy: MigrationPolicy,
    lock: tokio::sync::Mutex<()>,
    writes: AtomicU8,
    /// The target URL, for the error that refuses writes after cut-over.
    target: RwLock<Option<String>>,
}

/// What `migrate push` is given.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PushRequest {
    /// The target's SCIM base URL, e.g. `https://provisioning.example.com/scim/v2`.
    pub target: String,
    /// The target's bearer token; crosses the control socket in this field only.
    #[serde(with = "crate::secret::exposed")]
    pub token: Secret,
    /// PEM CA certificate(s) to verify the target with instead of the system roots.
    pub cacert: Option<String>,
    /// Allow a plain http:// target off loopback.
    pub allow_http: bool,
    /// Plan only; send no writes.
    pub dry_run: bool,
}

/// What `migrate cutover` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CutoverReport {
    /// The SCIM URL the identity provider must now use.
    pub target: Option<String>,
}

impl Migration {
    /// Loads the persisted state (a cut-over bridge refuses writes from the start).
    pub fn new(store: Store, policy: MigrationPolicy) -> MigrateResult<Arc<Migration>> {
        let state = store.snapshot().and_then(|s| s.migration_state())?;
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

    /// The migration policy that applies, with where each value came from.
    pub fn policy_view(&self) -> MigrateResult<PolicyView> {
        let stored = self.store.snapshot()?.migration_policy()?;
        Ok(PolicyView::resolve(&stored, &self.policy))
    }

    /// Stores the given fields of the policy (`migrate policy set`, the Migration
    /// page); the next readiness check applies them.
    pub async fn set_policy(&self, change: PolicyChange) -> MigrateResult<PolicyView> {
        let change = change.normalised().map_err(MigrateError::InvalidPolicy)?;
        let stored = self
            .store
            .update_migration_policy(move |p| change.apply(p))
            .await?;
        Ok(PolicyView::resolve(&stored, &self.policy))
    }

    /// Forgets the stored value of `fields` (all when empty): the file's or the
    /// default applies again.
    pub async fn reset_policy(&self, fields: Vec<PolicyField>) -> MigrateResult<PolicyView> {
        let stored = self
            .store
            .update_migration_policy(move |p| super::policy::reset(p, &fields))
            .await?;
        Ok(PolicyView::resolve(&stored, &self.policy))
    }

    /// The persisted state, secrets included (for the state machine only).
    pub fn state(&self) -> MigrateResult<MigrationState> {
        Ok(self.store.snapshot().and_then(|s| s.migration_state())?)
    }

    fn client_for(state: &MigrationState) -> MigrateResult<Client> {
        let url = state.target.as_deref().ok_or(MigrateError::NoTarget)?;
        let target = Target::parse(url, state.allow_http)?;
        let token = state.token.clone().ok_or(MigrateError::NoTargetToken)?;
        Client::new(target, token, state.cacert.as_deref().map(str::as_bytes))
    }

    /// Readiness report; moves `not started` to `checked` when nothing blocks.
    pub async fn check(&self) -> MigrateResult<ReadinessReport> {
        let snapshot = self.store.snapshot()?;
        let policy = PolicyView::resolve(&snapshot.migration_policy()?, &self.policy).effective();
        let report = readiness::check(&snapshot, &policy)?;
        if report.ready {
            self.store
                .update_migration(|s| {
                    if s.phase == Phase::NotStarted {
                        s.phase = Phase::Checked;
                    }
                })
                .await?;
        }
        Ok(report)
    }

    /// The initial push (or its resumption), then mirroring.
    pub async fn push(
        &self,
        req: PushRequest,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<PushOutcome> {
        let target = Target::parse(&req.target, req.allow_http)?;
        let mut client = Client::new(
            target.clone(),
            req.token.clone(),
            req.cacert.as_deref().map(str::as_bytes),
        )?;
        let _guard = self.lock.lock().await;
        let current = self.state()?;
        if current.phase == Phase::CutOver {
            return Err(MigrateError::AlreadyCutOver);
        }
        if let Some(t) = &current.target {
            if current.phase != Phase::NotStarted
                && current.phase != Phase::Checked
                && *t != target.base
            {
                return Err(MigrateError::OtherTarget {
                    current: t.clone(),
                    requested: target.base.clone(),
                });
            }
        }
        let snapshot = self.store.snapshot()?;
        let policy = PolicyView::resolve(&snapshot.migration_policy()?, &self.policy).effective();
        let report = readiness::check(&snapshot, &policy)?;
        if !report.ready {
            return Err(MigrateError::NotReady(
                report.blockers.into_iter().map(|b| b.message).collect(),
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
        let last_seq = self.store.snapshot().and_then(|s| s.last_event_seq())?;
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
            })
            .await?;
        if let Ok(mut t) = self.target.write() {
            *t = Some(target.base.clone());
        }
        match push::push(&self.store, &mut client, &PushOptions::default(), progress).await {
            Ok(outcome) => {
                let now = Timestamp::now();
                self.store
                    .update_migration(move |s| {
                        s.phase = Phase::Mirroring;
                        s.updated_at = Some(now);
                    })
                    .await?;
                // Read the target back right away and report every difference.
                let verified = self.verify_locked(&mut client, progress).await?;
                Ok(match outcome {
                    PushOutcome::Pushed(mut report) => {
                        report.differences = verified.differences;
                        PushOutcome::Pushed(report)
                    }
                    planned => planned,
                })
            }
            Err(e) => {
                let m = e.to_string();
                let _ = self
                    .store
                    .update_migration(move |s| s.last_error = Some(m))
                    .await;
                Err(MigrateError::PushStopped(Box::new(e)))
            }
        }
    }

    /// Replays pending changes to the target (the mirror's step). Returns how many.
    pub async fn mirror_step(&self, cached: &mut Option<MirrorClient>) -> MigrateResult<usize> {
        let state = self.state()?;
        if !state.phase.is_mirroring() || self.writes.load(Ordering::Acquire) == WRITES_CUT_OVER {
            *cached = None;
            return Ok(0);
        }
        // Idle most of the time: look for pending events before touching the target.
        let pending = self.store.snapshot().and_then(|s| s.last_event_seq())? > state.mirror_from;
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
    pub fn status(&self) -> MigrateResult<MigrationStatus> {
        let snapshot = self.store.snapshot()?;
        let state = snapshot.migration_state()?;
        let now = Timestamp::now();
        let lag = if state.phase.is_mirroring() || state.phase == Phase::Pushing {
            push::lag(&snapshot, &state, now)?
        } else {
            Lag::default()
        };
        Ok(MigrationStatus {
            phase: state.phase,
            phase_text: state.phase.as_str().to_owned(),
            state: state.public(),
            lag,
            mapped: snapshot.mapped_count()?,
        })
    }

    /// Drains the mirror, then compares the target with the directory.
    pub async fn verify(&self, progress: ProgressSink<'_>) -> MigrateResult<VerifyReport> {
        let state = self.state()?;
        if !state.phase.is_mirroring() {
            return Err(MigrateError::WrongPhase {
                step: Step::Verify,
                phase: state.phase,
            });
        }
        let _guard = self.lock.lock().await;
        let mut client = Self::client_for(&state)?;
        self.verify_locked(&mut client, progress).await
    }

    /// Drains the mirror and compares; the caller holds the lock.
    async fn verify_locked(
        &self,
        client: &mut Client,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<VerifyReport> {
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
            })
            .await?;
        Ok(VerifyReport {
            differences: diffs,
            count: n,
        })
    }

    /// Stops mirroring and returns to not started; the local directory stays the
    /// source of truth.
    pub async fn abort(&self) -> MigrateResult<()> {
        let _guard = self.lock.lock().await;
        let state = self.state()?;
        if state.phase == Phase::CutOver {
            return Err(MigrateError::CutOverIsFinal);
        }
        self.store.clear_map().await?;
        self.store
            .update_migration(|s| *s = MigrationState::default())
            .await?;
        if let Ok(mut t) = self.target.write() {
            *t = None;
        }
        Ok(())
    }

    /// Pauses writes, drains the mirror to zero, verifies, and flips to cut over.
    /// Irreversible. On any failure writes resume and the migration stays as it was.
    pub async fn cutover(&self, progress: ProgressSink<'_>) -> MigrateResult<CutoverReport> {
        let state = self.state()?;
        if !state.phase.is_mirroring() {
            return Err(MigrateError::WrongPhase {
                step: Step::Cutover,
                phase: state.phase,
            });
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
                    return Err(MigrateError::DrainTimeout);
                }
            }
            progress(Progress::Drained);
            let mut diffs = push::verify(&self.store, &mut client, progress).await?;
            if !diffs.is_empty() {
                return Err(MigrateError::Differences {
                    count: diffs.len(),
                    first: Box::new(diffs.swap_remove(0)),
                });
            }
            let now = Timestamp::now();
            self.store
                .update_migration(move |s| {
                    s.phase = Phase::CutOver;
                    s.cutover_at = Some(now);
                    s.differences = Some(0);
                    // The target token is no longer needed: forget it.
                    s.token = None;
                })
                .await?;
            Ok(CutoverReport {
                target: state.target.clone(),
            })
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
    key: (Option<String>, Option<Secret>),
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
